"""CLI errors: structured library errors rendered with the command's flags; bugs shown as bugs (issue 21)."""

from __future__ import annotations

import numpy as np
import pytest

import dehub.cli as cli
from dehub import Index
from dehub._errors import InputError
from dehub.cli import EXIT_BUG, main


@pytest.fixture
def files(tmp_path):
    rng = np.random.default_rng(1)
    g = rng.standard_normal((30, 6)).astype(np.float32)
    g /= np.linalg.norm(g, axis=1, keepdims=True)
    np.save(tmp_path / "v.npy", g[:4])
    return Index.build(g, g, k=3).save(tmp_path / "i.dehub"), tmp_path / "v.npy"


def test_add_without_reference_names_the_flags(files, capsys):
    index, vectors = files
    assert main(["add", str(index), "--vectors", str(vectors)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert "Pass --reference REFERENCE, or build the index with --keep-reference" in err
    assert "reference=" not in err and "keep_reference" not in err
    with pytest.raises(InputError) as info:  # the same error, in Python's words
        Index.load(index).add(np.load(vectors))
    assert "Pass reference=..., or build the index with keep_reference=True" in str(info.value)
    assert info.value.expected == "the reference set the index was built with"


def _crash(*args, **kwargs):
    raise ZeroDivisionError("division by zero")


def _numpy_refuses(*args, **kwargs):
    return np.reshape(np.arange(3), (2, 2))  # numpy's ValueError: dehub handed it a bad array


@pytest.mark.parametrize("bug", [_crash, _numpy_refuses])
def test_an_internal_bug_shows_as_a_bug(files, capsys, monkeypatch, bug):
    index, _ = files
    monkeypatch.setattr(cli, "describe", bug)
    assert main(["info", str(index)]) == EXIT_BUG
    err = capsys.readouterr().err
    assert "Traceback (most recent call last)" in err
    assert "this is a bug in dehub, not a problem with your input. Please report it" in err


def test_a_user_mistake_is_still_one_line(files, capsys):
    index, _ = files
    assert main(["search", str(index), "--queries", str(index)]) == 2  # not a .npy
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err and "bug" not in err
