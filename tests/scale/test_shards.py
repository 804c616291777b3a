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


def test_shard_order_is_embedding_readers(tmp_path):
    """Unpadded names read in string order, as embedding-reader / autofaiss read them
    (``dehub embed`` writes zero-padded names, whose string order is numeric)."""
    for j in (0, 1, 2, 10):
        np.save(tmp_path / f"img_emb_{j}.npy", np.full((1, 2), j, np.float32))
    assert [p.name for p in shard_paths(tmp_path)] == [f"img_emb_{j}.npy" for j in (0, 1, 10, 2)]
    np.testing.assert_array_equal(ShardedArray(tmp_path)[:, 0], [0, 1, 10, 2])


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


# --------------------------------------------------------------------------- issue 9: many shards
@pytest.mark.slow
def test_5000_shards_under_a_low_descriptor_limit(tmp_path):
    """Before: every shard held a descriptor, so > ~1,020 shards failed with EMFILE.

    The child lowers RLIMIT_NOFILE to 128 and reads 5,000 shards (slices, blocks, random
    rows, and an NNN fit over them) through the LRU of at most 64 open maps.
    """
    import subprocess
    import sys

    pytest.importorskip("resource")
    d = tmp_path / "img_emb"
    d.mkdir()
    rng = np.random.default_rng(3)
    full = rng.standard_normal((5000 * 2, 4)).astype(np.float32)
    full /= np.linalg.norm(full, axis=1, keepdims=True)
    for j in range(5000):  # zero-padded, as dehub embed writes them: string order = row order
        np.save(d / f"img_emb_{j:05d}.npy", full[2 * j : 2 * j + 2])
    np.save(tmp_path / "full.npy", full)
    code = f"""
import resource, numpy as np
resource.setrlimit(resource.RLIMIT_NOFILE, (128, 128))
from dehub.datasets.shards import ShardedArray
import dehub
full = np.load({str(tmp_path / "full.npy")!r})
x = ShardedArray({str(d)!r})
assert x.shape == (10000, 4) and len(x.paths) == 5000
assert np.array_equal(np.asarray(x), full)
assert np.array_equal(np.vstack([b for _, b in x.iter_blocks(333)]), full)
rows = np.random.default_rng(0).integers(0, 10000, 3000)
assert np.array_equal(x[rows], full[rows])
assert np.array_equal(x[1234:5678], full[1234:5678])
assert len(x._open) <= x.max_open == 64
m = dehub.NNN(k=4).fit(x, full[:50])
ref = dehub.NNN(k=4).fit(full, full[:50])
assert np.allclose(m.bias_, ref.bias_, atol=1e-6)
try:
    [open({str(tmp_path / "full.npy")!r}) for _ in range(200)]
except OSError as exc:
    print("limit active:", exc.errno)
print("ok")
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "limit active: 24" in out.stdout and out.stdout.strip().endswith("ok")


def test_lru_bounds_open_maps_and_reopens(tmp_path):
    for j in range(10):
        np.save(tmp_path / f"s_{j}.npy", np.full((3, 2), j, np.float32))
    x = ShardedArray(tmp_path, max_open=3)
    for j in (0, 5, 9, 2, 0, 7):
        np.testing.assert_array_equal(x[3 * j], [j, j])
        assert len(x._open) <= 3
    assert list(x._open) == [2, 0, 7], "least recently used first out"
    x.close()
    assert not x._open and x[29].tolist() == [9, 9]
    with pytest.raises(ValueError, match="max_open must be a positive integer"):
        ShardedArray(tmp_path, max_open=0)


def test_shard_replaced_after_opening_is_detected(tmp_path):
    for j in range(3):
        np.save(tmp_path / f"s_{j}.npy", np.zeros((3, 2), np.float32))
    x = ShardedArray(tmp_path, max_open=1)
    np.save(tmp_path / "s_2.npy", np.zeros((4, 2), np.float32))
    with pytest.raises(ValueError, match=r"s_2.npy changed since it was opened: shape \(4, 2\)"):
        x[8]


def test_object_and_broken_shards_are_refused(tmp_path):
    np.save(tmp_path / "a_0.npy", np.zeros((2, 2), np.float32))
    np.save(tmp_path / "a_1.npy", np.array([[None, 1]], dtype=object), allow_pickle=True)
    with pytest.raises(ValueError, match="same columns and dtype"):
        ShardedArray(tmp_path)
    (tmp_path / "a_1.npy").write_bytes(b"not numpy")
    with pytest.raises(ValueError, match=r"a_1.npy is not a readable .npy shard"):
        ShardedArray(tmp_path)


def test_threads_reading_shards_never_see_another_shards_rows(tmp_path):
    """Engine workers read blocks of one ShardedArray from several threads. Before the lock,
    one thread could evict and unmap a shard another was copying from; the freed address
    range was mapped again by the next shard opened, so the copy held another shard's rows
    (an NNN fit over 5,000 shards differed from the in-memory fit on a busy machine)."""
    import threading

    d = tmp_path / "emb"
    d.mkdir()
    n_shards, rows_per = 400, 2
    full = np.arange(n_shards * rows_per * 4, dtype=np.float32).reshape(-1, 4)
    for j in range(n_shards):
        np.save(d / f"emb_{j:05d}.npy", full[rows_per * j : rows_per * (j + 1)])
    x = ShardedArray(d, max_open=2)
    wrong: list[tuple[int, int]] = []

    def reader(seed: int) -> None:
        rng = np.random.default_rng(seed)
        for _ in range(300):
            a = int(rng.integers(0, full.shape[0] - 8))
            if not np.array_equal(x[a : a + 8], full[a : a + 8]):
                wrong.append((seed, a))
            rows = rng.integers(0, full.shape[0], 6)
            if not np.array_equal(x[rows], full[rows]):
                wrong.append((seed, -1))

    threads = [threading.Thread(target=reader, args=(s,)) for s in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not wrong, f"{len(wrong)} reads returned other rows, e.g. {wrong[:3]}"
    assert len(x._open) <= 2
