import numpy as np
import pytest

from dehub.studies.drift import DriftMonitor, false_alarm_rate, ks_two_sample
from dehub.studies.fairness import bias_at_k
from dehub.studies.runner import check_study_names

from .conftest import unit


def test_bias_at_k_hand_computed():
    attribute = np.array(["m", "f", "m", "x", "f", "m"])
    ids = np.array(
        [
            [0, 2, 5, 1],  # m m m | f  -> K=3: (3 - 0)/3 = 1
            [1, 3, 4, 0],  # f x f | m  -> K=3: (0 - 2)/3
            [3, -1, 0, 1],  # x pad m | -> K=3: (1 - 0)/3
        ]
    )
    np.testing.assert_allclose(bias_at_k(ids, attribute, 3, "m", "f"), [1.0, -2 / 3, 1 / 3])
    np.testing.assert_allclose(bias_at_k(ids, attribute, 4, "m", "f"), [0.5, -0.25, 0.0])
    with pytest.raises(ValueError, match="k"):
        bias_at_k(ids, attribute, 5, "m", "f")


def test_own_ks_matches_scipy():
    pytest.importorskip("scipy")
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=300), rng.normal(0.2, 1, size=250)
    d0, p0 = ks_two_sample(x, y)
    d1, p1 = ks_two_sample(x, y, use_scipy=False)
    assert d0 == pytest.approx(d1)
    assert p1 == pytest.approx(p0, rel=0.1, abs=2e-3)


@pytest.mark.parametrize("use_own", [False, True])
def test_drift_false_alarm_rate_near_nominal(use_own, monkeypatch):
    if use_own:
        import dehub.studies.drift as drift

        real = drift.ks_two_sample
        monkeypatch.setattr(drift, "ks_two_sample", lambda x, y: real(x, y, use_scipy=False))
    rng = np.random.default_rng(0)
    pool = unit(rng.standard_normal((2000, 16)))
    fa = false_alarm_rate(pool, n_trials=200, n_reference=300, n_live=100, level=0.05, seed=1)
    # nominal 0.05; 200 trials: a binomial 95% band is about 0.02-0.08
    assert 0.015 <= fa["rate"] <= 0.09, fa


def test_drift_warns_when_queries_are_far_from_the_bank():
    rng = np.random.default_rng(0)
    centres = unit(rng.standard_normal((10, 16)))
    bank = unit(centres[rng.integers(0, 10, 2000)] + 0.3 * rng.standard_normal((2000, 16)) / 4)
    mon = DriftMonitor(seed=0).fit(bank)
    same = unit(centres[rng.integers(0, 10, 500)] + 0.3 * rng.standard_normal((500, 16)) / 4)
    far = unit(rng.standard_normal((500, 16)))
    assert not mon.check(same)["out_of_distribution"]
    r = mon.check(far)
    assert r["out_of_distribution"] and "0.25-0.5" in r["advice"]


def test_study_names_checked():
    assert check_study_names(["audit", "drift", "audit"]) == ["audit", "drift"]
    assert check_study_names(["robustness", "shift"]) == ["robustness", "shift"]
    with pytest.raises(ValueError, match="unknown studies"):
        check_study_names(["nope"])


def test_perturbations_are_deterministic_from_the_seed():
    from dehub.studies.robustness import perturb_texts

    texts = ["a domesticated carnivorous mammal that barks", "the capital city of a country", "x"]
    for kind in ("typo", "drop", "case"):
        a = perturb_texts(texts, kind, seed=3)
        assert a == perturb_texts(texts, kind, seed=3)
        # a text's perturbation does not depend on the other texts
        assert perturb_texts(["something else entirely", *texts[1:]], kind, seed=3)[1:] == a[1:]
        assert perturb_texts(texts, kind, seed=3, rate=0.0) == texts
    assert perturb_texts(texts, "typo", seed=3, rate=1.0) != perturb_texts(texts, "typo", seed=4, rate=1.0)
    assert all(perturb_texts(texts, "drop", seed=s, rate=1.0)[0] for s in range(5))  # a word stays
    with pytest.raises(ValueError, match="unknown perturbation"):
        perturb_texts(texts, "nope")


def test_hierarchy_groups_are_disjoint_at_each_level():
    from dehub.studies.shift import group_of, hierarchy_split, load_hierarchy

    anc = load_hierarchy()
    level = 4
    chosen = hierarchy_split(anc["reference"], level, seed=0)
    # targets lie under chosen parents, which lie under chosen grandparents
    ref = anc["reference"]
    for d in (level, level - 1):
        rows = np.isin(ref[:, d], list(chosen[d]))
        assert np.isin(ref[rows, d - 1], list(chosen[d - 1])).all()
    for split, a in anc.items():
        g = group_of(a, chosen, level)
        same, sib, cou, unr = (g == i for i in range(4))
        assert np.isin(a[same, level], list(chosen[level])).all()
        assert not np.isin(a[sib | cou | unr, level], list(chosen[level])).any()
        assert np.isin(a[sib, level - 1], list(chosen[level - 1])).all()
        assert not np.isin(a[cou | unr, level - 1], list(chosen[level - 1])).any()
        assert np.isin(a[cou, level - 2], list(chosen[level - 2])).all()
        assert not np.isin(a[unr, level - 2], list(chosen[level - 2])).any()
        assert (g[a[:, level] < 0] == -1).all()
        assert same.sum() > 0 and unr.sum() > 0, split
    # the splits share no synset, so no row is in two splits' banks or query sets
    leaves = [set(a[np.arange(a.shape[0]), (a >= 0).sum(1) - 1].tolist()) for a in anc.values()]
    assert not (leaves[0] & leaves[1]) and not (leaves[0] & leaves[2]) and not (leaves[1] & leaves[2])
