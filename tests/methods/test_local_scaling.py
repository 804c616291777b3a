"""Local scaling / NICDM: the paper's formulas and kiez's transform, matched."""

from __future__ import annotations

import numpy as np
import pytest

import dehub
from dehub.methods import get_tags

from .reference_new import dist, kiez_transcribed, local_scaling_paper


@pytest.mark.parametrize("variant", ["nicdm", "standard"])
@pytest.mark.parametrize("k", [1, 5, 40])
def test_scores_match_paper(data, variant, k):
    g, r, q = data["gallery"], data["reference"], data["queries"]
    model = dehub.LocalScaling(k=k, variant=variant).fit(g, r)
    ref = local_scaling_paper(q, g, r, k, variant)
    np.testing.assert_allclose(model.score(q), ref, atol=2e-6)
    s, ids = model.search(q, 6)
    np.testing.assert_array_equal(ids, np.argsort(-model.score(q), axis=1, kind="stable")[:, :6])
    np.testing.assert_allclose(s, np.take_along_axis(ref, ids, axis=1), atol=2e-6)


def _candidates(q, g, r, k):
    """kiez's inputs: each query's k nearest gallery items, each gallery item's k nearest sources."""
    d_qg = dist(q.astype(np.float64) @ g.T.astype(np.float64))
    ind = np.argsort(d_qg, axis=1, kind="stable")[:, :k]
    d_gr = np.sort(dist(g.astype(np.float64) @ r.T.astype(np.float64)), axis=1)[:, :k]
    return np.take_along_axis(d_qg, ind, axis=1), ind, d_gr


@pytest.mark.parametrize("variant, kiez_method", [("nicdm", "nicdm"), ("standard", "ls")])
def test_matches_kiez_transcription(data, variant, kiez_method):
    g, r, q = data["gallery"], data["reference"], data["queries"]
    k = 8
    nd, ind, d_gr = _candidates(q, g, r, k)
    kiez = kiez_transcribed(nd, ind, d_gr, kiez_method)
    ours = dehub.LocalScaling(k=k, variant=variant).fit(g, r).score(q)
    np.testing.assert_allclose(np.take_along_axis(ours, ind, axis=1), -kiez, atol=2e-6)


@pytest.mark.parametrize("variant, kiez_method", [("nicdm", "nicdm"), ("standard", "standard")])
def test_matches_kiez_itself(kiez, data, monkeypatch, variant, kiez_method):
    """kiez's own LocalScaling._fit/transform, when kiez is importable.

    kiez pins numpy<2 and pandas<2, so the test install adds it without its pins (the
    ``kiez`` fixture skips without it and undoes its import's patching of faiss). kiez 0.5.0's scikit-learn calls break on scikit-learn >= 1.6 (``check_is_fitted``
    needs ``__sklearn_tags__``), so the fittedness guard is replaced by a no-op and the
    neighbour lists are given directly; the arithmetic is kiez's.
    """
    import types

    from kiez.hubness_reduction import local_scaling as kiez_ls

    monkeypatch.setattr(kiez_ls, "check_is_fitted", lambda *a, **k: None)
    g, r, q = data["gallery"], data["reference"], data["queries"]
    k = 8
    nd, ind, d_gr = _candidates(q, g, r, k)
    hr = kiez_ls.LocalScaling(method=kiez_method, nn_algo=types.SimpleNamespace(n_candidates=k))
    hr._fit(d_gr, None, None, None)
    kd, _ = hr.transform(nd, ind)
    ours = dehub.LocalScaling(k=k, variant=variant).fit(g, r).score(q)
    np.testing.assert_allclose(np.take_along_axis(ours, ind, axis=1), -kd, atol=2e-6)


def test_grid_tags_and_small_gallery(data):
    g, r, q = data["gallery"], data["reference"], data["queries"]
    assert get_tags(dehub.LocalScaling()) == dehub.MethodTags()
    grid = {"k": [3, 10], "variant": ["nicdm", "standard"]}
    n = 0
    for params, fitted in dehub.LocalScaling().fit_grid(g, r, grid):
        np.testing.assert_allclose(
            fitted.score(q), dehub.LocalScaling(**params).fit(g, r).score(q), atol=1e-6
        )
        n += 1
    assert n == 4
    # k larger than the gallery: the query side uses every gallery item
    big = dehub.LocalScaling(k=100).fit(g[:30], r)
    np.testing.assert_allclose(big.score(q), local_scaling_paper(q, g[:30], r, 100, "nicdm"), atol=2e-6)
    with pytest.raises(ValueError, match="k=200 exceeds the number of reference items"):
        dehub.LocalScaling(k=200).fit(g, r)
