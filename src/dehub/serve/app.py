"""The ``dehub serve`` application: corrected search over HTTP (FastAPI).

:func:`create_app` builds one app from a :class:`Settings` (no global state: every
piece — the loaded index, the batcher, the encoder, the metrics — hangs off the app's
:class:`Context`). Endpoints:

* ``POST /search`` — ``{"vectors": [[...]], "k": 10, "compare": false}`` or
  ``{"text": ["..."], "k": 10}`` -> ``{"results": [{"ids", "scores", ["plain"]}], "version"}``;
* ``GET /health``, ``GET /info``, ``GET /items/{id}``, ``GET /metrics``, ``GET /examples``;
* ``POST /admin/reload`` (bearer token) — load the index file again, atomically;
* clip-retrieval's ``POST /knn-service``, ``GET /indices-list``, ``POST /metadata``
  (:mod:`dehub.serve.clip_compat`);
* ``GET /`` — the page that shows plain and corrected results side by side.

Every 4xx answer is ``{"error", "expected", "received"}``; bad input never gives a 5xx.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import signal
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from .backends import BackendName
from .batching import Batcher
from .loading import KOCC_K, Served, load_demo, load_served
from .metrics import Metrics
from .models import (
    ErrorResponse,
    ExampleList,
    ExampleQuery,
    HealthResponse,
    InfoResponse,
    ItemResponse,
    ReloadResponse,
    SearchRequest,
    SearchResponse,
)

__all__ = ["Settings", "create_app", "ApiError", "ServeState", "Context", "load_from_settings"]

_INT64 = (-(2**63), 2**63 - 1)


@dataclass(frozen=True)
class Settings:
    """Everything ``dehub serve`` can be told (the CLI fills it; tests build it directly).

    ``source=None`` serves the bundled WordNet demo. ``token`` (or the environment
    variable ``DEHUB_TOKEN``, read by the CLI) protects every endpoint except ``/``,
    ``/health`` and the OpenAPI schema, and enables ``/admin/reload``.
    """

    source: str | None = None
    backend: BackendName = "auto"
    faiss_threshold: int | None = None
    token: str | None = None
    cors_origins: tuple[str, ...] = ()
    max_batch: int = 256
    max_k: int = 1000
    max_body_bytes: int = 8 * 2**20
    max_text_chars: int = 2000
    batching: bool = True
    normalize: Literal["none", "l2"] = "none"
    texts_file: str | None = None
    text_encoder: str | None = None
    name: str | None = None
    demo_params: dict[str, Any] = field(default_factory=dict)
    watch_seconds: float = 0.0
    handle_sighup: bool = False
    preload_encoder: bool = False


class ApiError(Exception):
    """A 4xx answer ``{"error", "expected", "received"}``."""

    def __init__(
        self, status: int, error: str, expected: str, received: str, headers: dict[str, str] | None = None
    ):
        super().__init__(error)
        self.status = status
        self.error = error
        self.expected = expected
        self.received = received
        self.headers = headers

    def response(self) -> JSONResponse:
        body = {"error": self.error, "expected": self.expected, "received": self.received}
        return JSONResponse(body, status_code=self.status, headers=self.headers)


def load_from_settings(settings: Settings, version: int = 1) -> Served:
    """Load what ``settings`` names (the demo when ``source`` is None)."""
    if settings.source is None:
        return load_demo(version=version, **settings.demo_params)
    return load_served(
        settings.source,
        version=version,
        backend=settings.backend,
        faiss_threshold=settings.faiss_threshold,
        texts_file=settings.texts_file,
        text_encoder=settings.text_encoder,
        name=settings.name,
    )


def _file_stamp(source: str | None) -> tuple[int, int] | None:
    if source is None:
        return None
    try:
        st = Path(source).stat()
    except OSError:
        return None
    return (st.st_mtime_ns, st.st_size)


class ServeState:
    """The index version being served; :meth:`reload` swaps it in one assignment.

    A request reads ``state.served`` once and keeps that object, so requests in flight
    finish on the version they started with; the old version is freed when the last of
    them is done. A failed reload keeps the old version.
    """

    def __init__(self, settings: Settings, served: Served) -> None:
        self.settings = settings
        self.served = served
        self.stamp = _file_stamp(settings.source)
        self._lock = threading.Lock()

    def reload(self) -> tuple[Served, Served]:
        with self._lock:
            old = self.served
            stamp = _file_stamp(self.settings.source)
            new = load_from_settings(self.settings, version=old.version + 1)
            self.served = new
            self.stamp = stamp
            return old, new


class TextEncoder:
    """The bundled MiniLM (``dehub.datasets.encoder``), loaded lazily, once."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.loaded = False

    def encode(self, texts: list[str]) -> np.ndarray:
        from ..datasets.encoder import embed_texts

        with self._lock:  # one encoder call at a time (and one load)
            out = embed_texts(texts, progress=False, batch_size=64)
            self.loaded = True
            return out

    def warm_up(self) -> None:
        try:
            self.encode(["warm up"])
        except Exception:
            pass


@dataclass
class Context:
    """What the endpoints share (one per app)."""

    settings: Settings
    state: ServeState
    batcher: Batcher
    encoder: TextEncoder
    metrics: Metrics

    def info_limits(self) -> dict[str, int]:
        s = self.settings
        return {
            "max_batch": s.max_batch,
            "max_k": s.max_k,
            "max_body_bytes": s.max_body_bytes,
            "max_text_chars": s.max_text_chars,
        }

    # ------------------------------------------------------------------ checks
    def check_k(self, k: int, what: str = "k") -> None:
        if not 1 <= k <= self.settings.max_k:
            raise ApiError(
                422, f"{what} out of range", f"an integer {what} in 1..{self.settings.max_k}", str(k)
            )

    def vectors_array(self, rows: list[list[float]], served: Served, what: str = "vectors") -> np.ndarray:
        n = len(rows)
        if not 1 <= n <= self.settings.max_batch:
            raise ApiError(
                422 if n == 0 else 413,
                f"{what}: batch size out of range",
                f"1..{self.settings.max_batch} query rows",
                f"{n} rows",
            )
        for i, row in enumerate(rows):
            if len(row) != served.dim:
                raise ApiError(
                    422,
                    f"{what}[{i}] has the wrong dimension",
                    f"{served.dim} floats per row (the index's dimension)",
                    f"{len(row)} floats",
                )
        with np.errstate(over="ignore", invalid="ignore"):
            q = np.asarray(rows, dtype=np.float32)
        bad = ~np.isfinite(q)
        if bad.any():
            i, j = (int(x) for x in np.argwhere(bad)[0])
            raise ApiError(
                422,
                f"{what}[{i}][{j}] is not a finite float32",
                "finite numbers (no NaN, no inf)",
                repr(rows[i][j]),
            )
        return self.normalize(q, what)

    def normalize(self, q: np.ndarray, what: str) -> np.ndarray:
        if self.settings.normalize != "l2":
            return q
        norms = np.linalg.norm(q.astype(np.float64), axis=1)
        if (norms == 0).any():
            i = int(np.flatnonzero(norms == 0)[0])
            raise ApiError(
                422, f"{what}[{i}] is a zero vector", "non-zero rows (the server L2-normalizes)", "norm 0"
            )
        return (q / norms[:, None]).astype(np.float32)

    async def text_array(self, texts: list[str], served: Served, what: str = "text") -> np.ndarray:
        n = len(texts)
        if not 1 <= n <= self.settings.max_batch:
            raise ApiError(
                422 if n == 0 else 413,
                f"{what}: batch size out of range",
                f"1..{self.settings.max_batch} texts",
                f"{n} texts",
            )
        for i, t in enumerate(texts):
            if not t.strip() or len(t) > self.settings.max_text_chars:
                raise ApiError(
                    422,
                    f"{what}[{i}] is empty or too long",
                    f"a non-empty string of at most {self.settings.max_text_chars} characters",
                    f"{len(t)} characters",
                )
        if served.text_encoder is None:
            raise ApiError(
                400,
                "this index has no text encoder",
                "vectors; or an index built with the bundled MiniLM (metadata encoder="
                "'sentence-transformers/all-MiniLM-L6-v2') or served with --text-encoder minilm",
                "text",
            )
        loop = asyncio.get_running_loop()
        try:
            q = await loop.run_in_executor(None, self.encoder.encode, list(texts))
        except ImportError as exc:
            raise ApiError(
                501, "the text encoder is not installed on this server", "pip install dehub[embed]", str(exc)
            ) from None
        return self.normalize(q, what)

    async def search(
        self, served: Served, queries: np.ndarray, k: int, *, compare: bool
    ) -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray] | None]:
        self.metrics.count_queries("corrected", queries.shape[0])
        if not compare:
            return await self.batcher.search(served.backend, queries, k, True), None
        self.metrics.count_queries("plain", queries.shape[0])
        corrected, plain = await asyncio.gather(
            self.batcher.search(served.backend, queries, k, True),
            self.batcher.search(served.backend, queries, k, False),
        )
        return corrected, plain


# ---------------------------------------------------------------------- error handlers
def _short(value: Any, limit: int = 160) -> str:
    try:
        text = json.dumps(value)
    except (TypeError, ValueError):
        text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _validation_error(exc: RequestValidationError) -> JSONResponse:
    errors = exc.errors()
    if not errors:
        return ApiError(422, "invalid request", "a body matching the OpenAPI schema", "?").response()
    e = errors[0]
    loc = ".".join(str(p) for p in e.get("loc", ()) if p != "body") or "body"
    etype = str(e.get("type", ""))
    if etype == "json_invalid":
        err = ApiError(400, "the body is not valid JSON", "a JSON object", str(e.get("msg", "")))
    elif etype == "missing":
        err = ApiError(422, f"{loc}: field required", f"a value for {loc!r}", "nothing")
    elif etype == "extra_forbidden":
        err = ApiError(
            422, f"unknown field {loc!r}", "only the fields of the OpenAPI schema", _short(e.get("input"))
        )
    else:
        inp = e.get("input")
        err = ApiError(
            422,
            f"{loc}: {e.get('msg', 'invalid value')}",
            str(e.get("msg", "a value of the schema's type")).replace("Input should be ", ""),
            f"{type(inp).__name__} {_short(inp)}",
        )
    if len(errors) > 1:
        err.error += f" (and {len(errors) - 1} more problems)"
    return err.response()


_FORCE_JSON = frozenset({"/knn-service", "/metadata"})


class _Guard:
    """ASGI middleware: request-body size limit (413 before parsing) and metrics."""

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
            limit = self.ctx.settings.max_body_bytes
            if scope.get("method") in ("POST", "PUT", "PATCH"):
                headers = dict(scope.get("headers") or [])
                if scope.get("path") in _FORCE_JSON and b"json" not in headers.get(b"content-type", b""):
                    # clip-retrieval's client posts JSON without a Content-Type (Flask's
                    # get_json(force=True) reads it anyway): read it as JSON too.
                    raw = [(k, v) for k, v in scope.get("headers") or [] if k != b"content-type"]
                    scope = {**scope, "headers": [*raw, (b"content-type", b"application/json")]}
                length = headers.get(b"content-length")
                if length is not None and (not length.isdigit() or int(length) > limit):
                    await self._too_large(send_wrapper, length.decode("latin-1"))
                    return
                chunks: list[bytes] = []
                size = 0
                more = True
                while more:
                    message = await receive()
                    if message["type"] != "http.request":
                        return  # client went away
                    chunk = message.get("body", b"")
                    size += len(chunk)
                    if size > limit:
                        await self._too_large(send_wrapper, f"more than {limit}")
                        return
                    chunks.append(chunk)
                    more = bool(message.get("more_body", False))
                body = b"".join(chunks)
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

    async def _too_large(self, send: Callable[[Any], Awaitable[None]], received: str) -> None:
        limit = self.ctx.settings.max_body_bytes
        resp = ApiError(
            413, "request body too large", f"at most {limit} bytes", f"{received} bytes"
        ).response()
        await send({"type": "http.response.start", "status": 413, "headers": resp.raw_headers})
        await send({"type": "http.response.body", "body": resp.body})


# ---------------------------------------------------------------------- the app
_ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"model": ErrorResponse, "description": "bad request"},
    401: {"model": ErrorResponse, "description": "missing or wrong bearer token"},
    413: {"model": ErrorResponse, "description": "too many queries or too large a body"},
    422: {"model": ErrorResponse, "description": "invalid input"},
}


def create_app(settings: Settings | None = None, served: Served | None = None) -> FastAPI:
    """A FastAPI app serving ``settings.source`` (or ``served``, already loaded)."""
    settings = settings or Settings()
    served = served if served is not None else load_from_settings(settings)
    metrics = Metrics()
    metrics.index_version = served.version
    metrics.index_items = served.n_items
    ctx = Context(
        settings=settings,
        state=ServeState(settings, served),
        batcher=Batcher(
            enabled=settings.batching, max_rows=max(settings.max_batch, 256), on_batch=metrics.observe_batch
        ),
        encoder=TextEncoder(),
        metrics=metrics,
    )

    async def do_reload(reason: str) -> ReloadResponse:
        loop = asyncio.get_running_loop()
        t0 = time.perf_counter()
        try:
            old, new = await loop.run_in_executor(None, ctx.state.reload)
        except Exception as exc:
            metrics.count_reload("failed")
            cur = ctx.state.served
            raise ApiError(
                409,
                f"reload failed ({reason}); still serving version {cur.version}",
                f"a valid index at {settings.source or 'the bundled demo'}",
                f"{type(exc).__name__}: {exc}",
            ) from None
        metrics.count_reload("ok")
        metrics.index_version = new.version
        metrics.index_items = new.n_items
        return ReloadResponse(
            status="reloaded",
            version=new.version,
            previous_version=old.version,
            n_items=new.n_items,
            seconds=round(time.perf_counter() - t0, 4),
        )

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        loop = asyncio.get_running_loop()
        tasks: list[asyncio.Task[Any]] = []

        async def quiet_reload(reason: str) -> None:
            try:
                await do_reload(reason)
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
                    stamp = _file_stamp(settings.source)
                    if stamp is not None and stamp != ctx.state.stamp:
                        await quiet_reload("file changed")

            tasks.append(loop.create_task(watch()))
        if settings.preload_encoder and served.text_encoder is not None:
            loop.run_in_executor(None, ctx.encoder.warm_up)
        try:
            yield
        finally:
            for t in tasks:
                t.cancel()
            if settings.handle_sighup and hasattr(signal, "SIGHUP"):
                loop.remove_signal_handler(signal.SIGHUP)
            ctx.batcher.close()

    app = FastAPI(
        title="dehub serve",
        version=_version(),
        description="Hubness-corrected retrieval (Nearest Neighbor Normalization and family).",
        lifespan=lifespan,
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

    @app.exception_handler(ApiError)
    async def _api_error(_request: Request, exc: ApiError) -> JSONResponse:
        return exc.response()

    @app.exception_handler(RequestValidationError)
    async def _invalid(_request: Request, exc: RequestValidationError) -> JSONResponse:
        return _validation_error(exc)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        if exc.status_code == 404:
            err = ApiError(404, "not found", "a path of the OpenAPI schema (/openapi.json)", request.url.path)
        elif exc.status_code == 405:
            err = ApiError(405, "method not allowed", "the method of the OpenAPI schema", request.method)
        else:
            err = ApiError(exc.status_code, str(exc.detail), "see /openapi.json", request.url.path)
        err.headers = dict(exc.headers) if exc.headers else None
        return err.response()

    async def auth(request: Request) -> None:
        token = settings.token
        if token is None:
            return
        header = request.headers.get("authorization", "")
        scheme, _, given = header.partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), token.encode()):
            raise ApiError(
                401,
                "missing or wrong bearer token",
                "an 'Authorization: Bearer <token>' header",
                "no Authorization header" if not header else "a different token",
                headers={"WWW-Authenticate": "Bearer"},
            )

    ctx_auth = [Depends(auth)]

    @app.post("/search", response_model=SearchResponse, responses=_ERRORS, dependencies=ctx_auth)
    async def search(req: SearchRequest) -> Response:
        """Corrected top-k for each query (vectors or text); ``compare`` adds the plain ranking."""
        served = ctx.state.served  # this request's version, kept to the end
        ctx.check_k(req.k)
        if (req.vectors is None) == (req.text is None):
            raise ApiError(
                422,
                "give exactly one of 'vectors' or 'text'",
                "vectors: [[float, ...], ...] or text: [str, ...]",
                "both" if req.vectors is not None else "neither",
            )
        if req.vectors is not None:
            queries = ctx.vectors_array(req.vectors, served)
        else:
            queries = await ctx.text_array(req.text or [], served)
        (scores, ids), plain = await ctx.search(served, queries, req.k, compare=req.compare)
        results = []
        for qi in range(ids.shape[0]):
            entry = _ranking(served, scores[qi], ids[qi], req.details, corrected=True)
            if plain is not None:
                entry["plain"] = _ranking(served, plain[0][qi], plain[1][qi], req.details, corrected=False)
            results.append(entry)
        return JSONResponse({"results": results, "version": served.version})

    @app.get("/health", response_model=HealthResponse)
    async def health() -> HealthResponse:
        """200 when an index is loaded and searchable."""
        return HealthResponse(status="ok", version=ctx.state.served.version)

    @app.get("/info", response_model=InfoResponse, responses=_ERRORS, dependencies=ctx_auth)
    async def info() -> InfoResponse:
        """Method, parameters, items, dimension and version of the index being served."""
        s = ctx.state.served
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
            source=s.source,
            loaded_at=s.loaded_at,
            text_encoder=s.text_encoder,
            has_texts=s.texts is not None,
            examples=len(s.examples.texts) if s.examples else 0,
            k_occurrence=kocc,
            limits=ctx.info_limits(),
            batching=settings.batching,
            metadata=s.metadata,
        )

    @app.get(
        "/items/{item_id}",
        response_model=ItemResponse,
        responses={**_ERRORS, 404: {"model": ErrorResponse}},
        dependencies=ctx_auth,
    )
    async def item(item_id: int) -> ItemResponse:
        """Stored text, bias and k-occurrence of one item (by its id in the index)."""
        s = ctx.state.served
        row = _row_of(s, item_id)
        if row < 0:
            raise ApiError(
                404, "no item with this id", f"an id stored in the index ({s.n_items} items)", str(item_id)
            )
        kocc = None
        if s.kocc_plain is not None and s.kocc_corrected is not None:
            kocc = {"k": KOCC_K, "plain": int(s.kocc_plain[row]), "corrected": int(s.kocc_corrected[row])}
        return ItemResponse(
            id=item_id,
            row=row,
            text=s.texts[row] if s.texts is not None else None,
            bias=float(s.bias[row]) if s.bias is not None else None,
            k_occurrence=kocc,
            metadata=s.item_metadata.rows([item_id])[0] if s.item_metadata is not None else None,
        )

    @app.get("/examples", response_model=ExampleList, responses=_ERRORS, dependencies=ctx_auth)
    async def examples(offset: int = 0, limit: int = 100) -> ExampleList:
        """Benchmark queries shipped with the index (the demo's test definitions)."""
        s = ctx.state.served
        if not 0 <= offset <= 2**31 or not 1 <= limit <= 1000:
            raise ApiError(
                422,
                "offset or limit out of range",
                "offset >= 0 and limit in 1..1000",
                f"offset={offset}, limit={limit}",
            )
        ex = s.examples
        if ex is None:
            return ExampleList(total=0, examples=[])
        stop = min(offset + limit, len(ex.texts))
        out = [
            ExampleQuery(index=i, text=ex.texts[i], relevant=_ids_of(s, ex.relevant[i]))
            for i in range(offset, stop)
        ]
        return ExampleList(total=len(ex.texts), examples=out)

    @app.get(
        "/examples/{index}",
        response_model=ExampleQuery,
        responses={**_ERRORS, 404: {"model": ErrorResponse}},
        dependencies=ctx_auth,
    )
    async def example(index: int) -> ExampleQuery:
        """One benchmark query with its embedding (search it with POST /search)."""
        s = ctx.state.served
        n = len(s.examples.texts) if s.examples else 0
        if s.examples is None or not 0 <= index < n:
            raise ApiError(
                404,
                "no example query with this number",
                f"0..{n - 1}" if n else "none (no examples)",
                str(index),
            )
        ex = s.examples
        rel = ex.relevant[index]
        return ExampleQuery(
            index=index,
            text=ex.texts[index],
            relevant=_ids_of(s, rel),
            relevant_texts=[s.texts[r] for r in rel] if s.texts is not None else None,
            vector=ex.vectors[index].tolist(),
        )

    @app.post(
        "/admin/reload",
        response_model=ReloadResponse,
        responses={**_ERRORS, 403: {"model": ErrorResponse}, 409: {"model": ErrorResponse}},
        dependencies=ctx_auth,
    )
    async def reload() -> ReloadResponse:
        """Load the index file again (a new version) and swap it in atomically."""
        if settings.token is None:
            raise ApiError(
                403,
                "admin endpoints are disabled",
                "a server started with --token or DEHUB_TOKEN (or send it SIGHUP)",
                "no token configured",
            )
        return await do_reload("POST /admin/reload")

    @app.get("/metrics", response_class=PlainTextResponse, responses=_ERRORS, dependencies=ctx_auth)
    async def metrics_endpoint() -> PlainTextResponse:
        """Prometheus text format: requests, latency histogram, errors, batch sizes."""
        return PlainTextResponse(metrics.render(), media_type="text/plain; version=0.0.4")

    from .clip_compat import add_clip_routes
    from .page import add_page_route

    add_clip_routes(app, ctx, ctx_auth)
    add_page_route(app)
    return app


def _row_of(served: Served, item_id: int) -> int:
    if not _INT64[0] <= item_id <= _INT64[1]:
        return -1
    return int(served.rows_of(np.asarray([item_id]))[0])


def _ids_of(served: Served, rows: tuple[int, ...]) -> list[int]:
    return [int(served.ids[r]) for r in rows]


def _ranking(
    served: Served, scores: np.ndarray, ids: np.ndarray, details: bool, *, corrected: bool
) -> dict[str, Any]:
    keep = ids >= 0
    ids = ids[keep]
    out: dict[str, Any] = {"ids": ids.tolist(), "scores": scores[keep].tolist()}
    if details:
        rows = served.rows_of(ids)
        texts = served.texts
        out["texts"] = [texts[r] if texts is not None and r >= 0 else None for r in rows.tolist()]
        kocc = served.kocc_corrected if corrected else served.kocc_plain
        out["k_occurrence"] = [int(kocc[r]) if kocc is not None and r >= 0 else None for r in rows.tolist()]
        if corrected:
            kp = served.kocc_plain
            out["k_occurrence_plain"] = [
                int(kp[r]) if kp is not None and r >= 0 else None for r in rows.tolist()
            ]
    return out


def _version() -> str:
    from .. import __version__

    return __version__
