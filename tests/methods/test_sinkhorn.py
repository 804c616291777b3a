"""SN / DBSN: the paper's Sinkhorn, POT and the official DBSN code, all matched."""

from __future__ import annotations

import numpy as np
import pytest

import dehub
from dehub.methods import get_tags
from dehub.methods.sinkhorn import sinkhorn_offsets

from .reference_new import official_sn_dbsn_scores, sinkhorn_knopp_paper, sn_offsets_paper

# Offsets are ~tau * log-scalings: float32 inputs give ~1e-7 agreement with float64 references.
ATOL = 2e-6


@pytest.mark.parametrize("tau, n_iter", [(0.01, 10), (0.01, 1), (0.05, 3), (0.1, 50)])
@pytest.mark.parametrize("budget", [2**30, 40_000])  # cached kernel / recomputed per iteration
def test_offsets_match_paper_sinkhorn(data, tau, n_iter, budget):
    g, r = data["gallery"], data["reference"]
    res = sinkhorn_offsets([g], r, tau, n_iter, memory_budget=budget)
    ref = sn_offsets_paper(g, r, tau, n_iter)
    np.testing.assert_allclose(res.offsets[n_iter], ref, atol=ATOL, rtol=0)
    u, v = sinkhorn_knopp_paper(g.astype(np.float64) @ r.T.astype(np.float64), tau, n_iter)
    np.testing.assert_allclose(res.log_v * tau, np.log(v) * tau, atol=ATOL, rtol=0)


def test_offsets_match_pot(data):
    ot = pytest.importorskip("ot")
    g, r = data["gallery"], data["reference"]
    s = g.astype(np.float64) @ r.T.astype(np.float64)
    a, b = np.full(s.shape[0], 1 / s.shape[0]), np.full(s.shape[1], 1 / s.shape[1])
    for tau in (0.01, 0.03):
        _, log = ot.sinkhorn(a, b, 1 - s, reg=tau, log=True, numItermax=10)
        model = dehub.SN(tau=tau).fit(g, r)
        np.testing.assert_allclose(model.bias_, -tau * np.log(log["u"]), atol=ATOL, rtol=0)


def test_sn_and_dbsn_match_official_code(data):
    pytest.importorskip("ot")
    g, r, gb, q = data["gallery"], data["reference"], data["gallery_bank"], data["queries"]
    f64 = np.float64
    sn_off, dbsn_off = official_sn_dbsn_scores(q.astype(f64), g.astype(f64), r.astype(f64), gb.astype(f64))
    sn = dehub.SN().fit(g, r)
    dbsn = dehub.DBSN().fit(g, r, gallery_bank=gb)
    # official: (gallery, query) matrices; dehub score: (query, gallery)
    np.testing.assert_allclose(sn.score(q), sn_off.T, atol=ATOL, rtol=0)
    np.testing.assert_allclose(dbsn.score(q), dbsn_off.T, atol=ATOL, rtol=0)
    np.testing.assert_allclose(
        dbsn.bias_, sn_offsets_paper(g, r, 0.01, 10, gallery_bank=gb), atol=ATOL, rtol=0
    )


def test_dbsn_without_bank_is_sn_and_self_bank_shifts_by_log2(data):
    g, r = data["gallery"], data["reference"]
    sn = dehub.SN().fit(g, r)
    np.testing.assert_array_equal(dehub.DBSN().fit(g, r).bias_, sn.bias_)
    # the gallery as its own bank duplicates every row: offsets shift by tau * log 2 only
    dup = dehub.DBSN().fit(g, r, gallery_bank=g)
    np.testing.assert_allclose(dup.bias_ - sn.bias_, 0.01 * np.log(2), atol=ATOL)


def test_search_is_the_offset_ranking_and_exports(data):
    g, r, q = data["gallery"], data["reference"], data["queries"]
    model = dehub.SN().fit(g, r)
    assert get_tags(model).offset and not get_tags(model).transductive
    s, ids = model.search(q, 7)
    dense = q.astype(np.float64) @ g.T.astype(np.float64) - sn_offsets_paper(g, r, 0.01, 10)
    np.testing.assert_array_equal(ids, np.argsort(-dense, axis=1, kind="stable")[:, :7])
    np.testing.assert_allclose(s, np.take_along_axis(dense, ids, axis=1), atol=1e-5)
    ex = model.export_vectors()
    assert ex.shape == (g.shape[0], g.shape[1] + 1)
    np.testing.assert_allclose(model.augment_queries(q) @ ex.T, model.score(q), atol=1e-5)


def test_tol_converges_and_reports(data):
    g, r = data["gallery"], data["reference"]
    fixed = dehub.SN(tau=0.05, n_iter=10).fit(g, r)
    assert fixed.n_iter_ == 10 and fixed.marginal_error_ > 1e-6  # 10 iterations: not converged here
    conv = dehub.SN(tau=0.05, n_iter=5000, tol=1e-9).fit(g, r)
    assert conv.n_iter_ < 5000 and conv.marginal_error_ < 1e-9
    np.testing.assert_allclose(conv.bias_, sn_offsets_paper(g, r, 0.05, conv.n_iter_), atol=ATOL, rtol=0)
    # the marginal error is POT's: || column marginal of diag(u) K diag(v) - b ||_2
    u, v = sinkhorn_knopp_paper(g.astype(np.float64) @ r.T.astype(np.float64), 0.05, 10)
    kern = np.exp(-(1 - g.astype(np.float64) @ r.T.astype(np.float64)) / 0.05)
    err = np.linalg.norm((u[:, None] * kern * v[None, :]).sum(axis=0) - 1 / r.shape[0])
    assert abs(fixed.marginal_error_ - err) < 1e-6 * max(err, 1e-3)


def test_fit_grid_equals_separate_fits(data):
    g, r, gb = data["gallery"], data["reference"], data["gallery_bank"]
    grid = {"tau": [0.01, 0.05], "n_iter": [3, 10]}
    for cls, kw in ((dehub.SN, {}), (dehub.DBSN, {"gallery_bank": gb})):
        seen = 0
        for params, fitted in cls().fit_grid(g, r, grid, **kw):
            single = cls(**params).fit(g, r, **kw)
            np.testing.assert_allclose(fitted.bias_, single.bias_, atol=1e-12)
            seen += 1
        assert seen == 4


def test_changing_parameters_after_fit_is_an_error(data):
    model = dehub.SN().fit(data["gallery"], data["reference"])
    model.set_params(tau=0.02)
    with pytest.raises(ValueError, match="differ from the values"):
        model.search(data["queries"], 3)
    with pytest.raises(ValueError, match="tau"):
        dehub.SN(tau=0.0).fit(data["gallery"], data["reference"])
    with pytest.raises(TypeError, match="SN takes no gallery_bank"):
        next(iter(dehub.SN().fit_grid(data["gallery"], data["reference"], gallery_bank=data["gallery_bank"])))


def test_index_round_trip(data, tmp_path):
    g, r, q = data["gallery"], data["reference"], data["queries"]
    for name in ("sn", "dbsn"):
        index = dehub.Index.build(g, r, method=name)
        path = index.save(tmp_path / f"{name}.dehub")
        back = dehub.Index.load(path)
        np.testing.assert_array_equal(back.search(q, 5)[1], index.search(q, 5)[1])


@pytest.fixture(scope="module")
def minilm():
    """Real MiniLM embeddings (the bundled WordNet benchmark): 150 lemmas vs 600 definitions."""
    from dehub.datasets.wordnet import load_wordnet_benchmark

    bench = load_wordnet_benchmark(verify=False)
    return np.ascontiguousarray(bench.test.b[:150]), np.ascontiguousarray(bench.reference.a[:600])


@pytest.mark.filterwarnings("ignore:Sinkhorn did not converge", "ignore:overflow encountered")
@pytest.mark.parametrize("tau", [0.001, 0.002, 0.005, 0.01, 0.05])
@pytest.mark.parametrize("budget", [2**30, 100_000])  # absorbed kernel / log domain per iteration
def test_offsets_match_pot_float64_on_minilm(minilm, tau, budget):
    """POT's float64 Sinkhorn on real embeddings, down to tau = 0.001 (no kernel floor).

    ``sinkhorn_log`` is POT's exact log-domain form of the same iterates (its ``u``
    starts at 1, POT's ``sinkhorn_knopp``'s at 1/n: offsets shift by tau log n);
    ``sinkhorn_knopp`` itself, where it runs without numerical warnings, agrees too.
    """
    ot = pytest.importorskip("ot")
    import warnings

    g, r = minilm
    s = g.astype(np.float64) @ r.T.astype(np.float64)
    n, m = s.shape
    a, b = np.full(n, 1 / n), np.full(m, 1 / m)
    res = sinkhorn_offsets([g], r, tau, 10, memory_budget=budget)
    _, logd = ot.sinkhorn(a, b, 1 - s, reg=tau, numItermax=10, log=True, method="sinkhorn_log")
    pot_log = -tau * (logd["log_u"] - np.log(n))
    # float32 scores (as the search's) against float64 ones: ~1e-7 of an offset
    np.testing.assert_allclose(res.offsets[10], pot_log, atol=ATOL, rtol=0)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        _, logk = ot.sinkhorn(a, b, 1 - s, reg=tau, numItermax=10, log=True)
    if not any("numerical" in str(w.message).lower() for w in caught):
        np.testing.assert_allclose(res.offsets[10], -tau * np.log(logk["u"]), atol=ATOL, rtol=0)


@pytest.mark.filterwarnings("ignore:Sinkhorn did not converge")
@pytest.mark.parametrize("tau", [0.005, 0.05])
def test_converged_offsets_match_pot_sn_py_rule(minilm, tau):
    """sn.py's rule: POT's default numItermax=1000, stopThr=1e-9."""
    ot = pytest.importorskip("ot")
    g, r = minilm
    s = g.astype(np.float64) @ r.T.astype(np.float64)
    n, m = s.shape
    _, logd = ot.sinkhorn(
        np.full(n, 1 / n), np.full(m, 1 / m), 1 - s, reg=tau, log=True, method="sinkhorn_log", stopThr=1e-9
    )
    model = dehub.SN(tau=tau, n_iter=1000, tol=1e-9).fit(g, r)
    np.testing.assert_allclose(model.bias_, -tau * (logd["log_u"] - np.log(n)), atol=ATOL, rtol=0)
