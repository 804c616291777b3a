"""The exact re-score of the bf16 pass's candidates (:func:`rescore`).

Every candidate's score must be the fp32 engine's own GEMM entry, bit for bit. Two ways:

- **compiled chains** (float32, the compiled kernel built, :func:`chain_panels` found): the
  kernel's ``chain_scores`` forms each pair's dot product as OpenBLAS's sgemm forms an
  entry of C, reading the candidate rows where they are (no gathered copy, no padding). How
  OpenBLAS 0.3.31's sgemm (SkylakeX kernels, measured) forms an entry: a chain of
  single-precision FMAs over the dimension in order, restarted at the end of each K panel
  and the panels' sums added in order; the panels depend on ``d`` only (``d <= 448``: one;
  ``448 < d < 896``: two halves rounded up to 16, e.g. 256 + 256 for ``d = 512``; larger:
  448-wide panels first), not on the rows or columns of the call, as long as the call
  takes the main GEMM path (not the small-matrix kernel, about rows x columns <= 1,280,
  nor GEMV, one row). :func:`chain_panels` identifies the panels once per process and
  dimension by comparing the chains with this BLAS's GEMM on random data (a wrong panel
  end changes over 90% of the entries) and returns None where no candidate matches (another
  BLAS): then
- **grouped GEMMs** (any dtype, one-row GEMV searches): numpy GEMMs of groups of rows
  against the union of their candidates, in shapes checked against this BLAS
  (:func:`rescore_group_shapes`), which gather the union's rows (most of their cost).
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from typing import Any

import numpy as np

from ._blas import blas_controllable, single_threaded_blas
from ._workers import SEQUENTIAL, Workers
from .topk import kernel_isa, select_topk

try:  # the compiled chains (dehub.engine._topk_kernel.chain_scores)
    from . import _topk_kernel as _kernel
except ImportError:  # not built: grouped GEMMs
    _kernel = None  # type: ignore[assignment]

__all__ = ["rescore", "rescore_group_shapes", "chain_panels", "chain_scores"]

_GROUP_ROWS = 8  # rows re-scored by one GEMM (OpenBLAS main GEMM path needs M >= 8 here)
_MIN_GROUP_COLS = 256  # ... and M * N * K above its small-matrix threshold
_GEMV_MIN_COLS = 64  # GEMV tails round differently: pad single-row re-scores to this many
_PANEL_Q = (448, 384, 512, 256, 320, 640, 768, 192, 128, 96, 64)  # K-panel widths tried
_PANEL_ROUND = (16, 8, 4, 2, 1, 0)  # rounding of a split panel (0: the threaded driver's (l + 1) // 2)
_CHECK_ROWS, _CHECK_COLS = 64, 3000  # the identifying GEMM: on the main path, well above the small kernel


def _panel_candidates(d: int) -> Iterator[tuple[int, ...]]:
    """K-panel ends ``(e_0, ..., d)`` of OpenBLAS's level-3 drivers for panel widths
    ``Q`` and rounding units ``U``: a remainder of at least ``2Q`` takes ``Q``, one between
    ``Q`` and ``2Q`` half of itself rounded up to ``U``, a shorter one itself."""
    yield (d,)
    for q_w in _PANEL_Q:
        for unit in _PANEL_ROUND:
            ends: list[int] = []
            s = 0
            while s < d:
                left = d - s
                if left >= 2 * q_w:
                    step = q_w
                elif left > q_w:
                    step = (left + 1) // 2 if unit == 0 else -(-(left // 2) // unit) * unit
                else:
                    step = left
                s += step
                ends.append(s)
            yield tuple(ends)


def _check_data(d: int) -> tuple[np.ndarray, np.ndarray]:
    """Random rows plus rows whose products cancel exactly (the sign of a zero score)."""
    rng = np.random.default_rng(0)
    q = rng.standard_normal((_CHECK_ROWS, d)).astype(np.float32)
    x = rng.standard_normal((_CHECK_COLS, d)).astype(np.float32)
    q[0] = np.where(np.arange(d) % 2 == 0, 1.0, -1.0)
    q[1] = -1.0
    x[0] = 1.0
    x[1] = 0.0
    x[2, : d // 2] = 2.0**-130  # subnormal products
    return q, x


@functools.cache
def chain_panels(d: int) -> tuple[int, ...] | None:
    """The K-panel ends with which the compiled chains give this BLAS's sgemm bits for
    dimension ``d``, identified once per process; None: the kernel is not built, or no
    candidate matches every entry of a 64 x 3,000 GEMM run with one BLAS thread, as the
    engine's workers run theirs. (OpenBLAS's threaded driver halves a split panel without
    rounding: for ``d = 1000`` its panels are 448 + 276 + 276, the one-thread driver's
    448 + 288 + 264; the re-score follows the engine's workers.)"""
    if _kernel is None or kernel_isa() is None or d < 1:
        return None
    q, x = _check_data(d)
    with single_threaded_blas():  # as the engine's workers run their GEMMs
        want = q @ x.T
    rows = np.arange(_CHECK_ROWS)
    few = np.arange(0, _CHECK_COLS, 97, dtype=np.int64)
    seen: set[tuple[int, ...]] = set()
    for ends in _panel_candidates(d):
        if ends in seen:
            continue
        seen.add(ends)
        e = np.asarray(ends, np.int64)
        if not np.array_equal(chain_scores(q, x, rows, few, None, e), want[:, few]):  # quick screen
            continue
        cols = np.arange(_CHECK_COLS, dtype=np.int64)
        if np.array_equal(chain_scores(q, x, rows, cols, None, e).view(np.uint32), want.view(np.uint32)):
            return ends
    return None


def chain_scores(
    q: np.ndarray,
    x: np.ndarray,
    rows: np.ndarray,
    cols: np.ndarray,
    off: np.ndarray | None,
    ends: np.ndarray,
    isa: str | None = None,
) -> np.ndarray:
    """``(len(rows), len(cols))`` scores ``q[rows] . x[cols] - off[cols]`` by the compiled
    chains (every row against every column; for checks and tests; ``isa``: ``"avx512f"``,
    ``"avx2"`` or ``"scalar"`` instead of the path chosen for this CPU, where it has it)."""
    qs = np.ascontiguousarray(q[rows], dtype=np.float32)
    n = cols.size
    indptr = np.arange(0, (qs.shape[0] + 1) * n, n, dtype=np.int64)
    all_cols = np.tile(cols.astype(np.int64), qs.shape[0])
    out = np.empty(all_cols.size, np.float32)
    _kernel.chain_scores(qs, np.ascontiguousarray(x, dtype=np.float32), indptr, all_cols, off, ends, out, isa)
    return out.reshape(qs.shape[0], n)


def _chain_ready(database: Any, dt: np.dtype, gemv: bool) -> tuple[int, ...] | None:
    """The panels when the compiled chains can re-score this search: float32 rows in one
    C-contiguous array (an ndarray or memmap, read in place), not a one-row GEMV search,
    and BLAS limited to one thread in the engine's workers (``threadpoolctl``)."""
    if gemv or dt != np.float32:
        return None
    if not (
        isinstance(database, np.ndarray) and database.dtype == np.float32 and database.flags.c_contiguous
    ):
        return None
    if not blas_controllable():  # the engine then runs BLAS's own threads: its driver may split d otherwise
        return None
    return chain_panels(int(database.shape[1]))


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
    workers: Workers = SEQUENTIAL,
) -> tuple[np.ndarray, np.ndarray, int]:
    """Exact scores of the kept pairs (``rows`` index ``q``, ``cols`` the database), the
    fp32 engine's GEMM entries, and each row's top-k; returns ``(scores, ids, entries
    computed)``. The compiled chains where :func:`_chain_ready`, else grouped GEMMs.

    ``gemv``: the engine scored this search with one-row GEMV calls (a single query,
    :func:`~dehub.engine._rows.scored_by_gemv`); its candidates are then re-scored with a
    one-row call too. ``key`` (one id per row, e.g. its best bf16 candidate): grouped GEMMs
    put rows with near keys together, so a group's union stays small. ``workers``: the
    search's worker threads (one BLAS thread each, :func:`~dehub.engine._workers.parallel_scope`)."""
    m = q.shape[0]
    if rows.size and np.any(rows[1:] < rows[:-1]):
        order = np.argsort(rows, kind="stable")
        rows, cols = rows[order], cols[order]
    counts = np.bincount(rows, minlength=m)
    width = max(int(counts.max()) if counts.size else 0, 1)
    starts = np.zeros(m + 1, np.int64)
    np.cumsum(counts, out=starts[1:])
    pos = np.arange(rows.size) - starts[rows]
    ends = _chain_ready(database, dt, gemv)
    if ends is not None:
        scores = _chain_rescore(q, database, starts, cols, off, np.asarray(ends, np.int64), workers)
        n_computed = int(rows.size)
    else:
        scores, n_computed = _grouped_rescore(q, database, rows, cols, starts, off, dt, gemv, key, workers)
    sv = np.full((m, width), -np.inf, dtype=dt)
    si = np.full((m, width), -1, dtype=np.int64)
    sv[rows, pos] = scores
    si[rows, pos] = cols
    v, i = select_topk(sv, k, ids=si)
    return v.astype(np.float32, copy=False), i, n_computed


def _chain_rescore(
    q: np.ndarray,
    database: np.ndarray,
    starts: np.ndarray,
    cols: np.ndarray,
    off: np.ndarray | None,
    ends: np.ndarray,
    workers: Workers,
) -> np.ndarray:
    """The compiled chains over contiguous parts of the rows, one per worker."""
    q32 = np.ascontiguousarray(q, dtype=np.float32)
    off32 = None if off is None else np.ascontiguousarray(off, dtype=np.float32)
    out = np.empty(cols.size, np.float32)

    def part(s: slice) -> None:
        a, b = int(starts[s.start]), int(starts[s.stop])
        _kernel.chain_scores(
            q32[s], database, starts[s.start : s.stop + 1] - a, cols[a:b], off32, ends, out[a:b]
        )

    workers.map(part, workers.split(q.shape[0], -(-q.shape[0] // workers.n)))
    return out


def _grouped_rescore(
    q: np.ndarray,
    database: Any,
    rows: np.ndarray,
    cols: np.ndarray,
    starts: np.ndarray,
    off: np.ndarray | None,
    dt: np.dtype,
    gemv: bool,
    key: np.ndarray | None,
    workers: Workers,
) -> tuple[np.ndarray, int]:
    """Numpy GEMMs of groups of rows against the union of their candidates (a one-row call
    per row for ``gemv``); returns the pairs' scores in the order of ``rows`` and the GEMM
    entries computed (unions and padding included)."""
    m = q.shape[0]
    out = np.empty(rows.size, dtype=dt)
    row_order = np.arange(m) if key is None or gemv else np.argsort(key, kind="stable")
    group_rows, min_cols = _group_shape(rescore_group_shapes(q.shape[1], dt), rows.size / max(1, m))
    step = 1 if gemv else group_rows
    groups = [row_order[g : g + step] for g in range(0, m, step)]

    def one(g: np.ndarray) -> int:
        n_g = starts[g + 1] - starts[g]
        sel = np.concatenate([np.arange(starts[r], starts[r + 1]) for r in g])
        if sel.size == 0:
            return 0
        gc = cols[sel]
        if gemv:  # pad the columns so the one-row call rounds as the engine's GEMV did
            cp = np.concatenate([gc, np.full(max(0, _GEMV_MIN_COLS - gc.size), gc[0])])
            s1 = np.matmul(q[g], np.asarray(database[cp], dtype=dt).T)
            if off is not None:
                np.subtract(s1, off[cp], out=s1)
            out[sel] = s1[0, : gc.size]
            return int(s1.size)
        union, inv = np.unique(gc, return_inverse=True)
        n_u = union.size
        if n_u < min_cols:  # pad the columns so the GEMM takes the main path
            union = np.concatenate([union, np.full(min_cols - n_u, union[0])])
        gq = g if g.size >= group_rows else np.concatenate([g, np.repeat(g[:1], group_rows - g.size)])
        local = np.repeat(np.arange(g.size), n_g)  # each pair's row within the group
        xu = np.asarray(database[union], dtype=dt)
        s = np.matmul(q[gq], xu.T)  # rows padded likewise
        if off is not None:
            np.subtract(s, off[union], out=s)
        out[sel] = s[local, inv]
        return int(s.size)

    chunks = [groups[c : c + 16] for c in range(0, len(groups), 16)]
    n_gemm = sum(workers.map(lambda ch: sum(one(g) for g in ch), chunks))
    return out, n_gemm
