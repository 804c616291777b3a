"""Diagnose before correcting: where the hubs are popular right answers, no correction wins."""

from __future__ import annotations

import numpy as np
import pytest

from dehub.evaluation import run_evaluation
from dehub.evaluation.best import BEST, select_best_member
from dehub.evaluation.hubness import hub_precision


def test_hub_precision_counts_right_wins():
    top1 = np.array([3, 3, 3, 1, 1, 0, -1])
    right = np.array([True, True, False, False, False, True, False])
    hp = hub_precision(top1, right, n_gallery=5, n_top=2)
    assert [(h["row"], h["wins"], h["right"]) for h in hp["hubs"]] == [(3, 3, 2), (1, 2, 0)]
    assert hp["top_wins"] == 5 and hp["top_precision"] == pytest.approx(2 / 5)
    assert hp["overall_precision"] == pytest.approx(3 / 6) and hp["n_queries"] == 6
    assert not hp["mostly_right"]  # 2 of 5 wins right
    hp = hub_precision(top1, right, n_gallery=5, n_top=1)
    assert hp["mostly_right"]  # 2 of 3 wins right


def test_best_keeps_plain_when_hubs_are_right_answers(popular):
    task, ref = popular.validation.task("a2b"), popular.reference_for("a2b")
    members = ("nnn", "csls", "qbnorm")
    sel = select_best_member(task, ref, members=members, n_bootstrap=300, seed=0)
    assert sel.member == "plain" and sel.params == {}
    rows = {r["member"]: r for r in sel.comparison}
    assert set(rows) == {"plain", *members}
    assert all(rows[m]["delta"] <= 0 for m in members)  # every correction hurts here
    assert sel.hubs["mostly_right"] and sel.hubs["top_precision"] >= 0.5
    assert "no correction is kept" in sel.reason and "mostly right answers" in sel.reason


def test_report_says_hubs_are_right_answers(popular):
    res = run_evaluation(
        popular,
        methods=("plain", "nnn", BEST),
        directions=("a2b",),
        n_bootstrap=100,
        grids={"nnn": {"k": [4, 16], "alpha": [0.5, 1.0]}},
        progress=False,
    )
    d = res.data["directions"]["a2b"]
    assert d["methods"]["plain"]["hub_precision"]["mostly_right"]
    assert d["methods"][BEST]["best"]["member"] == "plain"
    text = res.summary_text()
    assert "mostly right answers" in text and "likely to hurt" in text
