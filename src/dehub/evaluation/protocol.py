"""The whole evaluation protocol of the paper, on any :class:`PairedBenchmark`.

For each direction (``a2b``: queries from side a, gallery side b; ``b2a`` the reverse)
and each method:

1. sweep the method's grid on the **validation** split, with the reference set of that
   direction (``benchmark.reference_for(direction)``), choose by ``metric``;
2. fit the chosen setting with the **test** gallery and the same reference set;
3. search the test queries (top ``max(ks, hub_ks)``), compute R@K from the search result
   and exact first-relevant ranks (MRR, mean/median rank) from dense scores;
4. hubness of the test ranking (k-occurrence at each ``hub_k``);

then paired bootstrap CIs of every method's metrics and of the differences
``method - plain`` (and ``method - nnn`` for the other methods), one set of resamples per
direction, seeded by ``seed``. Only the chosen setting is evaluated on test.
"""

from __future__ import annotations

import platform
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..datasets.base import Direction, PairedBenchmark, PairedSplit
from ..engine.exact import DEFAULT_MEMORY_BUDGET
from ..methods import METHODS
from .best import BEST, best_for_protocol  # issue 14: the 'best' hook
from .hubness import _stats_of, k_occurrence, occurrence_histogram
from .metrics import NoPositivePolicy, QueryOutcomes, check_ks, dense_ranks, evaluate_topk
from .statistics import bootstrap_comparisons
from .sweep import fit_selected, sweep

__all__ = ["run_evaluation", "EvaluationResult", "check_benchmark"]


@dataclass
class EvaluationResult:
    """Everything an evaluation measured.

    ``data`` is JSON-serializable (settings, seeds, versions, timings, sweep tables,
    test metrics with CIs, hubness); ``k_occurrence[direction][method][k]`` holds the
    full N_k vectors and ``outcomes[direction][method]`` the per-query outcomes (for
    plots and further statistics; not written to JSON).
    """

    data: dict[str, Any]
    k_occurrence: dict[str, dict[str, dict[int, np.ndarray]]] = field(default_factory=dict)
    outcomes: dict[str, dict[str, QueryOutcomes]] = field(default_factory=dict)

    def summary_rows(self) -> list[dict[str, Any]]:
        """One row per direction x method: R@K with CIs, MRR, top hub, chosen params."""
        rows = []
        for direction, d in self.data["directions"].items():
            boot = d["bootstrap"]["per_method"]
            for method, m in d["methods"].items():
                row = {"direction": d["name"], "method": method, "params": m["chosen_params"]}
                for k in self.data["settings"]["ks"]:
                    row[f"R@{k}"] = boot[method][f"R@{k}"]
                row["MRR"] = boot[method]["MRR"]
                hk = self.data["settings"]["hub_ks"][0]
                row[f"max N_{hk}"] = m["hubness"][str(hk)]["max"]
                rows.append(row)
        return rows

    def summary_text(self) -> str:
        """A compact fixed-width table (what ``dehub eval`` prints)."""
        ks = self.data["settings"]["ks"]
        hk = self.data["settings"]["hub_ks"][0]
        rows = self.summary_rows()
        mw = max([8, *(len(r["method"]) for r in rows)])  # column widths fit the names
        dw = max(
            [14, *(len(n) for d in self.data["directions"].values() for n in d["bootstrap"]["differences"])]
        )
        head = (
            f"{'direction':<22} {'method':<{mw}} "
            + " ".join(f"{'R@' + str(k):>21}" for k in ks)
            + f" {'MRR':>7} {'maxN' + str(hk):>6}  params"
        )
        lines = [head, "-" * len(head)]
        for r in rows:
            cells = " ".join(
                f"{100 * r[f'R@{k}']['value']:6.2f} [{100 * r[f'R@{k}']['ci_low']:5.2f},{100 * r[f'R@{k}']['ci_high']:6.2f}]"
                for k in ks
            )
            params = ", ".join(f"{k}={v}" for k, v in r["params"].items()) or "-"
            lines.append(
                f"{r['direction']:<22} {r['method']:<{mw}} {cells} {r['MRR']['value']:7.4f} "
                f"{r[f'max N_{hk}']:>6}  {params}"
            )
        diffs = []
        for d in self.data["directions"].values():
            for name, metrics in d["bootstrap"]["differences"].items():
                for k in ks:
                    x = metrics[f"R@{k}"]
                    diffs.append(
                        f"{d['name']:<22} {name:<{dw}} R@{k:<3} {100 * x['delta']:+6.2f} "
                        f"[{100 * x['ci_low']:+6.2f}, {100 * x['ci_high']:+6.2f}]"
                    )
        conf = self.data["settings"]["confidence"]
        lines.append("")
        lines.append(
            f"paired differences (points, {int(100 * conf)}% bootstrap CI, "
            f"{self.data['settings']['n_bootstrap']} resamples, seed {self.data['settings']['seed']}):"
        )
        lines.extend(diffs)
        for d in self.data["directions"].values():  # issue 14: what best chose and why
            chosen = d["methods"].get(BEST, {}).get("best")
            if chosen:
                lines.append(
                    f"{d['name']}: best chose {chosen['member']} {chosen['params']}: {chosen['reason']}"
                )
        lines.append(f"total time {self.data['timings']['total_seconds']:.1f} s")
        return "\n".join(lines)


def _check_split(split: PairedSplit, name: str) -> None:
    for side in ("a", "b"):
        x = getattr(split, side)
        if x.ndim != 2 or x.shape[0] == 0:
            raise ValueError(
                f"the {name} split has no '{side}' embeddings (shape {x.shape}); every split "
                "needs at least one row on each side it is used for"
            )
    if np.asarray(split.pairs).shape[0] == 0:
        raise ValueError(f"the {name} split has no pairs: nothing is relevant to anything")


def check_benchmark(benchmark: PairedBenchmark, directions: Sequence[str]) -> None:
    """Clear errors for empty splits, mismatched dimensions and validation == test."""
    _check_split(benchmark.test, "test")
    _check_split(benchmark.validation, "validation")
    dims = {
        f"{s}.{side}": getattr(getattr(benchmark, s), side).shape[1]
        for s in ("test", "validation", "reference")
        for side in ("a", "b")
        if getattr(getattr(benchmark, s), side).shape[0] > 0
    }
    if len(set(dims.values())) != 1:
        raise ValueError(f"every split must have the same embedding dimension; received {dims}")
    for side in ("a", "b"):
        t, v = getattr(benchmark.test, side), getattr(benchmark.validation, side)
        if t is v or (t.shape == v.shape and np.shares_memory(t, v)):
            raise ValueError(
                f"the validation split's '{side}' side is the test split's: hyperparameters "
                "would be chosen on test. Provide a disjoint validation split."
            )
    for direction in directions:
        if direction not in ("a2b", "b2a"):
            raise ValueError(f"directions must be 'a2b' and/or 'b2a'; received {direction!r}")
        ref = benchmark.reference_for(direction)
        if ref.shape[0] == 0:
            raise ValueError(
                f"no reference queries for direction {direction} "
                f"({benchmark.direction_name(direction)}); provide the reference split's "
                f"{'a' if direction == 'a2b' else 'b'} side or drop that direction"
            )


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
    metric: str = "R@1",
    grids: dict[str, dict[str, list]] | None = None,
    hub_ks: Sequence[int] = (1, 10),
    confidence: float = 0.95,
    no_positive: NoPositivePolicy = "exclude",
    memory_budget: int = DEFAULT_MEMORY_BUDGET,
    progress: bool = True,
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
    progress : step messages and progress bars on stderr
    """
    from .. import __version__

    t_start = time.perf_counter()
    ks = check_ks(ks)
    hub_ks = check_ks(hub_ks)
    methods = list(dict.fromkeys(methods))
    if not methods:
        raise ValueError("methods must name at least one method, e.g. ('plain', 'nnn')")
    unknown = [m for m in methods if m not in METHODS and m != BEST]
    if unknown:
        raise ValueError(f"unknown methods {unknown}; expected names from {sorted(METHODS)}")
    grids = dict(grids or {})
    directions = list(dict.fromkeys(directions))
    check_benchmark(benchmark, directions)
    search_k = max(ks[-1], hub_ks[-1])
    fit_kwargs = {"normalize": "warn", "memory_budget": memory_budget}

    result = EvaluationResult(data={})
    dir_data: dict[str, Any] = {}
    timings: dict[str, Any] = {}
    for direction in directions:
        dname = benchmark.direction_name(direction)
        val_task = benchmark.validation.task(direction)
        test_task = benchmark.test.task(direction)
        reference = benchmark.reference_for(direction)
        rel = test_task.relevance
        n_gallery = rel.n_gallery
        if search_k > n_gallery:
            raise ValueError(
                f"{dname}: the test gallery has {n_gallery} items, fewer than the largest "
                f"cut-off {search_k}; lower ks/hub_ks"
            )
        result.k_occurrence[direction] = {}
        result.outcomes[direction] = {}
        mdata: dict[str, Any] = {}
        tdir: dict[str, Any] = {}
        for method in methods:
            tm: dict[str, float] = {}
            _log(progress, f"[{dname}] {method}: validation sweep")
            t0 = time.perf_counter()
            if method == BEST:  # issue 14: member and setting chosen on validation (evaluation/best.py)
                sw, fit_method, fit_params, extra = best_for_protocol(
                    val_task,
                    reference,
                    grids,
                    metric=metric,
                    ks=ks,
                    no_positive=no_positive,
                    n_bootstrap=n_bootstrap,
                    confidence=confidence,
                    seed=seed,
                    memory_budget=memory_budget,
                )
            else:
                sw = sweep(
                    method,
                    val_task,
                    reference,
                    grid=grids.get(method),
                    metric=metric,
                    ks=ks,
                    no_positive=no_positive,
                    memory_budget=memory_budget,
                    progress=progress,
                )
                fit_method, fit_params, extra = method, sw.best_params, {}
            tm["sweep"] = time.perf_counter() - t0
            _log(
                progress,
                f"[{dname}] {method}: chose {sw.best_params or '(no parameters)'} "
                f"({len(sw.table)} settings, {tm['sweep']:.1f} s); fitting on the test gallery",
            )
            t0 = time.perf_counter()
            model = fit_selected(fit_method, fit_params, test_task.gallery, reference, **fit_kwargs)
            tm["fit"] = time.perf_counter() - t0
            t0 = time.perf_counter()
            scores, ids = model.search(test_task.queries, search_k, memory_budget=memory_budget)
            tm["search"] = time.perf_counter() - t0
            t0 = time.perf_counter()
            queries = test_task.queries
            ranks = dense_ranks(
                lambda rows: model.score(queries[rows]),
                rel.n_queries,
                rel,
                memory_budget=min(memory_budget, 256 * 2**20),
            )
            out = evaluate_topk(ids, rel, ks, dense_rank=ranks, no_positive=no_positive)
            tm["metrics"] = time.perf_counter() - t0
            hub = {}
            result.k_occurrence[direction][method] = {}
            for hk in hub_ks:
                n_k = k_occurrence(ids, n_gallery, hk)
                result.k_occurrence[direction][method][hk] = n_k
                hub[str(hk)] = {**_stats_of(n_k, hk), "histogram": occurrence_histogram(n_k)}
            result.outcomes[direction][method] = out
            mdata[method] = {
                "chosen_params": sw.best_params,
                "validation": sw.best_metrics,
                "sweep": sw.to_dict(),
                "test": out.summary(),
                "hubness": hub,
                "model": repr(model),
                **extra,
            }
            tdir[method] = tm
        t0 = time.perf_counter()
        _log(progress, f"[{dname}] paired bootstrap ({n_bootstrap} resamples)")
        boot = bootstrap_comparisons(
            result.outcomes[direction], _comparisons(methods), n_bootstrap, seed, confidence
        )
        tdir["bootstrap"] = time.perf_counter() - t0
        any_out = next(iter(result.outcomes[direction].values()))
        dir_data[direction] = {
            "name": dname,
            "n_test_queries": rel.n_queries,
            "n_test_gallery": n_gallery,
            "n_validation_queries": val_task.relevance.n_queries,
            "n_validation_gallery": val_task.relevance.n_gallery,
            "n_reference": int(reference.shape[0]),
            "n_evaluated_queries": int(any_out.query_rows.size),
            "n_queries_without_positives": any_out.n_without_positives,
            "mean_positives_per_query": float(rel.counts().mean()),
            "methods": mdata,
            "bootstrap": boot,
        }
        timings[direction] = tdir

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
            "n_bootstrap": int(n_bootstrap),
            "seed": int(seed),
            "confidence": float(confidence),
            "no_positive": no_positive,
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
    }
    return result
