"""The id space of a :class:`dehub.Index`: exact non-negative int64 integers.

An index returns *external ids* (``Index.search``), and ``-1`` marks padding (a query
with fewer results than ``k``). So the one id space is::

    0 <= id <= ID_MAX = 2**63 - 1        (int64, never negative, never the padding -1)

Anything else is refused with the fix, never converted silently: a uint64 id above
``ID_MAX`` would wrap to a negative int64 (``2**64 - 1`` becomes the padding ``-1``);
a float id such as ``10.9`` would be truncated to ``10``; a negative id would collide
with the padding marker and be dropped by every consumer of search results. Users with
string or uint64 keys keep a mapping from their keys to ``0..n-1`` (e.g. a list or a
``dict``) and give the index those positions.
"""

from __future__ import annotations

import operator

import numpy as np

from ._errors import InputError, InputTypeError

__all__ = ["ID_MAX", "PADDING_ID", "as_ids", "check_ids", "check_new_ids", "check_remove_ids", "next_ids"]

#: The largest valid id (int64 max). The smallest is 0.
ID_MAX = int(np.iinfo(np.int64).max)
#: The id ``Index.search`` returns for padding slots.
PADDING_ID = -1

_SPACE = f"0 <= id <= 2**63-1 = {ID_MAX}"


def _object_ids(arr: np.ndarray, name: str) -> np.ndarray:
    """An object array (Python ints too large for numpy's own types, or junk)."""
    out = np.empty(arr.shape, dtype=np.int64)
    flat_in, flat_out = arr.reshape(-1), out.reshape(-1)
    for i, v in enumerate(flat_in):
        if isinstance(v, (bool, np.bool_)):
            raise InputTypeError(f"{name} must be integers; received a boolean ({v!r}) at position {i}")
        try:
            iv = operator.index(v)
        except TypeError:
            raise InputTypeError(
                f"{name} must be integers ({_SPACE}); received {type(v).__name__} {v!r} at position {i}"
            ) from None
        if not 0 <= iv <= ID_MAX:
            raise InputError(
                f"{name} must lie in {_SPACE}; received {iv} at position {i}. Map your keys to "
                "0..n-1 (keep the mapping beside the index) and pass those."
            )
        flat_out[i] = iv
    return out


def as_ids(ids, name: str = "ids") -> np.ndarray:
    """``ids`` as an int64 array (any shape) after checking every value is in the id space.

    Accepts integer arrays of any width (uint64 included, range-checked *before* the
    cast) and sequences of Python ints. Refuses booleans, floats (even whole-valued:
    ids are exact labels), strings and anything else, naming what was received.
    """
    if isinstance(ids, (bool, np.bool_)):
        raise InputTypeError(f"{name} must be integers; received a boolean {ids!r}")
    try:
        arr = np.asarray(ids)
    except (OverflowError, ValueError, TypeError):
        arr = np.asarray(ids, dtype=object)
    kind = arr.dtype.kind
    if kind == "f" and not isinstance(ids, np.ndarray):
        # numpy turns a list mixing huge and negative Python ints into float64; judge
        # the elements themselves, so [-1, 2**63] is named for its values.
        obj = np.asarray(ids, dtype=object)
        if all(isinstance(v, (int, np.integer)) for v in obj.reshape(-1)):
            return _object_ids(obj, name)
    if kind == "O":
        return _object_ids(arr, name)
    if kind == "b":
        raise InputTypeError(f"{name} must be integers ({_SPACE}); received booleans")
    if kind == "f" or kind == "c":
        example = arr.reshape(-1)[:1].tolist()
        raise InputTypeError(
            f"{name} must be integers; received dtype {arr.dtype}. Convert with "
            f"{name}.astype(np.int64) only if they are whole numbers"
            f"{f' (received e.g. {example[0]!r})' if example else ''}: ids are exact labels "
            f"({_SPACE}), never rounded."
        )
    if kind not in "iu":
        raise InputTypeError(f"{name} must be integers ({_SPACE}); received dtype {arr.dtype}")
    if arr.size:
        if kind == "u" and arr.dtype.itemsize == 8 and (arr > np.uint64(ID_MAX)).any():
            bad = int(arr[arr > np.uint64(ID_MAX)].reshape(-1)[0])
            raise InputError(
                f"{name} must lie in {_SPACE}; received {bad} (uint64 above the int64 range, "
                f"which would wrap to {bad - 2**64}{' = the padding marker' if bad == 2**64 - 1 else ''}). "
                "Map your keys to 0..n-1 (keep the mapping beside the index) and pass those."
            )
        if kind == "i" and (arr < 0).any():
            bad = int(arr[arr < 0].reshape(-1)[0])
            raise InputError(
                f"{name} must lie in {_SPACE}; received the negative id {bad} "
                f"({int((arr < 0).sum())} negative in all). -1 is the padding marker of search "
                "results, so negative ids would be dropped; shift or renumber them (e.g. ids - ids.min())."
            )
    return arr.astype(np.int64, copy=False)


def check_ids(ids, n: int, name: str = "ids") -> np.ndarray:
    """``n`` unique ids, one per gallery row, as a 1-D int64 array."""
    arr = as_ids(ids, name)
    if arr.ndim != 1 or arr.shape[0] != n:
        raise InputError(f"{name} must be a 1-D array with one id per row ({n}); received shape {arr.shape}")
    _check_unique(arr, name)
    return arr


def check_new_ids(ids, n_new: int, name: str = "ids") -> np.ndarray:
    """Ids for ``n_new`` new items (uniqueness across the index is checked by ``add``)."""
    arr = as_ids(ids, name)
    if arr.shape != (n_new,):
        raise InputError(f"{name} must be {n_new} integers, one per new vector; received shape {arr.shape}")
    _check_unique(arr, name)
    return arr


def check_remove_ids(ids, name: str = "ids") -> np.ndarray:
    """Exact ids to remove: a 1-D int64 array (duplicates collapsed)."""
    arr = as_ids(ids, name).reshape(-1)
    return np.unique(arr)


def next_ids(existing: np.ndarray, n_new: int) -> np.ndarray:
    """Default ids for ``n_new`` new items: ``max(existing) + 1, ...``; refuses to overflow."""
    start = int(existing.max()) + 1 if existing.size else 0
    last = start + n_new - 1
    if n_new and last > ID_MAX:
        raise InputError(
            f"cannot number {n_new} new items after the largest id {start - 1}: the last would be "
            f"{last}, beyond the id space ({_SPACE})",
            fix="Pass explicit {ids} (unused ids below the maximum), or renumber the index.",
            params={"ids": None},
        )
    return np.arange(start, start + n_new, dtype=np.int64)


def _check_unique(arr: np.ndarray, name: str) -> None:
    if arr.size < 2:
        return
    s = np.sort(arr)
    dup_mask = s[1:] == s[:-1]
    if dup_mask.any():
        dup = np.unique(s[1:][dup_mask])
        raise InputError(
            f"{name} must be unique; {dup.size} ids occur more than once, e.g. "
            f"{dup[:5].tolist()}. Deduplicate the gallery or assign fresh ids."
        )
