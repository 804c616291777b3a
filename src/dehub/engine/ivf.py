"""The numpy inverted-file engine (``engine="ivf"``): windowed k-means lists, search by list.

Build (:meth:`IVFIndex.build`): spherical k-means on ``train_size`` sampled rows and the
assignment of every row to its list, both on a window of ``assign_dim`` coordinates
(:mod:`dehub.engine.kmeans`); the lists are the row order sorted by list (rows of a list
in id order). An in-memory float32 reference that the index keeps is not copied: each
list's rows are gathered from it while scanned. A memmap, a sharded view or a reference
not kept is copied in list order.

Search (:meth:`IVFIndex._candidates`): every query of a batch probes its ``nprobe``
nearest lists (full-dimensional centroids); the queries probing a list are scored
against it with one GEMM, and the scores go to each worker's compiled running top-k of
every query (:class:`~dehub.engine.topk.KernelTopK`, where built) or else each query
keeps its top-k of that list; the driver in :mod:`dehub.engine.reference` selects the
final top-k with the exact engine's tie rule (the same results either way).
Every score returned is exact (float32 inner products of the stored rows); only the
choice of lists is approximate. Lists, probes, assignment blocks and k-means scoring run
on one worker thread per CPU with one BLAS thread each (:mod:`dehub.engine._workers`).
No FAISS needed.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any, NamedTuple

import numpy as np

from .._errors import InputError
from .._progress import progress_bar
from ._rows import read_rows, row_blocks, take_rows
from ._workers import SEQUENTIAL, Workers, parallel_scope
from .exact import exact_search
from .ivf_auto import (
    AGREEMENT_TARGET,
    HOLDOUT_ROWS,
    list_balance,
    neighbour_ranks,
    nprobe_for_recall,
    recall_sample_rows,
    window_agreement,
)
from .kmeans import default_assign_dim, spherical_kmeans, train_quantizer
from .reference import IndexSearch, ReferenceIndex
from .settings import TRAIN_PER_LIST, EngineParams
from .topk import KernelTopK, kernel_isa, select_topk, topk_mask

__all__ = ["IVFIndex", "RecallCheck", "spherical_kmeans", "train_coarse", "probe_lists", "BUILD_BLOCK_ROWS"]

BUILD_BLOCK_ROWS = 32768  # rows of the database read at a time while building
_PROBE_BLOCK_BYTES = 32 * 2**20  # coarse scores of one block of queries
_FEW_QUERIES = 128  # below this many queries a list's GEMM runs as rows @ queries.T


class RecallCheck(NamedTuple):
    """What a recall check chose (:meth:`IVFIndex.recall_check`): the ``nprobe``, the
    sampled recall there, and the query rows it searched exactly, in the order searched."""

    nprobe: int
    recall: float
    rows: np.ndarray


def train_coarse(
    database: Any,
    params: EngineParams,
    *,
    progress: bool | str = False,
    label: str = "ivf build",
    timings: dict[str, float] | None = None,
    stats: dict[str, Any] | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Coarse quantizer of an IVF: ``(centroids (nlist, d), assign (n,), sample)``.

    Centroids by :func:`~dehub.engine.kmeans.train_quantizer` on ``train_size`` sampled
    rows; every database row assigned to its list in blocks, on ``assign_dim``
    coordinates (:meth:`~dehub.engine.kmeans.CoarseQuantizer.assign`). With
    ``assign_dim=None`` the window starts at ``d // 4`` (at least 128) and is doubled,
    and the quantizer trained again, while fewer than
    :data:`~dehub.engine.ivf_auto.AGREEMENT_TARGET` (0.9) of up to 2,048 held-out rows get the same list on the window as in full
    (:func:`~dehub.engine.ivf_auto.window_agreement`). ``stats`` (when given) gets
    ``nlist``, ``assign_dim``, the measured ``window_agreement`` of every width tried and
    the ``list_balance`` (:func:`~dehub.engine.ivf_auto.list_balance`).
    """
    n, d = int(database.shape[0]), int(database.shape[1])
    nlist = params.resolved_nlist(n)
    train_n = int(min(n, params.train_size or TRAIN_PER_LIST * nlist))
    if train_n < nlist:
        raise InputError(f"train_size must be >= nlist={nlist}; received train_size={train_n}")
    t0 = time.perf_counter()
    rng = np.random.default_rng(params.seed)
    sample_rows = np.sort(rng.choice(n, size=train_n, replace=False))
    sample = _gather(database, sample_rows)
    width = default_assign_dim(d) if params.assign_dim is None else int(params.assign_dim)
    holdout = np.empty((0, d), dtype=np.float32)
    if params.assign_dim is None and width < d:
        rest = np.setdiff1d(np.arange(n), sample_rows, assume_unique=True)
        if rest.size:
            pick = np.sort(rng.choice(rest, size=min(HOLDOUT_ROWS, rest.size), replace=False))
            holdout = _gather(database, pick)
    agreement: dict[int, float] = {}
    assign = np.empty(n, dtype=np.int64)
    with (
        parallel_scope() as workers,
        progress_bar(
            total=-(-n // BUILD_BLOCK_ROWS), desc=f"{label}: assign", enable=bool(progress), unit="block"
        ) as bar,
    ):
        while True:
            quantizer = train_quantizer(sample, nlist, params.niter, params.seed, width, workers)
            agreement[width] = window_agreement(quantizer, holdout)
            if params.assign_dim is not None or agreement[width] >= AGREEMENT_TARGET or width >= d:
                break
            width = min(d, 2 * width)
        t1 = time.perf_counter()
        for big in row_blocks(n, BUILD_BLOCK_ROWS):
            block = read_rows(database, big)

            def one(sl: slice, block: np.ndarray = block, start: int = big.start) -> None:
                assign[start + sl.start : start + sl.stop] = quantizer.assign(block[sl])

            workers.map(one, workers.split(block.shape[0]))
            bar.update(1)
    if timings is not None:
        timings["train"] = t1 - t0
        timings["assign"] = time.perf_counter() - t1
    if stats is not None:
        sizes = np.bincount(assign, minlength=nlist)
        stats.update(
            nlist=nlist,
            assign_dim=quantizer.hi - quantizer.lo,
            window_agreement={int(w): round(a, 4) for w, a in agreement.items()},
            list_balance=round(list_balance(sizes), 4),
            list_size_median=float(np.median(sizes)),
            list_size_max=int(sizes.max()),
        )
    return quantizer.centroids, assign, sample


def probe_lists(
    q: np.ndarray, centroids: np.ndarray, nprobe: int, *, workers: Workers = SEQUENTIAL
) -> tuple[np.ndarray, np.ndarray]:
    """The ``nprobe`` nearest lists of every query, best first: ``(scores, list ids)``
    (in blocks of queries, so the coarse score matrix stays a few MiB; on the worker
    threads when given)."""
    nprobe = min(int(nprobe), centroids.shape[0])
    v = np.empty((q.shape[0], nprobe), dtype=np.float32)
    i = np.empty((q.shape[0], nprobe), dtype=np.int64)
    step = max(256, _PROBE_BLOCK_BYTES // (4 * centroids.shape[0]))

    def one(sl: slice) -> None:
        v[sl], i[sl] = select_topk(q[sl] @ centroids.T, nprobe)

    workers.map(one, workers.split(q.shape[0], step))
    return v, i


def _gatherable(database: Any) -> bool:
    """A float32 array in memory (not a memmap or sharded view): its list rows can be
    gathered at each scan instead of copied at build."""
    return type(database) is np.ndarray and database.dtype == np.float32


def _gather(database: Any, rows: np.ndarray) -> np.ndarray:
    """Rows of the database in the given order, float32 (fancy indexing for an array or
    memmap; :func:`~dehub.engine._rows.take_rows` for a sharded view)."""
    if hasattr(database, "take_rows"):
        return take_rows(database, rows)
    return np.asarray(database[rows], dtype=np.float32)


class IVFIndex(ReferenceIndex):
    """Numpy IVF over flat float32 lists (built by :meth:`build`).

    ``centroids`` (nlist, d); list ``L`` is the database rows
    ``list_rows[list_bounds[L]:list_bounds[L+1]]`` (ascending), whose vectors are
    ``vectors[list_bounds[L]:list_bounds[L+1]]`` when the index holds a copy, else
    ``database[those rows]`` (an in-memory float32 database, kept by reference: changing
    it after the build changes what the index scores, as with any kept database).
    """

    engine = "ivf"

    def __init__(
        self,
        params: EngineParams,
        centroids: np.ndarray,
        list_bounds: np.ndarray,
        list_rows: np.ndarray,
        vectors: np.ndarray | None,
        database: Any = None,
    ) -> None:
        src = vectors if vectors is not None else database
        if src is None:
            raise InputError("an IVFIndex needs its list vectors or the database they come from")
        super().__init__(params, src.shape[0], src.shape[1], database)
        self.centroids = centroids
        self.list_bounds = list_bounds
        self.list_rows = list_rows
        self.vectors = vectors
        self.build_timings: dict[str, float] = {}  # seconds per build phase (train, assign, lists)
        self.build_stats: dict[str, Any] = {}  # what the build chose and measured (train_coarse)

    @classmethod
    def build(
        cls, database: Any, params: EngineParams, *, progress: bool | str = False, keep_database: bool = True
    ) -> IVFIndex:
        """Train the centroids, assign every row and store the lists (memory: index + a block).

        The float32 list copy (``4 n d`` bytes) is made only when the database is not an
        in-memory float32 array kept by the index (a memmap, a sharded view, another
        dtype, or ``keep_database=False``); ``build_timings`` gets the seconds of the
        phases (``train``: sample + k-means, ``assign``, ``lists``).
        """
        t0 = time.perf_counter()
        label = progress if isinstance(progress, str) else "ivf build"
        n, d = int(database.shape[0]), int(database.shape[1])
        timings: dict[str, float] = {}
        stats: dict[str, Any] = {}
        centroids, assign, sample = train_coarse(
            database, params, progress=progress, label=label, timings=timings, stats=stats
        )
        del sample  # not needed past training: keep it out of the index's peak memory
        t1 = time.perf_counter()
        nlist = centroids.shape[0]
        counts = np.bincount(assign, minlength=nlist)
        bounds = np.zeros(nlist + 1, dtype=np.int64)
        np.cumsum(counts, out=bounds[1:])
        order = np.argsort(assign, kind="stable")  # rows of a list stay in id order
        vectors: np.ndarray | None = None
        if not (keep_database and _gatherable(database)):
            # sequential reads of the database, rows scattered to their list positions
            # (at 200k x 512 from a memmap: 0.13 s, vs 0.26 s for blocked gathers)
            pos = np.empty(n, dtype=np.int64)
            pos[order] = np.arange(n)
            vectors = np.empty((n, d), dtype=np.float32)
            n_blocks = -(-n // BUILD_BLOCK_ROWS)
            with progress_bar(
                total=n_blocks, desc=f"{label}: lists", enable=bool(progress), unit="block"
            ) as bar:
                for sl in row_blocks(n, BUILD_BLOCK_ROWS):
                    vectors[pos[sl]] = read_rows(database, sl)
                    bar.update(1)
        index = cls(params, centroids, bounds, order, vectors, database if keep_database else None)
        index.build_seconds = time.perf_counter() - t0
        index.build_timings = dict(timings, lists=time.perf_counter() - t1)
        index.build_stats = stats
        return index

    def nprobe_for_recall(self, queries: Any, k: int, recall: float) -> tuple[int, float]:
        """``(nprobe, sampled recall)`` of :meth:`recall_check`."""
        check = self.recall_check(queries, k, recall)
        return check.nprobe, check.recall

    def recall_check(self, queries: Any, k: int, recall: float) -> RecallCheck:
        """The fewest probed lists whose recall of the exact top-k reaches ``recall`` on a
        sample of ``queries`` (:func:`~dehub.engine.ivf_auto.recall_sample_rows`: one in
        40, 128 to 256, evenly spread), less one standard error over the sampled queries
        (:func:`~dehub.engine.ivf_auto.nprobe_for_recall`); the sample is searched in one
        exact pass (a pass over the database costs about the same for 64 queries as for
        128: 0.70x, measured; searching it in growing stages cost more, see docs/scale.md).

        The exact engine gives each sampled query's true top-k; a true neighbour is found
        with ``nprobe`` lists exactly when its list is among the query's ``nprobe``
        nearest centroids (the lists are scanned exactly), so one ranking of every list
        per sampled query gives the recall of every ``nprobe`` at once.
        """
        if self.database is None:
            raise InputError("the recall check needs the database; build the index with keep_database=True")
        nlist = int(self.centroids.shape[0])
        rows = recall_sample_rows(int(queries.shape[0]))
        if rows.size == 0:
            return RecallCheck(min(self.params.resolved_nprobe(), nlist), 1.0, rows)
        q = take_rows(queries, rows)
        _, true_ids = exact_search(
            q, self.database, min(int(k), self.n), memory_budget=self.params.memory_budget
        )
        list_of = np.empty(self.n, dtype=np.int64)
        list_of[self.list_rows] = np.repeat(np.arange(nlist), np.diff(self.list_bounds))
        with parallel_scope() as workers:
            _, order = probe_lists(q, self.centroids, nlist, workers=workers)
        nprobe, sampled = nprobe_for_recall(neighbour_ranks(order, list_of, true_ids), nlist, float(recall))
        return RecallCheck(nprobe, sampled, rows)

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
        """:meth:`ReferenceIndex.search_detailed`. ``nprobe``: the call's, else the
        index's, else (``params.recall`` set, database kept) :meth:`nprobe_for_recall` of
        these queries, else :data:`~dehub.engine.settings.DEFAULT_NPROBE`; the search's
        ``params.nprobe`` says which."""
        if nprobe is None and self.params.nprobe is None:
            if (
                self.params.recall is not None
                and self.database is not None
                and queries.ndim == 2
                and queries.shape[1] == self.d
                and isinstance(k, (int, np.integer))
                and not isinstance(k, bool)
                and k >= 1
            ):
                nprobe, _ = self.nprobe_for_recall(queries, int(k), float(self.params.recall))
            else:
                nprobe = self.params.resolved_nprobe()
        return super().search_detailed(
            queries, k, nprobe=nprobe, ef_search=ef_search, rerank=rerank, progress=progress
        )

    @property
    def nbytes(self) -> int:
        """Bytes the index holds; the float32 list copy only when it made one (see :meth:`build`)."""
        held = [self.centroids, self.list_bounds, self.list_rows]
        return int(sum(a.nbytes for a in held) + (0 if self.vectors is None else self.vectors.nbytes))

    def _list_vectors(self, lo: int, hi: int) -> np.ndarray:
        """The vectors of list positions ``lo:hi``: a slice of the copy, or gathered from
        the in-memory database (a few hundred rows, cache-resident, reused by the GEMM)."""
        if self.vectors is not None:
            return self.vectors[lo:hi]
        return np.asarray(self.database[self.list_rows[lo:hi]], dtype=np.float32)

    def _candidates(self, q: np.ndarray, k: int, params: EngineParams) -> tuple[np.ndarray, np.ndarray]:
        """IVF top-k candidates of a query batch, by list: one GEMM per probed list.

        The queries probing a list are scored against it together (``q[those] @
        list.T``) and each keeps its top-k of that list (:func:`~dehub.engine.topk.topk_mask`: by score,
        then by row id on ties, as the final selection orders them). An entry of a
        query's top-k over all its probed lists is in the top-k of its own list, so the
        ``(nq, nprobe * k)`` candidate matrix holds the whole answer. Lists are scanned
        on every core (:mod:`dehub.engine._workers`), each writing its own cells. With
        the compiled top-k, each worker keeps every query's top-k over its own lists
        instead (:meth:`_scan_compiled`), and the candidates are the ``(nq, workers * k)``
        of the workers.
        """
        nprobe = min(params.resolved_nprobe(), self.centroids.shape[0])
        nq = q.shape[0]
        compiled = kernel_isa() is not None  # q is float32 (read_rows)
        if not compiled:
            cand_v = np.full((nq * nprobe, k), -np.inf, dtype=np.float32)
            cand_i = np.full((nq * nprobe, k), -1, dtype=np.int64)
        with parallel_scope() as workers:
            _, probe = probe_lists(q, self.centroids, nprobe, workers=workers)
            items = list(self._queries_by_list(probe))
            parts = [items[j :: workers.n] for j in range(workers.n)]
            if compiled:  # each worker's running top-k of every query over its lists
                found = workers.map(lambda part: self._scan_compiled(q, k, part), parts)
                return np.hstack([f[0] for f in found]), np.hstack([f[1] for f in found])
            workers.map(lambda part: self._scan(q, k, part, cand_v, cand_i), parts)
        return cand_v.reshape(nq, nprobe * k), cand_i.reshape(nq, nprobe * k)

    def _list_scores(self, q: np.ndarray, lst: int, qs: np.ndarray) -> np.ndarray:
        """Scores (len(qs), list size), C-contiguous, of the queries ``qs`` against list ``lst``."""
        lo, hi = int(self.list_bounds[lst]), int(self.list_bounds[lst + 1])
        x, qq = self._list_vectors(lo, hi), q[qs]
        if qq.shape[0] < _FEW_QUERIES:
            # few queries: the list's rows as the GEMM's long side, then the small
            # transpose copied (1.2-1.3x faster at ~230 rows x 25-40 queries; slower
            # from ~150 queries on, 0.65x at 488 x 1,000). Same score bits either way.
            return np.ascontiguousarray((x @ qq.T).T)
        return qq @ x.T

    def _scan_compiled(
        self, q: np.ndarray, k: int, items: list[tuple[int, np.ndarray, np.ndarray]]
    ) -> tuple[np.ndarray, np.ndarray]:
        """Top-k of every query over the lists of ``items`` (the compiled running top-k:
        each list's scores go straight to the rows of the queries that probe it, the
        list's row ids as columns; any order, the engine's tie rule). Queries that probe
        none of these lists come back as padding."""
        top = KernelTopK(q.shape[0], k)
        for lst, qs, _ in items:
            lo, hi = int(self.list_bounds[lst]), int(self.list_bounds[lst + 1])
            top.push_rows(self._list_scores(q, lst, qs), self.list_rows[lo:hi], qs)
        return top.result()

    def _scan(
        self,
        q: np.ndarray,
        k: int,
        items: list[tuple[int, np.ndarray, np.ndarray]],
        cand_v: np.ndarray,
        cand_i: np.ndarray,
    ) -> None:
        """Score some ``(list, queries, candidate cells)`` triples; write each query's
        top-k of the list into its cell of ``cand_v``/``cand_i`` (``(nq * nprobe, k)``)."""
        for lst, qs, cells in items:
            lo, hi = int(self.list_bounds[lst]), int(self.list_bounds[lst + 1])
            scores = self._list_scores(q, lst, qs)
            rows = self.list_rows[lo:hi]
            if hi - lo <= k:
                cand_v[cells, : hi - lo] = scores
                cand_i[cells, : hi - lo] = rows
                continue
            flat = np.flatnonzero(topk_mask(scores, k))  # k per row, row by row
            cand_v[cells] = scores.ravel()[flat].reshape(-1, k)
            cand_i[cells] = rows[flat % (hi - lo)].reshape(-1, k)

    def _queries_by_list(self, probe: np.ndarray) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
        """``(list, the query rows that probe it, their candidate cells)`` for every
        non-empty list probed; cell ``q * nprobe + slot`` is query ``q``'s ``slot``-th probe."""
        flat = probe.ravel()
        if flat.size == 0:
            return
        order = np.argsort(flat, kind="stable")
        qrow = order // probe.shape[1]
        nlist = self.centroids.shape[0]
        cuts = np.searchsorted(flat[order], np.arange(nlist + 1))
        sizes = np.diff(self.list_bounds)
        for lst in np.flatnonzero((cuts[1:] > cuts[:-1]) & (sizes > 0)):
            a, b = cuts[lst], cuts[lst + 1]
            yield int(lst), qrow[a:b], order[a:b]

    def _batch_rows(self, params: EngineParams) -> int:
        # Per query row: the row itself, its probed list ids and the candidate cells
        # (nprobe * k entries of 12 bytes; budget k = 64) plus the final selection's copy.
        nprobe = min(params.resolved_nprobe(), self.centroids.shape[0])
        per_row = 4 * self.d + 24 * nprobe + 2 * 64 * 12 * nprobe
        return max(1, min(int(params.batch_size), int(params.memory_budget) // per_row))
