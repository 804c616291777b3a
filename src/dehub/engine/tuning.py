"""Choices made by measurement on first use, cached per machine: ``precision="auto"``.

A choice is keyed by the machine (CPU model, native-bf16 flags, CPU count, numpy and
torch versions) and a *shape class* of the work (dimension, dtype, and ``k``, query and
database sizes rounded to powers of two/four). The first search of a class on a machine
times both candidates on a sample of its own data and stores the timings and the choice
in a small JSON file; later searches (this process or another) read it back, so the
choice is deterministic given the file.

The file: ``$DEHUB_CACHE_DIR/tuning.json`` when that variable is set, else
``$XDG_CACHE_HOME/dehub/tuning.json``, else ``~/.cache/dehub/tuning.json``
(:func:`tuning_path`). Reset it with :func:`reset_tuning` (``dehub.engine.tuning.reset_tuning()``)
or by deleting the file; ``DEHUB_TUNING=off`` measures again in every search and writes
nothing (for a machine whose load changes under the measurement, say).
:func:`tuning_report` says what was measured and chosen on this machine (for ``dehub
info``, reports and the service's ``/info``).
"""

from __future__ import annotations

import json
import math
import os
import platform
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from .accel import cpu_bf16_flags, import_torch
from .hardware import cpu_model

__all__ = [
    "tuning_path",
    "machine_key",
    "shape_class",
    "cached_choice",
    "record_choice",
    "reset_tuning",
    "tuning_report",
    "tuning_enabled",
]

_VERSION = 1


def tuning_path() -> Path:
    """Where the measured choices are kept (see the module docstring)."""
    base = os.environ.get("DEHUB_CACHE_DIR")
    if base:
        return Path(base) / "tuning.json"
    xdg = os.environ.get("XDG_CACHE_HOME")
    root = Path(xdg) if xdg else Path.home() / ".cache"
    return root / "dehub" / "tuning.json"


def tuning_enabled() -> bool:
    """False when ``DEHUB_TUNING=off``: measure in every search, keep nothing."""
    return os.environ.get("DEHUB_TUNING", "").strip().lower() not in ("off", "0", "false", "no")


def machine_key() -> str:
    """The machine a measurement holds for: CPU model, native-bf16 flags, CPU count, numpy
    and torch versions (a new torch or another CPU kind measures again)."""
    torch = import_torch()
    parts = [
        cpu_model(),
        platform.machine(),
        ",".join(cpu_bf16_flags()) or "no-bf16",
        f"cpus={os.cpu_count()}",
        f"numpy={np.__version__}",
        f"torch={getattr(torch, '__version__', None)}",
    ]
    return " | ".join(parts)


def _pow(n: int, base: int) -> int:
    return int(base ** max(0, math.ceil(math.log(max(1, n), base))))


def shape_class(
    kind: str, *, d: int, dtype: Any, k: int, n_queries: int, n_database: int, offset: bool, device: str
) -> str:
    """The class of work a measurement stands for: ``kind`` (e.g. ``"precision"``), the
    device, dtype and dimension as they are, ``k`` rounded up to a power of two, the
    query and database sizes to powers of four, and whether an offset is subtracted."""
    return (
        f"{kind}:{device}:{np.dtype(dtype).name}:d={int(d)}:k={_pow(k, 2)}:"
        f"nq={_pow(n_queries, 4)}:nd={_pow(n_database, 4)}:offset={bool(offset)}"
    )


def _load(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {"version": _VERSION, "machines": {}}
    if (
        not isinstance(data, dict)
        or data.get("version") != _VERSION
        or not isinstance(data.get("machines"), dict)
    ):
        return {"version": _VERSION, "machines": {}}
    return data


def _store(path: Path, data: dict[str, Any]) -> None:
    """Write atomically (a reader never sees half a file); a cache that cannot be written
    (read-only home) is not an error: the next search measures again."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tuning-", suffix=".json")
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(data, fh, indent=1, sort_keys=True)
        os.replace(tmp, path)
    except OSError:
        return


def cached_choice(shape: str) -> dict[str, Any] | None:
    """The stored measurement of ``shape`` on this machine (``{"choice": ..., ...}``), or
    None (never measured here, or tuning is off)."""
    if not tuning_enabled():
        return None
    entry = _load(tuning_path())["machines"].get(machine_key(), {}).get(shape)
    return entry if isinstance(entry, dict) and "choice" in entry else None


def record_choice(shape: str, choice: str, timings: dict[str, Any]) -> dict[str, Any]:
    """Store ``choice`` for ``shape`` on this machine with its ``timings`` (and the time and
    load average of the measurement); returns the entry."""
    entry = {
        "choice": choice,
        **timings,
        "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "load_avg": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
    }
    if tuning_enabled():
        path = tuning_path()
        data = _load(path)
        data["machines"].setdefault(machine_key(), {})[shape] = entry
        _store(path, data)
    return entry


def measured(shape: str, measure: Callable[[], tuple[str, dict[str, Any]]]) -> str:
    """The cached choice of ``shape``, else ``measure()`` -> ``(choice, timings)``, recorded."""
    entry = cached_choice(shape)
    if entry is not None:
        return str(entry["choice"])
    choice, timings = measure()
    record_choice(shape, choice, timings)
    return choice


def reset_tuning(*, all_machines: bool = False) -> int:
    """Forget this machine's measurements (every machine's with ``all_machines``); the next
    search of each class measures again. Returns the number of entries removed."""
    path = tuning_path()
    data = _load(path)
    if all_machines:
        n = sum(len(v) for v in data["machines"].values())
        data["machines"] = {}
    else:
        n = len(data["machines"].pop(machine_key(), {}))
    if path.exists():
        _store(path, data)
    return n


def tuning_report() -> dict[str, Any]:
    """What ``precision="auto"`` chose on this machine and why: the cache file, the machine
    key, whether torch and native bf16 are there, and each measured shape class with its
    timings (for ``dehub info``, the reports and ``/info``)."""
    torch = import_torch()
    flags = list(cpu_bf16_flags())
    entries = _load(tuning_path())["machines"].get(machine_key(), {}) if tuning_enabled() else {}
    return {
        "cache_file": str(tuning_path()),
        "enabled": tuning_enabled(),
        "machine": machine_key(),
        "torch": getattr(torch, "__version__", None),
        "bf16_flags": flags,
        "auto_candidates": ["fp32", "bf16"] if torch is not None and flags else ["fp32"],
        "choices": dict(sorted(entries.items())),
    }
