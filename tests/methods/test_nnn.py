"""NNN (Chowdhury et al., EMNLP 2024) against the reference implementation and the authors' code."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import dehub
from dehub import NNN, NotFittedError, Plain, exact_search
from dehub.methods.base import KClampedWarning, RefitRequiredError, StaleFitError
from reference_nnn import (
    assert_topk_match,
    ref_bias,
    ref_corrected_scores,
    ref_mean_topk,
    ref_nnn_search,
    ref_scores,
    ref_topk,
)

PROPS = settings(max_examples=20, deadline=None)


def _data(seed: int, n_gallery: int, n_reference: int, n_queries: int, d: int, dtype=np.float32):
    rng = np.random.default_rng(seed)

    def unit(n):
        x = rng.standard_normal((n, d))
        return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(dtype)

    return unit(n_gallery), unit(n_reference), unit(n_queries)


# --------------------------------------------------------------------------- toy case
def test_hand_checkable_hub():
    """Three 2-D unit vectors; the middle one is a hub.

    gallery   g0 = (1, 0)      g1 = (0, 1)      g2 = (0.6, 0.8)   <- the hub
    reference r0 = (0.6, 0.8)  r1 = (0.8, 0.6)  r2 = (0, 1)

    s(r_j, g) = r_j . g:
              r0     r1     r2     two largest   mean (k=2)
        g0    0.6    0.8    0      0.8, 0.6      0.70
        g1    0.8    0.6    1      1.0, 0.8      0.90
        g2    1.0    0.96   0.8    1.0, 0.96     0.98

    With alpha = 1 the biases are b = (0.70, 0.90, 0.98). Test queries:

        q              s(q, g0) s(q, g1) s(q, g2)   corrected = s - b
        (0.8, 0.6)     0.8      0.6      0.96       ( 0.10, -0.30, -0.02)
        (1, 0)         1.0      0        0.6        ( 0.30, -0.90, -0.38)
        (0.28, 0.96)   0.28     0.96     0.936      (-0.42,  0.06, -0.044)
        (0.96, 0.28)   0.96     0.28     0.8        ( 0.26, -0.62, -0.18)

    Uncorrected, the hub g2 is among the top 2 of all four queries and the top 1 of the
    first; corrected, it is top 1 of none and the first query retrieves g0.
    With alpha = 0.5, b = (0.35, 0.45, 0.49) and the first query scores
    (0.45, 0.15, 0.47): the hub still wins, by 0.02.
    """
    gallery = np.array([[1, 0], [0, 1], [0.6, 0.8]], np.float32)
    reference = np.array([[0.6, 0.8], [0.8, 0.6], [0, 1]], np.float32)
    queries = np.array([[0.8, 0.6], [1, 0], [0.28, 0.96], [0.96, 0.28]], np.float32)

    plain_s, plain_i = exact_search(queries, gallery, 2)
    np.testing.assert_array_equal(plain_i, [[2, 0], [0, 2], [1, 2], [0, 2]])

    model = NNN(k=2, alpha=1.0).fit(gallery, reference)
    np.testing.assert_allclose(model.mean_topk(), [0.70, 0.90, 0.98], atol=1e-6)
    np.testing.assert_allclose(model.bias_, [0.70, 0.90, 0.98], atol=1e-6)
    np.testing.assert_allclose(model.topk_scores_, [[0.8, 0.6], [1.0, 0.8], [1.0, 0.96]], atol=1e-6)
    np.testing.assert_array_equal(model.topk_ids_, [[1, 0], [2, 0], [0, 1]])
    expected = np.array(
        [[0.10, -0.30, -0.02], [0.30, -0.90, -0.38], [-0.42, 0.06, -0.044], [0.26, -0.62, -0.18]]
    )
    np.testing.assert_allclose(model.score(queries), expected, atol=1e-6)
    s, i = model.search(queries, 3)
    np.testing.assert_array_equal(i, [[0, 2, 1], [0, 2, 1], [1, 2, 0], [0, 2, 1]])
    np.testing.assert_allclose(s, np.take_along_axis(expected, i, axis=1), atol=1e-6)

    model = model.with_params(alpha=0.5)
    np.testing.assert_allclose(model.bias_, [0.35, 0.45, 0.49], atol=1e-6)
    np.testing.assert_allclose(model.score(queries[:1]), [[0.45, 0.15, 0.47]], atol=1e-6)
    assert model.search(queries[:1], 1)[1][0, 0] == 2


# --------------------------------------------------------------------------- reference
@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
@pytest.mark.parametrize("k", [1, 4, 50])
def test_fit_matches_reference(dtype, k):
    gallery, reference, _ = _data(1, 30, 50, 1, 8, dtype)
    model = NNN(k=k, alpha=0.75).fit(gallery, reference)
    np.testing.assert_allclose(model.mean_topk(), ref_mean_topk(gallery, reference, k), atol=1e-6)
    np.testing.assert_allclose(model.bias_, ref_bias(gallery, reference, k, 0.75), atol=1e-6)
    # The cache: each gallery item's reference scores, sorted, and where they came from.
    s_ref = ref_scores(gallery, reference)
    assert model.topk_scores_.shape == model.topk_ids_.shape == (30, k)
    assert np.all(np.diff(model.topk_scores_, axis=1) <= 0)
    np.testing.assert_allclose(
        model.topk_scores_, np.take_along_axis(s_ref, model.topk_ids_, axis=1), atol=1e-6
    )
    np.testing.assert_allclose(model.topk_scores_, -np.sort(-s_ref, axis=1)[:, :k], atol=1e-6)
    assert model.fitted_k_ == k


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("k_search", [1, 7, 40, 45])
def test_search_and_score_match_reference(dtype, k_search):
    gallery, reference, queries = _data(2, 40, 64, 25, 12, dtype)
    model = NNN(k=8, alpha=0.6).fit(gallery, reference)
    rs, ri, dense = ref_nnn_search(queries, gallery, reference, 8, 0.6, k_search)
    kept = min(k_search, 40)  # k above the gallery is clamped to it (one KClampedWarning)
    rs, ri = rs[:, :kept], ri[:, :kept]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", KClampedWarning)
        s, i = model.search(queries, k_search)
        s2, i2 = model.search(queries, k_search, memory_budget=64 * 1024)
    assert s.dtype == np.float32 and i.dtype == np.int64 and s.shape == (25, kept)
    assert_topk_match(s, i, rs, ri, dense, atol=1e-5)
    np.testing.assert_allclose(model.score(queries), dense, atol=1e-5)
    assert_topk_match(s2, i2, rs, ri, dense, atol=1e-5)


def test_quantized_ties_follow_the_smaller_row_rule():
    """Entries in {-1, -0.5, 0, 0.5, 1} and k = 4, alpha = 0.5: every bias and corrected
    score is exact in float32, so tie order must equal the reference exactly."""
    rng = np.random.default_rng(3)
    gallery = (rng.integers(-2, 3, size=(60, 4)) / 2).astype(np.float32)
    reference = (rng.integers(-2, 3, size=(80, 4)) / 2).astype(np.float32)
    queries = (rng.integers(-2, 3, size=(30, 4)) / 2).astype(np.float32)
    model = NNN(k=4, alpha=0.5).fit(gallery, reference, normalize="none")
    for k in (1, 5, 60, 61):
        rs, ri, dense = ref_nnn_search(queries, gallery, reference, 4, 0.5, min(k, 60))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", KClampedWarning)  # 61 > the 60 gallery items
            s, i = model.search(queries, k, normalize="none")
        assert_topk_match(s, i, rs, ri, dense, atol=0, exact_ties=True)


def test_index_search_matches_reference():
    gallery, reference, queries = _data(4, 35, 60, 12, 8)
    ids = np.arange(1000, 1035)[::-1].copy()
    index = dehub.Index.build(gallery, reference, k=5, alpha=0.9, ids=ids)
    rs, ri, dense = ref_nnn_search(queries, gallery, reference, 5, 0.9, 10)
    s, got = index.search(queries, 10)
    rows = np.where(got >= 0, 1034 - got, -1)  # external id back to gallery row
    assert_topk_match(s, rows, rs, ri, dense, atol=1e-5)


def test_export_vectors_serve_the_corrected_score():
    gallery, reference, queries = _data(5, 20, 30, 6, 5)
    model = NNN(k=3, alpha=0.8).fit(gallery, reference)
    vecs = model.export_vectors()
    assert vecs.shape == (20, 6) and vecs.dtype == np.float32
    aug = NNN.augment_queries(queries)
    np.testing.assert_array_equal(aug[:, -1], -1)
    np.testing.assert_allclose(
        aug @ vecs.T, ref_corrected_scores(queries, gallery, reference, 3, 0.8), atol=1e-5
    )


def test_memmap_fit_matches_in_memory(tmp_path):
    gallery, reference, queries = _data(6, 50, 90, 10, 16)
    np.save(tmp_path / "g.npy", gallery)
    np.save(tmp_path / "r.npy", reference)
    gm = np.load(tmp_path / "g.npy", mmap_mode="r")
    rm = np.load(tmp_path / "r.npy", mmap_mode="r")
    model = NNN(k=6).fit(gm, rm, memory_budget=256 * 1024)
    assert model.gallery_ is gm, "the gallery must be kept, not copied"
    np.testing.assert_allclose(model.bias_, ref_bias(gallery, reference, 6, 0.75), atol=1e-6)
    rs, ri, dense = ref_nnn_search(queries, gallery, reference, 6, 0.75, 8)
    assert_topk_match(*model.search(queries, 8), rs, ri, dense, atol=1e-5)


# --------------------------------------------------------------------------- parameters
def test_alpha_change_after_fit_needs_no_recompute(monkeypatch):
    gallery, reference, queries = _data(7, 25, 40, 5, 6)
    model = NNN(k=5, alpha=0.75).fit(gallery, reference)
    cache = model.topk_scores_

    def forbidden(*args, **kwargs):
        raise AssertionError("changing alpha must not search the reference set again")

    import dehub.methods.nnn as nnn_module

    monkeypatch.setattr(nnn_module, "topk_search", forbidden)  # the only path to the reference
    model = model.with_params(alpha=0.25)
    assert model.topk_scores_ is cache
    np.testing.assert_allclose(model.bias_, ref_bias(gallery, reference, 5, 0.25), atol=1e-6)
    np.testing.assert_allclose(
        model.score(queries), ref_corrected_scores(queries, gallery, reference, 5, 0.25), atol=1e-5
    )
    model = model.with_params(k=2)
    np.testing.assert_allclose(model.bias_, ref_bias(gallery, reference, 2, 0.25), atol=1e-6)


def test_k_above_fitted_k_is_a_clear_error():
    gallery, reference, queries = _data(8, 10, 20, 2, 4)
    model = NNN(k=4).fit(gallery, reference)
    model.k = 8
    with pytest.raises(ValueError, match=r"k=8 exceeds the k=4 used in fit.*Refit with k=8"):
        model.search(queries, 3)


def test_refit_with_a_larger_k():
    gallery, reference, _ = _data(8, 10, 20, 2, 4)
    model = NNN(k=4).fit(gallery, reference)
    model.k = 8
    model.fit(gallery, reference)  # the error message itself says "Refit with k=8"
    assert model.fitted_k_ == 8
    np.testing.assert_allclose(model.bias_, ref_bias(gallery, reference, 8, 0.75), atol=1e-6)


@pytest.mark.parametrize(
    "params, match",
    [
        ({"k": 0}, r"k must be an integer >= 1; received k=0"),
        ({"k": 2.5}, r"k must be an integer >= 1; received k=2.5"),
        (
            {"alpha": -0.1},
            r"alpha must be a finite real number >= 0 and <= 3.40282e\+38; received alpha=-0.1",
        ),
        (
            {"alpha": float("nan")},
            r"alpha must be a finite real number >= 0 and <= 3.40282e\+38; received alpha=nan",
        ),
        (
            {"alpha": 1e39},
            r"alpha must be a finite real number >= 0 and <= 3.40282e\+38; received alpha=1e\+39",
        ),
    ],
)
def test_bad_parameters(params, match):
    gallery, reference, _ = _data(9, 10, 20, 1, 4)
    with pytest.raises(ValueError, match=match):
        NNN(**params).fit(gallery, reference)


def test_not_fitted():
    with pytest.raises(NotFittedError, match=r"not fitted yet; call fit\(gallery, reference\) first"):
        NNN().search(np.eye(3, dtype=np.float32), 1)
    with pytest.raises(NotFittedError):
        NNN().mean_topk()


def test_mean_topk_all_columns_are_every_k():
    gallery, reference, _ = _data(10, 15, 30, 1, 6)
    model = NNN(k=9).fit(gallery, reference)
    table = model.mean_topk_all()
    assert table.shape == (15, 9)
    for k in (1, 4, 9):
        np.testing.assert_allclose(table[:, k - 1], ref_mean_topk(gallery, reference, k), atol=1e-6)


def test_fit_grid_equals_separate_fits():
    gallery, reference, queries = _data(11, 20, 24, 6, 5)
    grid = {"k": [1, 3, 8, 64], "alpha": [0.0, 0.5, 1.25]}  # 64 > 24 references: skipped
    seen = []
    for params, fitted in NNN().fit_grid(gallery, reference, grid):
        seen.append((params["k"], params["alpha"]))
        fresh = NNN(**params).fit(gallery, reference)
        np.testing.assert_allclose(fitted.bias_, fresh.bias_, atol=1e-6)
        np.testing.assert_allclose(
            fitted.bias_, ref_bias(gallery, reference, params["k"], params["alpha"]), atol=1e-6
        )
        rs, ri, dense = ref_nnn_search(queries, gallery, reference, params["k"], params["alpha"], 5)
        assert_topk_match(*fitted.search(queries, 5), rs, ri, dense, atol=1e-5)
    assert seen == [(k, a) for k in (1, 3, 8) for a in (0.0, 0.5, 1.25)]
    with pytest.raises(ValueError, match=r"every k in the grid exceeds the number of reference items \(24\)"):
        next(NNN().fit_grid(gallery, reference, {"k": [100]}))


def test_default_grid_is_the_papers():
    grid = NNN.default_grid()
    assert grid["k"] == [1, 2, 4, 8, 16, 32, 64, 128, 256, 512]
    assert grid["alpha"] == [0.25 + 0.125 * i for i in range(11)]
    assert grid["alpha"][-1] == 1.5


def test_inputs_unchanged(digest):
    gallery, reference, queries = _data(12, 15, 25, 4, 5)
    gallery_raw = gallery * 2  # unnormalized: exercise normalize='l2' too
    before = digest(gallery, reference, queries, gallery_raw)
    model = NNN(k=3).fit(gallery, reference)
    model.search(queries, 4)
    model.score(queries)
    model.export_vectors()
    NNN.augment_queries(queries)
    list(NNN().fit_grid(gallery, reference, {"k": [1, 2], "alpha": [0.5]}))
    NNN(k=3).fit(gallery_raw, reference, normalize="l2").search(queries * 3, 2, normalize="l2")
    assert digest(gallery, reference, queries, gallery_raw) == before


# --------------------------------------------------------------------------- properties
shapes = st.fixed_dictionaries(
    {
        "seed": st.integers(0, 2**32 - 1),
        "n_gallery": st.integers(1, 25),
        "n_reference": st.integers(1, 30),
        "n_queries": st.integers(1, 8),
        "d": st.integers(2, 6),
    }
)


@PROPS
@given(shape=shapes, k_frac=st.floats(0, 1), k_search=st.integers(1, 30))
def test_alpha_zero_is_the_plain_ranking(shape, k_frac, k_search):
    gallery, reference, queries = _data(**shape)
    k = 1 + int(k_frac * (shape["n_reference"] - 1))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", KClampedWarning)  # k_search may exceed the gallery
        s, i = NNN(k=k, alpha=0.0).fit(gallery, reference).search(queries, k_search)
        bs, bi = Plain().fit(gallery, reference).search(queries, k_search)
    ps, pi = exact_search(queries, gallery, min(k_search, shape["n_gallery"]))
    np.testing.assert_array_equal(i, pi)
    np.testing.assert_array_equal(s, ps)
    np.testing.assert_array_equal(bi, pi)


@PROPS
@given(shape=shapes, alphas=st.lists(st.floats(0, 3), min_size=2, max_size=5))
def test_bias_is_monotone_in_alpha(shape, alphas):
    gallery, reference, _ = _data(**shape)
    model = NNN(k=1 + shape["n_reference"] // 2).fit(gallery, reference)
    mean = model.mean_topk().astype(np.float64)
    biases = []
    for alpha in sorted(alphas):
        biases.append(model.with_params(alpha=alpha).bias_.astype(np.float64))
        np.testing.assert_allclose(biases[-1], alpha * mean, atol=1e-6)
    steps = np.diff(np.array(biases), axis=0)  # (len-1, n_gallery)
    # b(r) = alpha * m(r) moves in the direction of m(r): up where the mean is positive.
    assert np.all(steps * np.sign(mean)[None, :] >= -1e-6)


@PROPS
@given(shape=shapes, perm_seed=st.integers(0, 2**32 - 1))
def test_permuting_the_reference_changes_nothing(shape, perm_seed):
    gallery, reference, queries = _data(**shape)
    perm = np.random.default_rng(perm_seed).permutation(shape["n_reference"])
    k = max(1, shape["n_reference"] // 3)
    a = NNN(k=k, alpha=0.75).fit(gallery, reference)
    b = NNN(k=k, alpha=0.75).fit(gallery, reference[perm])
    np.testing.assert_allclose(a.bias_, b.bias_, atol=1e-6)
    np.testing.assert_allclose(a.topk_scores_, b.topk_scores_, atol=1e-6)
    dense = ref_corrected_scores(queries, gallery, reference, k, 0.75)
    sa, ia = a.search(queries, 5)
    sb, ib = b.search(queries, 5)
    assert_topk_match(sb, ib, sa.astype(np.float64), ia, dense, atol=1e-5)


@PROPS
@given(shape=shapes, k_fit_frac=st.floats(0, 1), k_small_frac=st.floats(0, 1))
def test_smaller_k_after_fit_equals_a_fresh_fit(shape, k_fit_frac, k_small_frac):
    gallery, reference, queries = _data(**shape)
    k_fit = 1 + int(k_fit_frac * (shape["n_reference"] - 1))
    k_small = 1 + int(k_small_frac * (k_fit - 1))
    cached = NNN(k=k_fit, alpha=0.5).fit(gallery, reference).with_params(k=k_small)
    fresh = NNN(k=k_small, alpha=0.5).fit(gallery, reference)
    np.testing.assert_allclose(cached.bias_, fresh.bias_, atol=1e-6)
    dense = ref_corrected_scores(queries, gallery, reference, k_small, 0.5)
    fs, fi = fresh.search(queries, 4)
    assert_topk_match(*cached.search(queries, 4), fs.astype(np.float64), fi, dense, atol=1e-5)


# --------------------------------------------------------------------------- authors' code
@pytest.mark.parametrize("k, alpha", [(1, 0.5), (8, 0.75), (32, 1.25)])
def test_cross_check_with_nnn_retrieval(k, alpha):
    pytest.importorskip("torch", reason="torch is not installed: cannot run the authors' nnn-retrieval")
    nnn = pytest.importorskip(
        "nnn", reason="nnn-retrieval (the authors' package) is not installed: pip install nnn-retrieval"
    )
    gallery, reference, queries = _data(13, 150, 400, 60, 32)
    ranker = nnn.NNNRanker(
        nnn.NNNRetriever(32),
        gallery,
        reference,
        alternate_ks=k,
        batch_size=64,
        alternate_weight=alpha,
    )
    theirs_mean = np.asarray(ranker.alignment_means).reshape(-1)
    model = NNN(k=k, alpha=alpha).fit(gallery, reference)
    np.testing.assert_allclose(model.mean_topk(), theirs_mean, atol=1e-6)
    np.testing.assert_allclose(model.bias_, alpha * theirs_mean, atol=1e-6)

    top = 20
    their_s, their_i = ranker.search(queries, top)
    our_s, our_i = model.search(queries, top)
    dense = ref_corrected_scores(queries, gallery, reference, k, alpha)
    # torch.topk's order among equal scores is unspecified: compare up to ties.
    assert_topk_match(our_s, our_i, np.asarray(their_s, np.float64), np.asarray(their_i), dense, atol=1e-5)
    ref_s, ref_i = ref_topk(dense, top)
    assert_topk_match(our_s, our_i, ref_s, ref_i, dense, atol=1e-5)


@PROPS
@given(
    shape=shapes,
    ks=st.lists(st.integers(1, 40), min_size=1, max_size=4, unique=True),
    alphas=st.lists(st.sampled_from([0.0, 0.25, 0.75, 1.5]), min_size=1, max_size=3, unique=True),
)
def test_fit_grid_yields_the_same_as_separate_fits(shape, ks, alphas):
    gallery, reference, queries = _data(**shape)
    valid = sorted(k for k in ks if k <= shape["n_reference"])
    grid = {"k": ks, "alpha": alphas}
    if not valid:
        with pytest.raises(ValueError, match="every k in the grid exceeds"):
            next(NNN().fit_grid(gallery, reference, grid))
        return
    seen = []
    for params, fitted in NNN().fit_grid(gallery, reference, grid):
        seen.append((params["k"], params["alpha"]))
        fresh = NNN(**params).fit(gallery, reference)
        np.testing.assert_allclose(fitted.bias_, fresh.bias_, atol=1e-6)
        fs, fi = fresh.search(queries, 3)
        dense = ref_corrected_scores(queries, gallery, reference, params["k"], params["alpha"])
        assert_topk_match(*fitted.search(queries, 3), fs.astype(np.float64), fi, dense, atol=1e-5)
    assert seen == [(k, a) for k in valid for a in alphas]


@pytest.mark.parametrize("cls", [NNN, dehub.RobustNNN, dehub.SoftNNN])
def test_bias_is_fitted_once_and_never_changed_by_parameters(cls, monkeypatch):
    gallery, reference, queries = _data(12, 50, 40, 3, 6)
    model = cls(k=8, alpha=0.5).fit(gallery, reference)
    expected_k4 = cls(k=4, alpha=1.0).fit(gallery, reference).bias_
    calls = []
    original = cls._compute_bias

    def counting(self):
        calls.append(1)
        return original(self)

    monkeypatch.setattr(cls, "_compute_bias", counting)
    first = model.bias_
    before = model.search(queries, 5)
    for _ in range(3):
        model.search(queries[:1], 5)  # one query: no pass over the cache per search
    assert calls == [] and model.bias_ is first  # computed by fit, a plain array
    assert not first.flags.writeable  # callers cannot corrupt it
    # set_params after fit cannot change a search's result: it asks for fit or with_params
    model.set_params(alpha=1.0)
    assert model.bias_ is first
    with pytest.raises(
        StaleFitError, match=r"alpha: 0.5 -> 1.0.*fit\(gallery, reference\).*with_params\(alpha=1.0\)"
    ):
        model.search(queries, 5)
    model.set_params(alpha=0.5)  # back to the fitted values: the fit serves again
    np.testing.assert_array_equal(model.search(queries, 5)[1], before[1])
    model.k = 4  # plain attribute assignment is caught the same way
    with pytest.raises(StaleFitError):
        model.score(queries)
    model.k = 8
    # with_params: a NEW fitted estimator from the same cache; the original is untouched
    changed = model.with_params(alpha=1.0, k=4)
    assert len(calls) == 1 and changed is not model and changed.topk_scores_ is model.topk_scores_
    np.testing.assert_allclose(changed.bias_, expected_k4, rtol=1e-6)
    assert model.bias_ is first and model.get_params()["alpha"] == 0.5
    with pytest.raises(RefitRequiredError, match=r"cannot change engine.*fit\(gallery, reference\)"):
        model.with_params(engine="ivf")
    with pytest.raises(ValueError, match="exceeds the k=8 used in fit"):
        model.with_params(k=9)
    model.fit(gallery, reference[:20])  # a refit replaces the statistics
    assert len(calls) == 2
    np.testing.assert_allclose(model.bias_, cls(k=8, alpha=0.5).fit(gallery, reference[:20]).bias_)
