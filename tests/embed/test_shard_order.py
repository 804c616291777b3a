"""Row order at 11+ shards equals embedding-reader's (and so autofaiss's / clip-retrieval's).

embedding-reader sorts shard files by name as strings: ``dehub embed`` writes zero-padded
names (string order = numeric order) and every dehub reader sorts as embedding-reader does,
so row ``i`` is the same item everywhere, for dehub's folders and for clip-retrieval's
unpadded ones (``_0, _1, _10, ..., _2``).
"""

from __future__ import annotations

import numpy as np
import pytest

embedding_reader = pytest.importorskip("embedding_reader")
pq = pytest.importorskip("pyarrow.parquet")
pa = pytest.importorskip("pyarrow")


class _RowEncoder:
    """A deterministic encoder: the text ``"item N"`` embeds to a vector that encodes N."""

    name, dim, modalities = "test:row-encoder", 8, frozenset({"text"})

    def encode_texts(self, texts, batch_size=64):
        n = np.asarray([float(t.split()[1]) for t in texts], dtype=np.float32)
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        out[:, 0] = n
        out[:, 1] = 1.0
        return out


def _read_with_embedding_reader(folder, meta_folder=None, meta_columns=None):
    from embedding_reader import EmbeddingReader

    if meta_folder is None:
        reader = EmbeddingReader(str(folder), file_format="npy")
    else:
        reader = EmbeddingReader(
            str(folder),
            file_format="parquet_npy",
            metadata_folder=str(meta_folder),
            meta_columns=meta_columns,
        )
    embs, metas = [], []
    for emb, meta in reader(
        batch_size=10_000, start=0, end=reader.count, parallel_pieces=1, show_progress=False
    ):
        embs.append(emb)
        metas.append(meta)
    return np.concatenate(embs), metas


def test_dehub_embed_at_14_shards_reads_like_embedding_reader(tmp_path):
    from dehub.datasets.layouts import read_embeddings
    from dehub.datasets.shards import open_embeddings
    from dehub.embed import embed

    texts = [f"item {i}" for i in range(200)]
    (tmp_path / "in.txt").write_text("\n".join(texts), encoding="utf-8")
    res = embed(tmp_path / "in.txt", tmp_path / "out", encoder=_RowEncoder(), shard_size=15, progress=False)
    assert res.shards_written == 14
    names = sorted(p.name for p in (tmp_path / "out" / "text_emb").iterdir())
    assert names[:3] == ["text_emb_00000.npy", "text_emb_00001.npy", "text_emb_00002.npy"]
    assert names[-1] == "text_emb_00013.npy"
    ours = np.asarray(open_embeddings(tmp_path / "out" / "text_emb"))
    theirs, metas = _read_with_embedding_reader(
        tmp_path / "out" / "text_emb", tmp_path / "out" / "metadata", ["id", "text"]
    )
    np.testing.assert_array_equal(ours, theirs)
    np.testing.assert_array_equal(ours[:, 0], np.arange(200))  # row i is input line i
    emb, meta = read_embeddings(tmp_path / "out")
    np.testing.assert_array_equal(np.asarray(emb), theirs)
    import pandas as pd

    their_meta = pd.concat(metas)
    assert meta["text"].to_pylist() == their_meta["text"].tolist() == texts


def test_unpadded_clip_retrieval_folder_reads_in_embedding_reader_order(tmp_path):
    """clip-retrieval's own names (img_emb_0 ... img_emb_13, unpadded): dehub's rows are
    embedding-reader's rows (``_0, _1, _10, _11, _12, _13, _2, ...``), metadata aligned."""
    from dehub.datasets.layouts import read_embeddings
    from dehub.datasets.shards import open_embeddings

    root = tmp_path / "clip"
    (root / "img_emb").mkdir(parents=True)
    (root / "metadata").mkdir()
    for s in range(14):
        rows = np.arange(s * 10, s * 10 + 10)
        x = np.zeros((10, 4), np.float32)
        x[:, 0] = rows
        np.save(root / "img_emb" / f"img_emb_{s}.npy", x)
        pq.write_table(
            pa.table({"url": [f"http://x/{r}.jpg" for r in rows], "caption": [f"c{r}" for r in rows]}),
            root / "metadata" / f"metadata_{s}.parquet",
        )
    ours = np.asarray(open_embeddings(root / "img_emb"))
    theirs, _ = _read_with_embedding_reader(root / "img_emb")
    np.testing.assert_array_equal(ours, theirs)
    assert ours[20, 0] == 100  # row 20 is shard _10's first row, as embedding-reader has it
    emb, meta = read_embeddings(root)
    np.testing.assert_array_equal(np.asarray(emb), theirs)
    assert meta["caption"].to_pylist() == [f"c{int(r)}" for r in theirs[:, 0]]  # metadata aligned


def test_resuming_a_folder_written_unpadded_renames_its_shards(tmp_path):
    """A folder an earlier dehub wrote with unpadded names resumes without re-encoding and
    without two copies of any row."""
    from dehub.datasets.shards import open_embeddings
    from dehub.embed import embed

    texts = [f"item {i}" for i in range(40)]
    (tmp_path / "in.txt").write_text("\n".join(texts), encoding="utf-8")
    embed(tmp_path / "in.txt", tmp_path / "out", encoder=_RowEncoder(), shard_size=10, progress=False)
    for sub, prefix, suffix in (("text_emb", "text_emb", ".npy"), ("metadata", "metadata", ".parquet")):
        for s in range(4):
            (tmp_path / "out" / sub / f"{prefix}_{s:05d}{suffix}").rename(
                tmp_path / "out" / sub / f"{prefix}_{s}{suffix}"
            )
    (tmp_path / "out" / "text_emb" / "text_emb_3.npy").unlink()  # the last shard was not finished
    res = embed(tmp_path / "in.txt", tmp_path / "out", encoder=_RowEncoder(), shard_size=10, progress=False)
    assert (res.shards_written, res.shards_skipped) == (1, 3)
    names = sorted(p.name for p in (tmp_path / "out" / "text_emb").iterdir())
    assert names == [f"text_emb_{s:05d}.npy" for s in range(4)]
    np.testing.assert_array_equal(
        np.asarray(open_embeddings(tmp_path / "out" / "text_emb"))[:, 0], np.arange(40)
    )
