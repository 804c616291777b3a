"""Relevance judgements: which gallery items are correct answers for each query.

A :class:`Relevance` maps query row ``i`` to the *set* of relevant gallery rows, so
several captions per image (image-to-text) or several images per caption work the
same way. It is stored in CSR form (``indptr``, ``indices``) so metrics run as
array operations, never as Python loops over dicts.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import numpy as np

from ._errors import InputError

__all__ = ["Relevance"]


class Relevance:
    """Query row -> set of relevant gallery rows, in CSR form.

    Parameters
    ----------
    indptr : array of shape (n_queries + 1,)
        ``indices[indptr[i]:indptr[i + 1]]`` are the relevant gallery rows of query ``i``.
    indices : array of shape (n_pairs,)
        Gallery rows, sorted and unique within each query.
    n_gallery : int
        Number of gallery items; every index must be below it.

    Use :meth:`from_pairs` or :meth:`from_dict` rather than building the arrays by hand.
    """

    __slots__ = ("indptr", "indices", "n_gallery")

    def __init__(self, indptr: np.ndarray, indices: np.ndarray, n_gallery: int) -> None:
        indptr = np.asarray(indptr, dtype=np.int64)
        indices = np.asarray(indices, dtype=np.int64)
        if indptr.ndim != 1 or indptr.size < 1 or indptr[0] != 0:
            raise InputError(f"indptr must be a 1-D array starting at 0; received shape {indptr.shape}")
        if np.any(np.diff(indptr) < 0) or indptr[-1] != indices.size:
            raise InputError(
                "indptr must be non-decreasing and end at len(indices) "
                f"({indices.size}); received last value {int(indptr[-1])}"
            )
        n_gallery = int(n_gallery)
        if indices.size and (indices.min() < 0 or indices.max() >= n_gallery):
            bad = indices[(indices < 0) | (indices >= n_gallery)]
            raise InputError(
                f"relevance refers to gallery rows outside 0..{n_gallery - 1}: "
                f"{bad[:5].tolist()}{' ...' if bad.size > 5 else ''} "
                f"({bad.size} in all). Check that the relevance ids match the gallery ids."
            )
        if indices.size > 1:
            rows = np.repeat(np.arange(indptr.size - 1, dtype=np.int64), np.diff(indptr))
            keys = rows * (n_gallery + 1) + indices
            if np.any(keys[1:] <= keys[:-1]):
                raise InputError(
                    "indices must be sorted and unique within each query (CSR order); "
                    "received unsorted or repeated gallery rows. Build with "
                    "Relevance.from_pairs or Relevance.from_dict, which sort and deduplicate."
                )
        self.indptr = indptr
        self.indices = indices
        self.n_gallery = n_gallery

    # ------------------------------------------------------------------ builders
    @classmethod
    def from_pairs(
        cls,
        query_rows: Iterable[int] | np.ndarray,
        gallery_rows: Iterable[int] | np.ndarray,
        n_queries: int,
        n_gallery: int,
    ) -> Relevance:
        """Build from parallel arrays of (query row, gallery row) pairs; duplicates merge."""
        q = np.asarray(query_rows, dtype=np.int64).ravel()
        g = np.asarray(gallery_rows, dtype=np.int64).ravel()
        if q.shape != g.shape:
            raise InputError(
                f"query_rows and gallery_rows must have the same length; received {q.size} and {g.size}"
            )
        if q.size and (q.min() < 0 or q.max() >= n_queries):
            bad = q[(q < 0) | (q >= n_queries)]
            raise InputError(f"pairs refer to query rows outside 0..{n_queries - 1}: {bad[:5].tolist()}")
        # Sort by (query, gallery) and drop duplicate pairs.
        order = np.lexsort((g, q))
        q, g = q[order], g[order]
        if q.size:
            keep = np.ones(q.size, dtype=bool)
            keep[1:] = (q[1:] != q[:-1]) | (g[1:] != g[:-1])
            q, g = q[keep], g[keep]
        counts = np.bincount(q, minlength=n_queries)
        indptr = np.zeros(n_queries + 1, dtype=np.int64)
        np.cumsum(counts, out=indptr[1:])
        return cls(indptr, g, n_gallery)

    @classmethod
    def from_dict(cls, mapping: Mapping[int, Iterable[int]], n_queries: int, n_gallery: int) -> Relevance:
        """Build from ``{query row: iterable of gallery rows}``; missing queries get no positives."""
        qs: list[int] = []
        gs: list[int] = []
        for qi, rel in mapping.items():
            for gi in rel:
                qs.append(int(qi))
                gs.append(int(gi))
        return cls.from_pairs(qs, gs, n_queries, n_gallery)

    # ------------------------------------------------------------------ views
    @property
    def n_queries(self) -> int:
        return self.indptr.size - 1

    @property
    def n_pairs(self) -> int:
        return self.indices.size

    def counts(self) -> np.ndarray:
        """Number of relevant gallery items of every query, shape (n_queries,)."""
        return np.diff(self.indptr)

    def positives(self, query: int) -> np.ndarray:
        """Relevant gallery rows of one query (sorted)."""
        return self.indices[self.indptr[query] : self.indptr[query + 1]]

    def query_rows(self) -> np.ndarray:
        """The query row of every stored pair, aligned with :attr:`indices`."""
        return np.repeat(np.arange(self.n_queries, dtype=np.int64), self.counts())

    def to_dict(self) -> dict[int, set[int]]:
        return {i: set(self.positives(i).tolist()) for i in range(self.n_queries)}

    def transpose(self) -> Relevance:
        """The reverse direction: gallery row -> set of query rows."""
        return Relevance.from_pairs(self.indices, self.query_rows(), self.n_gallery, self.n_queries)

    def subset(self, queries: np.ndarray) -> Relevance:
        """Relevance of the given query rows (in that order), e.g. a bootstrap resample."""
        queries = np.asarray(queries, dtype=np.int64)
        counts = self.counts()[queries]
        indptr = np.zeros(queries.size + 1, dtype=np.int64)
        np.cumsum(counts, out=indptr[1:])
        starts = self.indptr[queries]
        offsets = np.arange(indptr[-1], dtype=np.int64) - np.repeat(indptr[:-1], counts)
        indices = self.indices[np.repeat(starts, counts) + offsets]
        return Relevance(indptr, indices, self.n_gallery)

    def is_relevant(self, query_rows: np.ndarray, gallery_rows: np.ndarray) -> np.ndarray:
        """Boolean array: is ``gallery_rows[i, j]`` relevant to ``query_rows[i]``?

        ``gallery_rows`` has shape (len(query_rows), K); entries ``< 0`` (padding) are False.
        Vectorized through a sorted key search, no Python loop over queries.
        """
        query_rows = np.asarray(query_rows, dtype=np.int64)
        gallery_rows = np.asarray(gallery_rows, dtype=np.int64)
        keys = self.query_rows() * (self.n_gallery + 1) + self.indices  # sorted by construction
        probe = query_rows[:, None] * (self.n_gallery + 1) + gallery_rows
        pos = np.searchsorted(keys, probe)
        pos = np.minimum(pos, max(keys.size - 1, 0))
        hit = keys[pos] == probe if keys.size else np.zeros(probe.shape, dtype=bool)
        # Out-of-range rows could alias another query's key: they are never relevant.
        in_range = (gallery_rows >= 0) & (gallery_rows < self.n_gallery)
        in_range &= ((query_rows >= 0) & (query_rows < self.n_queries))[:, None]
        return hit & in_range

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, Relevance)
            and self.n_gallery == other.n_gallery
            and np.array_equal(self.indptr, other.indptr)
            and np.array_equal(self.indices, other.indices)
        )

    def __repr__(self) -> str:
        return f"Relevance(n_queries={self.n_queries}, n_gallery={self.n_gallery}, n_pairs={self.n_pairs})"
