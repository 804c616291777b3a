"""The exact re-score of the bf16 pass's candidates (:func:`rescore`)."""

from __future__ import annotations

import functools
from typing import Any

import numpy as np

from ._workers import parallel_scope
from .hardware import selection_workers
from .topk import select_topk

_GROUP_ROWS = 8  # rows re-scored by one GEMM (OpenBLAS main GEMM path needs M >= 8 here)
_MIN_GROUP_COLS = 256  # ... and M * N * K above its small-matrix threshold
_GEMV_MIN_COLS = 64  # GEMV tails round differently: pad single-row re-scores to this many


@functools.cache
def rescore_group_shapes(d: int, dt: np.dtype) -> tuple[tuple[int, int], ...]:
    """The (rows, minimum columns) shapes of re-score GEMMs that give every entry the same
    bits as a large GEMM of the same vectors on this BLAS, checked once per process.

    OpenBLAS 0.3.31 (SkylakeX) takes a small-matrix kernel, which rounds differently, below
    about 1,280 rows x columns, and GEMV for one row; 8 x 256 (the shape the exactness
    tests pin) is always among them. With ``c`` candidates a row, a group of ``g`` rows
    reads about ``max(g c, columns) / g`` database rows per query row (:func:`_group_shape`).
    """
    rng = np.random.default_rng(0)
    q = rng.standard_normal((64, d)).astype(dt)
    x = rng.standard_normal((3000, d)).astype(dt)
    full = q @ x.T
    shapes = []
    for rows, cols in ((2, 1024), (4, 512)):
        ok = True
        for n in (cols, cols + 37, 2 * cols + 5):
            r = rng.choice(64, rows, replace=False)
            c = rng.choice(3000, n, replace=False)
            part = q[r] @ x[c].T
            want = full[np.ix_(r, c)]
            ok = ok and bool(np.array_equal(part.view(np.uint8), want.view(np.uint8)))
        if ok:
            shapes.append((rows, cols))
    shapes.append((_GROUP_ROWS, _MIN_GROUP_COLS))
    return tuple(shapes)


def _group_shape(shapes: tuple[tuple[int, int], ...], mean_candidates: float) -> tuple[int, int]:
    """The shape that reads the fewest database rows per query row, ``max(rows x c,
    columns) / rows``: gathering the union's rows and packing them is most of a group's
    cost (a 2 x 800 x 512 GEMM costs about what an 8 x 800 x 512 one does, both bound by
    reading the 800 rows), ties to the fewer rows."""
    return min(shapes, key=lambda s: (max(s[0] * mean_candidates, s[1]) / s[0], s[0]))


def rescore(
    q: np.ndarray,
    database: Any,
    rows: np.ndarray,
    cols: np.ndarray,
    off: np.ndarray | None,
    k: int,
    dt: np.dtype,
    gemv: bool = False,
    key: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, int]:
    """Exact scores of the kept pairs, the fp32 engine's GEMM entries, and the top-k.

    ``gemv``: the engine scored this search with one-row GEMV calls (a single query,
    :func:`~dehub.engine._rows.scored_by_gemv`); its candidates are then re-scored with a
    one-row call too, else with GEMMs of 8 rows against the union of their candidates.
    ``key`` (one id per row, e.g. its best bf16 candidate): rows with near keys are grouped
    together, so a group's rows share candidates and its union stays small. Groups run on
    the worker threads, one BLAS thread each (:func:`~dehub.engine._workers.parallel_scope`).
    """
    m = q.shape[0]
    order = np.lexsort((cols, rows))
    rows, cols = rows[order], cols[order]
    counts = np.bincount(rows, minlength=m)
    width = max(int(counts.max()) if counts.size else 0, 1)
    sv = np.full((m, width), -np.inf, dtype=dt)
    si = np.full((m, width), -1, dtype=np.int64)
    starts = np.concatenate([[0], np.cumsum(counts)])
    pos = np.arange(rows.size) - starts[rows]
    row_order = np.arange(m) if key is None or gemv else np.argsort(key, kind="stable")
    group_rows, min_cols = _group_shape(rescore_group_shapes(q.shape[1], dt), rows.size / max(1, m))
    step = 1 if gemv else group_rows
    groups = [row_order[g : g + step] for g in range(0, m, step)]

    def one(g: np.ndarray) -> int:
        sel = np.concatenate([np.arange(starts[r], starts[r + 1]) for r in g])
        if sel.size == 0:
            return 0
        gr, gc, gp = rows[sel], cols[sel], pos[sel]
        if gemv:  # pad the columns so the one-row call rounds as the engine's GEMV did
            cp = np.concatenate([gc, np.full(max(0, _GEMV_MIN_COLS - gc.size), gc[0])])
            s1 = np.matmul(q[g], np.asarray(database[cp], dtype=dt).T)
            if off is not None:
                np.subtract(s1, off[cp], out=s1)
            sv[gr, gp] = s1[0, : gc.size]
            si[gr, gp] = gc
            return int(s1.size)
        union, inv = np.unique(gc, return_inverse=True)
        n_u = union.size
        if n_u < min_cols:  # pad the columns so the GEMM takes the main path
            union = np.concatenate([union, np.full(min_cols - n_u, union[0])])
        gq = g if g.size >= group_rows else np.concatenate([g, np.repeat(g[:1], group_rows - g.size)])
        local = np.empty(m, np.int64)
        local[g] = np.arange(g.size)
        xu = np.asarray(database[union], dtype=dt)
        s = np.matmul(q[gq], xu.T)  # rows padded likewise
        if off is not None:
            np.subtract(s, off[union], out=s)
        sv[gr, gp] = s[local[gr], inv]
        si[gr, gp] = gc
        return int(s.size)

    with parallel_scope(min(selection_workers(), max(1, len(groups) // 4))) as pool:
        chunks = [groups[c : c + 16] for c in range(0, len(groups), 16)]
        n_gemm = sum(pool.map(lambda ch: sum(one(g) for g in ch), chunks))
    v, i = select_topk(sv, k, ids=si)
    return v.astype(np.float32, copy=False), i, n_gemm
