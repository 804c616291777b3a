"""Build dehub index files by hand, from the layout in docs/index-format.md only.

These helpers never call dehub's writer: they play the foreign (or hostile) writer that
produces a file with valid checksums around any content. Used by the attack tests and
by the before/after measurements of issue 9.
"""

from __future__ import annotations

import hashlib
import json
import struct
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

PREFIX = struct.Struct("<8sIQ32s")  # magic, version, header length, header sha256
MAGIC = b"DEHUBIX\x00"
ALIGN = 64


def align(n: int) -> int:
    return -(-n // ALIGN) * ALIGN


def index_header(method: str = "plain", **extra: Any) -> dict[str, Any]:
    """The index-level header keys of docs/index-format.md ('What an index stores')."""
    return {
        "kind": "dehub.index",
        "created_by": "crafted",
        "method": method,
        "params": {},
        "metadata": {},
        "n_reference": None,
        **extra,
    }


def _layout(arrays: list[tuple[str, np.ndarray]], data_start: int) -> tuple[list[dict], bytes]:
    metas, blob = [], bytearray()
    for name, a in arrays:
        a = np.ascontiguousarray(a)
        raw = a.tobytes()
        metas.append(
            {
                "name": name,
                "dtype": a.dtype.str,
                "shape": list(a.shape),
                "offset": data_start + len(blob),
                "nbytes": len(raw),
                "sha256": hashlib.sha256(raw).hexdigest(),
            }
        )
        blob += raw
        blob += b"\0" * (align(len(blob)) - len(blob))
    return metas, bytes(blob)


def craft(
    path: Path,
    header: dict[str, Any],
    arrays: list[tuple[str, np.ndarray]],
    *,
    mutate: Callable[[dict[str, Any]], None] | None = None,
    raw_header: bytes | None = None,
    version: int = 1,
    format_version: bool = True,
) -> Path:
    """Write a container: ``header`` plus ``arrays`` laid out as documented.

    ``mutate(full_header)`` may change the header after the offsets are computed (the
    data stays where the offsets first said); ``raw_header`` replaces the JSON bytes.
    The header is padded with JSON whitespace up to the data start, and the prefix gets
    a valid checksum of whatever the header bytes are.
    """

    def full(data_start: int) -> tuple[bytes, bytes]:
        metas, blob = _layout(arrays, data_start)
        end = max((m["offset"] + m["nbytes"] for m in metas if m["nbytes"]), default=data_start)
        h = dict(header)
        if format_version:
            h["format_version"] = version
        h["arrays"] = metas
        if mutate is not None:
            mutate(h)
        text = raw_header if raw_header is not None else json.dumps(h, separators=(",", ":")).encode()
        return text, blob[: end - data_start]  # the file ends with the last array's last byte

    text, _ = full(align(PREFIX.size + 4096))
    data_start = align(PREFIX.size + len(text) + len(text) // 8 + 512)
    text, blob = full(data_start)
    hlen = data_start - PREFIX.size
    if len(text) > hlen:  # pragma: no cover - the slack above is generous
        raise RuntimeError("crafted header outgrew its reserved space")
    text = text.ljust(hlen)  # JSON allows trailing whitespace
    prefix = PREFIX.pack(MAGIC, version, hlen, hashlib.sha256(text).digest())
    path.write_bytes(prefix + text + blob)
    return path


def plain_index(path: Path, gallery: np.ndarray, ids: np.ndarray | None = None, **kw: Any) -> Path:
    """A 'plain' (no correction) index: the smallest valid index, gallery + ids."""
    ids = np.arange(gallery.shape[0], dtype=np.int64) if ids is None else ids
    return craft(path, index_header("plain", params={}), [("gallery", gallery), ("ids", ids)], **kw)


# --------------------------------------------------------------------------- the attacks
def memory_bomb(path: Path, *, rows: int = 1024, dim: int = 1024, repeats: int = 2000) -> Path:
    """One real gallery region of rows*dim float32, listed ``repeats`` more times."""
    gallery = np.zeros((rows, dim), np.float32)

    def repeat(h: dict[str, Any]) -> None:
        g = h["arrays"][0]
        h["arrays"] = [h["arrays"][0], h["arrays"][1]] + [{**g, "name": f"copy{i}"} for i in range(repeats)]

    return plain_index(path, gallery, mutate=repeat)


def deep_json(path: Path, depth: int = 1000) -> Path:
    """A header that is ``[[[...]]]`` nested ``depth`` deep (valid checksum)."""
    return craft(path, {}, [], raw_header=b"[" * depth + b"]" * depth)


def declared_huge_header(path: Path, hlen: int = 1 << 30) -> Path:
    """A prefix declaring an ``hlen``-byte header, in a sparse file that long."""
    with open(path, "wb") as f:
        f.write(PREFIX.pack(MAGIC, 1, hlen, b"\0" * 32))
        f.truncate(PREFIX.size + hlen)
    return path


def real_big_header(path: Path, nbytes: int) -> Path:
    """A valid JSON header of ``nbytes`` bytes (padding spaces), correctly checksummed."""
    text = json.dumps(index_header("plain")).encode()
    text = text.ljust(nbytes)
    prefix = PREFIX.pack(MAGIC, 1, len(text), hashlib.sha256(text).digest())
    path.write_bytes(prefix + text)
    return path


def shape_overflow(path: Path) -> Path:
    """A gallery whose shape's product overflows int64 (2**62 * 4 rows of float32 -> 0 bytes)."""

    def overflow(h: dict[str, Any]) -> None:
        h["arrays"][0]["shape"] = [2**62, 4]
        h["arrays"][0]["nbytes"] = 0  # what an int64 product would wrap to

    return plain_index(path, np.zeros((0, 4), np.float32), ids=np.zeros(0, np.int64), mutate=overflow)
