"""InvGC / LocalAdj: the paper's formula and the official torch code, matched."""

from __future__ import annotations

import numpy as np
import pytest

import dehub
from dehub.methods import get_tags

from .reference_new import invgc_paper, official_invgc


def _banks(data, rng_seed=3, n=300):
    # banks of 300 rows: pool_rate 0.01 gives the official code's p = int(0.01 * 300) = 3
    rng = np.random.default_rng(rng_seed)
    d = data["gallery"].shape[1]
    unit = lambda x: (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)  # noqa: E731
    return unit(rng.normal(size=(n, d))), unit(rng.normal(size=(n, d)))


@pytest.mark.parametrize("local_adj", [True, False])
@pytest.mark.parametrize("rates", [(0.5, 0.5), (1.0, 0.25), (0.0, 2.0)])
def test_matches_official_code_and_paper(data, local_adj, rates):
    torch = pytest.importorskip("torch")
    del torch
    g, q = data["gallery"], data["queries"]
    gb, qb = _banks(data)
    r_g, r_q = rates
    model = dehub.InvGC(r_g=r_g, r_q=r_q, local_adj=local_adj).fit(g, qb, gallery_bank=gb)
    official = official_invgc(g, q, gb, qb, r_g, r_q, local_adj=local_adj, pool_rate=0.01)
    np.testing.assert_allclose(model.score(q), official.T, atol=2e-6, rtol=0)
    ref = invgc_paper(g, gb, qb, r_g, r_q, local_adj=local_adj)
    np.testing.assert_allclose(model.transformed_gallery_, ref, atol=1e-6, rtol=0)


def test_small_bank_uses_at_least_one_neighbour(data):
    g, r = data["gallery"], data["reference"]  # 120 * 0.01 = 1.2 -> p = 1
    model = dehub.InvGC().fit(g, r)
    ref = invgc_paper(g, g, r, 0.5, 0.5, local_adj=True)
    np.testing.assert_allclose(model.transformed_gallery_, ref, atol=1e-6)
    tiny = dehub.InvGC().fit(g, r[:20])  # 0.2 -> the official code would divide by zero
    assert np.isfinite(tiny.transformed_gallery_).all()


def test_search_tags_export_and_grid(data):
    g, r, q = data["gallery"], data["reference"], data["queries"]
    model = dehub.InvGC(r_g=0.25, r_q=1.0).fit(g, r)
    tags = get_tags(model)
    assert tags.changes_vectors and not tags.offset
    s, ids = model.search(q, 6)
    dense = q @ model.transformed_gallery_.T
    np.testing.assert_array_equal(ids, np.argsort(-dense, axis=1, kind="stable")[:, :6])
    assert model.transformed_gallery_.shape == g.shape  # exports need no extra dimension
    np.testing.assert_allclose(np.linalg.norm(model.transformed_gallery_, axis=1), 1, atol=1e-6)
    with pytest.raises(ValueError, match="transformed_gallery_"):
        model.export_vectors()
    n = 0
    for params, fitted in dehub.InvGC().fit_grid(g, r, {"r_g": [0.0, 0.5], "r_q": [0.25, 1.0]}):
        single = dehub.InvGC(**params).fit(g, r)
        np.testing.assert_allclose(fitted.transformed_gallery_, single.transformed_gallery_, atol=1e-6)
        n += 1
    assert n == 4
    plain = dehub.InvGC(r_g=0.0, r_q=0.0).fit(g, r)
    np.testing.assert_allclose(plain.transformed_gallery_, g, atol=1e-6)  # no step: the gallery


def test_bad_parameters(data):
    with pytest.raises(ValueError, match="pool_rate"):
        dehub.InvGC(pool_rate=0.0).fit(data["gallery"], data["reference"])
    with pytest.raises(ValueError, match="r_g"):
        dehub.InvGC(r_g=-1.0).fit(data["gallery"], data["reference"])
    model = dehub.InvGC().fit(data["gallery"], data["reference"])
    model.set_params(r_q=2.0)
    with pytest.raises(ValueError, match=r"parameters changed after fit \(r_q: 0.5 -> 2.0\)"):
        model.search(data["queries"], 3)
