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

import copy
import functools
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
    "parse_shape_class",
    "auto_choices",
    "describe_auto",
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


@functools.lru_cache(maxsize=4)
def _load_version(path: str, stamp: tuple[int, int, int]) -> dict[str, Any]:
    """The parsed file as it was at ``stamp`` (inode, size, mtime in ns): read once per
    process and version of the file (an atomic rewrite, :func:`reset_tuning` or another
    process's measurement, makes a new version). Callers must not change it."""
    return _load(Path(path))


def _current() -> dict[str, Any]:
    """The cache file's content, re-read only when the file changed (one ``stat`` a call)."""
    path = tuning_path()
    try:
        st = path.stat()
    except OSError:
        return {"version": _VERSION, "machines": {}}
    return _load_version(str(path), (st.st_ino, st.st_size, st.st_mtime_ns))


def cached_choice(shape: str) -> dict[str, Any] | None:
    """The stored measurement of ``shape`` on this machine (``{"choice": ..., ...}``), or
    None (never measured here, or tuning is off). The file is parsed once per process and
    version of it (:func:`_current`), not on every search."""
    if not tuning_enabled():
        return None
    entry = _current()["machines"].get(machine_key(), {}).get(shape)
    return copy.deepcopy(entry) if isinstance(entry, dict) and "choice" in entry else None


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
    entries = _current()["machines"].get(machine_key(), {}) if tuning_enabled() else {}
    return {
        "cache_file": str(tuning_path()),
        "enabled": tuning_enabled(),
        "machine": machine_key(),
        "torch": getattr(torch, "__version__", None),
        "bf16_flags": flags,
        "auto_candidates": ["fp32", "bf16"] if torch is not None and flags else ["fp32"],
        "choices": copy.deepcopy(dict(sorted(entries.items()))),
    }


def parse_shape_class(shape: str) -> dict[str, Any]:
    """The fields of a :func:`shape_class` string (``kind``, ``device``, ``dtype``, ``d``,
    ``k``, ``nq``, ``nd`` as ints, ``offset`` as a bool); ``{}`` for a string of another form."""
    parts = shape.split(":")
    if len(parts) != 8:
        return {}
    out: dict[str, Any] = {"kind": parts[0], "device": parts[1], "dtype": parts[2]}
    for part in parts[3:]:
        key, _, value = part.partition("=")
        if key == "offset":
            out[key] = value == "True"
        elif value.isdigit():
            out[key] = int(value)
        else:
            return {}
    return out


def auto_choices(
    report: dict[str, Any], *, d: int | None = None, n_database: tuple[int, ...] = ()
) -> dict[str, Any]:
    """The choices of a :func:`tuning_report` for searches of dimension ``d`` against
    databases of the sizes ``n_database`` (their size classes), each as ``{"choice",
    "bf16_over_fp32", "measured_at"}``; every choice when neither is given."""
    classes = {_pow(n, 4) for n in n_database}
    out: dict[str, Any] = {}
    for shape, entry in report.get("choices", {}).items():
        f = parse_shape_class(shape)
        if not f or f["kind"] != "precision":
            continue
        if (d is not None and f.get("d") != d) or (classes and f.get("nd") not in classes):
            continue
        out[shape] = {
            "choice": entry.get("choice"),
            "bf16_over_fp32": entry.get("bf16_over_fp32"),
            "measured_at": entry.get("measured_at"),
        }
    return out


def describe_auto(
    report: dict[str, Any], *, d: int | None = None, n_database: tuple[int, ...] = ()
) -> list[str]:
    """Lines that say what ``precision="auto"`` does on this machine: its candidates and
    why, then each measured choice for ``d`` / ``n_database`` (:func:`auto_choices`)."""
    cands = report.get("auto_candidates", ["fp32"])
    if cands == ["fp32"]:
        why = "torch is not installed" if report.get("torch") is None else "this CPU has no native bf16"
        return [f"precision auto = fp32 on this machine ({why})"]
    lines = [
        f"precision auto: fp32 or bf16, whichever measures faster on this machine (torch {report.get('torch')}, "
        f"{' '.join(report.get('bf16_flags', []))}; cache {report.get('cache_file')})"
    ]
    if not report.get("enabled", True):
        return [*lines, "  measured again in every search (DEHUB_TUNING=off)"]
    chosen = auto_choices(report, d=d, n_database=n_database)
    if not chosen:
        lines.append("  not measured yet for these shapes: the first large search measures (about a second)")
    for shape, entry in chosen.items():
        f = parse_shape_class(shape)
        ratio = entry.get("bf16_over_fp32")
        lines.append(
            f"  d={f['d']} k<={f['k']} queries<={f['nq']} database<={f['nd']}"
            f"{' offset' if f['offset'] else ''}: {entry.get('choice')}"
            + (f" (bf16 measured {ratio:.2f}x fp32)" if isinstance(ratio, (int, float)) else "")
        )
    return lines
