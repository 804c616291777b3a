"""How much an approximate engine trades: recall of the true top-k and NNN bias error.

This is evaluation, not search: the engines (:mod:`dehub.engine`) return top-k lists and
know nothing of NNN; here those lists are turned into NNN's bias
``b = alpha * mean(top-k scores)`` and compared with the exact engine's.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from ..engine import EngineParams, build_reference_index, exact_search
from ..engine._rows import take_rows
from ..engine.dispatch import EngineName
from ..engine.reference import ReferenceIndex

__all__ = ["ApproxReport", "evaluate_engine"]


@dataclass(frozen=True)
class ApproxReport:
    """What an approximate setting trades, measured on a sample of queries.

    recall : mean fraction of the true top-k ids found (recall@k vs the exact engine).
    bias_mae, bias_max_error : mean and max |b_approx - b_exact| with
        ``b = alpha * mean(top-k scores)``.
    bias_rel_error : bias_mae / mean |b_exact|.
    exact_seconds, approx_seconds : search time of the sample (approx excludes build).
    build_seconds : time to build the approximate index over the whole database.
    """

    engine: str
    params: dict[str, Any]
    k: int
    n_sample: int
    recall: float
    bias_mae: float
    bias_max_error: float
    bias_rel_error: float
    exact_seconds: float
    approx_seconds: float
    build_seconds: float

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _nnn_bias(topk_scores: np.ndarray, alpha: float, k: int) -> np.ndarray:
    """NNN's bias from a top-k list, padding (``-inf``) counted as 0 (float64)."""
    finite = np.where(np.isfinite(topk_scores), topk_scores, 0)
    return alpha * finite.sum(axis=1, dtype=np.float64) / k


def evaluate_engine(
    queries: Any,
    database: Any,
    k: int,
    *,
    engine: EngineName | str = "ivf",
    engine_params: EngineParams | dict[str, Any] | None = None,
    alpha: float = 1.0,
    sample: int = 1000,
    seed: int = 0,
    index: ReferenceIndex | None = None,
) -> ApproxReport:
    """Recall of the true top-k and bias error of an engine against exact, on a sample.

    For NNN pass ``queries=gallery``, ``database=reference``, the fitted ``k`` and ``alpha``.
    A prebuilt ``index`` (from :func:`dehub.engine.build_reference_index`) is reused if given.
    """
    p = EngineParams.coerce(engine_params) if index is None else index.params
    if index is None:
        index = build_reference_index(database, engine=engine, engine_params=p, n_queries=queries.shape[0])
    rng = np.random.default_rng(seed)
    nq = queries.shape[0]
    rows = np.sort(rng.choice(nq, size=min(sample, nq), replace=False))
    q = take_rows(queries, rows)
    t = time.perf_counter()
    ev, ei = exact_search(q, database, k)
    t_exact = time.perf_counter() - t
    t = time.perf_counter()
    av, ai = index.search(q, k)
    t_approx = time.perf_counter() - t
    hits = (ai[:, :, None] == ei[:, None, :]) & (ei[:, None, :] >= 0)
    n_true = np.maximum((ei >= 0).sum(axis=1), 1)
    recall = float(np.mean(hits.any(axis=1).sum(axis=1) / n_true))
    b_exact = alpha * ev.mean(axis=1, dtype=np.float64)
    b_approx = _nnn_bias(av, alpha, k)
    err = np.abs(b_approx - b_exact)
    return ApproxReport(
        engine=index.engine,
        params=asdict(p),
        k=int(k),
        n_sample=int(rows.size),
        recall=recall,
        bias_mae=float(err.mean()),
        bias_max_error=float(err.max()),
        bias_rel_error=float(err.mean() / max(np.abs(b_exact).mean(), 1e-12)),
        exact_seconds=t_exact,
        approx_seconds=t_approx,
        build_seconds=index.build_seconds,
    )
