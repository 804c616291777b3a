"""The estimator contract shared by every correction method.

Every method follows scikit-learn's conventions: ``__init__`` only stores parameters
(named as in the method's paper); ``fit(gallery, reference)`` learns attributes with a
trailing underscore and returns the estimator; ``search(queries, k)`` returns
``(scores, ids)`` arrays of shape ``(n_queries, k)`` (float32 best first, int64 gallery
row numbers, padded with ``-inf``/``-1``); ``score(queries)`` returns the dense corrected
score matrix, for small galleries.

Parameters
----------
The parameters are exactly the arguments of ``__init__`` (``get_params``/``set_params``/
``clone``, scikit-learn's shape); their allowed values are declared once in the class
dict ``_parameter_constraints`` (:mod:`dehub.methods._params`) and checked by
:meth:`BaseCorrector._check_params`, which every ``fit``/``search``/``score`` calls.
Relations between parameters and checks against the fitted state go in
:meth:`BaseCorrector._check_consistency`. Unknown parameters and grid keys are
:class:`~dehub.methods._params.InvalidParameterError` naming the real parameters.

Capabilities
------------
What a method can do is asked of it with :func:`dehub.methods.get_tags` (its
``__dehub_tags__()``), never with ``isinstance``. The classes below carry the shared
code; each promise of a tag is a set of public methods:

``offset`` -> :class:`AdditiveBiasCorrector`: ``bias_``, ``export_vectors()``,
``augment_queries()``.

``row_decomposable`` -> :class:`RowDecomposable`:

* ``gallery_statistics(gallery_rows, reference, **fit_kwargs) -> dict[str, ndarray]``:
  the fitted per-item statistics of these rows (first axis = rows), computed exactly as
  ``fit`` computes them, with no look at the other gallery rows;
* ``fitted_statistics() -> dict[str, ndarray]``: the same dict for the fitted gallery;
* ``from_statistics(gallery, statistics, *, n_reference=None) -> estimator``: a new
  fitted estimator (the same parameters) from a gallery and its statistics.
  Concatenating the statistics of gallery shards, in order, equals fitting the whole
  gallery.

``incremental`` -> the growth hooks, each returning a NEW fitted estimator and leaving
``self`` untouched (so an update is all-or-nothing: the caller swaps models):

* ``add_gallery_rows(vectors, reference, *, memory_budget, progress) -> estimator``:
  the gallery followed by ``vectors``; ``reference`` is the fitted reference set (needed
  only when ``growth_needs_reference()``);
* ``remove_gallery_rows(keep) -> estimator``: only the rows where the boolean mask
  ``keep`` is true;
* ``add_reference_rows(new_reference, *, n_reference, memory_budget, progress)
  -> estimator``: as if fitted on ``concatenate([reference, new_reference])`` where the
  old reference had ``n_reference`` rows (new rows are numbered after them);
* ``growth_needs_reference() -> bool``: whether ``add_gallery_rows`` needs the reference.

For row-decomposable methods :class:`RowDecomposable` implements all four from the
statistics (new rows: their statistics appended; removal: rows dropped) plus one
method-specific hook, ``merge_reference_statistics(statistics, new_statistics, *,
n_reference)``: the statistics over the grown reference from those over the old
reference and those over the new rows alone (NNN: merge the sorted top-k lists; the
inverted softmax: ``logaddexp`` of the normalizers). :mod:`dehub.incremental` (used by
:class:`dehub.Index`) calls only these hooks.
"""

from __future__ import annotations

import copy
import functools
import inspect
import itertools
from abc import ABC, abstractmethod
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, ClassVar, TypeVar

import numpy as np

from .._validation import (
    NormalizeMode,
    check_embeddings,
    check_k,
    check_same_dim,
    validate_embeddings,
)
from ..engine.exact import DEFAULT_MEMORY_BUDGET, exact_search
from ._exclude import ExcludedIds, check_excluded, search_excluding
from ._params import Constraint, InvalidParameterError, validate_parameters
from ._stats import compute_dtype
from ._tags import MethodTags

__all__ = [
    "BaseCorrector",
    "AdditiveBiasCorrector",
    "ReferenceFit",
    "RowDecomposable",
    "NotFittedError",
    "InvalidParameterError",
]

_E = TypeVar("_E", bound="BaseCorrector")


class NotFittedError(RuntimeError):
    """The estimator was used before ``fit``."""


class BaseCorrector(ABC):
    """Base class: parameter handling, input checks and the search/score contract."""

    #: Registry name (``dehub.methods.get_method(name)``) and index-file method tag.
    name: ClassVar[str] = ""
    #: Allowed values of every ``__init__`` parameter (see :mod:`dehub.methods._params`).
    _parameter_constraints: ClassVar[dict[str, list[Constraint]]] = {}

    # ------------------------------------------------------------------ tags
    def __dehub_tags__(self) -> MethodTags:
        """What this estimator can do (:func:`dehub.methods.get_tags`); no claims by default."""
        return MethodTags()

    # ------------------------------------------------------------------ params
    @classmethod
    def _get_param_names(cls) -> tuple[str, ...]:
        """The parameter names: the named arguments of ``__init__``, in order."""
        return _init_param_names(cls)

    @classmethod
    def check_param_names(cls, names, *, what: str = "parameter") -> None:
        """Raise :class:`InvalidParameterError` if any of ``names`` is not a parameter."""
        real = cls._get_param_names()
        unknown = [n for n in names if n not in real]
        if unknown:
            label = cls.name or cls.__name__
            listed = ", ".join(real) if real else "none"
            raise InvalidParameterError(
                f"method {label!r} has no {what}{'s' if len(unknown) > 1 else ''} "
                f"{', '.join(repr(u) for u in unknown)}; its parameters are: {listed}"
            )

    def get_params(self, deep: bool = True) -> dict[str, Any]:
        """Parameter name -> value (``deep`` is accepted for scikit-learn compatibility)."""
        return {p: getattr(self, p) for p in self._get_param_names()}

    def set_params(self: _E, **params: Any) -> _E:
        """Set parameters by name (unknown names raise, naming the real ones); returns ``self``."""
        self.check_param_names(params)
        for key, value in params.items():
            setattr(self, key, value)
        return self

    def clone(self: _E, **params: Any) -> _E:
        """A new unfitted estimator with the same parameters (deep-copied), updated by ``params``."""
        self.check_param_names(params)
        return type(self)(**{**copy.deepcopy(self.get_params()), **params})

    def _check_params(self) -> None:
        """Validate every parameter against ``_parameter_constraints``, then the relations."""
        validate_parameters(self._parameter_constraints, self.get_params(), type(self).__name__)
        self._check_consistency()

    def _check_consistency(self) -> None:
        """Relations between parameters and with the fitted state (override when needed)."""
        return None

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_params().items())
        return f"{type(self).__name__}({args})"

    # ------------------------------------------------------------------ sweeps
    @classmethod
    def default_grid(cls) -> dict[str, list]:
        """The hyperparameter grid swept on a validation split (parameter -> values)."""
        return {}

    def _check_grid(self, grid: Mapping[str, Sequence] | None) -> dict[str, list]:
        """``default_grid()`` when None; unknown keys raise naming the real parameters."""
        if grid is None:
            return self.default_grid()
        self.check_param_names(list(grid), what="grid parameter")
        out = {}
        for key, values in grid.items():
            if isinstance(values, (str, bytes)) or not isinstance(values, Sequence | np.ndarray):
                raise InvalidParameterError(
                    f"grid values must be a list per parameter; received {key}={values!r}"
                )
            out[key] = list(values)
        return out

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

    # ------------------------------------------------------------------ checks
    def _check_fitted(self) -> None:
        if getattr(self, "gallery_", None) is None:
            raise NotFittedError(
                f"this {type(self).__name__} is not fitted yet; call fit(gallery, reference) first"
            )

    @staticmethod
    def _prepare(x, name: str, normalize: NormalizeMode) -> np.ndarray:
        return validate_embeddings(x, name, normalize)  # one pass over the rows

    def _prepare_queries(self, queries, normalize: NormalizeMode) -> np.ndarray:
        self._check_fitted()
        queries = self._prepare(queries, "queries", normalize)
        check_same_dim(queries, self.gallery_, "queries", "gallery")
        return queries

    # ------------------------------------------------------------------ contract
    @abstractmethod
    def fit(
        self,
        gallery: Any,
        reference: Any,
        *,
        normalize: NormalizeMode = "warn",
        memory_budget: int = DEFAULT_MEMORY_BUDGET,
        progress: bool = False,
    ) -> Any:
        """Learn the fitted attributes from ``gallery`` and ``reference``; return ``self``.

        Methods may add keyword-only fit inputs (DBNorm's and DN's ``gallery_bank``).
        """

    @abstractmethod
    def search(
        self,
        queries: Any,
        k: int = 10,
        *,
        normalize: NormalizeMode = "warn",
        memory_budget: int = DEFAULT_MEMORY_BUDGET,
        progress: bool = False,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Top-``k`` ``(scores, ids)`` under the corrected score (see the module docstring)."""

    @abstractmethod
    def score(self, queries: Any, *, normalize: NormalizeMode = "warn") -> np.ndarray:
        """Dense corrected scores, shape (n_queries, n_gallery), float32."""

    def search_excluding(
        self, queries: Any, k: int = 10, *, exclude: ExcludedIds, **search_kwargs: Any
    ) -> tuple[np.ndarray, np.ndarray]:
        """:meth:`search` with per-query excluded gallery rows (``exclude[i]``: query i's).

        Equal to dropping the excluded rows from the complete ranking
        (:mod:`dehub.methods._exclude`): it asks :meth:`search` for ``k`` plus the most
        rows any query excludes, and filters.
        """
        self._check_fitted()
        excluded = check_excluded(exclude, int(np.shape(queries)[0]))
        return search_excluding(
            lambda kk: self.search(queries, kk, **search_kwargs), k, excluded, int(self.gallery_.shape[0])
        )

    # ------------------------------------------------------------------ persistence
    def _fitted_arrays(self) -> dict[str, np.ndarray]:
        """Fitted statistics to store in an index file (the gallery is stored apart)."""
        return {}

    def _restore(self, gallery: np.ndarray, arrays: dict[str, np.ndarray]) -> None:
        """Inverse of :meth:`_fitted_arrays`: make a fitted estimator from stored arrays."""
        self.gallery_ = gallery


class AdditiveBiasCorrector(BaseCorrector):
    """Search, score and export for a corrected score ``q . r - bias_[r]``.

    Subclasses provide ``fit`` and the property ``bias_`` (shape ``(n_gallery,)``).
    Search then is one exact inner-product search with ``bias_`` as offset;
    :meth:`export_vectors` gives the ``d + 1`` vectors with which any inner-product
    index serves the corrected scores exactly. Whether the offset holds for every
    query is the ``offset`` tag's question (the dynamic inverted softmax reuses this
    code but gates its offsets per query).
    """

    def __dehub_tags__(self) -> MethodTags:
        return MethodTags(offset=True)

    @property
    @abstractmethod
    def bias_(self) -> np.ndarray: ...

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
            precision=getattr(self, "precision", "fp32"),
        )

    def score(self, queries, *, normalize: NormalizeMode = "warn") -> np.ndarray:
        """Dense corrected scores ``q . r - bias_[r]``, shape (n_queries, n_gallery), float32."""
        queries = self._prepare_queries(queries, normalize)
        self._check_params()
        dt = compute_dtype(queries, self.gallery_)
        s: np.ndarray = np.matmul(np.asarray(queries, dtype=dt), np.asarray(self.gallery_, dtype=dt).T)
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


class RowDecomposable(ABC):
    """Statistics per gallery row, and the growth hooks built on them (module docstring).

    Subclasses implement :meth:`_row_statistics` (the per-row statistics of prepared
    rows), :meth:`_set_statistics` (install them as the fitted state),
    :meth:`fitted_statistics` and :meth:`merge_reference_statistics`; ``fit`` of a
    row-decomposable method is ``_set_statistics(gallery, _row_statistics(gallery, ...))``.
    """

    gallery_: Any

    # Provided by BaseCorrector.
    _check_params: Any
    _prepare: Any
    clone: Any
    name: ClassVar[str]

    @abstractmethod
    def _row_statistics(
        self, gallery: np.ndarray, reference: np.ndarray, *, memory_budget: int, progress: bool
    ) -> dict[str, np.ndarray]:
        """Per-row statistics of prepared ``gallery`` rows over the prepared ``reference``."""

    @abstractmethod
    def _set_statistics(
        self, gallery: np.ndarray, statistics: dict[str, np.ndarray], n_reference: int | None
    ) -> None:
        """Install ``statistics`` (checked against ``gallery``) as the fitted state."""

    @abstractmethod
    def fitted_statistics(self) -> dict[str, np.ndarray]:
        """The per-row statistics of the fitted gallery (first axis = gallery rows)."""

    @abstractmethod
    def merge_reference_statistics(
        self,
        statistics: dict[str, np.ndarray],
        new_statistics: dict[str, np.ndarray],
        *,
        n_reference: int,
    ) -> dict[str, np.ndarray]:
        """Statistics over ``reference + new rows`` from those over each part.

        ``new_statistics`` were computed over the new reference rows alone; their row
        numbers (where statistics record them) are shifted by ``n_reference``.
        """

    def _growth_params(self) -> dict[str, Any]:
        """Parameters with which new rows' statistics match the fitted ones (e.g. NNN's fitted k)."""
        return {}

    def growth_needs_reference(self) -> bool:
        """Whether :meth:`add_gallery_rows` needs the reference set (when statistics exist)."""
        return bool(self.fitted_statistics())

    def _reference_size_check(self, reference: np.ndarray) -> None:
        """Raise if ``reference`` is too small for the parameters (e.g. ``k > rows``)."""
        return None

    def _prepare_pair(self, gallery_rows, reference, normalize: NormalizeMode):
        rows = self._prepare(gallery_rows, "gallery", normalize)
        reference = self._prepare(reference, "reference", normalize)
        check_same_dim(rows, reference, "gallery", "reference")
        return rows, reference

    def gallery_statistics(
        self,
        gallery_rows,
        reference,
        *,
        normalize: NormalizeMode = "warn",
        memory_budget: int = DEFAULT_MEMORY_BUDGET,
        progress: bool = False,
    ) -> dict[str, np.ndarray]:
        """The fitted per-item statistics of ``gallery_rows`` (first axis = rows).

        Equal to the rows of a fit on any gallery containing them; concatenating shards'
        statistics in order and passing them to :meth:`from_statistics` equals ``fit``.
        """
        self._check_params()
        rows, reference = self._prepare_pair(gallery_rows, reference, normalize)
        self._reference_size_check(reference)
        return self._row_statistics(rows, reference, memory_budget=memory_budget, progress=progress)

    def from_statistics(
        self, gallery, statistics: Mapping[str, np.ndarray], *, n_reference: int | None = None
    ):
        """A new fitted estimator (these parameters) from ``gallery`` and its statistics."""
        gallery = check_embeddings(gallery, "gallery")
        model = self.clone()
        model._check_params()
        model._set_statistics(gallery, dict(statistics), n_reference)
        return model

    # ------------------------------------------------------------------ growth hooks
    def add_gallery_rows(
        self,
        vectors: np.ndarray,
        reference: np.ndarray | None,
        *,
        memory_budget: int = DEFAULT_MEMORY_BUDGET,
        progress: bool = False,
    ):
        """A new fitted estimator whose gallery is this one's followed by ``vectors``."""
        old = self.fitted_statistics()
        if old and reference is None:
            raise ValueError(f"adding items to a {self.name} model needs the reference set")
        template = self.clone(**self._growth_params())
        new = (
            template.gallery_statistics(
                vectors, reference, normalize="none", memory_budget=memory_budget, progress=progress
            )
            if old
            else {}
        )
        gallery = np.concatenate([np.asarray(self.gallery_), vectors])
        stats = {key: np.concatenate([old[key], new[key]]) for key in old}
        return self.from_statistics(gallery, stats, n_reference=getattr(self, "n_reference_", None))

    def remove_gallery_rows(self, keep: np.ndarray):
        """A new fitted estimator keeping only the gallery rows where ``keep`` is true."""
        keep = np.asarray(keep, dtype=bool)
        stats = {key: value[keep] for key, value in self.fitted_statistics().items()}
        return self.from_statistics(
            np.asarray(self.gallery_)[keep], stats, n_reference=getattr(self, "n_reference_", None)
        )

    def add_reference_rows(
        self,
        new_reference: np.ndarray,
        *,
        n_reference: int,
        memory_budget: int = DEFAULT_MEMORY_BUDGET,
        progress: bool = False,
    ):
        """A new fitted estimator as if fitted on the old reference followed by ``new_reference``."""
        old = self.fitted_statistics()
        gallery = np.asarray(self.gallery_)
        total = int(n_reference) + int(new_reference.shape[0])
        if not old:
            return self.from_statistics(gallery, {}, n_reference=total)
        template = self.clone(**self._growth_params())
        new = template._row_statistics(gallery, new_reference, memory_budget=memory_budget, progress=progress)
        merged = self.merge_reference_statistics(old, new, n_reference=int(n_reference))
        return self.from_statistics(gallery, merged, n_reference=total)


class ReferenceFit(RowDecomposable):
    """``fit(gallery, reference)`` of the row-decomposable methods with one reference set.

    Validates the inputs and the parameters, checks the reference is large enough
    (:meth:`_reference_size_check`), computes :meth:`_row_statistics` of the whole gallery
    and installs them. Used by Plain, NNN (and variants) and CSLS.
    """

    def fit(
        self,
        gallery,
        reference,
        *,
        normalize: NormalizeMode = "warn",
        memory_budget: int = DEFAULT_MEMORY_BUDGET,
        progress: bool = False,
    ):
        """Learn the gallery statistics from a reference set of queries.

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
        self._reset_fit()
        self._check_params()
        gallery, reference = self._prepare_pair(gallery, reference, normalize)
        self._reference_size_check(reference)
        self._gallery_size_check(gallery)
        stats = self._row_statistics(gallery, reference, memory_budget=memory_budget, progress=progress)
        self._set_statistics(gallery, stats, int(reference.shape[0]))
        return self

    def _reset_fit(self) -> None:
        """Forget the fitted state that parameter checks look at (a refit may change it)."""
        return None

    def _gallery_size_check(self, gallery: np.ndarray) -> None:
        """Raise if the whole gallery is too small for the parameters (CSLS's r_T)."""
        return None

    @staticmethod
    def _check_k_reference(k: int, reference: np.ndarray) -> None:
        check_k(int(k), reference.shape[0], name="k", what="reference items")


@functools.cache
def _init_param_names(cls: type) -> tuple[str, ...]:
    """The named arguments of ``cls.__init__``, in order; read once per class (an
    ``inspect.signature`` costs ~25 us, which a one-query search asked for three times)."""
    init = cls.__init__  # type: ignore[misc]
    if init is object.__init__:
        return ()
    names = []
    for p in list(inspect.signature(init).parameters.values())[1:]:
        if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
            raise TypeError(
                f"{cls.__name__}.__init__ must name every parameter (no *args/**kwargs); found {p}"
            )
        names.append(p.name)
    return tuple(names)
