"""One BLAS thread per engine worker, while the exact engine's workers run.

The blocked exact engine runs one worker thread per CPU, each doing its own GEMMs and the
selection passes of its own score tiles; BLAS must then run single-threaded inside each
worker, or the two thread pools fight over the cores. :func:`single_threaded_blas` sets
the BLAS libraries numpy loaded (found by ``threadpoolctl``) to one thread while at least
one search is inside it, and restores the previous setting when the last one leaves.

The BLAS thread count is a property of the process, so the count of searches inside is
kept in one lock-protected object: concurrent searches (``dehub serve`` answers requests
in threads) nest correctly, and the setting found before the first one is the one
restored after the last. Other threads' GEMMs run single-threaded meanwhile (slower,
never wrong). Without ``threadpoolctl``, or when it finds no BLAS, the context yields
``False`` and the engine keeps one worker with a multi-threaded BLAS.

OpenBLAS (0.3.31 measured) obeys ``openblas_set_num_threads`` only from the thread that
first called it: a later call from any other thread is ignored, so a search started from
a second thread used to run two engine workers on a two-thread BLAS (1.15x slower on a
quiet machine, 10-20x under load). Every change of the setting is therefore made by one
long-lived thread of this module (``dehub-blas``), whichever thread searches, and read
back: where it did not take (another thread of the process set BLAS threads first), the
context yields ``False`` and the engine runs one worker.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import Any, TypeVar

import numpy  # noqa: F401 (its BLAS must be loaded before the controller looks)

T = TypeVar("T")

__all__ = ["single_threaded_blas", "blas_controllable", "blas_limited_now", "blas_threads"]


@functools.cache
def _controller() -> Any:
    """threadpoolctl's controller over numpy's BLAS, or None (not installed / no BLAS)."""
    try:
        from threadpoolctl import ThreadpoolController
    except ImportError:
        return None
    blas = ThreadpoolController().select(user_api="blas")
    return blas if blas.lib_controllers else None


def blas_controllable() -> bool:
    """Whether the engine can run BLAS single-threaded inside its workers."""
    return _controller() is not None


def blas_limited_now() -> bool:
    """Whether some search of this process is inside :func:`single_threaded_blas` now (a
    search started from one of its workers, or concurrent with it, then adds no threads
    of its own: the cores are taken)."""
    return _COUNT.inside > 0


@functools.cache
def _owner() -> ThreadPoolExecutor:
    """The one thread that changes the BLAS thread count (OpenBLAS obeys only one thread)."""
    return ThreadPoolExecutor(max_workers=1, thread_name_prefix="dehub-blas")


def _on_owner(fn: Callable[[], T]) -> T:
    if threading.current_thread().name.startswith("dehub-blas"):
        return fn()
    return _owner().submit(fn).result()


def _set_all(ctl: Any, counts: list[int]) -> bool:
    """Set each library's thread count on the owner thread; whether all of them took it."""

    def apply() -> bool:
        for lib, n in zip(ctl.lib_controllers, counts, strict=True):
            lib.set_num_threads(n)
        return all(lib.get_num_threads() == n for lib, n in zip(ctl.lib_controllers, counts, strict=True))

    return _on_owner(apply)


def blas_threads() -> list[int]:
    """The thread count of each BLAS library numpy loaded now (empty without threadpoolctl)."""
    ctl = _controller()
    return [] if ctl is None else [int(lib.get_num_threads()) for lib in ctl.lib_controllers]


class _SingleThreadCount:
    """How many searches are inside :func:`single_threaded_blas` (process-wide)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.inside = 0
        self.applied = False
        self.saved: list[int] = []

    def enter(self, ctl: Any) -> bool:
        with self.lock:
            if self.inside == 0:
                self.saved = [int(lib.get_num_threads()) for lib in ctl.lib_controllers]
                self.applied = _set_all(ctl, [1] * len(self.saved))
                if not self.applied:  # someone else owns the setting: leave it as it was
                    _set_all(ctl, self.saved)
            self.inside += 1
            return self.applied

    def leave(self, ctl: Any) -> None:
        with self.lock:
            self.inside -= 1
            if self.inside == 0 and self.applied:
                _set_all(ctl, self.saved)


_COUNT = _SingleThreadCount()


@contextmanager
def single_threaded_blas() -> Iterator[bool]:
    """BLAS runs one thread per call inside; yields whether that could be arranged."""
    ctl = _controller()
    if ctl is None:
        yield False
        return
    applied = _COUNT.enter(ctl)
    try:
        yield applied
    finally:
        _COUNT.leave(ctl)
