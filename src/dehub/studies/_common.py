"""Small helpers shared by the studies: fitting by name, top-1 outcomes, intervals."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from statistics import NormalDist
from typing import Any

import numpy as np

from .._errors import InputError
from ..evaluation.statistics import bootstrap_comparisons
from ..methods import METHODS, BaseCorrector

__all__ = [
    "STUDY_METHODS",
    "fit_method",
    "unit_rows",
    "top1",
    "rank_of",
    "wilson_interval",
    "bootstrap_mean_ci",
    "paired_ci",
]

#: The settings every study compares (the paper's in-distribution NNN setting; the
#: robust variants at the same k and alpha; QB-Norm and DBNorm at their defaults).
STUDY_METHODS: dict[str, tuple[str, dict[str, Any]]] = {
    "plain": ("plain", {}),
    "nnn": ("nnn", {"k": 16, "alpha": 0.75}),
    "nnn_trimmed": ("robust_nnn", {"k": 16, "alpha": 0.75, "statistic": "trimmed", "trim": 0.25}),
    "nnn_median": ("robust_nnn", {"k": 16, "alpha": 0.75, "statistic": "median"}),
    "qbnorm": ("qbnorm", {"beta": 20.0}),
    "dbnorm": ("dbnorm", {"beta1": 20.0, "beta2": 20.0}),
}


def fit_method(label: str, gallery: np.ndarray, reference: np.ndarray, **fit_kwargs: Any) -> BaseCorrector:
    """Fit the study setting ``label`` (a key of :data:`STUDY_METHODS`)."""
    try:
        name, params = STUDY_METHODS[label]
    except KeyError:
        raise InputError(f"unknown study method {label!r}; expected one of {sorted(STUDY_METHODS)}") from None
    model = METHODS[name](**params)
    kwargs = {"normalize": "none", **fit_kwargs}
    return model.fit(gallery, reference, **kwargs)


def unit_rows(x: np.ndarray) -> np.ndarray:
    """Float32 copy of ``x`` with L2-normalized rows."""
    x = np.asarray(x, dtype=np.float32)
    n = np.linalg.norm(x, axis=1, keepdims=True)
    return (x / np.maximum(n, np.finfo(np.float32).tiny)).astype(np.float32)


def top1(model: BaseCorrector, queries: np.ndarray, *, block: int = 2048) -> np.ndarray:
    """The top-1 gallery row of every query under the fitted model's corrected score."""
    out = np.empty(queries.shape[0], dtype=np.int64)
    for s in range(0, queries.shape[0], block):
        out[s : s + block] = np.argmax(model.score(queries[s : s + block], normalize="none"), axis=1)
    return out


def rank_of(model: BaseCorrector, queries: np.ndarray, items: np.ndarray, *, block: int = 2048) -> np.ndarray:
    """1-based rank of gallery row ``items[i]`` for query ``i`` (ties: ahead counts strictly)."""
    items = np.asarray(items, dtype=np.int64)
    out = np.empty(queries.shape[0], dtype=np.int64)
    for s in range(0, queries.shape[0], block):
        sc = model.score(queries[s : s + block], normalize="none")
        own = sc[np.arange(sc.shape[0]), items[s : s + block]]
        out[s : s + block] = 1 + np.count_nonzero(sc > own[:, None], axis=1)
    return out


def wilson_interval(successes: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval of a binomial proportion (``(nan, nan)`` for ``n == 0``)."""
    if n == 0:
        return float("nan"), float("nan")

    z = NormalDist().inv_cdf(0.5 + confidence / 2)
    p = successes / n
    den = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / den
    half = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / den
    return float(max(0.0, centre - half)), float(min(1.0, centre + half))


def bootstrap_mean_ci(
    values: np.ndarray, n_resamples: int = 1000, seed: int = 0, confidence: float = 0.95
) -> dict[str, float]:
    """Mean of per-unit ``values`` with a percentile bootstrap interval."""

    v = np.asarray(values, dtype=np.float64)
    if v.size == 0:
        return {"value": float("nan"), "ci_low": float("nan"), "ci_high": float("nan"), "n": 0}
    res = bootstrap_comparisons({"x": {"v": v}}, [], n_resamples, seed, confidence)
    m = res["per_method"]["x"]["v"]
    return {"value": m["value"], "ci_low": m["ci_low"], "ci_high": m["ci_high"], "n": int(v.size)}


def paired_ci(
    outcomes: Mapping[str, np.ndarray],
    pairs: Sequence[tuple[str, str]],
    n_resamples: int = 1000,
    seed: int = 0,
    confidence: float = 0.95,
) -> dict[str, Any]:
    """Per-unit outcomes of several arms (same units): means and paired differences with CIs."""

    res = bootstrap_comparisons(
        {k: {"v": np.asarray(v, dtype=np.float64)} for k, v in outcomes.items()},
        list(pairs),
        n_resamples,
        seed,
        confidence,
    )
    return {
        "per_arm": {k: v["v"] for k, v in res["per_method"].items()},
        "differences": {k: v["v"] for k, v in res["differences"].items()},
    }
