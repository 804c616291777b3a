"""Cross-domain similarity local scaling (CSLS).

Conneau, Lample, Ranzato, Denoyer, Jégou. *Word Translation Without Parallel Data*.
ICLR 2018, arXiv 1710.04087, Eq. 6.

In the paper a mapped source word ``x`` (here: a query ``q``) and a target word ``y``
(here: a gallery item ``r``) score::

    CSLS(q, r) = 2 s(q, r) - r_T(q) - r_S(r)

* ``r_T(q) = (1/K) sum_{r' in N_T(q)} s(q, r')``: mean similarity of the query to its
  ``K`` nearest *gallery* items (the target domain);
* ``r_S(r) = (1/K) sum_{q' in N_S(r)} s(q', r)``: mean similarity of the gallery item to
  its ``K`` nearest *reference* queries (the source domain: a bank of queries, e.g.
  training captions, exactly NNN's reference set).

Rank equivalence: for a fixed query, ``r_T(q)`` is a constant, so CSLS ranks the gallery
like ``s(q, r) - r_S(r) / 2``, i.e. like NNN with ``k = K`` and ``alpha = 0.5``. Search is
therefore one exact search with offset ``bias_ = r_S / 2`` (as cheap as NNN); the true
CSLS value is restored afterwards as ``2 * (s - bias_) - r_T(q)``, which costs one more
plain top-``K`` search of the queries against the gallery (for ``r_T``).
"""

from __future__ import annotations

from numbers import Integral
from typing import ClassVar

import numpy as np

from .._errors import InputError
from .._validation import check_k
from ..engine.exact import DEFAULT_MEMORY_BUDGET, exact_search
from ._affine import AffineBiasCorrector
from ._cost import grid_count, pass_work, ranking_work
from ._params import Constraint, Interval
from ._tags import MethodTags
from ._topk_cache import TopKStatistics
from .base import NotFittedError, ReferenceFit

__all__ = ["CSLS"]


class CSLS(TopKStatistics, ReferenceFit, AffineBiasCorrector):
    """Cross-domain similarity local scaling (Conneau et al., ICLR 2018).

    Parameters
    ----------
    k : int, default 10
        The paper's ``K``: neighbours averaged in both ``r_T`` (query -> gallery) and
        ``r_S`` (gallery item -> reference queries). The paper uses K = 10.

    Attributes
    ----------
    topk_scores_ : (n_gallery, fitted_k_) float32
        Largest reference-query similarities of every gallery item, sorted descending;
        any ``k <= fitted_k_`` is served from this cache (as in NNN).
    topk_ids_ : (n_gallery, fitted_k_) int64
    fitted_k_ : int
    bias_ : (n_gallery,) float64
        ``r_S(r) / 2``.

    ``score`` and ``search`` return the true CSLS value ``2 s - r_T(q) - r_S(r)``.
    """

    name = "csls"
    _cached_params = frozenset({"k"})
    _parameter_constraints: ClassVar[dict[str, list[Constraint]]] = {"k": [Interval(Integral, 1, None)]}

    def __init__(self, k: int = 10) -> None:
        self.k = k

    def __dehub_tags__(self) -> MethodTags:
        # Offset: for a fixed query r_T(q) shifts every item equally and the factor 2 is
        # positive, so the ranking is that of s - r_S/2 (see dehub.methods._tags). r_S(r)
        # depends only on r and the reference (per-row statistics); r_T is computed at
        # search time from the current gallery, so gallery growth needs nothing more.
        return MethodTags(offset=True, incremental=True, row_decomposable=True)

    @classmethod
    def default_grid(cls) -> dict[str, list]:
        """K = 1, 2, 4, ..., 64 plus the paper's 10 (8 values, one reference pass)."""
        return {"k": [1, 2, 4, 8, 10, 16, 32, 64]}

    def _check_consistency(self) -> None:
        fitted = getattr(self, "fitted_k_", None)
        if fitted is not None and self.k > fitted:
            raise InputError(
                f"k={self.k} exceeds the k={fitted} used in fit; the cached top-{fitted} "
                f"reference scores serve any k <= {fitted}. Refit with k={self.k}."
            )

    def check_fit_sizes(self, n_gallery: int, n_reference: int) -> None:
        check_k(int(self.k), n_reference, name="k", what="reference items")
        check_k(int(self.k), n_gallery, name="k", what="gallery items (r_T(q) averages k of them)")

    def _reference_size_check(self, reference: np.ndarray) -> None:
        self._check_k_reference(int(self.k), reference)

    def _gallery_size_check(self, gallery: np.ndarray) -> None:
        check_k(self.k, gallery.shape[0], name="k", what="gallery items (r_T(q) averages k of them)")

    def _row_statistics(self, gallery, reference, *, memory_budget: int, progress: bool):
        scores, ids = exact_search(
            gallery,
            reference,
            int(self.k),
            memory_budget=memory_budget,
            progress="CSLS r_S" if progress else False,
        )
        return {"topk_scores": scores, "topk_ids": ids}

    def fit_grid(self, gallery, reference, grid=None, **fit_kwargs):
        """Every K of ``grid`` from ONE pass over the reference (the largest K's top-K).

        K values larger than the reference set or the gallery are skipped. The same
        yielded estimators are independent.
        """
        ks = self._grid_ks(grid, reference.shape[0], gallery.shape[0])
        self.set_params(k=ks[-1])
        self.fit(gallery, reference, **fit_kwargs)
        yield from self._grid_steps(ks)

    def shared_scores_obstacle(self) -> str | None:
        return None  # r_S is the shared reference top-k; r_T does not change the ranking

    def _grid_from_shared(self, shared, grid):
        """:meth:`fit_grid` from the shared reference top-k (at the grid's largest K)."""
        ks = self._grid_ks(grid, shared.n_reference, shared.n_gallery)
        self.set_params(k=ks[-1])
        self._fit_from_topk(shared)
        yield from self._grid_steps(ks)

    def sweep_work(self, shape, grid=None):
        """One top-k pass over the reference (product and selection), then offsets only."""
        n = grid_count(self._check_grid(grid))
        return pass_work(shape.n_gallery, shape.n_reference, shape.dim, elem=2.0) + ranking_work(shape, n)

    def _grid_ks(self, grid, n_ref: int, n_gallery: int) -> list[int]:
        grid = self._check_grid(grid)
        limit = min(n_ref, n_gallery)
        ks = sorted({int(k) for k in grid.get("k", [self.k]) if int(k) <= limit})
        if not ks:
            raise InputError(
                f"every k in the grid exceeds min(#reference, #gallery) = {limit}; lower the k values"
            )
        return ks

    def _grid_steps(self, ks: list[int]):
        for k in ks:
            self.set_params(k=k)
            self._check_params()
            yield {"k": k}, self

    def r_S(self) -> np.ndarray:
        """Mean similarity of every gallery item to its k nearest reference queries (float64)."""
        if getattr(self, "topk_scores_", None) is None:
            raise NotFittedError("CSLS is not fitted yet; call fit(gallery, reference) first")
        return self.topk_scores_[:, : self.k].mean(axis=1, dtype=np.float64)

    def r_T(self, queries, *, memory_budget: int = DEFAULT_MEMORY_BUDGET) -> np.ndarray:
        """Mean similarity of every query to its k nearest gallery items (float64)."""
        self._check_fitted()
        check_k(self.k, self.gallery_.shape[0], name="k", what="gallery items (r_T(q) averages k of them)")
        s, _ = exact_search(queries, self.gallery_, int(self.k), memory_budget=memory_budget)
        return s.mean(axis=1, dtype=np.float64)

    def _compute_bias(self) -> np.ndarray:
        return 0.5 * self.r_S()

    def _scale(self) -> float:
        return 2.0

    def _query_term(self, queries, *, memory_budget: int) -> np.ndarray:
        return -self.r_T(queries, memory_budget=memory_budget)
