"""Export a corrected gallery to a plain FAISS index that serves corrected scores.

An offset correction (NNN and its family) scores ``s(q, r) - b(r)``. With the bias
appended to every gallery vector (:mod:`dehub.export.vectors`), any FAISS index serves it
with no dehub code at query time:

* ``form="d+1"``: items ``[r, b(r)]``, queries ``[q, -1]``, metric inner product;
* ``form="d+2"``: items ``[r, b, sqrt(M^2 - |[r, b]|^2)]``, queries ``[q, -1, 0]``,
  metric L2 (all items have norm ``M``, so L2 ranks exactly by the corrected score; IVF
  and HNSW are built for L2, so recall does not suffer from the varying norms of d+1).

:func:`export_faiss` builds flat, IVF or HNSW, stores the external ids in it
(``IndexIDMap``/``add_with_ids``), writes it with ``faiss.write_index`` and writes the
sidecar ``<path>.json`` (:mod:`dehub.export.sidecar`): method, parameters, ids, ``d``,
form, ``M``, search parameters, the index file's SHA-256 and its own checksum. Both
files are written atomically.

Pitfalls (see ``docs/stores/faiss.md``):

* d+1 needs ``METRIC_INNER_PRODUCT`` and never normalized vectors (no cosine index, no
  ``faiss.normalize_L2``): normalizing rescales ``q . r`` by a per-item factor;
* product quantization groups the bias coordinate with other dimensions whose scale is
  different; prefer flat or per-dimension scalar quantization (``SQ8``) and check recall;
* HNSW with inner product is not a metric space and the d+1 norms vary: use d+2 (L2)
  with HNSW, or raise ``efSearch`` and check recall against the flat export.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

import numpy as np

from .._errors import InputError, MissingExtraError
from .._io import atomic_path, sha256_file
from .._json import jsonable
from .._version import __version__
from ..engine import DEFAULT_NPROBE, default_nlist, import_faiss
from .recall import DEFAULT_RECALL, RecallCheck, check_recall, exact_top_ids, probe_queries, report_recall
from .sidecar import SIDECAR_KIND, SIDECAR_VERSION, faiss_index_ids, load_sidecar, write_sidecar
from .vectors import LazyItemVectors, offset_model, query_vectors

__all__ = [
    "export_faiss",
    "load_sidecar",
    "ExportType",
    "build_faiss_index",
    "faiss_ids_of",
    "faiss_recall_check",
    "NPROBE_CANDIDATES",
    "EF_SEARCH_CANDIDATES",
]

#: settings tried by the recall check, cheapest first (nprobe is capped at nlist)
NPROBE_CANDIDATES = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096)
EF_SEARCH_CANDIDATES = (16, 32, 64, 128, 256, 512, 1024, 2048, 4096)

ExportType = Literal["flat", "ivf", "ivf-sq8", "hnsw"]
Metric = Literal["ip", "l2"]


def build_faiss_index(
    vectors: Any,
    ids: np.ndarray | None = None,
    *,
    index_type: ExportType = "flat",
    metric: Metric = "ip",
    nlist: int | None = None,
    nprobe: int = DEFAULT_NPROBE,
    M: int = 32,
    ef_construction: int = 80,
    ef_search: int = 128,
    seed: int = 0,
    block_rows: int = 65536,
):
    """A FAISS index over ``vectors`` (any dimension) labelled with ``ids``.

    ``metric='ip'`` (inner product, the d+1 form and plain vectors) or ``'l2'`` (the d+2
    form). Used for the exported vectors and, in benchmarks, for the plain ``d`` vectors,
    so both are built the same way. ``vectors`` may also be a lazy ``(n, dim)`` view
    (``shape`` + row slicing, e.g. :class:`dehub.export.vectors.LazyItemVectors`): rows
    are then added ``block_rows`` at a time, so only the index holds all of them.
    """
    faiss = _import_faiss()
    shape = tuple(getattr(vectors, "shape", np.shape(vectors)))
    if len(shape) != 2:
        raise InputError(f"vectors must be a (n, dim) array; received shape {shape}")
    n, dim = int(shape[0]), int(shape[1])
    labels = np.arange(n, dtype=np.int64) if ids is None else np.ascontiguousarray(ids, dtype=np.int64)
    if metric not in ("ip", "l2"):
        raise InputError(f"metric must be 'ip' or 'l2'; received {metric!r}")
    fmetric = faiss.METRIC_INNER_PRODUCT if metric == "ip" else faiss.METRIC_L2

    def flat(dim_: int):
        return faiss.IndexFlatIP(dim_) if metric == "ip" else faiss.IndexFlatL2(dim_)

    if index_type == "flat":
        index = faiss.IndexIDMap(flat(dim))
    elif index_type in ("ivf", "ivf-sq8"):
        nl = nlist or default_nlist(n)  # the one default, shared with the bias engines
        quantizer = flat(dim)
        if index_type == "ivf":
            index = faiss.IndexIVFFlat(quantizer, dim, nl, fmetric)
        else:
            index = faiss.IndexIVFScalarQuantizer(quantizer, dim, nl, faiss.ScalarQuantizer.QT_8bit, fmetric)
        rng = np.random.default_rng(seed)
        rows = np.sort(rng.choice(n, size=min(n, 64 * nl), replace=False))
        index.train(np.ascontiguousarray(vectors[rows], dtype=np.float32))
        index.nprobe = min(nprobe, nl)
    elif index_type == "hnsw":
        inner = faiss.IndexHNSWFlat(dim, M, fmetric)
        inner.hnsw.efConstruction = ef_construction
        inner.hnsw.efSearch = ef_search
        index = faiss.IndexIDMap(inner)
    else:
        raise InputError(
            f"index_type must be one of 'flat', 'ivf', 'ivf-sq8', 'hnsw'; received {index_type!r}"
        )
    for start in range(0, n, block_rows):
        stop = min(start + block_rows, n)
        index.add_with_ids(np.ascontiguousarray(vectors[start:stop], dtype=np.float32), labels[start:stop])
    return index


def faiss_ids_of(path: str | os.PathLike) -> np.ndarray:
    """The ids stored in a FAISS file (for checks and updates)."""
    return faiss_index_ids(import_faiss().read_index(str(path)))


def _import_faiss():
    """faiss, or an ImportError that names what ``dehub export`` can do without it."""
    try:
        return import_faiss()
    except ImportError:
        raise MissingExtraError(
            "exporting to FAISS",
            "faiss-cpu",
            "faiss",
            instead="export with {to}, which do not need it",
            params={"to": ("'lancedb'", "'qdrant'", "'pgvector'")},
        ) from None


def _set_search_param(faiss, index, params: dict[str, int]) -> None:
    if "nprobe" in params:
        faiss.extract_index_ivf(index).nprobe = int(params["nprobe"])
    if "efSearch" in params:
        faiss.downcast_index(index.index).hnsw.efSearch = int(params["efSearch"])


def faiss_recall_check(
    index,
    source,
    form: str,
    index_type: str,
    *,
    fixed: dict[str, int] | None = None,
    target: float = DEFAULT_RECALL,
    n_probes: int | None = None,
) -> RecallCheck:
    """Measure the FAISS ``index``'s recall@10 against ``source``'s exact corrected top-10.

    Tries ``fixed`` (a setting the caller chose) or nprobe / efSearch from cheap to
    expensive, and leaves the chosen setting applied on ``index``.
    """
    faiss = _import_faiss()
    probes = probe_queries(source, n_probes) if n_probes else probe_queries(source)
    exact = exact_top_ids(source, probes, 10)
    qv = query_vectors(probes, form, dim=index.d)
    if fixed:
        cands: list[dict[str, int]] = [dict(fixed)]
    elif index_type in ("ivf", "ivf-sq8"):
        nlist = int(faiss.extract_index_ivf(index).nlist)
        cands = [{"nprobe": p} for p in NPROBE_CANDIDATES if p < nlist] + [{"nprobe": nlist}]
    else:
        cands = [{"efSearch": e} for e in EF_SEARCH_CANDIDATES]

    def search(params: dict[str, int]):
        _set_search_param(faiss, index, params)
        return index.search(qv, 10)[1]

    check = check_recall(search, cands, exact, target=target)
    _set_search_param(faiss, index, check.params)
    return check


def export_faiss(
    source,
    path: str | os.PathLike,
    *,
    index_type: ExportType = "flat",
    form: str = "d+1",
    ids=None,
    recall: float = DEFAULT_RECALL,
    strict: bool = False,
    n_probes: int | None = None,
    **index_params: Any,
) -> Path:
    """Write ``source``'s corrected gallery as a FAISS index file plus a JSON sidecar.

    Parameters
    ----------
    source : a fitted offset estimator (``dehub.NNN``) or a ``dehub.Index``
    path : the FAISS index file to write; the sidecar is ``<path>.json``
    index_type : {'flat', 'ivf', 'ivf-sq8', 'hnsw'}
        ``flat`` returns exactly dehub's corrected top-k; the others are approximate.
    form : {'d+1', 'd+2'}
        ``d+1``: inner-product index, queries ``[q, -1]``; ``d+2``: L2 index over
        equal-norm items, queries ``[q, -1, 0]`` (:func:`dehub.export.query_vectors`).
    ids : external ids (default: the Index's ids, else ``0..n-1``)
    index_params : ``nlist``, ``nprobe``, ``M``, ``ef_construction``, ``ef_search``
        (nprobe and efSearch are stored in the sidecar and re-applied by the server).
    recall, strict : an IVF / HNSW export measures its recall@10 against dehub's exact
        corrected top-10 on probe queries (:mod:`dehub.export.recall`); without an explicit
        ``nprobe`` / ``ef_search`` it stores the cheapest setting reaching ``recall``
        (default 0.99); when none does it warns, or with ``strict`` raises
        :class:`~dehub.export.recall.RecallNotReached` and writes nothing. The measured
        figure is the sidecar's ``recall_check``.
    """
    faiss = _import_faiss()
    model = offset_model(source)
    if ids is None:
        ids = getattr(source, "ids", None)
    items = LazyItemVectors(model.gallery_, model.bias_, form)  # rows built block by block
    n, dim = items.shape
    ids = np.arange(n, dtype=np.int64) if ids is None else np.asarray(ids, dtype=np.int64)
    if ids.shape != (n,):
        raise InputError(f"ids must have one id per gallery row, shape ({n},); received {ids.shape}")
    if n and ids.min() < 0:
        raise InputError("ids must be non-negative for an export (FAISS uses -1 as its padding id)")
    metric: Metric = "ip" if form == "d+1" else "l2"
    index = build_faiss_index(items, ids, index_type=index_type, metric=metric, **index_params)
    check = None
    if index_type != "flat":
        fixed = {}
        if index_type in ("ivf", "ivf-sq8") and "nprobe" in index_params:
            fixed = {"nprobe": int(index_params["nprobe"])}
        if index_type == "hnsw" and "ef_search" in index_params:
            fixed = {"efSearch": int(index_params["ef_search"])}
        check = faiss_recall_check(
            index, source, form, index_type, fixed=fixed, target=recall, n_probes=n_probes
        )
        report_recall(check, f"FAISS {index_type} export {path}", strict=strict)
    path = Path(path)
    if path.exists() and not Path(str(path) + ".json").is_file():
        raise FileExistsError(
            f"{path} exists and has no dehub sidecar ({path.name}.json): not overwriting a file dehub did not write"
        )
    with atomic_path(path) as tmp:
        faiss.write_index(index, tmp)
    search_params: dict[str, int] = dict(check.params) if check is not None else {}
    if form == "d+1":
        q_transform = "append -1: q' = [q_1, ..., q_d, -1] (float32, not re-normalized)"
        r_transform = "r' = [r_1, ..., r_d, bias(r)]"
    else:
        q_transform = "append -1 and 0: q' = [q_1, ..., q_d, -1, 0] (float32, not re-normalized)"
        r_transform = "x = [r_1, ..., r_d, bias(r)]; r' = [x, sqrt(M^2 - |x|^2)], |r'| = M"
    fields = {
        "kind": SIDECAR_KIND,
        "version": SIDECAR_VERSION,
        "created_by": f"dehub {__version__}",
        "method": model.name,
        "params": {k: jsonable(v) for k, v in model.get_params().items()},
        "index_file": path.name,
        "index_sha256": sha256_file(path),
        "index_type": index_type,
        "form": form,
        "metric": "inner_product" if form == "d+1" else "l2",
        "M": items.M,
        "d": int(items.d),
        "dim": int(dim),
        "n_items": int(n),
        "query_transform": q_transform,
        "item_transform": r_transform,
        "search_params": search_params,
        "ids": ids.tolist(),
    }
    if check is not None:
        fields["recall_check"] = check.as_dict()
    write_sidecar(path, fields)
    return path
