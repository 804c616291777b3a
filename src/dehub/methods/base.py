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

Fitted state
------------
Fitted attributes (trailing underscore) are plain arrays set by ``fit`` and never
changed by parameters afterwards (scikit-learn's rule). The base class holds the
public entry points; ``fit`` and ``fit_grid`` of every subclass are sealed once, in
:meth:`BaseCorrector.__init_subclass__`:

* ``fit`` records the parameters it was run with and, for additive-offset methods,
  computes ``bias_`` once (refusing parameters whose bias overflows float32);
* the public ``search``/``score`` (one body, in :class:`BaseCorrector`) check that the
  estimator is fitted with its current parameters (a parameter changed after ``fit``
  raises :class:`StaleFitError` naming ``fit`` and :meth:`BaseCorrector.with_params`),
  clamp ``k`` to the gallery with one :class:`KClampedWarning` and validate the queries
  once, then call the method's ``_search``/``_score`` with prepared arrays; they never
  re-validate the parameters;
* ``fit_grid`` runs on a clone and yields independent fitted estimators.

:meth:`BaseCorrector.with_params` returns a NEW fitted estimator with some parameters
changed where the fitted statistics serve them (NNN's ``alpha`` and any ``k`` up to the
fitted one); other changes raise :class:`RefitRequiredError` naming ``fit``.

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
import warnings
from abc import ABC, abstractmethod
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, ClassVar, TypeVar

import numpy as np

from .._errors import InputError, InputTypeError
from .._validation import (
    NormalizeMode,
    check_same_dim,
    user_stacklevel,
    validate_embeddings,
)
from ..engine.exact import DEFAULT_MEMORY_BUDGET, exact_search
from ._cost import SweepShape, Work
from ._exclude import ExcludedIds, check_excluded, search_excluding
from ._params import FLOAT32_MAX, Constraint, InvalidParameterError, validate_parameters
from ._rows import ReferenceFit, RowDecomposable
from ._shared import SharedScores
from ._stats import compute_dtype
from ._tags import MethodTags

__all__ = [
    "BaseCorrector",
    "AdditiveBiasCorrector",
    "ReferenceFit",
    "RowDecomposable",
    "NotFittedError",
    "StaleFitError",
    "RefitRequiredError",
    "KClampedWarning",
    "InvalidParameterError",
]

_E = TypeVar("_E", bound="BaseCorrector")


class NotFittedError(RuntimeError):
    """The estimator was used before ``fit``."""


class StaleFitError(InputError, NotFittedError):
    """A parameter changed after ``fit``: the fitted state no longer matches the parameters."""


class RefitRequiredError(InvalidParameterError):
    """:meth:`BaseCorrector.with_params` was asked for a change the fitted statistics cannot serve."""


class KClampedWarning(UserWarning):
    """``k`` exceeded the number of gallery items and was lowered to it."""


#: Largest magnitude a bias may have: scores ``q . r - bias`` then stay finite in float32
#: for any query with ``|q . r| <= FLOAT32_MAX / 2``.
BIAS_LIMIT = FLOAT32_MAX / 2


def _same(a: Any, b: Any) -> bool:
    try:
        return bool(a == b)
    except Exception:  # arrays or exotic values: compare by identity
        return a is b


def _sealed_fit(fit):
    """``fit`` that leaves the estimator unfitted on failure and sealed on success."""

    @functools.wraps(fit)
    def wrapper(self, *args, **kwargs):
        if self.__dict__.get("_fitting"):  # a subclass's fit calling super().fit()
            return fit(self, *args, **kwargs)
        self._unseal()
        self.__dict__["_fitting"] = True
        try:
            fit(self, *args, **kwargs)
        finally:
            del self.__dict__["_fitting"]
        self._seal()
        return self

    wrapper.__dehub_entry__ = True  # type: ignore[attr-defined]
    return wrapper


def _independent_grid(fit_grid):
    """``fit_grid`` run on a clone, each step yielded as its own sealed estimator."""

    @functools.wraps(fit_grid)
    def wrapper(self, gallery, reference, grid=None, **fit_kwargs):
        work = self.clone()
        for params, model in fit_grid(work, gallery, reference, grid, **fit_kwargs):
            yield params, (model._detached() if model is work else model)

    wrapper.__dehub_entry__ = True  # type: ignore[attr-defined]
    return wrapper


#: Public methods a subclass may still override, sealed for it (``fit`` by subclasses
#: written before the ``_fit`` hook, such as test doubles).
_ENTRY_POINTS = {"fit": _sealed_fit, "fit_grid": _independent_grid}


class BaseCorrector(ABC):
    """Base class: parameter handling, input checks and the search/score contract."""

    #: Registry name (``dehub.methods.get_method(name)``) and index-file method tag.
    name: ClassVar[str] = ""
    #: Allowed values of every ``__init__`` parameter (see :mod:`dehub.methods._params`).
    _parameter_constraints: ClassVar[dict[str, list[Constraint]]] = {}
    #: Parameters :meth:`with_params` may change on a fitted estimator (served by its
    #: fitted statistics); :meth:`_check_consistency` says which values they may take.
    _cached_params: ClassVar[frozenset[str]] = frozenset()

    def __init_subclass__(cls, **kwargs: Any) -> None:
        """Seal the public entry points of every estimator class (module docstring)."""
        super().__init_subclass__(**kwargs)
        for name, seal in _ENTRY_POINTS.items():
            fn = cls.__dict__.get(name)  # overridden in this class itself
            if fn is not None and not getattr(fn, "__dehub_entry__", False):
                setattr(cls, name, seal(fn))

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
        """Set parameters by name (unknown names raise, naming the real ones); returns ``self``.

        On a fitted estimator a changed parameter takes effect only through a new
        ``fit``: until then ``search``/``score`` raise :class:`StaleFitError`. To change
        parameters that the fitted statistics serve, use :meth:`with_params`.
        """
        self.check_param_names(params)
        for key, value in params.items():
            setattr(self, key, value)
        return self

    def clone(self: _E, **params: Any) -> _E:
        """A new unfitted estimator with the same parameters (deep-copied), updated by ``params``."""
        self.check_param_names(params)
        return type(self)(**{**copy.deepcopy(self.get_params()), **params})

    def with_params(self: _E, **params: Any) -> _E:
        """A NEW fitted estimator with ``params`` changed, sharing this one's fitted arrays.

        Only what the fitted statistics serve is allowed (the class's ``_cached_params``,
        e.g. NNN's ``alpha`` and any ``k`` up to the fitted one); anything else raises
        :class:`RefitRequiredError` naming ``fit``. ``self`` is left untouched.
        """
        self._check_fitted()
        self.check_param_names(params)
        current = self.get_params()
        changed = {key: value for key, value in params.items() if not _same(current[key], value)}
        blocked = sorted(set(changed) - self._cached_param_names())
        label = type(self).__name__
        if blocked:
            served = ", ".join(sorted(self._cached_param_names())) or "none"
            asked = ", ".join(f"{key}={changed[key]!r}" for key in blocked)
            raise RefitRequiredError(
                f"{label}.with_params cannot change {', '.join(blocked)} without a new pass over the "
                f"data (the fitted statistics depend on them; it serves: {served}); received {asked}. "
                f"Fit a new estimator: {label}(...).fit(gallery, reference) or "
                f"clone({asked}).fit(gallery, reference)"
            )
        new = copy.copy(self)
        new._unseal()
        for key, value in changed.items():
            setattr(new, key, value)
        new._check_params()
        new._seal()
        return new

    def _cached_param_names(self) -> frozenset[str]:
        """The parameters :meth:`with_params` may change (class attribute ``_cached_params``)."""
        return self._cached_params

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

    def check_params(self) -> None:
        """Validate the parameters (values and relations) once, at an entry point."""
        self._check_params()

    def check_fitted(self) -> None:
        """Raise :class:`NotFittedError` unless fitted with the current parameters."""
        self._check_fitted()

    # ------------------------------------------------------------------ what the method answers
    # The distributed runner, Index, the exports and the CLI ask these, never a method's
    # name or parameter names (docs/architecture.md).
    def check_fit_sizes(self, n_gallery: int, n_reference: int) -> None:
        """Raise ``ValueError`` when a fit on these sizes cannot succeed (e.g. ``k`` > rows)."""
        return None

    def distributed_obstacle(self, *, gallery_bank: bool = False) -> str | None:
        """Why this estimator cannot be fitted gallery part by part, or None when it can.

        ``gallery_bank``: whether the fit gets a gallery bank (a method whose statistics
        decompose over gallery rows only given a fixed bank answers None then, and its
        ``gallery_statistics`` takes ``gallery_bank=``).
        """
        if self.__dehub_tags__().row_decomposable:
            return None
        return "its fitted statistics are not per gallery row (row_decomposable is false)"

    def reference_engine(self) -> tuple[str, dict | None] | None:
        """``(engine, engine_params)`` of the top-k search over the reference this method runs,
        or None when it has no engine choice (always exact)."""
        return None

    def with_reference_engine(self: _E, engine: str, engine_params: dict | None = None) -> _E:
        """A new unfitted estimator whose reference top-k uses ``engine`` (see :meth:`reference_engine`)."""
        raise InvalidParameterError(
            f"method {self.name or type(self).__name__!r} has no engine parameter; it always uses the exact engine"
        )

    def reference_topk(self) -> int | None:
        """``k`` when the fitted statistics are each gallery row's top-``k`` reference scores
        (:meth:`statistics_from_reference_topk` builds them from any top-k search), else None."""
        return None

    def statistics_from_reference_topk(self, scores: np.ndarray, ids: np.ndarray) -> dict[str, np.ndarray]:
        """Per-row statistics from a top-``reference_topk()`` search of gallery rows over the reference."""
        raise NotImplementedError(f"{type(self).__name__} statistics are not a reference top-k")

    # ------------------------------------------------------------------ shared score passes
    def shared_scores_obstacle(self) -> str | None:
        """Why :meth:`fit_grid_from_shared` cannot serve this estimator, or None when it can.

        A method answers None when every statistic its fit computes is one of the passes
        a :class:`~dehub.methods.SharedScores` holds (the reference top-k, a bank's
        log-sum-exp, a bank's activation ids).
        """
        return "its fit computes statistics that SharedScores does not hold (it runs its own fit_grid)"

    def fit_grid_from_shared(
        self, shared: SharedScores, grid: dict[str, list] | None = None
    ) -> Iterator[tuple[dict[str, Any], BaseCorrector]]:
        """:meth:`fit_grid` with its passes read from ``shared`` (computed once for many methods).

        Yields the same settings, in the same order, with the same fitted statistics as
        ``fit_grid(shared.gallery, shared.reference, grid, normalize="none",
        memory_budget=shared.memory_budget)`` (plus ``gallery_bank=shared.gallery_bank``
        for the methods that take one); the inputs were checked when ``shared`` was made.
        Raises :class:`InvalidParameterError` with :meth:`shared_scores_obstacle`'s reason
        when the method cannot be served so.
        """
        why = self.shared_scores_obstacle()
        if why is not None:
            raise InvalidParameterError(
                f"{type(self).__name__} cannot be fitted from shared scores: {why}; use fit_grid"
            )
        work = self.clone()
        return (
            (params, (model._detached() if model is work else model))
            for params, model in work._grid_from_shared(shared, grid)
        )

    def _grid_from_shared(
        self, shared: SharedScores, grid: dict[str, list] | None
    ) -> Iterator[tuple[dict[str, Any], BaseCorrector]]:
        """The method's :meth:`fit_grid_from_shared` on a clone (override with the obstacle)."""
        raise NotImplementedError(f"{type(self).__name__} has no fit from shared scores")

    def sweep_work(self, shape: SweepShape, grid: dict[str, list] | None = None) -> Work | None:
        """The work of a validation sweep of ``grid`` (default ``default_grid()``) on these
        shapes: ``fit_grid`` plus the scoring of every setting, from the shapes alone
        (:mod:`dehub.methods._cost`); nothing is run. None: the method has no cost model
        (a caller then has to measure it)."""
        return None

    def scores_from_similarity(
        self, similarity: np.ndarray, *, cache: dict[str, Any] | None = None
    ) -> np.ndarray | None:
        """:meth:`score` of queries whose raw similarities to the fitted gallery are
        ``similarity`` ((n, n_gallery), ``queries @ gallery.T``), without recomputing them;
        None when the method's scores need more than those similarities (call ``score``).

        ``cache``: a dict the caller keeps for this one block of similarities while it
        scores several settings of one fitted grid (a validation sweep); the method may
        store there per-query work that no parameter changes (distances, sorted nearest
        neighbours) and read it back for the next setting. The scores are the same with or
        without it."""
        return None

    def query_group_offsets(self, top1: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
        """Per-query offsets of a fitted estimator that is not ``offset``, or None.

        For methods whose ranking of each query is that of ``q . r - biases[group[q], r]``,
        one of a few per-item offsets chosen by the query's plain top-1 gallery row
        ``top1`` (the dynamic inverted softmax's gates): ``(group, biases)`` with
        ``group`` (n_queries,) int64 and ``biases`` (n_groups, n_gallery). None: the
        ranking is not of that form (the caller scores densely).
        """
        return None

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
        """Raise unless fitted with the current parameters (no parameter validation here)."""
        fitted = self.__dict__.get("_fitted_params_")
        if fitted is None or getattr(self, "gallery_", None) is None:
            raise NotFittedError(
                f"this {type(self).__name__} is not fitted yet; call fit(gallery, reference) first"
            )
        now = self.get_params()
        if not all(_same(now[key], fitted[key]) for key in now):
            self._stale(fitted, now)

    def _stale(self, fitted: dict[str, Any], now: dict[str, Any]) -> None:
        # The method's own relation checks say best why (e.g. "k=8 exceeds the k=4 used in fit").
        self._check_consistency()
        diff = ", ".join(
            f"{key}: {fitted[key]!r} -> {now[key]!r}" for key in now if not _same(now[key], fitted[key])
        )
        changed = ", ".join(f"{key}={now[key]!r}" for key in now if not _same(now[key], fitted[key]))
        raise StaleFitError(
            f"{type(self).__name__}: parameters changed after fit ({diff}); the fitted state "
            f"belongs to the old values. Call fit(gallery, reference) again, or start from the "
            f"fitted parameters and use with_params({changed}) where the fitted statistics serve it"
        )

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
                f"k={k} exceeds the {n} gallery items; returning {n} results per query",
                KClampedWarning,
                stacklevel=user_stacklevel(),
            )
            k = n
        return k

    # ------------------------------------------------------------------ sealing
    def _seal(self) -> None:
        """Record the parameters of the fitted state and derive what follows from them."""
        self._finish_fit()
        self.__dict__["_fitted_params_"] = copy.deepcopy(self.get_params())

    def _unseal(self) -> None:
        self.__dict__.pop("_fitted_params_", None)

    def _finish_fit(self) -> None:
        """Derived fitted arrays computed once from the fitted statistics (override)."""
        return None

    def _detached(self: _E) -> _E:
        """A copy of this fitted estimator, sealed with its current parameters (``fit_grid``)."""
        new = copy.copy(self)
        fitted = self.__dict__.get("_fitted_params_")
        if fitted is None or not all(_same(v, fitted[key]) for key, v in self.get_params().items()):
            new._seal()
        return new

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

    # ------------------------------------------------------------------ persistence
    def persistence_arrays(self) -> dict[str, np.ndarray]:
        """The fitted arrays an index file stores beside the gallery (name -> array)."""
        self._check_fitted()
        return self._fitted_arrays()

    def restore(
        self: _E, gallery: np.ndarray, arrays: Mapping[str, np.ndarray], *, n_reference: int | None = None
    ) -> _E:
        """Make this (unfitted) estimator fitted from a checked gallery and stored arrays.

        The inverse of :meth:`persistence_arrays`; the parameters are validated once
        here (they come from a file), the arrays by :meth:`check_persistence_arrays`.
        ``n_reference``: the reference rows of the fit, when the file says. Returns ``self``.
        """
        self._unseal()
        self._check_params_unfitted()
        self.check_persistence_arrays(arrays, n_reference)
        self._restore(gallery, dict(arrays))
        self._check_params()
        self._seal()
        return self

    def check_persistence_arrays(self, arrays: Mapping[str, np.ndarray], n_reference: int | None) -> None:
        """Raise ``ValueError`` naming the array when stored arrays are not what this method writes
        (dtypes, value ranges); shapes against the gallery are checked by ``_restore``."""
        return None

    def _check_params_unfitted(self) -> None:
        validate_parameters(self._parameter_constraints, self.get_params(), type(self).__name__)

    def _fitted_arrays(self) -> dict[str, np.ndarray]:
        """Fitted statistics to store in an index file (the gallery is stored apart)."""
        return {}

    def _restore(self, gallery: np.ndarray, arrays: dict[str, np.ndarray]) -> None:
        """Inverse of :meth:`_fitted_arrays`: make a fitted estimator from stored arrays."""
        self.gallery_ = gallery


class AdditiveBiasCorrector(BaseCorrector):
    """Search, score and export for a corrected score ``q . r - bias_[r]``.

    Subclasses provide ``fit`` and :meth:`_compute_bias`; the sealed ``fit`` stores its
    result once as the read-only array ``bias_`` (shape ``(n_gallery,)``), refusing
    parameters whose bias would overflow float32.
    Search then is one exact inner-product search with ``bias_`` as offset;
    :meth:`export_vectors` gives the ``d + 1`` vectors with which any inner-product
    index serves the corrected scores exactly. Whether the offset holds for every
    query is the ``offset`` tag's question (the dynamic inverted softmax reuses this
    code but gates its offsets per query).
    """

    bias_: np.ndarray

    def __dehub_tags__(self) -> MethodTags:
        return MethodTags(offset=True)

    @abstractmethod
    def _compute_bias(self) -> np.ndarray:
        """The per-item offset from the fitted statistics and the parameters, shape (n_gallery,)."""

    def _score_scale(self) -> float:
        """Factor applied to ``q . r - bias`` in the returned scores (affine methods)."""
        return 1.0

    def _finish_fit(self) -> None:
        super()._finish_fit()
        self.__dict__.pop("bias_", None)
        bias = np.asarray(self._compute_bias())
        with np.errstate(over="ignore", invalid="ignore"):
            peak = float(np.abs(bias).max()) if bias.size else 0.0
            worst = abs(float(self._score_scale())) * (peak + 1.0)
        if not (np.isfinite(peak) and peak <= BIAS_LIMIT and np.isfinite(worst) and worst <= FLOAT32_MAX):
            params = ", ".join(f"{k}={v!r}" for k, v in self.get_params().items())
            raise InvalidParameterError(
                f"{type(self).__name__}({params}): the corrected scores would overflow float32 "
                f"(largest |bias| {peak:.3g} times scale {self._score_scale():.3g}; the bias must stay "
                f"within {BIAS_LIMIT:.3g} and scale * (|bias| + 1) within {FLOAT32_MAX:.3g}). "
                f"{self._overflow_hint(peak)}"
            )
        bias.setflags(write=False)
        self.bias_ = bias

    def _overflow_hint(self, peak: float) -> str:
        """How to bring the bias into range (methods name their parameter and bound)."""
        return "Lower the scale parameters."

    def _search(
        self, queries: np.ndarray, k: int, *, memory_budget: int, progress: bool
    ) -> tuple[np.ndarray, np.ndarray]:
        """One exact inner-product search with ``bias_`` as offset."""
        return exact_search(
            queries,
            self.gallery_,
            k,
            offset=self.bias_,
            memory_budget=memory_budget,
            progress="search" if progress else False,
            precision=self.search_precision(),
        )

    def search_precision(self) -> str:
        """The exact engine's precision for this estimator's searches (NNN's ``precision``)."""
        return "fp32"

    def _score(self, queries: np.ndarray) -> np.ndarray:
        """Dense corrected scores ``q . r - bias_[r]``."""
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
