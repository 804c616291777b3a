"""Search backends of ``dehub serve``.

Each answers ``search(queries, k, corrected=...) -> (scores, ids)`` with the index's
*external* ids, best first, padded ``-inf``/``-1`` (the contract of
:meth:`dehub.Index.search`):

* :class:`ExactBackend`: dehub's own exact engine at every size (:meth:`dehub.Index.search`
  for the corrected ranking, bit for bit; :func:`dehub.exact_search` without offset for
  the plain one). Any method works. It replaced the FAISS flat ``d + 1`` backend, which
  measured 170 ms per 1M query against the engine's 59 ms, and 1,352 ms per batch of 16
  against 248 ms (issue 22).
* :class:`~dehub.export.hnsw.HNSWBackend`: a FAISS HNSW graph over the augmented items,
  efSearch tuned to a recall target (offset methods only).
* :class:`FaissBackend`: a FAISS file written by :func:`dehub.export.export_faiss`
  (served as exported: ``[q, -1]`` corrected, ``[q, 0]`` plain).

:func:`choose_backend` picks the exact engine up to ``hnsw_threshold`` items and HNSW
above (offset methods, FAISS installed), or obeys a flag.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal, Protocol

import numpy as np

from .._errors import InputError
from ..engine import import_faiss
from ..engine.exact import exact_search
from ..methods import get_tags

__all__ = [
    "Backend",
    "BackendName",
    "ExactBackend",
    "FaissBackend",
    "IndexChanged",
    "choose_backend",
    "is_offset_method",
    "HNSW_THRESHOLD",
]

BackendName = Literal["auto", "exact", "hnsw"]

#: Galleries above this many items are served from an HNSW graph by ``backend="auto"``
#: (measured on 2 cores, d=384: see docs/serve.md, "Choosing the backend").
HNSW_THRESHOLD = 200_000


class IndexChanged(RuntimeError):
    """The served index file changed or was truncated after it was loaded (every request of
    a merged engine call shares the cause: ``whole_batch``)."""

    whole_batch = True


def is_offset_method(model: Any) -> bool:
    """Whether ``model``'s corrected score is ``q . r - bias_[r]`` (a fixed per-item offset).

    The one place that asks the method what it can do (its estimator tags).
    """
    return bool(get_tags(model).offset)


class Backend(Protocol):
    """What the app needs from a backend."""

    name: str
    n_items: int
    dim: int

    def search(self, queries: np.ndarray, k: int, *, corrected: bool = True) -> tuple[np.ndarray, np.ndarray]:
        """Top-k (scores float32, external ids int64), best first, padded -inf/-1."""
        ...


class ExactBackend:
    """The exact blocked-GEMM engine over an in-memory :class:`dehub.Index`."""

    name = "exact"

    def __init__(self, index: Any, *, memory_budget: int = 256 * 2**20) -> None:
        self.index = index
        self.n_items = int(index.n_items)
        self.dim = int(index.dim)
        self.memory_budget = memory_budget

    def search(self, queries: np.ndarray, k: int, *, corrected: bool = True) -> tuple[np.ndarray, np.ndarray]:
        """``Index.search``'s ranking bit for bit (the same ``model.search`` call, rows mapped to
        ids); the file check is the app's (:meth:`dehub.serve.loading.Served.check_files`),
        which lets a replaced file serve the loaded version until the reload."""
        k = min(int(k), self.n_items)  # as Index.search clamps, without its warning per request
        model = self.index.model
        if corrected:
            scores, rows = model.search(queries, k, normalize="none", memory_budget=self.memory_budget)
        else:
            scores, rows = exact_search(queries, model.gallery_, k, memory_budget=self.memory_budget)
        ids = np.where(rows >= 0, self.index.ids[np.maximum(rows, 0)], -1)
        return scores, ids


class FaissBackend:
    """An inner-product FAISS index over ``[r, b(r)]``; plain queries get a 0, corrected -1."""

    name = "faiss"

    def __init__(self, faiss_index: Any, d: int, *, search_params: dict[str, Any] | None = None) -> None:
        self.faiss_index = faiss_index
        self.dim = int(d)
        self.n_items = int(faiss_index.ntotal)
        if int(faiss_index.d) != self.dim + 1:
            raise InputError(
                f"the FAISS index has dimension {faiss_index.d}; expected d + 1 = {self.dim + 1} "
                "(gallery vectors with the bias appended)"
            )
        if search_params:
            faiss = import_faiss()
            ps = faiss.ParameterSpace()
            for key, value in search_params.items():
                ps.set_index_parameter(faiss_index, key, value)

    @classmethod
    def from_export(cls, path: str | Path, sidecar: dict[str, Any]) -> FaissBackend:
        """Load a FAISS file written by :func:`dehub.export.export_faiss` (sidecar checked)."""
        faiss = import_faiss()
        return cls(faiss.read_index(str(path)), int(sidecar["d"]), search_params=sidecar.get("search_params"))

    def search(self, queries: np.ndarray, k: int, *, corrected: bool = True) -> tuple[np.ndarray, np.ndarray]:
        q = np.asarray(queries, dtype=np.float32)
        aug = np.empty((q.shape[0], self.dim + 1), dtype=np.float32)
        aug[:, : self.dim] = q
        aug[:, self.dim] = -1.0 if corrected else 0.0
        kk = min(k, self.n_items)
        scores, ids = self.faiss_index.search(aug, kk)
        scores = np.asarray(scores, dtype=np.float32)
        ids = np.asarray(ids, dtype=np.int64)
        scores[ids < 0] = -np.inf
        if kk < k:  # the contract pads to k
            pad = k - kk
            scores = np.hstack([scores, np.full((q.shape[0], pad), -np.inf, dtype=np.float32)])
            ids = np.hstack([ids, np.full((q.shape[0], pad), -1, dtype=np.int64)])
        return scores, ids


def choose_backend(
    n_items: int, offset: bool, requested: BackendName, *, hnsw_threshold: int = HNSW_THRESHOLD
) -> str:
    """``"exact"`` or ``"hnsw"`` for a gallery of ``n_items`` (``requested`` may force one)."""
    if requested == "exact":
        return "exact"
    if requested == "hnsw":
        if not offset:
            raise InputError(
                "--backend hnsw serves offset methods only (score q . r - b(r)); this index's method "
                "is not one: use --backend exact"
            )
        return "hnsw"
    if requested != "auto":
        raise InputError(f"backend must be 'auto', 'exact' or 'hnsw'; received {requested!r}")
    if offset and n_items > hnsw_threshold:
        try:
            import faiss  # noqa: F401
        except ImportError:
            return "exact"
        return "hnsw"
    return "exact"
