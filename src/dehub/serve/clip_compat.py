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

Differences, by necessity: dehub has no image encoder (``image``/``image_url`` answer
422 naming ``embedding_input``), no safety or violence models (those flags are accepted
and ignored), no aesthetic embeddings (ignored) and no deduplication (ignored). One
index serves both modalities.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
from fastapi import FastAPI
from fastapi.responses import JSONResponse

from .models import ErrorResponse, KnnRequest, KnnResult, MetadataEntry, MetadataRequest

if TYPE_CHECKING:
    from .app import Context
    from .loading import Served

__all__ = ["add_clip_routes"]

_ERR: dict[int | str, dict[str, Any]] = {s: {"model": ErrorResponse} for s in (400, 401, 404, 413, 422)}


def _check_indice(served: Served, name: str | None) -> None:
    from .app import ApiError

    if name is not None and name != served.name:
        raise ApiError(404, "unknown indice_name", f"one of {[served.name]} (GET /indices-list)", repr(name))


def _metadata(served: Served, row: int) -> dict[str, Any]:
    """The item's stored metadata columns (``url``, ...) and ``caption`` (its text)."""
    if row < 0:
        return {}
    out: dict[str, Any] = {}
    if served.item_metadata is not None:
        stored = served.item_metadata.rows([int(served.ids[row])])[0] or {}
        out.update({k: v for k, v in stored.items() if k != "text" and v is not None})
    if served.texts is not None:
        out.setdefault("caption", served.texts[row])
    return out


def add_clip_routes(app: FastAPI, ctx: Context, dependencies: list[Any]) -> None:
    from .app import ApiError

    @app.post("/knn-service", response_model=list[KnnResult], responses=_ERR, dependencies=dependencies)
    async def knn_service(req: KnnRequest) -> JSONResponse:
        """clip-retrieval's search: corrected top ``num_result_ids`` for one query."""
        served = ctx.state.served
        _check_indice(served, req.indice_name)
        ctx.check_k(req.num_images, "num_images")
        n_ids = req.num_images if req.num_result_ids is None else req.num_result_ids
        ctx.check_k(n_ids, "num_result_ids")
        given = [f for f in ("text", "image", "image_url", "embedding_input") if getattr(req, f) is not None]
        if len(given) != 1:
            raise ApiError(
                422,
                "give exactly one query: text or embedding_input",
                "one of text, embedding_input (image and image_url need an image encoder dehub does not have)",
                ", ".join(given) or "none",
            )
        if req.image is not None or req.image_url is not None:
            raise ApiError(
                422,
                "this dehub server has no image encoder",
                "embedding_input (the image's embedding) or text",
                given[0],
            )
        if req.embedding_input is not None:
            queries = ctx.vectors_array([req.embedding_input], served, "embedding_input")
        else:
            queries = await ctx.text_array([req.text or ""], served, "text")
        (scores, ids), _ = await ctx.search(served, queries, n_ids, compare=False)
        keep = ids[0] >= 0
        ids0, scores0 = ids[0][keep], scores[0][keep]
        rows = served.rows_of(ids0)
        out = []
        for rank, (i, s, r) in enumerate(zip(ids0.tolist(), scores0.tolist(), rows.tolist())):
            entry: dict[str, Any] = _metadata(served, r) if rank < req.num_images else {}
            entry["id"] = i
            entry["similarity"] = s
            out.append(entry)
        return JSONResponse(out)

    @app.get("/indices-list", response_model=list[str], responses=_ERR, dependencies=dependencies)
    async def indices_list() -> list[str]:
        """The one index this server holds (its name is the ``indice_name`` to send)."""
        return [ctx.state.served.name]

    @app.post("/metadata", response_model=list[MetadataEntry], responses=_ERR, dependencies=dependencies)
    async def metadata(req: MetadataRequest) -> list[MetadataEntry]:
        """Stored metadata of the given ids (``url`` and the other metadata columns of the
        index, ``caption`` = the item's text, where stored)."""
        served = ctx.state.served
        _check_indice(served, req.indice_name)
        if len(req.ids) > ctx.settings.max_k:
            raise ApiError(413, "too many ids", f"at most {ctx.settings.max_k}", f"{len(req.ids)} ids")
        lo, hi = -(2**63), 2**63 - 1
        safe = [i if lo <= i <= hi else -1 for i in req.ids]
        rows = served.rows_of(np.asarray(safe, dtype=np.int64)) if safe else np.zeros(0, np.int64)
        return [
            MetadataEntry(id=i, metadata=_metadata(served, int(r)) if lo <= i <= hi else {})
            for i, r in zip(req.ids, rows.tolist())
        ]
