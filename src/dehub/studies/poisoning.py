"""Reference poisoning: an attacker adds ``m`` queries to the reference bank.

NNN's bias ``b(r) = alpha * mean of the k largest s(q_j, r)`` is learnt from a bank the
deployer may not control. Queries placed near a gallery item raise its bias and
**demote** it; queries placed near the items that outrank a target raise *their* biases
and **promote** the target. :func:`poison_queries` generates such queries;
:func:`run_poisoning_study` measures the success-vs-budget curve of each correction and
three defences of the bank:

* ``influence_cap``: every reference score entering a bias is clipped at the 95th
  percentile of the gallery's top-1 reference scores (one row's influence on any bias
  is bounded by ``alpha * cap / k``);
* ``dedup``: near-duplicate reference rows (cosine > 0.9 with an earlier row that has
  the same nearest gallery item) are dropped, keeping the first;
* ``outlier``: reference rows whose best gallery similarity has robust z > 4 over the
  bank are dropped.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from .._errors import InputError
from ..evaluation.metrics import first_relevant_rank_topk
from ..methods import BaseCorrector, get_tags
from ._common import STUDY_METHODS, fit_method, paired_ci, rank_of, unit_rows, wilson_interval
from .audit import robust_z

__all__ = [
    "poison_queries",
    "demotion_anchors",
    "promotion_anchors",
    "refit_with_poison",
    "cap_influence",
    "filter_near_duplicates",
    "filter_outliers",
    "run_poisoning_study",
]

BUDGETS = (0, 1, 2, 4, 8, 16, 32)


def poison_queries(anchors: np.ndarray, m: int, *, spread: float = 0.5, seed: int = 0) -> np.ndarray:
    """``m`` poison queries per anchor row: ``normalize(anchor + spread * u)`` with ``u``
    a random unit vector (cosine to the anchor about ``1 / sqrt(1 + spread**2)``).
    Returns ``(len(anchors) * m, d)`` float32, anchor by anchor; ``m = 0`` gives no rows."""
    anchors = unit_rows(np.atleast_2d(anchors))
    if m < 0:
        raise InputError(f"budget m must be >= 0; received {m}")
    if m == 0:
        return np.empty((0, anchors.shape[1]), dtype=np.float32)
    rng = np.random.default_rng(seed)
    u = unit_rows(rng.standard_normal((anchors.shape[0] * m, anchors.shape[1])))
    return unit_rows(np.repeat(anchors, m, axis=0) + spread * u)


def demotion_anchors(gallery: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """Demotion: every poison sits near its target item."""
    return gallery[np.asarray(targets, dtype=np.int64)]


def promotion_anchors(gallery: np.ndarray, rivals: list[np.ndarray], m: int) -> list[np.ndarray]:
    """Promotion: a target's ``m`` poisons go round-robin to the items ranked above it."""
    out = []
    for r in rivals:
        if m == 0 or len(r) == 0:
            out.append(np.empty((0, gallery.shape[1]), dtype=np.float32))
            continue
        out.append(gallery[np.asarray(r)[np.arange(m) % len(r)]])
    return out


def refit_with_poison(
    clean: BaseCorrector, label: str, gallery: np.ndarray, reference: np.ndarray, poison: np.ndarray
) -> BaseCorrector:
    """The model fitted on ``reference + poison``: grown from the clean fit where the
    method is incremental (same result as a refit), refitted otherwise."""
    if poison.shape[0] == 0:
        return clean
    if get_tags(clean).incremental:
        return clean.add_reference_rows(poison, n_reference=reference.shape[0])  # type: ignore[attr-defined]
    return fit_method(label, gallery, np.concatenate([reference, poison]))


def cap_influence(model: BaseCorrector, cap: float | None = None, quantile: float = 0.95) -> BaseCorrector:
    """An NNN-family model whose top-k reference scores are clipped at ``cap`` (default:
    the ``quantile`` of the gallery's top-1 reference scores)."""
    stats = dict(model.fitted_statistics())  # type: ignore[attr-defined]
    if "topk_scores" not in stats:
        raise InputError(f"influence capping needs a top-k statistic (NNN family); received {model!r}")
    top = stats["topk_scores"]
    c = float(np.quantile(top[:, 0], quantile)) if cap is None else float(cap)
    stats["topk_scores"] = np.minimum(top, np.float32(c)).astype(top.dtype)
    return model.from_statistics(model.gallery_, stats, n_reference=model.n_reference_)  # type: ignore[attr-defined]


def _nearest_gallery(gallery: np.ndarray, reference: np.ndarray, block: int = 4096):
    best = np.empty(reference.shape[0], dtype=np.int64)
    sim = np.empty(reference.shape[0], dtype=np.float32)
    for s in range(0, reference.shape[0], block):
        sc = reference[s : s + block] @ gallery.T
        best[s : s + block] = np.argmax(sc, axis=1)
        sim[s : s + block] = sc[np.arange(sc.shape[0]), best[s : s + block]]
    return best, sim


def filter_near_duplicates(gallery: np.ndarray, reference: np.ndarray, threshold: float = 0.9) -> np.ndarray:
    """Rows of ``reference`` to keep: a row is dropped when its cosine with an earlier kept
    row that has the same nearest gallery item exceeds ``threshold`` (bucketed by the
    nearest gallery item, so the cost is a few small GEMMs, not the full bank squared)."""
    best, _ = _nearest_gallery(gallery, reference)
    keep = np.ones(reference.shape[0], dtype=bool)
    order = np.argsort(best, kind="stable")
    bounds = np.flatnonzero(np.diff(best[order])) + 1
    for group in np.split(order, bounds):
        if group.size < 2:
            continue
        g = np.sort(group)
        sims = reference[g] @ reference[g].T
        for i in range(1, g.size):
            earlier = np.flatnonzero(keep[g[:i]])
            if earlier.size and sims[i, earlier].max() > threshold:
                keep[g[i]] = False
    return np.flatnonzero(keep)


def filter_outliers(gallery: np.ndarray, reference: np.ndarray, z_threshold: float = 4.0) -> np.ndarray:
    """Rows of ``reference`` to keep: those whose best gallery similarity has robust z at
    most ``z_threshold`` over the bank."""
    _, sim = _nearest_gallery(gallery, reference)
    return np.flatnonzero(robust_z(sim) <= z_threshold)


def _curve_entry(success: np.ndarray) -> dict[str, Any]:
    n, s = int(success.size), int(success.sum())
    lo, hi = wilson_interval(s, n)
    return {"success_rate": s / n if n else float("nan"), "ci_low": lo, "ci_high": hi, "n_targets": n}


def run_poisoning_study(
    bench: Any,
    *,
    n_targets: int = 100,
    budgets: tuple[int, ...] = BUDGETS,
    methods: tuple[str, ...] = ("nnn", "nnn_trimmed", "nnn_median", "qbnorm", "dbnorm"),
    defence_budgets: tuple[int, ...] = (0, 4, 16, 32),
    spread: float = 0.5,
    n_bootstrap: int = 1000,
    seed: int = 0,
    progress: bool = False,
) -> dict[str, Any]:
    """Success-vs-budget curves of demotion and promotion on the definition -> lemma task.

    Demotion: ``n_targets`` test queries whose relevant item the method ranks first with
    the clean bank; success = the item is no longer first after ``m`` poisons near it.
    Promotion: test queries whose best relevant item the method ranks 2nd-5th; success =
    it becomes first after ``m`` poisons near the items above it. Rates carry Wilson 95%
    intervals over targets. Defences are measured for NNN (attack success and the clean
    success@1 cost on all test queries, paired bootstrap CI).
    """

    t0 = time.perf_counter()
    task = bench.test.task("a2b")
    gallery, reference = task.gallery, bench.reference_for("a2b")
    rel = task.relevance
    rows = np.flatnonzero(rel.counts() > 0)
    rng = np.random.default_rng(seed)
    out: dict[str, Any] = {
        "setting": {
            "direction": bench.direction_name("a2b"),
            "n_targets": n_targets,
            "budgets": list(budgets),
            "spread": spread,
            "poison_cosine_to_anchor": float(1 / np.sqrt(1 + spread**2)),
            "methods": {m: {"method": STUDY_METHODS[m][0], **STUDY_METHODS[m][1]} for m in methods},
        },
        "demote": {},
        "promote": {},
    }

    def best_positive(model: BaseCorrector, qrows: np.ndarray):
        sc = model.score(task.queries[qrows], normalize="none")
        pos = rel.is_relevant(qrows, np.broadcast_to(np.arange(sc.shape[1]), sc.shape))
        masked = np.where(pos, sc, -np.inf)
        item = np.argmax(masked, axis=1)
        own = sc[np.arange(sc.shape[0]), item]
        rank = 1 + np.count_nonzero(sc > own[:, None], axis=1)
        return item, rank, sc

    cand = rng.permutation(rows)[: min(rows.size, 1500)]
    clean_models: dict[str, BaseCorrector] = {}
    for m in methods:
        clean = fit_method(m, gallery, reference)
        clean_models[m] = clean
        item, rank, sc = best_positive(clean, cand)
        # demotion targets: ranked first, distinct items
        first = np.flatnonzero(rank == 1)
        _, uniq = np.unique(item[first], return_index=True)
        dem = np.sort(first[uniq])[:n_targets]
        d_q, d_items = cand[dem], item[dem]
        # promotion targets: ranked 2..5
        pro = np.flatnonzero((rank >= 2) & (rank <= 5))[:n_targets]
        p_q, p_items = cand[pro], item[pro]
        rivals = [np.flatnonzero(sc[i] > sc[i, item[i]]) for i in pro]
        curves_d, curves_p = [], []
        for b in budgets:
            pois = poison_queries(demotion_anchors(gallery, d_items), b, spread=spread, seed=seed + b)
            model = refit_with_poison(clean, m, gallery, reference, pois)
            success = rank_of(model, task.queries[d_q], d_items) > 1
            curves_d.append({"budget": b, **_curve_entry(success)})
            anchors = promotion_anchors(gallery, rivals, b)
            pois_p = (
                poison_queries(np.concatenate(anchors), 1, spread=spread, seed=seed + 1000 + b)
                if b
                else np.empty((0, gallery.shape[1]), dtype=np.float32)
            )
            model_p = refit_with_poison(clean, m, gallery, reference, pois_p)
            success_p = rank_of(model_p, task.queries[p_q], p_items) == 1
            curves_p.append({"budget": b, **_curve_entry(success_p)})
        out["demote"][m] = curves_d
        out["promote"][m] = curves_p
        if progress:
            print(f"[poisoning] {m}: done ({time.perf_counter() - t0:.1f} s)", flush=True)

    # defences, for NNN: attack success (demotion) and the clean cost
    if "nnn" in clean_models:
        clean = clean_models["nnn"]
        item, rank, _ = best_positive(clean, cand)
        first = np.flatnonzero(rank == 1)
        _, uniq = np.unique(item[first], return_index=True)
        dem = np.sort(first[uniq])[:n_targets]
        d_q, d_items = cand[dem], item[dem]
        plain_ids = fit_method("plain", gallery, reference).search(task.queries[rows], 1, normalize="none")[1]

        def success_at1(model: BaseCorrector) -> np.ndarray:
            ids = model.search(task.queries[rows], 1, normalize="none")[1]
            return (first_relevant_rank_topk(ids, rel.subset(rows)) == 1).astype(np.float64)

        defences: dict[str, Any] = {}
        arms = {"none": success_at1(clean), "plain": success_at1_ids(plain_ids, rel, rows)}
        for name in ("influence_cap", "dedup", "outlier"):
            curve = []
            for b in defence_budgets:
                pois = poison_queries(demotion_anchors(gallery, d_items), b, spread=spread, seed=seed + b)
                bank = np.concatenate([reference, pois]) if b else reference
                if name == "influence_cap":
                    model = cap_influence(refit_with_poison(clean, "nnn", gallery, reference, pois))
                    n_dropped = 0
                else:
                    keep = (filter_near_duplicates if name == "dedup" else filter_outliers)(gallery, bank)
                    n_dropped = int(bank.shape[0] - keep.size)
                    model = fit_method("nnn", gallery, bank[keep])
                still = rank_of(model, task.queries[d_q], d_items)
                # m = 0 measures the defence itself: targets the defended clean model no longer ranks first
                curve.append(
                    {
                        "budget": b,
                        **_curve_entry(still > 1),
                        "n_bank_rows_dropped": n_dropped,
                        "n_poison": int(pois.shape[0]),
                    }
                )
                if b == 0:
                    arms[name] = success_at1(model)
            defences[name] = curve

        out["defences"] = {
            "method": "nnn",
            "curves": defences,
            "clean_success@1": paired_ci(arms, [("none", a) for a in arms if a != "none"], n_bootstrap, seed),
        }
    out["runtime_seconds"] = time.perf_counter() - t0
    return out


def success_at1_ids(ids: np.ndarray, rel: Any, rows: np.ndarray) -> np.ndarray:
    """1.0 where the top-1 id of query ``rows[i]`` is relevant to it."""
    return rel.is_relevant(rows, ids[:, :1])[:, 0].astype(np.float64)
