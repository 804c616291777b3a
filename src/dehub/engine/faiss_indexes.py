"""The FAISS-backed engines: ``ivf-sq8`` (:class:`SQ8Index`) and ``hnsw`` (:class:`HNSWIndex`).

One class per engine, each behind the search contract of
:class:`~dehub.engine.reference.ReferenceIndex`. Search is stateless: ``nprobe`` and
``efSearch`` are passed to FAISS per call (``SearchParametersIVF`` /
``SearchParametersHNSW``), never written into the FAISS index.

``ivf-sq8``
    FAISS ``IndexIVFScalarQuantizer`` (8 bits per dimension, 4x smaller than float32),
    coarse quantizer trained and assigned by numpy (:func:`dehub.engine.ivf.train_coarse`),
    lists searched with ``search_preassigned``. Scores are approximate: ``rerank``
    re-scores a shortlist exactly.
``hnsw``
    FAISS ``IndexHNSWFlat`` with inner product. Building costs O(n log n) distance
    evaluations and is slow on 1M x 512 with 2 cores; good for references up to a few
    100k rows.

FAISS is optional (``pip install dehub[faiss]``) and imported only when an engine needs it.
"""

from __future__ import annotations

import time
from types import ModuleType
from typing import Any

import numpy as np

from .._errors import MissingExtraError
from .._progress import progress_bar
from ._rows import read_rows, row_blocks
from .ivf import BUILD_BLOCK_ROWS, probe_lists, train_coarse
from .reference import ReferenceIndex
from .settings import EngineParams

__all__ = ["import_faiss", "SQ8Index", "HNSWIndex", "search_with_params"]


def search_with_params(index: Any, x: np.ndarray, k: int, params: Any) -> tuple[np.ndarray, np.ndarray]:
    """``index.search(x, k, params=params)`` for a FAISS index and numpy ``x``.

    ``faiss.contrib.torch_utils``, once any library in the process imports it (kiez does),
    replaces every index class's ``search`` with a torch-aware wrapper that takes no
    ``params`` and keeps FAISS's own numpy wrapper as ``search_numpy``: that one is called
    where it exists, so the per-call search parameters are never lost or refused.
    """
    search = getattr(type(index), "search_numpy", None)
    if search is not None:
        return search(index, x, k, params=params)
    return index.search(x, k, params=params)


def import_faiss() -> ModuleType:
    """Import FAISS or explain how to install it."""
    try:
        import faiss
    except ImportError as exc:
        raise MissingExtraError(
            "this engine",
            "FAISS",
            "faiss",
            module="faiss",
            instead="use {engine} (numpy only)",
            params={"engine": ("'exact'", "'ivf'")},
        ) from exc
    return faiss


def _as_contract(v: np.ndarray, i: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """FAISS output -> candidate matrix: ``-inf`` where FAISS returned no id."""
    return np.where(i >= 0, v, -np.inf).astype(np.float32), i.astype(np.int64)


class SQ8Index(ReferenceIndex):
    """FAISS ``IndexIVFScalarQuantizer`` (8-bit codes) with numpy coarse assignment."""

    engine = "ivf-sq8"

    def __init__(
        self,
        params: EngineParams,
        centroids: np.ndarray,
        faiss_index: Any,
        quantizer: Any,
        n: int,
        d: int,
        database: Any = None,
    ) -> None:
        super().__init__(params, n, d, database)
        self.centroids = centroids
        self.faiss_index = faiss_index
        self._quantizer = quantizer  # keeps the SWIG owner alive with the index

    @classmethod
    def build(
        cls, database: Any, params: EngineParams, *, progress: bool | str = False, keep_database: bool = True
    ) -> SQ8Index:
        t0 = time.perf_counter()
        faiss = import_faiss()
        label = progress if isinstance(progress, str) else "ivf-sq8 build"
        n, d = int(database.shape[0]), int(database.shape[1])
        centroids, assign, sample = train_coarse(database, params, progress=progress, label=label)
        sq_train = np.ascontiguousarray(sample[: min(sample.shape[0], 65536)])
        del sample
        nlist = centroids.shape[0]
        quantizer = faiss.IndexFlatIP(d)
        quantizer.add(centroids)
        fi = faiss.IndexIVFScalarQuantizer(
            quantizer, d, nlist, faiss.ScalarQuantizer.QT_8bit, faiss.METRIC_INNER_PRODUCT
        )
        fi.train(sq_train)  # quantizer kept; trains the scalar quantizer
        n_blocks = -(-n // BUILD_BLOCK_ROWS)
        with progress_bar(total=n_blocks, desc=f"{label}: add", enable=bool(progress), unit="block") as bar:
            for sl in row_blocks(n, BUILD_BLOCK_ROWS):
                xb = np.ascontiguousarray(read_rows(database, sl))
                ids = np.arange(sl.start, sl.stop, dtype=np.int64)
                a = np.ascontiguousarray(assign[sl])
                fi.add_core(xb.shape[0], faiss.swig_ptr(xb), faiss.swig_ptr(ids), faiss.swig_ptr(a))
                bar.update(1)
        index = cls(params, centroids, fi, quantizer, n, d, database if keep_database else None)
        index.build_seconds = time.perf_counter() - t0
        return index

    @property
    def nbytes(self) -> int:
        invl = import_faiss().extract_index_ivf(self.faiss_index).invlists
        return int(self.centroids.nbytes + self.n * (invl.code_size + 8))

    def _candidates(self, q: np.ndarray, k: int, params: EngineParams) -> tuple[np.ndarray, np.ndarray]:
        faiss = import_faiss()
        q = np.ascontiguousarray(q, dtype=np.float32)
        nprobe = min(params.resolved_nprobe(), self.centroids.shape[0])
        dq, iq = probe_lists(q, self.centroids, nprobe)
        iq = np.ascontiguousarray(iq, dtype=np.int64)
        dq = np.ascontiguousarray(dq, dtype=np.float32)
        v = np.empty((q.shape[0], k), dtype=np.float32)
        i = np.empty((q.shape[0], k), dtype=np.int64)
        # the C++ call: the Python wrapper accepts no SearchParameters and would need
        # faiss_index.nprobe set, which a stateless search must not do
        sp = faiss.SearchParametersIVF(nprobe=nprobe)
        self.faiss_index.search_preassigned_c(
            q.shape[0],
            faiss.swig_ptr(q),
            k,
            faiss.swig_ptr(iq),
            faiss.swig_ptr(dq),
            faiss.swig_ptr(v),
            faiss.swig_ptr(i),
            False,
            sp,
        )
        return _as_contract(v, i)


class HNSWIndex(ReferenceIndex):
    """FAISS ``IndexHNSWFlat`` with inner product."""

    engine = "hnsw"

    def __init__(self, params: EngineParams, faiss_index: Any, n: int, d: int, database: Any = None) -> None:
        super().__init__(params, n, d, database)
        self.faiss_index = faiss_index

    @classmethod
    def build(
        cls, database: Any, params: EngineParams, *, progress: bool | str = False, keep_database: bool = True
    ) -> HNSWIndex:
        t0 = time.perf_counter()
        faiss = import_faiss()
        label = progress if isinstance(progress, str) else "hnsw build"
        n, d = int(database.shape[0]), int(database.shape[1])
        fi = faiss.IndexHNSWFlat(d, int(params.M), faiss.METRIC_INNER_PRODUCT)
        fi.hnsw.efConstruction = int(params.ef_construction)
        n_blocks = -(-n // BUILD_BLOCK_ROWS)
        with progress_bar(total=n_blocks, desc=label, enable=bool(progress), unit="block") as bar:
            for sl in row_blocks(n, BUILD_BLOCK_ROWS):
                fi.add(np.ascontiguousarray(read_rows(database, sl)))
                bar.update(1)
        index = cls(params, fi, n, d, database if keep_database else None)
        index.build_seconds = time.perf_counter() - t0
        return index

    @property
    def nbytes(self) -> int:
        return int(self.n * (4 * self.d + 8 * self.params.M))

    def _candidates(self, q: np.ndarray, k: int, params: EngineParams) -> tuple[np.ndarray, np.ndarray]:
        faiss = import_faiss()
        q = np.ascontiguousarray(q, dtype=np.float32)
        ef = int(params.ef_search or max(2 * k, 64))
        v, i = search_with_params(self.faiss_index, q, k, faiss.SearchParametersHNSW(efSearch=ef))
        return _as_contract(v, i)
