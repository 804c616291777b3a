"""``best``: pick the family member and its setting on the validation split, per direction.

Nested sweeps, test split untouched:

1. *inner*: every member's own grid is swept on the validation task
   (:func:`dehub.evaluation.sweep.sweep`, the same sweep every method gets), which
   chooses that member's setting;
2. *outer*: each member, at its chosen setting, is scored per validation query
   (exact first-relevant ranks), and compared with NNN by a paired bootstrap of the
   per-query difference in the selection metric (``n_bootstrap`` resamples, ``seed``).

Rule (does not chase noise): **keep NNN unless another member beats it on validation
by more than its paired-bootstrap CI**, i.e. the lower end of the ``confidence`` CI of
``member - NNN`` is above 0. Among the members that clear that bar, the one with the
largest validation value of the metric is chosen (ties: the earlier member in
``members``). Transductive members (tag ``transductive``, e.g. DSL) are never
candidates: ``best`` is a choice that can be deployed. Only the pick is then fitted on
the test gallery and evaluated; :class:`BestSelection` keeps every member's sweep
table and the comparison, so the report shows what was tried and why the pick won.

Selection metrics: ``R@K`` / ``success@K`` (a K of ``ks``) and ``MRR``.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..datasets.base import RetrievalTask
from ..engine.exact import DEFAULT_MEMORY_BUDGET
from ..methods import METHODS, get_tags
from .metrics import NoPositivePolicy, check_ks, dense_ranks
from .statistics import resample_indices
from .sweep import SweepResult, fit_selected, sweep

__all__ = ["BestSelection", "select_best_member", "default_members", "BASELINE"]

#: The member ``best`` keeps unless another one clearly beats it on validation.
BASELINE = "nnn"


def default_members() -> tuple[str, ...]:
    """Every registered, non-transductive method except ``plain`` (NNN first)."""
    names = [n for n in METHODS if n != "plain" and not get_tags(METHODS[n]).transductive]
    names.sort(key=lambda n: (n != BASELINE,))
    return tuple(names)


def _per_query(rank: np.ndarray, metric: str, ks: Sequence[int]) -> np.ndarray:
    """Per-query value of the selection metric from first-relevant ranks (1 = top)."""
    if metric == "MRR":
        return 1.0 / rank
    for prefix in ("R@", "success@"):
        if metric.startswith(prefix):
            k = int(metric[len(prefix) :])
            if k not in ks:
                break
            return (rank <= k).astype(np.float64)
    raise ValueError(f"best chooses by R@K / success@K (K in {list(ks)}) or MRR; received metric={metric!r}")


@dataclass
class BestSelection:
    """What :func:`select_best_member` chose on validation, and why.

    ``member``/``params``: the pick; ``reason``: one sentence; ``comparison``: one row
    per member (its chosen params, validation value, difference to NNN with its CI,
    whether it cleared the bar); ``sweeps``: every member's sweep table
    (``SweepResult.to_dict()``); ``sweep``: the pick's own :class:`SweepResult`.
    """

    member: str
    params: dict[str, Any]
    reason: str
    metric: str
    confidence: float
    n_bootstrap: int
    seed: int
    comparison: list[dict[str, Any]]
    sweeps: dict[str, dict[str, Any]]
    sweep: SweepResult
    seconds: float
    skipped: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "member": self.member,
            "params": self.params,
            "reason": self.reason,
            "rule": (
                f"keep {BASELINE} unless another member beats it on validation by more than "
                f"its paired-bootstrap {int(100 * self.confidence)}% CI (CI of member - {BASELINE} "
                "entirely above 0); among those, the largest validation value; transductive "
                "members are not candidates"
            ),
            "metric": self.metric,
            "confidence": self.confidence,
            "n_bootstrap": self.n_bootstrap,
            "seed": self.seed,
            "comparison": self.comparison,
            "sweeps": self.sweeps,
            "skipped": self.skipped,
            "seconds": self.seconds,
        }

    def summary_text(self) -> str:
        """The comparison as a fixed-width table plus the reason (for logs and reports)."""
        lines = [f"best: {self.member} {self.params or ''} -- {self.reason}"]
        lines.append(f"{'member':<18} {self.metric:>8} {'- ' + BASELINE:>8} {'CI':>19}  cleared  params")
        for row in self.comparison:
            ci = f"[{100 * row['ci_low']:+6.2f},{100 * row['ci_high']:+6.2f}]"
            lines.append(
                f"{row['member']:<18} {100 * row['value']:8.2f} {100 * row['delta']:+8.2f} {ci:>19}  "
                f"{'yes' if row['cleared'] else 'no ':<7}  {row['params']}"
            )
        for name, why in self.skipped.items():
            lines.append(f"{name:<18} skipped: {why}")
        return "\n".join(lines)


def select_best_member(
    task: RetrievalTask,
    reference,
    *,
    members: Sequence[str] | None = None,
    grids: dict[str, dict[str, list]] | None = None,
    metric: str = "R@1",
    ks: Sequence[int] = (1, 5, 10),
    no_positive: NoPositivePolicy = "exclude",
    n_bootstrap: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
    memory_budget: int = DEFAULT_MEMORY_BUDGET,
    progress: bool = False,
) -> BestSelection:
    """Choose the member and setting for one direction on its *validation* ``task``.

    Parameters
    ----------
    task : the validation task (queries, gallery, relevance) of one direction
    reference : the reference queries of that direction (the test fit uses the same)
    members : registered method names to choose from (default :func:`default_members`);
        must include ``"nnn"``. Transductive members are refused.
    grids : optional ``{member: grid}`` overriding each ``default_grid()``
    metric, ks, no_positive : as :func:`dehub.evaluation.sweep.sweep`
    n_bootstrap, confidence, seed : the paired bootstrap of member - NNN on validation
    """
    t0 = time.perf_counter()
    ks = check_ks(ks)
    members = list(dict.fromkeys(default_members() if members is None else members))
    unknown = [m for m in members if m not in METHODS]
    if unknown:
        raise ValueError(f"unknown members {unknown}; expected names from {sorted(METHODS)}")
    if BASELINE not in members:
        raise ValueError(f"best keeps {BASELINE!r} unless another member beats it: members must include it")
    trans = [m for m in members if get_tags(METHODS[m]).transductive]
    if trans:
        raise ValueError(f"best never picks a transductive method (it uses the test queries); remove {trans}")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1); received {confidence!r}")
    grids = dict(grids or {})
    rel = task.relevance
    keep = np.flatnonzero(rel.counts() > 0) if no_positive == "exclude" else np.arange(rel.n_queries)
    if keep.size == 0:
        raise ValueError("no validation query has a relevant item; best cannot compare members")

    sweeps: dict[str, SweepResult] = {}
    values: dict[str, np.ndarray] = {}
    skipped: dict[str, str] = {}
    queries = task.queries
    for m in members:
        if progress:
            print(f"[best] {m}: validation sweep", file=sys.stderr, flush=True)
        try:
            sw = sweep(
                m,
                task,
                reference,
                grid=grids.get(m),
                metric=metric,
                ks=ks,
                no_positive=no_positive,
                normalize="none",
                memory_budget=memory_budget,
            )
        except ValueError as exc:  # e.g. a grid whose every k exceeds a small reference
            if m == BASELINE:
                raise
            skipped[m] = str(exc)
            continue
        model = fit_selected(
            m, sw.best_params, task.gallery, reference, memory_budget=memory_budget, normalize="none"
        )

        def score_rows(rows: np.ndarray, model: Any = model) -> np.ndarray:
            return model.score(queries[rows], normalize="none")

        rank = dense_ranks(
            score_rows,
            rel.n_queries,
            rel,
            memory_budget=min(memory_budget, 256 * 2**20),
        )
        sweeps[m] = sw
        values[m] = _per_query(rank[keep].astype(np.float64), metric, ks)

    base = values[BASELINE]
    alpha = (1.0 - confidence) / 2.0
    # One set of resamples (same seed) for every member: paired and comparable.
    names = [m for m in members if m in values]
    diffs = np.stack([values[m] - base for m in names])  # (members, queries)
    boot = np.empty((len(names), n_bootstrap))
    done = 0
    for idx in resample_indices(keep.size, n_bootstrap, seed):
        boot[:, done : done + idx.shape[0]] = diffs[:, idx].mean(axis=2)
        done += idx.shape[0]
    comparison: list[dict[str, Any]] = []
    for j, m in enumerate(names):
        lo, hi = np.quantile(boot[j], [alpha, 1.0 - alpha]) if m != BASELINE else (0.0, 0.0)
        comparison.append(
            {
                "member": m,
                "params": sweeps[m].best_params,
                "value": float(values[m].mean()),
                "delta": float(diffs[j].mean()),
                "ci_low": float(lo),
                "ci_high": float(hi),
                "cleared": bool(m != BASELINE and lo > 0),
            }
        )
    cleared = [row for row in comparison if row["cleared"]]
    pct = f"{int(100 * confidence)}%"
    if cleared:
        pick = max(cleared, key=lambda row: (row["value"], -names.index(row["member"])))
        reason = (
            f"{pick['member']} beats {BASELINE} on validation {metric} by {100 * pick['delta']:+.2f} points, "
            f"paired-bootstrap {pct} CI [{100 * pick['ci_low']:+.2f}, {100 * pick['ci_high']:+.2f}] above 0"
            + (
                f"; the best validation {metric} of the {len(cleared)} members that clear the bar"
                if len(cleared) > 1
                else ""
            )
        )
    else:
        pick = comparison[names.index(BASELINE)]
        best_other = max(
            (r for r in comparison if r["member"] != BASELINE), key=lambda r: r["value"], default=None
        )
        reason = (
            f"no member beats {BASELINE} on validation {metric} by more than its paired-bootstrap {pct} CI"
        )
        if best_other is not None:
            reason += (
                f" (closest: {best_other['member']} {100 * best_other['delta']:+.2f} points, CI "
                f"[{100 * best_other['ci_low']:+.2f}, {100 * best_other['ci_high']:+.2f}])"
            )
    member = pick["member"]
    return BestSelection(
        member=member,
        params=dict(sweeps[member].best_params),
        reason=reason,
        metric=metric,
        confidence=float(confidence),
        n_bootstrap=int(n_bootstrap),
        seed=int(seed),
        comparison=comparison,
        sweeps={m: sw.to_dict() for m, sw in sweeps.items()},
        sweep=sweeps[member],
        seconds=time.perf_counter() - t0,
        skipped=skipped,
    )


#: The name ``run_evaluation`` / ``dehub eval --methods`` accept for this selection.
BEST = "best"


def best_for_protocol(
    task: RetrievalTask, reference, grids: dict[str, dict[str, list]] | None = None, **kwargs: Any
) -> tuple[SweepResult, str, dict[str, Any], dict[str, Any]]:
    """The hook of :func:`dehub.evaluation.protocol.run_evaluation` for ``"best"``.

    Returns ``(sweep, member, params, extra)``: a :class:`SweepResult` named ``best``
    whose table is the pick's own sweep (grid and rows) with a ``member`` column and whose
    ``best_params`` start with ``member`` (what the report prints), the member and
    params to fit on the test gallery, and ``{"best": selection.to_dict()}`` for the
    result data (every member's sweep table, the comparison and the reason).
    ``grids`` may hold one grid per member; ``kwargs`` go to :func:`select_best_member`.
    """
    kwargs.pop("progress", None)
    sel = select_best_member(task, reference, grids=grids, **kwargs)
    sw = sel.sweep
    shown = SweepResult(
        method=BEST,
        metric=sw.metric,
        grid=dict(sw.grid),
        table=[{"member": sel.member, **row} for row in sw.table],
        best_params={"member": sel.member, **sw.best_params},
        best_metrics=sw.best_metrics,
        best_index=sw.best_index,
        seconds=sel.seconds,
        n_without_positives=sw.n_without_positives,
    )
    return shown, sel.member, dict(sel.params), {"best": sel.to_dict()}
