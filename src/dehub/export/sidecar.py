"""The JSON sidecar written next to an exported FAISS file, and its checks.

The sidecar (``<index>.json``) tells a serving process how to form queries (the form,
``M``) and what the file holds (method, parameters, ids). Version 2 makes it
self-describing *and* checkable:

* against itself: ``sidecar_sha256`` is the SHA-256 of the canonical JSON of every other
  field, so changing ``alpha``, ``k``, ``d``, ``dim``, ``n_items``, the ids or the version
  by hand is detected; the fields must also agree with each other (``dim = d + 1`` or
  ``d + 2`` by form, ``n_items = len(ids)``, ids unique non-negative int64, metric fits the
  form);
* against the FAISS file: ``index_sha256`` (the file's bytes), and, reading the file, its
  dimension, item count, metric and stored ids.

The seal is :class:`dehub._json.Seal`, the one every stored description uses. The
checksum guards against mistakes and careless edits, not against an attacker who
rewrites both files (anyone can recompute a SHA-256): keep exports where only their
writer can write. Version 1 sidecars (dehub 0.1 wave 1) carried no self-checksum and are
refused (export again): a sidecar downgraded to ``"version": 1`` cannot skip the check.
The sidecar is read by the bounded reader (:func:`dehub._json.read_json`): size, depth
and value count are checked before it is parsed.

``search_params`` (applied by a server through FAISS's ``ParameterSpace``) are checked
against the index type and their range: ``nprobe`` an integer in ``[1, nlist]`` for the
IVF types, ``efSearch`` an integer in ``[1, 2**31 - 1]`` for HNSW, nothing for flat.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from .._errors import InputError
from .._io import atomic_write_text, sha256_file
from .._json import JSONLimits, JSONReadError, Seal, SealError, read_json
from ..engine import import_faiss

__all__ = [
    "SidecarError",
    "SIDECAR_KIND",
    "SIDECAR_VERSION",
    "sidecar_path",
    "write_sidecar",
    "load_sidecar",
    "faiss_index_ids",
]

SIDECAR_KIND = "dehub.faiss-export"
SIDECAR_VERSION = 2
_SEAL = Seal(SIDECAR_KIND, SIDECAR_VERSION, version_key="version", checksum_key="sidecar_sha256")
_METRICS = {"d+1": ("inner_product",), "d+2": ("l2", "inner_product")}
_INDEX_TYPES = ("flat", "ivf", "ivf-sq8", "hnsw")
#: A sidecar lists every id (about 12 bytes each): 2 GiB allows 150M ids.
_LIMITS = JSONLimits(max_bytes=1 << 31, max_depth=16, max_values=1 << 28)
_INT_MAX = 2**31 - 1  # FAISS's search parameters are C ints
_SEARCH_PARAMS = {"flat": (), "ivf": ("nprobe",), "ivf-sq8": ("nprobe",), "hnsw": ("efSearch",)}


class SidecarError(InputError):
    """A FAISS export's sidecar is unreadable, inconsistent, or does not match its file."""


def sidecar_path(path: str | os.PathLike) -> Path:
    return Path(str(path) + ".json")


def write_sidecar(path: str | os.PathLike, fields: dict[str, Any]) -> Path:
    """Write ``fields`` sealed (kind, version, self-checksum) as ``<path>.json`` atomically."""
    out = sidecar_path(path)
    atomic_write_text(out, json.dumps(_SEAL.apply(fields), indent=1, sort_keys=True))
    return out


def _fail(path: Path, msg: str) -> SidecarError:
    return SidecarError(f"{path}.json: {msg}")


def _check_self(path: Path, side: Any) -> None:
    try:
        _SEAL.check(side, source=f"{path}.json")
    except SealError as exc:
        raise SidecarError(str(exc)) from None
    form = side.get("form", "d+1")
    if form not in _METRICS:
        raise _fail(path, f"form must be one of {sorted(_METRICS)}; found {form!r}")
    for key in ("d", "dim", "n_items"):
        v = side.get(key)
        if isinstance(v, bool) or not isinstance(v, int) or v < 0:
            raise _fail(path, f"{key} must be a non-negative integer; found {v!r}")
    extra = 1 if form == "d+1" else 2
    if side["dim"] != side["d"] + extra:
        raise _fail(
            path, f"dim = {side['dim']} but form {form!r} needs dim = d + {extra} = {side['d'] + extra}"
        )
    if side.get("metric") not in _METRICS[form]:
        raise _fail(
            path, f"metric {side.get('metric')!r} does not serve form {form!r} (expected {_METRICS[form]})"
        )
    if side.get("index_type") not in _INDEX_TYPES:
        raise _fail(path, f"index_type must be one of {_INDEX_TYPES}; found {side.get('index_type')!r}")
    ids = side.get("ids")
    if not isinstance(ids, list) or not all(isinstance(i, int) and not isinstance(i, bool) for i in ids):
        raise _fail(path, "ids must be a list of integers")
    if len(ids) != side["n_items"]:
        raise _fail(path, f"n_items = {side['n_items']} but it lists {len(ids)} ids")
    arr = np.asarray(ids, dtype=object)
    if len(ids) and (min(ids) < 0 or max(ids) > np.iinfo(np.int64).max):
        raise _fail(path, "ids must be non-negative int64 values")
    if len(set(ids)) != len(arr):
        raise _fail(path, "ids are not unique")
    if form == "d+2":
        m = side.get("M")
        if isinstance(m, bool) or not isinstance(m, (int, float)) or not np.isfinite(m) or m < 0:
            raise _fail(path, f"form 'd+2' needs a finite common norm M >= 0; found {m!r}")
    if not isinstance(side.get("params", {}), dict):
        raise _fail(path, "params must be an object")
    _check_search_params(path, side, nlist=None)


def _check_search_params(path: Path, side: dict[str, Any], *, nlist: int | None) -> None:
    """``search_params`` fit the index type and their range (``nprobe <= nlist``, known
    from the FAISS file when it was read, else ``<= n_items``)."""
    sp = side.get("search_params", {})
    if not isinstance(sp, dict):
        raise _fail(path, f"search_params must be an object; found {sp!r}")
    allowed = _SEARCH_PARAMS[side["index_type"]]
    for key, value in sp.items():
        if key not in allowed:
            raise _fail(
                path,
                f"search parameter {key!r} does not apply to index_type {side['index_type']!r} "
                f"(expected {' or '.join(allowed) or 'none'})",
            )
        top = _INT_MAX if key == "efSearch" else max(1, nlist if nlist is not None else side["n_items"])
        if type(value) is not int or not 1 <= value <= top:
            bound = "nlist" if nlist is not None else "n_items"
            raise _fail(
                path,
                f"search parameter {key} = {value!r}; expected an integer in [1, {top}]"
                + (f" (the index's {bound})" if key == "nprobe" else " (a C int)"),
            )


def faiss_index_ids(index) -> np.ndarray:
    """The external ids stored in a FAISS index (IndexIDMap order, or IVF list order)."""
    import faiss

    idx = faiss.downcast_index(index)
    if hasattr(idx, "id_map"):
        return faiss.vector_to_array(idx.id_map).astype(np.int64)
    try:
        ivf = faiss.extract_index_ivf(index)
    except RuntimeError:
        return np.arange(index.ntotal, dtype=np.int64)
    invlists = ivf.invlists
    if invlists is None:
        return np.zeros(0, np.int64)
    parts = []
    for lst in range(ivf.nlist):
        size = invlists.list_size(lst)
        if size:
            parts.append(faiss.rev_swig_ptr(invlists.get_ids(lst), size).copy())
    return np.concatenate(parts).astype(np.int64) if parts else np.zeros(0, np.int64)


def _check_against_file(path: Path, side: dict[str, Any]) -> None:
    if sha256_file(path) != side.get("index_sha256"):
        raise SidecarError(
            f"{path} does not match its sidecar (SHA-256 differs): the index file was replaced "
            "or modified after export; export again"
        )
    faiss = import_faiss()
    try:
        index = faiss.read_index(str(path))
    except RuntimeError as exc:
        raise SidecarError(f"{path}: not a readable FAISS index: {str(exc).splitlines()[0]}") from None
    if index.d != side["dim"]:
        raise _fail(path, f"dim = {side['dim']} but the FAISS file holds {index.d}-dimensional vectors")
    if index.ntotal != side["n_items"]:
        raise _fail(path, f"n_items = {side['n_items']} but the FAISS file holds {index.ntotal} vectors")
    want_metric = faiss.METRIC_INNER_PRODUCT if side["metric"] == "inner_product" else faiss.METRIC_L2
    if index.metric_type != want_metric:
        raise _fail(
            path, f"metric {side['metric']!r} but the FAISS file's metric type is {index.metric_type}"
        )
    stored = faiss_index_ids(index)
    listed = np.asarray(side["ids"], dtype=np.int64)
    same = (
        np.array_equal(stored, listed)
        if side.get("index_type") in ("flat", "hnsw")
        else np.array_equal(np.sort(stored), np.sort(listed))
    )
    if not same:
        raise _fail(path, "its ids differ from the ids stored in the FAISS file")
    if side["index_type"] in ("ivf", "ivf-sq8"):
        _check_search_params(path, side, nlist=int(faiss.extract_index_ivf(index).nlist))


def load_sidecar(path: str | os.PathLike, *, verify: bool = True) -> dict[str, Any]:
    """Read ``<path>.json`` and check it against itself and (``verify``) the FAISS file.

    Raises :class:`SidecarError` (a ``ValueError``) naming what was expected and found.
    """
    path = Path(path)
    sp = sidecar_path(path)
    try:
        side = read_json(sp, limits=_LIMITS)
    except FileNotFoundError:
        raise SidecarError(f"{sp}: no sidecar next to the FAISS file (expected {sp.name})") from None
    except JSONReadError as exc:
        raise SidecarError(str(exc)) from None
    _check_self(path, side)
    if verify:
        _check_against_file(path, side)
    return side
