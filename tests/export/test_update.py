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
