"""Input folders of the distributed runner: which files, how many rows, and reading a part.

An input is a ``.npy`` file, a directory of ``.npy`` shards (clip-retrieval's
``img_emb/img_emb_0.npy, ...``, embedding-reader's order, as :func:`dehub.datasets.shards.shard_paths`),
or a list of such files; local paths or fsspec URLs (``s3://...``, ``gs://...``,
``file://...``). Only ``.npy`` headers are read to plan the job; a worker reads just the
rows of its part (:func:`read_part`, the one reader call of the runner).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .._errors import InputError
from .._shards import ShardedArray, shard_order_key, shard_paths

__all__ = ["Source", "Part", "list_sources", "plan_parts", "read_part", "open_matrix", "is_url"]

_FLOATS = (np.float16, np.float32, np.float64)
# Parts of fewer rows than this are merged into the previous part of their file: BLAS takes
# other code paths for GEMMs of a few rows, whose float32 sums may differ in the last bit.
_MIN_TAIL = 8


def is_url(spec: str) -> bool:
    """An fsspec URL (``proto://...``) other than a plain local path."""
    return "://" in spec and not spec.startswith("file://")


def _local(spec: str) -> str:
    return spec[len("file://") :] if spec.startswith("file://") else spec


@dataclass(frozen=True)
class Source:
    """One input ``.npy`` file: where, its rows, and what identifies its content."""

    url: str  # absolute local path or fsspec URL
    rows: int
    dim: int
    dtype: str
    offset: int  # byte offset of the array data in the file
    fingerprint: str  # size and modification time: a changed file is recomputed

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Part:
    """A unit of work: rows ``start:stop`` of one source, gallery rows ``first:first+rows``."""

    number: int
    source: Source
    start: int
    stop: int
    first: int  # global gallery row of ``start``

    @property
    def rows(self) -> int:
        return self.stop - self.start

    @property
    def name(self) -> str:
        return f"part-{self.number:05d}"

    def describe(self) -> str:
        """How error messages name the part: the file and the row range in it."""
        return f"{self.name} ({self.source.url}, rows {self.start}..{self.stop - 1})"

    def key(self) -> dict[str, Any]:
        return {
            "url": self.source.url,
            "fingerprint": self.source.fingerprint,
            "start": self.start,
            "stop": self.stop,
            "first": self.first,
        }


def _natural_key(name: str) -> str:
    return shard_order_key(name)  # embedding-reader's order, as every shard reader of dehub


def _filesystem(url: str):
    import fsspec

    fs, path = fsspec.core.url_to_fs(url)
    return fs, path


def _list_files(spec: str) -> list[str]:
    """The ``.npy`` files of one input spec (a file or a directory of shards)."""
    if is_url(spec):
        fs, path = _filesystem(spec)
        proto = spec.split("://", 1)[0]
        if fs.isdir(path):
            names = [p for p in fs.ls(path, detail=False) if str(p).endswith(".npy")]
            if not names:
                raise FileNotFoundError(f"no .npy shards in {spec}")
            names.sort(key=lambda p: _natural_key(str(p).rsplit("/", 1)[-1]))
            return [f"{proto}://{str(p).split('://', 1)[-1]}" for p in names]
        if not fs.exists(path):
            raise FileNotFoundError(f"no embeddings at {spec}; expected a .npy file or a directory of shards")
        return [spec]
    p = Path(_local(spec))
    if p.is_dir():
        return [str(f.resolve()) for f in shard_paths(p)]
    if not p.exists():
        raise FileNotFoundError(f"no embeddings at {p}; expected a .npy file or a directory of .npy shards")
    if p.suffix != ".npy":
        raise InputError(
            f"{p}: the distributed runner reads .npy files or directories of .npy shards; "
            f"received a {p.suffix or 'suffix-less'} file"
        )
    return [str(p.resolve())]


def _header(url: str) -> Source:
    """Shape, dtype and data offset of a ``.npy`` file, from its header only."""
    if is_url(url):
        fs, path = _filesystem(url)
        info = fs.info(path)
        stamp = info.get("mtime") or info.get("LastModified") or info.get("ETag") or info.get("etag") or ""
        fingerprint = f"{info.get('size')}:{stamp}"
        opener = fs.open(path, "rb")
    else:
        st = os.stat(url)
        fingerprint = f"{st.st_size}:{st.st_mtime_ns}"
        opener = open(url, "rb")
    with opener as fh:
        try:
            version = np.lib.format.read_magic(fh)
            if version == (1, 0):
                shape, fortran, dtype = np.lib.format.read_array_header_1_0(fh)
            else:
                shape, fortran, dtype = np.lib.format.read_array_header_2_0(fh)
        except ValueError as exc:
            raise InputError(f"{url} is not a .npy array file: {exc}") from None
        offset = int(fh.tell())
    if len(shape) != 2:
        raise InputError(f"{url}: expected a 2-D (rows, dim) array; received shape {tuple(shape)}")
    if dtype.type not in _FLOATS:
        raise InputError(f"{url}: expected float16, float32 or float64 values; received dtype {dtype}")
    if fortran:
        raise InputError(
            f"{url}: column-major (Fortran-order) .npy files are not supported; save it C-ordered"
        )
    return Source(url, int(shape[0]), int(shape[1]), dtype.str, offset, fingerprint)


def list_sources(spec: str | os.PathLike | Sequence[str | os.PathLike], what: str) -> list[Source]:
    """Every input file of ``spec`` with its header, checked to share one dim and dtype."""
    specs = [os.fspath(spec)] if isinstance(spec, (str, os.PathLike)) else [os.fspath(s) for s in spec]
    if not specs:
        raise InputError(
            f"{what}: expected a .npy file, a directory of shards or a list of files; received none"
        )
    files = [f for s in specs for f in _list_files(s)]
    sources = [_header(f) for f in files]
    first = sources[0]
    for s in sources[1:]:
        if s.dim != first.dim or s.dtype != first.dtype:
            raise InputError(
                f"{what} shard {s.url} has dimension {s.dim} and dtype {np.dtype(s.dtype)}; "
                f"expected dimension {first.dim} and dtype {np.dtype(first.dtype)} like {first.url}"
            )
    return sources


def plan_parts(sources: list[Source], part_rows: int) -> list[Part]:
    """Cut every source into parts of ``part_rows`` rows (a tail under 8 rows joins the part
    before it), in gallery order."""
    if isinstance(part_rows, bool) or not isinstance(part_rows, (int, np.integer)) or part_rows < 1:
        raise InputError(f"part_rows must be a positive integer; received {part_rows!r}")
    step = int(part_rows)
    parts: list[Part] = []
    first = 0
    for src in sources:
        starts = list(range(0, src.rows, step))
        if len(starts) > 1 and src.rows - starts[-1] < _MIN_TAIL:
            starts.pop()  # a tiny tail joins the part before it
        for j, start in enumerate(starts):
            stop = starts[j + 1] if j + 1 < len(starts) else src.rows
            parts.append(Part(len(parts), src, start, stop, first + start))
        first += src.rows
    return parts


def read_part(part: Part) -> np.ndarray:
    """The rows of one part as an in-memory array (only those rows are read)."""
    src = part.source
    dtype = np.dtype(src.dtype)
    if not is_url(src.url):
        arr = np.load(src.url, mmap_mode="r", allow_pickle=False)
        if arr.shape != (src.rows, src.dim):
            raise InputError(
                f"{part.describe()}: the file changed since the job was planned (shape {arr.shape}, "
                f"expected {(src.rows, src.dim)})"
            )
        return np.array(arr[part.start : part.stop])
    fs, path = _filesystem(src.url)
    row_bytes = src.dim * dtype.itemsize
    with fs.open(path, "rb") as fh:
        fh.seek(src.offset + part.start * row_bytes)
        buf = fh.read(part.rows * row_bytes)
    if len(buf) != part.rows * row_bytes:
        raise InputError(f"{part.describe()}: the file is shorter than its header says (truncated)")
    return np.frombuffer(buf, dtype=dtype).reshape(part.rows, src.dim).copy()


def open_matrix(sources: list[Source]) -> Any:
    """All rows of the sources as one (n, d) matrix: memory-mapped when local, else read."""
    if all(not is_url(s.url) for s in sources):
        if len(sources) == 1:
            return np.load(sources[0].url, mmap_mode="r", allow_pickle=False)

        return ShardedArray([s.url for s in sources])
    blocks = [read_part(p) for p in plan_parts(sources, max(s.rows for s in sources))]
    return np.concatenate(blocks, axis=0)
