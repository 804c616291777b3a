"""The coarse quantizer of the IVF engines: spherical k-means and a windowed assignment.

A coarse quantizer maps every database row to one of ``nlist`` inverted lists. In an IVF
build it costs the training (k-means on a sample, ``niter * n_sample * nlist * d``
multiply-adds) plus the assignment of every row, one GEMM against the centroids
(``n * nlist * d``), the only build step that grows with ``n * nlist``. Both are cut by
scoring on a window of ``assign_dim`` consecutive coordinates instead of all ``d``:

* the window is a zero-copy column slice (BLAS reads it with the row stride), chosen
  among the aligned windows as the one where the sample's scores against the centroids
  vary most (:func:`choose_window`);
* k-means runs in the window; the stored centroids are the full-dimensional normalized
  means of the sample members of each cluster, and queries probe the lists with them.

Only the list a row lands in is approximate (a row whose nearest centroid in the window
is not its nearest in all ``d`` goes to a near list); every score a search returns is
computed in full from the stored vector.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .._errors import InputError
from ._compiled import kernels_enabled
from ._workers import SEQUENTIAL, Workers

try:  # optional C extension (setup.py): the same sums without the sort and the copy
    from . import _cluster_kernel
except ImportError:
    _cluster_kernel = None  # type: ignore[assignment]

__all__ = ["spherical_kmeans", "CoarseQuantizer", "train_quantizer", "choose_window", "default_assign_dim"]


def default_assign_dim(d: int) -> int:
    """Coordinates the assignment scores on by default: ``d // 4``, at least 128 (all of
    ``d`` below 128)."""
    return min(d, max(128, d // 4))


def spherical_kmeans(
    sample: np.ndarray, nlist: int, niter: int, seed: int = 0, workers: Workers = SEQUENTIAL
) -> np.ndarray:
    """Centroids (nlist, d) float32, unit norm, of ``sample`` under inner product.

    Initial centroids are ``nlist`` distinct sample rows; Lloyd iterations assign by one
    GEMM each; an empty cluster is re-seeded with the sample row farthest from its
    centroid.
    """
    return _kmeans(np.asarray(sample, dtype=np.float32), nlist, niter, seed, workers)[0]


def _kmeans(
    x: np.ndarray, nlist: int, niter: int, seed: int, workers: Workers
) -> tuple[np.ndarray, np.ndarray]:
    """:func:`spherical_kmeans`, also returning the labels of the last iteration (the
    clusters whose means the returned centroids are)."""
    n = x.shape[0]
    if not 1 <= nlist <= n:
        raise InputError(f"nlist must be in 1..n_sample={n}; received {nlist}")
    rng = np.random.default_rng(seed)
    cent = _normalized(x[rng.choice(n, size=nlist, replace=False)])
    labels = np.zeros(n, dtype=np.int64)
    niter = max(1, int(niter))
    # the first half of the iterations on every other sample row, when that still leaves
    # 8 rows per centroid (the centroids move most then; half the GEMM)
    half = np.ascontiguousarray(x[::2]) if n // 2 >= 8 * nlist and niter > 1 else x
    for it in range(niter):
        xs = half if it < niter // 2 else x
        labels, best = _nearest(xs, cent, workers)
        sums = _cluster_sums(xs, labels, nlist)
        empty = np.flatnonzero(np.bincount(labels, minlength=nlist) == 0)
        if empty.size:
            sums[empty] = xs[np.argsort(best)[: empty.size]]
        cent = _normalized(sums)
    return cent, labels


def _nearest(x: np.ndarray, cent: np.ndarray, workers: Workers) -> tuple[np.ndarray, np.ndarray]:
    """Nearest centroid of every row and its score, rows split across the workers."""

    def one(sl: slice) -> tuple[np.ndarray, np.ndarray]:
        sims = x[sl] @ cent.T
        lab = sims.argmax(axis=1)
        return lab, np.take_along_axis(sims, lab[:, None], axis=1)[:, 0]

    found = workers.map(one, workers.split(x.shape[0]))
    return np.concatenate([f[0] for f in found]), np.concatenate([f[1] for f in found])


def _normalized(rows: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(rows, axis=1, keepdims=True)
    norms[norms == 0] = 1
    return np.ascontiguousarray(rows / norms, dtype=np.float32)


def _cluster_sums(x: np.ndarray, labels: np.ndarray, nlist: int) -> np.ndarray:
    """Sum of the rows of each cluster (nlist, d) float32, each cluster's rows added in
    increasing row order: by the compiled kernel where built, else one stable sort and
    one sum per cluster over a contiguous slice (several times faster than
    ``np.add.reduceat`` over rows); the same float32 additions in the same order."""
    if _cluster_kernel is not None and kernels_enabled():
        out = np.zeros((nlist, x.shape[1]), dtype=np.float32)
        xc = np.ascontiguousarray(x, dtype=np.float32)
        _cluster_kernel.add_rows(xc, np.ascontiguousarray(labels, dtype=np.int64), out)
        return out
    order = np.argsort(labels, kind="stable")
    xs = x[order]
    bounds = np.zeros(nlist + 1, dtype=np.int64)
    np.cumsum(np.bincount(labels, minlength=nlist), out=bounds[1:])
    out = np.zeros((nlist, x.shape[1]), dtype=np.float32)
    for c in np.flatnonzero(bounds[1:] > bounds[:-1]):
        xs[bounds[c] : bounds[c + 1]].sum(axis=0, out=out[c])
    return out


@dataclass(frozen=True)
class CoarseQuantizer:
    """``centroids`` (nlist, d) unit rows, what queries probe with; rows are assigned by
    their coordinates ``lo:hi`` against ``window_centroids`` (nlist, hi - lo)."""

    centroids: np.ndarray
    window_centroids: np.ndarray
    lo: int
    hi: int

    def assign(self, x: np.ndarray) -> np.ndarray:
        """The list (int64) of every row of ``x``: the window centroid with the largest
        score on the window (smallest list id on ties)."""
        x = np.asarray(x, dtype=np.float32)
        return (x[:, self.lo : self.hi] @ self.window_centroids.T).argmax(axis=1).astype(np.int64)


def choose_window(sample: np.ndarray, centroids: np.ndarray, width: int) -> int:
    """Start of the aligned window of ``width`` coordinates whose partial scores
    ``sample[:, w] @ centroids[:, w].T`` have the largest variance (the window that
    tells the centroids apart best); ``d % width`` trailing coordinates are never used."""
    d = sample.shape[1]
    starts = list(range(0, d - width + 1, width))
    if len(starts) == 1:
        return 0
    sub = sample[: min(sample.shape[0], 512)]
    spread = [float(np.var(sub[:, s : s + width] @ centroids[:, s : s + width].T)) for s in starts]
    return starts[int(np.argmax(spread))]


def train_quantizer(
    sample: np.ndarray,
    nlist: int,
    niter: int,
    seed: int = 0,
    assign_dim: int | None = None,
    workers: Workers = SEQUENTIAL,
) -> CoarseQuantizer:
    """Spherical k-means with ``nlist`` lists on a window of ``assign_dim`` coordinates.

    With ``assign_dim = d`` (or ``None`` on a small ``d``) this is plain spherical
    k-means. Otherwise: ``nlist`` random sample rows pick the window
    (:func:`choose_window`), k-means runs in the window for ``niter`` iterations,
    and the centroids returned are the normalized full-dimensional means of the sample
    rows of each cluster.
    """
    x = np.asarray(sample, dtype=np.float32)
    n, d = x.shape
    width = default_assign_dim(d) if assign_dim is None else int(assign_dim)
    if not 1 <= width <= d:
        raise InputError(f"assign_dim must be in 1..d={d}; received {assign_dim}")
    if width == d:
        cent = spherical_kmeans(x, nlist, niter, seed, workers)
        return CoarseQuantizer(cent, cent, 0, d)
    seeds = _normalized(x[np.random.default_rng(seed).choice(n, size=nlist, replace=False)])
    lo = choose_window(x, seeds, width)
    win = np.ascontiguousarray(x[:, lo : lo + width])
    cw, labels = _kmeans(win, nlist, niter, seed, workers)
    sums = _cluster_sums(x, labels, nlist)  # the clusters whose window means are cw
    empty = np.flatnonzero(np.bincount(labels, minlength=nlist) == 0)
    if empty.size:  # a cluster re-seeded in the last iteration: its seed row's window
        sums[empty, :] = 0
        sums[empty, lo : lo + width] = cw[empty]
    return CoarseQuantizer(_normalized(sums), cw, lo, lo + width)
