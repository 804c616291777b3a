"""LanceDB exports: exhaustive search equals the exact corrected top-k, IVF_PQ recall >= 0.99.

``_lance_topk`` uses only lancedb and numpy: the copy-paste snippet of docs/stores/lancedb.md.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from export_helpers import assert_same_ranking, recall_at_10

lancedb = pytest.importorskip("lancedb")


def _lance_topk(uri, queries, k=10, name="dehub"):
    """Query a dehub-exported table with lancedb only."""
    table = lancedb.connect(uri).open_table(name)
    desc = json.loads(table.schema.field("vector").metadata[b"dehub"])
    tail = [-1.0] if desc["form"] == "d+1" else [-1.0, 0.0]
    out = []
    for q in queries:
        v = np.zeros(desc["dim"], dtype=np.float32)
        v[: q.shape[0]] = q
        v[q.shape[0] : q.shape[0] + len(tail)] = tail
        search = table.search(v).distance_type(desc["metric"]).limit(k)
        sp = desc.get("search_params") or {}
        if "nprobes" in sp:
            search = search.nprobes(sp["nprobes"])
        if "refine_factor" in sp:
            search = search.refine_factor(sp["refine_factor"])
        if "ef" in sp:
            search = search.ef(sp["ef"])
        out.append(search.to_arrow()["id"].to_numpy())
    return np.stack(out)


@pytest.mark.parametrize(("form", "metric"), [("d+1", "dot"), ("d+2", "l2"), ("d+2", "cosine")])
def test_exhaustive_table_equals_exact(index, data, exact, tmp_path, form, metric):
    from dehub.export import export_lancedb

    table = export_lancedb(
        index,
        tmp_path / "db",
        form=form,
        metric=metric,
        metadata={"caption": [f"item {i}" for i in index.ids]},
    )
    assert table.name == "dehub"
    assert {"id", "vector", "bias", "caption"} <= set(table.schema.names)
    ids = _lance_topk(str(tmp_path / "db"), data["queries"])
    assert_same_ranking(ids, exact)
    row = table.search().where(f"id = {int(index.ids[7])}").limit(1).to_arrow()
    assert row["caption"][0].as_py() == f"item {index.ids[7]}"
    assert row["bias"][0].as_py() == pytest.approx(float(index.model.bias_[7]), rel=1e-6)


@pytest.mark.parametrize("form", ["d+1", "d+2"])
@pytest.mark.parametrize("lance_index", ["ivf_pq", "ivf_hnsw_sq"])
@pytest.mark.parametrize("dataset", ["minilm", "planted_hubs"])
def test_ann_table_reaches_the_recall_target_at_the_stored_setting(
    request, tmp_path, dataset, lance_index, form
):
    """The recall check's stored setting, read back and applied with lancedb alone, reaches
    recall@10 >= 0.99 of dehub's exact corrected top-10 on held-out queries."""
    from dehub.export import export_lancedb

    index, queries = request.getfixturevalue(dataset)
    table = export_lancedb(index, tmp_path / "db", form=form, index=lance_index, name="ann")
    desc = json.loads(table.schema.field("vector").metadata[b"dehub"])
    if lance_index == "ivf_pq":
        assert desc["dim"] % 16 == 0 and desc["dim"] % desc["num_sub_vectors"] == 0  # padded for PQ
    assert table.list_indices()
    assert desc["recall_check"]["reached"] and desc["recall_check"]["recall_at_10"] >= 0.99
    assert desc["search_params"] == desc["recall_check"]["tried"][-1]["params"]
    ids = _lance_topk(str(tmp_path / "db"), queries, name="ann")
    assert recall_at_10(ids, index.search(queries, 10)[1]) >= 0.985  # held out: target up to sampling error


def test_lancedb_bad_arguments(index, tmp_path):
    from dehub.export import export_lancedb

    with pytest.raises(ValueError, match="served by metric"):
        export_lancedb(index, tmp_path / "db", form="d+1", metric="cosine")
    with pytest.raises(ValueError, match="metadata has 3 rows"):
        export_lancedb(index, tmp_path / "db", metadata={"x": [1, 2, 3]})
    with pytest.raises(ValueError, match="collide"):
        export_lancedb(index, tmp_path / "db", metadata={"vector": list(range(index.n_items))})


def test_no_deprecation_warnings_from_lancedb(index, tmp_path):
    """Export, re-export over dehub's own table, update: no DeprecationWarning (table_names())."""
    import warnings

    from dehub.export import export_lancedb, update_store

    with warnings.catch_warnings():
        warnings.simplefilter("error", DeprecationWarning)
        export_lancedb(index, tmp_path / "db")
        export_lancedb(index, tmp_path / "db")
        assert update_store(index, "lancedb", tmp_path / "db")["updated"] == 0
