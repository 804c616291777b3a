"""Similarity passes over one gallery, computed once and shared by many fits.

A validation sweep over the whole family (``best``) fits a dozen methods on the same
gallery, reference and gallery bank. Their fits read the same few passes over those
scores: the top-k reference scores of every gallery row (NNN, its variants, CSLS), the
log-sum-exp of ``beta * scores`` over a bank (QB-Norm, DBNorm), the plain top-k gallery
rows of every bank row (the activation sets of the dynamic variants). A
:class:`SharedScores` computes each pass once and answers later requests from its
cache. When a bank's (gallery x bank) score matrix fits ``memory_budget`` it is
computed once (one product) and every pass over that bank is read from it (held for
one bank at a time); otherwise each pass is the engine call the method's own fit makes.
Either way a fit from it equals the method's own fit (the same selection rules; scores
equal to float32 rounding of the product's summation order). Methods read it through
:meth:`dehub.methods.BaseCorrector.fit_grid_from_shared`; a method whose fit reads
something else says so with ``shared_scores_obstacle()``.

The cache lives in the object (no global state); drop the object to free it.
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np

from .._validation import check_embeddings, check_same_dim
from ..engine.exact import DEFAULT_MEMORY_BUDGET, exact_search
from ..engine.topk import select_topk
from ._stats import compute_dtype, streamed_logsumexp

__all__ = ["SharedScores", "BankName"]

#: The banks a fit may normalize against: the reference queries, or the gallery-side bank
#: (the gallery itself when none was given, as the bank methods' own default).
BankName = Literal["reference", "gallery_bank"]


class SharedScores:
    """The score passes of one (gallery, reference, gallery bank), each computed once.

    Parameters
    ----------
    gallery, reference : (n, d) float arrays, already normalized as the fits expect
    gallery_bank : (n_bank, d) float array, optional; a bank method given none uses the gallery
    memory_budget : working-memory bytes of every pass (as ``fit``'s ``memory_budget``)

    ``passes`` lists what was computed, in order (for reports and tests).
    """

    def __init__(
        self,
        gallery: Any,
        reference: Any,
        *,
        gallery_bank: Any = None,
        memory_budget: int = DEFAULT_MEMORY_BUDGET,
    ) -> None:
        self.gallery = check_embeddings(gallery, "gallery")
        self.reference = check_embeddings(reference, "reference")
        check_same_dim(self.gallery, self.reference, "gallery", "reference")
        self.gallery_bank = None if gallery_bank is None else check_embeddings(gallery_bank, "gallery_bank")
        if self.gallery_bank is not None:
            check_same_dim(self.gallery, self.gallery_bank, "gallery", "gallery_bank")
        self.memory_budget = int(memory_budget)
        self.passes: list[str] = []
        self._topk: tuple[np.ndarray, np.ndarray] | None = None
        self._lse: dict[tuple[str, float], np.ndarray] = {}
        self._act: dict[str, np.ndarray] = {}
        self._dense: tuple[str, np.ndarray] | None = None

    @property
    def n_gallery(self) -> int:
        return int(self.gallery.shape[0])

    @property
    def n_reference(self) -> int:
        return int(self.reference.shape[0])

    def bank(self, name: BankName) -> np.ndarray:
        """The rows of bank ``name`` (``"gallery_bank"`` is the gallery when none was given)."""
        if name == "reference":
            return self.reference
        if name == "gallery_bank":
            return self.gallery if self.gallery_bank is None else self.gallery_bank
        raise ValueError(f"unknown bank {name!r}; expected 'reference' or 'gallery_bank'")

    def scores(self, name: BankName) -> np.ndarray | None:
        """``gallery @ bank.T`` (n_gallery, n_bank) when it fits ``memory_budget``, else None.

        Computed once and kept while requests are about this bank (one bank at a time).
        """
        bank = self.bank(name)
        dt = compute_dtype(self.gallery, bank)
        if self.n_gallery * bank.shape[0] * dt.itemsize > self.memory_budget:
            return None
        if self._dense is None or self._dense[0] != name:
            self._dense = None  # free the other bank's matrix first
            dense = np.matmul(np.asarray(self.gallery, dtype=dt), np.asarray(bank, dtype=dt).T)
            self._dense = (name, dense)
            self.passes.append(f"{name} x gallery scores")
        return self._dense[1]

    def _rows(self, width: int, itemsize: int = 8) -> int:
        """Gallery rows per cache-sized block of a (rows x width) working copy."""
        return max(1, (1 << 22) // max(1, width * itemsize))

    def reference_topk(self, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Each gallery row's ``k`` largest reference scores, sorted, and their reference rows.

        One exact search at the largest ``k`` asked so far; smaller ``k`` are its prefix
        (the engine's order: scores descending, ties to the smaller row).
        """
        k = int(k)
        if self._topk is None or self._topk[0].shape[1] < k:
            dense = self.scores("reference")
            if dense is None:
                self._topk = exact_search(self.gallery, self.reference, k, memory_budget=self.memory_budget)
            else:
                kk = min(k, dense.shape[1])
                step = self._rows(dense.shape[1])
                parts = [select_topk(dense[s : s + step], kk) for s in range(0, self.n_gallery, step)]
                scores = np.concatenate([p[0] for p in parts]).astype(np.float32, copy=False)
                self._topk = (scores, np.concatenate([p[1] for p in parts]))
            self.passes.append(f"reference top-{k}")
        scores, ids = self._topk
        return scores[:, :k], ids[:, :k]

    def logsumexp(self, name: BankName, betas) -> np.ndarray:
        """``out[i, t] = log sum_{x in bank} exp(betas[t] * gallery[i] . x)``, float64, (n_gallery, len(betas)).

        Temperatures not computed yet for this bank share one streamed pass; each column
        is the one the method's own fit computes (the same blocks, beta by beta).
        """
        values = [float(b) for b in betas]
        missing = sorted({b for b in values if (name, b) not in self._lse})
        if missing:
            bank = self.bank(name)
            nonzero = [b for b in missing if b > 0]
            if nonzero:
                dense = self.scores(name)
                if dense is None:
                    lse = streamed_logsumexp(self.gallery, bank, nonzero, memory_budget=self.memory_budget)
                else:
                    lse = _dense_logsumexp(dense, nonzero, self._rows(dense.shape[1]))
                for t, b in enumerate(nonzero):
                    self._lse[(name, b)] = lse[:, t]
                self.passes.append(f"{name} logsumexp beta={nonzero}")
            if 0.0 in missing:
                self._lse[(name, 0.0)] = np.full(self.n_gallery, np.log(bank.shape[0]))
        return np.stack([self._lse[(name, b)] for b in values], axis=1)

    def activation_ids(self, name: BankName, k: int) -> np.ndarray:
        """The plain top-``k`` gallery rows of every row of bank ``name``, shape (n_bank, k)."""
        k = int(k)
        have = self._act.get(name)
        if have is None or have.shape[1] < k:
            dense = self.scores(name)
            if dense is None:
                _, ids = exact_search(self.bank(name), self.gallery, k, memory_budget=self.memory_budget)
            elif k == 1:  # each bank row's best gallery row (first maximum), row by row
                ids = _column_argmax(dense)[:, None]
            else:  # each bank row's top-k gallery rows: its column, copied contiguous in blocks
                step = self._rows(dense.shape[0], dense.itemsize)
                ids = np.concatenate(
                    [
                        select_topk(np.ascontiguousarray(dense[:, s : s + step].T), min(k, self.n_gallery))[1]
                        for s in range(0, dense.shape[1], step)
                    ]
                )
            self._act[name] = have = ids
            self.passes.append(f"{name} activation top-{k}")
        return have[:, :k]


def _dense_logsumexp(dense: np.ndarray, betas: list[float], step: int) -> np.ndarray:
    """``log sum_j exp(beta * dense[i, j])`` per row and beta, float64, as
    :func:`~dehub.methods._stats.streamed_logsumexp` computes it (maximum subtracted in the
    score dtype, exponentials summed in float64), over cache-sized row blocks.

    A temperature twice one already done reuses its exponentials: ``2 beta s - 2 beta m`` is
    exactly twice ``beta s - beta m`` in floating point, so its terms are the squares of the
    other's (a few ulp from a direct ``exp``; one multiply instead of four passes).
    """
    out = np.empty((dense.shape[0], len(betas)), dtype=np.float64)
    order = sorted(range(len(betas)), key=lambda j: betas[j])
    rows = min(step, dense.shape[0])
    bufs = {j: np.empty((rows, dense.shape[1]), dtype=dense.dtype) for j in order}
    for start in range(0, dense.shape[0], step):
        block = dense[start : start + step]
        n = block.shape[0]
        done: dict[float, int] = {}
        tops: dict[int, np.ndarray] = {}
        for j in order:
            beta = float(betas[j])
            t = bufs[j][:n]
            half = done.get(beta / 2)
            if half is not None:
                prev = bufs[half][:n]
                np.multiply(prev, prev, out=t)
                top = tops[half] * dense.dtype.type(2)  # max(2 beta s) = 2 max(beta s), exactly
            else:
                np.multiply(block, dense.dtype.type(beta), out=t)
                top = t.max(axis=1)
                np.subtract(t, top[:, None], out=t)
                np.exp(t, out=t)
            tops[j] = top
            done[beta] = j
            out[start : start + n, j] = top + np.log(t.sum(axis=1, dtype=np.float64))
    return out


def _column_argmax(dense: np.ndarray) -> np.ndarray:
    """The first row of the maximum of every column, int64, reading ``dense`` row by row
    (contiguous; ``argmax(axis=0)`` strides down the columns)."""
    best = np.array(dense[0], copy=True)
    idx = np.zeros(dense.shape[1], dtype=np.int64)
    better = np.empty(dense.shape[1], dtype=bool)
    for r in range(1, dense.shape[0]):
        row = dense[r]
        np.greater(row, best, out=better)  # strictly: ties keep the smaller row
        np.copyto(best, row, where=better)
        np.copyto(idx, r, where=better)
    return idx
