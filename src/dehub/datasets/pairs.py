"""Ids and relevance pairs: id files, CSV/JSONL pair files, paired splits."""

from __future__ import annotations

import csv
import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from .._errors import InputError
from .._json import JSONLimits, read_jsonl
from ..relevance import Relevance
from .base import PairedSplit
from .npy import load_embeddings, read_npy

#: One line of a pairs file.
_PAIR_LIMITS = JSONLimits(max_bytes=16 << 20, max_depth=8, max_values=1 << 20)

__all__ = ["load_ids", "read_pairs", "load_relevance", "load_paired_split", "check_disjoint"]


def load_ids(path: str | Path, n: int, *, name: str = "ids") -> np.ndarray:
    """Row ids as a 1-D array of ``n`` unique strings (from .npy or one-per-line text)."""
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"{name} file not found: {p}")
    if p.suffix == ".npy":
        raw = read_npy(p, name, mmap=False)
        if raw.ndim != 1:
            raise InputError(f"{name} file {p} must hold a 1-D array; received shape {raw.shape}")
        ids = np.array([str(x) for x in raw.tolist()], dtype=object)
    else:
        lines = p.read_text(encoding="utf-8").splitlines()
        ids = np.array([ln.strip() for ln in lines if ln.strip()], dtype=object)
    return _check_unique(ids, n, f"{name} ({p})")


def _check_unique(ids: np.ndarray, n: int, name: str) -> np.ndarray:
    if ids.shape[0] != n:
        raise InputError(f"{name}: {ids.shape[0]} ids for {n} embedding rows; expected one id per row")
    uniq, counts = np.unique(ids.astype(str), return_counts=True)
    if uniq.size != ids.size:
        dup = uniq[counts > 1][:5].tolist()
        raise InputError(f"{name}: ids must be unique; duplicated e.g. {dup}")
    return ids


def _default_ids(n: int) -> np.ndarray:
    return np.array([str(i) for i in range(n)], dtype=object)


def read_pairs(path: str | Path) -> tuple[list[str], list[str]]:
    """(query ids, gallery ids) of every pair in a CSV or JSONL pairs file, as strings."""
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"pairs file not found: {p}")
    qs: list[str] = []
    gs: list[str] = []
    if p.suffix in (".jsonl", ".json", ".ndjson"):
        for line_no, obj in read_jsonl(p, limits=_PAIR_LIMITS, strict=False):
            try:
                q, g = obj["query_id"], obj["gallery_id"]
            except (KeyError, TypeError, IndexError) as exc:
                raise InputError(
                    f"{p}:{line_no}: expected a JSON object with 'query_id' and "
                    f"'gallery_id'; received {json.dumps(obj)[:80]!r} ({exc!r})"
                ) from None
            for gi in g if isinstance(g, list) else [g]:
                qs.append(str(q))
                gs.append(str(gi))
    else:
        with open(p, encoding="utf-8", newline="") as fh:
            reader = csv.DictReader(fh)
            fields = reader.fieldnames or []
            if "query_id" not in fields or "gallery_id" not in fields:
                raise InputError(
                    f"{p}: a CSV pairs file needs a header with 'query_id' and 'gallery_id' "
                    f"columns; received columns {fields}"
                )
            for row in reader:
                qs.append(str(row["query_id"]).strip())
                gs.append(str(row["gallery_id"]).strip())
    if not qs:
        raise InputError(f"pairs file {p} holds no pairs")
    return qs, gs


def _rows_of(ids: np.ndarray, wanted: Sequence[str], what: str, source: str) -> np.ndarray:
    keys = ids.astype(str)
    order = np.argsort(keys)
    sorted_keys = keys[order]
    w = np.asarray(wanted, dtype=str)
    pos = np.searchsorted(sorted_keys, w)
    pos_c = np.minimum(pos, max(sorted_keys.size - 1, 0))
    found = (pos < sorted_keys.size) & (sorted_keys[pos_c] == w)
    if not found.all():
        missing = list(dict.fromkeys(w[~found].tolist()))
        raise InputError(
            f"{source}: {int((~found).sum())} pairs name {what} ids that are not among the "
            f"{what} ids, e.g. {missing[:5]}. Check that the pairs file and the {what} "
            "embeddings/ids belong together."
        )
    return order[pos_c].astype(np.int64)


def load_relevance(
    pairs_path: str | Path,
    query_ids: np.ndarray,
    gallery_ids: np.ndarray,
) -> Relevance:
    """A :class:`Relevance` from a pairs file; ids are mapped to rows via the id arrays."""
    qs, gs = read_pairs(pairs_path)
    q = _rows_of(np.asarray(query_ids, dtype=object), qs, "query", str(pairs_path))
    g = _rows_of(np.asarray(gallery_ids, dtype=object), gs, "gallery", str(pairs_path))
    return Relevance.from_pairs(q, g, len(query_ids), len(gallery_ids))


def load_paired_split(
    a: str | Path,
    b: str | Path,
    pairs: str | Path,
    *,
    a_ids: str | Path | None = None,
    b_ids: str | Path | None = None,
    mmap: bool = True,
) -> tuple[PairedSplit, np.ndarray, np.ndarray]:
    """A split from files: side ``a`` = queries, side ``b`` = gallery; returns (split, a ids, b ids)."""
    ea = load_embeddings(a, mmap=mmap, name="query embeddings")
    eb = load_embeddings(b, mmap=mmap, name="gallery embeddings")
    if ea.shape[1] != eb.shape[1]:
        raise InputError(
            f"query embeddings {a} have dimension {ea.shape[1]} but gallery embeddings {b} "
            f"have {eb.shape[1]}; were they produced by the same encoder?"
        )
    ia = load_ids(a_ids, ea.shape[0], name="query ids") if a_ids else _default_ids(ea.shape[0])
    ib = load_ids(b_ids, eb.shape[0], name="gallery ids") if b_ids else _default_ids(eb.shape[0])
    rel = load_relevance(pairs, ia, ib)
    p = np.stack([rel.query_rows(), rel.indices], axis=1)
    return PairedSplit(a=ea, b=eb, pairs=p), ia, ib


def check_disjoint(ids_1: np.ndarray, ids_2: np.ndarray, what: str) -> None:
    """Raise if two id sets overlap (e.g. validation and test queries)."""
    common = np.intersect1d(np.asarray(ids_1, dtype=str), np.asarray(ids_2, dtype=str))
    if common.size:
        raise InputError(
            f"{what} overlap: {common.size} ids occur in both, e.g. {common[:5].tolist()}. "
            "Hyperparameters must be chosen on data disjoint from the test split."
        )
