import numpy as np
import pytest

from dehub.methods import NNN, RobustNNN
from dehub.studies.poisoning import (
    cap_influence,
    filter_near_duplicates,
    filter_outliers,
    poison_queries,
    refit_with_poison,
)

from .conftest import unit


def _query_near(gallery, target, rng, noise=0.3):
    return unit(
        (gallery[target] + noise * rng.standard_normal(gallery.shape[1]) / np.sqrt(gallery.shape[1]))[None]
    )


def test_budget_zero_changes_nothing(clustered):
    gallery, reference = clustered
    pois = poison_queries(gallery[:3], 0)
    assert pois.shape == (0, gallery.shape[1])
    clean = NNN(k=16, alpha=0.75).fit(gallery, reference, normalize="none")
    model = refit_with_poison(clean, "nnn", gallery, reference, pois)
    np.testing.assert_array_equal(model.bias_, clean.bias_)


def test_poison_queries_are_near_their_anchor_and_seeded(clustered):
    gallery, _ = clustered
    p = poison_queries(gallery[:2], 5, spread=0.5, seed=3)
    assert p.shape == (10, gallery.shape[1])
    cos = np.sum(p[:5] * gallery[0], axis=1)
    assert np.all(cos > 0.8)
    np.testing.assert_array_equal(p, poison_queries(gallery[:2], 5, spread=0.5, seed=3))


def test_incremental_poisoning_equals_a_refit(clustered):
    gallery, reference = clustered
    pois = poison_queries(gallery[[5]], 8, seed=1)
    clean = NNN(k=16, alpha=0.75).fit(gallery, reference, normalize="none")
    grown = refit_with_poison(clean, "nnn", gallery, reference, pois)
    full = NNN(k=16, alpha=0.75).fit(gallery, np.concatenate([reference, pois]), normalize="none")
    np.testing.assert_allclose(grown.bias_, full.bias_, atol=1e-6)


def _top1_target(gallery, reference, rng):
    """A query (not in the bank) and the item NNN ranks first for it, by a small margin."""
    model = NNN(k=16, alpha=0.75).fit(gallery, reference, normalize="none")
    queries = unit(gallery[rng.integers(0, gallery.shape[0], 200)] + 0.15 * rng.standard_normal((200, 32)))
    sc = np.sort(model.score(queries, normalize="none"), axis=1)
    i = int(np.argmin(sc[:, -1] - sc[:, -2]))
    q = queries[[i]]
    return int(np.argmax(model.score(q, normalize="none"))), q


def test_large_budget_demotes_target_under_nnn(clustered):
    gallery, reference = clustered
    rng = np.random.default_rng(0)
    t, q = _top1_target(gallery, reference, rng)
    clean = NNN(k=16, alpha=0.75).fit(gallery, reference, normalize="none")
    model = refit_with_poison(clean, "nnn", gallery, reference, poison_queries(gallery[[t]], 32, spread=0.2))
    assert int(np.argmax(model.score(q, normalize="none"))) != t
    assert model.bias_[t] > clean.bias_[t] + 0.1


@pytest.mark.parametrize("m", [1, 2, 3, 4])
def test_trimmed_variant_resists_a_budget_below_its_trim(clustered, m):
    gallery, reference = clustered
    rng = np.random.default_rng(0)
    t, q = _top1_target(gallery, reference, rng)
    pois = poison_queries(gallery[[t]], m, spread=0.2)
    kw = dict(k=16, alpha=0.75)
    robust = RobustNNN(statistic="trimmed", trim=0.25, **kw)  # cuts 4 scores at each end
    r_clean = robust.fit(gallery, reference, normalize="none")
    r_pois = refit_with_poison(r_clean, "nnn_trimmed", gallery, reference, pois)
    n_clean = NNN(**kw).fit(gallery, reference, normalize="none")
    n_pois = refit_with_poison(n_clean, "nnn", gallery, reference, pois)
    shift_robust = r_pois.bias_[t] - r_clean.bias_[t]
    shift_nnn = n_pois.bias_[t] - n_clean.bias_[t]
    # the m poisons are cut: the window only slides by m places of the clean list
    top = np.sort(reference @ gallery[t])[::-1][:16]
    bound = 0.75 * (top[4 - m : 12 - m].mean() - top[4:12].mean())
    assert shift_robust <= bound + 1e-6
    assert shift_robust < shift_nnn / 2


def test_influence_cap_bounds_the_bias_shift(clustered):
    gallery, reference = clustered
    pois = poison_queries(gallery[[0]], 32, spread=0.2)
    clean = NNN(k=16, alpha=0.75).fit(gallery, reference, normalize="none")
    cap = float(np.quantile(clean.topk_scores_[:, 0], 0.95))
    capped = cap_influence(refit_with_poison(clean, "nnn", gallery, reference, pois), cap=cap)
    assert capped.bias_[0] <= 0.75 * cap + 1e-6


def test_filters_drop_poisons_and_keep_most_of_the_bank(clustered):
    gallery, reference = clustered
    pois = poison_queries(gallery[[0, 1]], 16, spread=0.2)
    bank = np.concatenate([reference, pois])
    keep = filter_near_duplicates(gallery, bank, threshold=0.9)
    assert np.count_nonzero(keep >= reference.shape[0]) <= 2  # one per anchor survives
    assert np.count_nonzero(keep < reference.shape[0]) > 0.95 * reference.shape[0]
    keep_o = filter_outliers(gallery, bank, z_threshold=4.0)
    assert np.count_nonzero(keep_o >= reference.shape[0]) == 0
    assert np.count_nonzero(keep_o < reference.shape[0]) > 0.95 * reference.shape[0]
