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
    # A sub-grid of the paper's (the full 110-setting sweep is what `dehub eval` runs;
    # its k=512 reference pass dominates the time, which this test keeps short).
    grid = {"k": [8, 16, 64], "alpha": [0.5, 0.75, 1.0]}
    result = run_evaluation(
        bench, methods=("plain", "nnn"), n_bootstrap=300, seed=0, grids={"nnn": grid}, progress=False
    )
    for direction in ("a2b", "b2a"):
        diff = result.data["directions"][direction]["bootstrap"]["differences"]["nnn - plain"]["success@1"]
        assert diff["ci_low"] > 0, (direction, diff)
