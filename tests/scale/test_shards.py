"""Memory-mapped and sharded inputs give the same results as in-memory arrays."""

from __future__ import annotations

import numpy as np
import pytest

import dehub
from dehub.cli import main as cli_main
from dehub.datasets.shards import ShardedArray, open_embeddings, shard_paths
from dehub.engine import exact_search, topk_search


@pytest.fixture
def sharded(tmp_path, clustered_data):
    g = clustered_data["gallery"]
    d = tmp_path / "emb" / "img_emb"
    d.mkdir(parents=True)
    for j, (a, b) in enumerate([(0, 100), (100, 101), (101, 350), (350, 600)]):
        np.save(d / f"img_emb_{j}.npy", g[a:b])
    return d, g


def test_shard_order_is_numeric(tmp_path):
    for j in (0, 1, 2, 10):
        np.save(tmp_path / f"img_emb_{j}.npy", np.full((1, 2), j, np.float32))
    assert [p.name for p in shard_paths(tmp_path)] == [f"img_emb_{j}.npy" for j in (0, 1, 2, 10)]
    np.testing.assert_array_equal(ShardedArray(tmp_path)[:, 0], [0, 1, 2, 10])


def test_sharded_view_indexing(sharded):
    d, g = sharded
    x = ShardedArray(d)
    assert x.shape == g.shape and x.dtype == g.dtype and len(x) == 600 and x.ndim == 2
    for sl in (
        slice(0, 600),
        slice(90, 120),
        slice(100, 101),
        slice(599, 700),
        slice(5, 5),
        slice(0, 600, 7),
    ):
        np.testing.assert_array_equal(x[sl], g[sl])
    rows = np.array([599, 0, 100, 100, 350, 349])
    np.testing.assert_array_equal(x[rows], g[rows])
    np.testing.assert_array_equal(x[-1], g[-1])
    np.testing.assert_array_equal(np.asarray(x), g)
    blocks = list(x.iter_blocks(128))
    np.testing.assert_array_equal(np.vstack([b for _, b in blocks]), g)
    assert open_embeddings(d.parent).shape == g.shape  # parent with one shard sub-directory
    with pytest.raises(IndexError):
        x[600]


def test_shard_mismatch_is_explained(tmp_path):
    np.save(tmp_path / "a_0.npy", np.zeros((2, 4), np.float32))
    np.save(tmp_path / "a_1.npy", np.zeros((2, 5), np.float32))
    with pytest.raises(ValueError, match="same columns and dtype"):
        ShardedArray(tmp_path)


@pytest.mark.parametrize("engine", ["exact", "ivf"])
def test_engines_on_memmap_and_shards_equal_in_memory(sharded, clustered_data, tmp_path, engine):
    d, g = sharded
    r = clustered_data["reference"]
    np.save(tmp_path / "ref.npy", r)
    ref_mm = open_embeddings(tmp_path / "ref.npy")
    assert isinstance(ref_mm, np.memmap)
    kw = {"engine": engine, "engine_params": {"nprobe": 4}}
    expect = topk_search(g, r, 8, **kw)
    for q, db in ((ShardedArray(d), ref_mm), (g, ref_mm), (ShardedArray(d), r)):
        got = topk_search(q, db, 8, **kw)
        np.testing.assert_array_equal(got[1], expect[1])
        np.testing.assert_array_equal(got[0], expect[0])
    # the exact engine streams a sharded database block by block
    got = exact_search(g, ShardedArray(d), 5, database_block=64)
    np.testing.assert_array_equal(got[1], exact_search(g, g, 5, database_block=64)[1])


def test_nnn_fit_on_shards_equals_in_memory(sharded, clustered_data):
    d, g = sharded
    r = clustered_data["reference"]
    a = dehub.NNN(k=8).fit(g, r)
    b = dehub.NNN(k=8).fit(ShardedArray(d), r)
    np.testing.assert_array_equal(a.topk_ids_, b.topk_ids_)
    np.testing.assert_array_equal(a.bias_, b.bias_)


def test_cli_build_accepts_shard_directory(sharded, clustered_data, tmp_path):
    d, g = sharded
    r = clustered_data["reference"]
    np.save(tmp_path / "ref.npy", r)
    np.save(tmp_path / "gallery.npy", g)
    assert (
        cli_main(
            [
                "build",
                "--gallery",
                str(d),
                "--reference",
                str(tmp_path / "ref.npy"),
                "-o",
                str(tmp_path / "a.dehub"),
                "--k",
                "8",
            ]
        )
        == 0
    )
    assert (
        cli_main(
            [
                "build",
                "--gallery",
                str(tmp_path / "gallery.npy"),
                "--reference",
                str(tmp_path / "ref.npy"),
                "-o",
                str(tmp_path / "b.dehub"),
                "--k",
                "8",
            ]
        )
        == 0
    )
    a, b = dehub.Index.load(tmp_path / "a.dehub"), dehub.Index.load(tmp_path / "b.dehub")
    np.testing.assert_array_equal(a.model.topk_scores_, b.model.topk_scores_)
    np.testing.assert_array_equal(np.asarray(a.model.gallery_), g)


def test_nnn_fit_keeps_a_sharded_reference_unloaded(sharded, clustered_data, monkeypatch):
    """The input checks read shards in chunks: the whole array is never materialized."""
    d, g = sharded
    calls = []
    monkeypatch.setattr(ShardedArray, "__array__", lambda self, *a, **k: calls.append(1))
    model = dehub.NNN(k=8).fit(g, ShardedArray(d))
    assert calls == []
    ref = dehub.NNN(k=8).fit(g, g)
    np.testing.assert_array_equal(model.topk_ids_, ref.topk_ids_)
