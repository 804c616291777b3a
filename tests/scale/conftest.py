"""Clustered unit embeddings (the structure IVF relies on) for the scale tests."""

from __future__ import annotations

import numpy as np
import pytest


@pytest.fixture
def clustered_data():
    rng = np.random.default_rng(7)
    centers_rng = np.random.default_rng(8)
    centers = centers_rng.standard_normal((40, 32))

    def draw(n):
        x = centers[rng.integers(0, 40, n)] + 0.8 * rng.standard_normal((n, 32))
        return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)

    return {"gallery": draw(600), "reference": draw(6000), "queries": draw(50)}
