"""Approximate top-k engines for the bias pass: inverted lists (IVF) and FAISS indexes.

The bias of NNN needs, for every gallery item, its top-k reference scores. The exact
engine (:func:`dehub.engine.exact_search`) costs ``n_gallery x n_reference x d``; the
engines here put the *reference* set in an index and search the gallery items against
it in batches. Every engine follows the exact engine's contract, so the exact engine is
the oracle::

    topk_search(queries, database, k, engine=...) -> (scores float32 (n, k), ids int64 (n, k))

best first, ties -> smaller id, padded ``-inf``/``-1``.

Engines (``engine=``):

``"exact"``
    :func:`~dehub.engine.exact_search` (blocked GEMM).
``"ivf"``
    Inverted file with flat float32 storage: spherical k-means on a sample gives
    ``nlist`` centroids; each reference row lives in the list of its nearest centroid;
    each query scans its ``nprobe`` nearest lists. Same candidates and scores as FAISS
    ``IndexIVFFlat`` with these centroids, but each list is scored for all the queries
    probing it with one numpy GEMM (FAISS's per-query scanner ran at about 6 GMAC/s on
    the 2-core reference machine, numpy's GEMM at about 35). No FAISS needed.
``"ivf-sq8"``
    FAISS ``IndexIVFScalarQuantizer`` (8 bits per dimension, 4x smaller than float32),
    coarse assignment by numpy GEMM (``search_preassigned``). Scores are approximate:
    ``rerank`` re-scores a shortlist exactly.
``"hnsw"``
    FAISS ``IndexHNSWFlat`` with inner product. Building costs O(n log n) distance
    evaluations and is slow on 1M x 512 with 2 cores; good for references up to a few
    100k rows.
``"auto"``
    :func:`choose_engine`: exact when the exact product is small, ``ivf`` otherwise, and
    ``ivf-sq8`` when the float32 reference would not fit ``index_budget`` bytes.

FAISS is optional (``pip install dehub[faiss]``) and imported only when an engine needs
it.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import numpy as np

from .._progress import progress_bar
from .exact import DEFAULT_MEMORY_BUDGET, exact_search
from .topk import _select_topk, _sort_rows

__all__ = [
    "EngineName",
    "EngineParams",
    "ApproxReport",
    "choose_engine",
    "topk_search",
    "ReferenceIndex",
    "build_reference_index",
    "evaluate_engine",
    "import_faiss",
]

EngineName = Literal["exact", "ivf", "ivf-sq8", "hnsw", "auto"]
_ENGINES = ("exact", "ivf", "ivf-sq8", "hnsw", "auto")
_EXACT_MAX_PAIRS = 2e9  # below this many query x database pairs the exact GEMM is cheap
_BLOCK_ROWS = 32768  # rows of the database read at a time while building


def import_faiss():
    """Import FAISS or explain how to install it."""
    try:
        import faiss
    except ImportError as exc:
        raise ImportError(
            "this engine needs FAISS, which is not installed; install it with "
            "`pip install dehub[faiss]` (or `pip install faiss-cpu`), or use engine='exact' "
            "or engine='ivf' (numpy only)"
        ) from exc
    return faiss


@dataclass(frozen=True)
class EngineParams:
    """Knobs of the approximate engines (``None`` = derived from the sizes).

    nlist : number of inverted lists (IVF); default ``2 * sqrt(n_database)`` rounded to a
        power of two, at most ``n_database // 39``.
    nprobe : lists scanned per query (IVF); default 8.
    niter : k-means iterations; default 10.
    train_size : rows sampled to train the centroids; default ``min(n, 32 * nlist)``.
    M, ef_construction, ef_search : HNSW graph degree and beam widths (32, 80, 2k..64).
    rerank : search this many candidates approximately and re-score them exactly with
        the stored vectors (``rerank >= k``); ``None`` = no re-ranking. Useful for
        ``ivf-sq8`` (quantized scores); ``ivf`` scores are already exact.
    batch_size : queries searched at a time (bounds memory); default 16384.
    memory_budget : bytes for the candidate buffers of one ``ivf`` batch (the batch
        shrinks to fit); default 512 MiB.
    index_budget : bytes the ``auto`` choice allows for a float32 reference copy.
    seed : sampling seed for k-means.
    """

    nlist: int | None = None
    nprobe: int = 8
    niter: int = 10
    train_size: int | None = None
    M: int = 32
    ef_construction: int = 80
    ef_search: int | None = None
    rerank: int | None = None
    batch_size: int = 16384
    memory_budget: int = 512 * 2**20
    index_budget: int = 8 * 2**30
    seed: int = 0

    @classmethod
    def coerce(cls, params: EngineParams | dict[str, Any] | None) -> EngineParams:
        if params is None:
            return cls()
        if isinstance(params, EngineParams):
            return params
        if not isinstance(params, dict):
            raise TypeError(f"engine_params must be a dict or EngineParams; received {type(params).__name__}")
        known = set(cls.__dataclass_fields__)
        bad = sorted(set(params) - known)
        if bad:
            raise ValueError(f"unknown engine_params {bad}; expected a subset of {sorted(known)}")
        return cls(**params)

    def resolved_nlist(self, n_database: int) -> int:
        if self.nlist is not None:
            if self.nlist < 1 or self.nlist > n_database:
                raise ValueError(f"nlist must be in 1..n_database={n_database}; received nlist={self.nlist}")
            return int(self.nlist)
        target = 2 * np.sqrt(n_database)
        nlist = 1 << int(np.round(np.log2(max(target, 1))))
        return int(max(1, min(nlist, n_database // 39 or 1)))


def choose_engine(n_queries: int, n_database: int, dim: int, params: EngineParams | None = None) -> str:
    """The documented default: exact when ``n_queries * n_database < 2e9`` pairs
    (seconds of GEMM), else ``ivf``, or ``ivf-sq8`` when the float32 copy of the
    database (``4 * n * d`` bytes) exceeds ``params.index_budget``."""
    params = params or EngineParams()
    if float(n_queries) * n_database < _EXACT_MAX_PAIRS:
        return "exact"
    if 4 * n_database * dim > params.index_budget:
        return "ivf-sq8"
    return "ivf"


# --------------------------------------------------------------------------- helpers
def _blocks(n: int, step: int):
    for s in range(0, n, step):
        yield slice(s, min(s + step, n))


def _rows(x, sl) -> np.ndarray:
    return np.asarray(x[sl], dtype=np.float32)


def _take(x, rows: np.ndarray) -> np.ndarray:
    """Rows of an array, memmap or sharded view in the given order (reads sorted)."""
    uniq, inv = np.unique(rows, return_inverse=True)
    if hasattr(x, "take_rows"):
        block = x.take_rows(uniq)
    else:
        block = np.asarray(x[uniq], dtype=np.float32)
    return np.asarray(block, dtype=np.float32)[inv.reshape(-1)]


def _top_nprobe(scores: np.ndarray, nprobe: int) -> tuple[np.ndarray, np.ndarray]:
    """Top-``nprobe`` columns per row, sorted best first (scores, ids)."""
    n = scores.shape[1]
    if nprobe == 1:  # the common fast setting: a plain argmax
        best = scores.argmax(axis=1)[:, None]
        return np.take_along_axis(scores, best, axis=1), best.astype(np.int64)
    if nprobe < n:
        part = np.argpartition(scores, n - nprobe, axis=1)[:, n - nprobe :]
    else:
        part = np.broadcast_to(np.arange(n), scores.shape).copy()
    v = np.take_along_axis(scores, part, axis=1)
    o = np.argsort(-v, axis=1, kind="stable")
    return np.take_along_axis(v, o, axis=1), np.take_along_axis(part, o, axis=1).astype(np.int64)


def _topk_rows(v: np.ndarray, ids: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Top-k per row of a wide candidate matrix, sorted, ties -> smaller id.

    ``np.partition`` of the float scores (3x cheaper than ``argpartition``) finds each
    row's k-th value; the few entries at or above it are gathered and ordered exactly.
    Entries with id ``-1`` are padding.
    """
    n, width = v.shape
    if width <= 2 * k:
        return _sort_rows(*_select_topk(v, ids, k))
    kth = np.partition(v, width - k, axis=1)[:, width - k]
    mask = (v >= kth[:, None]) & (ids >= 0)
    counts = mask.sum(axis=1)
    rows, cols = np.nonzero(mask)
    m = max(int(counts.max()), 1)
    pos = np.arange(rows.size) - np.repeat(np.cumsum(counts) - counts, counts)
    sv = np.full((n, m), -np.inf, dtype=v.dtype)
    si = np.full((n, m), -1, dtype=np.int64)
    sv[rows, pos] = v[rows, cols]
    si[rows, pos] = ids[rows, cols]
    return _sort_rows(*_select_topk(sv, si, k))


def spherical_kmeans(sample: np.ndarray, nlist: int, niter: int, seed: int = 0) -> np.ndarray:
    """Centroids (nlist, d) float32, unit norm, of ``sample`` under inner product.

    Lloyd iterations with assignment by one GEMM per iteration; empty clusters are
    re-seeded with the sample rows farthest from their centroid.
    """
    rng = np.random.default_rng(seed)
    x = np.asarray(sample, dtype=np.float32)
    n = x.shape[0]
    cent = x[rng.choice(n, size=nlist, replace=False)].copy()
    for _ in range(max(1, niter)):
        sims = x @ cent.T
        assign = sims.argmax(axis=1)
        best = sims[np.arange(n), assign]
        sums = np.zeros_like(cent)
        np.add.at(sums, assign, x) if n < 4096 else _segment_sum(x, assign, sums)
        counts = np.bincount(assign, minlength=nlist)
        empty = np.flatnonzero(counts == 0)
        if empty.size:
            far = np.argsort(best)[: empty.size]
            sums[empty] = x[far]
        norms = np.linalg.norm(sums, axis=1, keepdims=True)
        norms[norms == 0] = 1
        cent = (sums / norms).astype(np.float32)
    return cent


def _segment_sum(x: np.ndarray, labels: np.ndarray, out: np.ndarray) -> None:
    order = np.argsort(labels, kind="stable")
    lab = labels[order]
    starts = np.flatnonzero(np.r_[True, lab[1:] != lab[:-1]])
    out[lab[starts]] = np.add.reduceat(x[order], starts, axis=0)


# --------------------------------------------------------------------------- index
@dataclass
class ReferenceIndex:
    """A database (the NNN reference set) prepared for approximate top-k search.

    Built by :func:`build_reference_index`; :meth:`search` has the exact engine's
    contract. ``nbytes`` is the memory the index holds (vectors, codes, graph).
    """

    engine: str
    params: EngineParams
    n: int
    d: int
    centroids: np.ndarray | None = None
    list_bounds: np.ndarray | None = None  # ivf: list L = rows list_bounds[L]:list_bounds[L+1]
    list_rows: np.ndarray | None = None  # ivf: original row number of each stored vector
    vectors: np.ndarray | None = None  # ivf: vectors sorted by list
    faiss_index: Any = None
    database: Any = field(default=None, repr=False)  # for exact re-ranking
    build_seconds: float = 0.0
    n_exact_fallback: int = 0  # queries of the last search completed by the exact engine

    @property
    def nbytes(self) -> int:
        total = 0
        for a in (self.centroids, self.list_bounds, self.list_rows, self.vectors):
            total += 0 if a is None else a.nbytes
        if self.faiss_index is not None:
            faiss = import_faiss()
            if self.engine == "ivf-sq8":
                invl = faiss.extract_index_ivf(self.faiss_index).invlists
                total += self.n * (invl.code_size + 8)
            elif self.engine == "hnsw":
                total += self.n * (4 * self.d + 8 * self.params.M)
        return int(total)

    def search(self, queries, k: int, *, progress: bool | str = False) -> tuple[np.ndarray, np.ndarray]:
        """Approximate top-``k`` of ``queries @ database.T`` (exact engine contract)."""
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
            raise ValueError(f"k must be a positive integer; received {k!r}")
        if queries.ndim != 2 or queries.shape[1] != self.d:
            raise ValueError(f"queries must be 2-D with dimension {self.d}; received shape {queries.shape}")
        k = int(k)
        p = self.params
        kk = k if p.rerank is None else max(int(p.rerank), k)
        nq = queries.shape[0]
        out_v = np.full((nq, k), -np.inf, dtype=np.float32)
        out_i = np.full((nq, k), -1, dtype=np.int64)
        label = progress if isinstance(progress, str) else f"{self.engine} search"
        step = self._ivf_rows_per_batch() if self.engine == "ivf" else p.batch_size
        n_b = -(-nq // step) if nq else 0
        with progress_bar(total=n_b, desc=label, enable=bool(progress), unit="batch") as bar:
            for sl in _blocks(nq, step):
                q = _rows(queries, sl)
                if self.engine == "ivf":
                    v, i = self._search_ivf(q, kk)
                else:
                    v, i = self._search_faiss(q, kk)
                if p.rerank is not None:
                    v, i = self._rerank(q, i, k)
                else:
                    v, i = _topk_rows(v, i, k)
                out_v[sl], out_i[sl] = v[:, :k], i[:, :k]
                bar.update(1)
        return self._complete_short_rows(queries, out_v, out_i)

    def _complete_short_rows(self, queries, out_v, out_i):
        """Rows that found fewer than k entries although the database holds k or more
        (the probed lists were too small, or HNSW stopped early) are searched exactly:
        a padded top-k would give NNN a ``-inf`` mean and an infinite bias."""
        k = out_i.shape[1]
        short = np.flatnonzero((out_i < 0).any(axis=1)) if self.n >= k else np.empty(0, int)
        if short.size == 0:
            return out_v, out_i
        if self.database is None:
            raise ValueError(
                f"{short.size} queries found fewer than k={k} neighbours with engine "
                f"{self.engine!r} and the database was not kept for an exact fallback; "
                "raise nprobe (or ef_search) or keep the database"
            )
        q = np.asarray(_take(queries, short), dtype=np.float32)
        out_v[short], out_i[short] = exact_search(
            q, self.database, k, memory_budget=self.params.memory_budget
        )
        self.n_exact_fallback = int(short.size)
        return out_v, out_i

    # ----------------------------------------------------------------- engines
    def _probe(self, q: np.ndarray, nprobe: int) -> tuple[np.ndarray, np.ndarray]:
        return _top_nprobe(q @ self.centroids.T, min(nprobe, self.centroids.shape[0]))

    def _search_ivf(self, q: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """IVF top-k candidates of a query batch, one GEMM per probed list.

        Pass 1 scores each query's nearest list and keeps its top-k; the k-th score is a
        lower bound of the query's final k-th score. Pass 2 scores the other probed lists
        and keeps only entries at or above that bound (ties kept), so the selection at
        the end works on a few candidates per query instead of every scanned row.
        Returns a candidate matrix (scores, ids) for :func:`_topk_rows`.
        """
        nprobe = min(self.params.nprobe, self.centroids.shape[0])
        _, probe = self._probe(q, nprobe)
        nq = q.shape[0]
        bounds = self.list_bounds
        nlist = self.centroids.shape[0]
        longest = int(np.diff(bounds).max())
        kk = min(k, longest)
        first_v = np.full((nq, kk), -np.inf, dtype=np.float32)
        first_i = np.full((nq, kk), -1, dtype=np.int64)
        bound = np.full(nq, -np.inf, dtype=np.float32)
        surv_q, surv_v, surv_i = [], [], []
        for pass_slots in (slice(0, 1), slice(1, nprobe)):
            sub = probe[:, pass_slots]
            flat = sub.ravel()
            if flat.size == 0:
                continue
            qrow = np.repeat(np.arange(nq), sub.shape[1])
            order = np.argsort(flat, kind="stable")
            lb = np.searchsorted(flat[order], np.arange(nlist + 1))
            for lst in np.flatnonzero(lb[1:] > lb[:-1]):  # loop over lists (blocks), not rows
                lo, hi = bounds[lst], bounds[lst + 1]
                if hi == lo:
                    continue
                qs = qrow[order[lb[lst] : lb[lst + 1]]]
                scores = q[qs] @ self.vectors[lo:hi].T
                if pass_slots.start == 0:
                    n_l = hi - lo
                    if n_l > kk:
                        part = np.argpartition(scores, n_l - kk, axis=1)[:, n_l - kk :]
                        first_v[qs] = np.take_along_axis(scores, part, axis=1)
                        first_i[qs] = self.list_rows[lo + part]
                        bound[qs] = first_v[qs].min(axis=1)  # n_l > kk means kk == k
                    else:
                        first_v[qs, :n_l] = scores
                        first_i[qs, :n_l] = self.list_rows[lo:hi]
                        if n_l == k:  # a bound only if the list holds k rows
                            bound[qs] = scores.min(axis=1)
                    continue
                r, c = np.nonzero(scores >= bound[qs][:, None])
                if r.size:
                    surv_q.append(qs[r])
                    surv_v.append(scores[r, c])
                    surv_i.append(self.list_rows[lo + c])
        if not surv_q:
            return first_v, first_i
        sq = np.concatenate(surv_q)
        counts = np.bincount(sq, minlength=nq)
        order = np.argsort(sq, kind="stable")
        width = int(counts.max())
        pos = np.arange(sq.size) - np.repeat(np.cumsum(counts) - counts, counts)
        cand_v = np.full((nq, kk + width), -np.inf, dtype=np.float32)
        cand_i = np.full((nq, kk + width), -1, dtype=np.int64)
        cand_v[:, :kk], cand_i[:, :kk] = first_v, first_i
        cand_v[sq[order], kk + pos] = np.concatenate(surv_v)[order]
        cand_i[sq[order], kk + pos] = np.concatenate(surv_i)[order]
        return cand_v, cand_i

    def _ivf_rows_per_batch(self) -> int:
        # Per query row: the coarse probe (nlist scores + argpartition's int64 indices),
        # the row itself, and in pass 2 one list's score block at a time plus the
        # survivors (typically a few k): budget for 8 k per probed list.
        longest = int(np.diff(self.list_bounds).max())
        nlist = self.centroids.shape[0]
        per_row = 8 * self.params.nprobe * max(1, min(longest, 64)) * 12 + nlist * 12 + self.d * 4
        return max(1, min(self.params.batch_size, self.params.memory_budget // max(per_row, 1)))

    def _search_faiss(self, q: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        q = np.ascontiguousarray(q, dtype=np.float32)
        if self.engine == "ivf-sq8":
            nprobe = min(self.params.nprobe, self.centroids.shape[0])
            dq, iq = self._probe(q, nprobe)
            self.faiss_index.nprobe = nprobe
            v, i = self.faiss_index.search_preassigned(
                q, k, np.ascontiguousarray(iq), np.ascontiguousarray(dq)
            )
        else:
            self.faiss_index.hnsw.efSearch = int(self.params.ef_search or max(2 * k, 64))
            v, i = self.faiss_index.search(q, k)
        v = np.where(i >= 0, v, -np.inf).astype(np.float32)
        return v, i.astype(np.int64)

    def _rerank(self, q: np.ndarray, cand: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Exact scores of the shortlist ``cand`` from the stored vectors, keep the best k."""
        if self.database is None:
            raise ValueError("rerank needs the database vectors; build the index with keep_database=True")
        valid = cand >= 0
        x = _take(self.database, np.where(valid, cand, 0).ravel()).reshape(*cand.shape, self.d)
        s = np.matmul(x, q[:, :, None])[..., 0]
        s = np.where(valid, s, -np.inf).astype(np.float32)
        return _topk_rows(s, np.where(valid, cand, -1), k)


def build_reference_index(
    database,
    *,
    engine: EngineName = "ivf",
    engine_params: EngineParams | dict | None = None,
    n_queries: int | None = None,
    progress: bool | str = False,
) -> ReferenceIndex:
    """Put ``database`` (array, memmap or :class:`~dehub.datasets.shards.ShardedArray`) in an
    approximate index, reading it in blocks of 32k rows (memory: the index + one block)."""
    t0 = time.perf_counter()
    p = EngineParams.coerce(engine_params)
    if engine not in _ENGINES:
        raise ValueError(f"engine must be one of {list(_ENGINES)}; received {engine!r}")
    n, d = int(database.shape[0]), int(database.shape[1])
    if engine == "auto":
        engine = choose_engine(n_queries or n, n, d, p)
    if engine == "exact":
        raise ValueError("engine='exact' has no index; call exact_search or topk_search")
    if n == 0:
        raise ValueError("the database is empty; expected at least one row")
    label = progress if isinstance(progress, str) else f"{engine} build"
    idx = ReferenceIndex(engine=engine, params=p, n=n, d=d, database=database)
    n_blocks = -(-n // _BLOCK_ROWS)
    if engine == "hnsw":
        faiss = import_faiss()
        fi = faiss.IndexHNSWFlat(d, int(p.M), faiss.METRIC_INNER_PRODUCT)
        fi.hnsw.efConstruction = int(p.ef_construction)
        with progress_bar(total=n_blocks, desc=label, enable=bool(progress), unit="block") as bar:
            for sl in _blocks(n, _BLOCK_ROWS):
                fi.add(np.ascontiguousarray(_rows(database, sl)))
                bar.update(1)
        idx.faiss_index = fi
        idx.build_seconds = time.perf_counter() - t0
        return idx

    nlist = p.resolved_nlist(n)
    train_n = int(min(n, p.train_size or 32 * nlist))
    rng = np.random.default_rng(p.seed)
    sample_rows = np.sort(rng.choice(n, size=train_n, replace=False))
    sample = _take(database, sample_rows)
    idx.centroids = spherical_kmeans(sample, nlist, p.niter, p.seed)
    sq_train = np.ascontiguousarray(sample[: min(train_n, 65536)]) if engine == "ivf-sq8" else None
    del sample  # not needed past training: keep it out of the index's peak memory
    # assign every database row to its nearest centroid, in blocks within the budget
    assign = np.empty(n, dtype=np.int64)
    step = max(1024, min(_BLOCK_ROWS, p.memory_budget // (4 * (nlist + d))))
    with progress_bar(
        total=-(-n // step), desc=f"{label}: assign", enable=bool(progress), unit="block"
    ) as bar:
        for sl in _blocks(n, step):
            assign[sl] = (_rows(database, sl) @ idx.centroids.T).argmax(axis=1)
            bar.update(1)
    if engine == "ivf":
        counts = np.bincount(assign, minlength=nlist)
        bounds = np.zeros(nlist + 1, dtype=np.int64)
        np.cumsum(counts, out=bounds[1:])
        order = np.argsort(assign, kind="stable")
        pos = np.empty(n, dtype=np.int64)
        pos[order] = np.arange(n)
        vectors = np.empty((n, d), dtype=np.float32)
        with progress_bar(total=n_blocks, desc=f"{label}: lists", enable=bool(progress), unit="block") as bar:
            for sl in _blocks(n, _BLOCK_ROWS):
                vectors[pos[sl]] = _rows(database, sl)
                bar.update(1)
        idx.list_bounds, idx.list_rows, idx.vectors = bounds, order, vectors
    else:  # ivf-sq8
        faiss = import_faiss()
        quantizer = faiss.IndexFlatIP(d)
        quantizer.add(idx.centroids)
        fi = faiss.IndexIVFScalarQuantizer(
            quantizer, d, nlist, faiss.ScalarQuantizer.QT_8bit, faiss.METRIC_INNER_PRODUCT
        )
        fi.train(sq_train)  # quantizer kept; trains the scalar quantizer
        with progress_bar(total=n_blocks, desc=f"{label}: add", enable=bool(progress), unit="block") as bar:
            for sl in _blocks(n, _BLOCK_ROWS):
                xb = np.ascontiguousarray(_rows(database, sl))
                ids = np.arange(sl.start, sl.stop, dtype=np.int64)
                a = np.ascontiguousarray(assign[sl])
                fi.add_core(xb.shape[0], faiss.swig_ptr(xb), faiss.swig_ptr(ids), faiss.swig_ptr(a))
                bar.update(1)
        idx._quantizer = quantizer  # keep the SWIG owner alive with the index
        idx.faiss_index = fi
    idx.build_seconds = time.perf_counter() - t0
    return idx


def topk_search(
    queries,
    database,
    k: int,
    *,
    engine: EngineName = "exact",
    engine_params: EngineParams | dict | None = None,
    memory_budget: int = DEFAULT_MEMORY_BUDGET,
    progress: bool | str = False,
) -> tuple[np.ndarray, np.ndarray]:
    """Top-k of ``queries @ database.T`` with the chosen engine (exact engine contract)."""
    if engine not in _ENGINES:
        raise ValueError(f"engine must be one of {list(_ENGINES)}; received {engine!r}")
    p = EngineParams.coerce(engine_params)
    if engine == "auto":
        engine = choose_engine(queries.shape[0], database.shape[0], database.shape[1], p)
    if engine == "exact":
        return exact_search(queries, database, k, memory_budget=memory_budget, progress=progress)
    if queries.ndim != 2 or database.ndim != 2 or queries.shape[1] != database.shape[1]:
        raise ValueError(
            "queries and database must be 2-D with the same dimension; received shapes "
            f"{queries.shape} and {database.shape}"
        )
    index = build_reference_index(database, engine=engine, engine_params=p, progress=progress)
    return index.search(queries, k, progress=progress)


# --------------------------------------------------------------------------- report
@dataclass(frozen=True)
class ApproxReport:
    """What an approximate setting trades, measured on a sample of queries.

    recall : mean fraction of the true top-k ids found (recall@k vs the exact engine).
    bias_mae, bias_max_error : mean and max |b_approx - b_exact| with
        ``b = alpha * mean(top-k scores)``.
    bias_rel_error : bias_mae / mean |b_exact|.
    exact_seconds, approx_seconds : search time of the sample (approx excludes build).
    build_seconds : time to build the approximate index over the whole database.
    """

    engine: str
    params: dict
    k: int
    n_sample: int
    recall: float
    bias_mae: float
    bias_max_error: float
    bias_rel_error: float
    exact_seconds: float
    approx_seconds: float
    build_seconds: float

    def as_dict(self) -> dict:
        return asdict(self)


def evaluate_engine(
    queries,
    database,
    k: int,
    *,
    engine: EngineName = "ivf",
    engine_params: EngineParams | dict | None = None,
    alpha: float = 1.0,
    sample: int = 1000,
    seed: int = 0,
    index: ReferenceIndex | None = None,
) -> ApproxReport:
    """Recall of the true top-k and bias error of an engine against exact, on a sample.

    For NNN pass ``queries=gallery``, ``database=reference``, the fitted ``k`` and ``alpha``.
    A prebuilt ``index`` (from :func:`build_reference_index`) is reused if given.
    """
    p = EngineParams.coerce(engine_params) if index is None else index.params
    if index is None:
        index = build_reference_index(database, engine=engine, engine_params=p, n_queries=queries.shape[0])
    rng = np.random.default_rng(seed)
    nq = queries.shape[0]
    rows = np.sort(rng.choice(nq, size=min(sample, nq), replace=False))
    q = _take(queries, rows)
    t = time.perf_counter()
    ev, ei = exact_search(q, database, k)
    t_exact = time.perf_counter() - t
    t = time.perf_counter()
    av, ai = index.search(q, k)
    t_approx = time.perf_counter() - t
    hits = (ai[:, :, None] == ei[:, None, :]) & (ei[:, None, :] >= 0)
    n_true = np.maximum((ei >= 0).sum(axis=1), 1)
    recall = float(np.mean(hits.any(axis=1).sum(axis=1) / n_true))
    b_exact = alpha * ev.mean(axis=1, dtype=np.float64)
    b_approx = alpha * np.where(np.isfinite(av), av, 0).sum(axis=1, dtype=np.float64) / k
    err = np.abs(b_approx - b_exact)
    return ApproxReport(
        engine=index.engine,
        params=asdict(p),
        k=int(k),
        n_sample=int(rows.size),
        recall=recall,
        bias_mae=float(err.mean()),
        bias_max_error=float(err.max()),
        bias_rel_error=float(err.mean() / max(np.abs(b_exact).mean(), 1e-12)),
        exact_seconds=t_exact,
        approx_seconds=t_approx,
        build_seconds=index.build_seconds,
    )
