"""The bf16 pass of :func:`~dehub.engine.lowp.bf16_search`: which pairs need an exact score.

Per block of query rows, bf16 scores ``t_b = fl(bf16(q) . bf16(x)) - o`` against every
database block (torch GEMM into a reused bf16 tile), then the candidates (the bounds are
those of :mod:`~dehub.engine.lowp_bound`, the rules docs/precision.md's Corollaries 2, 2'):

- CPU, compiled kernel built (:meth:`Scan.kernel_pass`): the kernel reads each bf16 tile
  once, subtracts the offset in float32 and keeps each row's ``w`` best
  (:class:`~dehub.engine.topk.KernelTopK`); the candidates are the kept entries with
  ``t_b + e_j >= tau_i`` (``e_j`` the entry's bound, ``tau_i`` the k-th largest
  ``t_b - e_j``), taken when the kept ones provably hold them all (else the row is searched
  again with ``4w``, then by the fp32 engine).
- Any device (:meth:`Scan.torch_pass`): torch ops (running lane maxima, the threshold
  ``L_i - 2 E_i`` with the row bound, ``nonzero``), the GPU's path.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from ._rows import even_blocks
from ._workers import Workers
from .accel import bf16_matmul
from .lowp_bound import bf16_bits, entry_bounds
from .topk import KernelTopK

__all__ = [
    "Plan",
    "plan_scan",
    "Scan",
    "query_blocks",
    "first_width",
    "next_width",
    "to_bf16",
    "LANES",
    "WIDTH_HISTORY",
]

LANES = 512
_MARGIN = 2.0**-40  # float64 evaluation of the per-entry thresholds (errors near 2^-52)


@dataclass(frozen=True)
class Plan:
    query_block: int
    database_block: int


_KERNEL_DB_BLOCK = 16384  # columns of one bf16 tile
_KERNEL_TILE_BYTES = 32 * 2**20  # a bf16 tile of 1,024 x 16,384 scores


def plan_scan(
    nq: int,
    nd: int,
    d: int,
    k: int,
    memory_budget: int,
    kernel: bool,
    query_block: int | None,
    database_block: int | None,
    gpu: bool = False,
) -> Plan:
    """Blocks of the bf16 pass. The compiled selection reads bf16 tiles of up to 32 MiB
    (1,024 x 16,384 scores) straight from the GEMM's output; the torch selection keeps
    the previous 2,048-row blocks."""
    lanes = max(LANES, 4 * k)
    if kernel:
        db = database_block or min(nd, _KERNEL_DB_BLOCK)
        qb = query_block or max(
            2, min(nq, _KERNEL_TILE_BYTES // (2 * max(db, 1)), (memory_budget // 3) // (6 * db))
        )
        return Plan(max(1, min(qb, nq)), max(1, db))
    if gpu:  # large tiles: one kernel launch per step does more work
        db = database_block or max(lanes, (min(nd, 65536) // lanes) * lanes or lanes)
        return Plan(max(1, min(query_block or 8192, nq)), db)
    db = database_block or max(lanes, (min(nd, 16384) // lanes) * lanes or lanes)
    qb = query_block or max(1, min(nq, (memory_budget // 3) // max(1, db * 8)))
    return Plan(max(1, min(qb, 2048)), db)


_PROBE_ROWS = 64
WIDTH_HISTORY = 8192  # rows whose candidate counts size the selection


def query_blocks(nq: int, block: int, kernel: bool) -> list[slice]:
    """Query blocks of the bf16 pass. With the compiled selection and enough queries, the
    first block is a probe of 64 rows: the candidates its rows need size the selection
    of the blocks after it (a row that needs more is searched again, a second GEMM pass)."""
    if not kernel or nq < 4 * _PROBE_ROWS:
        return list(even_blocks(nq, block))
    rest = [slice(_PROBE_ROWS + s.start, _PROBE_ROWS + s.stop) for s in even_blocks(nq - _PROBE_ROWS, block)]
    return [slice(0, _PROBE_ROWS), *rest]


def first_width(k: int) -> int:
    """Entries kept per row by the first query block's selection: 4k, at least k + 256;
    later blocks size it from what the rows before them needed."""
    return max(4 * k, k + 256)


def next_width(k: int, counts: np.ndarray) -> int:
    """Kept entries per row for the next query block: 1.25 x the 99th percentile of the
    candidates per row of the (last 8,192) rows so far, plus 16 (at least k + 16); a row
    that needs more is searched again on its own."""
    need = float(np.quantile(counts, 0.99))
    return int(max(k + 16, math.ceil(1.25 * need) + 16))


class Scan:
    """The bf16 pass of one search: a query block against every database block."""

    def __init__(
        self,
        torch: Any,
        dev: Any,
        database: Any,
        x_bf_all: Any,
        off32: np.ndarray | None,
        db_blocks: list[slice],
        workers: Workers,
        bar: Any,
        kept_bytes: int,
    ) -> None:
        self.torch, self.dev, self.database, self.x_bf_all = torch, dev, database, x_bf_all
        self.off32, self.db_blocks, self.workers, self.bar = off32, db_blocks, workers, bar
        self.off_t = None if off32 is None else torch.from_numpy(off32.copy()).to(dev)
        self.kept_bytes = kept_bytes
        self.best = np.zeros(0, np.int64)  # each row's best bf16 candidate (last kernel pass)

    def _x(self, ds: slice) -> Any:
        if self.x_bf_all is not None:
            return self.x_bf_all[ds]
        return to_bf16(self.torch, self.database[ds], self.dev)

    def kernel_pass(
        self, q_bf: Any, k: int, width: int, e_row: np.ndarray, e_rest: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Candidates through the compiled selection, which reads the bf16 tiles the GEMM
        wrote: the ``width`` best bf16 scores of each row (offset subtracted in float32
        inside the same pass, floor from the first tile), then the bound's filter on them:
        per entry, ``e_j = min(E_i, e_rest_i + u |s_b|)`` (Theorem 1'', ``e_row`` = ``E_i``),
        ``tau_i`` the k-th largest ``t_b - e_j`` of the kept entries, and the candidates the
        kept entries with ``t_b + e_j >= tau_i`` (Corollary 2').

        Returns ``(rows, cols, unresolved rows, candidates per resolved row)``: a row is
        resolved when every entry that the bound keeps is among its kept ones (fewer than
        ``width`` above the floor, or the ``width``-th plus ``E_i`` below ``tau_i``) and the
        floor plus ``E_i`` lies below ``tau_i``; the others are searched again with four times the width
        and a proven floor, and what still fails goes to the fp32 engine.
        """
        torch = self.torch
        m = q_bf.shape[0]
        nd = self.db_blocks[-1].stop
        lost = np.arange(m)
        self.best = np.zeros(m, np.int64)
        found_r: list[np.ndarray] = []
        found_c: list[np.ndarray] = []
        found_n: list[np.ndarray] = []
        bet = True
        while True:
            q_sub = q_bf if lost.size == m else q_bf[torch.from_numpy(lost)]
            r, c, lost, counts = self._kernel_rows(q_sub, lost, k, width, e_row[lost], e_rest[lost], bet)
            found_r.append(r)
            found_c.append(c)
            found_n.append(counts)
            width, bet = 4 * width, False
            # the state of a wider pass (12 bytes a kept entry, twice for the buffer)
            if not lost.size or width > 4 * nd or lost.size * width * 24 > self.kept_bytes:
                break
        return np.concatenate(found_r), np.concatenate(found_c), lost, np.concatenate(found_n)

    def _kernel_rows(
        self,
        q_bf: Any,
        row_ids: np.ndarray,
        k: int,
        width: int,
        e_row: np.ndarray,
        e_rest: np.ndarray,
        bet: bool,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        torch = self.torch
        m = q_bf.shape[0]
        nd = self.db_blocks[-1].stop
        width = min(width, nd)
        top = KernelTopK(m, width, np.float32)
        first = self.db_blocks[0].stop - self.db_blocks[0].start
        j = _bet_rank(width, first, nd) if bet else None
        tiles: dict[int, Any] = {}
        parts = list(even_blocks(m, -(-m // self.workers.n))) if m >= 2 * self.workers.n else [slice(0, m)]
        for ds in self.db_blocks:
            nb = ds.stop - ds.start
            if nb not in tiles:
                tiles[nb] = torch.empty((m, nb), dtype=torch.bfloat16, device=self.dev)
            t = tiles[nb]
            torch.mm(q_bf, self._x(ds).T, out=t)
            bits = t.view(torch.int16).numpy()
            off_b = None if self.off32 is None else self.off32[ds]

            def push(
                r: slice, bits: np.ndarray = bits, off_b: np.ndarray | None = off_b, start: int = ds.start
            ) -> None:
                top.push(bits[r], start, r.start, offset=off_b, floor_rank=j)

            self.workers.map(push, parts)
            if self.bar is not None and bet:
                self.bar.update(1)
        self.workers.map(top.finish, parts)  # the rows' merges and sorts, on the workers
        v, i = top.result(finished=True)
        valid = i >= 0
        n_kept = valid.sum(axis=1)
        off = None if self.off32 is None else self.off32[np.where(valid, i, 0)]
        e = entry_bounds(e_rest, e_row, v, off)
        v64 = v.astype(np.float64)
        lo = np.where(valid, v64 - e, -np.inf)
        kq = min(k, width)
        tau = -np.partition(-lo, kq - 1, axis=1)[:, kq - 1]  # the k-th largest lower bound
        tau -= _MARGIN * (np.abs(tau) + 1.0)  # its float64 evaluation never moves it up
        flo = top.flo.astype(np.float64)
        ok = (n_kept >= k) & ((flo + e_row < tau) | ~np.isfinite(flo))
        ok &= (n_kept < width) | (v64[:, width - 1] + e_row < tau) | (n_kept == nd)
        keep = valid & (v64 + e >= tau[:, None]) & ok[:, None]
        r, c = np.nonzero(keep)
        counts = keep.sum(axis=1)[ok]
        self.best[row_ids] = i[:, 0]
        return row_ids[r], i[r, c], row_ids[~ok], counts

    def torch_pass(
        self, q_bf: Any, kk: int, two_e64: np.ndarray, kept_cap: int
    ) -> tuple[np.ndarray, np.ndarray] | None:
        """Candidates through torch ops (any device): running lane maxima of each row, every
        entry within ``2 E_i`` of the k-th largest lane maximum kept, the final filter with
        the final maxima. None: more kept entries than ``kept_cap``."""
        torch, dev = self.torch, self.dev
        m = q_bf.shape[0]
        lanes = max(LANES, 4 * kk)
        two_e = torch.from_numpy(two_e64).to(dev)
        lane_max = torch.full((m, lanes), -math.inf, dtype=torch.float32, device=dev)
        kept: list[tuple[Any, Any, Any]] = []
        n_kept = 0
        for ds in self.db_blocks:
            t = bf16_matmul(torch, q_bf, self._x(ds))  # bf16 scores
            if self.off_t is not None:  # fp32 only where an offset is subtracted
                t = t.float()
                t -= self.off_t[ds]
            _update_lanes(torch, lane_max, t, lanes)
            thr = _threshold(torch, lane_max, kk, two_e)
            rows, cols = torch.nonzero(t >= thr[:, None], as_tuple=True)
            kept.append((rows, cols + ds.start, t[rows, cols].float()))
            n_kept += int(rows.numel())
            if n_kept > kept_cap:  # scores too close for the bound to prune
                return None
            if self.bar is not None:
                self.bar.update(1)
        thr = _threshold(torch, lane_max, kk, two_e)
        rows = torch.cat([r for r, _, _ in kept])
        cols = torch.cat([c for _, c, _ in kept])
        vals = torch.cat([v for _, _, v in kept])
        final = vals >= thr[rows]
        return rows[final].cpu().numpy().astype(np.int64), cols[final].cpu().numpy().astype(np.int64)


def _bet_rank(width: int, first: int, nd: int) -> int | None:
    """The floor's lane rank for a selection of ``width`` entries over ``nd`` columns whose
    first tile has ``first``: the engine's bet (about ``e + 4 sqrt(e) + 4`` with ``e`` the
    expected number of a row's best ``width`` in that tile); None: a proven floor. A lost
    bet only costs a second pass over that row."""
    if nd < 4 * first:
        return None
    e = width * first / nd
    j = int(math.ceil(e + 4.0 * math.sqrt(e) + 4.0))
    return j if j < width else None


def to_bf16(torch: Any, a: Any, dev: Any) -> Any:
    """bf16 copy of an array block on ``dev`` (float64 goes through float32)."""
    bits = bf16_bits(np.asarray(a[:], dtype=np.float32))
    return torch.from_numpy(bits.view(np.int16)).view(torch.bfloat16).to(dev)


def _update_lanes(torch: Any, lane_max: Any, t: Any, lanes: int) -> None:
    """Fold the columns of ``t`` into the running lane maxima (column c -> lane c % lanes
    of its block; every lane maximum is a distinct entry of the row)."""
    m, nb = t.shape
    full = nb // lanes
    if full:
        torch.maximum(
            lane_max, t[:, : full * lanes].reshape(m, full, lanes).amax(dim=1).float(), out=lane_max
        )
    rest = nb - full * lanes
    if rest:
        # the leftover columns join lanes 0..rest-1: lanes stay disjoint sets of columns,
        # so their maxima stay distinct entries of the row
        torch.maximum(lane_max[:, :rest], t[:, full * lanes :].float(), out=lane_max[:, :rest])


def _threshold(torch: Any, lane_max: Any, k: int, two_e: Any) -> Any:
    """``L_i - 2 E_i`` rounded down to float32 (``L_i``: k-th largest lane maximum)."""
    kth = torch.topk(lane_max, k, dim=1, sorted=False).values.amin(dim=1)
    thr64 = kth.double() - two_e
    thr32 = thr64.float()
    up = thr32.double() > thr64
    return torch.where(up, torch.nextafter(thr32, torch.full_like(thr32, -math.inf)), thr32)
