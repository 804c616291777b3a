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
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy  # noqa: F401 (its BLAS must be loaded before the controller looks)

__all__ = ["single_threaded_blas", "blas_controllable", "blas_limited_now"]


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


class _SingleThreadCount:
    """How many searches are inside :func:`single_threaded_blas` (process-wide)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.inside = 0
        self.saved: list[int] = []

    def enter(self, ctl: Any) -> None:
        with self.lock:
            if self.inside == 0:
                self.saved = [lib.num_threads for lib in ctl.lib_controllers]
                for lib in ctl.lib_controllers:
                    lib.set_num_threads(1)
            self.inside += 1

    def leave(self, ctl: Any) -> None:
        with self.lock:
            self.inside -= 1
            if self.inside == 0:
                for lib, n in zip(ctl.lib_controllers, self.saved, strict=True):
                    lib.set_num_threads(n)


_COUNT = _SingleThreadCount()


@contextmanager
def single_threaded_blas() -> Iterator[bool]:
    """BLAS runs one thread per call inside; yields whether that could be arranged."""
    ctl = _controller()
    if ctl is None:
        yield False
        return
    _COUNT.enter(ctl)
    try:
        yield True
    finally:
        _COUNT.leave(ctl)
