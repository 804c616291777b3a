"""``/health``, ``/info``, ``/metrics`` and ``POST /admin/reload``."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends
from fastapi.responses import JSONResponse, Response

from ...engine.tuning import auto_choices, tuning_report
from ..errors import ApiError, responses
from ..loading import KOCC_K, IndexChanged, Served
from ..metrics import CONTENT_TYPE
from ..models import ErrorResponse, HealthResponse, InfoResponse, ReloadResponse
from ..state import ContextDep, IndexDep, index_unavailable, reload_index, require_token

__all__ = ["public", "router", "info_response"]

#: Endpoints without the bearer token (a load balancer's health check).
public = APIRouter(tags=["admin"])
#: Endpoints behind the token (when one is configured).
router = APIRouter(tags=["admin"], dependencies=[Depends(require_token)])


@public.get(
    "/health",
    response_model=HealthResponse,
    responses={503: {"model": ErrorResponse, "description": "the index file changed: reload it"}},
)
async def health(ctx: ContextDep) -> JSONResponse:
    """200 while the index is loaded and its file is as loaded; 503 (with the cause) once it changed."""
    served = ctx.state.served
    try:
        served.check_files()
    except IndexChanged as exc:
        ctx.metrics.available.set(0)
        return index_unavailable(exc).response()
    ctx.metrics.available.set(1)
    return JSONResponse({"status": "ok", "version": served.version})


def info_response(ctx: ContextDep, s: Served) -> InfoResponse:
    """What ``/info`` answers about the served index version."""
    kocc = None
    if s.kocc_plain is not None:
        kocc = {"k": KOCC_K, "queries": s.kocc_queries, "hub_threshold": s.hub_threshold()}
    return InfoResponse(
        name=s.name,
        method=s.method,
        params=s.params,
        offset=s.offset,
        n_items=s.n_items,
        dim=s.dim,
        version=s.version,
        backend=s.backend.name,
        hnsw=s.hnsw,
        source=s.source,
        loaded_at=s.loaded_at,
        text_encoder=s.text_encoder,
        text_encoder_runtime=ctx.encoder.backend if s.text_encoder is not None else None,
        has_texts=s.texts is not None,
        examples=len(s.examples.texts) if s.examples else 0,
        k_occurrence=kocc,
        limits={
            "max_batch": ctx.settings.max_batch,
            "max_k": ctx.settings.max_k,
            "max_body_bytes": ctx.settings.max_body_bytes,
            "max_text_chars": ctx.settings.max_text_chars,
        },
        batching=ctx.settings.batching,
        metadata=s.metadata,
        precision_auto=_precision_auto(s.dim, s.n_items),
    )


def _precision_auto(dim: int, n_items: int) -> dict[str, Any]:
    """``precision="auto"`` on this machine, its choices for searches of this index."""
    report = tuning_report()
    return {
        "candidates": report["auto_candidates"],
        "machine": report["machine"],
        "enabled": report["enabled"],
        "choices": auto_choices(report, d=dim, n_database=(n_items,)),
    }


@router.get("/info", response_model=InfoResponse, responses=responses())
async def info(ctx: ContextDep, served: IndexDep) -> InfoResponse:
    """Method, parameters, items, dimension, backend (HNSW: efSearch and recall) and version."""
    return info_response(ctx, served)


@router.get("/metrics", response_class=Response, responses=responses())
async def metrics(ctx: ContextDep) -> Response:
    """Prometheus text format: requests, latency, errors, batch sizes, index and HNSW gauges."""
    try:
        ctx.state.served.check_files()
        ctx.metrics.available.set(1)
    except IndexChanged:
        ctx.metrics.available.set(0)
    return Response(ctx.metrics.render(), media_type=CONTENT_TYPE)


@router.post("/admin/reload", response_model=ReloadResponse, responses=responses(403, 409))
async def reload(ctx: ContextDep) -> ReloadResponse:
    """Load the index file again (a new version) and swap it in atomically."""
    if ctx.settings.token is None:
        raise ApiError(
            403,
            "admin endpoints are disabled",
            "a server started with --token or DEHUB_TOKEN (or send it SIGHUP)",
            "no token configured",
        )
    old, new, seconds = await reload_index(ctx, "POST /admin/reload")
    return ReloadResponse(
        status="reloaded",
        version=new.version,
        previous_version=old.version,
        n_items=new.n_items,
        seconds=round(seconds, 4),
    )
