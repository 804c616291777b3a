"""Hubness statistics against direct formulas (and scipy where installed)."""

from __future__ import annotations

import numpy as np
import pytest

from dehub.evaluation.hubness import compare_hubness, hubness_stats, k_occurrence


def test_k_occurrence_hand_example():
    ids = np.array([[0, 1], [0, 2], [0, -1]])
    assert k_occurrence(ids, 4, 1).tolist() == [3, 0, 0, 0]
    assert k_occurrence(ids, 4, 2).tolist() == [3, 1, 1, 0]
    s = hubness_stats(ids, 4, k=2)
    assert s["max"] == 3 and s["argmax"] == 0 and s["anti_hub_share"] == 0.25
    # Robin Hood: mean 1.25, sum |x - mean| = 1.75 + .25 + .25 + 1.25 = 3.5 -> 0.5 * 3.5 / 5
    assert s["robin_hood"] == pytest.approx(0.35)
    with pytest.raises(ValueError, match="at least 3 results"):
        k_occurrence(ids, 4, 3)


def test_moments_match_scipy_excess_kurtosis():
    stats = pytest.importorskip("scipy.stats")
    rng = np.random.default_rng(0)
    ids = rng.zipf(1.6, size=(500, 5)) % 200
    n_k = k_occurrence(ids, 200, 5)
    s = hubness_stats(ids, 200, k=5)
    assert s["skewness"] == pytest.approx(stats.skew(n_k))
    assert s["kurtosis"] == pytest.approx(stats.kurtosis(n_k, fisher=True))
    srt = np.sort(n_k)
    gini_ref = 1 - 2 * np.sum(np.cumsum(srt) / srt.sum()) / len(srt) + 1 / len(srt)
    assert s["gini"] == pytest.approx(gini_ref)


def test_compare_and_constant_counts():
    ids_flat = np.arange(10)[:, None]
    flat = hubness_stats(ids_flat, 10, 1)
    assert np.isnan(flat["kurtosis"]) and flat["robin_hood"] == 0
    hubby = np.zeros((10, 1), dtype=int)
    c = compare_hubness(hubby, ids_flat, 10, 1)
    assert c["before"]["max"] == 10 and c["after"]["max"] == 1 and c["change"]["max"] == -9
    assert c["before"]["anti_hub_share"] == 0.9
