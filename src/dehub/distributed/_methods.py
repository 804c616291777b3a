"""Which methods the distributed runner can fit, and how it asks them for statistics.

The ONE place the runner talks to methods, through the estimator contract:
``dehub.methods.get_tags(model).row_decomposable`` answers the capability question;
``model.gallery_statistics(rows, reference, ...)`` gives a part's statistics and
``model.from_statistics(gallery, statistics, n_reference=...)`` the fitted estimator.
The one exception is the approximate engine: its index is built once by the driver and
broadcast, so a part's top-k comes from that index's ``search`` (what NNN's
``gallery_statistics`` computes with ``engine="ivf"``, without rebuilding the index for
every part).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..methods import METHODS, get_tags

__all__ = [
    "NotDistributableError",
    "check_distributable",
    "part_statistics",
    "fitted_from_statistics",
    "uses_engine",
]

#: Why the others cannot be cut along the gallery (shown to users).
_WHY_NOT = {
    "qbnorm": "with dynamic=True its activation set ranks the whole gallery for every reference "
    "query (QBNorm(dynamic=False) decomposes)",
    "qbnorm_dis": "its activation set ranks the whole gallery for every reference query",
    "dbnorm": "its gallery-bank normalizer couples every gallery row with all the others",
    "dbnorm_dis": "its gallery-bank normalizer couples every gallery row with all the others",
    "dn": "its gallery-bank mean is a statistic of the whole gallery, not of each row",
}


class NotDistributableError(ValueError):
    """The method's fitted statistics do not decompose over gallery rows."""


def _distributable_names() -> list[str]:
    """Registry names whose default instances decompose over gallery rows."""
    return sorted(n for n, cls in METHODS.items() if get_tags(cls).row_decomposable)


def check_distributable(model: Any) -> None:
    """Raise :class:`NotDistributableError` naming the method and why, unless it decomposes."""
    if get_tags(model).row_decomposable:
        return
    name = getattr(model, "name", type(model).__name__)
    why = _WHY_NOT.get(name, "its fitted statistics are not per gallery row (row_decomposable is false)")
    raise NotDistributableError(
        f"method {name!r} with {model.get_params()} cannot be fitted by the distributed runner: "
        f"{why}. Methods that can: {_distributable_names()} (each gallery row's statistics "
        "depend only on that row and the whole reference set). Use the local runner for this one."
    )


def uses_engine(model: Any) -> bool:
    """Whether the method has an ``engine`` parameter (approximate top-k allowed)."""
    return "engine" in model.get_params()


def part_statistics(
    model: Any,
    rows: np.ndarray,
    reference: Any,
    *,
    index: Any = None,
    memory_budget: int,
) -> dict[str, np.ndarray]:
    """Per-row statistics of one gallery part (first axis = rows).

    ``reference`` is the reference set (array, memmap or ShardedArray), already validated
    by the driver; ``index`` the approximate engine's prebuilt
    :class:`~dehub.engine.ReferenceIndex` (built once, broadcast) or None.
    """
    if index is None:
        stats = model.gallery_statistics(rows, reference, normalize="none", memory_budget=memory_budget)
        return {str(n): np.asarray(a) for n, a in stats.items()}
    scores, ids = index.search(rows, int(model.k))  # NNN's statistics with the broadcast index
    return {"topk_scores": scores, "topk_ids": ids}


def fitted_from_statistics(model: Any, gallery: Any, statistics: dict[str, Any], *, n_reference: int) -> Any:
    """A fitted estimator from the concatenated per-row statistics of every part."""
    return model.from_statistics(gallery, statistics, n_reference=n_reference)
