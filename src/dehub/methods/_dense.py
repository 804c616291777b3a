"""Helpers of the query-dependent methods (mutual proximity, local scaling, DSL).

Their corrected score of a pair depends on statistics of *both* the query and the
gallery item, so no per-item offset serves them: search scores every gallery item of a
block of queries (the exact engine's block plan bounds the memory), transforms the
block and keeps the top-k with the engine's rules (scores descending, ties to the
smaller row, padding ``-inf``/``-1``).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from .._errors import InputError
from .._progress import progress_bar
from ..engine.exact import exact_search
from ..engine.topk import RunningTopK
from ._stats import compute_dtype
from .base import BaseCorrector

__all__ = [
    "DenseScoreCorrector",
    "dense_search",
    "query_blocks",
    "similarity_to_distance",
    "nearest_distances",
    "distance_moments",
]


def query_blocks(n_queries: int, n_gallery: int, memory_budget: int, copies: int = 4) -> int:
    """Query rows per block so that ``copies`` float64 (rows x n_gallery) arrays fit."""
    return int(max(1, min(n_queries, memory_budget // max(1, copies * 8 * n_gallery))))


def dense_search(
    n_queries: int,
    n_gallery: int,
    k: int,
    block_scores: Callable[[slice], np.ndarray],
    *,
    memory_budget: int,
    progress: bool | str = False,
) -> tuple[np.ndarray, np.ndarray]:
    """Top-``k`` of dense score rows produced block by block by ``block_scores(rows)``."""
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise InputError(f"k must be a positive integer; received k={k!r}")
    k = int(k)
    kk = min(k, n_gallery)
    out_s = np.full((n_queries, k), -np.inf, dtype=np.float32)
    out_i = np.full((n_queries, k), -1, dtype=np.int64)
    step = query_blocks(n_queries, n_gallery, memory_budget)
    label = progress if isinstance(progress, str) else "search"
    with progress_bar(-(-n_queries // step), label, bool(progress), unit="block") as bar:
        for start in range(0, n_queries, step):
            rows = slice(start, min(start + step, n_queries))
            with np.errstate(over="ignore"):  # select on the float32 values score() returns
                s = np.asarray(block_scores(rows), dtype=np.float32)
            top = RunningTopK(s.shape[0], kk)
            top.push(s, 0)
            v, i = top.result()
            out_s[rows, :kk], out_i[rows, :kk] = v, i
            bar.update(1)
    return out_s, out_i


def similarity_to_distance(s: np.ndarray) -> np.ndarray:
    """Euclidean distance of unit vectors from their inner product: ``sqrt(max(2 - 2s, 0))``."""
    d = np.multiply(s, 2.0, dtype=np.float64)
    np.subtract(2.0, d, out=d)
    np.maximum(d, 0.0, out=d)
    return np.sqrt(d, out=d)


def nearest_distances(x, database, k: int, *, memory_budget: int, progress: bool | str = False) -> np.ndarray:
    """Distances of every row of ``x`` to its ``k`` nearest ``database`` rows, ascending (float64)."""
    s, _ = exact_search(x, database, int(k), memory_budget=memory_budget, progress=progress)
    return similarity_to_distance(s)


def distance_moments(x, database, *, memory_budget: int) -> tuple[np.ndarray, np.ndarray]:
    """Mean and (population) standard deviation of each ``x`` row's distances to all ``database`` rows."""
    n, m = x.shape[0], database.shape[0]
    dt = compute_dtype(x, database)
    db_t = np.asarray(database, dtype=dt).T
    step = query_blocks(n, m, memory_budget, copies=3)
    mean = np.empty(n)
    std = np.empty(n)
    for start in range(0, n, step):
        sl = slice(start, min(start + step, n))
        d = similarity_to_distance(np.asarray(x[sl], dtype=dt) @ db_t)
        mean[sl] = d.mean(axis=1)
        std[sl] = d.std(axis=1)
    return mean, std


class DenseScoreCorrector(BaseCorrector):
    """A corrector whose score of a pair needs the query's own statistics: no per-item offset.

    Subclasses provide :meth:`_block_scores` (the corrected scores of some queries against
    the whole gallery); search keeps the top-k of each block with the engine's rules
    (:func:`dense_search`), the memory bounded by the block plan.
    """

    def _block_scores(self, queries: np.ndarray, rows: slice) -> np.ndarray:
        raise NotImplementedError

    def _search(self, queries: np.ndarray, k: int, *, memory_budget: int, progress: bool):
        return dense_search(
            queries.shape[0],
            self.gallery_.shape[0],
            k,
            lambda rows: self._block_scores(queries, rows),
            memory_budget=memory_budget,
            progress="search" if progress else False,
        )
