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

Numerics (measured equal to POT's float64 ``sinkhorn_knopp`` and ``sinkhorn_log`` at tau
down to 0.001 on real MiniLM embeddings, see ``tests/methods/test_sinkhorn.py``): no
kernel entry is floored or clipped. With ``C = (S - 1) / tau`` and the potentials
``f = log u``, ``g = log v``, an iteration is ``g <- log b - LSE_i(C_ij + f_i)``,
``f <- log a - LSE_j(C_ij + g_j)``. dehub computes it in one of two exact forms:

* *log domain* (from the scores): each row's log-sum-exp is taken at that row's
  maximum of ``C_ij + g_j`` (so its largest term is exactly 1), and the same pass
  yields the plan ``P = exp(C + f + g)`` whose column sums give the next ``g``; a
  column whose plan mass falls below 1e-250 (where underflowed entries could matter)
  is recomputed by an exact column log-sum-exp. The first iteration (from POT's
  ``u = 1/n``) starts with an exact column log-sum-exp.
* *absorbed kernel* (Schmitzer's stabilization): when the plan of a log-domain
  iteration fits in ``memory_budget`` it is kept (float64) as the kernel ``P0`` with
  its potentials absorbed, and the next iterations are POT's two matrix-vector
  products on ``P0`` with scalings ``u~ = exp(f - f0)``, ``v~ = exp(g - g0)``. While
  every ``|log u~|`` and ``|log v~|`` stays below 200 the entries of ``P0`` lost to
  underflow (each below 2.3e-308) change a row or column sum by less than
  ``n * m * 2.3e-308 * e^400`` relative, i.e. nothing at float64 precision; an
  iteration that would leave that range is recomputed in the log domain, which
  re-absorbs.

The scores are float32 for float32 inputs (as the search's), everything after them
float64. Otherwise (the plan does not fit) every iteration is a log-domain pass over
freshly computed score blocks (one GEMM + one ``exp`` pass per iteration), never
holding more than ``memory_budget`` bytes. No sparsified kernel: an iteration on the
kept entries only is within 1e-8 of the offsets only if every dropped plan entry is
below about ``1e-8 tau^-1 / (21 n m)``, and at ``tau = 0.01`` that keeps 35% (MiniLM)
to 52% (clustered synthetic) of the entries even with the final potentials
(``benchmarks/bench_methods.py --sparsity``): at 5,000 x 100,000 more than the whole
default budget.

Convergence: ``tol`` stops early once POT's marginal error, ``||(u K v)^T 1 - b||_2``
(the column-marginal violation after the ``u`` update), falls below it; ``n_iter`` is
the cap. ``marginal_error_`` and ``n_iter_`` record where the fit stopped.
"""

from __future__ import annotations

from dataclasses import dataclass
from numbers import Integral, Real
from typing import ClassVar

import numpy as np

from .._errors import InputTypeError
from .._progress import progress_bar
from .._validation import check_same_dim
from ..engine.exact import DEFAULT_MEMORY_BUDGET
from ._cost import grid_count, pass_work, ranking_work
from ._params import FLOAT32_MAX, Constraint, Interval
from ._stats import compute_dtype
from ._tags import MethodTags
from .base import AdditiveBiasCorrector, NotFittedError

__all__ = ["SN", "DBSN", "sinkhorn_offsets", "SinkhornResult"]

_DRIFT = 200.0  # |log| bound on the scalings relative to the absorbed kernel (see the docstring)
_TINY = 1e-250  # a column sum of the plan below this is recomputed in the log domain


@dataclass(frozen=True)
class SinkhornResult:
    """Output of :func:`sinkhorn_offsets`.

    ``offsets[t]`` (float64, one per row) after ``iterations[t]`` iterations;
    ``log_v`` the final column scaling's log; ``marginal_error[t]`` POT's
    column-marginal error after iteration ``iterations[t]``; ``n_absorb`` how many
    iterations were computed in the log domain from the scores (the first, and any
    whose scalings drifted out of the absorbed kernel's exact range).
    """

    offsets: dict[int, np.ndarray]
    log_v: np.ndarray
    marginal_error: dict[int, float]
    n_iter: int
    n_absorb: int = 1


def _row_blocks(parts: list[np.ndarray], step: int):
    """(part index, global start, local slice) of row blocks over stacked parts."""
    start = 0
    for p, x in enumerate(parts):
        for s in range(0, x.shape[0], step):
            sl = slice(s, min(s + step, x.shape[0]))
            yield p, start + s, sl
        start += x.shape[0]


class _OnlineColumnLSE:
    """``log sum_i exp(x_ij)`` per column over row blocks, exact (running column maximum)."""

    def __init__(self, m: int) -> None:
        self.mx = np.full(m, -np.inf)
        self.acc = np.zeros(m)

    def add(self, x: np.ndarray) -> None:
        """Fold in the row block ``x`` (overwritten: no block-sized temporaries)."""
        new = np.maximum(self.mx, x.max(axis=0))
        with np.errstate(invalid="ignore"):
            self.acc *= np.exp(self.mx - new)  # -inf - finite = -inf: exp = 0 on the first block
        x -= new
        np.exp(x, out=x)
        self.acc += x.sum(axis=0)
        self.mx = new

    def log(self) -> np.ndarray:
        return np.log(self.acc) + self.mx


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
    (see the module docstring) for ``n_iter`` iterations, or fewer when ``tol`` is met,
    with POT's float64 iterates (no kernel floor; see the module docstring's Numerics).
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
    a, b = 1.0 / n, 1.0 / m
    log_a, log_b = -np.log(n), -np.log(m)
    keep = sorted({int(t) for t in (snapshots or [])} | {int(n_iter)})
    # A log-domain row block holds the scores (dt) and their float64 exponents.
    per_row = m * (dt.itemsize + 8) + d * dt.itemsize
    rows_per_block = int(max(1, min(n, memory_budget // per_row)))
    # Cache the absorbed float64 kernel when it fits next to one small log-domain block
    # (then an iteration is two fused matrix-vector products); else every iteration is
    # computed in the log domain from freshly computed scores.
    cache_block = int(min(rows_per_block, 256))
    cached = n * m * 8 + cache_block * per_row <= memory_budget
    if cached:
        rows_per_block = cache_block
    blocks = list(_row_blocks(parts, rows_per_block))
    # Rows per fused step: read twice while in the CPU cache (about 2 MiB of float64).
    sub = int(max(1, min(rows_per_block, (2 << 20) // (8 * m))))
    buf_s = np.empty(rows_per_block * m, dtype=dt)
    buf_x = np.empty(rows_per_block * m, dtype=np.float64)
    bank_t = np.asarray(bank, dtype=dt).T
    kernel: list[np.ndarray] = []
    label = progress if isinstance(progress, str) else "sinkhorn"

    def scores(p: int, sl: slice, cols: np.ndarray | None = None) -> np.ndarray:
        x = np.asarray(parts[p][sl], dtype=dt)
        r = x.shape[0]
        if cols is None:
            s = buf_s[: r * m].reshape(r, m)
            np.matmul(x, bank_t, out=s)
            return s
        return x @ bank_t[:, cols]

    def exponent(s: np.ndarray, shift: np.ndarray, out: np.ndarray) -> np.ndarray:
        """``(s - 1) / tau + shift`` in float64 (shift broadcast over rows or columns)."""
        np.subtract(s, 1.0, out=out, dtype=np.float64, casting="unsafe")
        out *= inv_tau
        out += shift
        return out

    def column_lse(f: np.ndarray, cols: np.ndarray | None = None) -> np.ndarray:
        """``log sum_i exp((S_ij - 1) / tau + f_i)`` for the columns ``cols`` (all: None)."""
        width = m if cols is None else int(cols.size)
        acc = _OnlineColumnLSE(width)
        for p, g0, sl in blocks:
            s = scores(p, sl, cols)
            r = s.shape[0]
            x = exponent(s, f[g0 : g0 + r, None], buf_x[: r * width].reshape(r, width))
            acc.add(x)
        return acc.log()

    def log_domain_step(g: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Exact ``f = log a - LSE_j(C_ij + g_j)`` and the plan's column sums (refreshes the cache)."""
        f = np.empty(n)
        col = np.zeros(m)
        for bi, (p, g0, sl) in enumerate(blocks):
            s = scores(p, sl)
            r = s.shape[0]
            if cached:
                if len(kernel) <= bi:
                    kernel.append(np.empty((r, m)))
                plan = kernel[bi]
            for lo in range(0, r, sub):
                hi = min(lo + sub, r)
                x = plan[lo:hi] if cached else buf_x[: (hi - lo) * m].reshape(hi - lo, m)
                exponent(s[lo:hi], g, x)
                mx = x.max(axis=1)
                x -= mx[:, None]
                np.exp(x, out=x)
                rs = x.sum(axis=1)  # >= 1: the maximum's term is exp(0)
                f[g0 + lo : g0 + hi] = log_a - mx - np.log(rs)
                w = a / rs  # the plan exp(C + f + g) = w_i x_ij: rows sum to a
                if cached:
                    x *= w[:, None]  # kept as the absorbed kernel
                    col += np.ones(hi - lo) @ x
                else:
                    col += w @ x  # its column sums, without scaling the block
            bar.update(1)
        with np.errstate(divide="ignore"):
            log_col = np.log(col)
        bad = np.flatnonzero(~(col > _TINY))  # underflowed plan entries may dominate these
        if bad.size:
            log_col[bad] = column_lse(f, bad) + g[bad]
        _check_finite(f, "row", tau)
        _check_finite(log_col, "column", tau)
        return f, log_col

    offsets: dict[int, np.ndarray] = {}
    errors: dict[int, float] = {}
    n_absorb = 0
    done = 0
    with progress_bar(
        total=(n_iter + 1) * len(blocks), desc=label, enable=bool(progress), unit="block"
    ) as bar:
        # Pass 0: v_1 from u_0 = a, exactly: g = log b - LSE_i(C_ij + log a).
        g = log_b - column_lse(np.full(n, log_a))
        _check_finite(g, "column", tau)
        bar.update(len(blocks))
        f_abs = g_abs = None  # potentials absorbed in the cached kernel
        for it in range(1, n_iter + 1):
            log_col = None
            if cached and f_abs is not None:
                # u~, v~: the scalings relative to the absorbed kernel P0 = exp(C + f_abs + g_abs)
                vt = np.exp(g - g_abs)
                ut = np.empty(n)
                col = np.zeros(m)
                for bi, (_, g0, _) in enumerate(blocks):
                    e = kernel[bi]
                    for lo in range(0, e.shape[0], sub):
                        es = e[lo : lo + sub]
                        with np.errstate(divide="ignore"):
                            w = a / (es @ vt)
                        ut[g0 + lo : g0 + lo + es.shape[0]] = w
                        col += w @ es
                    bar.update(1)
                with np.errstate(divide="ignore", invalid="ignore"):
                    log_ut = np.log(ut)
                    log_col = np.log(col) + (g - g_abs)
                # Exact while |log u~| and |log v~_next| stay within _DRIFT (docstring).
                if np.all(np.abs(log_ut) <= _DRIFT) and np.all(
                    np.abs(log_b - log_col + (g - g_abs)) <= _DRIFT
                ):
                    f = f_abs + log_ut
                else:
                    log_col = None
            if log_col is None:
                f, log_col = log_domain_step(g)
                f_abs, g_abs = f, g
                n_absorb += 1
            done = it
            # POT's error: column marginal of diag(u) K diag(v) minus b (L2).
            err = float(np.linalg.norm(np.exp(log_col) - b))
            errors[it] = err
            if it in keep:
                offsets[it] = -float(tau) * f
            g_used = g
            g = g + log_b - log_col  # the next v: b / (K^T u)
            if tol is not None and err < float(tol):
                break
    if done not in offsets:
        offsets[done] = -float(tau) * f
    return SinkhornResult(
        offsets=offsets, log_v=g_used, marginal_error=errors, n_iter=done, n_absorb=n_absorb
    )


def _check_finite(x: np.ndarray, what: str, tau: float) -> None:
    if not np.all(np.isfinite(x)):
        bad = int(np.count_nonzero(~np.isfinite(x)))
        raise ValueError(
            f"Sinkhorn: {bad} {what} log-sum(s) of the kernel exp(-(1 - s) / tau) are not "
            f"finite at tau={tau}: the embeddings hold NaN or infinite values"
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

    def distributed_obstacle(self, *, gallery_bank: bool = False) -> str | None:
        return "its Sinkhorn scalings couple every gallery row with all the others (bank or not)"

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
            raise InputTypeError("SN takes no gallery_bank (DBSN stacks one under the gallery); received one")
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

    def sweep_work(self, shape, grid=None):
        """Cost model (best's budget): per (tau, tol) one run of max(n_iter) log-domain
        iterations, each an exp and three passes over the (rows x reference) scores twice."""
        grid = self._check_grid(grid)
        runs = len(grid.get("tau", [self.tau])) * len(grid.get("tol", [self.tol]))
        iters = max(int(i) for i in grid.get("n_iter", [self.n_iter]))
        rows = shape.n_gallery + (shape.n_bank if self.__dehub_tags__().gallery_bank else 0)
        run = pass_work(rows, shape.n_reference, shape.dim) + pass_work(
            rows, shape.n_reference, 0, elem=6.0 * iters, exp=2.0 * iters
        )
        return run * runs + ranking_work(shape, grid_count(grid))

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

    def __dehub_tags__(self) -> MethodTags:
        return MethodTags(offset=True, gallery_bank=True)

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
