"""Hub audit, admission gate and planted adversarial hubs.

* :func:`audit_gallery`: k-occurrence ``N_k`` of every gallery item over a query set (the
  reference bank, optionally with sampled live queries) under the plain score and under
  a fitted correction, robust z-scores ``(N_k - median) / (1.4826 MAD)``, and the top
  suspects with what the correction does to each (hub rank, N_k, bias before/after).
* :class:`AdmissionGate`: scores *new* items against sentinel queries before they are
  inserted: an item enters the top-k of sentinel ``q`` when ``q . x`` beats ``q``'s
  current k-th best plain score, so its would-be ``N_k`` is known before insertion;
  items whose robust z against the existing gallery passes ``z_threshold`` are flagged
  (or the insertion refused by ``dehub add --gate refuse``).
* :func:`plant_cluster_hubs` / :func:`optimize_hubs`: adversarial hubs, the normalized
  mean of a cluster of attacker queries, and that mean refined by projected gradient
  ascent on a soft count of the queries whose top-k it enters.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from .._errors import InputError
from ..evaluation.hubness import hub_precision, hub_precision_text, k_occurrence
from ..methods import BaseCorrector, get_tags
from ._common import STUDY_METHODS, fit_method, paired_ci, unit_rows, wilson_interval

__all__ = [
    "robust_z",
    "kth_scores",
    "would_be_occurrence",
    "audit_gallery",
    "AdmissionGate",
    "plant_cluster_hubs",
    "optimize_hubs",
    "run_audit_study",
]

MAD_SCALE = 1.4826


def robust_z(values: np.ndarray) -> np.ndarray:
    """``(x - median) / (1.4826 * MAD)``; with MAD = 0 the scale falls back to the standard
    deviation, and to 1 when that is 0 too (all values equal: every z is 0)."""
    x = np.asarray(values, dtype=np.float64)
    if x.size == 0:
        return x.copy()
    med = float(np.median(x))
    scale = MAD_SCALE * float(np.median(np.abs(x - med)))
    if scale <= 0:
        scale = float(x.std())
    if scale <= 0:
        scale = 1.0
    return (x - med) / scale


def _plain_topk(gallery: np.ndarray, queries: np.ndarray, k: int, block: int = 2048):
    """Top-k plain scores and rows of every query (descending)."""
    k = min(k, gallery.shape[0])
    scores = np.empty((queries.shape[0], k), dtype=np.float32)
    ids = np.empty((queries.shape[0], k), dtype=np.int64)
    for s in range(0, queries.shape[0], block):
        sc = queries[s : s + block] @ gallery.T
        part = np.argpartition(-sc, k - 1, axis=1)[:, :k]
        ps = np.take_along_axis(sc, part, axis=1)
        order = np.argsort(-ps, axis=1, kind="stable")
        ids[s : s + block] = np.take_along_axis(part, order, axis=1)
        scores[s : s + block] = np.take_along_axis(ps, order, axis=1)
    return scores, ids


def kth_scores(gallery: np.ndarray, queries: np.ndarray, k: int) -> np.ndarray:
    """The k-th best plain score of every query against ``gallery`` (its entry threshold)."""
    return _plain_topk(gallery, queries, k)[0][:, -1]


def would_be_occurrence(items: np.ndarray, queries: np.ndarray, thresholds: np.ndarray) -> np.ndarray:
    """How many queries' top-k each item would enter: ``#{q : q . x > threshold(q)}``."""
    out = np.zeros(items.shape[0], dtype=np.int64)
    for s in range(0, items.shape[0], 1024):
        out[s : s + 1024] = np.count_nonzero(items[s : s + 1024] @ queries.T > thresholds[None, :], axis=1)
    return out


def _model_topk_ids(model: BaseCorrector, queries: np.ndarray, k: int) -> np.ndarray:
    return model.search(queries, k, normalize="none")[1]


def audit_gallery(
    gallery: np.ndarray,
    reference: np.ndarray,
    *,
    queries: np.ndarray | None = None,
    n_sample: int | None = None,
    k: int = 10,
    method: str = "nnn",
    model: BaseCorrector | None = None,
    z_threshold: float = 6.0,
    top: int = 20,
    texts: Any = None,
    ids: np.ndarray | None = None,
    seed: int = 0,
    relevance: Any = None,
) -> dict[str, Any]:
    """Audit a gallery for hubs.

    The audit queries are the reference bank plus ``queries`` (live queries; a random
    sample of ``n_sample`` of them when given). ``model`` is a fitted correction of
    this gallery (e.g. an index's model); otherwise ``method`` (a key of
    ``STUDY_METHODS``) is fitted with ``reference``. Returns per-item ``N_k`` before and
    after the correction, robust z-scores, the flagged rows (z > ``z_threshold``) and
    the ``top`` suspects with their metadata and what the correction does to each.

    ``relevance`` (a :class:`dehub.Relevance` of ``queries`` against the gallery rows,
    where it is known): the top hubs' precision, i.e. how many of each hub's plain top-1
    wins among those queries are right answers (``hub_precision``, ``finding``, and
    ``wins``/``right`` per suspect). Hubs that are mostly right answers are popular
    targets, and correcting them is likely to hurt.
    """
    gallery = np.asarray(gallery, dtype=np.float32)
    reference = np.asarray(reference, dtype=np.float32)
    if gallery.ndim != 2 or reference.ndim != 2 or gallery.shape[1] != reference.shape[1]:
        raise InputError(
            f"audit needs 2-D gallery and reference of one dimension; received {gallery.shape} and "
            f"{reference.shape}"
        )
    probe = reference
    n_live = 0
    hp = None
    if relevance is not None and queries is None:
        raise InputError("relevance describes the live queries: pass queries too")
    if queries is not None:
        q = np.asarray(queries, dtype=np.float32)
        if q.ndim != 2 or q.shape[1] != gallery.shape[1]:
            raise InputError(f"queries must be (n, {gallery.shape[1]}); received {q.shape}")
        live_rows = np.arange(q.shape[0])
        if n_sample is not None and n_sample < q.shape[0]:
            live_rows = np.sort(np.random.default_rng(seed).choice(q.shape[0], n_sample, replace=False))
            q = q[live_rows]
        if relevance is not None:
            if (relevance.n_queries, relevance.n_gallery) != (np.shape(queries)[0], gallery.shape[0]):
                raise InputError(
                    f"relevance must be of the {np.shape(queries)[0]} queries x {gallery.shape[0]} gallery "
                    f"rows; received {relevance.n_queries} x {relevance.n_gallery}"
                )
            known = live_rows[relevance.counts()[live_rows] > 0]
            top1 = _plain_topk(gallery, np.asarray(queries, dtype=np.float32)[known], 1)[1][:, 0]
            hp = hub_precision(
                top1, relevance.is_relevant(known, top1[:, None])[:, 0], gallery.shape[0], n_top=top
            )
        n_live = q.shape[0]
        probe = np.concatenate([reference, q])
    k = min(k, gallery.shape[0])
    n = gallery.shape[0]
    n_before = k_occurrence(_plain_topk(gallery, probe, k)[1], n, k)
    if model is None:
        model = fit_method(method, gallery, reference)
    n_after = k_occurrence(_model_topk_ids(model, probe, k), n, k)
    z_before, z_after = robust_z(n_before), robust_z(n_after)
    bias = np.asarray(getattr(model, "bias_"), dtype=np.float64) if get_tags(model).offset else None  # noqa: B009
    rank_before = np.empty(n, dtype=np.int64)
    rank_before[np.argsort(-n_before, kind="stable")] = np.arange(1, n + 1)
    rank_after = np.empty(n, dtype=np.int64)
    rank_after[np.argsort(-n_after, kind="stable")] = np.arange(1, n + 1)
    flagged = np.flatnonzero(z_before > z_threshold)
    suspects = []
    per_hub = {h["row"]: h for h in hp["hubs"]} if hp else {}
    for r in np.argsort(-z_before, kind="stable")[:top].tolist():
        suspects.append(
            {
                "wins": per_hub[r]["wins"] if r in per_hub else None,
                "right": per_hub[r]["right"] if r in per_hub else None,
                "row": int(r),
                "id": int(ids[r]) if ids is not None else int(r),
                "text": None if texts is None else str(texts[r]),
                "N_before": int(n_before[r]),
                "N_after": int(n_after[r]),
                "z_before": float(z_before[r]),
                "z_after": float(z_after[r]),
                "hub_rank_before": int(rank_before[r]),
                "hub_rank_after": int(rank_after[r]),
                "bias": None if bias is None else float(bias[r]),
                "bias_rank": None if bias is None else int(1 + np.count_nonzero(bias > bias[r])),
                "flagged": bool(z_before[r] > z_threshold),
            }
        )
    return {
        "k": int(k),
        "n_gallery": int(n),
        "n_reference": int(reference.shape[0]),
        "n_live_queries": int(n_live),
        "expected_N": float(k * probe.shape[0] / n),
        "z_threshold": float(z_threshold),
        "correction": repr(model),
        "n_flagged": int(flagged.size),
        "flagged_rows": flagged.tolist(),
        "max_N_before": int(n_before.max()),
        "max_N_after": int(n_after.max()),
        "suspects": suspects,
        "hub_precision": hp,
        "finding": None
        if hp is None
        else hub_precision_text(hp, "the top hubs (plain top-1 over the live queries)"),
        "_N_before": n_before,
        "_N_after": n_after,
        "_z_before": z_before,
    }


@dataclass
class AdmissionGate:
    """Score new gallery items against sentinel queries before insertion.

    Parameters
    ----------
    k : int
        The top-k whose entries are counted (the would-be ``N_k``).
    z_threshold : float
        An item is flagged when its would-be ``N_k`` has robust z above this, measured
        against the ``N_k`` of the existing gallery over the same sentinels.
    min_count : int
        Items entering fewer sentinel top-k lists than this are never flagged (guards a
        degenerate scale when almost every existing item has ``N_k = 0``).
    """

    k: int = 10
    z_threshold: float = 6.0
    min_count: int = 5

    def fit(self, gallery: np.ndarray, sentinels: np.ndarray) -> AdmissionGate:
        gallery = np.asarray(gallery, dtype=np.float32)
        sentinels = np.asarray(sentinels, dtype=np.float32)
        if sentinels.ndim != 2 or sentinels.shape[0] == 0 or sentinels.shape[1] != gallery.shape[1]:
            raise InputError(
                f"the gate needs sentinel queries of shape (n >= 1, {gallery.shape[1]}); received "
                f"{sentinels.shape}"
            )
        k = min(self.k, gallery.shape[0])
        scores, ids = _plain_topk(gallery, sentinels, k)
        self.sentinels_ = sentinels
        self.thresholds_ = scores[:, -1].copy()
        self.gallery_N_ = k_occurrence(ids, gallery.shape[0], k)
        x = self.gallery_N_.astype(np.float64)
        self.median_ = float(np.median(x))
        scale = MAD_SCALE * float(np.median(np.abs(x - self.median_)))
        self.scale_ = scale if scale > 0 else (float(x.std()) or 1.0)
        return self

    def score(self, items: np.ndarray) -> dict[str, np.ndarray]:
        """Would-be ``N_k``, robust z and the flag of every new item (each judged alone)."""
        items = np.asarray(items, dtype=np.float32)
        count = would_be_occurrence(items, self.sentinels_, self.thresholds_)
        z = (count - self.median_) / self.scale_
        return {"N": count, "z": z, "flag": (z > self.z_threshold) & (count >= self.min_count)}


def gate_new_items(
    gallery: np.ndarray, sentinels: np.ndarray, items: np.ndarray, *, k: int = 10, z_threshold: float = 6.0
) -> dict[str, np.ndarray]:
    """One-call gate: :class:`AdmissionGate` fitted on ``gallery`` and ``sentinels``."""
    return AdmissionGate(k=k, z_threshold=z_threshold).fit(gallery, sentinels).score(items)


# ---------------------------------------------------------------- planted hubs
def plant_cluster_hubs(
    attacker_queries: np.ndarray, n_hubs: int, cluster_size: int, seed: int = 0
) -> np.ndarray:
    """``n_hubs`` normalized means of query clusters: a random attacker query and its
    ``cluster_size - 1`` nearest attacker queries, averaged and L2-normalized."""
    q = np.asarray(attacker_queries, dtype=np.float32)
    rng = np.random.default_rng(seed)
    seeds = rng.choice(q.shape[0], n_hubs, replace=False)
    sims = q[seeds] @ q.T
    members = np.argpartition(-sims, min(cluster_size, q.shape[0]) - 1, axis=1)[:, :cluster_size]
    return unit_rows(q[members].mean(axis=1))


def optimize_hubs(
    start: np.ndarray,
    attacker_queries: np.ndarray,
    thresholds: np.ndarray,
    *,
    steps: int = 60,
    lr: float = 0.5,
    temperature: float = 0.02,
) -> np.ndarray:
    """Projected gradient ascent on the soft number of queries whose top-k each hub
    enters, ``sum_q sigmoid((q . x - t_q) / temperature)``, on the unit sphere."""
    x = unit_rows(start).astype(np.float64)
    q = np.asarray(attacker_queries, dtype=np.float64)
    t = np.asarray(thresholds, dtype=np.float64)
    for _ in range(steps):
        u = (x @ q.T - t[None, :]) / temperature
        sig = 1.0 / (1.0 + np.exp(-np.clip(u, -50, 50)))
        grad = (sig * (1 - sig)) @ q / temperature  # d/dx of the soft count
        grad -= np.sum(grad * x, axis=1, keepdims=True) * x  # tangent to the sphere
        gn = np.linalg.norm(grad, axis=1, keepdims=True)
        x = x + lr * grad / np.maximum(gn, 1e-12) * 0.1
        x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x.astype(np.float32)


def run_audit_study(
    bench: Any,
    *,
    n_hubs: int = 20,
    cluster_size: int = 50,
    k: int = 10,
    z_threshold: float = 6.0,
    methods: tuple[str, ...] = ("plain", "nnn", "nnn_trimmed", "qbnorm"),
    n_bootstrap: int = 1000,
    seed: int = 0,
    progress: bool = False,
) -> dict[str, Any]:
    """Planted hubs on the benchmark's definition -> lemma test task.

    The attacker knows the validation definitions (disjoint from test and reference);
    hubs are crafted from them, inserted into the test gallery, and measured on the test
    queries: how many they capture at top-1 under each method (with paired bootstrap
    CIs over queries), the audit's and the gate's detection precision/recall (Wilson
    intervals), and the clean success@1 cost of each method with the hubs present.
    """

    t0 = time.perf_counter()
    test = bench.test.task("a2b")
    reference = bench.reference_for("a2b")
    attacker = bench.validation.a
    gallery = test.gallery
    n0 = gallery.shape[0]
    out: dict[str, Any] = {
        "setting": {
            "direction": bench.direction_name("a2b"),
            "n_hubs": n_hubs,
            "cluster_size": cluster_size,
            "k": k,
            "z_threshold": z_threshold,
            "attacker_queries": f"validation {bench.a_name}s ({attacker.shape[0]})",
            "methods": {m: {"method": STUDY_METHODS[m][0], **STUDY_METHODS[m][1]} for m in methods},
        },
        "attacks": {},
    }
    mean_hubs = plant_cluster_hubs(attacker, n_hubs, cluster_size, seed)
    thresholds = kth_scores(gallery, attacker, k)
    opt_hubs = optimize_hubs(mean_hubs, attacker, thresholds)
    rel = test.relevance
    has_pos = rel.counts() > 0
    queries = test.queries[has_pos]
    for name, hubs in (("cluster_mean", mean_hubs), ("optimized", opt_hubs)):
        g = np.concatenate([gallery, hubs]).astype(np.float32)
        planted = np.zeros(g.shape[0], dtype=bool)
        planted[n0:] = True
        # detection: audit over the reference bank, gate against the clean gallery
        aud = audit_gallery(g, reference, k=k, method="nnn", z_threshold=z_threshold, top=0)
        flagged = np.zeros(g.shape[0], dtype=bool)
        flagged[aud["flagged_rows"]] = True
        tp = int(np.count_nonzero(flagged & planted))
        top_z = np.argsort(-aud["_z_before"], kind="stable")[:n_hubs]
        tp_top = int(np.count_nonzero(planted[top_z]))
        gate = AdmissionGate(k=k, z_threshold=z_threshold).fit(gallery, reference)
        n_clean = min(2000, n0)
        gate_clean = gate.score(gallery[np.random.default_rng(seed).choice(n0, n_clean, replace=False)])
        gate_hubs = gate.score(hubs)
        captured: dict[str, np.ndarray] = {}
        correct: dict[str, np.ndarray] = {}
        for m in methods:
            model = fit_method(m, g, reference)
            ids = model.search(queries, 1, normalize="none")[1][:, 0]
            captured[m] = (ids >= n0).astype(np.float64)
            rows = np.flatnonzero(has_pos)
            hit = rel.is_relevant(rows, np.where(ids < n0, ids, -1)[:, None])[:, 0]
            correct[m] = hit.astype(np.float64)
        pairs = [("plain", m) for m in methods if m != "plain"]
        cap = paired_ci(captured, pairs, n_bootstrap, seed)
        acc = paired_ci(correct, pairs, n_bootstrap, seed)
        p_lo, p_hi = wilson_interval(tp, int(flagged.sum()))
        r_lo, r_hi = wilson_interval(tp, n_hubs)
        g_tp = int(gate_hubs["flag"].sum())
        out["attacks"][name] = {
            "hub_N_k_reference_plain": {
                "median": float(np.median(aud["_N_before"][n0:])),
                "max": int(aud["_N_before"][n0:].max()),
                "gallery_median": float(np.median(aud["_N_before"][:n0])),
                "gallery_max": int(aud["_N_before"][:n0].max()),
            },
            "hub_N_k_reference_nnn": {
                "median": float(np.median(aud["_N_after"][n0:])),
                "max": int(aud["_N_after"][n0:].max()),
            },
            "audit": {
                "n_flagged": int(flagged.sum()),
                "true_positives": tp,
                "precision": tp / max(1, int(flagged.sum())),
                "precision_ci": [p_lo, p_hi],
                "recall": tp / n_hubs,
                "recall_ci": [r_lo, r_hi],
                "precision_at_n_planted": tp_top / n_hubs,
                "precision_at_n_planted_ci": list(wilson_interval(tp_top, n_hubs)),
            },
            "gate": {
                "recall": g_tp / n_hubs,
                "recall_ci": list(wilson_interval(g_tp, n_hubs)),
                "false_flag_rate_clean_items": float(gate_clean["flag"].mean()),
                "false_flag_ci": list(wilson_interval(int(gate_clean["flag"].sum()), n_clean)),
                "n_clean_items_scored": n_clean,
                "hub_would_be_N_median": float(np.median(gate_hubs["N"])),
            },
            "captured_top1": cap,
            "success@1": acc,
        }
        if progress:
            print(f"[audit] {name}: done ({time.perf_counter() - t0:.1f} s)", flush=True)
    out["runtime_seconds"] = time.perf_counter() - t0
    return out
