"""Controlled shift on the WordNet noun hierarchy (BREEDS style).

Every benchmark definition is a WordNet noun synset; its hypernym path (first hypernym
at each step, root ``entity`` at depth 0) comes from the shipped
``studies/data/wordnet_hierarchy.npz`` (built by ``scripts/build_wordnet_hierarchy.py``
from Debian's ``wordnet-base``). :func:`hierarchy_split` picks target subtrees top-down
with a seed: a random half of the depth-``level-2`` nodes, within them a random half of
their depth-``level-1`` children, within those a random half of their depth-``level``
children (the targets). A row then falls in exactly one group by how much of its path it
shares with the targets:

* ``same``: its depth-``level`` ancestor is a target;
* ``sibling``: not, but its depth-``level-1`` ancestor is a chosen parent;
* ``cousin``: not, but its depth-``level-2`` ancestor is a chosen grandparent;
* ``unrelated``: none of these (rows with a path shorter than ``level`` are left out).

The study queries with the test (and, for the sweep, validation) definitions of the
``same`` group against the whole gallery, and draws an equal-size NNN reference bank from
each group of the reference split: NNN's gain over plain (paired bootstrap CI) and the
(k, alpha) the validation split chooses, as a function of the hierarchy distance.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np

from .._errors import InputError
from ..evaluation.metrics import first_relevant_rank_topk
from ..methods import NNN, Plain
from ._common import paired_ci

__all__ = ["GROUPS", "load_hierarchy", "hierarchy_split", "group_of", "run_shift_study"]

GROUPS = ("same", "sibling", "cousin", "unrelated")
HIERARCHY_FILE = Path(__file__).resolve().parent / "data" / "wordnet_hierarchy.npz"


def load_hierarchy(path: str | Path | None = None) -> dict[str, np.ndarray]:
    """``{split: (n, depth) ancestor offsets}`` of the bundled benchmark's definitions."""
    p = Path(path) if path is not None else HIERARCHY_FILE
    if not p.is_file():
        raise FileNotFoundError(
            f"WordNet hierarchy file missing: {p}; rebuild it with "
            "PYTHONPATH=src python scripts/build_wordnet_hierarchy.py (needs Debian's wordnet-base)"
        )
    with np.load(p, allow_pickle=False) as z:
        return {k[: -len("_ancestors")]: z[k] for k in z.files if k.endswith("_ancestors")}


def hierarchy_split(ancestors: np.ndarray, level: int = 4, seed: int = 0) -> dict[int, set[int]]:
    """Chosen nodes per depth ``{level-2: grandparents, level-1: parents, level: targets}``."""
    if level < 2 or level >= ancestors.shape[1]:
        raise InputError(f"level must be in 2..{ancestors.shape[1] - 1}; received {level}")
    rng = np.random.default_rng(seed)
    rows = ancestors[ancestors[:, level] >= 0]
    chosen: dict[int, set[int]] = {}
    keep = np.ones(rows.shape[0], dtype=bool)
    for d in (level - 2, level - 1, level):
        nodes = np.unique(rows[keep, d])
        pick = rng.permutation(nodes)[: max(1, nodes.size // 2)]
        chosen[d] = {int(x) for x in pick}
        keep &= np.isin(rows[:, d], pick)
    return chosen


def group_of(ancestors: np.ndarray, chosen: dict[int, set[int]], level: int = 4) -> np.ndarray:
    """Group index (0 same, 1 sibling, 2 cousin, 3 unrelated; -1 path too short) per row."""
    out = np.full(ancestors.shape[0], 3, dtype=np.int64)
    for g, d in ((2, level - 2), (1, level - 1), (0, level)):
        out[np.isin(ancestors[:, d], list(chosen[d]))] = g
    out[ancestors[:, level] < 0] = -1
    return out


def run_shift_study(
    bench: Any,
    *,
    level: int = 4,
    n_bank: int = 3000,
    seed: int = 0,
    n_bootstrap: int = 1000,
    progress: bool = False,
    hierarchy: dict[str, np.ndarray] | None = None,
) -> dict[str, Any]:

    t0 = time.perf_counter()
    anc = hierarchy if hierarchy is not None else load_hierarchy()
    for split in ("test", "validation", "reference"):
        n = getattr(bench, split).a.shape[0]
        if split not in anc or anc[split].shape[0] != n:
            raise InputError(
                f"the shift study needs the WordNet hierarchy of the bundled benchmark; the {split} split "
                f"has {n} definitions, the hierarchy {anc.get(split, np.empty((0, 0))).shape[0]}"
            )
    chosen = hierarchy_split(anc["reference"], level, seed)
    groups = {s: group_of(anc[s], chosen, level) for s in ("test", "validation", "reference")}
    sizes = {GROUPS[g]: int(np.count_nonzero(groups["reference"] == g)) for g in range(4)}
    n_bank = min(n_bank, *sizes.values())
    rng = np.random.default_rng(seed)
    banks = {
        GROUPS[g]: np.sort(rng.choice(np.flatnonzero(groups["reference"] == g), n_bank, replace=False))
        for g in range(4)
    }

    def task_rows(split: str):
        task = getattr(bench, split).task("a2b")
        rows = np.flatnonzero((groups[split] == 0) & (task.relevance.counts() > 0))
        return task, rows, task.relevance.subset(rows)

    test, t_rows, t_rel = task_rows("test")
    val, v_rows, v_rel = task_rows("validation")

    def s1(model: Any, task: Any, rows: np.ndarray, rel: Any) -> np.ndarray:
        ids = model.search(task.queries[rows], 1, normalize="none")[1]
        return (first_relevant_rank_topk(ids, rel) == 1).astype(np.float64)

    ref = bench.reference.a
    arms = {"plain": s1(Plain().fit(test.gallery, ref[:16], normalize="none"), test, t_rows, t_rel)}
    arms["nnn whole reference"] = s1(
        NNN(k=16, alpha=0.75).fit(test.gallery, ref, normalize="none"), test, t_rows, t_rel
    )
    chosen_params: dict[str, dict[str, Any]] = {}
    grid_k, grid_alpha = (8, 16, 64), (0.25, 0.5, 0.75, 1.0)
    for name, idx in banks.items():
        bank = ref[idx]
        arms[f"nnn {name}"] = s1(
            NNN(k=16, alpha=0.75).fit(test.gallery, bank, normalize="none"), test, t_rows, t_rel
        )
        model = NNN(k=max(grid_k), alpha=0.75).fit(val.gallery, bank, normalize="none")
        best: tuple[float, int, float] = (-1.0, 0, 0.0)
        for k in grid_k:
            for alpha in grid_alpha:
                v = float(s1(model.with_params(k=k, alpha=alpha), val, v_rows, v_rel).mean())
                if v > best[0]:
                    best = (v, k, alpha)
        chosen_params[name] = {"k": best[1], "alpha": best[2], "validation_success@1": best[0]}
        tuned = NNN(k=best[1], alpha=best[2]).fit(test.gallery, bank, normalize="none")
        arms[f"nnn {name} (tuned)"] = s1(tuned, test, t_rows, t_rel)
        if progress:
            print(f"[shift] {name}: done ({time.perf_counter() - t0:.1f} s)", flush=True)
    out = {
        "level": level,
        "n_targets": len(chosen[level]),
        "n_parents": len(chosen[level - 1]),
        "n_grandparents": len(chosen[level - 2]),
        "reference_group_sizes": sizes,
        "n_bank": int(n_bank),
        "n_test_queries": int(t_rows.size),
        "n_validation_queries": int(v_rows.size),
        "success@1": paired_ci(arms, [("plain", a) for a in arms if a != "plain"], n_bootstrap, seed),
        "chosen_params": chosen_params,
        "grid": {"k": list(grid_k), "alpha": list(grid_alpha)},
        "runtime_seconds": time.perf_counter() - t0,
    }
    return out
