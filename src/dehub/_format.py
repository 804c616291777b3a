"""The dehub container format: a JSON header and raw little-endian arrays, no pickle.

Layout (all integers little-endian)::

    offset  size  field
    0       8     magic  b"DEHUBIX\\0"
    8       4     format version (uint32)
    12      8     header length H in bytes (uint64)
    20      32    SHA-256 of the header bytes
    52      H     header: UTF-8 JSON (see below)
    ...           zero padding to a multiple of 64
    ...           array data, each array C-contiguous, starting at a multiple of 64

The header holds ``{"format_version", "created_by", "kind", "arrays": [{"name", "dtype",
"shape", "offset", "nbytes", "sha256"}], ...}`` plus whatever the writer adds (method,
parameters, metadata). Offsets are absolute. Only plain numeric dtypes are allowed, so
loading never runs code. Arrays can be memory-mapped on load.

Writes are atomic: the file is written under a temporary name in the same directory,
flushed and fsynced, then renamed over the target (``os.replace``), so a crash at any
point leaves either the old file or the new one, never a mix.
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
from pathlib import Path
from typing import Any

import numpy as np

from ._io import atomic_path

__all__ = [
    "FORMAT_VERSION",
    "MAGIC",
    "IndexFormatError",
    "write_container",
    "read_container",
    "read_header",
]

MAGIC = b"DEHUBIX\x00"
FORMAT_VERSION = 1
_PREFIX = struct.Struct("<8sIQ32s")  # magic, version, header length, header sha256
_ALIGN = 64
_ALLOWED = {"<f2", "<f4", "<f8", "<i4", "<i8", "<u1", "|u1", "|b1", "<u4", "<u8"}


class IndexFormatError(ValueError):
    """An index file is not a dehub file, is of an unknown version, truncated or corrupt."""


def _align(n: int) -> int:
    return -(-n // _ALIGN) * _ALIGN


def _dtype_str(a: np.ndarray) -> str:
    dt = a.dtype.newbyteorder("<") if a.dtype.byteorder == ">" else a.dtype
    s = dt.str
    if s not in _ALLOWED:
        raise TypeError(
            f"cannot store dtype {a.dtype} in a dehub file; expected one of "
            "float16/32/64, int32/64, uint8/32/64, bool"
        )
    return s


def _sha256_chunks(arr: np.ndarray) -> str:
    h = hashlib.sha256()
    flat = arr.reshape(-1)
    step = max(1, (16 << 20) // max(arr.itemsize, 1))
    for s in range(0, flat.size, step):
        h.update(np.ascontiguousarray(flat[s : s + step]).view(np.uint8).tobytes())
    return h.hexdigest()


def write_container(path: str | os.PathLike, header: dict[str, Any], arrays: dict[str, np.ndarray]) -> None:
    """Write ``arrays`` and a JSON-serializable ``header`` to ``path`` atomically."""
    path = Path(path)
    metas = []
    prepared = []
    offset_data = 0
    for name, arr in arrays.items():
        arr = np.asarray(arr)
        dts = _dtype_str(arr)
        arr = arr.astype(np.dtype(dts), copy=False)
        metas.append(
            {
                "name": name,
                "dtype": dts,
                "shape": list(arr.shape),
                "offset": offset_data,  # relative for now
                "nbytes": int(arr.nbytes),
                "sha256": _sha256_chunks(arr),
            }
        )
        prepared.append(arr)
        offset_data = _align(offset_data + arr.nbytes)
    # The header length depends on the absolute offsets; iterate until stable.
    base = 0
    for _ in range(4):
        full = dict(header)
        full.update(
            {"format_version": FORMAT_VERSION, "arrays": [{**m, "offset": m["offset"] + base} for m in metas]}
        )
        hbytes = json.dumps(full, sort_keys=True, separators=(",", ":")).encode("utf-8")
        new_base = _align(_PREFIX.size + len(hbytes))
        if new_base == base:
            break
        base = new_base
    prefix = _PREFIX.pack(MAGIC, FORMAT_VERSION, len(hbytes), hashlib.sha256(hbytes).digest())

    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        f.write(prefix)
        f.write(hbytes)
        f.write(b"\0" * (base - _PREFIX.size - len(hbytes)))
        pos = base
        for meta, arr in zip(metas, prepared):
            start = base + meta["offset"]
            f.write(b"\0" * (start - pos))
            flat = arr.reshape(-1)
            step = max(1, (16 << 20) // max(arr.itemsize, 1))
            for s in range(0, flat.size, step):
                f.write(np.ascontiguousarray(flat[s : s + step]).tobytes())
            pos = start + arr.nbytes


def _check_header_schema(path: Path, header: Any, *, data_start: int) -> None:
    """The header's structure (it is checksummed, but may come from a foreign writer)."""

    def bad(what: str) -> IndexFormatError:
        return IndexFormatError(f"{path}: malformed header: {what}")

    if not isinstance(header, dict) or not isinstance(header.get("arrays"), list):
        raise bad("expected a JSON object with an 'arrays' list")
    keys = {"name", "dtype", "shape", "offset", "nbytes", "sha256"}
    for meta in header["arrays"]:
        if not isinstance(meta, dict) or not keys <= set(meta):
            raise bad(f"expected every array entry to have the keys {sorted(keys)}; received {meta!r}")
        name, shape, offset, nbytes = meta["name"], meta["shape"], meta["offset"], meta["nbytes"]
        if not isinstance(meta["dtype"], str) or meta["dtype"] not in _ALLOWED:
            raise bad(
                f"array {name!r} has unsupported dtype {meta['dtype']!r}; expected one of {sorted(_ALLOWED)}"
            )
        ints = [offset, nbytes, *shape] if isinstance(shape, list) else None
        if ints is None or not all(type(v) is int and v >= 0 for v in ints):
            raise bad(f"array {name!r} has invalid shape/offset/nbytes {shape!r}/{offset!r}/{nbytes!r}")
        if offset < data_start:
            raise bad(
                f"array {name!r} starts at byte {offset}, inside the header (which ends at {data_start})"
            )


def read_header(path: str | os.PathLike) -> dict[str, Any]:
    """Read and check the header only (magic, version, header checksum, file length)."""
    path = Path(path)
    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            raw = f.read(_PREFIX.size)
            if raw[: len(MAGIC)] != MAGIC[: len(raw)]:
                raise IndexFormatError(
                    f"{path}: not a dehub index file (expected magic {MAGIC!r}, found {raw[: len(MAGIC)]!r})"
                )
            if len(raw) < _PREFIX.size:
                raise IndexFormatError(
                    f"{path}: truncated: {size} bytes is shorter than the {_PREFIX.size}-byte dehub prefix"
                )
            magic, version, hlen, hsha = _PREFIX.unpack(raw)
            if version > FORMAT_VERSION or version < 1:
                raise IndexFormatError(
                    f"{path}: format version {version} is not supported; this dehub reads "
                    f"version {FORMAT_VERSION}. Upgrade dehub or rebuild the index."
                )
            if hlen > size - _PREFIX.size:  # checked before reading: hlen may be garbage
                raise IndexFormatError(
                    f"{path}: truncated: header needs {hlen} bytes after the prefix, file has "
                    f"{size - _PREFIX.size}"
                )
            hbytes = f.read(hlen)
    except FileNotFoundError:
        raise FileNotFoundError(f"no index file at {path}") from None
    if len(hbytes) < hlen:
        raise IndexFormatError(
            f"{path}: truncated: header needs {hlen} bytes after the prefix, file has {len(hbytes)}"
        )
    if hashlib.sha256(hbytes).digest() != hsha:
        raise IndexFormatError(f"{path}: header checksum mismatch: the file is corrupt")
    try:
        header = json.loads(hbytes.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:  # pragma: no cover - hash guards
        raise IndexFormatError(f"{path}: header is not valid JSON: {exc}") from None
    _check_header_schema(path, header, data_start=_PREFIX.size + hlen)
    need = max((a["offset"] + a["nbytes"] for a in header["arrays"]), default=0)
    if size < need:
        raise IndexFormatError(
            f"{path}: truncated: expected at least {need} bytes, found {size}. The file was "
            "cut short (interrupted copy?); restore it or rebuild the index."
        )
    return header


def read_container(
    path: str | os.PathLike, *, mmap: bool = False, verify: bool = True
) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """Read a container: ``(header, arrays)``; arrays are memory-mapped if ``mmap``.

    With ``verify`` (default) every array's SHA-256 is checked against the header.
    """
    header = read_header(path)
    arrays: dict[str, np.ndarray] = {}
    for meta in header["arrays"]:
        dt = np.dtype(meta["dtype"])  # one of _ALLOWED: checked by read_header
        shape = tuple(int(s) for s in meta["shape"])
        count = int(np.prod(shape)) if shape else 1
        if count * dt.itemsize != meta["nbytes"]:
            raise IndexFormatError(
                f"{path}: array {meta['name']!r}: shape {shape} of {dt} needs "
                f"{count * dt.itemsize} bytes, header says {meta['nbytes']}"
            )
        if mmap and count:
            arr = np.memmap(path, dtype=dt, mode="r", offset=meta["offset"], shape=shape)
        else:
            with open(path, "rb") as f:
                f.seek(meta["offset"])
                arr = np.fromfile(f, dtype=dt, count=count).reshape(shape)
        if verify and _sha256_chunks(arr) != meta["sha256"]:
            raise IndexFormatError(
                f"{path}: checksum mismatch in array {meta['name']!r}: the file is corrupt "
                "(changed after it was written). Restore it or rebuild the index."
            )
        arrays[meta["name"]] = arr
    return header, arrays
