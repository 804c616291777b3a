"""dehub.Index: build, search with external ids, save/load round trip, damaged files, crashes."""

from __future__ import annotations

import builtins
import json

import numpy as np
import pytest

from dehub import NNN, Index, IndexFormatError, NotFittedError, Plain
from dehub._format import read_container, write_container
from dehub.index import KClampedWarning
from reference_nnn import assert_topk_match, ref_nnn_search


@pytest.fixture
def data(rng, unit):
    return unit(rng, 40, 8), unit(rng, 90, 8), unit(rng, 15, 8)


@pytest.fixture
def index(data):
    gallery, reference, _ = data
    ids = np.arange(40, dtype=np.int64) * 7 + 100
    return Index.build(gallery, reference, k=6, alpha=0.75, ids=ids, metadata={"encoder": "toy", "n": 3})


def _k_alpha(params: dict) -> dict:
    """NNN's paper parameters (the estimator may carry engine settings besides)."""
    return {"k": params["k"], "alpha": params["alpha"]}


def _same_search(a: Index, b: Index, queries, k=10):
    sa, ia = a.search(queries, k)
    sb, ib = b.search(queries, k)
    np.testing.assert_array_equal(ia, ib)
    np.testing.assert_array_equal(sa, sb)


# --------------------------------------------------------------------------- build/search
def test_search_returns_external_ids_and_matches_reference(index, data):
    gallery, reference, queries = data
    with pytest.warns(KClampedWarning, match=r"k=45 exceeds the 40 items in the index; returning 40"):
        s, ids = index.search(queries, 45)  # more than the gallery: clamped, no padding
    assert ids.shape == s.shape == (15, 40) and np.all(ids >= 100)
    rows = np.where(ids >= 0, (ids - 100) // 7, -1)
    rs, ri, dense = ref_nnn_search(queries, gallery, reference, 6, 0.75, 40)
    assert_topk_match(s, rows, rs, ri, dense, atol=1e-5)


def test_default_ids_and_info(data):
    gallery, reference, _ = data
    index = Index.build(gallery, reference, k=3)
    np.testing.assert_array_equal(index.ids, np.arange(40))
    info = index.info()
    assert _k_alpha(info.pop("params")) == {"k": 3, "alpha": 0.75}
    assert info == {"method": "nnn", "n_items": 40, "dim": 8, "gallery_dtype": "float32", "metadata": {}}
    assert repr(index).startswith("Index(NNN(k=3, alpha=0.75") and repr(index).endswith("n_items=40, dim=8)")


def test_unfitted_model_is_refused():
    with pytest.raises(NotFittedError):
        Index(NNN())


def test_build_leaves_inputs_unchanged(data, digest):
    gallery, reference, queries = data
    ids = np.arange(40)[::-1].copy()
    before = digest(gallery, reference, queries, ids)
    index = Index.build(gallery, reference, k=4, ids=ids)
    index.search(queries, 5)
    assert digest(gallery, reference, queries, ids) == before


# --------------------------------------------------------------------------- round trip
def test_save_load_round_trip(tmp_path, index, data, digest):
    _, _, queries = data
    held = (index.model.gallery_, index.ids, index.model.topk_scores_, index.model.topk_ids_)
    before = digest(*held)
    path = index.save(tmp_path / "i.dehub")
    assert digest(*held) == before, "saving must not change the index's arrays"
    assert path == tmp_path / "i.dehub"
    back = Index.load(path)
    np.testing.assert_array_equal(back.model.gallery_, index.model.gallery_)
    np.testing.assert_array_equal(back.ids, index.ids)
    np.testing.assert_array_equal(back.model.topk_scores_, index.model.topk_scores_)
    np.testing.assert_array_equal(back.model.topk_ids_, index.model.topk_ids_)
    np.testing.assert_array_equal(back.model.bias_, index.model.bias_)
    assert back.model.get_params() == index.model.get_params()
    assert _k_alpha(back.model.get_params()) == {"k": 6, "alpha": 0.75}
    assert back.model.fitted_k_ == 6
    assert back.metadata == {"encoder": "toy", "n": 3}
    assert back.ids.dtype == np.int64 and back.model.gallery_.dtype == np.float32
    _same_search(back, index, queries)


def test_changed_parameters_are_persisted(tmp_path, index, data):
    _, _, queries = data
    index.model.alpha = 0.3
    index.model.k = 2  # below the fitted k: served from the cache
    index.save(tmp_path / "i.dehub")
    back = Index.load(tmp_path / "i.dehub")
    assert _k_alpha(back.model.get_params()) == {"k": 2, "alpha": 0.3}
    assert back.model.fitted_k_ == 6, "the whole cache is stored, so k can go back up to 6"
    np.testing.assert_array_equal(back.model.bias_, index.model.bias_)
    _same_search(back, index, queries)
    back.model.k = 6
    np.testing.assert_allclose(back.model.bias_, 0.3 * back.model.topk_scores_.mean(axis=1), atol=1e-6)


def test_numpy_scalar_parameters_are_stored_as_json(tmp_path, data):
    gallery, reference, _ = data
    index = Index.build(gallery, reference, k=np.int64(4), alpha=np.float32(0.5))
    index.save(tmp_path / "i.dehub")
    params = Index.load(tmp_path / "i.dehub").model.get_params()
    assert _k_alpha(params) == {"k": 4, "alpha": 0.5} and type(params["k"]) is int


@pytest.mark.parametrize("dtype", [np.float16, np.float64])
def test_gallery_dtype_is_kept(tmp_path, data, dtype):
    gallery, reference, queries = data
    index = Index.build(gallery.astype(dtype), reference, k=3)
    index.save(tmp_path / "i.dehub")
    back = Index.load(tmp_path / "i.dehub")
    assert back.model.gallery_.dtype == dtype
    _same_search(back, index, queries)


def test_plain_method_round_trip(tmp_path, data):
    gallery, reference, queries = data
    index = Index.build(gallery, reference, method="plain")
    assert isinstance(index.model, Plain)
    index.save(tmp_path / "p.dehub")
    back = Index.load(tmp_path / "p.dehub")
    assert isinstance(back.model, Plain)
    _same_search(back, index, queries)


def test_mmap_load(tmp_path, index, data):
    _, _, queries = data
    index.save(tmp_path / "i.dehub")
    back = Index.load(tmp_path / "i.dehub", mmap=True)
    assert isinstance(back.model.gallery_, np.memmap)
    _same_search(back, index, queries)
    # A mapped index can be saved again, over its own file.
    back.model.alpha = 1.0
    back.save(tmp_path / "i.dehub")
    again = Index.load(tmp_path / "i.dehub")
    assert again.model.alpha == 1.0
    _same_search(again, back, queries)


def test_describe_file_reads_only_the_header(tmp_path, index):
    index.save(tmp_path / "i.dehub")
    header = Index.describe_file(tmp_path / "i.dehub")
    assert header["kind"] == "dehub.index" and header["method"] == "nnn"
    assert _k_alpha(header["params"]) == {"k": 6, "alpha": 0.75}
    assert header["created_by"].startswith("dehub ")
    assert [a["name"] for a in header["arrays"]] == ["gallery", "ids", "model.topk_scores", "model.topk_ids"]


# --------------------------------------------------------------------------- damaged files
@pytest.fixture
def saved(tmp_path, index):
    return index.save(tmp_path / "i.dehub")


def test_truncated_file(saved):
    raw = saved.read_bytes()
    for cut in (0, 30, 60, len(raw) // 2, len(raw) - 1):
        saved.write_bytes(raw[:cut])
        with pytest.raises(IndexFormatError, match=r"i\.dehub: truncated"):
            Index.load(saved)


def test_flipped_byte_in_header(saved):
    raw = bytearray(saved.read_bytes())
    raw[60] ^= 0x01  # inside the JSON header
    saved.write_bytes(bytes(raw))
    with pytest.raises(IndexFormatError, match=r"header checksum mismatch: the file is corrupt"):
        Index.load(saved)


@pytest.mark.parametrize("name", ["gallery", "ids", "model.topk_scores", "model.topk_ids"])
def test_flipped_byte_in_array_data(saved, name):
    meta = next(a for a in Index.describe_file(saved)["arrays"] if a["name"] == name)
    raw = bytearray(saved.read_bytes())
    raw[meta["offset"] + 5] ^= 0x04
    saved.write_bytes(bytes(raw))
    with pytest.raises(IndexFormatError, match=rf"checksum mismatch in array '{name}': the file is corrupt"):
        Index.load(saved)
    with pytest.raises(IndexFormatError, match="checksum mismatch"):
        Index.load(saved, mmap=True)


def test_wrong_version(saved):
    raw = bytearray(saved.read_bytes())
    raw[8:12] = (2).to_bytes(4, "little")
    saved.write_bytes(bytes(raw))
    with pytest.raises(
        IndexFormatError,
        match=r"format version 2 is not supported; this dehub reads version 1\. Upgrade dehub or rebuild the index",
    ):
        Index.load(saved)


def test_not_a_dehub_file(tmp_path):
    other = tmp_path / "x.npy"
    np.save(other, np.zeros(100))
    with pytest.raises(IndexFormatError, match=r"not a dehub index file"):
        Index.load(other)
    text = tmp_path / "x.txt"
    text.write_text(json.dumps({"some": "json"}) * 10)
    with pytest.raises(IndexFormatError, match=r"not a dehub index file"):
        Index.load(text)


def _container(path, header, arrays):
    write_container(path, header, arrays)
    return path


def test_valid_container_but_not_an_index(tmp_path, index):
    base = {"kind": "dehub.index", "method": "nnn", "params": {"k": 6, "alpha": 0.75}}
    good = {
        "gallery": np.asarray(index.model.gallery_),
        "ids": index.ids,
        "model.topk_scores": index.model.topk_scores_,
        "model.topk_ids": index.model.topk_ids_,
    }
    cases = [
        ({**base, "kind": "something.else"}, good, r"holds 'something.else', expected a 'dehub.index' file"),
        (
            {**base, "method": "magic"},
            good,
            r"method 'magic' is unknown to this dehub; expected one of \[.*'nnn'",
        ),
        ({**base, "params": {"k": 6, "beta": 1}}, good, r"stored parameters .* do not fit method 'nnn'"),
        (base, {n: a for n, a in good.items() if n != "ids"}, r"missing array 'ids'"),
        (base, {**good, "model.topk_ids": good["model.topk_ids"][:5]}, r"stored statistics are inconsistent"),
        (
            base,
            {n: a for n, a in good.items() if n != "model.topk_scores"},
            r"stored statistics are inconsistent",
        ),
        (base, {**good, "ids": good["ids"][:10]}, r"ids shape \(10,\) does not match gallery rows 40"),
    ]
    for i, (header, arrays, match) in enumerate(cases):
        path = _container(tmp_path / f"c{i}.dehub", header, arrays)
        with pytest.raises(IndexFormatError, match=match):
            Index.load(path)


def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="no index file at"):
        Index.load(tmp_path / "absent.dehub")


# --------------------------------------------------------------------------- crash mid-save
def test_crash_mid_save_leaves_old_index_loadable(tmp_path, monkeypatch, index, data):
    import dehub._format as fmt

    gallery, reference, queries = data
    path = index.save(tmp_path / "i.dehub")
    old_bytes = path.read_bytes()
    bigger = Index.build(np.vstack([gallery, gallery[:5]]), reference, k=3)

    class HalfWrite:
        """A file whose writes fail once ~2 KB have gone to disk (disk full / power loss)."""

        def __init__(self, f):
            self.f, self.left = f, 2048

        def write(self, b):
            b = bytes(b)
            if len(b) > self.left:
                self.f.write(b[: self.left])
                raise OSError(28, "No space left on device (simulated)")
            self.left -= len(b)
            return self.f.write(b)

        def __getattr__(self, name):
            return getattr(self.f, name)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return self.f.__exit__(*exc)

    # write_container opens its temporary file with the builtin open(): wrap that file
    monkeypatch.setattr(fmt, "open", lambda f, mode: HalfWrite(builtins.open(f, mode)), raising=False)
    with pytest.raises(OSError, match="No space left"):
        bigger.save(path)
    monkeypatch.undo()

    assert path.read_bytes() == old_bytes
    back = Index.load(path)
    assert back.n_items == 40
    _same_search(back, index, queries)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["i.dehub"], "no temporary file may be left behind"


def test_save_overwrites_atomically_and_leaves_no_temp(tmp_path, index, data):
    gallery, reference, _ = data
    path = index.save(tmp_path / "i.dehub")
    Index.build(gallery[:10], reference, k=2).save(path)
    assert Index.load(path).n_items == 10
    assert sorted(p.name for p in tmp_path.iterdir()) == ["i.dehub"]
    header, arrays = read_container(path)
    assert set(arrays) == {"gallery", "ids", "model.topk_scores", "model.topk_ids"}
