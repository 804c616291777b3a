"""Rank equivalences, the estimator contract, input safety, errors and persistence."""

from __future__ import annotations

import numpy as np
import pytest

import dehub
from dehub.methods import METHODS, DBNormDIS, QBNormDIS

FAMILY = ["csls", "qbnorm", "qbnorm_dis", "dbnorm", "dbnorm_dis", "dn", "robust_nnn", "soft_nnn"]

SMALL_GRIDS = {
    "csls": {"k": [2, 5]},
    "qbnorm": {"beta": [5.0, 20.0]},
    "qbnorm_dis": {"beta": [5.0, 20.0], "k": [1, 2]},
    "dbnorm": {"beta1": [0.0, 20.0], "beta2": [0.0, 10.0]},
    "dbnorm_dis": {"beta1": [10.0, 20.0], "beta2": [5.0], "k": [1, 3]},
    "dn": {"lambda_": [0.25, 0.5]},
    "robust_nnn": {"k": [4, 8], "alpha": [0.5, 1.0], "trim": [0.0, 0.25]},
    "soft_nnn": {"k": [4, 8], "temperature": [0.05, 0.5]},
}


def _ids(model, q, k=10):
    return model.search(q, k)[1]


# ---------------------------------------------------------------- rank equivalences
@pytest.mark.parametrize("k", [1, 5, 16])
def test_csls_ranks_like_nnn_alpha_half(data, k):
    g, r, q = data["gallery"], data["reference"], data["queries"]
    csls = dehub.CSLS(k=k).fit(g, r)
    nnn = dehub.NNN(k=k, alpha=0.5).fit(g, r)
    np.testing.assert_array_equal(_ids(csls, q), _ids(nnn, q))
    # and the CSLS value is 2 * the NNN value minus the query term r_T(q)
    np.testing.assert_allclose(csls.score(q), 2 * nnn.score(q) - csls.r_T(q)[:, None], atol=1e-5)


@pytest.mark.parametrize("lam", [0.25, 0.5, 1.0])
def test_dn_ranks_like_nnn_with_k_full_bank_and_alpha_lambda(data, lam):
    g, r, q = data["gallery"], data["reference"], data["queries"]
    dn = dehub.DN(lambda_=lam).fit(g, r, gallery_bank=data["gallery_bank"])
    nnn = dehub.NNN(k=r.shape[0], alpha=lam).fit(g, r)
    np.testing.assert_array_equal(_ids(dn, q), _ids(nnn, q))
    np.testing.assert_allclose(dn.bias_, nnn.bias_, atol=1e-6)
    # the difference of the dense scores is constant along every query row
    diff = dn.score(q).astype(np.float64) - nnn.score(q)
    np.testing.assert_allclose(diff - diff[:, :1], 0.0, atol=1e-5)


@pytest.mark.parametrize("beta", [5.0, 20.0])
def test_dbnorm_with_beta2_zero_is_qbnorm(data, beta):
    g, r, q, gb = data["gallery"], data["reference"], data["queries"], data["gallery_bank"]
    db = dehub.DBNorm(beta1=beta, beta2=0.0).fit(g, r, gallery_bank=gb)
    qb = dehub.QBNorm(beta=beta).fit(g, r)
    np.testing.assert_array_equal(_ids(db, q), _ids(qb, q))
    np.testing.assert_allclose(db.score(q), qb.score(q) - np.log(gb.shape[0]), atol=1e-4)
    bank = r[:8]
    dis = DBNormDIS(beta1=beta, beta2=0.0).fit(g, bank, gallery_bank=gb)
    qdis = QBNormDIS(beta=beta).fit(g, bank)
    np.testing.assert_array_equal(_ids(dis, q), _ids(qdis, q))


@pytest.mark.parametrize("name", ["csls", "qbnorm", "dbnorm", "dn", "robust_nnn", "soft_nnn"])
def test_additive_bias_methods_serve_exactly_from_exported_vectors(data, name):
    g, r, q = data["gallery"], data["reference"], data["queries"]
    model = METHODS[name]().fit(g, r)
    vecs = model.export_vectors()
    aug = model.augment_queries(q)
    ids_export = np.argsort(-(aug.astype(np.float64) @ vecs.T.astype(np.float64)), axis=1, kind="stable")[
        :, :10
    ]
    np.testing.assert_array_equal(ids_export, _ids(model, q))


def test_dynamic_variants_refuse_a_single_export(data):
    model = QBNormDIS().fit(data["gallery"], data["reference"])
    with pytest.raises(ValueError, match="per query"):
        model.export_vectors()


def test_robust_nnn_without_trimming_is_nnn(data):
    g, r, q = data["gallery"], data["reference"], data["queries"]
    robust = dehub.RobustNNN(k=16, alpha=0.75, trim=0.0).fit(g, r)
    nnn = dehub.NNN(k=16, alpha=0.75).fit(g, r)
    np.testing.assert_allclose(robust.score(q), nnn.score(q), atol=1e-6)


def test_soft_nnn_limits(data):
    g, r = data["gallery"], data["reference"]
    hot = dehub.SoftNNN(k=16, alpha=1.0, temperature=1e3).fit(g, r)
    nnn = dehub.NNN(k=16, alpha=1.0).fit(g, r)
    np.testing.assert_allclose(hot.bias_, nnn.bias_, atol=1e-4)
    cold = dehub.SoftNNN(k=16, alpha=1.0, temperature=1e-4).fit(g, r)
    np.testing.assert_allclose(cold.bias_, dehub.NNN(k=1, alpha=1.0).fit(g, r).bias_, atol=1e-3)


# ---------------------------------------------------------------- contract
@pytest.mark.parametrize("name", FAMILY)
def test_inputs_unchanged_after_every_call(data, name):
    copies = {k: v.copy() for k, v in data.items()}
    for arr in data.values():
        arr.setflags(write=False)  # any in-place write raises
    cls = METHODS[name]
    kw = {"gallery_bank": data["gallery_bank"]} if name.startswith(("dbnorm", "dn")) else {}
    model = cls().fit(data["gallery"], data["reference"], **kw)
    model.search(data["queries"], 5)
    model.score(data["queries"])
    for _params, m in model.fit_grid(data["gallery"], data["reference"], SMALL_GRIDS[name], **kw):
        m.search(data["queries"], 3)
    for k, v in data.items():
        np.testing.assert_array_equal(v, copies[k])


@pytest.mark.parametrize("name", FAMILY)
def test_fit_grid_matches_individual_fits(data, name):
    cls = METHODS[name]
    g, r, q = data["gallery"], data["reference"], data["queries"]
    seen = 0
    for params, model in cls().fit_grid(g, r, SMALL_GRIDS[name]):
        single = cls(**params).fit(g, r)
        np.testing.assert_allclose(model.score(q), single.score(q), rtol=1e-6, atol=1e-5)
        np.testing.assert_array_equal(model.search(q, 5)[1], single.search(q, 5)[1])
        seen += 1
    assert seen >= 2


@pytest.mark.parametrize("name", FAMILY)
def test_default_grid_is_valid(name):
    cls = METHODS[name]
    grid = cls.default_grid()
    assert grid and set(grid) <= set(cls._get_param_names())
    n = int(np.prod([len(v) for v in grid.values()]))
    assert 2 <= n <= 40, f"{name}: {n} grid points"


@pytest.mark.parametrize("name", FAMILY)
def test_save_load_round_trip(data, tmp_path, name):
    g, r, q = data["gallery"], data["reference"][:40], data["queries"]
    model = METHODS[name]().fit(g, r)
    index = dehub.Index(model)
    path = index.save(tmp_path / f"{name}.dehub")
    loaded = dehub.Index.load(path)
    assert type(loaded.model) is type(model)
    assert loaded.model.get_params() == model.get_params()
    s0, i0 = index.search(q, 7)
    s1, i1 = loaded.search(q, 7)
    np.testing.assert_array_equal(i0, i1)
    np.testing.assert_allclose(s0, s1, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(loaded.model.score(q), model.score(q), rtol=1e-6, atol=1e-6)


def test_unfitted_use_is_a_clear_error(data):
    for name in FAMILY:
        with pytest.raises(dehub.NotFittedError):
            METHODS[name]().search(data["queries"], 3)


# ---------------------------------------------------------------- bad parameters
@pytest.mark.parametrize(
    "make,match",
    [
        (lambda: dehub.QBNorm(beta=-1.0), "beta must be a finite real number > 0"),
        (lambda: dehub.QBNorm(beta=0.0), "beta must be a finite real number > 0"),
        (lambda: dehub.QBNorm(beta=float("nan")), "finite"),
        (lambda: dehub.DBNorm(beta1=-5.0), "beta1 must be a finite real number >= 0"),
        (lambda: dehub.DBNorm(beta1=0.0, beta2=0.0), "must be > 0"),
        (lambda: dehub.QBNorm(dynamic="yes"), "dynamic must be True or False"),
        (lambda: dehub.DN(lambda_=-0.5), "lambda_ must be a finite real number >= 0"),
        (lambda: dehub.RobustNNN(trim=0.5), "trim must be a finite real number >= 0 and < 0.5"),
        (lambda: dehub.RobustNNN(statistic="mode"), "statistic must be"),
        (lambda: dehub.SoftNNN(temperature=0.0), "temperature must be a finite real number > 0"),
        (lambda: dehub.CSLS(k=0), "k must be an integer >= 1"),
    ],
)
def test_bad_parameters_are_clear_errors(data, make, match):
    with pytest.raises((ValueError, TypeError), match=match):
        make().fit(data["gallery"], data["reference"])


@pytest.mark.parametrize(
    "make,match",
    [
        (lambda: dehub.CSLS(k=121), "exceeds the number of reference items"),
        (lambda: dehub.CSLS(k=41), "exceeds the number of gallery items"),
        (lambda: QBNormDIS(k=41), "exceeds the number of gallery items"),
        (lambda: DBNormDIS(k=41), "exceeds the number of gallery items"),
        (lambda: dehub.RobustNNN(k=121), "exceeds the number of reference items"),
        (lambda: dehub.SoftNNN(k=500), "exceeds the number of reference items"),
    ],
)
def test_k_larger_than_bank_is_a_clear_error(data, make, match):
    with pytest.raises(ValueError, match=match):
        make().fit(data["gallery"], data["reference"])


def test_changed_temperature_after_fit_asks_for_refit(data):
    model = dehub.QBNorm(beta=20.0).fit(data["gallery"], data["reference"])
    model.set_params(beta=10.0)
    with pytest.raises(ValueError, match="Refit"):
        model.search(data["queries"], 3)
    model.fit(data["gallery"], data["reference"])  # a refit with the new value works
    model.search(data["queries"], 3)
    dis = dehub.QBNorm(beta=20.0).fit(data["gallery"], data["reference"])
    dis.set_params(dynamic=True)
    with pytest.raises(ValueError, match="refit with dynamic=True"):
        dis.search(data["queries"], 3)


def test_cached_k_refits_larger(data):
    g, r = data["gallery"], data["reference"]
    model = dehub.CSLS(k=4).fit(g, r)
    model.set_params(k=2)
    model.search(data["queries"], 3)  # served from the cache
    model.set_params(k=8)
    with pytest.raises(ValueError, match="exceeds the k=4 used in fit"):
        model.search(data["queries"], 3)
    model.fit(g, r)
    assert model.fitted_k_ == 8


def test_gallery_bank_dimension_mismatch(data):
    with pytest.raises(ValueError, match="same embedding dimension"):
        dehub.DBNorm().fit(
            data["gallery"], data["reference"], gallery_bank=data["gallery_bank"][:, :8], normalize="none"
        )
