"""Block and tile sizes derived from the machine the engine runs on.

Cache sizes are read once per process from ``/sys/devices/system/cpu/cpu0/cache`` (Linux),
else from ``os.sysconf`` (``SC_LEVEL2_CACHE_SIZE``, ...), else a conservative fallback
(1 MiB L2, 16 MiB last level). Nothing is timed and nothing is written: the answers are
pure functions of the machine, memoized with :func:`functools.cache`.

The sizes that follow from them:

* :func:`score_tile_bytes` — bytes of one worker's GEMM output tile. The tile is written
  by the GEMM and then read by the selection passes (offset, threshold compare, nonzero),
  so it should still be close when they run: four times the core's L2, and at most the
  LLC over twice the number of workers (the other workers' tiles share it), within
  2..16 MiB. On the Xeon (2 MiB L2) the selection passes after the GEMM cost about 1.5 ns
  per score with 16 MiB tiles and 1.3 with 8 MiB (1.0 on a tile already in cache), and
  whole searches ran 3-7% faster with 8 MiB than with 16 MiB tiles.
* :func:`database_block_rows` — database rows per block: the block's tile should hold
  about 2048 query rows (a single-threaded GEMM of 512 inner dimensions ran at 138 GFLOP/s
  with 512 rows and 147-154 GFLOP/s with 1024 to 2048 rows on the Xeon), a multiple of
  512 (the floor's lanes) within 2048..16384.
* :func:`selection_workers` — worker threads of the exact engine (each runs its own
  single-threaded GEMMs and the selection of its own tiles); the CPUs this process may
  use.
"""

from __future__ import annotations

import functools
import os
import platform
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .accel import cpu_bf16_flags

__all__ = [
    "CacheSizes",
    "cache_sizes",
    "score_tile_bytes",
    "database_block_rows",
    "search_block_rows",
    "selection_workers",
    "cpu_model",
    "describe_machine",
]

_SYSFS = Path("/sys/devices/system/cpu/cpu0/cache")
_KIB, _MIB = 2**10, 2**20
_TILE_MIN, _TILE_MAX = 2 * _MIB, 16 * _MIB
_TARGET_TILE_ROWS = 2048
_BLOCK_MIN, _BLOCK_MAX, _BLOCK_MULTIPLE = 2048, 16384, 512


@dataclass(frozen=True)
class CacheSizes:
    """Data cache sizes in bytes: ``l1d`` and ``l2`` of one core, ``llc`` the last level
    (shared), and where they were read from (``"sysfs"``, ``"sysconf"``, ``"fallback"``)."""

    l1d: int
    l2: int
    llc: int
    source: str


_FALLBACK = CacheSizes(l1d=32 * _KIB, l2=1 * _MIB, llc=16 * _MIB, source="fallback")


def _parse_size(text: str) -> int:
    text = text.strip().upper()
    scale = {"K": _KIB, "M": _MIB, "G": 2**30}.get(text[-1:], 1)
    digits = text[:-1] if text[-1:] in "KMG" else text
    return int(digits) * scale


def _from_sysfs(root: Path = _SYSFS) -> CacheSizes | None:
    levels: dict[int, int] = {}
    try:
        for entry in sorted(root.glob("index*")):
            kind = (entry / "type").read_text().strip()
            if kind not in ("Data", "Unified"):
                continue
            level = int((entry / "level").read_text())
            levels[level] = _parse_size((entry / "size").read_text())
    except (OSError, ValueError):
        return None
    if 1 not in levels or 2 not in levels:
        return None
    return CacheSizes(l1d=levels[1], l2=levels[2], llc=levels[max(levels)], source="sysfs")


def _from_sysconf() -> CacheSizes | None:
    def get(name: str) -> int:
        try:
            return int(os.sysconf(name))
        except (ValueError, OSError, AttributeError):
            return 0

    l1, l2, l3 = get("SC_LEVEL1_DCACHE_SIZE"), get("SC_LEVEL2_CACHE_SIZE"), get("SC_LEVEL3_CACHE_SIZE")
    if l1 <= 0 or l2 <= 0:
        return None
    return CacheSizes(l1d=l1, l2=l2, llc=l3 if l3 > 0 else l2, source="sysconf")


@functools.cache
def cache_sizes() -> CacheSizes:
    """The machine's data cache sizes (read once per process)."""
    return _from_sysfs() or _from_sysconf() or _FALLBACK


def _tile_bytes(sizes: CacheSizes, workers: int = 1) -> int:
    share = min(sizes.llc // (2 * max(1, workers)), 4 * sizes.l2)
    return int(min(_TILE_MAX, max(_TILE_MIN, share)))


@functools.cache
def score_tile_bytes() -> int:
    """Bytes of one worker's GEMM score tile: four times the core's L2, at most the
    last-level cache over twice the number of workers, within 2..16 MiB."""
    return _tile_bytes(cache_sizes(), selection_workers())


def _block_rows(
    tile_bytes: int,
    itemsize: int,
    tile_rows: int = _TARGET_TILE_ROWS,
    lo: int = _BLOCK_MIN,
    hi: int = _BLOCK_MAX,
    multiple: int = _BLOCK_MULTIPLE,
) -> int:
    """Database rows per block such that a tile of ``tile_bytes`` holds ``tile_rows``
    query rows: rounded down to ``multiple``, within ``lo..hi``."""
    rows = tile_bytes // (itemsize * max(1, tile_rows))
    rows = (rows // multiple) * multiple
    return int(min(hi, max(lo, rows)))


@functools.cache
def database_block_rows() -> int:
    """Database rows per block (2048 for an 8 or 16 MiB tile). Counted in float32 scores for
    float64 inputs too, so both cut the database at the same rows."""
    return _block_rows(score_tile_bytes(), 4)


_SEARCH_TILE_ROWS = 4096  # query rows one score tile of a search should hold, at most
_SEARCH_BLOCK_MIN, _SEARCH_BLOCK_MULTIPLE = 512, 256


def search_block_rows(n_query_rows: int) -> int:
    """Database rows per block of one worker's search: a score tile holds its
    ``n_query_rows`` (up to 4096), 512 .. :func:`database_block_rows` rows, a multiple of
    256 (counted in float32 scores, like :func:`database_block_rows`). Each GEMM call
    packs its database block afresh, so fewer, taller tiles pack it less often: at 2,500
    query rows per worker x 118,000 x 512 (Xeon, one BLAS thread per worker), 2,500-row
    tiles against 768-1,536 columns took 1.035-1.05x the bare GEMM against 1.105x for
    1,024-row tiles of 2,048 columns."""
    rows = min(int(n_query_rows), _SEARCH_TILE_ROWS)
    return _block_rows(
        score_tile_bytes(), 4, rows, _SEARCH_BLOCK_MIN, database_block_rows(), _SEARCH_BLOCK_MULTIPLE
    )


@functools.cache
def selection_workers() -> int:
    """Threads for the selection passes: the CPUs this process may run on (at least 1)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


@functools.lru_cache(maxsize=8)
def cpu_model(path: str = "/proc/cpuinfo") -> str:
    """The CPU's model name as the kernel reports it (``platform.processor()`` otherwise)."""

    try:
        with open(path, encoding="utf-8", errors="replace") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def describe_machine() -> dict:
    """What every benchmark records with its figures: the CPU kind changes between machines.

    CPU model, CPU count, the cache sizes the engine derives its tiles from (and where they
    were read), native-bf16 flags, the load average at the time of the call, and the Python
    and numpy versions.
    """

    c = cache_sizes()
    return {
        "cpu_model": cpu_model(),
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        "l1d_bytes": c.l1d,
        "l2_bytes": c.l2,
        "llc_bytes": c.llc,
        "cache_source": c.source,
        "bf16_flags": list(cpu_bf16_flags()),
        "load_avg": list(os.getloadavg()),
        "python": platform.python_version(),
        "numpy": np.__version__,
    }
