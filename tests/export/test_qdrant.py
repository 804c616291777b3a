"""Qdrant exports (local mode): Dot d+1, Cosine/Euclid d+2 equal the exact corrected top-k;
the formula rescoring variant and its recall cost.

``_qdrant_topk`` uses only qdrant_client and numpy (docs/stores/qdrant.md's snippet).
"""

from __future__ import annotations

import numpy as np
import pytest
from export_helpers import assert_same_ranking, recall_at_10

qdrant_client = pytest.importorskip("qdrant_client")


def _qdrant_topk(client, queries, k=10, name="dehub"):
    desc = client.get_collection(name).config.metadata
    tail = [-1.0] if desc["form"] == "d+1" else [-1.0, 0.0]
    out = []
    for q in queries:
        v = np.concatenate([q, tail]).astype(np.float32)
        res = client.query_points(name, query=v.tolist(), limit=k)
        out.append([p.id for p in res.points])
    return np.asarray(out, dtype=np.int64)


def _qdrant_rescore_topk(client, queries, k=10, candidates=100, name="dehub"):
    from qdrant_client import models

    formula = models.FormulaQuery(
        formula=models.SumExpression(sum=["$score", models.MultExpression(mult=[-1.0, "bias"])])
    )
    out = []
    for q in queries:
        res = client.query_points(
            name, prefetch=models.Prefetch(query=q.tolist(), limit=candidates), query=formula, limit=k
        )
        out.append([p.id for p in res.points])
    return np.asarray(out, dtype=np.int64)


@pytest.mark.parametrize(("form", "distance"), [("d+1", "dot"), ("d+2", "cosine"), ("d+2", "euclid")])
def test_collection_equals_exact(index, data, exact, form, distance):
    from dehub.export import export_qdrant

    client = export_qdrant(
        index, ":memory:", form=form, distance=distance, metadata={"tag": ["x"] * index.n_items}
    )
    ids = _qdrant_topk(client, data["queries"])
    assert_same_ranking(ids, exact)
    p = client.retrieve("dehub", [int(index.ids[3])], with_payload=True, with_vectors=True)[0]
    assert p.payload["id"] == int(index.ids[3]) and p.payload["tag"] == "x"
    assert p.payload["bias"] == pytest.approx(float(index.model.bias_[3]), rel=1e-6)
    assert isinstance(p.vector, list)  # unnamed vector


def test_cosine_d2_ranks_like_dot_d1(index, data):
    from dehub.export import export_qdrant

    dot = _qdrant_topk(export_qdrant(index, ":memory:", form="d+1"), data["queries"])
    cos = _qdrant_topk(export_qdrant(index, ":memory:", form="d+2", distance="cosine"), data["queries"])
    assert np.mean(dot == cos) >= 0.995  # position-wise; differences only at float32 near-ties


def test_on_disk_local_mode(data, tmp_path):
    import dehub
    from dehub.export import export_qdrant

    small = dehub.Index.build(data["gallery"][:300], data["reference"], k=16, alpha=0.75)
    client = export_qdrant(small, tmp_path / "q", form="d+2")
    client.close()
    client = qdrant_client.QdrantClient(path=str(tmp_path / "q"))
    q = data["queries"][:10]
    ids = _qdrant_topk(client, q)
    client.close()
    scores, ref = small.search(q, 10)
    dense = small.model.score(q).astype(np.float64)
    assert_same_ranking(ids, (scores, ref, dense, {i: i for i in range(300)}))


def test_rescore_variant_recall_cost(index, data, exact):
    from dehub.export import export_qdrant

    client = export_qdrant(index, ":memory:", variant="rescore")
    assert client.get_collection("dehub").config.params.vectors.size == 32  # plain vectors
    q = data["queries"][:20]
    r100 = recall_at_10(_qdrant_rescore_topk(client, q, candidates=100), exact[1][:20])
    r20 = recall_at_10(_qdrant_rescore_topk(client, q, candidates=20), exact[1][:20])
    assert r20 <= r100 <= 1.0
    full = _qdrant_rescore_topk(client, q[:3], candidates=index.n_items)
    np.testing.assert_array_equal(full, exact[1][:3])  # every item a candidate: the formula is exact
    print(f"rescore recall@10: 20 candidates {r20:.3f}, 100 candidates {r100:.3f}")


def test_qdrant_bad_arguments(index):
    from dehub.export import export_qdrant

    with pytest.raises(ValueError, match="served by distance"):
        export_qdrant(index, ":memory:", form="d+1", distance="cosine")
    with pytest.raises(ValueError, match="non-negative"):
        export_qdrant(index, ":memory:", ids=np.arange(index.n_items) - 1)
