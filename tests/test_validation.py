"""Input checks: every error names what was expected, what was received, and the fix."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

import dehub
from dehub import NNN, Index, UnnormalizedWarning
from dehub._ids import check_ids
from dehub._validation import check_embeddings, check_k, check_normalization, validate_embeddings


@pytest.fixture
def data(rng, unit):
    return unit(rng, 12, 6), unit(rng, 20, 6), unit(rng, 4, 6)


def _fit_error(gallery, reference):
    with pytest.raises(ValueError) as info:
        NNN(k=3).fit(gallery, reference)
    return str(info.value)


# --------------------------------------------------------------------------- values
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("where", ["gallery", "reference", "queries"])
def test_nan_and_inf(data, bad, where):
    gallery, reference, queries = (a.copy() for a in data)
    target = {"gallery": gallery, "reference": reference, "queries": queries}[where]
    target[2, 4] = bad
    with pytest.raises(ValueError) as info:
        NNN(k=3).fit(gallery, reference).search(queries, 2)
    msg = str(info.value)
    assert f"{where} contains NaN or infinite values (first at row 2, column 4)" in msg
    assert "expected finite floats" in msg and "Remove or fix" in msg


def test_nan_found_in_a_later_chunk_of_a_memmap(tmp_path, monkeypatch, rng, unit):
    import dehub._validation as validation

    monkeypatch.setattr(validation, "_CHUNK_ROWS", 7)  # scan in chunks of 7 rows
    x = unit(rng, 30, 4)
    x[23, 1] = np.nan
    np.save(tmp_path / "x.npy", x)
    xm = np.load(tmp_path / "x.npy", mmap_mode="r")
    with pytest.raises(ValueError, match=r"first at row 23, column 1"):
        check_embeddings(xm, "gallery")


# --------------------------------------------------------------------------- shapes
@pytest.mark.parametrize(
    "shape, match",
    [
        (
            (6,),
            r"gallery must be 2-D with shape \(n, d\); received ndim=1, shape \(6,\)\. Use x\.reshape\(1, -1\)",
        ),
        ((2, 3, 6), r"gallery must be 2-D with shape \(n, d\); received ndim=3, shape \(2, 3, 6\)"),
        ((), r"received ndim=0"),
    ],
)
def test_wrong_ndim(data, shape, match):
    _, reference, _ = data
    with pytest.raises(ValueError, match=match):
        NNN(k=3).fit(np.full(shape, 0.5, np.float32), reference)


def test_dimension_mismatch(data, rng, unit):
    gallery, reference, queries = data
    msg = _fit_error(gallery, unit(rng, 20, 5))
    assert "gallery and reference must have the same embedding dimension" in msg
    assert "received gallery.shape[1]=6 and reference.shape[1]=5" in msg
    assert "same encoder" in msg
    model = NNN(k=3).fit(gallery, reference)
    with pytest.raises(ValueError, match=r"received queries.shape\[1\]=7 and gallery.shape\[1\]=6"):
        model.search(unit(rng, 3, 7), 2)
    with pytest.raises(ValueError, match=r"received queries.shape\[1\]=7 and gallery.shape\[1\]=6"):
        model.score(unit(rng, 3, 7))


@pytest.mark.parametrize("shape", [(0, 6), (5, 0), (0, 0)])
@pytest.mark.parametrize("where", ["gallery", "reference", "queries"])
def test_empty_arrays(data, shape, where):
    gallery, reference, queries = data
    empty = np.empty(shape, np.float32)
    args = {"gallery": gallery, "reference": reference, "queries": queries, where: empty}
    with pytest.raises(ValueError) as info:
        NNN(k=3).fit(args["gallery"], args["reference"]).search(args["queries"], 2)
    msg = str(info.value)
    assert f"{where} must be non-empty (at least one row and one column)" in msg
    assert f"received shape {shape}" in msg


def test_k_larger_than_reference(data, rng, unit):
    gallery, _, _ = data
    with pytest.raises(ValueError) as info:
        NNN(k=10).fit(gallery, unit(rng, 5, 6))
    msg = str(info.value)
    assert "k=10 exceeds the number of reference items (5); expected k <= 5" in msg
    assert "Lower k or provide more reference items" in msg
    NNN(k=5).fit(gallery, unit(rng, 5, 6))  # k == number of references is fine


def test_check_k_types():
    assert check_k(np.int32(3), 5) == 3
    with pytest.raises(TypeError, match=r"k must be a positive integer; received 2.0"):
        check_k(2.0, 5)
    with pytest.raises(TypeError, match=r"received True"):
        check_k(True, 5)
    with pytest.raises(ValueError, match=r"k must be >= 1; received k=0"):
        check_k(0, 5)


# --------------------------------------------------------------------------- ids
def test_non_unique_ids(data):
    gallery, reference, _ = data
    ids = np.arange(12)
    ids[[3, 7, 9]] = [5, 5, 8]
    with pytest.raises(ValueError) as info:
        Index.build(gallery, reference, k=3, ids=ids)
    msg = str(info.value)
    assert "ids must be unique; 2 ids occur more than once, e.g. [5, 8]" in msg
    assert "Deduplicate the gallery or assign fresh ids" in msg
    model = NNN(k=3).fit(gallery, reference)
    with pytest.raises(ValueError, match="ids must be unique"):
        Index(model, ids=ids)


def test_ids_shape_and_dtype(data):
    gallery, reference, _ = data
    with pytest.raises(ValueError, match=r"one id per row \(12\); received shape \(11,\)"):
        Index.build(gallery, reference, k=3, ids=np.arange(11))
    with pytest.raises(TypeError, match=r"ids must be integers; received dtype float64\. Convert with"):
        Index.build(gallery, reference, k=3, ids=np.arange(12.0))
    out = check_ids(np.arange(12, dtype=np.uint16), 12)
    assert out.dtype == np.int64


def test_one_id_rule_for_every_caller():
    """One function decides what an id is; no second copy of the rule anywhere (issue 21)."""
    import dehub._validation as validation
    import dehub.distributed._runner as runner
    import dehub.index as index

    assert not hasattr(validation, "check_ids")
    assert runner.check_ids is check_ids and index.check_ids is check_ids
    for bad, kind, match in (
        (np.array([-5, 1, 2]), ValueError, "negative id -5"),
        (np.array([2**63, 1, 2], dtype=np.uint64), ValueError, "uint64 above the int64 range"),
    ):
        with pytest.raises(kind, match=match):
            check_ids(bad, 3)


# --------------------------------------------------------------------------- dtypes
@pytest.mark.parametrize("dtype", [np.int64, np.int8, np.bool_, np.complex64, object])
def test_non_float_dtypes(data, dtype):
    _, reference, _ = data
    with pytest.raises(TypeError) as info:
        NNN(k=3).fit(np.ones((4, 6), dtype=dtype), reference)
    msg = str(info.value)
    assert "gallery must hold float16, float32 or float64 values" in msg
    assert f"received dtype {np.dtype(dtype)}" in msg
    assert "gallery.astype(np.float32)" in msg


def test_lists_are_accepted_and_ragged_lists_are_not(data):
    gallery, reference, _ = data
    model = NNN(k=3).fit(gallery.astype(np.float64).tolist(), reference.tolist())
    np.testing.assert_allclose(model.bias_, NNN(k=3).fit(gallery, reference).bias_, atol=1e-6)
    with pytest.raises(
        TypeError, match=r"gallery must be a 2-D float array of shape \(n, d\); received list"
    ):
        NNN(k=3).fit([[0.6, 0.8], [1.0]], reference)


# --------------------------------------------------------------------------- normalization
def test_unnormalized_warns_by_default_and_names_the_fix(data, digest):
    gallery, reference, queries = data
    raw = gallery * np.linspace(0.5, 3, 12, dtype=np.float32)[:, None]
    before = digest(raw)
    with pytest.warns(UnnormalizedWarning) as record:
        model = NNN(k=3).fit(raw, reference)
    msg = str(record[0].message)
    assert "gallery rows are not unit-norm (norms range 0.5..3)" in msg
    assert "normalize='l2'" in msg and "normalize='none'" in msg
    assert record[0].filename == __file__, "the warning must point at the caller's line"
    # Results are never silently changed: the raw vectors are used as given.
    assert model.gallery_ is raw and digest(raw) == before
    with pytest.warns(UnnormalizedWarning, match="queries rows are not unit-norm") as record:
        model.search(queries * 2, 3)
    assert record[0].filename == __file__


def test_normalize_l2_works_on_a_copy(data, digest):
    gallery, reference, queries = data
    scale = np.linspace(0.5, 3, 12)[:, None]
    for dtype in (np.float16, np.float32, np.float64):
        raw = (gallery * scale).astype(dtype)
        before = digest(raw)
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # no warning once normalize is explicit
            model = NNN(k=3).fit(raw, reference, normalize="l2")
            scores_l2 = model.search(queries * 4, 5, normalize="l2")
        assert digest(raw) == before, "normalize='l2' must not modify the caller's array"
        assert model.gallery_ is not raw
        assert model.gallery_.dtype == (np.float64 if dtype == np.float64 else np.float32)
        np.testing.assert_allclose(np.linalg.norm(model.gallery_, axis=1), 1, atol=1e-6)
        unit_gallery = raw.astype(np.float64) / np.linalg.norm(raw.astype(np.float64), axis=1, keepdims=True)
        plain = NNN(k=3).fit(unit_gallery, reference).search(queries, 5)
        np.testing.assert_array_equal(scores_l2[1], plain[1])
        np.testing.assert_allclose(scores_l2[0], plain[0], atol=1e-5)


def test_normalize_error_and_none(data):
    gallery, reference, _ = data
    with pytest.raises(ValueError, match=r"gallery rows are not unit-norm.*normalize='l2'"):
        NNN(k=3).fit(gallery * 2, reference, normalize="error")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        NNN(k=3).fit(gallery * 2, reference, normalize="none")
        NNN(k=3).fit(gallery, reference, normalize="error")  # unit-norm passes
    with pytest.raises(
        ValueError, match=r"normalize must be one of 'warn', 'l2', 'none', 'error'; received 'L2'"
    ):
        NNN(k=3).fit(gallery, reference, normalize="L2")


def test_zero_rows(data):
    gallery, reference, _ = data
    g = gallery.copy()
    g[4] = 0
    with pytest.raises(ValueError, match=r"gallery row 4 is all zeros and cannot be L2-normalized; expected"):
        check_normalization(g, "gallery", "l2")
    with pytest.warns(UnnormalizedWarning, match=r"norms range 0\.\.1"):
        check_normalization(g, "gallery", "warn")


def test_float16_near_unit_norm_does_not_warn(data):
    gallery, reference, _ = data
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        NNN(k=3).fit(gallery.astype(np.float16), reference.astype(np.float16))


def test_memmap_passes_through_unchanged(tmp_path, data):
    gallery, _, _ = data
    np.save(tmp_path / "g.npy", gallery)
    gm = np.load(tmp_path / "g.npy", mmap_mode="r")
    assert check_embeddings(gm, "gallery") is gm
    assert check_normalization(gm, "gallery", "warn") is gm


def test_public_errors_are_exported():
    assert issubclass(dehub.IndexFormatError, ValueError)
    assert issubclass(dehub.UnnormalizedWarning, UserWarning)
    assert issubclass(dehub.NotFittedError, RuntimeError)


def test_values_whose_squares_overflow_are_named():
    x = np.full((3, 4), 1e20, dtype=np.float32)
    with pytest.raises(ValueError, match=r"g row 0 has values so large.*max \|value\| 1e\+20"):
        check_embeddings(x, "g")


class _CountingRows:
    """A row-sliceable array that counts the rows read (a stand-in for a memmap)."""

    def __init__(self, x):
        self.x, self.rows_read = x, 0
        self.dtype, self.shape, self.ndim = x.dtype, x.shape, x.ndim

    def __getitem__(self, sl):
        out = self.x[sl]
        self.rows_read += out.shape[0]
        return out


@pytest.mark.parametrize("mode", ["warn", "error", "none"])
def test_validate_embeddings_reads_each_row_once(rng, unit, mode):
    x = _CountingRows(unit(rng, 70_000, 4))  # more than one chunk
    assert validate_embeddings(x, "gallery", mode) is x
    assert x.rows_read == 70_000
    two = _CountingRows(x.x)
    check_normalization(check_embeddings(two, "gallery"), "gallery", mode)
    assert two.rows_read == (70_000 if mode == "none" else 140_000)


def test_validate_embeddings_equals_the_two_checks(rng):
    x = (2 * rng.standard_normal((30, 5))).astype(np.float32)
    with pytest.warns(UnnormalizedWarning, match="norms range") as one:
        validate_embeddings(x, "queries", "warn")
    with pytest.warns(UnnormalizedWarning) as two:
        check_normalization(check_embeddings(x, "queries"), "queries", "warn")
    assert str(one[0].message) == str(two[0].message)
    np.testing.assert_array_equal(validate_embeddings(x, "q", "l2"), check_normalization(x, "q", "l2"))
    with pytest.raises(ValueError, match="not unit-norm"):
        validate_embeddings(x, "q", "error")
    bad = x.copy()
    bad[3, 2] = np.nan
    with pytest.raises(ValueError, match=r"row 3, column 2"):
        validate_embeddings(bad, "q")
    with pytest.raises(ValueError, match="normalize must be one of"):
        validate_embeddings(x, "q", "L2")
