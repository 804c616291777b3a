"""The search contract every approximate engine follows, and the driver they share.

An approximate engine puts a database (for NNN: the reference set) in an index and
answers ``search(queries, k)`` with the exact engine's contract: ``(scores float32 (n, k),
ids int64 (n, k))``, best first, ties -> smaller id, padded ``-inf``/``-1``. Search is
stateless: the search-time knobs (``nprobe``, ``ef_search``, ``rerank``) come from the
index's :class:`~dehub.engine.settings.EngineParams` or from the call, and nothing in the
index changes while searching, so one index can serve concurrent searches.

Each engine (:class:`~dehub.engine.ivf.IVFIndex`, :class:`~dehub.engine.faiss_indexes.SQ8Index`,
:class:`~dehub.engine.faiss_indexes.HNSWIndex`) implements only ``_candidates`` (a candidate
matrix for one batch of queries) and ``_batch_rows``; batching, exact re-ranking, the
selection (:func:`~dehub.engine.topk.select_topk`) and the exact completion of rows that
found fewer than k entries live here once.
"""

from __future__ import annotations

import dataclasses
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any

import numpy as np

from .._errors import InputError
from .._progress import progress_bar
from ._rows import read_rows, row_blocks, take_rows
from .exact import exact_search
from .settings import EngineParams
from .topk import select_topk

__all__ = ["ReferenceIndex", "IndexSearch"]


@dataclass(frozen=True)
class IndexSearch:
    """What one search returned, with how it got there.

    scores, ids : the result (exact engine contract).
    n_exact_fallback : queries completed by the exact engine because the approximate
        search found fewer than k entries for them.
    params : the settings the search ran with.
    """

    scores: np.ndarray
    ids: np.ndarray
    n_exact_fallback: int
    params: EngineParams


class ReferenceIndex(ABC):
    """A database prepared for approximate top-k search (base of every engine's index).

    Attributes: ``engine`` (name), ``params`` (:class:`EngineParams` it was built with),
    ``n``, ``d`` (database shape), ``database`` (kept for exact re-ranking and fallback, or
    ``None``), ``build_seconds``; ``nbytes`` is the memory the index holds.
    """

    engine: str = ""

    def __init__(self, params: EngineParams, n: int, d: int, database: Any = None) -> None:
        self.params = params
        self.n = int(n)
        self.d = int(d)
        self.database = database
        self.build_seconds = 0.0

    # ----------------------------------------------------------------- per engine
    @property
    @abstractmethod
    def nbytes(self) -> int:
        """Bytes the index holds (vectors, codes, graph)."""

    @abstractmethod
    def _candidates(self, q: np.ndarray, k: int, params: EngineParams) -> tuple[np.ndarray, np.ndarray]:
        """Candidate matrix ``(scores, ids)`` (ids ``-1`` = padding) of one query batch."""

    def _batch_rows(self, params: EngineParams) -> int:
        return max(1, int(params.batch_size))

    # ----------------------------------------------------------------- shared
    def search(
        self,
        queries: Any,
        k: int,
        *,
        nprobe: int | None = None,
        ef_search: int | None = None,
        rerank: int | None = None,
        progress: bool | str = False,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Approximate top-``k`` of ``queries @ database.T`` (exact engine contract).

        ``nprobe``, ``ef_search``, ``rerank`` override the index's settings for this call.
        """
        res = self.search_detailed(
            queries, k, nprobe=nprobe, ef_search=ef_search, rerank=rerank, progress=progress
        )
        return res.scores, res.ids

    def search_detailed(
        self,
        queries: Any,
        k: int,
        *,
        nprobe: int | None = None,
        ef_search: int | None = None,
        rerank: int | None = None,
        progress: bool | str = False,
    ) -> IndexSearch:
        """:meth:`search`, also reporting how many rows the exact engine completed."""
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
            raise InputError(f"k must be a positive integer; received {k!r}")
        if queries.ndim != 2 or queries.shape[1] != self.d:
            raise InputError(f"queries must be 2-D with dimension {self.d}; received shape {queries.shape}")
        k = int(k)
        p = self._call_params(nprobe=nprobe, ef_search=ef_search, rerank=rerank)
        kk = k if p.rerank is None else max(int(p.rerank), k)
        nq = queries.shape[0]
        out_v = np.full((nq, k), -np.inf, dtype=np.float32)
        out_i = np.full((nq, k), -1, dtype=np.int64)
        label = progress if isinstance(progress, str) else f"{self.engine} search"
        step = self._batch_rows(p)
        n_b = -(-nq // step) if nq else 0
        with progress_bar(total=n_b, desc=label, enable=bool(progress), unit="batch") as bar:
            for sl in row_blocks(nq, step):
                q = read_rows(queries, sl)
                v, i = self._candidates(q, kk, p)
                if p.rerank is not None:
                    v, i = self._rerank(q, i, k)
                else:
                    v, i = select_topk(v, k, i)
                out_v[sl], out_i[sl] = v[:, :k], i[:, :k]
                bar.update(1)
        n_fallback = self._complete_short_rows(queries, out_v, out_i, p)
        return IndexSearch(out_v, out_i, n_fallback, p)

    def _call_params(self, **overrides: int | None) -> EngineParams:
        given = {name: value for name, value in overrides.items() if value is not None}
        return dataclasses.replace(self.params, **given) if given else self.params

    def _complete_short_rows(
        self, queries: Any, out_v: np.ndarray, out_i: np.ndarray, p: EngineParams
    ) -> int:
        """Rows that found fewer than k entries although the database holds k or more
        (the probed lists were too small, or HNSW stopped early) are searched exactly, in
        place: a padded top-k would give NNN a ``-inf`` mean and an infinite bias."""
        k = out_i.shape[1]
        short = np.flatnonzero((out_i < 0).any(axis=1)) if self.n >= k else np.empty(0, np.int64)
        if short.size == 0:
            return 0
        if self.database is None:
            raise InputError(
                f"{short.size} queries found fewer than k={k} neighbours with engine "
                f"{self.engine!r} and the database was not kept for an exact fallback; "
                "raise nprobe (or ef_search) or keep the database"
            )
        q = take_rows(queries, short)
        out_v[short], out_i[short] = exact_search(q, self.database, k, memory_budget=p.memory_budget)
        return int(short.size)

    def _rerank(self, q: np.ndarray, cand: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Exact scores of the shortlist ``cand`` from the stored vectors, keep the best k."""
        if self.database is None:
            raise InputError("rerank needs the database vectors; build the index with keep_database=True")
        valid = cand >= 0
        x = take_rows(self.database, np.where(valid, cand, 0).ravel()).reshape(*cand.shape, self.d)
        s = np.matmul(x, q[:, :, None])[..., 0]
        s = np.where(valid, s, -np.inf).astype(np.float32)
        return select_topk(s, k, np.where(valid, cand, -1))
