"""The stores' own descriptions (issue 24): read by the bounded JSON reader (a document
nested 100k deep is a clear error naming what was read and the limit, never a
RecursionError traceback from deep inside a parser) and sealed like every stored
description (an edit or a downgrade to the unsealed version 1 is refused)."""

from __future__ import annotations

import numpy as np
import pytest

DEEP = "[" * 100_000 + "]" * 100_000


def test_lancedb_description_nested_100k_deep(tmp_path):
    lancedb = pytest.importorskip("lancedb")
    pa = pytest.importorskip("pyarrow")
    from dehub.export.lancedb import lancedb_description

    vector = pa.field("vector", pa.list_(pa.float32(), 2), metadata={"dehub": DEEP})
    table = pa.Table.from_arrays(
        [
            pa.array([0, 1], pa.int64()),
            pa.FixedSizeListArray.from_arrays(pa.array(np.ones(4, np.float32)), 2),
        ],
        schema=pa.schema([pa.field("id", pa.int64()), vector]),
    )
    t = lancedb.connect(tmp_path / "db").create_table("dehub", table)
    with pytest.raises(
        ValueError, match=r"LanceDB table 'dehub'.*JSON nested 100000 levels deep; expected at most 64"
    ):
        lancedb_description(t)


def test_qdrant_meta_json_nested_100k_deep_is_refused_before_qdrant_client(tmp_path):
    """Before: qdrant-client's own json.load raised RecursionError."""
    pytest.importorskip("qdrant_client")
    from dehub.export.qdrant import qdrant_client_for

    store = tmp_path / "qdrant"
    store.mkdir()
    (store / "meta.json").write_text('{"collections": ' + DEEP + "}")
    with pytest.raises(ValueError, match=r"meta\.json: JSON nested 100001 levels deep; expected at most 64"):
        qdrant_client_for(store)


def _edit_lancedb(uri, edit):
    import json

    import lancedb

    table = lancedb.connect(str(uri)).open_table("dehub")
    desc = json.loads(table.schema.field("vector").metadata[b"dehub"])
    edit(desc)
    text = json.dumps(desc, sort_keys=True)
    if hasattr(table, "update_field_metadata"):
        table.update_field_metadata({"path": "vector", "metadata": {"dehub": text}})
    else:  # pragma: no cover - lancedb < 0.33
        table.replace_field_metadata("vector", {"dehub": text})
    return table


def test_an_edited_or_downgraded_lancedb_description_is_refused(index, tmp_path):
    """Before: the description had no checksum; alpha 0.75 -> 9 read back as it was."""
    pytest.importorskip("lancedb")
    from dehub.export import export_lancedb
    from dehub.export.lancedb import lancedb_description

    export_lancedb(index, tmp_path / "db")
    table = _edit_lancedb(tmp_path / "db", lambda d: None)
    assert lancedb_description(table)["params"]["alpha"] == 0.75

    table = _edit_lancedb(tmp_path / "db", lambda d: d["params"].update(alpha=9))
    with pytest.raises(ValueError, match=r"does not match its own checksum \(description_sha256\)"):
        lancedb_description(table)

    def downgrade(d):
        d.pop("description_sha256")
        d["version"] = 1

    table = _edit_lancedb(tmp_path / "db", downgrade)
    with pytest.raises(ValueError, match=r"format version 1; this dehub reads version 2 only"):
        lancedb_description(table)


def test_an_edited_qdrant_description_is_refused(index):
    pytest.importorskip("qdrant_client")
    from dehub.export import export_qdrant
    from dehub.export.qdrant import qdrant_client_for, qdrant_description

    client = qdrant_client_for(":memory:")
    export_qdrant(index, client)
    assert qdrant_description(client)["params"]["alpha"] == 0.75
    desc = qdrant_description(client)
    desc["params"]["alpha"] = 9
    client.update_collection("dehub", metadata=desc)
    with pytest.raises(
        ValueError, match=r"Qdrant collection 'dehub': dehub metadata: its content does not match"
    ):
        qdrant_description(client)
