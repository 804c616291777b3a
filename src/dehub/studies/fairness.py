"""Bias@K: does a ranking favour one value of a gallery attribute?

The paper's definition (sec. 3.3, after VisoGender): for an attribute-neutral query,
``Bias@K = (n_A - n_B) / K`` where ``n_A`` and ``n_B`` count the top-``K`` gallery items
with attribute value A and B. Averaged over queries it is the signed skew (0 = parity;
the paper: men vs women, K = 6: 0.348 plain -> 0.072 with NNN); the mean of
``|Bias@K|`` is also reported (a skew that alternates between queries averages out in
the signed mean).

The bundled WordNet benchmark has no gendered gallery with neutral queries: a search of
all lemma strings for male/female pairs (-man/-woman, -or/-ress, -/-ess and a list of
kin and title pairs) finds 23 real pairs (plus 3 false matches such as "m"/"mess"), of
which one ("host"/"hostess") has both members in the test gallery, and the definitions
of those synsets are not neutral (they say "a woman who ..."). We
ship the metric with a documented synthetic test instead of a protocol the data cannot
carry; :func:`run_fairness_study` runs it on a synthetic gallery with a planted skew.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from .._errors import InputError
from ..methods import NNN, Plain
from ._common import paired_ci, unit_rows

__all__ = ["bias_at_k", "run_fairness_study"]


def bias_at_k(ids: np.ndarray, attribute: np.ndarray, k: int, group_a: Any, group_b: Any) -> np.ndarray:
    """Per-query ``(n_A - n_B) / k`` over the first ``k`` columns of ``ids``.

    ``ids``: (n_queries, >= k) gallery rows, best first (``-1`` padding counts as
    neither); ``attribute``: one value per gallery row; rows with other values count as
    neither group.
    """
    ids = np.asarray(ids)
    attribute = np.asarray(attribute)
    if ids.ndim != 2 or ids.shape[1] < k or k < 1:
        raise InputError(f"ids must be (n_queries, >= k) with k >= 1; received shape {ids.shape} and k={k}")
    top = ids[:, :k]
    valid = top >= 0
    vals = attribute[np.where(valid, top, 0)]
    n_a = np.count_nonzero((vals == group_a) & valid, axis=1)
    n_b = np.count_nonzero((vals == group_b) & valid, axis=1)
    return (n_a - n_b) / k


def run_fairness_study(*, seed: int = 0, n_bootstrap: int = 1000) -> dict[str, Any]:
    """Synthetic protocol: 23 'occupations', 10 gallery items each (5 of group A, 5 of B),
    one neutral query per occupation; group-A items carry a shared direction (a generic
    component that makes them hubs), as the paper's CLIP images of men do. The reference
    bank is neutral queries of other instances. Bias@K of plain and NNN with CIs over
    queries."""

    t0 = time.perf_counter()
    rng = np.random.default_rng(seed)
    d, n_occ, per = 64, 23, 5
    occ = unit_rows(rng.standard_normal((n_occ, d)))
    hub_dir = unit_rows(rng.standard_normal((1, d)))[0]
    gal, attr, gocc = [], [], []
    for o in range(n_occ):
        for g, lift in (("A", 0.6), ("B", 0.0)):
            x = occ[o] + 0.5 * unit_rows(rng.standard_normal((per, d))) + lift * hub_dir
            gal.append(unit_rows(x))
            attr += [g] * per
            gocc += [o] * per
    gallery = np.concatenate(gal)
    attribute = np.asarray(attr)
    queries = unit_rows(occ + 0.3 * unit_rows(rng.standard_normal((n_occ, d))) + 0.3 * hub_dir)
    reference = unit_rows(
        occ[rng.integers(0, n_occ, 2000)] + 0.3 * unit_rows(rng.standard_normal((2000, d))) + 0.3 * hub_dir
    )
    plain = Plain().fit(gallery, reference, normalize="none")
    nnn = NNN(k=16, alpha=0.75).fit(gallery, reference, normalize="none")
    out: dict[str, Any] = {"protocol": "synthetic (see docs/studies.md)", "n_queries": n_occ, "K": {}}
    for k in (4, 6):
        arms = {}
        for name, model in (("plain", plain), ("nnn", nnn)):
            ids = model.search(queries, k, normalize="none")[1]
            arms[name] = bias_at_k(ids, attribute, k, "A", "B")
            arms[name + " |bias|"] = np.abs(arms[name])
        out["K"][str(k)] = paired_ci(
            arms, [("plain", "nnn"), ("plain |bias|", "nnn |bias|")], n_bootstrap, seed
        )
    # precision@1: the top-1 is of the query's occupation
    p1 = {}
    for name, model in (("plain", plain), ("nnn", nnn)):
        ids = model.search(queries, 1, normalize="none")[1][:, 0]
        p1[name] = (np.asarray(gocc)[ids] == np.arange(n_occ)).astype(np.float64)
    out["precision@1"] = paired_ci(p1, [("plain", "nnn")], n_bootstrap, seed)
    out["runtime_seconds"] = time.perf_counter() - t0
    return out
