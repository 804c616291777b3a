"""Which methods the distributed runner can fit, and how it asks them for statistics.

The estimator contract (``dehub.methods.get_tags``, branch ``contract``) answers the
capability question with ``row_decomposable`` and provides
``est.gallery_statistics(gallery_rows, reference, **fit_kwargs)`` and
``est.from_statistics(gallery, statistics, n_reference=...)``. This module is the ONE
place the runner talks to methods: where the contract API is present it is used; where it
is not yet (today's ``main``), the top-k methods are served by an adapter that computes
exactly what they cache in ``fit`` (``topk_scores_``/``topk_ids_`` from
:func:`dehub.engine.topk_search`, and ``_restore`` to rebuild a fitted estimator).
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = [
    "NotDistributableError",
    "check_distributable",
    "part_statistics",
    "fitted_from_statistics",
    "uses_engine",
]

#: Methods whose fitted statistics are, per gallery row, its top-k reference scores (and
#: ids): NNN, its variants and CSLS's r_S. Used only while ``get_tags`` is not available.
_TOPK_METHODS = frozenset({"nnn", "robust_nnn", "soft_nnn", "csls"})

#: Why the others cannot be cut along the gallery (shown to users).
_WHY_NOT = {
    "plain": "it has no fitted statistics (nothing to distribute; use the local runner)",
    "qbnorm": "with dynamic=True its activation set ranks the whole gallery for every reference "
    "query (dynamic=False decomposes where this dehub has the estimator contract)",
    "qbnorm_dis": "its activation set ranks the whole gallery for every reference query",
    "dbnorm": "its gallery-bank normalizer couples every gallery row with all the others",
    "dbnorm_dis": "its gallery-bank normalizer couples every gallery row with all the others",
    "dn": "its gallery-bank mean is a statistic of the whole gallery, not of each row",
}


class NotDistributableError(ValueError):
    """The method's fitted statistics do not decompose over gallery rows."""


def _tags(model: Any) -> Any | None:
    """The contract's tags of ``model``, or None where this dehub has no ``get_tags``."""
    try:
        from ..methods import get_tags  # type: ignore[attr-defined]
    except ImportError:
        return None
    return get_tags(model)


def check_distributable(model: Any) -> None:
    """Raise :class:`NotDistributableError` naming the method and why, unless it decomposes."""
    name = getattr(model, "name", type(model).__name__)
    tags = _tags(model)
    if tags is not None:
        ok = bool(getattr(tags, "row_decomposable", False))
    else:
        ok = name in _TOPK_METHODS
    if ok:
        return
    why = _WHY_NOT.get(name, "its fitted statistics are not per gallery row (row_decomposable is false)")
    raise NotDistributableError(
        f"method {name!r} with {model.get_params()} cannot be fitted by the distributed runner: "
        f"{why}. Methods that can: {_distributable_names()} (each gallery row's statistics "
        "depend only on that row and the whole reference set). Use the local runner for this one."
    )


def _distributable_names() -> list[str]:
    """Registry names whose default instances decompose over gallery rows."""
    from ..methods import METHODS

    if _tags(METHODS["nnn"]) is None:
        return sorted(_TOPK_METHODS)
    return sorted(n for n, cls in METHODS.items() if _tags(cls).row_decomposable)


def uses_engine(model: Any) -> bool:
    """Whether the method has an ``engine`` parameter (approximate top-k allowed)."""
    return "engine" in model.get_params()


def _accepted(fn: Any, memory_budget: int) -> dict[str, Any]:
    """The fit keyword arguments ``fn`` accepts (inputs are already validated)."""
    import inspect

    params = inspect.signature(fn).parameters
    wanted = {"memory_budget": memory_budget, "normalize": "none", "progress": False}
    if any(p.kind is p.VAR_KEYWORD for p in params.values()):
        return {"memory_budget": memory_budget}
    return {n: v for n, v in wanted.items() if n in params}


def _k(model: Any) -> int:
    return int(model.k)


def part_statistics(
    model: Any,
    rows: np.ndarray,
    reference: Any,
    *,
    index: Any = None,
    memory_budget: int,
) -> dict[str, np.ndarray]:
    """Per-row statistics of one gallery part (first axis = rows).

    ``reference`` is the reference set (array, memmap or ShardedArray); ``index`` an
    approximate engine's prebuilt :class:`~dehub.engine.faiss_engine.ReferenceIndex`
    (built once by the driver) or None for the exact engine.
    """
    if index is None and hasattr(model, "gallery_statistics"):  # the contract's own statistics
        stats = model.gallery_statistics(
            rows, reference, **_accepted(model.gallery_statistics, memory_budget)
        )
        return {str(n): np.asarray(a) for n, a in stats.items()}
    k = _k(model)
    if index is not None:
        scores, ids = index.search(rows, k)
    else:
        from ..engine.exact import exact_search

        scores, ids = exact_search(rows, reference, k, memory_budget=memory_budget)
    return {"topk_scores": scores, "topk_ids": ids}


def fitted_from_statistics(model: Any, gallery: Any, statistics: dict[str, Any], *, n_reference: int) -> Any:
    """A fitted estimator from the concatenated per-row statistics of every part."""
    if hasattr(model, "from_statistics"):
        return model.from_statistics(gallery, statistics, n_reference=n_reference)
    model._restore(gallery, statistics)
    return model
