"""What a method answers to the rest of dehub (part of :mod:`dehub.methods.base`).

The distributed runner, :class:`dehub.Index`, the exports, the evaluation harness and
the CLI ask these hooks, never a method's name or parameter names
(``docs/architecture.md``): its tags, the fit sizes it accepts, whether it can be fitted
gallery part by part or with an approximate reference engine, whether its sweep can be
served by shared score passes (:class:`~dehub.methods.SharedScores`), the cost of a
sweep (:mod:`dehub.methods._cost`), and the shortcuts a dense scorer may take. Every
default answers "no" (None); a method overrides what it can do.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, TypeVar

import numpy as np

from ._cost import SweepShape, Work
from ._fitted import FittedState
from ._params import InvalidParameterError
from ._shared import SharedScores
from ._tags import MethodTags

__all__ = ["MethodHooks"]

_H = TypeVar("_H", bound="MethodHooks")


class MethodHooks(FittedState):
    """The questions the rest of dehub asks a method, with their default answers."""

    # ------------------------------------------------------------------ tags
    def __dehub_tags__(self) -> MethodTags:
        """What this estimator can do (:func:`dehub.methods.get_tags`); no claims by default."""
        return MethodTags()

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

    def with_reference_engine(self: _H, engine: str, engine_params: dict | None = None) -> _H:
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
        self: _H, shared: SharedScores, grid: dict[str, list] | None = None
    ) -> Iterator[tuple[dict[str, Any], _H]]:
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
        self: _H, shared: SharedScores, grid: dict[str, list] | None
    ) -> Iterator[tuple[dict[str, Any], _H]]:
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
