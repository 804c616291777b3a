"""Pieces the store exporters share: ids, per-item metadata, the export description."""

from __future__ import annotations

from typing import Any

import numpy as np

from .._errors import InputError, InputTypeError
from .._json import Seal
from .._version import __version__
from .vectors import AugmentedItems

#: Every store export's description is sealed (:class:`dehub._json.Seal`): version 2
#: carries ``description_sha256``; an edited or unsealed (version 1) description is refused.
STORE_SEAL = Seal("dehub.store-export", 2, version_key="version", checksum_key="description_sha256")


def seal_description(desc: dict) -> dict:
    """``desc`` as it is stored: with kind, version and its self-checksum (a new dict).

    Top-level ``None`` values are left out (read back as missing, ``desc.get`` gives
    None): Qdrant's metadata update deletes the keys it is given as null, which would
    break the checksum."""
    return STORE_SEAL.apply({k: v for k, v in desc.items() if v is not None})


def check_description(desc: Any, *, source: str) -> dict:
    """A stored description, checked against its seal (``ValueError`` naming ``source``)."""
    return STORE_SEAL.check(desc, source=source, error=ValueError)


__all__ = [
    "export_ids",
    "metadata_table",
    "describe",
    "RESERVED_COLUMNS",
    "source_metadata",
    "seal_description",
    "check_description",
]

#: Columns/payload keys the exports write themselves; metadata may not use them.
RESERVED_COLUMNS = ("id", "vector", "bias", "_distance", "_score", "_rowid")


def export_ids(source: Any, ids, n: int) -> np.ndarray:
    """The item ids of an export: ``ids``, else the Index's ids, else ``0..n-1``."""
    if ids is None:
        ids = getattr(source, "ids", None)
    out = np.arange(n, dtype=np.int64) if ids is None else np.asarray(ids)
    if out.shape != (n,):
        raise InputError(f"ids must have one id per gallery row, shape ({n},); received {out.shape}")
    if out.dtype.kind not in "iu" and n:
        raise InputError(f"ids must be integers; received dtype {out.dtype}")
    if n and (out.min() < 0 or (out.dtype.kind == "u" and out.max() > np.iinfo(np.int64).max)):
        raise InputError("ids must be non-negative int64 values (store point ids are unsigned)")
    out = out.astype(np.int64)
    if np.unique(out).shape[0] != n:
        raise InputError("ids must be unique")
    return out


def source_metadata(source: Any, metadata):
    """``metadata`` if given, else the index's own item metadata (url, caption...) aligned
    with its rows (:meth:`dehub.Index.metadata_rows`), else ``None``."""
    if metadata is not None:
        return metadata
    items = getattr(source, "item_metadata", None)
    if items is None:
        return None
    return items.table_for(source.ids)


def metadata_table(metadata, n: int):
    """Per-item metadata as a ``pyarrow.Table`` of ``n`` rows (or ``None``).

    Accepts a ``pyarrow.Table``, a ``pandas.DataFrame`` or a dict of equal-length columns,
    aligned with the gallery rows.
    """
    if metadata is None:
        return None
    import pyarrow as pa

    if isinstance(metadata, pa.Table):
        table = metadata
    elif isinstance(metadata, dict):
        table = pa.table(metadata)
    elif hasattr(metadata, "to_dict") and hasattr(metadata, "columns"):
        table = pa.Table.from_pandas(metadata, preserve_index=False)
    else:
        raise InputTypeError(
            "metadata must be a pyarrow.Table, a pandas.DataFrame or a dict of columns; "
            f"received {type(metadata).__name__}"
        )
    if table.num_rows != n:
        raise InputError(f"metadata has {table.num_rows} rows; expected one per gallery item ({n})")
    clash = [c for c in table.column_names if c in RESERVED_COLUMNS and c != "id"]
    if clash:
        raise InputError(f"metadata columns {clash} collide with the export's own columns {RESERVED_COLUMNS}")
    if "id" in table.column_names:
        table = table.drop_columns(["id"])  # the export writes the index's ids itself
    return table


def describe(source: Any, items: AugmentedItems, *, metric: str, dim: int, extra: dict | None = None) -> dict:
    """The JSON-able description stored with an export (table / collection metadata)."""
    model = getattr(source, "model", source)
    params = {}
    for k, v in model.get_params().items():
        params[k] = v.item() if isinstance(v, np.generic) else v
    desc = {
        "kind": STORE_SEAL.kind,
        "version": STORE_SEAL.version,
        "created_by": f"dehub {__version__}",
        "method": model.name,
        "params": params,
        "form": items.form,
        "M": items.M,
        "d": int(items.d),
        "dim": int(dim),
        "metric": metric,
        "query_transform": (
            "[q, -1] then zeros to dim" if items.form == "d+1" else "[q, -1, 0] then zeros to dim"
        ),
    }
    if extra:
        desc.update(extra)
    return desc
