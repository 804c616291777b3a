"""What an index file stores of a fitted estimator, and how it comes back (part of :mod:`dehub.methods.base`).

:meth:`Persistence.persistence_arrays` gives the fitted arrays beside the gallery;
:meth:`Persistence.restore` is its inverse: it validates the parameters once (they come
from a file), the arrays by :meth:`Persistence.check_persistence_arrays`, then seals.
A method overrides ``_fitted_arrays``/``_restore`` (and the array checks) only.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TypeVar

import numpy as np

from ._fitted import FittedState

__all__ = ["Persistence"]

_S = TypeVar("_S", bound="Persistence")


class Persistence(FittedState):
    """Fitted arrays to and from an index file."""

    gallery_: np.ndarray

    def persistence_arrays(self) -> dict[str, np.ndarray]:
        """The fitted arrays an index file stores beside the gallery (name -> array)."""
        self._check_fitted()
        return self._fitted_arrays()

    def restore(
        self: _S, gallery: np.ndarray, arrays: Mapping[str, np.ndarray], *, n_reference: int | None = None
    ) -> _S:
        """Make this (unfitted) estimator fitted from a checked gallery and stored arrays.

        The inverse of :meth:`persistence_arrays`; the parameters are validated once
        here (they come from a file), the arrays by :meth:`check_persistence_arrays`.
        ``n_reference``: the reference rows of the fit, when the file says. Returns ``self``.
        """
        self._unseal()
        self._check_params_unfitted()
        self.check_persistence_arrays(arrays, n_reference)
        self._restore(gallery, dict(arrays))
        self._check_params()
        self._seal()
        return self

    def check_persistence_arrays(self, arrays: Mapping[str, np.ndarray], n_reference: int | None) -> None:
        """Raise ``ValueError`` naming the array when stored arrays are not what this method writes
        (dtypes, value ranges); shapes against the gallery are checked by ``_restore``."""
        return None

    def _fitted_arrays(self) -> dict[str, np.ndarray]:
        """Fitted statistics to store in an index file (the gallery is stored apart)."""
        return {}

    def _restore(self, gallery: np.ndarray, arrays: dict[str, np.ndarray]) -> None:
        """Inverse of :meth:`_fitted_arrays`: make a fitted estimator from stored arrays."""
        self.gallery_ = gallery
