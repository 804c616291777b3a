"""Structured errors for bad input: what, expected, received, fix, rendered per audience.

A library error names parameters the way Python callers write them (``reference=...``);
the command line names the same thing by its flag (``--reference FILE``). Instead of
rewriting message text, an :class:`InputError` keeps its parts and the names of the
parameters its fix mentions, and each front end renders it: :meth:`InputError.render`
with a function that spells a parameter (the CLI looks the flag up in its own parser).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

__all__ = ["InputError", "InputTypeError", "python_spelling"]


def python_spelling(param: str, value: str | None = None) -> str:
    """How a Python caller passes ``param``: ``reference=...``, or with ``value`` (Python
    source text such as ``"True"`` or ``"'l2'"``) ``keep_reference=True``."""
    return f"{param}={value if value is not None else '...'}"


class InputError(ValueError):
    """Bad input from the user: what was wrong, what was expected, what was received, the fix.

    ``fix`` names parameters as ``{name}`` placeholders; ``params`` maps each to the value
    the fix suggests (Python source text, or None for "a value"). The message
    (``str(exc)``) is the Python rendering; the CLI renders the flags instead.
    """

    def __init__(
        self,
        what: str,
        *,
        expected: str,
        received: str | None = None,
        fix: str | None = None,
        params: Mapping[str, str | None] | None = None,
    ) -> None:
        self.what = what
        self.expected = expected
        self.received = received
        self.fix = fix
        self.params = dict(params or {})
        super().__init__(self.render())

    def render(self, spell: Callable[[str, str | None], str] = python_spelling) -> str:
        """The message with every parameter of the fix spelled by ``spell(name, value)``."""
        text = f"{self.what}; expected {self.expected}"
        if self.received is not None:
            text += f"; received {self.received}"
        if self.fix:
            text += ". " + self.fix.format(
                **{name: spell(name, value) for name, value in self.params.items()}
            )
        return text


class InputTypeError(InputError, TypeError):
    """An :class:`InputError` about a value of the wrong type (also a ``TypeError``)."""
