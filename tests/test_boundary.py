"""One boundary (issue 21 item 2): public entry points validate and convert once; inner
functions trust them. Counted, not timed: rows read, row scans, bytes allocated."""

from __future__ import annotations

import collections
import tracemalloc
import warnings

import numpy as np
import pytest

import dehub._index_cli as index_cli
import dehub._validation as validation
import dehub.cli as cli
import dehub.index as index_module
from dehub import NNN, Index
from dehub._format import read_header, verify_container
from dehub._shards import ShardedArray
from dehub._validation import UnnormalizedWarning
from dehub.methods import METHODS


def _unit(rng, n, d, dtype=np.float32):
    x = rng.standard_normal((n, d)).astype(np.float32)
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(dtype)


class _CountingShards(ShardedArray):
    """A sharded gallery that counts every row dehub reads from its files."""

    rows_read = 0

    def _slice(self, start, stop):
        type(self).rows_read += max(0, stop - start)
        return super()._slice(start, stop)

    def take_rows(self, rows):
        type(self).rows_read += int(np.asarray(rows).size)
        return super().take_rows(rows)


@pytest.mark.parametrize(("normalize", "passes"), [("warn", 2), ("l2", 1)])
def test_build_reads_the_gallery_a_counted_number_of_times(tmp_path, monkeypatch, normalize, passes):
    """`dehub build`: one pass validates the rows and writes and hashes them into the
    temporary index file, one feeds the GEMM (docs/boundary.md, "One boundary"). With
    --normalize l2 the first pass also makes the normalized copy, which the GEMM reads."""
    rng = np.random.default_rng(0)
    n = 3000
    g = _unit(rng, n, 16)
    (tmp_path / "g").mkdir()
    np.save(tmp_path / "g" / "part-0.npy", g[:1700])
    np.save(tmp_path / "g" / "part-1.npy", g[1700:])
    np.save(tmp_path / "r.npy", _unit(rng, 400, 16))
    load = index_cli.load_npy
    _CountingShards.rows_read = 0

    def counting(path, what, **kwargs):
        if what == "gallery":
            return _CountingShards(sorted((tmp_path / "g").glob("*.npy")))
        return load(path, what, **kwargs)

    monkeypatch.setattr(index_cli, "load_npy", counting)
    out = tmp_path / "i.dehub"
    args = ["build", "--gallery", str(tmp_path / "g"), "--reference", str(tmp_path / "r.npy")]
    assert cli.main([*args, "-o", str(out), "--k", "5", "--quiet", "--normalize", normalize]) == 0
    assert _CountingShards.rows_read == passes * n
    verify_container(out)  # the checksums taken while writing are those of the bytes written
    expected = g if normalize == "warn" else g / np.linalg.norm(g, axis=1, keepdims=True)
    np.testing.assert_allclose(Index.load(out).model.gallery_, expected, rtol=1e-6)


def _build_inputs(tmp_path, rng, n=500, bad_row=None):
    g = _unit(rng, n, 8)
    if bad_row is not None:
        g[bad_row, 5] = np.inf
    np.save(tmp_path / "g.npy", g)
    np.save(tmp_path / "r.npy", _unit(rng, 60, 8))
    return ["build", "--gallery", str(tmp_path / "g.npy"), "--reference", str(tmp_path / "r.npy")]


def test_a_build_that_fails_leaves_no_file_and_no_temporary(tmp_path, capsys):
    """A bad last row (found while the gallery is being written) and a failed fit (after
    it was written) both leave the directory as it was: no index, no temporary file, and
    an existing index untouched."""
    rng = np.random.default_rng(5)
    args = _build_inputs(tmp_path, rng, bad_row=499)
    out = tmp_path / "i.dehub"
    assert cli.main([*args, "-o", str(out), "--k", "5", "--quiet"]) == 2
    assert "gallery contains NaN or infinite values (first at row 499, column 5)" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["g.npy", "r.npy"]

    args = _build_inputs(tmp_path, rng)
    assert cli.main([*args, "-o", str(out), "--k", "500", "--quiet"]) == 2  # 60 reference rows
    assert "exceeds the number of reference items (60)" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["g.npy", "r.npy"]

    out.write_bytes(b"an older index")
    assert cli.main([*args, "-o", str(out), "--k", "500", "--quiet"]) == 2
    assert out.read_bytes() == b"an older index"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["g.npy", "i.dehub", "r.npy"]


def test_build_checks_ids_and_method_before_reading_the_gallery(tmp_path):
    """(The parameters' values are checked by the estimator's fit, its entry point.)"""
    rng = np.random.default_rng(9)
    (tmp_path / "g").mkdir()
    np.save(tmp_path / "g" / "part-0.npy", _unit(rng, 200, 8))
    r = _unit(rng, 50, 8)
    gallery = _CountingShards(sorted((tmp_path / "g").glob("*.npy")))
    _CountingShards.rows_read = 0
    out = tmp_path / "i.dehub"
    with pytest.raises(ValueError, match="199"):
        Index.build_to_file(out, gallery, r, k=4, ids=np.arange(199))
    with pytest.raises(ValueError, match="unknown method"):
        Index.build_to_file(out, gallery, r, method="no-such-method")
    assert _CountingShards.rows_read == 0 and not out.exists()


def test_a_fit_that_crashes_leaves_no_file(tmp_path, monkeypatch):
    rng = np.random.default_rng(6)
    g, r = _unit(rng, 300, 8), _unit(rng, 50, 8)

    def crash(self, *args, **kwargs):
        raise RuntimeError("fit crashed")

    monkeypatch.setattr(NNN, "_fit", crash)
    with pytest.raises(RuntimeError, match="fit crashed"):
        Index.build_to_file(tmp_path / "i.dehub", g, r, k=4)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("name", sorted(METHODS))
@pytest.mark.parametrize("normalize", ["warn", "l2"])
def test_build_to_file_writes_what_build_and_save_write(tmp_path, name, normalize):
    """Every method: the streamed file holds the same arrays and header as build + save."""
    rng = np.random.default_rng(7)
    g, r = _unit(rng, 90, 8) * 1.5, _unit(rng, 70, 8)
    kwargs = {"method": name, "normalize": normalize, "metadata": {"source": "test"}}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UnnormalizedWarning)
        streamed = Index.build_to_file(tmp_path / "a.dehub", g, r, **kwargs)
        Index.build(g, r, **kwargs).save(tmp_path / "b.dehub")
    verify_container(tmp_path / "a.dehub")
    a, b = read_header(tmp_path / "a.dehub"), read_header(tmp_path / "b.dehub")
    assert [(e["name"], e["sha256"]) for e in a.pop("arrays")] == [
        (e["name"], e["sha256"]) for e in b.pop("arrays")
    ]
    assert a == b
    loaded = Index.load(tmp_path / "a.dehub")
    q = _unit(rng, 4, 8)
    np.testing.assert_array_equal(loaded.search(q, 5)[1], streamed.search(q, 5)[1])


def test_a_header_larger_than_its_room_is_written_the_ordinary_way(tmp_path, monkeypatch):
    monkeypatch.setattr(index_module, "_HEADER_ROOM", 0)  # the statistics' entries do not fit
    rng = np.random.default_rng(8)
    g, r = _unit(rng, 200, 8), _unit(rng, 50, 8)
    built = Index.build_to_file(tmp_path / "i.dehub", g, r, k=4)
    verify_container(tmp_path / "i.dehub")
    np.testing.assert_array_equal(Index.load(tmp_path / "i.dehub").model.bias_, built.model.bias_)
    assert [p.name for p in tmp_path.iterdir()] == ["i.dehub"]


def test_a_small_search_of_a_float16_gallery_does_not_convert_it_whole():
    """Was: every 16-query search copied the whole float16 gallery to float32."""
    rng = np.random.default_rng(1)
    g16 = _unit(rng, 40_000, 64, np.float16)
    ref = _unit(rng, 500, 64)
    q = _unit(rng, 16, 64)
    model = NNN(k=8).fit(g16, ref, normalize="none")
    model.search(q, 10, normalize="none")  # warm: lazily built kernels, thread pools
    tracemalloc.start()
    try:
        scores, ids = model.search(q, 10, normalize="none")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    whole = g16.shape[0] * g16.shape[1] * 4  # a float32 copy of the gallery: 10.2 MB
    assert peak < whole / 4, f"peak {peak / 1e6:.1f} MB against a whole copy of {whole / 1e6:.1f} MB"
    # the same ranking as the float32 gallery holding the same values
    s32, i32 = NNN(k=8).fit(g16.astype(np.float32), ref, normalize="none").search(q, 10, normalize="none")
    np.testing.assert_array_equal(ids, i32)
    np.testing.assert_allclose(scores, s32, rtol=1e-5, atol=1e-6)


@pytest.fixture
def scans(monkeypatch):
    """Row scans (finiteness, norms) by the name of the input scanned."""
    seen: collections.Counter = collections.Counter()
    scan = validation._scan_rows

    def counting(x, name):
        seen[name] += 1
        return scan(x, name)

    monkeypatch.setattr(validation, "_scan_rows", counting)
    return seen


def test_each_entry_point_scans_its_inputs_once(scans, tmp_path):
    rng = np.random.default_rng(2)
    g, r, q, new = _unit(rng, 300, 8), _unit(rng, 120, 8), _unit(rng, 5, 8), _unit(rng, 4, 8)
    index = Index.build(g, r, k=4, keep_reference=True)
    assert scans == {"gallery": 1, "reference": 1}  # keep_reference stores the fitted one
    index.save(tmp_path / "i.dehub")
    scans.clear()
    index.search(q, 3)
    assert scans == {"queries": 1}
    scans.clear()
    index.add(new)  # the grown gallery and the kept reference are not scanned again
    assert scans == {"vectors": 1}
    scans.clear()
    index.remove([0, 1])
    assert not scans
    scans.clear()
    Index.build(g, r, k=4, keep_reference=True, normalize="l2")
    assert scans == {"gallery": 1, "reference": 1}


def test_add_trusting_its_boundary_still_equals_a_refit():
    rng = np.random.default_rng(3)
    g, r, new = _unit(rng, 200, 8), _unit(rng, 90, 8), _unit(rng, 7, 8)
    grown = Index.build(g, r, k=5, keep_reference=True).add(new)
    refit = NNN(k=5).fit(np.concatenate([g, new]), r)
    np.testing.assert_allclose(grown.model.bias_, refit.bias_, rtol=1e-6)


def test_the_add_gate_sees_the_rows_add_validated(scans, tmp_path, capsys):
    """`dehub add --gate`: the gate runs inside add's boundary (its admit hook), on the rows
    add validated once, so a bad row is refused before any gate arithmetic."""
    rng = np.random.default_rng(4)
    g, r = _unit(rng, 300, 8), _unit(rng, 200, 8)
    Index.build(g, r, k=4, keep_reference=True).save(tmp_path / "i.dehub")
    np.save(tmp_path / "new.npy", _unit(rng, 6, 8))
    bad = _unit(rng, 6, 8)
    bad[3, 2] = np.nan
    np.save(tmp_path / "bad.npy", bad)
    scans.clear()
    add = ["add", str(tmp_path / "i.dehub"), "--gate", "flag", "-o", str(tmp_path / "j.dehub"), "--quiet"]
    assert cli.main([*add, "--vectors", str(tmp_path / "new.npy")]) == 0
    assert scans["vectors"] == 1 and "none would be a hub" in capsys.readouterr().out
    assert cli.main([*add, "--vectors", str(tmp_path / "bad.npy")]) == 2
    out = capsys.readouterr()
    assert (
        "vectors contains NaN or infinite values (first at row 3, column 2)" in out.err
        and "gate" not in out.out
    )


def test_the_gallery_pass_shows_progress(tmp_path, capsys, monkeypatch):
    import dehub._progress

    monkeypatch.setattr(dehub._progress, "SHOW_AFTER_S", 0.0)  # shown however quick the pass
    rng = np.random.default_rng(10)
    Index.build_to_file(tmp_path / "i.dehub", _unit(rng, 300, 8), _unit(rng, 50, 8), k=4, progress=True)
    assert "check + write gallery" in capsys.readouterr().err
