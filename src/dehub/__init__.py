"""dehub: training-free hubness correction for embedding retrieval.

Nearest Neighbor Normalization (Chowdhury et al., EMNLP 2024) and the methods of its
family, with an exact GEMM-speed engine, saved indexes, and an evaluation harness.
"""

__version__ = "0.1.0"

from ._format import IndexFormatError  # noqa: E402
from ._validation import UnnormalizedWarning  # noqa: E402
from .engine import evaluate_engine, exact_search, merge_topk, topk_search  # noqa: E402
from .index import Index  # noqa: E402
from .methods import METHODS, NNN, Plain, get_method  # noqa: E402
from .methods import CSLS, DN, DBNorm, QBNorm, RobustNNN, SoftNNN  # noqa: E402
from .methods.base import NotFittedError  # noqa: E402
from .relevance import Relevance  # noqa: E402

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
