"""Per-query excluded ids: a search's top-k with some gallery rows left out per query.

Like FAISS's ID selectors and the stores' filters, for a query's own item in
item-to-item retrieval or the question words in analogy retrieval. The core is a
post-filter: with at most ``m`` excluded rows per query, the best ``k + m`` rows of a
ranking hold at least ``k`` rows that are not excluded, and those are the first ``k``
non-excluded rows of the whole ranking (a row's rank among the kept rows only drops by
the excluded rows above it). So asking for ``k + m`` and filtering equals filtering the
complete ranking (``tests/methods/test_exclude.py`` checks it against the full list).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from .._errors import InputError

__all__ = ["ExcludedIds", "check_excluded", "search_excluding"]

ExcludedIds = Sequence[Sequence[int]] | Sequence[np.ndarray] | np.ndarray


def check_excluded(exclude: ExcludedIds, n_queries: int, n_gallery: int | None = None) -> list[np.ndarray]:
    """One int64 array of excluded gallery rows per query (a 2-D array may pad with -1).

    With ``n_gallery``, ids outside ``[0, n_gallery)`` are an error.
    """
    if isinstance(exclude, np.ndarray) and exclude.ndim == 2:
        rows = [r[r >= 0] for r in np.asarray(exclude, dtype=np.int64)]
    else:
        try:
            rows = [np.asarray(r, dtype=np.int64).ravel() for r in exclude]
        except (TypeError, ValueError) as exc:
            raise InputError(
                f"exclude must be one sequence of integer gallery ids per query; received {type(exclude).__name__} ({exc})"
            ) from None
    if len(rows) != n_queries:
        raise InputError(f"exclude must have one entry per query ({n_queries}); received {len(rows)}")
    if n_gallery is not None:
        bad = [i for i, r in enumerate(rows) if r.size and (r.min() < 0 or r.max() >= n_gallery)]
        if bad:
            raise InputError(
                f"exclude holds gallery ids outside [0, {n_gallery}) for queries {bad[:5]}"
                + (" ..." if len(bad) > 5 else "")
            )
    return rows


def filter_excluded(
    scores: np.ndarray, ids: np.ndarray, excluded: list[np.ndarray], k: int
) -> tuple[np.ndarray, np.ndarray]:
    """The first ``k`` entries of each row of ``(scores, ids)`` whose id is not excluded.

    Padded with ``-inf``/``-1`` where fewer remain (the search contract).
    """
    n = ids.shape[0]
    width = max((e.size for e in excluded), default=0)
    ex = np.full((n, max(width, 1)), -2, dtype=np.int64)  # -2 never matches an id or padding
    for i, e in enumerate(excluded):
        ex[i, : e.size] = e
    keep = ~(ids[:, :, None] == ex[:, None, :]).any(axis=2) & (ids >= 0)
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
    excluded: list[np.ndarray],
    n_gallery: int,
) -> tuple[np.ndarray, np.ndarray]:
    """``search(k')`` for ``k' = min(k + max excluded, n_gallery)``, then the post-filter."""
    width = max((int(np.unique(e).size) for e in excluded), default=0)
    scores, ids = search(int(min(k + width, n_gallery)))
    return filter_excluded(scores, ids, excluded, k)
