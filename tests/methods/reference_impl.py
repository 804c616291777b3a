"""Slow reference implementations, written straight from each paper's formula.

Dense, float64, explicit loops; no code is shared with ``dehub.methods``. Where a formula
exponentiates, the reference computes the same quantity in log space with an explicit
max subtraction (``_log_sum_exp``) so that it stays exact where a naive exponential
overflows (that regime is part of the parity tests).
"""

from __future__ import annotations

import math

import numpy as np


def _sim(a, b) -> np.ndarray:
    return np.asarray(a, dtype=np.float64) @ np.asarray(b, dtype=np.float64).T


def _log_sum_exp(values) -> float:
    m = max(values)
    return m + math.log(sum(math.exp(v - m) for v in values))


def _top_ids(row: np.ndarray, k: int) -> list[int]:
    """Indices of the k largest values, ties -> smaller index."""
    return sorted(range(len(row)), key=lambda j: (-row[j], j))[:k]


# ---------------------------------------------------------------- NNN and variants
def nnn_bias(
    gallery,
    reference,
    k: int,
    alpha: float,
    statistic: str = "mean",
    trim: float = 0.0,
    temperature: float = 1.0,
) -> np.ndarray:
    """b(r) = alpha * T(k largest s(q_j, r)) (NNN Eq. 1 with T = mean, and the variants)."""
    s = _sim(gallery, reference)
    out = np.empty(s.shape[0])
    for i in range(s.shape[0]):
        top = sorted(s[i], reverse=True)[:k]
        if statistic == "mean":
            t = sum(top) / k
        elif statistic == "trimmed":
            cut = int(trim * k)
            kept = top[cut : k - cut]
            t = sum(kept) / len(kept)
        elif statistic == "median":
            t = float(np.median(top))
        elif statistic == "soft":
            t = temperature * (_log_sum_exp([v / temperature for v in top]) - math.log(k))
        else:
            raise ValueError(statistic)
        out[i] = alpha * t
    return out


def nnn_scores(queries, gallery, reference, **kw) -> np.ndarray:
    return _sim(queries, gallery) - nnn_bias(gallery, reference, **kw)[None, :]


# ---------------------------------------------------------------- CSLS (Conneau et al. 2018, Eq. 6)
def csls_scores(queries, gallery, reference, k: int) -> np.ndarray:
    s_qg = _sim(queries, gallery)
    s_gr = _sim(gallery, reference)
    r_t = [sum(sorted(s_qg[i], reverse=True)[:k]) / k for i in range(s_qg.shape[0])]
    r_s = [sum(sorted(s_gr[j], reverse=True)[:k]) / k for j in range(s_gr.shape[0])]
    out = np.empty_like(s_qg)
    for i in range(s_qg.shape[0]):
        for j in range(s_qg.shape[1]):
            out[i, j] = 2 * s_qg[i, j] - r_t[i] - r_s[j]
    return out


# ---------------------------------------------------------------- inverted softmax family
def _activation_set(bank, gallery, k: int) -> set[int]:
    """Gallery items in the plain top-k of at least one bank item (QB-Norm's DIS)."""
    s = _sim(bank, gallery)
    act: set[int] = set()
    for row in s:
        act.update(_top_ids(row, k))
    return act


def dual_is_log_scores(queries, gallery, banks, betas, *, dynamic: bool = False, k: int = 1) -> np.ndarray:
    """log of prod_b IS_b(q, r), IS_b = exp(beta_b s(q,r)) / sum_{x in B_b} exp(beta_b s(x, r)).

    With ``dynamic``, the normalizer of bank b applies only to queries whose plain
    top-1 gallery item is in bank b's activation set (DIS / DualDIS); otherwise the
    factor stays exp(beta_b s(q, r)).
    """
    s_qg = _sim(queries, gallery)
    logs_norm = []
    acts = []
    for bank, beta in zip(banks, betas):
        s_bg = _sim(bank, gallery)
        logs_norm.append(
            [_log_sum_exp([beta * s_bg[j, r] for j in range(s_bg.shape[0])]) for r in range(s_bg.shape[1])]
        )
        acts.append(_activation_set(bank, gallery, k) if dynamic else None)
    out = np.empty_like(s_qg)
    for i in range(s_qg.shape[0]):
        top1 = _top_ids(s_qg[i], 1)[0]
        for r in range(s_qg.shape[1]):
            total = 0.0
            for b, beta in enumerate(betas):
                total += beta * s_qg[i, r]
                if not dynamic or top1 in acts[b]:
                    total -= logs_norm[b][r]
            out[i, r] = total
    return out


def inverted_softmax_log_scores(queries, gallery, bank, beta, *, dynamic=False, k=1) -> np.ndarray:
    """QB-Norm: IS (Smith et al. 2017) / DIS (Bogolin et al. 2022), in log space."""
    return dual_is_log_scores(queries, gallery, [bank], [beta], dynamic=dynamic, k=k)


def inverted_softmax_naive(queries, gallery, bank, beta) -> np.ndarray:
    """The IS value exactly as written, exp / sum exp, float64 (overflows for large beta*s)."""
    with np.errstate(over="ignore", invalid="ignore"):
        num = np.exp(beta * _sim(queries, gallery))
        den = np.exp(beta * _sim(bank, gallery)).sum(axis=0)
        return num / den[None, :]


# ---------------------------------------------------------------- DN (Zhou et al. 2023)
def dn_scores(queries, gallery, reference, gallery_bank, lam: float) -> np.ndarray:
    """(q - lambda mu_Q) . (r - lambda mu_G)."""
    q = np.asarray(queries, dtype=np.float64)
    g = np.asarray(gallery, dtype=np.float64)
    mu_q = np.asarray(reference, dtype=np.float64).mean(axis=0)
    mu_g = np.asarray(gallery_bank, dtype=np.float64).mean(axis=0)
    out = np.empty((q.shape[0], g.shape[0]))
    for i in range(q.shape[0]):
        for j in range(g.shape[0]):
            out[i, j] = float((q[i] - lam * mu_q) @ (g[j] - lam * mu_g))
    return out
