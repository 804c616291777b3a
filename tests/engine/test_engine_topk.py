"""RunningTopK (the streamed selection) and exact_search under random shapes and ties."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dehub.engine import RunningTopK, exact_search
from dehub.engine.topk import topk_mask
from reference_nnn import assert_topk_match, ref_scores, ref_topk


def _stream(scores: np.ndarray, k: int, block: int, buffer: int | None) -> tuple[np.ndarray, np.ndarray]:
    top = RunningTopK(scores.shape[0], k, buffer=buffer, score_dtype=scores.dtype)
    for start in range(0, scores.shape[1], block):
        top.push(scores[:, start : start + block], start)
    return top.result()


@pytest.mark.parametrize("buffer", [1, 2, 5, None])
@pytest.mark.parametrize("block", [1, 3, 16, 100])
def test_running_topk_matches_full_sort(rng, buffer, block):
    # Few distinct values: many exact ties, so the tie rule is exercised on every merge.
    scores = rng.integers(-3, 4, size=(12, 100)).astype(np.float32)
    for k in (1, 4, 10, 100, 120):
        v, i = _stream(scores, k, block, buffer)
        rv, ri = ref_topk(scores.astype(np.float64), k)
        assert_topk_match(v, i, rv, ri, atol=0, exact_ties=True)


def test_running_topk_row_offset(rng):
    scores = rng.standard_normal((10, 40)).astype(np.float32)
    top = RunningTopK(10, 5)
    for start in range(0, 40, 8):
        top.push(scores[:4, start : start + 8], start, row_offset=0)
        top.push(scores[4:, start : start + 8], start, row_offset=4)
    v, i = top.result()
    rv, ri = ref_topk(scores.astype(np.float64), 5)
    assert_topk_match(v, i, rv, ri, atol=0, exact_ties=True)


def test_running_topk_does_not_change_pushed_blocks(rng, digest):
    scores = rng.standard_normal((6, 30)).astype(np.float32)
    before = digest(scores)
    _stream(scores, 4, 7, 2)
    assert digest(scores) == before


@settings(max_examples=40, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    nq=st.integers(1, 12),
    nd=st.integers(1, 40),
    d=st.integers(1, 5),
    k=st.integers(1, 45),
    qb=st.integers(1, 13),
    db=st.integers(1, 41),
    levels=st.integers(1, 4),
)
def test_exact_search_random_blocks_and_ties(seed, nq, nd, d, k, qb, db, levels):
    """Any shapes, any block sizes, heavily tied data: identical to the full sort."""
    rng = np.random.default_rng(seed)
    q = rng.integers(-levels, levels + 1, size=(nq, d)).astype(np.float32)
    x = rng.integers(-levels, levels + 1, size=(nd, d)).astype(np.float32)
    s, i = exact_search(q, x, k, query_block=qb, database_block=db)
    rv, ri = ref_topk(ref_scores(q, x), k)
    assert_topk_match(s, i, rv, ri, atol=0, exact_ties=True)


def test_topk_mask_is_the_id_ordered_topk_with_ties():
    rng = np.random.default_rng(0)
    scores = np.round(rng.standard_normal((200, 40)), 1).astype(np.float32)  # many ties
    for k in (1, 5, 16, 39):
        mask = topk_mask(scores, k)
        assert np.all(mask.sum(axis=1) == k)
        cols = np.broadcast_to(np.arange(40), scores.shape)
        order = np.lexsort((cols, -scores), axis=-1)[:, :k]  # score desc, then column asc
        want = np.zeros_like(mask)
        np.put_along_axis(want, order, True, axis=1)
        np.testing.assert_array_equal(mask, want)
