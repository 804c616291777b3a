"""Top-k engines: exact (BLAS GEMM + streamed selection) and, optionally, FAISS."""

from .exact import DEFAULT_MEMORY_BUDGET, BlockPlan, exact_search, plan_blocks
from .topk import RunningTopK, merge_topk

__all__ = [
    "exact_search",
    "plan_blocks",
    "BlockPlan",
    "DEFAULT_MEMORY_BUDGET",
    "RunningTopK",
    "merge_topk",
]
