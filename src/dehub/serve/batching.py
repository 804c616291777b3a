"""One long-lived engine thread per app; concurrent requests merged into one engine call.

Every search of an app runs on the same thread (``dehub-engine``), so the engine's BLAS
setting (one BLAS thread per engine worker, applied by :mod:`dehub.engine._blas` from its
own thread) holds for every request whichever thread accepted it, and two requests never
run BLAS at once (several threads calling a multi-threaded OpenBLAS thrash it).

Merging: one scan of the gallery serves every query of a batch (a GEMM instead of many
GEMVs). The batcher never waits for a batch to fill: while the engine runs one call,
requests queue up, and the next call takes all of them (up to ``max_rows`` query rows).
Jobs are grouped by (backend, corrected): a request keeps the backend (index version)
it started with, so a hot swap never mixes versions inside a batch. ``k`` of a merged
call is the largest asked; each request gets the prefix it asked for.

File check: each request passes ``check`` (its index version's
:meth:`~dehub.serve.loading.Served.check_files`); it runs once per engine call, on the
engine thread just before the scan, for the version the batch was made of (not the
version served now: a reload between queueing and running must not skip the check of
the old version's files, nor blame them for the new one's).

Isolation: requests are validated completely before they are queued
(:mod:`dehub.serve.validation`), so a merged call should never fail. If one does, its
members are re-run one by one, so only a request that fails alone gets an error.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["Batcher"]

_log = logging.getLogger("dehub.serve")


@dataclass
class _Job:
    backend: Any
    queries: np.ndarray
    k: int
    corrected: bool
    future: asyncio.Future[tuple[np.ndarray, np.ndarray]]
    check: Callable[[], None] | None = None


class Batcher:
    """Runs backend searches on one engine thread, merging concurrent requests if enabled.

    A request's ``check`` (e.g. its index version's file check) runs on the engine thread
    before the engine call that serves it, once per call; what it raises is delivered to
    every request of that call (they share the backend, hence the version).
    """

    def __init__(
        self,
        *,
        enabled: bool = True,
        max_rows: int = 256,
        on_batch: Callable[[int], None] | None = None,
    ) -> None:
        self.enabled = enabled
        self.max_rows = max_rows
        self.on_batch = on_batch
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="dehub-engine")
        self._loop: asyncio.AbstractEventLoop | None = None
        self._queue: asyncio.Queue[_Job] | None = None
        self._task: asyncio.Task[None] | None = None

    def run(self, fn: Callable[..., Any], *args: Any) -> asyncio.Future[Any]:
        """Run ``fn(*args)`` on the engine thread (for work that must not race a search)."""
        return asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    async def search(
        self,
        backend: Any,
        queries: np.ndarray,
        k: int,
        corrected: bool,
        *,
        check: Callable[[], None] | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        loop = asyncio.get_running_loop()
        if not self.enabled:
            if self.on_batch:
                self.on_batch(queries.shape[0])
            return await loop.run_in_executor(
                self._executor, self._call, check, backend, queries, k, corrected
            )
        queue = self._queue
        if self._loop is not loop or queue is None or self._task is None or self._task.done():
            # first use in this event loop (the test client may run several loops)
            self._loop = loop
            self._queue = queue = asyncio.Queue()
            self._task = loop.create_task(self._worker(queue))
        fut: asyncio.Future[tuple[np.ndarray, np.ndarray]] = loop.create_future()
        queue.put_nowait(_Job(backend, queries, k, corrected, fut, check))
        return await fut

    @staticmethod
    def _call(
        check: Callable[[], None] | None, backend: Any, queries: np.ndarray, k: int, corrected: bool
    ) -> tuple[np.ndarray, np.ndarray]:
        if check is not None:
            check()
        return backend.search(queries, k, corrected=corrected)

    async def _worker(self, queue: asyncio.Queue[_Job]) -> None:
        loop = asyncio.get_running_loop()
        while True:
            jobs = [await queue.get()]
            rows = jobs[0].queries.shape[0]
            while rows < self.max_rows and not queue.empty():
                job = queue.get_nowait()
                jobs.append(job)
                rows += job.queries.shape[0]
            groups: dict[tuple[int, bool], list[_Job]] = {}
            for job in jobs:
                groups.setdefault((id(job.backend), job.corrected), []).append(job)
            for group in groups.values():
                try:
                    await self._run_group(loop, group)
                except Exception as exc:  # pragma: no cover - never leave a request waiting
                    for j in group:
                        if not j.future.done():
                            j.future.set_exception(exc)

    async def _run_group(self, loop: asyncio.AbstractEventLoop, group: list[_Job]) -> None:
        live = [j for j in group if not j.future.done()]  # skip requests already gone
        if not live:
            return
        queries = live[0].queries if len(live) == 1 else np.concatenate([j.queries for j in live], axis=0)
        k = max(j.k for j in live)
        if self.on_batch:
            self.on_batch(queries.shape[0])
        backend, corrected = live[0].backend, live[0].corrected
        try:
            scores, ids = await loop.run_in_executor(
                self._executor, self._call, live[0].check, backend, queries, k, corrected
            )
        except Exception as exc:
            if len(live) == 1 or getattr(exc, "whole_batch", False):
                for j in live:  # alone, or a failure of the index itself (all share it)
                    if not j.future.done():
                        j.future.set_exception(exc)
                return
            _log.warning(
                "a merged search of %d requests failed (%s); re-running them one by one", len(live), exc
            )
            for j in live:
                await self._run_group(loop, [j])
            return
        start = 0
        for j in live:
            n = j.queries.shape[0]
            if not j.future.done():
                j.future.set_result((scores[start : start + n, : j.k], ids[start : start + n, : j.k]))
            start += n

    def close(self) -> None:
        if self._task is not None and not self._task.done():
            self._task.cancel()
        self._executor.shutdown(wait=False, cancel_futures=True)
