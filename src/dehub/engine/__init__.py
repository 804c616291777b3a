"""Top-k engines: exact (BLAS GEMM + streamed selection) and approximate (IVF, FAISS).

Modules, one job each: :mod:`~dehub.engine.exact` (the exact engine),
:mod:`~dehub.engine.topk` (every top-k selection), :mod:`~dehub.engine.dispatch`
(``topk_search``, engine choice), :mod:`~dehub.engine.settings` (``EngineParams``, the
nlist/nprobe default), :mod:`~dehub.engine.ivf` (numpy IVF), :mod:`~dehub.engine.faiss_indexes`
(FAISS SQ8 and HNSW), :mod:`~dehub.engine.kmeans` (the IVF's coarse quantizer),
:mod:`~dehub.engine.reference` (the approximate search contract),
:mod:`~dehub.engine.hardware` (sizes from the machine), :mod:`~dehub.engine._workers` and
:mod:`~dehub.engine._blas` (one worker per core, each with a single-threaded BLAS).
``evaluate_engine`` (the recall of an approximate engine against this exact oracle) is
evaluation, a layer above: :mod:`dehub.evaluation.engine_eval`.
"""

from __future__ import annotations

from .dispatch import ENGINES, EngineName, build_reference_index, choose_engine, topk_search
from .exact import DEFAULT_MEMORY_BUDGET, BlockPlan, exact_search, plan_blocks
from .faiss_indexes import HNSWIndex, SQ8Index, import_faiss
from .ivf import IVFIndex, spherical_kmeans
from .reference import IndexSearch, ReferenceIndex
from .settings import DEFAULT_NPROBE, EngineParams, default_nlist
from .topk import RunningTopK, merge_topk, select_topk

__all__ = [
    "exact_search",
    "plan_blocks",
    "BlockPlan",
    "DEFAULT_MEMORY_BUDGET",
    "RunningTopK",
    "merge_topk",
    "select_topk",
    "topk_search",
    "choose_engine",
    "ENGINES",
    "EngineName",
    "EngineParams",
    "DEFAULT_NPROBE",
    "default_nlist",
    "build_reference_index",
    "ReferenceIndex",
    "IndexSearch",
    "IVFIndex",
    "SQ8Index",
    "HNSWIndex",
    "spherical_kmeans",
    "import_faiss",
]
