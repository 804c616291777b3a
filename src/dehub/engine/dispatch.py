"""The engine dispatcher: ``topk_search``, the engine choice (``"auto"``) and index building.

Every engine follows the exact engine's contract, so the exact engine is the oracle::

    topk_search(queries, database, k, engine=...) -> (scores float32 (n, k), ids int64 (n, k))

best first, ties -> smaller id, padded ``-inf``/``-1``.

Engines (``engine=``):

``"exact"``
    :func:`~dehub.engine.exact.exact_search` (blocked GEMM).
``"ivf"``
    :class:`~dehub.engine.ivf.IVFIndex`, numpy inverted lists with flat float32 storage.
``"ivf-sq8"``
    :class:`~dehub.engine.faiss_indexes.SQ8Index`, FAISS 8-bit scalar quantizer lists.
``"hnsw"``
    :class:`~dehub.engine.faiss_indexes.HNSWIndex`, FAISS HNSW graph.
``"auto"``
    :func:`choose_engine`: exact when the exact product is small, ``ivf`` otherwise, and
    ``ivf-sq8`` when the float32 reference would not fit ``index_budget`` bytes.
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np

from .._errors import InputError
from .exact import DEFAULT_MEMORY_BUDGET, exact_search
from .faiss_indexes import HNSWIndex, SQ8Index
from .ivf import IVFIndex
from .reference import ReferenceIndex
from .settings import EngineParams

__all__ = ["EngineName", "ENGINES", "choose_engine", "build_reference_index", "topk_search"]

EngineName = Literal["exact", "ivf", "ivf-sq8", "hnsw", "auto"]
ENGINES: tuple[str, ...] = ("exact", "ivf", "ivf-sq8", "hnsw", "auto")
_INDEXES: dict[str, type[IVFIndex] | type[SQ8Index] | type[HNSWIndex]] = {
    "ivf": IVFIndex,
    "ivf-sq8": SQ8Index,
    "hnsw": HNSWIndex,
}
_EXACT_MAX_PAIRS = 2e9  # below this many query x database pairs the exact GEMM is cheap


def _check_engine(engine: str) -> None:
    if engine not in ENGINES:
        raise InputError(f"engine must be one of {list(ENGINES)}; received {engine!r}")


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


def build_reference_index(
    database: Any,
    *,
    engine: EngineName | str = "ivf",
    engine_params: EngineParams | dict[str, Any] | None = None,
    n_queries: int | None = None,
    progress: bool | str = False,
) -> ReferenceIndex:
    """Put ``database`` (array, memmap or :class:`~dehub.datasets.shards.ShardedArray`) in an
    approximate index, reading it in blocks of 32k rows (memory: the index + one block).

    ``engine="auto"`` chooses with :func:`choose_engine` for ``n_queries`` queries (default:
    as many as database rows); it must not resolve to ``"exact"``, which has no index.
    """
    p = EngineParams.coerce(engine_params)
    _check_engine(engine)
    n, d = int(database.shape[0]), int(database.shape[1])
    chosen = choose_engine(n_queries or n, n, d, p) if engine == "auto" else engine
    if chosen == "exact":
        raise InputError("engine='exact' has no index; call exact_search or topk_search")
    if n == 0:
        raise InputError("the database is empty; expected at least one row")
    return _INDEXES[chosen].build(database, p, progress=progress)


def topk_search(
    queries: Any,
    database: Any,
    k: int,
    *,
    engine: EngineName | str = "exact",
    engine_params: EngineParams | dict[str, Any] | None = None,
    memory_budget: int = DEFAULT_MEMORY_BUDGET,
    progress: bool | str = False,
    precision: str = "fp32",
) -> tuple[np.ndarray, np.ndarray]:
    """Top-k of ``queries @ database.T`` with the chosen engine (exact engine contract).

    ``precision`` applies to the exact engine (``docs/precision.md``)."""
    _check_engine(engine)
    p = EngineParams.coerce(engine_params)
    if engine == "auto":
        engine = choose_engine(queries.shape[0], database.shape[0], database.shape[1], p)
    if engine == "exact":
        return exact_search(
            queries, database, k, memory_budget=memory_budget, progress=progress, precision=precision
        )
    if queries.ndim != 2 or database.ndim != 2 or queries.shape[1] != database.shape[1]:
        raise InputError(
            "queries and database must be 2-D with the same dimension; received shapes "
            f"{queries.shape} and {database.shape}"
        )
    index = build_reference_index(database, engine=engine, engine_params=p, progress=progress)
    return index.search(queries, k, progress=progress)
