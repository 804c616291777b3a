from __future__ import annotations

import numpy as np
import pytest


def unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


@pytest.fixture()
def data():
    """Small unit-norm float32 problem: gallery 40, reference 120, gallery bank 30, 15 queries."""
    rng = np.random.default_rng(7)
    d = 16
    return {
        "gallery": unit(rng.normal(size=(40, d))),
        "reference": unit(rng.normal(size=(120, d))),
        "gallery_bank": unit(rng.normal(size=(30, d))),
        "queries": unit(rng.normal(size=(15, d))),
    }
