"""``best`` in seconds: fits from shared score passes, gated offsets, the cost model, the ETA."""

from __future__ import annotations

import numpy as np
import pytest

from dehub.engine.exact import exact_search
from dehub.evaluation.best import select_best_member
from dehub.evaluation.metrics import first_relevant_rank_dense
from dehub.evaluation.sweep import AdditiveRanker, _Eta, sweep
from dehub.methods import METHODS, SharedScores, SweepShape, Work, get_method, get_tags
from dehub.methods._params import InvalidParameterError
from dehub.methods._stats import streamed_logsumexp

#: Every member whose fit reads only SharedScores passes, with a small grid each.
SHARED = {
    "nnn": {"k": [1, 4, 16], "alpha": [0.5, 1.0]},
    "robust_nnn": {"k": [8, 16], "alpha": [0.75], "trim": [0.125, 0.25]},
    "soft_nnn": {"k": [8], "alpha": [0.75], "temperature": [0.02, 0.1]},
    "csls": {"k": [1, 4, 10]},
    "qbnorm": {"beta": [5.0, 20.0]},
    "qbnorm_dis": {"beta": [10.0, 40.0], "k": [1, 3]},
    "dbnorm": {"beta1": [0.0, 10.0], "beta2": [0.0, 20.0]},
    "dbnorm_dis": {"beta1": [10.0], "beta2": [0.0, 10.0], "k": [1, 2]},
    "local_scaling": {"k": [5, 10], "variant": ["nicdm", "standard"]},
}


def _fitted_state(model) -> dict[str, np.ndarray]:
    out = {}
    for name in ("bias_", "topk_scores_", "topk_ids_", "lse_", "activated_", "neighbor_distances_"):
        value = getattr(model, name, None)
        if value is not None:
            out[name] = np.asarray(value)
    return out


@pytest.mark.parametrize("name", sorted(SHARED))
def test_fit_grid_from_shared_equals_fit_grid(bench, name):
    task, ref = bench.validation.task("a2b"), bench.reference_for("a2b")
    bank = bench.reference.b
    model = get_method(name)
    assert model.shared_scores_obstacle() is None
    kw = {"gallery_bank": bank} if get_tags(model).gallery_bank else {}
    # The largest reference top-k first (as best runs NNN first), then this member's.
    shared = SharedScores(task.gallery, ref, gallery_bank=bank)
    shared.reference_topk(64)
    own = [
        (p, _fitted_state(m))
        for p, m in model.fit_grid(task.gallery, ref, SHARED[name], normalize="none", **kw)
    ]
    from_shared = [(p, _fitted_state(m)) for p, m in model.fit_grid_from_shared(shared, SHARED[name])]
    assert [p for p, _ in from_shared] == [p for p, _ in own]
    for (_, a), (_, b) in zip(own, from_shared):
        assert a.keys() == b.keys() and a
        for key in a:
            if a[key].dtype.kind in "fc":
                np.testing.assert_allclose(b[key], a[key], rtol=1e-6, atol=1e-6, err_msg=key)
            else:
                np.testing.assert_array_equal(b[key], a[key], err_msg=key)
    # a second member reading the same passes computes nothing new
    before = list(shared.passes)
    list(model.fit_grid_from_shared(shared, SHARED[name]))
    assert shared.passes == before


def test_methods_that_cannot_say_why(bench):
    task, ref = bench.validation.task("a2b"), bench.reference_for("a2b")
    shared = SharedScores(task.gallery, ref)
    for name in ("sn", "invgc", "mutual_proximity", "dn", "renorm"):
        model = get_method(name)
        why = model.shared_scores_obstacle()
        assert why
        with pytest.raises(InvalidParameterError, match="cannot be fitted from shared scores"):
            model.fit_grid_from_shared(shared)
    nnn = get_method("nnn", precision="bf16")
    assert "precision='bf16'" in (nnn.shared_scores_obstacle() or "")


def test_gated_offsets_rank_as_the_dense_scores(bench):
    task, ref = bench.validation.task("a2b"), bench.reference_for("a2b")
    queries = np.asarray(task.queries)
    dense = queries @ np.asarray(task.gallery).T
    ranker = AdditiveRanker(dense, task.relevance)
    top1 = exact_search(queries, task.gallery, 1)[1][:, 0]
    rows = np.arange(queries.shape[0])
    n = 0
    for name in ("qbnorm_dis", "dbnorm_dis"):
        kw = {"gallery_bank": bench.reference.b} if name == "dbnorm_dis" else {}
        for _, fitted in get_method(name).fit_grid(task.gallery, ref, SHARED[name], normalize="none", **kw):
            group, biases = fitted.query_group_offsets(top1)
            ranked = ranker.ranks_many(biases)[group, rows]
            want = first_relevant_rank_dense(fitted.score(queries, normalize="none"), task.relevance, rows)
            assert np.mean(ranked == want) > 0.99  # float rounding of exact ties only
            n += 1
    assert n == 8
    assert get_method("qbnorm").fit(task.gallery, ref, normalize="none").query_group_offsets(top1) is None


def test_ranker_reads_back_a_bias_it_ranked_before(bench):
    task = bench.validation.task("a2b")
    dense = np.asarray(task.queries) @ np.asarray(task.gallery).T
    rng = np.random.default_rng(3)
    a, b = rng.normal(0, 0.05, size=(2, dense.shape[1])).astype(np.float32)
    fresh = AdditiveRanker(dense, task.relevance)
    want = np.stack([fresh.ranks(a), AdditiveRanker(dense, task.relevance).ranks(b)])
    got = fresh.ranks_many(np.stack([b, a, b]))
    np.testing.assert_array_equal(got, want[[1, 0, 1]])
    assert fresh.reused == 2  # a from the first call, the second b from the same call
    rows = np.arange(dense.shape[0])
    np.testing.assert_array_equal(want[0], first_relevant_rank_dense(dense - a, task.relevance, rows))


@pytest.mark.parametrize("which", ["bench", "popular"])
def test_best_with_shared_passes_equals_member_by_member_sweeps(request, which):
    data = request.getfixturevalue(which)
    task, ref = data.validation.task("a2b"), data.reference_for("a2b")
    bank = data.reference.b
    members = tuple(SHARED)
    fit_inputs = {m: {"gallery_bank": bank} for m in members if get_tags(METHODS[m]).gallery_bank}
    sel = select_best_member(
        task, ref, members=members, grids=SHARED, fit_inputs=fit_inputs, n_bootstrap=100, budget=None
    )
    assert not sel.skipped
    assert "reference x gallery scores" in sel.shared_passes and "reference top-16" in sel.shared_passes
    for m in ("plain", *members):
        alone = sweep(m, task, ref, grid=SHARED.get(m), normalize="none", fit_kwargs=fit_inputs.get(m))
        assert sel.sweeps[m]["best_params"] == alone.best_params, m
        assert sel.sweeps[m]["table"] == alone.table, m


def test_cost_model_from_shapes():
    shape = SweepShape(n_queries=2000, n_gallery=3497, n_reference=20000, n_bank=32973, dim=384)
    cost = {m: cls().sweep_work(shape) for m, cls in METHODS.items()}
    assert all(isinstance(w, Work) for m, w in cost.items() if m != "dsl")
    nnn = cost["nnn"].cost()
    ratio = {m: w.cost() / nnn for m, w in cost.items() if w is not None}
    # what the model must get right for best's budget of 3 (measured on this shape: SN ~37x,
    # MP ~4.3x, InvGC ~4.4x NNN's sweep; the NNN variants and CSLS below NNN)
    assert ratio["sn"] > 3 and ratio["dbsn"] > ratio["sn"]
    assert ratio["mutual_proximity"] > 3 and ratio["invgc"] > 3
    assert max(ratio[m] for m in ("robust_nnn", "soft_nnn", "csls", "dn", "plain", "renorm")) < 1
    # work grows with the grid and the shapes
    big = SweepShape(2000, 3497, 40000, 32973, 384)
    assert METHODS["sn"]().sweep_work(big).cost() > cost["sn"].cost()
    assert (
        METHODS["qbnorm"]().sweep_work(shape, {"beta": [5.0, 10.0]}).cost()
        < METHODS["qbnorm"]().sweep_work(shape).cost()
    )


def test_cost_model_skips_before_running_and_names_the_member(bench, monkeypatch):
    task, ref = bench.validation.task("a2b"), bench.reference_for("a2b")
    ran = []
    sn_grid = METHODS["sn"].fit_grid

    def spy(self, *args, **kwargs):
        ran.append(self.name)
        return sn_grid(self, *args, **kwargs)

    monkeypatch.setattr(METHODS["sn"], "fit_grid", spy)
    grids = {"nnn": {"k": [4], "alpha": [0.5]}, "sn": {"tau": [0.05], "n_iter": [10]}}
    sel = select_best_member(task, ref, members=("nnn", "sn", "csls"), grids=grids, n_bootstrap=50)
    assert "sn" in sel.skipped and not ran  # named, never started
    why = sel.skipped["sn"]
    assert "estimated from the shapes" in why and "x NNN's sweep" in why and "include=['sn']" in why
    assert sel.estimates["sn"] > 3 and sel.estimates["csls"] < 3 and "csls" in sel.sweeps
    assert "sn" in sel.summary_text() and "skipped" in sel.summary_text()
    sel = select_best_member(task, ref, members=("nnn", "sn"), grids=grids, n_bootstrap=50, include=("sn",))
    assert "sn" in sel.sweeps and ran == ["sn"]


class _Bar:
    bar_format = ""

    def __init__(self) -> None:
        self.n, self.postfix = 0, ""

    def update(self, n: int) -> None:
        self.n += n

    def set_postfix_str(self, s: str, refresh: bool = True) -> None:
        self.postfix = s


def test_eta_uses_the_rate_after_the_first_step():
    ticks = iter([0.0, 100.0, 101.0, 101.0])  # a 100 s shared first step, then 1 s per setting
    bar = _Bar()
    eta = _Eta(bar, total=12, clock=lambda: next(ticks))
    eta.done(1)
    assert bar.postfix == ""  # no rate yet
    eta.done(1)
    assert bar.postfix == "ETA 00:10"  # 10 settings left at 1 s each, not 100 s each
    assert bar.n == 2


@pytest.mark.parametrize("name", ["local_scaling", "mutual_proximity"])
def test_scores_from_similarity_equal_score(bench, name):
    task, ref = bench.validation.task("a2b"), bench.reference_for("a2b")
    queries = np.asarray(task.queries)
    model = get_method(name, k=10).fit(task.gallery, ref, normalize="none")
    got = model.scores_from_similarity(queries @ np.asarray(task.gallery).T)
    np.testing.assert_allclose(got, model.score(queries, normalize="none"), rtol=1e-6, atol=1e-6)
    plain = get_method("plain").fit(task.gallery, ref, normalize="none")
    assert plain.scores_from_similarity(queries @ np.asarray(task.gallery).T) is None


@pytest.mark.parametrize("name", ["local_scaling", "mutual_proximity"])
def test_scores_from_similarity_with_a_cache_are_the_same_bits(bench, name):
    """One cache per block of similarities, kept over a whole grid (as the sweep does):
    every setting's scores are bit-equal to the ones computed without it."""
    task, ref = bench.validation.task("a2b"), bench.reference_for("a2b")
    queries = np.asarray(task.queries)
    similarity = queries @ np.asarray(task.gallery).T
    grid = {"k": [3, 10, 5], "variant": ["nicdm", "standard"]} if name == "local_scaling" else {"k": [3, 10]}
    cache: dict = {}
    n = 0
    for _, fitted in get_method(name).fit_grid(task.gallery, ref, grid, normalize="none"):
        want = fitted.scores_from_similarity(similarity)
        np.testing.assert_array_equal(fitted.scores_from_similarity(similarity, cache=cache), want)
        np.testing.assert_allclose(want, fitted.score(queries, normalize="none"), rtol=1e-6, atol=1e-6)
        n += 1
    assert n == len(grid["k"]) * len(grid.get("variant", [0])) and "dist" in cache
    # a cache handed another block starts over instead of serving the old distances
    half = similarity[:5]
    np.testing.assert_array_equal(fitted.scores_from_similarity(half, cache=cache), want[:5])


def test_shared_logsumexp_with_doubled_temperatures_equals_the_streamed_one(bench):
    task, ref = bench.validation.task("a2b"), bench.reference_for("a2b")
    betas = [80.0, 5.0, 10.0, 15.0, 20.0, 30.0, 40.0]  # doublings (squared terms) and others
    shared = SharedScores(task.gallery, ref)
    got = shared.logsumexp("reference", betas)
    assert "reference x gallery scores" in shared.passes  # the dense path
    want = streamed_logsumexp(np.asarray(task.gallery), np.asarray(ref), betas, memory_budget=1 << 20)
    np.testing.assert_allclose(got, want, rtol=1e-7, atol=2e-6)
    tiny = SharedScores(task.gallery, ref, memory_budget=1 << 16)  # the streamed path: the fit's own
    same = streamed_logsumexp(np.asarray(task.gallery), np.asarray(ref), betas, memory_budget=1 << 16)
    np.testing.assert_array_equal(tiny.logsumexp("reference", betas), same)
    assert "reference x gallery scores" not in tiny.passes
