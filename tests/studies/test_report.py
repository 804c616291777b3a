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
    # budget 0 is no attack, for every method
    for curve in studies["poisoning"]["demote"].values():
        assert curve[0]["budget"] == 0 and curve[0]["success_rate"] == 0
