"""The cached top-k reference scores shared by NNN (and its variants) and CSLS.

Both methods keep, for every gallery item, its ``k`` largest reference scores sorted
descending (``topk_scores_``) and where they came from (``topk_ids_``, reference rows,
ties -> smaller row). These two arrays are the methods' per-row statistics
(``row_decomposable``), what index files store, and what the growth hooks extend:
new gallery rows get their own top-k, removed rows are dropped, and new reference rows
are merged into every running top-k with :func:`dehub.engine.merge_topk` (same tie rule,
no pass over the old reference).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .._errors import InputError
from ..engine import merge_topk
from ._shared import SharedScores
from .base import NotFittedError

__all__ = ["TopKStatistics"]

_KEYS = ("topk_scores", "topk_ids")
#: the stored dtypes docs/index-format.md documents for these statistics
_DTYPES = {"topk_scores": "<f4", "topk_ids": "<i8"}


class TopKStatistics:
    """Mixin: statistics, persistence and reference merge of ``topk_scores_``/``topk_ids_``.

    Used with :class:`~dehub.methods.base.ReferenceFit`; the class provides
    ``_row_statistics`` (one top-``k`` search of the rows against the reference).
    """

    topk_scores_: np.ndarray
    topk_ids_: np.ndarray
    fitted_k_: int | None
    gallery_: Any
    k: int

    # Provided by BaseCorrector / ReferenceFit.
    _unseal: Any
    _seal: Any
    _check_params: Any
    _reference_size_check: Any
    _gallery_size_check: Any

    def _fit_from_topk(self, shared: SharedScores) -> None:
        """Fit (at the current ``k``) from the shared reference top-k: ``fit`` without its pass."""
        self._unseal()
        self._reset_fit()
        self._check_params()
        self._reference_size_check(shared.reference)
        self._gallery_size_check(shared.gallery)
        scores, ids = shared.reference_topk(int(self.k))
        self._set_statistics(shared.gallery, {"topk_scores": scores, "topk_ids": ids}, shared.n_reference)
        self._seal()

    def reference_topk(self) -> int | None:
        return int(self.k)

    def statistics_from_reference_topk(self, scores: np.ndarray, ids: np.ndarray) -> dict[str, np.ndarray]:
        return {"topk_scores": scores, "topk_ids": ids}

    def _reset_fit(self) -> None:
        self.fitted_k_ = None

    def fitted_statistics(self) -> dict[str, np.ndarray]:
        if getattr(self, "topk_scores_", None) is None:
            raise NotFittedError(
                f"this {type(self).__name__} is not fitted yet; call fit(gallery, reference) first"
            )
        return {"topk_scores": self.topk_scores_, "topk_ids": self.topk_ids_}

    def _growth_params(self) -> dict[str, Any]:
        """New rows' statistics use the fitted k (the cache may be deeper than ``k``)."""
        fitted = getattr(self, "fitted_k_", None)
        return {"k": int(fitted)} if fitted else {}

    def _set_statistics(self, gallery, statistics, n_reference: int | None) -> None:
        missing = [key for key in _KEYS if key not in statistics]
        if missing:
            raise InputError(f"{type(self).__name__} statistics need arrays {list(_KEYS)}; missing {missing}")
        scores, ids = np.asarray(statistics["topk_scores"]), np.asarray(statistics["topk_ids"])
        if scores.ndim != 2 or scores.shape != ids.shape or scores.shape[0] != gallery.shape[0]:
            raise InputError(
                f"stored {type(self).__name__} statistics do not match the gallery: "
                f"topk_scores {scores.shape}, topk_ids {ids.shape}, gallery {gallery.shape}"
            )
        if n_reference is not None and scores.shape[1] > n_reference:
            raise InputError(
                f"top-{scores.shape[1]} statistics cannot come from {n_reference} reference rows"
            )
        self.topk_scores_ = scores
        self.topk_ids_ = ids
        self.fitted_k_ = int(scores.shape[1])
        self.n_reference_ = n_reference
        self.gallery_ = gallery

    def merge_reference_statistics(self, statistics, new_statistics, *, n_reference: int):
        k = int(statistics["topk_scores"].shape[1])
        new_ids = new_statistics["topk_ids"]
        shifted = np.where(new_ids >= 0, new_ids + int(n_reference), -1)
        scores, ids = merge_topk(
            [
                (statistics["topk_scores"], statistics["topk_ids"]),
                (new_statistics["topk_scores"], shifted),
            ],
            k,
        )
        return {"topk_scores": scores, "topk_ids": ids}

    # ------------------------------------------------------------------ persistence
    def check_persistence_arrays(self, arrays, n_reference: int | None) -> None:
        """``topk_scores`` float32, ``topk_ids`` int64 reference rows in ``[0, n_reference)``."""
        for name, want in _DTYPES.items():
            if name in arrays and np.asarray(arrays[name]).dtype != np.dtype(want):
                raise InputError(
                    f"stored statistic {name!r} must be stored as {want!r}; found dtype {np.asarray(arrays[name]).dtype.str}"
                )
        ids = arrays.get("topk_ids")
        if ids is None:
            return
        flat = np.asarray(ids).reshape(-1)
        hi = n_reference if n_reference is not None else np.iinfo(np.int64).max
        step = 1 << 21
        for s in range(0, flat.size, step):
            blk = flat[s : s + step]
            if blk.size and (int(blk.min()) < 0 or int(blk.max()) >= hi):
                raise InputError(
                    f"stored statistic 'topk_ids' must be reference rows in [0, {hi}); found values in "
                    f"[{int(blk.min())}, {int(blk.max())}]"
                )

    def _fitted_arrays(self) -> dict[str, np.ndarray]:
        return self.fitted_statistics()

    def _restore(self, gallery, arrays) -> None:
        self._set_statistics(gallery, arrays, None)
