"""The exact streamed top-k engine against the slow reference: blocking, dtypes, memmap, ties."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest

from dehub.engine import exact_search, merge_topk, plan_blocks
from reference_nnn import assert_topk_match, ref_scores, ref_topk

# every test runs with the compiled top-k (where built) and with numpy's selection
pytestmark = pytest.mark.usefixtures("selection")


def _ref(queries, database, k, offset=None):
    dense = ref_scores(queries, database)
    if offset is not None:
        dense = dense - np.asarray(offset, dtype=np.float64)[None, :]
    s, i = ref_topk(dense, k)
    return s, i, dense


def _assert_same(got, want, dense):
    """Two engine results agree: scores to float32 rounding (BLAS kernels differ with the
    block shape, so the last bit may too), rankings up to ties."""
    assert_topk_match(got[0], got[1], want[0].astype(np.float64), want[1], dense, atol=1e-6)


def _quantized(rng, n, d, dtype=np.float32):
    """Entries in {-1, -0.5, 0, 0.5, 1}: every product and sum is exact, ties abound."""
    return (rng.integers(-2, 3, size=(n, d)) / 2).astype(dtype)


# --------------------------------------------------------------------------- reference
@pytest.mark.parametrize("k", [1, 5, 37])
def test_matches_reference(rng, unit, k):
    q, x = unit(rng, 23, 16), unit(rng, 37, 16)
    s, i = exact_search(q, x, k)
    assert s.dtype == np.float32 and i.dtype == np.int64 and s.shape == (23, k)
    rs, ri, dense = _ref(q, x, k)
    assert_topk_match(s, i, rs, ri, dense, atol=1e-6)
    assert np.all(np.diff(s, axis=1) <= 0), "scores must be best first"


def test_offset_is_subtracted(rng, unit):
    q, x = unit(rng, 11, 8), unit(rng, 29, 8)
    offset = rng.uniform(-0.5, 0.5, size=29).astype(np.float32)
    s, i = exact_search(q, x, 7, offset=offset)
    rs, ri, dense = _ref(q, x, 7, offset)
    assert_topk_match(s, i, rs, ri, dense, atol=1e-6)


# --------------------------------------------------------------------------- blocking
@pytest.mark.parametrize("qb,db", [(1, 1), (3, 7), (7, 3), (10, 64), (64, 10), (5, 13)])
@pytest.mark.parametrize("k", [1, 4, 29, 53])
def test_blocked_equals_unblocked(rng, unit, qb, db, k):
    # 31 queries and 53 database rows: none of the block sizes divide them.
    q, x = unit(rng, 31, 12), unit(rng, 53, 12)
    full = exact_search(q, x, k)
    blocked = exact_search(q, x, k, query_block=qb, database_block=db)
    rs, ri, dense = _ref(q, x, k)
    _assert_same(blocked, full, dense)
    assert_topk_match(*blocked, rs, ri, dense, atol=1e-6)


def test_memory_budget_drives_blocks_and_results_do_not_change(rng, unit):
    q, x = unit(rng, 200, 32), unit(rng, 300, 32)
    plan = plan_blocks(200, 300, 32, 10, memory_budget=64 * 1024)
    assert plan.query_block < 200, "a small budget must split the queries"
    assert plan.peak_bytes <= 64 * 1024
    small = exact_search(q, x, 10, memory_budget=64 * 1024)
    big = exact_search(q, x, 10)
    _assert_same(small, big, ref_scores(q, x))


def test_budget_too_small_is_a_clear_error(rng, unit):
    q, x = unit(rng, 4, 64), unit(rng, 5000, 64)
    with pytest.raises(ValueError, match=r"memory_budget=1000 bytes is too small.*raise memory_budget"):
        exact_search(q, x, 3, memory_budget=1000)
    with pytest.raises(ValueError, match="memory_budget must be a positive number of bytes; received 0"):
        exact_search(q, x, 3, memory_budget=0)


# --------------------------------------------------------------------------- k edge cases
def test_k_larger_than_database_pads(rng, unit):
    q, x = unit(rng, 6, 5), unit(rng, 4, 5)
    s, i = exact_search(q, x, 9, database_block=3)
    assert s.shape == i.shape == (6, 9)
    assert np.all(np.isneginf(s[:, 4:])) and np.all(i[:, 4:] == -1)
    assert np.all(np.isfinite(s[:, :4])) and np.all(np.sort(i[:, :4], axis=1) == np.arange(4))
    rs, ri, dense = _ref(q, x, 9)
    assert_topk_match(s, i, rs, ri, dense, atol=1e-6)


def test_k_equals_database_is_a_full_sort(rng, unit):
    q, x = unit(rng, 9, 6), unit(rng, 17, 6)
    s, i = exact_search(q, x, 17, database_block=5)
    rs, ri, dense = _ref(q, x, 17)
    assert_topk_match(s, i, rs, ri, dense, atol=1e-6)
    assert np.all(np.sort(i, axis=1) == np.arange(17))


def test_k_one_is_the_argmax(rng, unit):
    q, x = unit(rng, 40, 8), unit(rng, 60, 8)
    s, i = exact_search(q, x, 1, query_block=7, database_block=9)
    dense = ref_scores(q, x)
    np.testing.assert_allclose(s[:, 0], dense.max(axis=1), atol=1e-6)
    np.testing.assert_array_equal(i[:, 0], dense.argmax(axis=1))


@pytest.mark.parametrize("k", [0, -1, 2.0, True, "3"])
def test_bad_k_is_rejected(rng, unit, k):
    q, x = unit(rng, 2, 3), unit(rng, 4, 3)
    with pytest.raises(ValueError, match=r"k must be a positive integer; received"):
        exact_search(q, x, k)


def test_empty_sides_give_padding(rng, unit):
    x = unit(rng, 4, 3)
    s, i = exact_search(np.empty((0, 3), np.float32), x, 2)
    assert s.shape == (0, 2)
    s, i = exact_search(x, np.empty((0, 3), np.float32), 2)
    assert np.all(np.isneginf(s)) and np.all(i == -1)


def test_shape_errors_name_both_shapes(rng, unit):
    with pytest.raises(ValueError, match=r"same dimension; received shapes \(2, 3\) and \(4, 5\)"):
        exact_search(unit(rng, 2, 3), unit(rng, 4, 5), 1)
    with pytest.raises(
        ValueError, match=r"offset must have one value per database row, shape \(4,\); received \(3,\)"
    ):
        exact_search(unit(rng, 2, 3), unit(rng, 4, 3), 1, offset=np.zeros(3))


# --------------------------------------------------------------------------- dtypes
@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
def test_dtypes(rng, unit, dtype):
    q, x = unit(rng, 19, 10, dtype), unit(rng, 41, 10, dtype)
    s, i = exact_search(q, x, 8, query_block=6, database_block=11)
    assert s.dtype == np.float32 and i.dtype == np.int64
    rs, ri, dense = _ref(q, x, 8)  # the reference sees the same (rounded) values in float64
    assert_topk_match(s, i, rs, ri, dense, atol=1e-6)


def test_float64_is_computed_in_float64(rng):
    # Two database rows whose scores differ by 1e-12: only a float64 product separates them.
    q = np.array([[1.0, 1e-6]])
    x = np.array([[1.0, 0.0], [1.0, 1e-6]])
    s, i = exact_search(q, x, 2)
    np.testing.assert_array_equal(i, [[1, 0]])


def test_mixed_dtypes(rng, unit):
    q, x = unit(rng, 12, 7, np.float16), unit(rng, 30, 7, np.float64)
    s, i = exact_search(q, x, 5, database_block=4)
    rs, ri, dense = _ref(q, x, 5)
    assert_topk_match(s, i, rs, ri, dense, atol=1e-6)


# --------------------------------------------------------------------------- memmap
@pytest.mark.parametrize("dtype", [np.float16, np.float32])
def test_memmap_input(tmp_path, rng, unit, dtype):
    q, x = unit(rng, 33, 16, dtype), unit(rng, 70, 16, dtype)
    np.save(tmp_path / "q.npy", q)
    np.save(tmp_path / "x.npy", x)
    qm = np.load(tmp_path / "q.npy", mmap_mode="r")
    xm = np.load(tmp_path / "x.npy", mmap_mode="r")
    assert isinstance(xm, np.memmap)
    got = exact_search(qm, xm, 9, query_block=10, database_block=16)
    want = exact_search(q, x, 9)
    _assert_same(got, want, ref_scores(q, x))


def test_memmap_is_streamed_not_copied_whole(tmp_path, rng, unit):
    """Working memory stays within the budget, far below the size of the mapped inputs."""
    x = unit(rng, 20000, 64)  # 5.1 MB on disk
    np.save(tmp_path / "x.npy", x)
    del x
    xm = np.load(tmp_path / "x.npy", mmap_mode="r")
    q = unit(rng, 300, 64)
    budget = 2 * 2**20
    tracemalloc.start()
    try:
        exact_search(q, xm, 10, memory_budget=budget)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < budget + 2**20 < xm.nbytes, f"peak {peak} bytes for a {xm.nbytes}-byte memmap"


# --------------------------------------------------------------------------- ties
@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
@pytest.mark.parametrize("qb,db", [(None, None), (4, 5), (13, 1)])
def test_deterministic_tie_order_on_quantized_data(rng, dtype, qb, db):
    q, x = _quantized(rng, 25, 4, dtype), _quantized(rng, 60, 4, dtype)
    for k in (1, 3, 17, 60, 70):
        s, i = exact_search(q, x, k, query_block=qb, database_block=db)
        rs, ri, dense = _ref(q, x, k)
        assert_topk_match(s, i, rs, ri, dense, atol=0, exact_ties=True)


def test_all_equal_scores_keep_smallest_ids(rng):
    q = np.ones((3, 2), np.float32)
    x = np.ones((50, 2), np.float32)
    s, i = exact_search(q, x, 7, database_block=8)
    np.testing.assert_array_equal(i, np.tile(np.arange(7), (3, 1)))
    assert np.all(s == 2)


def test_ties_across_many_blocks_and_buffer_merges(rng):
    """Many tied candidates arrive after the running threshold is set (buffer overflow path)."""
    q = _quantized(rng, 8, 3)
    x = _quantized(rng, 2000, 3)
    for k in (2, 40, 150):
        s, i = exact_search(q, x, k, database_block=37)
        rs, ri, dense = _ref(q, x, k)
        assert_topk_match(s, i, rs, ri, dense, atol=0, exact_ties=True)


# --------------------------------------------------------------------------- sharding
@pytest.mark.parametrize("k", [1, 6, 40])
def test_merge_topk_over_shards_equals_single_search(rng, unit, k):
    q, x = unit(rng, 15, 8), unit(rng, 47, 8)
    bounds = [0, 10, 11, 30, 47]
    parts = []
    for a, b in zip(bounds[:-1], bounds[1:]):
        s, i = exact_search(q, x[a:b], k)
        parts.append((s, np.where(i >= 0, i + a, -1)))
    merged = merge_topk(parts, k)
    single = exact_search(q, x, k)
    _assert_same(merged, single, ref_scores(q, x))
    assert merged[0].dtype == np.float32 and merged[1].dtype == np.int64


def test_merge_topk_keeps_tie_rule_across_shards(rng):
    q, x = _quantized(rng, 10, 3), _quantized(rng, 40, 3)
    # Interleaved shards: ids of each shard are not contiguous.
    shards = [np.arange(0, 40, 3), np.arange(1, 40, 3), np.arange(2, 40, 3)]
    parts = []
    for rows in shards:
        s, i = exact_search(q, x[rows], 12)
        parts.append((s, np.where(i >= 0, rows[np.maximum(i, 0)], -1)))
    merged = merge_topk(parts, 12)
    single = exact_search(q, x, 12)
    np.testing.assert_array_equal(merged[1], single[1])
    np.testing.assert_array_equal(merged[0], single[0])


def test_merge_topk_pads_and_rejects_bad_input():
    s = np.array([[0.5, -np.inf]], np.float32)
    i = np.array([[3, -1]])
    ms, mi = merge_topk([(s, i)], 4)
    np.testing.assert_array_equal(mi, [[3, -1, -1, -1]])
    assert ms[0, 0] == 0.5 and np.all(np.isneginf(ms[0, 1:]))
    with pytest.raises(ValueError, match="needs at least one"):
        merge_topk([], 3)
    with pytest.raises(ValueError, match=r"received shapes \(1, 2\) and \(1, 3\)"):
        merge_topk([(s, np.zeros((1, 3), np.int64))], 2)


# --------------------------------------------------------------------------- purity
def test_inputs_unchanged(tmp_path, rng, unit, digest):
    q, x = unit(rng, 10, 6), unit(rng, 20, 6)
    off = rng.normal(size=20).astype(np.float32)
    before = digest(q, x, off)
    exact_search(q, x, 5, offset=off, query_block=3, database_block=7)
    parts = [exact_search(q, x[:10], 3), exact_search(q, x[10:], 3)]
    snap = digest(*[a for p in parts for a in p])
    merge_topk(parts, 4)
    assert digest(q, x, off) == before
    assert digest(*[a for p in parts for a in p]) == snap
