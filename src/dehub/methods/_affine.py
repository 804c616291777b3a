"""Corrections whose score is an affine function of an additive-bias score.

For a fixed query ``q`` the methods of this family score gallery item ``r`` as::

    score(q, r) = scale * (q . r - bias_[r]) + c(q)

with ``scale > 0`` and a per-query term ``c(q)``. Neither ``scale`` nor ``c(q)``
changes the ranking of a query, so search is one exact inner-product search with
``bias_`` as offset (as cheap as NNN, and exportable with
:meth:`~dehub.methods.base.AdditiveBiasCorrector.export_vectors`); ``scale`` and
``c(q)`` are applied afterwards so that ``search`` returns the same values as the dense
``score``. Exported vectors give ``q . r - bias_[r] = (score - c(q)) / scale``.
"""

from __future__ import annotations

import numpy as np

from ..engine.exact import DEFAULT_MEMORY_BUDGET, exact_search
from ._params import check_int, check_real
from ._stats import compute_dtype
from .base import AdditiveBiasCorrector

__all__ = ["AffineBiasCorrector", "check_real", "check_int"]


class AffineBiasCorrector(AdditiveBiasCorrector):
    """``score(q, r) = _scale() * (q . r - bias_[r]) + _query_term(q)``.

    Subclasses set ``bias_`` (via :class:`AdditiveBiasCorrector`) and override
    :meth:`_scale` and :meth:`_query_term`.
    """

    def _scale(self) -> float:
        return 1.0

    def _score_scale(self) -> float:
        return self._scale()

    def _query_term(self, queries: np.ndarray, *, memory_budget: int) -> np.ndarray | None:
        """Per-query additive term ``c(q)``, shape (n_queries,), or None for zero."""
        return None

    def _finish(self, s: np.ndarray, queries: np.ndarray, memory_budget: int) -> np.ndarray:
        out = s.astype(np.float64) * self._scale()
        c = self._query_term(queries, memory_budget=memory_budget)
        if c is not None:
            out += c[:, None]
        return out.astype(np.float32)

    def _search(
        self, queries: np.ndarray, k: int, *, memory_budget: int, progress: bool
    ) -> tuple[np.ndarray, np.ndarray]:
        """Top-``k`` gallery rows per query under the corrected score.

        One exact search with ``bias_`` as offset; the returned float32 scores are the
        method's true scores (the same values as :meth:`score`), best first; ids are
        int64 gallery rows, ties broken by the smaller row, padded with ``-inf``/``-1``.
        """
        s, ids = exact_search(
            queries,
            self.gallery_,
            k,
            offset=self.bias_,
            memory_budget=memory_budget,
            progress="search" if progress else False,
        )
        return self._finish(s, queries, memory_budget), ids

    def _score(self, queries: np.ndarray) -> np.ndarray:
        """Dense corrected scores, shape (n_queries, n_gallery), float32."""
        dt = compute_dtype(queries, self.gallery_)
        s = (np.asarray(queries, dtype=dt) @ np.asarray(self.gallery_, dtype=dt).T).astype(np.float64)
        s -= self.bias_.astype(np.float64)
        s *= self._scale()
        c = self._query_term(queries, memory_budget=DEFAULT_MEMORY_BUDGET)
        if c is not None:
            s += c[:, None]
        return s.astype(np.float32)
