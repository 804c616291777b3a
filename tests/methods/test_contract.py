"""Rank equivalences of the family, and the estimator contract over every registered method.

The contract part is parametrized over ``dehub.METHODS``: a new method registered there
is checked automatically (its grid: ``SMALL_GRIDS`` or the first two values of each key
of its ``default_grid()``). For every method: the sweep's table equals fitting each
setting and searching; ``export_vectors`` equals ``search`` where ``get_tags(m).offset``;
the save/load round trip through ``dehub.Index`` equals search; incremental add / remove /
reference growth equals a refit where ``incremental``; shard statistics equal the fit
where ``row_decomposable``; inputs are never written; bad parameters are clear errors;
``get_params``/``clone`` round trip.
"""

from __future__ import annotations

import numpy as np
import pytest

import dehub
from dehub.datasets import RetrievalTask
from dehub.evaluation.metrics import outcomes_from_ranks
from dehub.evaluation.sweep import fit_selected, sweep
from dehub.methods import METHODS, DBNormDIS, InvalidParameterError, QBNormDIS, get_tags

FAMILY = ["csls", "qbnorm", "qbnorm_dis", "dbnorm", "dbnorm_dis", "dn", "robust_nnn", "soft_nnn"]

SMALL_GRIDS = {
    "csls": {"k": [2, 5]},
    "qbnorm": {"beta": [5.0, 20.0], "dynamic": [False, True]},
    "qbnorm_dis": {"beta": [5.0, 20.0], "k": [1, 2]},
    "dbnorm": {"beta1": [0.0, 20.0], "beta2": [0.0, 10.0]},
    "dbnorm_dis": {"beta1": [10.0, 20.0], "beta2": [5.0], "k": [1, 3]},
    "dn": {"lambda_": [0.25, 0.5]},
    "robust_nnn": {"k": [4, 8], "alpha": [0.5, 1.0], "trim": [0.0, 0.25]},
    "soft_nnn": {"k": [4, 8], "temperature": [0.05, 0.5]},
    "nnn": {"k": [1, 4, 8], "alpha": [0.5, 1.25]},
    "plain": {},
}
ALL = sorted(METHODS)


def small_grid(name: str) -> dict[str, list]:
    """The grid the contract suite sweeps: hand-picked, or two values per default key."""
    if name in SMALL_GRIDS:
        return SMALL_GRIDS[name]
    return {key: list(values)[:2] for key, values in METHODS[name].default_grid().items()}


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
    model.with_params(k=2).search(data["queries"], 3)  # served from the cache
    with pytest.raises(ValueError, match="exceeds the k=4 used in fit"):
        model.with_params(k=8)
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


# ================================================================ the contract, every method
def _unit64(x):
    return x / np.linalg.norm(x, axis=1, keepdims=True)


@pytest.fixture(scope="module")
def planted():
    """Hub-planted retrieval task (float32): a few gallery items near the mean direction,
    a small reference set (so DIS activation sets are small), one positive per query."""
    rng = np.random.default_rng(11)
    d, n_g, n_q = 16, 60, 45
    hub = _unit64(rng.normal(size=(1, d)))
    g = rng.normal(size=(n_g, d))
    g[:6] += 2.5 * hub
    g = _unit64(g)
    target = rng.integers(0, n_g, size=n_q)
    q = _unit64(g[target] + 0.9 * rng.normal(size=(n_q, d)) + 0.8 * hub)
    reference = _unit64(rng.normal(size=(12, d)) + 0.8 * hub)
    rel = dehub.Relevance.from_pairs(np.arange(n_q), target, n_q, n_g)
    f32 = np.float32
    return RetrievalTask("planted", q.astype(f32), g.astype(f32), rel), reference.astype(f32)


def _first_relevant_rank(ids: np.ndarray, rel) -> np.ndarray:
    rank = np.full(ids.shape[0], ids.shape[1] + 1, dtype=np.int64)
    for qi in range(ids.shape[0]):
        pos = rel.indices[rel.indptr[qi] : rel.indptr[qi + 1]]
        hit = np.flatnonzero(np.isin(ids[qi], pos))
        if hit.size:
            rank[qi] = hit[0] + 1
    return rank


@pytest.mark.parametrize("name", ALL)
def test_sweep_table_equals_fit_and_search(planted, name):
    task, reference = planted
    grid = small_grid(name)
    res = sweep(name, task, reference, grid=grid, normalize="none", ks=(1, 5, 10))
    assert len(res.table) >= 1
    n_g = task.gallery.shape[0]
    for row in res.table:
        params = {key: row[key] for key in grid}
        model = fit_selected(name, params, task.gallery, reference, normalize="none")
        _, ids = model.search(task.queries, n_g, normalize="none")
        expected = outcomes_from_ranks(_first_relevant_rank(ids, task.relevance), task.relevance, (1, 5, 10))
        for metric, value in expected.summary().items():
            assert row[metric] == pytest.approx(value, abs=1e-12), (name, params, metric)


def test_dis_sweep_is_not_the_static_sweep(planted):
    """The bug this suite guards: DIS ranked as static IS gives other numbers here."""
    task, reference = planted
    grid = {"beta": [20.0, 80.0]}
    dis = sweep("qbnorm_dis", task, reference, grid=grid, normalize="none").table
    static = sweep("qbnorm", task, reference, grid=grid, normalize="none").table
    assert [r["MRR"] for r in dis] != [r["MRR"] for r in static]


@pytest.mark.parametrize("name", ALL)
def test_export_vectors_equal_search_where_offset(data, name):
    g, r, q = data["gallery"], data["reference"], data["queries"]
    model = METHODS[name]().fit(g, r)
    if not get_tags(model).offset:
        with pytest.raises(ValueError, match="per query"):
            model.export_vectors()
        return
    assert model.bias_.shape == (g.shape[0],)
    vecs = model.export_vectors()
    assert vecs.shape == (g.shape[0], g.shape[1] + 1) and vecs.dtype == np.float32
    aug = model.augment_queries(q)
    exported = aug.astype(np.float64) @ vecs.T.astype(np.float64)
    ids_export = np.argsort(-exported, axis=1, kind="stable")[:, :10]
    scores, ids = model.search(q, 10)
    np.testing.assert_array_equal(ids_export, ids)
    # the search scores are a positive per-query affine map of the exported ones
    top = np.take_along_axis(exported, ids, axis=1)
    spread_s, spread_e = scores[:, :1] - scores[:, -1:], top[:, :1] - top[:, -1:]
    assert np.all((spread_s > 0) == (spread_e > 0))


@pytest.mark.parametrize("name", ALL)
def test_save_load_round_trip_equals_search(data, tmp_path, name):
    g, r, q = data["gallery"], data["reference"][:40], data["queries"]
    model = METHODS[name]().fit(g, r)
    index = dehub.Index(model)
    loaded = dehub.Index.load(index.save(tmp_path / f"{name}.dehub"))
    assert type(loaded.model) is type(model)
    assert loaded.model.get_params() == model.get_params()
    assert get_tags(loaded.model) == get_tags(model)
    s0, i0 = model.search(q, 7)
    s1, i1 = loaded.search(q, 7)
    np.testing.assert_array_equal(i0, i1)
    np.testing.assert_allclose(s0, s1, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(loaded.model.score(q), model.score(q), rtol=1e-6, atol=1e-6)


@pytest.fixture(scope="module")
def grow():
    """float64 data (bitwise-reproducible GEMMs): base gallery, new rows, two reference parts."""
    rng = np.random.default_rng(5)
    d = 12
    return {
        "gallery": _unit64(rng.normal(size=(50, d))),
        "new": _unit64(rng.normal(size=(14, d))),
        "reference": _unit64(rng.normal(size=(70, d))),
        "more": _unit64(rng.normal(size=(25, d))),
        "queries": _unit64(rng.normal(size=(9, d))),
    }


def _same_search(a, b, q, k=8):
    sa, ia = a.search(q, k)
    sb, ib = b.search(q, k)
    np.testing.assert_array_equal(ia, ib)
    np.testing.assert_allclose(sa, sb, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("name", ALL)
def test_incremental_updates_equal_a_refit(grow, name):
    g, new, ref, more, q = grow["gallery"], grow["new"], grow["reference"], grow["more"], grow["queries"]
    params = {"k": 4} if "k" in METHODS[name]._get_param_names() else {}
    inc = dehub.Index.build(g, ref, method=name, keep_reference=True, **params)
    if not get_tags(inc.model).incremental:
        with pytest.raises(TypeError, match="cannot be updated incrementally"):
            inc.add(new)
        assert inc.n_items == g.shape[0]
        return
    before = inc.model
    inc.add(new, 1000 + np.arange(new.shape[0]))
    assert before.gallery_.shape[0] == g.shape[0]  # the old model is untouched
    gallery = np.vstack([g, new])
    ids = np.concatenate([np.arange(g.shape[0]), 1000 + np.arange(new.shape[0])])
    _same_search(inc, dehub.Index.build(gallery, ref, method=name, ids=ids, **params), q)
    drop = ids[::5]
    inc.remove(drop)
    keep = ~np.isin(ids, drop)
    _same_search(inc, dehub.Index.build(gallery[keep], ref, method=name, ids=ids[keep], **params), q)
    inc.add_reference(more)
    full = dehub.Index.build(gallery[keep], np.vstack([ref, more]), method=name, ids=ids[keep], **params)
    _same_search(inc, full, q)
    assert inc.n_reference == ref.shape[0] + more.shape[0]


SHARDS = ((0, 17), (17, 18), (18, 50))


@pytest.mark.parametrize("name", ALL)
def test_shard_statistics_equal_the_fit(grow, name):
    g, ref, q = grow["gallery"], grow["reference"], grow["queries"]
    model = METHODS[name]()
    fitted = METHODS[name]().fit(g, ref)
    if not get_tags(model).row_decomposable:
        if hasattr(model, "gallery_statistics"):
            with pytest.raises(ValueError, match="not row-decomposable"):
                model.gallery_statistics(g[:10], ref)
        return
    parts = [model.gallery_statistics(g[a:b], ref) for a, b in SHARDS]
    keys = set(fitted.fitted_statistics())
    assert all(set(p) == keys for p in parts)
    assert all(p[key].shape[0] == b - a for p, (a, b) in zip(parts, SHARDS) for key in p)
    stats = {key: np.concatenate([p[key] for p in parts]) for key in keys}
    for key in keys:
        np.testing.assert_allclose(stats[key], fitted.fitted_statistics()[key], rtol=1e-12, atol=1e-12)
    rebuilt = model.from_statistics(g, stats, n_reference=ref.shape[0])
    assert type(rebuilt) is type(model) and rebuilt is not model
    _same_search(rebuilt, fitted, q)


@pytest.mark.parametrize("name", ALL)
def test_inputs_are_never_written(data, name):
    frozen = {key: value.copy() for key, value in data.items()}
    for key in frozen:
        frozen[key].setflags(write=False)  # any in-place write raises
    g, r, q = frozen["gallery"], frozen["reference"], frozen["queries"]
    cls = METHODS[name]
    model = cls().fit(g, r)
    model.search(q, 5)
    model.score(q)
    for _params, m in cls().fit_grid(g, r, small_grid(name)):
        m.search(q, 3)
    task = RetrievalTask("ro", q, g, dehub.Relevance.from_pairs(np.arange(15), np.arange(15), 15, 40))
    sweep(name, task, r, grid=small_grid(name))
    tags = get_tags(model)
    if tags.row_decomposable:
        model.gallery_statistics(g[:5], r)
    if tags.incremental:
        index = dehub.Index(model, reference=r)
        index.add(frozen["gallery_bank"][:3])
        index.add_reference(frozen["gallery_bank"][3:9])
        index.remove([0])
    for key, value in data.items():
        np.testing.assert_array_equal(frozen[key], value)


@pytest.mark.parametrize("name", ALL)
def test_every_bad_parameter_is_a_clear_error(data, name):
    cls = METHODS[name]
    for param in cls._get_param_names():
        with pytest.raises(
            InvalidParameterError, match=rf"{cls.__name__}: {param} must be .*; received {param}="
        ):
            cls(**{param: object()}).fit(data["gallery"], data["reference"])
    with pytest.raises(InvalidParameterError, match=f"method '{name}' has no parameter 'no_such_param'"):
        dehub.get_method(name, no_such_param=1)
    with pytest.raises(InvalidParameterError, match="has no grid parameter 'no_such_param'"):
        next(iter(cls().fit_grid(data["gallery"], data["reference"], {"no_such_param": [1]})))


@pytest.mark.parametrize("name", ALL)
def test_params_and_clone_round_trip(data, name):
    cls = METHODS[name]
    model = cls().fit(data["gallery"], data["reference"])
    params = model.get_params()
    twin = model.clone()
    assert type(twin) is cls and twin.get_params() == params
    assert getattr(twin, "gallery_", None) is None  # clones are unfitted
    assert repr(twin) == repr(model)
    assert dehub.get_method(name, **params).get_params() == params
    for key, values in small_grid(name).items():
        assert model.clone(**{key: values[0]}).get_params()[key] == values[0]


@pytest.mark.parametrize("name", ALL)
def test_unfitted_use_is_a_clear_error(data, name):
    with pytest.raises(dehub.NotFittedError):
        METHODS[name]().search(data["queries"], 3)
