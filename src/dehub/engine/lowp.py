"""Exact top-k through a bf16 candidate pass and an exact re-score (``precision="bf16"``).

``bf16_search(queries, database, k, offset=...)`` returns what
:func:`~dehub.engine.exact.exact_search` returns (same ids, same tie rule, the same
float32 score bits), but scores every pair in bf16 first (torch GEMM, fp32
accumulation, bf16 result) and re-scores in the input precision only the candidates
that the error bound cannot rule out. The bound and the proof are in
``docs/precision.md``; :func:`pair_bound` is the bound as code.

Steps, per block of query rows:

1. bf16 scores ``t_b = fl(bf16(q) . bf16(x)) - o`` of the block against every database
   block (torch, on ``device``), with running lane maxima of each row: the k-th largest
   lane maximum ``L_i`` is at most the row's final k-th bf16 score;
2. every entry with ``t_b >= L_i - 2 E_i`` is kept (``E_i`` bounds ``|t_b - t|`` for every
   pair of row ``i``, ``t`` the fp32 engine's score); at the end the kept entries are
   filtered again with the final ``L_i``;
3. the kept pairs are re-scored with a numpy GEMM in the compute dtype of the fp32
   engine (float64 inputs: float64) on groups of rows against the union of their
   candidates, so every score is the fp32 engine's own GEMM entry, and the offset is
   subtracted with the same numpy operation;
4. the final top-k of each row is :func:`~dehub.engine.topk.select_topk` over the
   re-scored candidates (ties -> smaller id).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from .._progress import progress_bar
from ._rows import row_blocks
from .accel import bf16_matmul, import_torch
from .exact import scored_by_gemv
from .topk import select_topk

__all__ = [
    "BoundCoefficients",
    "bound_coefficients",
    "pair_bound",
    "bf16_search",
    "search_with_precision",
    "LowpStats",
]

U_BF16 = 2.0**-8  # unit roundoff of bf16 (8 significant bits, round to nearest)
U_FP32 = 2.0**-24
U_FP64 = 2.0**-53
ETA = 2.0**-126  # smallest normal float32/bf16: bound of a flushed (DAZ/FTZ) value
_SAFETY = 1.0 + 2.0**-20  # covers the float64 evaluation of norms and of the bound itself
_LANES = 512
_KEPT_BYTES = 24  # a kept entry: row and column (int64) and value (fp32), plus slack
_GROUP_ROWS = 8  # rows re-scored by one GEMM (OpenBLAS main GEMM path needs M >= 8 here)
_MIN_GROUP_COLS = 256  # ... and M * N * K above its small-matrix threshold


def _gamma(n: int, u: float) -> float:
    nu = n * u
    if nu >= 0.5:
        raise ValueError(f"dimension {n} too large for the accumulation bound (n*u={nu})")
    return nu / (1.0 - nu)


@dataclass(frozen=True)
class BoundCoefficients:
    """``|t_b - t| <= a |q||x| + b |o| + c (sqrt(d) (|q| + |x|) + d)`` for every pair."""

    a: float
    b: float
    c: float
    d: int


def bound_coefficients(d: int, input_dtype: Any, compute_dtype: Any) -> BoundCoefficients:
    """The coefficients of the per-pair bound (docs/precision.md, Theorem 1).

    ``rho``: relative error of rounding an input to bf16 (float64 inputs go through
    float32: ``(1+u)(1+u32) - 1``); ``gamma_v``: fp32 accumulation of the bf16 products;
    ``u``: the bf16 result; ``gamma_w``, ``w``: the reference's own accumulation and
    offset subtraction in the compute dtype.
    """
    u, v = U_BF16, U_FP32
    w = U_FP64 if np.dtype(compute_dtype) == np.float64 else U_FP32
    rho = (1 + u) * (1 + v) - 1 if np.dtype(input_dtype) == np.float64 else u
    g_v = _gamma(d, v)
    g_w = _gamma(d, w)
    grow = (1 + rho) ** 2 * (1 + g_v)  # |sum of the bf16 products| / sum|x_i y_i|
    a = (2 * rho + rho**2) + g_v * (1 + rho) ** 2 + u * grow + g_w + v * (1 + u) * grow + w * (1 + g_w)
    b = 2 * v + v * v + w  # the pass subtracts the float32 rounding of the offset
    c = 16.0 * ETA
    return BoundCoefficients(a * _SAFETY, b * _SAFETY, c * _SAFETY, int(d))


def pair_bound(
    coef: BoundCoefficients,
    q_norm: np.ndarray | float,
    x_norm: np.ndarray | float,
    offset_abs: np.ndarray | float = 0.0,
) -> np.ndarray:
    """``E(q, x)`` (float64) for broadcastable arrays of norms and ``|offset|``."""
    qn = np.asarray(q_norm, np.float64)
    xn = np.asarray(x_norm, np.float64)
    sd = math.sqrt(coef.d)
    return coef.a * qn * xn + coef.b * np.asarray(offset_abs, np.float64) + coef.c * (sd * (qn + xn) + coef.d)


def _row_norms(a: Any, block: int = 65536) -> np.ndarray:
    out = np.empty(a.shape[0], np.float64)
    for s in row_blocks(a.shape[0], block):
        x = np.asarray(a[s], dtype=np.float64)
        out[s] = np.sqrt(np.einsum("ij,ij->i", x, x))
    return out


@dataclass
class LowpStats:
    """What a bf16 search did (filled when passed as ``stats=``)."""

    n_pairs: int = 0
    n_candidates: int = 0  # pairs re-scored exactly (after the final filter)
    n_rescore_pairs: int = 0  # GEMM entries computed by the re-score (group unions, padding)
    fell_back: bool = False  # more candidates than the budget holds: the fp32 engine ran

    @property
    def candidate_fraction(self) -> float:
        return self.n_candidates / self.n_pairs if self.n_pairs else 0.0


def _round_down_f32(x64: np.ndarray) -> np.ndarray:
    """float32 values <= the float64 ones (thresholds must not move up)."""
    x32 = x64.astype(np.float32)
    up = x32.astype(np.float64) > x64
    x32[up] = np.nextafter(x32[up], np.float32(-np.inf))
    return x32


def bf16_search(
    queries: Any,
    database: Any,
    k: int,
    *,
    offset: np.ndarray | None = None,
    memory_budget: int,
    device: str = "cpu",
    query_block: int | None = None,
    database_block: int | None = None,
    progress: bool | str = False,
    stats: LowpStats | None = None,
) -> tuple[np.ndarray, np.ndarray] | None:
    """The exact engine's top-k through a bf16 pass; None when torch is missing, the
    scores could overflow bf16, or the kept candidates of a query block would exceed a
    third of ``memory_budget`` (scores too close together for the bound to prune; the
    caller then runs the fp32 engine).

    Inputs are validated shapes (by :func:`~dehub.engine.exact.exact_search`).
    """
    torch = import_torch()
    if torch is None:
        return None
    nq, d = queries.shape
    nd = database.shape[0]
    dt = np.dtype(np.float64) if np.float64 in (queries.dtype, database.dtype) else np.dtype(np.float32)
    in_dt = dt
    kk = min(k, nd)
    out_v = np.full((nq, k), -np.inf, dtype=np.float32)
    out_i = np.full((nq, k), -1, dtype=np.int64)
    coef = bound_coefficients(d, in_dt, dt)
    qn = _row_norms(queries)
    xn = _row_norms(database)
    x_max = float(xn.max())
    off = None if offset is None else np.asarray(offset).astype(dt, copy=False)
    o_max = 0.0 if off is None else float(np.abs(off).max())
    if float(qn.max()) * x_max + o_max > 1e37:  # bf16/fp32 range: leave it to the fp32 engine
        return None
    # E_i bounds |t_b - t| for every pair of row i (docs/precision.md, Corollary 2)
    e_row = pair_bound(coef, qn, x_max, o_max)
    # a one-query search is scored by one-row GEMM calls in the fp32 engine (rounded
    # differently from its tiles): the re-score then uses one-row calls too
    gemv = scored_by_gemv(nq)
    dev = torch.device(device)
    lanes = max(_LANES, 4 * kk)
    db_rows = database_block or max(lanes, (min(nd, 16384) // lanes) * lanes or lanes)
    qb_rows = query_block or max(1, min(nq, (memory_budget // 3) // max(1, db_rows * 8)))
    qb_rows = max(1, min(qb_rows, 2048))
    # the whole database in bf16 once, when it fits a third of the budget
    x_bf_all = None
    if 2 * nd * d <= memory_budget // 3:
        x_bf_all = _to_bf16(torch, database, dev)
    off_t = None if off is None else torch.from_numpy(off.astype(np.float32)).to(dev)
    db_blocks = list(row_blocks(nd, db_rows))
    if stats is not None:
        stats.n_pairs += nq * nd
    kept_cap = max(1, memory_budget // 3) // _KEPT_BYTES  # kept entries of one query block
    label = progress if isinstance(progress, str) else "search (bf16)"
    n_qb = -(-nq // qb_rows)
    with progress_bar(total=n_qb * len(db_blocks), desc=label, enable=bool(progress), unit="block") as bar:
        for qs in row_blocks(nq, qb_rows):
            q_np = np.asarray(queries[qs], dtype=dt)
            q_bf = _to_bf16(torch, q_np, dev)
            m = q_bf.shape[0]
            two_e = torch.from_numpy(2.0 * e_row[qs]).to(dev)
            lane_max = torch.full((m, lanes), -math.inf, dtype=torch.float32, device=dev)
            kept: list[tuple[Any, Any, Any]] = []
            n_kept = 0
            for ds in db_blocks:
                x_bf = x_bf_all[ds] if x_bf_all is not None else _to_bf16(torch, database[ds], dev)
                t = bf16_matmul(torch, q_bf, x_bf)  # bf16 scores
                if off_t is not None:  # fp32 only where an offset is subtracted
                    t = t.float()
                    t -= off_t[ds]
                _update_lanes(torch, lane_max, t, lanes)
                thr = _threshold(torch, lane_max, kk, two_e)
                mask = t >= thr[:, None]
                rows, cols = torch.nonzero(mask, as_tuple=True)
                kept.append((rows, cols + ds.start, t[rows, cols].float()))
                n_kept += int(rows.numel())
                if n_kept > kept_cap:  # scores too close for the bound to prune: fp32 engine
                    if stats is not None:
                        stats.fell_back = True
                    return None
                bar.update(1)
            thr = _threshold(torch, lane_max, kk, two_e)
            rows = torch.cat([r for r, _, _ in kept])
            cols = torch.cat([c for _, c, _ in kept])
            vals = torch.cat([v for _, _, v in kept])
            final = vals >= thr[rows]
            rows_np = rows[final].cpu().numpy().astype(np.int64)
            cols_np = cols[final].cpu().numpy().astype(np.int64)
            v, i, n_gemm = _rescore(q_np, database, rows_np, cols_np, off, kk, dt, gemv)
            if stats is not None:
                stats.n_candidates += int(rows_np.size)
                stats.n_rescore_pairs += n_gemm
            out_v[qs, :kk] = v
            out_i[qs, :kk] = i
    return out_v, out_i


def _to_bf16(torch: Any, a: Any, dev: Any) -> Any:
    """bf16 copy of an array block on ``dev`` (float64 goes through float32)."""
    x = np.ascontiguousarray(np.asarray(a[:], dtype=np.float32))
    return torch.from_numpy(x).to(dev).to(torch.bfloat16)


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


_GEMV_MIN_COLS = 64  # GEMV tails round differently: pad single-row re-scores to this many


def _rescore(
    q: np.ndarray,
    database: Any,
    rows: np.ndarray,
    cols: np.ndarray,
    off: np.ndarray | None,
    k: int,
    dt: np.dtype,
    gemv: bool = False,
) -> tuple[np.ndarray, np.ndarray, int]:
    """Exact scores of the kept pairs, the fp32 engine's GEMM entries, and the top-k.

    ``gemv``: the engine scored this search with one-row GEMV calls (a single query,
    :func:`~dehub.engine.exact.scored_by_gemv`); its candidates are then re-scored with a
    one-row call too, else with 8-row GEMMs."""
    m = q.shape[0]
    order = np.lexsort((cols, rows))
    rows, cols = rows[order], cols[order]
    counts = np.bincount(rows, minlength=m)
    width = max(int(counts.max()) if counts.size else 0, 1)
    sv = np.full((m, width), -np.inf, dtype=dt)
    si = np.full((m, width), -1, dtype=np.int64)
    starts = np.concatenate([[0], np.cumsum(counts)])
    pos = np.arange(rows.size) - starts[rows]
    n_gemm = 0
    step = 1 if gemv else _GROUP_ROWS
    for g0 in range(0, m, step):
        g1 = min(g0 + step, m)
        a, b = starts[g0], starts[g1]
        if a == b:
            continue
        gr, gc, gp = rows[a:b], cols[a:b], pos[a:b]
        if gemv:  # pad the columns so the one-row call rounds as the engine's GEMV did
            cp = np.concatenate([gc, np.full(max(0, _GEMV_MIN_COLS - gc.size), gc[0])])
            s1 = np.matmul(q[g0:g1], np.asarray(database[cp], dtype=dt).T)
            if off is not None:
                np.subtract(s1, off[cp], out=s1)
            n_gemm += s1.size
            sv[g0, gp] = s1[0, : gc.size]
            si[g0, gp] = gc
            continue
        union, inv = np.unique(gc, return_inverse=True)
        n_u = union.size
        if n_u < _MIN_GROUP_COLS:  # pad the columns so the GEMM takes the main path
            union = np.concatenate([union, np.full(_MIN_GROUP_COLS - n_u, union[0])])
        qg = q[g0:g1]
        if qg.shape[0] < _GROUP_ROWS:  # pad the rows likewise
            qg = np.concatenate([qg, np.repeat(qg[:1], _GROUP_ROWS - qg.shape[0], axis=0)])
        xu = np.asarray(database[union], dtype=dt)
        s = np.matmul(qg, xu.T)
        n_gemm += s.size
        if off is not None:
            np.subtract(s, off[union], out=s)
        sv[gr, gp] = s[gr - g0, inv]
        si[gr, gp] = gc
    v, i = select_topk(sv, k, ids=si)
    return v.astype(np.float32, copy=False), i, n_gemm


def search_with_precision(
    queries: Any,
    database: Any,
    k: int,
    *,
    offset: np.ndarray | None,
    precision: str,
    device: str = "cpu",
    memory_budget: int,
    query_block: int | None = None,
    database_block: int | None = None,
    progress: bool | str = False,
    dense: bool = False,
    stats: LowpStats | None = None,
) -> tuple[np.ndarray, np.ndarray] | None:
    """The hook of :func:`~dehub.engine.exact.exact_search`: the bf16 result, or None for
    "run the fp32 engine" (precision resolves to fp32, torch missing, or a small batch
    that the fp32 engine serves with one bandwidth-bound GEMM: ``dense``)."""
    from .accel import resolve_precision

    if resolve_precision(precision, device) != "bf16":
        if str(device) != "cpu":
            raise ValueError(
                f"device={device!r} serves the bf16 pass (precision='bf16' or 'auto', with torch); "
                f"received precision={precision!r}"
            )
        return None
    if str(device).startswith("cuda"):
        torch = import_torch()
        if torch is None or not torch.cuda.is_available():
            raise ValueError(f"device={device!r} needs torch with a visible CUDA device; none was found")
    elif dense:
        return None
    return bf16_search(
        queries,
        database,
        k,
        offset=offset,
        memory_budget=memory_budget,
        device=device,
        query_block=query_block,
        database_block=database_block,
        progress=progress,
        stats=stats,
    )
