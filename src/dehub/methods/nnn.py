"""Nearest Neighbor Normalization (NNN).

Chowdhury, Wang, Shenoy, Kiela, Schwettmann, Thrush. *Nearest Neighbor Normalization
Improves Multimodal Retrieval*. EMNLP 2024, arXiv 2410.24114.

For every gallery item ``r`` (Eq. 1)::

    b(r) = alpha * (1/k) * sum of the k largest s(q_j, r) over reference queries q_j

and the corrected score is ``s(q, r) - b(r)`` (Eq. 2). Only the gallery side is
corrected.

``fit`` stores the *sorted* top-k reference scores of every gallery item
(``topk_scores_``), so ``alpha`` and any ``k`` up to the fitted one change without a new
pass over the reference set (the cumulative sums of the sorted scores give every smaller
k's mean). That is also what the validation sweep and incremental reference growth use.
"""

from __future__ import annotations

import numpy as np

from ..engine import topk_search
from ._affine import check_real
from ._topk_cache import ReferenceTopKCache
from .base import AdditiveBiasCorrector, NotFittedError

__all__ = ["NNN"]


class NNN(ReferenceTopKCache, AdditiveBiasCorrector):
    """Nearest Neighbor Normalization.

    Parameters
    ----------
    k : int, default 16
        Number of nearest reference queries averaged per gallery item. The paper finds
        results insensitive to k in 8..128 for in-distribution references and k = 1
        harmful; pick it on a validation split (``dehub.evaluation.sweep``).
    alpha : float, default 0.75
        Scale of the bias; the paper's in-distribution choice (0.25-0.5 for
        out-of-distribution references). ``alpha = 0`` gives the plain ranking.
    engine : {'exact', 'ivf', 'ivf-sq8', 'hnsw', 'auto'}, default 'exact'
        How the top-k reference scores are found (``dehub.engine.faiss_engine``):
        exactly, or approximately from an index of the reference set (the paper's
        FAISS IVF, App. C). ``'auto'`` picks from the sizes.
    engine_params : dict, optional
        Knobs of the approximate engine (``EngineParams``: nlist, nprobe, rerank, ...).

    Attributes
    ----------
    topk_scores_ : (n_gallery, fitted_k_) float32
        The largest reference scores of every gallery item, sorted descending.
    topk_ids_ : (n_gallery, fitted_k_) int64
        The reference rows those scores came from.
    fitted_k_ : int
        The k used in ``fit``; any ``k <= fitted_k_`` is served from the cache.
    bias_ : (n_gallery,) float32
        ``alpha * mean(topk_scores_[:, :k])``: recomputed from the cache when ``alpha`` or
        ``k`` change.
    gallery_ : the gallery passed to ``fit`` (not copied).

    Examples
    --------
    >>> import numpy as np, dehub
    >>> rng = np.random.default_rng(0)
    >>> unit = lambda x: x / np.linalg.norm(x, axis=1, keepdims=True)
    >>> gallery, reference = unit(rng.normal(size=(100, 8))), unit(rng.normal(size=(500, 8)))
    >>> model = dehub.NNN(k=16, alpha=0.75).fit(gallery, reference)
    >>> scores, ids = model.search(unit(rng.normal(size=(3, 8))), k=5)
    >>> scores.shape, ids.dtype
    ((3, 5), dtype('int64'))
    """

    name = "nnn"
    _param_names = ("k", "alpha", "engine", "engine_params")

    def __init__(
        self, k: int = 16, alpha: float = 0.75, engine: str = "exact", engine_params: dict | None = None
    ) -> None:
        self.k = k
        self.alpha = alpha
        self.engine = engine
        self.engine_params = engine_params

    def _check_params(self) -> None:
        if isinstance(self.k, bool) or not isinstance(self.k, (int, np.integer)) or self.k < 1:
            raise ValueError(f"k must be a positive integer; received k={self.k!r}")
        check_real(self.alpha, "alpha", minimum=0.0)
        fitted = getattr(self, "fitted_k_", None)
        if fitted is not None and self.k > fitted:
            raise ValueError(
                f"k={self.k} exceeds the k={fitted} used in fit; the cached top-{fitted} "
                f"reference scores serve any k <= {fitted}. Refit with k={self.k} (or larger)."
            )

    @classmethod
    def default_grid(cls) -> dict[str, list]:
        """The paper's grid (App. B1): alpha 0.25..1.5 step 0.125, k = 1, 2, 4, ..., 512."""
        return {
            "k": [2**i for i in range(10)],
            "alpha": [0.25 + 0.125 * i for i in range(11)],
        }

    def fit_grid(self, gallery, reference, grid=None, **fit_kwargs):
        """Yield every (k, alpha) of ``grid`` from ONE pass over the reference set.

        The fit uses the largest k; smaller k come from the cached sorted top-k scores
        and every alpha from the same means. k values larger than the reference set are
        skipped. The same estimator is re-parameterized and yielded each time.
        """
        grid = self.default_grid() if grid is None else dict(grid)
        n_ref = reference.shape[0]
        ks = sorted({int(k) for k in grid.get("k", [self.k]) if int(k) <= n_ref})
        alphas = list(grid.get("alpha", [self.alpha]))
        if not ks:
            raise ValueError(
                f"every k in the grid exceeds the number of reference items ({n_ref}); "
                "lower the k values or provide more reference items"
            )
        self.set_params(k=ks[-1])
        self.fit(gallery, reference, **fit_kwargs)
        for k in ks:
            for alpha in alphas:
                self.set_params(k=k, alpha=alpha)
                yield {"k": k, "alpha": alpha}, self

    def fit(self, gallery, reference, **kwargs) -> NNN:
        """Compute and cache the top-k reference scores of every gallery item.

        Takes the keyword arguments of :meth:`AdditiveBiasCorrector.fit`
        (``normalize``, ``memory_budget``, ``progress``). Refitting replaces the cache,
        so a larger ``k`` than before is fine here.
        """
        self.fitted_k_ = None
        return super().fit(gallery, reference, **kwargs)

    def _min_reference(self) -> tuple[str, int]:
        return ("k", int(self.k))

    def _fit_bias(self, gallery, reference, *, memory_budget: int, progress: bool) -> None:
        scores, ids = topk_search(
            gallery,
            reference,
            int(self.k),
            engine=self.engine,
            engine_params=self.engine_params,
            memory_budget=memory_budget,
            progress="NNN bias" if progress else False,
        )
        self.topk_scores_ = scores
        self.topk_ids_ = ids
        self.fitted_k_ = int(self.k)

    # ------------------------------------------------------------------ cached stats
    def mean_topk(self, k: int | None = None) -> np.ndarray:
        """Unscaled mean of the ``k`` largest reference scores per gallery item (float32)."""
        if getattr(self, "topk_scores_", None) is None:
            raise NotFittedError("NNN is not fitted yet; call fit(gallery, reference) first")
        k = self.k if k is None else k
        if k > self.fitted_k_:
            raise ValueError(f"k={k} exceeds the fitted k={self.fitted_k_}; refit with a larger k")
        return self.topk_scores_[:, :k].mean(axis=1, dtype=np.float64).astype(np.float32)

    def mean_topk_all(self) -> np.ndarray:
        """Means for every k = 1..fitted_k_ at once, shape (n_gallery, fitted_k_).

        Column ``k - 1`` is the top-k mean; computed from cumulative sums of the sorted
        scores, so a whole k grid costs one pass over the reference set.
        """
        if getattr(self, "topk_scores_", None) is None:
            raise NotFittedError("NNN is not fitted yet; call fit(gallery, reference) first")
        csum = np.cumsum(self.topk_scores_, axis=1, dtype=np.float64)
        return (csum / np.arange(1, self.fitted_k_ + 1)).astype(np.float32)

    @property
    def bias_(self) -> np.ndarray:
        self._check_params()
        return (np.float32(self.alpha) * self.mean_topk()).astype(np.float32)
