import json

import numpy as np
import pytest

from dehub.datasets import PairedBenchmark, PairedSplit
from dehub.evaluation.protocol import run_evaluation
from dehub.evaluation.report import write_report
from dehub.studies.report import STUDY_SECTIONS
from dehub.studies.runner import run_studies

from .conftest import unit


def _split(rng, centres, n):
    lab = rng.integers(0, centres.shape[0], n)
    a = unit(centres[lab] + 0.5 * rng.standard_normal((n, centres.shape[1])) / 4)
    b = unit(centres[lab] + 0.5 * rng.standard_normal((n, centres.shape[1])) / 4)
    return PairedSplit(a=a, b=b, pairs=np.stack([np.arange(n), np.arange(n)], axis=1))


@pytest.mark.slow
def test_every_study_on_a_small_benchmark_reaches_the_report(tmp_path):
    rng = np.random.default_rng(0)
    common = unit(rng.standard_normal((1, 32)))
    centres = unit(unit(rng.standard_normal((40, 32))) + common)
    bench = PairedBenchmark(
        "toy",
        _split(rng, centres, 600),
        _split(rng, centres, 300),
        _split(rng, centres, 1500),
        "text",
        "item",
    )
    result = run_evaluation(bench, directions=["a2b"], n_bootstrap=50, progress=False)
    options = {
        "audit": {"n_hubs": 5, "cluster_size": 20},
        "poisoning": {
            "n_targets": 30,
            "budgets": (0, 2, 16),
            "methods": ("nnn", "nnn_trimmed", "dbnorm"),
            "defence_budgets": (0, 16),
        },
        "drift": {"n_false_alarm_trials": 10},
    }
    studies = run_studies(bench, ["audit", "poisoning", "drift", "fairness"], n_bootstrap=50, options=options)
    result.data["studies"] = studies
    paths = write_report(result, tmp_path, plots=True, sections=STUDY_SECTIONS)
    data = json.loads(open(paths["json"]).read())
    assert set(data["studies"]) == {"audit", "poisoning", "drift", "fairness"}
    md = open(paths["markdown"]).read()
    for title in ("Audit: planted hubs", "Poisoning (demote)", "Drift:", "Fairness: Bias@K"):
        assert title in md
    page = open(paths["html"]).read()
    if paths["plots"]:
        assert "Reference poisoning: success vs budget" in page
    # one headline per study, also at the top of the markdown section
    heads = STUDY_SECTIONS.headlines(studies)
    assert [h.split(":")[0] for h in heads] == ["audit", "poisoning", "drift", "fairness"]
    assert "% of test queries at top-1 with plain" in heads[0] and "with NNN" in heads[0]
    assert "demote attacks with 16 poisons per target succeed: nnn " in heads[1]
    assert all(f"- {h}" in md for h in heads)
    # budget 0 is no attack, for every method
    for curve in studies["poisoning"]["demote"].values():
        assert curve[0]["budget"] == 0 and curve[0]["success_rate"] == 0


def test_robustness_and_shift_headlines_read_their_results():
    """The two studies that need the bundled encoder / WordNet, on results of their shape."""
    from dehub.studies._common import paired_ci
    from dehub.studies.report import study_headlines

    rng = np.random.default_rng(1)
    arms = {
        f"{m} {k}": rng.random(80) < p for k in ("clean", "typos") for m, p in (("plain", 0.4), ("nnn", 0.5))
    }
    gains = {k: arms[f"nnn {k}"].astype(float) - arms[f"plain {k}"] for k in ("clean", "typos")}
    robust = {
        "texts_changed": {"typos": 0.8},
        "success@1": paired_ci(arms, [(f"plain {k}", f"nnn {k}") for k in ("clean", "typos")], 50),
        "gain_change": paired_ci(gains, [("clean", "typos")], 50),
        "runtime_seconds": 2.0,
    }
    shift_arms = {
        "plain": rng.random(60) < 0.3,
        "nnn same": rng.random(60) < 0.5,
        "nnn unrelated": rng.random(60) < 0.2,
    }
    shift = {
        "n_test_queries": 60,
        "success@1": paired_ci(shift_arms, [("plain", a) for a in shift_arms if a != "plain"], 50),
        "runtime_seconds": 3.0,
    }
    robust_line, shift_line = study_headlines({"robustness": robust, "shift": shift})
    d = robust["success@1"]["differences"]["nnn typos - plain typos"]
    assert robust_line.startswith("robustness: NNN's success@1 gain on clean queries")
    assert f"typos (80.00% of texts changed) {100 * d['delta']:+.2f}" in robust_line
    diffs = shift["success@1"]["differences"]
    best = max(diffs, key=lambda k: diffs[k]["delta"]).removesuffix(" - plain")
    assert shift_line.startswith(f"shift: best bank {best}: ") and "(60 test queries)" in shift_line
