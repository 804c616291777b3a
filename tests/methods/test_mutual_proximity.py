"""Mutual proximity (Gaussian): the paper with scipy's normal, and kiez's code, matched."""

from __future__ import annotations

import numpy as np
import pytest

import dehub
from dehub.methods import get_tags
from dehub.methods.mutual_proximity import erfc, normal_cdf

from .reference_new import dist, kiez_transcribed, mutual_proximity_paper


def test_erfc_accuracy():
    special = pytest.importorskip("scipy.special")
    x = np.linspace(-6, 26, 20001)
    ref = special.erfc(x)
    ok = ref > 1e-300
    np.testing.assert_allclose(erfc(x)[ok], ref[ok], rtol=1.3e-7)
    # the lower tail the MP distance of close pairs needs
    z = np.linspace(-30, 0, 301)
    np.testing.assert_allclose(normal_cdf(z, 0.0, 1.0), special.ndtr(z), rtol=1.3e-7)


@pytest.mark.parametrize("k", [None, 2, 10])
def test_scores_match_paper(data, k):
    pytest.importorskip("scipy")
    g, r, q = data["gallery"], data["reference"], data["queries"]
    model = dehub.MutualProximity(k=k).fit(g, r)
    ref = mutual_proximity_paper(q, g, r, k)
    np.testing.assert_allclose(model.score(q), ref, atol=2e-6)
    s, ids = model.search(q, 6)
    np.testing.assert_array_equal(ids, np.argsort(-model.score(q), axis=1, kind="stable")[:, :6])
    np.testing.assert_allclose(s, np.take_along_axis(ref, ids, axis=1), atol=2e-6)


def _candidates(q, g, r, k):
    d_qg = dist(q.astype(np.float64) @ g.T.astype(np.float64))
    ind = np.argsort(d_qg, axis=1, kind="stable")[:, :k]
    d_gr = np.sort(dist(g.astype(np.float64) @ r.T.astype(np.float64)), axis=1)[:, :k]
    return np.take_along_axis(d_qg, ind, axis=1), ind, d_gr


def test_matches_kiez_transcription(data):
    pytest.importorskip("scipy")
    g, r, q = data["gallery"], data["reference"], data["queries"]
    k = 8
    nd, ind, d_gr = _candidates(q, g, r, k)
    ours = dehub.MutualProximity(k=k).fit(g, r).score(q)
    np.testing.assert_allclose(
        np.take_along_axis(ours, ind, axis=1), -kiez_transcribed(nd, ind, d_gr, "mp"), atol=2e-6
    )


def test_matches_kiez_itself(kiez, data, monkeypatch):
    """kiez's MutualProximity(method='normal')._fit/transform, when kiez is importable (see LS)."""
    import types

    from kiez.hubness_reduction import mutual_proximity as kiez_mp

    monkeypatch.setattr(kiez_mp, "check_is_fitted", lambda *a, **k: None)
    g, r, q = data["gallery"], data["reference"], data["queries"]
    k = 8
    nd, ind, d_gr = _candidates(q, g, r, k)
    hr = kiez_mp.MutualProximity(method="normal", nn_algo=types.SimpleNamespace(n_candidates=k))
    hr._fit(d_gr, None, None, None)
    kd, _ = hr.transform(nd, ind, None)
    ours = dehub.MutualProximity(k=k).fit(g, r).score(q)
    np.testing.assert_allclose(np.take_along_axis(ours, ind, axis=1), -kd, atol=2e-6)


def test_close_pairs_keep_their_order(data):
    """Near duplicates have SF ~ 1: the distance is built from lower tails, never 1 - 1."""
    g, r = data["gallery"], data["reference"]
    rng = np.random.default_rng(0)
    q = g[:5] + 1e-3 * rng.normal(size=(5, g.shape[1])).astype(np.float32)
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    s = dehub.MutualProximity(k=10).fit(g, r).score(q)
    assert np.all(s.max(axis=1) < 0) and np.all(np.argmax(s, axis=1) == np.arange(5))


def test_grid_tags_errors(data):
    g, r, q = data["gallery"], data["reference"], data["queries"]
    assert not get_tags(dehub.MutualProximity()).offset
    n = 0
    for params, fitted in dehub.MutualProximity().fit_grid(g, r, {"k": [3, 10, None]}):
        np.testing.assert_allclose(
            fitted.score(q), dehub.MutualProximity(**params).fit(g, r).score(q), atol=1e-6
        )
        n += 1
    assert n == 3
    with pytest.raises(ValueError, match="k"):
        dehub.MutualProximity(k=1).fit(g, r)
    m = dehub.MutualProximity(k=5).fit(g, r)
    m.set_params(k=None)
    with pytest.raises(ValueError, match="refit with k=None"):
        m.score(q)


def _knn(x: np.ndarray, y: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Each row of x: its k nearest rows of y (float64 Euclidean distances, ascending)."""
    d = np.sqrt(np.maximum(2.0 - 2.0 * x.astype(np.float64) @ y.T.astype(np.float64), 0.0))
    ind = np.argsort(d, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(d, ind, axis=1), ind


@pytest.mark.parametrize("k", [5, 12])
def test_empiric_matches_kiez_itself(data, monkeypatch, k):
    """kiez's MutualProximity(method='empiric'), run on its own setting: one set of items
    that are the queries, the gallery and the reference (kiez's fit(source) with no
    target), where kiez's neighbour-list lookup and dehub's distance rule coincide."""
    pytest.importorskip("kiez")
    import types

    from kiez.hubness_reduction import mutual_proximity as kiez_mp

    monkeypatch.setattr(kiez_mp, "check_is_fitted", lambda *a, **kw: None)
    x = data["gallery"]
    nd, ind = _knn(x, x, k)  # queries' candidates = items' neighbour lists (same set)
    hr = kiez_mp.MutualProximity(method="empiric", nn_algo=types.SimpleNamespace(n_candidates=k))
    hr._fit(nd, ind, None, None)
    kd, _ = hr.transform(nd, ind, None)
    ours = dehub.MutualProximity(k=k, variant="empiric").fit(x, x).score(x)
    np.testing.assert_allclose(np.take_along_axis(ours, ind, axis=1), -kd, atol=1e-12)
    # outside a query's k candidates nothing is farther from it: MP = 1
    outside = np.ones_like(ours, dtype=bool)
    np.put_along_axis(outside, ind, False, axis=1)
    assert np.all(ours[outside] == -1.0)


def test_empiric_search_and_needs_k(data):
    g, r, q = data["gallery"], data["reference"], data["queries"]
    model = dehub.MutualProximity(k=10, variant="empiric").fit(g, r)
    s, ids = model.search(q, 6)
    np.testing.assert_array_equal(ids, np.argsort(-model.score(q), axis=1, kind="stable")[:, :6])
    with pytest.raises(ValueError, match="give k"):
        dehub.MutualProximity(variant="empiric").fit(g, r)
