"""Helpers shared by every command-line module: argument types and input loading.

``dehub.cli`` and the sub-CLIs that live with their features (``dehub.evaluation.cli``,
``dehub.studies.cli``, ``dehub.distributed.cli``, ...) import these. It sits below every
command module and imports none (the import-linter contract checks it), so the command
layer has no cycle (``docs/architecture.md``). Indexes open with :func:`dehub.load`.
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from ._errors import InputError
from .datasets.layouts import cli_embeddings
from .datasets.npy import load_embeddings, read_npy
from .methods import METHODS, get_method, get_tags
from .methods._cli import json_object as parse_json_object
from .methods._cli import method_params_from_args

__all__ = [
    "NORMALIZE_CHOICES",
    "add_normalize_option",
    "positive_int",
    "nonnegative_int",
    "json_object",
    "load_npy",
    "load_int_ids",
    "method_params",
    "bank_methods",
    "gallery_bank_note",
]

NORMALIZE_CHOICES = ["warn", "l2", "none", "error"]


def add_normalize_option(p: argparse.ArgumentParser) -> None:
    """``--normalize`` for commands that read embeddings (one wording everywhere)."""
    p.add_argument(
        "--normalize",
        choices=NORMALIZE_CHOICES,
        default="warn",
        help="rows that are not unit-norm: warn (default), l2-normalize, accept, or fail",
    )


#: A comma/space separated list of integers, e.g. ``17,42, 99`` (never a file name).
_ID_LIST = re.compile(r"[\s,]*[+-]?\d+(?:[\s,]+[+-]?\d+)*[\s,]*")


def _int_at_least(minimum: int, what: str) -> Callable[[str], int]:
    """An argparse type: an integer ``>= minimum``; errors say what was expected and received."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {what}; received {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"expected {what}; received {value}")
        return value

    return parse


positive_int = _int_at_least(1, "a positive integer")
nonnegative_int = _int_at_least(0, "a non-negative integer (0, 1, 2, ...)")


def json_object(text: str) -> dict:
    """An argparse type: a JSON object of parameters (``--params``, ``--engine-params``)."""
    return parse_json_object(text, example='{"k": 16}')


def load_npy(path: str, what: str, mmap: bool = True):
    """Embeddings from a .npy file (memory-mapped), a directory of .npy shards, or a
    clip-retrieval / embedding-reader layout, parquet embedding column or fsspec URL."""
    if (layout := cli_embeddings(path, what)) is not None:
        return layout
    return load_embeddings(path, mmap=mmap, name=what)


def _ids_from_npy(p: Path, what: str) -> np.ndarray:
    raw = np.asarray(read_npy(p, what, mmap=False))
    if raw.ndim != 1:
        raise InputError(f"{what} file {p} must hold a 1-D array of ids; received shape {raw.shape}")
    if raw.dtype.kind not in "iu":
        raise InputError(
            f"{what} file {p} must hold integers; received dtype {raw.dtype}. "
            "Save them with np.save(path, ids.astype(np.int64))"
        )
    if raw.dtype.kind == "u" and raw.size and int(raw.max()) > np.iinfo(np.int64).max:
        raise InputError(
            f"{what} file {p} holds ids above 2**63-1 (max {int(raw.max())}); dehub ids are int64"
        )
    return raw.astype(np.int64)


def load_int_ids(text: str, what: str) -> np.ndarray:
    """Integer ids from a list (``17,42,99``, any length), ``@FILE``, or a file path.

    ``@ids.txt`` names a file; so does a text with a ``/`` or a ``.npy``/``.txt`` suffix
    and no comma. Anything else is a list of integers separated by commas or spaces,
    never tried as a file name (a list of 300 ids is not a "file name too long"). Files:
    ``.npy`` integers, or text with integers one per line (or comma/space separated).
    """
    if text.startswith("@"):
        p = Path(text[1:])
        if not p.is_file():
            raise FileNotFoundError(f"{what} file not found: {p} (from {what} @{p})")
    elif _ID_LIST.fullmatch(text) or "," in text or not _looks_like_path(text):
        return _parse_ids([t for t in re.split(r"[\s,]+", text) if t], what)
    else:
        p = Path(text)
        if not p.is_file():
            raise FileNotFoundError(f"{what} file not found: {p}")
    if p.suffix == ".npy":
        return _ids_from_npy(p, what)
    tokens = [t for t in re.split(r"[\s,]+", p.read_text(encoding="utf-8")) if t]
    return _parse_ids(tokens, f"{what} file {p}")


def _looks_like_path(text: str) -> bool:
    return "/" in text or Path(text).suffix in (".npy", ".txt")


def _parse_ids(tokens: list[str], source: str) -> np.ndarray:
    bad = [t for t in tokens if not re.fullmatch(r"[+-]?\d+", t)]
    if bad or not tokens:
        raise InputError(
            f"{source}: expected exact integer ids (e.g. 17,42, or @FILE with one per line); "
            f"received {bad[:5] if bad else 'nothing'}"
        )
    values = [int(t) for t in tokens]
    info = np.iinfo(np.int64)
    out_of_range = [v for v in values if not info.min <= v <= info.max]
    if out_of_range:
        raise InputError(f"{source}: ids must fit in int64; received {out_of_range[:5]}")
    return np.array(values, dtype=np.int64)


def method_params(args: argparse.Namespace) -> dict[str, Any]:
    """The method parameters given on the command line; options of other methods are errors.

    Which parameters a method has is asked of the method (``methods._cli``, from its
    declared parameters), so a new method or parameter needs no change here.
    """
    return method_params_from_args(args, args.method)


def bank_methods() -> list[str]:
    """Registry names of the methods whose ``fit`` takes a gallery bank (asked of each method)."""
    return sorted(n for n, cls in METHODS.items() if get_tags(cls).gallery_bank)


def gallery_bank_note(
    method: str, path: Any, bank: Any, params: dict[str, Any] | None = None
) -> dict[str, Any]:
    """What a build records about its gallery bank (index metadata / manifest).

    A method that takes a bank and got none says so on stderr (it is fitted in its
    no-bank form, which its docstring describes); a bank given to a method that takes
    none is refused by the fit itself.
    """
    if path is not None:
        return {"gallery_bank_file": str(path), "gallery_bank_rows": int(np.shape(bank)[0])}
    if get_tags(get_method(method, **(params or {}))).gallery_bank:
        print(
            f"note: {method} takes a gallery bank (--gallery-bank FILE, e.g. the gallery side of the "
            "reference split) and none was given: it is fitted in its no-bank form",
            file=sys.stderr,
        )
        return {"gallery_bank": "none given: fitted in its no-bank form"}
    return {}
