"""Metrics against hand-computed examples and a brute-force full argsort."""

from __future__ import annotations

import numpy as np
import pytest

from dehub import NNN, Relevance, exact_search
from dehub.evaluation.metrics import (
    dense_ranks,
    evaluate_topk,
    first_relevant_rank_dense,
    first_relevant_rank_topk,
    outcomes_from_ranks,
    paired_metrics,
    retrieval_metrics,
)


def brute_force_rank(scores: np.ndarray, positives: list[set[int]]) -> np.ndarray:
    """Reference: full ranking by (score desc, id asc) with lexsort, then first positive."""
    out = []
    for i, pos in enumerate(positives):
        order = np.lexsort((np.arange(scores.shape[1]), -scores[i]))
        hits = [r for r, j in enumerate(order) if j in pos]
        out.append(hits[0] + 1 if hits else scores.shape[1] + 1)
    return np.array(out)


def test_hand_computed_example():
    # 3 queries, gallery of 5; query 1 has two positives, query 2 has none.
    ids = np.array([[2, 0, 4], [3, 1, 0], [0, 1, 2]])
    rel = Relevance.from_dict({0: {0}, 1: {1, 0}}, n_queries=3, n_gallery=5)
    assert first_relevant_rank_topk(ids, rel).tolist() == [2, 2, 4]
    m = retrieval_metrics((np.zeros(ids.shape), ids), rel, ks=(1, 2, 3))
    # query 2 excluded (no positives) and counted
    assert m["n_without_positives"] == 1 and m["n_evaluated"] == 2
    assert m["R@1"] == 0.0 and m["R@2"] == 1.0 and m["R@3"] == 1.0
    assert "MRR" not in m  # ranks beyond the top K unknown without dense scores
    miss = retrieval_metrics((np.zeros(ids.shape), ids), rel, ks=(1, 2), no_positive="miss")
    assert miss["R@2"] == pytest.approx(2 / 3) and miss["n_evaluated"] == 3
    with pytest.raises(ValueError, match="no relevant gallery item"):
        retrieval_metrics((np.zeros(ids.shape), ids), rel, ks=(1,), no_positive="error")


def test_dense_rank_hand_example_with_ties():
    scores = np.array([[0.5, 0.9, 0.5, 0.1], [0.3, 0.3, 0.3, 0.3]], dtype=np.float32)
    rel = Relevance.from_dict({0: {2}, 1: {3, 2}}, 2, 4)
    # query 0: 0.9 (id1), 0.5 (id0) ahead of id2 (tie, smaller id) -> rank 3
    # query 1: all tied; best positive is id2 (smaller), ids 0,1 ahead -> rank 3
    assert first_relevant_rank_dense(scores, rel).tolist() == [3, 3]
    out = outcomes_from_ranks(np.array([3, 3]), rel, ks=(1, 3))
    assert out.summary()["MRR"] == pytest.approx(1 / 3)
    assert out.summary()["median_rank"] == 3


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_against_brute_force_multi_positive(seed):
    rng = np.random.default_rng(seed)
    nq, ng = 40, 30
    # coarse scores make many ties
    scores = rng.integers(0, 6, size=(nq, ng)).astype(np.float32)
    positives = [set(rng.choice(ng, size=rng.integers(0, 4), replace=False).tolist()) for _ in range(nq)]
    rel = Relevance.from_dict(dict(enumerate(positives)), nq, ng)
    expected = brute_force_rank(scores, positives)
    assert np.array_equal(first_relevant_rank_dense(scores, rel), expected)
    assert np.array_equal(dense_ranks(lambda r: scores[r], nq, rel, block_rows=7), expected)
    # top-K from the engine + dense ranks beyond K equal the full-ranking ranks
    eye = np.eye(ng, dtype=np.float32)
    _, ids = exact_search(scores, eye, 10)  # q . e_j = scores[q, j]
    out = evaluate_topk(ids, rel, ks=(1, 5, 10), dense_rank=expected)
    has = np.array([len(p) > 0 for p in positives])
    assert np.array_equal(out.rank, expected[has])
    for k in (1, 5, 10):
        assert out.summary()[f"R@{k}"] == pytest.approx(np.mean(expected[has] <= k))
    assert out.summary()["MRR"] == pytest.approx(np.mean(1 / expected[has]))


def test_dense_ranks_match_engine_on_nnn():
    rng = np.random.default_rng(3)
    unit = lambda x: (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)  # noqa: E731
    g, r, q = unit(rng.normal(size=(80, 8))), unit(rng.normal(size=(300, 8))), unit(rng.normal(size=(50, 8)))
    model = NNN(k=8, alpha=0.75).fit(g, r)
    rel = Relevance.from_pairs(np.arange(50), rng.integers(0, 80, 50), 50, 80)
    full_s, full_i = model.search(q, 80)
    ranks = dense_ranks(lambda rows: model.score(q[rows]), 50, rel)
    assert np.array_equal(ranks, first_relevant_rank_topk(full_i, rel))


def test_paired_metrics_both_directions(bench):
    split = bench.test
    res = {}
    for d in ("a2b", "b2a"):
        t = split.task(d)
        res[d] = exact_search(t.queries, t.gallery, 10)
    m = paired_metrics(split, res, ks=(1, 10))
    assert set(m) == {"a2b", "b2a"}
    assert m["a2b"]["n_queries"] == split.a.shape[0] and m["b2a"]["n_queries"] == split.b.shape[0]
    assert 0 <= m["a2b"]["R@1"] <= m["a2b"]["R@10"] <= 1


def test_bad_inputs():
    rel = Relevance.from_dict({0: {0}}, 1, 3)
    with pytest.raises(ValueError, match="needs at least 5 results"):
        evaluate_topk(np.array([[0, 1]]), rel, ks=(5,))
    with pytest.raises(ValueError, match="shape"):
        evaluate_topk(np.array([[0, 1], [1, 2]]), rel, ks=(1,))
    with pytest.raises(ValueError, match="positive integer"):
        evaluate_topk(np.array([[0, 1]]), rel, ks=(0,))
    with pytest.raises(ValueError, match="no_positive"):
        outcomes_from_ranks(np.array([1]), rel, no_positive="drop")
