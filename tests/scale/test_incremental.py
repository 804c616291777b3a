"""Incremental updates of dehub.Index equal a refit from scratch (exact engine: exactly).

Bitwise equality needs bitwise-reproducible scores: a float32 BLAS GEMM may round the
last bit of a dot product differently depending on the block shape (so two refits on
galleries of different sizes differ by 1 ulp too). float64 inputs are multiplied in
float64 and rounded once to float32, which is reproducible: those tests compare with
``assert_array_equal``. ``test_float32_inputs_match_to_rounding`` covers float32.
"""

from __future__ import annotations

import os

import numpy as np
import pytest

import dehub
from dehub import Index, IndexFormatError, _format


@pytest.fixture
def data(rng, unit):
    f64 = np.float64
    return {
        "gallery": unit(rng, 120, 24, f64),
        "new": unit(rng, 30, 24, f64),
        "reference": unit(rng, 400, 24, f64),
        "more_reference": unit(rng, 150, 24, f64),
        "queries": unit(rng, 20, 24, f64),
    }


def _same(a: Index, b: Index) -> None:
    np.testing.assert_array_equal(a.ids, b.ids)
    np.testing.assert_array_equal(np.asarray(a.model.gallery_), np.asarray(b.model.gallery_))
    np.testing.assert_array_equal(a.model.topk_scores_, b.model.topk_scores_)
    np.testing.assert_array_equal(a.model.topk_ids_, b.model.topk_ids_)
    np.testing.assert_array_equal(a.model.bias_, b.model.bias_)


def test_add_equals_refit(data):
    ids = np.arange(120) * 10
    new_ids = 5000 + np.arange(30)
    inc = Index.build(data["gallery"], data["reference"], ids=ids, k=8, keep_reference=True)
    inc.add(data["new"], new_ids)
    full = Index.build(
        np.vstack([data["gallery"], data["new"]]), data["reference"], ids=np.concatenate([ids, new_ids]), k=8
    )
    _same(inc, full)
    qs = data["queries"]
    for a, b in zip(inc.search(qs, 10), full.search(qs, 10)):
        np.testing.assert_array_equal(a, b)


def test_add_with_passed_reference_and_default_ids(data):
    inc = Index.build(data["gallery"], data["reference"], k=8)
    with pytest.raises(ValueError, match="keep_reference=True"):
        inc.add(data["new"])
    with pytest.raises(ValueError, match="fitted on 400"):
        inc.add(data["new"], reference=data["reference"][:100])
    inc.add(data["new"], reference=data["reference"])
    full = Index.build(np.vstack([data["gallery"], data["new"]]), data["reference"], k=8)
    _same(inc, full)


def test_add_rejects_duplicate_ids(data):
    inc = Index.build(data["gallery"], data["reference"], k=8, keep_reference=True)
    before = inc.model.topk_scores_.copy()
    with pytest.raises(ValueError, match="unique"):
        inc.add(data["new"], np.arange(30))
    assert inc.n_items == 120
    np.testing.assert_array_equal(inc.model.topk_scores_, before)


def test_remove_equals_refit(data):
    ids = np.arange(120) + 100
    inc = Index.build(data["gallery"], data["reference"], ids=ids, k=8)
    drop = ids[::7]
    inc.remove(drop)
    keep = ~np.isin(ids, drop)
    full = Index.build(data["gallery"][keep], data["reference"], ids=ids[keep], k=8)
    _same(inc, full)
    with pytest.raises(KeyError, match="not in the index"):
        inc.remove([99999])


def test_add_reference_equals_refit(data):
    inc = Index.build(data["gallery"], data["reference"], k=16, alpha=0.6)
    inc.add_reference(data["more_reference"])
    assert inc.n_reference == 550
    full = Index.build(
        data["gallery"], np.vstack([data["reference"], data["more_reference"]]), k=16, alpha=0.6
    )
    _same(inc, full)
    for a, b in zip(inc.search(data["queries"], 5), full.search(data["queries"], 5)):
        np.testing.assert_array_equal(a, b)


def test_float32_inputs_match_to_rounding(rng, unit):
    g, new, ref, more = unit(rng, 100, 24), unit(rng, 20, 24), unit(rng, 300, 24), unit(rng, 100, 24)
    inc = Index.build(g, ref, k=8, keep_reference=True)
    inc.add(new)
    inc.add_reference(more)
    inc.remove([3, 50])
    keep = ~np.isin(np.arange(120), [3, 50])
    full = Index.build(np.vstack([g, new])[keep], np.vstack([ref, more]), ids=np.arange(120)[keep], k=8)
    np.testing.assert_array_equal(inc.ids, full.ids)
    np.testing.assert_array_equal(inc.model.topk_ids_, full.model.topk_ids_)
    np.testing.assert_allclose(inc.model.topk_scores_, full.model.topk_scores_, rtol=0, atol=1e-6)
    np.testing.assert_allclose(inc.model.bias_, full.model.bias_, rtol=0, atol=1e-6)


def test_add_reference_with_ties_keeps_smaller_ids(rng, unit):
    """Duplicated reference rows tie exactly: the merged top-k must keep the older rows."""
    gallery, reference = unit(rng, 40, 16, np.float64), unit(rng, 60, 16, np.float64)
    inc = Index.build(gallery, reference, k=8)
    inc.add_reference(reference[:30])  # exact duplicates of rows 0..29
    full = Index.build(gallery, np.vstack([reference, reference[:30]]), k=8)
    _same(inc, full)


def test_sequence_of_updates_and_save_roundtrip(data, tmp_path):
    path = tmp_path / "g.dehub"
    g, ref, more = data["gallery"], data["reference"], data["more_reference"]
    inc = Index.build(g, ref, k=8, keep_reference=True)
    inc.save(path)
    inc = Index.load(path)
    inc.add(data["new"], 1000 + np.arange(30), save_to=path)
    inc = Index.load(path)
    inc.add_reference(more, save_to=path)
    inc = Index.load(path)
    inc.remove([0, 1000], save_to=path)
    loaded = Index.load(path)
    ids_all = np.concatenate([np.arange(120), 1000 + np.arange(30)])
    keep = ~np.isin(ids_all, [0, 1000])
    full = Index.build(np.vstack([g, data["new"]])[keep], np.vstack([ref, more]), ids=ids_all[keep], k=8)
    _same(loaded, full)
    np.testing.assert_array_equal(loaded.reference, np.vstack([ref, more]))
    assert loaded.n_reference == 550


def test_stateless_method_add_remove(data):
    inc = Index.build(data["gallery"], data["reference"], method="plain")
    inc.add(data["new"])
    inc.remove([0])
    assert inc.n_items == 149


def test_interrupted_save_leaves_last_file_loadable(data, tmp_path, monkeypatch):
    path = tmp_path / "g.dehub"
    idx = Index.build(data["gallery"], data["reference"], k=8, keep_reference=True)
    idx.save(path)
    saved = Index.load(path)

    def crash(*args, **kwargs):
        raise KeyboardInterrupt("power cut during the update's write")

    monkeypatch.setattr(_format.os, "fsync", crash)
    with pytest.raises(KeyboardInterrupt):
        idx.add(data["new"], 900 + np.arange(30), save_to=path)
    monkeypatch.undo()
    # the in-memory index rolled back, the file is the last saved version, no temp left
    assert idx.n_items == 120
    after = Index.load(path)
    _same(after, saved)
    assert [p.name for p in tmp_path.iterdir()] == ["g.dehub"]


def test_interrupted_computation_changes_nothing(data, tmp_path, monkeypatch):
    path = tmp_path / "g.dehub"
    idx = Index.build(data["gallery"], data["reference"], k=8)
    idx.save(path)
    digest_before = path.read_bytes()

    def crash(*args, **kwargs):
        raise KeyboardInterrupt

    model_before = idx.model
    monkeypatch.setattr(dehub.methods.nnn, "topk_search", crash)  # inside the estimator's hook
    with pytest.raises(KeyboardInterrupt):
        idx.add_reference(data["more_reference"], save_to=path)
    assert idx.n_reference == 400 and idx.model is model_before
    assert path.read_bytes() == digest_before
    _same(Index.load(path), idx)


def test_truncated_file_is_a_clear_error(data, tmp_path):
    path = tmp_path / "g.dehub"
    Index.build(data["gallery"], data["reference"], k=8, keep_reference=True).save(path)
    raw = path.read_bytes()
    (tmp_path / "cut.dehub").write_bytes(raw[: len(raw) // 2])
    with pytest.raises(IndexFormatError, match="truncated"):
        Index.load(tmp_path / "cut.dehub")
    assert os.path.getsize(path) == len(raw)
