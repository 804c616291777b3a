"""The serving graph: a FAISS HNSW graph that keeps the correction (``dehub serve``'s
approximate backend), built at the server's first start or ahead of it by
``dehub export INDEX --to hnsw`` (:func:`export_hnsw`).

An offset correction scores ``q . r - b(r)``. The graph is built over the augmented item
vectors of :mod:`dehub.export.vectors`:

* ``form="d+2"`` (default): items ``[r, b, sqrt(M^2 - |[r, b]|^2)]`` under L2; every
  item has norm ``M``, so the L2 order is the corrected order and HNSW works in the metric
  space it was designed for;
* ``form="d+1"``: items ``[r, b]`` under inner product (not a metric; norms vary).

A corrected query is ``[q, -1(, 0)]``, a plain one ``[q, 0(, 0)]``: one graph serves both
rankings. Scores returned are always the exact ``q . r - b(r)`` (or ``q . r``) recomputed
from the gallery for the k results, so an approximate answer differs from the exact
engine's only in *which* items it found, never in their scores.

``efSearch`` is tuned (:func:`tune_ef_search`) so that recall@10 against the exact
corrected top-10 on probe queries (the index's reference queries where kept, else a
sample of gallery rows) reaches a target (0.99 by default). The graph, ``efSearch`` and
the measured recall are saved next to the index (``<index>.hnsw`` and
``<index>.hnsw.json``, keyed by the index file's array checksums) and reused on the next
start; a graph whose key does not match the index is rebuilt, never used.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .._errors import InputError
from .._loading import is_run_directory, load
from .._progress import progress_bar
from ..engine import import_faiss
from ..engine.faiss_indexes import search_with_params
from ..index import Index
from ..rundir import read_manifest
from .recall import recall_at
from .vectors import LazyItemVectors, is_offset, query_vectors

__all__ = [
    "GraphInfo",
    "HNSWBackend",
    "build_graph",
    "content_key",
    "export_hnsw",
    "graph_paths",
    "index_fingerprint",
    "load_graph",
    "save_graph",
    "tune_ef_search",
    "DEFAULT_FORM",
    "DEFAULT_M",
    "DEFAULT_EF_CONSTRUCTION",
]

DEFAULT_FORM = "d+2"
DEFAULT_M = 32
DEFAULT_EF_CONSTRUCTION = 80
GRAPH_KIND = "dehub.serve.hnsw"  # named when the module lived in dehub.serve: saved graphs stay valid
GRAPH_VERSION = 1
_ADD_ROWS = 16_384
#: The rule :func:`tune_ef_search` applies; a graph tuned under another rule is re-tuned.
TUNING = "recall-minus-2se"
_EF_LADDER = (
    16,
    24,
    32,
    40,
    48,
    64,
    80,
    96,
    112,
    128,
    160,
    192,
    224,
    256,
    320,
    384,
    448,
    512,
    640,
    768,
    1024,
    1536,
    2048,
)


@dataclass(frozen=True)
class GraphInfo:
    """What is stored with a graph (``<index>.hnsw.json``) and shown on ``/info``/``/metrics``."""

    fingerprint: str
    form: str
    M: int
    ef_construction: int
    ef_search: int
    target_recall: float
    recall: float
    probes: int
    probe_source: str
    norm_M: float | None
    build_seconds: float
    tune_seconds: float
    n_items: int
    dim: int
    ef_table: tuple[tuple[int, float], ...] = ()
    tuning: str = ""

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        out["ef_table"] = [list(x) for x in self.ef_table]
        return {"kind": GRAPH_KIND, "version": GRAPH_VERSION, **out}

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> GraphInfo:
        fields = {k: raw[k] for k in cls.__dataclass_fields__ if k in raw}
        fields["ef_table"] = tuple((int(e), float(r)) for e, r in raw.get("ef_table", ()))
        return cls(**fields)


def index_fingerprint(header: dict[str, Any]) -> str:
    """A key of a saved index's content: its header (arrays' checksums, method, parameters)."""
    return hashlib.sha256(json.dumps(header, sort_keys=True, default=str).encode()).hexdigest()


def content_key(path: str | os.PathLike[str]) -> dict[str, Any]:
    """What a graph is keyed by (:func:`index_fingerprint`): an index file's header (its
    arrays' checksums, method, parameters) or a run directory's manifest."""
    p = Path(path)
    if is_run_directory(p):
        return {"manifest": read_manifest(p)}
    return Index.describe_file(p)


def graph_paths(index_path: str | os.PathLike[str]) -> tuple[Path, Path]:
    """``<index>.hnsw`` (the FAISS graph) and ``<index>.hnsw.json`` (its :class:`GraphInfo`)."""
    p = Path(index_path)
    if p.is_dir():  # a run directory: the graph lives inside it
        return p / "serve.hnsw", p / "serve.hnsw.json"
    return p.with_name(p.name + ".hnsw"), p.with_name(p.name + ".hnsw.json")


def build_graph(
    gallery: Any,
    bias: np.ndarray,
    *,
    form: str = DEFAULT_FORM,
    M: int = DEFAULT_M,
    ef_construction: int = DEFAULT_EF_CONSTRUCTION,
    progress: bool = False,
) -> tuple[Any, float | None]:
    """A FAISS ``IndexHNSWFlat`` over the augmented items (rows = gallery rows) and the d+2 ``M``.

    ``gallery`` may be memory-mapped: rows are converted ``16,384`` at a time, so only
    the graph holds all of them.
    """
    faiss = import_faiss()
    items = LazyItemVectors(gallery, bias, form)
    n, dim = items.shape
    metric = faiss.METRIC_L2 if form == "d+2" else faiss.METRIC_INNER_PRODUCT
    graph = faiss.IndexHNSWFlat(dim, int(M), metric)
    graph.hnsw.efConstruction = int(ef_construction)
    with progress_bar(total=n, desc="hnsw graph", enable=progress, unit="item") as bar:
        for start in range(0, n, _ADD_ROWS):
            stop = min(start + _ADD_ROWS, n)
            graph.add(np.ascontiguousarray(items[start:stop], dtype=np.float32))
            bar.update(stop - start)
    return graph, items.M


def tune_ef_search(
    search_rows: Callable[[np.ndarray, int, int], np.ndarray],
    probes: np.ndarray,
    exact_rows: np.ndarray,
    target: float,
    *,
    k: int = 10,
) -> tuple[int, float, tuple[tuple[int, float], ...]]:
    """The smallest ``efSearch`` of a fixed ladder whose recall@k reaches ``target`` with margin.

    ``search_rows(queries, k, ef)`` returns the approximate top-k rows. A rung is taken
    when its measured recall minus two standard errors (``sqrt(r (1 - r) / hits)``, the
    probes' results counted as independent draws) reaches ``target``, so the recall on
    queries not tuned on reaches it too. Returns ``(ef, recall, table)``; where no rung
    reaches the target, the largest rung and its recall (the caller reports the miss).
    """
    table: list[tuple[int, float]] = []
    total = max(1, int((exact_rows >= 0).sum()))
    for ef in _EF_LADDER:
        if ef < k:
            continue
        r = recall_at(search_rows(probes, k, ef), exact_rows, k)
        table.append((ef, round(r, 5)))
        if r - 2.0 * float(np.sqrt(r * (1.0 - r) / total)) >= target or r >= 1.0:
            return ef, r, tuple(table)
    return table[-1][0], table[-1][1], tuple(table)


def save_graph(index_path: str | os.PathLike[str], graph: Any, info: GraphInfo) -> Path:
    """Write the graph and its info next to the index (each atomically: temp file, rename)."""
    faiss = import_faiss()
    gpath, jpath = graph_paths(index_path)
    tmp = gpath.with_name(gpath.name + f".tmp{os.getpid()}")
    faiss.write_index(graph, str(tmp))
    os.replace(tmp, gpath)
    jtmp = jpath.with_name(jpath.name + f".tmp{os.getpid()}")
    jtmp.write_text(json.dumps(info.to_json(), indent=1) + "\n", encoding="utf-8")
    os.replace(jtmp, jpath)
    return gpath


def load_graph(
    index_path: str | os.PathLike[str], fingerprint: str, *, mmap: bool = True
) -> tuple[Any, GraphInfo] | None:
    """The saved graph of this index, or None when absent, unreadable or of other content.

    ``mmap=True`` maps the graph file read-only (``IO_FLAG_MMAP``): ``--workers N``
    processes then share its pages.
    """
    gpath, jpath = graph_paths(index_path)
    if not (gpath.is_file() and jpath.is_file()):
        return None
    try:
        raw = json.loads(jpath.read_text(encoding="utf-8"))
        if raw.get("kind") != GRAPH_KIND or raw.get("version") != GRAPH_VERSION:
            return None
        info = GraphInfo.from_json(raw)
    except (OSError, ValueError, TypeError, KeyError):
        return None
    if info.fingerprint != fingerprint:
        return None
    faiss = import_faiss()
    flags = faiss.IO_FLAG_MMAP_IFC | faiss.IO_FLAG_READ_ONLY if mmap else 0
    try:
        graph = faiss.read_index(str(gpath), flags)
    except RuntimeError:
        return None
    if int(graph.ntotal) != info.n_items:
        return None
    return graph, info


class HNSWBackend:
    """Corrected (and plain) top-k from an HNSW graph over the augmented items.

    ``gallery``/``bias``/``ids`` are the index's (row order = graph order); the k results
    are re-scored exactly from them.
    """

    name = "hnsw"

    def __init__(self, graph: Any, info: GraphInfo, gallery: Any, bias: np.ndarray, ids: np.ndarray) -> None:
        self.graph = graph
        self.info = info
        self.gallery = gallery
        self.bias = np.asarray(bias, dtype=np.float32)
        self.ids = np.asarray(ids, dtype=np.int64)
        self.n_items = int(graph.ntotal)
        self.dim = int(gallery.shape[1])
        self.ef_search = int(info.ef_search)

    def with_info(self, info: GraphInfo) -> HNSWBackend:
        return HNSWBackend(self.graph, info, self.gallery, self.bias, self.ids)

    def search_rows(
        self, queries: np.ndarray, k: int, *, corrected: bool = True, ef: int | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Top-k (exact scores, rows), best first, padded -inf/-1; ``ef`` overrides efSearch."""
        faiss = import_faiss()
        q = np.asarray(queries, dtype=np.float32)
        aug = query_vectors(q, self.info.form)
        if not corrected:
            aug[:, self.dim] = 0.0
        kk = min(int(k), self.n_items)
        ef_used = max(int(ef or self.ef_search), kk)
        _, rows = search_with_params(self.graph, aug, kk, faiss.SearchParametersHNSW(efSearch=ef_used))
        rows = np.asarray(rows, dtype=np.int64)
        scores = self._exact_scores(q, rows, corrected)
        order = np.argsort(-scores, axis=1, kind="stable")  # the graph's order is approximate
        rows = np.take_along_axis(rows, order, axis=1)
        scores = np.take_along_axis(scores, order, axis=1)
        if kk < k:
            pad = k - kk
            rows = np.hstack([rows, np.full((q.shape[0], pad), -1, dtype=np.int64)])
            scores = np.hstack([scores, np.full((q.shape[0], pad), -np.inf, dtype=np.float32)])
        return scores, rows

    def _exact_scores(self, q: np.ndarray, rows: np.ndarray, corrected: bool) -> np.ndarray:
        safe = np.maximum(rows, 0)
        vecs = np.asarray(self.gallery[safe.ravel()], dtype=np.float32).reshape(*rows.shape, self.dim)
        s = np.einsum("qkd,qd->qk", vecs, q, dtype=np.float32)
        if corrected:
            s -= self.bias[safe]
        return np.where(rows >= 0, s, -np.inf).astype(np.float32)

    def search(self, queries: np.ndarray, k: int, *, corrected: bool = True) -> tuple[np.ndarray, np.ndarray]:
        scores, rows = self.search_rows(queries, k, corrected=corrected)
        ids = np.where(rows >= 0, self.ids[np.maximum(rows, 0)], -1)
        return scores, ids


def probe_queries(
    reference: Any,
    gallery: Any,
    n_probes: int,
    exact_rows_of: Callable[[np.ndarray, int], np.ndarray],
    *,
    k: int = 10,
    seed: int = 0,
) -> tuple[np.ndarray, str]:
    """Probe queries for tuning: the index's reference queries where kept, else displaced gallery rows.

    A gallery row itself is a poor probe: it is a node of the graph, found trivially
    (measured: recall 0.997 on rows vs 0.967 on held-out queries at the same efSearch).
    Without reference queries each probe is a gallery row moved, in a random direction,
    by the distance to its own k-th exact neighbour: a query near items but on none.
    """
    rng = np.random.default_rng(seed)
    if reference is not None and int(reference.shape[0]) > 0:
        m = min(int(reference.shape[0]), n_probes)
        rows = np.sort(rng.choice(int(reference.shape[0]), size=m, replace=False))
        return np.asarray(reference[rows], dtype=np.float32), f"{m} reference queries stored in the index"
    m = min(int(gallery.shape[0]), n_probes)
    rows = np.sort(rng.choice(int(gallery.shape[0]), size=m, replace=False))
    base = np.asarray(gallery[rows], dtype=np.float32)
    nn = exact_rows_of(base, k + 1)[:, -1]
    radius = np.linalg.norm(base - np.asarray(gallery[np.maximum(nn, 0)], dtype=np.float32), axis=1)
    step = rng.standard_normal(base.shape).astype(np.float32)
    step *= (radius / np.maximum(np.linalg.norm(step, axis=1), 1e-30))[:, None]
    desc = f"{m} gallery rows moved by their {k}-th neighbour distance (the index kept no reference queries)"
    return (base + step).astype(np.float32), desc


def build_tuned(
    gallery: Any,
    bias: np.ndarray,
    ids: np.ndarray,
    reference: Any,
    exact_rows_of: Callable[[np.ndarray, int], np.ndarray],
    fingerprint: str,
    *,
    target: float = 0.99,
    form: str = DEFAULT_FORM,
    M: int = DEFAULT_M,
    ef_construction: int = DEFAULT_EF_CONSTRUCTION,
    n_probes: int = 500,
    k: int = 10,
    progress: bool = False,
) -> HNSWBackend:
    """Build a graph, tune efSearch on probe queries against ``exact_rows_of`` and wrap it."""
    t0 = time.perf_counter()
    graph, norm_m = build_graph(
        gallery, bias, form=form, M=M, ef_construction=ef_construction, progress=progress
    )
    build_s = time.perf_counter() - t0
    info = GraphInfo(
        fingerprint=fingerprint,
        form=form,
        M=int(M),
        ef_construction=int(ef_construction),
        ef_search=max(64, k),
        target_recall=float(target),
        recall=float("nan"),
        probes=0,
        probe_source="",
        norm_M=norm_m,
        build_seconds=round(build_s, 2),
        tune_seconds=0.0,
        n_items=int(graph.ntotal),
        dim=int(gallery.shape[1]),
    )
    backend = HNSWBackend(graph, info, gallery, bias, ids)
    return retune(backend, reference, exact_rows_of, target=target, n_probes=n_probes, k=k)


def retune(
    backend: HNSWBackend,
    reference: Any,
    exact_rows_of: Callable[[np.ndarray, int], np.ndarray],
    *,
    target: float,
    n_probes: int = 500,
    k: int = 10,
) -> HNSWBackend:
    """``backend`` with efSearch tuned to ``target`` recall@k on fresh probe queries."""
    t0 = time.perf_counter()
    probes, source = probe_queries(reference, backend.gallery, n_probes, exact_rows_of, k=k)
    exact = exact_rows_of(probes, k)
    ef, rec, table = tune_ef_search(
        lambda q, kk, e: backend.search_rows(q, kk, ef=e)[1], probes, exact, target, k=k
    )
    info = backend.info
    tuned = GraphInfo(
        **{
            **asdict(info),
            "ef_search": int(ef),
            "target_recall": float(target),
            "recall": round(float(rec), 5),
            "probes": int(probes.shape[0]),
            "probe_source": source,
            "tune_seconds": round(time.perf_counter() - t0, 2),
            "ef_table": table,
            "tuning": TUNING,
        }
    )
    return backend.with_info(tuned)


def exact_rows_function(index: Any) -> Callable[[np.ndarray, int], np.ndarray]:
    """``(queries, k) -> exact corrected top-k rows`` of a :class:`dehub.Index` (the oracle)."""

    def rows_of(queries: np.ndarray, k: int) -> np.ndarray:
        return np.asarray(index.model.search(queries, k, normalize="none")[1], dtype=np.int64)

    return rows_of


def graph_backend(
    index: Any,
    path: str | os.PathLike[str] | None,
    header: dict[str, Any] | None,
    *,
    target: float = 0.99,
    form: str = DEFAULT_FORM,
    M: int = DEFAULT_M,
    ef_construction: int = DEFAULT_EF_CONSTRUCTION,
    n_probes: int = 500,
    progress: bool = False,
    log: Callable[[str], None] | None = None,
) -> HNSWBackend:
    """The HNSW backend of an offset-method :class:`dehub.Index`: the saved graph or a new one.

    A graph saved next to ``path`` for the same content (``header``'s checksums) is
    reused; its efSearch is re-tuned only when ``target`` differs from the stored one.
    A new graph is built, tuned and saved (when ``path`` is given).
    """
    model = index.model
    gallery, bias, ids = model.gallery_, np.asarray(model.bias_, dtype=np.float32), np.asarray(index.ids)
    oracle = exact_rows_function(index)
    fingerprint = index_fingerprint(header) if header is not None else ""
    found = load_graph(path, fingerprint) if path is not None and header is not None else None
    if found is not None:
        graph, info = found
        backend = HNSWBackend(graph, info, gallery, bias, ids)
        if log:
            log(f"hnsw: reusing {graph_paths(path)[0]} (efSearch {info.ef_search}, recall {info.recall})")  # type: ignore[arg-type]
        if abs(info.target_recall - target) > 1e-12 or info.tuning != TUNING:
            backend = retune(backend, index.reference, oracle, target=target, n_probes=n_probes)
            save_graph(path, graph, backend.info)  # type: ignore[arg-type]
        _warn_if_short(backend.info, log)
        return backend
    if log:
        log(
            f"hnsw: building the graph of {index.n_items} items (form {form}, M {M}, efConstruction {ef_construction})"
        )
    backend = build_tuned(
        gallery,
        bias,
        ids,
        index.reference,
        oracle,
        fingerprint,
        target=target,
        form=form,
        M=M,
        ef_construction=ef_construction,
        n_probes=n_probes,
        progress=progress,
    )
    if path is not None and header is not None:
        save_graph(path, backend.graph, backend.info)
    if log:
        i = backend.info
        log(
            f"hnsw: built in {i.build_seconds} s; efSearch {i.ef_search} gives recall@10 {i.recall} on {i.probe_source}"
        )
    _warn_if_short(backend.info, log)
    return backend


def _warn_if_short(info: GraphInfo, log: Callable[[str], None] | None) -> None:
    """Say so when no efSearch of the ladder reached the recall target (the largest is used)."""
    if info.recall < info.target_recall:
        msg = (
            f"hnsw: recall@10 target {info.target_recall} NOT reached: {info.recall} at the largest efSearch "
            f"({info.ef_search}); a denser graph (larger M / efConstruction) or --backend exact would be needed"
        )
        if log:
            log(msg)
        else:
            warnings.warn(msg, RuntimeWarning, stacklevel=3)


def export_hnsw(
    source: str | os.PathLike[str],
    *,
    recall: float = 0.99,
    form: str = DEFAULT_FORM,
    M: int = DEFAULT_M,
    ef_construction: int = DEFAULT_EF_CONSTRUCTION,
    n_probes: int = 500,
    progress: bool = False,
    log: Callable[[str], None] | None = None,
) -> tuple[Path, GraphInfo]:
    """Build, tune and save the serving graph of the index at ``source`` ahead of ``dehub serve``.

    What ``dehub serve --backend hnsw`` (or ``auto`` above its threshold) does at its
    first start, done once beforehand: the graph and its :class:`GraphInfo` are written
    next to the index (:func:`graph_paths`), keyed by the index's content, and the
    server reuses them (no rebuild; efSearch re-tuned only for another ``--recall``).
    A graph already saved for this content is reused here too (re-tuned when ``recall``
    differs). Offset methods only (``q . r - b(r)``). Returns the graph's path and info.
    """
    if not 0.0 < recall <= 1.0:
        raise InputError(f"recall must be in (0, 1]; received {recall}")
    index = load(source, mmap=True)
    if not is_offset(index.model):
        raise InputError(
            f"{source}: method {index.model.name!r} has no per-item offset (score q . r - b(r)); "
            "an HNSW serving graph keeps offset methods only (NNN and family): serve it with --backend exact"
        )
    backend = graph_backend(
        index,
        source,
        content_key(source),
        target=recall,
        form=form,
        M=M,
        ef_construction=ef_construction,
        n_probes=n_probes,
        progress=progress,
        log=log,
    )
    return graph_paths(source)[0], backend.info
