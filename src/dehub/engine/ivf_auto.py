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
* **one pass for the sample**: the sampled queries are searched in one exact pass. A
  sequential check (64 sampled queries first, the next 64 only while one and two
  standard errors chose different lists) was measured and dropped: 64 queries cost
  0.70x the exact pass of 128 (a pass over the database dominates), so a second stage
  made the check 1.56x slower on Zipf clusters, and 64 alone chose one list more on
  planted hubs (nprobe 4, not 3) for a check only 0.92x as long.
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
]

AGREEMENT_TARGET = 0.9  # window lists that must equal the full-dimensional nearest centroid
HOLDOUT_ROWS = 2048  # rows (not trained on) on which the agreement is measured
_SAMPLE_SHARE = 40  # one sampled query in this many ...
_SAMPLE_MIN, _SAMPLE_MAX = 128, 256  # ... within these bounds (all queries below the minimum)


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
