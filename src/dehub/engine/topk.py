"""A mergeable running top-k over streamed score blocks.

:class:`RunningTopK` keeps, for each of ``m`` rows, the ``k`` best ``(score, id)`` pairs
seen so far, ordered by score descending and, on equal scores, by id ascending (the
deterministic tie rule of the whole engine). Blocks of scores are pushed in increasing
id order; the expensive part of top-k selection is avoided with a per-row threshold:

* a block entry can only enter a row's top-k if it beats the row's current k-th best
  score, so one vectorized comparison (``block > threshold``) plus ``flatnonzero``
  finds the few candidates; after the first blocks almost nothing passes;
* candidates are appended to a per-row buffer and merged into the top-k only when the
  buffer of that row fills up (or at the end), so merges are rare and batched.

Because blocks arrive in increasing id order, an entry that *equals* the current k-th
score always has a larger id than the entries kept, so the strict ``>`` comparison
implements the tie rule exactly.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import DTypeLike

from ._compiled import kernels_enabled

try:  # the compiled running top-k (optional C extension, built at install when a compiler is there)
    from . import _topk_kernel as _kernel
except ImportError:  # not built: numpy selection (RunningTopK), the same results
    _kernel = None  # type: ignore[assignment]

__all__ = [
    "RunningTopK",
    "KernelTopK",
    "kernel_isa",
    "merge_topk",
    "lane_lower_bound",
    "select_topk",
    "topk_mask",
]


_ID_PAD = np.iinfo(np.int64).max  # sorts after every real id
_SELECT_LANES = 256  # lanes of the k-th value bound in select_topk (at least 4k)


def _sort_rows(v: np.ndarray, i: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sort every row by score descending, then id ascending (padding ``-1`` ids last)."""
    order = np.argsort(-v, axis=1)  # ties are re-ordered by id below
    v = np.take_along_axis(v, order, axis=1)
    i = np.take_along_axis(i, order, axis=1)
    tied = (v[:, 1:] == v[:, :-1]).any(axis=1) if v.shape[1] > 1 else np.zeros(v.shape[0], bool)
    if tied.any():
        rows = np.flatnonzero(tied)
        key_i = np.where(i[rows] < 0, _ID_PAD, i[rows])
        o2 = np.lexsort((key_i, -v[rows]), axis=-1)
        v[rows] = np.take_along_axis(v[rows], o2, axis=1)
        i[rows] = np.take_along_axis(i[rows], o2, axis=1)
    return v, i


def _select_topk(w_v: np.ndarray, w_i: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The k best entries per row of a padded candidate matrix (unsorted within the row).

    Padding is ``-inf`` / ``-1``. Exact tie rule: where several entries share the k-th
    score, the ones with the smallest ids are kept.
    """
    n, width = w_v.shape
    if width <= k:
        pad = k - width
        if pad == 0:  # np.pad's Python overhead, for nothing to pad
            return w_v.copy(), w_i.copy()
        return (
            np.pad(w_v, ((0, 0), (0, pad)), constant_values=-np.inf),
            np.pad(w_i, ((0, 0), (0, pad)), constant_values=-1),
        )
    # The k-th value of each row from a partition of the values alone (about 5x cheaper
    # than argpartition plus two gathers); rows where exactly k entries reach it are
    # gathered through the mask, which keeps them in column order.
    kth = np.partition(w_v, width - k, axis=1)[:, width - k]
    ge = w_v >= kth[:, None]
    n_ge = np.count_nonzero(ge, axis=1)
    clean = n_ge == k
    if clean.all():  # (2-D boolean indexing costs ~10x a flat take)
        at = np.flatnonzero(ge)
        return w_v.ravel()[at].reshape(n, k), w_i.ravel()[at].reshape(n, k)
    v = np.empty((n, k), dtype=w_v.dtype)
    i = np.empty((n, k), dtype=w_i.dtype)
    if clean.any():
        rows = np.flatnonzero(clean)
        at = np.flatnonzero(ge[rows])
        v[rows] = w_v[rows].ravel()[at].reshape(-1, k)
        i[rows] = w_i[rows].ravel()[at].reshape(-1, k)
    # Rows where an entry left out equals the k-th score (ties, or -inf padding): the
    # choice among the tied entries must follow the id rule, so a full lexsort decides.
    rows = np.flatnonzero(~clean)
    key_i = np.where(w_i[rows] < 0, _ID_PAD, w_i[rows])
    o = np.lexsort((key_i, -w_v[rows]), axis=-1)[:, :k]
    v[rows] = np.take_along_axis(w_v[rows], o, axis=1)
    i[rows] = np.take_along_axis(w_i[rows], o, axis=1)
    return v, i


def topk_mask(scores: np.ndarray, k: int) -> np.ndarray:
    """Boolean mask of exactly ``k`` entries per row (``k < n_columns``): the row's k
    largest, and among entries tied at the k-th value the leftmost. For columns in id
    order (the IVF's lists) that is the engine's tie rule; unlike :func:`_select_topk`
    it needs no ids, only that order."""
    width = scores.shape[1]
    kth = np.sort(scores, axis=1)[:, width - k]  # numpy's SIMD sort: ~1.2x faster than partition here
    mask = scores >= kth[:, None]
    if np.count_nonzero(mask) == k * scores.shape[0]:  # no ties at the k-th value
        return mask
    over = np.flatnonzero(mask.sum(axis=1) > k)
    if over.size:  # ties at the k-th value: keep the first ones, left to right
        sub = scores[over]
        above = sub > kth[over, None]
        tied = sub == kth[over, None]
        need = k - above.sum(axis=1)
        mask[over] = above | (tied & (np.cumsum(tied, axis=1) <= need[:, None]))
    return mask


def select_topk(scores: np.ndarray, k: int, ids: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` best entries of every row of a score matrix, sorted (the one-shot selection).

    ``scores`` (n, width); ``ids`` (n, width) int64 with ``-1`` for padding, or ``None``
    for the column numbers (a dense score matrix). Returns ``(scores, ids)`` of shape
    (n, k), best first, ties -> smaller id, padded ``-inf``/``-1`` when a row has fewer
    than ``k`` entries (a ``-inf`` score counts as padding: its id is ``-1``).

    ``k == 1`` over columns is an ``argmax`` (the first maximum is the smallest id). For a
    wide matrix, a lower bound of each row's k-th value (:func:`lane_lower_bound` on wide
    rows, else ``np.partition`` of the float scores, about 3x cheaper than
    ``argpartition``) filters the entries; the few at or above it are gathered and
    ordered exactly, so ties at the k-th value follow the id rule.
    """
    n, width = scores.shape
    if ids is None and k == 1 and width >= 1:
        best = scores.argmax(axis=1)[:, None]
        return np.take_along_axis(scores, best, axis=1), best.astype(np.int64)
    cols = np.broadcast_to(np.arange(width, dtype=np.int64), scores.shape) if ids is None else ids
    if width <= 2 * k:
        v, i = _sort_rows(*_select_topk(scores, cols, k))
        i[np.isneginf(v)] = -1  # -inf is padding, as in RunningTopK
        return v, i
    lanes = max(4 * k, _SELECT_LANES)
    if width >= 2 * lanes and scores.strides[1] == scores.itemsize:
        # a lower bound of each row's k-th value from lane maxima: one streaming pass
        # instead of a partition of every row (about 5x cheaper on wide rows)
        kth = lane_lower_bound(scores, k, lanes)
    else:
        kth = np.partition(scores, width - k, axis=1)[:, width - k]
    mask = scores >= kth[:, None]
    if ids is not None:
        mask &= ids >= 0
    # flatnonzero has numpy's fast 1-D loop; 2-D nonzero costs ~10x more per entry
    rows, c = np.divmod(np.flatnonzero(mask), width)
    counts = np.bincount(rows, minlength=n)
    m = max(int(counts.max()), 1)
    pos = np.arange(rows.size) - np.repeat(np.cumsum(counts) - counts, counts)
    sv = np.full((n, m), -np.inf, dtype=scores.dtype)
    si = np.full((n, m), -1, dtype=np.int64)
    sv[rows, pos] = scores[rows, c]
    si[rows, pos] = c if ids is None else ids[rows, c]
    v, i = _sort_rows(*_select_topk(sv, si, k))
    i[np.isneginf(v)] = -1  # -inf is padding, as in RunningTopK
    return v, i


def lane_lower_bound(scores: np.ndarray, j: int, lanes: int) -> np.ndarray:
    """A lower bound of every row's j-th largest score, from ``lanes`` column maxima.

    Column ``c`` of a block belongs to lane ``c % lanes``; the maximum of each lane is an
    actual, distinct entry of the row, so the j-th largest of the ``lanes`` maxima is at
    most the row's j-th largest score (``j <= lanes <= n_columns``). It costs one
    elementwise-max pass over contiguous slabs plus a partition of ``lanes`` values per
    row, instead of a partition of the whole row. When the j best entries of a row fall
    in distinct lanes (likely when ``lanes >> j``), the bound is the j-th largest itself.
    """
    nr, nb = scores.shape
    if not 1 <= j <= lanes <= nb:
        raise ValueError(f"need 1 <= j <= lanes <= n_columns; received j={j}, lanes={lanes}, n={nb}")
    full = nb // lanes
    if scores.flags.c_contiguous or scores.strides[1] == scores.itemsize:
        # one reduction over the middle axis of a (rows, full, lanes) view: the lane
        # maxima of a row stay in L1 while its columns stream by (about 3x faster than
        # one np.maximum call per slab)
        m = scores[:, : full * lanes].reshape(nr, full, lanes).max(axis=1)
    else:
        m = scores[:, :lanes].copy()
        for c in range(lanes, full * lanes, lanes):
            np.maximum(m, scores[:, c : c + lanes], out=m)
    rest = nb - full * lanes
    if rest:
        np.maximum(m[:, :rest], scores[:, full * lanes :], out=m[:, :rest])
    return np.partition(m, lanes - j, axis=1)[:, lanes - j]


class RunningTopK:
    """Running top-k of ``n_rows`` rows fed with blocks of scores.

    Parameters
    ----------
    n_rows : int
        Number of rows (queries) tracked.
    k : int
        How many best entries to keep per row.
    buffer : int, optional
        Per-row candidate buffer size; a row is merged when its buffer would overflow.
    score_dtype : numpy dtype
        Dtype of the kept scores (float32 or float64).
    floor : bool
        Allocate the floor now (see :meth:`set_floor`), so that threads may then set the
        floors of disjoint rows concurrently.

    Pushes of *disjoint* rows may run in concurrent threads when each passes its own
    ``mask`` scratch buffer (and the floor, if used, was allocated up front): every other
    write of :meth:`push` touches only the pushed rows.
    """

    def __init__(
        self,
        n_rows: int,
        k: int,
        buffer: int | None = None,
        score_dtype: DTypeLike = np.float32,
        *,
        floor: bool = False,
    ) -> None:
        self.n_rows = int(n_rows)
        self.k = int(k)
        self.cap = int(buffer) if buffer is not None else max(2 * self.k, 128)
        dt = np.dtype(score_dtype)
        self.top_v = np.full((self.n_rows, self.k), -np.inf, dtype=dt)
        self.top_i = np.full((self.n_rows, self.k), -1, dtype=np.int64)
        self.thr = np.full(self.n_rows, -np.inf, dtype=dt)  # current k-th best per row
        self.buf_v = np.empty((self.n_rows, self.cap), dtype=dt)
        self.buf_i = np.empty((self.n_rows, self.cap), dtype=np.int64)
        self.fill = np.zeros(self.n_rows, dtype=np.int64)
        # optional: entries below it are ignored
        self.floor: np.ndarray | None = np.full(self.n_rows, -np.inf, dtype=dt) if floor else None
        self._mask: np.ndarray | None = None

    # ----------------------------------------------------------------- internals
    def _merge(self, rows: np.ndarray, new_rows=None, new_vals=None, new_ids=None) -> None:
        """Merge the current top-k, the buffer and optional new candidates of ``rows``.

        ``rows`` are sorted absolute row numbers; ``new_rows`` (sorted, a subset of
        ``rows``) label the new candidates ``new_vals``/``new_ids``.
        """
        if rows.size == 0:
            return
        k, fill = self.k, self.fill[rows]
        n_new = None
        if new_rows is not None and new_rows.size:
            lookup = np.empty(self.n_rows, dtype=np.int64)
            lookup[rows] = np.arange(rows.size)
            lab = lookup[new_rows]
            n_new = np.bincount(lab, minlength=rows.size)
            width = k + int((fill + n_new).max())
        else:
            width = k + int(fill.max())
        # Padding holds -inf scores; its ids are left unset and become -1 after selection.
        w_v = np.full((rows.size, width), -np.inf, dtype=self.top_v.dtype)
        w_i = np.empty((rows.size, width), dtype=np.int64)
        w_v[:, :k] = self.top_v[rows]
        w_i[:, :k] = self.top_i[rows]
        nb = min(self.cap, width - k)
        if nb > 0:
            live = np.arange(nb)[None, :] < fill[:, None]
            np.copyto(w_v[:, k : k + nb], self.buf_v[rows, :nb], where=live)
            w_i[:, k : k + nb] = self.buf_i[rows, :nb]
        if n_new is not None:
            starts = np.cumsum(n_new) - n_new
            col = k + fill[lab] + (np.arange(lab.size) - starts[lab])
            w_v[lab, col] = new_vals
            w_i[lab, col] = new_ids
        v, i = _select_topk(w_v, w_i, k)
        i[np.isneginf(v)] = -1
        self.top_v[rows] = v
        self.top_i[rows] = i
        self.thr[rows] = v.min(axis=1)
        self.fill[rows] = 0

    # ----------------------------------------------------------------- public
    def push(
        self, scores: np.ndarray, id_offset: int, row_offset: int = 0, *, mask: np.ndarray | None = None
    ) -> None:
        """Offer a block of scores.

        ``scores[a, b]`` is the score of row ``row_offset + a`` against id ``id_offset + b``.
        Blocks for the same rows must come in increasing ``id_offset`` order. ``mask``: a
        flat bool scratch buffer of at least ``scores.size`` entries (else one is kept).
        """
        nr, nb = scores.shape
        rsl = slice(row_offset, row_offset + nr)
        thr = self.thr[rsl]
        notfull = np.isneginf(thr)
        if self.floor is not None:
            thr = np.maximum(thr, self.floor[rsl])
        elif nb > self.k and notfull.any():
            # Rows without k entries yet: an entry below this block's own k-th score can
            # never make the top-k, so filter with a cheap lower bound of that k-th score
            # (>= keeps ties at the bound; the merge applies the id rule).
            sub = scores if notfull.all() else scores[notfull]
            lanes = min(nb, max(4 * self.k, 256))
            bound = lane_lower_bound(sub, self.k, lanes).astype(thr.dtype)
            thr = thr.copy()
            thr[notfull] = np.nextafter(bound, thr.dtype.type(-np.inf))
        if mask is None:
            if self._mask is None or self._mask.size < scores.size:
                self._mask = np.empty(scores.size, dtype=bool)
            mask = self._mask
        mask = mask[: scores.size].reshape(nr, nb)
        np.greater(scores, thr[:, None], out=mask)
        flat = np.flatnonzero(mask)
        if flat.size == 0:
            return
        rows = flat // nb + row_offset
        vals = scores.ravel()[flat]
        ids = flat % nb + id_offset
        counts = np.bincount(rows - row_offset, minlength=nr)
        fill = self.fill[rsl]
        over = (fill + counts) > self.cap
        if over.any():
            over_rows = np.flatnonzero(over) + row_offset
            sel = over[rows - row_offset]
            self._merge(over_rows, rows[sel], vals[sel], ids[sel])
            keep = ~sel
            rows, vals, ids = rows[keep], vals[keep], ids[keep]
            counts[over] = 0
        if rows.size:
            starts = np.cumsum(counts) - counts
            rel = rows - row_offset
            at = rows * self.cap + self.fill[rows] + (np.arange(rows.size) - starts[rel])
            self.buf_v.reshape(-1)[at] = vals  # flat positions: ~2x cheaper than (rows, pos)
            self.buf_i.reshape(-1)[at] = ids
            self.fill[rsl] += counts
        # Refresh the threshold of rows that buffered at least k candidates (a merge then
        # raises it noticeably and costs about two entries per candidate), and of rows
        # that just received their first entries, so later blocks are filtered by it.
        due = self.fill[rsl] >= self.k
        if self.floor is None:
            due |= notfull & (self.fill[rsl] > 0)
        if due.any():
            self._merge(np.flatnonzero(due) + row_offset)

    def set_floor(self, floor: np.ndarray, row_offset: int = 0) -> None:
        """From now on ignore entries scoring below ``floor`` in rows ``row_offset ...``.

        This is a *bet*: if, at the end, a row holds k entries scoring ``>= floor``, its
        result is exact (every entry of the true top-k scores at least the true k-th
        score, which is then ``>= floor``); otherwise :meth:`floor_failed` reports the row
        and the caller must recompute it without a floor.
        """
        if self.floor is None:
            self.floor = np.full(self.n_rows, -np.inf, dtype=self.thr.dtype)
        floor = np.asarray(floor, dtype=self.thr.dtype)
        # strict '>' comparison in push: step just below the floor to keep entries == floor
        self.floor[row_offset : row_offset + floor.shape[0]] = np.nextafter(
            floor, self.thr.dtype.type(-np.inf)
        )

    def floor_failed(self) -> np.ndarray:
        """Rows whose result may be inexact because the floor was set too high."""
        if self.floor is None:
            return np.zeros(self.n_rows, dtype=bool)
        self._merge(np.flatnonzero(self.fill > 0))
        return np.isfinite(self.floor) & ~(self.top_v.min(axis=1) > self.floor)

    def result(self) -> tuple[np.ndarray, np.ndarray]:
        """Final ``(scores, ids)``, each of shape (n_rows, k), best first; -inf/-1 padding."""
        self._merge(np.flatnonzero(self.fill > 0))
        return _sort_rows(self.top_v.copy(), self.top_i.copy())


def kernel_isa() -> str | None:
    """The instruction set the compiled top-k runs with (``"avx512f"``, ``"avx2"``,
    ``"scalar"``), or None when it is not built or turned off (``DEHUB_KERNELS=0``)."""
    return str(_kernel.ISA) if _kernel is not None and kernels_enabled() else None


class KernelTopK:
    """Running top-k of ``n_rows`` rows in C (:mod:`dehub.engine._topk_kernel`): the
    :class:`RunningTopK` contract, with the offset subtracted inside the selection.

    Per row: the ``k`` kept entries, a candidate buffer of ``buffer`` entries (an entry
    enters it when it beats the row's threshold; a full buffer is merged by a quickselect
    on (score, id)), the threshold, and a floor set on the row's first tile (the k-th
    largest of ``4k`` lane maxima, a proven lower bound of the row's k-th score). The
    scan compares 16 (AVX-512) or 8 (AVX2) scores at a time; scores and ids come out
    bit-identical to :class:`RunningTopK`'s (same tie rule, same IEEE subtraction).
    Pushes of disjoint rows may run in concurrent threads (the GIL is released).
    Use :func:`kernel_isa` to know whether it is available.
    """

    def __init__(self, n_rows: int, k: int, score_dtype: DTypeLike = np.float32, buffer: int | None = None):
        if _kernel is None:
            raise RuntimeError("the compiled top-k (dehub.engine._topk_kernel) is not built")
        dt = np.dtype(score_dtype)
        if dt not in (np.float32, np.float64):
            raise ValueError(f"score_dtype must be float32 or float64; received {dt}")
        self.n_rows, self.k = int(n_rows), int(k)
        width = self.k + (int(buffer) if buffer is not None else max(self.k, 64))
        self.v = np.full((self.n_rows, width), -np.inf, dtype=dt)
        self.i = np.full((self.n_rows, width), -1, dtype=np.int64)
        self.fill = np.zeros(self.n_rows, dtype=np.int64)
        self.thr = np.full(self.n_rows, -np.inf, dtype=dt)
        self.flo = np.full(self.n_rows, -np.inf, dtype=dt)

    def push(
        self,
        scores: np.ndarray,
        id_offset: int,
        row_offset: int = 0,
        offset: np.ndarray | None = None,
        *,
        floor_rank: int | None = None,
    ) -> None:
        """Offer ``scores[a, b] - offset[b]`` as the score of row ``row_offset + a`` against
        id ``id_offset + b`` (blocks of a row in increasing ``id_offset`` order). ``scores``
        and ``offset`` must be C-contiguous and of the state's dtype.

        A row's first tile sets its floor from ``4k`` lane maxima: their k-th largest (a
        proven lower bound of the row's k-th score), or with ``floor_rank = j < k`` their
        j-th largest, a bet that :meth:`floor_failed` checks after :meth:`result`.
        """
        r = slice(row_offset, row_offset + scores.shape[0])
        j = self.k if floor_rank is None else int(floor_rank)
        state = (self.v[r], self.i[r], self.fill[r], self.thr[r], self.flo[r])
        _kernel.push(scores, offset, int(id_offset), None, None, *state, self.k, j)

    def push_rows(self, scores: np.ndarray, ids: np.ndarray, rows: np.ndarray) -> None:
        """Offer ``scores[a, b]`` as the score of row ``rows[a]`` against id ``ids[b]``, ids in
        any order across pushes (entries tied with a row's threshold are kept as candidates
        and the merge orders them by id). C-contiguous, the state's dtype, int64 ids/rows;
        concurrent pushes must not share rows."""
        state = (self.v, self.i, self.fill, self.thr, self.flo)
        _kernel.push(scores, None, 0, ids, rows, *state, self.k, self.k)

    def finish(self, rows: slice | None = None) -> None:
        """Merge the buffers of ``rows`` (every row by default) into their kept entries and
        sort those best first. Rows are independent: disjoint slices may finish on
        different threads (the kernel releases the GIL)."""
        r = slice(None) if rows is None else rows
        _kernel.finish(self.v[r], self.i[r], self.fill[r], self.thr[r], self.flo[r], self.k)

    def result(self, *, finished: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """Final ``(scores, ids)``, each (n_rows, k), best first; -inf/-1 padding
        (``finished``: every row went through :meth:`finish` already)."""
        if not finished:
            self.finish()
        return self.v[:, : self.k].copy(), self.i[:, : self.k].copy()

    def floor_failed(self) -> np.ndarray:
        """After :meth:`result`: the rows whose floor bet lost (they hold fewer than k
        entries above a finite floor; entries below it were skipped), to be recomputed
        without a bet. A proven floor never loses."""
        return (self.i[:, self.k - 1] < 0) & np.isfinite(self.flo)


def merge_topk(results: list[tuple[np.ndarray, np.ndarray]], k: int) -> tuple[np.ndarray, np.ndarray]:
    """Merge several ``(scores, ids)`` top-k results over disjoint id sets (e.g. shards).

    Each result has shape (n_rows, k_i); the merged result keeps the k best per row with
    the engine's tie rule (score descending, id ascending), padded with -inf/-1.
    """
    if not results:
        raise ValueError("merge_topk needs at least one (scores, ids) result; received none")
    n = results[0][0].shape[0]
    for s, i in results:
        if s.shape != i.shape or s.shape[0] != n:
            raise ValueError(
                f"every result must be a pair of (n_rows={n}, k_i) arrays; "
                f"received shapes {s.shape} and {i.shape}"
            )
    v = np.concatenate([np.asarray(s) for s, _ in results], axis=1)
    ids = np.concatenate([np.asarray(i, dtype=np.int64) for _, i in results], axis=1)
    key_v = np.where(ids < 0, -np.inf, v)
    key_i = np.where(ids < 0, np.iinfo(np.int64).max, ids)
    order = np.lexsort((key_i, -key_v), axis=-1)[:, :k]
    out_v = np.take_along_axis(key_v, order, axis=1).astype(np.float32)
    out_i = np.take_along_axis(ids, order, axis=1)
    if out_v.shape[1] < k:
        pad = k - out_v.shape[1]
        out_v = np.pad(out_v, ((0, 0), (0, pad)), constant_values=-np.inf)
        out_i = np.pad(out_i, ((0, 0), (0, pad)), constant_values=-1)
    return out_v, out_i
