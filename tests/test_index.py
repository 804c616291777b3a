"""dehub.Index: build, search with external ids, save/load round trip, damaged files, crashes."""

from __future__ import annotations

import builtins
import json
import os
import subprocess
import sys

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
    with pytest.warns(KClampedWarning, match=r"k=45 exceeds the 40 gallery items; returning 40"):
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
    index = index.with_params(alpha=0.3, k=2)  # k below the fitted k: served from the cache
    index.save(tmp_path / "i.dehub")
    back = Index.load(tmp_path / "i.dehub")
    assert _k_alpha(back.model.get_params()) == {"k": 2, "alpha": 0.3}
    assert back.model.fitted_k_ == 6, "the whole cache is stored, so k can go back up to 6"
    np.testing.assert_array_equal(back.model.bias_, index.model.bias_)
    _same_search(back, index, queries)
    back = back.with_params(k=6)
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
    back = back.with_params(alpha=1.0)
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


# --------------------------------------------------------------------------- content validation (issue 9)
import crafted_index as crafted  # noqa: E402
from dehub._ids import ID_MAX  # noqa: E402


def _crafted_plain(tmp_path, gallery, ids=None, name="c.dehub", **kw):
    return crafted.plain_index(tmp_path / name, gallery, ids, **kw)


@pytest.mark.parametrize(
    "gallery, match",
    [
        (
            np.arange(12, dtype=np.int64).reshape(3, 4),
            r"the gallery must be float16, float32 or float64 \(.<f2., .<f4. or .<f8.\); found dtype <i8",
        ),
        (np.zeros((3, 4), np.uint8), r"found dtype \|u1"),
        (
            np.ones((3, 4, 1), np.float32),
            r"the gallery must be a non-empty 2-D array \(n_items, dim\); found shape \(3, 4, 1\)",
        ),
        (np.ones(3, np.float32), r"found shape \(3,\)"),
        (np.ones((0, 4), np.float32), r"found shape \(0, 4\)"),
        (
            np.array([[1, 0], [np.nan, 0]], np.float32),
            r"the stored gallery contains NaN or infinite values \(first at row 1",
        ),
        (np.array([[1, 0], [0, np.inf]], np.float32), r"contains NaN or infinite values"),
    ],
)
def test_foreign_re_checksummed_gallery_is_validated(tmp_path, gallery, match):
    """Before: integer, 3-D and NaN galleries loaded (checksums were valid)."""
    ids = np.arange(gallery.shape[0] if gallery.ndim else 1, dtype=np.int64)
    path = _crafted_plain(tmp_path, gallery, ids)
    with pytest.raises(IndexFormatError, match=match) as info:
        Index.load(path)
    assert str(path) in str(info.value)


@pytest.mark.parametrize(
    "ids, match",
    [
        (np.array([0, 1, 1], np.int64), r"stored ids must be unique; 1 ids occur more than once, e.g. \[1\]"),
        (np.array([0, -1, 2], np.int64), r"received the negative id -1"),
        (np.array([0, 1, 2**64 - 1], np.uint64), r"ids must be stored as int64 \('<i8'\); found dtype <u8"),
        (np.array([0, 1, 2], np.int32), r"found dtype <i4"),
        (np.array([0, 1], np.int64), r"ids shape \(2,\) does not match gallery rows 3"),
    ],
)
def test_stored_ids_are_validated(tmp_path, ids, match):
    path = _crafted_plain(tmp_path, np.eye(3, dtype=np.float32), ids)
    with pytest.raises(IndexFormatError, match=match):
        Index.load(path)


def _nnn_arrays(index):
    return [
        ("gallery", np.asarray(index.model.gallery_)),
        ("ids", index.ids),
        ("model.topk_scores", index.model.topk_scores_),
        ("model.topk_ids", index.model.topk_ids_),
    ]


@pytest.mark.parametrize(
    "change, header_change, match",
    [
        (
            lambda a: a["model.topk_scores"].__setitem__((0, 0), np.nan),
            {},
            r"'model.topk_scores' holds NaN or infinite",
        ),
        (
            lambda a: a["model.topk_ids"].__setitem__((0, 0), 90),
            {},
            r"statistic 'topk_ids' must be reference rows in \[0, 90\)",
        ),
        (lambda a: a["model.topk_ids"].__setitem__((0, 0), -3), {}, r"found values in \[-3,"),
        (
            lambda a: None,
            {"params": {"k": 7, "alpha": 0.75}},
            r"stored statistics are inconsistent: k=7 exceeds the k=6",
        ),
        (lambda a: None, {"params": {"k": "6"}}, r"stored statistics are inconsistent|do not fit"),
        (lambda a: None, {"params": [1]}, r"stored parameters must be a JSON object; found \[1\]"),
        (
            lambda a: a.update({"model.topk_scores": a["model.topk_scores"].astype(np.float64)}),
            {},
            r"statistic 'topk_scores' must be stored as '<f4'; found dtype <f8",
        ),
        (
            lambda a: a.update({"model.topk_ids": a["model.topk_ids"].astype(np.uint64)}),
            {},
            r"statistic 'topk_ids' must be stored as '<i8'; found dtype <u8",
        ),
        (lambda a: None, {"metadata": [1]}, r"metadata must be a JSON object or null; found list"),
        (
            lambda a: None,
            {"n_reference": "90"},
            r"n_reference must be a positive integer or null; found '90'",
        ),
        (lambda a: None, {"n_reference": True}, r"n_reference must be a positive integer"),
        (lambda a: None, {"method": ["nnn"]}, r"method \['nnn'\] is unknown"),
    ],
)
def test_stored_statistics_and_header_keys_are_validated(tmp_path, index, change, header_change, match):
    arrays = dict((n, np.array(a)) for n, a in _nnn_arrays(index))
    change(arrays)
    header = crafted.index_header("nnn", params={"k": 6, "alpha": 0.75}, n_reference=90)
    header.update(header_change)
    path = crafted.craft(tmp_path / "n.dehub", header, list(arrays.items()))
    with pytest.raises(IndexFormatError, match=match):
        Index.load(path)


def test_stored_reference_is_validated(tmp_path, data):
    gallery, reference, _ = data
    idx = Index.build(gallery, reference, k=6, keep_reference=True)
    base = _nnn_arrays(idx)
    header = crafted.index_header("nnn", params={"k": 6, "alpha": 0.75}, n_reference=90)
    for ref, match in (
        (
            np.where(np.arange(8) == 0, np.nan, reference).astype(np.float32),
            r"the stored reference contains NaN",
        ),
        (
            reference[:, :5],
            r"the stored reference must be 2-D with the gallery's 8 columns; found shape \(90, 5\)",
        ),
        (reference[:50], r"the stored reference has 50 rows, the header says n_reference=90"),
        (reference.astype(np.int64), r"the stored reference must be float16/32/64; found dtype <i8"),
    ):
        path = crafted.craft(tmp_path / "r.dehub", header, [*base, ("reference", ref)])
        with pytest.raises(IndexFormatError, match=match):
            Index.load(path)
    ok = crafted.craft(tmp_path / "ok.dehub", header, [*base, ("reference", reference)])
    back = Index.load(ok)
    np.testing.assert_array_equal(back.reference, reference)


@pytest.mark.parametrize("method", sorted(__import__("dehub").METHODS))
def test_every_method_round_trips_through_the_validating_loader(tmp_path, data, method):
    """The content checks refuse no index dehub itself writes."""
    gallery, reference, queries = data
    idx = Index.build(gallery, reference, method=method, keep_reference=True)
    back = Index.load(idx.save(tmp_path / "m.dehub"))
    _same_search(back, idx, queries, k=5)
    assert Index.verify_file(tmp_path / "m.dehub")["ok"] is True


# --------------------------------------------------------------------------- ids (issue 9)
@pytest.mark.parametrize(
    "ids, exc, match",
    [
        (
            np.array([0, 1, 2**64 - 1], np.uint64),
            ValueError,
            r"received 18446744073709551615 \(uint64 above the int64 range, which would wrap to -1 = the padding marker\)",
        ),
        ([0, 1, 2**64 - 1], ValueError, r"received 18446744073709551615"),
        (
            [0, 1, 2**70],
            ValueError,
            r"must lie in 0 <= id <= 2\*\*63-1 = 9223372036854775807; received 1180591620717411303424",
        ),
        ([0, -1, 2**63], ValueError, r"received -1 at position 1"),
        (
            np.array([0, -5, 2]),
            ValueError,
            r"received the negative id -5 \(1 negative in all\)\. -1 is the padding marker",
        ),
        (
            np.array([0.0, 1.0, 2.0]),
            TypeError,
            r"ids must be integers; received dtype float64\. Convert with ids.astype\(np.int64\) only if they are whole numbers",
        ),
        ([True, False, True], TypeError, r"received booleans"),
        (["a", "b", "c"], TypeError, r"received dtype <U1"),
        ([0, "b", 2], TypeError, r"received dtype <U21"),
    ],
)
def test_ids_outside_the_id_space_are_refused(data, ids, exc, match):
    gallery, reference, _ = data
    model = Plain().fit(gallery[:3], reference, normalize="none")
    with pytest.raises(exc, match=match):
        Index(model, ids=ids)


def test_largest_id_is_accepted_and_round_trips(tmp_path, data):
    gallery, reference, queries = data
    ids = np.array([ID_MAX, 0, 5], np.int64)
    idx = Index(Plain().fit(gallery[:3], reference), ids=ids)
    back = Index.load(idx.save(tmp_path / "big.dehub"))
    np.testing.assert_array_equal(back.ids, ids)
    assert set(back.search(queries, 3)[1].ravel()) == {ID_MAX, 0, 5}


def test_remove_takes_exact_integer_ids_only(data):
    gallery, reference, _ = data
    idx = Index.build(gallery, reference, k=3, ids=np.arange(40) + 10)
    with pytest.raises(TypeError, match=r"received dtype float64.*\(received e.g. 10.9\)"):
        idx.remove([10.9])  # before: removed id 10
    with pytest.raises(TypeError, match="received dtype float64"):
        idx.remove(np.array([10.0]))
    with pytest.raises(ValueError, match="negative id -1"):
        idx.remove([-1])
    with pytest.raises(ValueError, match="uint64 above the int64 range"):
        idx.remove(np.array([2**64 - 1], np.uint64))
    assert idx.n_items == 40
    idx.remove([10, 10, np.int32(11)])
    assert idx.n_items == 38 and 10 not in idx.ids and 11 not in idx.ids


def test_add_past_the_largest_id_is_a_clear_error(data):
    """Before: OverflowError from numpy."""
    gallery, reference, _ = data
    idx = Index.build(gallery[:3], reference, k=3, ids=[0, 1, ID_MAX - 1], keep_reference=True)
    with pytest.raises(
        ValueError,
        match=r"cannot number 2 new items after the largest id 9223372036854775806: the last would be 9223372036854775808, beyond the id space",
    ):
        idx.add(gallery[3:5])
    assert idx.n_items == 3
    idx.add(gallery[3:4])  # exactly reaches ID_MAX
    assert idx.ids[-1] == ID_MAX
    with pytest.raises(ValueError, match="negative id -7"):
        idx.add(gallery[4:5], ids=[-7])
    with pytest.raises(
        ValueError, match=r"ids must be 2 integers, one per new vector; received shape \(1,\)"
    ):
        idx.add(gallery[4:6], ids=[8])
    with pytest.raises(ValueError, match="must be unique"):
        idx.add(gallery[4:6], ids=[8, 8])
    with pytest.raises(TypeError, match="float64"):
        idx.add(gallery[4:5], ids=[8.5])
    idx.add(gallery[4:6], ids=np.array([8, 9], np.uint64))
    assert idx.ids.dtype == np.int64 and idx.ids[-2:].tolist() == [8, 9]


# --------------------------------------------------------------------------- k and memory (issue 9)
def test_k_is_clamped_before_allocation(index, data):
    _, _, queries = data
    with pytest.warns(KClampedWarning, match=r"k=1000000000 exceeds the 40 gallery items"):
        s, ids = index.search(queries, 10**9)  # before: asked for 15 x 1e9 x 12 bytes
    assert s.shape == ids.shape == (15, 40)
    with pytest.raises(ValueError, match="k must be >= 1; received k=0"):
        index.search(queries, 0)
    with pytest.raises(TypeError, match="k must be a positive integer; received True"):
        index.search(queries, True)
    with pytest.raises(TypeError, match="received 2.5"):
        index.search(queries, 2.5)


def test_id_mapping_does_not_double_the_output(index, data, monkeypatch):
    """Before: np.maximum, fancy indexing and np.where each made an output-sized array."""
    import tracemalloc

    gallery, _, _ = data
    nq, k = 50_000, 40  # 16 MB of int64 ids: several mapping chunks
    rng = np.random.default_rng(1)
    rows = np.argsort(rng.random((nq, index.n_items)), axis=1)[:, :k].astype(np.int64)
    rows[:, -3:] = -1
    scores = np.zeros((nq, k), np.float32)
    expected = np.where(rows >= 0, index.ids[np.maximum(rows, 0)], -1)
    monkeypatch.setattr(index.model, "search", lambda q, kk, **kw: (scores, rows))
    tracemalloc.start()
    try:
        _, ids = index.search(gallery[:1], k)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    np.testing.assert_array_equal(ids, expected)
    assert ids is rows, "mapped in place"
    assert peak < rows.nbytes / 2, f"mapping used {peak} bytes of scratch for a {rows.nbytes}-byte output"


# --------------------------------------------------------------------------- mmap (issue 9)
def test_mmap_file_identity_is_checked_before_each_search(tmp_path, index, data):
    _, _, queries = data
    path = index.save(tmp_path / "i.dehub")
    mapped = Index.load(path, mmap=True)
    mapped.search(queries, 3)
    other = tmp_path / "other.dehub"
    Index.build(data[0], data[1], k=4).save(other)
    os.replace(other, path)  # replaced under the mapped index
    with pytest.raises(
        IndexFormatError,
        match=r"the memory-mapped index file was replaced by another file after it was loaded",
    ):
        mapped.search(queries, 3)
    with pytest.raises(IndexFormatError, match="was replaced"):
        mapped.remove([100])
    copied = Index.load(path)  # the default copies: later changes to the file do not matter
    path.unlink()
    copied.search(queries, 3)


def test_truncated_mmap_file_is_an_error_not_sigbus(tmp_path, index):
    """Before: the process died with SIGBUS (exit -7). Run in a child to survive a regression."""
    path = index.save(tmp_path / "i.dehub")
    code = f"""
import numpy as np, os
from dehub import Index, IndexFormatError
idx = Index.load({str(path)!r}, mmap=True)
q = np.asarray(idx.model.gallery_[:2]).copy()
idx.search(q, 3)
with open({str(path)!r}, "r+b") as f:
    f.truncate(200)
try:
    idx.search(q, 3)
except IndexFormatError as exc:
    print("ERR", exc)
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, (out.returncode, out.stderr[-2000:])
    assert "changed size from" in out.stdout and "to 200 bytes after it was loaded" in out.stdout


def test_saving_over_its_own_mapped_file(tmp_path, index, data):
    _, _, queries = data
    path = index.save(tmp_path / "i.dehub")
    mapped = Index.load(path, mmap=True)
    mapped = mapped.with_params(alpha=0.5)
    mapped.save(path)
    mapped.search(queries, 3)  # reads the old (unlinked) mapping: safe, no error
    assert Index.load(path).model.alpha == 0.5


# --------------------------------------------------------------------------- describe / verify (issue 9)
def test_verify_file(tmp_path, index):
    path = index.save(tmp_path / "i.dehub")
    report = Index.verify_file(path)
    assert report["ok"] is True and report["format_version"] == 1 and report["n_items"] == 40
    assert report["file_bytes"] == path.stat().st_size
    assert set(report["arrays"]) == {"gallery", "ids", "model.topk_scores", "model.topk_ids"}
    assert Index.describe_file(path, verify=True)["verified"]["ok"] is True
    raw = bytearray(path.read_bytes())
    meta = next(a for a in read_container(path)[0]["arrays"] if a["name"] == "model.topk_ids")
    raw[meta["offset"]] ^= 1
    path.write_bytes(bytes(raw))
    Index.describe_file(path)  # the header alone is fine
    with pytest.raises(IndexFormatError, match=r"checksum mismatch in array 'model.topk_ids'"):
        Index.verify_file(path)
    with pytest.raises(IndexFormatError, match=r"checksum mismatch in array 'model.topk_ids'"):
        Index.describe_file(path, verify=True)


def test_mmap_maps_the_gallery_but_copies_the_ids(tmp_path, index):
    back = Index.load(index.save(tmp_path / "i.dehub"), mmap=True)
    assert isinstance(back.model.gallery_, np.memmap) and not isinstance(back.ids, np.memmap)
    assert back.ids.flags.owndata
