"""Export a corrected gallery to a LanceDB table (an embedded, on-disk database).

The table (named ``dehub`` unless ``name=`` says otherwise) has the columns ``id``
(int64, the index's item ids), ``vector`` (the augmented vector, float32,
:mod:`dehub.export.vectors`), ``bias`` (float32) and the per-item metadata columns. The
export description (form, ``M``, ``d``, ``dim``, metric, method, parameters, search
parameters) is the metadata key ``dehub`` (JSON) of the ``vector`` field (and of the schema).

Metric: ``dot`` for d+1 (LanceDB's dot distance is ``1 - x . y``: ascending distance is
descending corrected score); ``l2`` (default) or ``cosine`` for d+2.

Without an index LanceDB searches exhaustively: the top-k equals dehub's exact corrected
top-k. With ``index="ivf_pq"`` (or ``"ivf_flat"``, ``"ivf_hnsw_sq"``) it searches an ANN
index; PQ needs ``dim`` divisible by ``num_sub_vectors``, so the vectors are padded with
zero coordinates to a multiple of ``pad_multiple`` (16 for PQ) on both sides (the query
is padded the same way: ``query_vectors(q, form, dim=table_dim)``). The documented query
parameters (``nprobes``, ``refine_factor``, :func:`lancedb_search_params`) are stored in
the description's ``search_params``; prefer d+2 with an ANN index.
"""

from __future__ import annotations

import json
import os

import numpy as np

from .._errors import InputError
from .._extras import require
from .._json import parse_json
from ._common import (
    check_description,
    describe,
    export_ids,
    metadata_table,
    seal_description,
    source_metadata,
)
from .recall import DEFAULT_RECALL, RecallCheck, check_recall, exact_top_ids, probe_queries, report_recall
from .vectors import augment_items, item_vectors, padded_dim, query_vectors

__all__ = [
    "export_lancedb",
    "LANCEDB_INDEXES",
    "lancedb_description",
    "lancedb_search_params",
    "lancedb_search",
    "lancedb_query",
    "lancedb_recall_check",
    "lancedb_connect",
    "lancedb_arrow_table",
    "lancedb_store_description",
]

LANCEDB_INDEXES = {"ivf_pq": "IVF_PQ", "ivf_flat": "IVF_FLAT", "ivf_hnsw_sq": "IVF_HNSW_SQ"}
_METRICS = {"d+1": ("dot",), "d+2": ("l2", "cosine")}


def lancedb_connect(uri):
    """A LanceDB connection to ``uri`` (a path or URI; an open connection is returned as is)."""
    lancedb = require("lancedb", "exporting to LanceDB")
    if hasattr(uri, "open_table"):
        return uri
    return lancedb.connect(os.fspath(uri))


def lancedb_arrow_table(ids: np.ndarray, vectors: np.ndarray, bias: np.ndarray, meta, description: dict):
    """The Arrow table of an export (``id``, ``vector``, ``bias``, the metadata columns), the description in its schema."""
    import pyarrow as pa

    n, dim = vectors.shape
    cols = {
        "id": pa.array(ids, pa.int64()),
        "vector": pa.FixedSizeListArray.from_arrays(pa.array(vectors.reshape(-1), pa.float32()), dim),
        "bias": pa.array(bias, pa.float32()),
    }
    text = json.dumps(seal_description(description), sort_keys=True)
    fields = [
        pa.field("id", pa.int64()),
        pa.field("vector", cols["vector"].type, metadata={"dehub": text}),
        pa.field("bias", pa.float32()),
    ]
    arrays = list(cols.values())
    if meta is not None:
        fields += list(meta.schema)
        arrays += [meta.column(c) for c in meta.column_names]
    return pa.Table.from_arrays(arrays, schema=pa.schema(fields, metadata={"dehub": text}))


def _refuse_foreign_table(db, name: str, uri) -> None:
    """An existing table is replaced only if an earlier dehub export wrote it."""
    try:
        table = db.open_table(name)  # (no table listing: table_names() is deprecated)
    except (ValueError, FileNotFoundError):  # no such table
        return
    if table is not None:
        try:
            lancedb_description(table)
        except ValueError:
            raise InputError(
                f"LanceDB table {name!r} in {uri} exists and was not written by dehub.export; "
                "choose another name (--name) or drop it first"
            ) from None


def lancedb_description(table) -> dict:
    """The export description stored with a LanceDB table (metadata of its ``vector`` field)."""
    schema = table.schema
    raw = (schema.field("vector").metadata or {}).get(b"dehub") if "vector" in schema.names else None
    raw = raw or (schema.metadata or {}).get(b"dehub")
    if raw is None:
        raise InputError(
            f"LanceDB table {table.name!r} was not written by dehub.export (no 'dehub' schema metadata)"
        )
    source = f"LanceDB table {table.name!r}: 'dehub' schema metadata"
    return check_description(parse_json(raw, source=source), source=source)


def lancedb_search_params(index: str | None, n: int, num_partitions: int, form: str = "d+2") -> dict:
    """The documented query parameters of an ANN table (measured, docs/stores/lancedb.md).

    d+2 (equal norms, L2 partitions fit): ``nprobes = max(20, num_partitions / 2)``;
    d+1: every partition (the dot-product ranking of d+1 vectors ignores LanceDB's L2
    k-means partitions: at a quarter of them recall@10 was 0.25, at half 0.39, all 0.998);
    ``refine_factor = 10`` re-ranks the PQ candidates with the stored vectors.
    """
    if index is None:
        return {}
    half = -(-num_partitions // 2)
    nprobes = num_partitions if form == "d+1" else min(num_partitions, max(20, half))
    return {"nprobes": int(nprobes), "refine_factor": 10}


def export_lancedb(
    source,
    uri,
    *,
    name: str = "dehub",
    form: str = "d+1",
    metric: str | None = None,
    index: str | None = None,
    num_partitions: int | None = None,
    num_sub_vectors: int | None = None,
    pad_multiple: int | None = None,
    ids=None,
    metadata=None,
    mode: str = "overwrite",
    recall: float = DEFAULT_RECALL,
    strict: bool = False,
    search_params: dict | None = None,
    n_probes: int | None = None,
):
    """Write ``source``'s corrected gallery as LanceDB table ``name`` in the database at ``uri``.

    Parameters
    ----------
    source : a fitted offset estimator or a ``dehub.Index``
    uri : a LanceDB database directory (or URI), or an open ``lancedb`` connection
    form : {'d+1', 'd+2'}; metric : 'dot' (d+1), 'l2' or 'cosine' (d+2; default 'l2')
    index : None (exhaustive search, exact), 'ivf_pq', 'ivf_flat' or 'ivf_hnsw_sq'
    num_partitions, num_sub_vectors : IVF / PQ sizes (default ``~sqrt(n)`` and ``dim/16``)
    pad_multiple : pad the vector length to a multiple of this (default 16 with 'ivf_pq',
        else 1)
    metadata : per-item columns (pyarrow Table, DataFrame or dict), aligned with the rows
    recall, strict, search_params : with an ANN index, the recall check
        (:mod:`dehub.export.recall`) measures recall@10 against dehub's exact corrected
        top-10 and stores the cheapest ``nprobes`` / ``refine_factor`` / ``ef`` reaching
        ``recall`` (or measures the given ``search_params``); when none does it warns, or
        with ``strict`` drops the table and raises
        :class:`~dehub.export.recall.RecallNotReached`.
    Returns the ``lancedb`` table.
    """
    if form not in _METRICS:
        raise InputError(f"form must be one of {sorted(_METRICS)}; received {form!r}")
    metric = metric or _METRICS[form][0]
    if metric not in _METRICS[form]:
        raise InputError(f"form {form!r} is served by metric {_METRICS[form]}; received {metric!r}")
    if index is not None and index not in LANCEDB_INDEXES:
        raise InputError(f"index must be None or one of {sorted(LANCEDB_INDEXES)}; received {index!r}")
    model = getattr(source, "model", source)
    base = augment_items(model, form)
    n = base.vectors.shape[0]
    multiple = pad_multiple or (16 if index == "ivf_pq" else 1)
    dim = padded_dim(base.d, form, multiple)
    items = (
        base
        if dim == base.vectors.shape[1]
        else item_vectors(model.gallery_, model.bias_, form, M=base.M, dim=dim)
    )
    item_ids = export_ids(source, ids, n)
    meta = metadata_table(source_metadata(source, metadata), n)
    parts = num_partitions or max(1, min(int(np.sqrt(n)), n // 256 or 1))
    subv = num_sub_vectors or max(1, dim // 16)
    if index == "ivf_pq" and dim % subv:
        raise InputError(
            f"IVF_PQ needs dim ({dim}) divisible by num_sub_vectors ({subv}); pass pad_multiple={subv}"
        )
    description = describe(
        source,
        items,
        metric=metric,
        dim=dim,
        extra={
            "index": index,
            "num_partitions": parts if index else None,
            "num_sub_vectors": subv if index == "ivf_pq" else None,
            "search_params": lancedb_search_params(index, n, parts, form),
            "n_items": int(n),
        },
    )
    db = lancedb_connect(uri)
    _refuse_foreign_table(db, name, uri)
    table = db.create_table(
        name, lancedb_arrow_table(item_ids, items.vectors, items.bias, meta, description), mode=mode
    )
    if index is not None:
        table.create_index("vector", config=_index_config(index, metric, parts, subv))
        check = lancedb_recall_check(
            table, source, description, fixed=search_params, target=recall, n_probes=n_probes
        )
        description["search_params"] = dict(check.params)
        description["recall_check"] = check.as_dict()
        lancedb_store_description(table, description)
        try:
            report_recall(check, f"LanceDB table {name!r} ({index})", strict=strict)
        except Exception:
            db.drop_table(name)
            raise
    return table


def lancedb_store_description(table, desc: dict) -> None:
    """Seal ``desc`` and store it as the metadata of the table's ``vector`` field."""
    text = json.dumps(seal_description(desc), sort_keys=True)
    if hasattr(table, "update_field_metadata"):
        table.update_field_metadata({"path": "vector", "metadata": {"dehub": text}})
    else:  # pragma: no cover - lancedb < 0.33
        table.replace_field_metadata("vector", {"dehub": text})


def lancedb_search(table, queries: np.ndarray, k: int = 10, params: dict | None = None) -> list[list[int]]:
    """Top-``k`` item ids of plain ``queries`` from a dehub-exported table (one batched query).

    ``params``: ``nprobes``, ``refine_factor``, ``ef`` (default: the stored ``search_params``).
    """
    desc = lancedb_description(table)
    sp = desc.get("search_params") or {} if params is None else params
    qv = query_vectors(np.asarray(queries, dtype=np.float32), desc["form"], dim=int(desc["dim"]))
    search = table.search(qv).distance_type(desc["metric"]).limit(k)
    if sp.get("nprobes"):
        search = search.nprobes(int(sp["nprobes"]))
    if sp.get("refine_factor"):
        search = search.refine_factor(int(sp["refine_factor"]))
    if sp.get("ef"):  # lance refuses ef < k * refine_factor
        search = search.ef(max(int(sp["ef"]), k * int(sp.get("refine_factor") or 1)))
    res = search.select(["id", "_distance"]).to_arrow()
    out: list[list[int]] = [[] for _ in range(qv.shape[0])]
    qi = res["query_index"].to_numpy() if "query_index" in res.column_names else np.zeros(res.num_rows, int)
    for q, i in zip(qi.tolist(), res["id"].to_pylist()):
        out[q].append(int(i))
    return out


def lancedb_query(table, query: np.ndarray, k: int = 10):
    """Top-``k`` rows of one plain query with their scores and metadata (the retriever's backend).

    Returns ``[(id, corrected_score, bias, {column: value})]`` best first, the corrected
    score ``q' . x`` computed from the stored vector (``q . r - b(r)`` in both forms).
    """
    desc = lancedb_description(table)
    sp = desc.get("search_params") or {}
    qv = query_vectors(np.asarray(query, dtype=np.float32), desc["form"], dim=int(desc["dim"]))
    search = table.search(qv).distance_type(desc["metric"]).limit(k)
    if sp.get("nprobes"):
        search = search.nprobes(int(sp["nprobes"]))
    if sp.get("refine_factor"):
        search = search.refine_factor(int(sp["refine_factor"]))
    if sp.get("ef"):
        search = search.ef(max(int(sp["ef"]), k * int(sp.get("refine_factor") or 1)))
    out = []
    for rec in search.to_arrow().to_pylist():
        vec = np.asarray(rec.pop("vector"), dtype=np.float64)
        rec.pop("_distance", None)
        item_id, bias = int(rec.pop("id")), float(rec.pop("bias"))
        out.append((item_id, float(vec @ qv.astype(np.float64)), bias, rec))
    return out


def _candidates(desc: dict) -> list[dict]:
    parts = int(desc.get("num_partitions") or 1)
    probes = sorted({p for p in (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024) if p < parts} | {parts})
    if desc.get("index") == "ivf_hnsw_sq":
        # lance needs ef >= k * refine_factor (100 at k=10)
        return [{"nprobes": p, "ef": e, "refine_factor": 10} for p in probes for e in (100, 400)] + [
            {"nprobes": parts, "ef": 1000, "refine_factor": 50}
        ]
    if desc.get("index") == "ivf_flat":
        return [{"nprobes": p} for p in probes]
    # PQ codes rank coarsely: the last resort re-ranks 200 k candidates with the stored vectors
    return [{"nprobes": p, "refine_factor": rf} for p in probes for rf in (10, 50)] + [
        {"nprobes": parts, "refine_factor": 200}
    ]


def lancedb_recall_check(
    table, source, desc: dict, *, fixed: dict | None = None, target: float = DEFAULT_RECALL, n_probes=None
) -> RecallCheck:
    """Measure the table's recall@10 against dehub's exact corrected top-10 (probe queries),
    trying ``fixed`` or the candidate settings from cheap to expensive."""
    probes = probe_queries(source, n_probes) if n_probes else probe_queries(source)
    exact = exact_top_ids(source, probes, 10)
    cands = [dict(fixed)] if fixed else _candidates(desc)
    return check_recall(lambda p: lancedb_search(table, probes, 10, p), cands, exact, target=target)


def _index_config(index: str, metric: str, parts: int, subv: int):
    from lancedb.index import HnswSq, IvfFlat, IvfPq

    if index == "ivf_pq":
        return IvfPq(distance_type=metric, num_partitions=parts, num_sub_vectors=subv)  # type: ignore[arg-type]
    if index == "ivf_flat":
        return IvfFlat(distance_type=metric, num_partitions=parts)  # type: ignore[arg-type]
    return HnswSq(distance_type=metric, num_partitions=parts)  # type: ignore[arg-type]
