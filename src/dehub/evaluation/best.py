"""``best``: pick the family member and its setting on the validation split, per direction.

Nested sweeps, test split untouched:

1. *inner*: every member's own grid is swept on the validation task
   (:func:`dehub.evaluation.sweep.sweep`, the same sweep every method gets), which
   chooses that member's setting;
2. *outer*: each member, at its chosen setting, is scored per validation query
   (exact first-relevant ranks), and compared with NNN by a paired bootstrap of the
   per-query difference in the selection metric (``n_bootstrap`` resamples, ``seed``).

Rule (does not chase noise, and diagnoses before correcting): "no correction" (``plain``)
is always a candidate and **is kept unless a member beats it on validation by more than
its paired-bootstrap CI**, i.e. the lower end of the ``confidence`` CI of
``member - plain`` is above 0. A correction can hurt: where the hubs are popular right
answers (one item is the right answer for many queries), pushing them down costs
accuracy, and ``best`` then keeps plain; :class:`BestSelection` records the top hubs'
precision on validation (how many of their top-1 wins are right,
:func:`~dehub.evaluation.hubness.hub_precision`) and its reason says so. Among the members that clear that bar, the one with the
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
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from .._errors import InputError
from .._validation import check_embeddings, compute_dtype
from ..datasets.base import RetrievalTask
from ..engine.exact import DEFAULT_MEMORY_BUDGET, exact_search
from ..methods import METHODS, SharedScores, SweepShape, get_tags
from .hubness import hub_precision, hub_precision_text
from .metrics import NoPositivePolicy, check_ks
from .statistics import resample_indices
from .sweep import AdditiveRanker, SweepResult, TimeLimitExceeded, sweep

__all__ = ["BestSelection", "select_best_member", "default_members", "BASELINE", "DEFAULT_BUDGET"]

#: Bank methods that equal another member exactly when given no gallery bank (not run twice).
SAME_WITHOUT_BANK = {"dbsn": "sn"}

#: The candidate ``best`` keeps unless another one clearly beats it on validation: no correction.
BASELINE = "plain"


#: A member whose sweep the cost model estimates at more than this many NNN sweeps is skipped (named).
DEFAULT_BUDGET = 3.0


def default_members() -> tuple[str, ...]:
    """Every registered, non-transductive method: ``plain`` (no correction) first, then NNN."""
    names = [n for n in METHODS if not get_tags(METHODS[n]).transductive]
    names.sort(key=lambda n: (n != BASELINE, n != "nnn"))
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
    raise InputError(f"best chooses by R@K / success@K (K in {list(ks)}) or MRR; received metric={metric!r}")


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
    hubs: dict[str, Any] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)
    estimates: dict[str, float | None] = field(default_factory=dict)
    shared_passes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "member": self.member,
            "params": self.params,
            "reason": self.reason,
            "rule": (
                f"keep {BASELINE} (no correction) unless another member beats it on validation by "
                f"more than its paired-bootstrap {int(100 * self.confidence)}% CI (CI of member - "
                f"{BASELINE} entirely above 0); among those, the largest validation value; "
                "transductive members are not candidates"
            ),
            "metric": self.metric,
            "confidence": self.confidence,
            "n_bootstrap": self.n_bootstrap,
            "seed": self.seed,
            "comparison": self.comparison,
            "sweeps": self.sweeps,
            "skipped": self.skipped,
            "hubs": self.hubs,
            "member_seconds": self.timings,
            "member_cost_estimates": self.estimates,
            "shared_passes": self.shared_passes,
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
        if self.hubs:
            lines.append(hub_precision_text(self.hubs, "validation, no correction: the top hubs"))
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
    budget: float | None = DEFAULT_BUDGET,
    include: Sequence[str] = (),
    fit_inputs: dict[str, dict[str, Any]] | None = None,
    memory_budget: int = DEFAULT_MEMORY_BUDGET,
    progress: bool = False,
) -> BestSelection:
    """Choose the member and setting for one direction on its *validation* ``task``.

    Parameters
    ----------
    task : the validation task (queries, gallery, relevance) of one direction
    reference : the reference queries of that direction (the test fit uses the same)
    members : registered method names to choose from (default :func:`default_members`);
        ``"plain"`` (no correction) is always added. Transductive members are refused.
    grids : optional ``{member: grid}`` overriding each ``default_grid()``
    metric, ks, no_positive : as :func:`dehub.evaluation.sweep.sweep`
    n_bootstrap, confidence, seed : the paired bootstrap of member - plain on validation
    budget : a member whose sweep the cost model (each method's ``sweep_work`` from the
        shapes, :mod:`dehub.methods._cost`) estimates at more than ``budget`` times NNN's
        sweep is skipped BEFORE running and named in ``skipped``; a member that runs is
        still stopped (and named) if its sweep is projected past ``_SLACK`` times that
        (a model far off). None: no budget. NNN itself and ``plain`` are never skipped.
    include : members exempt from the budget.
    fit_inputs : extra ``fit`` keywords per member (e.g. ``{"dbsn": {"gallery_bank": x}}``).
        DBSN without a ``gallery_bank`` is SN exactly and is skipped as such.

    Shared work: the validation query x gallery scores are computed once and serve every
    member whose correction is an offset (each setting subtracts its offsets) or a
    gated offset (the dynamic inverted softmax); one :class:`~dehub.methods.SharedScores`
    holds the reference and bank passes (the reference top-k of NNN, its variants and
    CSLS; the bank log-sum-exps and activation sets of QB-Norm and DBNorm), each
    computed once and read by every member that can (``fit_grid_from_shared``, equal
    to its ``fit_grid``). The chosen setting's validation ranks come from the member's
    own sweep (no refit).
    """
    t0 = time.perf_counter()
    ks = check_ks(ks)
    members = list(dict.fromkeys([BASELINE, *(default_members() if members is None else members)]))
    unknown = [m for m in members if m not in METHODS]
    if unknown:
        raise InputError(f"unknown members {unknown}; expected names from {sorted(METHODS)}")
    trans = [m for m in members if get_tags(METHODS[m]).transductive]
    if trans:
        raise InputError(f"best never picks a transductive method (it uses the test queries); remove {trans}")
    if not 0 < confidence < 1:
        raise InputError(f"confidence must be in (0, 1); received {confidence!r}")
    if budget is not None and not budget > 0:
        raise InputError(
            f"budget must be a positive multiple of NNN's sweep time or None; received {budget!r}"
        )
    grids = dict(grids or {})
    fit_inputs = dict(fit_inputs or {})
    rel = task.relevance
    keep = np.flatnonzero(rel.counts() > 0) if no_positive == "exclude" else np.arange(rel.n_queries)
    if keep.size == 0:
        raise InputError("no validation query has a relevant item; best cannot compare members")

    queries = check_embeddings(task.queries, "validation queries")
    gallery = check_embeddings(task.gallery, "validation gallery")
    n_q, n_g = rel.n_queries, rel.n_gallery
    dense = ranker = None
    if n_q * n_g * 4 <= memory_budget:  # shared by every offset member's sweep
        dt = compute_dtype(queries, gallery)
        dense = np.matmul(np.asarray(queries, dtype=dt), np.asarray(gallery, dtype=dt).T)
        ranker = AdditiveRanker(dense, rel)  # a bias two members share is ranked once

    banks = [
        fit_inputs[m]["gallery_bank"]
        for m in members
        if fit_inputs.get(m, {}).get("gallery_bank") is not None
    ]
    shared = SharedScores(
        gallery,
        check_embeddings(reference, "reference"),
        gallery_bank=banks[0] if banks and all(b is banks[0] for b in banks) else None,
        memory_budget=memory_budget,
    )

    sweeps: dict[str, SweepResult] = {}
    values: dict[str, np.ndarray] = {}
    skipped: dict[str, str] = {}
    seconds: dict[str, float] = {}
    estimates: dict[str, float | None] = {}
    base_shape = SweepShape(n_q, n_g, int(np.shape(reference)[0]), n_g, int(gallery.shape[1]))
    nnn_work = METHODS["nnn"]().sweep_work(base_shape, grids.get("nnn"))
    nnn_cost = max(nnn_work.cost() if nnn_work is not None else 1.0, 1e-9)
    ordered = [m for m in members if m in (BASELINE, "nnn")] + [
        m for m in members if m not in (BASELINE, "nnn")
    ]
    for m in ordered:
        extra_fit = dict(fit_inputs.get(m, {}))
        twin = SAME_WITHOUT_BANK.get(m)
        if twin is not None and extra_fit.get("gallery_bank") is None and twin in members:
            skipped[m] = (
                f"no gallery bank: {m.upper()} without a bank is {twin.upper()} exactly (not run twice)"
            )
            continue
        limit = None
        if budget is not None and m not in (BASELINE, "nnn") and m not in include:
            model = METHODS[m]()
            bank = extra_fit.get("gallery_bank")
            shape = replace(base_shape, n_bank=n_g if bank is None else int(np.shape(bank)[0]))
            work = model.sweep_work(shape, grids.get(m))
            ratio = None if work is None else work.cost() / nnn_cost
            estimates[m] = ratio
            if ratio is not None and ratio > budget:
                skipped[m] = (
                    f"over the cost budget: its sweep is estimated from the shapes at "
                    f"{ratio:.1f} x NNN's sweep (dehub.methods cost model, before running), "
                    f"more than the budget of {budget:g}; pass include=[{m!r}] "
                    f"(dehub eval --best-include {m}) to run it"
                )
                continue
            if "nnn" in seconds:  # safety net where the model is far off: stop past SLACK x budget
                limit = _SLACK * float(budget) * max(seconds["nnn"], 0.5)
        if progress:
            print(f"[best] {m}: validation sweep", file=sys.stderr, flush=True)
        ts = time.perf_counter()
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
                similarity=dense,
                ranker=ranker,
                time_limit=limit,
                fit_kwargs=extra_fit,
                shared=shared,
            )
        except TimeLimitExceeded as exc:
            skipped[m] = (
                f"over the cost budget: while running, its sweep was projected at {exc.projected:.1f} s, "
                f"more than {_SLACK:g} x {budget:g} x NNN's sweep ({seconds['nnn']:.1f} s; the cost model "
                f"had estimated {estimates.get(m) or float('nan'):.1f} x); pass include=[{m!r}] "
                f"(dehub eval --best-include {m}) to run it"
            )
            continue
        except ValueError as exc:  # e.g. a grid whose every k exceeds a small reference
            if m in (BASELINE, "nnn"):
                raise
            skipped[m] = str(exc)
            continue
        seconds[m] = time.perf_counter() - ts
        rank = sw.extra["best_ranks"]
        sweeps[m] = sw
        values[m] = _per_query(rank[keep].astype(np.float64), metric, ks)

    # How right are the top hubs when nothing is corrected (relevance is known here)?
    top1 = _plain_top1(dense, queries, gallery)
    hubs = hub_precision(top1[keep], rel.is_relevant(keep, top1[keep, None])[:, 0], n_g)

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
                "seconds": seconds.get(m),
            }
        )
    cleared = [row for row in comparison if row["cleared"]]
    pct = f"{int(100 * confidence)}%"
    if cleared:
        pick = max(cleared, key=lambda row: (row["value"], -names.index(row["member"])))
        reason = (
            f"{pick['member']} beats no correction ({BASELINE}) on validation {metric} by "
            f"{100 * pick['delta']:+.2f} points, paired-bootstrap {pct} CI "
            f"[{100 * pick['ci_low']:+.2f}, {100 * pick['ci_high']:+.2f}] above 0"
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
            f"no correction is kept: no member beats {BASELINE} on validation {metric} by more than "
            f"its paired-bootstrap {pct} CI"
        )
        if best_other is not None:
            reason += (
                f" (closest: {best_other['member']} {100 * best_other['delta']:+.2f} points, CI "
                f"[{100 * best_other['ci_low']:+.2f}, {100 * best_other['ci_high']:+.2f}])"
            )
        if hubs["mostly_right"]:
            reason += "; " + hub_precision_text(hubs, "the top hubs")
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
        hubs=hubs,
        timings=seconds,
        estimates=estimates,
        shared_passes=list(shared.passes)
        + ([f"offsets ranked once: {ranker.reused} repeated biases read back"] if ranker is not None else []),
    )


#: A running member is stopped when its projected sweep passes this many times its budget
#: (the cost model decided to run it; this only catches a model that is far off).
_SLACK = 3.0


def _plain_top1(dense: np.ndarray | None, queries: np.ndarray, gallery: np.ndarray) -> np.ndarray:
    """Each query's uncorrected top-1 gallery row (ties: the smaller row, as the engine)."""
    if dense is not None:
        return np.argmax(dense, axis=1).astype(np.int64)
    return exact_search(queries, gallery, 1)[1][:, 0]


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
