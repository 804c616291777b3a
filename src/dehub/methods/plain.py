"""The uncorrected baseline: plain inner-product (cosine) retrieval."""

from __future__ import annotations

import numpy as np

from ._tags import MethodTags
from .base import AdditiveBiasCorrector

__all__ = ["Plain"]


class Plain(AdditiveBiasCorrector):
    """No correction: ``s(q, r) = q . r``. The reference set is accepted and ignored.

    Exists so that the baseline runs through exactly the same code path (engine,
    index files, evaluation) as every correction.
    """

    name = "plain"
    _param_names = ()

    def __dehub_tags__(self) -> MethodTags:
        # No fitted statistics: every update and every shard split is trivially exact.
        return MethodTags(offset=True, incremental=True)

    def _fit_bias(self, gallery, reference, *, memory_budget: int, progress: bool) -> None:
        self.n_gallery_ = gallery.shape[0]

    @property
    def bias_(self) -> np.ndarray:
        self._check_fitted()
        return np.zeros(self.gallery_.shape[0], dtype=np.float32)
