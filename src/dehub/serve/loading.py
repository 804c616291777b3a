"""What one loaded index version holds, how it is loaded, and the bundled demo.

A :class:`Served` is immutable once built: the app swaps the whole object on a reload
(:class:`dehub.serve.app.ServeState`), so a request that picked one version finishes on
it while the next request sees the new one.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .._errors import InputError
from .._format import FileIdentity
from .._json import JSONLimits, JSONReadError, jsonable, parse_json, read_json
from .._loading import load
from ..datasets import load_wordnet_benchmark
from ..datasets.encoder import EMBEDDING_DIM, ENCODER_NAME
from ..export.hnsw import content_key, graph_backend, graph_paths
from ..export.sidecar import load_sidecar
from ..index import Index
from ..rundir import is_manifest_dir
from .backends import BackendName, ExactBackend, FaissBackend, IndexChanged, choose_backend, is_offset_method

__all__ = [
    "Served",
    "Examples",
    "IndexChanged",
    "load_index",
    "load_served",
    "load_demo",
    "k_occurrence",
    "DEMO_NAME",
]

DEMO_NAME = "wordnet-demo"
#: k of the k-occurrence N_k shown on the page (how many queries have an item in their top k).
KOCC_K = 10
_KOCC_MAX_QUERIES = 5_000
_KOCC_MAX_ITEMS = 1_000_000
_TEXTS_LIMITS = JSONLimits(max_bytes=1 << 30, max_depth=8, max_values=1 << 27)  # a JSON list of item texts


@dataclass(frozen=True)
class Examples:
    """Benchmark queries shipped with an index (the demo): texts, vectors, relevant ids."""

    texts: tuple[str, ...]
    vectors: np.ndarray
    relevant: tuple[tuple[int, ...], ...]


@dataclass(frozen=True)
class Served:
    """One loaded index version: a backend plus what the API reports about it."""

    name: str
    backend: Any
    method: str
    params: dict[str, Any]
    offset: bool
    dim: int
    n_items: int
    ids: np.ndarray  # external ids in row order
    version: int
    source: str
    loaded_at: float
    metadata: dict[str, Any] = field(default_factory=dict)
    texts: tuple[str, ...] | None = None
    bias: np.ndarray | None = None
    kocc_plain: np.ndarray | None = None
    kocc_corrected: np.ndarray | None = None
    kocc_queries: str | None = None
    examples: Examples | None = None
    text_encoder: str | None = None
    files: tuple[FileIdentity, ...] = ()
    hnsw: dict[str, Any] | None = None
    _broken: list[str] = field(default_factory=list, repr=False)  # sticky: once changed in place
    #: per-item metadata (url, caption...) by id: ``dehub.item_metadata.ItemMetadata``
    item_metadata: Any = None
    _order: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64), repr=False)
    _sorted_ids: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64), repr=False)

    def __post_init__(self) -> None:
        order = np.argsort(self.ids, kind="stable")
        object.__setattr__(self, "_order", order)
        object.__setattr__(self, "_sorted_ids", self.ids[order])

    def rows_of(self, ids: np.ndarray) -> np.ndarray:
        """Row numbers of external ``ids`` (-1 where an id is not in the index)."""
        ids = np.asarray(ids, dtype=np.int64)
        if len(self._sorted_ids) == 0:
            return np.full(ids.shape, -1, dtype=np.int64)
        pos = np.minimum(np.searchsorted(self._sorted_ids, ids), len(self._sorted_ids) - 1)
        return np.where(self._sorted_ids[pos] == ids, self._order[pos], -1)

    def rows_of_ints(self, ids: Sequence[int]) -> np.ndarray:
        """Row numbers of ids given as Python integers of any size (a request's): -1 where an
        id is outside int64 (it cannot be stored) or not in the index."""
        inside = np.fromiter((_INT64_MIN <= i <= _INT64_MAX for i in ids), dtype=bool, count=len(ids))
        safe = np.fromiter((i if ok else 0 for i, ok in zip(ids, inside)), dtype=np.int64, count=len(ids))
        return np.where(inside, self.rows_of(safe), -1)

    def check_files(self) -> None:
        """Raise :class:`IndexChanged` if a file this version was loaded from was changed in place.

        A memory-mapped file truncated or rewritten under the server would crash it
        (SIGBUS) on the next read of a lost page, or answer from other data. A file
        *replaced* (a new file renamed over it, as ``Index.save`` does) leaves the loaded
        version intact: it is served until the reload that picks up the new file.
        """
        if self._broken:
            raise IndexChanged(self._broken[0])
        for ident in self.files:
            try:
                st = os.stat(ident.path)
            except OSError:
                continue  # removed: the mapping keeps the old inode alive
            if (st.st_dev, st.st_ino) != (ident.st_dev, ident.st_ino):
                continue  # replaced: the loaded version is intact
            if (st.st_size, st.st_mtime_ns) != (ident.st_size, ident.st_mtime_ns):
                what = (
                    f"was truncated from {ident.st_size} to {st.st_size} bytes"
                    if st.st_size < ident.st_size
                    else "was modified in place"
                )
                self._broken.append(f"{ident.path} {what} after it was loaded")
                raise IndexChanged(self._broken[0])

    def hub_threshold(self) -> int | None:
        """N_k from which an item counts as a hub: the 99th percentile of plain N_k, at least 2k."""
        if self.kocc_plain is None:
            return None
        return int(max(2 * KOCC_K, np.percentile(self.kocc_plain, 99)))


_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1


def k_occurrence(ids: np.ndarray, n_items: int) -> np.ndarray:
    """N_k of every row: in how many of the result lists ``ids`` (rows, -1 = padding) it occurs."""
    flat = ids[ids >= 0].ravel()
    return np.bincount(flat, minlength=n_items).astype(np.int64)


def _kocc_from_rows(
    backend: Any, served_ids: np.ndarray, queries: np.ndarray, n_items: int
) -> tuple[np.ndarray, np.ndarray]:
    order = np.argsort(served_ids, kind="stable")
    sorted_ids = served_ids[order]
    out = []
    for corrected in (False, True):
        _, ids = backend.search(queries, KOCC_K, corrected=corrected)
        pos = np.clip(np.searchsorted(sorted_ids, ids), 0, n_items - 1)
        rows = np.where(ids >= 0, order[pos], -1)
        out.append(k_occurrence(rows, n_items))
    return out[0], out[1]


def _texts_from(metadata: dict[str, Any], texts_file: str | None, n: int) -> tuple[str, ...] | None:
    texts: Any = None
    if texts_file:
        p = Path(texts_file)
        raw = p.read_text(encoding="utf-8")
        texts = (
            parse_json(raw, source=str(p), limits=_TEXTS_LIMITS) if p.suffix == ".json" else raw.splitlines()
        )
    elif isinstance(metadata.get("item_text"), list):
        texts = metadata["item_text"]
    if texts is None:
        return None
    if not isinstance(texts, list) or len(texts) != n or not all(isinstance(t, str) for t in texts):
        raise InputError(
            f"item texts must be a list of {n} strings (one per gallery row); "
            f"received {type(texts).__name__} of length {len(texts) if hasattr(texts, '__len__') else '?'}"
        )
    return tuple(texts)


def load_index(path: str | Path) -> Any:
    """The one place ``dehub serve`` loads a saved index (a file or a run directory), memory-mapped.

    Mapped, the gallery's pages are shared by every ``--workers`` process and by the page
    cache; ``Index.load`` verifies the file's checksums first.
    """
    return load(path, mmap=True)


def _identity(path: Path) -> tuple[FileIdentity, ...]:
    if not path.is_file():
        return ()
    return (FileIdentity.of(path, path.stat()),)


def load_served(
    source: str | Path,
    *,
    version: int = 1,
    backend: BackendName = "auto",
    hnsw_threshold: int | None = None,
    recall: float = 0.99,
    texts_file: str | None = None,
    text_encoder: str | None = None,
    name: str | None = None,
    log: Any = None,
) -> Served:
    """Load a dehub index file, a ``dehub build --runner ray`` run directory, or a FAISS
    file exported by ``dehub.export.export_faiss``."""
    path = Path(source)
    files = _identity(path)

    if not (path.is_file() or is_manifest_dir(path)):
        raise FileNotFoundError(
            f"index file not found: {path} (expected a dehub index file, a run directory with "
            "manifest.json, or a FAISS export)"
        )
    name = name or path.stem
    sidecar_path = Path(str(path) + ".json")
    if sidecar_path.is_file():
        try:  # bounded: a sidecar is checked in full by load_sidecar below
            side = read_json(
                sidecar_path, limits=JSONLimits(max_bytes=1 << 31, max_depth=16, max_values=1 << 28)
            )
        except JSONReadError:
            side = {}
        if isinstance(side, dict) and side.get("kind") == "dehub.faiss-export":
            side = load_sidecar(path)
            fb = FaissBackend.from_export(path, side)
            ids = np.asarray(side["ids"], dtype=np.int64)
            enc = text_encoder or (ENCODER_NAME if side.get("encoder") == ENCODER_NAME else None)
            return Served(
                name=name,
                backend=fb,
                method=str(side.get("method")),
                params=dict(side.get("params", {})),
                offset=True,
                dim=fb.dim,
                n_items=fb.n_items,
                ids=ids,
                version=version,
                source=str(path),
                loaded_at=time.time(),
                metadata={"faiss_export": {k: side[k] for k in ("index_type", "created_by") if k in side}},
                texts=_texts_from({}, texts_file, fb.n_items),
                text_encoder=enc if fb.dim == EMBEDDING_DIM else None,
                files=files + _identity(sidecar_path),
            )

    index = load_index(path)
    offset = is_offset_method(index.model)
    kind = choose_backend(
        index.n_items, offset, backend, **({"hnsw_threshold": hnsw_threshold} if hnsw_threshold else {})
    )
    be: Any
    hnsw_info = None
    if kind == "exact":
        be = ExactBackend(index)
    else:
        graph = graph_backend(index, path, content_key(path), target=recall, log=log)
        hnsw_info = graph.info.to_json()
        hnsw_info.pop("fingerprint", None)
        if backend == "auto" and graph.info.recall < recall:
            # the exact engine is the oracle: an approximate backend that cannot reach the
            # recall floor on this data is not chosen automatically
            hnsw_info["used"] = False
            if log:
                log("auto: serving with the exact engine instead (--backend hnsw forces the graph)")
            be = ExactBackend(index)
        else:
            hnsw_info["used"] = True
            be = graph
            files = files + _identity(graph_paths(path)[0])
    metadata = dict(index.metadata)
    texts = _texts_from(metadata, texts_file, index.n_items)
    metadata.pop("item_text", None)
    if texts is None and index.item_metadata is not None:  # a folder's caption / text column
        column = next((c for c in ("caption", "text") if c in index.item_metadata.columns), None)
        if column is not None:
            texts = tuple(
                "" if t is None else str(t)
                for t in index.item_metadata.table_for(index.ids)[column].to_pylist()
            )
    bias = np.asarray(index.model.bias_, dtype=np.float32).copy() if offset else None
    kp = kc = None
    kq = None
    ref = index.reference
    if ref is not None and index.n_items <= _KOCC_MAX_ITEMS:
        m = min(int(ref.shape[0]), _KOCC_MAX_QUERIES)
        q = np.asarray(ref[np.linspace(0, ref.shape[0] - 1, m).astype(np.int64)], dtype=np.float32)
        kp, kc = _kocc_from_rows(be, index.ids, q, index.n_items)
        kq = f"{m} reference queries stored in the index"
    enc = text_encoder or (ENCODER_NAME if metadata.get("encoder") == ENCODER_NAME else None)
    return Served(
        name=name,
        backend=be,
        method=index.model.name,
        params=jsonable(index.model.get_params()),
        offset=offset,
        dim=index.dim,
        n_items=index.n_items,
        ids=np.asarray(index.ids, dtype=np.int64).copy(),
        version=version,
        source=str(path),
        loaded_at=time.time(),
        metadata=jsonable(metadata),
        texts=texts,
        bias=bias,
        kocc_plain=kp,
        kocc_corrected=kc,
        kocc_queries=kq,
        text_encoder=enc if index.dim == EMBEDDING_DIM else None,
        files=files,
        hnsw=hnsw_info,
        item_metadata=index.item_metadata,
    )


def load_demo(*, version: int = 1, method: str = "nnn", **params: Any) -> Served:
    """The bundled WordNet benchmark: definition -> lemma over the test gallery (8,7k lemmas).

    The correction is fitted on the reference split's definitions (k=16, alpha=0.75 unless
    given); k-occurrence is counted over the 5,000 test definitions, which the page
    offers as example queries together with their correct lemmas.
    """
    bench = load_wordnet_benchmark()
    task = bench.test.task("a2b")
    reference = bench.reference_for("a2b")
    index = Index.build(task.gallery, reference, method=method, normalize="none", **params)
    be = ExactBackend(index)
    n = index.n_items
    kp, kc = _kocc_from_rows(be, index.ids, task.queries, n)
    rel = task.relevance
    relevant = tuple(tuple(int(j) for j in rel.positives(i)) for i in range(rel.n_queries))
    offset = is_offset_method(index.model)
    return Served(
        name=DEMO_NAME,
        backend=be,
        method=index.model.name,
        params=jsonable(index.model.get_params()),
        offset=offset,
        dim=index.dim,
        n_items=n,
        ids=index.ids,
        version=version,
        source="bundled WordNet benchmark (definition -> lemma, test split)",
        loaded_at=time.time(),
        metadata={
            "benchmark": bench.name,
            "encoder": ENCODER_NAME,
            "gallery": "lemma",
            "queries": "definition",
        },
        texts=tuple(task.gallery_text or ()),
        bias=np.asarray(index.model.bias_, dtype=np.float32) if offset else None,
        kocc_plain=kp,
        kocc_corrected=kc,
        kocc_queries=f"the {rel.n_queries} test definitions",
        examples=Examples(tuple(task.query_text or ()), np.asarray(task.queries, dtype=np.float32), relevant),
        text_encoder=ENCODER_NAME,
    )
