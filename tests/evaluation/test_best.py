"""``best``: nested validation sweeps, the keep-no-correction-unless-clearly-beaten rule, the hook."""

from __future__ import annotations

import numpy as np
import pytest

from dehub.evaluation import run_evaluation
from dehub.evaluation.best import BEST, default_members, select_best_member
from dehub.methods import METHODS, get_tags


def _task(bench, direction="a2b"):
    return bench.validation.task(direction), bench.reference_for(direction)


def test_default_members_are_deployable():
    members = default_members()
    assert members[:2] == ("plain", "nnn")
    assert all(not get_tags(METHODS[m]).transductive for m in members)
    assert "dsl" not in members and {"sn", "dbsn", "invgc", "mutual_proximity"} <= set(members)


def test_rule_and_reason(bench):
    task, ref = _task(bench)
    sel = select_best_member(task, ref, n_bootstrap=300, seed=1)
    rows = {r["member"]: r for r in sel.comparison}
    assert set(rows) == set(default_members()) - set(sel.skipped)
    assert "dbsn" in sel.skipped and "is SN exactly" in sel.skipped["dbsn"]  # no bank given
    cleared = [r for r in sel.comparison if r["cleared"]]
    for r in sel.comparison:
        assert r["cleared"] == (r["member"] != "plain" and r["ci_low"] > 0)
        assert (
            r["ci_low"] <= r["delta"] + 1e-12 and r["delta"] <= r["ci_high"] + 1e-12 or r["member"] == "plain"
        )
    if cleared:
        assert sel.member == max(cleared, key=lambda r: r["value"])["member"]
        assert "beats no correction" in sel.reason
    else:
        assert sel.member == "plain" and "no correction is kept" in sel.reason
    # the pick's setting is its own sweep's choice, and every sweep table is kept
    assert sel.params == sel.sweeps[sel.member]["best_params"]
    assert all(len(sw["table"]) >= 1 for sw in sel.sweeps.values())
    assert sel.member in sel.summary_text()


def test_identical_member_never_replaces_plain(bench):
    """A member that ranks exactly like no correction (NNN with alpha = 0) has a zero difference."""
    task, ref = _task(bench)
    grids = {"nnn": {"k": [8], "alpha": [0.0]}}
    sel = select_best_member(task, ref, members=("nnn",), grids=grids, n_bootstrap=200)
    row = next(r for r in sel.comparison if r["member"] == "nnn")
    assert row["delta"] == 0 and not row["cleared"] and sel.member == "plain"
    assert [r["member"] for r in sel.comparison] == ["plain", "nnn"]  # plain is always a candidate


def test_clearly_better_member_is_picked(bench):
    """NNN crippled to the plain ranking (alpha = 0) where hubs hurt (b2a): a corrector must win."""
    task, ref = _task(bench, "b2a")
    grids = {"nnn": {"k": [1], "alpha": [0.0]}, "csls": {"k": [5, 10]}, "qbnorm": {"beta": [10.0, 20.0]}}
    sel = select_best_member(task, ref, members=("nnn", "csls", "qbnorm"), grids=grids, n_bootstrap=300)
    assert sel.member in ("csls", "qbnorm")
    pick = next(r for r in sel.comparison if r["member"] == sel.member)
    assert pick["cleared"] and pick["ci_low"] > 0


def test_errors(bench):
    task, ref = _task(bench)
    with pytest.raises(ValueError, match="transductive"):
        select_best_member(task, ref, members=("nnn", "dsl"))
    with pytest.raises(ValueError, match="unknown members"):
        select_best_member(task, ref, members=("nope",))
    with pytest.raises(ValueError, match="budget"):
        select_best_member(task, ref, members=("nnn",), budget=0)
    with pytest.raises(ValueError, match="best chooses by"):
        select_best_member(task, ref, members=("nnn",), metric="mean_rank")


def test_run_evaluation_with_best(bench):
    members_grids = {"nnn": {"k": [4, 16], "alpha": [0.5, 1.0]}}
    res = run_evaluation(
        bench, methods=("plain", "nnn", BEST), n_bootstrap=100, grids=members_grids, progress=False
    )
    for direction, d in res.data["directions"].items():
        best = d["methods"][BEST]
        chosen = best["best"]["member"]
        assert best["chosen_params"]["member"] == chosen
        assert best["best"]["reason"] and best["best"]["comparison"] and best["best"]["sweeps"]
        assert f"{BEST} - nnn" in d["bootstrap"]["differences"] or "best - nnn" in str(d["bootstrap"])
        if chosen == "nnn":
            # the pick's test result is NNN's own (same setting, same fit)
            assert best["test"] == d["methods"]["nnn"]["test"]
        assert np.isfinite(best["test"]["R@1"])
    assert "best" in res.summary_text()


def test_cli_eval_with_best(bench, tmp_path, capsys):
    import json

    from dehub.cli import main

    t, v = bench.test, bench.validation
    for name, x in (("q", t.a), ("g", t.b), ("vq", v.a), ("vg", v.b), ("r", bench.reference.a)):
        np.save(tmp_path / f"{name}.npy", x)
    (tmp_path / "pairs.csv").write_text("query_id,gallery_id\n" + "".join(f"{a},{b}\n" for a, b in t.pairs))
    (tmp_path / "vpairs.csv").write_text("query_id,gallery_id\n" + "".join(f"{a},{b}\n" for a, b in v.pairs))
    out = tmp_path / "out"
    args = [
        "eval",
        "--methods",
        "plain,nnn,best",
        "--n-bootstrap",
        "50",
        "--quiet",
        "--no-plots",
        "-o",
        str(out),
    ]
    for flag, name in (("--queries", "q.npy"), ("--gallery", "g.npy"), ("--reference", "r.npy")):
        args += [flag, str(tmp_path / name)]
    for flag, name in (("--val-queries", "vq.npy"), ("--val-gallery", "vg.npy")):
        args += [flag, str(tmp_path / name)]
    args += ["--pairs", str(tmp_path / "pairs.csv"), "--val-pairs", str(tmp_path / "vpairs.csv")]
    assert main(args) == 0
    text = capsys.readouterr().out
    assert "best" in text and "member=" in text
    data = json.loads((out / "report.json").read_text())
    best = data["directions"]["a2b"]["methods"]["best"]["best"]
    assert best["member"] in default_members() and best["reason"]


def test_report_with_best_and_string_grids(bench, tmp_path):
    pytest.importorskip("matplotlib")
    from dehub.evaluation.report import write_report

    grids = {
        "nnn": {"k": [4, 16], "alpha": [0.5, 1.0]},
        "local_scaling": {"k": [5, 10], "variant": ["nicdm", "standard"]},
    }
    res = run_evaluation(
        bench,
        methods=("nnn", "local_scaling", BEST),
        directions=("b2a",),
        n_bootstrap=50,
        grids=grids,
        progress=False,
    )
    paths = write_report(res, tmp_path / "rep", plots=True)
    assert paths
    text = res.summary_text()
    assert "best chose" in text


def test_transductive_method_uses_the_queries_it_answers_and_is_marked(bench):
    """DSL normalizes over the test queries at test time (validation queries in its sweep)."""
    from dehub.evaluation.sweep import fit_selected

    res = run_evaluation(
        bench,
        methods=("plain", "dsl"),
        directions=("a2b",),
        n_bootstrap=20,
        grids={"dsl": {"temperature": [0.05]}},
        progress=False,
    )
    d = res.data["directions"]["a2b"]
    assert d["methods"]["dsl"]["transductive"] is True
    assert "transductive" not in d["methods"]["plain"]
    assert any("dsl is transductive" in n for n in d["notes"])
    test = bench.test.task("a2b")
    own = fit_selected("dsl", {"temperature": 0.05}, test.gallery, test.queries)
    _, ids = own.search(test.queries, 1, normalize="none")
    rows = test.relevance.query_rows()
    top1 = float(np.mean([ids[q, 0] in test.relevance.positives(q) for q in rows]))
    assert d["methods"]["dsl"]["test"]["success@1"] == pytest.approx(top1)
