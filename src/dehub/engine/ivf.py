"""The numpy inverted-file engine (``engine="ivf"``), with spherical k-means.

Inverted file with flat float32 storage: spherical k-means on a sample gives ``nlist``
centroids; each database row lives in the list of its nearest centroid; each query scans
its ``nprobe`` nearest lists. Same candidates and scores as FAISS ``IndexIVFFlat`` with
these centroids, but each list is scored for all the queries probing it with one numpy
GEMM (FAISS's per-query scanner ran at about 6 GMAC/s on the 2-core reference machine,
numpy's GEMM at about 35). No FAISS needed.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from .._progress import progress_bar
from ._rows import read_rows, row_blocks, take_rows
from .reference import ReferenceIndex
from .settings import EngineParams
from .topk import select_topk

__all__ = ["IVFIndex", "spherical_kmeans", "train_coarse", "BUILD_BLOCK_ROWS"]

BUILD_BLOCK_ROWS = 32768  # rows of the database read at a time while building


def spherical_kmeans(sample: np.ndarray, nlist: int, niter: int, seed: int = 0) -> np.ndarray:
    """Centroids (nlist, d) float32, unit norm, of ``sample`` under inner product.

    Lloyd iterations with assignment by one GEMM per iteration; empty clusters are
    re-seeded with the sample rows farthest from their centroid.
    """
    rng = np.random.default_rng(seed)
    x = np.asarray(sample, dtype=np.float32)
    n = x.shape[0]
    cent = x[rng.choice(n, size=nlist, replace=False)].copy()
    for _ in range(max(1, niter)):
        sims = x @ cent.T
        assign = sims.argmax(axis=1)
        best = sims[np.arange(n), assign]
        sums = np.zeros_like(cent)
        if n < 4096:
            np.add.at(sums, assign, x)
        else:
            _segment_sum(x, assign, sums)
        counts = np.bincount(assign, minlength=nlist)
        empty = np.flatnonzero(counts == 0)
        if empty.size:
            far = np.argsort(best)[: empty.size]
            sums[empty] = x[far]
        norms = np.linalg.norm(sums, axis=1, keepdims=True)
        norms[norms == 0] = 1
        cent = (sums / norms).astype(np.float32)
    return cent


def _segment_sum(x: np.ndarray, labels: np.ndarray, out: np.ndarray) -> None:
    order = np.argsort(labels, kind="stable")
    lab = labels[order]
    starts = np.flatnonzero(np.r_[True, lab[1:] != lab[:-1]])
    out[lab[starts]] = np.add.reduceat(x[order], starts, axis=0)


def train_coarse(
    database: Any, params: EngineParams, *, progress: bool | str = False, label: str = "ivf build"
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Coarse quantizer of an IVF: ``(centroids (nlist, d), assign (n,), sample)``.

    Centroids by :func:`spherical_kmeans` on ``train_size`` sampled rows; every database
    row assigned to its nearest centroid, in blocks within ``params.memory_budget``.
    """
    n, d = int(database.shape[0]), int(database.shape[1])
    nlist = params.resolved_nlist(n)
    train_n = int(min(n, params.train_size or 32 * nlist))
    rng = np.random.default_rng(params.seed)
    sample_rows = np.sort(rng.choice(n, size=train_n, replace=False))
    sample = take_rows(database, sample_rows)
    centroids = spherical_kmeans(sample, nlist, params.niter, params.seed)
    assign = np.empty(n, dtype=np.int64)
    step = max(1024, min(BUILD_BLOCK_ROWS, params.memory_budget // (4 * (nlist + d))))
    with progress_bar(
        total=-(-n // step), desc=f"{label}: assign", enable=bool(progress), unit="block"
    ) as bar:
        for sl in row_blocks(n, step):
            assign[sl] = (read_rows(database, sl) @ centroids.T).argmax(axis=1)
            bar.update(1)
    return centroids, assign, sample


def probe_lists(q: np.ndarray, centroids: np.ndarray, nprobe: int) -> tuple[np.ndarray, np.ndarray]:
    """The ``nprobe`` nearest lists of every query, best first: ``(scores, list ids)``."""
    return select_topk(q @ centroids.T, min(int(nprobe), centroids.shape[0]))


class IVFIndex(ReferenceIndex):
    """Numpy IVF over flat float32 lists (built by :meth:`build`).

    ``centroids`` (nlist, d); list ``L`` holds ``vectors[list_bounds[L]:list_bounds[L+1]]``,
    whose database row numbers are ``list_rows[...]`` at the same positions.
    """

    engine = "ivf"

    def __init__(
        self,
        params: EngineParams,
        centroids: np.ndarray,
        list_bounds: np.ndarray,
        list_rows: np.ndarray,
        vectors: np.ndarray,
        database: Any = None,
    ) -> None:
        super().__init__(params, vectors.shape[0], vectors.shape[1], database)
        self.centroids = centroids
        self.list_bounds = list_bounds
        self.list_rows = list_rows
        self.vectors = vectors

    @classmethod
    def build(
        cls, database: Any, params: EngineParams, *, progress: bool | str = False, keep_database: bool = True
    ) -> IVFIndex:
        """Train the centroids, assign every row and store the lists (memory: index + a block)."""
        t0 = time.perf_counter()
        label = progress if isinstance(progress, str) else "ivf build"
        n, d = int(database.shape[0]), int(database.shape[1])
        centroids, assign, sample = train_coarse(database, params, progress=progress, label=label)
        del sample  # not needed past training: keep it out of the index's peak memory
        nlist = centroids.shape[0]
        counts = np.bincount(assign, minlength=nlist)
        bounds = np.zeros(nlist + 1, dtype=np.int64)
        np.cumsum(counts, out=bounds[1:])
        order = np.argsort(assign, kind="stable")
        pos = np.empty(n, dtype=np.int64)
        pos[order] = np.arange(n)
        vectors = np.empty((n, d), dtype=np.float32)
        n_blocks = -(-n // BUILD_BLOCK_ROWS)
        with progress_bar(total=n_blocks, desc=f"{label}: lists", enable=bool(progress), unit="block") as bar:
            for sl in row_blocks(n, BUILD_BLOCK_ROWS):
                vectors[pos[sl]] = read_rows(database, sl)
                bar.update(1)
        index = cls(params, centroids, bounds, order, vectors, database if keep_database else None)
        index.build_seconds = time.perf_counter() - t0
        return index

    @property
    def nbytes(self) -> int:
        return int(sum(a.nbytes for a in (self.centroids, self.list_bounds, self.list_rows, self.vectors)))

    def _candidates(self, q: np.ndarray, k: int, params: EngineParams) -> tuple[np.ndarray, np.ndarray]:
        """IVF top-k candidates of a query batch, one GEMM per probed list.

        Pass 1 scores each query's nearest list and keeps its top-k; the k-th score is a
        lower bound of the query's final k-th score. Pass 2 scores the other probed lists
        and keeps only entries at or above that bound (ties kept), so the selection at
        the end works on a few candidates per query instead of every scanned row.
        """
        nprobe = min(int(params.nprobe), self.centroids.shape[0])
        _, probe = probe_lists(q, self.centroids, nprobe)
        nq = q.shape[0]
        bounds = self.list_bounds
        nlist = self.centroids.shape[0]
        longest = int(np.diff(bounds).max())
        kk = min(k, longest)
        first_v = np.full((nq, kk), -np.inf, dtype=np.float32)
        first_i = np.full((nq, kk), -1, dtype=np.int64)
        bound = np.full(nq, -np.inf, dtype=np.float32)
        surv_q, surv_v, surv_i = [], [], []
        for pass_slots in (slice(0, 1), slice(1, nprobe)):
            sub = probe[:, pass_slots]
            flat = sub.ravel()
            if flat.size == 0:
                continue
            qrow = np.repeat(np.arange(nq), sub.shape[1])
            order = np.argsort(flat, kind="stable")
            lb = np.searchsorted(flat[order], np.arange(nlist + 1))
            for lst in np.flatnonzero(lb[1:] > lb[:-1]):  # loop over lists (blocks), not rows
                lo, hi = bounds[lst], bounds[lst + 1]
                if hi == lo:
                    continue
                qs = qrow[order[lb[lst] : lb[lst + 1]]]
                scores = q[qs] @ self.vectors[lo:hi].T
                if pass_slots.start == 0:
                    n_l = hi - lo
                    if n_l > kk:
                        part = np.argpartition(scores, n_l - kk, axis=1)[:, n_l - kk :]
                        first_v[qs] = np.take_along_axis(scores, part, axis=1)
                        first_i[qs] = self.list_rows[lo + part]
                        bound[qs] = first_v[qs].min(axis=1)  # n_l > kk means kk == k
                    else:
                        first_v[qs, :n_l] = scores
                        first_i[qs, :n_l] = self.list_rows[lo:hi]
                        if n_l == k:  # a bound only if the list holds k rows
                            bound[qs] = scores.min(axis=1)
                    continue
                r, c = np.divmod(np.flatnonzero(scores >= bound[qs][:, None]), hi - lo)
                if r.size:
                    surv_q.append(qs[r])
                    surv_v.append(scores[r, c])
                    surv_i.append(self.list_rows[lo + c])
        if not surv_q:
            return first_v, first_i
        sq = np.concatenate(surv_q)
        counts = np.bincount(sq, minlength=nq)
        order = np.argsort(sq, kind="stable")
        width = int(counts.max())
        pos = np.arange(sq.size) - np.repeat(np.cumsum(counts) - counts, counts)
        cand_v = np.full((nq, kk + width), -np.inf, dtype=np.float32)
        cand_i = np.full((nq, kk + width), -1, dtype=np.int64)
        cand_v[:, :kk], cand_i[:, :kk] = first_v, first_i
        cand_v[sq[order], kk + pos] = np.concatenate(surv_v)[order]
        cand_i[sq[order], kk + pos] = np.concatenate(surv_i)[order]
        return cand_v, cand_i

    def _batch_rows(self, params: EngineParams) -> int:
        # Per query row: the coarse probe (nlist scores + argpartition's int64 indices),
        # the row itself, and in pass 2 one list's score block at a time plus the
        # survivors (typically a few k): budget for 8 k per probed list.
        longest = int(np.diff(self.list_bounds).max())
        nlist = self.centroids.shape[0]
        per_row = 8 * int(params.nprobe) * max(1, min(longest, 64)) * 12 + nlist * 12 + self.d * 4
        return max(1, min(int(params.batch_size), int(params.memory_budget) // max(per_row, 1)))
