"""Exact top-k through a bf16 candidate pass and an exact re-score (``precision="bf16"``).

``bf16_search(queries, database, k, offset=...)`` returns what
:func:`~dehub.engine.exact.exact_search` returns (same ids, same tie rule, the same
float32 score bits), but scores every pair in bf16 first (torch GEMM, fp32
accumulation, bf16 result) and re-scores in the input precision only the candidates
that the error bound cannot rule out. The bound and the proof are in
``docs/precision.md``; :func:`pair_bound` is the bound as code.

Steps (one module each):

0. :mod:`~dehub.engine.lowp_bound`, once per search (i.e. per fit): every row's norm and
   the norm of its bf16 residual ``bf16(x) - x``, as upper bounds, in the pass that rounds
   the database to bf16 (the compiled ``bf16_prepare`` where built, on the search's
   workers); ``E_i`` bounds ``|t_b - t|`` for every pair of row ``i`` (Theorem 1',
   :func:`pair_bound`), and per kept entry ``min(E_i, E_rest_i + u |s_b|)`` (Theorem 1'');
1. :mod:`~dehub.engine.lowp_scan`, per block of query rows: bf16 scores
   ``t_b = fl(bf16(q) . bf16(x)) - o`` against every database block (torch GEMM into a
   reused bf16 tile); CPU, compiled kernel built: the kernel reads each bf16 tile once,
   subtracts the offset in float32 and keeps each row's ``w`` best
   (:class:`~dehub.engine.topk.KernelTopK`), the candidates being the kept entries whose
   upper bound reaches the k-th largest lower bound (Corollary 2') when the kept ones
   provably hold them all (else the row is searched again with ``4w``, then by the fp32
   engine: ``fallback``). Any device: torch ops (running lane maxima, the row bound's
   threshold, ``nonzero``), the GPU's path;
2. :mod:`~dehub.engine.lowp_rescore`: every candidate's score formed as the fp32 engine's
   GEMM forms it (compiled FMA chains in OpenBLAS's order, or grouped numpy GEMMs), the
   offset subtracted by the same IEEE operation;
3. the final top-k of each row is :func:`~dehub.engine.topk.select_topk` over the
   re-scored candidates (ties -> smaller id).

``precision="auto"``: :func:`auto_precision` (measured, cached by :mod:`dehub.engine.tuning`).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from .._errors import InputError
from .._progress import progress_bar
from ._rows import row_blocks, scored_by_gemv
from ._workers import parallel_scope
from .accel import import_torch, resolve_precision
from .hardware import selection_workers
from .lowp_bound import (
    BoundCoefficients,
    PreparedDatabase,
    bound_coefficients,
    norm_bounds,
    pair_bound,
    prepare_database,
    without_result_rounding,
)
from .lowp_rescore import rescore, rescore_group_shapes
from .lowp_scan import WIDTH_HISTORY, Scan, first_width, next_width, plan_scan, query_blocks, to_bf16
from .topk import kernel_isa
from .tuning import measured, shape_class

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


_KEPT_BYTES = 24  # a kept entry: row and column (int64) and value (fp32), plus slack


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


Engine = Callable[[Any, Any, int, "np.ndarray | None"], tuple[np.ndarray, np.ndarray]]
Fallback = Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]


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
    # one scope of worker threads (one BLAS thread each) for the whole search: the
    # once-per-search pass, the selection of the bf16 tiles and the re-score
    with parallel_scope(selection_workers()) as workers:
        if prepared is None:
            prepared = prepare_database(database, with_bits=2 * nd * d <= room, workers=workers)
        x_bits = prepared.bits
        qn, qr = norm_bounds(queries, workers=workers)
        x_max, xr_max = prepared.norm_max, prepared.residual_max
        off = None if offset is None else np.asarray(offset).astype(dt, copy=False)
        o_max = 0.0 if off is None else float(np.abs(off).max())
        if not float(qn.max()) * x_max + o_max <= 1e37:  # bf16/fp32 range: leave it to the fp32 engine
            return None
        # E_i bounds |t_b - t| for every pair of row i (docs/precision.md, Corollary 2)
        e_row = pair_bound(coef, qn, x_max, o_max, qr, xr_max)
        # ... and less the bf16 result's rounding, which each entry adds back (Theorem 1'')
        e_rest = pair_bound(without_result_rounding(coef), qn, x_max, o_max, qr, xr_max)
        gemv = scored_by_gemv(nq)
        dev = torch.device(device)
        kernel = dev.type == "cpu" and kernel_isa() is not None and compiled is not False
        plan = plan_scan(
            nq, nd, d, kk, memory_budget, kernel, query_block, database_block, dev.type == "cuda"
        )
        x_bf_all = (
            None if x_bits is None else torch.from_numpy(x_bits.view(np.int16)).view(torch.bfloat16).to(dev)
        )
        off32 = None if off is None else np.ascontiguousarray(off, dtype=np.float32)
        db_blocks = list(row_blocks(nd, plan.database_block))
        if stats is not None:
            stats.n_pairs += nq * nd
        label = progress if isinstance(progress, str) else "search (bf16)"
        q_blocks = query_blocks(nq, plan.query_block, kernel)
        n_qb = len(q_blocks)
        width = first_width(kk)
        seen = np.empty(0, np.int64)  # candidates per row of the rows searched so far
        unresolved: list[np.ndarray] = []
        with progress_bar(
            total=n_qb * len(db_blocks), desc=label, enable=bool(progress), unit="block"
        ) as bar:
            scan = Scan(torch, dev, database, x_bf_all, off32, db_blocks, workers, bar, memory_budget // 3)
            for qs in q_blocks:
                q_np = np.asarray(queries[qs], dtype=dt)
                q_bf = to_bf16(torch, q_np, dev)
                two_e = 2.0 * e_row[qs]
                if kernel:
                    rows, cols, lost, counts = scan.kernel_pass(q_bf, kk, width, e_row[qs], e_rest[qs])
                    if counts.size:  # the next blocks keep what the rows so far needed, and some
                        seen = np.concatenate([seen, counts])[-WIDTH_HISTORY:]
                        width = next_width(kk, seen)
                else:
                    got = scan.torch_pass(q_bf, kk, two_e, max(1, memory_budget // 3) // _KEPT_BYTES)
                    if got is None:
                        lost = np.arange(qs.stop - qs.start)
                        rows = cols = np.empty(0, np.int64)
                    else:
                        (rows, cols), lost = got, np.empty(0, np.int64)
                key = scan.best if kernel else None
                v, i, n_gemm = rescore(q_np, database, rows, cols, off, kk, dt, gemv, key, workers)
                if stats is not None:
                    stats.n_candidates += int(rows.size)
                    stats.n_rescore_pairs += n_gemm
                out_v[qs, :kk] = v
                out_i[qs, :kk] = i
                if lost.size:
                    unresolved.append(lost + qs.start)
    # after the scope: the fp32 engine runs its own workers for the rows left
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
            raise InputError(
                f"device={device!r} serves the bf16 pass (precision='bf16' or 'auto', with torch); "
                f"received precision={precision!r}"
            )
        return None
    if str(device).startswith("cuda"):
        torch = import_torch()
        if torch is None or not torch.cuda.is_available():
            raise InputError(f"device={device!r} needs torch with a visible CUDA device; none was found")
    elif dense:
        return None
    elif mode == "auto":
        if fp32_engine is None:
            raise InputError("precision='auto' on a CPU needs the fp32 engine to measure against")
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
