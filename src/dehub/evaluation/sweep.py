"""Hyperparameter selection on a validation split (the paper's protocol, App. B1).

:func:`sweep` runs every setting of a method's grid (``default_grid()`` unless given) on
the *validation* task, through the method's ``fit_grid`` (NNN makes one pass over the
reference set for the largest k and serves every smaller k and every alpha from that
cache), and scores each setting with exact first-relevant ranks
(:func:`~dehub.evaluation.metrics.first_relevant_rank_dense`), so R@K, MRR and the rank
statistics are all available to choose by.

For settings whose correction is a fixed per-item offset (``get_tags(fitted).offset``:
Plain, NNN and variants, CSLS, DN, static IS/DualIS) the query-gallery product is
computed once and every setting only subtracts its ``bias_`` and counts, instead of
searching again. The ranking of such a method is that of ``q . r - bias_[r]`` by the
tag's promise, so this equals fitting the setting and searching. Every other setting
(the dynamic inverted softmax of QB-Norm DIS and DBNorm DualDIS, whose offsets are
gated per query; anything query-dependent) is scored through its own dense ``score``,
which ranks exactly as its ``search``. The capability is asked of each fitted setting,
so a grid over ``dynamic`` mixes both paths correctly.

Selection: the setting with the best value of ``metric`` (higher is better; lower for
``mean_rank``/``median_rank``). Ties are broken, in order, by the larger R@K at the other
cut-offs (increasing K), the larger MRR, and finally the earlier setting in grid order
(for NNN: smaller k, then smaller alpha). The test split is never looked at here:
:func:`fit_selected` fits the chosen setting for the test gallery.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .._errors import InputError, InputTypeError, UserError
from .._json import jsonable
from .._progress import progress_bar
from .._validation import NormalizeMode, check_embeddings, compute_dtype
from ..datasets.base import RetrievalTask
from ..engine.exact import DEFAULT_MEMORY_BUDGET, exact_search
from ..methods import METHODS, BaseCorrector, SharedScores, get_method, get_tags
from .metrics import (
    NoPositivePolicy,
    check_ks,
    count_ahead,
    first_relevant_rank_dense,
    outcomes_from_ranks,
)

__all__ = [
    "SweepResult",
    "sweep",
    "select_best",
    "fit_selected",
    "LOWER_IS_BETTER",
    "TimeLimitExceeded",
    "AdditiveRanker",
]


class TimeLimitExceeded(UserError, RuntimeError):
    """A sweep was stopped because its projected time exceeded ``time_limit`` (seconds)."""

    def __init__(self, projected: float, limit: float) -> None:
        super().__init__(f"projected sweep time {projected:.1f} s exceeds the limit {limit:.1f} s")
        self.projected = projected
        self.limit = limit


LOWER_IS_BETTER = frozenset({"mean_rank", "median_rank"})


@dataclass
class SweepResult:
    """The validation sweep of one method on one task.

    ``table`` has one row per setting (``params`` + every metric); ``best_params`` /
    ``best_metrics`` are the chosen setting's; ``seconds`` the wall time of the sweep.
    """

    method: str
    metric: str
    grid: dict[str, list]
    table: list[dict[str, Any]]
    best_params: dict[str, Any]
    best_metrics: dict[str, float]
    best_index: int
    seconds: float
    tie_break: str = (
        "larger R@K at the other cut-offs (increasing K), then larger MRR, then earlier in grid order"
    )
    n_without_positives: int = 0
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "method": self.method,
            "metric": self.metric,
            "grid": self.grid,
            "n_settings": len(self.table),
            "table": self.table,
            "best_params": self.best_params,
            "best_metrics": self.best_metrics,
            "best_index": self.best_index,
            "seconds": self.seconds,
            "tie_break": self.tie_break,
            "n_without_positives": self.n_without_positives,
        }


def _resolve(method: str | BaseCorrector) -> BaseCorrector:
    if isinstance(method, BaseCorrector):
        return method.clone()
    if isinstance(method, str):
        return get_method(method)
    raise InputTypeError(
        f"method must be a registered name {sorted(METHODS)} or an estimator; received {method!r}"
    )


def select_best(table: Sequence[dict[str, Any]], metric: str, ks: Sequence[int]) -> int:
    """Index of the chosen row of a sweep table (see the module docstring for ties)."""
    if not table:
        raise InputError("the sweep produced no settings; check the grid")
    if metric not in table[0]:
        available = [k for k in table[0] if k.startswith("R@") or k in ("MRR", *LOWER_IS_BETTER)]
        raise InputError(f"unknown selection metric {metric!r}; expected one of {available}")
    sign = -1.0 if metric in LOWER_IS_BETTER else 1.0
    others = [f"R@{k}" for k in check_ks(ks) if f"R@{k}" != metric]

    def key(i: int):
        row = table[i]
        return (
            -sign * row[metric],
            *(-row.get(m, 0.0) for m in others),
            -row.get("MRR", 0.0),
            i,
        )

    return min(range(len(table)), key=key)


def _grid_size(grid: dict[str, list]) -> int:
    return int(np.prod([len(v) for v in grid.values()])) if grid else 1


def sweep(
    method: str | BaseCorrector,
    task: RetrievalTask,
    reference,
    *,
    grid: dict[str, list] | None = None,
    metric: str = "R@1",
    ks: Sequence[int] = (1, 5, 10),
    no_positive: NoPositivePolicy = "exclude",
    normalize: NormalizeMode = "warn",
    memory_budget: int = DEFAULT_MEMORY_BUDGET,
    progress: bool = False,
    similarity: np.ndarray | None = None,
    time_limit: float | None = None,
    fit_kwargs: dict[str, Any] | None = None,
    shared: SharedScores | None = None,
    ranker: AdditiveRanker | None = None,
) -> SweepResult:
    """Evaluate every setting of ``grid`` on the validation ``task``; choose by ``metric``.

    Parameters
    ----------
    method : registered method name (``dehub.methods.METHODS``) or an estimator
    task : RetrievalTask
        The *validation* task (queries, gallery, relevance) of one direction.
    reference : (n_reference, d) array
        Reference queries for the correction (the same the test fit will use).
    grid : dict, optional
        Parameter -> values; default the method's ``default_grid()``.
    metric : str
        ``"R@K"`` for a K in ``ks``, ``"MRR"``, ``"mean_rank"`` or ``"median_rank"``.
    similarity : (n_queries, n_gallery) array, optional
        The validation queries' raw scores against the gallery (``queries @ gallery.T``),
        when the caller already has them (``best`` shares one matrix among its members).
    time_limit : float, optional
        Seconds: after every setting the sweep's total is projected (time so far, plus
        the mean time of the settings after the first for each one left; after the first
        setting, the time so far); above the limit the sweep stops with
        :class:`TimeLimitExceeded`.
    fit_kwargs : dict, optional
        Extra ``fit`` inputs of the method (e.g. ``gallery_bank``).
    shared : :class:`~dehub.methods.SharedScores`, optional
        The reference/bank passes over ``task.gallery``, shared among sweeps (``best``):
        a method that can (``shared_scores_obstacle()`` is None, and whose bank, if it
        takes one, is ``shared``'s) is fitted with ``fit_grid_from_shared``, which equals
        its ``fit_grid``; others run ``fit_grid``.
    ranker : :class:`AdditiveRanker`, optional
        The offset ranker of this task's validation similarities, shared among sweeps
        (``best``: a bias two members share is ranked once); its ``dense`` is then the
        ``similarity``.

    ``extra["best_ranks"]`` of the result holds the chosen setting's first-relevant rank
    of every validation query.
    """
    ks = check_ks(ks)
    model = _resolve(method)
    grid = model.default_grid() if grid is None else {k: list(v) for k, v in grid.items()}
    queries = check_embeddings(task.queries, "validation queries")
    rel = task.relevance
    n_q, n_g = rel.n_queries, rel.n_gallery
    block = max(1, int(memory_budget // max(1, 12 * n_g)))
    fits_budget = n_q * n_g * 4 <= memory_budget
    fast: AdditiveRanker | None = None

    if ranker is not None:
        if ranker.rel is not rel:
            raise InputError("the shared ranker was built for another task's relevance")
        similarity = ranker.dense
        fast = ranker
    if similarity is not None and similarity.shape != (n_q, n_g):
        raise InputError(f"similarity must have shape {(n_q, n_g)}; received {similarity.shape}")

    def shared_ranker() -> AdditiveRanker:
        nonlocal fast
        if fast is None:
            if similarity is not None:
                fast = AdditiveRanker(similarity, rel)
            else:
                gal = check_embeddings(task.gallery, "validation gallery")
                dt = compute_dtype(queries, gal)
                fast = AdditiveRanker(
                    np.matmul(np.asarray(queries, dtype=dt), np.asarray(gal, dtype=dt).T), rel
                )
        return fast

    t0 = time.perf_counter()
    table: list[dict[str, Any]] = []
    n_without = 0
    n_settings = _grid_size(grid)
    with progress_bar(n_settings, f"sweep {model.name}", progress, unit="setting") as bar:
        if _can_share(model, shared, fit_kwargs):
            assert shared is not None  # for mypy: _can_share checked it
            if shared.gallery.shape != (n_g, queries.shape[1]):
                raise InputError(
                    f"shared scores are over a gallery of shape {shared.gallery.shape}; the task's is "
                    f"{(n_g, queries.shape[1])}"
                )
            settings = model.fit_grid_from_shared(shared, grid)
        else:
            settings = model.fit_grid(
                task.gallery,
                reference,
                grid,
                normalize=normalize,
                memory_budget=memory_budget,
                **dict(fit_kwargs or {}),
            )

        # One view and one cache per block of the validation similarities, kept for the
        # whole grid: a method may keep per-query work there that no parameter changes.
        similarity_blocks: dict[int, tuple[np.ndarray, dict[str, Any]]] = {}

        def dense_ranks_of(fitted) -> np.ndarray:
            rank = np.empty(n_q, dtype=np.int64)
            for start in range(0, n_q, block):
                rows = np.arange(start, min(start + block, n_q))
                s = None
                if fits_budget:  # the shared validation similarities, where the method can use them
                    if start not in similarity_blocks:
                        similarity_blocks[start] = (shared_ranker().dense[start : start + rows.size], {})
                    view, cache = similarity_blocks[start]
                    s = fitted.scores_from_similarity(view, cache=cache)
                if s is None:
                    s = fitted.score(queries[rows], normalize="none")
                rank[rows] = first_relevant_rank_dense(s, rel, rows)
            return rank

        top1: np.ndarray | None = None

        def plain_top1() -> np.ndarray:
            nonlocal top1
            if top1 is None and ranker is not None:
                top1 = ranker.plain_top1
            if top1 is None:  # the plain top-1 the estimators' own score() gates on
                top1 = exact_search(queries, check_embeddings(task.gallery, "validation gallery"), 1)[1][:, 0]
                if ranker is not None:  # the next sweep sharing the ranker reads it back
                    ranker.plain_top1 = top1
            return top1

        # Offset settings (one bias) and gated ones (a bias per query group) are ranked in
        # batches over the shared validation scores (each block of the matrix read once
        # per batch); other settings are ranked from their own dense scores at once (the
        # yielded estimator may be re-parameterized by the next step). The bar counts
        # settings as they are ranked, so its rate (and ETA) includes the ranking.
        params_list: list[dict[str, Any]] = []
        final: list[np.ndarray | None] = []
        pending: list[tuple[int, np.ndarray, np.ndarray | None]] = []  # (setting, biases, group)
        eta = _Eta(bar, n_settings)

        def flush() -> None:
            if not pending:
                return
            stacked = np.concatenate([b for _, b, _ in pending])
            ranked = shared_ranker().ranks_many(stacked)
            at = 0
            for i, b, group in pending:
                block = ranked[at : at + b.shape[0]]
                final[i] = block[0] if group is None else block[group, np.arange(n_q)]
                at += b.shape[0]
            eta.done(len(pending))
            pending.clear()

        for params, fitted in settings:
            params_list.append(params)
            final.append(None)
            i = len(final) - 1
            gated = None
            if fits_budget and get_tags(fitted).offset:
                # offset tag: the estimator has bias_ (the contract of dehub.methods._tags)
                pending.append((i, np.array(fitted.bias_, copy=True)[None, :], None))  # type: ignore[attr-defined]
            elif fits_budget and (gated := fitted.query_group_offsets(plain_top1())) is not None:
                pending.append((i, gated[1], gated[0]))
            else:
                final[i] = dense_ranks_of(fitted)
                eta.done(1)
            if sum(b.shape[0] for _, b, _ in pending) >= _RANK_BATCH:
                flush()
            if time_limit is not None and len(final) < n_settings:
                projected = eta.projected()
                if projected > time_limit:
                    raise TimeLimitExceeded(projected, float(time_limit))
        flush()
        for params, rank in zip(params_list, final):
            assert rank is not None  # every setting was ranked by a flush or at once
            out = outcomes_from_ranks(rank, rel, ks, no_positive=no_positive)
            n_without = out.n_without_positives
            table.append({**{k: jsonable(v) for k, v in params.items()}, **out.summary()})
    best = select_best(table, metric, ks)
    row = table[best]
    best_params = {k: row[k] for k in grid if k in row}
    chosen = final[best]
    assert chosen is not None
    return SweepResult(
        method=model.name,
        metric=metric,
        grid={k: [jsonable(x) for x in v] for k, v in grid.items()},
        table=table,
        best_params=best_params,
        best_metrics={k: v for k, v in row.items() if k not in grid},
        best_index=best,
        seconds=time.perf_counter() - t0,
        n_without_positives=n_without,
        extra={"best_ranks": chosen, "shared": _can_share(model, shared, fit_kwargs)},
    )


#: Biases ranked together in one pass over the validation scores.
_RANK_BATCH = 16


def _can_share(model: BaseCorrector, shared: SharedScores | None, fit_kwargs: dict[str, Any] | None) -> bool:
    """Whether ``model``'s grid is fitted from ``shared``: the method says it can, and the
    fit inputs asked for are the shared ones (a bank method's bank is ``shared``'s)."""
    if shared is None or model.shared_scores_obstacle() is not None:
        return False
    extra = dict(fit_kwargs or {})
    if get_tags(model).gallery_bank:
        return set(extra) <= {"gallery_bank"} and extra.get("gallery_bank") is shared.gallery_bank
    return not extra


class _Eta:
    """The sweep bar's count and ETA, from the rate of the steps after the first update.

    The first update carries the shared work (NNN's one reference pass serves every later
    setting), so a rate that counts it would promise minutes for what takes a second;
    tqdm's own average-rate ETA is replaced by the rate since that first update.
    """

    def __init__(self, bar: Any, total: int, clock=time.perf_counter) -> None:
        self.bar, self.total, self.clock = bar, total, clock
        self.t0 = clock()
        self.first: tuple[float, int] | None = None  # (time, count) at the first update
        self.count = 0
        if hasattr(bar, "bar_format"):
            bar.bar_format = "{l_bar}{bar}| {n_fmt}/{total_fmt} [{elapsed}{postfix}]"

    def done(self, n: int) -> None:
        self.count += n
        self.bar.update(n)
        now = self.clock()
        if self.first is None:
            self.first = (now, self.count)
            return
        if not hasattr(self.bar, "bar_format"):
            return  # progress off
        left = self.per_step() * (self.total - self.count)
        self.bar.set_postfix_str(f"ETA {int(left // 60):02d}:{int(left % 60):02d}", refresh=False)

    def per_step(self) -> float:
        if self.first is None or self.count <= self.first[1]:
            return 0.0
        return (self.clock() - self.first[0]) / (self.count - self.first[1])

    def projected(self) -> float:
        """Projected total seconds of the sweep from the settings ranked so far (before a
        second rate point, the time so far: the first step carries any shared pass, so
        scaling it by the settings would stop a sweep whose later settings are cheap)."""
        elapsed = self.clock() - self.t0
        if self.first is None or self.count <= self.first[1]:
            return elapsed
        return elapsed + self.per_step() * (self.total - self.count)


class AdditiveRanker:
    """Exact first-relevant ranks of ``dense - bias`` for many biases, cache-friendly.

    The positives' raw scores are gathered once; per bias, the best positive of every
    query comes from those (no pass over the matrix), and the counting passes run over
    row blocks of about :data:`_CACHE_BYTES` so the subtraction and both comparisons hit
    the CPU cache. Same result as :func:`first_relevant_rank_dense` on ``dense - bias``.
    """

    _CACHE_BYTES = 1 << 20

    def __init__(self, dense: np.ndarray, rel) -> None:
        self.dense = dense
        self.rel = rel
        self.has = np.flatnonzero(rel.counts() > 0)
        self.qrow = rel.query_rows()
        self.pos_raw = dense[self.qrow, rel.indices]
        self.starts = rel.indptr[:-1][self.has]
        n_g = dense.shape[1]
        self.block = max(1, self._CACHE_BYTES // (dense.itemsize * n_g))
        self.buf = np.empty((min(self.block, dense.shape[0]), n_g), dtype=dense.dtype)
        self._memo: dict[bytes, np.ndarray] = {}  # bias bytes -> its ranks (read-only)
        self.reused = 0  # biases answered from the memo
        #: Each query's plain top-1 gallery row by the exact engine (what the gated
        #: estimators' own ``score`` gates on), set by the first sweep that needs it.
        self.plain_top1: np.ndarray | None = None

    def ranks(self, bias: np.ndarray) -> np.ndarray:
        return self.ranks_many(bias[None, :])[0]

    def ranks_many(self, biases: np.ndarray) -> np.ndarray:
        """Ranks for several biases at once, shape (n_biases, n_queries).

        Row blocks are the outer loop and biases the inner one, so every block of the
        dense matrix is read from memory once for all settings. A bias with the same
        bytes as one ranked before (by this ranker: one sweep, or every member's sweep
        in ``best``) is not ranked again: its ranks are the same by construction.
        """
        biases = np.asarray(biases, dtype=self.dense.dtype)
        keys = [row.tobytes() for row in biases]
        todo = list(dict.fromkeys(key for key in keys if key not in self._memo))
        if todo:
            at = {key: i for i, key in enumerate(keys)}
            fresh = self._rank(biases[[at[key] for key in todo]])
            self._memo.update(zip(todo, fresh))
        self.reused += len(keys) - len(todo)
        return np.stack([self._memo[key] for key in keys]) if keys else self._rank(biases)

    def _rank(self, biases: np.ndarray) -> np.ndarray:
        rel, dense = self.rel, self.dense
        n_q, n_g = dense.shape
        n_b = biases.shape[0]
        rank = np.full((n_b, n_q), n_g + 1, dtype=np.int64)
        if self.has.size == 0:
            return rank
        best = np.full((n_b, n_q), -np.inf, dtype=dense.dtype)
        first = np.full((n_b, n_q), n_g, dtype=np.int64)
        for b in range(n_b):
            pos = self.pos_raw - biases[b, rel.indices]
            best[b, self.has] = np.maximum.reduceat(pos, self.starts)
            at_max = pos == best[b, self.qrow]
            np.minimum.at(first[b], self.qrow[at_max], rel.indices[at_max])
        for start in range(0, n_q, self.block):
            stop = min(start + self.block, n_q)
            s = self.buf[: stop - start]
            block = dense[start:stop]
            for b in range(n_b):
                np.subtract(block, biases[b], out=s)
                rank[b, start:stop] = count_ahead(s, best[b, start:stop], first[b, start:stop])
        no_pos = np.ones(n_q, dtype=bool)
        no_pos[self.has] = False
        rank[:, no_pos] = n_g + 1
        return rank


def fit_selected(
    method: str | BaseCorrector,
    params: dict[str, Any],
    gallery,
    reference,
    **fit_kwargs: Any,
) -> BaseCorrector:
    """A new estimator of ``method`` with the chosen ``params``, fitted on ``gallery``."""
    base = _resolve(method)
    model = type(base)(**{**base.get_params(), **params})
    return model.fit(gallery, reference, **fit_kwargs)


def grid_settings(grid: dict[str, list]) -> list[dict[str, Any]]:
    """Every setting of a grid, in the order ``fit_grid`` of the base class uses."""
    names = list(grid)
    return [dict(zip(names, vals)) for vals in itertools.product(*(grid[n] for n in names))]
