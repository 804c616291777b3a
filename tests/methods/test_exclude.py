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
