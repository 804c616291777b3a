import numpy as np
import pytest


def unit(x):
    x = np.asarray(x, dtype=np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


@pytest.fixture
def clustered():
    """Gallery and reference from 20 clusters in 32-d sharing one common direction (the
    anisotropy of real embeddings), so the centroid is near every query."""
    rng = np.random.default_rng(0)
    common = unit(rng.standard_normal((1, 32)))
    centres = unit(unit(rng.standard_normal((20, 32))) + 1.0 * common)
    gallery = unit(centres[rng.integers(0, 20, 400)] + 0.6 * rng.standard_normal((400, 32)) / np.sqrt(32) * 4)
    reference = unit(
        centres[rng.integers(0, 20, 3000)] + 0.6 * rng.standard_normal((3000, 32)) / np.sqrt(32) * 4
    )
    return gallery, reference
