"""Relevance: CSR query -> set of relevant gallery rows."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dehub import Relevance


def test_from_pairs_sorts_and_deduplicates():
    rel = Relevance.from_pairs([2, 0, 2, 0, 2], [5, 1, 3, 1, 5], n_queries=4, n_gallery=6)
    np.testing.assert_array_equal(rel.indptr, [0, 1, 1, 3, 3])
    np.testing.assert_array_equal(rel.indices, [1, 3, 5])
    assert rel.n_queries == 4 and rel.n_pairs == 3 and rel.n_gallery == 6
    np.testing.assert_array_equal(rel.counts(), [1, 0, 2, 0])
    np.testing.assert_array_equal(rel.positives(2), [3, 5])
    np.testing.assert_array_equal(rel.query_rows(), [0, 2, 2])
    assert rel.to_dict() == {0: {1}, 1: set(), 2: {3, 5}, 3: set()}
    assert repr(rel) == "Relevance(n_queries=4, n_gallery=6, n_pairs=3)"


def test_from_dict_round_trip():
    mapping = {0: {4, 1}, 3: [2], 1: []}
    rel = Relevance.from_dict(mapping, n_queries=5, n_gallery=5)
    assert rel.to_dict() == {0: {1, 4}, 1: set(), 2: set(), 3: {2}, 4: set()}
    assert rel == Relevance.from_pairs([0, 0, 3], [1, 4, 2], 5, 5)
    assert rel != Relevance.from_pairs([0, 0, 3], [1, 4, 2], 5, 6)
    assert rel != "not a relevance"


def test_transpose_and_subset():
    rel = Relevance.from_dict({0: [1, 2], 1: [2], 2: [0]}, n_queries=3, n_gallery=4)
    t = rel.transpose()
    assert t.to_dict() == {0: {2}, 1: {0}, 2: {0, 1}, 3: set()}
    assert t.transpose() == rel
    sub = rel.subset(np.array([2, 0, 0]))  # a bootstrap resample: repeats allowed
    assert sub.to_dict() == {0: {0}, 1: {1, 2}, 2: {1, 2}}
    assert sub.n_gallery == 4


def test_is_relevant_with_padding_and_out_of_range_rows():
    rel = Relevance.from_pairs([0, 1], [0, 0], n_queries=2, n_gallery=3)
    got = rel.is_relevant(np.array([0, 1]), np.array([[0, 1, -1], [2, 0, -1]]))
    np.testing.assert_array_equal(got, [[True, False, False], [False, True, False]])
    # Row 4 of query 0 would alias (query 1, row 0) in a naive key: never relevant.
    np.testing.assert_array_equal(rel.is_relevant(np.array([0]), np.array([[3, 4, 7]])), [[False] * 3])
    np.testing.assert_array_equal(
        rel.is_relevant(np.array([-1, 2]), np.array([[3], [0]])), [[False], [False]]
    )
    empty = Relevance.from_pairs([], [], n_queries=2, n_gallery=3)
    assert not empty.is_relevant(np.array([0, 1]), np.array([[0], [1]])).any()


@pytest.mark.parametrize(
    "args, match",
    [
        (([1, 2], [0, 1], 3), r"indptr must be a 1-D array starting at 0; received shape \(2,\)"),
        (([0, 2, 1], [0, 1], 3), r"indptr must be non-decreasing and end at len\(indices\) \(2\)"),
        (([0, 1], [0, 1], 3), r"end at len\(indices\) \(2\); received last value 1"),
        (([0, 2], [0, 5], 3), r"relevance refers to gallery rows outside 0\.\.2: \[5\]"),
        (([0, 2], [2, 1], 3), r"indices must be sorted and unique within each query"),
        (([0, 2], [1, 1], 3), r"indices must be sorted and unique within each query"),
    ],
)
def test_constructor_errors(args, match):
    with pytest.raises(ValueError, match=match):
        Relevance(*args)


def test_from_pairs_errors():
    with pytest.raises(ValueError, match=r"same length; received 2 and 1"):
        Relevance.from_pairs([0, 1], [0], 2, 2)
    with pytest.raises(ValueError, match=r"query rows outside 0\.\.1: \[2\]"):
        Relevance.from_pairs([0, 2], [0, 0], 2, 2)
    with pytest.raises(ValueError, match=r"gallery rows outside 0\.\.1: \[3\]"):
        Relevance.from_pairs([0, 1], [0, 3], 2, 2)


def test_inputs_unchanged(digest):
    q = np.array([3, 1, 1, 0])
    g = np.array([2, 2, 0, 1])
    before = digest(q, g)
    rel = Relevance.from_pairs(q, g, 4, 3)
    rel.subset(q)
    rel.is_relevant(q, g[:, None])
    assert digest(q, g) == before


@settings(max_examples=40, deadline=None)
@given(
    pairs=st.lists(st.tuples(st.integers(0, 6), st.integers(0, 9)), max_size=40),
    probe=st.lists(st.tuples(st.integers(-1, 6), st.integers(-2, 12)), min_size=1, max_size=20),
)
def test_is_relevant_matches_a_set_lookup(pairs, probe):
    q = [p[0] for p in pairs]
    g = [p[1] for p in pairs]
    rel = Relevance.from_pairs(q, g, n_queries=7, n_gallery=10)
    truth = set(pairs)
    assert {(i, j) for i, js in rel.to_dict().items() for j in js} == truth
    qs = np.array([p[0] for p in probe])
    gs = np.array([[p[1]] for p in probe])
    want = [[(a, b) in truth] for a, b in probe]
    np.testing.assert_array_equal(rel.is_relevant(qs, gs), want)
