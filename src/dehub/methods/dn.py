"""Distribution normalization (DN).

Zhou, Chen, Wang, Bhatt, Stoica, Kodialam, Sun. *Test-Time Distribution Normalization for
Contrastively Learned Vision-language Models*. NeurIPS 2023, arXiv 2302.11084.

DN shifts both sides of the dot product by ``lambda`` times the mean of a small bank of
(unlabeled) samples of the same modality::

    DN(q, r) = (q - lambda mu_Q) . (r - lambda mu_G)

with ``mu_Q`` the mean of a query-modality bank (dehub's ``reference``) and ``mu_G`` the
mean of a gallery-modality bank. The paper's first-order derivation gives ``lambda = 1/2``.

Rank equivalence: expanding,
``DN(q, r) = s(q, r) - lambda mu_Q . r  +  [lambda^2 mu_Q . mu_G - lambda q . mu_G]``; the
bracket depends on the query only, and ``mu_Q . r`` is the mean similarity of ``r`` to
*all* reference queries. So DN ranks exactly like NNN with ``k = |reference|`` and
``alpha = lambda``: an additive per-item bias ``bias_ = lambda mu_Q . r``, served by one
exact search with offset (exportable like NNN). Fit is one streamed pass over each bank
(means) and one over the gallery; no similarity matrix is formed.

Gallery bank: ``mu_G`` only enters the per-query term (the true DN value, not the
ranking). ``fit(gallery, reference, gallery_bank=None)`` uses the gallery itself by
default (test-time unlabeled gallery samples, as the paper's setting allows); pass a
held-out gallery-modality bank (e.g. validation images) to match the paper exactly.
"""

from __future__ import annotations

from numbers import Real
from typing import ClassVar

import numpy as np

from .._errors import InputError
from ._affine import AffineBiasCorrector
from ._cost import Work, grid_count, ranking_work
from ._params import FLOAT32_MAX, Constraint, Interval, InvalidParameterError
from ._stats import column_mean, matvec
from ._tags import MethodTags

__all__ = ["DN"]


class DN(AffineBiasCorrector):
    """Distribution normalization (Zhou et al., NeurIPS 2023).

    Parameters
    ----------
    lambda_ : float, default 0.5
        The paper's ``lambda`` (``lambda`` is a Python keyword, hence the underscore; the
        CLI option is ``--lambda``): scale of the subtracted bank means, >= 0.

    Attributes
    ----------
    reference_mean_ : (d,) float64
        ``mu_Q``, mean of the reference (query-modality) bank.
    gallery_bank_mean_ : (d,) float64
        ``mu_G``, mean of the gallery-modality bank.
    mean_reference_score_ : (n_gallery,) float64
        ``mu_Q . r`` for every gallery item (the mean reference similarity).
    bias_ : (n_gallery,) float64
        ``lambda_ * mean_reference_score_``.
    """

    name = "dn"
    _cached_params = frozenset({"lambda_"})
    _parameter_constraints: ClassVar[dict[str, list[Constraint]]] = {
        "lambda_": [Interval(Real, 0.0, FLOAT32_MAX)]
    }

    def __dehub_tags__(self) -> MethodTags:
        # Offset: the query-only bracket of the expansion never changes a ranking.
        return MethodTags(offset=True, gallery_bank=True)

    def __init__(self, lambda_: float = 0.5) -> None:
        self.lambda_ = lambda_

    @classmethod
    def default_grid(cls) -> dict[str, list]:
        """lambda in 0.25..1.5 step 0.125 (NNN's alpha grid, since alpha = lambda)."""
        return {"lambda_": [0.25 + 0.125 * i for i in range(11)]}

    def _fit(self, gallery, reference, *, gallery_bank=None, normalize, memory_budget, progress):
        """Compute the bank means and the per-item bias statistic.

        ``gallery_bank`` defaults to the gallery itself (see the module docstring);
        ``memory_budget``/``progress`` are accepted for the common contract (the means
        are streamed in fixed-size chunks).
        """
        self._check_params()
        gallery, reference, bank = self._prepare_banks(gallery, reference, gallery_bank, normalize)
        self.reference_mean_ = column_mean(reference)
        self.gallery_bank_mean_ = column_mean(bank)
        self.mean_reference_score_ = matvec(gallery, self.reference_mean_)
        self.gallery_ = gallery
        return self

    def fit_grid(self, gallery, reference, grid=None, **fit_kwargs):
        """Every lambda of ``grid`` from one fit (the statistics do not depend on lambda)."""
        grid = self._check_grid(grid)
        self.fit(gallery, reference, **fit_kwargs)
        for lam in grid.get("lambda_", [self.lambda_]):
            self.set_params(lambda_=lam)
            self._check_params()
            yield {"lambda_": lam}, self

    def sweep_work(self, shape, grid=None):
        """Column means and one matrix-vector product; then offsets only."""
        n = grid_count(self._check_grid(grid))
        rows = shape.n_reference + shape.n_bank + shape.n_gallery
        return Work(elem=float(rows) * shape.dim) + ranking_work(shape, n)

    def _compute_bias(self) -> np.ndarray:
        return float(self.lambda_) * self.mean_reference_score_

    def distributed_obstacle(self, *, gallery_bank: bool = False) -> str | None:
        return "its gallery-bank mean is a statistic of the whole gallery, not of each row"

    def _finish_fit(self) -> None:
        super()._finish_fit()
        # The query term lambda^2 mu_Q . mu_G - lambda q . mu_G must stay finite too (|q| <= 1).
        lam = float(self.lambda_)
        worst = lam * lam * abs(float(self.reference_mean_ @ self.gallery_bank_mean_)) + lam * float(
            np.linalg.norm(self.gallery_bank_mean_)
        )
        if not worst <= FLOAT32_MAX:
            mu = max(abs(float(self.reference_mean_ @ self.gallery_bank_mean_)), 1e-300)
            raise InvalidParameterError(
                f"DN(lambda_={self.lambda_!r}): the corrected scores would overflow float32 (the query "
                f"term reaches {worst:.3g}); for this fit lambda_ must be about <= {np.sqrt(FLOAT32_MAX / 2 / mu):.4g}"
            )

    def _query_term(self, queries, *, memory_budget: int) -> np.ndarray:
        lam = float(self.lambda_)
        return lam * lam * float(self.reference_mean_ @ self.gallery_bank_mean_) - lam * matvec(
            queries, self.gallery_bank_mean_
        )

    # ------------------------------------------------------------------ persistence
    def _fitted_arrays(self) -> dict[str, np.ndarray]:
        return {
            "reference_mean": self.reference_mean_,
            "gallery_bank_mean": self.gallery_bank_mean_,
            "mean_reference_score": self.mean_reference_score_,
        }

    def _restore(self, gallery, arrays) -> None:
        mu_q = np.asarray(arrays["reference_mean"], dtype=np.float64)
        mu_g = np.asarray(arrays["gallery_bank_mean"], dtype=np.float64)
        m = np.asarray(arrays["mean_reference_score"], dtype=np.float64)
        d, n = gallery.shape[1], gallery.shape[0]
        if mu_q.shape != (d,) or mu_g.shape != (d,) or m.shape != (n,):
            raise InputError(
                f"stored DN statistics do not match the gallery ({n}, {d}): reference_mean "
                f"{mu_q.shape}, gallery_bank_mean {mu_g.shape}, mean_reference_score {m.shape}"
            )
        self.reference_mean_, self.gallery_bank_mean_, self.mean_reference_score_ = mu_q, mu_g, m
        self.gallery_ = gallery
