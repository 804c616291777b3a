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
    "uses_engine",
]


class NotDistributableError(InputError):
    """The method's fitted statistics do not decompose over gallery rows."""


def _distributable_names() -> list[str]:
    """Registry names whose default instances decompose over gallery rows."""
    return sorted(n for n, cls in METHODS.items() if get_tags(cls).row_decomposable)


def _bank_distributable_names() -> list[str]:
    """Registry names whose default instances decompose over gallery rows given a gallery bank."""
    return sorted(
        n
        for n, cls in METHODS.items()
        if get_tags(cls).gallery_bank and cls().distributed_obstacle(gallery_bank=True) is None
    )


def check_distributable(model: Any, *, gallery_bank: bool = False) -> None:
    """Raise unless the method decomposes over gallery rows (with a gallery bank if one is given).

    A bank given to a method that takes none is a ``ValueError``; a method that cannot
    be fitted part by part raises :class:`NotDistributableError` naming why (its own
    answer, ``model.distributed_obstacle(gallery_bank=...)``).
    """
    name = model.name or type(model).__name__
    if gallery_bank and not get_tags(model).gallery_bank:
        takes = sorted(n for n, cls in METHODS.items() if get_tags(cls).gallery_bank)
        raise InputError(
            f"method {name!r} takes no gallery bank; received one (methods that take one: {', '.join(takes)})"
        )
    why = model.distributed_obstacle(gallery_bank=gallery_bank)
    if why is None:
        return
    raise NotDistributableError(
        f"method {name!r} with {model.get_params()} cannot be fitted by the distributed runner: "
        f"{why}. Methods that can: {_distributable_names()} (each gallery row's statistics "
        "depend only on that row and the whole reference set), and with a gallery bank "
        f"{_bank_distributable_names()}. Use the local runner for this one."
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
    gallery_bank: Any = None,
) -> dict[str, np.ndarray]:
    """Per-row statistics of one gallery part (first axis = rows).

    ``reference`` is the reference set (array, memmap or ShardedArray), already validated
    by the driver; ``index`` the approximate engine's prebuilt
    :class:`~dehub.engine.ReferenceIndex` (built once, broadcast) or None;
    ``gallery_bank`` the gallery bank (validated by the driver) passed to the method's
    ``gallery_statistics`` when the run has one.
    """
    if index is None:
        bank = {} if gallery_bank is None else {"gallery_bank": gallery_bank}
        stats = model.gallery_statistics(
            rows, reference, normalize="none", memory_budget=memory_budget, **bank
        )
        return {str(n): np.asarray(a) for n, a in stats.items()}
    scores, ids = index.search(rows, int(model.reference_topk()))
    return model.statistics_from_reference_topk(scores, ids)
