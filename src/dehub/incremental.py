"""Incremental updates of a :class:`dehub.Index` that equal a full refit.

The estimator owns how its statistics extend. An index asks the method whether it can
grow (``get_tags(model).incremental``) and then calls only its growth hooks, each of
which returns a NEW fitted estimator and leaves the old one untouched (see
:mod:`dehub.methods.base` for the contract):

* **add(vectors, ids)** -> ``model.add_gallery_rows(vectors, reference)``: the new
  items' statistics are computed against the reference set (stored in the index with
  ``keep_reference=True``, or passed to ``add``; asked only when
  ``model.growth_needs_reference()``); old items are untouched.
* **remove(ids)** -> ``model.remove_gallery_rows(keep)``: the other items' statistics do
  not involve the removed rows.
* **add_reference(new_reference)** -> ``model.add_reference_rows(new_reference,
  n_reference=...)``: the new reference rows get row numbers after the old ones and are
  merged into every item's statistics (NNN: :func:`dehub.engine.merge_topk` of the
  sorted top-k lists; IS: ``logaddexp`` of the normalizers), with no pass over the old
  reference.

With the exact engine each update gives exactly the arrays a refit from scratch gives
(NNN, CSLS; the inverted softmax up to float64 rounding of its sums). Each update is
all-or-nothing in memory (the new model is built first, then swapped in) and, with
``save_to=``, written atomically (temporary file + rename): an interrupted update leaves
the last saved file intact and loadable, and the index keeps its previous state.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import numpy as np

from ._errors import Command, InputError, InputTypeError, UnknownIdsError
from ._ids import next_ids
from ._validation import NormalizeMode, check_same_dim, validate_embeddings
from .engine.exact import DEFAULT_MEMORY_BUDGET
from .methods import get_tags

__all__ = ["IncrementalMixin"]


class IncrementalMixin:
    """add / remove / add_reference for :class:`dehub.Index` (see the module docstring).

    Expects ``self.model``, ``self.ids``, ``self.reference`` (array or ``None``),
    ``self.n_reference`` (int or ``None``) and ``self.save``. Every update replaces
    these four attributes of the index together (never an attribute of the model).
    """

    model: Any
    ids: np.ndarray
    reference: Any
    n_reference: int | None

    save: Any  # Index.save

    # ------------------------------------------------------------------ helpers
    def _check_incremental(self) -> None:
        if not get_tags(self.model).incremental:
            raise InputTypeError(
                f"method {self.model.name!r} ({self.model!r}) cannot be updated incrementally",
                fix="Rebuild the index with {build}",
                params={"build": Command("Index.build", "dehub build")},
            )

    _STATE = ("model", "ids", "reference", "n_reference")

    def _state(self) -> dict:
        return {key: getattr(self, key) for key in self._STATE}

    def _apply(self, state: dict) -> None:
        for key, value in state.items():
            if key not in self._STATE:
                raise KeyError(f"unknown index state {key!r}; expected some of {self._STATE}")
            setattr(self, key, value)

    def _commit(self, new: dict, save_to: str | os.PathLike | None) -> None:
        old = self._state()
        self._apply(new)
        if save_to is None:
            return
        try:
            self.save(save_to)
        except BaseException:
            self._apply(old)  # the file still holds the previous version
            raise

    def _prepare_rows(
        self, x, name: str, normalize: NormalizeMode, *, allow_empty: bool = False
    ) -> np.ndarray:
        x = validate_embeddings(x, name, normalize, allow_empty=allow_empty)
        check_same_dim(x, self.model.gallery_, name, "gallery")
        return x

    # ------------------------------------------------------------------ updates
    def add(
        self,
        vectors,
        ids=None,
        *,
        reference=None,
        normalize: NormalizeMode = "warn",
        memory_budget: int = DEFAULT_MEMORY_BUDGET,
        progress: bool = False,
        save_to: str | os.PathLike | None = None,
        admit: Callable[[np.ndarray, np.ndarray | None], None] | None = None,
    ):
        """Add gallery items; their biases are computed against the reference set.

        ``reference`` is needed unless the index keeps it (``keep_reference=True``);
        if both exist they must have the same number of rows. ``ids`` default to
        ``max(ids) + 1, ...``. ``admit(vectors, reference)``, if given, sees the new rows
        as validated (normalized with ``normalize="l2"``) and the reference (the one given,
        validated, else the kept one, else None) before anything changes, and raises to
        refuse them (``dehub add --gate``). Returns ``self``.
        """
        self._check_incremental()
        vectors = self._prepare_rows(vectors, "vectors", normalize)
        # ids come from dehub.Index.add, checked there (one rule, dehub._ids): an int64
        # array of one unique id per new row, or the default numbering
        new_ids = next_ids(self.ids, vectors.shape[0]) if ids is None else ids
        all_ids = np.concatenate([self.ids, new_ids])
        uniq, counts = np.unique(all_ids, return_counts=True)
        if uniq.size != all_ids.size:
            raise InputError(
                f"ids must be unique across the index; {int((counts > 1).sum())} collide, "
                f"e.g. {uniq[counts > 1][:5].tolist()}. Remove the old items first or use fresh ids."
            )
        ref = self._reference_for_add(reference, normalize) if self.model.growth_needs_reference() else None
        if admit is not None:
            sentinels = ref
            if sentinels is None and reference is not None:  # validated for admit only
                sentinels = self._prepare_rows(reference, "reference", normalize)
            admit(vectors, sentinels if sentinels is not None else self.reference)
        model = self.model.add_gallery_rows(vectors, ref, memory_budget=memory_budget, progress=progress)
        self._commit({"model": model, "ids": all_ids}, save_to)
        return self

    def _reference_for_add(self, reference, normalize: NormalizeMode):
        if reference is None:
            if self.reference is None:
                raise InputError(
                    "adding items needs the reference set to compute their biases",
                    expected="the reference set the index was built with",
                    received="none (this index was built without keeping it)",
                    fix="Pass {reference}, or build the index with {keep_reference}",
                    params={"reference": None, "keep_reference": "True"},
                )
            return self.reference
        reference = self._prepare_rows(reference, "reference", normalize)
        if self.n_reference is not None and reference.shape[0] != self.n_reference:
            raise InputError(
                f"reference has {reference.shape[0]} rows but the index was fitted on "
                f"{self.n_reference}; pass the same reference set (in the same order)"
            )
        return reference

    def remove(self, ids, *, save_to: str | os.PathLike | None = None):
        """Remove the items with these external ids (unknown ids raise). Returns ``self``."""
        self._check_incremental()
        # ids come from dehub.Index.remove: int64, 1-D, sorted and unique (dehub._ids)
        known = np.isin(ids, self.ids)
        if not known.all():
            raise UnknownIdsError(
                f"{int((~known).sum())} ids are not in the index, e.g. {ids[~known][:5].tolist()}",
                expected="ids of indexed items",
            )
        keep = ~np.isin(self.ids, ids)
        if not keep.any():
            raise InputError("removing every item would leave an empty index; build a new one instead")
        self._commit({"model": self.model.remove_gallery_rows(keep), "ids": self.ids[keep]}, save_to)
        return self

    def add_reference(
        self,
        new_reference,
        *,
        normalize: NormalizeMode = "warn",
        memory_budget: int = DEFAULT_MEMORY_BUDGET,
        progress: bool = False,
        save_to: str | os.PathLike | None = None,
    ):
        """Grow the reference set: the model extends its statistics (``add_reference_rows``).

        New reference rows are numbered after the old ones (``n_reference + j``), as if
        the refit had used ``concatenate([old_reference, new_reference])``. Returns ``self``.
        """
        self._check_incremental()
        new_reference = self._prepare_rows(new_reference, "new_reference", normalize)
        if self.n_reference is None:
            if self.model.growth_needs_reference():
                raise InputError(
                    "the index does not record how many reference rows it was fitted on, so new "
                    "reference rows cannot be numbered; build it with Index.build (which records it)"
                )
            new: dict[str, Any] = {}  # no statistics over the reference: nothing to extend
        else:
            model = self.model.add_reference_rows(
                new_reference, n_reference=self.n_reference, memory_budget=memory_budget, progress=progress
            )
            new = {"model": model, "n_reference": self.n_reference + new_reference.shape[0]}
        if self.reference is not None:
            new["reference"] = np.concatenate([np.asarray(self.reference), new_reference])
        self._commit(new, save_to)
        return self
