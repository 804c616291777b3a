"""Fitted state never changes behind the user's back (issue 21) and every search is bounded (issue 24).

For every registered method: ``set_params`` after ``fit`` cannot change a search's result
(it asks for ``fit`` or ``with_params``); ``fit_grid`` yields independent estimators;
``with_params`` shares the cache where it can and names ``fit`` where it cannot; ``k``
above the gallery is clamped with one warning before anything is allocated; scale
parameters whose bias or score overflows float32 are refused with the bound.
"""

from __future__ import annotations

import tracemalloc
import warnings

import numpy as np
import pytest

import dehub
from dehub import Index, IndexFormatError
from dehub._format import read_container, write_container
from dehub.methods import METHODS, InvalidParameterError
from dehub.methods.base import KClampedWarning, NotFittedError, RefitRequiredError, StaleFitError

ALL = sorted(METHODS)


def _fit(name, data, **params):
    return METHODS[name](**params).fit(data["gallery"], data["reference"])


def _other_value(name: str):
    """A (parameter, value) from the method's grid that differs from the default, or None."""
    model = METHODS[name]()
    for key, values in METHODS[name].default_grid().items():
        for value in values:
            if value != getattr(model, key):
                return key, value
    return None


@pytest.mark.parametrize("name", ALL)
def test_set_params_after_fit_cannot_change_a_search(data, name):
    model = _fit(name, data)
    q = data["queries"]
    before = model.search(q, 5)
    change = _other_value(name)
    if change is None:
        pytest.skip(f"{name} has no parameter to change")
    key, value = change
    fitted_arrays = {k: v for k, v in vars(model).items() if k.endswith("_") and isinstance(v, np.ndarray)}
    model.set_params(**{key: value})
    # Either a new fit is required (StaleFitError names fit and with_params) or the
    # method's own relation check explains why; never a silently different result.
    with pytest.raises((StaleFitError, ValueError)) as info:
        model.search(q, 5)
    assert "fit" in str(info.value).lower()
    with pytest.raises((StaleFitError, ValueError)):
        model.score(q)
    for k, v in fitted_arrays.items():
        assert vars(model)[k] is v, f"{k} changed without a fit"
    model.set_params(**{key: METHODS[name]().get_params()[key]})  # back to the fitted value
    s, i = model.search(q, 5)
    np.testing.assert_array_equal(i, before[1])
    np.testing.assert_array_equal(s, before[0])


@pytest.mark.parametrize("name", ALL)
def test_fit_grid_yields_independent_estimators(data, name):
    cls = METHODS[name]
    grid = {key: list(values)[:2] for key, values in cls.default_grid().items()}
    original = cls()
    kept = list(original.fit_grid(data["gallery"], data["reference"], grid))  # all kept, then used
    assert len({id(m) for _, m in kept}) == len(kept), "every step is its own estimator"
    assert original.get_params() == cls().get_params(), "fit_grid left the caller's estimator alone"
    with pytest.raises(NotFittedError):
        original.search(data["queries"], 3)
    for params, fitted in kept:
        fresh = cls(**{**cls().get_params(), **params}).fit(data["gallery"], data["reference"])
        a, b = fitted.search(data["queries"], 5), fresh.search(data["queries"], 5)
        np.testing.assert_array_equal(a[1], b[1])
        np.testing.assert_allclose(a[0], b[0], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", ALL)
def test_with_params_shares_the_cache_or_names_fit(data, name):
    model = _fit(name, data)
    same = model.with_params(**model.get_params())
    assert same is not model
    np.testing.assert_array_equal(same.search(data["queries"], 4)[1], model.search(data["queries"], 4)[1])
    served = model._cached_param_names()
    others = [key for key in model.get_params() if key not in served]
    change = _other_value(name)
    if change is not None and change[0] in others:
        with pytest.raises(RefitRequiredError, match=r"fit\(gallery, reference\)"):
            model.with_params(**{change[0]: change[1]})
    with pytest.raises(InvalidParameterError, match="has no parameter"):
        model.with_params(not_a_parameter=1)


def test_with_params_of_nnn_equals_a_fresh_fit(data):
    g, r, q = data["gallery"], data["reference"], data["queries"]
    model = dehub.NNN(k=16, alpha=0.75).fit(g, r)
    for params in ({"alpha": 0.25}, {"k": 4}, {"k": 8, "alpha": 1.5}):
        served = model.with_params(**params)
        fresh = dehub.NNN(**{"k": 16, "alpha": 0.75, **params}).fit(g, r)
        np.testing.assert_allclose(served.bias_, fresh.bias_, atol=1e-7)
        np.testing.assert_array_equal(served.search(q, 5)[1], fresh.search(q, 5)[1])
    assert model.alpha == 0.75 and model.k == 16


# ------------------------------------------------------------------ k clamp (issue 24)
@pytest.mark.parametrize("name", ALL)
def test_huge_k_is_clamped_with_one_warning_and_bounded_memory(data, name):
    model = _fit(name, data)
    q = data["queries"]
    expected = model.search(q, 40)
    tracemalloc.start()
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            s, i = model.search(q, 5_000_000)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    clamped = [w for w in caught if issubclass(w.category, KClampedWarning)]
    assert len(clamped) == 1 and "k=5000000 exceeds the 40 gallery items" in str(clamped[0].message)
    assert clamped[0].filename == __file__, "the warning points at the caller"
    assert s.shape == i.shape == (15, 40)
    np.testing.assert_array_equal(i, expected[1])
    # 15 x 5e6 results would be 600 MB; the clamped search needs well under 8 MiB here.
    assert peak < 8 << 20, f"peak traced memory {peak} bytes"


def test_bad_k_is_refused_before_the_search(data):
    model = _fit("nnn", data)
    for k, kind in ((0, ValueError), (-3, ValueError), (2.5, TypeError), (True, TypeError)):
        with pytest.raises(kind, match="k must be"):
            model.search(data["queries"], k)


# ------------------------------------------------------------------ representable results
def test_alpha_beyond_float32_is_refused_with_the_bound(data):
    with pytest.raises(
        InvalidParameterError, match=r"alpha must be .*<= 3.40282e\+38; received alpha=1e\+39"
    ):
        dehub.NNN(alpha=1e39).fit(data["gallery"], data["reference"])


def test_alpha_whose_bias_overflows_is_refused_with_the_bound(data):
    g, r = data["gallery"] * 1e3, data["reference"] * 1e3  # scores up to 1e6
    with pytest.raises(InvalidParameterError, match=r"overflow float32.*alpha must be <= 2\.30\d*e\+32"):
        dehub.NNN(alpha=1e37).fit(g, r, normalize="none")
    model = dehub.NNN(alpha=1e30).fit(g, r, normalize="none")  # within the bound: finite results
    s, i = model.search(data["queries"], 5, normalize="none")
    assert np.isfinite(s).all() and (i >= 0).all()
    with pytest.raises(InvalidParameterError, match="overflow float32"):
        model.with_params(alpha=1e37)


@pytest.mark.parametrize(
    "make",
    [
        lambda: dehub.QBNorm(beta=3e38),
        lambda: dehub.DBNorm(beta1=2e38, beta2=2e38),
        lambda: dehub.DN(lambda_=3e38),
    ],
)
def test_scores_that_overflow_are_refused(data, make):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # the refused fit's own overflow
        with pytest.raises(InvalidParameterError, match="overflow float32"):
            make().fit(data["gallery"], data["reference"])


def test_a_resealed_index_with_a_huge_alpha_is_refused(tmp_path, data):
    path = Index(_fit("nnn", data)).save(tmp_path / "i.dehub")
    header, arrays = read_container(path)
    header = {k: v for k, v in header.items() if k not in ("arrays", "format_version")}
    header["params"] = {**header["params"], "alpha": 1e308}
    write_container(path, header, arrays)  # checksums recomputed: only the content check remains
    with pytest.raises(IndexFormatError, match=r"alpha must be .*<= 3.40282e\+38; received alpha=1e\+308"):
        Index.load(path)
