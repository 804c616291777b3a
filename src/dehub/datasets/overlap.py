"""Content overlap between embedding sets: row hashes, fingerprints, the disjointness check."""

from __future__ import annotations

import hashlib
import warnings

import numpy as np

from .._errors import InputError

__all__ = [
    "row_hashes",
    "content_fingerprint",
    "count_shared_rows",
    "check_content_disjoint",
    "MAX_OVERLAP_SHARE",
]

#: Share of the smaller set's rows that two sets may share before
#: :func:`check_content_disjoint` refuses them (identical rows do occur by chance in real
#: data, e.g. a caption that appears in two splits; copies of a whole file do not).
MAX_OVERLAP_SHARE = 0.01


def row_hashes(x, *, block_rows: int = 65536) -> np.ndarray:
    """A uint64 hash of every row (after a cast to float32), read in row blocks.

    Rows with equal float32 values get equal hashes; different rows collide with
    probability about 2**-64 per pair (a random odd multiplier per 64-bit word, summed
    mod 2**64). :func:`count_shared_rows` confirms every hash match on the rows
    themselves, so the overlap it reports is exact.
    """
    n, d = int(x.shape[0]), int(x.shape[1])
    words = -(-d // 2)  # two float32 per uint64 word
    rng = np.random.default_rng(0x5EED)
    mult = rng.integers(1, 2**63, size=words, dtype=np.uint64) * np.uint64(2) + np.uint64(1)
    out = np.empty(n, dtype=np.uint64)
    for start in range(0, n, block_rows):
        stop = min(start + block_rows, n)
        block = np.zeros((stop - start, 2 * words), dtype=np.float32)
        block[:, :d] = np.asarray(x[start:stop], dtype=np.float32)
        block += 0.0  # -0.0 -> +0.0: equal values, equal bytes
        w = block.view(np.uint64)
        with np.errstate(over="ignore"):
            out[start:stop] = (w * mult).sum(axis=1, dtype=np.uint64)
    return out


def content_fingerprint(x, *, n_sample: int = 256) -> str:
    """A cheap fingerprint of an embedding matrix: shape + hash of evenly sampled rows."""

    n = int(x.shape[0])
    rows = np.unique(np.linspace(0, max(n - 1, 0), num=min(n, n_sample)).astype(np.int64))
    h = hashlib.sha256(repr(tuple(int(s) for s in x.shape)).encode())
    h.update(row_hashes(np.asarray(x[rows]) if n else np.zeros((0, x.shape[1]))).tobytes())
    return h.hexdigest()[:16]


def count_shared_rows(x, y) -> tuple[int, np.ndarray]:
    """(number of rows of ``x`` equal to some row of ``y``, up to 5 of those rows of ``x``)."""
    hx, hy = row_hashes(x), row_hashes(y)
    cand = np.flatnonzero(np.isin(hx, hy))
    if cand.size == 0:
        return 0, cand
    order = np.argsort(hy, kind="stable")
    sorted_h = hy[order]
    confirmed = []
    for i in cand.tolist():  # confirm every hash match on the values (exact)
        lo, hi = np.searchsorted(sorted_h, hx[i], "left"), np.searchsorted(sorted_h, hx[i], "right")
        xi = np.asarray(x[i], dtype=np.float32)
        if any(np.array_equal(xi, np.asarray(y[int(j)], dtype=np.float32)) for j in order[lo:hi]):
            confirmed.append(i)
    return len(confirmed), np.asarray(confirmed[:5], dtype=np.int64)


def check_content_disjoint(
    sets: dict[str, object],
    pairs: list[tuple[str, str, str]],
    *,
    allow_overlap: bool = False,
    max_share: float = MAX_OVERLAP_SHARE,
) -> dict[str, int]:
    """Refuse data sets that share rows: ``pairs`` are ``(name_1, name_2, why it matters)``.

    An overlap above ``max_share`` of the smaller set's rows is a ``ValueError`` unless
    ``allow_overlap``; a smaller one (or an allowed one) is a warning. Returns
    ``{"name_1 ~ name_2": shared rows}`` for every pair checked.
    """

    counts = {}
    for a, b, why in pairs:
        x, y = sets[a], sets[b]
        n, examples = count_shared_rows(x, y)
        counts[f"{a} ~ {b}"] = n
        if n == 0:
            continue
        smaller = min(int(x.shape[0]), int(y.shape[0]))  # type: ignore[attr-defined]
        msg = f"{a} and {b} share {n} identical rows (e.g. rows {examples.tolist()} of {a}); {why}"
        if n > max_share * smaller and not allow_overlap:
            raise InputError(
                msg,
                fix="Provide disjoint data, or pass {allow_overlap} if this is intended.",
                params={"allow_overlap": "True"},
            )
        warnings.warn(msg, UserWarning, stacklevel=2)
    return counts
