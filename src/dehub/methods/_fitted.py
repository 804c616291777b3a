"""The fitted state: sealed ``fit``, staleness, ``with_params`` (part of :mod:`dehub.methods.base`).

Fitted attributes (trailing underscore) are plain arrays set by ``fit`` and never
changed by parameters afterwards (scikit-learn's rule). ``fit`` and ``fit_grid`` of
every estimator class are sealed once (:data:`ENTRY_POINTS`, applied by
``BaseCorrector.__init_subclass__``): a fit records the parameters it was run with, a
parameter changed afterwards makes ``search``/``score`` raise :class:`StaleFitError`,
and :meth:`FittedState.with_params` returns a NEW fitted estimator where the fitted
statistics serve the change (else :class:`RefitRequiredError` naming ``fit``).
"""

from __future__ import annotations

import copy
import functools
from typing import Any, TypeVar

from .._errors import InputError, InputWarning
from ._parameters import Parameterized, same_value
from ._params import InvalidParameterError

__all__ = [
    "FittedState",
    "NotFittedError",
    "StaleFitError",
    "RefitRequiredError",
    "KClampedWarning",
    "ENTRY_POINTS",
]

_F = TypeVar("_F", bound="FittedState")


class NotFittedError(RuntimeError):
    """The estimator was used before ``fit``."""


class StaleFitError(InputError, NotFittedError):
    """A parameter changed after ``fit``: the fitted state no longer matches the parameters."""


class RefitRequiredError(InvalidParameterError):
    """:meth:`BaseCorrector.with_params` was asked for a change the fitted statistics cannot serve."""


class KClampedWarning(InputWarning):
    """``k`` exceeded the number of gallery items and was lowered to it (each surface names
    ``k`` its own way: ``k=`` in Python, ``--top`` for ``dehub search``)."""


def _sealed_fit(fit):
    """``fit`` that leaves the estimator unfitted on failure and sealed on success."""

    @functools.wraps(fit)
    def wrapper(self, *args, **kwargs):
        if self.__dict__.get("_fitting"):  # a subclass's fit calling super().fit()
            return fit(self, *args, **kwargs)
        self._unseal()
        self.__dict__["_fitting"] = True
        try:
            fit(self, *args, **kwargs)
        finally:
            del self.__dict__["_fitting"]
        self._seal()
        return self

    wrapper.__dehub_entry__ = True  # type: ignore[attr-defined]
    return wrapper


def _independent_grid(fit_grid):
    """``fit_grid`` run on a clone, each step yielded as its own sealed estimator."""

    @functools.wraps(fit_grid)
    def wrapper(self, gallery, reference, grid=None, **fit_kwargs):
        work = self.clone()
        for params, model in fit_grid(work, gallery, reference, grid, **fit_kwargs):
            yield params, (model._detached() if model is work else model)

    wrapper.__dehub_entry__ = True  # type: ignore[attr-defined]
    return wrapper


#: Public methods a subclass may still override, sealed for it (``fit`` by subclasses
#: written before the ``_fit`` hook, such as test doubles).
#: Public methods a subclass may still override, sealed for it (``fit`` by subclasses
#: written before the ``_fit`` hook, such as test doubles).
ENTRY_POINTS = {"fit": _sealed_fit, "fit_grid": _independent_grid}


class FittedState(Parameterized):
    """Whether the estimator is fitted with its current parameters, and how it is sealed."""

    def check_fitted(self) -> None:
        """Raise :class:`NotFittedError` unless fitted with the current parameters."""
        self._check_fitted()

    def with_params(self: _F, **params: Any) -> _F:
        """A NEW fitted estimator with ``params`` changed, sharing this one's fitted arrays.

        Only what the fitted statistics serve is allowed (the class's ``_cached_params``,
        e.g. NNN's ``alpha`` and any ``k`` up to the fitted one); anything else raises
        :class:`RefitRequiredError` naming ``fit``. ``self`` is left untouched.
        """
        self._check_fitted()
        self.check_param_names(params)
        current = self.get_params()
        changed = {key: value for key, value in params.items() if not same_value(current[key], value)}
        blocked = sorted(set(changed) - self._cached_param_names())
        label = type(self).__name__
        if blocked:
            served = ", ".join(sorted(self._cached_param_names())) or "none"
            asked = ", ".join(f"{key}={changed[key]!r}" for key in blocked)
            raise RefitRequiredError(
                f"{label}.with_params cannot change {', '.join(blocked)} without a new pass over the "
                f"data (the fitted statistics depend on them; it serves: {served}); received {asked}. "
                f"Fit a new estimator: {label}(...).fit(gallery, reference) or "
                f"clone({asked}).fit(gallery, reference)"
            )
        new = copy.copy(self)
        new._unseal()
        for key, value in changed.items():
            setattr(new, key, value)
        new._check_params()
        new._seal()
        return new

    # ------------------------------------------------------------------ checks
    def _check_fitted(self) -> None:
        """Raise unless fitted with the current parameters (no parameter validation here)."""
        fitted = self.__dict__.get("_fitted_params_")
        if fitted is None or getattr(self, "gallery_", None) is None:
            raise NotFittedError(
                f"this {type(self).__name__} is not fitted yet; call fit(gallery, reference) first"
            )
        now = self.get_params()
        if not all(same_value(now[key], fitted[key]) for key in now):
            self._stale(fitted, now)

    def _stale(self, fitted: dict[str, Any], now: dict[str, Any]) -> None:
        # The method's own relation checks say best why (e.g. "k=8 exceeds the k=4 used in fit").
        self._check_consistency()
        diff = ", ".join(
            f"{key}: {fitted[key]!r} -> {now[key]!r}" for key in now if not same_value(now[key], fitted[key])
        )
        changed = ", ".join(f"{key}={now[key]!r}" for key in now if not same_value(now[key], fitted[key]))
        raise StaleFitError(
            f"{type(self).__name__}: parameters changed after fit ({diff}); the fitted state "
            f"belongs to the old values. Call fit(gallery, reference) again, or start from the "
            f"fitted parameters and use with_params({changed}) where the fitted statistics serve it"
        )

    # ------------------------------------------------------------------ sealing
    def _seal(self) -> None:
        """Record the parameters of the fitted state and derive what follows from them."""
        self._finish_fit()
        self.__dict__["_fitted_params_"] = copy.deepcopy(self.get_params())

    def _unseal(self) -> None:
        self.__dict__.pop("_fitted_params_", None)

    def _finish_fit(self) -> None:
        """Derived fitted arrays computed once from the fitted statistics (override)."""
        return None

    def _detached(self: _F) -> _F:
        """A copy of this fitted estimator, sealed with its current parameters (``fit_grid``)."""
        new = copy.copy(self)
        fitted = self.__dict__.get("_fitted_params_")
        if fitted is None or not all(same_value(v, fitted[key]) for key, v in self.get_params().items()):
            new._seal()
        return new
