"""The whole protocol on synthetic hub data, the report files, the CLI, bad input."""

from __future__ import annotations

import importlib.util
import json
import sys
from html.parser import HTMLParser

import numpy as np
import pytest

from dehub.cli import main
from dehub.datasets import PairedBenchmark
from dehub.evaluation import run_evaluation, write_report

GRID = {"nnn": {"k": [1, 4, 16], "alpha": [0.25, 0.75]}}


class _Checker(HTMLParser):
    VOID = {"meta", "img", "br", "hr", "link", "input"}

    def __init__(self):
        super().__init__()
        self.stack, self.images, self.errors = [], 0, []

    def handle_starttag(self, tag, attrs):
        if tag == "img":
            self.images += 1
            assert dict(attrs)["src"].startswith("data:image/png;base64,")
        if tag not in self.VOID:
            self.stack.append(tag)

    def handle_endtag(self, tag):
        if not self.stack or self.stack.pop() != tag:
            self.errors.append(tag)


@pytest.fixture(scope="module")
def result(bench):
    return run_evaluation(bench, n_bootstrap=200, seed=3, grids=GRID, progress=False)


def test_protocol_contents(result, bench):
    d = result.data
    assert set(d["directions"]) == {"a2b", "b2a"}
    a2b = d["directions"]["a2b"]
    assert a2b["n_test_queries"] == bench.test.a.shape[0]
    assert a2b["methods"]["nnn"]["sweep"]["n_settings"] == 6
    assert a2b["methods"]["nnn"]["chosen_params"]["k"] in (1, 4, 16)
    diff = a2b["bootstrap"]["differences"]["nnn - plain"]["success@1"]
    assert diff["ci_low"] <= diff["delta"] <= diff["ci_high"]
    assert d["settings"]["seed"] == 3 and d["settings"]["n_bootstrap"] == 200
    assert d["versions"]["numpy"] == np.__version__
    # planted hubs (in this data the b->a direction has the strong hubs): NNN lowers the
    # top hub of the test ranking and improves R@1 with a positive paired-CI bound
    b2a = d["directions"]["b2a"]
    hub = b2a["methods"]
    assert hub["nnn"]["hubness"]["1"]["max"] < hub["plain"]["hubness"]["1"]["max"]
    assert b2a["bootstrap"]["differences"]["nnn - plain"]["success@1"]["ci_low"] > 0
    # reproducible from the seed
    again = run_evaluation(bench, n_bootstrap=200, seed=3, grids=GRID, progress=False)
    assert again.data["directions"]["a2b"]["bootstrap"] == a2b["bootstrap"]
    assert "nnn - plain" in result.summary_text()


def test_report_files_and_html_parses(result, tmp_path):
    pytest.importorskip("matplotlib", reason="the report's plots need matplotlib (pip install dehub[plot])")
    paths = write_report(result, tmp_path / "rep")
    assert paths["plots"] is True
    data = json.loads((tmp_path / "rep" / "report.json").read_text())
    assert data["directions"]["a2b"]["methods"]["nnn"]["sweep"]["table"]
    md = (tmp_path / "rep" / "report.md").read_text()
    assert "| query->item | nnn |" in md
    # the header says what precision="auto" does on the machine that ran it
    assert data["precision_auto"]["auto_candidates"][0] == "fp32"
    assert (
        "\nEngine: precision auto" in md
        and "<p>Engine: precision auto" in (tmp_path / "rep" / "report.html").read_text()
    )
    checker = _Checker()
    checker.feed((tmp_path / "rep" / "report.html").read_text())
    checker.close()
    assert not checker.errors and checker.stack == []
    # 2 directions x N_1/N_10 small multiples + 2 heatmaps + success@K + paired differences
    assert checker.images == 8


def test_report_without_matplotlib(result, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)
    paths = write_report(result, tmp_path)
    assert paths["plots"] is False
    assert "Plots skipped" in (tmp_path / "report.html").read_text()
    assert (tmp_path / "report.json").exists() and (tmp_path / "report.md").exists()


def test_bad_benchmarks(bench):
    empty = PairedBenchmark(
        "e",
        bench.test,
        bench.test.__class__(
            a=bench.validation.a[:0], b=bench.validation.b, pairs=np.zeros((0, 2), dtype=np.int64)
        ),
        bench.reference,
    )
    with pytest.raises(ValueError, match="validation split has no 'a'"):
        run_evaluation(empty, progress=False)
    same = PairedBenchmark("s", bench.test, bench.test, bench.reference)
    with pytest.raises(ValueError, match="validation split's 'a' side is the test split's"):
        run_evaluation(same, progress=False)
    with pytest.raises(ValueError, match="unknown methods"):
        run_evaluation(bench, methods=("plain", "nope"), progress=False)


def test_cli_on_user_files(bench, tmp_path, capsys):
    t, v = bench.test, bench.validation
    np.save(tmp_path / "q.npy", t.a)
    np.save(tmp_path / "g.npy", t.b)
    np.save(tmp_path / "vq.npy", v.a)
    np.save(tmp_path / "vg.npy", v.b)
    np.save(tmp_path / "r.npy", bench.reference.a)
    # string ids; pairs as CSV for test and JSONL (gallery lists) for validation
    (tmp_path / "qid.txt").write_text("\n".join(f"q{i}" for i in range(t.a.shape[0])))
    (tmp_path / "gid.txt").write_text("\n".join(f"g{i}" for i in range(t.b.shape[0])))
    (tmp_path / "pairs.csv").write_text("query_id,gallery_id\n" + "".join(f"q{a},g{b}\n" for a, b in t.pairs))
    (tmp_path / "vpairs.jsonl").write_text(
        "".join(json.dumps({"query_id": int(a), "gallery_id": [int(b)]}) + "\n" for a, b in v.pairs)
    )
    out = tmp_path / "out"
    args = [
        "eval",
        "--queries",
        str(tmp_path / "q.npy"),
        "--gallery",
        str(tmp_path / "g.npy"),
        "--pairs",
        str(tmp_path / "pairs.csv"),
        "--query-ids",
        str(tmp_path / "qid.txt"),
        "--gallery-ids",
        str(tmp_path / "gid.txt"),
        "--reference",
        str(tmp_path / "r.npy"),
        "--val-queries",
        str(tmp_path / "vq.npy"),
        "--val-gallery",
        str(tmp_path / "vg.npy"),
        "--val-pairs",
        str(tmp_path / "vpairs.jsonl"),
        "--n-bootstrap",
        "50",
        "--quiet",
        "-o",
        str(out),
        "--no-plots",
    ]
    assert main(args) == 0
    text = capsys.readouterr().out
    assert "query->gallery" in text and "nnn - plain" in text
    data = json.loads((out / "report.json").read_text())
    assert data["settings"]["directions"] == ["a2b"]
    # a pairs file naming an unknown gallery id is a clear error
    (tmp_path / "pairs.csv").write_text("query_id,gallery_id\nq0,g999999\n")
    assert main(args) == 2
    assert "not among the gallery ids" in capsys.readouterr().err
    assert main(["eval", "--queries", str(tmp_path / "q.npy")]) == 2
    assert "missing: --gallery" in capsys.readouterr().err


def test_p_value_text_never_says_zero():
    from dehub.evaluation.report import p_value_text

    assert p_value_text({"p_boot": 0.0, "n_crossing": 0, "p_floor": 1 / 1001}) == "< 1/1001 (0.001)"
    assert p_value_text({"p_boot": 0.0, "n_crossing": 0, "p_floor": 1 / 201}) == "< 1/201 (0.005)"
    assert p_value_text({"p_boot": 0.034, "n_crossing": 17, "p_floor": 1 / 1001}) == "0.034"


def test_identical_methods_duplicates_texts_and_fixed_params(bench, tmp_path):
    from dataclasses import replace

    # a gallery with an exact duplicate row and texts on both sides
    test = bench.test
    b = test.b.copy()
    b[7] = b[3]
    texts_b = tuple(f"item {i}" for i in range(b.shape[0]))
    texts_a = tuple(f"query {i}" for i in range(test.a.shape[0]))
    dup = replace(bench, test=replace(test, b=b, a_text=texts_a, b_text=texts_b))
    res = run_evaluation(
        dup,
        methods=("plain", "qbnorm", "dbnorm"),
        params={"qbnorm": {"beta": 20.0}, "dbnorm": {"beta1": 20.0, "beta2": 0.0}},
        n_bootstrap=50,
        progress=False,
    )
    a2b = res.data["directions"]["a2b"]
    # DBNorm with beta2 = 0 is QB-Norm: found from the rankings, said in a note
    assert a2b["identical_rankings"] == [
        {
            "methods": ["qbnorm", "dbnorm"],
            "params": {"qbnorm": {"beta": 20.0}, "dbnorm": {"beta1": 20.0, "beta2": 0.0}},
        }
    ]
    assert any(
        "qbnorm (beta=20.0) and dbnorm (beta1=20.0, beta2=0.0) return identical" in n for n in a2b["notes"]
    )
    assert a2b["methods"]["dbnorm"]["sweep"]["n_settings"] == 1
    assert a2b["gallery_duplicates"]["groups"] == [[3, 7]]
    assert any("2 rows in 1 groups of exact duplicates" in n for n in a2b["notes"])
    hubs = a2b["top_hubs"]["10"]
    assert all(e["text"] == f"item {e['row']}" for e in hubs)
    top = max(hubs, key=lambda e: e["N"]["plain"])
    assert top["N"]["plain"] == int(res.k_occurrence["a2b"]["plain"][10].max())
    # the b2a gallery (side a) has texts too, and its top hubs carry them
    assert all(e["text"].startswith("query ") for e in res.data["directions"]["b2a"]["top_hubs"]["1"])
    paths = write_report(res, tmp_path)
    md = (tmp_path / "report.md").read_text()
    assert "## Notes" in md and "Top hubs, query->item: N_10" in md and "| item " in md
    assert "beta1=20.0, beta2=0.0 (fixed)" in md
    html_text = (tmp_path / "report.html").read_text()
    if importlib.util.find_spec("matplotlib") is not None:
        assert "<h2>Notes</h2>" in html_text and paths["plots"] is True
    else:  # the page says how to get the plots
        assert "pip install matplotlib" in html_text and paths["plots"] is False
    with pytest.raises(ValueError, match="method 'dbnorm' has no parameter 'beta'; its parameters are"):
        run_evaluation(dup, methods=("dbnorm",), params={"dbnorm": {"beta": 1.0}}, progress=False)
    with pytest.raises(ValueError, match="unknown validation metric 'recall@1'"):
        run_evaluation(dup, metric="recall@1", progress=False)


def test_normalize_policy_applies_once(bench):
    from dataclasses import replace

    scaled = replace(bench, test=replace(bench.test, a=bench.test.a * 3))
    with pytest.warns(UserWarning, match="the test query embeddings rows are not unit-norm"):
        run_evaluation(scaled, methods=("plain",), n_bootstrap=20, progress=False)
    with pytest.raises(ValueError, match="not unit-norm"):
        run_evaluation(scaled, methods=("plain",), normalize="error", progress=False)
    fixed = run_evaluation(scaled, methods=("plain",), normalize="l2", n_bootstrap=20, progress=False)
    same = run_evaluation(bench, methods=("plain",), n_bootstrap=20, progress=False)
    for d in ("a2b", "b2a"):
        assert fixed.data["directions"][d]["methods"]["plain"]["test"] == pytest.approx(
            same.data["directions"][d]["methods"]["plain"]["test"]
        )
