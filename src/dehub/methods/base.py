"""The estimator contract shared by every correction method.

Every method follows scikit-learn's conventions: ``__init__`` only stores parameters
(named as in the method's paper); ``fit(gallery, reference)`` learns attributes with a
trailing underscore and returns the estimator; ``search(queries, k)`` returns
``(scores, ids)`` arrays of shape ``(n_queries, k)`` (float32 best first, int64 gallery
row numbers, padded with ``-inf``/``-1``); ``score(queries)`` returns the dense corrected
score matrix, for small galleries.

Methods whose correction, for a fixed query, is an additive per-gallery-item term derive
from :class:`AdditiveBiasCorrector`: their search is one exact (or exported FAISS)
inner-product search with the bias as an offset, exactly as cheap as a plain search.
"""

from __future__ import annotations

import itertools
from abc import ABC, abstractmethod
from collections.abc import Iterator
from typing import Any, ClassVar

import numpy as np

from .._validation import (
    NormalizeMode,
    check_embeddings,
    check_k,
    check_normalization,
    check_same_dim,
)
from ..engine.exact import DEFAULT_MEMORY_BUDGET, exact_search
from ._tags import MethodTags

__all__ = ["BaseCorrector", "AdditiveBiasCorrector", "NotFittedError"]


class NotFittedError(RuntimeError):
    """The estimator was used before ``fit``."""


class BaseCorrector(ABC):
    """Base class: parameter handling, input checks and the search/score contract."""

    #: Registry name (``dehub.methods.get_method(name)``) and index-file method tag.
    name: ClassVar[str] = ""
    #: Names of the constructor parameters, in order.
    _param_names: ClassVar[tuple[str, ...]] = ()

    # ------------------------------------------------------------------ tags
    def __dehub_tags__(self) -> MethodTags:
        """What this estimator can do (:func:`dehub.methods.get_tags`); no claims by default."""
        return MethodTags()

    # ------------------------------------------------------------------ params
    def get_params(self) -> dict[str, Any]:
        return {p: getattr(self, p) for p in self._param_names}

    def set_params(self, **params: Any) -> BaseCorrector:
        for key, value in params.items():
            if key not in self._param_names:
                raise ValueError(
                    f"{type(self).__name__} has no parameter {key!r}; "
                    f"expected one of {list(self._param_names)}"
                )
            setattr(self, key, value)
        return self

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_params().items())
        return f"{type(self).__name__}({args})"

    # ------------------------------------------------------------------ sweeps
    @classmethod
    def default_grid(cls) -> dict[str, list]:
        """The hyperparameter grid swept on a validation split (parameter -> values)."""
        return {}

    def fit_grid(
        self, gallery, reference, grid: dict[str, list] | None = None, **fit_kwargs: Any
    ) -> Iterator[tuple[dict[str, Any], BaseCorrector]]:
        """Yield ``(params, fitted estimator)`` for every combination of ``grid``.

        The default refits for each combination; methods override it to share work
        (NNN makes one pass over the reference for the largest k). The yielded
        estimator may be the same object, re-parameterized, on every step: use it
        before advancing the iterator.
        """
        grid = self.default_grid() if grid is None else grid
        names = list(grid)
        for values in itertools.product(*(grid[n] for n in names)):
            params = dict(zip(names, values))
            model = type(self)(**{**self.get_params(), **params})
            yield params, model.fit(gallery, reference, **fit_kwargs)

    # ------------------------------------------------------------------ checks
    def _check_fitted(self) -> None:
        if getattr(self, "gallery_", None) is None:
            raise NotFittedError(
                f"this {type(self).__name__} is not fitted yet; call fit(gallery, reference) first"
            )

    @staticmethod
    def _prepare(x, name: str, normalize: NormalizeMode) -> np.ndarray:
        x = check_embeddings(x, name)
        return check_normalization(x, name, normalize)

    def _prepare_queries(self, queries, normalize: NormalizeMode) -> np.ndarray:
        self._check_fitted()
        queries = self._prepare(queries, "queries", normalize)
        check_same_dim(queries, self.gallery_, "queries", "gallery")
        return queries

    # ------------------------------------------------------------------ contract
    @abstractmethod
    def fit(self, gallery, reference, **kwargs) -> BaseCorrector: ...

    @abstractmethod
    def search(self, queries, k: int = 10, **kwargs) -> tuple[np.ndarray, np.ndarray]: ...

    @abstractmethod
    def score(self, queries, **kwargs) -> np.ndarray: ...

    # ------------------------------------------------------------------ persistence
    def _fitted_arrays(self) -> dict[str, np.ndarray]:
        """Fitted statistics to store in an index file (the gallery is stored apart)."""
        return {}

    def _restore(self, gallery: np.ndarray, arrays: dict[str, np.ndarray]) -> None:
        """Inverse of :meth:`_fitted_arrays`: make a fitted estimator from stored arrays."""
        self.gallery_ = gallery


class AdditiveBiasCorrector(BaseCorrector):
    """A method whose corrected score is ``q . r - bias_[r]`` (up to a per-query term).

    Subclasses implement :meth:`_fit_bias` and the property ``bias_`` (shape
    ``(n_gallery,)``). Search then is one exact inner-product search with ``bias_`` as
    offset; :meth:`export_vectors` gives the ``d + 1`` vectors with which any
    inner-product index serves the corrected scores exactly.
    """

    memory_budget: int = DEFAULT_MEMORY_BUDGET

    def __dehub_tags__(self) -> MethodTags:
        return MethodTags(offset=True)

    @property
    @abstractmethod
    def bias_(self) -> np.ndarray: ...

    @abstractmethod
    def _fit_bias(
        self, gallery: np.ndarray, reference: np.ndarray, *, memory_budget: int, progress: bool
    ) -> None: ...

    def _min_reference(self) -> tuple[str, int]:
        """(parameter name, smallest reference size it allows) for the k-vs-size check."""
        return ("k", 1)

    def fit(
        self,
        gallery,
        reference,
        *,
        normalize: NormalizeMode = "warn",
        memory_budget: int = DEFAULT_MEMORY_BUDGET,
        progress: bool = False,
    ) -> AdditiveBiasCorrector:
        """Learn the gallery biases from a reference set of queries.

        Parameters
        ----------
        gallery : (n_gallery, d) float array or memmap
            Retrieval candidates (images for text-to-image).
        reference : (n_reference, d) float array or memmap
            Reference queries, disjoint from the test queries (e.g. training captions).
        normalize : {'warn', 'l2', 'none', 'error'}
            What to do with rows that are not unit-norm (see ``dehub._validation``).
        memory_budget : int
            Working-memory bytes for the blocked exact engine.
        progress : bool
            Show a progress bar.
        """
        self._check_params()
        gallery = self._prepare(gallery, "gallery", normalize)
        reference = self._prepare(reference, "reference", normalize)
        check_same_dim(gallery, reference, "gallery", "reference")
        pname, need = self._min_reference()
        check_k(need, reference.shape[0], name=pname, what="reference items")
        self._fit_bias(gallery, reference, memory_budget=memory_budget, progress=progress)
        self.gallery_ = gallery
        return self

    def _check_params(self) -> None:
        """Validate constructor parameters (override in subclasses)."""

    def search(
        self,
        queries,
        k: int = 10,
        *,
        normalize: NormalizeMode = "warn",
        memory_budget: int = DEFAULT_MEMORY_BUDGET,
        progress: bool = False,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Top-``k`` gallery rows per query under the corrected score.

        Returns ``(scores, ids)`` of shape ``(n_queries, k)``: float32 corrected scores
        best first and int64 gallery row numbers, ties broken by the smaller row,
        padded with ``-inf``/``-1`` when the gallery has fewer than ``k`` items.
        """
        queries = self._prepare_queries(queries, normalize)
        self._check_params()
        return exact_search(
            queries,
            self.gallery_,
            k,
            offset=self.bias_,
            memory_budget=memory_budget,
            progress="search" if progress else False,
        )

    def score(self, queries, *, normalize: NormalizeMode = "warn") -> np.ndarray:
        """Dense corrected scores ``q . r - bias_[r]``, shape (n_queries, n_gallery), float32."""
        queries = self._prepare_queries(queries, normalize)
        self._check_params()
        dt = np.float64 if (queries.dtype == np.float64 or self.gallery_.dtype == np.float64) else np.float32
        s = np.asarray(queries, dtype=dt) @ np.asarray(self.gallery_, dtype=dt).T
        s -= self.bias_.astype(dt)
        return s.astype(np.float32, copy=False)

    def export_vectors(self) -> np.ndarray:
        """Gallery vectors with the bias appended, shape (n_gallery, d + 1), float32.

        Query ``q`` becomes ``[q, -1]`` (:func:`augment_queries`); then
        ``[q, -1] . [r, b(r)] = q . r - b(r)``: the corrected score, from any
        inner-product index.
        """
        self._check_fitted()
        g = np.asarray(self.gallery_, dtype=np.float32)
        return np.hstack([g, self.bias_.astype(np.float32)[:, None]])

    @staticmethod
    def augment_queries(queries) -> np.ndarray:
        """Queries with ``-1`` appended, to search vectors from :meth:`export_vectors`."""
        q = np.asarray(queries, dtype=np.float32)
        return np.hstack([q, -np.ones((q.shape[0], 1), dtype=np.float32)])
