"""Dual softmax (DSL) at inference: a transductive prior over the test queries.

Cheng, Lin, Zhang, Wang, Wei. *Improving Video-Text Retrieval by Multi-Stream Corpus
Alignment and Dual Softmax Loss* (CAMoE). arXiv 2109.04290. At inference the
similarity matrix of all test queries x gallery is multiplied by a softmax *over the
queries* (``sim * softmax(sim / T, dim=queries) * n_queries``)::

    DSL(q, r) = s(q, r) * n_Q * exp(s(q, r) / T) / sum_{q' in Q} exp(s(q', r) / T)

so a gallery item that many queries like (a hub) is damped. ``Q`` is the *whole test
query set*: the method looks at the test queries, which video-retrieval papers often
do without saying so. dehub offers it only as an explicitly transductive method
(``get_tags(DSL).transductive is True``; reports mark it).

In dehub the query set the softmax runs over is the ``reference`` passed to ``fit``:
the transductive setting of the paper is ``fit(gallery, reference=test_queries)``
(what :mod:`dehub.evaluation.best` does: validation queries for the sweep, test
queries for the test fit). With a held-out query bank instead it is a QB-Norm-like
prior and no longer transductive. ``L(r) = logsumexp_{q'}(s(q', r) / T)`` is streamed
(the softmax family's engine); score and search evaluate ``s * n_Q * exp(s / T - L(r))``
exactly (query-dependent: not an offset).

Range: with the query in the softmax's set (the transductive use) the prior is at most
1. With a held-out bank a query much closer to an item than every bank query gets a
prior ``exp(s/T - L(r))`` beyond float32: ``score`` and ``search`` (which ranks the same
float32 values) then give ``inf`` there, tied. Use the method as published.
"""

from __future__ import annotations

from numbers import Real
from typing import ClassVar

import numpy as np

from .._errors import InputError
from .._validation import check_same_dim
from ..engine.exact import DEFAULT_MEMORY_BUDGET
from ._dense import DenseScoreCorrector
from ._params import Constraint, Interval, check_real
from ._stats import compute_dtype, streamed_logsumexp
from ._tags import MethodTags
from .base import NotFittedError

__all__ = ["DSL"]


class DSL(DenseScoreCorrector):
    """Dual softmax inference (CAMoE); transductive: fit with the test queries as ``reference``.

    Parameters
    ----------
    temperature : float, default 0.01
        ``T`` of the softmax over queries (> 0); 0.01 is the common ``sim * 100``.

    Attributes
    ----------
    lse_ : (n_gallery,) float64
        ``L(r) = logsumexp_{q'}(s(q', r) / T)`` over the fitted query set.
    n_bank_ : int
        ``n_Q``, the number of queries the softmax runs over.
    """

    name = "dsl"
    _parameter_constraints: ClassVar[dict[str, list[Constraint]]] = {
        "temperature": [Interval(Real, 0.0, None, closed="neither")]
    }

    def __dehub_tags__(self) -> MethodTags:
        return MethodTags(transductive=True)

    def __init__(self, temperature: float = 0.01) -> None:
        self.temperature = temperature

    @classmethod
    def default_grid(cls) -> dict[str, list]:
        """T in {0.005, 0.01, 0.02, 0.05, 0.1}: one pass over the query set for all."""
        return {"temperature": [0.005, 0.01, 0.02, 0.05, 0.1]}

    def _check_consistency(self) -> None:
        fitted = getattr(self, "fitted_temperature_", None)
        if fitted is not None and fitted != float(self.temperature):
            raise InputError(
                f"temperature={self.temperature} differs from the {fitted} used in fit; refit "
                "(fit_grid shares one pass across a temperature grid)"
            )

    def _inputs(self, gallery, reference, normalize):
        gallery = self._prepare(gallery, "gallery", normalize)
        reference = self._prepare(reference, "reference (the query set of the softmax)", normalize)
        check_same_dim(gallery, reference, "gallery", "reference")
        return gallery, reference

    def _fit(self, gallery, reference, *, normalize, memory_budget, progress):
        """Normalizers of the softmax over ``reference`` (the test queries, transductively)."""
        self.fitted_temperature_ = None
        self._check_params()
        gallery, reference = self._inputs(gallery, reference, normalize)
        lse = streamed_logsumexp(
            gallery,
            reference,
            [1.0 / float(self.temperature)],
            memory_budget=memory_budget,
            progress="dsl logsumexp" if progress else False,
        )
        self._set(gallery, lse[:, 0], reference.shape[0], float(self.temperature))
        return self

    def _set(self, gallery, lse, n_bank, temperature) -> None:
        self.lse_ = lse
        self.n_bank_ = int(n_bank)
        self.gallery_ = gallery
        self.fitted_temperature_ = temperature

    def fit_grid(self, gallery, reference, grid=None, **fit_kwargs):
        """Every temperature of ``grid`` from one pass over the query set."""
        grid = self._check_grid(grid)
        temps = [
            check_real(t, "temperature", minimum=0.0, strict=True)
            for t in grid.get("temperature", [self.temperature])
        ]
        gallery, reference = self._inputs(gallery, reference, fit_kwargs.get("normalize", "warn"))
        lse = streamed_logsumexp(
            gallery,
            reference,
            [1.0 / t for t in temps],
            memory_budget=fit_kwargs.get("memory_budget", DEFAULT_MEMORY_BUDGET),
        )
        for j, t in enumerate(temps):
            self.fitted_temperature_ = None
            self.set_params(temperature=t)
            self._set(gallery, lse[:, j], reference.shape[0], t)
            yield {"temperature": t}, self

    def _block_scores(self, queries: np.ndarray, rows: slice) -> np.ndarray:
        return self._scores(queries, rows)

    def _scores(self, queries: np.ndarray, rows: slice) -> np.ndarray:
        if getattr(self, "lse_", None) is None:
            raise NotFittedError("DSL is not fitted yet; call fit(gallery, reference) first")
        dt = compute_dtype(queries, self.gallery_)
        s = (np.asarray(queries[rows], dtype=dt) @ np.asarray(self.gallery_, dtype=dt).T).astype(np.float64)
        prior = np.exp(s / float(self.temperature) - self.lse_[None, :])
        return s * prior * self.n_bank_

    def _score(self, queries: np.ndarray) -> np.ndarray:
        """Dense DSL scores ``s * n_Q * softmax_Q(s / T)``, shape (n_queries, n_gallery), float32."""
        with np.errstate(over="ignore"):  # see the module docstring (values beyond float32)
            return self._scores(queries, slice(0, queries.shape[0])).astype(np.float32)

    def export_vectors(self) -> np.ndarray:
        """Not exportable: the score multiplies s(q, r) by a per-pair prior."""
        raise InputError(
            "DSL scores per query (s(q, r) times a softmax prior), so no fixed vectors serve it; use search()"
        )

    def _fitted_arrays(self) -> dict[str, np.ndarray]:
        return {
            "lse": self.lse_,
            "n_bank": np.asarray([self.n_bank_], dtype=np.int64),
            "temperature": np.asarray([self.fitted_temperature_]),
        }

    def _restore(self, gallery, arrays) -> None:
        lse = np.asarray(arrays["lse"], dtype=np.float64)
        if lse.shape != (gallery.shape[0],):
            raise InputError(f"stored normalizers have shape {lse.shape}; expected ({gallery.shape[0]},)")
        self._set(
            gallery,
            lse,
            int(np.asarray(arrays["n_bank"]).ravel()[0]),
            float(np.asarray(arrays["temperature"]).ravel()[0]),
        )
