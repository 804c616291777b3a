"""Slow references for the newer members (SN/DBSN, InvGC, renormalization, MP, LS/NICDM, DSL).

Two kinds of code live here:

* ``*_paper``: written straight from each paper's formula on dense float64 matrices,
  no blocking, no tricks;
* ``official_*``: transcriptions of the published code, each with a note saying
  exactly what was transcribed (file, function, what was changed). They run the same
  operations in the same order; only I/O, logging and device handling are dropped.
"""

from __future__ import annotations

import numpy as np


def dist(s: np.ndarray) -> np.ndarray:
    """Euclidean distance of unit vectors from their inner product."""
    return np.sqrt(np.maximum(2.0 - 2.0 * np.asarray(s, dtype=np.float64), 0.0))


# --------------------------------------------------------------------------- SN / DBSN
def sinkhorn_knopp_paper(sims: np.ndarray, tau: float, n_iter: int) -> tuple[np.ndarray, np.ndarray]:
    """Sinkhorn-Knopp on cost ``1 - sims`` with uniform marginals; returns (u, v), float64.

    Cuturi (NeurIPS 2013) as POT's ``sinkhorn_knopp`` runs it: ``u = 1/n``, ``v = 1/m``,
    then ``n_iter`` times ``v = b / K^T u``, ``u = a / K v``, ``K = exp(-(1 - S)/tau)``.
    """
    s = np.asarray(sims, dtype=np.float64)
    n, m = s.shape
    a, b = np.full(n, 1.0 / n), np.full(m, 1.0 / m)
    kern = np.exp(-(1.0 - s) / tau)
    u = np.full(n, 1.0 / n)
    v = np.full(m, 1.0 / m)
    for _ in range(n_iter):
        v = b / (kern.T @ u)
        u = a / (kern @ v)
    return u, v


def sn_offsets_paper(gallery, bank, tau: float, n_iter: int, gallery_bank=None) -> np.ndarray:
    """SN (DBSN with ``gallery_bank``) per-gallery offsets ``-tau log u`` (first n_gallery rows)."""
    rows = np.asarray(gallery, dtype=np.float64)
    if gallery_bank is not None:
        rows = np.vstack([rows, np.asarray(gallery_bank, dtype=np.float64)])
    u, _ = sinkhorn_knopp_paper(rows @ np.asarray(bank, dtype=np.float64).T, tau, n_iter)
    return -tau * np.log(u)[: gallery.shape[0]]


def official_sinkhorn_normalization(sims, tau=0.01, n_iter=10):
    """Transcribed from ppanzx/DBSN ``Image_Retrieval/dbsn.py``, ``Sinkhorn_Normalization``.

    Verbatim except the iteration count, a parameter here (the official function fixes
    ``numItermax=10``). ``sims`` is (gallery, query bank); returns
    ``(v_hubness, t_hubness)`` as the official code: ``t_hubness`` is the per-gallery
    offset. Needs POT.
    """
    import ot

    r = np.ones(sims.shape[0]) / sims.shape[0]
    c = np.ones(sims.shape[1]) / sims.shape[1]
    P, logs = ot.sinkhorn(r, c, 1 - sims, reg=tau, log=True, numItermax=n_iter)
    v_hubness = -tau * np.log(logs["v"])
    t_hubness = -tau * np.log(logs["u"])
    return v_hubness, t_hubness


def official_sn_dbsn_scores(q, t, gq, gt, tau=0.01, n_iter=10):
    """Transcribed from ppanzx/DBSN ``Image_Retrieval/dbsn.py``, ``main_embs`` (SN and DBSN parts).

    ``q``: test queries (texts), ``t``: test gallery (images), ``gq``: query bank
    (training texts), ``gt``: gallery bank (training images). Kept: ``sims = t @ q.T``,
    ``qtsims = t @ gq.T``, ``qqsims = gt @ gq.T``, SN's ``sims - t_hubness[:, None]`` and
    DBSN's ``concatenate([qtsims, qqsims])`` then ``t_hubness[:n_gallery]``. Dropped: file
    loading, the ``t = t[::5]`` de-duplication, ``sims2rank``. Returns the two corrected
    (gallery, query) matrices.
    """
    sims = t @ q.T
    qtsims = t @ gq.T
    v_hubness, t_hubness = official_sinkhorn_normalization(qtsims, tau=tau, n_iter=n_iter)
    sn = sims - t_hubness[:, np.newaxis]
    qqsims = gt @ gq.T
    qbsims = np.concatenate([qtsims, qqsims], axis=0)
    v_hubness, t_hubness = official_sinkhorn_normalization(qbsims, tau=tau, n_iter=n_iter)
    dbsn = sims - t_hubness[: qtsims.shape[0], np.newaxis]
    return sn, dbsn


# --------------------------------------------------------------------------- InvGC
def invgc_paper(gallery, gallery_bank, query_bank, r_g, r_q, local_adj=True, pool_rate=0.01):
    """InvGC (Jian & Wang 2023), dense float64: new gallery vectors (unit rows)."""

    def unit(x):
        return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)

    x = np.asarray(gallery, dtype=np.float64)

    def message(bank, rate):
        b = np.asarray(bank, dtype=np.float64)
        w = x @ b.T
        if local_adj:
            p = max(1, int(pool_rate * b.shape[0]))
            keep = np.zeros_like(w)
            top = np.argsort(-w, axis=1, kind="stable")[:, :p]
            np.put_along_axis(keep, top, np.take_along_axis(w, top, axis=1), axis=1)
            return unit(x - rate * (keep @ b) / p)
        return unit(x - rate * ((w - w.mean()) @ b) / b.shape[0])

    return unit(0.5 * message(gallery_bank, r_g) + 0.5 * message(query_bank, r_q))


def official_invgc(
    test_gallery, test_query, train_gallery, train_query, r_g, r_q, local_adj=True, pool_rate=0.01
):
    """Transcribed from yimuwangcs/Better_Cross_Modal_Retrieval ``InvGC/InvGC.py``.

    ``norm_output``, ``InvGC_func``, ``InvGC_LocalADJ_func`` and ``InvGC`` in torch, as
    published, with ``device='cpu'`` and ``sim_func = lambda a, b: a @ b.T`` (the
    caller's inner product; ``query_first=False``). Returns the (gallery, query)
    similarity matrix after the convolution. Needs torch.
    """
    import torch

    def norm_output(emb, p=2):
        return torch.nn.functional.normalize(emb, p=p, dim=1)

    def InvGC_func(test_cap, train_cap, lr, if_norm=True, device="cpu"):
        wm_cap_cap = test_cap.matmul(train_cap.T)
        el1 = torch.sum(wm_cap_cap) / (wm_cap_cap.shape[0] * wm_cap_cap.shape[1])
        intemb_cap_cap = (
            -(wm_cap_cap.to(device) - el1).matmul(train_cap.to(device)) / wm_cap_cap.shape[1] * lr
        )
        fnemb_cap_cap = intemb_cap_cap + test_cap.to(device)
        return norm_output(fnemb_cap_cap) if if_norm else fnemb_cap_cap

    def InvGC_LocalADJ_func(test_cap, train_cap, lr, if_norm=True, device="cpu", pool_rate=0.1):
        wm_cap_cap = test_cap.matmul(train_cap.T)
        temp_train = torch.zeros([wm_cap_cap.shape[0], wm_cap_cap.shape[1]]).to(device)
        te_dim = test_cap.shape[0]
        tr_dim = train_cap.shape[0]
        pnum = int(pool_rate * tr_dim)
        ranks = torch.topk(wm_cap_cap, pnum, dim=1)
        values = ranks.values.to(device)
        indices = ranks.indices.to(device)
        for i in range(te_dim):
            temp_train[i][indices[i]] = values[i]
        intemb_cap_cap = -(temp_train.to(device)).matmul(train_cap.to(device)) / pnum * lr
        fnemb_cap_cap = intemb_cap_cap + test_cap.to(device)
        return norm_output(fnemb_cap_cap) if if_norm else fnemb_cap_cap

    def sim_func(a, b):
        return a @ b.T

    tg, tq = torch.as_tensor(test_gallery), torch.as_tensor(test_query)
    trg, trq = torch.as_tensor(train_gallery), torch.as_tensor(train_query)
    if local_adj:
        message_gallery = InvGC_LocalADJ_func(tg, trg, r_g, device="cpu", pool_rate=pool_rate)
        message_query = InvGC_LocalADJ_func(tg, trq, r_q, device="cpu", pool_rate=pool_rate)
    else:
        message_gallery = InvGC_func(tg, trg, r_g, device="cpu")
        message_query = InvGC_func(tg, trq, r_q, device="cpu")
    message = norm_output(0.5 * message_gallery + 0.5 * message_query)
    return sim_func(message, tq).numpy()


# --------------------------------------------------------------------------- renorm
def renorm_paper(queries, gallery, reference, variant):
    """Cosine of renormalized embeddings (arXiv 2511.11041): R2 projection or R1 subtraction.

    ``mu`` is the mean of reference and gallery together (dehub's choice).
    """
    x = np.vstack([np.asarray(reference, dtype=np.float64), np.asarray(gallery, dtype=np.float64)])
    mu = x.mean(axis=0)

    def fix(e):
        e = np.asarray(e, dtype=np.float64)
        if variant == "projection":
            u = mu / np.linalg.norm(mu)
            e = e - np.outer(e @ u, u)
        else:
            e = e - mu
        return e / np.linalg.norm(e, axis=1, keepdims=True)

    return fix(queries) @ fix(gallery).T


# --------------------------------------------------------------------------- LS / NICDM / MP
def _knn_dist(d: np.ndarray, k: int | None) -> np.ndarray:
    return d if k is None or k >= d.shape[1] else np.sort(d, axis=1)[:, :k]


def local_scaling_paper(queries, gallery, reference, k, variant):
    """Schnitzer et al. 2012: LS ``1 - exp(-d^2/(s_x s_y))`` / NICDM ``d/sqrt(m_x m_y)``, negated."""
    d_qg = dist(np.asarray(queries, np.float64) @ np.asarray(gallery, np.float64).T)
    d_gr = dist(np.asarray(gallery, np.float64) @ np.asarray(reference, np.float64).T)
    nq, ng = _knn_dist(d_qg, k), _knn_dist(d_gr, k)
    if variant == "nicdm":
        return -(d_qg / np.sqrt(nq.mean(axis=1)[:, None] * ng.mean(axis=1)[None, :]))
    sq, sg = nq.max(axis=1), ng.max(axis=1)
    return -(1.0 - np.exp(-(d_qg**2) / (sq[:, None] * sg[None, :])))


def mutual_proximity_paper(queries, gallery, reference, k):
    """Schnitzer et al. 2012, MP with independent Gaussians (scipy's normal SF), negated."""
    from scipy import stats

    d_qg = dist(np.asarray(queries, np.float64) @ np.asarray(gallery, np.float64).T)
    d_gr = dist(np.asarray(gallery, np.float64) @ np.asarray(reference, np.float64).T)
    nq, ng = _knn_dist(d_qg, k), _knn_dist(d_gr, k)
    p1 = stats.norm.sf(d_qg, nq.mean(axis=1)[:, None], nq.std(axis=1)[:, None])
    p2 = stats.norm.sf(d_qg, ng.mean(axis=1)[None, :], ng.std(axis=1)[None, :])
    return -(1.0 - p1 * p2)


def kiez_transcribed(neigh_dist_q, neigh_ind_q, neigh_dist_t_to_s, method):
    """Transcribed from kiez 0.5.0 (``kiez/hubness_reduction``), numpy branches only.

    ``method``: ``"ls"`` / ``"nicdm"`` from ``LocalScaling.transform`` (``r_dist_t_to_s_``
    is the fitted ``neigh_dist_t_to_s``), or ``"mp"`` from
    ``MutualProximity._fit``/``transform`` with ``method="normal"`` (``np.nanmean`` /
    ``np.nanstd`` / ``stats.norm.sf``). Inputs: the queries' candidate distances and
    indices into the target (gallery), and the targets' distances to their nearest
    source items. Returns kiez's hubness-reduced distances (unsorted, as kiez).
    """
    neigh_dist = neigh_dist_q
    neigh_ind = neigh_ind_q
    if method == "ls":
        r_t_to_s = neigh_dist_t_to_s[:, -1]
        r_s_to_t = neigh_dist[:, -1].reshape(-1, 1)
        inner_exp = -1 * neigh_dist**2 / (r_s_to_t * r_t_to_s[neigh_ind])
        return 1.0 - np.exp(inner_exp)
    if method == "nicdm":
        r_t_to_s = neigh_dist_t_to_s.mean(axis=1)
        r_s_to_t = neigh_dist.mean(axis=1).reshape(-1, 1)
        return neigh_dist / np.sqrt(r_s_to_t * r_t_to_s[neigh_ind])
    from scipy import stats

    mu_t_to_s = np.nanmean(neigh_dist_t_to_s, axis=1)
    sd_t_to_s_ = np.nanstd(neigh_dist_t_to_s, axis=1)
    mu = np.nanmean(neigh_dist, axis=1).reshape(-1, 1)
    sd = np.nanstd(neigh_dist, axis=1).reshape(-1, 1)
    p1 = stats.norm.sf(neigh_dist, mu, sd)
    p2 = stats.norm.sf(neigh_dist, mu_t_to_s[neigh_ind], sd_t_to_s_[neigh_ind])
    return 1 - p1 * p2


# --------------------------------------------------------------------------- DSL
def official_dsl(sim_matrix, temp):
    """The inference line of the dual softmax (CAMoE, arXiv 2109.04290), numpy.

    Transcribed from the published ``dual_softmax_loss`` branch
    ``sim_matrix * F.softmax(sim_matrix / temp, dim=0) * len(sim_matrix)`` with
    ``sim_matrix`` of shape (queries, gallery) and ``temp`` the temperature itself
    (the published code passes ``temp.exp()``); the softmax runs over the queries.
    """
    s = np.asarray(sim_matrix, dtype=np.float64)
    z = s / temp
    z = np.exp(z - z.max(axis=0, keepdims=True))
    return s * (z / z.sum(axis=0, keepdims=True)) * len(s)
