"""``POST /search``: corrected top-k for vectors or texts, with the plain ranking on request."""

from __future__ import annotations

from typing import Any

import numpy as np
from fastapi import APIRouter, Request

from ..errors import ERRORS, ApiError
from ..loading import Served
from ..models import SearchRequest, SearchResponse
from ..responses import FastJSONResponse, json_body, parse_body
from ..state import Context, ContextDep
from ..validation import check_k, check_texts, normalize_rows, query_array

__all__ = ["router", "queries_of", "ranking"]

router = APIRouter(tags=["search"])


async def queries_of(
    ctx: Context, served: Served, vectors: Any, texts: Any, what: tuple[str, str]
) -> np.ndarray:
    """The query rows of a request: its vectors, checked, or its texts, checked and embedded."""
    if (vectors is None) == (texts is None):
        raise ApiError(
            422,
            f"give exactly one of {what[0]!r} or {what[1]!r}",
            f"{what[0]}: [[float, ...], ...] or {what[1]}: [str, ...]",
            "both" if vectors is not None else "neither",
        )
    if vectors is not None:
        return query_array(vectors, served.dim, ctx.limits, ctx.settings.normalize, what[0])
    check_texts(texts, ctx.limits, served.text_encoder is not None, what[1])
    return normalize_rows(await ctx.encode(texts), ctx.settings.normalize, what[1])


def ranking(
    served: Served, scores: np.ndarray, ids: np.ndarray, details: bool, *, corrected: bool
) -> dict[str, Any]:
    """One ranking of the answer: ids and scores, with texts and N_k when ``details``."""
    keep = ids >= 0
    ids = ids[keep]
    out: dict[str, Any] = {"ids": ids.tolist(), "scores": scores[keep].tolist()}
    if details:
        rows = served.rows_of(ids).tolist()
        texts = served.texts
        out["texts"] = [texts[r] if texts is not None and r >= 0 else None for r in rows]
        meta = served.item_metadata
        if meta is not None and "url" in meta.columns:
            out["urls"] = [None if m is None else m.get("url") for m in meta.rows(ids)]
        kocc = served.kocc_corrected if corrected else served.kocc_plain
        out["k_occurrence"] = [int(kocc[r]) if kocc is not None and r >= 0 else None for r in rows]
        if corrected:
            kp = served.kocc_plain
            out["k_occurrence_plain"] = [int(kp[r]) if kp is not None and r >= 0 else None for r in rows]
    return out


@router.post(
    "/search", response_model=SearchResponse, responses=ERRORS, openapi_extra=json_body(SearchRequest)
)
async def search(request: Request, ctx: ContextDep) -> FastJSONResponse:
    """Corrected top-k for each query (vectors or text); ``compare`` adds the plain ranking.

    The hot route: the body (a :class:`SearchRequest`) is parsed once from bytes, the
    index version read once (its files are checked on the engine thread, once per
    engine call) and the answer encoded by pydantic-core.
    """
    req = parse_body(SearchRequest, await request.body())
    served = ctx.state.served
    check_k(req.k, ctx.limits)
    queries = await queries_of(ctx, served, req.vectors, req.text, ("vectors", "text"))
    (scores, ids), plain = await ctx.search(served, queries, req.k, compare=req.compare)
    results = []
    for qi in range(ids.shape[0]):
        entry = ranking(served, scores[qi], ids[qi], req.details, corrected=True)
        if plain is not None:
            entry["plain"] = ranking(served, plain[0][qi], plain[1][qi], req.details, corrected=False)
        results.append(entry)
    return FastJSONResponse({"results": results, "version": served.version})
