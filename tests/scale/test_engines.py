"""Approximate top-k engines: contract, oracle agreement, recall floors, bias report."""

from __future__ import annotations

import sys

import numpy as np
import pytest
from scale_helpers import needs_faiss

import dehub
from dehub.engine import (
    EngineParams,
    build_reference_index,
    choose_engine,
    exact_search,
    import_faiss,
    topk_search,
)
from dehub.evaluation.engine_eval import evaluate_engine


def _recall(ids, true_ids) -> float:
    k = true_ids.shape[1]
    return float(np.mean([len(set(a) & set(b)) / k for a, b in zip(ids, true_ids)]))


def _ref_ivf(queries, database, centroids, assign, nprobe, k):
    """Slow IVF straight from the definition: scan the nprobe best lists of each query."""
    out = []
    for q in np.asarray(queries, dtype=np.float64):
        lists = np.argsort(-(centroids @ q), kind="stable")[:nprobe]
        rows = np.flatnonzero(np.isin(assign, lists))
        s = np.asarray(database, dtype=np.float32)[rows] @ q.astype(np.float32)
        order = np.lexsort((rows, -s))[:k]
        out.append(rows[order])
    return np.array(out)


def _check_contract(v, i, n, k):
    assert v.shape == i.shape == (n, k)
    assert v.dtype == np.float32 and i.dtype == np.int64
    assert np.all(v[:, :-1] >= v[:, 1:])


def test_ivf_matches_slow_reference(clustered_data):
    g, r = clustered_data["gallery"][:80], clustered_data["reference"]
    idx = build_reference_index(r, engine="ivf", engine_params={"nlist": 32, "nprobe": 3})
    v, i = idx.search(g, 10)
    _check_contract(v, i, 80, 10)
    assign = np.empty(r.shape[0], dtype=np.int64)
    for lst in range(32):
        assign[idx.list_rows[idx.list_bounds[lst] : idx.list_bounds[lst + 1]]] = lst
    np.testing.assert_array_equal(i, _ref_ivf(g, r, idx.centroids, assign, 3, 10))
    np.testing.assert_allclose(v, np.take_along_axis(g @ r.T, i, axis=1), atol=1e-5)


def test_ivf_probing_every_list_is_exact(clustered_data):
    g, r = clustered_data["gallery"], clustered_data["reference"]
    ev, ei = exact_search(g, r, 12)
    v, i = topk_search(g, r, 12, engine="ivf", engine_params={"nlist": 16, "nprobe": 16})
    np.testing.assert_array_equal(i, ei)
    np.testing.assert_allclose(v, ev, atol=1e-6)


def test_padding_when_k_exceeds_candidates(clustered_data):
    r = clustered_data["reference"][:100]
    v, i = topk_search(
        clustered_data["queries"], r, 150, engine="ivf", engine_params={"nlist": 2, "nprobe": 2}
    )
    _check_contract(v, i, 50, 150)
    assert np.all(i[:, 100:] == -1) and np.all(np.isneginf(v[:, 100:]))
    assert np.all(np.sort(i[:, :100], axis=1) == np.arange(100))


def test_rows_short_of_k_are_completed_exactly(clustered_data):
    # nprobe=1 over many tiny lists (~23 rows for k=40): most probed lists hold fewer
    # than k rows, which would pad the top-k with -inf and give NNN an infinite bias.
    g, r = clustered_data["queries"], clustered_data["reference"]
    index = build_reference_index(r, engine="ivf", engine_params={"nlist": 256, "nprobe": 1})
    res = index.search_detailed(g, 40)
    v, i = res.scores, res.ids
    assert res.n_exact_fallback > 0
    assert np.all(i >= 0) and np.all(np.isfinite(v))
    ev, ei = exact_search(g, r, 40)
    short = np.flatnonzero((v == ev).all(axis=1))
    assert short.size >= res.n_exact_fallback
    model = dehub.NNN(k=40, engine="ivf", engine_params={"nlist": 256, "nprobe": 1}).fit(g, r)
    assert np.all(np.isfinite(model.bias_))


@pytest.mark.parametrize(
    ("engine", "params", "floor"),
    [
        ("ivf", {"nprobe": 8}, 0.9),
        pytest.param("ivf-sq8", {"nprobe": 8}, 0.85, marks=needs_faiss),
        pytest.param("ivf-sq8", {"nprobe": 8, "rerank": 40}, 0.9, marks=needs_faiss),
        pytest.param("hnsw", {"M": 16, "ef_search": 64}, 0.95, marks=needs_faiss),
    ],
)
def test_recall_floor(clustered_data, engine, params, floor):
    g, r = clustered_data["gallery"], clustered_data["reference"]
    _, ei = exact_search(g, r, 16)
    v, i = topk_search(g, r, 16, engine=engine, engine_params=params)
    _check_contract(v, i, g.shape[0], 16)
    assert _recall(i, ei) >= floor
    # scores are the true inner products of the returned ids (rerank / flat storage)
    if engine != "ivf-sq8" or "rerank" in params:
        np.testing.assert_allclose(v, np.take_along_axis(g @ r.T, i, axis=1), atol=1e-5)


@needs_faiss
def test_rerank_makes_sq8_scores_exact(clustered_data):
    g, r = clustered_data["gallery"], clustered_data["reference"]
    true = g @ r.T
    v0, i0 = topk_search(g, r, 16, engine="ivf-sq8")
    v1, i1 = topk_search(g, r, 16, engine="ivf-sq8", engine_params={"rerank": 64})
    err0 = np.abs(v0 - np.take_along_axis(true, i0, axis=1)).max()
    err1 = np.abs(v1 - np.take_along_axis(true, i1, axis=1)).max()
    assert err1 < 1e-5 < err0


def test_evaluate_engine_report(clustered_data):
    g, r = clustered_data["gallery"], clustered_data["reference"]
    rep = evaluate_engine(g, r, 16, engine="ivf", alpha=0.75, sample=200)
    assert rep.n_sample == 200 and rep.engine == "ivf" and rep.k == 16
    # recompute from the definitions on the same sample
    rows = np.sort(np.random.default_rng(0).choice(600, 200, replace=False))
    ev, ei = exact_search(g[rows], r, 16)
    idx = build_reference_index(r, engine="ivf")
    av, ai = idx.search(g[rows], 16)
    assert rep.recall == pytest.approx(_recall(ai, ei))
    err = np.abs(0.75 * av.mean(axis=1, dtype=np.float64) - 0.75 * ev.mean(axis=1, dtype=np.float64))
    assert rep.bias_mae == pytest.approx(err.mean(), rel=1e-4)
    assert rep.bias_max_error == pytest.approx(err.max(), rel=1e-4)
    assert 0 < rep.recall <= 1 and rep.bias_rel_error < 0.05


def test_nnn_engine_parameter(clustered_data):
    g, r, q = clustered_data["gallery"], clustered_data["reference"], clustered_data["queries"]
    exact = dehub.NNN(k=16, alpha=0.75).fit(g, r)
    approx = dehub.NNN(k=16, alpha=0.75, engine="ivf", engine_params={"nprobe": 16}).fit(g, r)
    assert approx.topk_scores_.shape == exact.topk_scores_.shape == (600, 16)
    assert approx.topk_ids_.dtype == np.int64
    assert np.abs(approx.bias_ - exact.bias_).max() < 0.01
    assert np.mean(approx.search(q, 1)[1] == exact.search(q, 1)[1]) >= 0.95
    assert approx.get_params()["engine"] == "ivf"


def test_index_roundtrip_keeps_engine(clustered_data, tmp_path):
    g, r = clustered_data["gallery"], clustered_data["reference"]
    idx = dehub.Index.build(g, r, k=8, engine="ivf", engine_params={"nprobe": 4})
    idx.save(tmp_path / "a.dehub")
    back = dehub.Index.load(tmp_path / "a.dehub")
    assert back.model.engine == "ivf" and back.model.engine_params == {"nprobe": 4}
    np.testing.assert_array_equal(back.model.topk_ids_, idx.model.topk_ids_)


def test_choose_engine_and_params_errors():
    assert choose_engine(1000, 10_000, 512) == "exact"
    assert choose_engine(1_000_000, 1_000_000, 512) == "ivf"
    assert choose_engine(1_000_000, 10_000_000, 512) == "ivf-sq8"
    assert EngineParams().resolved_nlist(1_000_000) == 2048
    with pytest.raises(ValueError, match="unknown engine_params"):
        EngineParams.coerce({"nprob": 3})
    with pytest.raises(ValueError, match="engine must be one of"):
        topk_search(np.ones((2, 4), np.float32), np.ones((5, 4), np.float32), 2, engine="ivfpq")
    with pytest.raises(ValueError, match="nlist must be"):
        EngineParams(nlist=50).resolved_nlist(10)


def test_missing_faiss_error_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "faiss", None)
    with pytest.raises(ImportError, match=r"pip install dehub\[faiss\]"):
        import_faiss()


@pytest.mark.parametrize(
    ("engine", "built", "override"),
    [
        ("ivf", {"nprobe": 2}, {"nprobe": 8}),
        pytest.param("ivf-sq8", {"nprobe": 2}, {"nprobe": 8}, marks=needs_faiss),
        pytest.param("hnsw", {"M": 16, "ef_search": 16}, {"ef_search": 96}, marks=needs_faiss),
    ],
)
def test_search_is_stateless_and_takes_settings_per_call(clustered_data, engine, built, override):
    g, r = clustered_data["gallery"][:200], clustered_data["reference"]
    idx = build_reference_index(r, engine=engine, engine_params=built)
    other = build_reference_index(r, engine=engine, engine_params=built | override)
    before = idx.search(g, 10)
    state = (idx.params, getattr(getattr(idx, "faiss_index", None), "nprobe", None))
    with_override = idx.search(g, 10, **override)
    assert (idx.params, getattr(getattr(idx, "faiss_index", None), "nprobe", None)) == state
    if engine != "hnsw":  # same centroids and lists: the override equals building with it
        np.testing.assert_array_equal(with_override[1], other.search(g, 10)[1])
    again = idx.search(g, 10)
    np.testing.assert_array_equal(before[1], again[1])
    np.testing.assert_array_equal(before[0], again[0])


def test_evaluate_engine_lives_in_evaluation_only():
    """evaluate_engine is evaluation (a layer above the engine): no re-export pulls it down."""
    import dehub.evaluation.engine_eval

    assert dehub.evaluation.engine_eval.evaluate_engine is evaluate_engine
    assert not hasattr(dehub.engine, "evaluate_engine") and "evaluate_engine" not in dehub.__all__


def test_one_nlist_nprobe_default():
    from dehub.engine import DEFAULT_NPROBE, default_nlist

    assert EngineParams().nprobe is None and EngineParams().resolved_nprobe() == DEFAULT_NPROBE
    for n in (1, 50, 1000, 10**6):
        assert EngineParams().resolved_nlist(n) == default_nlist(n)
