"""Per-query excluded ids: a search's top-k with some gallery rows left out per query.

Like FAISS's ID selectors and the stores' filters, for a query's own item in
item-to-item retrieval or the question words in analogy retrieval. The core is a
post-filter: with at most ``m`` excluded rows per query, the best ``k + m`` rows of a
ranking hold at least ``k`` rows that are not excluded, and those are the first ``k``
non-excluded rows of the whole ranking (a row's rank among the kept rows only drops by
the excluded rows above it). So asking for ``k + m`` and filtering equals filtering the
complete ranking (``tests/methods/test_exclude.py`` checks it against the full list).

The ids are checked once, by :func:`check_excluded`, into :class:`ExcludedRows` (one
flat array and per-query offsets); everything after it is array code.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence

import numpy as np

from .._errors import InputError

__all__ = ["ExcludedIds", "ExcludedRows", "check_excluded", "search_excluding"]

_NO_IDS = np.empty(0, dtype=np.int64)


class ExcludedRows:
    """Checked per-query excluded gallery rows: query ``i``'s are ``ids[offsets[i]:offsets[i + 1]]``.

    Made by :func:`check_excluded` (never by hand); ``n_gallery`` is the gallery size the
    ids were checked against (None: not yet).
    """

    __slots__ = ("ids", "n_gallery", "offsets")

    def __init__(self, ids: np.ndarray, offsets: np.ndarray, n_gallery: int | None) -> None:
        self.ids = ids
        self.offsets = offsets
        self.n_gallery = n_gallery

    def __len__(self) -> int:
        return int(self.offsets.size - 1)

    def __getitem__(self, i: int) -> np.ndarray:
        if not -len(self) <= i < len(self):
            raise IndexError(f"query {i} out of range for {len(self)} queries")
        i %= len(self)
        return self.ids[self.offsets[i] : self.offsets[i + 1]]

    def __iter__(self) -> Iterator[np.ndarray]:
        return (self[i] for i in range(len(self)))

    def query_of_each(self) -> np.ndarray:
        """The query index of every entry of ``ids``."""
        return np.repeat(np.arange(len(self), dtype=np.int64), np.diff(self.offsets))

    def width(self) -> int:
        """The most distinct rows any one query excludes."""
        if self.ids.size == 0:
            return 0
        q = self.query_of_each()
        pairs = np.unique(np.stack([q, self.ids], axis=1), axis=0)
        return int(np.bincount(pairs[:, 0], minlength=len(self)).max())

    def pairs(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(position in rows, excluded id)`` of every excluded id of the queries ``rows``."""
        rows = np.asarray(rows, dtype=np.int64)
        starts = self.offsets[rows]
        lens = self.offsets[rows + 1] - starts
        pos = np.repeat(np.arange(rows.size, dtype=np.int64), lens)
        # entry t of query position p sits at starts[p] + (t - first entry of p)
        first = np.cumsum(lens) - lens
        take = np.repeat(starts - first, lens) + np.arange(int(lens.sum()), dtype=np.int64)
        return pos, self.ids[take]

    def mask_scores(self, scores: np.ndarray, rows: np.ndarray) -> np.ndarray:
        """Set ``scores[p, id]`` to ``-inf`` for every excluded id of query ``rows[p]`` (in place)."""
        pos, ids = self.pairs(rows)
        scores[pos, ids] = -np.inf
        return scores


ExcludedIds = Sequence[Sequence[int]] | Sequence[np.ndarray] | np.ndarray | ExcludedRows


def check_excluded(exclude: ExcludedIds, n_queries: int, n_gallery: int | None = None) -> ExcludedRows:
    """The excluded gallery rows of each query, checked (a 2-D array may pad with -1).

    With ``n_gallery``, ids outside ``[0, n_gallery)`` are an error. An
    :class:`ExcludedRows` already checked against the same sizes is returned as is.
    """
    if isinstance(exclude, ExcludedRows):
        if len(exclude) != n_queries:
            raise InputError(f"exclude must have one entry per query ({n_queries}); received {len(exclude)}")
        if n_gallery is None or exclude.n_gallery == n_gallery:
            return exclude
        ids, offsets = exclude.ids, exclude.offsets
    elif isinstance(exclude, np.ndarray) and exclude.ndim == 2:
        if exclude.size and exclude.dtype.kind not in "iu":
            raise InputError(
                f"exclude must hold integer gallery ids (-1 pads a 2-D array); received dtype {exclude.dtype}"
            )
        arr = np.asarray(exclude, dtype=np.int64)
        if arr.shape[0] != n_queries:
            raise InputError(f"exclude must have one entry per query ({n_queries}); received {arr.shape[0]}")
        kept = arr != -1
        ids = arr[kept]
        offsets = np.concatenate([[0], np.cumsum(kept.sum(axis=1))]).astype(np.int64)
    else:
        try:
            # an empty row reads as float64: it holds no ids, so it is int64
            rows = [x if (x := np.asarray(r).ravel()).size else _NO_IDS for r in exclude]
        except (TypeError, ValueError) as exc:
            raise InputError(
                f"exclude must be one sequence of integer gallery ids per query; received "
                f"{type(exclude).__name__} ({exc})"
            ) from None
        if len(rows) != n_queries:
            raise InputError(f"exclude must have one entry per query ({n_queries}); received {len(rows)}")
        lens = np.fromiter((r.size for r in rows), dtype=np.int64, count=len(rows))
        flat = np.concatenate(rows) if rows else np.empty(0, dtype=np.int64)
        if flat.size and flat.dtype.kind not in "iu":
            first = int(np.flatnonzero(lens)[0])
            raise InputError(
                f"exclude must be one sequence of integer gallery ids per query; received "
                f"{rows[first].dtype} values (query {first}: {rows[first][:3].tolist()})"
            )
        ids = flat.astype(np.int64)
        offsets = np.concatenate([[0], np.cumsum(lens)]).astype(np.int64)
    if n_gallery is not None:
        bad = np.flatnonzero((ids < 0) | (ids >= n_gallery))
        if bad.size:
            queries = np.unique(np.searchsorted(offsets, bad, side="right") - 1)
            raise InputError(
                f"exclude holds {bad.size} gallery id(s) outside [0, {n_gallery}): expected ids of "
                f"the {n_gallery} gallery rows; received {int(ids[bad[0]])} (query {int(queries[0])})"
                f"; queries {queries[:5].tolist()}" + (" ..." if queries.size > 5 else "")
            )
    elif ids.size and ids.min() < 0:
        raise InputError(f"exclude holds negative gallery ids; received {int(ids.min())}")
    return ExcludedRows(ids, offsets, n_gallery)


def filter_excluded(
    scores: np.ndarray, ids: np.ndarray, excluded: ExcludedRows, k: int
) -> tuple[np.ndarray, np.ndarray]:
    """The first ``k`` entries of each row of ``(scores, ids)`` whose id is not excluded.

    Padded with ``-inf``/``-1`` where fewer remain (the search contract).
    """
    n = ids.shape[0]
    # (query, id) pairs as one int64 key each; -1 padding never matches an excluded id
    base = int(max(int(ids.max(initial=0)), int(excluded.ids.max(initial=0)))) + 2
    keys = np.arange(n, dtype=np.int64)[:, None] * base + ids
    ex_keys = excluded.query_of_each() * base + excluded.ids
    keep = ~np.isin(keys, ex_keys) & (ids >= 0)
    # stable: kept entries first, in their ranking order
    order = np.argsort(~keep, axis=1, kind="stable")[:, :k]
    out_ids = np.take_along_axis(ids, order, axis=1)
    out_s = np.take_along_axis(scores, order, axis=1).astype(np.float32, copy=True)
    kept = np.take_along_axis(keep, order, axis=1)
    out_ids = np.where(kept, out_ids, -1).astype(np.int64)
    out_s[~kept] = -np.inf
    if out_ids.shape[1] < k:  # the gallery is smaller than k
        pad = k - out_ids.shape[1]
        out_ids = np.hstack([out_ids, np.full((n, pad), -1, dtype=np.int64)])
        out_s = np.hstack([out_s, np.full((n, pad), -np.inf, dtype=np.float32)])
    return out_s, out_ids


def search_excluding(
    search: Callable[[int], tuple[np.ndarray, np.ndarray]],
    k: int,
    excluded: ExcludedRows,
    n_gallery: int,
) -> tuple[np.ndarray, np.ndarray]:
    """``search(k')`` for ``k' = min(k + max excluded, n_gallery)``, then the post-filter."""
    scores, ids = search(int(min(k + excluded.width(), n_gallery)))
    return filter_excluded(scores, ids, excluded, k)
