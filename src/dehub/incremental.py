"""Incremental updates of a :class:`dehub.Index` that equal a full refit.

NNN's bias of a gallery item depends only on that item's top-k reference scores, which
the fitted model caches (``topk_scores_``/``topk_ids_``, sorted, ties -> smaller
reference row). Hence:

* **add(vectors, ids)**: the new items' top-k is computed against the reference set
  (stored in the index with ``keep_reference=True``, or passed to ``add``); old items
  are untouched.
* **remove(ids)**: drop the rows; the other items' statistics do not involve them.
* **add_reference(new_reference)**: the new reference rows get row numbers after the
  old ones; every item's top-k over the new rows is merged into its running top-k with
  :func:`dehub.engine.merge_topk` (same tie rule), with no pass over the old reference.

With the exact engine each update gives exactly the arrays a refit from scratch gives.
Each update is all-or-nothing in memory (new arrays are computed first, then swapped in)
and, with ``save_to=``, written atomically (temporary file + rename): an interrupted
update leaves the last saved file intact and loadable.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from ._validation import NormalizeMode, check_embeddings, check_normalization, check_same_dim
from .engine import topk_search
from .engine.exact import DEFAULT_MEMORY_BUDGET
from .engine.topk import merge_topk

__all__ = ["IncrementalMixin"]

_TOPK_ARRAYS = {"topk_scores", "topk_ids"}


class IncrementalMixin:
    """add / remove / add_reference for :class:`dehub.Index` (see the module docstring).

    Expects ``self.model``, ``self.ids``, ``self.reference`` (array or ``None``),
    ``self.n_reference`` (int or ``None``) and ``self.save``.
    """

    model: Any
    ids: np.ndarray
    reference: Any
    n_reference: int | None

    # ------------------------------------------------------------------ helpers
    def _kind(self) -> str:
        fitted = set(self.model._fitted_arrays())
        if not fitted:
            return "stateless"
        if fitted <= _TOPK_ARRAYS and hasattr(self.model, "topk_scores_"):
            return "topk"
        raise TypeError(
            f"method {self.model.name!r} keeps statistics {sorted(fitted)} that cannot be "
            "updated incrementally; rebuild the index with Index.build"
        )

    def _engine_kwargs(self) -> dict:
        return {
            "engine": getattr(self.model, "engine", "exact"),
            "engine_params": getattr(self.model, "engine_params", None),
        }

    def _state(self) -> dict:
        m = self.model
        st = {
            "gallery_": m.gallery_,
            "ids": self.ids,
            "reference": self.reference,
            "n_reference": self.n_reference,
        }
        if hasattr(m, "topk_scores_"):
            st["topk_scores_"] = m.topk_scores_
            st["topk_ids_"] = m.topk_ids_
        return st

    def _apply(self, state: dict) -> None:
        for key, value in state.items():
            if key in ("ids", "reference", "n_reference"):
                setattr(self, key, value)
            else:
                setattr(self.model, key, value)

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
        x = check_embeddings(x, name, allow_empty=allow_empty)
        x = check_normalization(x, name, normalize)
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
    ):
        """Add gallery items; their biases are computed against the reference set.

        ``reference`` is needed unless the index keeps it (``keep_reference=True``);
        if both exist they must have the same number of rows. ``ids`` default to
        ``max(ids) + 1, ...``. Returns ``self``.
        """
        kind = self._kind()
        vectors = self._prepare_rows(vectors, "vectors", normalize)
        n_new = vectors.shape[0]
        if ids is None:
            start = int(self.ids.max()) + 1 if self.ids.size else 0
            new_ids = np.arange(start, start + n_new, dtype=np.int64)
        else:
            new_ids = np.asarray(ids)
            if new_ids.shape != (n_new,) or new_ids.dtype.kind not in "iu":
                raise ValueError(
                    f"ids must be {n_new} integers, one per new vector; received shape "
                    f"{new_ids.shape} dtype {new_ids.dtype}"
                )
            new_ids = new_ids.astype(np.int64)
        all_ids = np.concatenate([self.ids, new_ids])
        uniq, counts = np.unique(all_ids, return_counts=True)
        if uniq.size != all_ids.size:
            raise ValueError(
                f"ids must be unique across the index; {int((counts > 1).sum())} collide, "
                f"e.g. {uniq[counts > 1][:5].tolist()}. Remove the old items first or use fresh ids."
            )
        new = {"gallery_": np.concatenate([np.asarray(self.model.gallery_), vectors]), "ids": all_ids}
        if kind == "topk":
            ref = self._reference_for_add(reference, normalize)
            k = int(self.model.fitted_k_)
            s, i = topk_search(
                vectors,
                ref,
                k,
                memory_budget=memory_budget,
                progress="add" if progress else False,
                **self._engine_kwargs(),
            )
            new["topk_scores_"] = np.concatenate([self.model.topk_scores_, s])
            new["topk_ids_"] = np.concatenate([self.model.topk_ids_, i])
        self._commit(new, save_to)
        return self

    def _reference_for_add(self, reference, normalize: NormalizeMode):
        if reference is None:
            if self.reference is None:
                raise ValueError(
                    "adding items needs the reference set to compute their biases; pass "
                    "reference=... to add(), or build the index with keep_reference=True"
                )
            return self.reference
        reference = self._prepare_rows(reference, "reference", normalize)
        if self.n_reference is not None and reference.shape[0] != self.n_reference:
            raise ValueError(
                f"reference has {reference.shape[0]} rows but the index was fitted on "
                f"{self.n_reference}; pass the same reference set (in the same order)"
            )
        return reference

    def remove(self, ids, *, save_to: str | os.PathLike | None = None):
        """Remove the items with these external ids (unknown ids raise). Returns ``self``."""
        self._kind()
        ids = np.unique(np.asarray(ids, dtype=np.int64).ravel())
        known = np.isin(ids, self.ids)
        if not known.all():
            raise KeyError(
                f"{int((~known).sum())} ids are not in the index, e.g. {ids[~known][:5].tolist()}; "
                "expected ids of indexed items"
            )
        keep = ~np.isin(self.ids, ids)
        if not keep.any():
            raise ValueError("removing every item would leave an empty index; build a new one instead")
        new = {"gallery_": np.asarray(self.model.gallery_)[keep], "ids": self.ids[keep]}
        if hasattr(self.model, "topk_scores_"):
            new["topk_scores_"] = self.model.topk_scores_[keep]
            new["topk_ids_"] = self.model.topk_ids_[keep]
        self._commit(new, save_to)
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
        """Grow the reference set: merge the new rows' top-k into every item's top-k.

        New reference rows are numbered after the old ones (``n_reference + j``), as if
        the refit had used ``concatenate([old_reference, new_reference])``. Returns ``self``.
        """
        kind = self._kind()
        new_reference = self._prepare_rows(new_reference, "new_reference", normalize)
        if kind == "stateless":
            return self
        if self.n_reference is None:
            raise ValueError(
                "the index does not record how many reference rows it was fitted on, so new "
                "reference rows cannot be numbered; build it with Index.build (which records it)"
            )
        k = int(self.model.fitted_k_)
        s, i = topk_search(
            self.model.gallery_,
            new_reference,
            k,
            memory_budget=memory_budget,
            progress="add_reference" if progress else False,
            **self._engine_kwargs(),
        )
        i = np.where(i >= 0, i + self.n_reference, -1)
        scores, rows = merge_topk([(self.model.topk_scores_, self.model.topk_ids_), (s, i)], k)
        new = {
            "topk_scores_": scores,
            "topk_ids_": rows,
            "n_reference": self.n_reference + new_reference.shape[0],
        }
        if self.reference is not None:
            new["reference"] = np.concatenate([np.asarray(self.reference), new_reference])
        self._commit(new, save_to)
        return self
