"""Retrieval metrics over search results and a multi-positive :class:`~dehub.Relevance`.

Everything is computed per query first (:class:`QueryOutcomes`), then averaged: the
per-query arrays are what the paired bootstrap (:mod:`dehub.evaluation.statistics`)
resamples.

Definitions (query ``q`` with relevant set ``P(q)``, ranking by score descending, ties
broken by the smaller gallery row, exactly as the engine ranks):

* ``rank(q)``: 1-based position of the *first* relevant item in the full ranking.
* ``success@K`` (what the NNN paper and most image-text papers call "R@K" or
  "Recall@K"): share of queries with ``rank(q) <= K``, i.e. with at least one relevant
  item in the top K. The old key ``R@K`` stays readable in :meth:`QueryOutcomes.summary`
  (and so in sweep tables) as an alias of ``success@K``.
* ``recall@K`` (the IR definition): mean over queries of
  ``|P(q) ∩ top K| / |P(q)|``, the share of a query's positives retrieved. Equal to
  ``success@K`` when every query has exactly one positive.
* ``nDCG@K``: binary gains, ``DCG = sum over positives ranked <= K of 1/log2(1 + rank)``
  divided by the ideal DCG ``sum_{i=1}^{min(K, |P|)} 1/log2(1 + i)`` (trec_eval / ranx).
* ``mAP@R`` (Musgrave et al., "A Metric Learning Reality Check", 2020): with
  ``R = |P(q)|``, ``(1/R) * sum_{i=1}^{R} precision@i * rel(i)``: average precision
  truncated at the query's own number of positives.
* ``MRR``: mean of ``1 / rank(q)`` (over the full ranking, not truncated).
* ``median_rank`` / ``mean_rank``: of ``rank(q)``.

recall@K, nDCG@K and mAP@R need the rank of *every* positive, not only the first:
:func:`positive_ranks_dense` computes them exactly from dense scores with the same tie
rule (inside the top K the search result decides, as for success@K).

Ranks from a top-K result are known only up to K. The first-relevant rank beyond K is
computed exactly and cheaply from dense scores (:func:`first_relevant_rank_dense`): with
``p*`` the best-scoring positive (ties: smaller row), ``rank = 1 + #{j: s_j > s_p*} +
#{j: s_j == s_p*, j < p*}``: one comparison pass over a block of scores, no sort.
:func:`combine_ranks` merges the two: inside the top K the search result decides (so
R@K is exactly the R@K of the search), beyond it the dense count.

Queries without any relevant item follow an explicit policy (:data:`NoPositivePolicy`):
``"exclude"`` (default) leaves them out of every average and counts them
(``QueryOutcomes.n_without_positives``), ``"miss"`` scores them as misses (rank
``n_gallery + 1``, reciprocal rank 0), ``"error"`` raises.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from .._errors import InputError, Param
from ..relevance import Relevance

__all__ = [
    "NoPositivePolicy",
    "QueryOutcomes",
    "first_relevant_rank_topk",
    "first_relevant_rank_dense",
    "dense_ranks",
    "combine_ranks",
    "outcomes_from_ranks",
    "retrieval_metrics",
    "evaluate_topk",
    "check_ks",
    "paired_metrics",
    "count_ahead",
    "positive_ranks_dense",
    "dense_positive_ranks",
    "metric_names",
    "canonical_metric",
]

NoPositivePolicy = Literal["exclude", "miss", "error"]
_POLICIES = ("exclude", "miss", "error")


def check_ks(ks: Sequence[int]) -> tuple[int, ...]:
    """Validate a list of cut-offs K (positive integers); return them sorted, unique."""
    if isinstance(ks, (int, np.integer)):
        ks = (int(ks),)
    out = []
    for k in ks:
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
            raise InputError(f"every K must be a positive integer; received {list(ks)!r}")
        out.append(int(k))
    if not out:
        raise InputError("ks must hold at least one cut-off K, e.g. (1, 5, 10); received none")
    return tuple(sorted(set(out)))


def metric_names(ks: Sequence[int], *, exact: bool = True) -> list[str]:
    """The per-query metrics dehub reports for cut-offs ``ks``, in table order."""
    ks = check_ks(ks)
    names = [f"success@{k}" for k in ks] + [f"recall@{k}" for k in ks] + [f"nDCG@{k}" for k in ks]
    if exact:
        names += ["mAP@R", "MRR", "mean_rank"]
    return names


def canonical_metric(name: str) -> str:
    """``"R@K"`` (the old name of success@K) -> ``"success@K"``; other names unchanged."""
    if name.startswith("R@"):
        return "success@" + name[2:]
    return name


def _check_policy(policy: str) -> None:
    if policy not in _POLICIES:
        raise InputError(f"no_positive must be one of {_POLICIES}; received {policy!r}")


def _check_ids(ids: np.ndarray, relevance: Relevance) -> np.ndarray:
    ids = np.asarray(ids)
    if ids.ndim != 2 or ids.shape[0] != relevance.n_queries:
        raise InputError(f"ids must have shape (n_queries={relevance.n_queries}, K); received {ids.shape}")
    return ids.astype(np.int64, copy=False)


def first_relevant_rank_topk(ids: np.ndarray, relevance: Relevance) -> np.ndarray:
    """1-based rank of the first relevant item within each row of a top-K ``ids`` result.

    Returns int64 of shape (n_queries,); ``K + 1`` where no relevant item is in the
    top K (the rank is then only known to be larger than K). Padding ids (-1) never count.
    """
    ids = _check_ids(ids, relevance)
    k = ids.shape[1]
    hit = relevance.is_relevant(np.arange(ids.shape[0]), ids)
    any_hit = hit.any(axis=1)
    return np.where(any_hit, hit.argmax(axis=1) + 1, k + 1).astype(np.int64)


def first_relevant_rank_dense(scores: np.ndarray, relevance: Relevance, rows=None) -> np.ndarray:
    """Exact first-relevant rank from a dense score block (engine tie rule).

    Parameters
    ----------
    scores : (n_rows, n_gallery) float array
        Corrected scores of query rows ``rows`` against the whole gallery.
    relevance : Relevance
    rows : array of query rows, optional
        The relevance rows the score rows belong to; default ``0..n_rows-1``.

    Returns int64 (n_rows,); queries without positives get ``n_gallery + 1``.
    """
    scores = np.asarray(scores)
    n_rows, n_gallery = scores.shape
    if n_gallery != relevance.n_gallery:
        raise InputError(
            f"scores have {n_gallery} columns but the relevance covers {relevance.n_gallery} gallery items"
        )
    rows = np.arange(n_rows) if rows is None else np.asarray(rows, dtype=np.int64)
    sub = relevance.subset(rows)
    counts = sub.counts()
    out = np.full(n_rows, n_gallery + 1, dtype=np.int64)
    has = counts > 0
    if not has.any():
        return out
    qrow = sub.query_rows()
    pos_scores = scores[qrow, sub.indices]
    starts = sub.indptr[:-1][has]
    best = np.full(n_rows, -np.inf, dtype=scores.dtype)
    best[has] = np.maximum.reduceat(pos_scores, starts)
    # first positive (smallest row: indices are sorted per query) reaching the max
    at_max = pos_scores == best[qrow]
    first = np.full(n_rows, n_gallery, dtype=np.int64)
    np.minimum.at(first, qrow[at_max], sub.indices[at_max])
    hr = np.flatnonzero(has)
    out[hr] = count_ahead(scores[hr], best[hr], first[hr])
    return out


def _count_rows(mask: np.ndarray) -> np.ndarray:
    """Number of True entries per row.

    A sum of the uint8 view in the narrowest exact accumulator (uint16 for rows shorter
    than 65,536): about 4x faster than ``np.count_nonzero(mask, axis=1)``.
    """
    acc = np.uint16 if mask.shape[1] < 2**16 else np.int64
    return mask.view(np.uint8).sum(axis=1, dtype=acc).astype(np.int64)


def count_ahead(scores: np.ndarray, best: np.ndarray, first: np.ndarray) -> np.ndarray:
    """``1 + #{j: s_j > best} + #{j: s_j == best, j < first}`` per row (the engine's tie rule).

    Two vectorized passes (``>`` and ``==``); the id-aware tie count runs only on the
    rare rows where an item other than ``first`` ties with ``best``.
    """
    b = best[:, None]
    higher = _count_rows(scores > b)
    equal = _count_rows(scores == b)
    rank = 1 + higher
    tied = np.flatnonzero(equal > 1)
    if tied.size:
        cols = np.arange(scores.shape[1])[None, :]
        rank[tied] += np.count_nonzero((scores[tied] == b[tied]) & (cols < first[tied, None]), axis=1)
    return rank


def dense_ranks(
    score_fn: Callable[[np.ndarray], np.ndarray],
    n_queries: int,
    relevance: Relevance,
    *,
    block_rows: int | None = None,
    memory_budget: int = 256 * 2**20,
) -> np.ndarray:
    """Exact first-relevant ranks of every query, scoring query blocks with ``score_fn``.

    ``score_fn(rows)`` must return the dense corrected scores of query rows ``rows``
    against the whole gallery (e.g. ``lambda r: model.score(queries[r])``). Blocks are
    sized so that one score block stays within ``memory_budget`` bytes.
    """
    n_gallery = relevance.n_gallery
    if block_rows is None:
        block_rows = max(1, int(memory_budget // max(1, 8 * n_gallery)))
    out = np.empty(n_queries, dtype=np.int64)
    for start in range(0, n_queries, block_rows):
        rows = np.arange(start, min(start + block_rows, n_queries))
        out[rows] = first_relevant_rank_dense(score_fn(rows), relevance, rows)
    return out


def positive_ranks_dense(scores: np.ndarray, relevance: Relevance, rows=None) -> np.ndarray:
    """Exact 1-based rank of every relevant item of the query rows ``rows`` (engine tie rule).

    ``scores`` is the dense (n_rows, n_gallery) block of those rows. Returns int64
    aligned with ``relevance.subset(rows).indices`` (each query's positives in gallery-row
    order): ``1 + #{j: s_j > s_p} + #{j: s_j == s_p, j < p}`` for positive ``p``.
    """
    scores = np.asarray(scores)
    n_rows, n_gallery = scores.shape
    if n_gallery != relevance.n_gallery:
        raise InputError(
            f"scores have {n_gallery} columns but the relevance covers {relevance.n_gallery} gallery items"
        )
    rows = np.arange(n_rows) if rows is None else np.asarray(rows, dtype=np.int64)
    sub = relevance.subset(rows)
    qrow = sub.query_rows()
    out = np.empty(sub.indices.size, dtype=np.int64)
    step = max(1, (32 << 20) // max(1, scores.itemsize * n_gallery))
    for start in range(0, out.size, step):
        sl = slice(start, min(start + step, out.size))
        block = scores[qrow[sl]]
        best = block[np.arange(block.shape[0]), sub.indices[sl]]
        out[sl] = count_ahead(block, best, sub.indices[sl])
    return out


def dense_positive_ranks(
    score_fn: Callable[[np.ndarray], np.ndarray],
    n_queries: int,
    relevance: Relevance,
    *,
    memory_budget: int = 256 * 2**20,
) -> np.ndarray:
    """:func:`positive_ranks_dense` of every query, scoring query blocks with ``score_fn``.

    Returns int64 aligned with ``relevance.indices``; pass it to :func:`evaluate_topk`
    as ``positive_ranks`` for exact recall@K, nDCG@K, mAP@R, MRR and rank statistics.
    """
    n_gallery = relevance.n_gallery
    block_rows = max(1, int(memory_budget // max(1, 8 * n_gallery)))
    parts = []
    for start in range(0, n_queries, block_rows):
        rows = np.arange(start, min(start + block_rows, n_queries))
        parts.append(positive_ranks_dense(score_fn(rows), relevance, rows))
    return np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)


def _ir_values(
    pos_rank: np.ndarray, relevance: Relevance, ks: Sequence[int], known_to: int | None
) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Per-query recall@K, nDCG@K, mAP@R and first ranks from positive ranks.

    Ranks above ``known_to`` are only known to be larger (``None``: all exact); mAP@R
    is computed only when every query's R is within the known ranks.
    ``pos_rank`` is aligned with ``relevance.indices``; ranks are made strictly
    increasing within a query (two positives cannot share a position; a float tie of a
    differently blocked product could otherwise make them collide).
    """
    n_q, n_g = relevance.n_queries, relevance.n_gallery
    counts = relevance.counts()
    qrow = relevance.query_rows()
    order = np.lexsort((pos_rank, qrow))
    r = pos_rank[order].astype(np.int64)
    j = np.arange(r.size, dtype=np.int64) - np.repeat(relevance.indptr[:-1], counts)  # 0-based
    big = 2 * (n_g + r.size + 2)
    r = j + np.maximum.accumulate(r - j + qrow * big) - qrow * big
    first = np.full(n_q, n_g + 1, dtype=np.int64)
    has = counts > 0
    first[has] = r[relevance.indptr[:-1][has]]
    safe = np.maximum(counts, 1).astype(np.float64)
    disc = 1.0 / np.log2(np.arange(2, max(ks) + 2, dtype=np.float64))
    ideal = np.concatenate([[0.0], np.cumsum(disc)])
    values: dict[str, np.ndarray] = {}
    for k in ks:
        inside = r <= k
        values[f"recall@{k}"] = np.bincount(qrow, weights=inside, minlength=n_q) / safe
        dcg = np.bincount(qrow[inside], weights=disc[r[inside] - 1], minlength=n_q)
        idcg = ideal[np.minimum(counts, k)]
        values[f"nDCG@{k}"] = np.divide(dcg, idcg, out=np.zeros(n_q), where=idcg > 0)
    if known_to is None or (counts.max(initial=0) <= known_to):
        within = r <= counts[qrow]
        ap = np.bincount(qrow[within], weights=(j[within] + 1) / r[within], minlength=n_q)
        values["mAP@R"] = ap / safe
    return values, first


def _topk_positive_ranks(ids: np.ndarray, relevance: Relevance) -> np.ndarray:
    """Rank of every positive inside a top-K result, ``K + 1`` where it is not in it."""
    k = ids.shape[1]
    out = np.full(relevance.indices.size, k + 1, dtype=np.int64)
    hit = relevance.is_relevant(np.arange(ids.shape[0]), ids)
    q, col = np.nonzero(hit)
    if q.size:
        keys = relevance.query_rows() * (relevance.n_gallery + 1) + relevance.indices
        pos = np.searchsorted(keys, q * (relevance.n_gallery + 1) + ids[q, col])
        out[pos] = col + 1
    return out


def combine_ranks(topk_rank: np.ndarray, dense_rank: np.ndarray, k: int) -> np.ndarray:
    """Ranks that agree with a top-``k`` search inside the top k and with dense scores beyond.

    Where the search found a relevant item its rank is used; elsewhere the dense rank,
    raised to at least ``k + 1`` (float rounding of a differently blocked product can put
    a tie on the other side; the search result is the one the user gets).
    """
    topk_rank = np.asarray(topk_rank, dtype=np.int64)
    dense_rank = np.asarray(dense_rank, dtype=np.int64)
    return np.where(topk_rank <= k, topk_rank, np.maximum(dense_rank, k + 1))


@dataclass(frozen=True)
class QueryOutcomes:
    """Per-query results of one method on one task (only queries that are averaged).

    ``values`` maps a metric name (``"success@1"``, ``"recall@10"``, ``"nDCG@10"``,
    ``"mAP@R"``, ``"MRR"``, ``"mean_rank"``) to a
    float64 array over the averaged queries; the metric is its mean. ``rank`` holds the
    first-relevant ranks (``median_rank`` is their median). ``query_rows`` are the task's
    query rows the arrays refer to (all of them unless queries without positives were
    excluded); ``rank_exact`` is False when ranks beyond the top K are unknown (then
    MRR and the rank statistics are truncated versions and are not reported).
    """

    values: dict[str, np.ndarray]
    rank: np.ndarray
    query_rows: np.ndarray
    n_queries: int
    n_without_positives: int
    no_positive: str
    rank_exact: bool
    ks: tuple[int, ...] = field(default=())

    def summary(self, *, aliases: bool = True) -> dict[str, float]:
        """Mean of every per-query metric, plus ``median_rank`` (if ranks are exact).

        ``aliases`` adds the old key ``R@K`` beside every ``success@K`` (same value).
        """
        out = {name: float(v.mean()) if v.size else float("nan") for name, v in self.values.items()}
        if aliases:
            for name in list(out):
                if name.startswith("success@"):
                    out["R@" + name[len("success@") :]] = out[name]
        if self.rank_exact:
            out["median_rank"] = float(np.median(self.rank)) if self.rank.size else float("nan")
        return out


def outcomes_from_ranks(
    rank: np.ndarray | None,
    relevance: Relevance,
    ks: Sequence[int] = (1, 5, 10),
    *,
    no_positive: NoPositivePolicy = "exclude",
    rank_exact: bool = True,
    positive_ranks: np.ndarray | None = None,
    positive_ranks_known_to: int | None = None,
) -> QueryOutcomes:
    """Per-query outcomes from first-relevant ranks (see the module docstring).

    With ``positive_ranks`` (the rank of every positive, aligned with
    ``relevance.indices``) also recall@K, nDCG@K and mAP@R (positive ranks above
    ``positive_ranks_known_to`` are only known to be larger: mAP@R is then left out
    unless every query's R is within them); ``rank`` may be ``None`` (the first ranks
    follow from the positive ranks).
    """
    _check_policy(no_positive)
    ks = check_ks(ks)
    ir: dict[str, np.ndarray] = {}
    if positive_ranks is not None:
        positive_ranks = np.asarray(positive_ranks, dtype=np.int64)
        if positive_ranks.shape != (relevance.n_pairs,):
            raise InputError(
                f"positive_ranks must have one entry per relevant pair ({relevance.n_pairs},); "
                f"received {positive_ranks.shape}"
            )
        ir, first = _ir_values(positive_ranks, relevance, ks, positive_ranks_known_to)
        rank = first if rank is None else rank
    if rank is None:
        raise InputError("outcomes_from_ranks needs rank or positive_ranks")
    rank = np.asarray(rank, dtype=np.int64)
    if rank.shape != (relevance.n_queries,):
        raise InputError(
            f"rank must have one entry per query ({relevance.n_queries},); received {rank.shape}"
        )
    has = relevance.counts() > 0
    n_without = int((~has).sum())
    if n_without and no_positive == "error":
        first = np.flatnonzero(~has)[:5].tolist()
        raise InputError(
            f"{n_without} of {relevance.n_queries} queries have no relevant gallery item "
            f"(e.g. query rows {first})",
            fix="Fix the relevance, or pass {exclude} (leave them out, counted) or {miss} "
            "(score them as misses)",
            params={"exclude": Param("no_positive", "'exclude'"), "miss": Param("no_positive", "'miss'")},
        )
    if no_positive == "exclude":
        rows = np.flatnonzero(has)
    else:
        rows = np.arange(relevance.n_queries)
        rank = np.where(has, rank, relevance.n_gallery + 1)
    r = rank[rows]
    values = {f"success@{k}": (r <= k).astype(np.float64) for k in ks}
    for name in [f"recall@{k}" for k in ks] + [f"nDCG@{k}" for k in ks] + ["mAP@R"]:
        if name in ir:
            values[name] = ir[name][rows]
    if rank_exact:
        values["MRR"] = np.where(r <= relevance.n_gallery, 1.0 / r, 0.0)
        values["mean_rank"] = r.astype(np.float64)
    return QueryOutcomes(
        values=values,
        rank=r,
        query_rows=rows,
        n_queries=relevance.n_queries,
        n_without_positives=n_without,
        no_positive=no_positive,
        rank_exact=rank_exact,
        ks=ks,
    )


def evaluate_topk(
    ids: np.ndarray,
    relevance: Relevance,
    ks: Sequence[int] = (1, 5, 10),
    *,
    dense_rank: np.ndarray | None = None,
    no_positive: NoPositivePolicy = "exclude",
    positive_ranks: np.ndarray | None = None,
) -> QueryOutcomes:
    """Per-query outcomes of a top-K search result ``ids`` (shape (n_queries, K)).

    Every requested K must be ``<= ids.shape[1]``. success@K, recall@K and nDCG@K come
    from ``ids``. With ``positive_ranks`` (from :func:`dense_positive_ranks`) or
    ``dense_rank`` (first ranks, from :func:`dense_ranks`) ranks beyond K are exact and
    MRR / mean / median rank are reported, with ``positive_ranks`` also mAP@R; inside the
    top K the search result decides.
    """
    ids = _check_ids(ids, relevance)
    ks = check_ks(ks)
    width = ids.shape[1]
    if ks[-1] > width:
        raise InputError(
            f"success@{ks[-1]} needs at least {ks[-1]} results per query; received {width}. "
            f"Search with k >= {ks[-1]}."
        )
    pr = _topk_positive_ranks(ids, relevance)
    if positive_ranks is not None:
        dense_pr = np.asarray(positive_ranks, dtype=np.int64)
        if dense_pr.shape != pr.shape:
            raise InputError(
                f"positive_ranks must have one entry per relevant pair ({pr.size},); received {dense_pr.shape}"
            )
        pr = np.where(pr <= width, pr, np.maximum(dense_pr, width + 1))
        return outcomes_from_ranks(None, relevance, ks, no_positive=no_positive, positive_ranks=pr)
    rank = first_relevant_rank_topk(ids, relevance)
    if dense_rank is not None:
        rank = combine_ranks(rank, dense_rank, width)
    return outcomes_from_ranks(
        rank,
        relevance,
        ks,
        no_positive=no_positive,
        rank_exact=dense_rank is not None,
        positive_ranks=pr,
        positive_ranks_known_to=width,
    )


def retrieval_metrics(
    results: tuple[np.ndarray, np.ndarray],
    relevance: Relevance,
    ks: Sequence[int] = (1, 5, 10),
    *,
    dense_rank: np.ndarray | None = None,
    no_positive: NoPositivePolicy = "exclude",
) -> dict[str, float]:
    """Metric means of a ``(scores, ids)`` search result: ``{"R@1": ..., "MRR": ...}``.

    Also reports ``n_queries``, ``n_evaluated`` and ``n_without_positives`` so nothing
    is dropped silently.
    """
    _, ids = results
    out = evaluate_topk(ids, relevance, ks, dense_rank=dense_rank, no_positive=no_positive)
    summary = out.summary()
    summary.update(
        n_queries=out.n_queries,
        n_evaluated=int(out.query_rows.size),
        n_without_positives=out.n_without_positives,
    )
    return summary


def paired_metrics(
    split,
    results: dict[str, tuple[np.ndarray, np.ndarray]],
    ks: Sequence[int] = (1, 5, 10),
    *,
    dense_ranks_by_direction: dict[str, np.ndarray] | None = None,
    no_positive: NoPositivePolicy = "exclude",
) -> dict[str, dict[str, float]]:
    """Metrics of both directions of a :class:`~dehub.datasets.PairedSplit` in one call.

    ``results`` maps ``"a2b"`` (queries = side a, gallery = side b) and/or ``"b2a"`` to
    that direction's ``(scores, ids)``; the relevance of each direction is derived from
    ``split.pairs`` (several positives per query where the pairs say so).
    """
    if not results:
        raise InputError("results must map at least one direction ('a2b'/'b2a') to (scores, ids)")
    out = {}
    for direction, res in results.items():
        task = split.task(direction)
        dr = None if dense_ranks_by_direction is None else dense_ranks_by_direction.get(direction)
        out[direction] = retrieval_metrics(res, task.relevance, ks, dense_rank=dr, no_positive=no_positive)
    return out
