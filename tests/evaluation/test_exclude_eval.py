"""run_evaluation with per-query excluded ids = search_excluding, and the ranks agree."""

from __future__ import annotations

import numpy as np
import pytest

import dehub
from dehub.evaluation import run_evaluation
from dehub.evaluation.metrics import evaluate_topk


def test_run_evaluation_excludes_per_query_ids(bench):
    test = bench.test.task("a2b")
    rel = test.relevance
    rng = np.random.default_rng(0)
    # each query excludes its plain top-3 minus its relevant items (a hard, non-trivial filter)
    plain = dehub.methods.get_method("plain").fit(test.gallery, bench.reference_for("a2b"))
    _, top = plain.search(test.queries, 3, normalize="none")
    exclude = [np.setdiff1d(top[i], rel.positives(i)) for i in range(rel.n_queries)]
    exclude[0] = rng.choice(rel.n_gallery, 4, replace=False)
    params = {"nnn": {"k": 8, "alpha": 0.5}}
    res = run_evaluation(
        bench,
        methods=("plain", "nnn"),
        directions=("a2b",),
        n_bootstrap=20,
        params=params,
        exclude={"a2b": exclude},
        progress=False,
    )
    base = run_evaluation(
        bench, methods=("plain", "nnn"), directions=("a2b",), n_bootstrap=20, params=params, progress=False
    )
    for name in ("plain", "nnn"):
        model = dehub.methods.get_method(name, **params.get(name, {})).fit(
            test.gallery, bench.reference_for("a2b"), normalize="none"
        )
        _, ids = model.search_excluding(test.queries, 10, exclude=exclude, normalize="none")
        want = evaluate_topk(ids, rel, (1, 5, 10)).summary()
        got = res.outcomes["a2b"][name].summary()
        for k in (1, 5, 10):
            assert got[f"success@{k}"] == pytest.approx(want[f"success@{k}"])
        # the exact ranks count only the kept items: mean rank never worse than without exclusion
        assert got["mean_rank"] <= base.outcomes["a2b"][name].summary()["mean_rank"] + 1e-9
    assert (
        res.outcomes["a2b"]["plain"].summary()["success@1"]
        > base.outcomes["a2b"]["plain"].summary()["success@1"]
    )
    with pytest.raises(ValueError, match="outside"):
        run_evaluation(
            bench, methods=("plain",), directions=("a2b",), exclude={"a2b": [[10**6]] * rel.n_queries}
        )
