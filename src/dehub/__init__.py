"""dehub: training-free hubness correction for embedding retrieval.

Nearest Neighbor Normalization (Chowdhury et al., EMNLP 2024) and the methods of its
family, with an exact GEMM-speed engine, saved indexes, and an evaluation harness.

``import dehub`` loads the library's core layers (checks, engine, methods, the index) and
:func:`load`; the evaluation harness, the exports, the service and the studies are
imported from their packages (``dehub.evaluation``, ``dehub.export``, ...). See
``docs/architecture.md``.
"""

from ._format import IndexFormatError
from ._loading import load
from ._validation import UnnormalizedWarning
from ._version import __version__
from .engine import exact_search, merge_topk, topk_search
from .index import Index
from .methods import (
    CSLS,
    DBSN,
    DN,
    DSL,
    METHODS,
    NNN,
    SN,
    DBNorm,
    InvGC,
    LocalScaling,
    MethodTags,
    MutualProximity,
    Plain,
    QBNorm,
    Renorm,
    RobustNNN,
    SoftNNN,
    get_method,
    get_tags,
)
from .methods.base import KClampedWarning, NotFittedError, RefitRequiredError, StaleFitError
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
    "load",
    "IndexFormatError",
    "NotFittedError",
    "StaleFitError",
    "RefitRequiredError",
    "KClampedWarning",
    "UnnormalizedWarning",
    "Relevance",
    "exact_search",
    "merge_topk",
    "topk_search",
]
__all__ += ["SN", "DBSN", "InvGC", "Renorm", "MutualProximity", "LocalScaling", "DSL"]  # issue 14
