"""Mutual proximity (MP): Gaussian and empirical variants.

Schnitzer, Flexer, Schedl, Widmer. *Local and Global Scaling Reduce Hubs in Space*. JMLR
13 (2012) 2871-2902; as implemented in scikit-hubness and kiez
(``kiez.hubness_reduction.MutualProximity(method="normal")``).

Mutual proximity turns a distance into the probability that both points see each
other as close: modelling the distances from ``x`` as a Gaussian ``N(mu_x, sd_x)`` and
those from ``y`` as ``N(mu_y, sd_y)`` (independently)::

    MP(x, y) = 1 - P(D_x > d) P(D_y > d) = 1 - SF(d; mu_x, sd_x) SF(d; mu_y, sd_y)

with Euclidean distances ``d = sqrt(2 - 2 s)`` of unit vectors. As in
:mod:`dehub.methods.local_scaling`, a gallery item's Gaussian is fitted to its
distances to the reference queries, a query's to its distances to the gallery; ``k``
restricts both to the ``k`` nearest (kiez's ``n_candidates``), ``k=None`` uses all
(the paper's MP-Gauss). Population standard deviations, as kiez.

dehub computes ``MP = c_x + c_y - c_x c_y`` with ``c = 1 - SF`` the lower-tail
probability (no cancellation for close pairs, where ``SF`` rounds to 1), with an
``erfc`` of relative error below 1.2e-7 (Numerical Recipes' Chebyshev fit; numpy only),
and returns ``-MP`` as the score (higher is better). Query-dependent: no offset.

Empirical variant (``variant="empiric"``, the paper's exact MP; kiez's
``MutualProximity(method="empiric")``): instead of Gaussians, count. For a query ``q``
with candidates ``C_q`` (its ``k`` nearest gallery items) and a candidate ``y``::

    MP(q, y) = 1 - |{l in C_q : d(q, g_l) > d(q, y) and D_y(g_l) > d(q, y)}| / k

where ``D_y(g) = d(y, g)`` when ``g`` is within ``y``'s ``k``-th nearest reference
distance ``r_k(y)``, else ``r_k(y) + 1e-6``: as kiez, ``y`` knows its distances only up to
its ``k``-th neighbour (kiez looks ``g`` up in ``y``'s neighbour list; with the gallery as
its own reference, as in kiez's use, both rules agree). A gallery item outside ``C_q``
has no candidate farther from ``q`` than itself, so its MP is 1 (score -1). ``k`` is
required (the count needs a candidate set).
"""

from __future__ import annotations

from numbers import Integral
from typing import Any, ClassVar

import numpy as np

from .._errors import InputError
from ..engine.exact import DEFAULT_MEMORY_BUDGET
from ._cost import pass_work
from ._dense import distance_moments
from ._params import Constraint, Interval, Options
from ._tags import MethodTags
from .base import NotFittedError
from .local_scaling import NeighborStatsCorrector, _query_knn

__all__ = ["MutualProximity", "erfc", "normal_cdf", "empirical_mp_scores"]

_SD_FLOOR = 1e-12  # a Gaussian fitted to identical distances degenerates to a step

_ERFC_COEF = (
    -1.26551223,
    1.00002368,
    0.37409196,
    0.09678418,
    -0.18628806,
    0.27886807,
    -1.13520398,
    1.48851587,
    -0.82215223,
    0.17087277,
)


def erfc(x: np.ndarray) -> np.ndarray:
    """Complementary error function, fractional error < 1.2e-7 everywhere (float64)."""
    x = np.asarray(x, dtype=np.float64)
    z = np.abs(x)
    t = 1.0 / (1.0 + 0.5 * z)
    poly = np.full_like(t, _ERFC_COEF[-1])
    for c in _ERFC_COEF[-2::-1]:
        poly = poly * t + c
    ans = t * np.exp(-z * z + poly)
    return np.where(x >= 0, ans, 2.0 - ans)


def normal_cdf(x: np.ndarray, mu, sd) -> np.ndarray:
    """``P(N(mu, sd) <= x)``; accurate in the lower tail (where MP needs it)."""
    return 0.5 * erfc(-(np.asarray(x, dtype=np.float64) - mu) / (np.asarray(sd) * np.sqrt(2.0)))


def empirical_mp_scores(dist: np.ndarray, gallery: np.ndarray, kth: np.ndarray, k: int) -> np.ndarray:
    """``-MP`` (empirical, module docstring) of a query block against the whole gallery.

    ``dist``: (b, n_gallery) Euclidean distances of the block; ``gallery``: unit rows;
    ``kth``: each gallery item's k-th nearest reference distance. Candidates outside a
    query's k nearest score -1.
    """
    k = min(k, dist.shape[1])
    cand = np.argpartition(dist, k - 1, axis=1)[:, :k]  # (b, k) the k nearest, unordered
    dq = np.take_along_axis(dist, cand, axis=1).astype(np.float64)  # d(q, g_l)
    g = np.asarray(gallery)[cand]  # (b, k, d)
    dgg = np.sqrt(np.maximum(2.0 - 2.0 * np.einsum("bid,bjd->bij", g, g, dtype=np.float64), 0.0))
    r_k = np.asarray(kth, dtype=np.float64)[cand][:, :, None]  # y's k-th reference distance
    known = np.where(dgg <= r_k, dgg, r_k + 1e-6)  # D_y(g_l), [b, y, l]
    d_y = dq[:, :, None]
    count = ((dq[:, None, :] > d_y) & (known > d_y)).sum(axis=2)
    out = np.full(dist.shape, -1.0)
    np.put_along_axis(out, cand, -(1.0 - count / k), axis=1)
    return out


class MutualProximity(NeighborStatsCorrector):
    """Mutual proximity with independent Gaussians (Schnitzer et al., JMLR 2012).

    Parameters
    ----------
    k : int or None, default None
        Nearest neighbours whose distances fit each side's Gaussian (>= 2); None: all
        items (the gallery item's distances to every reference query, the query's to
        every gallery item), as in the paper.

    Attributes
    ----------
    neighbor_distances_ : (n_gallery, fitted_k_) float32 or None
        Sorted distances of every gallery item to its nearest reference queries
        (None when fitted with ``k=None`` only).
    all_mean_, all_std_ : (n_gallery,) float64 or None
        Moments over all reference queries (fitted when ``k=None``).

    variant : {"normal", "empiric"}, default "normal"
        Gaussian MP (kiez's ``method="normal"``) or the empirical count (``"empiric"``,
        needs ``k``; see the module docstring).

    ``score``/``search`` return ``-MP`` (higher is better).
    """

    name = "mutual_proximity"
    all_mean_: Any
    all_std_: Any
    _parameter_constraints: ClassVar[dict[str, list[Constraint]]] = {
        "k": [None, Interval(Integral, 2, None)],
        "variant": [Options("normal", "empiric")],
    }

    def __dehub_tags__(self) -> MethodTags:
        return MethodTags()

    def __init__(self, k: int | None = None, variant: str = "normal") -> None:
        self.k = k
        self.variant = variant

    @classmethod
    def default_grid(cls) -> dict[str, list]:
        """k in {10, 50, 200} and None (all items); one pass serves the finite k."""
        return {"k": [10, 50, 200, None]}

    def _check_consistency(self) -> None:
        self._check_k()
        if self.variant == "empiric" and self.k is None:
            raise InputError("variant='empiric' counts over each query's k candidates: give k (e.g. k=50)")
        if (
            self.k is None
            and getattr(self, "gallery_", None) is not None
            and getattr(self, "all_mean_", None) is None
        ):
            raise InputError(
                "k=None needs the moments over all reference items, which were not fitted; refit with k=None"
            )

    _transform_work = (40.0, 40.0)  # two float64 Gaussian tails (erfc) per entry

    def sweep_work(self, shape, grid=None):
        """The neighbour pass, plus the moments over all reference items when k=None."""
        work = super().sweep_work(shape, grid)
        if any(k is None for k in self._check_grid(grid).get("k", [self.k])):
            work = work + pass_work(shape.n_gallery, shape.n_reference, shape.dim, elem=60.0)
        return work

    def _fit_stats(self, gallery, reference, kmax, memory_budget, progress) -> None:
        super()._fit_stats(gallery, reference, kmax, memory_budget, progress)
        if kmax is None or getattr(self, "_need_all", False):
            self.all_mean_, self.all_std_ = distance_moments(gallery, reference, memory_budget=memory_budget)
        else:
            self.all_mean_, self.all_std_ = None, None

    def _fit_all(self, gallery, reference, kmax, need_all: bool, fit_kwargs) -> None:
        self._need_all = need_all
        try:
            self.fit(gallery, reference, **fit_kwargs)
        finally:
            self._need_all = False

    def _fit(self, gallery, reference, **kwargs):
        """Fit each gallery item's Gaussian (k nearest reference distances, or all of them).

        Keyword arguments as :meth:`dehub.NNN.fit` (``normalize``, ``memory_budget``,
        ``progress``).
        """
        self.all_mean_ = None
        kwargs.setdefault("memory_budget", DEFAULT_MEMORY_BUDGET)
        return super()._fit(gallery, reference, **kwargs)

    def gallery_moments(self) -> tuple[np.ndarray, np.ndarray]:
        """(mean, std) of each gallery item's distance Gaussian for the current ``k``."""
        if getattr(self, "gallery_", None) is None:
            raise NotFittedError("MutualProximity is not fitted yet; call fit(gallery, reference) first")
        if self.k is None:
            return self.all_mean_, self.all_std_
        nd = self.neighbor_distances_[:, : int(self.k)].astype(np.float64)
        return nd.mean(axis=1), nd.std(axis=1)

    def _transform(self, dist: np.ndarray) -> np.ndarray:
        if self.variant == "empiric":
            return empirical_mp_scores(
                dist, np.asarray(self.gallery_), self.neighbor_distances_[:, int(self.k) - 1], int(self.k)
            )
        mu_g, sd_g = self.gallery_moments()
        nn = dist if self.k is None else _query_knn(dist, int(self.k))
        mu_q, sd_q = nn.mean(axis=1), nn.std(axis=1)
        c_q = normal_cdf(dist, mu_q[:, None], np.maximum(sd_q, _SD_FLOOR)[:, None])
        c_g = normal_cdf(dist, mu_g[None, :], np.maximum(sd_g, _SD_FLOOR)[None, :])
        return -(c_q + c_g - c_q * c_g)

    def _fitted_arrays(self) -> dict[str, np.ndarray]:
        out = super()._fitted_arrays()
        if getattr(self, "all_mean_", None) is not None:
            out["all_mean"], out["all_std"] = self.all_mean_, self.all_std_
        return out

    def _restore(self, gallery, arrays) -> None:
        super()._restore(gallery, arrays)
        if "all_mean" in arrays:
            self.all_mean_ = np.asarray(arrays["all_mean"], dtype=np.float64)
            self.all_std_ = np.asarray(arrays["all_std"], dtype=np.float64)
        else:
            self.all_mean_, self.all_std_ = None, None
