"""Per-item metadata kept with an index (``url``, ``caption``, ... of a clip-retrieval folder).

An index stores its arrays in one container file; per-item metadata columns (strings of
any length, nulls) live next to it in ``<index>.items.parquet``: one row per item, an
``id`` column with the item's id, then the metadata columns. The index header records the
file's name, SHA-256, row count and columns (``metadata["item_metadata"]``), so a replaced
or edited file is refused on load. Rows are matched by id, not by position: after
``Index.add`` / ``remove`` the table still answers for the ids it has (new items get
``None`` until their metadata is set).

:class:`ItemMetadata` is what :meth:`dehub.Index.metadata_rows` reads; pyarrow (the ``io``
or ``stores`` extra) is needed only when an index has item metadata.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from ._errors import InputError
from ._extras import require
from ._io import atomic_path, sha256_file

__all__ = ["ItemMetadata", "ItemMetadataError", "items_path"]

_SUFFIX = ".items.parquet"


class ItemMetadataError(InputError):
    """An index's item-metadata file is missing, replaced, or does not fit the index."""


def items_path(index_path: str | os.PathLike) -> Path:
    """``<index>.items.parquet``: where an index's per-item metadata is written."""
    return Path(str(index_path) + _SUFFIX)


def _pyarrow():
    return require("pyarrow", "per-item metadata"), require("pyarrow.parquet", "per-item metadata")


class ItemMetadata:
    """Metadata rows by item id: a ``pyarrow.Table`` with an int64 ``id`` column."""

    def __init__(self, table) -> None:
        pa, _ = _pyarrow()
        if "id" not in table.column_names:
            raise InputError(f"item metadata needs an 'id' column; columns: {table.column_names}")
        ids = np.asarray(table["id"].to_numpy(zero_copy_only=False), dtype=np.int64)
        if np.unique(ids).size != ids.size:
            raise InputError("item metadata has duplicate ids")
        self.table = table.set_column(table.column_names.index("id"), "id", pa.array(ids, pa.int64()))
        self._row = {int(i): r for r, i in enumerate(ids.tolist())}

    @classmethod
    def aligned(cls, table, ids) -> ItemMetadata:
        """From a table whose rows are the gallery rows (``ids[i]`` is row ``i``'s id).

        An ``id`` column of the table is replaced by ``ids`` (clip-retrieval's metadata
        has none; ``dehub embed``'s is the row number, which the index's ids replace).
        """
        pa, _ = _pyarrow()
        ids = np.asarray(ids, dtype=np.int64)
        if table.num_rows != ids.shape[0]:
            raise InputError(
                f"item metadata has {table.num_rows} rows; expected one per gallery item ({ids.shape[0]})"
            )
        if "id" in table.column_names:
            table = table.drop_columns(["id"])
        return cls(table.add_column(0, "id", pa.array(ids, pa.int64())))

    @property
    def columns(self) -> list[str]:
        return [c for c in self.table.column_names if c != "id"]

    def rows(self, ids) -> list[dict[str, Any] | None]:
        """The metadata row (without ``id``) of each id; ``None`` for ids it has none of (and -1)."""
        pa, _ = _pyarrow()
        wanted = [self._row.get(int(i)) for i in np.asarray(ids, dtype=np.int64).ravel().tolist()]
        present = [r for r in wanted if r is not None]
        got = iter(self.table.take(pa.array(present, pa.int64())).drop_columns(["id"]).to_pylist())
        return [next(got) if r is not None else None for r in wanted]

    def table_for(self, ids):
        """A table aligned with ``ids`` (nulls for ids without metadata), without ``id``."""
        pa, _ = _pyarrow()
        take = [self._row.get(int(i)) for i in np.asarray(ids, dtype=np.int64).tolist()]
        return self.table.take(pa.array(take, pa.int64())).drop_columns(["id"])

    # ------------------------------------------------------------------ files
    def write(self, index_path: str | os.PathLike) -> dict[str, Any]:
        """Write ``<index>.items.parquet`` atomically; returns the header record."""
        _, pq = _pyarrow()
        path = items_path(index_path)
        with atomic_path(path) as tmp:
            pq.write_table(self.table, tmp)
        return {
            "file": path.name,
            "sha256": sha256_file(path),
            "rows": int(self.table.num_rows),
            "columns": self.columns,
        }

    @classmethod
    def read(cls, index_path: str | os.PathLike, record: dict[str, Any]) -> ItemMetadata:
        """Read the file an index header records, checking name, SHA-256 and rows."""
        _, pq = _pyarrow()
        if not isinstance(record, dict) or not isinstance(record.get("file"), str):
            raise ItemMetadataError(f"{index_path}: item_metadata record is malformed: {record!r}")
        path = Path(index_path).parent / record["file"]
        if path.name != items_path(Path(index_path).name).name or not path.is_file():
            raise ItemMetadataError(
                f"{index_path}: its item metadata {items_path(index_path).name} is missing (expected next to it)"
            )
        if sha256_file(path) != record.get("sha256"):
            raise ItemMetadataError(
                f"{path}: replaced or modified after the index was saved (SHA-256 differs)"
            )
        out = cls(pq.read_table(path))
        if out.table.num_rows != record.get("rows"):
            raise ItemMetadataError(
                f"{path}: {out.table.num_rows} rows; the index recorded {record.get('rows')}"
            )
        return out
