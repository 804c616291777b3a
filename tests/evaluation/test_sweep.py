"""Validation sweep: picks a planted best setting; fast path equals refit-and-search."""

from __future__ import annotations

import numpy as np
import pytest

from dehub import NNN, Relevance
from dehub.datasets import RetrievalTask
from dehub.evaluation.metrics import dense_ranks, evaluate_topk
from dehub.evaluation.sweep import fit_selected, select_best, sweep
from dehub.methods import AdditiveBiasCorrector, BaseCorrector


class PlantedDebias(AdditiveBiasCorrector):
    """Test method: bias = scale * (last gallery coordinate), the planted hub offset."""

    name = "planted"

    def __init__(self, scale: float = 0.0) -> None:
        self.scale = scale

    @classmethod
    def default_grid(cls):
        return {"scale": [0.0, 0.5, 1.0, 1.5, 2.0]}

    def _fit(self, gallery, reference, **kwargs):
        self.gallery_ = gallery
        self.h_ = np.asarray(gallery[:, -1], dtype=np.float32)
        return self

    def _compute_bias(self):
        return np.float32(self.scale) * self.h_


class DenseOnly(BaseCorrector):
    """Test method without an additive bias: scored only through its dense score()."""

    name = "dense-only"

    def __init__(self, scale: float = 0.0) -> None:
        self.scale = scale

    @classmethod
    def default_grid(cls):
        return {"scale": [0.0, 1.0, 2.0]}

    def _fit(self, gallery, reference, **kwargs):
        self.gallery_ = np.asarray(gallery, dtype=np.float32)

    def _score(self, queries):
        g = self.gallery_
        return np.asarray(queries, dtype=np.float32) @ g.T - self.scale * g[:, -1]

    def _search(self, queries, k, **kwargs):
        s = self._score(queries)
        ids = np.argsort(-s, axis=1, kind="stable")[:, :k]
        return np.take_along_axis(s, ids, axis=1), ids


def planted_task(seed=0, n=200, dim=16):
    """Gallery [r, h] and queries [q, 1]: scores q.r + h with a random hub offset h."""
    rng = np.random.default_rng(seed)
    r = rng.normal(size=(n, dim))
    r /= np.linalg.norm(r, axis=1, keepdims=True)
    q = r + 0.3 * rng.normal(size=r.shape)
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    h = rng.exponential(0.6, size=n)
    gallery = np.hstack([r, h[:, None]]).astype(np.float32)
    queries = np.hstack([q, np.ones((n, 1))]).astype(np.float32)
    rel = Relevance.from_pairs(np.arange(n), np.arange(n), n, n)
    return RetrievalTask("planted", queries, gallery, rel)


@pytest.mark.parametrize("method", [PlantedDebias(), DenseOnly()])
def test_picks_planted_best(method):
    task = planted_task()
    res = sweep(method, task, task.gallery, normalize="none")
    assert res.best_params == {"scale": 1.0}
    assert len(res.table) == len(method.default_grid()["scale"])
    r1 = {row["scale"]: row["R@1"] for row in res.table}
    assert r1[1.0] > r1[0.0] + 0.2


def test_nnn_sweep_on_hub_data_matches_refit_and_search(bench):
    task = bench.validation.task("b2a")
    ref = bench.reference_for("b2a")
    grid = {"k": [1, 4, 16], "alpha": [0.0, 0.5, 1.0]}
    res = sweep("nnn", task, ref, grid=grid, ks=(1, 5, 10))
    assert len(res.table) == 9
    for row in res.table:
        model = NNN(k=row["k"], alpha=row["alpha"]).fit(task.gallery, ref)
        _, ids = model.search(task.queries, 10)
        dr = dense_ranks(lambda r: model.score(task.queries[r]), task.relevance.n_queries, task.relevance)
        out = evaluate_topk(ids, task.relevance, (1, 5, 10), dense_rank=dr).summary()
        for m in ("R@1", "R@5", "R@10", "MRR", "mean_rank", "median_rank"):
            assert row[m] == pytest.approx(out[m])
    plain = [row["R@1"] for row in res.table if row["alpha"] == 0.0][0]
    assert res.best_params["alpha"] > 0 and res.best_metrics["R@1"] > plain
    fitted = fit_selected("nnn", res.best_params, bench.test.a, ref)
    assert fitted.k == res.best_params["k"] and fitted.alpha == res.best_params["alpha"]


def test_tie_break_and_errors():
    table = [
        {"a": 1, "R@1": 0.5, "R@5": 0.7, "MRR": 0.6},
        {"a": 2, "R@1": 0.5, "R@5": 0.8, "MRR": 0.6},
        {"a": 3, "R@1": 0.5, "R@5": 0.8, "MRR": 0.6},
    ]
    assert select_best(table, "R@1", (1, 5)) == 1  # R@5 breaks the tie, then grid order
    assert select_best([{"mean_rank": 3.0}, {"mean_rank": 2.0}], "mean_rank", (1,)) == 1
    with pytest.raises(ValueError, match="unknown selection metric"):
        select_best(table, "R@3", (1, 5))
    with pytest.raises(TypeError, match="registered name"):
        sweep(42, planted_task(), planted_task().gallery)
