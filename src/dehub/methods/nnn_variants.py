"""Generalizations of NNN's bias statistic: robust (trimmed mean, median) and soft (log-mean-exp).

NNN (Chowdhury et al., EMNLP 2024, Eq. 1) sets ``b(r) = alpha * mean(top-k reference
similarities of r)``. The mean of the top-k is sensitive to a few near-duplicate
reference queries; these variants replace it with another statistic ``T`` of the same
sorted top-k scores ``s_(1) >= ... >= s_(k)`` (NNN's cache ``topk_scores_``), so every
(k, alpha, statistic parameter) of a sweep still costs one pass over the reference::

    b(r) = alpha * T(s_(1), ..., s_(k))

* :class:`RobustNNN` ``statistic="trimmed"``: the symmetric trimmed mean that drops
  ``floor(trim * k)`` scores at each end (``scipy.stats.trim_mean``'s convention);
  ``statistic="median"``: the median of the top-k.
* :class:`SoftNNN`: the log-mean-exp with temperature ``temperature``,
  ``T = temperature * log((1/k) sum_i exp(s_(i) / temperature))`` (computed with max
  subtraction), which moves from the mean (temperature -> inf) to the maximum
  (temperature -> 0). It equals the log-sum-exp minus ``temperature * log k``, a constant
  that does not change the ranking.

All are additive per-item biases (served and exported exactly like NNN). These are
dehub's generalizations, not methods of a separate paper.
"""

from __future__ import annotations

from abc import abstractmethod
from numbers import Real
from typing import ClassVar, Literal

import numpy as np

from ._params import Constraint, Interval, Options
from .nnn import NNN

__all__ = ["RobustNNN", "SoftNNN"]

Statistic = Literal["trimmed", "median"]


class _CachedNNNVariant(NNN):
    """NNN with another statistic of the cached sorted top-k scores.

    Subclasses implement :meth:`_statistic` and list its parameters in ``_bias_params``
    (the bias cache key; ``fit_grid`` sweeps them all from one reference pass).
    """

    @abstractmethod
    def _statistic(self, top: np.ndarray) -> np.ndarray:
        """``(n_gallery, k)`` sorted descending -> ``(n_gallery,)`` float64."""

    def _compute_bias(self) -> np.ndarray:
        top = self.topk_scores_[:, : int(self.k)].astype(np.float64)
        return float(self.alpha) * self._statistic(top)


class RobustNNN(_CachedNNNVariant):
    """NNN with a robust statistic of the top-k reference similarities.

    Parameters
    ----------
    k, alpha, engine, engine_params, precision : as :class:`dehub.NNN`.
    statistic : {"trimmed", "median"}, default "trimmed"
        Trimmed mean (drops ``floor(trim * k)`` scores at each end) or median.
    trim : float in [0, 0.5), default 0.125
        Fraction cut at each end by the trimmed mean (ignored by the median);
        ``trim = 0`` gives NNN exactly.
    """

    name = "robust_nnn"
    _parameter_constraints: ClassVar[dict[str, list[Constraint]]] = {
        **NNN._parameter_constraints,
        "statistic": [Options("trimmed", "median")],
        "trim": [Interval(Real, 0.0, 0.5, closed="left")],
    }
    _bias_params = ("k", "alpha", "statistic", "trim")

    def __init__(
        self,
        k: int = 16,
        alpha: float = 0.75,
        statistic: Statistic = "trimmed",
        trim: float = 0.125,
        engine: str = "exact",
        engine_params: dict | None = None,
        precision: str = "fp32",
    ) -> None:
        super().__init__(k=k, alpha=alpha, engine=engine, engine_params=engine_params, precision=precision)
        self.statistic = statistic
        self.trim = trim

    @classmethod
    def default_grid(cls) -> dict[str, list]:
        """k in {8, 16, 32, 64}, alpha in {0.5, 0.75, 1.0}, trim in {0.125, 0.25} (24 points)."""
        return {"k": [8, 16, 32, 64], "alpha": [0.5, 0.75, 1.0], "trim": [0.125, 0.25]}

    def _statistic(self, top: np.ndarray) -> np.ndarray:
        k = top.shape[1]
        if self.statistic == "median":
            return 0.5 * (top[:, (k - 1) // 2] + top[:, k // 2])
        cut = int(float(self.trim) * k)
        return top[:, cut : k - cut].mean(axis=1)


class SoftNNN(_CachedNNNVariant):
    """NNN with a soft maximum (log-mean-exp) of the top-k reference similarities.

    Parameters
    ----------
    k, alpha, engine, engine_params, precision : as :class:`dehub.NNN`.
    temperature : float > 0, default 0.05
        Temperature of the log-mean-exp; large values give NNN's mean, small ones the
        top-1 similarity.
    """

    name = "soft_nnn"
    _parameter_constraints: ClassVar[dict[str, list[Constraint]]] = {
        **NNN._parameter_constraints,
        "temperature": [Interval(Real, 0.0, None, closed="neither")],
    }
    _bias_params = ("k", "alpha", "temperature")

    def __init__(
        self,
        k: int = 16,
        alpha: float = 0.75,
        temperature: float = 0.05,
        engine: str = "exact",
        engine_params: dict | None = None,
        precision: str = "fp32",
    ) -> None:
        super().__init__(k=k, alpha=alpha, engine=engine, engine_params=engine_params, precision=precision)
        self.temperature = temperature

    @classmethod
    def default_grid(cls) -> dict[str, list]:
        """k in {8, 16, 32, 64}, alpha in {0.5, 0.75, 1.0}, temperature in {0.02, 0.1} (24 points)."""
        return {"k": [8, 16, 32, 64], "alpha": [0.5, 0.75, 1.0], "temperature": [0.02, 0.1]}

    def _statistic(self, top: np.ndarray) -> np.ndarray:
        t = float(self.temperature)
        m = top[:, 0]  # sorted descending: the row maximum
        return m + t * np.log(np.exp((top - m[:, None]) / t).mean(axis=1))
