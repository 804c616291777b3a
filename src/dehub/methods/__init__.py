"""Correction methods, one module each, and the registry that runs them by name."""

from __future__ import annotations

from .base import AdditiveBiasCorrector, BaseCorrector, NotFittedError
from .nnn import NNN
from .plain import Plain

__all__ = [
    "BaseCorrector",
    "AdditiveBiasCorrector",
    "NotFittedError",
    "NNN",
    "Plain",
    "METHODS",
    "get_method",
]

#: Registry: method name -> estimator class. Names are what the CLI and the evaluation
#: harness accept and what index files record.
METHODS: dict[str, type[BaseCorrector]] = {
    cls.name: cls
    for cls in (Plain, NNN)
}


def get_method(name: str, **params) -> BaseCorrector:
    """A new, unfitted estimator of the method called ``name`` with ``params``."""
    try:
        cls = METHODS[name]
    except KeyError:
        raise ValueError(
            f"unknown method {name!r}; expected one of {sorted(METHODS)}"
        ) from None
    return cls(**params)
