"""Gallery banks through run_evaluation, and best's shared scores = member-by-member sweeps."""

from __future__ import annotations

import numpy as np
import pytest

import dehub
from dehub.evaluation import run_evaluation
from dehub.evaluation.best import select_best_member
from dehub.evaluation.metrics import evaluate_topk
from dehub.evaluation.sweep import sweep


@pytest.mark.parametrize(
    "name, params",
    [
        ("dbsn", {"tau": 0.05, "n_iter": 10}),
        ("dbnorm", {"beta1": 10.0, "beta2": 20.0}),
        ("invgc", {"r_g": 0.5, "r_q": 0.25}),
    ],
)
def test_bank_method_through_run_evaluation_equals_direct_fit(bench, name, params):
    res = run_evaluation(
        bench,
        methods=("plain", name),
        directions=("a2b",),
        n_bootstrap=20,
        params={name: params},
        progress=False,
    )
    d = res.data["directions"]["a2b"]
    assert "reference split's item side" in d["methods"][name]["bank"]
    assert d["methods"]["plain"]["bank"] == "takes no gallery bank"
    test = bench.test.task("a2b")
    direct = dehub.methods.get_method(name, **params).fit(
        test.gallery, bench.reference_for("a2b"), gallery_bank=bench.reference.b, normalize="none"
    )
    _, ids = direct.search(test.queries, 10, normalize="none")
    want = evaluate_topk(ids, test.relevance, (1, 5, 10))
    got = res.outcomes["a2b"][name]
    for k in (1, 5, 10):
        assert got.summary()[f"success@{k}"] == pytest.approx(want.summary()[f"success@{k}"])
    # and the bank mattered: without it the fit differs
    nobank = dehub.methods.get_method(name, **params).fit(
        test.gallery, bench.reference_for("a2b"), normalize="none"
    )
    assert not np.array_equal(nobank.search(test.queries, 10, normalize="none")[1], ids)


def test_without_banks_dbsn_is_not_run_and_fallbacks_are_named(bench):
    res = run_evaluation(
        bench,
        methods=("plain", "sn", "dbsn", "dn"),
        directions=("b2a",),
        n_bootstrap=20,
        params={"sn": {"tau": 0.05}, "dbsn": {"tau": 0.05}, "dn": {"lambda_": 0.5}},
        gallery_banks=None,
        progress=False,
    )
    d = res.data["directions"]["b2a"]
    assert "dbsn" not in d["methods"]
    assert any("dbsn was not run" in n and "sn exactly" in n for n in d["notes"])
    assert "fell back to its no-bank form" in d["methods"]["dn"]["bank"]
    assert "dbsn was not run" in res.summary_text()


@pytest.mark.parametrize("which", ["bench", "popular"])  # planted wrong hubs; popular right answers
def test_best_with_shared_scores_equals_member_by_member_sweeps(request, which):
    data = request.getfixturevalue(which)
    task, ref = data.validation.task("a2b"), data.reference_for("a2b")
    members = ("nnn", "csls", "qbnorm", "sn", "dn", "local_scaling", "dbnorm_dis")
    grids = {"nnn": {"k": [4, 16], "alpha": [0.5, 1.0]}, "sn": {"tau": [0.02, 0.05], "n_iter": [10]}}
    sel = select_best_member(task, ref, members=members, grids=grids, n_bootstrap=100, budget=None)
    assert not sel.skipped
    for m in ("plain", *members):
        alone = sweep(m, task, ref, grid=grids.get(m), normalize="none")
        assert sel.sweeps[m]["best_params"] == alone.best_params, m
        assert sel.sweeps[m]["table"] == alone.table, m
    # the pick is the member whose validation value is best among those clearing plain
    rows = {r["member"]: r for r in sel.comparison}
    assert rows[sel.member]["cleared"] or sel.member == "plain"


def test_budget_skips_and_names_slow_members(bench):
    task, ref = bench.validation.task("a2b"), bench.reference_for("a2b")
    grids = {
        "nnn": {"k": [4], "alpha": [0.5]},
        "sn": {"tau": [0.01, 0.02, 0.05, 0.1, 0.2, 0.5], "n_iter": [200]},
    }
    sel = select_best_member(task, ref, members=("nnn", "sn"), grids=grids, n_bootstrap=50, budget=1e-6)
    assert (
        "sn" in sel.skipped and "over the cost budget" in sel.skipped["sn"] and "include" in sel.skipped["sn"]
    )
    sel = select_best_member(
        task, ref, members=("nnn", "sn"), grids=grids, n_bootstrap=50, budget=1e-6, include=("sn",)
    )
    assert "sn" not in sel.skipped and "sn" in sel.sweeps
