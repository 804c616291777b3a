"""The bundled WordNet benchmark, end to end: NNN improves R@1 (positive paired-CI bound)."""

from __future__ import annotations

import pytest

wordnet = pytest.importorskip(
    "dehub.datasets.wordnet", reason="the bundled WordNet benchmark loader is not installed"
)


@pytest.mark.slow
def test_nnn_improves_r1_on_wordnet():
    from dehub.evaluation import run_evaluation

    bench = wordnet.load_wordnet_benchmark()
    result = run_evaluation(bench, methods=("plain", "nnn"), n_bootstrap=300, seed=0, progress=False)
    for direction in ("a2b", "b2a"):
        diff = result.data["directions"][direction]["bootstrap"]["differences"]["nnn - plain"]["R@1"]
        assert diff["ci_low"] > 0, (direction, diff)
    assert result.data["timings"]["total_seconds"] < 120
