import json

import numpy as np
import pytest

from dehub.cli import main

from .conftest import unit


@pytest.fixture
def built(tmp_path, clustered):
    gallery, reference = clustered
    np.save(tmp_path / "g.npy", gallery)
    np.save(tmp_path / "r.npy", reference)
    hub = unit(reference.mean(axis=0, keepdims=True))
    np.save(tmp_path / "hub.npy", hub)
    np.save(tmp_path / "ok.npy", unit(gallery[:3] + 0.01))
    index = tmp_path / "g.dehub"
    argv = ["build", "--gallery", str(tmp_path / "g.npy"), "--reference", str(tmp_path / "r.npy")]
    assert main([*argv, "-o", str(index), "--method", "nnn", "--keep-reference", "--quiet"]) == 0
    return tmp_path, index


def test_audit_lists_a_planted_hub_first(built, capsys):
    tmp, index = built
    # plant the hub through add (no gate), then audit
    out = tmp / "h.dehub"
    assert main(["add", str(index), "--vectors", str(tmp / "hub.npy"), "-o", str(out), "--quiet"]) == 0
    capsys.readouterr()
    assert main(["audit", str(out), "--k", "5", "--json", "--top", "3"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["suspects"][0]["id"] == 400 and res["suspects"][0]["flagged"]
    assert (
        main(
            [
                "audit",
                str(out),
                "--reference",
                str(tmp / "r.npy"),
                "--queries",
                str(tmp / "r.npy"),
                "--sample",
                "100",
                "--k",
                "5",
            ]
        )
        == 0
    )
    text = capsys.readouterr().out
    assert "flagged" in text and "3000 reference + 100 live" in text


def test_add_gate_refuses_a_hub_and_flags_without_refusing(built, capsys):
    tmp, index = built
    before = index.read_bytes()
    code = main(["add", str(index), "--vectors", str(tmp / "hub.npy"), "--gate", "refuse", "--quiet"])
    assert code == 2
    err = capsys.readouterr().err
    assert "would be hubs" in err and "nothing was written" in err
    assert index.read_bytes() == before
    assert main(["add", str(index), "--vectors", str(tmp / "hub.npy"), "--gate", "flag", "--quiet"]) == 0
    assert "would be hubs" in capsys.readouterr().err
    assert main(["add", str(index), "--vectors", str(tmp / "ok.npy"), "--gate", "refuse", "--quiet"]) == 0
    assert "none would be a hub" in capsys.readouterr().out


def test_audit_bad_input_is_one_line(built, capsys):
    tmp, index = built
    assert main(["audit", str(index), "--queries", str(tmp / "nope.npy")]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_eval_studies_through_the_cli(tmp_path, capsys):
    rng = np.random.default_rng(0)
    centres = unit(rng.standard_normal((30, 16)) + 1.0)
    files = {}
    for split, n in (("test", 300), ("val", 200), ("ref", 1200)):
        lab = rng.integers(0, 30, n)
        q = unit(centres[lab] + 0.1 * rng.standard_normal((n, 16)))
        g = unit(centres[lab] + 0.1 * rng.standard_normal((n, 16)))
        np.save(tmp_path / f"{split}_q.npy", q)
        np.save(tmp_path / f"{split}_g.npy", g)
        (tmp_path / f"{split}_pairs.csv").write_text(
            "query_id,gallery_id\n" + "".join(f"{i},{i}\n" for i in range(n))
        )
        files[split] = n
    argv = [
        "eval", "--queries", str(tmp_path / "test_q.npy"), "--gallery", str(tmp_path / "test_g.npy"),
        "--pairs", str(tmp_path / "test_pairs.csv"), "--reference", str(tmp_path / "ref_q.npy"),
        "--val-queries", str(tmp_path / "val_q.npy"), "--val-gallery", str(tmp_path / "val_g.npy"),
        "--val-pairs", str(tmp_path / "val_pairs.csv"), "--n-bootstrap", "20", "--quiet", "--no-plots",
        "-o", str(tmp_path / "rep"),
    ]  # fmt: skip
    assert main([*argv, "--studies", "fairness,drift"]) == 0
    data = json.loads((tmp_path / "rep" / "report.json").read_text())
    assert set(data["studies"]) == {"fairness", "drift"}
    assert "Fairness: Bias@K" in (tmp_path / "rep" / "report.md").read_text()
    out = capsys.readouterr().out
    # each study's headline finding on the console, with its numbers
    lines = out.split("studies (headline findings")[1].splitlines()
    fair = next(x for x in lines if x.strip().startswith("fairness: Bias@"))
    drift = next(x for x in lines if x.strip().startswith("drift: "))
    assert "plain" in fair and "nnn" in fair
    assert "query sets flagged out of distribution" in drift and "points" in drift
    assert main([*argv, "--studies", "audit,nope"]) == 2
    err = capsys.readouterr().err
    assert "unknown studies" in err and len(err.strip().splitlines()) == 1


def test_audit_with_pairs_reports_hub_precision(built, capsys):
    tmp, index = built
    g = np.load(tmp / "g.npy")
    q = unit(g[np.arange(60) % 4] + 0.02)  # 60 queries whose right answers are gallery rows 0-3
    np.save(tmp / "q.npy", q)
    (tmp / "qp.csv").write_text("query_id,gallery_id\n" + "".join(f"{i},{i % 4}\n" for i in range(60)))
    argv = ["audit", str(index), "--queries", str(tmp / "q.npy"), "--pairs", str(tmp / "qp.csv")]
    assert main([*argv, "--json"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["hub_precision"]["n_queries"] == 60 and res["hub_precision"]["mostly_right"]
    assert main(argv) == 0
    assert "mostly right answers" in capsys.readouterr().out
    (tmp / "bad.csv").write_text("query_id,gallery_id\n0,999999\n")
    assert main(["audit", str(index), "--queries", str(tmp / "q.npy"), "--pairs", str(tmp / "bad.csv")]) == 2
    assert "not in the index" in capsys.readouterr().err
