"""Every check of a query, made once at the API boundary.

A request that passes these checks cannot make the engine raise: its vectors are finite
in float32, bounded by :data:`VALUE_BOUND` (so their squared norm, which the library
computes in float32, is representable), of the index's dimension, at most ``max_batch``
rows, and ``k`` is in ``1..max_k``. The same bounds are written into the OpenAPI schema
(:mod:`dehub.serve.schema`), so a request valid under the schema is accepted.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

from .errors import ApiError

__all__ = ["Limits", "VALUE_BOUND", "check_k", "query_array", "check_texts", "normalize_rows"]

#: Largest |value| of a query coordinate: d * VALUE_BOUND**2 stays below float32's max
#: (3.4e38) for any d up to 3e8, so a bounded row never overflows its squared norm.
VALUE_BOUND = 1e15


@dataclass(frozen=True)
class Limits:
    """The server's bounds on one request (from :class:`dehub.serve.settings.Settings`)."""

    max_batch: int
    max_k: int
    max_text_chars: int
    max_body_bytes: int


def check_k(k: int, limits: Limits, what: str = "k") -> int:
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= limits.max_k:
        raise ApiError(422, f"{what} out of range", f"an integer {what} in 1..{limits.max_k}", repr(k))
    return k


def _check_batch(n: int, limits: Limits, what: str, unit: str) -> None:
    if not 1 <= n <= limits.max_batch:
        raise ApiError(
            422 if n == 0 else 413,
            f"{what}: batch size out of range",
            f"1..{limits.max_batch} {unit}",
            f"{n} {unit}",
        )


def query_array(
    rows: list[list[float]], dim: int, limits: Limits, normalize: Literal["none", "l2"], what: str = "vectors"
) -> np.ndarray:
    """``rows`` as a ``(n, dim)`` float32 array the engine accepts, or an :class:`ApiError`."""
    _check_batch(len(rows), limits, what, "query rows")
    for i, row in enumerate(rows):
        if len(row) != dim:
            raise ApiError(
                422,
                f"{what}[{i}] has the wrong dimension",
                f"{dim} floats per row (the index's dimension)",
                f"{len(row)} floats",
            )
    with np.errstate(over="ignore", invalid="ignore"):
        wide = np.asarray(rows, dtype=np.float64)
        q = wide.astype(np.float32)
    bad = ~(np.abs(wide) <= VALUE_BOUND)  # NaN, inf and overflow-prone values alike
    if bad.any():
        i, j = (int(x) for x in np.argwhere(bad)[0])
        raise ApiError(
            422,
            f"{what}[{i}][{j}] is not a finite number of at most {VALUE_BOUND:g} in magnitude",
            f"finite numbers with |value| <= {VALUE_BOUND:g} (embedding-scale values)",
            repr(rows[i][j]),
        )
    sq = np.einsum("ij,ij->i", q, q)  # what the library computes (float32): never inf here
    if not np.isfinite(sq).all():  # pragma: no cover - excluded by VALUE_BOUND for d < 3e8
        i = int(np.flatnonzero(~np.isfinite(sq))[0])
        raise ApiError(422, f"{what}[{i}]: squared norm overflows float32", "smaller values", "overflow")
    return normalize_rows(q, normalize, what)


def normalize_rows(q: np.ndarray, normalize: Literal["none", "l2"], what: str) -> np.ndarray:
    if normalize != "l2":
        return q
    norms = np.linalg.norm(q.astype(np.float64), axis=1)
    if (norms == 0).any():
        i = int(np.flatnonzero(norms == 0)[0])
        raise ApiError(
            422, f"{what}[{i}] is a zero vector", "non-zero rows (the server L2-normalizes)", "norm 0"
        )
    return (q / norms[:, None]).astype(np.float32)


def check_texts(texts: list[str], limits: Limits, has_encoder: bool, what: str = "text") -> None:
    _check_batch(len(texts), limits, what, "texts")
    for i, t in enumerate(texts):
        if not t.strip() or len(t) > limits.max_text_chars:
            raise ApiError(
                422,
                f"{what}[{i}] is empty or too long",
                f"a string with a non-space character, at most {limits.max_text_chars} characters",
                f"{len(t)} characters",
            )
    if not has_encoder:
        raise ApiError(
            400,
            "this index has no text encoder",
            "vectors; or an index built with the bundled MiniLM (metadata encoder="
            "'sentence-transformers/all-MiniLM-L6-v2') or served with --text-encoder minilm",
            "text",
        )
