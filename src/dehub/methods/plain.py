"""The uncorrected baseline: plain inner-product (cosine) retrieval."""

from __future__ import annotations

import numpy as np

from .._errors import InputError
from ._cost import ranking_work
from ._tags import MethodTags
from .base import AdditiveBiasCorrector, ReferenceFit

__all__ = ["Plain"]


class Plain(ReferenceFit, AdditiveBiasCorrector):
    """No correction: ``s(q, r) = q . r``. The reference set is accepted and ignored.

    Exists so that the baseline runs through exactly the same code path (engine,
    index files, evaluation) as every correction. It has no parameters and no fitted
    statistics, so every update and every shard split is trivially exact.
    """

    name = "plain"

    def __dehub_tags__(self) -> MethodTags:
        return MethodTags(offset=True, incremental=True, row_decomposable=True)

    def sweep_work(self, shape, grid=None):
        """No fit; its one setting is ranked from the shared validation scores."""
        return ranking_work(shape, 1)

    def _row_statistics(self, gallery, reference, *, memory_budget: int, progress: bool):
        return {}

    def _set_statistics(self, gallery, statistics, n_reference: int | None) -> None:
        if statistics:
            raise InputError(f"Plain has no statistics; received arrays {sorted(statistics)}")
        self.n_reference_ = n_reference
        self.gallery_ = gallery

    def fitted_statistics(self) -> dict[str, np.ndarray]:
        self._check_fitted()
        return {}

    def merge_reference_statistics(self, statistics, new_statistics, *, n_reference: int):
        return {}

    def _restore(self, gallery, arrays) -> None:
        self._set_statistics(gallery, arrays, None)

    def _compute_bias(self) -> np.ndarray:
        return np.zeros(self.gallery_.shape[0], dtype=np.float32)
