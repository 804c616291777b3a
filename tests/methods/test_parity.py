"""Every method against its slow reference written from the paper's formula."""

from __future__ import annotations

import numpy as np
import pytest

import dehub
from dehub.methods import DBNormDIS, QBNormDIS

from . import reference_impl as ref


def _check_search(model, queries, dense_ref, k=5, rtol=1e-5, atol=1e-5):
    """search() returns the reference top-k (ids and values) and agrees with score()."""
    s, ids = model.search(queries, k)
    order = np.argsort(-dense_ref, axis=1, kind="stable")[:, :k]
    np.testing.assert_array_equal(ids, order)
    np.testing.assert_allclose(s, np.take_along_axis(dense_ref, order, axis=1), rtol=rtol, atol=atol)
    dense = model.score(queries)
    np.testing.assert_allclose(np.take_along_axis(dense, ids, axis=1), s, rtol=rtol, atol=atol)


@pytest.mark.parametrize("k", [1, 3, 10])
def test_csls_matches_paper_formula(data, k):
    want = ref.csls_scores(data["queries"], data["gallery"], data["reference"], k)
    model = dehub.CSLS(k=k).fit(data["gallery"], data["reference"])
    np.testing.assert_allclose(model.score(data["queries"]), want, atol=1e-5)
    _check_search(model, data["queries"], want)


@pytest.mark.parametrize("beta", [1.0, 20.0, 80.0])
def test_inverted_softmax_matches_paper_formula(data, beta):
    want = ref.inverted_softmax_log_scores(data["queries"], data["gallery"], data["reference"], beta)
    model = dehub.QBNorm(beta=beta).fit(data["gallery"], data["reference"])
    np.testing.assert_allclose(model.score(data["queries"]), want, rtol=1e-6, atol=1e-4)
    _check_search(model, data["queries"], want, rtol=1e-5, atol=1e-4)
    # exp(score) is the paper's value where that value is representable
    naive = ref.inverted_softmax_naive(data["queries"], data["gallery"], data["reference"], beta)
    np.testing.assert_allclose(np.exp(want), naive, rtol=1e-9)


@pytest.mark.parametrize("k", [1, 2])
def test_dynamic_inverted_softmax_matches_paper_formula(data, k):
    bank = data["reference"][:8]  # a small bank activates few items, so both gates occur
    want = ref.inverted_softmax_log_scores(data["queries"], data["gallery"], bank, 20.0, dynamic=True, k=k)
    model = QBNormDIS(beta=20.0, k=k).fit(data["gallery"], bank)
    top1 = np.argmax(data["queries"].astype(np.float64) @ data["gallery"].T.astype(np.float64), axis=1)
    gated = model.activated_[0][top1]
    assert gated.any() and not gated.all(), "test data must exercise both DIS branches"
    np.testing.assert_allclose(model.score(data["queries"]), want, rtol=1e-6, atol=1e-4)
    _check_search(model, data["queries"], want, atol=1e-4)


@pytest.mark.parametrize("beta1,beta2", [(20.0, 20.0), (10.0, 40.0), (0.0, 20.0), (30.0, 0.0)])
def test_dual_inverted_softmax_matches_paper_formula(data, beta1, beta2):
    banks = [data["reference"], data["gallery_bank"]]
    want = ref.dual_is_log_scores(data["queries"], data["gallery"], banks, [beta1, beta2])
    model = dehub.DBNorm(beta1=beta1, beta2=beta2).fit(
        data["gallery"], data["reference"], gallery_bank=data["gallery_bank"]
    )
    np.testing.assert_allclose(model.score(data["queries"]), want, rtol=1e-6, atol=1e-4)
    _check_search(model, data["queries"], want, atol=1e-4)


def test_dual_dynamic_inverted_softmax_matches_paper_formula(data):
    banks = [data["reference"][:6], data["gallery_bank"][:5]]
    want = ref.dual_is_log_scores(data["queries"], data["gallery"], banks, [20.0, 10.0], dynamic=True, k=1)
    model = DBNormDIS(beta1=20.0, beta2=10.0, k=1).fit(data["gallery"], banks[0], gallery_bank=banks[1])
    top1 = np.argmax(data["queries"].astype(np.float64) @ data["gallery"].T.astype(np.float64), axis=1)
    patterns = {tuple(model.activated_[:, t]) for t in top1}
    assert len(patterns) >= 2, "test data must exercise several DualDIS gate patterns"
    np.testing.assert_allclose(model.score(data["queries"]), want, rtol=1e-6, atol=1e-4)
    _check_search(model, data["queries"], want, atol=1e-4)


def test_dbnorm_default_gallery_bank_is_the_gallery(data):
    want = ref.dual_is_log_scores(
        data["queries"], data["gallery"], [data["reference"], data["gallery"]], [20.0, 5.0]
    )
    model = dehub.DBNorm(beta1=20.0, beta2=5.0).fit(data["gallery"], data["reference"])
    np.testing.assert_allclose(model.score(data["queries"]), want, rtol=1e-6, atol=1e-4)


@pytest.mark.parametrize("lam", [0.0, 0.5, 1.25])
def test_dn_matches_paper_formula(data, lam):
    want = ref.dn_scores(data["queries"], data["gallery"], data["reference"], data["gallery_bank"], lam)
    model = dehub.DN(lambda_=lam).fit(data["gallery"], data["reference"], gallery_bank=data["gallery_bank"])
    np.testing.assert_allclose(model.score(data["queries"]), want, atol=1e-5)
    _check_search(model, data["queries"], want)
    default = dehub.DN(lambda_=lam).fit(data["gallery"], data["reference"])
    want_default = ref.dn_scores(data["queries"], data["gallery"], data["reference"], data["gallery"], lam)
    np.testing.assert_allclose(default.score(data["queries"]), want_default, atol=1e-5)


@pytest.mark.parametrize(
    "params,kw",
    [
        ({"k": 16, "statistic": "trimmed", "trim": 0.125}, {"statistic": "trimmed", "trim": 0.125}),
        ({"k": 10, "statistic": "trimmed", "trim": 0.25}, {"statistic": "trimmed", "trim": 0.25}),
        ({"k": 9, "statistic": "median"}, {"statistic": "median"}),
        ({"k": 8, "statistic": "median"}, {"statistic": "median"}),
    ],
)
def test_robust_nnn_matches_formula(data, params, kw):
    want = ref.nnn_scores(
        data["queries"], data["gallery"], data["reference"], k=params["k"], alpha=0.75, **kw
    )
    model = dehub.RobustNNN(alpha=0.75, **params).fit(data["gallery"], data["reference"])
    np.testing.assert_allclose(model.score(data["queries"]), want, atol=1e-5)
    _check_search(model, data["queries"], want)


def test_trimmed_mean_follows_scipy_convention(data):
    stats = pytest.importorskip("scipy.stats")
    model = dehub.RobustNNN(k=20, alpha=1.0, trim=0.2).fit(data["gallery"], data["reference"])
    top = np.sort(data["gallery"].astype(np.float64) @ data["reference"].T.astype(np.float64), axis=1)[
        :, ::-1
    ][:, :20]
    np.testing.assert_allclose(model.bias_, stats.trim_mean(top, 0.2, axis=1), atol=1e-6)


@pytest.mark.parametrize("temperature", [0.01, 0.1, 1.0])
def test_soft_nnn_matches_formula(data, temperature):
    want = ref.nnn_scores(
        data["queries"],
        data["gallery"],
        data["reference"],
        k=16,
        alpha=0.75,
        statistic="soft",
        temperature=temperature,
    )
    model = dehub.SoftNNN(k=16, alpha=0.75, temperature=temperature).fit(data["gallery"], data["reference"])
    np.testing.assert_allclose(model.score(data["queries"]), want, atol=1e-5)
    _check_search(model, data["queries"], want)


# ---------------------------------------------------------------- large scores
def _large(data, scale):
    return {k: (v.astype(np.float64) * scale) for k, v in data.items()}


def test_large_scores_where_naive_exponential_overflows(data):
    big = _large(data, 7.0)  # |s| up to 49; beta * s up to ~4000, far beyond exp's range
    beta = 80.0
    naive = ref.inverted_softmax_naive(big["queries"], big["gallery"], big["reference"], beta)
    assert not np.isfinite(naive).all(), "the regime must overflow a naive exponential"
    want = ref.inverted_softmax_log_scores(big["queries"], big["gallery"], big["reference"], beta)
    model = dehub.QBNorm(beta=beta).fit(big["gallery"], big["reference"], normalize="none")
    got = model.score(big["queries"], normalize="none")
    assert np.isfinite(got).all()
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-2)
    s, ids = model.search(big["queries"], 5, normalize="none")
    np.testing.assert_array_equal(ids, np.argsort(-want, axis=1, kind="stable")[:, :5])

    banks = [big["reference"], big["gallery_bank"]]
    want2 = ref.dual_is_log_scores(big["queries"], big["gallery"], banks, [beta, 40.0])
    m2 = dehub.DBNorm(beta1=beta, beta2=40.0).fit(
        big["gallery"], big["reference"], gallery_bank=big["gallery_bank"], normalize="none"
    )
    np.testing.assert_allclose(m2.score(big["queries"], normalize="none"), want2, rtol=1e-5, atol=1e-2)

    soft = dehub.SoftNNN(k=16, temperature=0.01).fit(big["gallery"], big["reference"], normalize="none")
    want3 = ref.nnn_scores(
        big["queries"], big["gallery"], big["reference"], k=16, alpha=0.75, statistic="soft", temperature=0.01
    )
    np.testing.assert_allclose(soft.score(big["queries"], normalize="none"), want3, rtol=1e-5, atol=1e-3)


def test_large_scores_float32_inputs(data):
    big = {k: (v * np.float32(7.0)).astype(np.float32) for k, v in data.items()}
    want = ref.inverted_softmax_log_scores(big["queries"], big["gallery"], big["reference"], 80.0)
    model = dehub.QBNorm(beta=80.0).fit(big["gallery"], big["reference"], normalize="none")
    got = model.score(big["queries"], normalize="none")
    assert np.isfinite(got).all()
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=0.05)


def test_streamed_logsumexp_blocks_agree(data):
    """A tiny memory budget (many blocks on both sides) gives the same normalizers."""
    from dehub.engine.exact import plan_blocks
    from dehub.methods._stats import streamed_logsumexp

    g, r = data["gallery"], data["reference"]
    budget = 16 * 1024
    plan = plan_blocks(g.shape[0], r.shape[0], g.shape[1], 1, memory_budget=budget // 2, database_block=50)
    assert plan.query_block < g.shape[0]
    small = streamed_logsumexp(g, r, [5.0, 20.0], memory_budget=budget, bank_block=50)
    large = streamed_logsumexp(g, r, [5.0, 20.0], memory_budget=2**26)
    np.testing.assert_allclose(small, large, rtol=1e-6)
    model = dehub.QBNorm(beta=20.0).fit(g, r, memory_budget=4 * budget)
    np.testing.assert_allclose(model.lse_[0], large[:, 1], rtol=1e-6)
