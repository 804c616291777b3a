"""Methods whose corrected score is ``q . r - bias_[r]`` (the ``offset`` tag; part of :mod:`dehub.methods.base`)."""

from __future__ import annotations

from abc import abstractmethod

import numpy as np

from ..engine.exact import exact_search
from ._estimator import BaseCorrector
from ._params import FLOAT32_MAX, InvalidParameterError
from ._stats import compute_dtype
from ._tags import MethodTags

__all__ = ["AdditiveBiasCorrector", "BIAS_LIMIT"]

#: Largest magnitude a bias may have: scores ``q . r - bias`` then stay finite in float32
#: for any query with ``|q . r| <= FLOAT32_MAX / 2``.
BIAS_LIMIT = FLOAT32_MAX / 2


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
