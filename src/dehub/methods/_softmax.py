"""Shared machinery of the inverted-softmax family (QB-Norm IS/DIS, DBNorm DualIS/DualDIS).

Each method normalizes ``exp(beta_b * s(q, r))`` by the softmax mass that a *bank* ``B_b``
puts on the gallery item ``r``::

    IS_b(q, r) = exp(beta_b s(q, r)) / sum_{x in B_b} exp(beta_b s(x, r))

and multiplies the factors of its banks (one bank for QB-Norm, two for DBNorm). dehub
scores with the logarithm, which never overflows::

    score(q, r) = sum_b g_b(q) * [beta_b s(q, r) - L_b(r)] + (1 - g_b(q)) * beta_b s(q, r)
                = (sum_b beta_b) s(q, r) - sum_b g_b(q) L_b(r),
    L_b(r)      = logsumexp_{x in B_b}(beta_b s(x, r))          (max-subtracted, streamed)

where the gate ``g_b(q)`` is 1 for the static variants (IS, DualIS) and, for the dynamic
ones (DIS, DualDIS), 1 only when the query's plain top-1 gallery item belongs to the
bank's *activation set* (gallery items in the plain top-``k`` of at least one bank item);
an ungated factor keeps its un-normalized ``exp(beta_b s)``.

Rank equivalence: for a fixed query the gates are fixed, so the score is
``scale * (s(q, r) - bias(r))`` with ``scale = sum_b beta_b`` and
``bias = sum_b g_b L_b / scale``: an additive per-item bias. Static variants are served by
one exact search with offset ``bias_``; dynamic variants by one plain search (which gives
the gates and the results of fully ungated queries) plus one offset search per gate
pattern actually present, each over its own queries only. Gating stays exact.
"""

from __future__ import annotations

import itertools
from typing import ClassVar

import numpy as np

from .._errors import InputError
from .._validation import NormalizeMode, check_k, check_same_dim
from ..engine.exact import DEFAULT_MEMORY_BUDGET, exact_search
from ._cost import Work, grid_count, pass_work, ranking_work
from ._params import check_real
from ._shared import BankName, SharedScores
from ._stats import activation_ids, activation_mask, compute_dtype, streamed_logsumexp
from ._tags import MethodTags
from .base import AdditiveBiasCorrector

__all__ = ["InvertedSoftmaxBase"]


class InvertedSoftmaxBase(AdditiveBiasCorrector):
    """Common fit/search/score/persistence of QB-Norm and DBNorm (see module docstring).

    Subclasses declare ``_beta_names`` (one temperature parameter per bank, in bank
    order) and have parameters ``k`` and ``dynamic``.

    Fitted attributes: ``lse_`` (n_banks, n_gallery) float64, the ``L_b``;
    ``activated_`` (n_banks, n_gallery) bool or None (dynamic only); ``fitted_betas_``,
    ``fitted_k_``.
    """

    _beta_names: ClassVar[tuple[str, ...]] = ()
    #: The bank of each temperature, in order, as :class:`SharedScores` names them.
    _bank_names: ClassVar[tuple[BankName, ...]] = ()
    k: int
    dynamic: bool
    lse_: np.ndarray
    activated_: np.ndarray | None
    fitted_betas_: tuple[float, ...] | None
    fitted_k_: int | None

    def __dehub_tags__(self) -> MethodTags:
        # Static IS/DualIS: one per-item offset (scale sum(beta) > 0). Dynamic variants
        # gate the normalizers on each query's own top-1: per-query offsets, not offset.
        return MethodTags(offset=not bool(self.dynamic), gallery_bank=True)

    # ------------------------------------------------------------------ params
    def _betas(self) -> tuple[float, ...]:
        return tuple(float(getattr(self, n)) for n in self._beta_names)

    def _check_consistency(self) -> None:
        """The temperatures together, then the fitted state (per-parameter checks are declarative)."""
        if sum(self._betas()) <= 0:
            raise InputError(
                f"at least one of {', '.join(self._beta_names)} must be > 0 (all zero makes "
                f"every score equal); received {self.get_params()}"
            )
        fitted = getattr(self, "fitted_betas_", None)
        if fitted is None:
            return
        if tuple(fitted) != self._betas():
            raise InputError(
                f"{'/'.join(self._beta_names)}={self._betas()} differ from the values "
                f"{tuple(fitted)} used in fit; the bank normalizers depend on them. Refit "
                "(fit_grid shares one pass over the banks across a temperature grid)."
            )
        if self.dynamic:
            if getattr(self, "activated_", None) is None:
                raise InputError(
                    "dynamic=True needs the activation sets, which were not computed "
                    "(fitted with dynamic=False); refit with dynamic=True"
                )
            if self.fitted_k_ != int(self.k):
                raise InputError(
                    f"k={self.k} differs from the k={self.fitted_k_} of the fitted activation "
                    f"sets; refit with k={self.k}"
                )

    # ------------------------------------------------------------------ fitting
    def _prepare_fit(self, gallery, banks: list, names: list[str], normalize: NormalizeMode):
        gallery = self._prepare(gallery, "gallery", normalize)
        out = []
        for bank, name in zip(banks, names):
            bank = self._prepare(bank, name, normalize)
            check_same_dim(gallery, bank, "gallery", name)
            out.append(bank)
        return gallery, out

    def _fit_banks(
        self,
        gallery: np.ndarray,
        banks: list[np.ndarray],
        beta_values: list[list[float]],
        ks: list[int] | None,
        *,
        memory_budget: int,
        progress: bool,
    ) -> None:
        """One pass per bank: ``L_b`` for every temperature, activation ids for max(ks)."""

        def lse_of(b: int, nonzero: list[float]) -> np.ndarray:
            return streamed_logsumexp(
                gallery,
                banks[b],
                nonzero,
                memory_budget=memory_budget,
                progress=f"{self.name} bank {b + 1} logsumexp" if progress else False,
            )

        def act_of(b: int, kmax: int) -> np.ndarray:
            return activation_ids(
                banks[b],
                gallery,
                kmax,
                memory_budget=memory_budget,
                progress=f"{self.name} bank {b + 1} activation" if progress else False,
            )

        self._fill_caches(gallery, [bank.shape[0] for bank in banks], beta_values, ks, lse_of, act_of)

    def _fill_caches(self, gallery, bank_rows, beta_values, ks, lse_of, act_of) -> None:
        """The normalizer and activation caches from ``lse_of(bank, betas)`` / ``act_of(bank, k)``."""
        n = gallery.shape[0]
        self._lse_cache = []
        for b, (rows, betas) in enumerate(zip(bank_rows, beta_values)):
            cache = {}
            nonzero = sorted({float(x) for x in betas if float(x) > 0})
            if nonzero:
                lse = lse_of(b, nonzero)
                cache.update({beta: lse[:, t] for t, beta in enumerate(nonzero)})
            if any(float(x) == 0 for x in betas):
                cache[0.0] = np.full(n, np.log(rows))
            self._lse_cache.append(cache)
        self._act_ids = None
        if ks:
            kmax = check_k(
                max(ks), n, name="k", what="gallery items (activation sets take each bank item's top-k)"
            )
            self._act_ids = [act_of(b, kmax) for b in range(len(bank_rows))]
        self.gallery_ = gallery

    def _select(self, betas: tuple[float, ...], k: int | None) -> None:
        """Set the fitted state for one temperature tuple (and activation k) from the caches."""
        self.lse_ = np.stack([cache[float(b)] for cache, b in zip(self._lse_cache, betas)])
        self.fitted_betas_ = tuple(float(b) for b in betas)
        if k is not None and self._act_ids is not None:
            n = self.gallery_.shape[0]
            self.activated_ = np.stack([activation_mask(ids, n, k) for ids in self._act_ids])
            self.fitted_k_ = int(k)
        else:
            self.activated_, self.fitted_k_ = None, None

    def _reset_fit(self) -> None:
        self.fitted_betas_ = None
        self.activated_ = None
        self.fitted_k_ = None

    def _fit_with(self, gallery, banks, names, *, normalize, memory_budget, progress):
        self._reset_fit()
        self._check_params()
        gallery, banks = self._prepare_fit(gallery, banks, names, normalize)
        self._fit_banks(
            gallery,
            banks,
            [[b] for b in self._betas()],
            [int(self.k)] if self.dynamic else None,
            memory_budget=memory_budget,
            progress=progress,
        )
        self._select(self._betas(), int(self.k) if self.dynamic else None)
        return self

    def _grid_with(self, gallery, banks, names, grid, fit_kwargs):
        """Shared fit_grid: one pass per bank for all temperatures, one top-k for all k."""
        values, dynamic_any, ks = self._grid_values(grid)
        normalize = fit_kwargs.get("normalize", "warn")
        memory_budget = fit_kwargs.get("memory_budget", DEFAULT_MEMORY_BUDGET)
        progress = fit_kwargs.get("progress", False)
        self._reset_fit()
        gallery, banks = self._prepare_fit(gallery, banks, names, normalize)
        self._fit_banks(
            gallery,
            banks,
            [values[n] for n in self._beta_names],
            ks if dynamic_any else None,
            memory_budget=memory_budget,
            progress=progress,
        )
        yield from self._grid_steps(values)

    def shared_scores_obstacle(self) -> str | None:
        return None  # the bank normalizers and activation ids are SharedScores passes

    def _grid_from_shared(self, shared: SharedScores, grid):
        """fit_grid from the shared bank passes (``_bank_names``: which bank is which)."""
        values, dynamic_any, ks = self._grid_values(grid)
        self._reset_fit()
        names = self._bank_names
        self._fill_caches(
            shared.gallery,
            [shared.bank(name).shape[0] for name in names],
            [values[n] for n in self._beta_names],
            ks if dynamic_any else None,
            lambda b, nonzero: shared.logsumexp(names[b], nonzero),
            lambda b, kmax: shared.activation_ids(names[b], kmax),
        )
        yield from self._grid_steps(values)

    def sweep_work(self, shape, grid=None):
        """Per bank one product and, per temperature, an exp and four passes (the streamed
        log-sum-exp); the dynamic variants add each bank's top-k over the gallery and rank
        about two gate groups per setting."""
        values, dynamic_any, _ = self._grid_values(grid)
        rows = {"reference": shape.n_reference, "gallery_bank": shape.n_bank}
        work = Work()
        for name, beta_name in zip(self._bank_names, self._beta_names):
            n_betas = len({float(b) for b in values[beta_name] if float(b) > 0})
            work = work + pass_work(shape.n_gallery, rows[name], shape.dim, elem=4.0 * n_betas, exp=n_betas)
            if dynamic_any:
                work = work + pass_work(rows[name], shape.n_gallery, shape.dim)
        n = grid_count(values)
        return work + ranking_work(shape, 2 * n if dynamic_any else n)

    def _grid_values(self, grid):
        grid = self._check_grid(grid)
        names_all = list(self._get_param_names())
        values = {n: list(grid.get(n, [getattr(self, n)])) for n in names_all}
        for n in self._beta_names:
            for v in values[n]:
                check_real(v, n, minimum=0.0)
        dynamic_any = any(bool(d) for d in values["dynamic"])
        ks = sorted({int(k) for k in values["k"]})
        return values, dynamic_any, ks

    def _grid_steps(self, values: dict[str, list]):
        names_all = list(values)
        for combo in itertools.product(*(values[n] for n in names_all)):
            params = dict(zip(names_all, combo))
            betas = tuple(float(params[n]) for n in self._beta_names)
            if sum(betas) <= 0:
                continue
            self._reset_fit()
            self.set_params(**params)
            self._check_params()
            self._select(betas, int(params["k"]) if params["dynamic"] else None)
            yield params, self

    def query_group_offsets(self, top1: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
        """Dynamic variants: each query's gate pattern (from its plain top-1) picks its offset.

        ``score = scale * (s - sum_b g_b L_b / scale)``: per gate pattern one per-item
        offset; the static variants are ``offset`` (None here).
        """
        if not self.dynamic:
            return None
        self._check_fitted()
        gates = self._gates(np.asarray(top1, dtype=np.int64))
        code = gates.astype(np.int64) @ (1 << np.arange(gates.shape[1], dtype=np.int64))
        present, group = np.unique(code, return_inverse=True)
        scale = self._scale()
        biases = np.stack([self.lse_[gates[np.argmax(code == c)]].sum(axis=0) / scale for c in present])
        return group.astype(np.int64).reshape(-1), biases

    # ------------------------------------------------------------------ scoring
    def _scale(self) -> float:
        return float(sum(self._betas()))

    def _score_scale(self) -> float:
        return self._scale()

    def _compute_bias(self) -> np.ndarray:
        """``sum_b L_b / sum_b beta_b``: the offset of fully gated (static) queries, float64."""
        return self.lse_.sum(axis=0) / self._scale()

    def _gates(self, top1: np.ndarray) -> np.ndarray:
        """(n_queries, n_banks) bool: which bank normalizers apply to each query."""
        if not self.dynamic:
            return np.ones((top1.shape[0], self.lse_.shape[0]), dtype=bool)
        if self.activated_ is None:  # _check_params refuses this before any search
            raise InputError("dynamic=True needs the activation sets; refit with dynamic=True")
        return self.activated_[:, top1].T

    def _search(
        self, queries: np.ndarray, k: int, *, memory_budget: int, progress: bool
    ) -> tuple[np.ndarray, np.ndarray]:
        """Top-``k`` gallery rows per query under the (dual) inverted softmax, exactly.

        Returns float32 log inverted-softmax scores (the values of :meth:`score`) best
        first and int64 gallery rows (ties -> smaller row; padding ``-inf``/``-1``).
        """
        scale = self._scale()
        label = "search" if progress else False
        if not self.dynamic:
            s, ids = exact_search(
                queries, self.gallery_, k, offset=self.bias_, memory_budget=memory_budget, progress=label
            )
            return (s.astype(np.float64) * scale).astype(np.float32), ids
        # Dynamic: plain search first (gives every query's top-1, hence its gates, and the
        # final results of queries no normalizer applies to).
        s, ids = exact_search(queries, self.gallery_, k, memory_budget=memory_budget, progress=label)
        s = s.astype(np.float64)
        gates = self._gates(ids[:, 0])
        code = gates.astype(np.int64) @ (1 << np.arange(gates.shape[1], dtype=np.int64))
        for c in np.unique(code[code > 0]):
            rows = np.flatnonzero(code == c)
            on = gates[rows[0]]
            offset = self.lse_[on].sum(axis=0) / scale
            s_c, ids_c = exact_search(
                queries[rows], self.gallery_, k, offset=offset, memory_budget=memory_budget, progress=label
            )
            s[rows], ids[rows] = s_c, ids_c
        return (s * scale).astype(np.float32), ids

    def _score(self, queries: np.ndarray) -> np.ndarray:
        """Dense log (dual) inverted-softmax scores, shape (n_queries, n_gallery), float32.

        ``sum_b beta_b * s(q, r) - sum_b g_b(q) * L_b(r)``; gates as in :meth:`search`
        (the dynamic top-1 comes from the same exact engine, so both agree).
        """
        dt = compute_dtype(queries, self.gallery_)
        s = (np.asarray(queries, dtype=dt) @ np.asarray(self.gallery_, dtype=dt).T).astype(np.float64)
        s *= self._scale()
        if self.dynamic:
            _, top = exact_search(queries, self.gallery_, 1)
            gates = self._gates(top[:, 0]).astype(np.float64)
        else:
            gates = np.ones((s.shape[0], self.lse_.shape[0]))
        s -= gates @ self.lse_
        return s.astype(np.float32)

    def export_vectors(self) -> np.ndarray:
        """Gallery vectors with ``bias_`` appended (static variants only; see the base class).

        The dynamic variants pick a different bias per query, which a single
        inner-product index cannot express: serve them with :meth:`search`.
        """
        if self.dynamic:
            raise InputError(
                f"{type(self).__name__}(dynamic=True) applies its normalizers per query "
                "(gated on the query's top-1), so no single set of exported vectors is exact; "
                "use search(), or export with dynamic=False"
            )
        return super().export_vectors()

    # ------------------------------------------------------------------ persistence
    def _fitted_arrays(self) -> dict[str, np.ndarray]:
        arrays = {"lse": self.lse_, "fitted_betas": np.asarray(self.fitted_betas_, dtype=np.float64)}
        if self.activated_ is not None:
            arrays["activated"] = self.activated_
            arrays["fitted_k"] = np.asarray([self.fitted_k_], dtype=np.int64)
        return arrays

    def _restore(self, gallery, arrays) -> None:
        lse = np.asarray(arrays["lse"], dtype=np.float64)
        nb = len(self._beta_names)
        if lse.shape != (nb, gallery.shape[0]):
            raise InputError(
                f"stored normalizers have shape {lse.shape}; expected ({nb}, {gallery.shape[0]})"
            )
        self.lse_ = lse
        self.fitted_betas_ = tuple(float(b) for b in arrays["fitted_betas"])
        if "activated" in arrays:
            act = np.asarray(arrays["activated"], dtype=bool)
            if act.shape != lse.shape:
                raise InputError(f"stored activation sets have shape {act.shape}; expected {lse.shape}")
            self.activated_ = act
            self.fitted_k_ = int(np.asarray(arrays["fitted_k"]).ravel()[0])
        else:
            self.activated_, self.fitted_k_ = None, None
        self.gallery_ = gallery
        self._check_params()
