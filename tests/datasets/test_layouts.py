"""Readers for clip-retrieval / embedding-reader folders, parquet and fsspec URLs, and the CLI hook."""

from __future__ import annotations

import numpy as np
import pytest

pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")

from dehub.datasets.layouts import attach_metadata, read_embeddings, read_metadata  # noqa: E402


def _clip_folder(root, rng, sizes=(5, 7, 3), d=8, kinds=("img",)):
    root.mkdir(parents=True, exist_ok=True)
    (root / "metadata").mkdir(exist_ok=True)
    full = {}
    start = 0
    for kind in kinds:
        (root / f"{kind}_emb").mkdir(exist_ok=True)
        parts = []
        for i, n in enumerate(sizes):
            x = rng.standard_normal((n, d)).astype(np.float32)
            np.save(root / f"{kind}_emb" / f"{kind}_emb_{i}.npy", x)
            parts.append(x)
        full[kind] = np.concatenate(parts)
    for i, n in enumerate(sizes):
        ids = np.arange(start, start + n)
        pq.write_table(
            pa.table(
                {"id": ids, "caption": [f"c{j}" for j in ids], "url": [f"http://x/{j}.jpg" for j in ids]}
            ),
            root / "metadata" / f"metadata_{i}.parquet",
        )
        start += n
    return full


def test_clip_retrieval_folder(tmp_path, rng):
    full = _clip_folder(tmp_path / "emb", rng)
    emb, meta = read_embeddings(tmp_path / "emb")
    np.testing.assert_array_equal(np.asarray(emb), full["img"])
    assert meta.num_rows == 15 and meta["caption"].to_pylist()[7] == "c7"
    emb2, meta2 = read_embeddings(tmp_path / "emb" / "img_emb")  # the sub-folder finds ../metadata
    np.testing.assert_array_equal(np.asarray(emb2), full["img"])
    assert meta2.equals(meta)
    assert read_metadata(tmp_path / "emb").equals(meta)


def test_both_kinds_need_a_choice(tmp_path, rng):
    full = _clip_folder(tmp_path / "emb", rng, kinds=("img", "text"))
    with pytest.raises(ValueError, match="both img_emb/ and text_emb/"):
        read_embeddings(tmp_path / "emb")
    emb, _ = read_embeddings(tmp_path / "emb", kind="text")
    np.testing.assert_array_equal(np.asarray(emb), full["text"])


def test_metadata_misaligned_is_refused(tmp_path, rng):
    _clip_folder(tmp_path / "emb", rng)
    pq.write_table(pa.table({"id": [0, 1]}), tmp_path / "emb" / "metadata" / "metadata_1.parquet")
    with pytest.raises(
        ValueError, match="metadata shard .*metadata_1.parquet has 2 rows; its embedding shard"
    ):
        read_embeddings(tmp_path / "emb")
    (tmp_path / "emb" / "metadata" / "metadata_1.parquet").unlink()
    with pytest.raises(ValueError, match="2 metadata shards for 3 embedding shards"):
        read_embeddings(tmp_path / "emb")


@pytest.mark.parametrize("fixed", [True, False])
def test_parquet_embedding_column(tmp_path, rng, fixed):
    x = rng.standard_normal((9, 4)).astype(np.float32)
    typ = pa.list_(pa.float32(), 4) if fixed else pa.list_(pa.float32())
    t = pa.table({"embedding": pa.array(x.tolist(), typ), "text": [f"t{i}" for i in range(9)]})
    pq.write_table(t.slice(0, 5), tmp_path / "part_0.parquet")
    pq.write_table(t.slice(5), tmp_path / "part_1.parquet")
    emb, meta = read_embeddings(tmp_path / "part_0.parquet")
    np.testing.assert_array_equal(emb, x[:5])
    emb, meta = read_embeddings(tmp_path)
    np.testing.assert_array_equal(emb, x)
    assert meta.column_names == ["text"] and meta["text"].to_pylist()[8] == "t8"


def test_parquet_errors(tmp_path):
    pq.write_table(pa.table({"a": [1, 2]}), tmp_path / "x.parquet")
    with pytest.raises(ValueError, match="expected one embedding column"):
        read_embeddings(tmp_path / "x.parquet")
    ragged = pa.table({"embedding": pa.array([[1.0, 2.0], [3.0]], pa.list_(pa.float32()))})
    pq.write_table(ragged, tmp_path / "y.parquet")
    with pytest.raises(ValueError, match="same length"):
        read_embeddings(tmp_path / "y.parquet")


def test_fsspec_urls(rng):
    fsspec = pytest.importorskip("fsspec")
    fs = fsspec.filesystem("memory")
    x = rng.standard_normal((6, 3)).astype(np.float32)
    import io

    for i, part in enumerate((x[:4], x[4:])):
        buf = io.BytesIO()
        np.save(buf, part)
        fs.pipe(f"/dehub-test/emb/img_emb/img_emb_{i}.npy", buf.getvalue())
        with fs.open(f"/dehub-test/emb/metadata/metadata_{i}.parquet", "wb") as fh:
            pq.write_table(pa.table({"id": np.arange(4 * i, 4 * i + len(part))}), fh)
    emb, meta = read_embeddings("memory://dehub-test/emb")
    np.testing.assert_array_equal(emb, x)
    assert meta["id"].to_pylist() == list(range(6))
    with fs.open("/dehub-test/p.parquet", "wb") as fh:
        pq.write_table(pa.table({"embedding": pa.array(x.tolist(), pa.list_(pa.float32(), 3))}), fh)
    emb, _ = read_embeddings("memory://dehub-test/p.parquet")
    np.testing.assert_array_equal(emb, x)


def test_attach_metadata():
    meta = pa.table({"text": ["a", "b", "c"]})
    rows = attach_metadata(np.array([[2, 0], [1, -1]]), meta)
    assert rows == [[{"text": "c"}, {"text": "a"}], [{"text": "b"}, None]]
    with pytest.raises(ValueError, match="metadata has 3 rows"):
        attach_metadata(np.array([[5]]), meta)


def test_cli_build_and_search_read_layouts(tmp_path, unit, rng, capsys):
    from dehub.cli import main

    g = unit(rng, 40, 8)
    r = unit(rng, 100, 8)
    q = unit(rng, 5, 8)
    np.save(tmp_path / "g.npy", g)
    np.save(tmp_path / "r.npy", r)
    np.save(tmp_path / "q.npy", q)
    root = tmp_path / "clip"
    (root / "img_emb").mkdir(parents=True)
    (root / "metadata").mkdir()
    np.save(root / "img_emb" / "img_emb_0.npy", g[:25])
    np.save(root / "img_emb" / "img_emb_1.npy", g[25:])
    pq.write_table(pa.table({"id": np.arange(25)}), root / "metadata" / "metadata_0.parquet")
    pq.write_table(pa.table({"id": np.arange(25, 40)}), root / "metadata" / "metadata_1.parquet")
    pq.write_table(
        pa.table({"embedding": pa.array(r.tolist(), pa.list_(pa.float32(), 8))}), tmp_path / "r.parquet"
    )
    pq.write_table(
        pa.table({"embedding": pa.array(q.tolist(), pa.list_(pa.float32(), 8))}), tmp_path / "q.parquet"
    )
    common = ["--k", "5", "--normalize", "none"]
    assert (
        main(
            [
                "build",
                "--gallery",
                str(tmp_path / "g.npy"),
                "--reference",
                str(tmp_path / "r.npy"),
                "-o",
                str(tmp_path / "a.dehub"),
                *common,
            ]
        )
        == 0
    )
    assert (
        main(
            [
                "build",
                "--gallery",
                str(root),
                "--reference",
                str(tmp_path / "r.parquet"),
                "-o",
                str(tmp_path / "b.dehub"),
                *common,
            ]
        )
        == 0
    )
    capsys.readouterr()
    assert (
        main(
            ["search", str(tmp_path / "a.dehub"), "--queries", str(tmp_path / "q.npy"), "--normalize", "none"]
        )
        == 0
    )
    out_a = capsys.readouterr().out
    assert (
        main(
            [
                "search",
                str(tmp_path / "b.dehub"),
                "--queries",
                str(tmp_path / "q.parquet"),
                "--normalize",
                "none",
            ]
        )
        == 0
    )
    assert capsys.readouterr().out == out_a
    assert (
        main(
            [
                "build",
                "--gallery",
                str(tmp_path / "r.parquet"),
                "--reference",
                str(tmp_path / "nope.parquet"),
                "-o",
                str(tmp_path / "c.dehub"),
            ]
        )
        == 2
    )
