"""Per-row statistics and the growth hooks built on them (the ``row_decomposable`` tag).

:class:`RowDecomposable` implements ``gallery_statistics``/``from_statistics`` and the
incremental hooks (``add_gallery_rows``, ``remove_gallery_rows``, ``add_reference_rows``)
from four method hooks; :class:`ReferenceFit` is the ``_fit`` of the row-decomposable
methods with one reference set. See :mod:`dehub.methods.base` for the contract.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from typing import Any, ClassVar

import numpy as np

from .._errors import InputError
from .._validation import NormalizeMode, check_embeddings, check_k, check_same_dim
from ..engine.exact import DEFAULT_MEMORY_BUDGET

__all__ = ["RowDecomposable", "ReferenceFit"]


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
    _seal: Any
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
        rows, reference = self._prepare_pair(gallery_rows, reference, normalize)
        return self._prepared_statistics(rows, reference, memory_budget=memory_budget, progress=progress)

    def _prepared_statistics(self, rows, reference, *, memory_budget: int, progress: bool):
        """:meth:`gallery_statistics` of rows and a reference already validated (trusted)."""
        self._check_params()
        self._reference_size_check(reference)
        return self._row_statistics(rows, reference, memory_budget=memory_budget, progress=progress)

    def from_statistics(
        self, gallery, statistics: Mapping[str, np.ndarray], *, n_reference: int | None = None
    ):
        """A new fitted estimator (these parameters) from ``gallery`` and its statistics."""
        return self._from_prepared(check_embeddings(gallery, "gallery"), statistics, n_reference)

    def _from_prepared(self, gallery, statistics: Mapping[str, np.ndarray], n_reference: int | None):
        """:meth:`from_statistics` of a gallery already validated (the growth hooks' rows:
        a fitted gallery and rows the caller's boundary validated; never scanned again)."""
        model = self.clone()
        model._check_params()
        model._set_statistics(gallery, dict(statistics), n_reference)
        model._seal()
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
        """A new fitted estimator whose gallery is this one's followed by ``vectors``.

        The growth hooks trust their arguments: ``vectors`` and ``reference`` come prepared
        from the caller's boundary (:meth:`dehub.Index.add` validates them once, with the
        gallery's dimension), so neither they nor the grown gallery are scanned again."""
        old = self.fitted_statistics()
        if old and reference is None:
            raise InputError(f"adding items to a {self.name} model needs the reference set")
        template = self.clone(**self._growth_params())
        new = (
            template._prepared_statistics(vectors, reference, memory_budget=memory_budget, progress=progress)
            if old
            else {}
        )
        gallery = np.concatenate([np.asarray(self.gallery_), vectors])
        stats = {key: np.concatenate([old[key], new[key]]) for key in old}
        return self._from_prepared(gallery, stats, getattr(self, "n_reference_", None))

    def remove_gallery_rows(self, keep: np.ndarray):
        """A new fitted estimator keeping only the gallery rows where ``keep`` is true."""
        keep = np.asarray(keep, dtype=bool)
        stats = {key: value[keep] for key, value in self.fitted_statistics().items()}
        return self._from_prepared(
            np.asarray(self.gallery_)[keep], stats, getattr(self, "n_reference_", None)
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
            return self._from_prepared(gallery, {}, total)
        template = self.clone(**self._growth_params())
        new = template._row_statistics(gallery, new_reference, memory_budget=memory_budget, progress=progress)
        merged = self.merge_reference_statistics(old, new, n_reference=int(n_reference))
        return self._from_prepared(gallery, merged, total)


class ReferenceFit(RowDecomposable):
    """``fit(gallery, reference)`` of the row-decomposable methods with one reference set.

    Validates the inputs and the parameters, checks the reference is large enough
    (:meth:`_reference_size_check`), computes :meth:`_row_statistics` of the whole gallery
    and installs them. Used by Plain, NNN (and variants) and CSLS.
    """

    def _fit(self, gallery, reference, *, normalize, memory_budget, progress):
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
