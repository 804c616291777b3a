"""Which methods the distributed runner can fit, and how it asks them for statistics.

The ONE place the runner talks to methods, through public hooks of the estimator
contract (:class:`dehub.methods.BaseCorrector`), never by name or parameter name:
``get_tags(model).row_decomposable`` and ``model.distributed_obstacle()`` answer the
capability question; ``model.gallery_statistics(rows, reference, ...)`` gives a part's
statistics and ``model.from_statistics(gallery, statistics, n_reference=...)`` the fitted
estimator. With the approximate engine the reference index is built once by the driver
and broadcast; a method whose statistics are a reference top-k (``model.reference_topk()``)
turns that index's search into its statistics (``statistics_from_reference_topk``).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .._errors import InputError
from ..methods import METHODS, get_tags

__all__ = [
    "NotDistributableError",
    "check_distributable",
    "part_statistics",
    "fitted_from_statistics",
    "uses_engine",
]


class NotDistributableError(InputError):
    """The method's fitted statistics do not decompose over gallery rows."""


def _distributable_names() -> list[str]:
    """Registry names whose default instances decompose over gallery rows."""
    return sorted(n for n, cls in METHODS.items() if get_tags(cls).row_decomposable)


def check_distributable(model: Any) -> None:
    """Raise :class:`NotDistributableError` naming the method and why (its own answer), unless it decomposes."""
    why = None if get_tags(model).row_decomposable else model.distributed_obstacle()
    if why is None:
        return
    name = model.name or type(model).__name__
    raise NotDistributableError(
        f"method {name!r} with {model.get_params()} cannot be fitted by the distributed runner: "
        f"{why}. Methods that can: {_distributable_names()} (each gallery row's statistics "
        "depend only on that row and the whole reference set). Use the local runner for this one."
    )


def uses_engine(model: Any) -> bool:
    """Whether the method searches the reference with a choice of engine (approximate top-k allowed)."""
    return model.reference_engine() is not None


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
    scores, ids = index.search(rows, int(model.reference_topk()))
    return model.statistics_from_reference_topk(scores, ids)


def fitted_from_statistics(model: Any, gallery: Any, statistics: dict[str, Any], *, n_reference: int) -> Any:
    """A fitted estimator from the concatenated per-row statistics of every part."""
    return model.from_statistics(gallery, statistics, n_reference=n_reference)
