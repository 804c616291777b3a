"""What a test ranking shows beyond its metrics: duplicated gallery rows, the top hubs,
methods whose rankings coincide, and the notes a report prints about them.

Measurements of finished rankings (arrays in, JSON-able values out), used by
:func:`dehub.evaluation.protocol.run_evaluation` for every direction.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from .hubness import hub_precision_text

__all__ = ["N_TOP_HUBS", "duplicate_groups", "top_hubs", "identical_rankings", "ranking_notes", "hub_notes"]

#: Per-method top hubs kept in the result (the baseline's, and each other method's).
N_TOP_HUBS = 5


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


def top_hubs(
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


def identical_rankings(rankings: dict[str, np.ndarray], mdata: dict[str, Any]) -> list[dict[str, Any]]:
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


def ranking_notes(same: list[dict[str, Any]], dups: list[list[int]], hubs: dict[str, list]) -> list[str]:
    """Notes on identical rankings and on exact duplicates in the gallery (their N_k follow the tie rule)."""
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


def hub_notes(mdata: dict[str, Any]) -> list[str]:
    """A note when, uncorrected (the first method, plain where run), the hubs are right answers."""
    base = "plain" if "plain" in mdata else next(iter(mdata), None)
    if base is None:
        return []
    hp = mdata[base]["hub_precision"]
    if not hp["mostly_right"]:
        return []
    return [hub_precision_text(hp, f"{base}: the top hubs")]
