"""Export a corrected gallery to Postgres with the pgvector extension.

pgvector's indexes serve only ``ORDER BY embedding <op> query LIMIT k``: any per-row
expression (a weight, a boost, ``score - bias``) makes Postgres fall back to a sequential
scan (pgvector issue #648). The augmented vector is the one index-served way to a
corrected top-k: the table holds ``[r, b(r)]`` and the query sends ``[q, -1]``, so the
plain ``ORDER BY embedding <#> $1 LIMIT k`` of an HNSW ``vector_ip_ops`` index ranks by
``q . r - b(r)``.

The table (``dehub`` unless ``table=`` says otherwise)::

    id        bigint primary key   -- the index's item ids
    embedding vector(dim)          -- the augmented vector (halfvec(dim) above 2,000 dims)
    bias      real                 -- the raw bias b(r) (alpha applied), for reading only
    <metadata columns>             -- text / bigint / double precision / boolean / jsonb

and the export description (form, ``M``, ``d``, ``dim``, method, parameters, the chosen
``hnsw.ef_search`` and its measured recall) is the table's comment (JSON).

``<#>`` is pgvector's *negative* inner product (Postgres orders ascending), so the
corrected score of a row is ``-(embedding <#> query)``. ``d+2`` stores equal-norm items
and is served by ``<->`` (``vector_l2_ops``) or ``<=>`` (``vector_cosine_ops``).

Query (no dehub code)::

    SET hnsw.ef_search = 100;   -- the value stored in the description
    SELECT id, -(embedding <#> %s::vector) AS score FROM dehub
    ORDER BY embedding <#> %s::vector LIMIT 10;

with the query ``[q_1, ..., q_d, -1]`` as the text ``'[...]'`` (or a numpy array through
the ``pgvector`` Python package).
"""

from __future__ import annotations

import json
import re
import struct

import numpy as np

from .._errors import InputError
from .._extras import require
from .._json import JSONReadError, parse_json
from ._common import (
    check_description,
    describe,
    export_ids,
    metadata_table,
    seal_description,
    source_metadata,
)
from .recall import (
    DEFAULT_RECALL,
    PROBE_QUERIES,
    RecallCheck,
    check_recall,
    exact_top_ids,
    probe_queries,
    report_recall,
)
from .vectors import augment_items, query_vectors

__all__ = [
    "export_pgvector",
    "pgvector_rows",
    "pgvector_check_index",
    "pgvector_columns",
    "pgvector_write",
    "pgvector_description",
    "pgvector_connect",
    "pgvector_search",
    "pgvector_query",
    "PGVECTOR_METRICS",
    "EF_SEARCH_CANDIDATES",
]

#: form -> {metric: (operator, HNSW operator class suffix)}
PGVECTOR_METRICS = {
    "d+1": {"ip": ("<#>", "ip_ops")},
    "d+2": {"l2": ("<->", "l2_ops"), "cosine": ("<=>", "cosine_ops"), "ip": ("<#>", "ip_ops")},
}
#: ``hnsw.ef_search`` values tried by the recall check (pgvector allows 1..1000)
EF_SEARCH_CANDIDATES = (40, 64, 100, 160, 250, 400, 640, 1000)
_MAX_VECTOR_INDEX_DIM = 2000  # pgvector's HNSW limit for vector; halfvec allows 4,000
_MAX_HALFVEC_INDEX_DIM = 4000
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")
_KIND = "dehub.store-export"


def _psycopg():
    return require("psycopg", "exporting to Postgres")


def _ident(name: str, what: str = "table") -> str:
    if not isinstance(name, str) or not _NAME.match(name):
        raise InputError(
            f"{what} name must be a plain SQL identifier (letters, digits, _; at most 63); received {name!r}"
        )
    return '"' + name + '"'


def pgvector_connect(dsn_or_conn):
    """An open psycopg connection (autocommit) for a ``postgresql://`` DSN or a connection."""
    if hasattr(dsn_or_conn, "cursor") and hasattr(dsn_or_conn, "execute"):
        return dsn_or_conn
    psycopg = _psycopg()
    if not isinstance(dsn_or_conn, str) or not dsn_or_conn.startswith(("postgresql://", "postgres://")):
        raise InputError(
            f"a Postgres location is a postgresql:// connection string; received {dsn_or_conn!r}"
        )
    return psycopg.connect(dsn_or_conn, autocommit=True)


def _extension_version(conn) -> tuple[int, ...]:
    conn.execute("CREATE EXTENSION IF NOT EXISTS vector")
    row = conn.execute("SELECT extversion FROM pg_extension WHERE extname = 'vector'").fetchone()
    return tuple(int(p) for p in re.findall(r"\d+", row[0])[:3])


def pgvector_description(conn, table: str = "dehub") -> dict:
    """The export description stored as ``table``'s comment (raises if dehub did not write it)."""
    row = conn.execute("SELECT obj_description(to_regclass(%s), 'pg_class')", (table,)).fetchone()
    raw = row[0] if row else None
    source = f"Postgres table {table!r}: dehub description (table comment)"
    try:
        desc = parse_json(raw, source=source) if raw else None
    except JSONReadError:
        desc = None
    if not isinstance(desc, dict) or desc.get("kind") != _KIND:
        raise InputError(f"Postgres table {table!r} was not written by dehub.export (no dehub description)")
    return check_description(desc, source=source)


def _sql_type(arrow_type) -> str:
    import pyarrow as pa

    if pa.types.is_integer(arrow_type):
        return "bigint"
    if pa.types.is_floating(arrow_type):
        return "double precision"
    if pa.types.is_boolean(arrow_type):
        return "boolean"
    if pa.types.is_string(arrow_type) or pa.types.is_large_string(arrow_type):
        return "text"
    return "jsonb"


def _copy_vectors(cur, staging: str, ids: np.ndarray, vectors: np.ndarray, bias: np.ndarray, half: bool):
    """``COPY staging (id, embedding, bias) FROM STDIN (FORMAT BINARY)`` in blocks.

    Each row is a fixed-size binary record (int64 id; pgvector's ``vector``/``halfvec``
    binary form: int16 dim, int16 0, big-endian float32/float16 values; float4 bias), so
    numpy writes a whole block at once.
    """
    n, dim = vectors.shape
    vtype = ">f2" if half else ">f4"
    vbytes = 4 + dim * (2 if half else 4)
    rec = np.dtype(
        [
            ("nf", ">i2"),
            ("l0", ">i4"),
            ("id", ">i8"),
            ("l1", ">i4"),
            ("dim", ">i2"),
            ("unused", ">i2"),
            ("v", vtype, (dim,)),
            ("l2", ">i4"),
            ("bias", ">f4"),
        ]
    )
    with cur.copy(f"COPY {staging} (id, embedding, bias) FROM STDIN (FORMAT BINARY)") as copy:
        copy.write(b"PGCOPY\n\xff\r\n\x00" + struct.pack(">ii", 0, 0))
        block = max(1, (8 << 20) // rec.itemsize)
        for s in range(0, n, block):
            e = min(n, s + block)
            buf = np.zeros(e - s, dtype=rec)
            buf["nf"], buf["l0"], buf["l1"], buf["l2"] = 3, 8, vbytes, 4
            buf["id"] = ids[s:e]
            buf["dim"] = dim
            buf["v"] = vectors[s:e]
            buf["bias"] = bias[s:e]
            copy.write(buf.tobytes())
        copy.write(struct.pack(">h", -1))


def _copy_metadata(cur, staging: str, ids: np.ndarray, meta, types: list[str]) -> None:
    from psycopg.types.json import Jsonb

    cols = ", ".join(["id"] + [_ident(c, "metadata column") for c in meta.column_names])
    with cur.copy(f"COPY {staging} ({cols}) FROM STDIN") as copy:
        for start in range(0, meta.num_rows, 8192):
            chunk = meta.slice(start, 8192).to_pylist()
            for i, row in zip(ids[start : start + 8192].tolist(), chunk):
                values = [row[c] for c in meta.column_names]
                values = [Jsonb(v) if t == "jsonb" and v is not None else v for v, t in zip(values, types)]
                copy.write_row([i, *values])


def _write_rows(conn, table: str, ids, vectors, bias, meta, *, half: bool, dim: int) -> None:
    """Insert (or replace, by id) rows of ``table`` through binary COPY into temp tables."""
    vt = f"{'halfvec' if half else 'vector'}({dim})"
    meta_cols = list(meta.column_names) if meta is not None else []
    with conn.transaction(), conn.cursor() as cur:
        cur.execute(f"CREATE TEMP TABLE _dehub_stage (id bigint, embedding {vt}, bias real) ON COMMIT DROP")
        _copy_vectors(cur, "_dehub_stage", ids, vectors, bias, half)
        src = "_dehub_stage s"
        if meta is not None:
            types = [_sql_type(f.type) for f in meta.schema]
            defs = ", ".join(f"{_ident(c, 'metadata column')} {t}" for c, t in zip(meta_cols, types))
            cur.execute(f"CREATE TEMP TABLE _dehub_meta (id bigint, {defs}) ON COMMIT DROP")
            _copy_metadata(cur, "_dehub_meta", ids, meta, types)
            src = "_dehub_stage s LEFT JOIN _dehub_meta m USING (id)"
        names = ", ".join(["id", "embedding", "bias"] + [_ident(c) for c in meta_cols])
        values = ", ".join(["s.id", "s.embedding", "s.bias"] + [f"m.{_ident(c)}" for c in meta_cols])
        cur.execute(
            f"INSERT INTO {_ident(table)} ({names}) SELECT {values} FROM {src} "
            f"ON CONFLICT (id) DO UPDATE SET {', '.join(f'{c} = EXCLUDED.{c}' for c in names.split(', ')[1:])}"
        )


def _vector_text(v: np.ndarray) -> str:
    return "[" + ",".join(repr(float(x)) for x in v) + "]"


def pgvector_search(
    conn,
    queries: np.ndarray,
    k: int = 10,
    *,
    table: str = "dehub",
    ef_search: int | None = None,
    exact: bool = False,
) -> list[list[int]]:
    """Top-``k`` ids of each row of ``queries`` (plain ``(n, d)`` queries) from the export.

    Forms the augmented query, sets ``hnsw.ef_search`` (the stored value unless given),
    and runs the documented ``ORDER BY embedding <op> $1 LIMIT k``. ``exact=True``
    disables index scans (a sequential scan: the exact corrected top-k).
    """
    desc = pgvector_description(conn, table)
    op = desc["operator"]
    cast = "halfvec" if desc.get("halfvec") else "vector"
    ef = ef_search if ef_search is not None else (desc.get("search_params") or {}).get("hnsw.ef_search")
    qv = query_vectors(np.asarray(queries, dtype=np.float32), desc["form"], dim=int(desc["dim"]))
    out: list[list[int]] = []
    sql = f"SELECT id FROM {_ident(table)} ORDER BY embedding {op} %s::{cast} LIMIT %s"
    with conn.transaction(), conn.cursor() as cur:
        if ef is not None:
            cur.execute(f"SET LOCAL hnsw.ef_search = {int(ef)}")
        if exact:
            cur.execute("SET LOCAL enable_indexscan = off")
        for q in qv:
            cur.execute(sql, (_vector_text(q), int(k)))
            out.append([int(r[0]) for r in cur.fetchall()])
    return out


def pgvector_query(conn, query: np.ndarray, k: int = 10, *, table: str = "dehub"):
    """Top-``k`` rows of one plain query with their scores and metadata (the retriever's backend).

    Returns ``[(id, corrected_score, bias, {column: value})]`` best first; the corrected
    score is ``-(embedding <#> q')`` = ``q' . x`` = ``q . r - b(r)`` in both forms.
    """
    desc = pgvector_description(conn, table)
    cast = "halfvec" if desc.get("halfvec") else "vector"
    qv = _vector_text(query_vectors(np.asarray(query, dtype=np.float32), desc["form"], dim=int(desc["dim"])))
    ef = (desc.get("search_params") or {}).get("hnsw.ef_search")
    out = []
    with conn.transaction(), conn.cursor() as cur:
        if ef is not None:
            cur.execute(f"SET LOCAL hnsw.ef_search = {int(ef)}")
        cur.execute(
            f"SELECT t.*, -(t.embedding <#> %s::{cast}) AS _corrected FROM {_ident(table)} t "
            f"ORDER BY t.embedding {desc['operator']} %s::{cast} LIMIT %s",
            (qv, qv, int(k)),
        )
        names = [c.name for c in cur.description or []]
        for row in cur.fetchall():
            rec = dict(zip(names, row))
            corrected = float(rec.pop("_corrected"))
            rec.pop("embedding", None)
            item_id, bias = int(rec.pop("id")), float(rec.pop("bias"))
            out.append((item_id, corrected, bias, rec))
    return out


def export_pgvector(
    source,
    dsn,
    *,
    table: str = "dehub",
    form: str = "d+1",
    metric: str | None = None,
    index: str | None = "hnsw",
    m: int = 16,
    ef_construction: int = 64,
    ef_search: int | None = None,
    recall: float = DEFAULT_RECALL,
    strict: bool = False,
    ids=None,
    metadata=None,
    n_probes: int | None = None,
) -> dict:
    """Write ``source``'s corrected gallery as Postgres table ``table`` (pgvector).

    Parameters
    ----------
    source : a fitted offset estimator or a ``dehub.Index``
    dsn : a ``postgresql://`` connection string or an open psycopg connection
    form : 'd+1' (metric 'ip', operator ``<#>``) or 'd+2' ('l2' ``<->`` default,
        'cosine' ``<=>``, or 'ip')
    index : 'hnsw' (default) or None (no index: every query is a sequential scan, exact)
    m, ef_construction : the HNSW build parameters
    ef_search : ``hnsw.ef_search`` to store; by default the recall check chooses the
        smallest of :data:`EF_SEARCH_CANDIDATES` whose recall@10 on probe queries reaches
        ``recall`` (warns, or raises :class:`~dehub.export.recall.RecallNotReached` with
        ``strict`` and drops the table, when none does)
    metadata : per-item columns (pyarrow Table, DataFrame or dict), aligned with the rows

    Returns the stored description (with ``search_params`` and ``recall_check``).
    """
    _psycopg()
    if form not in PGVECTOR_METRICS:
        raise InputError(f"form must be one of {sorted(PGVECTOR_METRICS)}; received {form!r}")
    metric = metric or next(iter(PGVECTOR_METRICS[form]))
    if metric not in PGVECTOR_METRICS[form]:
        raise InputError(
            f"form {form!r} is served by metric {sorted(PGVECTOR_METRICS[form])}; received {metric!r}"
        )
    if index not in (None, "hnsw"):
        raise InputError(f"index must be None or 'hnsw' (pgvector); received {index!r}")
    if ef_search is not None and not 1 <= int(ef_search) <= 1000:
        raise InputError(f"ef_search must be in 1..1000 (pgvector's range); received {ef_search}")
    items = augment_items(source, form)
    n, dim = items.vectors.shape
    item_ids = export_ids(source, ids, n)
    meta = metadata_table(source_metadata(source, metadata), n)
    conn = pgvector_connect(dsn)
    version = _extension_version(conn)
    half = index is not None and dim > _MAX_VECTOR_INDEX_DIM
    if half and (version < (0, 7) or dim > _MAX_HALFVEC_INDEX_DIM):
        raise InputError(
            f"pgvector {'.'.join(map(str, version))} indexes at most {_MAX_VECTOR_INDEX_DIM} dimensions"
            f"{' (halfvec, from pgvector 0.7, up to 4,000)' if dim <= _MAX_HALFVEC_INDEX_DIM else ''}; "
            f"this export has {dim}: use index=None (exact sequential scans)"
        )
    op, opclass = PGVECTOR_METRICS[form][metric]
    description = describe(
        source,
        items,
        metric=metric,
        dim=dim,
        extra={
            "store": "pgvector",
            "table": table,
            "operator": op,
            "halfvec": bool(half),
            "index": index,
            "hnsw": {"m": int(m), "ef_construction": int(ef_construction)} if index else None,
            "n_items": int(n),
            "search_params": {},
            "pgvector_version": ".".join(map(str, version)),
            "query": f"SELECT id, -(embedding {op} $1) AS score FROM {table} ORDER BY embedding {op} $1 LIMIT k"
            if op == "<#>"
            else f"SELECT id FROM {table} ORDER BY embedding {op} $1 LIMIT k",
        },
    )
    name = _ident(table)
    exists = conn.execute("SELECT to_regclass(%s) IS NOT NULL", (table,)).fetchone()[0]
    if exists:
        try:
            pgvector_description(conn, table)
        except ValueError:
            raise InputError(
                f"Postgres table {table!r} exists and was not written by dehub.export; "
                "choose another name (--name) or drop it first"
            ) from None
    vt = f"{'halfvec' if half else 'vector'}({dim})"
    meta_defs = ""
    if meta is not None:
        meta_defs = "".join(
            f", {_ident(c, 'metadata column')} {_sql_type(f.type)}"
            for c, f in zip(meta.column_names, meta.schema)
        )
    with conn.transaction():
        conn.execute(f"DROP TABLE IF EXISTS {name}")
        conn.execute(
            f"CREATE TABLE {name} (id bigint PRIMARY KEY, embedding {vt} NOT NULL, bias real{meta_defs})"
        )
    _write_rows(conn, table, item_ids, items.vectors, items.bias, meta, half=half, dim=dim)
    if index == "hnsw":
        _create_index(conn, table, description)
    _set_description(conn, table, description)
    if index == "hnsw":
        check = _recall_check(conn, source, table, ef_search, recall, n_probes)
        description["search_params"] = {"hnsw.ef_search": int(check.params["hnsw.ef_search"])}
        description["recall_check"] = check.as_dict()
        _set_description(conn, table, description)
        try:
            report_recall(check, f"pgvector table {table!r}", strict=strict)
        except Exception:
            conn.execute(f"DROP TABLE IF EXISTS {name}")
            raise
    return description


def _recall_check(conn, source, table: str, ef_search, target: float, n_probes) -> RecallCheck:
    probes = probe_queries(source, n_probes or PROBE_QUERIES)
    exact = exact_top_ids(source, probes, 10)
    cands = [ef_search] if ef_search is not None else list(EF_SEARCH_CANDIDATES)
    return check_recall(
        lambda p: pgvector_search(conn, probes, 10, table=table, ef_search=p["hnsw.ef_search"]),
        ({"hnsw.ef_search": int(e)} for e in cands),
        exact,
        target=target,
    )


def _set_description(conn, table: str, description: dict) -> None:
    text = json.dumps(seal_description(description), sort_keys=True)
    conn.execute(f"COMMENT ON TABLE {_ident(table)} IS " + _literal(text))


def _literal(text: str) -> str:
    """A SQL string literal (COMMENT takes no bind parameters)."""
    return "'" + text.replace("'", "''") + "'"


def _index_name(table: str) -> str:
    return table + "_embedding_hnsw"


def _create_index(conn, table: str, desc: dict) -> None:
    ops = f"{'halfvec' if desc.get('halfvec') else 'vector'}_{PGVECTOR_METRICS[desc['form']][desc['metric']][1]}"
    hnsw = desc.get("hnsw") or {}
    conn.execute(
        f"CREATE INDEX {_ident(_index_name(table), 'index')} ON {_ident(table)} USING hnsw (embedding {ops}) "
        f"WITH (m = {int(hnsw.get('m', 16))}, ef_construction = {int(hnsw.get('ef_construction', 64))})"
    )


def pgvector_rows(conn, table: str = "dehub") -> tuple[np.ndarray, np.ndarray]:
    """Every row's id and searched vector, as the table really holds them (duplicates too)."""
    ids: list[int] = []
    vecs: list[np.ndarray] = []
    with conn.cursor() as cur:
        cur.execute(f"SELECT id, embedding::text FROM {_ident(table)}")
        for i, text in cur:
            ids.append(int(i))
            vecs.append(np.array(text.strip("[]").split(","), dtype=np.float32))
    dim = vecs[0].shape[0] if vecs else 0
    return np.asarray(ids, dtype=np.int64), (np.stack(vecs) if vecs else np.zeros((0, dim), np.float32))


def pgvector_columns(conn, table: str = "dehub") -> set[str]:
    """The column names of ``table``."""
    rows = conn.execute("SELECT column_name FROM information_schema.columns WHERE table_name = %s", (table,))
    return {r[0] for r in rows.fetchall()}


def pgvector_check_index(conn, table: str, desc: dict) -> str | None:
    """``None`` when the HNSW index has the operator class the form needs, else what differs."""
    if not desc.get("index"):
        return None
    rows = conn.execute(
        "SELECT indexdef FROM pg_indexes WHERE tablename = %s AND indexdef ILIKE %s", (table, "%USING hnsw%")
    ).fetchall()
    want = f"{'halfvec' if desc.get('halfvec') else 'vector'}_{PGVECTOR_METRICS[desc['form']][desc['metric']][1]}"
    defs = [r[0] for r in rows]
    if any(want in d for d in defs) and len(defs) == 1:
        return None
    return f"HNSW index {defs or 'missing'}, {want} needed"


def pgvector_write(
    conn, table: str, desc: dict, *, delete, ids, vectors, bias, meta=None, fix_index: bool = False
) -> None:
    """Delete ``delete`` ids (every copy), upsert the given rows, rebuild a wrong index and
    store ``desc`` (the update of :func:`dehub.export.update_store`)."""
    name = _ident(table)
    if len(delete):
        with conn.transaction():
            conn.execute(f"DELETE FROM {name} WHERE id = ANY(%s)", ([int(i) for i in delete],))
    if len(ids):
        _write_rows(conn, table, np.asarray(ids, dtype=np.int64), vectors, bias, meta,
                    half=bool(desc.get("halfvec")), dim=int(desc["dim"]))  # fmt: skip
    if fix_index:
        with conn.transaction():
            for (idx,) in conn.execute(
                "SELECT indexname FROM pg_indexes WHERE tablename = %s AND indexdef ILIKE %s",
                (table, "%USING hnsw%"),
            ).fetchall():
                conn.execute(f"DROP INDEX {_ident(idx, 'index')}")
        _create_index(conn, table, desc)
    _set_description(conn, table, desc)
