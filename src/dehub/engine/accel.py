"""The optional accelerator backend: a bf16 GEMM (torch), the CPU capability probe, ``precision``.

numpy has no bf16 GEMM, so the bf16 candidate pass of :mod:`dehub.engine.lowp` runs on
torch (CPU or CUDA), an optional extra (``pip install dehub[accel]``). The core stays
numpy-only: without torch, ``precision="bf16"`` prints one line and runs the fp32 engine.

``precision``:

``"fp32"``
    The exact fp32 engine (:func:`~dehub.engine.exact.exact_search`), the default.
``"bf16"``
    A bf16 candidate pass with a proven error bound, then an exact re-score of the
    candidates in the input precision (``docs/precision.md``): the fp32 engine's results.
``"auto"``
    ``"fp32"`` unless torch is installed and the CPU advertises native bf16 dot products
    (``amx_bf16`` or ``avx512_bf16`` in ``/proc/cpuinfo``); there, whichever of the two
    measured faster on a sample of the search's own data, once per machine and shape
    class (:func:`dehub.engine.lowp.auto_precision`, cached by
    :mod:`dehub.engine.tuning`); on a CUDA device, ``"bf16"``. See :func:`resolve_precision`.
"""

from __future__ import annotations

import sys
from functools import lru_cache
from typing import Any

from .._errors import InputError

__all__ = [
    "PRECISIONS",
    "import_torch",
    "cpu_bf16_flags",
    "native_bf16",
    "resolve_precision",
    "check_precision",
]

PRECISIONS: tuple[str, ...] = ("fp32", "bf16", "auto")
_NATIVE_FLAGS = ("amx_bf16", "avx512_bf16")


def check_precision(precision: object) -> str:
    """``precision`` if it is one of :data:`PRECISIONS`, else a ValueError naming them."""
    if not isinstance(precision, str) or precision not in PRECISIONS:
        raise InputError(f"precision must be one of {list(PRECISIONS)}; received {precision!r}")
    return precision


def import_torch() -> Any | None:
    """torch, or None when it is not installed (or fails to import)."""
    try:
        import torch
    except Exception:  # any import failure means "no backend"
        return None
    return torch


@lru_cache(maxsize=1)
def cpu_bf16_flags(path: str = "/proc/cpuinfo") -> tuple[str, ...]:
    """The native-bf16 CPU flags the kernel reports (``amx_bf16``, ``avx512_bf16``)."""
    try:
        with open(path, encoding="utf-8", errors="replace") as fh:
            for line in fh:
                if line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
                    return tuple(f for f in _NATIVE_FLAGS if f in flags)
    except OSError:
        return ()
    return ()


def native_bf16(device: str = "cpu") -> bool:
    """Whether ``device`` has native bf16 dot products (CUDA: always, for dehub's purposes)."""
    if str(device).startswith("cuda"):
        return True
    return bool(cpu_bf16_flags())


def resolve_precision(precision: str, device: str = "cpu", *, quiet: bool = False) -> str:
    """The precision used: ``"fp32"``, ``"bf16"``, or ``"auto"`` where a measurement decides.

    ``"bf16"`` without torch falls back to ``"fp32"`` with one line on stderr; ``"auto"``
    is ``"fp32"`` without torch or native bf16 (:func:`native_bf16`), ``"bf16"`` on a CUDA
    device, and stays ``"auto"`` on a CPU that has both: the search then times both on a
    sample of its data (:func:`dehub.engine.lowp.auto_precision`).
    """
    check_precision(precision)
    if precision == "fp32" or (precision == "auto" and not native_bf16(device)):
        return "fp32"  # "auto" on a CPU without native bf16 does not even import torch
    torch = import_torch()
    if torch is None:
        if precision == "bf16" and not quiet:
            print(
                "dehub: precision='bf16' needs torch (pip install dehub[accel]); using fp32",
                file=sys.stderr,
            )
        return "fp32"
    if precision == "auto" and not str(device).startswith("cuda"):
        return "auto"
    return "bf16"


def bf16_matmul(torch: Any, a: Any, b: Any, out: Any | None = None) -> Any:
    """``a @ b.T`` of two bf16 tensors (bf16 result, accumulated in fp32 by the backend)."""
    if out is None:
        return torch.mm(a, b.T)
    return torch.mm(a, b.T, out=out)
