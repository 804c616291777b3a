"""The recall check of an ANN export: measured against dehub's exact corrected top-10.

An ANN index over augmented vectors returns the corrected top-k only approximately, and
how approximately depends on the store, the form and the data (IVF partitions built by
L2 k-means do not follow d+1's inner-product ranking; a hub's large bias moves it far
from its plain neighbours). So every ANN export measures, on *probe queries*, the
recall@10 of the store's answers against dehub's exact corrected top-10 (the exact
backend is the oracle), tries the store's search parameter from cheap to expensive, and
keeps the first setting that reaches the target (``--recall``, default 0.99):

* probe queries: the index's kept reference queries (the queries the correction was fitted
  for) where the index keeps them, else seeded *noisy gallery rows*: a gallery row plus
  a random direction of 1.5 times its norm, rescaled to the row's norm. Plain gallery rows
  are far too easy as probes (each is its own nearest item): on the bundled MiniLM data
  (4,000 lemmas, FAISS HNSW d+1) they measured recall@10 0.997 at efSearch 64 where
  held-out definition queries got 0.958; the noisy rows measured 0.938 there (0.983 vs
  0.987 at efSearch 128, 0.996 vs 0.996 at 256): slightly pessimistic, as a floor should be;
* :func:`check_recall` walks the candidate settings and returns a :class:`RecallCheck`
  (the chosen setting, its recall, every setting tried); when none reaches the target it
  keeps the best one, and :func:`report_recall` warns (:class:`RecallWarning`) or, with
  ``strict=True``, raises :class:`RecallNotReached`.

The chosen setting is stored with the export (FAISS sidecar ``search_params``, LanceDB /
Qdrant / pgvector description) together with the measured recall.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .._errors import InputError

__all__ = [
    "DEFAULT_RECALL",
    "PROBE_QUERIES",
    "RecallCheck",
    "RecallNotReached",
    "RecallWarning",
    "probe_queries",
    "exact_top_ids",
    "recall_at",
    "check_recall",
    "report_recall",
]

DEFAULT_RECALL = 0.99
#: number of probe queries (enough for a recall figure to +-0.005 at 0.99)
PROBE_QUERIES = 200


class RecallWarning(UserWarning):
    """No search setting of an ANN export reached the recall target."""


class RecallNotReached(InputError):
    """``strict=True`` and no search setting of an ANN export reached the recall target."""


@dataclass(frozen=True)
class RecallCheck:
    """What the recall check measured: the chosen ``params``, their ``recall``, all tries."""

    params: dict[str, Any]
    recall: float
    target: float
    n_probes: int
    tried: list[tuple[dict[str, Any], float]] = field(default_factory=list)

    @property
    def reached(self) -> bool:
        return self.recall >= self.target

    def as_dict(self) -> dict[str, Any]:
        """The JSON-able record stored with an export."""
        return {
            "recall_at_10": round(float(self.recall), 4),
            "target": float(self.target),
            "n_probes": int(self.n_probes),
            "reached": bool(self.reached),
            "tried": [{"params": p, "recall_at_10": round(float(r), 4)} for p, r in self.tried],
        }

    def describe(self) -> str:
        setting = ", ".join(f"{k}={v}" for k, v in self.params.items()) or "exhaustive"
        return (
            f"recall@10 {self.recall:.4f} against dehub's exact corrected top-10 on {self.n_probes} "
            f"probe queries at {setting} (target {self.target})"
        )


#: norm of the random direction added to a gallery row, relative to the row's norm
PROBE_NOISE = 1.5


def probe_queries(source: Any, n: int = PROBE_QUERIES, seed: int = 0) -> np.ndarray:
    """Probe queries for the recall check: kept reference rows, else noisy gallery rows."""
    reference = getattr(source, "reference", None)
    model = getattr(source, "model", source)
    pool = reference if reference is not None else model.gallery_
    rows = int(pool.shape[0])
    rng = np.random.default_rng(seed)
    take = np.sort(rng.choice(rows, size=min(n, rows), replace=False))
    out = np.asarray(pool[take], dtype=np.float64)
    if reference is None:
        norms = np.linalg.norm(out, axis=1, keepdims=True)
        z = rng.standard_normal(out.shape)
        z *= PROBE_NOISE * norms / np.maximum(np.linalg.norm(z, axis=1, keepdims=True), 1e-30)
        out = out + z
        out *= norms / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-30)
    return np.ascontiguousarray(out, dtype=np.float32)


def exact_top_ids(source: Any, queries: np.ndarray, k: int = 10) -> np.ndarray:
    """dehub's exact corrected top-``k`` ids (the index's external ids) of ``queries``."""
    if hasattr(source, "search") and hasattr(source, "ids"):
        return np.asarray(source.search(queries, k)[1], dtype=np.int64)
    _, rows = source.search(queries, k)
    return np.asarray(rows, dtype=np.int64)


def recall_at(found: Iterable[Iterable[int]], exact: np.ndarray, k: int = 10) -> float:
    """Mean over queries of ``|found[:k] & exact[:k]| / |exact[:k]|`` (padding -1 ignored;
    a query with no exact result is left out). The one recall rule of the exports and the
    serving graph's tuning."""
    per_query = []
    for got, ref in zip(found, np.asarray(exact, dtype=np.int64), strict=True):
        want = ref[:k][ref[:k] >= 0]
        if want.size:
            have = np.fromiter(got, dtype=np.int64)[:k]
            per_query.append(np.isin(want, have).sum() / want.size)
    return float(np.mean(per_query)) if per_query else 1.0


def check_recall(
    search: Callable[[dict[str, Any]], Any],
    candidates: Iterable[dict[str, Any]],
    exact: np.ndarray,
    *,
    target: float = DEFAULT_RECALL,
    k: int = 10,
) -> RecallCheck:
    """Try ``candidates`` (cheapest first) until ``search(params)`` reaches ``target``.

    ``search(params)`` answers the probe queries (one id list per query, best first) with
    the store's own client at that setting. Returns the first setting reaching the target,
    else the best one tried.
    """
    if not 0.0 < target <= 1.0:
        raise InputError(f"the recall target must be in (0, 1]; received {target}")
    tried: list[tuple[dict[str, Any], float]] = []
    for params in candidates:
        rec = recall_at(search(params), exact, k)
        tried.append((dict(params), rec))
        if rec >= target:
            return RecallCheck(dict(params), rec, target, int(exact.shape[0]), tried)
    if not tried:
        raise InputError("check_recall needs at least one candidate setting")
    best = max(tried, key=lambda t: t[1])
    return RecallCheck(best[0], best[1], target, int(exact.shape[0]), tried)


def report_recall(check: RecallCheck, store: str, *, strict: bool = False) -> None:
    """Warn (or raise with ``strict``) when ``check`` did not reach its target."""
    if check.reached:
        return
    msg = (
        f"{store}: no search setting reached recall@10 {check.target} of dehub's corrected top-10 "
        f"(best {check.recall:.4f} at {check.params}); use a flat export, the other form, or a "
        "larger index setting"
    )
    if strict:
        raise RecallNotReached(msg + " (refused: --strict)")
    warnings.warn(msg, RecallWarning, stacklevel=3)
