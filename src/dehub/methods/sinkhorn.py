"""Sinkhorn normalization (SN) and dual-bank Sinkhorn normalization (DBSN).

Pan et al., ACM MM 2025, arXiv 2508.02538; official code ppanzx/DBSN (numpy + POT).

Where the inverted softmax (QB-Norm) balances only the gallery side, SN balances both
marginals of the entropic optimal-transport plan between the gallery and a bank of
queries (dehub's ``reference``). With ``S = gallery @ bank.T`` (n x m), cost ``1 - S``,
uniform marginals ``a = 1/n``, ``b = 1/m`` and ``K = exp(-(1 - S) / tau)``, Sinkhorn's
iterations (POT's ``sinkhorn_knopp``, starting from ``u = 1/n``)::

    v <- b / (K^T u)
    u <- a / (K v)

run ``n_iter`` times (the official code: ``ot.sinkhorn(a, b, 1 - S, reg=tau,
numItermax=10)``, ``tau = 0.01``). The official code then scores a test pair with
``s(q, r) - offset(r)``, ``offset(r) = -tau * log u_r``: a fixed per-gallery-item
offset, so SN is served by the exact engine with ``offset=bias_``, exported as ``d + 1``
vectors like NNN, and needs no test query.

DBSN stacks a gallery-modality bank under the gallery rows before solving: rows
``[gallery; gallery_bank]`` against the same query bank, and keeps the first
``n_gallery`` offsets. With ``gallery_bank=None`` dehub stacks nothing: DBSN with the
gallery itself as its bank would be SN exactly (duplicated rows only shift every offset
by ``tau * log 2``), so DBSN without a bank *is* SN; pass a held-out gallery-modality
bank (e.g. the reference split's other side) for the paper's setting.

Numerics (measured equal to POT, see ``tests/methods/test_sinkhorn.py``): dehub runs
POT's iteration with the kernel stabilized by each row's maximum,
``E[i, j] = exp((S[i, j] - max_j S[i, j]) / tau)``, the row factor absorbed in ``u``,
so ``K`` never underflows however small ``tau``; the kernel and the scaling vectors
are float64 (the scalings as logs, rescaled by their maximum before every
matrix-vector product). Kernel entries below ``exp(-80)`` of their row's maximum are
raised to ``exp(-80)`` (no zero column); a column or row whose whole mass still
vanishes is an error naming ``tau``. When the kernel fits in ``memory_budget`` it is computed
once (one GEMM + one ``exp`` pass, then two matrix-vector products per iteration);
otherwise every iteration recomputes it block by block (one GEMM + one ``exp`` pass per
iteration), never holding more than ``memory_budget`` bytes.

Convergence: ``tol`` stops early once POT's marginal error, ``||(u K v)^T 1 - b||_2``
(the column-marginal violation after the ``u`` update), falls below it; ``n_iter`` is
the cap. ``marginal_error_`` and ``n_iter_`` record where the fit stopped.
"""

from __future__ import annotations

from dataclasses import dataclass
from numbers import Integral, Real
from typing import ClassVar

import numpy as np

from .._progress import progress_bar
from .._validation import check_same_dim
from ..engine.exact import DEFAULT_MEMORY_BUDGET
from ._params import FLOAT32_MAX, Constraint, Interval
from ._stats import compute_dtype
from .base import AdditiveBiasCorrector, NotFittedError

__all__ = ["SN", "DBSN", "sinkhorn_offsets", "SinkhornResult"]

_CLIP = -80.0  # log of the smallest kernel entry kept, relative to its row maximum


@dataclass(frozen=True)
class SinkhornResult:
    """Output of :func:`sinkhorn_offsets`.

    ``offsets[t]`` (float64, one per row) after ``iterations[t]`` iterations;
    ``log_v`` the final column scaling's log; ``marginal_error[t]`` POT's
    column-marginal error after iteration ``iterations[t]``.
    """

    offsets: dict[int, np.ndarray]
    log_v: np.ndarray
    marginal_error: dict[int, float]
    n_iter: int


def _row_blocks(parts: list[np.ndarray], step: int):
    """(part index, global start, local slice) of row blocks over stacked parts."""
    start = 0
    for p, x in enumerate(parts):
        for s in range(0, x.shape[0], step):
            sl = slice(s, min(s + step, x.shape[0]))
            yield p, start + s, sl
        start += x.shape[0]


def sinkhorn_offsets(
    parts: list[np.ndarray],
    bank: np.ndarray,
    tau: float,
    n_iter: int,
    *,
    tol: float | None = None,
    snapshots: list[int] | None = None,
    memory_budget: int = DEFAULT_MEMORY_BUDGET,
    progress: bool | str = False,
) -> SinkhornResult:
    """SN offsets ``-tau * log u`` of the rows of ``vstack(parts)`` against ``bank``.

    Runs POT's ``sinkhorn_knopp`` on cost ``1 - rows @ bank.T`` with uniform marginals
    (see the module docstring) for ``n_iter`` iterations, or fewer when ``tol`` is met.
    ``snapshots``: iteration counts (<= n_iter) whose offsets are returned too (a grid
    over ``n_iter`` costs one run). The stacked matrix is never formed.
    """
    n = sum(int(x.shape[0]) for x in parts)
    m = int(bank.shape[0])
    if n == 0 or m == 0:
        raise ValueError(
            f"Sinkhorn needs at least one row and one bank item; received {n} rows, {m} bank items"
        )
    d = int(bank.shape[1])
    dt = compute_dtype(bank, *parts)
    inv_tau = 1.0 / float(tau)
    log_a, log_b = -np.log(n), -np.log(m)
    keep = sorted({int(t) for t in (snapshots or [])} | {int(n_iter)})
    # Row block: the float32/64 scores and the float64 kernel (rows x m each) plus the rows.
    # The kernel and every matrix-vector product are float64: float32 products of small
    # kernel entries and weights fall into subnormals (slow, and lossy).
    per_row = m * (dt.itemsize + 8) + d * dt.itemsize
    rows_per_block = int(max(1, min(n, memory_budget // per_row)))
    # Cache the whole kernel when it fits next to a small scores buffer (then every
    # iteration is two matrix-vector products); else recompute it block by block.
    cache_block = int(min(rows_per_block, 256))
    cached = n * m * 8 + cache_block * m * dt.itemsize <= memory_budget
    if cached:
        rows_per_block = cache_block
    row_max = np.empty(n, dtype=np.float64)
    kernel_cache: list[np.ndarray] = []
    buf_s = np.empty(rows_per_block * m, dtype=dt)
    buf_e = None if cached else np.empty(rows_per_block * m, dtype=np.float64)
    bank_t = np.asarray(bank, dtype=dt).T

    def kernel_block(p: int, sl: slice, g0: int) -> np.ndarray:
        x = np.asarray(parts[p][sl], dtype=dt)
        r = x.shape[0]
        s = buf_s[: r * m].reshape(r, m)
        np.matmul(x, bank_t, out=s)
        mx = s.max(axis=1)
        row_max[g0 : g0 + r] = mx
        e = np.empty((r, m)) if buf_e is None else buf_e[: r * m].reshape(r, m)
        np.subtract(s, mx[:, None].astype(dt), out=e)
        e *= inv_tau
        np.maximum(e, _CLIP, out=e)
        np.exp(e, out=e)
        return e

    blocks = list(_row_blocks(parts, rows_per_block))
    # Rows per fused step: the row update and the column contribution of a sub-block
    # read it twice while it is in the CPU cache (about 2 MiB of float64 kernel).
    sub = int(max(1, min(rows_per_block, (2 << 20) // (8 * m))))
    # log u~ = log u + (row_max - 1) / tau: the scaling of the row-stabilized kernel.
    log_ut = np.empty(n, dtype=np.float64)
    offsets: dict[int, np.ndarray] = {}
    errors: dict[int, float] = {}
    log_v = np.zeros(m)
    n_passes = n_iter + 1
    label = progress if isinstance(progress, str) else "sinkhorn"
    done = 0

    class _Columns:
        """``log sum_i u~_i E_ij`` accumulated linearly at a running scale ``c`` (float64)."""

        def __init__(self) -> None:
            self.c = -np.inf
            self.acc = np.zeros(m)

        def add(self, e: np.ndarray, log_w: np.ndarray) -> None:
            top = float(np.max(log_w))
            y = np.exp(log_w - top) @ e
            if top > self.c:
                if np.isfinite(self.c):
                    self.acc *= np.exp(self.c - top)
                self.c = top
                self.acc += y
            else:
                self.acc += np.exp(top - self.c) * y

        def log(self) -> np.ndarray:
            with np.errstate(divide="ignore"):
                return np.log(self.acc) + self.c

    with progress_bar(total=n_passes * len(blocks), desc=label, enable=bool(progress), unit="block") as bar:
        # Pass 0: the kernel (cached when it fits) and v_1 from u_0 = 1/n.
        cols = _Columns()
        for p, g0, sl in blocks:
            e = kernel_block(p, sl, g0)
            if cached:
                kernel_cache.append(e)
            r = e.shape[0]
            log_ut[g0 : g0 + r] = log_a + (row_max[g0 : g0 + r] - 1.0) * inv_tau
            cols.add(e, log_ut[g0 : g0 + r])
            bar.update(1)
        col = cols.log()
        for it in range(1, n_iter + 1):
            # log v = log b - log K^T u (K^T u in the stabilized form: sum_i u~_i E_ij)
            _check_finite(col, "column", tau)
            log_v = log_b - col
            top_v = float(np.max(log_v))
            w_v = np.exp(log_v - top_v)
            cols = _Columns()
            for bi, (p, g0, sl) in enumerate(blocks):
                e = kernel_cache[bi] if cached else kernel_block(p, sl, g0)
                for a in range(0, e.shape[0], sub):
                    es = e[a : a + sub]
                    lo, hi = g0 + a, g0 + a + es.shape[0]
                    with np.errstate(divide="ignore"):
                        rowlog = np.log(es @ w_v) + top_v
                    _check_finite(rowlog, "row", tau)
                    log_ut[lo:hi] = log_a - rowlog
                    cols.add(es, log_ut[lo:hi])
                bar.update(1)
            col = cols.log()
            done = it
            # POT's error: column marginal of diag(u) K diag(v) minus b (L2).
            err = float(np.linalg.norm(np.exp(log_v + col) - 1.0 / m))
            errors[it] = err
            if it in keep:
                # offset = -tau log u = -tau (log u~ - (row_max - 1) / tau)
                offsets[it] = -float(tau) * log_ut + (row_max - 1.0)
            if tol is not None and err < float(tol):
                break
    if done not in offsets:
        offsets[done] = -float(tau) * log_ut + (row_max - 1.0)
    return SinkhornResult(offsets=offsets, log_v=log_v, marginal_error=errors, n_iter=done)


def _check_finite(x: np.ndarray, what: str, tau: float) -> None:
    if not np.all(np.isfinite(x)):
        bad = int(np.count_nonzero(~np.isfinite(x)))
        raise ValueError(
            f"Sinkhorn: {bad} {what} sum(s) of the kernel exp(-(1 - s) / tau) vanished or "
            f"overflowed at tau={tau} (some items are more than 80 * tau below every "
            "similarity that carries their mass); use a larger tau"
        )


class SN(AdditiveBiasCorrector):
    """Sinkhorn normalization (Pan et al., ACM MM 2025): per-item offsets from OT scalings.

    Parameters
    ----------
    tau : float, default 0.01
        Entropic regularization (POT's ``reg``) of the transport from the gallery to the
        query bank, > 0. The official code's value.
    n_iter : int, default 10
        Sinkhorn iterations (POT's ``numItermax``; the official code uses 10).
    tol : float or None, default None
        Stop early once POT's marginal error falls below ``tol``; None runs exactly
        ``n_iter`` iterations as the official code does.

    Attributes
    ----------
    bias_ : (n_gallery,) float64
        ``-tau * log u`` of the gallery rows.
    log_v_ : (n_bank,) float64
        Log of the final column scaling.
    n_iter_ : int
        Iterations run.
    marginal_error_ : float or None
        POT's column-marginal error after the last iteration (None after loading from
        an index file).
    """

    name = "sn"
    fitted_: tuple[float, int, float | None] | None
    _parameter_constraints: ClassVar[dict[str, list[Constraint]]] = {
        "tau": [Interval(Real, 0.0, FLOAT32_MAX, closed="neither")],
        "n_iter": [Interval(Integral, 1, None)],
        "tol": [None, Interval(Real, 0.0, None, closed="neither")],
    }

    def __init__(self, tau: float = 0.01, n_iter: int = 10, tol: float | None = None) -> None:
        self.tau = tau
        self.n_iter = n_iter
        self.tol = tol

    @classmethod
    def default_grid(cls) -> dict[str, list]:
        """tau in {0.005, 0.01, 0.02, 0.05} (log-spaced around the paper's 0.01), 10 iterations."""
        return {"tau": [0.005, 0.01, 0.02, 0.05], "n_iter": [10]}

    def _check_consistency(self) -> None:
        fitted = getattr(self, "fitted_", None)
        if fitted is not None and fitted != (float(self.tau), int(self.n_iter), self.tol):
            raise ValueError(
                f"tau={self.tau}, n_iter={self.n_iter}, tol={self.tol} differ from the values "
                f"{fitted} used in fit; the offsets depend on them. Refit."
            )

    def _fit(self, gallery, reference, *, normalize, memory_budget, progress):
        """Solve the Sinkhorn scalings of the gallery against the query bank ``reference``.

        Parameters
        ----------
        gallery : (n_gallery, d) array
        reference : (n_bank, d) array
            The query bank (query modality, e.g. training captions for text-to-image).
        normalize, memory_budget, progress : as :meth:`dehub.NNN.fit`.
        """
        return self._solve(gallery, reference, None, normalize, memory_budget, progress)

    def _solve(self, gallery, reference, gallery_bank, normalize, memory_budget, progress):
        self.fitted_ = None
        self._check_params()
        gallery, reference, parts = self._inputs(gallery, reference, gallery_bank, normalize)
        res = sinkhorn_offsets(
            parts,
            reference,
            float(self.tau),
            int(self.n_iter),
            tol=self.tol,
            memory_budget=memory_budget,
            progress=f"{self.name} sinkhorn" if progress else False,
        )
        self._set_result(gallery, res, res.n_iter, (float(self.tau), int(self.n_iter), self.tol))
        return self

    def _inputs(self, gallery, reference, gallery_bank, normalize):
        gallery = self._prepare(gallery, "gallery", normalize)
        reference = self._prepare(reference, "reference", normalize)
        check_same_dim(gallery, reference, "gallery", "reference")
        parts = [gallery]
        if gallery_bank is not None:
            bank = self._prepare(gallery_bank, "gallery_bank", normalize)
            check_same_dim(gallery, bank, "gallery", "gallery_bank")
            parts.append(bank)
        return gallery, reference, parts

    def _set_result(self, gallery, res: SinkhornResult, it: int, fitted) -> None:
        n = gallery.shape[0]
        self.offsets_ = res.offsets[it][:n]
        self.log_v_ = res.log_v
        self.n_iter_ = it
        self.marginal_error_ = res.marginal_error.get(it)
        self.gallery_ = gallery
        self.fitted_ = fitted

    def fit_grid(self, gallery, reference, grid=None, **fit_kwargs):
        """Every (tau, n_iter, tol) of ``grid``: one Sinkhorn run per (tau, tol) serves every n_iter.

        ``fit_kwargs``: those of :meth:`fit` (``gallery_bank`` for :class:`DBSN`).
        """
        grid = self._check_grid(grid)
        gallery_bank = fit_kwargs.pop("gallery_bank", None)
        if gallery_bank is not None and self.name == "sn":
            raise TypeError("SN takes no gallery_bank (DBSN stacks one under the gallery); received one")
        taus = list(grid.get("tau", [self.tau]))
        iters = list(grid.get("n_iter", [self.n_iter]))
        tols = list(grid.get("tol", [self.tol]))
        for it in iters:
            self.clone(n_iter=it)._check_params()
        normalize = fit_kwargs.get("normalize", "warn")
        memory_budget = fit_kwargs.get("memory_budget", DEFAULT_MEMORY_BUDGET)
        gallery, reference, parts = self._inputs(gallery, reference, gallery_bank, normalize)
        snaps = sorted({int(t) for t in iters})
        for tau in taus:
            for tol in tols:
                self.fitted_ = None
                self.set_params(tau=tau, tol=tol, n_iter=snaps[-1])
                self._check_params()
                res = sinkhorn_offsets(
                    parts,
                    reference,
                    float(tau),
                    snaps[-1],
                    tol=tol,
                    snapshots=snaps,
                    memory_budget=memory_budget,
                )
                for it in iters:
                    got = int(it) if int(it) in res.offsets else res.n_iter
                    self.fitted_ = None
                    self.set_params(tau=tau, n_iter=it, tol=tol)
                    self._set_result(gallery, res, got, (float(tau), int(it), tol))
                    params = {"tau": tau, "n_iter": it, "tol": tol}
                    yield {k: v for k, v in params.items() if k in grid}, self

    def _compute_bias(self) -> np.ndarray:
        return self.offsets_

    # ------------------------------------------------------------------ persistence
    def _fitted_arrays(self) -> dict[str, np.ndarray]:
        fitted = self.fitted_
        if fitted is None:
            raise NotFittedError(
                f"{type(self).__name__} is not fitted yet; call fit(gallery, reference) first"
            )
        return {
            "offsets": self.offsets_,
            "log_v": self.log_v_,
            "n_iter_run": np.asarray([self.n_iter_], dtype=np.int64),
        }

    def _restore(self, gallery, arrays) -> None:
        off = np.asarray(arrays["offsets"], dtype=np.float64)
        if off.shape != (gallery.shape[0],):
            raise ValueError(f"stored offsets have shape {off.shape}; expected ({gallery.shape[0]},)")
        self.offsets_ = off
        self.log_v_ = np.asarray(arrays["log_v"], dtype=np.float64)
        self.n_iter_ = int(np.asarray(arrays["n_iter_run"]).ravel()[0])
        self.marginal_error_ = None
        # the index stores the parameters the offsets were fitted with (its header's params)
        self.fitted_ = (float(self.tau), int(self.n_iter), self.tol)
        self.gallery_ = gallery


class DBSN(SN):
    """Dual-bank Sinkhorn normalization: SN with a gallery-modality bank stacked under the gallery.

    ``fit(gallery, reference, gallery_bank=...)``: the rows of the transport problem are
    the gallery followed by ``gallery_bank`` (same modality as the gallery, e.g. the
    training images for text-to-image), the columns the query bank ``reference``; the
    offsets of the first ``n_gallery`` rows are kept. Without a bank DBSN equals SN
    (see the module docstring). Parameters and attributes as :class:`SN`.
    """

    name = "dbsn"

    def _fit(self, gallery, reference, *, gallery_bank=None, normalize, memory_budget, progress):
        """Solve the Sinkhorn scalings of ``[gallery; gallery_bank]`` against the query bank.

        Parameters
        ----------
        gallery : (n_gallery, d) array
        reference : (n_q, d) array
            The query bank (query modality).
        gallery_bank : (n_g, d) array, optional
            The gallery-modality bank stacked under the gallery rows (e.g. training
            images). None: no bank, which is SN (see the module docstring).
        normalize, memory_budget, progress : as :meth:`dehub.NNN.fit`.
        """
        return self._solve(gallery, reference, gallery_bank, normalize, memory_budget, progress)
