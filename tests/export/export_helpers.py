"""Helpers shared by the export tests (importable: pytest puts tests/export on sys.path)."""

from __future__ import annotations

import numpy as np


def assert_same_ranking(ids, exact, atol=2e-5):
    """ids equal dehub's exact top-10, up to reorderings of scores equal within ``atol``."""
    ref_scores, ref_ids, dense, by_id = exact
    ids = np.asarray(ids, dtype=np.int64)
    assert ids.shape == ref_ids.shape, (ids.shape, ref_ids.shape)
    rows, cols = np.nonzero(ids != ref_ids)
    for r, c in zip(rows, cols):
        got = dense[r, by_id[int(ids[r, c])]]
        assert abs(got - ref_scores[r, c]) <= atol, (r, c, got, ref_scores[r, c])
    return int(rows.size)


def recall_at_10(ids, ref_ids) -> float:
    return float(np.mean([len(set(a.tolist()) & set(b.tolist())) / 10 for a, b in zip(ids, ref_ids)]))
