"""Bring an exported store up to date with its index, checking what the store really searches.

After ``Index.add`` / ``remove`` / ``add_reference`` the index's items and biases have
changed; and a store may have been changed behind dehub's back (a coordinate edited, rows
inserted twice, the collection's distance switched). The stored ``bias`` column is only a
copy for reading: the store ranks by the *vectors* it holds and the *metric* it applies.
So :func:`verify_store` reads back, for every row, the id and the whole augmented vector,
and the store's metric, and compares them with what the index says the store must hold:

* ``missing``: ids of the index the store lacks; ``extra``: ids the store has that the
  index does not (removed items);
* ``duplicates``: ids stored more than once (LanceDB tables have no primary key);
* ``changed``: ids whose stored vector differs from the index's augmented vector in any
  coordinate (the searched bias coordinate included) beyond float32 rounding;
* ``metric``: the store's metric / distance / operator class when it is not the one the
  form needs (a Qdrant collection switched from Dot to Euclid ranks differently).

:func:`update_store` repairs each difference: deletes extra rows and every copy of a
duplicated id, (re)writes missing, duplicated and changed rows (keeping their metadata),
and rebuilds a collection or index whose metric is wrong. In ``d+2``, an added item whose
``|[r, b]|`` exceeds the stored common norm ``M`` makes it rewrite every item with the new
``M``. FAISS files are rewritten whole (one atomic file; the sidecar's checksums already
detect any edit of the file).

The CLI: ``dehub export INDEX --to lancedb|qdrant|pgvector|faiss PATH --update`` (repair)
or ``--verify`` (report only; exit status 1 when the store differs).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from .._errors import InputError, InputTypeError
from ..engine import import_faiss
from ._common import metadata_table, seal_description, source_metadata
from .faiss import export_faiss
from .lancedb import lancedb_arrow_table, lancedb_connect, lancedb_description, lancedb_store_description
from .pgvector import (
    pgvector_check_index,
    pgvector_columns,
    pgvector_connect,
    pgvector_description,
    pgvector_rows,
    pgvector_write,
)
from .qdrant import qdrant_client_for, qdrant_description, qdrant_distance, upsert_points
from .sidecar import SidecarError, load_sidecar
from .vectors import augment_items, item_vectors

__all__ = ["update_store", "verify_store", "StoreDiff", "STORES"]

STORES = ("faiss", "lancedb", "qdrant", "pgvector")
_RTOL = 1e-6


class StoreDiff(dict):
    """What a store holds that differs from its index (a dict: lists of ids, counts, notes)."""

    @property
    def clean(self) -> bool:
        return not (
            self["missing"] or self["extra"] or self["duplicates"] or self["changed"] or self["metric"]
        )

    def summary(self) -> str:
        parts = [
            f"{len(self['missing'])} missing",
            f"{len(self['extra'])} extra",
            f"{len(self['duplicates'])} duplicated ids",
            f"{len(self['changed'])} with a different searched vector",
        ]
        if self["metric"]:
            parts.append(f"metric {self['metric']}")
        return f"{self['rows']} rows for {self['n_items']} items: " + ", ".join(parts)


def _expected(model, desc: dict):
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


def _diff(ids: np.ndarray, want: np.ndarray, store_ids: np.ndarray, store_vecs, *, normalized: bool) -> dict:
    """Compare the store's (ids, vectors) rows with the index's (ids, expected vectors).

    ``ids`` are the index's (unique, checked at its boundary); array operations throughout
    (a store holds millions of rows)."""
    store_ids = np.asarray(store_ids, dtype=np.int64)
    uniq, counts = np.unique(store_ids, return_counts=True)
    duplicates = uniq[counts > 1]
    missing = ids[~np.isin(ids, uniq)]  # in the index's order
    extra = uniq[~np.isin(uniq, ids)]
    changed = np.empty(0, dtype=np.int64)
    if store_vecs is not None and store_ids.size and ids.size:
        order = np.argsort(ids, kind="stable")
        sorted_ids = ids[order]
        pos = np.minimum(np.searchsorted(sorted_ids, store_ids), ids.size - 1)
        s_rows = np.flatnonzero((sorted_ids[pos] == store_ids) & ~np.isin(store_ids, duplicates))
        if s_rows.size:
            i_rows = order[pos[s_rows]]
            got = np.asarray(store_vecs, dtype=np.float64)[s_rows]
            exp = want[i_rows].astype(np.float64)
            if normalized:  # cosine collections store unit vectors
                exp = exp / np.maximum(np.linalg.norm(exp, axis=1, keepdims=True), 1e-30)
            if got.shape[1] != exp.shape[1]:
                bad: np.ndarray = np.ones(s_rows.size, bool)
            else:
                tol = _RTOL * np.maximum(1.0, np.abs(exp)) + 1e-6
                bad = np.asarray((np.abs(got - exp) > tol).any(axis=1))
            changed = np.sort(store_ids[s_rows[bad]])
    return {
        "missing": missing.tolist(),
        "extra": extra.tolist(),
        "duplicates": duplicates.tolist(),
        "changed": changed.tolist(),
    }


def _report(diff: dict, n_items: int, rows: int, metric: str | None) -> StoreDiff:
    out = StoreDiff(diff)
    out.update({"n_items": int(n_items), "rows": int(rows), "metric": metric})
    return out


def _stats(diff: StoreDiff, write: np.ndarray, grew: bool, metric_fixed: bool) -> dict[str, Any]:
    return {
        "added": len(diff["missing"]),
        "removed": len(diff["extra"]),
        "updated": int(write.size),
        "duplicates": len(diff["duplicates"]),
        "repaired": len(diff["changed"]),
        "metric_fixed": bool(metric_fixed),
        "rewritten": bool(grew),
        "diff": diff,
    }


def _rows_to_write(ids: np.ndarray, diff: dict, grew: bool) -> np.ndarray:
    if grew:
        return np.arange(ids.shape[0])
    need = np.asarray(diff["missing"] + diff["duplicates"] + diff["changed"], dtype=np.int64)
    return np.flatnonzero(np.isin(ids, need)).astype(np.int64)


# ------------------------------------------------------------------------------ FAISS
def _faiss(index, path: Path, repair: bool) -> dict[str, Any]:
    try:
        side = load_sidecar(path)
        problem = None
    except SidecarError as exc:
        if not repair:
            raise
        side, problem = load_sidecar(path, verify=False), str(exc)
    ids = np.asarray(index.ids, dtype=np.int64)
    old = np.asarray(side["ids"], dtype=np.int64)
    items, want, grew = _expected(index.model, side)
    diff = _diff(ids, want, old, None, normalized=False)
    if not grew and not diff["missing"] and not diff["extra"]:
        faiss = import_faiss()
        fidx = faiss.read_index(str(path))
        if side["index_type"] in ("flat", "hnsw"):  # IndexIDMap: rows in the sidecar's id order
            stored = faiss.downcast_index(fidx).index.reconstruct_n(0, fidx.ntotal)
            diff = _diff(ids, want, old, stored, normalized=False)
    report = _report(diff, ids.shape[0], len(old), None)
    if problem:
        report["file"] = problem
    if not repair:
        return dict(report)
    params: dict[str, Any] = {}
    sp = side.get("search_params", {})
    if "nprobe" in sp:
        params["nprobe"] = sp["nprobe"]
    if "efSearch" in sp:
        params["ef_search"] = sp["efSearch"]
    export_faiss(index, path, index_type=side["index_type"], form=side.get("form", "d+1"), **params)
    stats = _stats(report, np.arange(ids.shape[0]), True, False)
    stats["updated"] = len(set(ids.tolist()) & set(old.tolist()))
    return stats


# ------------------------------------------------------------------------------ LanceDB
def _lancedb(index, uri, name: str, metadata, repair: bool) -> dict[str, Any]:
    import pyarrow as pa

    db = lancedb_connect(uri)
    table = db.open_table(name)
    desc = lancedb_description(table)
    ids = np.asarray(index.ids, dtype=np.int64)
    items, want, grew = _expected(index.model, desc)
    data = table.to_arrow()
    store_ids = data["id"].to_numpy().astype(np.int64)
    store_vecs = (
        np.asarray(data["vector"].combine_chunks().flatten().to_numpy(zero_copy_only=False)).reshape(
            len(store_ids), -1
        )
        if len(store_ids)
        else np.zeros((0, want.shape[1]), np.float32)
    )
    report = _report(
        _diff(ids, want, store_ids, store_vecs, normalized=False), ids.shape[0], len(store_ids), None
    )
    if not repair:
        return dict(report)
    write = _rows_to_write(ids, report, grew)
    if grew:
        desc["M"] = items.M
    desc["n_items"] = int(ids.shape[0])
    meta = metadata_table(source_metadata(index, metadata), ids.shape[0])
    extra_cols = [f.name for f in table.schema if f.name not in ("id", "vector", "bias")]
    sub_meta = None
    if meta is not None and set(meta.column_names) != set(extra_cols):
        meta = None  # the table was exported with other columns: keep what it holds
    if write.size and extra_cols:
        if meta is not None:
            sub_meta = meta.take(pa.array(write))
        else:  # keep existing rows' metadata (the first copy of a duplicate), nulls for new rows
            where: dict[int, int] = {}
            for r, i in enumerate(store_ids.tolist()):
                where.setdefault(int(i), r)
            take = [where.get(int(ids[r])) for r in write]
            sub_meta = data.select(extra_cols).take(pa.array(take, pa.int64()))
    delete = sorted(set(report["extra"]) | {int(ids[r]) for r in write} & set(store_ids.tolist()))
    for start in range(0, len(delete), 1000):
        chunk = ",".join(str(int(i)) for i in delete[start : start + 1000])
        table.delete(f"id IN ({chunk})")
    if write.size:
        rows = lancedb_arrow_table(ids[write], want[write], items.bias[write], sub_meta, desc).cast(
            table.schema
        )
        table.add(rows)
    if desc.get("index") and (delete or write.size):
        table.optimize()  # fold the new rows into the ANN index
    lancedb_store_description(table, desc)
    return _stats(report, write, grew, False)


# ------------------------------------------------------------------------------ Qdrant
def _qdrant(index, location, name: str, metadata, repair: bool) -> dict[str, Any]:
    from qdrant_client import models

    client = qdrant_client_for(location)
    desc = qdrant_description(client, name)
    info = client.get_collection(name)
    params = info.config.params.vectors
    actual = str(getattr(params.distance, "value", params.distance)).lower()
    want_metric = str(desc["metric"]).lower()
    metric_note = None
    if actual != want_metric or int(params.size) != int(desc["dim"]):
        metric_note = f"{actual}/{params.size} stored, {want_metric}/{desc['dim']} needed"
    ids = np.asarray(index.ids, dtype=np.int64)
    items, want, grew = _expected(index.model, desc)
    store_ids: list[int] = []
    vecs: list[list[float]] = []
    payloads: dict[int, dict] = {}
    offset = None
    while True:
        points, offset = client.scroll(name, limit=4096, offset=offset, with_payload=True, with_vectors=True)
        for p in points:
            store_ids.append(int(p.id))
            vecs.append(list(p.vector))
            payloads[int(p.id)] = {k: v for k, v in (p.payload or {}).items() if k not in ("id", "bias")}
        if offset is None:
            break
    sid = np.asarray(store_ids, dtype=np.int64)
    sv = np.asarray(vecs, dtype=np.float64) if vecs else None
    diff = _diff(ids, want, sid, sv, normalized=want_metric == "cosine")
    report = _report(diff, ids.shape[0], len(store_ids), metric_note)
    if not repair:
        return dict(report)
    if grew:
        desc["M"] = items.M
    desc["n_items"] = int(ids.shape[0])
    meta = metadata_table(source_metadata(index, metadata), ids.shape[0])
    if metric_note:  # the distance cannot change in place: recreate, keep the payloads
        client.delete_collection(name)
        hnsw = info.config.hnsw_config
        client.create_collection(
            collection_name=name,
            vectors_config=models.VectorParams(size=int(desc["dim"]), distance=qdrant_distance(want_metric)),
            hnsw_config=models.HnswConfigDiff(m=hnsw.m, ef_construct=hnsw.ef_construct),
            metadata=seal_description(desc),
        )
        write = np.arange(ids.shape[0])
    else:
        write = _rows_to_write(ids, report, grew)
        if report["extra"]:
            client.delete(
                name, points_selector=models.PointIdsList(points=[int(i) for i in report["extra"]]), wait=True
            )
    if write.size:
        if meta is not None:
            sub_meta = meta.take(write)
        else:
            import pyarrow as pa

            rows = [payloads.get(int(ids[r]), {}) for r in write]
            keys = sorted({k for row in rows for k in row})
            sub_meta = pa.table({k: [row.get(k) for row in rows] for k in keys}) if keys else None
        upsert_points(client, name, ids[write], want[write], items.bias[write], sub_meta)
    client.update_collection(name, metadata=seal_description(desc))
    return _stats(report, write, grew, bool(metric_note))


# ------------------------------------------------------------------------------ pgvector
def _pgvector(index, dsn, name: str, metadata, repair: bool) -> dict[str, Any]:
    conn = pgvector_connect(dsn)
    desc = pgvector_description(conn, name)
    ids = np.asarray(index.ids, dtype=np.int64)
    items, want, grew = _expected(index.model, desc)
    store_ids, store_vecs = pgvector_rows(conn, name)
    metric_note = pgvector_check_index(conn, name, desc)
    report = _report(
        _diff(ids, want, store_ids, store_vecs, normalized=False), ids.shape[0], len(store_ids), metric_note
    )
    if not repair:
        return dict(report)
    write = _rows_to_write(ids, report, grew)
    if grew:
        desc["M"] = items.M
    desc["n_items"] = int(ids.shape[0])
    meta = metadata_table(source_metadata(index, metadata), ids.shape[0])
    if meta is not None and not set(meta.column_names) <= pgvector_columns(conn, name):
        meta = None  # the table was exported with other columns: keep what it holds
    delete = sorted(set(report["extra"]) | set(report["duplicates"]))
    pgvector_write(
        conn,
        name,
        desc,
        delete=delete,
        ids=ids[write],
        vectors=want[write],
        bias=items.bias[write],
        meta=meta.take(write) if meta is not None and write.size else None,
        fix_index=bool(metric_note),
    )
    return _stats(report, write, grew, bool(metric_note))


def _run(index, to: str, location, name: str, metadata, repair: bool) -> dict:
    if getattr(index, "ids", None) is None or getattr(index, "model", None) is None:
        raise InputTypeError(
            f"update_store needs a dehub.Index (model + ids); received {type(index).__name__}"
        )
    augment_items(index.model, "d+1")  # raises for methods without a fixed per-item bias
    if to == "faiss":
        return _faiss(index, Path(location), repair)
    if to == "lancedb":
        return _lancedb(index, location, name, metadata, repair)
    if to == "qdrant":
        return _qdrant(index, location, name, metadata, repair)
    if to == "pgvector":
        return _pgvector(index, location, name, metadata, repair)
    raise InputError(f"to must be one of {', '.join(repr(s) for s in STORES)}; received {to!r}")


def update_store(
    index, to: str, location: str | os.PathLike | Any, *, name: str = "dehub", metadata=None
) -> dict:
    """Make the store exported from ``index`` hold exactly what ``index`` says it must.

    ``to``: 'faiss' (``location`` = the FAISS file), 'lancedb' (database URI or
    connection), 'qdrant' (client, path, ``":memory:"`` or URL) or 'pgvector'
    (``postgresql://`` DSN or connection); ``name``: the table / collection.
    ``metadata``: per-item metadata aligned with the index's rows (default: kept for
    existing items, null for new ones). Returns counts ``{"added", "removed", "updated",
    "duplicates", "repaired", "metric_fixed", "rewritten"}`` and the ``diff`` found before
    the repair (:func:`verify_store`).
    """
    return _run(index, to, location, name, metadata, True)


def verify_store(index, to: str, location: str | os.PathLike | Any, *, name: str = "dehub") -> StoreDiff:
    """Compare what the store searches (ids, row count, augmented vectors, metric) with
    ``index``, without writing; see the module docstring for the fields."""
    out = _run(index, to, location, name, None, False)
    diff = StoreDiff(out)
    return diff
