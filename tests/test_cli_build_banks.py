"""`dehub build --gallery-bank FILE`: the bank reaches the method's fit (asked through its tags)."""

from __future__ import annotations

import numpy as np
import pytest

import dehub
from dehub import Index
from dehub.cli import main
from dehub.methods import get_method


@pytest.fixture
def bank_files(tmp_path, rng, unit):
    arrays = {
        "gallery": unit(rng, 40, 8),
        "reference": unit(rng, 90, 8),
        "bank": unit(rng, 60, 8),
        "queries": unit(rng, 7, 8),
    }
    paths = {}
    for name, arr in arrays.items():
        paths[name] = tmp_path / f"{name}.npy"
        np.save(paths[name], arr)
    return paths, arrays


def _build(paths, out, method, *extra):
    argv = ["build", "--gallery", str(paths["gallery"]), "--reference", str(paths["reference"])]
    return main([*argv, "-o", str(out), "--method", method, "--quiet", *extra])


@pytest.mark.parametrize("method", ["dbsn", "dbnorm", "dn", "invgc"])
def test_build_with_a_gallery_bank_equals_the_direct_fit(bank_files, tmp_path, capsys, method):
    paths, arr = bank_files
    out = tmp_path / f"{method}.dehub"
    assert _build(paths, out, method, "--gallery-bank", str(paths["bank"])) == 0
    assert "note:" not in capsys.readouterr().err
    index = Index.load(out)
    assert index.metadata["gallery_bank_file"] == str(paths["bank"])
    assert index.metadata["gallery_bank_rows"] == 60
    direct = get_method(method).fit(arr["gallery"], arr["reference"], gallery_bank=arr["bank"])
    without = get_method(method).fit(arr["gallery"], arr["reference"])
    got_s, got_i = index.search(arr["queries"], 10)
    want_s, want_i = direct.search(arr["queries"], 10)
    np.testing.assert_array_equal(got_i, want_i)
    np.testing.assert_allclose(got_s, want_s, rtol=0, atol=1e-6)
    for name, a in direct.persistence_arrays().items():
        np.testing.assert_allclose(index.model.persistence_arrays()[name], a, rtol=0, atol=1e-12)
    # the bank changed the fit (it did reach fit): the no-bank form scores differently
    assert not np.allclose(without.score(arr["queries"]), direct.score(arr["queries"]), atol=1e-6)


def test_a_bank_method_given_no_bank_says_so(bank_files, tmp_path, capsys):
    paths, arr = bank_files
    out = tmp_path / "dbsn.dehub"
    assert _build(paths, out, "dbsn") == 0
    err = capsys.readouterr().err
    assert "note: dbsn takes a gallery bank (--gallery-bank FILE" in err and "no-bank form" in err
    index = Index.load(out)
    assert index.metadata["gallery_bank"] == "none given: fitted in its no-bank form"
    sn = dehub.SN().fit(arr["gallery"], arr["reference"])  # DBSN without a bank is SN exactly
    np.testing.assert_allclose(index.model.bias_, sn.bias_, rtol=0, atol=1e-12)


def test_a_bank_for_a_method_that_takes_none_is_refused(bank_files, tmp_path, capsys):
    paths, _ = bank_files
    out = tmp_path / "nnn.dehub"
    assert _build(paths, out, "nnn", "--gallery-bank", str(paths["bank"])) == 2
    err = capsys.readouterr().err.strip()
    assert "method 'nnn' takes no gallery bank; received one of 60 rows" in err
    assert "dbnorm" in err and "dbsn" in err and len(err.splitlines()) == 1
    assert not out.exists()
    with pytest.raises(ValueError, match="takes no gallery bank"):
        Index.build(
            np.load(paths["gallery"]), np.load(paths["reference"]), gallery_bank=np.load(paths["bank"])
        )
