"""The stores' own descriptions are read by the bounded JSON reader (issue 24, item 1):
a document nested 100k deep is a clear error naming what was read and the limit, never a
RecursionError traceback from deep inside a parser."""

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
