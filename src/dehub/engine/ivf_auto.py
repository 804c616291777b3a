"""How the ``ivf`` engine chooses its own parameters from the data (knobs left at ``None``).

Three measurements, each a small function over arrays:

* **assignment window** (:func:`window_agreement`): the lists are assigned on a window
  of ``assign_dim`` coordinates (:mod:`dehub.engine.kmeans`). After training, the share
  of 2,048 held-out rows whose window list is also their nearest full-dimensional
  centroid is measured; below :data:`AGREEMENT_TARGET` (0.9) the window is doubled and
  the quantizer trained again (up to all of ``d``). Measured (118,000 x 512, 512 lists):
  planted hubs 0.946 on 128 coordinates (kept; recall 0.998 at ``nprobe=3``; 64
  coordinates left the recall under 0.97 at any ``nprobe`` up to 64); Zipf-sized
  clusters 0.885 on 128, 0.926 on 256 (kept); real MiniLM WordNet (d=384) 0.665 on
  128, 0.826 on 256, so all 384.
* **list balance** (:func:`list_balance`): ``nlist * sum(share ** 2)``, the rows a query
  scans per probed list relative to even lists of ``n / nlist`` (a query lands in a list
  about as often as the list's share of the rows); reported in ``build_stats``.
* **nprobe** (:func:`nprobe_for_recall`): the exact engine's top-k of a deterministic
  sample of the search's queries (:func:`recall_sample_rows`) against the rank of each
  true neighbour's list in the query's probe order: a neighbour is found with ``nprobe``
  lists exactly when its list ranks below ``nprobe`` (lists are scanned exactly), so one
  ranking gives the recall of every ``nprobe`` at once. The fewest lists whose sampled
  recall, less one standard error of its mean over the sampled queries, reaches the
  target are taken: queries of one cluster miss together, so the error is measured over
  queries, not neighbours.
* **sequential sample** (:func:`recall_sample_stages`, :func:`worth_sampling_more`): the
  check starts with 64 of the sampled queries and searches the next ones exactly only
  while the choice is uncertain (two standard errors of margin would probe more lists
  than one) or the margin costs more scanning than they would (the lists the margin
  adds, times the rows a probe scans, ``n / nlist`` times the list balance, times the
  queries, against the added sampled queries times ``n``). Resampled on the benchmark
  sets (5,000 queries, 400 random samples of 128): the sequential rule searched 88
  (planted hubs) and 107 (Zipf clusters) queries on average, chose nprobe 3.55 / 13.29,
  and left the true recall under 0.99 in 1.3% / 18.5% of samples, against 0.7% / 18.2%
  for all 128 (64 alone: 2.2% / 24.7%).
"""

from __future__ import annotations

import numpy as np

from .kmeans import CoarseQuantizer

__all__ = [
    "AGREEMENT_TARGET",
    "HOLDOUT_ROWS",
    "window_agreement",
    "list_balance",
    "recall_sample_rows",
    "neighbour_ranks",
    "nprobe_for_recall",
    "recall_sample_stages",
    "worth_sampling_more",
    "FIRST_STAGE",
]

AGREEMENT_TARGET = 0.9  # window lists that must equal the full-dimensional nearest centroid
HOLDOUT_ROWS = 2048  # rows (not trained on) on which the agreement is measured
_SAMPLE_SHARE = 40  # one sampled query in this many ...
_SAMPLE_MIN, _SAMPLE_MAX = 128, 256  # ... within these bounds (all queries below the minimum)
FIRST_STAGE = 64  # sampled queries the sequential check starts with (doubled while worth it)


def window_agreement(quantizer: CoarseQuantizer, rows: np.ndarray) -> float:
    """Share of ``rows`` whose list on the window equals their nearest full-dimensional
    centroid (1.0 when the window is all of ``d``)."""
    if quantizer.hi - quantizer.lo == quantizer.centroids.shape[1] or rows.shape[0] == 0:
        return 1.0
    full = (rows @ quantizer.centroids.T).argmax(axis=1)
    return float(np.mean(full == quantizer.assign(rows)))


def list_balance(sizes: np.ndarray) -> float:
    """``nlist * sum(share ** 2)`` of the list sizes: 1.0 for even lists; the factor by
    which a query drawn like the rows scans more rows per probe than with even lists."""
    sizes = np.asarray(sizes, dtype=np.float64)
    total = sizes.sum()
    return float(sizes.size * np.square(sizes / total).sum()) if total > 0 else 1.0


def recall_sample_rows(n_queries: int) -> np.ndarray:
    """The queries the recall check searches exactly: one in 40 (128 to 256 of them, all
    below 128), evenly spread over the rows, the same for the same number of queries."""
    nq = int(n_queries)
    size = min(nq, max(_SAMPLE_MIN, min(_SAMPLE_MAX, nq // _SAMPLE_SHARE)))
    if size <= 0:
        return np.empty(0, dtype=np.int64)
    return np.unique(np.linspace(0, nq - 1, size).astype(np.int64))


def recall_sample_stages(n_queries: int) -> list[np.ndarray]:
    """The rows of :func:`recall_sample_rows` in stages: the first :data:`FIRST_STAGE`
    evenly spread over the sample (positions ``i * s // 64``), then the rows that make
    2x, 4x, ... as many (the positions ``i * s // (2 * 64)``, ... that are new); the
    stages are disjoint, their union is the whole sample, and every prefix of stages is
    spread evenly over all the queries."""
    rows = recall_sample_rows(n_queries)
    s = rows.size
    stages: list[np.ndarray] = []
    taken = np.zeros(s, dtype=bool)
    size = FIRST_STAGE
    while not taken.all():
        pick = np.arange(size) * s // size if size < s else np.arange(s)  # nested as size doubles
        new = pick[~taken[pick]]
        taken[new] = True
        if new.size:
            stages.append(rows[new])
        size *= 2
    return stages


def worth_sampling_more(
    nprobe_margin: int, nprobe_mean: int, n_queries: int, rows_per_probe: float, added: int, n_database: int
) -> bool:
    """Whether searching ``added`` more sampled queries exactly (``added * n_database``
    rows scored) costs less than the scanning the standard-error margin adds now
    (``nprobe_margin - nprobe_mean`` lists for each of ``n_queries``, ``rows_per_probe``
    rows each); the standard error, so the margin, shrinks as one over the square root
    of the sample's size."""
    extra_scan = max(0, int(nprobe_margin) - int(nprobe_mean)) * int(n_queries) * float(rows_per_probe)
    return extra_scan > int(added) * int(n_database)


def neighbour_ranks(probe_order: np.ndarray, list_of: np.ndarray, true_ids: np.ndarray) -> np.ndarray:
    """Rank (0 = probed first) of the list of every true neighbour in its query's probe
    order; ``probe_order`` (s, nlist) holds every list, best first; padding ids (-1) of
    ``true_ids`` (s, k) get rank ``nlist`` (never found, never counted: see
    :func:`nprobe_for_recall`)."""
    s, nlist = probe_order.shape
    rank = np.empty_like(probe_order)
    rank[np.arange(s)[:, None], probe_order] = np.arange(nlist)
    valid = true_ids >= 0
    ranks = rank[np.arange(s)[:, None], list_of[np.where(valid, true_ids, 0)]]
    return np.where(valid, ranks, nlist)


def nprobe_for_recall(
    ranks: np.ndarray, nlist: int, recall: float, *, margin: float = 1.0
) -> tuple[int, float]:
    """The fewest lists ``p`` whose mean per-query recall (share of each query's true
    neighbours with rank below ``p``), less ``margin`` standard errors of that mean over
    the queries (one by default; 0: the mean alone), reaches ``recall``; and the mean
    recall at ``p``. ``ranks`` (s, k) from
    :func:`neighbour_ranks` (rank ``nlist`` = padding, not a neighbour); ``p <= nlist``,
    where every neighbour is found."""
    nlist = int(nlist)
    valid = ranks < nlist
    keep = valid.any(axis=1)
    if not keep.any():
        return 1, 1.0
    r, c = ranks[keep], valid[keep].sum(axis=1).astype(np.float64)
    # per query, the neighbours whose list ranks p-1 (column p), for every p at once
    hits = np.zeros((r.shape[0], nlist + 2), dtype=np.float64)
    np.add.at(hits, (np.repeat(np.arange(r.shape[0]), r.shape[1]), r.ravel() + 1), 1.0)
    per_query = np.cumsum(hits[:, 1 : nlist + 1], axis=1) / c[:, None]  # column p-1: recall with p lists
    mean = per_query.mean(axis=0)
    se = per_query.std(axis=0, ddof=1) / np.sqrt(r.shape[0]) if r.shape[0] > 1 else np.zeros_like(mean)
    ok = np.flatnonzero(mean - float(margin) * se >= float(recall) - 1e-12)
    p = int(ok[0]) + 1 if ok.size else nlist
    return p, float(mean[p - 1])
