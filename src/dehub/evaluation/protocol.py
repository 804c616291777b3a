"""The whole evaluation protocol of the paper, on any :class:`PairedBenchmark`.

For each direction (``a2b``: queries from side a, gallery side b; ``b2a`` the reverse)
and each method:

1. sweep the method's grid on the **validation** split, with the reference set of that
   direction (``benchmark.reference_for(direction)``), choose by ``metric``;
2. fit the chosen setting with the **test** gallery and the same reference set;
3. search the test queries (top ``max(ks, hub_ks)``), compute success@K, recall@K and
   nDCG@K from the search result and the exact rank of every positive beyond it (mAP@R,
   MRR, mean/median rank) from dense scores;
4. hubness of the test ranking (k-occurrence at each ``hub_k``), the top hubs (with
   their texts where the benchmark has them), exact duplicate gallery rows (their
   k-occurrence depends on the tie rule), and pairs of methods whose test rankings are
   identical (e.g. DBNorm whose chosen beta2 is 0 is QB-Norm);

5. the top hubs' precision where relevance is known: how many of each method's top-1
   wins of its most-won items are right answers, with a note when, uncorrected, the
   hubs are mostly right answers (then correcting them is likely to hurt);

Gallery banks: methods that take one (tag ``gallery_bank``: DBNorm, DN, InvGC, DBSN)
get ``gallery_banks`` (default ``"natural"``: the reference split's gallery side, e.g.
the reference lemmas when lemmas are the gallery) in the sweep and the test fit alike,
and every method's entry says which bank it used. A bank method without a bank says so;
DBSN without a bank is SN exactly and is not run as a second copy of it.

then paired bootstrap CIs of every method's metrics and of the differences
``method - plain`` (and ``method - nnn`` for the other methods), one set of resamples per
direction, seeded by ``seed``. Only the chosen setting is evaluated on test.
"""

from __future__ import annotations

import platform
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from .._errors import InputError
from .._validation import NormalizeMode
from .._version import __version__
from ..datasets.base import Direction, PairedBenchmark, RetrievalTask
from ..datasets.overlap import count_shared_rows
from ..engine.exact import DEFAULT_MEMORY_BUDGET
from ..engine.tuning import tuning_report
from ..methods import METHODS, ExcludedIds, ExcludedRows, check_excluded, get_tags
from .best import BEST, DEFAULT_BUDGET, SAME_WITHOUT_BANK, best_for_protocol  # issue 14: the 'best' hook
from .findings import duplicate_groups, hub_notes, identical_rankings, ranking_notes, top_hubs
from .hubness import hub_precision, k_occurrence, occurrence_histogram, occurrence_stats
from .inputs import GalleryBanks, check_benchmark, gallery_bank_for, method_parameters, normalized_benchmark
from .metrics import (
    NoPositivePolicy,
    QueryOutcomes,
    canonical_metric,
    check_ks,
    dense_positive_ranks,
    evaluate_topk,
    metric_names,
)
from .result import EvaluationResult
from .statistics import bootstrap_comparisons
from .sweep import SweepResult, fit_selected, sweep

#: ``EvaluationResult``, ``check_benchmark``, ``method_parameters``, ``gallery_bank_for`` and
#: ``duplicate_groups`` live in :mod:`.result`, :mod:`.inputs` and :mod:`.findings`; named here too,
#: where they were first imported from.
__all__ = [
    "run_evaluation",
    "EvaluationResult",
    "check_benchmark",
    "method_parameters",
    "gallery_bank_for",
    "duplicate_groups",
]


def _log(progress: bool, msg: str) -> None:
    if progress:
        print(msg, file=sys.stderr, flush=True)


def _comparisons(methods: Sequence[str]) -> list[tuple[str, str]]:
    pairs = []
    for m in methods:
        if m != "plain" and "plain" in methods:
            pairs.append(("plain", m))
        if m not in ("plain", "nnn") and "nnn" in methods:
            pairs.append(("nnn", m))
    return pairs


def run_evaluation(
    benchmark: PairedBenchmark,
    methods: Sequence[str] = ("plain", "nnn"),
    directions: Sequence[Direction] = ("a2b", "b2a"),
    ks: Sequence[int] = (1, 5, 10),
    n_bootstrap: int = 1000,
    seed: int = 0,
    *,
    metric: str = "success@1",
    grids: dict[str, dict[str, list]] | None = None,
    params: dict[str, dict[str, Any]] | None = None,
    hub_ks: Sequence[int] = (1, 10),
    confidence: float = 0.95,
    no_positive: NoPositivePolicy = "exclude",
    memory_budget: int = DEFAULT_MEMORY_BUDGET,
    progress: bool = True,
    normalize: NormalizeMode = "warn",
    gallery_banks: GalleryBanks = "natural",
    best_budget: float | None = DEFAULT_BUDGET,
    best_include: Sequence[str] = (),
    exclude: Mapping[str, ExcludedIds] | None = None,
) -> EvaluationResult:
    """Run the paper's protocol on ``benchmark`` (see the module docstring).

    Parameters
    ----------
    methods : names registered in ``dehub.methods.METHODS``
    directions : ``"a2b"`` and/or ``"b2a"``
    ks : Recall cut-offs
    n_bootstrap, seed, confidence : paired bootstrap settings
    metric : validation metric that chooses each method's setting
    grids : optional ``{method: grid}`` overriding ``default_grid()``
    hub_ks : k of the k-occurrence statistics (the first is the headline one)
    no_positive : policy for queries without a relevant item (counted in the result)
    progress : step messages and progress bars on stderr (warnings are not progress:
        they are shown either way)
    normalize : rows that are not unit-norm, checked once per split and side before
        anything runs: ``"warn"`` (default), ``"l2"`` (normalize copies), ``"none"``,
        ``"error"``
    gallery_banks : the gallery-modality bank of the methods that take one (see the
        module docstring): ``"natural"`` (default), None, or ``{direction: array}``
    best_budget, best_include : ``budget`` and ``include`` of
        :func:`dehub.evaluation.best.select_best_member`
    exclude : ``{direction: per-query excluded gallery rows of the test queries}`` (a
        query's own item in item-to-item retrieval, the question words in analogies):
        left out of the test search and of the dense ranks, as
        :meth:`~dehub.methods.BaseCorrector.search_excluding` does. The validation sweep
        is not affected.
    """
    t_start = time.perf_counter()
    ks = check_ks(ks)
    hub_ks = check_ks(hub_ks)
    methods = list(dict.fromkeys(methods))
    if not methods:
        raise InputError("methods must name at least one method, e.g. ('plain', 'nnn')")
    unknown = [m for m in methods if m not in METHODS and m != BEST]
    if unknown:
        raise InputError(f"unknown methods {unknown}; expected names from {sorted(METHODS)}")
    grids = dict(grids or {})
    for m, fixed in (params or {}).items():
        if m not in methods:
            raise InputError(f"params name method {m!r}, which is not among the methods {methods}")
        known = method_parameters(m)
        bad = [p for p in fixed if p not in known]
        if bad:
            raise InputError(
                f"method {m!r} has no parameter {', '.join(map(repr, bad))}; its parameters are "
                f"{known if known else 'none'}"
            )
        grids[m] = {**{p: [v] for p, v in fixed.items()}}
    metric = canonical_metric(metric)
    selectable = [f"success@{k}" for k in ks] + ["MRR", "mean_rank", "median_rank"]
    if metric not in selectable:
        raise InputError(f"unknown validation metric {metric!r}; expected one of {selectable}")
    directions = list(dict.fromkeys(directions))
    check_benchmark(benchmark, directions)
    benchmark = normalized_benchmark(benchmark, normalize)
    search_k = max(ks[-1], hub_ks[-1])
    run = _Run(
        ks=list(ks),
        hub_ks=list(hub_ks),
        search_k=search_k,
        metric=metric,
        grids=grids,
        no_positive=no_positive,
        n_bootstrap=n_bootstrap,
        seed=seed,
        confidence=confidence,
        memory_budget=memory_budget,
        progress=progress,
        best_budget=best_budget,
        best_include=tuple(best_include),
    )

    result = EvaluationResult(data={})
    dir_data: dict[str, Any] = {}
    timings: dict[str, Any] = {}
    for direction in directions:
        dname = benchmark.direction_name(direction)
        test_task = benchmark.test.task(direction)
        rel = test_task.relevance
        n_gallery = rel.n_gallery
        excluded = None
        if exclude is not None and exclude.get(direction) is not None:
            excluded = check_excluded(exclude[direction], rel.n_queries, n_gallery)
        if search_k > n_gallery:
            raise InputError(
                f"{dname}: the test gallery has {n_gallery} items, fewer than the largest "
                f"cut-off {search_k}; lower ks/hub_ks"
            )
        gbank, bank_text = gallery_bank_for(benchmark, direction, gallery_banks)
        side = _Direction(
            name=dname,
            val_task=benchmark.validation.task(direction),
            test_task=test_task,
            reference=benchmark.reference_for(direction),
            excluded=excluded,
            bank=gbank,
            bank_text=bank_text,
        )
        dir_methods, skipped_notes = side.runnable(methods)
        evaluated = {method: _evaluate_method(method, side, run) for method in dir_methods}
        result.k_occurrence[direction] = {m: e.k_occurrence for m, e in evaluated.items()}
        result.outcomes[direction] = {m: e.outcomes for m, e in evaluated.items()}
        dir_data[direction], timings[direction] = _direction_summary(
            side, run, evaluated, result.outcomes[direction], result.k_occurrence[direction], skipped_notes
        )

    timings["total_seconds"] = time.perf_counter() - t_start
    result.data = {
        "benchmark": {
            "name": benchmark.name,
            "a_name": benchmark.a_name,
            "b_name": benchmark.b_name,
            "sizes": {
                s: {
                    "a": int(getattr(benchmark, s).a.shape[0]),
                    "b": int(getattr(benchmark, s).b.shape[0]),
                    "pairs": int(np.asarray(getattr(benchmark, s).pairs).shape[0]),
                }
                for s in ("test", "validation", "reference")
            },
            "dim": int(benchmark.test.a.shape[1]),
        },
        "settings": {
            "methods": methods,
            "directions": directions,
            "ks": list(ks),
            "hub_ks": list(hub_ks),
            "metric": metric,
            "metrics": metric_names(ks),
            "fixed_params": {m: dict(v) for m, v in (params or {}).items()},
            "n_bootstrap": int(n_bootstrap),
            "seed": int(seed),
            "confidence": float(confidence),
            "no_positive": no_positive,
            "normalize": normalize,
            "grids": {m: (grids.get(m) or METHODS[m].default_grid()) for m in methods if m != BEST},
            "memory_budget": int(memory_budget),
            "comparisons": [f"{o} - {b}" for b, o in _comparisons(methods)],
        },
        "versions": {
            "dehub": __version__,
            "numpy": np.__version__,
            "python": platform.python_version(),
            "platform": platform.platform(),
        },
        "directions": dir_data,
        "timings": timings,
        "precision_auto": tuning_report(),  # what precision="auto" chose on this machine (report header)
    }
    return result


@dataclass(frozen=True)
class _Run:
    """The settings of one :func:`run_evaluation` call, checked at its entry."""

    ks: list[int]
    hub_ks: list[int]
    search_k: int
    metric: str
    grids: dict[str, dict[str, list]]
    no_positive: NoPositivePolicy
    n_bootstrap: int
    seed: int
    confidence: float
    memory_budget: int
    progress: bool
    best_budget: float | None
    best_include: tuple[str, ...]


@dataclass(frozen=True)
class _Direction:
    """One direction's splits, excluded rows and gallery bank (the bank, a held-out split,
    serves the validation sweep and the test fit alike)."""

    name: str
    val_task: RetrievalTask
    test_task: RetrievalTask
    reference: np.ndarray
    excluded: ExcludedRows | None
    bank: np.ndarray | None
    bank_text: str

    def bank_inputs(self, method: str) -> dict[str, Any]:
        """The bank keyword of ``method``'s fit (none for a method that takes no bank)."""
        if self.bank is None or not get_tags(METHODS[method]).gallery_bank:
            return {}
        return {"gallery_bank": self.bank}

    def bank_used(self, method: str) -> str:
        if not get_tags(METHODS[method]).gallery_bank:
            return "takes no gallery bank"
        if self.bank is None:
            return f"no gallery bank ({self.bank_text}): {method} fell back to its no-bank form"
        return f"gallery bank: {self.bank_text}"

    def runnable(self, methods: Sequence[str]) -> tuple[list[str], list[str]]:
        """The methods run in this direction, and a note for each left out (a bank method
        without a bank that is another member exactly)."""
        run, notes = [], []
        for m in methods:
            twin = SAME_WITHOUT_BANK.get(m)
            if twin is not None and self.bank is None:
                notes.append(
                    f"{m} was not run: no gallery bank ({self.bank_text}), and {m} without a bank is "
                    f"{twin} exactly"
                )
                continue
            run.append(m)
        return run, notes


@dataclass
class _Evaluated:
    """One method's test evaluation in one direction."""

    entry: dict[str, Any]  # the JSON-able result entry of the method
    timings: dict[str, float]
    ids: np.ndarray  # its test ranking (top search_k)
    outcomes: QueryOutcomes
    k_occurrence: dict[int, np.ndarray]


def _choose(method: str, side: _Direction, run: _Run) -> tuple[SweepResult, str, dict, dict[str, Any]]:
    """Step 1: the method's setting chosen on the validation split: (sweep, the method and
    parameters to fit on test, what the result entry records about the choice)."""
    if method == BEST:  # issue 14: member and setting chosen on validation (evaluation/best.py)
        sw, fit_method, fit_params, extra = best_for_protocol(
            side.val_task,
            side.reference,
            run.grids,
            metric=run.metric,
            ks=run.ks,
            no_positive=run.no_positive,
            n_bootstrap=run.n_bootstrap,
            confidence=run.confidence,
            seed=run.seed,
            memory_budget=run.memory_budget,
            budget=run.best_budget,
            include=run.best_include,
            fit_inputs={m: side.bank_inputs(m) for m in METHODS if side.bank_inputs(m)},
            progress=run.progress,
        )
        extra["bank"] = side.bank_used(fit_method)
        return sw, fit_method, fit_params, extra
    # A transductive method (DSL) normalizes over the queries being answered: the
    # validation queries in the sweep, the test queries at test time. It is marked as
    # such in every report (it peeks at the test set).
    transductive = get_tags(METHODS[method]).transductive
    sw = sweep(
        method,
        side.val_task,
        side.val_task.queries if transductive else side.reference,
        grid=run.grids.get(method),
        metric=run.metric,
        ks=run.ks,
        no_positive=run.no_positive,
        normalize="none",
        memory_budget=run.memory_budget,
        progress=run.progress,
        fit_kwargs=side.bank_inputs(method),
    )
    record: dict[str, Any] = {"transductive": True} if transductive else {}
    record["bank"] = side.bank_used(method)
    return sw, method, sw.best_params, record


def _evaluate_method(method: str, side: _Direction, run: _Run) -> _Evaluated:
    """Steps 1-4 of the protocol for one method in one direction."""
    tm: dict[str, float] = {}
    _log(run.progress, f"[{side.name}] {method}: validation sweep")
    t0 = time.perf_counter()
    sw, fit_method, fit_params, extra = _choose(method, side, run)
    tm["sweep"] = time.perf_counter() - t0
    _log(
        run.progress,
        f"[{side.name}] {method}: chose {sw.best_params or '(no parameters)'} "
        f"({len(sw.table)} settings, {tm['sweep']:.1f} s); fitting on the test gallery",
    )
    task, excluded, budget = side.test_task, side.excluded, run.memory_budget
    t0 = time.perf_counter()
    fit_reference = task.queries if extra.get("transductive") else side.reference
    model = fit_selected(
        fit_method,
        fit_params,
        task.gallery,
        fit_reference,
        normalize="none",
        memory_budget=budget,
        **side.bank_inputs(fit_method),
    )
    tm["fit"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    if excluded is None:
        _, ids = model.search(task.queries, run.search_k, memory_budget=budget, normalize="none")
    else:
        _, ids = model.search_excluding(
            task.queries, run.search_k, exclude=excluded, memory_budget=budget, normalize="none"
        )
    tm["search"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    queries, rel = task.queries, task.relevance

    def test_scores(rows: np.ndarray) -> np.ndarray:
        s = model.score(queries[rows], normalize="none")
        if excluded is not None:
            excluded.mask_scores(s, rows)
        return s

    pos_ranks = dense_positive_ranks(test_scores, rel.n_queries, rel, memory_budget=min(budget, 256 * 2**20))
    out = evaluate_topk(ids, rel, run.ks, positive_ranks=pos_ranks, no_positive=run.no_positive)
    tm["metrics"] = time.perf_counter() - t0
    hub = {}
    occurrence = {}
    for hk in run.hub_ks:
        n_k = k_occurrence(ids, rel.n_gallery, hk)
        occurrence[hk] = n_k
        hub[str(hk)] = {**occurrence_stats(n_k, hk), "histogram": occurrence_histogram(n_k)}
    rows_eval = out.query_rows
    top1 = ids[rows_eval, 0]
    hp = hub_precision(top1, rel.is_relevant(rows_eval, top1[:, None])[:, 0], rel.n_gallery)
    entry = {
        "hub_precision": hp,
        "chosen_params": sw.best_params,
        "validation": sw.best_metrics,
        "sweep": sw.to_dict(),
        "test": out.summary(),
        "hubness": hub,
        "model": repr(model),
        **extra,
    }
    return _Evaluated(entry, tm, ids, out, occurrence)


def _direction_summary(
    side: _Direction,
    run: _Run,
    evaluated: dict[str, _Evaluated],
    outcomes: dict[str, QueryOutcomes],
    occurrence: dict[str, dict[int, np.ndarray]],
    skipped_notes: list[str],
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Step 5 and the bootstrap: one direction's result entry and its timings."""
    val_task, test_task, reference = side.val_task, side.test_task, side.reference
    rel = test_task.relevance
    mdata = {m: e.entry for m, e in evaluated.items()}
    tdir: dict[str, Any] = {m: e.timings for m, e in evaluated.items()}
    t0 = time.perf_counter()
    _log(run.progress, f"[{side.name}] paired bootstrap ({run.n_bootstrap} resamples)")
    boot = bootstrap_comparisons(
        outcomes, _comparisons(list(evaluated)), run.n_bootstrap, run.seed, run.confidence
    )
    tdir["bootstrap"] = time.perf_counter() - t0
    any_out = next(iter(outcomes.values()))
    dups = duplicate_groups(test_task.gallery)
    shared = {
        "validation_queries": count_shared_rows(test_task.queries, val_task.queries)[0],
        "reference": count_shared_rows(test_task.queries, reference)[0],
    }
    hubs = top_hubs(occurrence, run.hub_ks, test_task.gallery_text, dups)
    same = identical_rankings({m: e.ids for m, e in evaluated.items()}, mdata)
    entry = {
        "name": side.name,
        "n_test_queries": rel.n_queries,
        "n_test_gallery": rel.n_gallery,
        "n_validation_queries": val_task.relevance.n_queries,
        "n_validation_gallery": val_task.relevance.n_gallery,
        "n_reference": int(reference.shape[0]),
        "n_evaluated_queries": int(any_out.query_rows.size),
        "n_queries_without_positives": any_out.n_without_positives,
        "mean_positives_per_query": float(rel.counts().mean()),
        "methods": mdata,
        "bootstrap": boot,
        "gallery_duplicates": {
            "n_groups": len(dups),
            "n_rows": int(sum(len(g) for g in dups)),
            "groups": dups[:50],
            "tie_rule": "equal scores rank the smaller gallery row first",
        },
        "top_hubs": hubs,
        "identical_rankings": same,
        "test_queries_shared_with": shared,
        "gallery_bank": side.bank_text,
        "notes": skipped_notes
        + hub_notes(mdata)
        + ranking_notes(same, dups, hubs)
        + [
            f"{n} of the {rel.n_queries} test queries also occur verbatim (identical "
            f"embeddings) in the {what}"
            for what, n in (
                ("validation queries", shared["validation_queries"]),
                ("reference set", shared["reference"]),
            )
            if n
        ]
        + [
            f"{m} is transductive: it was fitted on the test queries themselves (the "
            "validation queries in its sweep), so it is not comparable with the other rows"
            for m, md in mdata.items()
            if md.get("transductive")
        ],
    }
    return entry, tdir
