"""Settings of the approximate engines, and the one nlist/nprobe default of the project.

:func:`default_nlist` and :data:`DEFAULT_NPROBE` are shared by the bias engines
(:mod:`dehub.engine.ivf`, :mod:`dehub.engine.faiss_indexes`) and the FAISS export. Both
the ``ivf`` engine (``nprobe=None``, ``recall=0.99``) and the ANN exports choose
``nprobe`` by a recall check against the exact engine by default;
:data:`DEFAULT_NPROBE` is what a search uses without one.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

import numpy as np

from .._errors import InputError, InputTypeError

__all__ = ["EngineParams", "DEFAULT_NPROBE", "TRAIN_PER_LIST", "default_nlist"]

DEFAULT_NPROBE = 8  # inverted lists scanned per query unless told otherwise
TRAIN_PER_LIST = 20  # k-means sample rows per list by default
_MIN_ROWS_PER_LIST = 39  # FAISS's k-means warns below 39 training points per centroid


def default_nlist(n_database: int) -> int:
    """Number of inverted lists for ``n_database`` rows: ``2 sqrt(n)`` rounded to a power
    of two, at most ``n // 39`` (so k-means has 39 points per centroid), at least 1."""
    n = int(n_database)
    if n < 1:
        raise InputError(f"n_database must be >= 1; received {n}")
    target = 2 * np.sqrt(n)
    nlist = 1 << int(np.round(np.log2(max(target, 1.0))))
    return int(max(1, min(nlist, n // _MIN_ROWS_PER_LIST or 1)))


@dataclass(frozen=True)
class EngineParams:
    """Knobs of the approximate engines (``None`` = derived from the sizes).

    nlist : number of inverted lists (IVF); default :func:`default_nlist`.
    nprobe : lists scanned per query (IVF); default ``None``: ``ivf`` chooses it for each
        search by its recall check (``recall``), the others (and ``ivf`` without the
        check) use :data:`DEFAULT_NPROBE` (8) (:meth:`resolved_nprobe`). A given
        ``nprobe`` is used as given.
    niter : k-means iterations; default 5 (the first 2 on every other sample row).
    train_size : rows sampled to train the centroids; default ``min(n, 20 * nlist)``
        (:data:`TRAIN_PER_LIST`).
    assign_dim : coordinates (a window of consecutive ones) the k-means and the list
        assignment score on (:mod:`dehub.engine.kmeans`); default ``None``: ``ivf``
        starts at ``d // 4`` (at least 128, all of ``d`` below 128) and widens it while
        the measured window assignment disagrees with the full one
        (:mod:`dehub.engine.ivf_auto`).
    M, ef_construction, ef_search : HNSW graph degree and beam widths (32, 80, 2k..64).
    rerank : search this many candidates approximately and re-score them exactly with
        the stored vectors (``rerank >= k``); ``None`` = no re-ranking. Useful for
        ``ivf-sq8`` (quantized scores); ``ivf`` scores are already exact.
    batch_size : queries searched at a time (bounds memory); default 65536.
    memory_budget : bytes for the candidate buffers of one ``ivf`` batch (the batch
        shrinks to fit); default 512 MiB.
    index_budget : bytes the ``auto`` choice allows for a float32 reference copy.
    seed : sampling seed for k-means.
    recall : IVF with ``nprobe=None``: choose ``nprobe`` for each search as the fewest
        lists whose recall of the exact engine's top-k reaches ``recall`` on a sample of
        that search's queries (:meth:`~dehub.engine.ivf.IVFIndex.nprobe_for_recall`, the
        exact engine as the oracle; needs the database kept, else :data:`DEFAULT_NPROBE`);
        default 0.99, as the exports; ``None``: no check.

    The search-time knobs (``nprobe``, ``ef_search``, ``rerank``) can also be passed to
    each ``search`` call; an index never changes them itself.
    """

    nlist: int | None = None
    nprobe: int | None = None
    niter: int = 5
    train_size: int | None = None
    assign_dim: int | None = None
    M: int = 32
    ef_construction: int = 80
    ef_search: int | None = None
    rerank: int | None = None
    batch_size: int = 65536
    memory_budget: int = 512 * 2**20
    index_budget: int = 8 * 2**30
    seed: int = 0
    recall: float | None = 0.99

    def __post_init__(self) -> None:
        if self.recall is not None and not (0.0 < float(self.recall) <= 1.0):
            raise InputError(f"recall must be in (0, 1]; received {self.recall!r}")

    @classmethod
    def coerce(cls, params: EngineParams | dict[str, Any] | None) -> EngineParams:
        """``None`` -> defaults, a dict -> checked keys, an ``EngineParams`` -> itself."""
        if params is None:
            return cls()
        if isinstance(params, EngineParams):
            return params
        if not isinstance(params, dict):
            raise InputTypeError(
                f"engine_params must be a dict or EngineParams; received {type(params).__name__}"
            )
        known = {f.name for f in fields(cls)}
        bad = sorted(set(params) - known)
        if bad:
            raise InputError(f"unknown engine_params {bad}; expected a subset of {sorted(known)}")
        return cls(**params)

    def resolved_nprobe(self) -> int:
        """``nprobe`` if set, else :data:`DEFAULT_NPROBE` (a search without a recall check)."""
        return DEFAULT_NPROBE if self.nprobe is None else int(self.nprobe)

    def resolved_nlist(self, n_database: int) -> int:
        """``nlist`` if set (checked against the database size), else :func:`default_nlist`."""
        if self.nlist is not None:
            if self.nlist < 1 or self.nlist > n_database:
                raise InputError(f"nlist must be in 1..n_database={n_database}; received nlist={self.nlist}")
            return int(self.nlist)
        return default_nlist(n_database)
