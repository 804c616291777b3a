"""Local scaling (LS) and the non-iterative contextual dissimilarity measure (NICDM).

Schnitzer, Flexer, Schedl, Widmer. *Local and Global Scaling Reduce Hubs in Space*. JMLR
13 (2012) 2871-2902; as implemented in scikit-hubness and kiez
(``kiez.hubness_reduction.LocalScaling``), the hubness reductions text-embedding users
know.

With Euclidean distances ``d(x, y) = sqrt(2 - 2 s(x, y))`` of unit vectors::

    LS(x, y)    = 1 - exp(-d(x, y)^2 / (sigma_x sigma_y))     sigma = distance to the k-th NN
    NICDM(x, y) = d(x, y) / sqrt(mu_x mu_y)                   mu    = mean distance to k NNs

In retrieval the two sides have their own neighbourhoods: a gallery item's ``sigma_y`` /
``mu_y`` come from its ``k`` nearest *reference* queries (a bank of queries, as NNN's
reference; kiez's "target to source" neighbours), a query's ``sigma_x`` / ``mu_x`` from
its ``k`` nearest gallery items (kiez's candidate list; all of them when the gallery has
fewer than ``k``). dehub returns the negated
distances as scores (higher is better) and re-ranks the whole gallery exactly (kiez
re-ranks only each query's ``n_candidates`` nearest items).

Not an offset: for a fixed query, NICDM ranks by ``d / sqrt(mu_y)`` and LS by
``d^2 / sigma_y``, a per-item *scale*, so search scores every gallery item of a query
block (:func:`dehub.methods._dense.dense_search`).
"""

from __future__ import annotations

import itertools
from numbers import Integral
from typing import Any, ClassVar

import numpy as np

from .._errors import InputError
from .._validation import check_k, check_same_dim
from ._cost import Work, grid_count, pass_work, ranking_work
from ._dense import DenseScoreCorrector, nearest_distances, similarity_to_distance
from ._params import Constraint, Interval, Options
from ._stats import compute_dtype
from ._tags import MethodTags
from .base import NotFittedError

__all__ = ["LocalScaling", "NeighborStatsCorrector"]

_EPS = 1e-24  # floor of sigma_x sigma_y / mu_x mu_y (a point at distance 0 from k neighbours)


class NeighborStatsCorrector(DenseScoreCorrector):
    """Shared fit/search of the methods scored from both sides' neighbour distances.

    ``fit`` caches each gallery item's sorted distances to its ``k`` nearest reference
    queries (``neighbor_distances_``, any smaller ``k`` is served from it); subclasses
    implement :meth:`_transform` (distances of a query block -> scores).
    """

    k: Any
    neighbor_distances_: Any
    fitted_k_: int | None

    def _k_value(self) -> int | None:
        return None if self.k is None else int(self.k)

    def _check_k(self) -> None:
        if self.k is None:
            return
        fitted = getattr(self, "fitted_k_", None)
        if fitted is not None and int(self.k) > fitted:
            raise InputError(
                f"k={self.k} exceeds the k={fitted} used in fit; the cached neighbour distances "
                f"serve any k <= {fitted}. Refit with k={self.k} (or larger)."
            )

    def _fit_stats(self, gallery, reference, kmax: int | None, memory_budget: int, progress: bool) -> None:
        if kmax is not None:
            self.neighbor_distances_ = nearest_distances(
                gallery,
                reference,
                kmax,
                memory_budget=memory_budget,
                progress=f"{self.name} fit" if progress else False,
            ).astype(np.float32)
        else:
            self.neighbor_distances_ = None
        self.fitted_k_ = kmax

    def _fit(self, gallery, reference, *, normalize, memory_budget, progress):
        """Cache every gallery item's distances to its ``k`` nearest reference queries."""
        self.fitted_k_ = None
        vars(self).pop("gallery_", None)  # unfitted until this fit succeeds
        self._check_params()
        gallery = self._prepare(gallery, "gallery", normalize)
        reference = self._prepare(reference, "reference", normalize)
        check_same_dim(gallery, reference, "gallery", "reference")
        k = self._k_value()
        if k is not None:
            check_k(k, reference.shape[0], name="k", what="reference items")
        self._fit_stats(gallery, reference, k, memory_budget, progress)
        self.gallery_ = gallery
        return self

    def fit_grid(self, gallery, reference, grid=None, **fit_kwargs):
        """Every setting of ``grid`` from one neighbour pass (the largest k)."""
        grid, values, kmax, need_all = self._grid_plan(grid, reference.shape[0])
        self.set_params(k=kmax)
        self._fit_all(gallery, reference, kmax, need_all, fit_kwargs)
        yield from self._grid_steps(grid, values, reference.shape[0])

    def _grid_plan(self, grid, n_ref: int):
        grid = self._check_grid(grid)
        values = {n: list(grid.get(n, [getattr(self, n)])) for n in self._get_param_names()}
        ks = values["k"]
        finite = [int(k) for k in ks if k is not None]
        kmax = max(finite) if finite else None
        if kmax is not None and kmax > n_ref:
            finite = [k for k in finite if k <= n_ref]
            if not finite:
                raise InputError(f"every k in the grid exceeds the number of reference items ({n_ref})")
            kmax = max(finite)
        return grid, values, kmax, any(k is None for k in ks)

    def _grid_steps(self, grid, values, n_ref: int):
        names = list(self._get_param_names())
        for combo in itertools.product(*(values[n] for n in names)):
            params = dict(zip(names, combo))
            if params["k"] is not None and int(params["k"]) > n_ref:
                continue
            self.set_params(**params)
            self._check_params()
            yield {n: params[n] for n in names if n in grid}, self

    #: Elementwise operations and transcendental evaluations per query x gallery entry
    #: of a setting's dense scores (float64 distances, the query's k nearest, the
    #: transform); calibrated on LS's measured sweep of the bundled benchmark (~24 ns per
    #: entry and setting on a quiet machine).
    _transform_work: ClassVar[tuple[float, float]] = (70.0, 0.0)

    def sweep_work(self, shape, grid=None):
        """One neighbour pass over the reference; every setting scored densely."""
        grid = self._check_grid(grid)
        n = grid_count(grid)
        elem, exp = self._transform_work
        work = pass_work(shape.n_gallery, shape.n_reference, shape.dim, elem=10.0)
        entries = float(shape.n_queries) * shape.n_gallery
        return work + ranking_work(shape, n, dense=True, transform=elem) + Work(exp=exp * entries * n)

    def _fit_all(self, gallery, reference, kmax, need_all: bool, fit_kwargs) -> None:
        self.fit(gallery, reference, **fit_kwargs)

    def gallery_scale(self) -> np.ndarray:
        """The per-item statistic of the current parameters (float64, (n_gallery,))."""
        raise NotImplementedError

    def _query_distances(self, queries: np.ndarray, rows: slice) -> np.ndarray:
        dt = compute_dtype(queries, self.gallery_)
        s = np.asarray(queries[rows], dtype=dt) @ np.asarray(self.gallery_, dtype=dt).T
        return similarity_to_distance(s)

    def _transform(self, dist: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def scores_from_similarity(
        self, similarity: np.ndarray, *, cache: dict[str, Any] | None = None
    ) -> np.ndarray | None:
        """The dense scores from the queries' raw similarities (the distances are theirs).

        With ``cache`` (one block of similarities scored for several settings of a grid),
        the float64 distances are computed once and kept there (:meth:`_cached_scores`).
        """
        self._check_fitted()
        if cache is None:
            return self._transform(similarity_to_distance(similarity)).astype(np.float32)
        if cache.get("similarity") is not similarity:
            cache.clear()
            cache["similarity"] = similarity
            cache["dist"] = similarity_to_distance(similarity)
        return self._cached_scores(cache)

    def _cached_scores(self, cache: dict[str, Any]) -> np.ndarray:
        """Float32 scores of the current setting from ``cache["dist"]`` (and whatever else
        the method keeps in ``cache``); equal to ``_transform(dist).astype(float32)``."""
        return self._transform(cache["dist"]).astype(np.float32)

    def _block_scores(self, queries: np.ndarray, rows: slice) -> np.ndarray:
        return self._transform(self._query_distances(queries, rows))

    def _score(self, queries: np.ndarray) -> np.ndarray:
        """Dense scores (negated LS / NICDM / MP distances), shape (n_queries, n_gallery), float32."""
        return self._transform(self._query_distances(queries, slice(0, queries.shape[0]))).astype(np.float32)

    def export_vectors(self) -> np.ndarray:
        """Not exportable: the correction scales each pair by statistics of its query."""
        raise InputError(
            f"{type(self).__name__} scores per query (a per-query and a per-item scale of "
            "the distance), so no fixed vectors serve it; use search()"
        )

    # ------------------------------------------------------------------ persistence
    def _fitted_arrays(self) -> dict[str, np.ndarray]:
        out = {}
        if getattr(self, "neighbor_distances_", None) is not None:
            out["neighbor_distances"] = self.neighbor_distances_
        return out

    def _restore(self, gallery, arrays) -> None:
        nd = arrays.get("neighbor_distances")
        if nd is not None:
            nd = np.asarray(nd, dtype=np.float32)
            if nd.ndim != 2 or nd.shape[0] != gallery.shape[0]:
                raise InputError(
                    f"stored neighbour distances have shape {nd.shape}; expected ({gallery.shape[0]}, k)"
                )
            self.fitted_k_ = nd.shape[1]
        else:
            self.fitted_k_ = None
        self.neighbor_distances_ = nd
        self.gallery_ = gallery


def _query_knn(dist: np.ndarray, k: int) -> np.ndarray:
    """The ``k`` smallest distances of each row (unsorted); all of them when ``k >= n_gallery``."""
    if k >= dist.shape[1]:
        return dist
    return np.partition(dist, k - 1, axis=1)[:, :k]


def _sorted_knn_sums(dist: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Each row's ``min(k, n_gallery)`` smallest distances, ascending, and their running sums.

    Any smaller ``k`` is a prefix of both (the same values in the same order), so one call
    at a grid's largest ``k`` serves every ``k`` of it with the same bits.
    """
    nn = np.sort(_query_knn(dist, k), axis=1)
    return nn, np.cumsum(nn, axis=1)


def _query_scale(nn: np.ndarray, csum: np.ndarray, k: int, variant: str) -> np.ndarray:
    """A query's scale from its sorted nearest distances: the mean of the ``k`` smallest
    (NICDM's ``mu_x``) or the ``k``-th smallest (LS's ``sigma_x``); ``k`` is clipped to
    the gallery size (all distances)."""
    k = min(k, nn.shape[1])
    return csum[:, k - 1] / k if variant == "nicdm" else nn[:, k - 1]


class LocalScaling(NeighborStatsCorrector):
    """Local scaling / NICDM (Schnitzer et al., JMLR 2012).

    Parameters
    ----------
    k : int, default 10
        Neighbours of each side that set its scale (kiez's ``n_candidates``).
    variant : {'nicdm', 'standard'}, default 'nicdm'
        kiez's ``method`` (renamed: ``--method`` is the CLI's method choice). ``'nicdm'``: ``d / sqrt(mu_x mu_y)`` with mean k-NN distances; ``'standard'``
        (kiez's ``'ls'``): ``1 - exp(-d^2 / (sigma_x sigma_y))`` with k-th-NN distances.

    Attributes
    ----------
    neighbor_distances_ : (n_gallery, fitted_k_) float32
        Sorted distances of every gallery item to its nearest reference queries.
    fitted_k_ : int

    ``score``/``search`` return ``-NICDM`` or ``-LS`` (higher is better).
    """

    name = "local_scaling"
    _parameter_constraints: ClassVar[dict[str, list[Constraint]]] = {
        "k": [Interval(Integral, 1, None)],
        "variant": [Options("nicdm", "standard")],
    }

    def __dehub_tags__(self) -> MethodTags:
        # A per-item scale and a per-query scale: no offset. Statistics are per gallery
        # row but the growth hooks are not implemented: not incremental.
        return MethodTags()

    def __init__(self, k: int = 10, variant: str = "nicdm") -> None:
        self.k = k
        self.variant = variant

    @classmethod
    def default_grid(cls) -> dict[str, list]:
        """k in {5, 10, 20, 50, 100} x both variants (one neighbour pass for all)."""
        return {"k": [5, 10, 20, 50, 100], "variant": ["nicdm", "standard"]}

    def _check_consistency(self) -> None:
        self._check_k()

    def shared_scores_obstacle(self) -> str | None:
        return None  # the neighbour distances are the shared reference top-k's

    def _grid_from_shared(self, shared, grid):
        """:meth:`fit_grid` with the neighbour distances from the shared reference top-k."""
        grid, values, kmax, _ = self._grid_plan(grid, shared.n_reference)
        self.set_params(k=kmax)
        self._unseal()
        self.fitted_k_ = None
        vars(self).pop("gallery_", None)
        self._check_params()
        self.neighbor_distances_ = similarity_to_distance(shared.reference_topk(kmax)[0]).astype(np.float32)
        self.fitted_k_ = kmax
        self.gallery_ = shared.gallery
        self._seal()
        yield from self._grid_steps(grid, values, shared.n_reference)

    def gallery_scale(self) -> np.ndarray:
        if getattr(self, "neighbor_distances_", None) is None:
            raise NotFittedError("LocalScaling is not fitted yet; call fit(gallery, reference) first")
        nd = self.neighbor_distances_[:, : int(self.k)].astype(np.float64)
        return nd.mean(axis=1) if self.variant == "nicdm" else nd[:, -1]

    def _transform(self, dist: np.ndarray) -> np.ndarray:
        nn, csum = _sorted_knn_sums(dist, int(self.k))
        squared = None if self.variant == "nicdm" else np.square(dist)
        return self._scaled(dist, squared, _query_scale(nn, csum, int(self.k), self.variant), np.float64)

    def _cached_scores(self, cache: dict[str, Any]) -> np.ndarray:
        """Every setting of a grid reads the block's distances, their squares (LS) and each
        query's sorted nearest distances at the fitted (largest) ``k`` from ``cache``;
        only the scale and the final division are per setting."""
        dist = cache["dist"]
        width = int(self.fitted_k_ if self.fitted_k_ is not None else self.k)
        key = f"knn{width}"
        if key not in cache:
            cache[key] = _sorted_knn_sums(dist, width)
        nn, csum = cache[key]
        squared = None
        if self.variant != "nicdm":
            if "squared" not in cache:
                cache["squared"] = np.square(dist)
            squared = cache["squared"]
        return self._scaled(dist, squared, _query_scale(nn, csum, int(self.k), self.variant), np.float32)

    def _scaled(self, dist: np.ndarray, squared: np.ndarray | None, q: np.ndarray, dtype) -> np.ndarray:
        """``-(dist / sqrt(max(q g, eps)))`` (NICDM) or ``-(1 - exp(-squared / max(q g, eps)))``
        (LS, ``squared = dist ** 2``) in float64, in place (no (queries x gallery) temporaries),
        rounded once to ``dtype`` at the last step (the bits of ``.astype(dtype)``)."""
        g = self.gallery_scale()
        out = np.empty(dist.shape, dtype=dtype)
        # Row blocks of about 1 MiB: the five elementwise passes stay in the CPU cache.
        step = max(1, (1 << 20) // max(1, 8 * dist.shape[1]))
        buf = np.empty((min(step, dist.shape[0]), dist.shape[1]), dtype=np.float64)
        for start in range(0, dist.shape[0], step):
            rows = slice(start, start + step)
            den = buf[: out[rows].shape[0]]
            np.multiply.outer(q[rows], g, out=den)
            np.maximum(den, _EPS, out=den)
            if squared is None:
                np.sqrt(den, out=den)
                np.divide(dist[rows], den, out=den)
                np.negative(den, out=out[rows], casting="same_kind")
                continue
            np.divide(squared[rows], den, out=den)
            np.negative(den, out=den)
            np.exp(den, out=den)
            # -(1 - e) is e - 1 exactly (rounding to nearest is symmetric)
            np.subtract(den, 1.0, out=out[rows], casting="same_kind")
        return out
