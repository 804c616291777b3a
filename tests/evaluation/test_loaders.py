"""Loaders: ids, pairs files, Karpathy JSON, and their error messages."""

from __future__ import annotations

import json

import numpy as np
import pytest

from dehub.datasets.loaders import (
    load_embeddings,
    load_ids,
    load_karpathy_benchmark,
    load_relevance,
)


def _karpathy(tmp_path, splits, n_caps=5):
    images, sid = [], 0
    for i, s in enumerate(splits):
        caps = n_caps + (i % 2)  # some images have 6 captions, as in COCO
        images.append(
            {
                "split": s,
                "filename": f"{i}.jpg",
                "sentids": list(range(sid, sid + caps)),
                "sentences": [{"raw": f"c{j}"} for j in range(sid, sid + caps)],
            }
        )
        sid += caps
    path = tmp_path / "dataset_toy.json"
    path.write_text(json.dumps({"images": images, "dataset": "toy"}))
    return path, sid


def test_karpathy_structure(tmp_path):
    splits = ["test"] * 4 + ["val"] * 3 + ["train"] * 10 + ["restval"] * 10
    path, n_caps = _karpathy(tmp_path, splits)
    rng = np.random.default_rng(0)
    img = rng.normal(size=(len(splits), 8)).astype(np.float32)
    cap = rng.normal(size=(n_caps, 8)).astype(np.float32)
    b = load_karpathy_benchmark(path, img, cap, reference_fraction=0.5, seed=1)
    assert b.a_name == "caption" and b.b_name == "image" and b.name == "toy"
    assert b.test.b.shape[0] == 4 and b.validation.b.shape[0] == 3 and b.reference.b.shape[0] == 10
    assert b.test.a.shape[0] == 4 * 5 + 2  # images 1 and 3 have 6 captions
    t2i = b.test.task("a2b").relevance
    assert (t2i.counts() == 1).all()
    i2t = b.test.task("b2a").relevance
    assert i2t.counts().tolist() == [5, 6, 5, 6]
    # caption rows are the right ones: first test caption is caption 0 of image 0
    assert np.array_equal(b.test.a[0], cap[0]) and np.array_equal(b.test.b[1], img[1])
    again = load_karpathy_benchmark(path, img, cap, reference_fraction=0.5, seed=1)
    assert np.array_equal(again.reference.b, b.reference.b)


def test_karpathy_errors(tmp_path):
    path, n_caps = _karpathy(tmp_path, ["test", "train"])
    img = np.ones((2, 4), np.float32)
    with pytest.raises(ValueError, match="lists 11 captions but the caption embeddings have 3"):
        load_karpathy_benchmark(path, img, np.ones((3, 4), np.float32))
    with pytest.raises(ValueError, match="lists 2 images"):
        load_karpathy_benchmark(path, np.ones((5, 4), np.float32), np.ones((n_caps, 4), np.float32))
    with pytest.raises(ValueError, match="validation split is empty"):
        load_karpathy_benchmark(path, img, np.ones((n_caps, 4), np.float32))


def test_ids_and_relevance_errors(tmp_path):
    (tmp_path / "ids.txt").write_text("a\nb\na\n")
    with pytest.raises(ValueError, match="unique"):
        load_ids(tmp_path / "ids.txt", 3)
    with pytest.raises(ValueError, match="3 ids for 4 embedding rows"):
        load_ids(tmp_path / "ids.txt", 4)
    np.save(tmp_path / "ids.npy", np.array([10, 11, 12]))
    gids = load_ids(tmp_path / "ids.npy", 3)
    (tmp_path / "p.csv").write_text("query_id,gallery_id,score\n0,12,1\n0,10,1\n1,11,1\n")
    rel = load_relevance(tmp_path / "p.csv", np.array(["0", "1", "2"], dtype=object), gids)
    assert rel.to_dict() == {0: {0, 2}, 1: {1}, 2: set()}  # query 2 kept, no positives
    (tmp_path / "bad.csv").write_text("q,g\n0,1\n")
    with pytest.raises(ValueError, match="'query_id' and 'gallery_id'"):
        load_relevance(tmp_path / "bad.csv", gids, gids)
    (tmp_path / "bad.jsonl").write_text('{"query_id": 1}\n')
    with pytest.raises(ValueError, match="bad.jsonl:1"):
        load_relevance(tmp_path / "bad.jsonl", gids, gids)
    np.save(tmp_path / "e.npy", np.zeros((0, 3), np.float32))
    with pytest.raises(ValueError, match="no rows"):
        load_embeddings(tmp_path / "e.npy")
    np.save(tmp_path / "i.npy", np.zeros((2, 3), np.int32))
    with pytest.raises(ValueError, match="2-D float"):
        load_embeddings(tmp_path / "i.npy")
    with pytest.raises(FileNotFoundError):
        load_embeddings(tmp_path / "missing.npy")


def test_content_overlap_text_files_and_shard_dirs(tmp_path):
    import warnings

    from dehub.datasets import ShardedArray
    from dehub.datasets.loaders import (
        check_content_disjoint,
        content_fingerprint,
        count_shared_rows,
        load_embeddings,
        row_hashes,
    )

    rng = np.random.default_rng(0)
    x = rng.normal(size=(50, 7)).astype(np.float32)
    y = np.concatenate([rng.normal(size=(30, 7)).astype(np.float32), x[[4, 9]]])
    # float64 copies and -0.0 hash like the float32 values they hold
    assert np.array_equal(row_hashes(x), row_hashes(x.astype(np.float64)))
    pos, neg = x.copy(), x.copy()
    pos[0, 0], neg[0, 0] = 0.0, -0.0
    assert row_hashes(pos)[0] == row_hashes(neg)[0]
    assert count_shared_rows(x, y)[0] == 2 and count_shared_rows(x, y)[1].tolist() == [4, 9]
    assert count_shared_rows(x, rng.normal(size=(20, 7)))[0] == 0
    assert content_fingerprint(x) == content_fingerprint(x.copy()) != content_fingerprint(y)
    with pytest.raises(ValueError, match="'a' and 'b' share 50 identical rows.*allow_overlap=True"):
        check_content_disjoint({"'a'": x, "'b'": x.copy()}, [("'a'", "'b'", "why")])
    with pytest.warns(UserWarning, match="share 50 identical rows"):
        check_content_disjoint({"a": x, "b": x}, [("a", "b", "why")], allow_overlap=True)
    # 2 shared rows of 32: above 1% -> error; one shared row in 200 -> a warning only
    with pytest.raises(ValueError, match="share 2 identical rows"):
        check_content_disjoint({"a": x, "b": y}, [("a", "b", "why")])
    big = rng.normal(size=(200, 7)).astype(np.float32)
    big2 = np.concatenate([rng.normal(size=(199, 7)).astype(np.float32), big[:1]])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert check_content_disjoint({"a": big, "b": big2}, [("a", "b", "why")]) == {"a ~ b": 1}
    assert len(caught) == 1
    # text given as an array: a clear message, not numpy's allow_pickle advice
    (tmp_path / "e.npy").write_text("1 2 3\n4 5 6\n")
    with pytest.raises(ValueError, match="is not a .npy array .*text or CSV files") as info:
        load_embeddings(tmp_path / "e.npy")
    assert "allow_pickle" not in str(info.value)
    # a shard directory is one array
    d = tmp_path / "shards"
    d.mkdir()
    np.save(d / "emb_0.npy", x[:20])
    np.save(d / "emb_1.npy", x[20:])
    arr = load_embeddings(d)
    assert isinstance(arr, ShardedArray) and arr.shape == (50, 7)
    assert count_shared_rows(arr, x)[0] == 50
