"""``dehub.load(path)``: open what ``dehub build`` wrote, an index file or a distributed run directory.

:class:`dehub.Index` reads and writes index *files*; a run directory of the distributed
runner (``manifest.json`` + statistic parts, :mod:`dehub.distributed`) is read by
:func:`dehub.rundir.load_index` (also :func:`dehub.distributed.load_index`). This module
sits above both (``docs/architecture.md``), so the index layer never imports the run
directory's reader, and ``import dehub`` never imports the runner; every command and API
that takes an index takes a run directory through here.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from ._errors import InputError
from .index import Index
from .rundir import is_manifest_dir, load_index, read_manifest

__all__ = ["load", "describe", "verify", "is_run_directory"]


def _checked(path: str | os.PathLike) -> Path:
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(
            f"index file not found: {p}; expected an index file written by 'dehub build' or the output "
            "directory of 'dehub build --runner ray'"
        )
    if p.is_dir() and not is_manifest_dir(p):
        raise InputError(
            f"{p} is a directory without manifest.json; expected an index file written by "
            "'dehub build' or the output directory of 'dehub build --runner ray'"
        )
    return p


def is_run_directory(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a distributed run's output directory (it holds ``manifest.json``)."""
    return is_manifest_dir(path)


def load(path: str | os.PathLike, *, mmap: bool = False, verify: bool = True) -> Index:
    """The :class:`~dehub.Index` saved at ``path``: an index file or a distributed run directory.

    Files: :meth:`Index.load` (``mmap``/``verify`` as there). Run directories:
    :func:`dehub.distributed.load_index` (always memory-mapped; ``verify`` checks every
    part's SHA-256).
    """
    p = _checked(path)
    if p.is_dir():
        return load_index(p, verify=verify)
    return Index.load(p, mmap=mmap, verify=verify)


def describe(path: str | os.PathLike) -> dict[str, Any]:
    """What ``path`` holds without loading it: a file's header, or a run directory's manifest."""
    p = _checked(path)
    if p.is_dir():
        return {"kind": "dehub.distributed-run", **read_manifest(p)}
    return Index.describe_file(p)


def verify(path: str | os.PathLike) -> dict[str, Any]:
    """Verify every checksum and the content; returns ``method``, ``n_items``, ``dim`` and more."""
    p = _checked(path)
    if p.is_dir():
        index = load_index(p, verify=True)
        return {
            "path": str(p),
            "method": index.model.name,
            "n_items": index.n_items,
            "dim": index.dim,
            "ok": True,
        }
    return Index.verify_file(p)
