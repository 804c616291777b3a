"""Streamed statistics over (gallery x bank) similarity blocks, shared by the methods.

Every function here visits ``gallery @ bank.T`` in blocks sized by the exact engine's
:func:`~dehub.engine.exact.plan_blocks`, so the working memory stays within
``memory_budget`` bytes whatever the sizes; memory-mapped inputs are read one block at
a time and never modified.
"""

from __future__ import annotations

import numpy as np

from .._errors import InputError
from .._progress import progress_bar
from .._validation import compute_dtype
from ..engine.exact import exact_search, plan_blocks

__all__ = [
    "streamed_logsumexp",
    "activation_ids",
    "activation_mask",
    "column_mean",
    "matvec",
    "compute_dtype",
]

_CHUNK_ROWS = 65536


def _blocks(n: int, step: int):
    for s in range(0, n, step):
        yield slice(s, min(s + step, n))


def streamed_logsumexp(
    gallery: np.ndarray,
    bank: np.ndarray,
    betas,
    *,
    memory_budget: int,
    progress: bool | str = False,
    bank_block: int | None = None,
) -> np.ndarray:
    """``out[i, t] = log sum_j exp(betas[t] * gallery[i] . bank[j])``, float64.

    Numerically safe for any score scale: a running maximum is subtracted before every
    exponential (online log-sum-exp), partial sums are accumulated in float64, and one
    GEMM block is shared by all ``betas`` (so a temperature grid costs one pass over
    the bank). ``betas`` must be finite and >= 0 (``beta = 0`` gives ``log |bank|``).
    ``bank_block`` forces the number of bank rows per block (tests); by default the
    engine's planner chooses it.
    """
    betas = np.asarray(betas, dtype=np.float64).reshape(-1)
    ng, d = gallery.shape
    nb = bank.shape[0]
    if nb == 0:
        raise InputError("the bank is empty; expected at least one row")
    dt = compute_dtype(gallery, bank)
    # Two score-sized buffers (scores and their scaled/exponentiated copy): half budget each.
    plan = plan_blocks(
        ng,
        nb,
        d,
        1,
        memory_budget=max(memory_budget // 2, 1),
        itemsize=dt.itemsize,
        database_block=bank_block,
    )
    out = np.empty((ng, betas.size), dtype=np.float64)
    cap = plan.query_block * plan.database_block
    buf_s = np.empty(cap, dtype=dt)
    buf_t = np.empty(cap, dtype=dt)
    label = progress if isinstance(progress, str) else "logsumexp"
    n_steps = -(-ng // plan.query_block) * -(-nb // plan.database_block)
    with progress_bar(total=n_steps, desc=label, enable=bool(progress), unit="block") as bar:
        for gs in _blocks(ng, plan.query_block):
            gb = np.asarray(gallery[gs], dtype=dt)
            rows = gb.shape[0]
            run_max = np.full((betas.size, rows), -np.inf)
            run_sum = np.zeros((betas.size, rows))
            for bs in _blocks(nb, plan.database_block):
                bb = np.asarray(bank[bs], dtype=dt)
                s = buf_s[: rows * bb.shape[0]].reshape(rows, bb.shape[0])
                t = buf_t[: rows * bb.shape[0]].reshape(rows, bb.shape[0])
                np.matmul(gb, bb.T, out=s)
                for j, beta in enumerate(betas):
                    np.multiply(s, dt.type(beta), out=t)
                    new_max = np.maximum(run_max[j], t.max(axis=1))
                    np.subtract(t, new_max.astype(dt)[:, None], out=t)
                    np.exp(t, out=t)
                    run_sum[j] = run_sum[j] * np.exp(run_max[j] - new_max) + t.sum(axis=1, dtype=np.float64)
                    run_max[j] = new_max
                bar.update(1)
            out[gs] = (run_max + np.log(run_sum)).T
    return out


def activation_ids(
    bank: np.ndarray, gallery: np.ndarray, k: int, *, memory_budget: int, progress: bool | str = False
) -> np.ndarray:
    """Gallery rows retrieved in the plain top-``k`` of every bank row, shape (n_bank, k).

    Ties follow the engine's rule (smaller gallery row first); the prefix ``[:, :k']``
    is the top-``k'`` for every ``k' <= k``.
    """
    _, ids = exact_search(bank, gallery, int(k), memory_budget=memory_budget, progress=progress)
    return ids


def activation_mask(ids: np.ndarray, n_gallery: int, k: int) -> np.ndarray:
    """The activation set as a boolean mask: gallery rows among some bank row's top-k."""
    mask = np.zeros(n_gallery, dtype=bool)
    sub = ids[:, :k]
    mask[sub[sub >= 0]] = True
    return mask


def column_mean(x: np.ndarray) -> np.ndarray:
    """Mean row of ``x`` in float64, read in chunks (memmap friendly).

    Each chunk is summed in float64 as it is read (``dtype=float64``: no float64 copy of
    the chunk; the copy's allocation was most of the time, 25x slower on a 32,973 x 384 bank)."""
    acc = np.zeros(x.shape[1], dtype=np.float64)
    for sl in _blocks(x.shape[0], _CHUNK_ROWS):
        acc += np.add.reduce(np.asarray(x[sl]), axis=0, dtype=np.float64)
    return acc / x.shape[0]


def matvec(x: np.ndarray, v: np.ndarray) -> np.ndarray:
    """``x @ v`` in float64, read in chunks (memmap friendly)."""
    out = np.empty(x.shape[0], dtype=np.float64)
    for sl in _blocks(x.shape[0], _CHUNK_ROWS):
        out[sl] = np.asarray(x[sl], dtype=np.float64) @ v
    return out
