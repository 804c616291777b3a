"""The numpy IVF engine against the exact engine (the oracle): the exactness-preserving
parts (ids, tie rule, padding, exact completion, copy or not, workers or not) exactly,
the windowed quantizer to a recall floor, and its pieces one by one."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import dehub
from dehub.engine import EngineParams, _workers, build_reference_index, exact_search
from dehub.engine import ivf as ivf_module
from dehub.engine.ivf import IVFIndex, probe_lists
from dehub.engine.kmeans import (
    CoarseQuantizer,
    choose_window,
    default_assign_dim,
    spherical_kmeans,
    train_quantizer,
)


def _unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


@pytest.fixture(scope="module")
def wide_data():
    """Clustered unit rows in d=256, so the default quantizer scores on a 128-wide window."""
    rng = np.random.default_rng(3)
    centers = rng.standard_normal((60, 256))

    def draw(n):
        return _unit(centers[rng.integers(0, 60, n)] + 0.9 * rng.standard_normal((n, 256)))

    return {"queries": draw(300), "database": draw(8000)}


def _recall(ids, true_ids) -> float:
    return float(np.mean([len(set(a) & set(b)) / true_ids.shape[1] for a, b in zip(ids, true_ids)]))


def test_every_list_probed_is_the_exact_engine(wide_data):
    q, x = wide_data["queries"], wide_data["database"]
    ev, ei = exact_search(q, x, 20)
    idx = build_reference_index(x, engine="ivf", engine_params={"nlist": 32})
    v, i = idx.search(q, 20, nprobe=32)
    np.testing.assert_array_equal(i, ei)
    np.testing.assert_allclose(v, ev, atol=1e-6)


def test_exact_ties_follow_the_id_rule():
    # duplicated database rows: every score appears several times, at different ids in
    # different lists; the IVF result must pick the same ids as the exact engine
    rng = np.random.default_rng(1)
    base = _unit(rng.standard_normal((300, 160)))
    x = np.concatenate([base, base[::-1], base[:150]])
    q = _unit(rng.standard_normal((40, 160)))
    ev, ei = exact_search(q, x, 25)
    v, i = build_reference_index(x, engine="ivf", engine_params={"nlist": 16}).search(q, 25, nprobe=16)
    np.testing.assert_array_equal(i, ei)
    # each list is one GEMM of its own shape: a score may differ from the exact engine's
    # GEMM entry in the last bit (the BLAS kernel's edge loops), never more
    np.testing.assert_allclose(v, ev, rtol=0, atol=2e-7)


@pytest.mark.parametrize("few", [0, 10**9])
def test_list_gemm_orientation_changes_no_score_bit(wide_data, monkeypatch, few):
    # lists probed by few queries are scored as rows @ queries.T, the others as
    # queries @ rows.T; forcing either form for every list gives the same bits
    q, x = wide_data["queries"], wide_data["database"]
    idx = build_reference_index(x, engine="ivf", engine_params={"nlist": 16})
    v0, i0 = idx.search(q, 20, nprobe=4)
    monkeypatch.setattr(ivf_module, "_FEW_QUERIES", few)
    v1, i1 = idx.search(q, 20, nprobe=4)
    np.testing.assert_array_equal(i1, i0)
    np.testing.assert_array_equal(v1.view(np.int32), v0.view(np.int32))


def test_recall_floor_of_the_windowed_default(wide_data):
    q, x = wide_data["queries"], wide_data["database"]
    _, ei = exact_search(q, x, 16)
    idx = build_reference_index(x, engine="ivf", engine_params={"nlist": 64})
    assert (idx.build_timings.keys()) == {"train", "assign", "lists"}
    v, i = idx.search(q, 16, nprobe=8)
    assert _recall(i, ei) >= 0.95
    np.testing.assert_allclose(v, np.take_along_axis(q @ x.T, i, axis=1), atol=1e-5)
    # the full-width quantizer is no worse than a floor either
    _, i_full = build_reference_index(x, engine="ivf", engine_params={"nlist": 64, "assign_dim": 256}).search(
        q, 16, nprobe=8
    )
    assert _recall(i_full, ei) >= 0.95


def test_copy_memmap_and_in_memory_lists_agree(wide_data, tmp_path):
    q, x = wide_data["queries"], wide_data["database"]
    p = EngineParams(nlist=48, nprobe=6)
    in_memory = IVFIndex.build(x, p)  # lists gathered from x at each scan
    copied = IVFIndex.build(x, p, keep_database=False)  # lists copied at build
    np.save(tmp_path / "x.npy", x)
    mm = IVFIndex.build(np.load(tmp_path / "x.npy", mmap_mode="r"), p)  # memmap: copied
    assert in_memory.vectors is None and copied.vectors is not None and mm.vectors is not None
    assert copied.nbytes - in_memory.nbytes == x.nbytes
    v0, i0 = in_memory.search(q, 16)
    for other in (copied, mm):
        v, i = other.search(q, 16)
        np.testing.assert_array_equal(i, i0)
        np.testing.assert_array_equal(v, v0)


def test_workers_and_sequential_agree(wide_data, monkeypatch):
    q, x = wide_data["queries"], wide_data["database"]
    p = {"nlist": 40, "nprobe": 5}
    v0, i0 = build_reference_index(x, engine="ivf", engine_params=p).search(q, 16)
    monkeypatch.setattr(_workers, "blas_controllable", lambda: False)  # no threadpoolctl: sequential
    v1, i1 = build_reference_index(x, engine="ivf", engine_params=p).search(q, 16)
    np.testing.assert_array_equal(i1, i0)
    np.testing.assert_array_equal(v1, v0)


def test_short_rows_are_completed_by_the_exact_engine(wide_data):
    q, x = wide_data["queries"][:60], wide_data["database"][:2000]
    idx = build_reference_index(x, engine="ivf", engine_params={"nlist": 200, "nprobe": 1})
    res = idx.search_detailed(q, 30)  # lists of ~10 rows: most queries find < 30 rows
    _, probe = probe_lists(q, idx.centroids, 1)
    short = np.flatnonzero(np.diff(idx.list_bounds)[probe[:, 0]] < 30)
    assert res.n_exact_fallback == short.size > 0
    ev, ei = exact_search(q, x, 30)
    np.testing.assert_array_equal(res.ids[short], ei[short])
    np.testing.assert_array_equal(res.scores[short], ev[short])
    assert np.all(res.ids >= 0) and np.all(np.isfinite(res.scores))


def test_nnn_with_the_ivf_engine_matches_exact_bias_closely(wide_data):
    q, x = wide_data["queries"], wide_data["database"]
    exact = dehub.NNN(k=8, alpha=0.5).fit(q, x)
    approx = dehub.NNN(k=8, alpha=0.5, engine="ivf", engine_params={"nlist": 32, "nprobe": 8}).fit(q, x)
    assert np.all(np.isfinite(approx.bias_))
    assert np.abs(approx.bias_ - exact.bias_).mean() < 1e-3


def test_window_quantizer_pieces(wide_data):
    x = wide_data["database"][:3000]
    assert default_assign_dim(512) == 128 and default_assign_dim(1024) == 256
    assert default_assign_dim(256) == 128 and default_assign_dim(64) == 64
    cq = train_quantizer(x, 40, 4, seed=0)
    assert isinstance(cq, CoarseQuantizer) and cq.hi - cq.lo == 128
    assert cq.centroids.shape == (40, 256) and cq.window_centroids.shape == (40, 128)
    np.testing.assert_allclose(np.linalg.norm(cq.centroids, axis=1), 1, atol=1e-5)
    want = (x[:, cq.lo : cq.hi] @ cq.window_centroids.T).argmax(axis=1)
    np.testing.assert_array_equal(cq.assign(x), want)
    full = train_quantizer(x, 40, 4, seed=0, assign_dim=256)
    np.testing.assert_array_equal(full.centroids, spherical_kmeans(x, 40, 4, seed=0))
    with pytest.raises(ValueError, match="assign_dim must be in 1..d=256"):
        train_quantizer(x, 40, 4, assign_dim=300)
    with pytest.raises(ValueError, match="nlist must be in 1..n_sample"):
        spherical_kmeans(x[:10], 11, 2)


def test_choose_window_finds_the_informative_coordinates():
    rng = np.random.default_rng(5)
    n, d = 2000, 256
    x = 0.01 * rng.standard_normal((n, d)).astype(np.float32)
    labels = rng.integers(0, 8, n)
    centers = rng.standard_normal((8, 128)).astype(np.float32)
    x[:, 128:] += centers[labels]  # the clusters live in the second half only
    seeds = x[rng.choice(n, 8, replace=False)]
    assert choose_window(x, seeds, 128) == 128
    assert choose_window(x, seeds, 256) == 0


def test_engine_params_errors():
    with pytest.raises(ValueError, match="train_size must be >= nlist=64"):
        build_reference_index(
            np.eye(200, 16, dtype=np.float32), engine="ivf", engine_params={"nlist": 64, "train_size": 10}
        )
    with pytest.raises(ValueError, match="unknown engine_params"):
        EngineParams.coerce({"groups": 4})


def test_parallel_scopes_restore_blas_threads_in_any_order():
    """In a fresh process (BLAS obeys only the thread that first set its thread count)."""
    pytest.importorskip("threadpoolctl")
    code = textwrap.dedent(
        """
        import threadpoolctl
        from dehub.engine import _workers

        def blas_threads():
            return [i["num_threads"] for i in threadpoolctl.threadpool_info() if i["user_api"] == "blas"]

        before = blas_threads()
        a = _workers.parallel_scope(2)
        b = _workers.parallel_scope(2)
        a.__enter__()
        b.__enter__()
        a.__exit__(None, None, None)  # closed first, as a concurrent search may be
        assert all(t == 1 for t in blas_threads()), blas_threads()  # b still open: still limited
        b.__exit__(None, None, None)
        assert blas_threads() == before, (blas_threads(), before)
        """
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
