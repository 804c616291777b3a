import numpy as np
import pytest

from dehub.studies.audit import (
    AdmissionGate,
    audit_gallery,
    gate_new_items,
    kth_scores,
    optimize_hubs,
    plant_cluster_hubs,
    robust_z,
    would_be_occurrence,
)

from .conftest import unit


def test_robust_z_hand_computed_and_degenerate():
    z = robust_z(np.array([1.0, 2.0, 3.0, 4.0, 100.0]))
    # median 3, MAD = median(|x - 3|) = median(2, 1, 0, 1, 97) = 1
    np.testing.assert_allclose(z, (np.array([1, 2, 3, 4, 100]) - 3) / 1.4826)
    assert np.all(robust_z(np.full(5, 7.0)) == 0)
    # MAD 0 but not constant: the standard deviation is the scale
    x = np.array([0.0, 0.0, 0.0, 0.0, 10.0])
    np.testing.assert_allclose(robust_z(x), x / x.std())


def test_obvious_hub_is_flagged_and_named(clustered):
    gallery, reference = clustered
    hub = unit(reference.mean(axis=0, keepdims=True))  # the centroid: near every query
    g = np.concatenate([gallery, hub])
    texts = [f"item {i}" for i in range(g.shape[0])]
    res = audit_gallery(g, reference, k=5, method="nnn", z_threshold=6.0, top=3, texts=texts)
    assert res["suspects"][0]["row"] == g.shape[0] - 1
    assert res["suspects"][0]["text"] == f"item {g.shape[0] - 1}"
    assert res["suspects"][0]["flagged"]
    assert g.shape[0] - 1 in res["flagged_rows"]
    s = res["suspects"][0]
    # NNN demotes it: fewer wins after the correction, and it has the largest bias
    assert s["N_after"] < s["N_before"]
    assert s["bias_rank"] == 1


def test_audit_with_sampled_live_queries(clustered):
    gallery, reference = clustered
    res = audit_gallery(gallery, reference[:1000], queries=reference[1000:], n_sample=500, k=5)
    assert res["n_live_queries"] == 500
    assert res["expected_N"] == 5 * 1500 / gallery.shape[0]


def test_would_be_occurrence_matches_insertion(clustered):
    gallery, reference = clustered
    rng = np.random.default_rng(1)
    items = unit(rng.standard_normal((5, gallery.shape[1])))
    t = kth_scores(gallery, reference, 5)
    counts = would_be_occurrence(items, reference, t)
    for i, x in enumerate(items):
        g = np.concatenate([gallery, x[None]])
        top = np.argsort(-(reference @ g.T), axis=1, kind="stable")[:, :5]
        assert counts[i] == np.count_nonzero(top == g.shape[0] - 1)


def test_gate_flags_hub_and_admits_ordinary_items(clustered):
    gallery, reference = clustered
    hub = unit(reference.mean(axis=0, keepdims=True))
    ordinary = gallery[:50] + 0.01
    res = gate_new_items(gallery, reference, np.concatenate([hub, unit(ordinary)]), k=5)
    assert res["flag"][0]
    assert res["flag"][1:].mean() < 0.1
    gate = AdmissionGate(k=5).fit(gallery, reference)
    assert gate.score(hub)["N"][0] > 5 * np.median(gate.gallery_N_)


def test_optimized_hubs_win_more_queries_than_cluster_means(clustered):
    gallery, reference = clustered
    hubs = plant_cluster_hubs(reference, 4, 30, seed=0)
    t = kth_scores(gallery, reference, 5)
    opt = optimize_hubs(hubs, reference, t, steps=40)
    np.testing.assert_allclose(np.linalg.norm(opt, axis=1), 1, atol=1e-5)
    assert would_be_occurrence(opt, reference, t).sum() >= would_be_occurrence(hubs, reference, t).sum()


def test_audit_gives_hub_precision_where_relevance_is_known():
    """Popular right answers: the audit's top hubs are mostly right, and it says so."""
    from dehub import Relevance
    from dehub.studies.audit import audit_gallery

    rng = np.random.default_rng(5)
    dim = 24
    items = rng.normal(size=(120, dim))
    items /= np.linalg.norm(items, axis=1, keepdims=True)
    hot = rng.random(400) < 0.5
    target = np.where(hot, rng.integers(0, 3, 400), rng.integers(3, 120, 400))
    q = items[target] + 0.5 * rng.normal(size=(400, dim)) / np.sqrt(dim)
    q = (q / np.linalg.norm(q, axis=1, keepdims=True)).astype(np.float32)
    rel = Relevance.from_pairs(np.arange(400), target, 400, 120)
    ref = q[:100]
    res = audit_gallery(items.astype(np.float32), ref, queries=q, relevance=rel, top=5)
    hp = res["hub_precision"]
    assert hp["mostly_right"] and {h["row"] for h in hp["hubs"][:3]} == {0, 1, 2}
    assert "mostly right answers" in res["finding"]
    lead = next(s for s in res["suspects"] if s["row"] == hp["hubs"][0]["row"])
    assert lead["wins"] == hp["hubs"][0]["wins"] and lead["right"] == hp["hubs"][0]["right"]
    # wins and rights counted by hand
    top1 = np.argmax(q @ items.astype(np.float32).T, axis=1)
    r0 = hp["hubs"][0]["row"]
    assert hp["hubs"][0]["wins"] == int(np.sum(top1 == r0))
    assert hp["hubs"][0]["right"] == int(np.sum((top1 == r0) & (target == r0)))
    with pytest.raises(ValueError, match="pass queries too"):
        audit_gallery(items.astype(np.float32), ref, relevance=rel)
