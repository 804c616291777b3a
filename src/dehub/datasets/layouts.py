"""Readers for the embedding folders people already have (clip-retrieval, embedding-reader).

Layouts read (local paths or fsspec URLs such as ``s3://``, ``gs://``, ``memory://``):

* a ``.npy`` file (memory-mapped when local);
* a directory of ``.npy`` shards (embedding-reader's ``npy`` format), in numeric order;
* a clip-retrieval output folder ``DIR/`` with ``img_emb/img_emb_{i}.npy`` and/or
  ``text_emb/text_emb_{i}.npy`` and ``metadata/metadata_{i}.parquet`` (row ``j`` of
  metadata shard ``i`` describes row ``j`` of embedding shard ``i``). Pass ``DIR`` with
  ``kind='img'``/``'text'`` (needed when both exist), or ``DIR/img_emb`` itself: the
  metadata is found in the sibling ``metadata/`` folder;
* parquet with an embedding column (embedding-reader's ``parquet`` format: a file or a
  directory of files; column ``embedding`` by default, a list or fixed-size list of
  floats), the other columns being the metadata.

:func:`read_embeddings` returns ``(embeddings, metadata)``: an ``(n, d)`` array-like
(``numpy`` memmap or :class:`~dehub.datasets.shards.ShardedArray` for local npy, an
in-memory array otherwise) and a ``pyarrow.Table`` with one row per embedding, or
``None``. Row ``i`` of the metadata belongs to gallery row ``i`` (and to id ``i`` of an
index built with default ids): :func:`attach_metadata` turns search results into rows.

The native readers use numpy and pyarrow only; embedding-reader is not needed.
"""

from __future__ import annotations

import io
import os
import re
from pathlib import Path
from typing import Any

import numpy as np

from .._errors import InputError
from .._extras import require
from .shards import ShardedArray, shard_order_key

__all__ = ["read_embeddings", "read_metadata", "attach_metadata", "cli_embeddings", "is_url"]

EMBEDDING_COLUMN = "embedding"


def is_url(path: str | os.PathLike) -> bool:
    s = os.fspath(path)
    return "://" in s and not s.startswith("file://")


def _key(name: str) -> str:
    return shard_order_key(name)  # embedding-reader's order (see dehub.datasets.shards)


class _FS:
    """The few file-system calls the readers need, over a local path or an fsspec URL."""

    def __init__(self, path: str | os.PathLike):
        s = os.fspath(path)
        if s.startswith("file://"):
            s = s[len("file://") :]
        self.url = is_url(s)
        if self.url:
            fsspec = require("fsspec", "reading URLs")
            self.fs, self.root = fsspec.core.url_to_fs(s)
        else:
            self.fs, self.root = None, s

    def join(self, *parts: str) -> str:
        return "/".join([self.root.rstrip("/"), *parts]) if self.url else str(Path(self.root, *parts))

    def isdir(self, p: str) -> bool:
        return bool(self.fs.isdir(p)) if self.fs is not None else Path(p).is_dir()

    def exists(self, p: str) -> bool:
        return bool(self.fs.exists(p)) if self.fs is not None else Path(p).exists()

    def files(self, p: str, suffix: str) -> list[str]:
        if self.fs is not None:
            names = [f for f in self.fs.ls(p, detail=False) if f.endswith(suffix) and not self.fs.isdir(f)]
        else:
            names = [str(f) for f in Path(p).iterdir() if f.suffix == suffix and f.is_file()]
        return sorted(names, key=_key)

    def load_npy(self, p: str, mmap: bool = True) -> np.ndarray:
        if self.fs is None:
            return np.load(p, mmap_mode="r" if mmap else None, allow_pickle=False)
        with self.fs.open(p, "rb") as fh:
            return np.load(io.BytesIO(fh.read()), allow_pickle=False)

    def parquet(self, p: str):
        import pyarrow.parquet as pq

        return pq.read_table(p, filesystem=self.fs) if self.fs is not None else pq.read_table(p)


def _concat_tables(tables: list):
    import pyarrow as pa

    return pa.concat_tables(tables, promote_options="default") if len(tables) > 1 else tables[0]


def _embedding_from_table(table, column: str | None, where: str):
    import pyarrow as pa

    names = table.column_names
    col = column or (EMBEDDING_COLUMN if EMBEDDING_COLUMN in names else None)
    if col is None:
        floats = [
            f.name
            for f in table.schema
            if (
                pa.types.is_list(f.type)
                or pa.types.is_fixed_size_list(f.type)
                or pa.types.is_large_list(f.type)
            )
            and pa.types.is_floating(f.type.value_type)
        ]
        if len(floats) != 1:
            raise InputError(
                f"{where}: expected one embedding column (a list of floats, named {EMBEDDING_COLUMN!r} by "
                f"default); found columns {names}; pass column="
            )
        col = floats[0]
    if col not in names:
        raise InputError(f"{where}: no column {col!r}; columns are {names}")
    arr = table.column(col).combine_chunks()
    n = len(arr)
    if arr.null_count:
        raise InputError(f"{where}: column {col!r} has {arr.null_count} missing embeddings")
    values = arr.flatten().to_numpy(zero_copy_only=False)
    if n and values.size % n:
        raise InputError(f"{where}: the rows of column {col!r} do not all have the same length")
    d = values.size // n if n else 0
    if n and not pa.types.is_fixed_size_list(arr.type):
        offsets = arr.offsets.to_numpy()
        if not np.all(np.diff(offsets) == d):
            raise InputError(f"{where}: the rows of column {col!r} do not all have the same length")
    emb = values.reshape(n, d)
    if emb.dtype.kind != "f":
        raise InputError(f"{where}: column {col!r} holds {emb.dtype}, expected floats")
    return emb, table.drop_columns([col])


def _npy_shards(fs: _FS, directory: str, *, mmap: bool):
    files = fs.files(directory, ".npy")
    if not files:
        raise FileNotFoundError(f"no .npy shards in {directory}")
    if fs.fs is None:
        return (ShardedArray(files) if len(files) > 1 else fs.load_npy(files[0], mmap)), files
    parts = [fs.load_npy(f) for f in files]
    for f, p in zip(files, parts):
        if p.ndim != 2 or p.shape[1] != parts[0].shape[1]:
            raise InputError(f"shard {f} has shape {p.shape}; expected (rows, {parts[0].shape[1]})")
    return np.concatenate(parts), files


def _shard_rows(arr, files: list[str], fs: _FS) -> list[int]:
    if hasattr(arr, "_starts"):
        return np.diff(arr._starts).astype(int).tolist()
    if len(files) == 1:
        return [int(arr.shape[0])]
    return [int(fs.load_npy(f).shape[0]) for f in files]


def _shard_number(name: str) -> str | None:
    nums = re.findall(r"\d+", name.rsplit("/", 1)[-1])
    return nums[-1].lstrip("0") or "0" if nums else None


def _clip_metadata(fs: _FS, meta_dir: str, files: list[str], rows: list[int]):
    """clip-retrieval's metadata shards, checked row for row against the embedding shards."""
    metas = fs.files(meta_dir, ".parquet")
    if not metas:
        return None
    if len(metas) != len(files):
        raise InputError(
            f"{meta_dir} has {len(metas)} metadata shards for {len(files)} embedding shards; "
            "expected one metadata_{i}.parquet per emb_{i}.npy"
        )
    tables = []
    for m, f, n in zip(metas, files, rows):
        if _shard_number(m) != _shard_number(f):
            raise InputError(f"metadata shard {m} does not pair with embedding shard {f} (numbers differ)")
        t = fs.parquet(m)
        if t.num_rows != n:
            raise InputError(f"metadata shard {m} has {t.num_rows} rows; its embedding shard {f} has {n}")
        tables.append(t)
    return _concat_tables(tables)


def read_embeddings(
    path: str | os.PathLike,
    *,
    kind: str | None = None,
    column: str | None = None,
    mmap: bool = True,
) -> tuple[Any, Any]:
    """``(embeddings, metadata)`` from any layout of the module docstring.

    ``kind``: ``'img'`` or ``'text'`` for a clip-retrieval folder with both;
    ``column``: the embedding column of parquet input (default ``embedding`` or the only
    list-of-floats column). ``metadata`` is a ``pyarrow.Table`` or ``None``.
    """
    fs = _FS(path)
    root = fs.root
    if not fs.exists(root):
        raise FileNotFoundError(f"no embeddings at {path}")
    if not fs.isdir(root):
        if root.endswith(".parquet"):
            return _embedding_from_table(fs.parquet(root), column, str(path))
        if root.endswith(".npy"):
            return fs.load_npy(root, mmap), None
        raise InputError(f"{path}: expected a .npy file, a .parquet file or an embedding folder")
    subdirs = {k: fs.join(f"{k}_emb") for k in ("img", "text")}
    present = {k: p for k, p in subdirs.items() if fs.isdir(p)}
    if present:  # a clip-retrieval output folder
        if kind is None:
            if len(present) > 1:
                raise InputError(
                    f"{path} holds both img_emb/ and text_emb/; choose one: kind='img' or 'text' "
                    f"(or pass {path}/img_emb)"
                )
            kind = next(iter(present))
        if kind not in present:
            raise InputError(f"{path} has no {kind}_emb/ folder; found {sorted(present)}")
        emb, files = _npy_shards(fs, present[kind], mmap=mmap)
        meta_dir = fs.join("metadata")
        meta = (
            _clip_metadata(fs, meta_dir, files, _shard_rows(emb, files, fs)) if fs.isdir(meta_dir) else None
        )
        return emb, meta
    npys = fs.files(root, ".npy")
    if npys:  # DIR/img_emb itself, or a plain directory of shards
        emb, files = _npy_shards(fs, root, mmap=mmap)
        parent = root.rstrip("/").rsplit("/", 1)[0] if fs.url else str(Path(root).parent)
        meta_dir = parent.rstrip("/") + "/metadata" if fs.url else str(Path(parent, "metadata"))
        leaf = root.rstrip("/").rsplit("/", 1)[-1]
        meta = None
        if leaf in ("img_emb", "text_emb") and fs.isdir(meta_dir):
            meta = _clip_metadata(fs, meta_dir, files, _shard_rows(emb, files, fs))
        return emb, meta
    parquets = fs.files(root, ".parquet")
    if parquets:
        parts = [_embedding_from_table(fs.parquet(p), column, p) for p in parquets]
        emb = np.concatenate([e for e, _ in parts]) if len(parts) > 1 else parts[0][0]
        return emb, _concat_tables([m for _, m in parts])
    raise FileNotFoundError(
        f"no embeddings in {path}: expected .npy shards, img_emb/ or text_emb/ folders, or parquet files"
    )


def read_metadata(path: str | os.PathLike, *, kind: str | None = None):
    """Only the metadata of an embedding folder (or of a parquet file/folder of metadata).

    A parquet file or folder without an embedding column is returned whole.
    """
    fs = _FS(path)
    root = fs.root
    if not fs.isdir(root) and root.endswith(".parquet"):
        return fs.parquet(root)
    if (
        fs.isdir(root)
        and not fs.files(root, ".npy")
        and fs.files(root, ".parquet")
        and not any(fs.isdir(fs.join(f"{k}_emb")) for k in ("img", "text"))
    ):
        tables = [fs.parquet(p) for p in fs.files(root, ".parquet")]
        table = _concat_tables(tables)
        return table.drop_columns([EMBEDDING_COLUMN]) if EMBEDDING_COLUMN in table.column_names else table
    return read_embeddings(path, kind=kind)[1]


def attach_metadata(ids: np.ndarray, metadata, rows: np.ndarray | None = None) -> list[list[dict | None]]:
    """Search results ``ids`` (n_queries, k) as lists of metadata rows (``None`` for padding).

    ``rows``: the gallery rows of ``ids`` when ids are not row numbers (map them first
    with the index's ids); by default ``ids`` are the rows.
    """
    rows = np.asarray(ids if rows is None else rows, dtype=np.int64)
    n = metadata.num_rows
    if rows.size and rows.max() >= n:
        raise InputError(f"result rows up to {int(rows.max())} but the metadata has {n} rows")
    flat = rows.ravel()
    valid = flat >= 0
    import pyarrow as pa

    taken = metadata.take(pa.array(np.where(valid, flat, 0))).to_pylist()
    out: list[dict | None] = [r if ok else None for r, ok in zip(taken, valid)]
    k = rows.shape[1] if rows.ndim == 2 else 1
    return [out[i : i + k] for i in range(0, len(out), k)]


def cli_embeddings(path: str, what: str):
    """The ``dehub build``/``search`` hook: the embeddings of a layout this module reads, or
    ``None`` for a local ``.npy`` file or plain shard directory (read by the CLI itself)."""
    fs = _FS(path)
    if not fs.url:
        p = Path(fs.root)
        if p.is_file() and p.suffix != ".parquet":
            return None  # .npy / .npz / anything else: the CLI's own reader and messages
        if not p.exists():
            return None
        if p.is_dir() and not (p / "img_emb").is_dir() and not (p / "text_emb").is_dir():
            if any(p.glob("*.npy")) or not any(p.glob("*.parquet")):
                return None
    try:
        emb, _ = read_embeddings(path)
    except (FileNotFoundError, ValueError) as exc:
        raise InputError(f"{what} {path}: {exc}") from None
    return emb
