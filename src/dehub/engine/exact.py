"""Exact inner-product top-k search, blocked over both sides under a memory budget.

``exact_search(queries, database, k)`` returns ``(scores, ids)`` of shape
``(n_queries, k)``: float32 scores best first, int64 database row numbers, ties broken
by the smaller id, padded with ``-inf``/``-1`` when the database has fewer than ``k``
rows. An optional per-item ``offset`` is subtracted from every score
(``q . x_j - offset[j]``), which is how NNN and every additive correction is served.

The scores of a block come from one BLAS GEMM; the top-k selection streams those blocks
through :class:`~dehub.engine.topk.KernelTopK` (the compiled running top-k, one pass per
tile with the offset subtracted inside, where the optional C extension is built) or else
:class:`~dehub.engine.topk.RunningTopK`, whose threshold filter touches each score once
with a vectorized comparison; both give the same bits, and neither sorts or partitions
every block.
Inputs may be float16/32/64 arrays or ``np.memmap``; only one block of each side is
converted at a time. float64 inputs are multiplied in float64, others in float32.

Work is shared by one worker thread per CPU (:mod:`dehub.engine.hardware`), each with a
single-threaded BLAS (:mod:`dehub.engine._blas`): enough queries are cut into contiguous
query ranges, few queries against a large database into database ranges whose results
are merged. Each worker runs its own GEMMs and the selection of its own score tiles while
they are in cache, so the cores never wait for one another between a GEMM and its
selection (numpy and the kernel release the GIL). The score tile is four times the core's L2, at most
the last-level cache over twice the workers (2..16 MiB; four times that with the compiled
selection, which reads a tile once), the database block is sized so that a tile holds a
worker's query rows (up to 4096), many queries are cut into up to 4 parts per worker taken
in turn, and the floor's first block is wider (8192 columns). Every GEMM call has at least two rows
and the last database block at least 256 columns (:func:`scored_by_gemv`), so a score's
bits do not depend on how the work was cut.

Small batches (at most :data:`SMALL_BATCH_ROWS` queries whose dense score matrix fits the
memory budget) take the dense path: one GEMM of all the queries against the whole
database, the offset subtracted, and :func:`~dehub.engine.topk.select_topk` (partition +
exact ordering of the top-k, ties -> smaller id). Its GEMM is bandwidth-bound (the
database is read once), so the blocked path's per-block work is pure overhead there.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Any

import numpy as np

from .._errors import InputError
from .._progress import progress_bar
from .._validation import compute_dtype
from ._blas import blas_controllable, blas_limited_now
from ._rows import even_blocks, row_blocks, row_length_buffers, scored_by_gemv
from ._workers import parallel_scope
from .accel import check_precision
from .hardware import database_block_rows, score_tile_bytes, search_block_rows, selection_workers
from .lowp import search_with_precision
from .topk import KernelTopK, RunningTopK, kernel_isa, lane_lower_bound, merge_topk, select_topk

__all__ = [
    "exact_search",
    "BlockPlan",
    "plan_blocks",
    "DEFAULT_MEMORY_BUDGET",
    "SMALL_BATCH_ROWS",
    "scored_by_gemv",
]

DEFAULT_MEMORY_BUDGET = 512 * 2**20  # bytes for score blocks, masks and top-k state
SMALL_BATCH_ROWS = 64  # up to this many queries the GEMM is bound by reading the database


@dataclass(frozen=True)
class BlockPlan:
    """How a search is cut into blocks: rows of queries x rows of database at a time."""

    query_block: int
    database_block: int
    peak_bytes: int  # estimated working memory of the blocks (excluding the inputs)


def plan_blocks(
    n_queries: int,
    n_database: int,
    dim: int,
    k: int,
    *,
    memory_budget: int = DEFAULT_MEMORY_BUDGET,
    itemsize: int = 4,
    query_block: int | None = None,
    database_block: int | None = None,
) -> BlockPlan:
    """Choose block sizes so that the working memory stays within ``memory_budget`` bytes.

    Working memory per block: the score block (``itemsize`` bytes per pair), its boolean
    mask (1 byte), converted copies of the two input blocks, and the running top-k state
    (k kept + 2k buffered entries of score and int64 id per query row).
    """
    if memory_budget <= 0:
        raise InputError(f"memory_budget must be a positive number of bytes; received {memory_budget}")
    cap = max(2 * k, 64)
    db = database_block or min(n_database, max(search_block_rows(n_queries), k))
    if database_block is None and n_database * itemsize * _ONE_BLOCK_TILE_ROWS <= score_tile_bytes():
        db = n_database  # the whole database in one block: one selection per tile, no merges
    db = max(1, min(db, n_database))
    topk_row = dim * itemsize + (k + cap) * (itemsize + 8)
    if database_block is None and query_block is None:
        # shrink the database block until one query row fits the budget
        fit = (memory_budget - topk_row) // (dim * itemsize + itemsize + 1)
        if fit >= 1:
            db = int(min(db, fit))
    per_query_row = db * (itemsize + 1) + topk_row
    fixed = db * dim * itemsize
    if query_block is None:
        qb = (memory_budget - fixed) // per_query_row
        if qb < 1:
            raise InputError(
                f"memory_budget={memory_budget} bytes is too small for one query row against a "
                f"database block of {db} rows (needs about {fixed + per_query_row} bytes); "
                "raise memory_budget or pass a smaller database_block"
            )
        qb = int(min(qb, n_queries))
    else:
        qb = int(min(query_block, n_queries))
    if qb < 1 or db < 1:
        raise InputError(f"block sizes must be >= 1; received query_block={qb}, database_block={db}")
    return BlockPlan(qb, db, fixed + qb * per_query_row)


_FLOOR_CHUNKS = 512  # lanes whose maxima estimate the floor (see lane_lower_bound)
_FLOOR_FIRST_COLS = 8192  # columns of the first block, whose lane maxima set the floor


def _floor_rank(k: int, n_first: int, n_total: int) -> int | None:
    """The rank ``j`` to bet on as a floor after a first block of ``n_first`` columns.

    Among ``n_first`` of ``n_total`` columns in random order, about
    ``e = k * n_first / n_total`` lie in a row's final top-k. Betting on the
    ``j = e + 4 sqrt(e) + 4``-th best score of the first block, a row loses (ends with
    fewer than k entries above the floor) with probability far below 1e-3 when the order
    is random; lost rows are recomputed without a floor, so results are exact for any
    order. With the floor, about ``j * n_total / n_first`` candidates per row reach the
    top-k machinery instead of ``k * (1 + ln(n_total / k))`` or more. None: not worth it.
    """
    if n_total < 4 * n_first or n_first % _FLOOR_CHUNKS:
        return None
    e = k * n_first / n_total
    j = int(np.ceil(e + 4.0 * np.sqrt(e) + 4.0))
    return j if j < min(k, _FLOOR_CHUNKS) else None


def exact_search(
    queries: np.ndarray,
    database: np.ndarray,
    k: int,
    *,
    offset: np.ndarray | None = None,
    memory_budget: int = DEFAULT_MEMORY_BUDGET,
    query_block: int | None = None,
    database_block: int | None = None,
    progress: bool | str = False,
    precision: str = "fp32",
    device: str = "cpu",
    _floor: bool = True,
) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-k of ``queries @ database.T - offset`` per query row.

    Parameters
    ----------
    queries : (n_queries, d) float array or memmap
    database : (n_database, d) float array or memmap
    k : int
        Number of results per query; if ``k > n_database`` the tail is padded with
        ``-inf`` scores and ``-1`` ids.
    offset : (n_database,) array, optional
        Subtracted from every score of the matching database row (NNN's bias).
    memory_budget : int
        Bytes of working memory for score blocks and top-k state (the inputs themselves
        are not counted). Defaults to 512 MiB.
    query_block, database_block : int, optional
        Force block sizes (mostly for tests); by default derived from the budget.
    progress : bool or str
        Show a progress bar (a string is used as its label).
    precision : {"fp32", "bf16", "auto"}
        ``"bf16"``: a bf16 candidate pass and an exact re-score of the candidates, the same
        result (:mod:`dehub.engine.lowp`, ``docs/precision.md``); needs torch, else fp32.
    device : str
        torch device of the bf16 pass (``"cpu"``, ``"cuda"``); the re-score runs here.

    The inputs are not validated here (the public estimators do that); shapes are.
    """
    if queries.ndim != 2 or database.ndim != 2 or queries.shape[1] != database.shape[1]:
        raise InputError(
            "queries and database must be 2-D with the same dimension; received shapes "
            f"{queries.shape} and {database.shape}"
        )
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise InputError(f"k must be a positive integer; received {k!r}")
    k = int(k)
    nq, d = queries.shape
    nd = database.shape[0]
    if offset is not None:
        offset = np.asarray(offset)
        if offset.shape != (nd,):
            raise InputError(
                f"offset must have one value per database row, shape ({nd},); received {offset.shape}"
            )
    if memory_budget <= 0:
        raise InputError(f"memory_budget must be a positive number of bytes; received {memory_budget}")
    dt = compute_dtype(queries, database)
    out_v = np.full((nq, k), -np.inf, dtype=np.float32)
    out_i = np.full((nq, k), -1, dtype=np.int64)
    if nq == 0 or nd == 0:
        return out_v, out_i
    kk = min(k, nd)
    off = None if offset is None else offset.astype(dt, copy=False)
    if precision != "fp32" or device != "cpu":

        def fp32_rows(rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            # at least _MIN_GEMM_ROWS rows (unless the search has one): the GEMMs round as
            # in every other tile
            pad = 0 if nq == 1 else max(0, _MIN_GEMM_ROWS - rows.size)
            redo = np.concatenate([rows, np.repeat(rows[:1], pad)])
            v, i = exact_search(
                np.asarray(queries[redo]),
                database,
                k,
                offset=offset,
                memory_budget=memory_budget,
                query_block=query_block,
                database_block=database_block,
            )
            return v[: rows.size], i[: rows.size]

        low = search_with_precision(
            queries,
            database,
            k,
            offset=offset,
            precision=check_precision(precision),
            device=device,
            memory_budget=memory_budget,
            query_block=query_block,
            database_block=database_block,
            progress=progress,
            dense=query_block is None
            and database_block is None
            and _dense_fits(nq, database, dt, memory_budget),
            fallback=fp32_rows,
            fp32_engine=lambda q, x, kq, off_q: exact_search(
                q, x, kq, offset=off_q, memory_budget=memory_budget
            ),
        )
        if low is not None:
            return low
    workers = selection_workers()
    if query_block is None and database_block is None and _dense_fits(nq, database, dt, memory_budget):
        with ThreadPoolExecutor(workers) if workers > 1 and nq > 1 else nullcontext() as dense_pool:
            v, i = _dense_search(queries, database, kk, off, dt, dense_pool, workers)
        out_v[:, :kk], out_i[:, :kk] = v, i
        return out_v, out_i
    # several workers when BLAS can be made single-threaded for them and no other search
    # of this process holds the cores with its own workers already
    n_workers = workers if blas_controllable() and not blas_limited_now() else 1
    parts = _split(nq, nd, n_workers, database_block or database_block_rows())
    plan = _plan_parts(parts, n_workers, d, kk, memory_budget, dt, query_block, database_block)
    if plan is None:  # the budget does not fit a worker each: one worker, whole budget
        parts = _split(nq, nd, 1, 1)
        plan = plan_blocks(
            nq,
            nd,
            d,
            kk,
            memory_budget=memory_budget,
            itemsize=dt.itemsize,
            query_block=query_block,
            database_block=database_block,
        )
    by_database = parts[0][0] == "database"
    job = _Blocked(queries, database, kk, off, dt, plan, _floor)
    label = progress if isinstance(progress, str) else "search"
    total = sum(job.n_steps(rows, cols) for _, rows, cols in parts)
    # one worker keeps BLAS's own threads; several get one BLAS thread each
    with (
        progress_bar(total=total, desc=label, enable=bool(progress), unit="block") as bar,
        parallel_scope(min(len(parts), n_workers)) as pool,
    ):
        job.bar = bar
        results = pool.map(lambda p: job.run(p[1], p[2]), parts)
    if by_database:
        v, i = merge_topk(results, kk) if len(results) > 1 else results[0]
        out_v[:, :kk], out_i[:, :kk] = v, i
    else:
        for (_, rows, _), (v, i) in zip(parts, results, strict=True):
            out_v[rows, :kk], out_i[rows, :kk] = v, i
    return out_v, out_i


def _plan_parts(
    parts: list[tuple[str, slice, slice]],
    n_workers: int,
    d: int,
    k: int,
    memory_budget: int,
    dt: np.dtype,
    query_block: int | None,
    database_block: int | None,
) -> BlockPlan | None:
    """The blocks of each part, each running part with its share of the budget (None:
    too small)."""
    try:
        return plan_blocks(
            parts[0][1].stop - parts[0][1].start,
            parts[0][2].stop - parts[0][2].start,
            d,
            k,
            memory_budget=memory_budget // max(1, min(len(parts), n_workers)),
            itemsize=dt.itemsize,
            query_block=query_block,
            database_block=database_block,
        )
    except ValueError:
        if len(parts) == 1:
            raise
        return None


_MIN_TILE_ROWS = 512  # single-threaded GEMM: ~138 GFLOP/s at 512 rows, ~128 at 256 (Xeon)
# The compiled selection reads a tile once, so its tiles may outgrow L2: 4x the score tile
# (25,000 x 5,000 x 512 search, Xeon: 1,536-1,677-row tiles 1.02-1.06x the bare GEMM
# against 1.15-1.19x with 512-row tiles)
_COMPILED_TILE_FACTOR = 4
_ONE_BLOCK_TILE_ROWS = 256  # a database whose tile still holds this many rows is one block
_MIN_SPLIT_ROWS = 128  # query rows per worker below which the database is split instead
_BALANCE_ROWS = 3072  # query rows per part, at least, when there are more parts than workers
_PARTS_PER_WORKER = 4  # at most


def _split(nq: int, nd: int, workers: int, block: int) -> list[tuple[str, slice, slice]]:
    """How the workers share a search: ``(kind, query rows, database rows)`` per part.

    Enough queries: contiguous query ranges against the whole database (each worker streams
    the database once and its GEMMs stay efficient); with many queries, up to
    ``_PARTS_PER_WORKER`` ranges per worker of at least ``_BALANCE_ROWS`` rows, which the
    workers take in turn, so a core that runs slower does less of the work (on the shared
    Xeon VM one worker of two finished a 25,000 x 5,000 search 0.11-0.14 s, 20%, before
    the other). Few queries against a large database: contiguous database ranges, each
    against every query, merged at the end (the database is still read once in all).
    Otherwise one worker.
    """
    everything = [("queries", slice(0, nq), slice(0, nd))]
    if workers <= 1:
        return everything
    if nq >= workers * _MIN_SPLIT_ROWS:
        n_parts = workers * max(1, min(_PARTS_PER_WORKER, nq // (workers * _BALANCE_ROWS)))
        return [("queries", rows, slice(0, nd)) for rows in row_blocks(nq, -(-nq // n_parts))]
    if nd >= workers * block:
        return [("database", slice(0, nq), cols) for cols in row_blocks(nd, -(-nd // workers))]
    return everything


class _Blocked:
    """The blocked search of one worker: some query rows against some database rows.

    Per query block a :class:`RunningTopK`; per database block the GEMM is cut into score
    tiles of the worker's cache share, and each tile goes through the selection passes
    (offset, floor, threshold filter) while it is still in cache. Workers share nothing but
    the inputs (read-only) and the progress bar.
    """

    def __init__(
        self,
        queries: Any,
        database: Any,
        k: int,
        off: np.ndarray | None,
        dt: np.dtype,
        plan: BlockPlan,
        floor: bool,
    ) -> None:
        self.queries, self.database, self.k, self.off, self.dt = queries, database, k, off, dt
        self.plan, self.floor = plan, floor
        # the compiled selection when built: each tile is selected in one C pass, the
        # offset subtracted inside it (else numpy: offset pass, floor, threshold filter)
        self.kernel = kernel_isa() is not None
        tile = score_tile_bytes() * (_COMPILED_TILE_FACTOR if self.kernel else 1)
        self.tile_bytes = max(tile, plan.database_block * dt.itemsize)
        self.bar: Any = None
        self._bar_lock = threading.Lock()

    def _tile_rows(self, n_rows: int, n_cols: int) -> int:
        """Query rows per score tile against a block of ``n_cols`` columns: the tile's bytes,
        but at least ``_MIN_TILE_ROWS`` rows (the GEMM slows below; the floor's wide first
        block would otherwise get narrow tiles)."""
        fit = self.tile_bytes // (n_cols * self.dt.itemsize)
        return max(1, min(n_rows, max(fit, _MIN_TILE_ROWS)))

    def _blocks(self, cols: slice, k: int) -> tuple[list[slice], int | None]:
        """The database blocks of ``cols`` and the floor's rank (None: no floor). The
        floor's first block is wider than the others (a tighter bet, fewer candidates)
        when the database is large enough for it, else the first ordinary block."""
        n_d = cols.stop - cols.start
        for first in (max(self.plan.database_block, _FLOOR_FIRST_COLS), self.plan.database_block):
            floor_j = _floor_rank(k, first, n_d) if self.floor else None
            if floor_j is not None:
                return _database_blocks(cols, self.plan.database_block, first), floor_j
        return _database_blocks(cols, self.plan.database_block), None

    def n_steps(self, rows: slice, cols: slice) -> int:
        """Progress steps of :meth:`run`: query blocks x database blocks."""
        n_q = rows.stop - rows.start
        blocks, _ = self._blocks(cols, min(self.k, cols.stop - cols.start))
        return len(list(even_blocks(n_q, self.plan.query_block))) * len(blocks)

    def run(self, rows: slice, cols: slice) -> tuple[np.ndarray, np.ndarray]:
        """Top-k of query rows ``rows`` over database rows ``cols`` (ids are absolute),
        scores in the compute dtype."""
        dt, plan = self.dt, self.plan
        k = min(self.k, cols.stop - cols.start)
        db_blocks, floor_j = self._blocks(cols, k)
        widest = max(b.stop - b.start for b in db_blocks)
        buf = np.empty(min(plan.query_block, self._tile_rows(plan.query_block, widest)) * widest, dtype=dt)
        mask = np.empty(0 if self.kernel else buf.size, dtype=bool)  # numpy's compare only
        out_v = np.empty((rows.stop - rows.start, k), dtype=dt)
        out_i = np.empty(out_v.shape, dtype=np.int64)
        with row_length_buffers():
            for qs in even_blocks(rows.stop - rows.start, plan.query_block):
                qb = np.asarray(self.queries[rows.start + qs.start : rows.start + qs.stop], dtype=dt)
                out_v[qs], out_i[qs] = self._query_block(qb, k, db_blocks, buf, mask, floor_j)
        return out_v, out_i

    def _one_block(self, qb: np.ndarray, k: int, ds: slice, buf: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Numpy selection, a database that is one block: each tile's top-k at once
        (:func:`~dehub.engine.topk.select_topk`), no running state to merge."""
        out_v = np.empty((qb.shape[0], k), dtype=self.dt)
        out_i = np.empty((qb.shape[0], k), dtype=np.int64)
        for ts, s in self._tiles(qb, ds, buf):
            out_v[ts], out_i[ts] = select_topk(s, k)
        if ds.start:
            out_i += ds.start
        return out_v, out_i

    def _compiled_pass(
        self, qb: np.ndarray, k: int, db_blocks: list[slice], buf: np.ndarray, floor_j: int | None
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The compiled selection (:class:`~dehub.engine.topk.KernelTopK`): each tile's raw
        scores and the block's offset go through one C pass while the tile is in cache.
        Returns ``(scores, ids, rows whose floor bet lost)``."""
        top = KernelTopK(qb.shape[0], k, self.dt)
        for ds in db_blocks:
            off_b = None if self.off is None else np.ascontiguousarray(self.off[ds])
            for ts, s in self._tiles(qb, ds, buf, subtract=False):
                top.push(s, ds.start, ts.start, offset=off_b, floor_rank=floor_j)
        v, i = top.result()
        return v, i, np.flatnonzero(top.floor_failed())

    def _numpy_pass(
        self,
        qb: np.ndarray,
        k: int,
        db_blocks: list[slice],
        buf: np.ndarray,
        mask: np.ndarray,
        floor_j: int | None,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Numpy's selection (:class:`~dehub.engine.topk.RunningTopK`: offset pass, floor
        from the first block's lane maxima, threshold filter). Returns ``(scores, ids, rows
        whose floor bet lost)``."""
        top = RunningTopK(qb.shape[0], k, score_dtype=self.dt, floor=floor_j is not None)
        for ds in db_blocks:
            first = floor_j if ds is db_blocks[0] else None
            for ts, s in self._tiles(qb, ds, buf):
                if first is not None:
                    top.set_floor(lane_lower_bound(s, first, _FLOOR_CHUNKS), ts.start)
                top.push(s, ds.start, ts.start, mask=mask)
        failed = np.flatnonzero(top.floor_failed())
        v, i = top.result()
        return v, i, failed

    def _tiles(
        self, qb: np.ndarray, ds: slice, buf: np.ndarray, *, subtract: bool = True
    ) -> Iterator[tuple[slice, np.ndarray]]:
        """``(rows of qb, corrected scores)`` of each score tile of ``qb`` against database
        block ``ds``: one GEMM into ``buf``, the offset subtracted (unless ``subtract`` is
        false: raw scores), while the tile is in cache for the selection that follows; one
        progress step per block."""
        xb = np.asarray(self.database[ds], dtype=self.dt)
        off_b = None if self.off is None or not subtract else self.off[ds]
        for ts in even_blocks(qb.shape[0], self._tile_rows(qb.shape[0], xb.shape[0])):
            q = qb[ts]
            s = buf[: q.shape[0] * xb.shape[0]].reshape(q.shape[0], xb.shape[0])
            np.matmul(q, xb.T, out=s)
            if off_b is not None:
                np.subtract(s, off_b, out=s)
            yield ts, s
        if self.bar is not None:
            with self._bar_lock:
                self.bar.update(1)

    def _query_block(
        self,
        qb: np.ndarray,
        k: int,
        db_blocks: list[slice],
        buf: np.ndarray,
        mask: np.ndarray,
        floor_j: int | None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Top-k of a query block with either selection (the same results); rows whose
        floor bet (``floor_j``, :func:`_floor_rank`) lost are redone without it."""
        if self.kernel:
            v, i, failed = self._compiled_pass(qb, k, db_blocks, buf, floor_j)
        elif len(db_blocks) == 1 and floor_j is None:
            return self._one_block(qb, k, db_blocks[0], buf)
        else:
            v, i, failed = self._numpy_pass(qb, k, db_blocks, buf, mask, floor_j)
        if failed.size:
            # (with at least _MIN_GEMM_ROWS rows, so the GEMMs round as in every other tile)
            redo = np.concatenate([failed, np.repeat(failed[:1], max(0, _MIN_GEMM_ROWS - failed.size))])
            rv, ri = self._query_block(qb[redo], k, db_blocks, buf, mask, None)
            v[failed], i[failed] = rv[: failed.size], ri[: failed.size]
        return v, i


# OpenBLAS takes a small-matrix kernel (different rounding) when rows x columns of a GEMM
# is about 1,200 or less: 8 rows x 256 columns stays on its main path.
_MIN_GEMM_ROWS = 8  # rows of a floor re-run, at least
_MIN_LAST_BLOCK = 256  # a shorter last database block joins the one before it


def _database_blocks(cols: slice, block: int, first: int | None = None) -> list[slice]:
    """Database rows ``cols`` in blocks of ``block`` rows after a first block of ``first``
    rows (the floor's sample; default ``block``), the last one at least
    ``_MIN_LAST_BLOCK`` rows unless it is the only one."""
    first = block if first is None else first
    a, stop = cols.start, cols.stop
    blocks = [slice(a, min(a + first, stop))]
    blocks += [slice(b, min(b + block, stop)) for b in range(blocks[0].stop, stop, block)]
    if len(blocks) > 1 and blocks[-1].stop - blocks[-1].start < _MIN_LAST_BLOCK:
        blocks[-2:] = [slice(blocks[-2].start, blocks[-1].stop)]
    return blocks


def _dense_fits(n_queries: int, database: Any, dt: np.dtype, memory_budget: int) -> bool:
    """Small batch whose dense score matrix (scores, the partition's copy, its mask) fits
    the memory budget, over a database read as it is: a database that needs converting
    (float16, a memmap or shards) goes block by block, each block converted alone, never
    copied whole on every search (issue 21: 51 MB per 16-query search at 100k x 128 fp16)."""
    if n_queries > SMALL_BATCH_ROWS or not (isinstance(database, np.ndarray) and database.dtype == dt):
        return False
    nd = database.shape[0]
    return n_queries * nd * (2 * dt.itemsize + 1) <= memory_budget


def _dense_search(
    queries: Any, database: Any, k: int, off: np.ndarray | None, dt: np.dtype, pool: Any, workers: int
) -> tuple[np.ndarray, np.ndarray]:
    """One GEMM of all the queries against the whole database, then the top-k per row."""
    q = np.asarray(queries[:], dtype=dt)
    x = np.asarray(database[:], dtype=dt)
    s = q @ x.T
    n_parts = min(workers, s.shape[0]) if pool is not None else 1
    parts = list(row_blocks(s.shape[0], -(-s.shape[0] // n_parts)))

    def select(rows: slice) -> tuple[np.ndarray, np.ndarray]:
        part = s[rows]
        if off is not None:
            np.subtract(part, off, out=part)
        return select_topk(part, k)

    if pool is None or len(parts) == 1:
        v, i = select(slice(0, s.shape[0]))
    else:
        done = list(pool.map(select, parts))
        v = np.concatenate([r[0] for r in done])
        i = np.concatenate([r[1] for r in done])
    return v.astype(np.float32, copy=False), i
