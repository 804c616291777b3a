"""How the ``dehub`` command line reports what went wrong: one line for a user's mistake
(in the command's own flags), a traceback and exit 70 for a bug in dehub.

:func:`dehub.cli.main` uses these; an error's text comes from the library's structured
errors (:class:`dehub._errors.UserError`, rendered with :func:`cli_surface`), from the
OS (:func:`os_error_text`) or from a missing optional extra
(:func:`missing_optional_package`).
"""

from __future__ import annotations

import errno
import os
import sys
import traceback

from ._errors import InputWarning, Surface
from ._extras import OPTIONAL_PACKAGES
from ._version import __version__
from .methods._cli import option_name

__all__ = [
    "EXIT_BUG",
    "os_error_text",
    "one_line",
    "warning_printer",
    "quiet_pipe",
    "missing_optional_package",
    "report_bug",
    "cli_surface",
]

#: exit status of an internal error (BSD sysexits EX_SOFTWARE)
EXIT_BUG = 70


def os_error_text(exc: OSError) -> str:
    """One readable line for an OS error: what, which file, and what to do."""
    name = exc.filename if exc.filename is not None else ""
    if exc.errno == errno.EISDIR:
        return f"{name} is a directory; expected a file path"
    if exc.errno == errno.EEXIST:
        return f"{name} already exists and is not a directory; choose another -o path or remove it"
    if exc.errno == errno.ENOENT:
        return f"no such file or directory: {name}" if name else (exc.strerror or str(exc))
    if exc.errno == errno.EACCES:
        return f"permission denied: {name}"
    if exc.errno == errno.ENOSPC:
        return f"no space left on the device while writing {name}"
    if exc.errno == errno.ENOTDIR:
        return f"a parent of {name} is a file, not a directory"
    if exc.strerror and not exc.args[1:]:
        return str(exc)
    return f"{exc.strerror or exc}{': ' + str(name) if name else ''}"


def one_line(text: str) -> str:
    return " ".join(text.split())


def warning_printer(surface: Surface):
    """Warnings as one line each, fixes in the CLI's words (never hidden by --quiet)."""

    def show(message, category, filename, lineno, file=None, line=None) -> None:
        text = message.render(surface) if isinstance(message, InputWarning) else str(message)
        print(f"dehub: warning: {one_line(text)}", file=sys.stderr, flush=True)

    return show


def quiet_pipe() -> None:
    """stdout's reader went away (``dehub search ... | head``): stop writing, quietly."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):  # pragma: no cover - no real stdout
        pass


def missing_optional_package(exc: ImportError) -> bool:
    """Whether ``exc`` (or the error it was raised from) is an optional extra that is not
    installed: the user's environment. Any other ImportError is a bug in dehub."""
    seen: BaseException | None = exc
    visited: set[int] = set()
    while seen is not None and id(seen) not in visited:
        visited.add(id(seen))
        name = getattr(seen, "name", None)
        if isinstance(seen, ImportError) and name and name.split(".", 1)[0] in OPTIONAL_PACKAGES:
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def report_bug(exc: BaseException) -> int:
    """An internal error: the traceback, then one line saying it is dehub's bug, to report."""
    traceback.print_exception(exc, file=sys.stderr)
    print(
        f"dehub: internal error ({type(exc).__name__}): this is a bug in dehub, not a problem with "
        f"your input. Please report it with the command line and the traceback above "
        f"(dehub {__version__}, Python {sys.version.split()[0]}).",
        file=sys.stderr,
    )
    return EXIT_BUG


def cli_surface(flags: dict[str, str]) -> Surface:
    """How the command line spells a fix: a parameter by its flag (``--reference FILE``,
    ``--normalize l2``), not ``reference=...``; an extra installed from a dehub clone."""

    def param(name: str, value) -> str:
        flag = flags.get(name) or option_name(name)
        if value is None:
            return f"{flag} {name.rstrip('_').upper()}"
        if value == "True":
            return flag
        values = value if isinstance(value, tuple) else (value,)
        words = [v.strip("'\"") for v in values]
        return f"{flag} " + (words[0] if len(words) == 1 else ", ".join(words[:-1]) + " or " + words[-1])

    def install(extra: str) -> str:
        return f"pip install -e '.[{extra}]' in a dehub clone (dehub is not on PyPI)"

    return Surface(param=param, install=install, command=lambda c: c.cli)
