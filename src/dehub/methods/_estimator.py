"""The estimator skeleton: the public ``fit``/``search``/``score`` contract (part of :mod:`dehub.methods.base`).

:class:`BaseCorrector` composes the parameters (:mod:`._parameters`), the fitted state
(:mod:`._fitted`), the persistence (:mod:`._persistence`) and the hooks the rest of dehub
asks (:mod:`._hooks`), and holds the one body of every public entry point: inputs
checked once, ``k`` clamped to the gallery, then the method's ``_fit``/``_search``/
``_score`` with prepared arrays. See :mod:`dehub.methods.base` for the whole contract.
"""

from __future__ import annotations

import itertools
import warnings
from abc import abstractmethod
from collections.abc import Iterator
from typing import Any, TypeVar

import numpy as np

from .._errors import InputError, InputTypeError, Param
from .._validation import (
    NormalizeMode,
    check_same_dim,
    user_stacklevel,
    validate_embeddings,
)
from ..engine.exact import DEFAULT_MEMORY_BUDGET
from ._exclude import ExcludedIds, check_excluded, search_excluding
from ._fitted import ENTRY_POINTS, KClampedWarning
from ._hooks import MethodHooks
from ._persistence import Persistence

__all__ = ["BaseCorrector"]

_E = TypeVar("_E", bound="BaseCorrector")


class BaseCorrector(MethodHooks, Persistence):
    """Base class: parameter handling, input checks and the search/score contract."""

    gallery_: np.ndarray

    def __init_subclass__(cls, **kwargs: Any) -> None:
        """Seal the public entry points of every estimator class (module docstring)."""
        super().__init_subclass__(**kwargs)
        for name, seal in ENTRY_POINTS.items():
            fn = cls.__dict__.get(name)  # overridden in this class itself
            if fn is not None and not getattr(fn, "__dehub_entry__", False):
                setattr(cls, name, seal(fn))

    def _clamp_k(self, k: Any) -> int:
        """``k`` as a positive int, lowered to the gallery size with one :class:`KClampedWarning`."""
        if isinstance(k, (bool, np.bool_)) or not isinstance(k, (int, np.integer)):
            raise InputTypeError(f"k must be a positive integer; received {k!r}")
        k = int(k)
        if k < 1:
            raise InputError(f"k must be >= 1; received k={k}")
        n = int(self.gallery_.shape[0])
        if k > n:
            warnings.warn(
                KClampedWarning(
                    f"exceeds the {n} gallery items; returning {n} results per query",
                    subject=Param("k", str(k)),
                ),
                stacklevel=user_stacklevel(),
            )
            k = n
        return k

    @staticmethod
    def _prepare(x, name: str, normalize: NormalizeMode) -> np.ndarray:
        return validate_embeddings(x, name, normalize)  # one pass over the rows

    def _prepare_banks(self, gallery, reference, gallery_bank, normalize: NormalizeMode):
        """Prepared ``(gallery, reference, gallery bank)``; the bank is the gallery when None."""
        gallery = self._prepare(gallery, "gallery", normalize)
        reference = self._prepare(reference, "reference", normalize)
        check_same_dim(gallery, reference, "gallery", "reference")
        if gallery_bank is None:
            return gallery, reference, gallery
        bank = self._prepare(gallery_bank, "gallery_bank", normalize)
        check_same_dim(gallery, bank, "gallery", "gallery_bank")
        return gallery, reference, bank

    def _prepare_queries(self, queries, normalize: NormalizeMode) -> np.ndarray:
        queries = self._prepare(queries, "queries", normalize)
        check_same_dim(queries, self.gallery_, "queries", "gallery")
        return queries

    # ------------------------------------------------------------------ contract
    def fit(
        self: _E,
        gallery: Any,
        reference: Any,
        *,
        normalize: NormalizeMode = "warn",
        memory_budget: int = DEFAULT_MEMORY_BUDGET,
        progress: bool = False,
        **inputs: Any,
    ) -> _E:
        """Learn the fitted attributes from ``gallery`` and ``reference``; return ``self``.

        Parameters
        ----------
        gallery : (n_gallery, d) float array, memmap or shard view
            Retrieval candidates (images for text-to-image); kept, not copied.
        reference : (n_reference, d) float array
            Reference queries or query bank, disjoint from the test queries (e.g.
            training captions).
        normalize : {'warn', 'l2', 'none', 'error'}
            What to do with rows that are not unit-norm (see ``dehub._validation``).
        memory_budget : int
            Working-memory bytes of the blocked exact engine.
        progress : bool
            Show progress bars.
        **inputs
            A method's own fit inputs (DBNorm's, DN's, InvGC's and DBSN's ``gallery_bank``;
            see the class).

        The estimator is unfitted until the fit succeeds; then its parameters are recorded
        with the fitted state (see the module docstring).
        """
        self._unseal()
        self._fit(
            gallery, reference, normalize=normalize, memory_budget=memory_budget, progress=progress, **inputs
        )
        self._seal()
        return self

    @abstractmethod
    def _fit(
        self, gallery: Any, reference: Any, *, normalize: NormalizeMode, memory_budget: int, progress: bool
    ) -> Any:
        """The method's fit: validate its inputs and parameters once, set the fitted arrays."""

    def search(
        self,
        queries: Any,
        k: int = 10,
        *,
        normalize: NormalizeMode = "warn",
        memory_budget: int = DEFAULT_MEMORY_BUDGET,
        progress: bool = False,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Top-``k`` gallery rows per query under the corrected score.

        The entry point of every method: checks the estimator is fitted with its current
        parameters, clamps ``k`` to the gallery (one :class:`KClampedWarning`), validates the
        queries once, then runs the method's :meth:`_search`. Returns ``(scores, ids)`` of
        shape ``(n_queries, min(k, n_gallery))``: float32 scores best first (the values of
        :meth:`score`) and int64 gallery rows, ties broken by the smaller row, padded with
        ``-inf``/``-1`` where a query has fewer results.
        """
        self._check_fitted()
        k = self._clamp_k(k)
        prepared = self._prepare_queries(queries, normalize)
        return self._search(prepared, k, memory_budget=memory_budget, progress=progress)

    def score(self, queries: Any, *, normalize: NormalizeMode = "warn") -> np.ndarray:
        """Dense corrected scores, shape (n_queries, n_gallery), float32 (small galleries)."""
        self._check_fitted()
        return self._score(self._prepare_queries(queries, normalize))

    @abstractmethod
    def _search(
        self, queries: np.ndarray, k: int, *, memory_budget: int, progress: bool
    ) -> tuple[np.ndarray, np.ndarray]:
        """The method's top-``k`` of prepared queries (fitted, ``1 <= k <= n_gallery``)."""

    @abstractmethod
    def _score(self, queries: np.ndarray) -> np.ndarray:
        """The method's dense scores of prepared queries."""

    def search_excluding(
        self, queries: Any, k: int = 10, *, exclude: ExcludedIds, **search_kwargs: Any
    ) -> tuple[np.ndarray, np.ndarray]:
        """:meth:`search` with per-query excluded gallery rows (``exclude[i]``: query i's).

        Equal to dropping the excluded rows from the complete ranking
        (:mod:`dehub.methods._exclude`): it asks :meth:`search` for ``k`` plus the most
        rows any query excludes, and filters. Ids outside ``[0, n_gallery)`` are an error
        (``exclude`` may also be an :class:`~dehub.methods.ExcludedRows` from
        :func:`~dehub.methods.check_excluded`, then not checked again).
        """
        self.check_fitted()
        n_gallery = int(self.gallery_.shape[0])
        excluded = check_excluded(exclude, int(np.shape(queries)[0]), n_gallery)
        return search_excluding(lambda kk: self.search(queries, kk, **search_kwargs), k, excluded, n_gallery)

    def fit_grid(
        self, gallery, reference, grid: dict[str, list] | None = None, **fit_kwargs: Any
    ) -> Iterator[tuple[dict[str, Any], BaseCorrector]]:
        """Yield ``(params, fitted estimator)`` for every combination of ``grid``.

        The default refits for each combination; methods override it to share work
        (NNN makes one pass over the reference for the largest k). The yielded
        estimator may be the same object, re-parameterized, on every step: use it
        before advancing the iterator.
        """
        grid = self._check_grid(grid)
        names = list(grid)
        for values in itertools.product(*(grid[n] for n in names)):
            params = dict(zip(names, values))
            yield params, self.clone(**params).fit(gallery, reference, **fit_kwargs)
