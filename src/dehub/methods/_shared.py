"""Similarity passes over one gallery, computed once and shared by many fits.

A validation sweep over the whole family (``best``) fits a dozen methods on the same
gallery, reference and gallery bank. Their fits read the same few passes over those
scores: the top-k reference scores of every gallery row (NNN, its variants, CSLS), the
log-sum-exp of ``beta * scores`` over a bank (QB-Norm, DBNorm), the plain top-k gallery
rows of every bank row (the activation sets of the dynamic variants). A
:class:`SharedScores` computes each pass once, with the same engine calls and block
plans the methods' own fits use (so a fit from it equals the fit, bit for bit), and
answers later requests from its cache. Methods read it through
:meth:`dehub.methods.BaseCorrector.fit_grid_from_shared`; a method whose fit reads
something else says so with ``shared_scores_obstacle()``.

The cache lives in the object (no global state); drop the object to free it.
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np

from .._validation import check_embeddings, check_same_dim
from ..engine.exact import DEFAULT_MEMORY_BUDGET, exact_search
from ._stats import streamed_logsumexp

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

    def reference_topk(self, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Each gallery row's ``k`` largest reference scores, sorted, and their reference rows.

        One exact search at the largest ``k`` asked so far; smaller ``k`` are its prefix
        (the engine's order: scores descending, ties to the smaller row).
        """
        k = int(k)
        if self._topk is None or self._topk[0].shape[1] < k:
            self._topk = exact_search(self.gallery, self.reference, k, memory_budget=self.memory_budget)
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
                lse = streamed_logsumexp(self.gallery, bank, nonzero, memory_budget=self.memory_budget)
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
            _, ids = exact_search(self.bank(name), self.gallery, k, memory_budget=self.memory_budget)
            self._act[name] = have = ids
            self.passes.append(f"{name} activation top-{k}")
        return have[:, :k]
