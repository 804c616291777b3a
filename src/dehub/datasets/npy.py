"""Embedding files: ``.npy`` arrays (checked before numpy reads them) and shard directories."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from .._errors import InputError
from .shards import ShardedArray

__all__ = ["read_npy", "load_embeddings"]

_NPY_MAGIC = b"\x93NUMPY"
_ZIP_MAGIC = b"PK\x03\x04"


def read_npy(path: str | Path, name: str, *, mmap: bool = True) -> np.ndarray:
    """A numeric ``.npy`` array, with one clear error for anything else.

    Text/CSV files, ``.npz`` archives and object (pickled) arrays are refused with a
    message naming the file and what it holds; the file is never unpickled.
    """
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"{name} file not found: {p}")
    if p.is_dir():
        raise IsADirectoryError(f"{name}: {p} is a directory; expected a .npy file")
    with open(p, "rb") as fh:
        head = fh.read(8)
    if head.startswith(_ZIP_MAGIC):
        raise InputError(
            f"{name} file {p} is an .npz archive; expected a single .npy array (save it with np.save)"
        )
    if not head.startswith(_NPY_MAGIC):
        kind = "an empty file" if not head else f"a file beginning with {head!r}"
        raise InputError(
            f"{name} file {p} is not a .npy array ({kind}); expected an array saved with "
            "numpy.save (text or CSV files are not read as arrays: convert with "
            "np.save(path, np.loadtxt(text_file)))"
        )
    try:
        arr = np.load(p, mmap_mode="r" if mmap else None, allow_pickle=False)
    except ValueError as exc:
        if "pickle" in str(exc) or "Python objects" in str(exc):
            raise InputError(
                f"{name} file {p} holds Python objects (an object-dtype array), not numbers; "
                "expected a numeric array (save it with np.save(path, arr.astype(np.float32)))"
            ) from None
        raise InputError(f"{name} file {p} is not a readable .npy array: {exc}") from None
    except (EOFError, OSError) as exc:
        raise InputError(f"{name} file {p} is truncated or unreadable: {exc}") from None
    return arr


def load_embeddings(path: str | Path, *, mmap: bool = True, name: str = "embeddings"):
    """A 2-D float ``.npy`` array (memory-mapped unless ``mmap=False``), or a shard directory.

    A directory of ``.npy`` shards (``img_emb_0.npy``, ``img_emb_1.npy``, ...) is read as
    one :class:`~dehub.datasets.ShardedArray` (rows in natural file-name order).
    """
    p = Path(path)
    arr: Any
    if p.is_dir():
        try:
            arr = ShardedArray(p)
        except (FileNotFoundError, ValueError) as exc:
            raise InputError(f"{name} directory {p}: {exc}") from None
    else:
        arr = read_npy(p, name, mmap=mmap)
    if arr.ndim != 2 or arr.dtype.kind != "f":
        raise InputError(
            f"{name} file {p} must hold a 2-D float array (n, d); received shape {arr.shape}, "
            f"dtype {arr.dtype}"
        )
    if arr.shape[0] == 0:
        raise InputError(f"{name} file {p} has no rows; expected at least one embedding")
    return arr
