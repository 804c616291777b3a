"""Persistence of the cached top-k reference scores shared by NNN and CSLS.

Both methods keep, for every gallery item, its ``k`` largest reference scores sorted
descending (``topk_scores_``) and where they came from (``topk_ids_``); index files store
exactly these two arrays.
"""

from __future__ import annotations

import numpy as np

__all__ = ["ReferenceTopKCache"]


class ReferenceTopKCache:
    """Mixin: ``_fitted_arrays``/``_restore`` for ``topk_scores_``/``topk_ids_``."""

    def _fitted_arrays(self) -> dict[str, np.ndarray]:
        return {"topk_scores": self.topk_scores_, "topk_ids": self.topk_ids_}

    def _restore(self, gallery, arrays) -> None:
        scores, ids = arrays["topk_scores"], arrays["topk_ids"]
        if scores.shape != ids.shape or scores.shape[0] != gallery.shape[0]:
            raise ValueError(
                f"stored {type(self).__name__} statistics do not match the gallery: "
                f"topk_scores {scores.shape}, topk_ids {ids.shape}, gallery {gallery.shape}"
            )
        self.topk_scores_ = scores
        self.topk_ids_ = ids
        self.fitted_k_ = int(scores.shape[1])
        self.gallery_ = gallery
