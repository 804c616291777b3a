"""Search backends of ``dehub serve``: the exact engine, or a FAISS flat ``d + 1`` index.

Both answer ``search(queries, k, corrected=...) -> (scores, ids)`` with the index's
*external* ids, best first, padded ``-inf``/``-1`` (the contract of
:meth:`dehub.Index.search`):

* :class:`ExactBackend` calls :meth:`dehub.Index.search` for the corrected ranking and
  :func:`dehub.exact_search` without offset for the plain one. Any method works.
* :class:`FaissBackend` holds one inner-product FAISS index over ``r' = [r, b(r)]``
  (the export of :mod:`dehub.export`). A corrected query is ``[q, -1]``
  (``q' . r' = q . r - b(r)``), a plain query is ``[q, 0]`` (``q . r``): one index
  serves both rankings. Only offset methods (``q . r - bias_[r]``) can be served so.

:func:`choose_backend` picks the exact engine for galleries that fit
(``n_items <= faiss_threshold``) and FAISS for larger ones, or obeys a flag.
"""

from __future__ import annotations

import mmap
from pathlib import Path
from typing import Any, Literal, Protocol

import numpy as np

from ..engine.exact import exact_search

__all__ = [
    "Backend",
    "BackendName",
    "ExactBackend",
    "FaissBackend",
    "choose_backend",
    "is_offset_method",
    "build_offset_faiss",
    "FAISS_THRESHOLD",
]

BackendName = Literal["auto", "exact", "faiss"]

#: Galleries above this many items are served from FAISS by ``backend="auto"``.
FAISS_THRESHOLD = 200_000
_ADD_CHUNK = 65_536  # gallery rows converted and added to FAISS at a time


def is_offset_method(model: Any) -> bool:
    """Whether ``model``'s corrected score is ``q . r - bias_[r]`` (a fixed per-item offset).

    The one place that asks the method what it can do (its estimator tags).
    """
    from ..methods import get_tags

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
        if corrected:
            return self.index.search(queries, k, normalize="none", memory_budget=self.memory_budget)
        scores, rows = exact_search(queries, self.index.model.gallery_, k, memory_budget=self.memory_budget)
        ids = np.where(rows >= 0, self.index.ids[np.maximum(rows, 0)], -1)
        return scores, ids


def release_mapped_pages(arr: Any) -> None:
    """Drop the pages of a memory-mapped array from this process (they stay in the page cache).

    Reading a mapped gallery once (checksum, copy into FAISS) would otherwise leave all of
    it in the resident set next to the FAISS copy. No-op for arrays in memory.
    """
    mm = getattr(arr, "_mmap", None)  # np.memmap and its views keep the mapping here
    advice = getattr(mmap, "MADV_DONTNEED", None)
    if mm is None or advice is None or not hasattr(mm, "madvise"):
        return
    try:
        mm.madvise(advice)
    except (OSError, ValueError):  # closed, or not supported here
        pass


def build_offset_faiss(
    gallery: np.ndarray, bias: np.ndarray, ids: np.ndarray, *, chunk: int = _ADD_CHUNK
) -> Any:
    """A FAISS ``IndexIDMap(IndexFlatIP(d + 1))`` over ``[gallery, bias]``, built in chunks.

    Holds the same vectors as ``dehub.export.build_faiss_index(model.export_vectors(), ids)``
    but never materializes the whole ``(n, d + 1)`` float32 copy: only ``chunk`` rows of
    the (possibly memory-mapped) gallery are converted at a time.
    """
    from ..engine import import_faiss

    faiss = import_faiss()
    n, d = gallery.shape
    index = faiss.IndexIDMap(faiss.IndexFlatIP(d + 1))
    labels = np.ascontiguousarray(ids, dtype=np.int64)
    b = np.asarray(bias, dtype=np.float32)
    buf = np.empty((min(chunk, n), d + 1), dtype=np.float32)
    for start in range(0, n, chunk):
        stop = min(start + chunk, n)
        part = buf[: stop - start]
        part[:, :d] = gallery[start:stop]
        part[:, d] = b[start:stop]
        index.add_with_ids(part, labels[start:stop])
        release_mapped_pages(gallery)
    return index


class FaissBackend:
    """An inner-product FAISS index over ``[r, b(r)]``; plain queries get a 0, corrected -1."""

    name = "faiss"

    def __init__(self, faiss_index: Any, d: int, *, search_params: dict[str, Any] | None = None) -> None:
        self.faiss_index = faiss_index
        self.dim = int(d)
        self.n_items = int(faiss_index.ntotal)
        if int(faiss_index.d) != self.dim + 1:
            raise ValueError(
                f"the FAISS index has dimension {faiss_index.d}; expected d + 1 = {self.dim + 1} "
                "(gallery vectors with the bias appended)"
            )
        if search_params:
            from ..engine import import_faiss

            faiss = import_faiss()
            ps = faiss.ParameterSpace()
            for key, value in search_params.items():
                ps.set_index_parameter(faiss_index, key, value)

    @classmethod
    def from_index(cls, index: Any) -> FaissBackend:
        """Build the flat ``d + 1`` index from a :class:`dehub.Index` of an offset method."""
        model = index.model
        if not is_offset_method(model):
            raise ValueError(
                f"method {model.name!r} is not an offset correction (its score is not q . r - b(r)); "
                "it cannot be served from a FAISS d+1 index: use --backend exact"
            )
        release_mapped_pages(model.gallery_)  # read once by the checksum when loaded
        return cls(build_offset_faiss(model.gallery_, model.bias_, index.ids), index.dim)

    @classmethod
    def from_export(cls, path: str | Path, sidecar: dict[str, Any]) -> FaissBackend:
        """Load a FAISS file written by :func:`dehub.export.export_faiss` (sidecar checked)."""
        from ..engine import import_faiss

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
    n_items: int, offset: bool, requested: BackendName, *, faiss_threshold: int = FAISS_THRESHOLD
) -> str:
    """``"exact"`` or ``"faiss"`` for a gallery of ``n_items`` (``requested`` may force one)."""
    if requested == "exact":
        return "exact"
    if requested == "faiss":
        if not offset:
            raise ValueError(
                "--backend faiss serves offset methods only (score q . r - b(r)); this index's method "
                "is not one: use --backend exact"
            )
        return "faiss"
    if requested != "auto":
        raise ValueError(f"backend must be 'auto', 'exact' or 'faiss'; received {requested!r}")
    if offset and n_items > faiss_threshold:
        try:
            import faiss  # noqa: F401
        except ImportError:
            return "exact"
        return "faiss"
    return "exact"
