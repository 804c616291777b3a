"""A slow reference implementation of NNN, written straight from the paper's equations.

Chowdhury et al., *Nearest Neighbor Normalization Improves Multimodal Retrieval*
(EMNLP 2024, arXiv 2410.24114):

* score ``s(q, r) = q . r`` (cosine for unit vectors);
* Eq. 1: ``b(r) = alpha * (1/k) * sum of the k largest s(q_j, r)`` over the reference
  queries ``q_j``;
* Eq. 2: corrected score ``s_D(q, r) = s(q, r) - b(r)`` (only the gallery is corrected);
* ranking: the corrected scores sorted descending, ties broken by the smaller gallery row,
  padded with ``-inf`` / ``-1`` when the gallery has fewer than ``k`` rows.

Everything is float64 with plain Python-level clarity and no attempt at speed; the fast
paths of dehub must agree with it. :func:`assert_topk_match` compares a fast result with
the reference one, allowing rankings to differ only among (numerically) equal scores.
"""

from __future__ import annotations

import numpy as np

__all__ = [
    "ref_scores",
    "ref_mean_topk",
    "ref_bias",
    "ref_corrected_scores",
    "ref_topk",
    "ref_nnn_search",
    "assert_topk_match",
]


def ref_scores(queries, gallery) -> np.ndarray:
    """s(q, r) = q . r for every pair, float64, shape (n_queries, n_gallery)."""
    q = np.asarray(queries, dtype=np.float64)
    g = np.asarray(gallery, dtype=np.float64)
    out = np.empty((q.shape[0], g.shape[0]), dtype=np.float64)
    for i in range(q.shape[0]):
        for j in range(g.shape[0]):
            out[i, j] = float(np.dot(q[i], g[j]))
    return out


def ref_mean_topk(gallery, reference, k: int) -> np.ndarray:
    """The unscaled mean of the k largest s(q_j, r) over the reference, per gallery item r."""
    s = ref_scores(reference, gallery)  # (n_reference, n_gallery): column r holds s(q_j, r)
    means = np.empty(s.shape[1], dtype=np.float64)
    for r in range(s.shape[1]):
        column = sorted(s[:, r].tolist(), reverse=True)
        means[r] = sum(column[:k]) / k
    return means


def ref_bias(gallery, reference, k: int, alpha: float) -> np.ndarray:
    """Eq. 1: b(r) = alpha * mean of the k largest reference scores of r."""
    return alpha * ref_mean_topk(gallery, reference, k)


def ref_corrected_scores(queries, gallery, reference, k: int, alpha: float) -> np.ndarray:
    """Eq. 2: s(q, r) - b(r), float64, shape (n_queries, n_gallery)."""
    return ref_scores(queries, gallery) - ref_bias(gallery, reference, k, alpha)[None, :]


def ref_topk(scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Top-k of a dense score matrix: full sort, score descending then id ascending."""
    n, m = scores.shape
    out_s = np.full((n, k), -np.inf, dtype=np.float64)
    out_i = np.full((n, k), -1, dtype=np.int64)
    for row in range(n):
        order = sorted(range(m), key=lambda j: (-scores[row, j], j))[:k]
        out_s[row, : len(order)] = scores[row, order]
        out_i[row, : len(order)] = order
    return out_s, out_i


def ref_nnn_search(queries, gallery, reference, k_nnn: int, alpha: float, k: int):
    """NNN search from the equations: (scores float64, ids int64, dense corrected scores)."""
    dense = ref_corrected_scores(queries, gallery, reference, k_nnn, alpha)
    s, i = ref_topk(dense, k)
    return s, i, dense


def assert_topk_match(
    scores,
    ids,
    ref_scores_,
    ref_ids,
    dense=None,
    *,
    atol: float = 1e-5,
    exact_ties: bool = False,
) -> None:
    """Assert a fast top-k result equals the reference one up to exact ties.

    * shapes equal; padding (``-1`` ids, ``-inf`` scores) at the same places;
    * scores allclose (``atol``) position by position;
    * ids unique within each row;
    * wherever the ids differ, the fast result's id must score (in the dense reference
      matrix ``dense``) the same as the reference's id at that position, i.e. the two
      rankings differ only by reordering items of equal score. With ``exact_ties`` the
      ids must be identical (use it when ties are exact in every precision, e.g. on
      quantized data, to check the tie rule "smaller id first").
    """
    scores = np.asarray(scores)
    ids = np.asarray(ids)
    assert scores.shape == ids.shape == ref_ids.shape, (scores.shape, ids.shape, ref_ids.shape)
    pad = ref_ids < 0
    np.testing.assert_array_equal(ids < 0, pad, err_msg="padding (-1 ids) at different places")
    assert np.all(np.isneginf(scores[pad])), "padded positions must score -inf"
    np.testing.assert_allclose(
        scores[~pad].astype(np.float64),
        ref_scores_[~pad],
        rtol=0,
        atol=atol,
        err_msg="scores differ from the reference",
    )
    for row in ids:
        real = row[row >= 0]
        assert np.unique(real).size == real.size, f"duplicate ids in a row: {row}"
    differ = ids != ref_ids
    if exact_ties:
        np.testing.assert_array_equal(ids, ref_ids, err_msg="rankings differ (exact tie order)")
        return
    if differ.any():
        assert dense is not None, "rankings differ and no dense reference scores to check ties"
        rows, cols = np.nonzero(differ)
        got = dense[rows, ids[rows, cols]]
        want = ref_scores_[rows, cols]
        np.testing.assert_allclose(
            got,
            want,
            rtol=0,
            atol=atol,
            err_msg="rankings differ by more than a reordering of tied scores",
        )
