"""success@K, recall@K, nDCG@K, mAP@R and MRR cross-checked against ranx and a brute force.

Random multi-positive cases with continuous scores (no ties, so every library's tie rule
agrees); ties are checked separately against a brute-force ranking with dehub's rule.
"""

from __future__ import annotations

import numpy as np
import pytest

from dehub import Relevance
from dehub.evaluation.metrics import (
    dense_positive_ranks,
    evaluate_topk,
    metric_names,
    outcomes_from_ranks,
    positive_ranks_dense,
)


def _case(seed: int, n_q: int = 40, n_g: int = 60, max_pos: int = 6):
    rng = np.random.default_rng(seed)
    scores = rng.normal(size=(n_q, n_g)).astype(np.float64)
    rel = {}
    for q in range(n_q):
        n_pos = int(rng.integers(1, max_pos + 1))
        rel[q] = set(rng.choice(n_g, size=n_pos, replace=False).tolist())
    relevance = Relevance.from_dict(rel, n_q, n_g)
    order = np.lexsort((np.tile(np.arange(n_g), (n_q, 1)), -scores), axis=1)
    return scores, relevance, rel, order


def _brute(scores, rel, ks):
    """Straight from the definitions, one query at a time."""
    n_q, n_g = scores.shape
    out = {name: [] for name in metric_names(ks)}
    for q in range(n_q):
        order = np.lexsort((np.arange(n_g), -scores[q]))
        hits = np.array([j in rel[q] for j in order])
        ranks = np.flatnonzero(hits) + 1
        big_r = len(rel[q])
        for k in ks:
            out[f"success@{k}"].append(float(hits[:k].any()))
            out[f"recall@{k}"].append(hits[:k].sum() / big_r)
            dcg = sum(1 / np.log2(i + 2) for i in range(k) if hits[i])
            idcg = sum(1 / np.log2(i + 2) for i in range(min(k, big_r)))
            out[f"nDCG@{k}"].append(dcg / idcg)
        prec = np.cumsum(hits[:big_r]) / np.arange(1, big_r + 1)
        out["mAP@R"].append(float((prec * hits[:big_r]).sum() / big_r))
        out["MRR"].append(1 / ranks[0])
        out["mean_rank"].append(float(ranks[0]))
    return {k: np.array(v) for k, v in out.items()}


@pytest.fixture(scope="session")
def ranx():
    """ranx with its metrics compiled: numba compiles each on first use (10 s on a quiet
    machine, minutes on a busy one), once per session here rather than inside a test."""
    ranx = pytest.importorskip("ranx")
    qrels = ranx.Qrels.from_dict({"q": {"a": 1, "b": 1}})
    run = ranx.Run.from_dict({"q": {"a": 0.5, "b": 0.25, "c": 0.75}})
    metrics = ["hit_rate@1", "recall@1", "ndcg@1", "mrr", "map@2"]
    ranx.evaluate(qrels, run, metrics, return_mean=False, make_comparable=True)
    ranx.evaluate(qrels, run, "map@2", return_mean=False)
    return ranx


@pytest.mark.slow
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_against_ranx(ranx, seed):
    scores, relevance, rel, order = _case(seed)
    ks = (1, 3, 10)
    top = order[:, :10]
    pr = dense_positive_ranks(lambda rows: scores[rows], scores.shape[0], relevance)
    out = evaluate_topk(top, relevance, ks, positive_ranks=pr)
    qrels = ranx.Qrels.from_dict({f"q{q:04d}": {f"d{j}": 1 for j in rel[q]} for q in rel})
    run = ranx.Run.from_dict(
        {f"q{q:04d}": {f"d{j}": float(scores[q, j]) for j in range(scores.shape[1])} for q in rel}
    )
    names = [f"hit_rate@{k}" for k in ks] + [f"recall@{k}" for k in ks] + [f"ndcg@{k}" for k in ks]
    got = ranx.evaluate(qrels, run, names + ["mrr"], return_mean=False, make_comparable=True)
    for k in ks:
        np.testing.assert_allclose(out.values[f"success@{k}"], got[f"hit_rate@{k}"], atol=1e-12)
        np.testing.assert_allclose(out.values[f"recall@{k}"], got[f"recall@{k}"], atol=1e-12)
        np.testing.assert_allclose(out.values[f"nDCG@{k}"], got[f"ndcg@{k}"], atol=1e-9)
    np.testing.assert_allclose(out.values["MRR"], got["mrr"], atol=1e-12)
    # mAP@R = ranx's AP@k with k = R (= |P(q)|, so its denominator is R too), per query
    counts = relevance.counts()
    for big_r in np.unique(counts):
        qs = np.flatnonzero(counts == big_r)
        sub_q = ranx.Qrels.from_dict({f"q{q:04d}": {f"d{j}": 1 for j in rel[q]} for q in qs})
        sub_r = ranx.Run.from_dict(
            {f"q{q:04d}": {f"d{j}": float(scores[q, j]) for j in range(scores.shape[1])} for q in qs}
        )
        ap = ranx.evaluate(sub_q, sub_r, f"map@{big_r}", return_mean=False)
        np.testing.assert_allclose(out.values["mAP@R"][qs], ap, atol=1e-12)


@pytest.mark.parametrize("seed", [3, 4])
def test_against_brute_force_with_ties(seed):
    scores, relevance, rel, _ = _case(seed, n_q=30, n_g=25)
    scores = np.round(scores * 2) / 2  # many exact ties: the smaller row ranks first
    order = np.lexsort((np.tile(np.arange(25), (30, 1)), -scores), axis=1)
    ks = (1, 2, 5)
    ref = _brute(scores, rel, ks)
    pr = positive_ranks_dense(scores, relevance)
    out = evaluate_topk(order[:, :5], relevance, ks, positive_ranks=pr)
    for name in metric_names(ks):
        np.testing.assert_allclose(out.values[name], ref[name], atol=1e-12, err_msg=name)
    # the same from ranks alone (no search result)
    again = outcomes_from_ranks(None, relevance, ks, positive_ranks=pr)
    for name in metric_names(ks):
        np.testing.assert_allclose(again.values[name], ref[name], atol=1e-12, err_msg=name)


def test_topk_only_is_exact_where_it_can_be():
    scores, relevance, rel, order = _case(5, max_pos=3)
    ref = _brute(scores, rel, (1, 5))
    out = evaluate_topk(order[:, :5], relevance, (1, 5))  # no dense ranks
    for name in ("success@1", "success@5", "recall@5", "nDCG@5", "mAP@R"):
        np.testing.assert_allclose(out.values[name], ref[name], atol=1e-12, err_msg=name)
    assert "MRR" not in out.values
    # R > K for some query: mAP@R is unknown from a top-2 result and is left out
    assert "mAP@R" not in evaluate_topk(order[:, :2], relevance, (1, 2)).values


def test_old_key_stays_readable_and_single_positive_recall_is_success():
    scores, relevance, rel, order = _case(6, max_pos=1)
    out = evaluate_topk(order[:, :10], relevance, (1, 10))
    s = out.summary()
    assert s["R@1"] == s["success@1"] and s["R@10"] == s["success@10"]
    assert s["recall@10"] == s["success@10"]
    assert "R@1" not in out.summary(aliases=False)
