"""update_store: after Index.add / remove / add_reference the store answers like the index."""

from __future__ import annotations

import json

import numpy as np
import pytest
from export_helpers import assert_same_ranking

import dehub

pytest.importorskip("faiss")
lancedb = pytest.importorskip("lancedb")
qdrant_client = pytest.importorskip("qdrant_client")


@pytest.fixture
def small(data):
    return dehub.Index.build(
        data["gallery"][:400],
        data["reference"][:1500],
        k=8,
        alpha=0.75,
        ids=np.arange(400) * 2,
        keep_reference=True,
    )


def _exact(index, queries):
    scores, ids = index.search(queries, 10)
    dense = index.model.score(queries).astype(np.float64)
    return scores, ids, dense, {int(i): r for r, i in enumerate(index.ids)}


def _store_topk(to, loc, queries):
    """The store's own client only."""
    out = []
    if to == "lancedb":
        table = lancedb.connect(str(loc)).open_table("dehub")
        desc = json.loads(table.schema.field("vector").metadata[b"dehub"])
        for q in queries:
            v = np.zeros(desc["dim"], np.float32)
            v[: q.size] = q
            v[q.size : q.size + (1 if desc["form"] == "d+1" else 2)] = [-1.0, 0.0][
                : 1 if desc["form"] == "d+1" else 2
            ]
            out.append(table.search(v).distance_type(desc["metric"]).limit(10).to_arrow()["id"].to_numpy())
    elif to == "qdrant":
        desc = loc.get_collection("dehub").config.metadata
        tail = [-1.0] if desc["form"] == "d+1" else [-1.0, 0.0]
        for q in queries:
            out.append(
                [p.id for p in loc.query_points("dehub", query=list(map(float, q)) + tail, limit=10).points]
            )
    else:
        import faiss

        meta = json.loads(open(str(loc) + ".json").read())
        idx = faiss.read_index(str(loc))
        tail = [-1.0] if meta["form"] == "d+1" else [-1.0, 0.0]
        q = np.hstack([queries, np.tile(np.float32(tail), (len(queries), 1))]).astype(np.float32)
        return idx.search(q, 10)[1]
    return np.asarray(out, dtype=np.int64)


@pytest.mark.parametrize("to", ["faiss", "lancedb", "qdrant"])
@pytest.mark.parametrize("form", ["d+1", "d+2"])
def test_add_remove_add_reference_then_update(small, data, tmp_path, to, form):
    from dehub.export import export_store, update_store

    loc = {"faiss": tmp_path / "g.faiss", "lancedb": tmp_path / "db", "qdrant": None}[to]
    kwargs = {"form": form}
    if to == "qdrant":
        loc = export_store(
            small, "qdrant", ":memory:", metadata={"tag": [f"t{i}" for i in small.ids]}, **kwargs
        )
    elif to == "lancedb":
        export_store(small, to, loc, metadata={"tag": [f"t{i}" for i in small.ids]}, **kwargs)
    else:
        export_store(small, to, loc, **kwargs)
    q = data["queries"][:20]
    # new items: some far out (norm 3) so that d+2's M must grow
    new = data["gallery"][400:440].copy()
    new[:3] *= 3.0
    small.add(new, ids=np.arange(40) * 2 + 1001, normalize="none")
    small.remove(small.ids[:25])
    stats = update_store(small, to, loc)
    assert stats["removed"] == 25 and stats["added"] == 40
    assert stats["rewritten"] == (form == "d+2" or to == "faiss")
    assert_same_ranking(_store_topk(to, loc, q), _exact(small, q))
    small.add_reference(data["reference"][1500:2500])  # every bias changes
    stats = update_store(small, to, loc)
    assert stats["added"] == stats["removed"] == 0
    assert_same_ranking(_store_topk(to, loc, q), _exact(small, q))
    if to == "lancedb":  # metadata of kept items survives, new items get nulls
        tbl = lancedb.connect(str(loc)).open_table("dehub").to_arrow()
        tags = dict(zip(tbl["id"].to_pylist(), tbl["tag"].to_pylist()))
        assert tags[int(small.ids[0])] == f"t{int(small.ids[0])}" and tags[1001] is None
        assert len(tags) == small.n_items
    if to == "qdrant":
        p = loc.retrieve("dehub", [int(small.ids[0])], with_payload=True)[0]
        assert p.payload["tag"] == f"t{int(small.ids[0])}"
        assert loc.count("dehub").count == small.n_items


def test_update_store_rejects_non_index(tmp_path):
    from dehub.export import update_store

    with pytest.raises(TypeError, match="needs a dehub.Index"):
        update_store(object(), "faiss", tmp_path / "x")


def test_cli_update_after_add(small, data, tmp_path, capsys):
    """What `dehub add ... --update-store lancedb PATH` does (dehub.export.cli helpers)."""
    import argparse

    from dehub.cli import main
    from dehub.export.cli import add_store_update_options, update_store_from_args

    small.save(tmp_path / "g.dehub")
    assert main(["export", str(tmp_path / "g.dehub"), "--to", "lancedb", str(tmp_path / "db")]) == 0
    small.add(data["gallery"][400:410], ids=np.arange(10) + 5000, save_to=tmp_path / "g.dehub")
    parser = argparse.ArgumentParser()
    add_store_update_options(parser)
    update_store_from_args(parser.parse_args(["--update-store", "lancedb", str(tmp_path / "db")]), small)
    assert "10 added, 0 removed" in capsys.readouterr().out
    assert (
        main(["export", str(tmp_path / "g.dehub"), "--to", "lancedb", str(tmp_path / "db"), "--update"]) == 0
    )
    assert "0 added, 0 removed, 0 written" in capsys.readouterr().out
    q = data["queries"][:10]
    assert_same_ranking(_store_topk("lancedb", tmp_path / "db", q), _exact(small, q))


def test_exports_never_replace_foreign_data(small, tmp_path):
    import pyarrow as pa
    from qdrant_client import models

    from dehub.export import export_faiss, export_lancedb, export_qdrant

    db = lancedb.connect(str(tmp_path / "db"))
    db.create_table("dehub", pa.table({"x": [1, 2]}))
    with pytest.raises(ValueError, match="not written by dehub"):
        export_lancedb(small, db)
    assert db.open_table("dehub").count_rows() == 2
    client = qdrant_client.QdrantClient(":memory:")
    client.create_collection(
        "dehub", vectors_config=models.VectorParams(size=2, distance=models.Distance.DOT)
    )
    with pytest.raises(ValueError, match="not written by dehub"):
        export_qdrant(small, client)
    assert client.collection_exists("dehub")
    (tmp_path / "mine.faiss").write_bytes(b"precious")
    with pytest.raises(FileExistsError, match="no dehub sidecar"):
        export_faiss(small, tmp_path / "mine.faiss")
    assert (tmp_path / "mine.faiss").read_bytes() == b"precious"
    export_lancedb(small, db, name="other")
    export_lancedb(small, db, name="other")  # re-export over its own table: fine


# ------------------------------------------------------------------ what the store really searches
def _recall(to, loc, index, queries):
    from export_helpers import recall_at_10

    return recall_at_10(_store_topk(to, loc, queries), index.search(queries, 10)[1])


def test_lancedb_searched_coordinate_tampered_on_50_rows_is_found_and_repaired(small, data, tmp_path, capsys):
    """The stored bias column still matches; the vector's bias coordinate (what LanceDB ranks
    by) is edited on 50 rows: --verify reports exactly those ids, --update rewrites them."""
    from dehub.cli import main
    from dehub.export import export_lancedb, update_store
    from dehub.export.update import verify_store

    small.save(tmp_path / "g.dehub")
    export_lancedb(small, tmp_path / "db", metadata={"tag": [f"t{i}" for i in small.ids]})
    table = lancedb.connect(str(tmp_path / "db")).open_table("dehub")
    hit = [int(i) for i in small.ids[::8][:50]]
    d = small.dim
    rows = table.to_arrow()
    vecs = np.stack(rows["vector"].to_numpy(zero_copy_only=False)).astype(np.float32)
    sel = np.isin(rows["id"].to_numpy(), hit)
    vecs[sel, d] = -50.0  # every hit row becomes a hub of every query
    import pyarrow as pa

    new = rows.set_column(
        1, "vector", pa.FixedSizeListArray.from_arrays(pa.array(vecs.ravel()), vecs.shape[1])
    )
    table.merge_insert("id").when_matched_update_all().execute(new.filter(pa.array(sel)))
    q = data["queries"][:20]
    assert _recall("lancedb", tmp_path / "db", small, q) < 0.2  # the store is broken
    diff = verify_store(small, "lancedb", tmp_path / "db")
    assert sorted(diff["changed"]) == sorted(hit) and not diff["missing"] and not diff["duplicates"]
    assert (
        main(["export", str(tmp_path / "g.dehub"), "--to", "lancedb", str(tmp_path / "db"), "--verify"]) == 1
    )
    assert "50 with a different searched vector" in capsys.readouterr().out
    stats = update_store(small, "lancedb", tmp_path / "db")
    assert stats["repaired"] == 50 and stats["added"] == stats["removed"] == 0
    assert_same_ranking(_store_topk("lancedb", tmp_path / "db", q), _exact(small, q))
    tags = dict(
        zip(
            *(
                lancedb.connect(str(tmp_path / "db")).open_table("dehub").to_arrow()[c].to_pylist()
                for c in ("id", "tag")
            )
        )
    )
    assert tags[hit[0]] == f"t{hit[0]}"  # metadata kept
    assert verify_store(small, "lancedb", tmp_path / "db").clean
    assert (
        main(["export", str(tmp_path / "g.dehub"), "--to", "lancedb", str(tmp_path / "db"), "--verify"]) == 0
    )


def test_lancedb_duplicate_rows_are_removed(small, data, tmp_path, capsys):
    from dehub.cli import main
    from dehub.export import export_lancedb
    from dehub.export.update import verify_store

    small.save(tmp_path / "g.dehub")
    table = export_lancedb(small, tmp_path / "db", metadata={"tag": [f"t{i}" for i in small.ids]})
    dup = table.to_arrow().slice(0, 30)
    table.add(dup)
    table.add(dup.slice(0, 5))  # some ids three times
    assert table.count_rows() == small.n_items + 35
    diff = verify_store(small, "lancedb", tmp_path / "db")
    assert sorted(diff["duplicates"]) == sorted(int(i) for i in small.ids[:30])
    assert (
        main(["export", str(tmp_path / "g.dehub"), "--to", "lancedb", str(tmp_path / "db"), "--update"]) == 0
    )
    assert "30 duplicated ids made single" in capsys.readouterr().out
    table = lancedb.connect(str(tmp_path / "db")).open_table("dehub")
    assert table.count_rows() == small.n_items
    ids = table.to_arrow()["id"].to_numpy()
    assert np.unique(ids).size == ids.size and set(ids.tolist()) == set(small.ids.tolist())
    q = data["queries"][:20]
    assert_same_ranking(_store_topk("lancedb", tmp_path / "db", q), _exact(small, q))
    assert verify_store(small, "lancedb", tmp_path / "db").clean


def test_qdrant_distance_switched_from_dot_to_euclid_is_found_and_restored(small, data, tmp_path):
    from qdrant_client import models

    from dehub.export import export_qdrant, update_store
    from dehub.export.update import verify_store

    client = export_qdrant(small, ":memory:", form="d+1", metadata={"tag": [f"t{i}" for i in small.ids]})
    # someone recreates the collection with the same points under Euclid
    points, _ = client.scroll("dehub", limit=10_000, with_payload=True, with_vectors=True)
    meta = client.get_collection("dehub").config.metadata
    client.delete_collection("dehub")
    client.create_collection(
        "dehub",
        vectors_config=models.VectorParams(size=small.dim + 1, distance=models.Distance.EUCLID),
        metadata=meta,
    )
    client.upsert(
        "dehub", points=[models.PointStruct(id=p.id, vector=p.vector, payload=p.payload) for p in points]
    )
    q = data["queries"][:20]
    assert _recall("qdrant", client, small, q) < 0.99  # ranks by distance, not the corrected score
    diff = verify_store(small, "qdrant", client)
    assert diff["metric"] and "euclid" in diff["metric"] and not diff.clean
    stats = update_store(small, "qdrant", client)
    assert stats["metric_fixed"]
    assert str(client.get_collection("dehub").config.params.vectors.distance.value).lower() == "dot"
    assert_same_ranking(_store_topk("qdrant", client, q), _exact(small, q))
    assert (
        client.retrieve("dehub", [int(small.ids[3])], with_payload=True)[0].payload["tag"]
        == f"t{small.ids[3]}"
    )
    assert verify_store(small, "qdrant", client).clean


def test_qdrant_searched_coordinate_tampered_on_50_rows(small, data):
    from qdrant_client import models

    from dehub.export import export_qdrant, update_store
    from dehub.export.update import verify_store

    client = export_qdrant(small, ":memory:", form="d+1")
    hit = [int(i) for i in small.ids[1::7][:50]]
    pts = client.retrieve("dehub", hit, with_vectors=True, with_payload=True)
    for p in pts:
        p.vector[small.dim] = -50.0  # the bias coordinate; the payload "bias" untouched
    client.upsert(
        "dehub", points=[models.PointStruct(id=p.id, vector=p.vector, payload=p.payload) for p in pts]
    )
    q = data["queries"][:20]
    assert _recall("qdrant", client, small, q) < 0.2
    assert sorted(verify_store(small, "qdrant", client)["changed"]) == sorted(hit)
    assert update_store(small, "qdrant", client)["repaired"] == 50
    assert_same_ranking(_store_topk("qdrant", client, q), _exact(small, q))


def test_pgvector_update_and_tamper_cases(small, data, pg_dsn, capsys, tmp_path):
    """pgvector: add/remove then --update; 50 tampered searched coordinates; a wrong operator
    class (the HNSW index rebuilt with vector_l2_ops) is found and restored."""
    import psycopg

    from dehub.cli import main
    from dehub.export import export_pgvector, update_store
    from dehub.export.pgvector import pgvector_search
    from dehub.export.update import verify_store

    export_pgvector(small, pg_dsn, table="upd", metadata={"tag": [f"t{i}" for i in small.ids]})
    q = data["queries"][:20]
    small.add(data["gallery"][400:430], ids=np.arange(30) * 2 + 3001, normalize="none")
    small.remove(small.ids[:10])
    assert (
        verify_store(small, "pgvector", pg_dsn, name="upd")
        .summary()
        .endswith("0 with a different searched vector")
    )
    stats = update_store(small, "pgvector", pg_dsn, name="upd")
    assert stats["added"] == 30 and stats["removed"] == 10
    conn = psycopg.connect(pg_dsn, autocommit=True)
    assert_same_ranking(np.asarray(pgvector_search(conn, q, 10, table="upd", exact=True)), _exact(small, q))
    # 50 rows' searched coordinate edited (the bias column left alone)
    hit = [int(i) for i in small.ids[::8][:50]]
    conn.execute(
        f"UPDATE upd SET embedding = (SELECT (array_agg(x ORDER BY o))::real[] FROM "
        f"(SELECT CASE WHEN o = {small.dim + 1} THEN -50 ELSE x END AS x, o FROM unnest(embedding::real[]) "
        "WITH ORDINALITY AS u(x, o)) s)::vector WHERE id = ANY(%s)",
        (hit,),
    )
    conn.execute("DROP INDEX upd_embedding_hnsw")
    conn.execute("CREATE INDEX upd_wrong ON upd USING hnsw (embedding vector_l2_ops)")
    diff = verify_store(small, "pgvector", pg_dsn, name="upd")
    assert sorted(diff["changed"]) == sorted(hit) and "vector_ip_ops" in diff["metric"]
    small.save(tmp_path / "g.dehub")
    assert (
        main(["export", str(tmp_path / "g.dehub"), "--to", "pgvector", pg_dsn, "--name", "upd", "--update"])
        == 0
    )
    out = capsys.readouterr().out
    assert "50 rows whose searched vector differed" in out and "metric restored" in out
    assert verify_store(small, "pgvector", pg_dsn, name="upd").clean
    assert_same_ranking(np.asarray(pgvector_search(conn, q, 10, table="upd", exact=True)), _exact(small, q))
    tag = conn.execute("SELECT tag FROM upd WHERE id = %s", (hit[0],)).fetchone()[0]
    assert tag == f"t{hit[0]}"
    conn.close()
