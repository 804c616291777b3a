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
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from .._validation import NormalizeMode, check_normalization
from ..datasets.base import Direction, PairedBenchmark, PairedSplit
from ..engine.exact import DEFAULT_MEMORY_BUDGET
from ..engine.tuning import tuning_report
from ..methods import METHODS, ExcludedIds, check_excluded, get_tags
from .best import BEST, DEFAULT_BUDGET, SAME_WITHOUT_BANK, best_for_protocol  # issue 14: the 'best' hook
from .hubness import _stats_of, hub_precision, hub_precision_text, k_occurrence, occurrence_histogram
from .metrics import (
    NoPositivePolicy,
    QueryOutcomes,
    canonical_metric,
    check_ks,
    dense_positive_ranks,
    evaluate_topk,
    metric_names,
)
from .statistics import bootstrap_comparisons
from .sweep import fit_selected, sweep

__all__ = ["run_evaluation", "EvaluationResult", "check_benchmark", "method_parameters", "duplicate_groups"]

#: Per-method top hubs kept in the result (the baseline's, and each other method's).
N_TOP_HUBS = 5

GalleryBanks = str | Mapping[str, Any] | None


def gallery_bank_for(
    benchmark: PairedBenchmark, direction: Direction, gallery_banks: GalleryBanks
) -> tuple[np.ndarray | None, str]:
    """The gallery-modality bank of a direction and a sentence saying what it is.

    ``"natural"``: the reference split's gallery side (side b for ``a2b``), when it has
    rows; a mapping: ``gallery_banks[direction]`` (an array, or None); None: no bank.
    """
    if gallery_banks is None:
        return None, "none given"
    if isinstance(gallery_banks, str):
        if gallery_banks != "natural":
            raise ValueError(
                f"gallery_banks must be 'natural', None or {{direction: array}}; received {gallery_banks!r}"
            )
        side = "b" if direction == "a2b" else "a"
        bank = getattr(benchmark.reference, side)
        label = benchmark.b_name if side == "b" else benchmark.a_name
        if bank.shape[0] == 0:
            return None, f"none (the reference split has no {label} side)"
        return bank, f"the reference split's {label} side ({bank.shape[0]:,} rows)"
    if not isinstance(gallery_banks, Mapping):
        raise ValueError(
            f"gallery_banks must be 'natural', None or {{direction: array}}; received {type(gallery_banks).__name__}"
        )
    bad = [d for d in gallery_banks if d not in ("a2b", "b2a")]
    if bad:
        raise ValueError(f"gallery_banks keys must be 'a2b'/'b2a'; received {bad}")
    bank = gallery_banks.get(direction)
    if bank is None:
        return None, "none given"
    bank = np.asarray(bank)
    dim = benchmark.test.a.shape[1]
    if bank.ndim != 2 or bank.shape[1] != dim or bank.shape[0] == 0:
        raise ValueError(f"the {direction} gallery bank must be (n > 0, {dim}); received {bank.shape}")
    return bank, f"given ({bank.shape[0]:,} rows)"


def method_parameters(method: str) -> list[str]:
    """The constructor parameters of a registered method (asked of the method itself).

    ``best`` has none of its own: it picks a member and that member's setting.
    """
    if method == BEST:
        return []
    cls = METHODS[method]
    return list(cls().get_params())


def duplicate_groups(x) -> list[list[int]]:
    """Groups (rows in increasing order) of exactly identical rows of a 2-D array."""
    arr = np.ascontiguousarray(np.asarray(x))
    if arr.shape[0] < 2:
        return []
    rows = arr.view(np.dtype((np.void, arr.dtype.itemsize * arr.shape[1]))).ravel()
    _, inverse, counts = np.unique(rows, return_inverse=True, return_counts=True)
    inverse = inverse.ravel()
    dup = np.flatnonzero(counts[inverse] > 1)
    groups: dict[int, list[int]] = {}
    for r in dup.tolist():
        groups.setdefault(int(inverse[r]), []).append(r)
    return sorted(groups.values())


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
        """One row per direction x method: success@K with CIs, MRR, top hub, chosen params."""
        rows = []
        for direction, d in self.data["directions"].items():
            boot = d["bootstrap"]["per_method"]
            for method, m in d["methods"].items():
                row = {"direction": d["name"], "method": method, "params": m["chosen_params"]}
                for k in self.data["settings"]["ks"]:
                    row[f"success@{k}"] = boot[method][f"success@{k}"]
                for name in ("mAP@R", "MRR"):
                    row[name] = boot[method][name]
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
            + " ".join(f"{'success@' + str(k):>21}" for k in ks)
            + f" {'mAP@R':>6} {'MRR':>6} {'maxN' + str(hk):>6}  params"
        )
        lines = [head, "-" * len(head)]
        for r in rows:
            cells = " ".join(
                f"{100 * r[f'success@{k}']['value']:6.2f} [{100 * r[f'success@{k}']['ci_low']:5.2f},"
                f"{100 * r[f'success@{k}']['ci_high']:6.2f}]"
                for k in ks
            )
            params = ", ".join(f"{k}={v}" for k, v in r["params"].items()) or "-"
            lines.append(
                f"{r['direction']:<22} {r['method']:<{mw}} {cells} {100 * r['mAP@R']['value']:6.2f} "
                f"{100 * r['MRR']['value']:6.2f} {r[f'max N_{hk}']:>6}  {params}"
            )
        diffs = []
        for d in self.data["directions"].values():
            for name, metrics in d["bootstrap"]["differences"].items():
                for metric in [f"success@{k}" for k in ks] + ["mAP@R"]:
                    x = metrics[metric]
                    diffs.append(
                        f"{d['name']:<22} {name:<{dw}} {metric:<11} {100 * x['delta']:+6.2f} "
                        f"[{100 * x['ci_low']:+6.2f}, {100 * x['ci_high']:+6.2f}]"
                    )
        conf = self.data["settings"]["confidence"]
        lines.append(
            "success@K: share of queries with a relevant item in the top K (the paper's R@K); "
            "mAP@R and MRR in %"
        )
        for d in self.data["directions"].values():
            for note in d.get("notes", []):
                lines.append(f"note ({d['name']}): {note}")
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
    for d in directions:
        if d not in ("a2b", "b2a"):
            raise ValueError(f"directions must be 'a2b' and/or 'b2a'; received {d!r}")
        direction: Direction = "a2b" if d == "a2b" else "b2a"
        ref = benchmark.reference_for(direction)
        if ref.shape[0] == 0:
            raise ValueError(
                f"no reference queries for direction {direction} "
                f"({benchmark.direction_name(direction)}); provide the reference split's "
                f"{'a' if direction == 'a2b' else 'b'} side or drop that direction"
            )


def _normalized(benchmark: PairedBenchmark, mode: NormalizeMode) -> PairedBenchmark:
    """The benchmark with the unit-norm policy applied once to every split and side."""
    check_normalization(np.zeros((1, 1), dtype=np.float32) + 1, "check", mode)  # validates mode
    if mode == "none":
        return benchmark
    splits = {}
    for s in ("test", "validation", "reference"):
        split = getattr(benchmark, s)
        sides = {}
        for side, label in (("a", benchmark.a_name), ("b", benchmark.b_name)):
            x = getattr(split, side)
            sides[side] = (
                x if x.shape[0] == 0 else check_normalization(x, f"the {s} {label} embeddings", mode)
            )
        splits[s] = replace(split, **sides)
    return replace(benchmark, **splits)


def _top_hubs(
    occ: dict[str, dict[int, np.ndarray]],
    hub_ks: Sequence[int],
    texts: Sequence[str] | None,
    dups: list[list[int]],
) -> dict[str, list[dict[str, Any]]]:
    """Per hub k: the top hubs of the first method (the baseline) and of every other one.

    Each entry: gallery row, its text (where the benchmark has texts), its N_k under every
    method, the method(s) where it is a top hub, and the rows it duplicates exactly.
    """
    dup_of = {r: [x for x in g if x != r] for g in dups for r in g}
    methods = list(occ)
    out: dict[str, list[dict[str, Any]]] = {}
    for hk in hub_ks:
        chosen: dict[int, list[str]] = {}
        for j, m in enumerate(methods):
            n_k = occ[m][hk]
            top = np.argsort(-n_k, kind="stable")[: N_TOP_HUBS if j == 0 else 3]
            for r in top.tolist():
                if n_k[r] > 0:
                    chosen.setdefault(int(r), []).append(m)
        entries: list[dict[str, Any]] = []
        for r, where in chosen.items():
            entries.append(
                {
                    "row": r,
                    "text": None if texts is None else str(texts[r]),
                    "N": {m: int(occ[m][hk][r]) for m in methods},
                    "top_hub_of": where,
                    "duplicates": dup_of.get(r, []),
                }
            )
        entries.sort(key=lambda e: -max(e["N"].values()))
        out[str(hk)] = entries
    return out


def _identical(rankings: dict[str, np.ndarray], mdata: dict[str, Any]) -> list[dict[str, Any]]:
    """Pairs of methods whose whole test rankings (top-K ids) are identical."""
    names = list(rankings)
    same = []
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            if np.array_equal(rankings[a], rankings[b]):
                same.append(
                    {
                        "methods": [a, b],
                        "params": {a: mdata[a]["chosen_params"], b: mdata[b]["chosen_params"]},
                    }
                )
    return same


def _notes(same: list[dict[str, Any]], dups: list[list[int]], hubs: dict[str, list]) -> list[str]:
    notes = []
    for s in same:
        a, b = s["methods"]
        pa = ", ".join(f"{k}={v}" for k, v in s["params"][a].items()) or "no parameters"
        pb = ", ".join(f"{k}={v}" for k, v in s["params"][b].items()) or "no parameters"
        notes.append(
            f"{a} ({pa}) and {b} ({pb}) return identical test rankings: with these settings "
            "they are the same method, so their rows and differences coincide"
        )
    if dups:
        n_rows = sum(len(g) for g in dups)
        dup_hubs = sorted({e["row"] for entries in hubs.values() for e in entries if e["duplicates"]})
        msg = (
            f"the test gallery has {n_rows} rows in {len(dups)} groups of exact duplicates; equal "
            "scores rank the smaller row first, so the hubness counts (N_k) of duplicated items "
            "depend on that tie rule"
        )
        if dup_hubs:
            msg += f" (top hubs with a duplicate: rows {dup_hubs})"
        notes.append(msg)
    return notes


def _hub_notes(mdata: dict[str, Any]) -> list[str]:
    """A note when, uncorrected (the first method, plain where run), the hubs are right answers."""
    base = "plain" if "plain" in mdata else next(iter(mdata), None)
    if base is None:
        return []
    hp = mdata[base]["hub_precision"]
    if not hp["mostly_right"]:
        return []
    return [hub_precision_text(hp, f"{base}: the top hubs")]


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
    from .._version import __version__

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
    for m, fixed in (params or {}).items():
        if m not in methods:
            raise ValueError(f"params name method {m!r}, which is not among the methods {methods}")
        known = method_parameters(m)
        bad = [p for p in fixed if p not in known]
        if bad:
            raise ValueError(
                f"method {m!r} has no parameter {', '.join(map(repr, bad))}; its parameters are "
                f"{known if known else 'none'}"
            )
        grids[m] = {**{p: [v] for p, v in fixed.items()}}
    metric = canonical_metric(metric)
    selectable = [f"success@{k}" for k in ks] + ["MRR", "mean_rank", "median_rank"]
    if metric not in selectable:
        raise ValueError(f"unknown validation metric {metric!r}; expected one of {selectable}")
    directions = list(dict.fromkeys(directions))
    check_benchmark(benchmark, directions)
    benchmark = _normalized(benchmark, normalize)
    search_k = max(ks[-1], hub_ks[-1])
    fit_kwargs = {"normalize": "none", "memory_budget": memory_budget}

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
        excluded = None
        if exclude is not None and exclude.get(direction) is not None:
            excluded = check_excluded(exclude[direction], rel.n_queries, n_gallery)
        if search_k > n_gallery:
            raise ValueError(
                f"{dname}: the test gallery has {n_gallery} items, fewer than the largest "
                f"cut-off {search_k}; lower ks/hub_ks"
            )
        result.k_occurrence[direction] = {}
        result.outcomes[direction] = {}
        mdata: dict[str, Any] = {}
        tdir: dict[str, Any] = {}
        rankings: dict[str, np.ndarray] = {}
        gbank, bank_text = gallery_bank_for(benchmark, direction, gallery_banks)
        # Validation and test galleries differ; the bank (a held-out split) serves both.
        bank_kw = {} if gbank is None else {"gallery_bank": gbank}

        def bank_inputs(name: str) -> dict[str, Any]:
            return bank_kw if get_tags(METHODS[name]).gallery_bank else {}

        def bank_used(name: str) -> str:
            if not get_tags(METHODS[name]).gallery_bank:
                return "takes no gallery bank"
            if gbank is None:
                return f"no gallery bank ({bank_text}): {name} fell back to its no-bank form"
            return f"gallery bank: {bank_text}"

        skipped_notes: list[str] = []
        dir_methods = []
        for m in methods:
            twin = SAME_WITHOUT_BANK.get(m)
            if twin is not None and gbank is None:
                skipped_notes.append(
                    f"{m} was not run: no gallery bank ({bank_text}), and {m} without a bank is "
                    f"{twin} exactly"
                )
                continue
            dir_methods.append(m)
        for method in dir_methods:
            tm: dict[str, float] = {}
            _log(progress, f"[{dname}] {method}: validation sweep")
            t0 = time.perf_counter()
            fit_extra: dict[str, Any] = {}
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
                    budget=best_budget,
                    include=best_include,
                    fit_inputs={m: bank_inputs(m) for m in METHODS if bank_inputs(m)},
                    progress=progress,
                )
                fit_extra = bank_inputs(fit_method)
                extra["bank"] = bank_used(fit_method)
            else:
                # A transductive method (DSL) normalizes over the queries being answered:
                # the validation queries in the sweep, the test queries at test time. It is
                # marked as such in every report (it peeks at the test set).
                transductive = get_tags(METHODS[method]).transductive
                sw = sweep(
                    method,
                    val_task,
                    val_task.queries if transductive else reference,
                    grid=grids.get(method),
                    metric=metric,
                    ks=ks,
                    no_positive=no_positive,
                    normalize="none",
                    memory_budget=memory_budget,
                    progress=progress,
                    fit_kwargs=bank_inputs(method),
                )
                fit_method, fit_params = method, sw.best_params
                extra = {"transductive": True} if transductive else {}
                fit_extra = bank_inputs(method)
                extra["bank"] = bank_used(method)
            tm["sweep"] = time.perf_counter() - t0
            _log(
                progress,
                f"[{dname}] {method}: chose {sw.best_params or '(no parameters)'} "
                f"({len(sw.table)} settings, {tm['sweep']:.1f} s); fitting on the test gallery",
            )
            t0 = time.perf_counter()
            fit_reference = test_task.queries if extra.get("transductive") else reference
            model = fit_selected(
                fit_method, fit_params, test_task.gallery, fit_reference, **fit_kwargs, **fit_extra
            )
            tm["fit"] = time.perf_counter() - t0
            t0 = time.perf_counter()
            if excluded is None:
                scores, ids = model.search(
                    test_task.queries, search_k, memory_budget=memory_budget, normalize="none"
                )
            else:
                scores, ids = model.search_excluding(
                    test_task.queries,
                    search_k,
                    exclude=excluded,
                    memory_budget=memory_budget,
                    normalize="none",
                )
            tm["search"] = time.perf_counter() - t0
            t0 = time.perf_counter()
            queries = test_task.queries

            def test_scores(rows: np.ndarray, model: Any = model) -> np.ndarray:
                s = model.score(queries[rows], normalize="none")
                if excluded is not None:
                    for i, r in enumerate(rows.tolist()):
                        s[i, excluded[r]] = -np.inf
                return s

            pos_ranks = dense_positive_ranks(
                test_scores,
                rel.n_queries,
                rel,
                memory_budget=min(memory_budget, 256 * 2**20),
            )
            out = evaluate_topk(ids, rel, ks, positive_ranks=pos_ranks, no_positive=no_positive)
            rankings[method] = ids
            tm["metrics"] = time.perf_counter() - t0
            hub = {}
            result.k_occurrence[direction][method] = {}
            for hk in hub_ks:
                n_k = k_occurrence(ids, n_gallery, hk)
                result.k_occurrence[direction][method][hk] = n_k
                hub[str(hk)] = {**_stats_of(n_k, hk), "histogram": occurrence_histogram(n_k)}
            result.outcomes[direction][method] = out
            rows_eval = out.query_rows
            top1 = ids[rows_eval, 0]
            hp = hub_precision(top1, rel.is_relevant(rows_eval, top1[:, None])[:, 0], n_gallery)
            mdata[method] = {
                "hub_precision": hp,
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
            result.outcomes[direction], _comparisons(dir_methods), n_bootstrap, seed, confidence
        )
        tdir["bootstrap"] = time.perf_counter() - t0
        any_out = next(iter(result.outcomes[direction].values()))
        dups = duplicate_groups(test_task.gallery)
        from ..datasets.loaders import count_shared_rows

        shared = {
            "validation_queries": count_shared_rows(test_task.queries, val_task.queries)[0],
            "reference": count_shared_rows(test_task.queries, reference)[0],
        }
        hubs = _top_hubs(result.k_occurrence[direction], hub_ks, test_task.gallery_text, dups)
        same = _identical(rankings, mdata)
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
            "gallery_duplicates": {
                "n_groups": len(dups),
                "n_rows": int(sum(len(g) for g in dups)),
                "groups": dups[:50],
                "tie_rule": "equal scores rank the smaller gallery row first",
            },
            "top_hubs": hubs,
            "identical_rankings": same,
            "test_queries_shared_with": shared,
            "gallery_bank": bank_text,
            "notes": skipped_notes
            + _hub_notes(mdata)
            + _notes(same, dups, hubs)
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
