"""``--ids`` of ``dehub remove``/``add``/``build``: long lists, ``@FILE``, never a list tried as a file (issue 24)."""

from __future__ import annotations

import numpy as np
import pytest

from dehub import Index
from dehub._cli_support import load_int_ids
from dehub.cli import main


@pytest.fixture
def index_file(tmp_path):
    rng = np.random.default_rng(0)
    unit = lambda x: (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)  # noqa: E731
    gallery, reference = unit(rng.normal(size=(400, 8))), unit(rng.normal(size=(50, 8)))
    ids = np.arange(10_000, 10_400, dtype=np.int64)
    return Index.build(gallery, reference, k=4, ids=ids).save(tmp_path / "g.dehub")


def test_remove_a_list_of_350_ids(index_file, capsys):
    ids = list(range(10_000, 10_350))
    text = ",".join(map(str, ids))
    assert len(text) > 2000  # far beyond any file name limit (255 bytes)
    assert main(["remove", str(index_file), "--ids", text]) == 0
    assert "removed 350 items, 50 left" in capsys.readouterr().out
    assert sorted(Index.load(index_file).ids.tolist()) == list(range(10_350, 10_400))


def test_remove_ids_from_an_at_file(index_file, tmp_path, capsys):
    listing = tmp_path / "stale"  # no suffix: @ says it is a file
    listing.write_text("\n".join(str(i) for i in range(10_000, 10_300)) + "\n")
    assert main(["remove", str(index_file), "--ids", f"@{listing}"]) == 0
    assert "removed 300 items, 100 left" in capsys.readouterr().out


def test_lists_are_never_file_names(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "17").write_text("99\n")  # a file named like the list: the list wins
    np.testing.assert_array_equal(load_int_ids("17", "--ids"), [17])
    np.testing.assert_array_equal(load_int_ids("3, 1 2,", "--ids"), [3, 1, 2])
    bad = ",".join(["5"] * 299 + ["x"])  # a long list with a bad token: named, not "File name too long"
    with pytest.raises(ValueError, match=r"expected exact integer ids .*received \['x'\]"):
        load_int_ids(bad, "--ids")
    with pytest.raises(FileNotFoundError, match="--ids file not found: missing.txt"):
        load_int_ids("missing.txt", "--ids")
    with pytest.raises(FileNotFoundError, match=r"--ids file not found: nothere \(from --ids @nothere\)"):
        load_int_ids("@nothere", "--ids")
    (tmp_path / "ids.npy").write_bytes(b"")
    np.save(tmp_path / "ids.npy", np.array([4, 5], dtype=np.int64))
    np.testing.assert_array_equal(load_int_ids("ids.npy", "--ids"), [4, 5])
    np.testing.assert_array_equal(load_int_ids("@ids.npy", "--ids"), [4, 5])


def test_a_bad_long_list_exits_2_in_one_line(index_file, capsys):
    text = ",".join(str(i) for i in range(10_000, 10_300)) + ",10.5"
    assert main(["remove", str(index_file), "--ids", text]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "expected exact integer ids" in err and "10.5" in err
    assert "too long" not in err
