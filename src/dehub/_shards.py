"""Embeddings larger than RAM: memory-mapped ``.npy`` files and directories of shards.

clip-retrieval writes embeddings as numbered shards, ``img_emb/img_emb_0.npy,
img_emb_1.npy, ...`` (and ``text_emb/text_emb_0.npy, ...``). Shards are read in the order
embedding-reader (and so autofaiss and clip-retrieval's own index) reads them: sorted by
file name as strings (:func:`shard_order_key`), so row ``i`` of dehub is row ``i`` of an
index they built over the same folder; unpadded names past ten shards then read
``_0, _1, _10, _11, ..., _2``, which is why ``dehub embed`` writes zero-padded names
(:func:`shard_name`), whose string order is their numeric order. :class:`ShardedArray` is a
read-only view of such shards as one ``(n, d)`` matrix: ``shape``, ``dtype``, ``ndim``,
``len``, and row slicing / row selection across shard boundaries. Shards are opened
lazily: on construction only each file's ``.npy`` header is read (and the file closed);
a shard is memory-mapped when rows of it are read, and at most ``max_open`` shards stay
mapped at a time (least recently used first out), so a folder of thousands of shards
needs a bounded number of file descriptors (a memory map holds one), whatever the
``ulimit -n``. Only the rows read are loaded. The engines read it blockwise
(:func:`dehub.exact_search`, :func:`dehub.engine.topk_search`), so memory
stays bounded by the block size and the index.

:func:`open_embeddings` opens a ``.npy`` file (memory-mapped) or a shard directory.
``np.asarray(sharded)`` materializes the whole matrix (use :meth:`ShardedArray.iter_blocks`
to stream instead).
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from ._errors import InputError
from ._progress import progress_bar

__all__ = ["ShardedArray", "open_embeddings", "shard_paths", "shard_order_key", "shard_name", "SHARD_DIGITS"]

#: digits of the shard numbers ``dehub embed`` writes (more when there are more shards)
SHARD_DIGITS = 5


def shard_order_key(name: str | os.PathLike) -> str:
    """The sort key of a shard file: its name as a string, embedding-reader's order.

    embedding-reader (``get_file_list``) sorts the paths it globs as strings; within one
    folder that is the file names' string order. Every dehub reader of shard folders
    uses this key, so dehub's row numbers are embedding-reader's and autofaiss's.
    """
    return os.fspath(name).replace("\\", "/").rsplit("/", 1)[-1]


def shard_name(prefix: str, number: int, n_shards: int, suffix: str) -> str:
    """``{prefix}_{number:0Nd}{suffix}``: zero-padded so that string order = numeric order."""
    width = max(SHARD_DIGITS, len(str(max(n_shards - 1, 0))))
    return f"{prefix}_{number:0{width}d}{suffix}"


def shard_paths(directory: str | os.PathLike) -> list[Path]:
    """The ``.npy`` shards of ``directory`` in embedding-reader's order (:func:`shard_order_key`).

    If the directory holds no ``.npy`` file but exactly one sub-directory that does
    (clip-retrieval's ``embeddings/img_emb/``), that sub-directory is used.
    """
    d = Path(directory)
    if not d.is_dir():
        raise NotADirectoryError(f"expected a directory of .npy shards; {d} is not a directory")
    files = sorted(
        (p for p in d.iterdir() if p.suffix == ".npy" and p.is_file()), key=lambda p: shard_order_key(p.name)
    )
    if not files:
        subs = [s for s in sorted(d.iterdir()) if s.is_dir() and any(s.glob("*.npy"))]
        if len(subs) == 1:
            return shard_paths(subs[0])
        hint = f" (sub-directories with shards: {[s.name for s in subs]}; pass one)" if subs else ""
        raise FileNotFoundError(f"no .npy shards in {d}{hint}")
    return files


#: Default number of shards kept memory-mapped at once (each holds a file descriptor).
DEFAULT_MAX_OPEN = 64


def _npy_header(path: Path) -> tuple[tuple[int, ...], np.dtype, bool, int]:
    """``(shape, dtype, fortran_order, data offset)`` from a ``.npy`` header; closes the file."""
    try:
        with open(path, "rb") as f:
            version = np.lib.format.read_magic(f)
            if version == (1, 0):
                shape, fortran, dtype = np.lib.format.read_array_header_1_0(f)
            else:
                shape, fortran, dtype = np.lib.format.read_array_header_2_0(f)
            return tuple(shape), np.dtype(dtype), bool(fortran), f.tell()
    except (ValueError, OSError, SyntaxError) as exc:
        if isinstance(exc, FileNotFoundError):
            raise
        raise InputError(f"{path} is not a readable .npy shard: {exc}") from None


class ShardedArray:
    """Read-only ``(n, d)`` view over row shards (memory-mapped ``.npy`` files).

    Parameters
    ----------
    paths : directory or list of ``.npy`` files, concatenated along rows in this order.
    max_open : int
        How many shards may be memory-mapped at once (least recently used are closed).

    Supports ``x[a:b]`` (rows, step 1), ``x[i]`` (one row), ``x[int_array]`` /
    :meth:`take_rows` (any rows, returned in the given order), ``len(x)``, ``x.shape``,
    ``x.dtype``, ``x.ndim``, ``x.nbytes``. Results are ordinary in-memory arrays.
    """

    def __init__(self, paths, *, max_open: int = DEFAULT_MAX_OPEN) -> None:
        if isinstance(paths, (str, os.PathLike)):
            paths = shard_paths(paths)
        self.paths = [Path(p) for p in paths]
        if not self.paths:
            raise InputError("ShardedArray needs at least one shard; received none")
        if isinstance(max_open, bool) or not isinstance(max_open, int) or max_open < 1:
            raise InputError(f"max_open must be a positive integer; received {max_open!r}")
        self.max_open = max_open
        self._open: OrderedDict[int, np.ndarray] = OrderedDict()
        # Engine workers read blocks from several threads: the LRU and each read from a map
        # happen under one lock, so no thread evicts (and unmaps) a shard another is copying
        # from (the freed address range can be mapped again by the next shard opened, which
        # turned such a race into silently wrong rows rather than a crash).
        self._lock = threading.Lock()
        heads = [_npy_header(p) for p in self.paths]
        self._shapes = [h[0] for h in heads]
        first_shape, first_dtype = heads[0][0], heads[0][1]
        cols = first_shape[1] if len(first_shape) == 2 else None
        for p, (shape, dtype, _, _) in zip(self.paths, heads):
            if len(shape) != 2 or shape[1] != cols or dtype != first_dtype or dtype.hasobject:
                raise InputError(
                    f"every shard must be 2-D with the same columns and dtype as {self.paths[0].name} "
                    f"({cols} columns, {first_dtype}); {p.name} has shape {shape}, dtype {dtype}"
                )
        sizes = np.array([s[0] for s in self._shapes], dtype=np.int64)
        self._starts = np.concatenate([[0], np.cumsum(sizes)])
        self.shape = (int(self._starts[-1]), int(first_shape[1]))
        self.dtype = first_dtype
        self.ndim = 2

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_open"] = OrderedDict()  # maps are reopened where the array is unpickled
        del state["_lock"]
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()

    def _shard(self, s: int) -> np.ndarray:
        """Shard ``s`` memory-mapped, from the LRU of open shards (call with the lock held)."""
        m = self._open.get(s)
        if m is not None:
            self._open.move_to_end(s)
            return m
        while len(self._open) >= self.max_open:
            _, old = self._open.popitem(last=False)
            mm = getattr(old, "_mmap", None)
            del old
            if mm is not None:  # release the descriptor now (no view of it escapes)
                try:
                    mm.close()
                except (BufferError, ValueError):  # pragma: no cover - still referenced
                    pass
        m = np.load(self.paths[s], mmap_mode="r", allow_pickle=False)
        if m.shape != self._shapes[s] or m.dtype != self.dtype:
            raise InputError(
                f"shard {self.paths[s]} changed since it was opened: shape {m.shape}, dtype {m.dtype}; "
                f"expected {self._shapes[s]}, {self.dtype}"
            )
        self._open[s] = m
        return m

    def close(self) -> None:
        """Unmap every open shard (they are reopened on the next read)."""
        with self._lock:
            while self._open:
                self._open.popitem(last=False)

    @property
    def nbytes(self) -> int:
        return self.shape[0] * self.shape[1] * self.dtype.itemsize

    def __len__(self) -> int:
        return self.shape[0]

    def __repr__(self) -> str:
        return f"ShardedArray(shape={self.shape}, dtype={self.dtype}, shards={len(self.paths)})"

    def _slice(self, start: int, stop: int) -> np.ndarray:
        out = np.empty((max(0, stop - start), self.shape[1]), dtype=self.dtype)
        if stop <= start:
            return out
        first = int(np.searchsorted(self._starts, start, side="right")) - 1
        pos = start
        for s in range(first, len(self.paths)):
            lo, hi = self._starts[s], self._starts[s + 1]
            if lo >= stop:
                break
            a, b = max(pos, lo), min(stop, hi)
            with self._lock:  # copied before any other thread may unmap the shard
                out[a - start : b - start] = self._shard(s)[a - lo : b - lo]
            pos = b
        return out

    def take_rows(self, rows) -> np.ndarray:
        """Rows ``rows`` (any order, repeats allowed) as an in-memory array."""
        rows = np.asarray(rows, dtype=np.int64).ravel()
        if rows.size and (rows.min() < -self.shape[0] or rows.max() >= self.shape[0]):
            raise IndexError(f"row index out of range for {self.shape[0]} rows")
        rows = np.where(rows < 0, rows + self.shape[0], rows)
        out = np.empty((rows.size, self.shape[1]), dtype=self.dtype)
        shard = np.searchsorted(self._starts, rows, side="right") - 1
        for s in np.unique(shard):  # one fancy read per shard touched
            sel = np.flatnonzero(shard == s)
            with self._lock:
                out[sel] = self._shard(int(s))[rows[sel] - self._starts[s]]
        return out

    def __getitem__(self, key):
        if isinstance(key, tuple):
            rows, cols = key[0], key[1:]
            return (
                self[rows][(slice(None), *cols)]
                if not isinstance(rows, (int, np.integer))
                else self[rows][cols]
            )
        if isinstance(key, slice):
            start, stop, step = key.indices(self.shape[0])
            if step != 1:
                return self.take_rows(np.arange(start, stop, step))
            return self._slice(start, stop)
        if isinstance(key, (int, np.integer)):
            i = int(key) + (self.shape[0] if key < 0 else 0)
            if not 0 <= i < self.shape[0]:
                raise IndexError(f"row {key} out of range for {self.shape[0]} rows")
            return self._slice(i, i + 1)[0]
        arr = np.asarray(key)
        if arr.dtype == bool:
            return self.take_rows(np.flatnonzero(arr))
        return self.take_rows(arr)

    def __array__(self, dtype=None, copy=None):
        out = self._slice(0, self.shape[0])
        return out if dtype is None else out.astype(dtype, copy=False)

    def iter_blocks(
        self, block_rows: int = 65536, *, progress: bool | str = False
    ) -> Iterator[tuple[slice, np.ndarray]]:
        """Yield ``(row slice, rows)`` blocks in order, with an optional progress bar."""
        n = self.shape[0]
        label = progress if isinstance(progress, str) else "read"
        with progress_bar(total=-(-n // block_rows), desc=label, enable=bool(progress), unit="block") as bar:
            for s in range(0, n, block_rows):
                sl = slice(s, min(s + block_rows, n))
                yield sl, self._slice(sl.start, sl.stop)
                bar.update(1)


def open_embeddings(path: str | os.PathLike):
    """A ``.npy`` file as a read-only memmap, or a shard directory as a :class:`ShardedArray`."""
    p = Path(path)
    if p.is_dir():
        return ShardedArray(p)
    if not p.exists():
        raise FileNotFoundError(f"no embeddings at {p}; expected a .npy file or a directory of .npy shards")
    return np.load(p, mmap_mode="r", allow_pickle=False)
