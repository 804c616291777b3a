"""dehub: training-free hubness correction for embedding retrieval.

Nearest Neighbor Normalization (Chowdhury et al., EMNLP 2024) and the methods of its
family, with an exact GEMM-speed engine, saved indexes, and an evaluation harness.
"""

__version__ = "0.1.0"

from ._format import IndexFormatError
from ._validation import UnnormalizedWarning
from .engine import evaluate_engine, exact_search, merge_topk, topk_search
from .index import Index
from .methods import (
    CSLS,
    DN,
    METHODS,
    NNN,
    DBNorm,
    MethodTags,
    Plain,
    QBNorm,
    RobustNNN,
    SoftNNN,
    get_method,
    get_tags,
)
from .methods.base import NotFittedError
from .relevance import Relevance

__all__ = [
    "__version__",
    "NNN",
    "Plain",
    "CSLS",
    "QBNorm",
    "DBNorm",
    "DN",
    "RobustNNN",
    "SoftNNN",
    "METHODS",
    "get_method",
    "get_tags",
    "MethodTags",
    "Index",
    "IndexFormatError",
    "NotFittedError",
    "UnnormalizedWarning",
    "Relevance",
    "exact_search",
    "merge_topk",
    "topk_search",
    "evaluate_engine",
]
