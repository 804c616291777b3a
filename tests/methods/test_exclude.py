"""Per-query excluded ids: asking for k + m and filtering equals filtering the whole ranking."""

from __future__ import annotations

import numpy as np
import pytest

import dehub
from dehub.methods._exclude import check_excluded


def unit(x):
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


@pytest.mark.parametrize("name", ["plain", "nnn", "csls", "qbnorm_dis", "mutual_proximity"])
def test_excluding_equals_post_filtering_the_full_list(name):
    rng = np.random.default_rng(4)
    g, r, q = (
        unit(rng.normal(size=(60, 12))),
        unit(rng.normal(size=(200, 12))),
        unit(rng.normal(size=(25, 12))),
    )
    model = dehub.methods.get_method(name).fit(g, r)
    full_s, full_ids = model.search(q, 60)  # the complete ranking
    exclude = [rng.choice(60, size=int(rng.integers(0, 8)), replace=False) for _ in range(25)]
    exclude[0] = full_ids[0, :5]  # the top 5 themselves
    exclude[1] = np.array([full_ids[1, 0], full_ids[1, 0]])  # a repeated id
    for k in (1, 7, 58, 60):
        s, ids = model.search_excluding(q, k, exclude=exclude)
        assert s.shape == ids.shape == (25, k) and s.dtype == np.float32 and ids.dtype == np.int64
        for i in range(25):
            keep = ~np.isin(full_ids[i], exclude[i])
            want_ids, want_s = full_ids[i][keep][:k], full_s[i][keep][:k]
            n = want_ids.size
            np.testing.assert_array_equal(ids[i, :n], want_ids)
            np.testing.assert_array_equal(s[i, :n], want_s)
            assert np.all(ids[i, n:] == -1) and np.all(np.isneginf(s[i, n:]))


def test_padded_array_form_and_errors():
    assert [e.tolist() for e in check_excluded(np.array([[3, -1], [-1, -1]]), 2)] == [[3], []]
    with pytest.raises(ValueError, match="one entry per query"):
        check_excluded([[1]], 2)
    with pytest.raises(ValueError, match="integer gallery ids"):
        check_excluded([["a"]], 1)


def test_search_excluding_checks_ids_against_the_gallery():
    rng = np.random.default_rng(5)
    g, r, q = unit(rng.normal(size=(30, 8))), unit(rng.normal(size=(50, 8))), unit(rng.normal(size=(4, 8)))
    model = dehub.methods.get_method("nnn").fit(g, r)
    for bad, received in (
        ([[1], [30], [], [2]], "received 30 (query 1)"),
        ([[-3], [], [], []], "received -3"),
    ):
        with pytest.raises(ValueError, match="outside \\[0, 30\\)") as err:
            model.search_excluding(q, 5, exclude=bad)
        assert "expected ids of the 30 gallery rows" in str(err.value) and received in str(err.value)
    with pytest.raises(ValueError, match="integer gallery ids"):
        model.search_excluding(q, 5, exclude=[[1.5], [], [], []])
    with pytest.raises(ValueError, match="integer gallery ids"):
        model.search_excluding(q, 5, exclude=np.array([[1.0, -1.0]] * 4))
    with pytest.raises(ValueError, match="received -2"):  # only -1 pads a 2-D array
        model.search_excluding(q, 5, exclude=np.array([[1, -2]] * 4))


def _filter_loop(scores, ids, excluded, k):
    """The obvious per-query loop (the reference of the array code)."""
    out_s = np.full((ids.shape[0], k), -np.inf, dtype=np.float32)
    out_i = np.full((ids.shape[0], k), -1, dtype=np.int64)
    for i in range(ids.shape[0]):
        kept = [(s, j) for s, j in zip(scores[i], ids[i]) if j >= 0 and j not in set(excluded[i].tolist())][
            :k
        ]
        for t, (s, j) in enumerate(kept):
            out_s[i, t], out_i[i, t] = s, j
    return out_s, out_i


def test_array_filter_equals_the_loop_and_checked_rows_pass_through():
    from dehub.methods._exclude import filter_excluded

    rng = np.random.default_rng(6)
    n, width, n_gallery = 200, 40, 500
    ids = np.stack([rng.choice(n_gallery, width, replace=False) for _ in range(n)])
    ids[::7, -5:] = -1  # padded rows
    scores = -np.sort(rng.random((n, width)), axis=1).astype(np.float32)
    scores[ids < 0] = -np.inf
    raw = [rng.choice(n_gallery, int(rng.integers(0, 12))) for _ in range(n)]  # repeats allowed
    raw[3] = ids[3, :10]
    checked = check_excluded(raw, n, n_gallery)
    assert check_excluded(checked, n, n_gallery) is checked  # checked once
    assert [r.tolist() for r in checked] == [np.asarray(r).tolist() for r in raw]  # a list of rows, as before
    assert checked[-1].tolist() == raw[-1].tolist() and len(checked) == n
    with pytest.raises(IndexError):
        checked[n]
    assert checked.width() == max(np.unique(r).size for r in raw)
    for k in (1, 10, 40):
        got = filter_excluded(scores, ids, checked, k)
        want = _filter_loop(scores, ids, checked, k)
        np.testing.assert_array_equal(got[1], want[1])
        np.testing.assert_array_equal(got[0], want[0])
    dense = rng.random((5, n_gallery))
    rows = np.array([3, 0, 3, 199, 17])
    masked = checked.mask_scores(dense.copy(), rows)
    for p, r in enumerate(rows):
        expect = dense[p].copy()
        expect[raw[r]] = -np.inf
        np.testing.assert_array_equal(masked[p], expect)
