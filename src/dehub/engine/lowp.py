"""Exact top-k through a bf16 candidate pass and an exact re-score (``precision="bf16"``).

``bf16_search(queries, database, k, offset=...)`` returns what
:func:`~dehub.engine.exact.exact_search` returns (same ids, same tie rule, the same
float32 score bits), but scores every pair in bf16 first (torch GEMM, fp32
accumulation, bf16 result) and re-scores in the input precision only the candidates
that the error bound cannot rule out. The bound and the proof are in
``docs/precision.md``; :func:`pair_bound` is the bound as code.

Steps:

0. once per search (i.e. per fit): every row's norm and the norm of its bf16 residual
   ``bf16(x) - x``, as upper bounds, in the pass that rounds the database to bf16
   (:func:`_norm_bounds`, the compiled ``bf16_prepare`` where built); ``E_i`` bounds
   ``|t_b - t|`` for every pair of row ``i`` (Theorem 1', :func:`pair_bound`);
1. per block of query rows, bf16 scores ``t_b = fl(bf16(q) . bf16(x)) - o`` against
   every database block (torch GEMM into a reused bf16 tile);
2. CPU, compiled kernel built: the kernel reads each bf16 tile once, subtracts the offset
   in float32 and keeps each row's ``w`` best (:class:`~dehub.engine.topk.KernelTopK`);
   the k-th kept value ``L_i`` is the row's k-th bf16 score, and the entries with
   ``t_b >= L_i - 2 E_i`` are the candidates when the kept ones provably hold them all
   (else the row is searched again with ``4w``, then by the fp32 engine: ``fallback``).
   Any device: torch ops (running lane maxima, threshold, ``nonzero``), the GPU's path;
3. the candidates are re-scored with numpy GEMMs in the compute dtype of the fp32 engine
   (float64 inputs: float64) on groups of rows against the union of their candidates,
   shapes checked against this BLAS (:func:`rescore_group_shapes`), so every score is
   the fp32 engine's own GEMM entry, and the offset is subtracted with the same numpy
   operation;
4. the final top-k of each row is :func:`~dehub.engine.topk.select_topk` over the
   re-scored candidates (ties -> smaller id).

``precision="auto"``: :func:`auto_precision` (measured, cached by :mod:`dehub.engine.tuning`).
"""

from __future__ import annotations

import functools
import math
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Any

import numpy as np

from .._progress import progress_bar
from ._rows import even_blocks, row_blocks, scored_by_gemv
from ._workers import parallel_scope
from .accel import bf16_matmul, import_torch, resolve_precision
from .hardware import selection_workers
from .topk import KernelTopK, kernel_isa, select_topk
from .tuning import measured, shape_class

try:  # the compiled bf16 preparation (rounding, norms, residual norms in one pass)
    from . import _topk_kernel as _kernel
except ImportError:  # not built: numpy does the same
    _kernel = None  # type: ignore[assignment]

__all__ = [
    "BoundCoefficients",
    "bound_coefficients",
    "pair_bound",
    "bf16_search",
    "search_with_precision",
    "auto_precision",
    "measure_precision",
    "rescore_group_shapes",
    "PreparedDatabase",
    "prepare_database",
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
    """``|t_b - t| <= a |q||x| + b |o| + c (sqrt(d) (|q| + |x|) + d)`` for every pair;
    ``a_input`` is the share of ``a`` that bounds the rounding of the inputs to bf16, which
    measured residual norms replace (:func:`pair_bound`, Theorem 1')."""

    a: float
    b: float
    c: float
    d: int
    a_input: float = 0.0


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
    return BoundCoefficients(a * _SAFETY, b * _SAFETY, c * _SAFETY, int(d), (2 * rho + rho**2) * _SAFETY)


def pair_bound(
    coef: BoundCoefficients,
    q_norm: np.ndarray | float,
    x_norm: np.ndarray | float,
    offset_abs: np.ndarray | float = 0.0,
    q_residual: np.ndarray | float | None = None,
    x_residual: np.ndarray | float | None = None,
) -> np.ndarray:
    """``E(q, x)`` (float64) for broadcastable arrays of norms and ``|offset|``.

    With the residual norms ``|bf16(q) - q|`` and ``|bf16(x) - x|`` (upper bounds, as
    :func:`_norm_bounds` computes them), the input-rounding share ``a_input |q||x|`` is
    replaced by ``(|q| + |r_q|) |r_x| + |r_q| |x|`` (Theorem 1', docs/precision.md): at most
    the same, and about half of it for real data, whose residuals are far from the worst
    case."""
    qn = np.asarray(q_norm, np.float64)
    xn = np.asarray(x_norm, np.float64)
    sd = math.sqrt(coef.d)
    rest = coef.b * np.asarray(offset_abs, np.float64) + coef.c * (sd * (qn + xn) + coef.d)
    if q_residual is None or x_residual is None:
        return coef.a * qn * xn + rest
    qr = np.asarray(q_residual, np.float64)
    xr = np.asarray(x_residual, np.float64)
    inputs = ((qn + qr) * xr + qr * xn) * _SAFETY
    return (coef.a - coef.a_input) * qn * xn + inputs + rest


def _sq_norm_upper(sq: np.ndarray, d: int) -> np.ndarray:
    """Upper bounds of the norms from float32 sums of ``d`` squares, in any order: the sum
    is at least ``(1 - gamma_{d+1})`` times the exact one, less ``d 2^-126`` for products
    flushed to zero (the float64 evaluation is covered by the bound's safety factor)."""
    g = _gamma(d + 1, U_FP32)
    return np.sqrt(sq / (1.0 - g) + d * 2.0 * ETA)


def _norm_bounds(a: Any, bits: np.ndarray | None = None, block: int = 32768) -> tuple[np.ndarray, np.ndarray]:
    """Upper bounds (float64) of each row's norm ``|x|`` and of its bf16 residual's norm
    ``|bf16(x) - x|``, in one pass over the rows (once per search, i.e. per fit).

    float32 (and float16) rows: sums of squares in float32 (:func:`_sq_norm_upper`), the
    residual ``bf16(x) - x`` exact in float32 (Sterbenz: the two are within a factor 2, or
    the bf16 value is 0). float64 rows: the residual of the bf16 of their float32 rounding,
    exact in float64, squares summed in float64 (``gamma_{d+1}(2^-53)``); the norm as
    float32's, divided by ``1 - 2^-24`` and plus ``sqrt(d) 2^-125`` for the rounding to
    float32. Residual norms get ``sqrt(d) 2^-125`` more: the GEMM flushes subnormal bf16
    inputs to zero, which moves a component by less than ``2^-126``.

    With the compiled kernel (float32/float16 rows): one C pass per row that also writes
    the rows' bf16 ``bits`` (when given), sums of squares in double (exact products,
    ``gamma_{d+1}(2^-53)`` for the sums).
    """
    if _kernel is not None and kernel_isa() is not None and np.dtype(a.dtype) != np.float64:
        n, d = a.shape
        sq = np.empty(n, np.float64)
        rsq = np.empty(n, np.float64)
        for s in row_blocks(n, block):
            x32 = np.ascontiguousarray(a[s], dtype=np.float32)
            _kernel.bf16_prepare(x32, None if bits is None else bits[s], sq[s], rsq[s])
        grow = 1.0 + _gamma(d + 1, U_FP64)
        return np.sqrt(sq * grow), np.sqrt(rsq * grow) + math.sqrt(d) * 2.0 * ETA
    n, d = a.shape
    norms = np.empty(n, np.float64)
    res = np.empty(n, np.float64)
    f64 = np.dtype(a.dtype) == np.float64
    for s in row_blocks(n, block):
        x = np.asarray(a[s])
        x32 = np.ascontiguousarray(x, dtype=np.float32)
        b16 = bf16_bits(x32)
        if bits is not None:
            bits[s] = b16
        b = _bf16_as_f32(b16)
        norms[s] = np.einsum("ij,ij->i", x32, x32)
        if f64:
            r64 = b.astype(np.float64) - np.asarray(x, dtype=np.float64)
            res[s] = np.einsum("ij,ij->i", r64, r64) / (1.0 - _gamma(d + 1, U_FP64))
        else:
            r = b - x32
            res[s] = np.einsum("ij,ij->i", r, r)
    norms = _sq_norm_upper(norms, d)
    if f64:
        norms = norms / (1.0 - U_FP32) + math.sqrt(d) * 2.0 * ETA
        res = np.sqrt(res)
    else:
        res = _sq_norm_upper(res, d)
    res += math.sqrt(d) * 2.0 * ETA
    return norms, res


@dataclass
class LowpStats:
    """What a bf16 search did (filled when passed as ``stats=``)."""

    n_pairs: int = 0
    n_candidates: int = 0  # pairs re-scored exactly (after the final filter)
    n_rescore_pairs: int = 0  # GEMM entries computed by the re-score (group unions, padding)
    fell_back: bool = False  # rows left unresolved and no fallback given: the caller's fp32 engine ran
    n_fp32_rows: int = 0  # query rows whose candidates the bound could not hold: fp32 engine

    @property
    def candidate_fraction(self) -> float:
        return self.n_candidates / self.n_pairs if self.n_pairs else 0.0


def _round_down_f32(x64: np.ndarray) -> np.ndarray:
    """float32 values <= the float64 ones (thresholds must not move up)."""
    x32 = x64.astype(np.float32)
    up = x32.astype(np.float64) > x64
    x32[up] = np.nextafter(x32[up], np.float32(-np.inf))
    return x32


Fallback = Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]


@dataclass(frozen=True)
class PreparedDatabase:
    """The once-per-search pass over a database: the largest norm and bf16 residual norm
    (upper bounds) and, when kept, the bf16 bits of every row."""

    norm_max: float
    residual_max: float
    bits: np.ndarray | None


def prepare_database(database: Any, *, with_bits: bool = True) -> PreparedDatabase:
    """:func:`_norm_bounds` of the database (and its bf16 bits when ``with_bits``)."""
    bits = np.empty(database.shape, np.uint16) if with_bits else None
    xn, xr = _norm_bounds(database, bits)
    if xn.size == 0:
        return PreparedDatabase(0.0, 0.0, bits)
    return PreparedDatabase(float(xn.max()), float(xr.max()), bits)


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
    fallback: Fallback | None = None,
    compiled: bool | None = None,
    prepared: PreparedDatabase | None = None,
) -> tuple[np.ndarray, np.ndarray] | None:
    """The exact engine's top-k through a bf16 pass; None when torch is missing, the
    scores could overflow bf16, or some rows' scores are too close together for the bound
    to prune and no ``fallback`` was given (the caller then runs the fp32 engine).

    ``fallback(rows)``: the fp32 engine's ``(scores, ids)`` of those query rows (float32,
    int64, ``(len(rows), k)``), for the few rows the bf16 pass leaves unresolved.
    ``compiled``: select with the compiled kernel (CPU only; default: where it is built)
    or with torch ops on ``device`` (``False``: the GPU's selection, run on CPU tensors).
    ``prepared``: the database's once-per-search pass (:func:`prepare_database`) done
    already, for several searches of the same database (the ``"auto"`` measurement).
    Inputs are validated shapes (by :func:`~dehub.engine.exact.exact_search`).
    """
    torch = import_torch()
    if torch is None:
        return None
    nq, d = queries.shape
    nd = database.shape[0]
    dt = np.dtype(np.float64) if np.float64 in (queries.dtype, database.dtype) else np.dtype(np.float32)
    kk = min(k, nd)
    out_v = np.full((nq, k), -np.inf, dtype=np.float32)
    out_i = np.full((nq, k), -1, dtype=np.int64)
    coef = bound_coefficients(d, dt, dt)
    # the whole database in bf16 once, when it fits a third of the budget (on a GPU: a
    # quarter of its free memory); its bits come from the pass that bounds the norms
    room = memory_budget // 3
    if torch.device(device).type == "cuda":
        room = max(room, int(torch.cuda.mem_get_info(torch.device(device))[0]) // 4)
    if prepared is None:
        prepared = prepare_database(database, with_bits=2 * nd * d <= room)
    x_bits = prepared.bits
    qn, qr = _norm_bounds(queries)
    x_max, xr_max = prepared.norm_max, prepared.residual_max
    off = None if offset is None else np.asarray(offset).astype(dt, copy=False)
    o_max = 0.0 if off is None else float(np.abs(off).max())
    if not float(qn.max()) * x_max + o_max <= 1e37:  # bf16/fp32 range: leave it to the fp32 engine
        return None
    # E_i bounds |t_b - t| for every pair of row i (docs/precision.md, Corollary 2)
    e_row = pair_bound(coef, qn, x_max, o_max, qr, xr_max)
    gemv = scored_by_gemv(nq)
    dev = torch.device(device)
    kernel = dev.type == "cpu" and kernel_isa() is not None and compiled is not False
    plan = _plan(nq, nd, d, kk, memory_budget, kernel, query_block, database_block, dev.type == "cuda")
    x_bf_all = (
        None if x_bits is None else torch.from_numpy(x_bits.view(np.int16)).view(torch.bfloat16).to(dev)
    )
    off32 = None if off is None else np.ascontiguousarray(off, dtype=np.float32)
    db_blocks = list(row_blocks(nd, plan.database_block))
    if stats is not None:
        stats.n_pairs += nq * nd
    label = progress if isinstance(progress, str) else "search (bf16)"
    q_blocks = _query_blocks(nq, plan.query_block, kernel)
    n_qb = len(q_blocks)
    width = _first_width(kk)
    seen = np.empty(0, np.int64)  # candidates per row of the rows searched so far
    unresolved: list[np.ndarray] = []
    workers = selection_workers() if kernel else 1
    with (
        progress_bar(total=n_qb * len(db_blocks), desc=label, enable=bool(progress), unit="block") as bar,
        ThreadPoolExecutor(workers) if workers > 1 else nullcontext() as pool,
    ):
        scan = _Scan(torch, dev, database, x_bf_all, off32, db_blocks, pool, workers, bar, memory_budget // 3)
        for qs in q_blocks:
            q_np = np.asarray(queries[qs], dtype=dt)
            q_bf = _to_bf16(torch, q_np, dev)
            two_e = 2.0 * e_row[qs]
            if kernel:
                rows, cols, lost, counts = scan.kernel_pass(q_bf, kk, width, two_e)
                if counts.size:  # the next blocks keep what the rows so far needed, and some
                    seen = np.concatenate([seen, counts])[-_WIDTH_HISTORY:]
                    width = _next_width(kk, seen)
            else:
                got = scan.torch_pass(q_bf, kk, two_e, max(1, memory_budget // 3) // _KEPT_BYTES)
                if got is None:
                    lost = np.arange(qs.stop - qs.start)
                    rows = cols = np.empty(0, np.int64)
                else:
                    (rows, cols), lost = got, np.empty(0, np.int64)
            key = scan.best if kernel else None
            v, i, n_gemm = _rescore(q_np, database, rows, cols, off, kk, dt, gemv, key)
            if stats is not None:
                stats.n_candidates += int(rows.size)
                stats.n_rescore_pairs += n_gemm
            out_v[qs, :kk] = v
            out_i[qs, :kk] = i
            if lost.size:
                unresolved.append(lost + qs.start)
    if unresolved:
        lost = np.concatenate(unresolved)
        if stats is not None:
            stats.n_fp32_rows += int(lost.size)
        if fallback is None:
            if stats is not None:
                stats.fell_back = True
            return None
        fv, fi = fallback(lost)
        out_v[lost], out_i[lost] = fv, fi
    return out_v, out_i


@dataclass(frozen=True)
class _Plan:
    query_block: int
    database_block: int


_KERNEL_DB_BLOCK = 16384  # columns of one bf16 tile
_KERNEL_TILE_BYTES = 32 * 2**20  # a bf16 tile of 1,024 x 16,384 scores


def _plan(
    nq: int,
    nd: int,
    d: int,
    k: int,
    memory_budget: int,
    kernel: bool,
    query_block: int | None,
    database_block: int | None,
    gpu: bool = False,
) -> _Plan:
    """Blocks of the bf16 pass. The compiled selection reads bf16 tiles of up to 32 MiB
    (1,024 x 16,384 scores) straight from the GEMM's output; the torch selection keeps
    the previous 2,048-row blocks."""
    lanes = max(_LANES, 4 * k)
    if kernel:
        db = database_block or min(nd, _KERNEL_DB_BLOCK)
        qb = query_block or max(
            2, min(nq, _KERNEL_TILE_BYTES // (2 * max(db, 1)), (memory_budget // 3) // (6 * db))
        )
        return _Plan(max(1, min(qb, nq)), max(1, db))
    if gpu:  # large tiles: one kernel launch per step does more work
        db = database_block or max(lanes, (min(nd, 65536) // lanes) * lanes or lanes)
        return _Plan(max(1, min(query_block or 8192, nq)), db)
    db = database_block or max(lanes, (min(nd, 16384) // lanes) * lanes or lanes)
    qb = query_block or max(1, min(nq, (memory_budget // 3) // max(1, db * 8)))
    return _Plan(max(1, min(qb, 2048)), db)


_PROBE_ROWS = 64
_WIDTH_HISTORY = 8192  # rows whose candidate counts size the selection


def _query_blocks(nq: int, block: int, kernel: bool) -> list[slice]:
    """Query blocks of the bf16 pass. With the compiled selection and enough queries, the
    first block is a probe of 64 rows: the candidates its rows need size the selection
    of the blocks after it (a row that needs more is searched again, a second GEMM pass)."""
    if not kernel or nq < 4 * _PROBE_ROWS:
        return list(even_blocks(nq, block))
    rest = [slice(_PROBE_ROWS + s.start, _PROBE_ROWS + s.stop) for s in even_blocks(nq - _PROBE_ROWS, block)]
    return [slice(0, _PROBE_ROWS), *rest]


def _first_width(k: int) -> int:
    """Entries kept per row by the first query block's selection: 4k, at least k + 256;
    later blocks size it from what the rows before them needed."""
    return max(4 * k, k + 256)


def _next_width(k: int, counts: np.ndarray) -> int:
    """Kept entries per row for the next query block: 1.25 x the 99th percentile of the
    candidates per row of the (last 8,192) rows so far, plus 16 (at least k + 16); a row
    that needs more is searched again on its own."""
    need = float(np.quantile(counts, 0.99))
    return int(max(k + 16, math.ceil(1.25 * need) + 16))


class _Scan:
    """The bf16 pass of one search: a query block against every database block."""

    def __init__(
        self,
        torch: Any,
        dev: Any,
        database: Any,
        x_bf_all: Any,
        off32: np.ndarray | None,
        db_blocks: list[slice],
        pool: Any,
        workers: int,
        bar: Any,
        kept_bytes: int,
    ) -> None:
        self.torch, self.dev, self.database, self.x_bf_all = torch, dev, database, x_bf_all
        self.off32, self.db_blocks, self.pool, self.workers, self.bar = off32, db_blocks, pool, workers, bar
        self.off_t = None if off32 is None else torch.from_numpy(off32.copy()).to(dev)
        self.kept_bytes = kept_bytes
        self.best = np.zeros(0, np.int64)  # each row's best bf16 candidate (last kernel pass)

    def _x(self, ds: slice) -> Any:
        if self.x_bf_all is not None:
            return self.x_bf_all[ds]
        return _to_bf16(self.torch, self.database[ds], self.dev)

    def kernel_pass(
        self, q_bf: Any, k: int, width: int, two_e: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Candidates through the compiled selection, which reads the bf16 tiles the GEMM
        wrote: the ``width`` best bf16 scores of each row (offset subtracted in float32
        inside the same pass, floor from the first tile), then the bound's filter on them.

        Returns ``(rows, cols, unresolved rows, candidates per resolved row)``: a row is
        resolved when every entry that the bound keeps is among its kept ones (fewer than
        ``width`` above the floor, or the ``width``-th below the threshold) and the floor
        lies below the threshold; the others are searched again with four times the width
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
            r, c, lost, counts = self._kernel_rows(q_sub, lost, k, width, two_e[lost], bet)
            found_r.append(r)
            found_c.append(c)
            found_n.append(counts)
            width, bet = 4 * width, False
            # the state of a wider pass (12 bytes a kept entry, twice for the buffer)
            if not lost.size or width > 4 * nd or lost.size * width * 24 > self.kept_bytes:
                break
        return np.concatenate(found_r), np.concatenate(found_c), lost, np.concatenate(found_n)

    def _kernel_rows(
        self, q_bf: Any, row_ids: np.ndarray, k: int, width: int, two_e: np.ndarray, bet: bool
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        torch = self.torch
        m = q_bf.shape[0]
        nd = self.db_blocks[-1].stop
        width = min(width, nd)
        top = KernelTopK(m, width, np.float32)
        first = self.db_blocks[0].stop - self.db_blocks[0].start
        j = _bet_rank(width, first, nd) if bet else None
        tiles: dict[int, Any] = {}
        parts = list(even_blocks(m, -(-m // self.workers))) if m >= 2 * self.workers else [slice(0, m)]
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

            if self.pool is None or len(parts) == 1:
                push(slice(0, m))
            else:
                list(self.pool.map(push, parts))
            if self.bar is not None and bet:
                self.bar.update(1)
        v, i = top.result()
        n_kept = (i >= 0).sum(axis=1)
        kth = v[np.arange(m), np.minimum(k, n_kept.clip(1)) - 1].astype(np.float64)
        thr = _round_down_f32(kth - two_e)
        flo = top.flo
        ok = (n_kept >= k) & ((thr > flo) | ~np.isfinite(flo))
        ok &= (n_kept < width) | (v[:, width - 1] < thr) | (n_kept == nd)
        keep = (v >= thr[:, None]) & ok[:, None]
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
        lanes = max(_LANES, 4 * kk)
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


def bf16_bits(x32: np.ndarray) -> np.ndarray:
    """The bf16 rounding (to nearest, ties to even) of finite float32 values, as their bits
    (uint16): the upper half of ``bits + 0x7FFF + (bit 16)``, which is exact for normal and
    subnormal values alike (bf16 is float32 with the low 16 bits cut); numpy, a few passes,
    and the same bits as torch's conversion (tested)."""
    u = np.ascontiguousarray(x32, dtype=np.float32).view(np.uint32)
    r = (u >> 16) & 1
    r += u
    r += 0x7FFF
    r >>= 16
    return r.astype(np.uint16)


def _bf16_as_f32(bits: np.ndarray) -> np.ndarray:
    """float32 values of bf16 bits (exact)."""
    return (bits.astype(np.uint32) << 16).view(np.float32)


def _to_bf16(torch: Any, a: Any, dev: Any) -> Any:
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


def _rescore(
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


Engine = Callable[[Any, Any, int, "np.ndarray | None"], tuple[np.ndarray, np.ndarray]]

_AUTO_MIN_PAIRS = 2**27  # smaller searches: "auto" is fp32 (the measurement would cost more)
_AUTO_QUERIES, _AUTO_DATABASE = 128, 262144  # the measured sample of the real data
_AUTO_ROUNDS = 3
_AUTO_MARGIN = 0.9  # bf16 only when it measured at most 0.9x fp32: noise never makes it slower


def auto_precision(
    queries: Any, database: Any, k: int, offset: np.ndarray | None, fp32_engine: Engine, memory_budget: int
) -> str:
    """``precision="auto"`` on a CPU with torch and native bf16: ``"bf16"`` or ``"fp32"``,
    whichever measured faster on a sample of this search's own data (the cached
    measurement of its shape class on this machine when there is one,
    :mod:`dehub.engine.tuning`). Searches under 2^27 pairs stay fp32 without measuring."""
    nq, d = queries.shape
    nd = database.shape[0]
    if nq * nd < _AUTO_MIN_PAIRS:
        return "fp32"
    dt = np.dtype(np.float64) if np.float64 in (queries.dtype, database.dtype) else np.dtype(np.float32)
    shape = shape_class(
        "precision", d=d, dtype=dt, k=k, n_queries=nq, n_database=nd, offset=offset is not None, device="cpu"
    )
    return measured(
        shape, lambda: measure_precision(queries, database, k, offset, fp32_engine, memory_budget)
    )


def measure_precision(
    queries: Any,
    database: Any,
    k: int,
    offset: np.ndarray | None,
    fp32_engine: Engine,
    memory_budget: int,
    rounds: int = _AUTO_ROUNDS,
) -> tuple[str, dict[str, Any]]:
    """Time the fp32 engine and the bf16 path, alternating, on a sample of the search: up
    to 128 query rows spread over the queries against the whole database (up to 262,144
    rows spread over it, ``k`` scaled to the sample's share), so each query row does its
    real work (its candidates, its share of the GEMM). The bf16 path's once-per-search
    pass over the database (bf16 copy, norms: :func:`prepare_database`) is done once,
    timed apart and counted at its share of the search (``m / n_queries``), as the search
    will pay it. Returns the choice
    (bf16 when the median of the per-round ratios is at most 0.9) and the timings."""
    nq, nd = queries.shape[0], database.shape[0]
    qi = np.unique(np.linspace(0, nq - 1, min(nq, _AUTO_QUERIES)).astype(np.int64))
    xi = np.unique(np.linspace(0, nd - 1, min(nd, _AUTO_DATABASE)).astype(np.int64))
    q = np.asarray(queries[qi])
    x = np.asarray(database[xi])
    off = None if offset is None else np.asarray(offset)[xi]
    ks = int(max(1, min(xi.size, round(k * xi.size / nd))))

    def fp32() -> None:
        fp32_engine(q, x, ks, off)

    t0 = time.perf_counter()
    prepared = prepare_database(x)
    prep = time.perf_counter() - t0
    share = qi.size / nq

    def bf16() -> None:
        bf16_search(
            q,
            x,
            ks,
            offset=off,
            memory_budget=memory_budget,
            fallback=lambda r: fp32_engine(q[r], x, ks, off),
            prepared=prepared,
        )

    bf16()  # first use: torch's and oneDNN's set-up is not the search's cost
    t32: list[float] = []
    t16: list[float] = []
    for _ in range(rounds):
        for fn, acc in ((fp32, t32), (bf16, t16)):
            t0 = time.perf_counter()
            fn()
            acc.append(time.perf_counter() - t0)
    t16_search = [t + prep * share for t in t16]
    ratio = float(np.median(np.array(t16_search) / np.array(t32)))
    choice = "bf16" if ratio <= _AUTO_MARGIN else "fp32"
    return choice, {
        "fp32_s": t32,
        "bf16_s": t16,
        "bf16_database_pass_s": prep,
        "bf16_over_fp32": ratio,
        "sample": [int(qi.size), int(xi.size), ks],
    }


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
    fallback: Fallback | None = None,
    fp32_engine: Engine | None = None,
) -> tuple[np.ndarray, np.ndarray] | None:
    """The hook of :func:`~dehub.engine.exact.exact_search`: the bf16 result, or None for
    "run the fp32 engine" (precision resolves to fp32, torch missing, or a small batch
    that the fp32 engine serves with one bandwidth-bound GEMM: ``dense``, or ``"auto"``
    measured fp32 faster on this machine for this kind of search: :func:`auto_precision`,
    which times ``fp32_engine(queries, database, k, offset)`` against the bf16 path)."""
    mode = resolve_precision(precision, device)
    if mode == "fp32":
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
    elif mode == "auto":
        if fp32_engine is None:
            raise ValueError("precision='auto' on a CPU needs the fp32 engine to measure against")
        if auto_precision(queries, database, k, offset, fp32_engine, memory_budget) != "bf16":
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
        fallback=fallback,
    )
