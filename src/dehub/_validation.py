"""Input checks shared by the engine, the methods and the CLI.

Every error names what was expected, what was received and how to fix it. Checks never
change the caller's data: normalization, when asked for, returns a new array.
"""

from __future__ import annotations

import os
import sys
import warnings
from pathlib import Path
from types import FrameType
from typing import Literal

import numpy as np

from ._errors import InputError, InputTypeError, InputWarning, Param

__all__ = [
    "compute_dtype",
    "check_embeddings",
    "check_same_dim",
    "check_k",
    "check_normalization",
    "validate_embeddings",
    "NormalizeMode",
    "UnnormalizedWarning",
    "user_stacklevel",
    "is_row_sliceable",
    "l2_normalized",
    "RowPass",
    "ValidatedRows",
]

NormalizeMode = Literal["warn", "l2", "none", "error"]

_MODES = ("warn", "l2", "none", "error")
_FLOAT_KINDS = (np.float16, np.float32, np.float64)
_CHUNK_ROWS = 65536  # rows per chunk when scanning large (memory-mapped) inputs
_NORM_TOL = 1e-2
_PACKAGE_DIR = str(Path(__file__).resolve().parent) + os.sep


def user_stacklevel() -> int:
    """The ``stacklevel`` that points a warning at the first caller outside dehub."""
    level = 1
    frame: FrameType | None = sys._getframe(1)
    while frame is not None and str(Path(frame.f_code.co_filename).resolve()).startswith(_PACKAGE_DIR):
        frame = frame.f_back
        level += 1
    return level


class UnnormalizedWarning(InputWarning):
    """Embeddings are not unit-norm, so inner products are not cosine similarities."""


def _chunks(n: int, step: int = _CHUNK_ROWS):
    for start in range(0, n, step):
        yield slice(start, min(start + step, n))


def check_embeddings(x, name: str, *, allow_empty: bool = False) -> np.ndarray:
    """Check a 2-D float embedding matrix; return it as an ndarray (memmaps stay memmaps).

    Accepts float16/32/64 arrays, ``np.memmap`` and 2-D row-sliceable array-likes such as
    :class:`dehub.datasets.ShardedArray` (kept as they are); lists are converted. Scans
    for NaN/inf in chunks so a memory-mapped or sharded input is never copied whole.
    To also check unit norms, use :func:`validate_embeddings` (one pass instead of two).
    """
    if isinstance(x, ValidatedRows):  # one pass (RowPass) checked them already
        return x.rows
    x = _check_structure(x, name, allow_empty)
    _scan_rows(x, name)
    return x


def validate_embeddings(
    x, name: str, normalize: NormalizeMode = "warn", *, allow_empty: bool = False
) -> np.ndarray:
    """:func:`check_embeddings` and :func:`check_normalization` in one pass over the rows.

    The row norms that prove the values finite also give the norm range, so a
    memory-mapped input is read once (twice only for ``normalize="l2"``, which writes a
    normalized copy).
    """
    if normalize not in _MODES:
        raise InputError(f"normalize must be one of 'warn', 'l2', 'none', 'error'; received {normalize!r}")
    if isinstance(x, ValidatedRows):
        if x.normalize == normalize:  # validated (and normalized, reported) by one RowPass
            return x.rows
        x = x.rows
    x = _check_structure(x, name, allow_empty)
    lo, hi = _scan_rows(x, name)
    if normalize == "l2":
        return _l2_copy(x, name)
    if normalize != "none":
        _report_norms(lo, hi, name, normalize)
    return x


def _check_structure(x, name: str, allow_empty: bool) -> np.ndarray:
    """Type, dtype, ndim and emptiness; lists become arrays, row-sliceables stay."""
    if is_row_sliceable(x):
        pass  # e.g. dehub.datasets.ShardedArray: read in chunks below, never loaded whole
    elif not isinstance(x, np.ndarray):
        try:
            x = np.asarray(x)
        except Exception as exc:  # pragma: no cover - numpy's own message is kept
            raise InputTypeError(
                f"{name} must be a 2-D float array of shape (n, d)", received=type(x).__name__
            ) from exc
    if x.dtype.type not in _FLOAT_KINDS:
        raise InputTypeError(
            f"{name} must hold float16, float32 or float64 values",
            received=f"dtype {x.dtype}",
            fix=f"Convert with {name}.astype(np.float32).",
        )
    if x.ndim != 2:
        raise InputError(
            f"{name} must be 2-D with shape (n, d)",
            received=f"ndim={x.ndim}, shape {x.shape}",
            fix="Use x.reshape(1, -1) for a single vector." if x.ndim == 1 else None,
        )
    if x.shape[1] == 0 or (x.shape[0] == 0 and not allow_empty):
        raise InputError(
            f"{name} must be non-empty (at least one row and one column)", received=f"shape {x.shape}"
        )
    return x


def _scan_rows(x, name: str) -> tuple[float, float]:
    """One chunked pass: raise on NaN/inf or overflowing rows; return the row-norm range."""
    lo, hi = np.inf, -np.inf
    for sl in _chunks(x.shape[0]):
        lo, hi = _scan_block(x[sl], sl.start, name, lo, hi)
    return lo, hi


def _scan_block(block: np.ndarray, start: int, name: str, lo: float, hi: float) -> tuple[float, float]:
    """Raise on NaN/inf or overflowing rows of ``block`` (rows ``start...``); widen ``lo..hi``."""
    # One fused pass: NaN/inf in a row make its sum of squares non-finite; only then
    # is the block scanned element by element to name the first offending entry.
    sq = _row_sq_norms(block)
    if not np.isfinite(sq).all():
        _raise_non_finite(block, sq, start, name)
    if sq.size:
        lo, hi = min(lo, float(np.sqrt(sq.min()))), max(hi, float(np.sqrt(sq.max())))
    return lo, hi


class ValidatedRows:
    """Rows that one :class:`RowPass` validated (and, for ``normalize="l2"``, normalized):
    :func:`validate_embeddings` with the same ``normalize`` returns ``rows`` without
    scanning them again, and :func:`check_embeddings` returns them as they are."""

    __slots__ = ("rows", "normalize")

    def __init__(self, rows, normalize: NormalizeMode) -> None:
        self.rows = rows
        self.normalize = normalize

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.rows.shape)


class RowPass:
    """One pass over the rows of ``x`` that validates them as :func:`validate_embeddings`
    does and yields each block as it is to be stored (normalized for ``normalize="l2"``),
    so that a caller writes and hashes the rows in the same read (``dehub build``).

    Iterate :meth:`blocks` to the end (an :class:`InputError` stops it at the first bad
    row; the norms are reported after the last block), then take :meth:`result`.
    """

    def __init__(self, x, name: str, normalize: NormalizeMode = "warn", *, allow_empty: bool = False) -> None:
        if normalize not in _MODES:
            raise InputError(
                f"normalize must be one of 'warn', 'l2', 'none', 'error'; received {normalize!r}"
            )
        self._x = _check_structure(x, name, allow_empty)
        self.name = name
        self.normalize = normalize
        self.shape: tuple[int, ...] = tuple(self._x.shape)
        #: the dtype of the yielded blocks (float32/float64 after an L2 normalization)
        self.dtype = compute_dtype(self._x) if normalize == "l2" else np.dtype(self._x.dtype)
        self._out = np.empty(self.shape, dtype=self.dtype) if normalize == "l2" else None
        self._done = False

    def blocks(self):
        lo, hi = np.inf, -np.inf
        for sl in _chunks(self.shape[0]):
            block = np.asarray(self._x[sl])
            lo, hi = _scan_block(block, sl.start, self.name, lo, hi)
            if self._out is None:
                yield block
            else:
                _l2_block(block, self._out[sl], sl.start, self.name)
                yield self._out[sl]
        if self.normalize in ("warn", "error"):
            _report_norms(lo, hi, self.name, self.normalize)
        self._done = True

    def result(self) -> ValidatedRows:
        if not self._done:  # pragma: no cover - a caller's bug
            raise RuntimeError("RowPass.result() before its blocks were all read")
        return ValidatedRows(self._x if self._out is None else self._out, self.normalize)


def _raise_non_finite(block: np.ndarray, sq: np.ndarray, start: int, name: str) -> None:
    if not np.isfinite(block).all():
        bad = np.argwhere(~np.isfinite(block))[0]
        row = start + int(bad[0])
        raise InputError(
            f"{name} contains NaN or infinite values (first at row {row}, column {int(bad[1])})",
            expected="finite floats",
            fix="Remove or fix those rows.",
        )
    row = start + int(np.flatnonzero(~np.isfinite(sq))[0])
    raise InputError(
        f"{name} row {row} has values so large that its squared norm overflows "
        f"(max |value| {float(np.abs(block).max()):.3g})",
        expected="embedding-scale values",
        fix="Rescale or L2-normalize the rows.",
    )


def is_row_sliceable(x) -> bool:
    """A 2-D array-like that is not an ndarray but reads row slices as arrays."""
    return (
        not isinstance(x, np.ndarray)
        and hasattr(x, "__getitem__")
        and isinstance(getattr(x, "dtype", None), np.dtype)
        and isinstance(getattr(x, "shape", None), tuple)
        and getattr(x, "ndim", None) == 2
    )


def _row_sq_norms(block: np.ndarray) -> np.ndarray:
    """Squared L2 norm of every row, accumulated in at least float32."""
    if block.dtype == np.float16:
        block = block.astype(np.float32)
    return np.einsum("ij,ij->i", block, block)


def check_same_dim(a: np.ndarray, b: np.ndarray, name_a: str, name_b: str) -> None:
    if a.shape[1] != b.shape[1]:
        raise InputError(
            f"{name_a} and {name_b} must have the same embedding dimension",
            received=f"{name_a}.shape[1]={a.shape[1]} and {name_b}.shape[1]={b.shape[1]}",
            fix="Were they produced by the same encoder?",
        )


def check_k(k, n: int, *, name: str = "k", what: str = "reference items") -> int:
    """Check ``1 <= k <= n`` for an integer k; return it as int."""
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)):
        raise InputTypeError(f"{name} must be a positive integer", received=repr(k))
    k = int(k)
    if k < 1:
        raise InputError(f"{name} must be >= 1", received=f"{name}={k}")
    if k > n:
        raise InputError(
            f"{name}={k} exceeds the number of {what} ({n})",
            expected=f"{name} <= {n}",
            fix=f"Lower {name} or provide more {what}.",
        )
    return k


def check_normalization(x: np.ndarray, name: str, mode: NormalizeMode = "warn") -> np.ndarray:
    """Handle rows that are not unit-norm.

    ``"warn"`` (default) warns and leaves the data as given, ``"error"`` raises,
    ``"l2"`` returns an L2-normalized copy (float64 for float64 input, else float32; the
    input is untouched), ``"none"`` skips the check (plain inner-product retrieval).
    After :func:`check_embeddings` this is a second pass over the rows:
    :func:`validate_embeddings` does both in one.
    """
    if mode not in _MODES:
        raise InputError(f"normalize must be one of 'warn', 'l2', 'none', 'error'; received {mode!r}")
    if mode == "none":
        return x
    if mode == "l2":
        return _l2_copy(x, name)
    lo, hi = np.inf, -np.inf
    for sl in _chunks(x.shape[0]):
        norms = np.sqrt(_row_sq_norms(x[sl]))
        lo, hi = min(lo, float(norms.min())), max(hi, float(norms.max()))
    _report_norms(lo, hi, name, mode)
    return x


def compute_dtype(*arrays) -> np.dtype:
    """The engine's arithmetic rule: float64 if any input is float64, else float32."""
    return np.dtype(np.float64) if any(a.dtype == np.float64 for a in arrays) else np.dtype(np.float32)


def l2_normalized(x, name: str) -> np.ndarray:
    """An L2-normalized copy of rows already validated (float64 for float64, else float32)."""
    return _l2_copy(x, name)


def _l2_copy(x, name: str) -> np.ndarray:
    dt = compute_dtype(x)
    out = np.empty(x.shape, dtype=dt)
    for sl in _chunks(x.shape[0]):
        _l2_block(x[sl], out[sl], sl.start, name)
    return out


def _l2_block(rows, out: np.ndarray, start: int, name: str) -> None:
    """``rows`` divided by their L2 norms into ``out`` (rows ``start...`` of ``name``)."""
    block = np.asarray(rows, dtype=out.dtype)
    norms = np.linalg.norm(block, axis=1, keepdims=True)
    if np.any(norms == 0):
        row = start + int(np.flatnonzero(norms.ravel() == 0)[0])
        raise InputError(
            f"{name} row {row} is all zeros and cannot be L2-normalized",
            expected="rows with a non-zero norm",
            fix="Remove that row (or pass {normalize})",
            params={"normalize": "'none'"},
        )
    np.divide(block, norms, out=out)


def _report_norms(lo: float, hi: float, name: str, mode: str) -> None:
    if lo < 1 - _NORM_TOL or hi > 1 + _NORM_TOL:
        fix = "Pass {l2} to normalize a copy, or {none} if raw inner products are intended."
        params = {"l2": Param("normalize", "'l2'"), "none": Param("normalize", "'none'")}
        what = (
            f"{name} rows are not unit-norm (norms range {lo:.4g}..{hi:.4g}); NNN and its "
            "family assume cosine similarity."
        )
        if mode == "error":
            raise InputError(what, fix=fix, params=params)
        warnings.warn(UnnormalizedWarning(what, fix=fix, params=params), stacklevel=user_stacklevel())
