"""Export a corrected gallery to a Qdrant collection (local mode or a server).

The collection (named ``dehub`` unless ``name=`` says otherwise) holds one point per
gallery item: point id = the index's item id (a non-negative integer), one unnamed vector,
payload ``{"id": id, "bias": b(r), **metadata}``. The export description (form, ``M``,
``d``, ``dim``, method, parameters) is the collection's ``metadata``.

Two variants:

``variant="augmented"`` (default, exact through the ANN itself)
    the augmented vector (:mod:`dehub.export.vectors`): ``Dot`` for d+1; ``Cosine`` or
    ``Euclid`` for d+2 (Qdrant normalizes vectors of Cosine collections on upload, which
    destroys d+1 but leaves d+2's equal-norm items ranked by the corrected score).

``variant="rescore"`` (for users who cannot change their vectors)
    the plain vectors (``Dot``) with the bias in the payload; the query fetches
    ``candidates`` nearest neighbours by the plain score and re-ranks them with Qdrant's
    ``formula`` query ``$score - bias``. Hubs still take candidate slots, so this loses
    recall against the exact corrected top-k (measured in tests/export and
    benchmarks/bench_export.py).

``location``: an open ``QdrantClient``, ``":memory:"``, a local directory (local mode,
on disk) or an ``http(s)://`` URL; the same code talks to a real server. Local mode
searches exhaustively (it has no HNSW), a server builds HNSW with the collection's
``hnsw_config`` (``hnsw_ef`` is the documented query parameter).
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from .._errors import InputError
from .._extras import require
from .._json import JSONLimits, read_json
from ._common import (
    check_description,
    describe,
    export_ids,
    metadata_table,
    seal_description,
    source_metadata,
)
from .vectors import augment_items

__all__ = ["export_qdrant", "qdrant_client_for", "qdrant_description", "qdrant_distance", "QDRANT_DISTANCES"]

QDRANT_DISTANCES = {"d+1": ("dot",), "d+2": ("cosine", "euclid"), "plain": ("dot",)}


def _models():
    return require("qdrant_client.models", "exporting to Qdrant")


def qdrant_distance(metric: str):
    """Qdrant's ``Distance`` for dehub's metric name (``dot``, ``cosine``, ``euclid``)."""
    models = _models()
    return {"dot": models.Distance.DOT, "cosine": models.Distance.COSINE, "euclid": models.Distance.EUCLID}[
        metric
    ]


def qdrant_client_for(location):
    """An open ``QdrantClient`` for ``location`` (client, ``":memory:"``, path or URL)."""
    if hasattr(location, "upsert") and hasattr(location, "query_points"):
        return location
    from qdrant_client import QdrantClient

    loc = os.fspath(location)
    if loc == ":memory:":
        return QdrantClient(":memory:")
    if loc.startswith(("http://", "https://")):
        return QdrantClient(url=loc)
    meta = os.path.join(loc, "meta.json")
    if os.path.isfile(meta):  # bounded before qdrant-client parses it (no RecursionError)
        read_json(
            meta, limits=JSONLimits(max_bytes=256 << 20, max_depth=64, max_values=1 << 24), strict=False
        )
    return QdrantClient(path=loc)


def qdrant_description(client, name: str = "dehub") -> dict:
    meta = client.get_collection(name).config.metadata or {}
    if meta.get("kind") != "dehub.store-export":
        raise InputError(f"Qdrant collection {name!r} was not written by dehub.export (no dehub metadata)")
    return check_description(dict(meta), source=f"Qdrant collection {name!r}: dehub metadata")


def _payloads(ids: np.ndarray, bias: np.ndarray, meta, start: int, stop: int) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = [
        {"id": int(i), "bias": float(b)} for i, b in zip(ids[start:stop], bias[start:stop])
    ]
    if meta is not None:
        chunk = meta.slice(start, stop - start).to_pylist()
        for row, extra in zip(rows, chunk):
            row.update(extra)
    return rows


def upsert_points(client, name: str, ids, vectors, bias, meta=None, *, batch_size: int = 2048) -> None:
    """Upsert points ``ids`` with ``vectors`` and payloads ``{id, bias, **meta}`` in batches."""
    models = _models()
    ids = np.asarray(ids, dtype=np.int64)
    for start in range(0, ids.shape[0], batch_size):
        stop = min(start + batch_size, ids.shape[0])
        client.upsert(
            collection_name=name,
            points=models.Batch(
                ids=[int(i) for i in ids[start:stop]],
                vectors=np.asarray(vectors[start:stop], dtype=np.float32).tolist(),
                payloads=_payloads(ids, np.asarray(bias), meta, start, stop),
            ),
            wait=True,
        )


def export_qdrant(
    source,
    location,
    *,
    name: str = "dehub",
    form: str = "d+1",
    distance: str | None = None,
    variant: str = "augmented",
    ids=None,
    metadata=None,
    hnsw_m: int = 16,
    hnsw_ef_construct: int = 200,
    batch_size: int = 2048,
):
    """Write ``source``'s corrected gallery as Qdrant collection ``name``; returns the client.

    ``form`` 'd+1' (distance 'dot') or 'd+2' ('cosine' default, or 'euclid');
    ``variant='rescore'`` stores the plain vectors (Dot) and the bias for a ``formula``
    re-ranking query. An existing collection of that name is replaced.
    """
    models = _models()
    if variant not in ("augmented", "rescore"):
        raise InputError(f"variant must be 'augmented' or 'rescore'; received {variant!r}")
    key = "plain" if variant == "rescore" else form
    if key not in QDRANT_DISTANCES:
        raise InputError(f"form must be 'd+1' or 'd+2'; received {form!r}")
    distance = (distance or QDRANT_DISTANCES[key][0]).lower()
    if distance not in QDRANT_DISTANCES[key]:
        raise InputError(
            f"{'the rescore variant' if variant == 'rescore' else 'form ' + repr(form)} is served by distance {QDRANT_DISTANCES[key]}; received {distance!r}"
        )
    model = getattr(source, "model", source)
    items = augment_items(model, "d+1" if variant == "rescore" else form)
    n = items.vectors.shape[0]
    vectors = items.vectors[:, : items.d] if variant == "rescore" else items.vectors
    dim = vectors.shape[1]
    item_ids = export_ids(source, ids, n)
    meta = metadata_table(source_metadata(source, metadata), n)
    client = qdrant_client_for(location)
    dist = qdrant_distance(distance)
    description = describe(
        source,
        items,
        metric=distance,
        dim=dim,
        extra={
            "variant": variant,
            "n_items": int(n),
            "search_params": {"hnsw_ef": 256}
            if variant == "augmented"
            else {"candidates": 100, "hnsw_ef": 256},
        },
    )
    if variant == "rescore":
        description["form"] = "plain"
        description["M"] = None
        description["query_transform"] = (
            "q unchanged; prefetch candidates by Dot, re-rank with formula $score - bias"
        )
    if client.collection_exists(name):
        try:
            qdrant_description(client, name)
        except ValueError:
            raise InputError(
                f"Qdrant collection {name!r} exists and was not written by dehub.export; "
                "choose another name (--name) or delete it first"
            ) from None
        client.delete_collection(name)
    client.create_collection(
        collection_name=name,
        vectors_config=models.VectorParams(size=dim, distance=dist),
        hnsw_config=models.HnswConfigDiff(m=hnsw_m, ef_construct=hnsw_ef_construct),
        metadata=seal_description(description),
    )
    upsert_points(client, name, item_ids, vectors, items.bias, meta, batch_size=batch_size)
    return client
