"""The compiled running top-k (``dehub.engine._topk_kernel``) against numpy's selection.

:class:`~dehub.engine.topk.KernelTopK` must return exactly what
:class:`~dehub.engine.topk.RunningTopK` returns (the same ids and the same score bits),
for any order of the columns, ties, signed zeros, ``-inf`` padding, NaN, offsets, float32
and float64, one tile or many; and ``exact_search`` must give the same bits with either.
"""

from __future__ import annotations

import numpy as np
import pytest

import dehub.engine._compiled as _compiled
import dehub.engine.topk as topk_mod
from dehub.engine import exact_search
from dehub.engine.topk import KernelTopK, RunningTopK, select_topk

pytestmark = pytest.mark.skipif(
    topk_mod.kernel_isa() is None, reason="the compiled top-k is not built (or DEHUB_KERNELS=0)"
)


def _numpy(scores, k, offset=None, cuts=None):
    s = scores if offset is None else scores - offset
    top = RunningTopK(s.shape[0], k, score_dtype=s.dtype)
    for a, b in _spans(s.shape[1], cuts):
        top.push(np.ascontiguousarray(s[:, a:b]), a)
    return top.result()


def _kernel(scores, k, offset=None, cuts=None, rows=None, buffer=None):
    top = KernelTopK(scores.shape[0], k, scores.dtype, buffer=buffer)
    for a, b in _spans(scores.shape[1], cuts):
        off = None if offset is None else np.ascontiguousarray(offset[a:b])
        for r0, r1 in _spans(scores.shape[0], rows):
            top.push(np.ascontiguousarray(scores[r0:r1, a:b]), a, r0, offset=off)
    return top.result()


def _spans(n, cuts):
    edges = [0, *(cuts or []), n]
    return [(a, b) for a, b in zip(edges[:-1], edges[1:], strict=True) if b > a]


def _same(a, b):
    assert a[0].dtype == b[0].dtype
    np.testing.assert_array_equal(a[1], b[1])
    np.testing.assert_array_equal(a[0].view(np.uint8), b[0].view(np.uint8))  # bits, -0.0 too


CASES = {
    "normal": lambda rng, r, c, dt: rng.standard_normal((r, c)).astype(dt),
    "ties": lambda rng, r, c, dt: np.round(rng.standard_normal((r, c)) * 2).astype(dt),
    "signed zeros": lambda rng, r, c, dt: np.where(rng.random((r, c)) < 0.5, -0.0, 0.0).astype(dt),
    "increasing": lambda rng, r, c, dt: np.tile(np.arange(c, dtype=dt), (r, 1)),
    "decreasing": lambda rng, r, c, dt: np.tile(np.arange(c, 0, -1).astype(dt), (r, 1)),
    "mostly -inf": lambda rng, r, c, dt: np.where(
        rng.random((r, c)) < 0.97, -np.inf, rng.standard_normal((r, c))
    ).astype(dt),
    "all -inf": lambda rng, r, c, dt: np.full((r, c), -np.inf, dtype=dt),
    "+inf and huge": lambda rng, r, c, dt: np.where(
        rng.random((r, c)) < 0.01, np.inf, rng.standard_normal((r, c)) * 1e30
    ).astype(dt),
}


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize(
    ("r", "c", "k"), [(7, 5000, 10), (5, 3000, 128), (9, 300, 1), (6, 40, 50), (4, 17, 3)]
)
def test_same_as_running_topk(rng, dtype, case, r, c, k):
    s = CASES[case](rng, r, c, dtype)
    _same(_kernel(s, k), _numpy(s, k))
    cuts = [c // 3, c // 2, c - 5]
    _same(_kernel(s, k, cuts=cuts, rows=[r // 2]), _numpy(s, k, cuts=cuts))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_offset_is_subtracted_as_numpy_does(rng, dtype):
    s = rng.standard_normal((12, 4000)).astype(dtype)
    off = (rng.standard_normal(4000) * 0.3).astype(dtype)
    _same(_kernel(s, 16, off), _numpy(s, 16, off))
    _same(_kernel(s, 16, off, cuts=[1000, 1001, 2048]), _numpy(s, 16, off, cuts=[1000, 1001, 2048]))


def test_nan_never_enters(rng):
    # (the public estimators reject NaN before any search; numpy's lane bound turns NaN
    # into a NaN threshold, so there is no numpy result to compare with: the kernel skips
    # NaN entries, as if they were -inf)
    s = rng.standard_normal((5, 2000)).astype(np.float32)
    s[:, ::7] = np.nan
    v, i = _kernel(s, 20)
    assert not np.isnan(v).any()
    _same((v, i), _numpy(np.where(np.isnan(s), -np.inf, s), 20))


@pytest.mark.parametrize("buffer", [1, 2, 7, 500])
def test_any_buffer_size(rng, buffer):
    s = np.round(rng.standard_normal((6, 3000)) * 3).astype(np.float32)
    _same(_kernel(s, 33, buffer=buffer, cuts=[100, 2900]), _numpy(s, 33, cuts=[100, 2900]))


def test_matches_select_topk(rng):
    s = rng.standard_normal((30, 6000)).astype(np.float32)
    _same(_kernel(s, 10), select_topk(s, 10))


def test_bad_state_and_tiles_are_clear_errors(rng):
    top = KernelTopK(3, 4)
    with pytest.raises(ValueError, match="float dtype"):
        top.push(rng.standard_normal((3, 50)), 0)  # float64 tile into a float32 state
    with pytest.raises(ValueError, match="offset"):
        top.push(np.zeros((3, 50), np.float32), 0, offset=np.zeros(49, np.float32))
    with pytest.raises(ValueError, match="C-contiguous"):
        top.push(np.zeros((3, 100), np.float32)[:, ::2], 0)
    with pytest.raises(ValueError, match="float32 or float64"):
        KernelTopK(3, 4, np.float16)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize(
    ("nq", "nd", "k"), [(300, 20000, 128), (3, 40000, 10), (1000, 5000, 10), (200, 300, 400)]
)
def test_exact_search_same_bits_with_either_selection(rng, monkeypatch, dtype, nq, nd, k):
    q = rng.standard_normal((nq, 24)).astype(dtype)
    x = np.round(rng.standard_normal((nd, 24)) * 2).astype(dtype)  # many exact ties
    off = (rng.standard_normal(nd) * 0.5).astype(dtype)
    for offset in (None, off):
        compiled = exact_search(q, x, k, offset=offset, database_block=2048)
        with monkeypatch.context() as m:
            m.setattr(_compiled, "ENABLED", False)
            plain = exact_search(q, x, k, offset=offset, database_block=2048)
        _same(compiled, plain)


def test_floor_bet_that_loses_is_reported(rng):
    # increasing scores: the first tile's 3rd-best lane maximum is far above the final
    # k-th best, so every row loses the bet and holds fewer than k entries
    s = np.tile(np.arange(4096, dtype=np.float32)[::-1], (4, 1))
    top = KernelTopK(4, 16)
    top.push(np.ascontiguousarray(s[:, :2048]), 0, floor_rank=3)
    top.push(np.ascontiguousarray(s[:, 2048:]), 2048, floor_rank=3)
    top.result()
    assert top.floor_failed().all()
    proven = KernelTopK(4, 16)
    proven.push(np.ascontiguousarray(s[:, :2048]), 0)
    proven.push(np.ascontiguousarray(s[:, 2048:]), 2048)
    _same(proven.result(), _numpy(s, 16))
    assert not proven.floor_failed().any()


def test_floor_bet_in_the_engine_stays_exact(rng, monkeypatch):
    # the best items of two queries first: their bets lose and they are redone
    q = rng.standard_normal((40, 16)).astype(np.float32)
    x = rng.standard_normal((8 * 8192 + 777, 16)).astype(np.float32)
    x = x[np.argsort(-(x @ q[0]) - (x @ q[7]), kind="stable")]
    redone = []
    orig = KernelTopK.floor_failed

    def spy(self):
        out = orig(self)
        redone.append(int(out.sum()))
        return out

    monkeypatch.setattr(KernelTopK, "floor_failed", spy)
    compiled = exact_search(q, x, 20, database_block=8192)
    assert sum(redone) >= 1
    monkeypatch.setattr(_compiled, "ENABLED", False)
    _same(compiled, exact_search(q, x, 20, database_block=8192))


@pytest.mark.parametrize("k", [1, 16, 300])
def test_ivf_scan_same_bits_with_either_selection(rng, monkeypatch, k):
    from dehub.engine import build_reference_index

    x = np.round(rng.standard_normal((6000, 16)) * 2).astype(np.float32) / 4  # exact ties
    q = np.round(rng.standard_normal((700, 16)) * 2).astype(np.float32) / 4
    index = build_reference_index(x, engine="ivf", engine_params={"nlist": 64, "nprobe": 5})
    compiled = index.search(q, k)
    with monkeypatch.context() as m:
        m.setattr(_compiled, "ENABLED", False)
        plain = index.search(q, k)
    _same(compiled, plain)


def test_push_rows_any_id_order_keeps_the_tie_rule(rng):
    s = np.round(rng.standard_normal((5, 900)) * 2).astype(np.float32)
    ids = rng.permutation(900).astype(np.int64)
    top = KernelTopK(5, 40)
    for a, b in _spans(900, [300, 301, 650]):  # columns in shuffled id order
        top.push_rows(np.ascontiguousarray(s[:, a:b]), ids[a:b], np.arange(5, dtype=np.int64))
    dense = np.full((5, 900), -np.inf, np.float32)
    dense[:, ids] = s
    _same(top.result(), select_topk(dense, 40))
    with pytest.raises(ValueError, match="rows must be in"):
        top.push_rows(np.zeros((1, 3), np.float32), np.arange(3, dtype=np.int64), np.array([5]))
