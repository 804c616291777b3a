"""The estimator's parameters, scikit-learn's shape (part of :mod:`dehub.methods.base`).

The parameters are exactly the arguments of ``__init__`` (``get_params``/``set_params``/
``clone``); their allowed values are declared once in the class dict
``_parameter_constraints`` (:mod:`dehub.methods._params`) and checked by
:meth:`Parameterized._check_params`, which every ``fit``/``search``/``score`` calls.
Relations between parameters and checks against the fitted state go in
:meth:`Parameterized._check_consistency`. Unknown parameters and grid keys are
:class:`~dehub.methods._params.InvalidParameterError` naming the real parameters.
"""

from __future__ import annotations

import copy
import functools
import inspect
from abc import ABC
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar, TypeVar

import numpy as np

from ._params import Constraint, InvalidParameterError, validate_parameters

__all__ = ["Parameterized", "same_value"]

_P = TypeVar("_P", bound="Parameterized")


def same_value(a: Any, b: Any) -> bool:
    """``a == b`` as a bool; arrays and exotic values compare by identity."""
    try:
        return bool(a == b)
    except Exception:  # arrays or exotic values: compare by identity
        return a is b


class Parameterized(ABC):  # noqa: B024  (a part of BaseCorrector, never used alone)
    """Parameter handling: names from ``__init__``, get/set/clone, declared checks, grids."""

    #: Registry name (``dehub.methods.get_method(name)``) and index-file method tag.
    name: ClassVar[str] = ""
    #: Allowed values of every ``__init__`` parameter (see :mod:`dehub.methods._params`).
    _parameter_constraints: ClassVar[dict[str, list[Constraint]]] = {}
    #: Parameters :meth:`with_params` may change on a fitted estimator (served by its
    #: fitted statistics); :meth:`_check_consistency` says which values they may take.
    _cached_params: ClassVar[frozenset[str]] = frozenset()

    @classmethod
    def _get_param_names(cls) -> tuple[str, ...]:
        """The parameter names: the named arguments of ``__init__``, in order."""
        return _init_param_names(cls)

    @classmethod
    def check_param_names(cls, names, *, what: str = "parameter") -> None:
        """Raise :class:`InvalidParameterError` if any of ``names`` is not a parameter."""
        real = cls._get_param_names()
        unknown = [n for n in names if n not in real]
        if unknown:
            label = cls.name or cls.__name__
            listed = ", ".join(real) if real else "none"
            raise InvalidParameterError(
                f"method {label!r} has no {what}{'s' if len(unknown) > 1 else ''} "
                f"{', '.join(repr(u) for u in unknown)}; its parameters are: {listed}"
            )

    def get_params(self, deep: bool = True) -> dict[str, Any]:
        """Parameter name -> value (``deep`` is accepted for scikit-learn compatibility)."""
        return {p: getattr(self, p) for p in self._get_param_names()}

    def set_params(self: _P, **params: Any) -> _P:
        """Set parameters by name (unknown names raise, naming the real ones); returns ``self``.

        On a fitted estimator a changed parameter takes effect only through a new
        ``fit``: until then ``search``/``score`` raise :class:`StaleFitError`. To change
        parameters that the fitted statistics serve, use :meth:`with_params`.
        """
        self.check_param_names(params)
        for key, value in params.items():
            setattr(self, key, value)
        return self

    def clone(self: _P, **params: Any) -> _P:
        """A new unfitted estimator with the same parameters (deep-copied), updated by ``params``."""
        self.check_param_names(params)
        return type(self)(**{**copy.deepcopy(self.get_params()), **params})

    def _cached_param_names(self) -> frozenset[str]:
        """The parameters :meth:`with_params` may change (class attribute ``_cached_params``)."""
        return self._cached_params

    def _check_params(self) -> None:
        """Validate every parameter against ``_parameter_constraints``, then the relations."""
        validate_parameters(self._parameter_constraints, self.get_params(), type(self).__name__)
        self._check_consistency()

    def _check_consistency(self) -> None:
        """Relations between parameters and with the fitted state (override when needed)."""
        return None

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_params().items())
        return f"{type(self).__name__}({args})"

    def check_params(self) -> None:
        """Validate the parameters (values and relations) once, at an entry point."""
        self._check_params()

    def _check_params_unfitted(self) -> None:
        """The declared constraints only (no relations with a fitted state): a restore's first check."""
        validate_parameters(self._parameter_constraints, self.get_params(), type(self).__name__)

    # ------------------------------------------------------------------ grids
    @classmethod
    def default_grid(cls) -> dict[str, list]:
        """The hyperparameter grid swept on a validation split (parameter -> values)."""
        return {}

    def _check_grid(self, grid: Mapping[str, Sequence] | None) -> dict[str, list]:
        """``default_grid()`` when None; unknown keys raise naming the real parameters."""
        if grid is None:
            return self.default_grid()
        self.check_param_names(list(grid), what="grid parameter")
        out = {}
        for key, values in grid.items():
            if isinstance(values, (str, bytes)) or not isinstance(values, Sequence | np.ndarray):
                raise InvalidParameterError(
                    f"grid values must be a list per parameter; received {key}={values!r}"
                )
            out[key] = list(values)
        return out


@functools.cache
def _init_param_names(cls: type) -> tuple[str, ...]:
    """The named arguments of ``cls.__init__``, in order; read once per class (an
    ``inspect.signature`` costs ~25 us, which a one-query search asked for three times)."""
    init = cls.__init__  # type: ignore[misc]
    if init is object.__init__:
        return ()
    names = []
    for p in list(inspect.signature(init).parameters.values())[1:]:
        if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
            raise TypeError(
                f"{cls.__name__}.__init__ must name every parameter (no *args/**kwargs); found {p}"
            )
        names.append(p.name)
    return tuple(names)
