"""Declarative parameter constraints, checked in one place for every method.

Each estimator class declares ``_parameter_constraints``: parameter name -> list of
allowed forms; a value is valid when it satisfies at least one (scikit-learn's shape)::

    _parameter_constraints = {
        "k": [Interval(Integral, 1, None)],
        "alpha": [Interval(Real, 0.0, None)],
        "statistic": [Options("trimmed", "median")],
        "dynamic": [Boolean()],
        "engine_params": [None, dict],
    }

Forms: :class:`Interval`, :class:`Options`, :class:`Boolean`, ``None`` (the value
``None``) or a type (``isinstance``). :func:`validate_parameters` checks a parameter
dict and raises :class:`InvalidParameterError` naming the parameter, what was
expected and what was received. Relations between parameters and checks against the
fitted state stay in the estimator (``BaseCorrector._check_consistency``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from numbers import Integral, Real
from typing import Any, Literal

import numpy as np

from .._errors import InputTypeError

__all__ = [
    "FLOAT32_MAX",
    "InvalidParameterError",
    "Interval",
    "Options",
    "Boolean",
    "Constraint",
    "validate_parameters",
    "check_real",
    "check_int",
]


#: float32's largest finite value: the upper bound of every scale parameter (alpha, beta,
#: tau, lambda), whose products with scores must stay representable in float32 results.
FLOAT32_MAX = float(np.finfo(np.float32).max)


class InvalidParameterError(InputTypeError):
    """A parameter of a method is unknown, inapplicable or has an invalid value.

    Subclasses both ``ValueError`` and ``TypeError`` (as scikit-learn's does), so code
    written against either keeps working.
    """


def _is_int(value: Any) -> bool:
    return isinstance(value, (Integral, np.integer)) and not isinstance(value, (bool, np.bool_))


def _is_real(value: Any) -> bool:
    return isinstance(value, (Real, np.floating, np.integer)) and not isinstance(value, (bool, np.bool_))


@dataclass(frozen=True)
class Interval:
    """A number of ``kind`` (``Integral`` or ``Real``) within ``[low, high]``.

    ``closed`` says which ends are included; ``None`` ends are unbounded. Real values
    must be finite.
    """

    kind: type
    low: float | None
    high: float | None
    closed: Literal["both", "left", "right", "neither"] = "both"

    def _bounds(self) -> str:
        parts = []
        if self.low is not None:
            parts.append((">= " if self.closed in ("both", "left") else "> ") + f"{self.low:g}")
        if self.high is not None:
            parts.append(("<= " if self.closed in ("both", "right") else "< ") + f"{self.high:g}")
        return " and ".join(parts)

    def describe(self) -> str:
        what = "an integer" if self.kind is Integral else "a finite real number"
        bounds = self._bounds()
        return f"{what} {bounds}" if bounds else what

    def accepts(self, value: Any) -> bool:
        if self.kind is Integral:
            if not _is_int(value):
                return False
        elif not _is_real(value) or not math.isfinite(float(value)):
            return False
        v = float(value)
        if self.low is not None:
            if v < self.low or (v == self.low and self.closed in ("right", "neither")):
                return False
        if self.high is not None:
            if v > self.high or (v == self.high and self.closed in ("left", "neither")):
                return False
        return True


@dataclass(frozen=True)
class Options:
    """One of a fixed set of values (strings, typically)."""

    values: tuple[Any, ...]

    def __init__(self, *values: Any) -> None:
        object.__setattr__(self, "values", tuple(values))

    def describe(self) -> str:
        return "one of " + ", ".join(repr(v) for v in self.values)

    def accepts(self, value: Any) -> bool:
        return isinstance(value, str | int | float | bool | type(None)) and value in self.values


@dataclass(frozen=True)
class Boolean:
    """``True`` or ``False`` (numpy booleans included; integers are not booleans)."""

    def describe(self) -> str:
        return "True or False"

    def accepts(self, value: Any) -> bool:
        return isinstance(value, (bool, np.bool_))


Constraint = Interval | Options | Boolean | type | None


def _describe(form: Constraint) -> str:
    if form is None:
        return "None"
    if isinstance(form, type):
        return f"a {form.__name__}"
    return form.describe()


def _accepts(form: Constraint, value: Any) -> bool:
    if form is None:
        return value is None
    if isinstance(form, type):
        return isinstance(value, form)
    return form.accepts(value)


def describe(forms: Sequence[Constraint]) -> str:
    """Human description of a constraint list (``"an integer >= 1 or None"``)."""
    return " or ".join(_describe(f) for f in forms)


def validate_parameters(
    constraints: Mapping[str, Sequence[Constraint]], params: Mapping[str, Any], owner: str
) -> None:
    """Raise :class:`InvalidParameterError` for the first parameter that fits none of its forms.

    Parameters without a declared constraint are not checked here (the contract test
    suite requires every registered method to declare all of them).
    """
    for name, value in params.items():
        forms = constraints.get(name)
        if forms is None:
            continue
        if not any(_accepts(f, value) for f in forms):
            raise InvalidParameterError(
                f"{owner}: {name} must be {describe(forms)}; received {name}={value!r}"
            )


def check_real(value: Any, name: str, *, minimum: float | None = None, strict: bool = False) -> float:
    """A finite real number ``>= minimum`` (``> minimum`` when ``strict``), for grid values."""
    form = Interval(Real, minimum, None, closed="neither" if strict else "both")
    if not form.accepts(value):
        raise InvalidParameterError(f"{name} must be {form.describe()}; received {name}={value!r}")
    return float(value)


def check_int(value: Any, name: str, *, minimum: int = 1) -> int:
    """An integer ``>= minimum`` (booleans rejected)."""
    form = Interval(Integral, minimum, None)
    if not form.accepts(value):
        raise InvalidParameterError(f"{name} must be {form.describe()}; received {name}={value!r}")
    return int(value)
