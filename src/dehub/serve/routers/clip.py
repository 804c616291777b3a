"""clip-retrieval compatible endpoints, so its ``ClipClient`` can point at dehub unchanged.

The formats follow clip-retrieval 2.45.0 (``clip_retrieval/clip_back.py`` and
``clip_client.py``):

* ``POST /knn-service`` — body ``{"text" | "image" | "image_url" | "embedding_input",
  "modality", "num_images", "num_result_ids", "indice_name", "deduplicate",
  "use_safety_model", "use_violence_detector", "use_mclip", "aesthetic_score",
  "aesthetic_weight"}``; answer a JSON list ``[{"id", "similarity", <metadata>...}]``
  best first, ``num_result_ids`` entries (default ``num_images``), metadata (here
  ``caption`` = the item's text) on the first ``num_images``. The ranking is the
  *corrected* one: that is the point of pointing a client here.
* ``GET /indices-list`` — ``["<index name>"]``.
* ``POST /metadata`` — ``{"ids": [...], "indice_name"}`` -> ``[{"id", "metadata": {...}}]``.

Differences, by necessity: dehub has no image encoder (``image``/``image_url`` may only
be null: the client sends them so), no safety or violence models (those flags are
accepted and ignored), no aesthetic embeddings (ignored) and no deduplication (ignored).
One index serves both modalities. The answers are built by :func:`knn_entries` and
:func:`metadata_of` (one place to add stored item metadata).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from fastapi import APIRouter

from ..errors import ApiError, responses
from ..loading import Served
from ..models import KnnRequest, KnnResult, MetadataEntry, MetadataRequest
from ..responses import FastJSONResponse
from ..state import ContextDep, IndexDep
from ..validation import check_k
from .search import queries_of

__all__ = ["router", "knn_entries", "metadata_of"]

router = APIRouter(tags=["clip-retrieval"])


def _check_indice(served: Served, name: str | None) -> None:
    if name is not None and name != served.name:
        raise ApiError(404, "unknown indice_name", f"one of {[served.name]} (GET /indices-list)", repr(name))


def metadata_of(served: Served, rows: np.ndarray) -> list[dict[str, Any]]:
    """Each gallery row's stored metadata columns (``url``, ...) and ``caption`` (its text);
    ``{}`` for row -1. One metadata lookup for all the rows of a request."""
    rows = np.asarray(rows, dtype=np.int64)
    stored: list[dict[str, Any] | None] = [None] * rows.size
    if served.item_metadata is not None and rows.size:
        stored = served.item_metadata.rows(np.where(rows >= 0, served.ids[np.maximum(rows, 0)], -1))
    out = []
    for r, meta in zip(rows.tolist(), stored, strict=True):
        entry: dict[str, Any] = {}
        if r >= 0:
            entry.update({k: v for k, v in (meta or {}).items() if k != "text" and v is not None})
            if served.texts is not None:
                entry.setdefault("caption", served.texts[r])
        out.append(entry)
    return out


def knn_entries(served: Served, scores: np.ndarray, ids: np.ndarray, num_images: int) -> list[dict[str, Any]]:
    """clip-retrieval's answer for one query: id, similarity, metadata on the first ``num_images``."""
    keep = ids >= 0
    ids, scores = ids[keep], scores[keep]
    metas = metadata_of(served, served.rows_of(ids[:num_images]))
    out = []
    for rank, (i, s) in enumerate(zip(ids.tolist(), scores.tolist(), strict=True)):
        entry: dict[str, Any] = metas[rank] if rank < num_images else {}
        entry["id"] = i
        entry["similarity"] = s
        out.append(entry)
    return out


@router.post("/knn-service", response_model=list[KnnResult], responses=responses(404))
async def knn_service(req: KnnRequest, ctx: ContextDep, served: IndexDep) -> FastJSONResponse:
    """clip-retrieval's search: corrected top ``num_result_ids`` for one query."""
    _check_indice(served, req.indice_name)
    check_k(req.num_images, ctx.limits, "num_images")
    n_ids = check_k(
        req.num_images if req.num_result_ids is None else req.num_result_ids, ctx.limits, "num_result_ids"
    )
    if req.image is not None or req.image_url is not None:
        raise ApiError(
            422, "this dehub server has no image encoder", "embedding_input (the image's embedding) or text",
            "image" if req.image is not None else "image_url",
        )  # fmt: skip
    vectors = None if req.embedding_input is None else [req.embedding_input]
    texts = None if req.text is None else [req.text]
    queries = await queries_of(ctx, served, vectors, texts, ("embedding_input", "text"))
    (scores, ids), _ = await ctx.search(served, queries, n_ids, compare=False)
    return FastJSONResponse(knn_entries(served, scores[0], ids[0], req.num_images))


@router.get("/indices-list", response_model=list[str], responses=responses())
async def indices_list(served: IndexDep) -> list[str]:
    """The one index this server holds (its name is the ``indice_name`` to send)."""
    return [served.name]


@router.post("/metadata", response_model=list[MetadataEntry], responses=responses(404))
async def metadata(req: MetadataRequest, ctx: ContextDep, served: IndexDep) -> list[MetadataEntry]:
    """Stored metadata of the given ids (``url`` and the other metadata columns of the
    index, ``caption`` = the item's text, where stored)."""
    _check_indice(served, req.indice_name)
    if len(req.ids) > ctx.settings.max_k:
        raise ApiError(413, "too many ids", f"at most {ctx.settings.max_k}", f"{len(req.ids)} ids")
    rows = served.rows_of_ints(req.ids)
    return [
        MetadataEntry(id=i, metadata=meta) for i, meta in zip(req.ids, metadata_of(served, rows), strict=True)
    ]
