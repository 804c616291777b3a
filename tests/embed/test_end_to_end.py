"""embed -> build -> export -> query, on the bundled MiniLM and ~200 WordNet texts, via the CLI.

The query side imports only the store clients (lancedb, qdrant_client, faiss) and numpy.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

pytest.importorskip("pyarrow")


@pytest.mark.slow
def test_embed_build_export_query(minilm, wordnet_text, tmp_path, capsys, no_shadowed_datasets):
    lancedb = pytest.importorskip("lancedb")
    qdrant_client = pytest.importorskip("qdrant_client")
    faiss = pytest.importorskip("faiss")
    from dehub.cli import main

    gallery = wordnet_text["test"]["definition"][:200]
    reference = wordnet_text["reference"]["lemma"][:300]
    queries = wordnet_text["test"]["lemma"][:20]
    (tmp_path / "gallery.txt").write_text("\n".join(gallery), encoding="utf-8")
    (tmp_path / "reference.jsonl").write_text(
        "\n".join(json.dumps({"text": t}) for t in reference), encoding="utf-8"
    )
    (tmp_path / "queries.txt").write_text("\n".join(queries), encoding="utf-8")
    for name in ("gallery.txt", "reference.jsonl", "queries.txt"):
        out = tmp_path / name.split(".")[0]
        assert main(["embed", str(tmp_path / name), "-o", str(out), "--shard-size", "128", "--quiet"]) == 0
    assert sorted(p.name for p in (tmp_path / "gallery" / "text_emb").iterdir()) == [
        "text_emb_00000.npy",
        "text_emb_00001.npy",
    ]
    idx = tmp_path / "g.dehub"
    assert main(["build", "--gallery", str(tmp_path / "gallery"), "--reference", str(tmp_path / "reference"),
                 "-o", str(idx), "--k", "8", "--alpha", "0.75"]) == 0  # fmt: skip
    assert main(["export", str(idx), "--to", "lancedb", str(tmp_path / "db"), "--form", "d+2",
                 "--metadata", str(tmp_path / "gallery")]) == 0  # fmt: skip
    assert main(["export", str(idx), "--to", "qdrant", str(tmp_path / "q"), "--form", "d+1"]) == 0
    assert main(["export", str(idx), "--to", "faiss", str(tmp_path / "g.faiss"), "--form", "d+2"]) == 0
    capsys.readouterr()

    # dehub's exact corrected top-5 (the reference answer)
    import dehub
    from dehub.datasets.layouts import read_embeddings

    q = np.asarray(read_embeddings(tmp_path / "queries")[0])
    want = dehub.Index.load(idx).search(q, 5)[1]

    # --- serving code: store clients only ---
    table = lancedb.connect(str(tmp_path / "db")).open_table("dehub")
    desc = json.loads(table.schema.field("vector").metadata[b"dehub"])
    lance_ids, texts = [], []
    for v in q:
        res = (
            table.search(np.concatenate([v, [-1.0, 0.0]]).astype(np.float32))
            .distance_type(desc["metric"])
            .limit(5)
        )
        arrow = res.to_arrow()
        lance_ids.append(arrow["id"].to_pylist())
        texts.append(arrow["text"].to_pylist())
    client = qdrant_client.QdrantClient(path=str(tmp_path / "q"))
    qd_ids = [
        [p.id for p in client.query_points("dehub", query=list(map(float, v)) + [-1.0], limit=5).points]
        for v in q
    ]
    client.close()
    findex = faiss.read_index(str(tmp_path / "g.faiss"))
    fa_ids = findex.search(np.hstack([q, np.tile(np.float32([-1, 0]), (len(q), 1))]).astype(np.float32), 5)[1]
    # --- end of serving code ---

    np.testing.assert_array_equal(np.asarray(lance_ids), want)
    np.testing.assert_array_equal(np.asarray(qd_ids), want)
    np.testing.assert_array_equal(fa_ids, want)
    assert texts[0] == [gallery[i] for i in want[0]]  # metadata carried to the results


def test_export_cli_user_errors_exit_2(tmp_path, capsys, rng, unit):
    import dehub
    from dehub.cli import main

    idx = tmp_path / "g.dehub"
    dehub.Index.build(unit(rng, 30, 8), unit(rng, 60, 8), k=4).save(idx)
    cases = [
        (
            ["export", str(tmp_path / "missing.dehub"), "--to", "faiss", str(tmp_path / "x.faiss")],
            "missing.dehub",
        ),
        (["export", str(idx), "--to", "qdrant", ":memory:", "--index", "ivf"], "Qdrant has no IVF index"),
        (["export", str(idx), "--to", "lancedb", str(tmp_path / "db"), "--index", "ivf-sq8"], "FAISS only"),
        (
            ["export", str(idx), "--to", "lancedb", str(tmp_path / "db"), "--metric", "cosine"],
            "served by metric",
        ),
        (
            ["export", str(idx), "--to", "faiss", str(tmp_path / "f"), "--metadata", str(tmp_path)],
            "stores no metadata",
        ),
        (["export", str(idx), "--to", "faiss", str(tmp_path / "none.faiss"), "--update"], "no sidecar"),
        (["embed", str(tmp_path / "nope.txt"), "-o", str(tmp_path / "e")], "no input at"),
    ]
    for argv, message in cases:
        assert main(argv) == 2, argv
        err = capsys.readouterr().err
        assert message in err and "Traceback" not in err, (argv, err)
    assert (
        main(
            [
                "export",
                str(idx),
                "--to",
                "faiss",
                str(tmp_path / "ok.faiss"),
                "--index",
                "hnsw",
                "--ef-search",
                "64",
            ]
        )
        == 0
    )
    side = json.loads((tmp_path / "ok.faiss.json").read_text())
    assert side["search_params"] == {"efSearch": 64} and side["index_type"] == "hnsw"
