"""Hubness statistics of a ranking: the k-occurrence distribution and its shape.

``N_k(r)`` (k-occurrence) is the number of queries that rank gallery item ``r`` in their
top k. With ``n_q`` queries and ``n_g`` items its mean is ``k * n_q / n_g``; hubness
shows as a long right tail (a few items retrieved by very many queries) and many items
never retrieved (anti-hubs). Reported per ranking (:func:`hubness_stats`):

* ``skewness``: standardized third moment ``m3 / m2**1.5`` (population moments; the
  usual hubness measure of Radovanovic et al. 2010);
* ``kurtosis``: **excess** kurtosis ``m4 / m2**2 - 3`` (0 for a normal distribution).
  The paper's Table 3 reports values as low as 1.1, which only excess kurtosis reaches
  for such count distributions, so dehub reports the excess form;
* ``max`` and ``argmax``: the largest count and the item holding it (the top hub);
* ``anti_hub_share``: share of items with ``N_k = 0``;
* ``robin_hood``: Robin Hood (Hoover) index ``0.5 * sum |N_k - mean| / sum N_k``: the
  share of all retrievals that would have to move to make every count equal;
* ``gini``: Gini coefficient of ``N_k``.

Only numpy is needed (no scipy). Constant counts give ``nan`` skewness and kurtosis.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .._errors import InputError

__all__ = [
    "k_occurrence",
    "hubness_stats",
    "occurrence_stats",
    "compare_hubness",
    "occurrence_histogram",
    "hub_precision",
    "hub_precision_text",
    "MOSTLY_RIGHT",
]

#: Share of the top hubs' top-1 wins that are right above which the hubs are "mostly right answers".
MOSTLY_RIGHT = 0.5


def k_occurrence(ids: np.ndarray, n_gallery: int, k: int) -> np.ndarray:
    """``N_k`` of every gallery item from a top-K ``ids`` result (K >= k); padding ignored."""
    ids = np.asarray(ids)
    if ids.ndim != 2:
        raise InputError(f"ids must be 2-D (n_queries, K); received shape {ids.shape}")
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise InputError(f"k must be a positive integer; received {k!r}")
    if k > ids.shape[1]:
        raise InputError(
            f"k-occurrence at k={k} needs at least {k} results per query; received {ids.shape[1]}"
        )
    top = ids[:, :k].ravel()
    top = top[top >= 0]
    if top.size and top.max() >= n_gallery:
        raise InputError(f"ids refer to gallery rows >= n_gallery={n_gallery}: max {int(top.max())}")
    return np.bincount(top, minlength=n_gallery).astype(np.int64)


def _moments(x: np.ndarray) -> tuple[float, float]:
    x = x.astype(np.float64)
    d = x - x.mean()
    m2 = float(np.mean(d**2))
    if m2 <= 0:
        return float("nan"), float("nan")
    m3 = float(np.mean(d**3))
    m4 = float(np.mean(d**4))
    return m3 / m2**1.5, m4 / m2**2 - 3.0


def hubness_stats(ids: np.ndarray, n_gallery: int, k: int = 10) -> dict[str, float]:
    """Statistics of the k-occurrence distribution of one ranking (see module docstring)."""
    n_k = k_occurrence(ids, n_gallery, k)
    return occurrence_stats(n_k, k)


def occurrence_stats(n_k: np.ndarray, k: int) -> dict[str, float]:
    """The statistics of :func:`hubness_stats` from the k-occurrence counts ``n_k`` themselves."""
    total = float(n_k.sum())
    mean = float(n_k.mean()) if n_k.size else float("nan")
    skew, kurt = _moments(n_k) if n_k.size else (float("nan"), float("nan"))
    if total > 0:
        robin_hood = 0.5 * float(np.abs(n_k - mean).sum()) / total
        srt = np.sort(n_k).astype(np.float64)
        n = srt.size
        gini = float((2 * np.arange(1, n + 1) - n - 1) @ srt / (n * srt.sum()))
    else:
        robin_hood = gini = float("nan")
    return {
        "k": int(k),
        "n_gallery": int(n_k.size),
        "mean": mean,
        "std": float(n_k.std()) if n_k.size else float("nan"),
        "skewness": skew,
        "kurtosis": kurt,
        "max": int(n_k.max()) if n_k.size else 0,
        "argmax": int(n_k.argmax()) if n_k.size else -1,
        "anti_hub_share": float(np.mean(n_k == 0)) if n_k.size else float("nan"),
        "robin_hood": robin_hood,
        "gini": gini,
    }


def occurrence_histogram(n_k: np.ndarray) -> dict[str, list[int]]:
    """Compact histogram of a k-occurrence vector: ``{"value": [...], "count": [...]}``."""
    values, counts = np.unique(np.asarray(n_k), return_counts=True)
    return {"value": values.astype(int).tolist(), "count": counts.astype(int).tolist()}


def compare_hubness(
    before_ids: np.ndarray, after_ids: np.ndarray, n_gallery: int, k: int = 10
) -> dict[str, dict[str, float]]:
    """Hubness of two rankings of the same gallery (e.g. plain vs NNN) in one call.

    Returns ``{"before": stats, "after": stats, "change": after - before}`` (the change
    for every numeric statistic except ``k``, ``n_gallery`` and ``argmax``).
    """
    before = hubness_stats(before_ids, n_gallery, k)
    after = hubness_stats(after_ids, n_gallery, k)
    change = {key: after[key] - before[key] for key in before if key not in ("k", "n_gallery", "argmax")}
    return {"before": before, "after": after, "change": change}


def hub_precision(top1: np.ndarray, relevant: np.ndarray, n_gallery: int, n_top: int = 5) -> dict[str, Any]:
    """How many of the top hubs' top-1 wins are right answers (where relevance is known).

    ``top1``: each evaluated query's top-1 gallery row (-1: none); ``relevant``: whether
    that row is relevant to the query. A hub is an item that wins many queries' top 1;
    when most of its wins are right, it is a popular right answer, and a correction
    that pushes it down is likely to hurt. Returns the ``n_top`` items with the most
    wins (``row``, ``wins``, ``right``, ``precision``), the pooled precision of their
    wins (``top_precision``), the precision of all top-1 wins (``overall_precision``,
    i.e. R@1 over these queries), and ``mostly_right``: whether the top hubs' pooled
    precision is at least :data:`MOSTLY_RIGHT`.
    """
    top1 = np.asarray(top1, dtype=np.int64).ravel()
    right = np.asarray(relevant, dtype=bool).ravel()
    if top1.shape != right.shape:
        raise InputError(
            f"top1 and relevant must have one entry per query; received {top1.shape} and {right.shape}"
        )
    ok = top1 >= 0
    wins = np.bincount(top1[ok], minlength=n_gallery)
    good = np.bincount(top1[ok & right], minlength=n_gallery)
    order = np.argsort(-wins, kind="stable")[:n_top]
    order = order[wins[order] > 0]
    hubs = [
        {
            "row": int(r),
            "wins": int(wins[r]),
            "right": int(good[r]),
            "precision": float(good[r] / wins[r]),
        }
        for r in order.tolist()
    ]
    total = int(sum(h["wins"] for h in hubs))
    top_prec = float(sum(h["right"] for h in hubs) / total) if total else float("nan")
    overall = float(right[ok].mean()) if ok.any() else float("nan")
    mostly = bool(total > 0 and top_prec >= MOSTLY_RIGHT)
    return {
        "hubs": hubs,
        "top_wins": total,
        "top_precision": top_prec,
        "overall_precision": overall,
        "n_queries": int(ok.sum()),
        "mostly_right": mostly,
    }


def hub_precision_text(hp: dict, what: str = "the top hubs") -> str:
    """One sentence on whether the top hubs are right answers (for reports and the CLI)."""
    if not hp["hubs"]:
        return f"{what}: no top-1 wins to judge"
    lead = hp["hubs"][0]
    head = (
        f"{what} win {hp['top_wins']} of {hp['n_queries']} top-1 places and "
        f"{100 * hp['top_precision']:.0f}% of those wins are right answers (all top-1 wins: "
        f"{100 * hp['overall_precision']:.0f}%; the largest hub, row {lead['row']}, is right "
        f"{lead['right']} times out of {lead['wins']})"
    )
    if hp["mostly_right"]:
        return head + (
            ": the hubs are mostly right answers (popular targets), so a correction that pushes "
            "them down is likely to hurt (it costs their right wins)"
        )
    return head
