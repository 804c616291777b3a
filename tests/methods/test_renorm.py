"""Renormalization (arXiv 2511.11041): R2 projection and R1 subtraction."""

from __future__ import annotations

import numpy as np
import pytest

import dehub
from dehub.methods import get_tags

from .reference_new import renorm_paper


@pytest.mark.parametrize("variant", ["projection", "subtract"])
def test_scores_match_paper(data, variant):
    g, r, q = data["gallery"], data["reference"], data["queries"]
    # a strong shared mean direction, as in text embeddings
    shift = np.linspace(0.5, 1.5, g.shape[1]).astype(np.float32)
    unit = lambda x: (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)  # noqa: E731
    g, r, q = unit(g + shift), unit(r + shift), unit(q + shift)
    model = dehub.Renorm(variant=variant).fit(g, r)
    ref = renorm_paper(q, g, r, variant)
    np.testing.assert_allclose(model.score(q), ref, atol=2e-6)
    s, ids = model.search(q, 8)
    np.testing.assert_array_equal(ids, np.argsort(-ref, axis=1, kind="stable")[:, :8])
    np.testing.assert_allclose(s, np.take_along_axis(ref, ids, axis=1), atol=2e-6)


def test_projection_serves_raw_queries_from_the_new_vectors(data):
    g, r, q = data["gallery"], data["reference"], data["queries"]
    model = dehub.Renorm().fit(g, r)
    assert get_tags(model).changes_vectors
    assert not get_tags(dehub.Renorm(variant="subtract")).changes_vectors
    ids_export = np.argsort(-(q @ model.transformed_gallery_.T), axis=1, kind="stable")[:, :5]
    np.testing.assert_array_equal(ids_export, model.search(q, 5)[1])
    with pytest.raises(ValueError, match="index transformed_gallery_"):
        model.export_vectors()
    sub = dehub.Renorm(variant="subtract").fit(g, r)
    with pytest.raises(ValueError, match="transforms the queries too"):
        sub.export_vectors()


def test_grid_and_errors(data):
    g, r = data["gallery"], data["reference"]
    got = {p["variant"]: f.score(data["queries"]) for p, f in dehub.Renorm().fit_grid(g, r)}
    for variant, s in got.items():
        np.testing.assert_allclose(
            s, dehub.Renorm(variant=variant).fit(g, r).score(data["queries"]), atol=1e-6
        )
    with pytest.raises(ValueError, match="variant"):
        dehub.Renorm(variant="whiten").fit(g, r)
