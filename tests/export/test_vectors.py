"""The d+1 / d+2 maths: exact inner products, equal norms, L2 and cosine ranking."""

from __future__ import annotations

import numpy as np
import pytest

from dehub.export import augment_items, is_offset, item_vectors, query_vectors


def test_d1_inner_product_is_corrected_score(index, data):
    items = augment_items(index, "d+1")
    q = data["queries"]
    got = query_vectors(q, "d+1").astype(np.float64) @ items.vectors.T.astype(np.float64)
    want = index.model.score(q).astype(np.float64)
    np.testing.assert_allclose(got, want, atol=2e-6)
    np.testing.assert_array_equal(items.vectors[:, -1], index.model.bias_.astype(np.float32))
    np.testing.assert_array_equal(query_vectors(q, "d+1")[:, -1], -1.0)
    assert items.M is None


def test_d2_equal_norm_and_exact_rankings(index, data):
    items = augment_items(index, "d+2")
    x = items.vectors.astype(np.float64)
    g = np.asarray(index.model.gallery_, np.float64)
    b = index.model.bias_.astype(np.float64)
    m = np.sqrt((np.einsum("ij,ij->i", g, g) + b**2).max())
    assert items.M == pytest.approx(m, rel=1e-6)
    np.testing.assert_allclose(np.linalg.norm(x, axis=1), m, rtol=1e-5)
    qv = query_vectors(data["queries"], "d+2").astype(np.float64)
    np.testing.assert_array_equal(qv[:, -2:], np.tile([-1.0, 0.0], (qv.shape[0], 1)))
    corrected = index.model.score(data["queries"]).astype(np.float64)
    np.testing.assert_allclose(qv @ x.T, corrected, atol=2e-6)
    l2 = ((qv[:, None, :] - x[None, :, :]) ** 2).sum(-1)
    # |q'-x'|^2 = |q'|^2 + M^2 - 2 (q.r - b): L2 ascending is corrected descending
    np.testing.assert_allclose(l2, (qv**2).sum(1)[:, None] + m * m - 2 * corrected, atol=1e-4)
    cos = (qv @ x.T) / (np.linalg.norm(qv, axis=1)[:, None] * np.linalg.norm(x, axis=1)[None, :])
    for row in range(qv.shape[0]):
        top = np.argsort(-corrected[row], kind="stable")[:10]
        np.testing.assert_array_equal(np.argsort(l2[row], kind="stable")[:10], top)
        np.testing.assert_array_equal(np.argsort(-cos[row], kind="stable")[:10], top)


def test_padding_changes_nothing(index, data):
    items = augment_items(index, "d+2", dim=48)
    assert items.vectors.shape == (index.n_items, 48)
    np.testing.assert_array_equal(items.vectors[:, 34:], 0)
    qv = query_vectors(data["queries"], "d+2", dim=48)
    np.testing.assert_allclose(qv @ items.vectors.T, index.model.score(data["queries"]), atol=2e-6)
    assert query_vectors(data["queries"][0], "d+1").shape == (33,)


def test_bad_inputs_are_clear(index):
    with pytest.raises(ValueError, match="form must be one of"):
        query_vectors(np.zeros((2, 3)), "d+3")
    with pytest.raises(ValueError, match="dim must be at least 5"):
        query_vectors(np.zeros((2, 3)), "d+2", dim=4)
    with pytest.raises(ValueError, match="exceeds the stored common norm"):
        item_vectors(np.ones((2, 3)), np.zeros(2), "d+2", M=1.0)
    with pytest.raises(ValueError, match="expected a \\(n, d\\) gallery"):
        item_vectors(np.ones((2, 3)), np.zeros(3))


def test_capability_question(index):
    import dehub
    from dehub.methods import get_tags

    assert is_offset(index.model)
    g = index.model.gallery_
    csls = dehub.CSLS(k=5).fit(g, g[:100])
    assert is_offset(csls) == get_tags(csls).offset
    dynamic = dehub.QBNorm(dynamic=True).fit(g, g[:100], normalize="none")
    assert not is_offset(dynamic)  # the gate makes the offset query-dependent
    with pytest.raises(TypeError, match="not an additive correction"):
        augment_items(dynamic)
    with pytest.raises(TypeError, match="not an additive correction"):
        augment_items(object())


@pytest.mark.parametrize("form", ["d+1", "d+2"])
def test_lazy_item_vectors_equal_the_full_ones(index, form):
    from dehub.export.vectors import LazyItemVectors

    full = augment_items(index, form)
    lazy = LazyItemVectors(index.model.gallery_, index.model.bias_, form, block_rows=300)
    assert lazy.shape == full.vectors.shape and lazy.M == full.M
    np.testing.assert_array_equal(lazy[0:2000], full.vectors)
    np.testing.assert_array_equal(lazy[np.array([5, 1, 1999])], full.vectors[[5, 1, 1999]])
