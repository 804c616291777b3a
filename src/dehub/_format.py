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

The reader trusts nothing in the file, checksummed or not (a foreign writer can produce
a consistent checksum over any content): the header length is capped
(:data:`MAX_HEADER_BYTES`) and checked against the file size before it is read, the
JSON nesting depth is capped (:data:`MAX_JSON_DEPTH`) before it is parsed, every array
lies inside the file, after the header, in header order and without overlap (so the
declared sizes sum to at most the file size), and shapes are multiplied in exact
integer arithmetic. Only the arrays a caller names are read, so reading allocates at
most the file size plus a constant. Every failure is an :class:`IndexFormatError`
naming the file, what was expected and what was found.

Writes are atomic: the file is written under a temporary name in the same directory,
flushed and fsynced, then renamed over the target (``os.replace``), so a crash at any
point leaves either the old file or the new one, never a mix (see :mod:`dehub._io`).
:func:`streamed_container` writes the first array before the others exist (``dehub
build`` writes the gallery in its validation pass), with room for the header reserved
in front of it.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import stat
import struct
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from io import BufferedReader
from pathlib import Path
from typing import Any

import numpy as np

from ._errors import InputError, InputTypeError
from ._io import atomic_path
from ._json import JSONLimits, JSONReadError, parse_json
from ._validation import is_row_sliceable

__all__ = [
    "FORMAT_VERSION",
    "MAGIC",
    "MAX_HEADER_BYTES",
    "MAX_JSON_DEPTH",
    "IndexFormatError",
    "FileIdentity",
    "write_container",
    "streamed_container",
    "StreamedContainer",
    "HeaderRoomError",
    "read_container",
    "read_header",
    "verify_container",
]

MAGIC = b"DEHUBIX\x00"
FORMAT_VERSION = 1
_PREFIX = struct.Struct("<8sIQ32s")  # magic, version, header length, header sha256
_ALIGN = 64
_ALLOWED = {"<f2", "<f4", "<f8", "<i4", "<i8", "<u1", "|u1", "|b1", "<u4", "<u8"}
#: Largest header the reader accepts (an index header is a few kB; metadata included).
MAX_HEADER_BYTES = 16 << 20
#: Deepest JSON nesting the reader accepts (an index header nests 4 levels).
MAX_JSON_DEPTH = 64
_HEADER_LIMITS = JSONLimits(max_bytes=MAX_HEADER_BYTES, max_depth=MAX_JSON_DEPTH, max_values=1 << 22)
_MAX_NDIM = 32
_MAX_ARRAYS = 4096
_MAX_ELEMENTS_BYTES = 2**62  # prod(max(dim, 1)) * itemsize must stay below this (numpy's intp)
_CHUNK = 16 << 20  # bytes per read / hash step
_SHA_HEX = re.compile(r"[0-9a-f]{64}")


class IndexFormatError(InputError):
    """An index file is not a dehub file, is of an unknown version, truncated or corrupt."""


def _align(n: int) -> int:
    return -(-n // _ALIGN) * _ALIGN


def _dtype_str(a: np.ndarray) -> str:
    dt = a.dtype.newbyteorder("<") if a.dtype.byteorder == ">" else a.dtype
    s = dt.str
    if s not in _ALLOWED:
        raise InputTypeError(
            f"cannot store dtype {a.dtype} in a dehub file; expected one of "
            "float16/32/64, int32/64, uint8/32/64, bool"
        )
    return s


def _byte_chunks(arr: Any, dtype: np.dtype) -> Iterator[bytes]:
    """The bytes of ``arr`` as stored (``dtype``, C order) in chunks of about ``_CHUNK``.

    A 2-D row-sliceable array-like (a sharded gallery) is read block by block, never
    materialized whole."""
    if isinstance(arr, np.ndarray):
        flat = arr.reshape(-1)
        step = max(1, _CHUNK // max(dtype.itemsize, 1))
        for s in range(0, flat.size, step):
            yield np.ascontiguousarray(flat[s : s + step], dtype=dtype).tobytes()
        return
    n, d = arr.shape
    step = max(1, _CHUNK // max(dtype.itemsize * max(d, 1), 1))
    for s in range(0, n, step):
        yield np.ascontiguousarray(np.asarray(arr[s : s + step]), dtype=dtype).tobytes()


def _nbytes(arr: Any, dtype: np.dtype) -> int:
    return int(np.prod(arr.shape, dtype=np.int64)) * dtype.itemsize


def _header_bytes(header: dict[str, Any], metas: list[dict[str, Any]]) -> tuple[bytes, int]:
    """The header's JSON and the aligned start of the data (the header length depends on
    the absolute offsets; iterate until stable)."""
    base = 0
    for _ in range(4):
        full = dict(header)
        full.update(
            {"format_version": FORMAT_VERSION, "arrays": [{**m, "offset": m["offset"] + base} for m in metas]}
        )
        hbytes = json.dumps(full, sort_keys=True, separators=(",", ":"), allow_nan=False).encode("utf-8")
        new_base = _align(_PREFIX.size + len(hbytes))
        if new_base == base:
            break
        base = new_base
    return hbytes, base


def _lay_out(arrays: dict[str, Any], offset: int) -> tuple[list[dict[str, Any]], list[Any]]:
    """Each array's header entry (placed from ``offset`` on, aligned; a zero digest of the
    final length, filled in as it is written) and the array itself as it will be read."""
    metas: list[dict[str, Any]] = []
    prepared = []
    for name, arr in arrays.items():
        if isinstance(arr, np.ndarray) or not is_row_sliceable(arr):
            arr = np.asarray(arr)
        dts = _dtype_str(arr)
        nbytes = _nbytes(arr, np.dtype(dts))
        metas.append(
            {
                "name": name,
                "dtype": dts,
                "shape": [int(x) for x in arr.shape],
                "offset": offset,
                "nbytes": nbytes,
                "sha256": "0" * 64,  # the same length as the digest written at the end
            }
        )
        prepared.append(arr)
        offset = _align(offset + nbytes)
    return metas, prepared


def _write_hashed(f: Any, metas: list[dict[str, Any]], arrays: list[Any], *, pos: int, base: int) -> None:
    """Write ``arrays`` at ``base + meta["offset"]`` (the file is at ``pos``), each read once:
    its SHA-256 is taken over the bytes as they are written and stored in its entry."""
    for meta, arr in zip(metas, arrays, strict=True):
        start = base + meta["offset"]
        f.write(b"\0" * (start - pos))
        h = hashlib.sha256()
        for chunk in _byte_chunks(arr, np.dtype(meta["dtype"])):
            h.update(chunk)
            f.write(chunk)
        meta["sha256"] = h.hexdigest()
        pos = start + meta["nbytes"]


def write_container(path: str | os.PathLike, header: dict[str, Any], arrays: dict[str, Any]) -> None:
    """Write ``arrays`` and a JSON-serializable ``header`` to ``path`` atomically.

    Every array is read once: its SHA-256 is taken over the bytes as they are written,
    and the header (whose checksums have a fixed length) is written last, in the space
    reserved for it. Arrays are ndarrays (memmaps) or 2-D row-sliceable array-likes.
    """
    path = Path(path)
    metas, prepared = _lay_out(arrays, 0)  # offsets relative to the data start for now
    hbytes, base = _header_bytes(header, metas)
    if len(hbytes) > MAX_HEADER_BYTES:
        raise InputError(
            f"the header of {path} would take {len(hbytes)} bytes; dehub files allow at most "
            f"{MAX_HEADER_BYTES} (keep large metadata in a file beside the index)"
        )

    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        f.write(b"\0" * base)  # prefix and header, written last
        _write_hashed(f, metas, prepared, pos=base, base=base)
        final, final_base = _header_bytes(header, metas)
        if final_base != base or len(final) != len(hbytes):  # pragma: no cover - digests are fixed-length
            raise RuntimeError("the header changed length when its checksums were filled in")
        f.seek(0)
        f.write(_PREFIX.pack(MAGIC, FORMAT_VERSION, len(final), hashlib.sha256(final).digest()))
        f.write(final)


class HeaderRoomError(RuntimeError):
    """The header of a :class:`StreamedContainer` outgrew the room reserved for it (the
    file is not written; write it with :func:`write_container` instead)."""


class StreamedContainer:
    """A container whose first array is written before the others exist.

    ``dehub build`` writes (and hashes) the gallery in its validation pass, before the
    fit; the statistics and the header follow only when the fit has succeeded. The first
    array starts after ``header_room`` bytes reserved for the prefix and the header, which
    is written last (a longer header raises :class:`HeaderRoomError` in :meth:`finish`).
    Made by :func:`streamed_container`, which owns the temporary file.
    """

    def __init__(self, f: Any, path: Path, header_room: int) -> None:
        self._f = f
        self._path = path
        self._start = _align(_PREFIX.size + header_room)
        self._first: dict[str, Any] | None = None
        self.finished = False
        f.write(b"\0" * self._start)

    def write_first(self, name: str, dtype: np.dtype, shape: tuple[int, ...], blocks: Iterable[Any]) -> None:
        """Write and hash the first array from ``blocks`` (its rows in order, any float
        dtype, stored as ``dtype``); an exception from ``blocks`` leaves no file."""
        dts = _dtype_str(np.empty(0, dtype=dtype))
        dt = np.dtype(dts)
        h = hashlib.sha256()
        written = 0
        for block in blocks:
            buf = np.ascontiguousarray(block, dtype=dt).reshape(-1).view(np.uint8).data
            h.update(buf)
            self._f.write(buf)
            written += buf.nbytes
        nbytes = math.prod(shape) * dt.itemsize
        if written != nbytes:  # pragma: no cover - a caller's bug
            raise RuntimeError(f"{name}: {written} bytes streamed for a shape {shape} of {dt} ({nbytes})")
        self._first = {
            "name": name,
            "dtype": dts,
            "shape": [int(x) for x in shape],
            "offset": self._start,
            "nbytes": nbytes,
            "sha256": h.hexdigest(),
        }

    def finish(self, header: dict[str, Any], arrays: dict[str, Any]) -> None:
        """Write the other ``arrays`` after the first one, then the header."""
        if self._first is None:  # pragma: no cover - a caller's bug
            raise RuntimeError("StreamedContainer.finish() before write_first()")
        rest, prepared = _lay_out(arrays, _align(self._start + self._first["nbytes"]))
        metas = [self._first, *rest]
        if len(self._header_json(header, metas)) + _PREFIX.size > self._start:
            raise HeaderRoomError(
                f"the header of {self._path} needs more than the {self._start} bytes reserved for it"
            )
        _write_hashed(self._f, rest, prepared, pos=self._start + self._first["nbytes"], base=0)
        final = self._header_json(header, metas)  # the same length: digests are fixed-length
        self._f.seek(0)
        self._f.write(_PREFIX.pack(MAGIC, FORMAT_VERSION, len(final), hashlib.sha256(final).digest()))
        self._f.write(final)
        self.finished = True

    @staticmethod
    def _header_json(header: dict[str, Any], metas: list[dict[str, Any]]) -> bytes:
        full = {**header, "format_version": FORMAT_VERSION, "arrays": metas}
        return json.dumps(full, sort_keys=True, separators=(",", ":"), allow_nan=False).encode("utf-8")


@contextmanager
def streamed_container(path: str | os.PathLike, header_room: int) -> Iterator[StreamedContainer]:
    """A :class:`StreamedContainer` written to a temporary file beside ``path`` and renamed
    over it (atomically, :func:`dehub._io.atomic_path`) only when the block ends with the
    container finished; on any exception, or unfinished, the temporary file is removed."""
    path = Path(path)
    room = min(int(header_room), MAX_HEADER_BYTES)
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        out = StreamedContainer(f, path, room)
        yield out
        if not out.finished:
            raise RuntimeError(f"{path}: the streamed container was left unfinished")


# --------------------------------------------------------------------------- reading
@dataclass(frozen=True)
class FileIdentity:
    """What identifies the bytes of a file: device, inode, size and modification time."""

    path: str
    st_dev: int
    st_ino: int
    st_size: int
    st_mtime_ns: int

    @classmethod
    def of(cls, path: str | os.PathLike, st: os.stat_result) -> FileIdentity:
        return cls(str(path), st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)

    def check(self) -> None:
        """Raise :class:`IndexFormatError` if the file is gone, replaced, resized or rewritten."""
        try:
            st = os.stat(self.path)
        except OSError as exc:
            raise IndexFormatError(
                f"{self.path}: the memory-mapped index file is no longer readable ({exc.strerror}); "
                "reload the index"
            ) from None
        now = FileIdentity.of(self.path, st)
        if now == self:
            return
        if (now.st_dev, now.st_ino) != (self.st_dev, self.st_ino):
            what = "was replaced by another file"
        elif now.st_size != self.st_size:
            what = f"changed size from {self.st_size} to {now.st_size} bytes"
        else:
            what = "was modified"
        raise IndexFormatError(
            f"{self.path}: the memory-mapped index file {what} after it was loaded; reading it "
            "now could crash the process (SIGBUS) or return other data. Reload the index "
            "(Index.load), or load without mmap=True to keep a private copy."
        )


@dataclass(frozen=True)
class _Entry:
    name: str
    dtype: np.dtype
    shape: tuple[int, ...]
    offset: int
    nbytes: int
    sha256: str


def _bad(path: Path, what: str) -> IndexFormatError:
    return IndexFormatError(f"{path}: malformed header: {what}")


def _parse_json(path: Path, hbytes: bytes) -> Any:
    try:
        return parse_json(hbytes, source=f"{path}: header", limits=_HEADER_LIMITS)
    except JSONReadError as exc:
        raise IndexFormatError(str(exc)) from None


def _is_int(v: Any) -> bool:
    return type(v) is int


def _entries(path: Path, header: Any, *, version: int, data_start: int, size: int) -> list[_Entry]:
    """The header's structure and every array's place in the file (see the module doc)."""
    if not isinstance(header, dict) or not isinstance(header.get("arrays"), list):
        raise _bad(path, "expected a JSON object with an 'arrays' list")
    fv = header.get("format_version", version)
    if fv != version or not _is_int(fv):
        raise _bad(path, f"format_version {fv!r} differs from the version {version} in the file's prefix")
    if len(header["arrays"]) > _MAX_ARRAYS:
        raise _bad(path, f"{len(header['arrays'])} arrays listed; expected at most {_MAX_ARRAYS}")
    keys = {"name", "dtype", "shape", "offset", "nbytes", "sha256"}
    out: list[_Entry] = []
    seen: set[str] = set()
    prev_end, prev_name = data_start, None
    for meta in header["arrays"]:
        if not isinstance(meta, dict) or not keys <= set(meta):
            raise _bad(path, f"expected every array entry to have the keys {sorted(keys)}; received {meta!r}")
        name, shape, offset, nbytes = meta["name"], meta["shape"], meta["offset"], meta["nbytes"]
        if not isinstance(name, str) or not name or name in seen:
            raise _bad(path, f"expected unique non-empty string array names; received {name!r}")
        seen.add(name)
        if not isinstance(meta["dtype"], str) or meta["dtype"] not in _ALLOWED:
            raise _bad(
                path,
                f"array {name!r} has unsupported dtype {meta['dtype']!r}; expected one of {sorted(_ALLOWED)}",
            )
        ints = [offset, nbytes, *shape] if isinstance(shape, list) else None
        if ints is None or not all(_is_int(v) and v >= 0 for v in ints):
            raise _bad(
                path, f"array {name!r} has invalid shape/offset/nbytes {shape!r}/{offset!r}/{nbytes!r}"
            )
        if len(shape) > _MAX_NDIM:
            raise _bad(path, f"array {name!r} has {len(shape)} dimensions; expected at most {_MAX_NDIM}")
        if not isinstance(meta["sha256"], str) or not _SHA_HEX.fullmatch(meta["sha256"]):
            raise _bad(path, f"array {name!r}: expected a 64-digit hex sha256; received {meta['sha256']!r}")
        dt = np.dtype(meta["dtype"])
        # exact integer arithmetic: a shape whose product overflows int64 cannot pass
        if math.prod(max(s, 1) for s in shape) * dt.itemsize >= _MAX_ELEMENTS_BYTES:
            raise IndexFormatError(
                f"{path}: array {name!r}: shape {tuple(shape)} of {dt} is impossibly large"
            )
        need = math.prod(shape) * dt.itemsize
        if need != nbytes:
            raise IndexFormatError(
                f"{path}: array {name!r}: shape {tuple(shape)} of {dt} needs {need} bytes, header says {nbytes}"
            )
        if offset < data_start:
            raise _bad(
                path,
                f"array {name!r} starts at byte {offset}, inside the header (which ends at {data_start})",
            )
        if offset % _ALIGN:
            raise _bad(path, f"array {name!r} starts at byte {offset}; expected a multiple of {_ALIGN}")
        if offset < prev_end:
            raise _bad(
                path,
                f"array {name!r} starts at byte {offset}, before the end of the previous array "
                f"{prev_name!r} (byte {prev_end}); expected arrays in file order without overlap",
            )
        if nbytes:
            prev_end, prev_name = offset + nbytes, name
        out.append(_Entry(name, dt, tuple(shape), offset, nbytes, meta["sha256"]))
    need_size = max((e.offset + e.nbytes for e in out if e.nbytes), default=0)
    if size < need_size:
        raise IndexFormatError(
            f"{path}: truncated: expected at least {need_size} bytes, found {size}. The file was "
            "cut short (interrupted copy?); restore it or rebuild the index."
        )
    total = sum(e.nbytes for e in out)
    if total > size:  # implied by the checks above; kept as the stated guarantee
        raise _bad(path, f"arrays declare {total} bytes in a file of {size}")
    return out


def _read_prefix_and_header(path: Path, f: BufferedReader, size: int) -> tuple[dict[str, Any], list[_Entry]]:
    raw = f.read(_PREFIX.size)
    if raw[: len(MAGIC)] != MAGIC[: len(raw)]:
        raise IndexFormatError(
            f"{path}: not a dehub index file (expected magic {MAGIC!r}, found {raw[: len(MAGIC)]!r})"
        )
    if len(raw) < _PREFIX.size:
        raise IndexFormatError(
            f"{path}: truncated: {len(raw)} bytes is shorter than the {_PREFIX.size}-byte dehub prefix"
        )
    _magic, version, hlen, hsha = _PREFIX.unpack(raw)
    if version > FORMAT_VERSION or version < 1:
        raise IndexFormatError(
            f"{path}: format version {version} is not supported; this dehub reads "
            f"version {FORMAT_VERSION}. Upgrade dehub or rebuild the index."
        )
    if hlen > size - _PREFIX.size:  # checked before reading: hlen may be garbage
        raise IndexFormatError(
            f"{path}: truncated: header needs {hlen} bytes after the prefix, file has {size - _PREFIX.size}"
        )
    if hlen > MAX_HEADER_BYTES:
        raise IndexFormatError(
            f"{path}: header of {hlen} bytes exceeds the limit of {MAX_HEADER_BYTES} bytes (a dehub "
            "index header takes a few kB); the file is corrupt or not from dehub"
        )
    hbytes = f.read(hlen)
    if len(hbytes) < hlen:
        raise IndexFormatError(
            f"{path}: truncated: header needs {hlen} bytes after the prefix, file has {len(hbytes)}"
        )
    if hashlib.sha256(hbytes).digest() != hsha:
        raise IndexFormatError(f"{path}: header checksum mismatch: the file is corrupt")
    header = _parse_json(path, hbytes)
    entries = _entries(path, header, version=version, data_start=_PREFIX.size + hlen, size=size)
    header.setdefault("format_version", version)
    return header, entries


def _open(path: str | os.PathLike) -> tuple[Path, BufferedReader, os.stat_result]:
    """Open a regular file for reading; ``(path, file, fstat)``.

    Opened non-blocking and checked with ``fstat`` before any read, so a FIFO or a
    device given as an index is refused instead of hanging or streaming forever.
    """
    path = Path(path)
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0))
    except FileNotFoundError:
        raise FileNotFoundError(f"no index file at {path}") from None
    except IsADirectoryError:  # pragma: no cover - Linux opens directories read-only
        raise IndexFormatError(f"{path}: is a directory; expected a dehub index file") from None
    try:
        st = os.fstat(fd)
        if stat.S_ISDIR(st.st_mode):
            raise IndexFormatError(f"{path}: is a directory; expected a dehub index file")
        if not stat.S_ISREG(st.st_mode):
            raise IndexFormatError(
                f"{path}: is not a regular file (a pipe or device?); expected a dehub index file"
            )
        if hasattr(os, "set_blocking"):
            os.set_blocking(fd, True)
        f = os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise
    return path, f, st


def read_header(path: str | os.PathLike) -> dict[str, Any]:
    """Read and check the header only (magic, version, header checksum, array layout).

    ``format_version`` is always present in the result (from the prefix, if the header
    itself omits it).
    """
    p, f, st = _open(path)
    with f:
        header, _ = _read_prefix_and_header(p, f, st.st_size)
    return header


def _hash_range(path: Path, f: BufferedReader, e: _Entry, into: np.ndarray | None) -> str:
    """Read ``e``'s bytes in chunks (into ``into`` if given) and return their SHA-256."""
    h = hashlib.sha256()
    f.seek(e.offset)
    if into is not None:
        dest = into.reshape(-1).view(np.uint8).data
    else:
        scratch = bytearray(min(_CHUNK, e.nbytes))
    pos = 0
    while pos < e.nbytes:
        n = min(_CHUNK, e.nbytes - pos)
        view = dest[pos : pos + n] if into is not None else memoryview(scratch)[:n]
        got = f.readinto(view)
        if not got:
            raise IndexFormatError(
                f"{path}: truncated while reading array {e.name!r}: expected {e.nbytes} bytes at "
                f"offset {e.offset}, the file ended after {pos}. The file changed while it was read."
            )
        h.update(view[:got])
        pos += got
    return h.hexdigest()


def _checksum_error(path: Path, name: str) -> IndexFormatError:
    return IndexFormatError(
        f"{path}: checksum mismatch in array {name!r}: the file is corrupt "
        "(changed after it was written). Restore it or rebuild the index."
    )


def _check_bool(path: Path, e: _Entry, arr: np.ndarray) -> None:
    if e.dtype == np.bool_ and arr.size and int(np.asarray(arr).view(np.uint8).max()) > 1:
        raise IndexFormatError(f"{path}: array {e.name!r}: bool values must be bytes 0 or 1")


def read_container(
    path: str | os.PathLike,
    *,
    mmap: bool = False,
    verify: bool = True,
    names: Iterable[str] | None = None,
    identity: list[FileIdentity] | None = None,
) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """Read a container: ``(header, arrays)``; arrays are memory-mapped if ``mmap``.

    With ``verify`` (default) every array read is checked against its SHA-256. ``names``
    selects the arrays to read (default all; names not in the file are skipped). Without
    ``mmap`` every array is read into memory (at most the file's size in all). With
    ``mmap`` the checksums are computed by reading the file (not through the mapping),
    and ``identity`` (a list) receives the :class:`FileIdentity` of the mapped file.
    """
    p, f, st = _open(path)
    with f:
        header, entries = _read_prefix_and_header(p, f, st.st_size)
        wanted = None if names is None else set(names)
        arrays: dict[str, np.ndarray] = {}
        for e in entries:
            if wanted is not None and e.name not in wanted:
                continue
            if mmap and e.nbytes:
                if verify and _hash_range(p, f, e, None) != e.sha256:
                    raise _checksum_error(p, e.name)
                try:
                    arr: np.ndarray = np.memmap(f, dtype=e.dtype, mode="r", offset=e.offset, shape=e.shape)
                except ValueError as exc:  # the file shrank since it was checked
                    raise IndexFormatError(f"{p}: cannot map array {e.name!r}: {exc}") from None
            else:
                arr = np.empty(e.shape, dtype=e.dtype)
                digest = _hash_range(p, f, e, arr)
                if verify and digest != e.sha256:
                    raise _checksum_error(p, e.name)
            _check_bool(p, e, arr)
            arrays[e.name] = arr
        if identity is not None:
            identity.append(FileIdentity.of(p, st))
    return header, arrays


def verify_container(path: str | os.PathLike) -> dict[str, Any]:
    """Check the whole file, every array's SHA-256 included, reading it in 16 MiB chunks.

    Returns ``{"path", "format_version", "file_bytes", "arrays": {name: sha256},
    "verified_bytes"}``; raises :class:`IndexFormatError` at the first problem. Memory
    stays at one chunk whatever the file size.
    """
    p, f, st = _open(path)
    with f:
        header, entries = _read_prefix_and_header(p, f, st.st_size)
        for e in entries:
            if _hash_range(p, f, e, None) != e.sha256:
                raise _checksum_error(p, e.name)
    return {
        "path": str(p),
        "format_version": header["format_version"],
        "file_bytes": st.st_size,
        "arrays": {e.name: e.sha256 for e in entries},
        "verified_bytes": sum(e.nbytes for e in entries),
    }
