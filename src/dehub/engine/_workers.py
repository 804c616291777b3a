"""Running many small GEMMs on every core: one BLAS thread per worker thread.

The IVF engine's work is many small GEMMs (one per probed list) plus the numpy passes on
their scores. OpenBLAS splits each small GEMM across its own threads, which costs more
than it gains when the GEMM is small and collapses when another process holds a core
(measured on the 2-core reference machine under load: 256 x 512 x 488 GEMMs at 10
GFLOP/s with 2 OpenBLAS threads, 99 with one, 127 with two worker threads of one BLAS
thread each). :func:`parallel_scope` therefore runs independent parts on worker threads with
BLAS limited to one thread (``threadpoolctl``, optional); without ``threadpoolctl`` the
parts run one after the other in the calling thread, with BLAS as configured (worker
threads calling a multi-threaded OpenBLAS at once thrash it).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TypeVar

from ._blas import blas_controllable, single_threaded_blas
from ._rows import row_blocks
from .hardware import selection_workers

__all__ = ["Workers", "SEQUENTIAL", "parallel_scope"]

SCORE_BLOCK_ROWS = 2048  # rows scored at a time against the centroids: the score block
# (2048 x nlist floats) stays in cache for the argmax (measured 0.068 s for 118k x 128 x 512
# in 2,048-row blocks vs 0.090 s in two halves)

T = TypeVar("T")
R = TypeVar("R")


@dataclass(frozen=True)
class Workers:
    """``n`` worker threads (``pool``), or the calling thread alone (``pool=None``, ``n=1``)."""

    pool: ThreadPoolExecutor | None = None
    n: int = 1

    def map(self, fn: Callable[[T], R], parts: Sequence[T]) -> list[R]:
        """``[fn(p) for p in parts]``, on the worker threads when there are some (order kept)."""
        if self.pool is None or len(parts) <= 1:
            return [fn(p) for p in parts]
        return list(self.pool.map(fn, parts))

    def split(self, n_rows: int, rows: int = SCORE_BLOCK_ROWS) -> list[slice]:
        """``0..n_rows`` cut into contiguous slices of at most ``rows`` rows, at least one
        per worker (fewer if rows are few)."""
        return list(row_blocks(n_rows, max(1, min(int(rows), -(-n_rows // self.n)))))


SEQUENTIAL = Workers()


@contextmanager
def parallel_scope(workers: int | None = None) -> Iterator[Workers]:
    """Worker threads with BLAS at one thread for the duration, or :data:`SEQUENTIAL` when
    there is one CPU or no controllable BLAS (``threadpoolctl`` missing). The BLAS limit is
    the process-wide, reference-counted one of :mod:`dehub.engine._blas` (the exact
    engine's too), so overlapping scopes of concurrent searches restore it correctly."""
    n = selection_workers() if workers is None else int(workers)
    if n <= 1 or not blas_controllable():
        yield SEQUENTIAL
        return
    with single_threaded_blas() as limited:
        if not limited:  # the BLAS setting could not be applied: one worker, BLAS as it is
            yield SEQUENTIAL
            return
        with ThreadPoolExecutor(n) as pool:
            yield Workers(pool, n)
