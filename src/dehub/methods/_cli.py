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

__all__ = ["add_method_param_options", "option_name"]


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


def _converter(default):
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
    from . import METHODS

    seen: dict[str, tuple[object, list[str]]] = {}
    for name, cls in METHODS.items():
        sig = inspect.signature(cls.__init__)
        for param in cls._param_names:
            default = sig.parameters[param].default
            conv, users = seen.setdefault(param, (_converter(default), []))
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
