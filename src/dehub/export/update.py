"""Bring an exported store up to date with its (updated) index.

After ``Index.add`` / ``remove`` / ``add_reference`` the index's items and biases have
changed; :func:`update_store` makes the store match without re-exporting what did not
change:

* items no longer in the index are deleted; new items are inserted; items whose bias
  changed (``add_reference`` changes every bias) get their vector and ``bias`` rewritten,
  keeping their metadata;
* d+2: if a new item's ``|[r, b]|`` exceeds the stored common norm ``M``, every item is
  rewritten with the new ``M`` (the description is updated with it);
* FAISS files are rewritten as a whole (one atomic file; same form, index type and
  search parameters as the sidecar says).

The CLI: ``dehub export INDEX --to lancedb|qdrant|faiss PATH --update`` after
``dehub add`` / ``dehub remove`` on INDEX.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from ._common import metadata_table, seal_description
from .vectors import augment_items, item_vectors

__all__ = ["update_store"]

_BIAS_RTOL = 1e-6


def _changed(index_ids, index_bias, store_ids, store_bias):
    """(rows of the index to write, store ids to delete)."""
    pos = {int(i): b for i, b in zip(store_ids, store_bias)}
    write = [
        r
        for r, (i, b) in enumerate(zip(index_ids.tolist(), index_bias.tolist()))
        if i not in pos or abs(pos[i] - b) > _BIAS_RTOL * max(1.0, abs(b))
    ]
    keep = set(index_ids.tolist())
    delete = [i for i in pos if i not in keep]
    return np.asarray(write, dtype=np.int64), delete


def _new_items(model, desc: dict):
    """Augmented vectors with the stored form/dim; M kept unless it must grow."""
    form = desc["form"]
    dim = int(desc["dim"])
    if form == "plain":
        base = item_vectors(model.gallery_, model.bias_, "d+1")
        return base, base.vectors[:, : base.d], False
    try:
        items = item_vectors(model.gallery_, model.bias_, form, M=desc.get("M"), dim=dim)
        return items, items.vectors, False
    except ValueError:  # d+2 and a new |x| > M: all items get the larger M
        items = item_vectors(model.gallery_, model.bias_, form, dim=dim)
        return items, items.vectors, True


def _update_faiss(index, path) -> dict[str, Any]:
    from .faiss import export_faiss
    from .sidecar import load_sidecar

    side = load_sidecar(path)
    params: dict[str, Any] = {}
    sp = side.get("search_params", {})
    if "nprobe" in sp:
        params["nprobe"] = sp["nprobe"]
    if "efSearch" in sp:
        params["ef_search"] = sp["efSearch"]
    old = set(side["ids"])
    export_faiss(index, path, index_type=side["index_type"], form=side.get("form", "d+1"), **params)
    new = set(np.asarray(index.ids).tolist())
    return {"added": len(new - old), "removed": len(old - new), "updated": len(new & old), "rewritten": True}


def _update_lancedb(index, uri, name: str, metadata) -> dict[str, Any]:
    import pyarrow as pa

    from .lancedb import _arrow_table, _connect, lancedb_description

    db = _connect(uri)
    table = db.open_table(name)
    desc = lancedb_description(table)
    model = index.model
    ids = np.asarray(index.ids, dtype=np.int64)
    items, vectors, grew = _new_items(model, desc)
    stored = _lance_columns(table, ["id", "bias"])
    write, delete = _changed(ids, items.bias, stored["id"].to_numpy(), stored["bias"].to_numpy())
    if grew:
        write = np.arange(ids.shape[0])
        desc["M"] = items.M
    desc["n_items"] = int(ids.shape[0])
    meta = metadata_table(metadata, ids.shape[0])
    extra_cols = [f for f in table.schema if f.name not in ("id", "vector", "bias")]
    if delete:
        for start in range(0, len(delete), 1000):
            chunk = ",".join(str(int(i)) for i in delete[start : start + 1000])
            table.delete(f"id IN ({chunk})")
    if write.size:
        sub_meta = None
        if extra_cols:
            if meta is not None:
                sub_meta = meta.take(pa.array(write))
            else:  # keep existing rows' metadata, nulls for new rows
                old = _lance_columns(table, ["id"] + [f.name for f in extra_cols])
                where = {int(i): r for r, i in enumerate(old["id"].to_pylist())}
                take = [where.get(int(ids[r])) for r in write]
                sub_meta = old.drop_columns(["id"]).take(pa.array(take, pa.int64()))
        data = _arrow_table(ids[write], vectors[write], items.bias[write], sub_meta, desc)
        data = data.cast(table.schema)
        table.merge_insert("id").when_matched_update_all().when_not_matched_insert_all().execute(data)
    if desc.get("index"):
        table.optimize()  # fold new rows into the ANN index
    _set_lancedb_description(table, desc)
    return {
        "added": int(sum(1 for r in write if int(ids[r]) not in set(stored["id"].to_pylist()))),
        "removed": len(delete),
        "updated": int(write.size),
        "rewritten": bool(grew),
    }


def _lance_columns(table, columns: list[str]):
    """Some columns of every row (a scan, without reading the vectors)."""
    n = table.count_rows()
    return table.search().select(columns).limit(max(n, 1)).to_arrow().select(columns)


def _set_lancedb_description(table, desc: dict) -> None:
    text = json.dumps(seal_description(desc), sort_keys=True)
    if hasattr(table, "update_field_metadata"):
        table.update_field_metadata({"path": "vector", "metadata": {"dehub": text}})
    else:  # pragma: no cover - lancedb < 0.33
        table.replace_field_metadata("vector", {"dehub": text})


def _update_qdrant(index, location, name: str, metadata) -> dict[str, Any]:
    from .qdrant import qdrant_client_for, qdrant_description, upsert_points

    client = qdrant_client_for(location)
    desc = qdrant_description(client, name)
    model = index.model
    ids = np.asarray(index.ids, dtype=np.int64)
    items, vectors, grew = _new_items(model, desc)
    store_ids, store_bias = [], []
    offset = None
    while True:
        points, offset = client.scroll(
            name, limit=4096, offset=offset, with_payload=["bias"], with_vectors=False
        )
        for p in points:
            store_ids.append(int(p.id))
            store_bias.append(float((p.payload or {}).get("bias", np.nan)))
        if offset is None:
            break
    write, delete = _changed(ids, items.bias, np.asarray(store_ids), np.asarray(store_bias))
    if grew:
        write = np.arange(ids.shape[0])
        desc["M"] = items.M
    desc["n_items"] = int(ids.shape[0])
    if delete:
        from qdrant_client import models

        client.delete(name, points_selector=models.PointIdsList(points=[int(i) for i in delete]), wait=True)
    meta = metadata_table(metadata, ids.shape[0])
    if write.size:
        existing = set(store_ids)
        sub_meta = meta.take(write) if meta is not None else None
        if sub_meta is None:  # keep the payload of points that exist
            keep_ids = [int(ids[r]) for r in write if int(ids[r]) in existing]
            old = {
                int(p.id): dict(p.payload or {}) for p in client.retrieve(name, keep_ids, with_payload=True)
            }
            import pyarrow as pa

            rows = [
                {k: v for k, v in old.get(int(ids[r]), {}).items() if k not in ("id", "bias")} for r in write
            ]
            keys = sorted({k for row in rows for k in row})
            sub_meta = pa.table({k: [row.get(k) for row in rows] for k in keys}) if keys else None
        upsert_points(client, name, ids[write], vectors[write], items.bias[write], sub_meta)
    client.update_collection(name, metadata=seal_description(desc))
    return {
        "added": int(sum(1 for r in write if int(ids[r]) not in set(store_ids))),
        "removed": len(delete),
        "updated": int(write.size),
        "rewritten": bool(grew),
    }


def update_store(
    index, to: str, location: str | os.PathLike | Any, *, name: str = "dehub", metadata=None
) -> dict:
    """Make the store exported from ``index`` (before its updates) match ``index`` now.

    ``to``: 'faiss' (``location`` = the FAISS file), 'lancedb' (database URI or
    connection) or 'qdrant' (client, path, ``":memory:"`` or URL); ``name``: the table /
    collection. ``metadata``: per-item metadata aligned with the index's rows (default:
    kept for existing items, null for new ones). Returns counts
    ``{"added", "removed", "updated", "rewritten"}``.
    """
    if getattr(index, "ids", None) is None or getattr(index, "model", None) is None:
        raise TypeError(f"update_store needs a dehub.Index (model + ids); received {type(index).__name__}")
    augment_items(index.model, "d+1")  # raises for methods without a fixed per-item bias
    if to == "faiss":
        return _update_faiss(index, Path(location))
    if to == "lancedb":
        return _update_lancedb(index, location, name, metadata)
    if to == "qdrant":
        return _update_qdrant(index, location, name, metadata)
    raise ValueError(f"to must be one of 'faiss', 'lancedb', 'qdrant'; received {to!r}")
