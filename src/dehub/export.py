"""Export a corrected gallery to a plain FAISS index that serves corrected scores.

An additive correction (NNN and its family) scores ``s(q, r) - b(r)``. With the bias
appended to every gallery vector, ``r' = [r, b(r)]``, and ``-1`` appended to every query,
``q' = [q, -1]``, the inner product is exactly the corrected score::

    q' . r' = q . r - b(r)

so any inner-product FAISS index over the ``d + 1``-dimensional vectors serves NNN with
no dehub code at query time. :func:`export_faiss` builds such an index (flat, IVF or
HNSW), stores the external ids in it (``IndexIDMap``/``add_with_ids``), writes it with
``faiss.write_index`` and writes a JSON sidecar ``<path>.json`` with the method, its
parameters, the ids, ``d`` and how to form queries. Both files are written atomically
(temporary file + ``os.replace``); the sidecar records the SHA-256 of the index file.

Pitfalls (see ``docs/scale.md``):

* use ``METRIC_INNER_PRODUCT`` and never normalize the ``d + 1`` vectors (no cosine
  index, no ``faiss.normalize_L2``, no ``IndexFlatL2`` on normalized data): the norm of
  ``r'`` includes the bias, normalizing would rescale ``q . r`` by a per-item factor;
* product quantization groups the bias coordinate with other dimensions whose scale is
  different: its error then grows with the bias range; prefer flat or per-dimension
  scalar quantization (``SQ8`` trains a range per dimension) and check recall;
* HNSW with inner product is not a metric space; the bias makes norms vary, which can
  lower recall. Raise ``efSearch``, and check recall against the flat export.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Literal

import numpy as np

from ._io import atomic_path, atomic_write_text, sha256_file
from .engine import import_faiss

__all__ = ["export_faiss", "load_sidecar", "ExportType", "build_faiss_index"]

ExportType = Literal["flat", "ivf", "ivf-sq8", "hnsw"]
_SIDECAR_KIND = "dehub.faiss-export"
_SIDECAR_VERSION = 1


def build_faiss_index(
    vectors: np.ndarray,
    ids: np.ndarray | None = None,
    *,
    index_type: ExportType = "flat",
    nlist: int | None = None,
    nprobe: int = 16,
    M: int = 32,
    ef_construction: int = 80,
    ef_search: int = 128,
    seed: int = 0,
):
    """An inner-product FAISS index over ``vectors`` (any dimension) labelled with ``ids``.

    Used for the exported ``d + 1`` vectors and, in benchmarks, for the plain ``d``
    vectors, so both are built the same way.
    """
    faiss = import_faiss()
    x = np.ascontiguousarray(vectors, dtype=np.float32)
    n, dim = x.shape
    labels = np.arange(n, dtype=np.int64) if ids is None else np.ascontiguousarray(ids, dtype=np.int64)
    metric = faiss.METRIC_INNER_PRODUCT
    if index_type == "flat":
        index = faiss.IndexIDMap(faiss.IndexFlatIP(dim))
    elif index_type in ("ivf", "ivf-sq8"):
        nl = nlist or max(1, min(int(4 * np.sqrt(n)), n // 39 or 1))
        quantizer = faiss.IndexFlatIP(dim)
        if index_type == "ivf":
            index = faiss.IndexIVFFlat(quantizer, dim, nl, metric)
        else:
            index = faiss.IndexIVFScalarQuantizer(quantizer, dim, nl, faiss.ScalarQuantizer.QT_8bit, metric)
        rng = np.random.default_rng(seed)
        train = x[np.sort(rng.choice(n, size=min(n, 64 * nl), replace=False))]
        index.train(train)
        index.nprobe = min(nprobe, nl)
    elif index_type == "hnsw":
        inner = faiss.IndexHNSWFlat(dim, M, metric)
        inner.hnsw.efConstruction = ef_construction
        inner.hnsw.efSearch = ef_search
        index = faiss.IndexIDMap(inner)
    else:
        raise ValueError(
            f"index_type must be one of 'flat', 'ivf', 'ivf-sq8', 'hnsw'; received {index_type!r}"
        )
    index.add_with_ids(x, labels)
    return index


def export_faiss(
    source,
    path: str | os.PathLike,
    *,
    index_type: ExportType = "flat",
    ids=None,
    **index_params: Any,
) -> Path:
    """Write ``source``'s corrected gallery as a FAISS index file plus a JSON sidecar.

    Parameters
    ----------
    source : a fitted additive estimator (``dehub.NNN``) or a ``dehub.Index``
    path : the FAISS index file to write; the sidecar is ``<path>.json``
    index_type : {'flat', 'ivf', 'ivf-sq8', 'hnsw'}
        ``flat`` returns exactly dehub's corrected top-k; the others are approximate.
    ids : external ids (default: the Index's ids, else ``0..n-1``)
    index_params : ``nlist``, ``nprobe``, ``M``, ``ef_construction``, ``ef_search``
        (stored in the index where FAISS persists them: nprobe and efSearch are
        re-applied by the serving code from the sidecar).

    Queries are served as ``index.search(np.hstack([q, -np.ones((n, 1))]), k)``.
    """
    faiss = import_faiss()
    model = getattr(source, "model", source)
    if ids is None:
        ids = getattr(source, "ids", None)
    if not hasattr(model, "export_vectors"):
        raise TypeError(
            f"{type(model).__name__} is not an additive correction (no export_vectors); "
            "only methods whose score is q . r - b(r) can be served by a plain FAISS index"
        )
    vectors = model.export_vectors()
    n, d1 = vectors.shape
    ids = np.arange(n, dtype=np.int64) if ids is None else np.asarray(ids, dtype=np.int64)
    if ids.shape != (n,):
        raise ValueError(f"ids must have one id per gallery row, shape ({n},); received {ids.shape}")
    index = build_faiss_index(vectors, ids, index_type=index_type, **index_params)
    path = Path(path)
    with atomic_path(path) as tmp:
        faiss.write_index(index, tmp)
    from . import __version__

    search_params = {}
    if index_type in ("ivf", "ivf-sq8"):
        search_params["nprobe"] = int(faiss.extract_index_ivf(index).nprobe)
    if index_type == "hnsw":
        search_params["efSearch"] = int(index_params.get("ef_search", 128))
    sidecar = {
        "kind": _SIDECAR_KIND,
        "version": _SIDECAR_VERSION,
        "created_by": f"dehub {__version__}",
        "method": model.name,
        "params": {k: _plain(v) for k, v in model.get_params().items()},
        "index_file": path.name,
        "index_sha256": sha256_file(path),
        "index_type": index_type,
        "metric": "inner_product",
        "d": int(d1 - 1),
        "dim": int(d1),
        "n_items": int(n),
        "query_transform": "append -1: q' = [q_1, ..., q_d, -1] (float32, not re-normalized)",
        "item_transform": "r' = [r_1, ..., r_d, bias(r)]",
        "search_params": search_params,
        "ids": ids.tolist(),
    }
    text = json.dumps(sidecar, indent=1, sort_keys=True)
    atomic_write_text(Path(str(path) + ".json"), text)
    return path


def load_sidecar(path: str | os.PathLike, *, verify: bool = True) -> dict[str, Any]:
    """Read ``<path>.json`` and (``verify``) check it belongs to the index file at ``path``."""
    path = Path(path)
    side = json.loads(Path(str(path) + ".json").read_text(encoding="utf-8"))
    if side.get("kind") != _SIDECAR_KIND:
        raise ValueError(f"{path}.json is not a dehub FAISS export sidecar (kind={side.get('kind')!r})")
    if verify and sha256_file(path) != side["index_sha256"]:
        raise ValueError(
            f"{path} does not match its sidecar (SHA-256 differs): the index file was replaced "
            "or modified after export; export again"
        )
    return side


def _plain(v):
    if isinstance(v, np.generic):
        return v.item()
    if isinstance(v, dict):
        return {str(k): _plain(x) for k, x in v.items()}
    return v
