"""Paired bootstrap: reproducibility, pairing, and coverage of a known effect."""

from __future__ import annotations

import numpy as np
import pytest

from dehub.evaluation.statistics import bootstrap_comparisons, paired_bootstrap


def test_bit_for_bit_reproducible_and_recorded():
    rng = np.random.default_rng(0)
    a = {"R@1": (rng.random(300) < 0.4).astype(float)}
    b = {"R@1": (rng.random(300) < 0.5).astype(float)}
    r1 = paired_bootstrap(a, b, n_resamples=300, seed=7)
    r2 = paired_bootstrap(a, b, n_resamples=300, seed=7)
    r3 = paired_bootstrap(a, b, n_resamples=300, seed=8)
    assert r1 == r2
    assert (
        r1["metrics"]["R@1"]["ci_low"] != r3["metrics"]["R@1"]["ci_low"]
        or r1["metrics"]["R@1"]["ci_high"] != r3["metrics"]["R@1"]["ci_high"]
    )
    assert r1["n_resamples"] == 300 and r1["seed"] == 7
    assert r1["metrics"]["R@1"]["delta"] == pytest.approx(b["R@1"].mean() - a["R@1"].mean())


def test_pairing_narrows_the_interval():
    # identical outcomes except 10 queries: the paired CI of the difference is tight
    rng = np.random.default_rng(1)
    a = (rng.random(1000) < 0.5).astype(float)
    b = a.copy()
    b[np.flatnonzero(a == 0)[:10]] = 1
    r = paired_bootstrap({"R@1": a}, {"R@1": b}, n_resamples=500, seed=0)["metrics"]["R@1"]
    assert r["ci_low"] > 0 and r["ci_high"] - r["ci_low"] < 0.02


def test_coverage_of_known_effect():
    """95% CIs cover the true difference in roughly 95% of replications."""
    p_a, p_b, n, reps = 0.5, 0.6, 200, 300
    true_delta = p_b - p_a
    rng = np.random.default_rng(123)
    covered = 0
    for rep in range(reps):
        u = rng.random(n)  # correlated pair: both methods see the same query difficulty
        a = (u < p_a).astype(float)
        b = (u < p_b).astype(float)
        flip = rng.random(n) < 0.2  # some independent noise
        b[flip] = (rng.random(flip.sum()) < p_b).astype(float)
        r = paired_bootstrap({"R@1": a}, {"R@1": b}, n_resamples=200, seed=rep)["metrics"]["R@1"]
        covered += r["ci_low"] <= true_delta <= r["ci_high"]
    assert 0.89 <= covered / reps <= 0.99


def test_comparisons_errors():
    with pytest.raises(ValueError, match="same queries"):
        bootstrap_comparisons({"x": {"R@1": np.ones(3)}, "y": {"R@1": np.ones(4)}}, [("x", "y")], 10)
    with pytest.raises(ValueError, match="not among"):
        bootstrap_comparisons({"x": {"R@1": np.ones(3)}}, [("x", "z")], 10)
    with pytest.raises(ValueError, match="n_resamples"):
        paired_bootstrap({"R@1": np.ones(3)}, {"R@1": np.ones(3)}, n_resamples=0)
