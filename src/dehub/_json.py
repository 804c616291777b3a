"""JSON in and out of dehub: one conversion of numpy values into JSON-able Python values,
one bounded reader for every JSON or JSONL document dehub reads, and one seal for every
description dehub stores.

Reading (:func:`read_json`, :func:`parse_json`, :func:`read_jsonl`): a document is
checked against :class:`JSONLimits` (bytes, nesting depth, number of values) *before*
Python's parser sees it, by a vectorized scan with no recursion, so a file nested 100 000
levels deep or holding a billion tiny values is refused with a :class:`JSONReadError`
naming the file and the limit instead of a ``RecursionError`` traceback or an
out-of-memory kill. ``strict`` documents (the default) also refuse ``NaN``/``Infinity``,
numbers that overflow a float, and duplicate keys.

Sealing (:class:`Seal`): a stored description (an index's FAISS sidecar, a distributed
run's manifest, a store export's description) carries its kind, a format version and the
SHA-256 of the canonical JSON of every other field. :meth:`Seal.check` refuses another
kind, any other version (an older unsealed one included: a downgrade cannot switch the
check off) and a checksum that is missing or differs, so a hand edit (``alpha`` 0.75 -> 9)
is detected. The checksum guards against mistakes and careless edits, not against someone
who rewrites the file and recomputes the SHA-256.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ._errors import InputError

__all__ = [
    "jsonable",
    "JSONLimits",
    "OPTION_JSON_LIMITS",
    "JSONReadError",
    "parse_json",
    "read_json",
    "read_jsonl",
    "canonical_json",
    "Seal",
    "SealError",
]


def jsonable(obj: Any) -> Any:
    """``obj`` with numpy scalars and arrays as Python values, dict keys as strings and
    tuples as lists, recursively; anything else is returned as it is."""
    if isinstance(obj, dict):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v) for v in obj]
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    return obj


# --------------------------------------------------------------------------- reading
class JSONReadError(InputError):
    """A JSON document that is not valid JSON or exceeds one of the reader's limits."""


@dataclass(frozen=True)
class JSONLimits:
    """What one document may hold: ``max_bytes`` of UTF-8, ``max_depth`` levels of
    ``[``/``{`` nesting and ``max_values`` values (scalars and containers, keys not
    counted). The defaults fit every small description dehub writes."""

    max_bytes: int = 16 << 20
    max_depth: int = 64
    max_values: int = 1 << 20


#: A JSON value given on the command line (``--params``, ``--engine-params``).
OPTION_JSON_LIMITS = JSONLimits(max_bytes=1 << 20, max_depth=16, max_values=1 << 16)

_SCAN_CHUNK = 1 << 18


def _scan(raw: bytes) -> tuple[int, int]:
    """``(deepest nesting, values)`` of a JSON text: vectorized, no recursion.

    A quote opens or closes a string unless an odd number of backslashes precedes it;
    brackets and commas count only outside strings (values = commas + containers + 1, an
    upper bound for any valid document). Works in fixed steps (bounded scratch), carrying
    the string state and the run of trailing backslashes across steps.
    """
    data = np.frombuffer(raw, dtype=np.uint8)
    depth = deepest = 0
    values = 1
    in_string = 0
    backslashes = 0  # consecutive backslashes at the end of the previous step
    for s in range(0, data.size, _SCAN_CHUNK):
        b = data[s : s + _SCAN_CHUNK]
        idx = np.arange(b.size, dtype=np.int64)
        last_other = np.maximum.accumulate(np.where(b != 92, idx, -1))  # last non-backslash <= i
        before = np.empty_like(last_other)
        before[0], before[1:] = -1, last_other[:-1]  # last non-backslash < i
        run = idx - 1 - before + np.where(before < 0, backslashes, 0)
        quote = (b == 34) & (run % 2 == 0)
        outside = (np.cumsum(quote, dtype=np.int64) + in_string) % 2 == 0
        opens = ((b == 91) | (b == 123)) & outside
        steps = opens.astype(np.int64)
        steps -= ((b == 93) | (b == 125)) & outside
        levels = np.cumsum(steps) + depth
        deepest = max(deepest, int(levels.max()))
        depth = int(levels[-1])
        values += int(np.count_nonzero(opens)) + int(np.count_nonzero((b == 44) & outside))
        in_string = 0 if outside[-1] else 1
        tail = b.size - 1 - int(last_other[-1])
        backslashes = tail + (backslashes if last_other[-1] < 0 else 0)
    return deepest, values


def _no_constants(name: str) -> Any:
    raise InputError(f"non-standard JSON constant {name}")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise InputError(f"number {text[:20]!r} overflows a float")
    return value


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in pairs:
        if k in out:
            raise InputError(f"duplicate key {k!r}")
        out[k] = v
    return out


def parse_json(
    raw: bytes | str, *, source: str, limits: JSONLimits = JSONLimits(), strict: bool = True
) -> Any:
    """The value of the JSON text ``raw`` (from ``source``, named in every error), checked
    against ``limits`` before it is parsed; raises :class:`JSONReadError`."""
    data = raw.encode("utf-8", "surrogatepass") if isinstance(raw, str) else bytes(raw)
    if len(data) > limits.max_bytes:
        raise JSONReadError(f"{source}: JSON of {len(data)} bytes; expected at most {limits.max_bytes} bytes")
    depth, values = _scan(data)
    if depth > limits.max_depth:
        raise JSONReadError(
            f"{source}: JSON nested {depth} levels deep; expected at most {limits.max_depth} levels"
        )
    if values > limits.max_values:
        raise JSONReadError(
            f"{source}: JSON of up to {values} values; expected at most {limits.max_values} values"
        )
    hooks: dict[str, Any] = (
        {"parse_constant": _no_constants, "parse_float": _finite_float, "object_pairs_hook": _no_duplicates}
        if strict
        else {}
    )
    try:
        return json.loads(data.decode("utf-8"), **hooks)
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise JSONReadError(f"{source} is not valid JSON: {exc}") from None


def read_json(path: str | os.PathLike, *, limits: JSONLimits = JSONLimits(), strict: bool = True) -> Any:
    """The JSON document in the file ``path``, its size checked before it is read.

    ``FileNotFoundError`` passes through; every other problem is a :class:`JSONReadError`
    naming the file."""
    p = Path(path)
    with open(p, "rb") as fh:
        size = os.fstat(fh.fileno()).st_size
        if size > limits.max_bytes:
            raise JSONReadError(f"{p}: a file of {size} bytes; expected at most {limits.max_bytes} bytes")
        raw = fh.read(limits.max_bytes + 1)  # the file may have grown since fstat
    return parse_json(raw, source=str(p), limits=limits, strict=strict)


def read_jsonl(
    path: str | os.PathLike, *, limits: JSONLimits = JSONLimits(), strict: bool = True
) -> Iterator[tuple[int, Any]]:
    """``(line number, value)`` for every non-blank line of the JSON Lines file ``path``;
    ``limits`` hold for each line (a line longer than ``max_bytes`` is refused before it
    is read whole)."""
    p = Path(path)
    with open(p, "rb") as fh:
        for lineno, line in enumerate(iter(lambda: fh.readline(limits.max_bytes + 1), b""), 1):
            if len(line) > limits.max_bytes and not line.endswith(b"\n"):
                raise JSONReadError(
                    f"{p}:{lineno}: a line longer than {limits.max_bytes} bytes; expected at most {limits.max_bytes} bytes a line"
                )
            if line.strip():
                yield lineno, parse_json(line, source=f"{p}:{lineno}", limits=limits, strict=strict)


# --------------------------------------------------------------------------- sealing
class SealError(InputError):
    """A stored description of another kind or version, or changed after it was written."""


def canonical_json(fields: dict[str, Any]) -> bytes:
    """The one byte form a checksum is taken over: sorted keys, no spaces, no NaN."""
    return json.dumps(fields, sort_keys=True, separators=(",", ":"), allow_nan=False).encode()


@dataclass(frozen=True)
class Seal:
    """How one kind of stored description is sealed: its ``kind``, current ``version``,
    and the field names of the version and of the checksum."""

    kind: str
    version: int
    version_key: str = "format_version"
    checksum_key: str = "sha256"

    def digest(self, fields: dict[str, Any]) -> str:
        return hashlib.sha256(
            canonical_json({k: v for k, v in fields.items() if k != self.checksum_key})
        ).hexdigest()

    def apply(self, fields: dict[str, Any]) -> dict[str, Any]:
        """``fields`` with ``kind``, the version and the checksum set (a new dict)."""
        out = {**fields, "kind": self.kind, self.version_key: self.version}
        out.pop(self.checksum_key, None)
        out[self.checksum_key] = self.digest(out)
        return out

    def check(self, doc: Any, *, source: str, error: type[ValueError] = SealError) -> dict[str, Any]:
        """``doc`` if it is this kind, this version and matches its checksum; else ``error``
        naming ``source``, what was expected and what was found."""
        if not isinstance(doc, dict) or doc.get("kind") != self.kind:
            found = doc.get("kind") if isinstance(doc, dict) else type(doc).__name__
            raise error(f"{source}: holds {found!r}; expected a {self.kind!r} description")
        version = doc.get(self.version_key)
        if type(version) is not int or version != self.version:
            older = type(version) is int and version < self.version
            raise error(
                f"{source}: format version {version!r}; this dehub reads version {self.version} only"
                + (
                    " (older versions carry no self-checksum and are not trusted): write it again"
                    if older
                    else ""
                )
            )
        stored = doc.get(self.checksum_key)
        if not isinstance(stored, str):
            raise error(
                f"{source}: has no {self.checksum_key}; it was edited or not written by dehub: write it again"
            )
        try:
            actual = self.digest(doc)
        except ValueError as exc:  # NaN or another value canonical JSON refuses
            raise error(f"{source}: holds a value no dehub description holds ({exc})") from None
        if actual != stored:
            raise error(
                f"{source}: its content does not match its own checksum ({self.checksum_key}): "
                "a field was changed after it was written; write it again"
            )
        return doc
