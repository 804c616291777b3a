"""Structured errors for bad input: what, expected, received, fix, rendered per surface.

A library error names parameters the way Python callers write them (``reference=...``);
the command line names the same thing by its flag (``--reference FILE``) and installs an
extra from a clone of dehub. Instead of rewriting message text, an error keeps its parts
(:class:`Message`) and the names of the parameters its fix mentions, and each surface
renders it: ``exc.render(surface)`` with a :class:`Surface` (the CLI's looks each flag up
in its own parser); ``str(exc)`` is the Python rendering.

Every error dehub raises about the caller's input or environment derives from
:class:`UserError`; the CLI shows those as one line and anything else as a bug in dehub.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import NamedTuple

__all__ = [
    "Message",
    "Surface",
    "Param",
    "Command",
    "PYTHON",
    "python_spelling",
    "UserError",
    "InputError",
    "InputTypeError",
    "UnknownIdsError",
    "MissingExtraError",
    "InputWarning",
]

#: The value a fix suggests for a parameter, as Python source text (``"True"``,
#: ``"'l2'"``); None for "a value"; a tuple for alternatives (``("'exact'", "'ivf'")``).
ParamValue = str | None | tuple[str, ...]


class Param(NamedTuple):
    """A placeholder's parameter when one fix names a parameter twice
    (``{"l2": Param("normalize", "'l2'"), "none": Param("normalize", "'none'")}``)."""

    name: str
    value: ParamValue


class Command(NamedTuple):
    """A fix that names an operation: ``Index.build(...)`` in Python, ``dehub build`` on
    the command line."""

    python: str
    cli: str


def _alternatives(values: tuple[str, ...]) -> str:
    return values[0] if len(values) == 1 else ", ".join(values[:-1]) + " or " + values[-1]


def python_spelling(param: str, value: ParamValue = None) -> str:
    """How a Python caller passes ``param``: ``reference=...``, ``keep_reference=True``, or
    alternatives ``engine='exact' or 'ivf'``."""
    if isinstance(value, tuple):
        return f"{param}={_alternatives(value)}"
    return f"{param}={value if value is not None else '...'}"


def _pip_install(extra: str) -> str:
    return f"pip install dehub[{extra}]"


@dataclass(frozen=True)
class Surface:
    """How one front end spells a fix: a parameter (``param(name, value)``), the
    installation of an extra (``install(extra)``) and an operation (``command``)."""

    param: Callable[[str, ParamValue], str]
    install: Callable[[str], str]
    command: Callable[[Command], str] = lambda c: c.python


#: The library's own spelling: ``reference=...``, ``normalize='l2'``, ``pip install dehub[faiss]``.
PYTHON = Surface(param=python_spelling, install=_pip_install)


@dataclass(frozen=True)
class Message:
    """The parts of one error or warning.

    ``what`` alone is a complete message that names no parameter. ``fix`` names
    parameters as ``{placeholder}``: ``params`` maps each placeholder to the value the fix
    suggests, to a :class:`Param` when one fix names a parameter twice, or to a
    :class:`Command` (an operation each surface names its own way);
    ``{install}`` is the installation of the extra ``install``. ``subject``: a parameter
    the message is about, spelled by the surface in front of ``what`` (``k=500 exceeds
    ...`` in Python, ``--top 500 exceeds ...`` where the command line calls ``k`` so).
    """

    what: str
    expected: str | None = None
    received: str | None = None
    fix: str | None = None
    params: Mapping[str, ParamValue | Param | Command] = field(default_factory=dict)
    install: str | None = None
    subject: Param | None = None

    def render(self, surface: Surface = PYTHON) -> str:
        text = self.what
        if self.subject is not None:
            text = f"{surface.param(self.subject.name, self.subject.value)} {text}"
        if self.expected is not None:
            text += f"; expected {self.expected}"
        if self.received is not None:
            text += f"; received {self.received}"
        if self.fix:
            names = {}
            for key, value in self.params.items():
                if isinstance(value, Command):
                    names[key] = surface.command(value)
                elif isinstance(value, Param):
                    names[key] = surface.param(value.name, value.value)
                else:
                    names[key] = surface.param(key, value)
            if self.install is not None:
                names["install"] = surface.install(self.install)
            text = text.rstrip()
            fix = self.fix.format(**names) if names else self.fix  # a fix without placeholders is text
            text += ("" if text.endswith((".", ";", ":")) else ".") + " " + fix
        return text


class UserError(Exception):
    """A problem with the caller's input or environment, not a bug in dehub.

    Front ends show it in one line (the CLI exits 2); any other exception that escapes a
    public entry point is a bug in dehub. Built from the parts of a :class:`Message`.
    """

    def __init__(
        self,
        what: str,
        *,
        expected: str | None = None,
        received: str | None = None,
        fix: str | None = None,
        params: Mapping[str, ParamValue | Param | Command] | None = None,
        install: str | None = None,
    ) -> None:
        self.message = Message(what, expected, received, fix, dict(params or {}), install)
        super().__init__(self.message.render())

    what = property(lambda self: self.message.what)
    expected = property(lambda self: self.message.expected)
    received = property(lambda self: self.message.received)
    fix = property(lambda self: self.message.fix)
    params = property(lambda self: self.message.params)

    def render(self, surface: Surface = PYTHON) -> str:
        """The message as ``surface`` spells it."""
        message = self.__dict__.get("message")
        return message.render(surface) if message is not None else super().__str__()

    def __str__(self) -> str:
        return self.render()

    def __reduce__(self):  # picklable with its parts (errors cross Ray's process boundary)
        return (_rebuild, (type(self), self.message), self.__dict__)


def _rebuild(cls, message: Message):
    err = cls.__new__(cls)
    err.message = message
    Exception.__init__(err, message.render())
    return err


class InputError(UserError, ValueError):
    """Bad input from the user: what was wrong, what was expected, what was received, the fix."""


class InputTypeError(InputError, TypeError):
    """An :class:`InputError` about a value of the wrong type (also a ``TypeError``)."""


class UnknownIdsError(InputError, KeyError):
    """Ids that are not in the index (also a ``KeyError``, whose message is not quoted)."""


class MissingExtraError(UserError, ImportError):
    """An optional package is not installed: the feature that needs it, the extra that
    installs it (the library says ``pip install dehub[x]``, the CLI how to install it from
    a clone), and ``instead``: what works without it, a fix template over ``params``.
    ``module`` is the import name when ``package`` is spelled for people (``FAISS``)."""

    def __init__(
        self,
        feature: str,
        package: str,
        extra: str,
        *,
        instead: str | None = None,
        params: Mapping[str, ParamValue | Param | Command] | None = None,
        module: str | None = None,
    ) -> None:
        super().__init__(
            f"{feature} needs {package}, which is not installed (dehub's '{extra}' extra)",
            fix="Install it with {install}" + (f", or {instead}" if instead else ""),
            params=params,
            install=extra,
        )
        self.name = module or package

    def __reduce__(self):  # ImportError.name lives outside __dict__
        rebuild, args, state = super().__reduce__()
        return (rebuild, args, {**state, "name": self.name})


class InputWarning(UserWarning):
    """A warning about the caller's input, with the parts of a :class:`Message` so each
    surface renders its fix in its own words."""

    def __init__(self, what: str, **parts) -> None:
        self.message = Message(what, **parts)
        super().__init__(self.message.render())

    def render(self, surface: Surface = PYTHON) -> str:
        return self.message.render(surface)

    def __str__(self) -> str:
        return self.message.render()
