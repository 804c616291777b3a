"""Postgres + pgvector exports against a real server that the tests start (pgserver).

``_pg_topk`` uses only psycopg and numpy: the copy-paste query of docs/stores/pgvector.md.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from export_helpers import assert_same_ranking, recall_at_10

psycopg = pytest.importorskip("psycopg")


def _pg_topk(dsn, queries, k=10, table="dehub", exact=False):
    """Query a dehub-exported table with psycopg only (the documented query)."""
    with psycopg.connect(dsn) as conn:
        desc = json.loads(
            conn.execute("SELECT obj_description(to_regclass(%s), 'pg_class')", (table,)).fetchone()[0]
        )
        tail = [-1.0] if desc["form"] == "d+1" else [-1.0, 0.0]
        op = desc["operator"]
        ef = desc["search_params"].get("hnsw.ef_search")
        if ef:
            conn.execute(f"SET hnsw.ef_search = {int(ef)}")
        if exact:
            conn.execute("SET enable_indexscan = off")
        out = []
        for q in queries:
            v = np.zeros(desc["dim"], dtype=np.float32)
            v[: q.shape[0]] = q
            v[q.shape[0] : q.shape[0] + len(tail)] = tail
            text = "[" + ",".join(map(str, v.tolist())) + "]"
            rows = conn.execute(
                f"SELECT id, embedding {op} %s::vector AS dist FROM {table} ORDER BY embedding {op} %s::vector LIMIT %s",
                (text, text, k),
            ).fetchall()
            out.append([r[0] for r in rows])
    return np.asarray(out, dtype=np.int64)


@pytest.mark.parametrize(("form", "metric"), [("d+1", "ip"), ("d+2", "l2")])
def test_table_without_index_equals_exact(index, data, exact, pg_dsn, form, metric):
    from dehub.export import export_pgvector

    desc = export_pgvector(
        index,
        pg_dsn,
        table=f"flat_{metric}",
        form=form,
        metric=metric,
        index=None,
        metadata={"caption": [f"item {i}" for i in index.ids], "url": [f"http://x/{i}" for i in index.ids]},
    )
    assert desc["n_items"] == index.n_items and desc["operator"] in ("<#>", "<->")
    ids = _pg_topk(pg_dsn, data["queries"], table=f"flat_{metric}")
    assert_same_ranking(ids, exact)
    with psycopg.connect(pg_dsn) as conn:
        cap, url, bias = conn.execute(
            f"SELECT caption, url, bias FROM flat_{metric} WHERE id = %s", (int(index.ids[7]),)
        ).fetchone()
    assert (cap, url) == (f"item {index.ids[7]}", f"http://x/{index.ids[7]}")
    assert bias == pytest.approx(float(index.model.bias_[7]), rel=1e-6)


def test_hnsw_exact_scan_and_recall_at_the_stored_ef_search(index, data, exact, pg_dsn):
    from dehub.export import export_pgvector

    desc = export_pgvector(index, pg_dsn, table="hnsw_ip", form="d+1")
    check = desc["recall_check"]
    assert check["reached"] and check["recall_at_10"] >= 0.99
    ef = desc["search_params"]["hnsw.ef_search"]
    assert 1 <= ef <= 1000
    # the index is there and used; with index scans off, the exact corrected top-k
    with psycopg.connect(pg_dsn) as conn:
        plan = "\n".join(
            r[0]
            for r in conn.execute(
                "EXPLAIN SELECT id FROM hnsw_ip ORDER BY embedding <#> %s::vector LIMIT 10",
                ("[" + ",".join(["0.1"] * desc["dim"]) + "]",),
            ).fetchall()
        )
    assert "hnsw_ip_embedding_hnsw" in plan
    assert_same_ranking(_pg_topk(pg_dsn, data["queries"], table="hnsw_ip", exact=True), exact)
    ids = _pg_topk(pg_dsn, data["queries"], table="hnsw_ip")
    assert recall_at_10(ids, exact[1]) >= 0.99


@pytest.mark.parametrize("form", ["d+1", "d+2"])
@pytest.mark.parametrize("dataset", ["minilm", "planted_hubs"])
def test_hnsw_stored_ef_search_reaches_the_target_on_held_out_queries(request, pg_dsn, dataset, form):
    """The recall check's hnsw.ef_search (chosen on probe queries), applied by psycopg alone,
    reaches recall@10 >= 0.99 of dehub's exact corrected top-10 on held-out queries."""
    from dehub.export import export_pgvector

    index, queries = request.getfixturevalue(dataset)
    table = f"ann_{dataset}_{form[-1]}"
    desc = export_pgvector(index, pg_dsn, table=table, form=form)
    assert desc["recall_check"]["reached"] and desc["search_params"]["hnsw.ef_search"] >= 1
    ids = _pg_topk(pg_dsn, queries, table=table)
    assert recall_at_10(ids, index.search(queries, 10)[1]) >= 0.985  # held out: target up to sampling error
    exact_ids = _pg_topk(pg_dsn, queries[:30], table=table, exact=True)
    np.testing.assert_array_equal(
        np.sort(exact_ids, axis=1), np.sort(index.search(queries[:30], 10)[1], axis=1)
    )


def test_strict_refuses_and_drops_the_table(index, pg_dsn):
    from dehub.export import RecallNotReached, export_pgvector

    with pytest.raises(RecallNotReached, match="--strict"):
        export_pgvector(
            index, pg_dsn, table="strict_t", ef_search=1, m=4, ef_construction=8, recall=1.0, strict=True
        )
    with psycopg.connect(pg_dsn) as conn:
        assert conn.execute("SELECT to_regclass('strict_t')").fetchone()[0] is None
