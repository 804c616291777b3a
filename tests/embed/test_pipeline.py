"""One pipeline, library side: an index built from an embedding folder keeps the encoder and
the metadata columns (url, caption...), by id, through save/load, add/remove and exports."""

from __future__ import annotations

import numpy as np
import pytest

import dehub

pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")


class _Enc:
    name, dim, modalities = "test:enc", 16, frozenset({"text"})

    def encode_texts(self, texts, batch_size=64):
        rng = [np.random.default_rng(abs(hash(t)) % 2**32) for t in texts]
        x = np.stack([r.standard_normal(self.dim) for r in rng]).astype(np.float32)
        return x / np.linalg.norm(x, axis=1, keepdims=True)


@pytest.fixture
def folder(tmp_path):
    """A dehub embed folder of 60 texts (jsonl with url) in 12 shards."""
    import json

    from dehub.embed import embed

    rows = [{"text": f"caption number {i}", "url": f"http://img/{i}.jpg"} for i in range(60)]
    (tmp_path / "in.jsonl").write_text("\n".join(json.dumps(r) for r in rows), encoding="utf-8")
    embed(tmp_path / "in.jsonl", tmp_path / "emb", encoder=_Enc(), shard_size=5, progress=False)
    return tmp_path / "emb"


def test_build_records_the_encoder_and_the_metadata_columns(folder):
    from dehub.embed import build_records

    meta, table = build_records(folder)
    assert meta["encoder"] == "test:enc" and meta["embedding"]["dim"] == 16
    assert meta["embedding"]["n_items"] == 60 and meta["embedding"]["shard_size"] == 5
    assert table.num_rows == 60 and {"text", "url"} <= set(table.column_names)
    assert table["url"].to_pylist()[:2] == ["http://img/0.jpg", "http://img/1.jpg"]
    assert build_records(folder / "text_emb")[0]["encoder"] == "test:enc"  # the sub-folder too


def test_item_metadata_by_id_through_save_load_add_remove_and_exports(folder, tmp_path):
    from dehub.datasets.layouts import read_embeddings
    from dehub.embed import build_records

    emb, _ = read_embeddings(folder)
    g = np.asarray(emb)
    meta, table = build_records(folder)
    index = dehub.Index.build(
        g, g, k=4, alpha=0.75, ids=np.arange(60) * 10, metadata=meta, keep_reference=True
    )
    index.set_item_metadata(table)
    rows = index.metadata_rows([30, -1, 590, 7])
    assert rows[0]["url"] == "http://img/3.jpg" and rows[0]["text"] == "caption number 3"
    assert rows[1] is None and rows[2]["url"] == "http://img/59.jpg" and rows[3] is None
    index.save(tmp_path / "g.dehub")
    assert (tmp_path / "g.dehub.items.parquet").is_file()
    back = dehub.Index.load(tmp_path / "g.dehub")
    assert back.metadata["encoder"] == "test:enc" and "item_metadata" not in back.metadata
    assert back.metadata_rows([30]) == rows[:1]
    back.add(g[:2], ids=[1000, 1001], normalize="none")
    back.remove([0])
    assert back.metadata_rows([1000, 0, 590]) == [None, None, rows[2]]
    # exports carry the columns without --metadata
    from dehub.export import export_lancedb

    table_l = export_lancedb(back, tmp_path / "db")
    got = {r["id"]: r for r in table_l.to_arrow().select(["id", "url"]).to_pylist()}
    assert got[30]["url"] == "http://img/3.jpg" and got[1000]["url"] is None
    # a replaced items file is refused on load
    pq.write_table(pa.table({"id": [30], "url": ["evil"]}), tmp_path / "g.dehub.items.parquet")
    with pytest.raises(dehub.IndexFormatError, match="items.parquet"):
        dehub.Index.load(tmp_path / "g.dehub")
