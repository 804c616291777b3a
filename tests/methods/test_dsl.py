"""DSL: the published inference line, transductive by tag."""

from __future__ import annotations

import numpy as np
import pytest

import dehub
from dehub.methods import get_tags

from .reference_new import official_dsl


@pytest.mark.parametrize("temperature", [0.01, 0.05, 1.0])
def test_matches_published_line_over_the_test_queries(data, temperature):
    g, q = data["gallery"], data["queries"]
    model = dehub.DSL(temperature=temperature).fit(g, q)  # transductive: the test queries
    ref = official_dsl(q.astype(np.float64) @ g.T.astype(np.float64), temperature)
    np.testing.assert_allclose(model.score(q), ref, rtol=2e-5, atol=1e-6)
    s, ids = model.search(q, 5)
    np.testing.assert_array_equal(ids, np.argsort(-model.score(q), axis=1, kind="stable")[:, :5])
    np.testing.assert_allclose(s, np.take_along_axis(ref, ids, axis=1), rtol=2e-5, atol=1e-6)


def test_tagged_transductive_and_blocks_agree(data):
    g, q = data["gallery"], data["queries"]
    assert get_tags(dehub.DSL).transductive and not get_tags(dehub.DSL).offset
    model = dehub.DSL().fit(g, q)
    # scoring in row blocks gives the same values: the softmax's query set is fixed at fit
    np.testing.assert_allclose(np.vstack([model.score(q[:7]), model.score(q[7:])]), model.score(q), atol=0)
    full = model.search(q, 4)
    tiny = model.search(q, 4, memory_budget=4096)
    np.testing.assert_array_equal(full[1], tiny[1])


def test_grid_and_errors(data):
    g, q = data["gallery"], data["queries"]
    for params, fitted in dehub.DSL().fit_grid(g, q, {"temperature": [0.02, 0.2]}):
        np.testing.assert_allclose(fitted.score(q), dehub.DSL(**params).fit(g, q).score(q), rtol=1e-6)
    with pytest.raises(ValueError, match="temperature"):
        dehub.DSL(temperature=0.0).fit(g, q)
    m = dehub.DSL().fit(g, q)
    m.set_params(temperature=0.5)
    with pytest.raises(ValueError, match="differs from the"):
        m.search(q, 2)
