"""Exact inner-product top-k search, blocked over both sides under a memory budget.

``exact_search(queries, database, k)`` returns ``(scores, ids)`` of shape
``(n_queries, k)``: float32 scores best first, int64 database row numbers, ties broken
by the smaller id, padded with ``-inf``/``-1`` when the database has fewer than ``k``
rows. An optional per-item ``offset`` is subtracted from every score
(``q . x_j - offset[j]``), which is how NNN and every additive correction is served.

The scores of a block come from one BLAS GEMM; the top-k selection streams those blocks
through :class:`~dehub.engine.topk.RunningTopK`, whose threshold filter touches each
score once with a vectorized comparison instead of sorting or partitioning every block.
Inputs may be float16/32/64 arrays or ``np.memmap``; only one block of each side is
converted at a time. float64 inputs are multiplied in float64, others in float32.

Sizes come from the machine (:mod:`dehub.engine.hardware`): the score tile is half the
last-level cache (2..16 MiB), the database block holds about 512 query rows per tile, and
the selection passes of a tile run in one thread per CPU (numpy releases the GIL in its
loops; each thread owns disjoint rows of the running top-k).

Small batches (at most :data:`SMALL_BATCH_ROWS` queries whose dense score matrix fits the
memory budget) take the dense path: one GEMM of all the queries against the whole
database, the offset subtracted, and :func:`~dehub.engine.topk.select_topk` (partition +
exact ordering of the top-k, ties -> smaller id). Its GEMM is bandwidth-bound (the
database is read once), so the blocked path's per-block work is pure overhead there.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Any

import numpy as np

from .._progress import progress_bar
from .._validation import compute_dtype
from ._rows import row_blocks
from .hardware import database_block_rows, score_tile_bytes, selection_workers
from .topk import RunningTopK, lane_lower_bound, select_topk

__all__ = ["exact_search", "BlockPlan", "plan_blocks", "DEFAULT_MEMORY_BUDGET", "SMALL_BATCH_ROWS"]

DEFAULT_MEMORY_BUDGET = 512 * 2**20  # bytes for score blocks, masks and top-k state
SMALL_BATCH_ROWS = 64  # up to this many queries the GEMM is bound by reading the database
_MIN_PART_ROWS = 8  # rows of a tile below which its selection is not split across threads


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
        raise ValueError(f"memory_budget must be a positive number of bytes; received {memory_budget}")
    cap = max(2 * k, 64)
    db = database_block or min(n_database, max(database_block_rows(), k))
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
            raise ValueError(
                f"memory_budget={memory_budget} bytes is too small for one query row against a "
                f"database block of {db} rows (needs about {fixed + per_query_row} bytes); "
                "raise memory_budget or pass a smaller database_block"
            )
        qb = int(min(qb, n_queries))
    else:
        qb = int(min(query_block, n_queries))
    if qb < 1 or db < 1:
        raise ValueError(f"block sizes must be >= 1; received query_block={qb}, database_block={db}")
    return BlockPlan(qb, db, fixed + qb * per_query_row)


_FLOOR_CHUNKS = 512  # lanes whose maxima estimate the floor (see lane_lower_bound)


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
        raise ValueError(
            "queries and database must be 2-D with the same dimension; received shapes "
            f"{queries.shape} and {database.shape}"
        )
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise ValueError(f"k must be a positive integer; received {k!r}")
    k = int(k)
    nq, d = queries.shape
    nd = database.shape[0]
    if offset is not None:
        offset = np.asarray(offset)
        if offset.shape != (nd,):
            raise ValueError(
                f"offset must have one value per database row, shape ({nd},); received {offset.shape}"
            )
    dt = compute_dtype(queries, database)
    out_v = np.full((nq, k), -np.inf, dtype=np.float32)
    out_i = np.full((nq, k), -1, dtype=np.int64)
    if nq == 0 or nd == 0:
        return out_v, out_i
    kk = min(k, nd)
    off = None if offset is None else offset.astype(dt, copy=False)
    if precision != "fp32" or device != "cpu":
        from .accel import check_precision
        from .lowp import search_with_precision

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
        )
        if low is not None:
            return low
    workers = selection_workers()
    if query_block is None and database_block is None and _dense_fits(nq, database, dt, memory_budget):
        with ThreadPoolExecutor(workers) if workers > 1 and nq > 1 else nullcontext() as pool:
            v, i = _dense_search(queries, database, kk, off, dt, pool, workers)
        out_v[:, :kk], out_i[:, :kk] = v, i
        return out_v, out_i
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
    tile_bytes = max(score_tile_bytes(), plan.database_block * dt.itemsize)
    buf = np.empty(min(plan.query_block * plan.database_block, tile_bytes // dt.itemsize), dtype=dt)
    part_elems = -(-buf.size // workers) + plan.database_block * workers
    masks = [np.empty(part_elems, dtype=bool) for _ in range(workers)] if workers > 1 else [None]
    n_qb = -(-nq // plan.query_block)
    floor_j = _floor_rank(kk, plan.database_block, nd) if _floor else None
    db_blocks = list(row_blocks(nd, plan.database_block))
    n_db = len(db_blocks)
    label = progress if isinstance(progress, str) else "search"
    with (
        progress_bar(total=n_qb * n_db, desc=label, enable=bool(progress), unit="block") as bar,
        ThreadPoolExecutor(workers) if workers > 1 else nullcontext() as pool,
    ):
        for qs in row_blocks(nq, plan.query_block):
            qb = np.asarray(queries[qs], dtype=dt)
            top = RunningTopK(qb.shape[0], kk, score_dtype=dt, floor=floor_j is not None)
            for ds in db_blocks:
                xb = np.asarray(database[ds], dtype=dt)
                off_b = None if off is None else off[ds]
                first = floor_j if ds.start == 0 else None
                # Score the block tile by tile so each tile stays in cache for the
                # selection passes that follow its GEMM.
                tile = max(1, min(qb.shape[0], tile_bytes // (xb.shape[0] * dt.itemsize)))
                for r0 in range(0, qb.shape[0], tile):
                    q = qb[r0 : r0 + tile]
                    s = buf[: q.shape[0] * xb.shape[0]].reshape(q.shape[0], xb.shape[0])
                    np.matmul(q, xb.T, out=s)
                    parts = _row_parts(s.shape[0], workers if pool is not None else 1)
                    if pool is None or len(parts) == 1:
                        _select_part(top, s, off_b, first, ds.start, r0, None)
                    else:
                        jobs = [
                            pool.submit(_select_part, top, s[a:b], off_b, first, ds.start, r0 + a, masks[w])
                            for w, (a, b) in enumerate(parts)
                        ]
                        for job in jobs:
                            job.result()
                bar.update(1)
            failed = np.flatnonzero(top.floor_failed())
            v, i = top.result()
            if failed.size:  # the floor bet lost for these rows: redo them without it
                v[failed], i[failed] = exact_search(
                    qb[failed],
                    database,
                    kk,
                    offset=offset,
                    memory_budget=memory_budget,
                    database_block=plan.database_block,
                    _floor=False,
                )
            out_v[qs, :kk] = v
            out_i[qs, :kk] = i
    return out_v, out_i


def _row_parts(n_rows: int, workers: int) -> list[tuple[int, int]]:
    """Split ``n_rows`` tile rows into at most ``workers`` contiguous parts."""
    n_parts = max(1, min(workers, n_rows // _MIN_PART_ROWS))
    step = -(-n_rows // n_parts)
    return [(a, min(a + step, n_rows)) for a in range(0, n_rows, step)]


def _select_part(
    top: RunningTopK,
    s: np.ndarray,
    off: np.ndarray | None,
    floor_j: int | None,
    id_offset: int,
    row_offset: int,
    mask: np.ndarray | None,
) -> None:
    """The selection passes of some rows of a score tile (may run in a worker thread)."""
    if off is not None:
        np.subtract(s, off, out=s)
    if floor_j is not None:
        top.set_floor(lane_lower_bound(s, floor_j, _FLOOR_CHUNKS), row_offset)
    top.push(s, id_offset, row_offset, mask=mask)


def _dense_fits(n_queries: int, database: Any, dt: np.dtype, memory_budget: int) -> bool:
    """Small batch whose dense score matrix (scores, the partition's copy, its mask) and
    any converted copy of the database fit the memory budget."""
    if n_queries > SMALL_BATCH_ROWS:
        return False
    nd, d = database.shape
    need = n_queries * nd * (2 * dt.itemsize + 1)
    if not (isinstance(database, np.ndarray) and database.dtype == dt):
        need += nd * d * dt.itemsize
    return need <= memory_budget


def _dense_search(
    queries: Any, database: Any, k: int, off: np.ndarray | None, dt: np.dtype, pool: Any, workers: int
) -> tuple[np.ndarray, np.ndarray]:
    """One GEMM of all the queries against the whole database, then the top-k per row."""
    q = np.asarray(queries[:], dtype=dt)
    x = np.asarray(database[:], dtype=dt)
    s = q @ x.T
    n_parts = min(workers, s.shape[0]) if pool is not None else 1
    step = -(-s.shape[0] // n_parts)
    parts = [(a, min(a + step, s.shape[0])) for a in range(0, s.shape[0], step)]

    def select(a: int, b: int) -> tuple[np.ndarray, np.ndarray]:
        part = s[a:b]
        if off is not None:
            np.subtract(part, off, out=part)
        return select_topk(part, k)

    if pool is None or len(parts) == 1:
        v, i = select(0, s.shape[0])
    else:
        done = list(pool.map(lambda ab: select(*ab), parts))
        v = np.concatenate([r[0] for r in done])
        i = np.concatenate([r[1] for r in done])
    return v.astype(np.float32, copy=False), i
