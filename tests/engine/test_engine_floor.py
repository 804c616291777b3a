"""The floor bet of the exact engine (large databases): exact for any database order.

For databases of at least 4 blocks, ``exact_search`` estimates a per-row floor from the
first block and ignores scores below it; rows that end with fewer than k entries above
the floor are recomputed without it. These tests make the bet both win and lose and
check the results against a dense float64 full sort.
"""

from __future__ import annotations

import numpy as np
import pytest

from dehub.engine import exact as exact_mod
from dehub.engine import exact_search
from dehub.engine.topk import RunningTopK
from reference_nnn import assert_topk_match

# Small batches take the dense path (no blocks, no floor): force the blocked path here.
BLOCKED = {"database_block": 8192}

# The floor bet is the numpy selection's (the compiled top-k sets a proven floor instead).
pytestmark = pytest.mark.usefixtures("numpy_selection")


def _dense_topk(queries, database, k, offset=None):
    s = queries.astype(np.float64) @ database.astype(np.float64).T
    if offset is not None:
        s -= offset
    ids = np.broadcast_to(np.arange(database.shape[0]), s.shape)
    order = np.lexsort((ids, -s), axis=-1)[:, :k]
    return np.take_along_axis(s, order, axis=1), order


def _count_lost_rows(monkeypatch):
    lost = []
    orig = RunningTopK.floor_failed

    def spy(self):
        out = orig(self)
        lost.append(int(out.sum()))
        return out

    monkeypatch.setattr(RunningTopK, "floor_failed", spy)
    return lost


@pytest.fixture
def big(rng):
    q = rng.standard_normal((40, 16)).astype(np.float32)
    x = rng.standard_normal((4 * 8192 + 777, 16)).astype(np.float32)
    return q, x


def test_floor_is_used_on_large_databases(big):
    q, x = big
    plan = exact_mod.plan_blocks(q.shape[0], x.shape[0], x.shape[1], 20)
    assert exact_mod._floor_rank(20, plan.database_block, x.shape[0]) is not None


def test_random_order_matches_full_sort(big, monkeypatch):
    q, x = big
    lost = _count_lost_rows(monkeypatch)
    off = np.linspace(0, 0.5, x.shape[0]).astype(np.float32)
    v, i = exact_search(q, x, 20, offset=off, **BLOCKED)
    dv, di = _dense_topk(q, x, 20, off)
    np.testing.assert_array_equal(i, di)
    np.testing.assert_allclose(v, dv, atol=1e-5)
    assert lost and lost[0] == 0  # random order: the bet wins for every row


@pytest.mark.parametrize("n_queries", [40, 1300])  # 1300 rows span several score tiles
def test_adversarial_order_loses_the_bet_and_stays_exact(rng, n_queries, monkeypatch):
    q = rng.standard_normal((n_queries, 16)).astype(np.float32)
    # 8 blocks: few queries split the database between two workers, 4 blocks each
    x = rng.standard_normal((8 * 8192 + 777, 16)).astype(np.float32)
    # Put the best items of queries 0 and 1000 first: their floors are set far too high
    # and those rows are redone without a floor.
    x = x[np.argsort(-(x @ q[0]) - (x @ q[min(1000, n_queries - 1)]), kind="stable")]
    lost = _count_lost_rows(monkeypatch)
    v, i = exact_search(q, x, 20, **BLOCKED)
    assert sum(lost) >= 1
    # Rows that lost the bet are recomputed in other GEMM shapes, so their float32
    # scores may differ in the last bit (BLAS rounding depends on the block shape); the
    # comparisons allow that and near-ties (adjacent swaps of almost equal scores).
    dense = q.astype(np.float64) @ x.astype(np.float64).T
    nv, ni = exact_search(q, x, 20, _floor=False, **BLOCKED)
    assert_topk_match(v, i, nv.astype(np.float64), ni, dense, atol=1e-5)
    dv, di = _dense_topk(q, x, 20)
    assert_topk_match(v, i, dv, di, dense, atol=1e-5)


def test_ties_follow_the_id_rule_with_a_floor(big):
    q, x = big
    q, x = np.round(q * 2), np.round(x * 2)  # many exactly equal scores
    v, i = exact_search(q, x, 20, **BLOCKED)
    dv, di = _dense_topk(q, x, 20)
    np.testing.assert_array_equal(i, di)
    np.testing.assert_array_equal(v, dv.astype(np.float32))


@pytest.mark.parametrize("lanes", [10, 64, 100])
def test_lane_lower_bound_is_a_lower_bound(rng, lanes):
    from dehub.engine.topk import lane_lower_bound

    s = rng.standard_normal((30, 250)).astype(np.float32)
    j = 10
    bound = lane_lower_bound(s, j, lanes)
    jth = -np.sort(-s, axis=1)[:, j - 1]
    assert np.all(bound <= jth)
    if lanes == 100:  # many lanes: usually the j-th itself
        assert np.mean(bound == jth) > 0.3


def test_lane_lower_bound_rejects_impossible_requests(rng):
    from dehub.engine.topk import lane_lower_bound

    with pytest.raises(ValueError, match="j <= lanes <= n_columns"):
        lane_lower_bound(rng.standard_normal((2, 5)), 3, 8)
