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

``bias_`` is a plain read-only array computed once by ``fit``; parameters changed later
do not touch it (``search`` then asks for a new ``fit``). ``with_params(alpha=..., k=...)``
returns a new fitted estimator whose bias comes from the same cached scores.
"""

from __future__ import annotations

import itertools
from numbers import Integral, Real
from typing import ClassVar

import numpy as np

from .._errors import InputError
from .._validation import check_k
from ..engine import topk_search
from ..engine.accel import PRECISIONS
from ._cost import grid_count, pass_work, ranking_work
from ._params import FLOAT32_MAX, Constraint, Interval, Options
from ._tags import MethodTags
from ._topk_cache import TopKStatistics
from .base import BIAS_LIMIT, AdditiveBiasCorrector, NotFittedError, ReferenceFit

__all__ = ["NNN"]

#: The engines ``dehub.engine.topk_search`` accepts for the reference top-k.
ENGINES = ("exact", "ivf", "ivf-sq8", "hnsw", "auto")


class NNN(TopKStatistics, ReferenceFit, AdditiveBiasCorrector):
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
        How the top-k reference scores are found (``dehub.engine.topk_search``):
        exactly, or approximately from an index of the reference set (the paper's
        FAISS IVF, App. C). ``'auto'`` picks from the sizes.
    engine_params : dict, optional
        Knobs of the approximate engine (``EngineParams``: nlist, nprobe, rerank, ...).
    precision : {'fp32', 'bf16', 'auto'}, default 'fp32'
        Of the exact engine (bias and search): ``'bf16'`` is a bf16 pass with an exact
        re-score, the same results (``docs/precision.md``; needs torch, else fp32).

    Attributes
    ----------
    topk_scores_ : (n_gallery, fitted_k_) float32
        The largest reference scores of every gallery item, sorted descending.
    topk_ids_ : (n_gallery, fitted_k_) int64
        The reference rows those scores came from.
    fitted_k_ : int
        The k used in ``fit``; any ``k <= fitted_k_`` is served from the cache.
    n_reference_ : int or None
        Reference rows of the fit (None when restored from a file that does not say).
    bias_ : (n_gallery,) float32, read-only
        ``alpha * mean(topk_scores_[:, :k])``, computed once by ``fit`` (or
        ``with_params``).
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
    _parameter_constraints: ClassVar[dict[str, list[Constraint]]] = {
        "k": [Interval(Integral, 1, None)],
        "alpha": [Interval(Real, 0.0, FLOAT32_MAX)],
        "engine": [Options(*ENGINES)],
        "engine_params": [None, dict],
        "precision": [Options(*PRECISIONS)],
    }
    #: Parameters the bias depends on, all served by the cached top-k scores
    #: (``with_params`` may change them; k up to the fitted k).
    _bias_params: ClassVar[tuple[str, ...]] = ("k", "alpha")

    def __init__(
        self,
        k: int = 16,
        alpha: float = 0.75,
        engine: str = "exact",
        engine_params: dict | None = None,
        precision: str = "fp32",
    ) -> None:
        self.k = k
        self.alpha = alpha
        self.engine = engine
        self.engine_params = engine_params
        self.precision = precision

    def __dehub_tags__(self) -> MethodTags:
        # b(r) depends only on r's top-k scores over the reference (Eq. 1): offset,
        # per-row statistics, and growth by appending / dropping / merging top-k lists.
        return MethodTags(offset=True, incremental=True, row_decomposable=True)

    def _cached_param_names(self) -> frozenset[str]:
        return frozenset(self._bias_params)

    def search_precision(self) -> str:
        return str(self.precision)

    def reference_engine(self) -> tuple[str, dict | None] | None:
        return str(self.engine), self.engine_params

    def with_reference_engine(self, engine: str, engine_params: dict | None = None):
        return self.clone(engine=engine, engine_params=engine_params)

    def check_fit_sizes(self, n_gallery: int, n_reference: int) -> None:
        check_k(int(self.k), n_reference, name="k", what="reference items")

    def _check_consistency(self) -> None:
        fitted = getattr(self, "fitted_k_", None)
        if fitted is not None and self.k > fitted:
            raise InputError(
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
        """Yield every grid setting from ONE pass over the reference set.

        The fit uses the largest k; smaller k come from the cached sorted top-k scores
        and every other parameter of the statistic (alpha, ...) from the same cache.
        k values larger than the reference set are skipped. Grid keys must be
        parameters of the method; parameters that change the reference pass itself
        (``engine``, ``engine_params``) cannot be swept here. Every yielded estimator
        is independent (they share the read-only cached scores).
        """
        grid, ks = self._grid_plan(grid, reference.shape[0])
        self.set_params(k=ks[-1])
        self.fit(gallery, reference, **fit_kwargs)
        yield from self._grid_steps(grid, ks)

    def shared_scores_obstacle(self) -> str | None:
        if self.engine != "exact" or self.precision != "fp32":
            return (
                f"its reference pass runs engine={self.engine!r}, precision={self.precision!r} "
                "(shared scores come from the exact fp32 engine)"
            )
        return None

    def _grid_from_shared(self, shared, grid):
        """:meth:`fit_grid` from the shared reference top-k (at the grid's largest k)."""
        grid, ks = self._grid_plan(grid, shared.n_reference)
        self.set_params(k=ks[-1])
        self._fit_from_topk(shared)
        yield from self._grid_steps(grid, ks)

    def sweep_work(self, shape, grid=None):
        """One top-k pass over the reference (product and selection), then offsets only."""
        n = grid_count(self._check_grid(grid))
        return pass_work(shape.n_gallery, shape.n_reference, shape.dim, elem=2.0) + ranking_work(shape, n)

    def _grid_plan(self, grid, n_ref: int) -> tuple[dict[str, list], list[int]]:
        """The checked grid and its k values that the reference serves (ascending)."""
        grid = self._check_grid(grid)
        fixed = [n for n in ("engine", "engine_params") if n in grid]
        if fixed:
            raise InputError(
                f"{type(self).__name__}.fit_grid shares one reference pass; it cannot sweep "
                f"{fixed} (run one sweep per engine)"
            )
        ks = sorted({int(k) for k in grid.get("k", [self.k]) if int(k) <= n_ref})
        if not ks:
            raise InputError(
                f"every k in the grid exceeds the number of reference items ({n_ref}); "
                "lower the k values or provide more reference items"
            )
        return grid, ks

    def _grid_steps(self, grid: dict[str, list], ks: list[int]):
        """Re-parameterize the fitted estimator (fitted at ``ks[-1]``) for every setting."""
        others = [n for n in self._bias_params if n != "k"]
        values = [list(grid.get(n, [getattr(self, n)])) for n in others]
        for k in ks:
            for combo in itertools.product(*values):
                params = {"k": k, **dict(zip(others, combo))}
                self.set_params(**params)
                self._check_params()
                yield params, self

    def _reference_size_check(self, reference: np.ndarray) -> None:
        self._check_k_reference(int(self.k), reference)

    def _row_statistics(self, gallery, reference, *, memory_budget: int, progress: bool):
        scores, ids = topk_search(
            gallery,
            reference,
            int(self.k),
            engine=self.engine,  # checked against ENGINES
            engine_params=self.engine_params,
            precision=self.precision,
            memory_budget=memory_budget,
            progress="NNN bias" if progress else False,
        )
        return {"topk_scores": scores, "topk_ids": ids}

    # ------------------------------------------------------------------ cached stats
    def mean_topk(self, k: int | None = None) -> np.ndarray:
        """Unscaled mean of the ``k`` largest reference scores per gallery item (float32)."""
        if getattr(self, "topk_scores_", None) is None:
            raise NotFittedError("NNN is not fitted yet; call fit(gallery, reference) first")
        k = self.k if k is None else k
        fitted_k = int(self.fitted_k_ or 0)
        if k > fitted_k:
            raise InputError(f"k={k} exceeds the fitted k={self.fitted_k_}; refit with a larger k")
        return self.topk_scores_[:, :k].mean(axis=1, dtype=np.float64).astype(np.float32)

    def mean_topk_all(self) -> np.ndarray:
        """Means for every k = 1..fitted_k_ at once, shape (n_gallery, fitted_k_).

        Column ``k - 1`` is the top-k mean; computed from cumulative sums of the sorted
        scores, so a whole k grid costs one pass over the reference set.
        """
        if getattr(self, "topk_scores_", None) is None:
            raise NotFittedError("NNN is not fitted yet; call fit(gallery, reference) first")
        csum = np.cumsum(self.topk_scores_, axis=1, dtype=np.float64)
        return (csum / np.arange(1, self.topk_scores_.shape[1] + 1)).astype(np.float32)

    def _compute_bias(self) -> np.ndarray:
        with np.errstate(over="ignore"):  # an overflow is refused by the sealing check
            return (np.float32(self.alpha) * self.mean_topk()).astype(np.float32)

    def _overflow_hint(self, peak: float) -> str:
        top = float(np.abs(self.topk_scores_[:, : int(self.k)]).max(initial=0.0))
        bound = BIAS_LIMIT / top if top > 0 else FLOAT32_MAX
        return f"For this fit alpha must be <= {bound:.4g}; received alpha={self.alpha!r}."
