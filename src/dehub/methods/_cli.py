"""Command-line options for the parameters of every registered method.

``dehub build --method NAME`` accepts one option per constructor parameter of any
registered method (``--k``, ``--alpha``, ``--beta``, ``--beta1``, ``--beta2``,
``--dynamic``, ``--lambda``, ``--statistic``, ``--trim``, ``--temperature``...), built from
the classes' signatures so a new method needs no CLI change. Every option defaults to
``None``: parameters not given keep the chosen method's own defaults.
"""

from __future__ import annotations

import argparse
import inspect
from collections.abc import Callable
from numbers import Integral

from .._errors import InputError
from .._json import OPTION_JSON_LIMITS, JSONReadError, parse_json
from . import METHODS
from ._params import Boolean, Interval, InvalidParameterError

__all__ = ["add_method_param_options", "option_name", "method_params_from_args", "json_object"]


def option_name(param: str) -> str:
    """``lambda_`` -> ``--lambda``, ``some_param`` -> ``--some-param``."""
    return "--" + param.rstrip("_").replace("_", "-")


def _parse_bool(text: str) -> bool:
    low = text.strip().lower()
    if low in ("1", "true", "yes", "on"):
        return True
    if low in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false; received {text!r}")


def json_object(text: str, *, example: str = '{"nprobe": 8}') -> dict:
    """An argparse type: a JSON object, read by the bounded reader (one parser for every
    JSON option of the CLI); errors say what was expected (``example``) and received."""
    try:
        value = parse_json(text, source="the option's JSON", limits=OPTION_JSON_LIMITS)
    except JSONReadError as exc:
        raise argparse.ArgumentTypeError(f"expected a JSON object; received {text[:80]!r}: {exc}") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError(f"expected a JSON object such as '{example}'; received {text!r}")
    return value


def _converter(default, forms) -> Callable[[str], object]:
    """How to parse the option: from the declared constraints, else from the default's type."""
    for form in forms or ():
        if isinstance(form, Boolean):
            return _parse_bool
        if isinstance(form, Interval):
            return int if form.kind is Integral else float
        if form is dict:
            return json_object
    if isinstance(default, bool):
        return _parse_bool
    if isinstance(default, int):
        return int
    if isinstance(default, float):
        return float
    return str


def add_method_param_options(parser: argparse.ArgumentParser) -> None:
    """Add one ``--param`` option per distinct parameter of the registered methods.

    Options the parser already has (declared explicitly by the core CLI) are kept as
    they are; their ``dest`` must be the parameter name for ``_method_params``.
    """

    seen: dict[str, tuple[Callable[[str], object], list[str]]] = {}
    for name, cls in METHODS.items():
        sig = inspect.signature(cls.__init__)
        for param in cls._get_param_names():
            default = sig.parameters[param].default
            forms = cls._parameter_constraints.get(param)
            conv, users = seen.setdefault(param, (_converter(default, forms), []))
            users.append(f"{name}={default!r}")
    for param, (conv, users) in seen.items():
        if option_name(param) in parser._option_string_actions:
            continue  # declared by the core CLI (e.g. --engine) with its own help
        parser.add_argument(
            option_name(param),
            dest=param,
            type=conv,
            default=None,
            help="parameter of " + ", ".join(users) + " (default: the method's own)",
        )


def method_params_from_args(args: argparse.Namespace, method: str) -> dict:
    """The parameters given on the command line for ``method`` (options left at ``None`` skipped).

    An option that belongs only to other methods (``--alpha`` with ``--method plain``)
    is an :class:`~dehub.methods.InvalidParameterError` naming ``method``'s parameters.
    """

    if method not in METHODS:
        raise InputError(f"unknown method {method!r}; expected one of {sorted(METHODS)}")
    cls = METHODS[method]
    every = {p for c in METHODS.values() for p in c._get_param_names()}
    given = {p: getattr(args, p) for p in sorted(every) if getattr(args, p, None) is not None}
    own = set(cls._get_param_names())
    foreign = [option_name(p) for p in given if p not in own]
    if foreign:
        listed = ", ".join(option_name(p) for p in cls._get_param_names()) or "none"
        raise InvalidParameterError(
            f"{', '.join(foreign)} {'does' if len(foreign) == 1 else 'do'} not apply to method "
            f"{method!r}; its options are: {listed}"
        )
    return {p: v for p, v in given.items() if p in own}
