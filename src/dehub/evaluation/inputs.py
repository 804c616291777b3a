"""The inputs of the evaluation protocol, checked once at its entry: the benchmark's
splits, the unit-norm policy, the methods' parameters and the gallery banks.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any

import numpy as np

from .._errors import InputError
from .._validation import NormalizeMode, check_normalization
from ..datasets.base import Direction, PairedBenchmark, PairedSplit
from ..methods import METHODS
from .best import BEST

__all__ = ["GalleryBanks", "gallery_bank_for", "method_parameters", "check_benchmark", "normalized_benchmark"]

GalleryBanks = str | Mapping[str, Any] | None


def gallery_bank_for(
    benchmark: PairedBenchmark, direction: Direction, gallery_banks: GalleryBanks
) -> tuple[np.ndarray | None, str]:
    """The gallery-modality bank of a direction and a sentence saying what it is.

    ``"natural"``: the reference split's gallery side (side b for ``a2b``), when it has
    rows; a mapping: ``gallery_banks[direction]`` (an array, or None); None: no bank.
    """
    if gallery_banks is None:
        return None, "none given"
    if isinstance(gallery_banks, str):
        if gallery_banks != "natural":
            raise InputError(
                f"gallery_banks must be 'natural', None or {{direction: array}}; received {gallery_banks!r}"
            )
        side = "b" if direction == "a2b" else "a"
        bank = getattr(benchmark.reference, side)
        label = benchmark.b_name if side == "b" else benchmark.a_name
        if bank.shape[0] == 0:
            return None, f"none (the reference split has no {label} side)"
        return bank, f"the reference split's {label} side ({bank.shape[0]:,} rows)"
    if not isinstance(gallery_banks, Mapping):
        raise InputError(
            f"gallery_banks must be 'natural', None or {{direction: array}}; received {type(gallery_banks).__name__}"
        )
    bad = [d for d in gallery_banks if d not in ("a2b", "b2a")]
    if bad:
        raise InputError(f"gallery_banks keys must be 'a2b'/'b2a'; received {bad}")
    bank = gallery_banks.get(direction)
    if bank is None:
        return None, "none given"
    bank = np.asarray(bank)
    dim = benchmark.test.a.shape[1]
    if bank.ndim != 2 or bank.shape[1] != dim or bank.shape[0] == 0:
        raise InputError(f"the {direction} gallery bank must be (n > 0, {dim}); received {bank.shape}")
    return bank, f"given ({bank.shape[0]:,} rows)"


def method_parameters(method: str) -> list[str]:
    """The constructor parameters of a registered method (asked of the method itself).

    ``best`` has none of its own: it picks a member and that member's setting.
    """
    if method == BEST:
        return []
    cls = METHODS[method]
    return list(cls().get_params())


def _check_split(split: PairedSplit, name: str) -> None:
    for side in ("a", "b"):
        x = getattr(split, side)
        if x.ndim != 2 or x.shape[0] == 0:
            raise InputError(
                f"the {name} split has no '{side}' embeddings (shape {x.shape}); every split "
                "needs at least one row on each side it is used for"
            )
    if np.asarray(split.pairs).shape[0] == 0:
        raise InputError(f"the {name} split has no pairs: nothing is relevant to anything")


def check_benchmark(benchmark: PairedBenchmark, directions: Sequence[str]) -> None:
    """Clear errors for empty splits, mismatched dimensions and validation == test."""
    _check_split(benchmark.test, "test")
    _check_split(benchmark.validation, "validation")
    dims = {
        f"{s}.{side}": getattr(getattr(benchmark, s), side).shape[1]
        for s in ("test", "validation", "reference")
        for side in ("a", "b")
        if getattr(getattr(benchmark, s), side).shape[0] > 0
    }
    if len(set(dims.values())) != 1:
        raise InputError(f"every split must have the same embedding dimension; received {dims}")
    for side in ("a", "b"):
        t, v = getattr(benchmark.test, side), getattr(benchmark.validation, side)
        if t is v or (t.shape == v.shape and np.shares_memory(t, v)):
            raise InputError(
                f"the validation split's '{side}' side is the test split's: hyperparameters "
                "would be chosen on test. Provide a disjoint validation split."
            )
    for d in directions:
        if d not in ("a2b", "b2a"):
            raise InputError(f"directions must be 'a2b' and/or 'b2a'; received {d!r}")
        direction: Direction = "a2b" if d == "a2b" else "b2a"
        ref = benchmark.reference_for(direction)
        if ref.shape[0] == 0:
            raise InputError(
                f"no reference queries for direction {direction} "
                f"({benchmark.direction_name(direction)}); provide the reference split's "
                f"{'a' if direction == 'a2b' else 'b'} side or drop that direction"
            )


def normalized_benchmark(benchmark: PairedBenchmark, mode: NormalizeMode) -> PairedBenchmark:
    """The benchmark with the unit-norm policy applied once to every split and side."""
    check_normalization(np.zeros((1, 1), dtype=np.float32) + 1, "check", mode)  # validates mode
    if mode == "none":
        return benchmark
    splits = {}
    for s in ("test", "validation", "reference"):
        split = getattr(benchmark, s)
        sides = {}
        for side, label in (("a", benchmark.a_name), ("b", benchmark.b_name)):
            x = getattr(split, side)
            sides[side] = (
                x if x.shape[0] == 0 else check_normalization(x, f"the {s} {label} embeddings", mode)
            )
        splits[s] = replace(split, **sides)
    return replace(benchmark, **splits)
