"""Top-k engines: exact (BLAS GEMM + streamed selection) and, optionally, FAISS."""

from .exact import DEFAULT_MEMORY_BUDGET, BlockPlan, exact_search, plan_blocks
from .faiss_engine import ApproxReport, EngineParams, build_reference_index, evaluate_engine, topk_search
from .topk import RunningTopK, merge_topk

__all__ = [
    "exact_search",
    "plan_blocks",
    "BlockPlan",
    "DEFAULT_MEMORY_BUDGET",
    "RunningTopK",
    "merge_topk",
    "topk_search",
    "EngineParams",
    "build_reference_index",
    "evaluate_engine",
    "ApproxReport",
]
