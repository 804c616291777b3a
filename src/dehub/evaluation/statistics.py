"""Paired bootstrap confidence intervals for retrieval metrics and their differences.

Method (percentile bootstrap over queries, paired):

1. Draw ``n_resamples`` resamples of the evaluated queries, each ``n`` query positions
   drawn uniformly with replacement, from ``np.random.default_rng(seed)`` (in fixed
   chunks of :data:`CHUNK` resamples, so the draws depend only on ``seed``, ``n`` and
   ``n_resamples``: results are bit-for-bit reproducible).
2. The *same* resample is applied to every method being compared (paired design: the
   per-query outcomes of two methods on the same query stay together, which removes the
   between-query variance from the difference).
3. For each resample: every mean metric (R@K, MRR, mean rank) is the mean of the
   resampled per-query outcomes; the median rank their median. Differences are
   ``other - base`` per resample.
4. The ``confidence`` interval is the ``(1 - confidence)/2`` and ``(1 + confidence)/2``
   quantiles of the resampled values (numpy's default linear interpolation).

Also reported: ``p_boot``, twice the smaller share of resampled differences on either
side of zero (a rough two-sided bootstrap p-value, capped at 1), and ``n_crossing``, the
number of resamples on the smaller side. With ``n_crossing == 0`` the bootstrap can only
say ``p < 1/(B+1)`` (``p_floor``, B resamples): reports print that, never ``p = 0``.

Vectorized: a chunk of resamples is one ``(chunk, n)`` index matrix; its draw counts per
query times the ``(n_metrics, n)`` outcome matrix give every resampled mean in one matrix
product (no gather of ``n_metrics x chunk x n`` values, no Python loop over resamples).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from .._errors import InputError
from .metrics import QueryOutcomes

__all__ = [
    "CHUNK",
    "resample_indices",
    "bootstrap_distribution",
    "paired_bootstrap",
    "bootstrap_comparisons",
]

#: Resamples drawn per chunk (fixed: changing it changes the random stream).
CHUNK = 128


def _check(n_resamples: int, confidence: float) -> None:
    if isinstance(n_resamples, bool) or not isinstance(n_resamples, (int, np.integer)) or n_resamples < 1:
        raise InputError(f"n_resamples must be a positive integer; received {n_resamples!r}")
    if not 0 < confidence < 1:
        raise InputError(f"confidence must be in (0, 1), e.g. 0.95; received {confidence!r}")


def resample_indices(n: int, n_resamples: int, seed: int):
    """Yield ``(chunk, n)`` int64 matrices of query positions, ``n_resamples`` rows in all."""
    rng = np.random.default_rng(seed)
    done = 0
    while done < n_resamples:
        c = min(CHUNK, n_resamples - done)
        yield rng.integers(0, n, size=(c, n), dtype=np.int64)
        done += c


def _as_arrays(outcomes: QueryOutcomes | Mapping[str, np.ndarray]):
    if isinstance(outcomes, QueryOutcomes):
        values = dict(outcomes.values)
        rank = outcomes.rank if outcomes.rank_exact else None
        rows = outcomes.query_rows
    else:
        values = {k: np.asarray(v, dtype=np.float64) for k, v in outcomes.items()}
        rank, rows = None, None
    return values, rank, rows


def bootstrap_distribution(
    outcomes: Mapping[str, QueryOutcomes | Mapping[str, np.ndarray]],
    n_resamples: int = 1000,
    seed: int = 0,
) -> dict[str, dict[str, np.ndarray]]:
    """Resampled metric values of several methods under the same resamples.

    ``outcomes`` maps a method name to its per-query outcomes (a :class:`QueryOutcomes`
    or ``{metric: per-query array}``), all over the same queries in the same order.
    Returns ``{method: {metric: (n_resamples,) array}}``; ``median_rank`` is included
    when exact ranks are available.
    """
    _check(n_resamples, 0.5)
    if not outcomes:
        raise InputError("outcomes must hold at least one method")
    prepared = {name: _as_arrays(o) for name, o in outcomes.items()}
    sizes = {name: next(iter(v.values())).size for name, (v, _, _) in prepared.items()}
    if len(set(sizes.values())) != 1:
        raise InputError(
            f"paired bootstrap needs the same queries for every method; received per-query "
            f"array lengths {sizes}"
        )
    rows = [r for (_, _, r) in prepared.values() if r is not None]
    if any(not np.array_equal(rows[0], r) for r in rows[1:]):
        raise InputError("paired bootstrap needs the same evaluated query rows for every method")
    n = next(iter(sizes.values()))
    if n == 0:
        raise InputError("no evaluated queries to resample (every query lacks a relevant item?)")
    mats = {}
    for name, (values, rank, _) in prepared.items():
        names = list(values)
        mats[name] = (names, np.stack([values[m] for m in names]), rank)
    out = {
        name: {m: np.empty(n_resamples) for m in names + (["median_rank"] if rank is not None else [])}
        for name, (names, _, rank) in mats.items()
    }
    done = 0
    for idx in resample_indices(n, n_resamples, seed):
        c = idx.shape[0]
        sl = slice(done, done + c)
        # how often each query is drawn in each resample: the resampled means are then one
        # small GEMM (c, n) @ (n, n_metrics) instead of a (n_metrics, c, n) gather
        offsets = (np.arange(c, dtype=np.int64) * n)[:, None]
        weights = np.bincount((idx + offsets).ravel(), minlength=c * n).reshape(c, n).astype(np.float64)
        for name, (names, mat, rank) in mats.items():
            means = (weights @ mat.T).T / n
            for j, m in enumerate(names):
                out[name][m][sl] = means[j]
            if rank is not None:
                out[name]["median_rank"][sl] = np.median(rank[idx], axis=1)
        done += idx.shape[0]
    return out


def _interval(samples: np.ndarray, confidence: float) -> tuple[float, float]:
    lo, hi = np.quantile(samples, [(1 - confidence) / 2, (1 + confidence) / 2])
    return float(lo), float(hi)


def _point(o) -> dict[str, float]:
    if isinstance(o, QueryOutcomes):
        return o.summary()
    return {k: float(np.mean(v)) for k, v in o.items()}


def paired_bootstrap(
    base: QueryOutcomes | Mapping[str, np.ndarray],
    other: QueryOutcomes | Mapping[str, np.ndarray],
    n_resamples: int = 1000,
    seed: int = 0,
    confidence: float = 0.95,
) -> dict:
    """Paired bootstrap CI of ``other - base`` for every metric the two share.

    Returns ``{"n_resamples", "seed", "confidence", "metrics": {metric: {"base",
    "other", "delta", "ci_low", "ci_high", "p_boot"}}}``.
    """
    res = bootstrap_comparisons(
        {"base": base, "other": other}, [("base", "other")], n_resamples, seed, confidence
    )
    return {
        "n_resamples": res["n_resamples"],
        "seed": res["seed"],
        "confidence": res["confidence"],
        "metrics": res["differences"]["other - base"],
    }


def bootstrap_comparisons(
    outcomes: Mapping[str, QueryOutcomes | Mapping[str, np.ndarray]],
    pairs: Sequence[tuple[str, str]],
    n_resamples: int = 1000,
    seed: int = 0,
    confidence: float = 0.95,
) -> dict:
    """CIs of every method's metrics and of the differences ``other - base`` of ``pairs``.

    One set of resamples serves every method and every pair. Returns
    ``{"n_resamples", "seed", "confidence", "per_method": {method: {metric: {"value",
    "ci_low", "ci_high"}}}, "differences": {"<other> - <base>": {metric: {...}}}}``.
    """
    _check(n_resamples, confidence)
    for base, other in pairs:
        for name in (base, other):
            if name not in outcomes:
                raise InputError(f"comparison names method {name!r}, not among {sorted(outcomes)}")
    dist = bootstrap_distribution(outcomes, n_resamples, seed)
    points = {name: _point(o) for name, o in outcomes.items()}
    per_method: dict[str, dict[str, dict[str, float]]] = {}
    for name, metrics in dist.items():
        per_method[name] = {}
        for m, samples in metrics.items():
            lo, hi = _interval(samples, confidence)
            per_method[name][m] = {"value": points[name][m], "ci_low": lo, "ci_high": hi}
    diffs = {}
    for base, other in pairs:
        shared = [m for m in dist[base] if m in dist[other]]
        entry = {}
        for m in shared:
            d = dist[other][m] - dist[base][m]
            lo, hi = _interval(d, confidence)
            crossing = int(min(np.count_nonzero(d <= 0), np.count_nonzero(d >= 0)))
            p = min(1.0, 2 * crossing / d.size)
            entry[m] = {
                "base": points[base][m],
                "other": points[other][m],
                "delta": points[other][m] - points[base][m],
                "ci_low": lo,
                "ci_high": hi,
                "p_boot": p,
                "n_crossing": crossing,
                "p_floor": 1.0 / (d.size + 1),
            }
        diffs[f"{other} - {base}"] = entry
    return {
        "method": "paired percentile bootstrap over queries",
        "n_resamples": int(n_resamples),
        "seed": int(seed),
        "confidence": float(confidence),
        "per_method": per_method,
        "differences": diffs,
    }
