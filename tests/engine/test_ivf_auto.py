"""The IVF engine's own parameters (``dehub.engine.ivf_auto``): nprobe from a recall check
against the exact engine (the oracle) by default, the assignment window widened by a
measured agreement, a user's nlist/nprobe/assign_dim used as given."""

from __future__ import annotations

import numpy as np
import pytest

from dehub.engine import EngineParams, build_reference_index, exact_search
from dehub.engine import ivf as ivf_module
from dehub.engine.ivf import IVFIndex
from dehub.engine.ivf_auto import (
    AGREEMENT_TARGET,
    list_balance,
    neighbour_ranks,
    nprobe_for_recall,
    recall_sample_rows,
    window_agreement,
)
from dehub.engine.kmeans import default_assign_dim, train_quantizer
from dehub.engine.settings import DEFAULT_NPROBE


def _unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def _planted_hubs(rng, n_x: int, n_q: int, d: int = 64, topics: int = 60):
    """Topics of captions (queries) and images (database) with a modality gap; 3% of the
    images are hubs pulled toward the mean caption direction."""
    centres = rng.standard_normal((topics, d))
    gap = rng.standard_normal(d) * 0.3
    x = centres[rng.integers(0, topics, n_x)] + rng.standard_normal((n_x, d)) * 0.7
    q = centres[rng.integers(0, topics, n_q)] + rng.standard_normal((n_q, d)) * 0.7 + gap
    hubs = rng.choice(n_x, n_x * 3 // 100, replace=False)
    x[hubs] = x[hubs] * 0.2 + 0.8 * (centres.mean(0) + gap) * 4
    return _unit(q), _unit(x)


def _clustered_uneven(rng, n_x: int, n_q: int, d: int = 64, clusters: int = 300):
    """A few hundred natural clusters of very uneven sizes (Zipf weights)."""
    centres = rng.standard_normal((clusters, d)) * 1.5
    w = 1.0 / np.arange(1, clusters + 1) ** 1.1
    w /= w.sum()
    x = centres[rng.choice(clusters, n_x, p=w)] + rng.standard_normal((n_x, d))
    q = centres[rng.choice(clusters, n_q, p=w)] + rng.standard_normal((n_q, d))
    return _unit(q), _unit(x)


def _per_query_recall(ids: np.ndarray, true_ids: np.ndarray) -> np.ndarray:
    return np.array([len(set(a) & set(b)) / len(b) for a, b in zip(ids.tolist(), true_ids.tolist())])


@pytest.fixture(scope="module", params=["planted_hubs", "clustered_uneven"])
def data(request):
    rng = np.random.default_rng(11)
    make = _planted_hubs if request.param == "planted_hubs" else _clustered_uneven
    q, x = make(rng, 20000, 1200)
    _, true_ids = exact_search(q, x, 10)
    return {"kind": request.param, "queries": q, "database": x, "true_ids": true_ids}


def test_default_search_reaches_the_recall_target(data):
    """No knob given: the check is on by default (recall 0.99) and the whole search reaches
    it, with fewer lists than all; the nprobe chosen is the fewest whose sampled recall,
    less one standard error over the sampled queries, reaches 0.99 (checked
    against searches at that nprobe and one fewer, straight from the definition)."""
    q, x, true_ids = data["queries"], data["database"], data["true_ids"]
    index = IVFIndex.build(x, EngineParams(seed=1))
    assert index.params.recall == 0.99 and index.params.nprobe is None
    nlist = index.centroids.shape[0]
    res = index.search_detailed(q, 10)
    nprobe = res.params.nprobe
    assert nprobe is not None and 1 <= nprobe < nlist
    assert np.mean(_per_query_recall(res.ids, true_ids)) >= 0.99

    check = index.recall_check(q, 10, 0.99)
    assert check.nprobe == nprobe
    rows = check.rows
    np.testing.assert_array_equal(rows, recall_sample_rows(q.shape[0]))

    def lower_bound(p: int) -> float:
        r = _per_query_recall(index.search(q[rows], 10, nprobe=p)[1], true_ids[rows])
        return float(r.mean() - r.std(ddof=1) / np.sqrt(r.size))

    assert lower_bound(nprobe) >= 0.99
    if nprobe > 1:
        assert lower_bound(nprobe - 1) < 0.99


def test_recall_sample_is_deterministic():
    a, b = recall_sample_rows(5000), recall_sample_rows(5000)
    np.testing.assert_array_equal(a, b)
    assert a.size == 128 and a[0] == 0 and a[-1] == 4999 and np.all(np.diff(a) > 0)
    assert recall_sample_rows(100).size == 100 and recall_sample_rows(0).size == 0
    assert recall_sample_rows(8000).size == 200 and recall_sample_rows(10**6).size == 256


def test_the_check_gives_the_same_nprobe_every_time(data):
    q, x = data["queries"], data["database"]
    index = IVFIndex.build(x, EngineParams(seed=1))
    first = index.nprobe_for_recall(q, 10, 0.99)
    again = IVFIndex.build(x, EngineParams(seed=1)).nprobe_for_recall(q, 10, 0.99)
    assert first == again == index.nprobe_for_recall(q, 10, 0.99)


def test_given_nlist_nprobe_and_assign_dim_are_used_as_given(monkeypatch):
    rng = np.random.default_rng(2)
    q, x = _clustered_uneven(rng, 6000, 300, d=256)
    calls = []
    real = ivf_module.exact_search
    monkeypatch.setattr(ivf_module, "exact_search", lambda *a, **kw: calls.append(1) or real(*a, **kw))
    index = build_reference_index(x, engine="ivf", engine_params={"nlist": 40, "nprobe": 3, "assign_dim": 64})
    assert index.centroids.shape[0] == index.build_stats["nlist"] == 40
    assert index.build_stats["assign_dim"] == 64 and list(index.build_stats["window_agreement"]) == [64]
    res = index.search_detailed(q, 10)
    assert res.params.nprobe == 3 and not calls  # no recall check
    np.testing.assert_array_equal(res.ids, index.search(q, 10, nprobe=3)[1])
    # a per-call nprobe wins over the check too
    auto = build_reference_index(x, engine="ivf", engine_params={"nlist": 40})
    assert auto.search_detailed(q, 10, nprobe=5).params.nprobe == 5 and not calls
    assert auto.search_detailed(q, 10).params.nprobe is not None and calls


def test_without_the_database_or_the_check_nprobe_is_the_default():
    rng = np.random.default_rng(3)
    q, x = _planted_hubs(rng, 4000, 100)
    kept_not = IVFIndex.build(x, EngineParams(nlist=32), keep_database=False)
    assert kept_not.search_detailed(q, 5).params.nprobe == DEFAULT_NPROBE
    off = IVFIndex.build(x, EngineParams(nlist=32, recall=None))
    assert off.search_detailed(q, 5).params.nprobe == DEFAULT_NPROBE


def test_the_window_widens_until_it_agrees():
    """Information spread evenly over 256 coordinates and 64 clusters: half the
    coordinates do not tell the clusters apart well enough, so the build doubles the
    window (and says so); the agreement it reports is the measured one."""
    rng = np.random.default_rng(4)
    d = 256
    centres = _unit(rng.standard_normal((64, d)))
    x = _unit(centres[rng.integers(0, 64, 12000)] + 1.1 * rng.standard_normal((12000, d)) / np.sqrt(d) * 4)
    index = IVFIndex.build(x, EngineParams(nlist=64))
    stats = index.build_stats
    tried = stats["window_agreement"]
    assert list(tried)[0] == default_assign_dim(d) == 128
    assert tried[128] < AGREEMENT_TARGET and stats["assign_dim"] == 256 and tried[256] == 1.0
    quantizer = train_quantizer(x[:1280], 64, 5, 0, 128)
    full = (x[5000:7048] @ quantizer.centroids.T).argmax(axis=1)
    assert window_agreement(quantizer, x[5000:7048]) == pytest.approx(
        np.mean(full == quantizer.assign(x[5000:7048]))
    )


def test_pieces_from_their_definitions():
    assert list_balance(np.array([10, 10, 10, 10])) == pytest.approx(1.0)
    assert list_balance(np.array([40, 0, 0, 0])) == pytest.approx(4.0)
    # two queries, k=2, 4 lists; query 0 has one padding neighbour
    order = np.array([[2, 0, 1, 3], [1, 3, 0, 2]])
    list_of = np.array([0, 1, 2, 3, 3])
    true_ids = np.array([[2, -1], [3, 0]])
    ranks = neighbour_ranks(order, list_of, true_ids)
    np.testing.assert_array_equal(ranks, [[0, 4], [1, 2]])
    # per query recall with p lists: p=1 -> (1, 0), p=2 -> (1, .5), p=3 -> (1, 1)
    assert nprobe_for_recall(ranks, 4, 1.0) == (3, 1.0)
    # p=1: mean .5, standard error .5 -> 0; p=2: mean .75, standard error .25 -> .5
    assert nprobe_for_recall(ranks, 4, 0.5) == (2, 0.75)
    assert nprobe_for_recall(ranks, 4, 0.6) == (3, 1.0)
    assert nprobe_for_recall(np.full((3, 2), 4), 4, 0.9) == (1, 1.0)  # nothing to find
