"""The ``dehub serve`` application: corrected search over HTTP (FastAPI).

:func:`create_app` assembles one app from a :class:`Settings` (no global state: the
loaded index, the engine thread, the encoder and the metrics hang off the app's
:class:`~dehub.serve.state.Context`, reached by the routers through dependencies).
Routers, one per concern (:mod:`dehub.serve.routers`):

* ``POST /search`` — ``{"vectors": [[...]], "k": 10, "compare": false}`` or
  ``{"text": ["..."], "k": 10}`` -> ``{"results": [{"ids", "scores", ["plain"]}], "version"}``;
* clip-retrieval's ``POST /knn-service``, ``GET /indices-list``, ``POST /metadata``;
* ``GET /items/{id}``, ``GET /examples``, ``GET /examples/{index}``;
* ``GET /health``, ``GET /info``, ``GET /metrics``, ``POST /admin/reload`` (bearer token);
* ``GET /`` — the page that shows plain and corrected results side by side.

Every 4xx answer is ``{"error", "expected", "received"}``; bad input never gives a 5xx
and never fails another request (:mod:`dehub.serve.validation`, :mod:`dehub.serve.batching`).
"""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

from fastapi import Depends, FastAPI

from .._version import __version__
from .batching import Batcher
from .encoder import TextEncoder
from .errors import ApiError, install_error_handlers
from .loading import Served
from .metrics import Metrics
from .routers import admin, clip, items, page, search
from .schema import install_bounded_openapi
from .settings import Settings
from .state import Context, ServeState, load_from_settings, reload_index, require_token

__all__ = ["Settings", "create_app", "ApiError", "ServeState", "Context", "load_from_settings"]

_FORCE_JSON = frozenset({"/knn-service", "/metadata"})


class _Guard:
    """ASGI middleware: body size limit (413), body-read timeout (408) and request metrics."""

    def __init__(self, app: Any, ctx: Context) -> None:
        self.app = app
        self.ctx = ctx

    async def __call__(
        self,
        scope: dict[str, Any],
        receive: Callable[[], Awaitable[Any]],
        send: Callable[[Any], Awaitable[None]],
    ) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        t0 = time.perf_counter()
        status = [500]

        async def send_wrapper(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                status[0] = int(message["status"])
            await send(message)

        try:
            if scope.get("method") in ("POST", "PUT", "PATCH"):
                body = await self._read_body(scope, receive, send_wrapper)
                if body is None:
                    return
                headers = dict(scope.get("headers") or [])
                if scope.get("path") in _FORCE_JSON and b"json" not in headers.get(b"content-type", b""):
                    # clip-retrieval's client posts JSON without a Content-Type (Flask's
                    # get_json(force=True) reads it anyway): read it as JSON too.
                    raw = [(k, v) for k, v in scope.get("headers") or [] if k != b"content-type"]
                    scope = {**scope, "headers": [*raw, (b"content-type", b"application/json")]}
                replayed = False

                async def replay() -> dict[str, Any]:
                    nonlocal replayed
                    if not replayed:
                        replayed = True
                        return {"type": "http.request", "body": body, "more_body": False}
                    return await receive()

                await self.app(scope, replay, send_wrapper)
            else:
                await self.app(scope, receive, send_wrapper)
        finally:
            route = scope.get("route")
            name = getattr(route, "path", None) or "unmatched"
            self.ctx.metrics.observe_request(
                name, str(scope.get("method")), status[0], time.perf_counter() - t0
            )

    async def _read_body(
        self,
        scope: dict[str, Any],
        receive: Callable[[], Awaitable[Any]],
        send: Callable[[Any], Awaitable[None]],
    ) -> bytes | None:
        """The whole body within the size limit and the body-read timeout, or None (answered)."""
        settings = self.ctx.settings
        limit = settings.max_body_bytes
        headers = dict(scope.get("headers") or [])
        length = headers.get(b"content-length")
        if length is not None and (not length.isdigit() or int(length) > limit):
            await self._answer(
                send,
                ApiError(
                    413,
                    "request body too large",
                    f"at most {limit} bytes",
                    f"{length.decode('latin-1')} bytes",
                ),
            )
            return None
        deadline = time.monotonic() + settings.body_timeout_s
        chunks: list[bytes] = []
        size = 0
        more = True
        while more:
            try:
                message = await asyncio.wait_for(receive(), timeout=max(0.0, deadline - time.monotonic()))
            except TimeoutError:
                await self._answer(
                    send,
                    ApiError(
                        408,
                        "the request body was not received in time",
                        f"the whole body within {settings.body_timeout_s:g} s",
                        f"{size} bytes",
                        headers={"Connection": "close"},
                    ),
                )
                return None
            if message["type"] != "http.request":
                return None  # client went away
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                await self._answer(
                    send,
                    ApiError(
                        413, "request body too large", f"at most {limit} bytes", f"more than {limit} bytes"
                    ),
                )
                return None
            chunks.append(chunk)
            more = bool(message.get("more_body", False))
        return b"".join(chunks)

    @staticmethod
    async def _answer(send: Callable[[Any], Awaitable[None]], err: ApiError) -> None:
        resp = err.response()
        await send({"type": "http.response.start", "status": err.status, "headers": resp.raw_headers})
        await send({"type": "http.response.body", "body": resp.body})


def _lifespan(ctx: Context) -> Callable[[FastAPI], Any]:
    settings = ctx.settings

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        loop = asyncio.get_running_loop()
        tasks: list[asyncio.Task[Any]] = []

        async def quiet_reload(reason: str) -> None:
            try:
                await reload_index(ctx, reason)
            except ApiError as exc:
                print(f"dehub serve: {exc.error}: {exc.received}", flush=True)

        if settings.handle_sighup and hasattr(signal, "SIGHUP"):
            loop.add_signal_handler(
                signal.SIGHUP, lambda: tasks.append(loop.create_task(quiet_reload("SIGHUP")))
            )
        if settings.watch_seconds > 0 and settings.source is not None:

            async def watch() -> None:
                while True:
                    await asyncio.sleep(settings.watch_seconds)
                    if ctx.state.file_changed():
                        await quiet_reload("file changed")

            tasks.append(loop.create_task(watch()))
        if settings.preload_encoder and ctx.state.served.text_encoder is not None:
            await loop.run_in_executor(None, ctx.encoder.warm_up)  # before the first request
        try:
            yield
        finally:
            for t in tasks:
                t.cancel()
            if settings.handle_sighup and hasattr(signal, "SIGHUP"):
                loop.remove_signal_handler(signal.SIGHUP)
            ctx.batcher.close()
            ctx.encoder.close()

    return lifespan


def create_app(settings: Settings | None = None, served: Served | None = None) -> FastAPI:
    """A FastAPI app serving ``settings.source`` (or ``served``, already loaded)."""
    settings = settings or Settings()
    served = served if served is not None else load_from_settings(settings)
    metrics = Metrics()
    metrics.show_index(served.version, served.n_items, served.hnsw)
    state = ServeState(settings, served)
    ctx = Context(
        settings=settings,
        state=state,
        batcher=Batcher(
            enabled=settings.batching,
            max_rows=max(settings.max_batch, 256),
            on_batch=metrics.observe_batch,
        ),
        encoder=TextEncoder(settings.onnx_encoder, kind=settings.encoder),
        metrics=metrics,
    )
    app = FastAPI(
        title="dehub serve",
        version=_version(),
        description="Hubness-corrected retrieval (Nearest Neighbor Normalization and family).",
        lifespan=_lifespan(ctx),
    )
    app.state.ctx = ctx
    if settings.cors_origins:
        from fastapi.middleware.cors import CORSMiddleware

        app.add_middleware(
            CORSMiddleware,
            allow_origins=list(settings.cors_origins),
            allow_methods=["GET", "POST"],
            allow_headers=["Authorization", "Content-Type"],
        )
    app.add_middleware(_Guard, ctx=ctx)
    install_error_handlers(app)
    protected = [Depends(require_token)]
    app.include_router(search.router, dependencies=protected)
    app.include_router(clip.router, dependencies=protected)
    app.include_router(items.router, dependencies=protected)
    app.include_router(admin.public)
    app.include_router(admin.router)
    app.include_router(page.router)
    install_bounded_openapi(app)
    return app


def _version() -> str:
    return __version__
