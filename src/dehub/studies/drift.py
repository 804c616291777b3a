"""Drift: are live queries like the reference bank?

NNN's bias is the mean similarity of an item to its nearest *reference* queries; it
helps when the bank is drawn like the queries and helps less (the paper: use a smaller
alpha, 0.25-0.5) when it is not. The statistic here is each query's similarity to its
nearest bank row. A held-out part of the reference (``holdout`` of its rows, drawn with
``seed``) is the null sample: its nearest-bank similarities are what in-distribution
queries look like against the rest of the bank. Live queries are compared with it by a
two-sample Kolmogorov-Smirnov test (scipy's exact/asymptotic ``ks_2samp`` when scipy is
installed; otherwise the asymptotic Kolmogorov distribution, implemented here). A
warning is raised when ``p < level`` and the live queries are *farther* from the bank
(their median nearest similarity lower than the held-out one).
"""

from __future__ import annotations

import math
import time
from typing import Any

import numpy as np

from .._errors import InputError
from ..evaluation.metrics import first_relevant_rank_topk
from ..methods import NNN
from ._common import fit_method, paired_ci, wilson_interval

__all__ = [
    "OOD_ALPHA_RANGE",
    "nearest_similarity",
    "ks_two_sample",
    "DriftMonitor",
    "false_alarm_rate",
    "run_drift_study",
]

#: The paper's alpha range for out-of-distribution reference sets.
OOD_ALPHA_RANGE = (0.25, 0.5)


def nearest_similarity(queries: np.ndarray, bank: np.ndarray, block: int = 4096) -> np.ndarray:
    """Each query's largest inner product with a bank row."""
    q = np.asarray(queries, dtype=np.float32)
    b = np.asarray(bank, dtype=np.float32)
    out = np.empty(q.shape[0], dtype=np.float64)
    for s in range(0, q.shape[0], block):
        out[s : s + block] = (q[s : s + block] @ b.T).max(axis=1)
    return out


def _kolmogorov_sf(x: float) -> float:
    """P(K > x) of the Kolmogorov distribution (alternating series)."""
    if x <= 0:
        return 1.0
    total = 0.0
    for j in range(1, 101):
        term = 2 * (-1) ** (j - 1) * math.exp(-2 * j * j * x * x)
        total += term
        if abs(term) < 1e-16:
            break
    return float(min(1.0, max(0.0, total)))


def ks_two_sample(x: np.ndarray, y: np.ndarray, *, use_scipy: bool = True) -> tuple[float, float]:
    """Two-sided two-sample KS statistic and p-value."""
    x = np.sort(np.asarray(x, dtype=np.float64))
    y = np.sort(np.asarray(y, dtype=np.float64))
    if x.size == 0 or y.size == 0:
        raise InputError(f"the KS test needs two non-empty samples; received sizes {x.size} and {y.size}")
    if use_scipy:
        try:
            from scipy.stats import ks_2samp
        except ImportError:
            pass
        else:
            r = ks_2samp(x, y)
            return float(r.statistic), float(r.pvalue)
    grid = np.concatenate([x, y])
    d = float(
        np.max(
            np.abs(np.searchsorted(x, grid, "right") / x.size - np.searchsorted(y, grid, "right") / y.size)
        )
    )
    en = math.sqrt(x.size * y.size / (x.size + y.size))
    # Stephens' small-sample correction of the asymptotic distribution
    return d, _kolmogorov_sf((en + 0.12 + 0.11 / en) * d)


class DriftMonitor:
    """Compare live queries with a reference bank.

    Parameters
    ----------
    holdout : float
        Share of the reference rows held out as the null sample (the rest is the bank).
    level : float
        Significance level of the KS test.
    max_null : int
        At most this many held-out rows are used (the test's power grows with n; a
        few thousand is enough to see a shift that matters).
    seed : int
        Seed of the held-out draw.
    """

    def __init__(
        self, holdout: float = 0.2, level: float = 0.01, max_null: int = 4000, seed: int = 0
    ) -> None:
        if not 0 < holdout < 1:
            raise InputError(f"holdout must be in (0, 1); received {holdout}")
        if not 0 < level < 1:
            raise InputError(f"level must be in (0, 1); received {level}")
        self.holdout = holdout
        self.level = level
        self.max_null = max_null
        self.seed = seed

    def fit(self, reference: np.ndarray) -> DriftMonitor:
        ref = np.asarray(reference, dtype=np.float32)
        n_out = max(1, min(self.max_null, int(round(self.holdout * ref.shape[0]))))
        if ref.shape[0] - n_out < 1:
            raise InputError(
                f"the reference needs at least 2 rows for a held-out split; received {ref.shape[0]}"
            )
        perm = np.random.default_rng(self.seed).permutation(ref.shape[0])
        self.bank_ = ref[np.sort(perm[n_out:])]
        self.null_ = nearest_similarity(ref[np.sort(perm[:n_out])], self.bank_)
        return self

    def check(self, queries: np.ndarray, *, max_queries: int | None = 4000) -> dict[str, Any]:
        """KS test of the live queries' nearest-bank similarities against the null."""
        q = np.asarray(queries, dtype=np.float32)
        if max_queries is not None and q.shape[0] > max_queries:
            q = q[
                np.sort(np.random.default_rng(self.seed + 1).choice(q.shape[0], max_queries, replace=False))
            ]
        live = nearest_similarity(q, self.bank_)
        d, p = ks_two_sample(live, self.null_)
        farther = bool(np.median(live) < np.median(self.null_))
        warn = bool(p < self.level and farther)
        return {
            "n_live": int(live.size),
            "n_null": int(self.null_.size),
            "ks_statistic": d,
            "p_value": p,
            "level": self.level,
            "live_median": float(np.median(live)),
            "null_median": float(np.median(self.null_)),
            "live_quartiles": [float(v) for v in np.quantile(live, [0.25, 0.5, 0.75])],
            "null_quartiles": [float(v) for v in np.quantile(self.null_, [0.25, 0.5, 0.75])],
            "out_of_distribution": warn,
            "advice": (
                f"live queries are farther from the reference bank than its own held-out rows "
                f"(KS D = {d:.3f}, p = {p:.2g}): the bank looks out of distribution; the paper's "
                f"out-of-distribution setting uses alpha in {OOD_ALPHA_RANGE[0]}-{OOD_ALPHA_RANGE[1]}, "
                "or re-draw the bank from recent queries"
                if warn
                else "no evidence that the live queries are farther from the bank than its held-out rows"
            ),
            "_live": live,
        }


def false_alarm_rate(
    pool: np.ndarray,
    *,
    n_trials: int = 200,
    n_reference: int = 600,
    n_live: int = 200,
    level: float = 0.05,
    seed: int = 0,
) -> dict[str, Any]:
    """Share of same-distribution trials the two-sided KS test rejects at ``level``.

    Each trial draws a reference and a disjoint live sample from ``pool`` (rows of one
    distribution), fits a :class:`DriftMonitor` and tests; the rate should be near
    ``level`` (a Wilson interval is returned)."""

    rng = np.random.default_rng(seed)
    pool = np.asarray(pool, dtype=np.float32)
    if pool.shape[0] < n_reference + n_live:
        raise InputError(f"pool has {pool.shape[0]} rows; need n_reference + n_live = {n_reference + n_live}")
    rejects = 0
    for t in range(n_trials):
        perm = rng.permutation(pool.shape[0])
        mon = DriftMonitor(holdout=0.25, level=level, max_null=10**9, seed=t).fit(pool[perm[:n_reference]])
        live = nearest_similarity(pool[perm[n_reference : n_reference + n_live]], mon.bank_)
        rejects += ks_two_sample(live, mon.null_)[1] < level
    lo, hi = wilson_interval(int(rejects), n_trials)
    return {"level": level, "n_trials": n_trials, "rate": rejects / n_trials, "ci_low": lo, "ci_high": hi}


def run_drift_study(
    bench: Any, *, seed: int = 0, n_false_alarm_trials: int = 100, progress: bool = False
) -> dict[str, Any]:
    """Drift checks of several query sets against the definition bank (a2b) and the NNN
    gain that goes with each, plus the false-alarm rate on same-distribution splits."""

    t0 = time.perf_counter()
    ref_a = bench.reference_for("a2b")
    mon = DriftMonitor(seed=seed).fit(ref_a)
    checks: dict[str, Any] = {}
    for name, q in (
        (f"test {bench.a_name}s (in distribution)", bench.test.a),
        (f"validation {bench.a_name}s (in distribution)", bench.validation.a),
        (f"test {bench.b_name}s (the other side: out of distribution)", bench.test.b),
    ):
        r = mon.check(q)
        r.pop("_live")
        checks[name] = r
    # the gain NNN gives on test a2b with an in-distribution bank vs the other side's bank
    task = bench.test.task("a2b")
    rows = np.flatnonzero(task.relevance.counts() > 0)
    sub = task.relevance.subset(rows)

    def s1(model: Any) -> np.ndarray:
        ids = model.search(task.queries[rows], 1, normalize="none")[1]
        return (first_relevant_rank_topk(ids, sub) == 1).astype(np.float64)

    arms = {"plain": s1(fit_method("plain", task.gallery, ref_a))}

    # the other side's reference rows serve as an out-of-distribution bank, where the
    # benchmark has them (embedding-file benchmarks hold one direction only)
    ref_b = bench.reference_for("b2a")
    has_ood = ref_b.shape[0] >= 16
    for alpha in (0.25, 0.5, 0.75):
        arms[f"nnn alpha={alpha}, in-distribution bank"] = s1(
            NNN(k=16, alpha=alpha).fit(task.gallery, ref_a, normalize="none")
        )
        if has_ood:
            arms[f"nnn alpha={alpha}, out-of-distribution bank"] = s1(
                NNN(k=16, alpha=alpha).fit(task.gallery, ref_b, normalize="none")
            )
    ood_check = mon.check(ref_b) if has_ood else None
    if ood_check is not None:
        ood_check.pop("_live")
    n_pool = bench.reference.a.shape[0]
    fa = (
        false_alarm_rate(
            bench.reference.a,
            n_trials=n_false_alarm_trials,
            n_reference=min(600, 3 * n_pool // 5),
            n_live=min(200, n_pool // 5),
            level=0.05,
            seed=seed,
        )
        if n_pool >= 50
        else None
    )
    out = {
        "statistic": "similarity of each query to its nearest reference row; two-sample KS vs held-out reference rows",
        "n_bank": int(mon.bank_.shape[0]),
        "checks": checks,
        "ood_bank_check": ood_check,
        "gain_by_bank": paired_ci(arms, [("plain", a) for a in arms if a != "plain"], 1000, seed),
        "false_alarm": fa,
        "ood_alpha_range": list(OOD_ALPHA_RANGE),
    }
    out["runtime_seconds"] = time.perf_counter() - t0
    if progress:
        print(f"[drift] done ({out['runtime_seconds']:.1f} s)", flush=True)
    return out
