"""A cost model of a validation sweep, from the shapes alone (nothing is run).

Each method answers ``sweep_work(shape, grid)`` (:meth:`dehub.methods.BaseCorrector.sweep_work`)
with the :class:`Work` its ``fit_grid`` plus the scoring of every setting would do:
multiply-adds of matrix products (``gemm``), elementwise passes over score entries
(``elem``: a subtraction, a comparison, a selection step) and transcendental
evaluations (``exp``: exp, log, erfc). :meth:`Work.cost` weighs them into one number in
nanoseconds of a typical core (:data:`WEIGHTS`); ``best`` compares members by the ratio
of their costs to NNN's, so only the relative weights matter (measured on numpy 2.4 /
AVX-512: a BLAS multiply-add ~0.015 ns on two cores, an elementwise pass ~0.3 ns, a
float32 exp ~1 ns per entry), and skips a member whose ratio exceeds its budget before
running it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

__all__ = ["Work", "SweepShape", "WEIGHTS", "grid_count", "ranking_work", "pass_work"]

#: Nanoseconds per unit of each kind of work (relative weights; see the module docstring).
WEIGHTS = {"gemm": 0.015, "elem": 0.3, "exp": 1.0}


@dataclass(frozen=True)
class Work:
    """Counts of multiply-adds, elementwise operations and transcendental evaluations."""

    gemm: float = 0.0
    elem: float = 0.0
    exp: float = 0.0

    def __add__(self, other: Work) -> Work:
        return Work(self.gemm + other.gemm, self.elem + other.elem, self.exp + other.exp)

    def __mul__(self, times: float) -> Work:
        return Work(self.gemm * times, self.elem * times, self.exp * times)

    __rmul__ = __mul__

    def cost(self) -> float:
        """The weighted total (nanoseconds of a typical core, :data:`WEIGHTS`)."""
        return self.gemm * WEIGHTS["gemm"] + self.elem * WEIGHTS["elem"] + self.exp * WEIGHTS["exp"]


@dataclass(frozen=True)
class SweepShape:
    """The sizes a sweep's cost depends on.

    ``n_bank``: rows of the gallery bank a bank method normalizes against (the gallery's
    own rows when it has none).
    """

    n_queries: int
    n_gallery: int
    n_reference: int
    n_bank: int
    dim: int


def grid_count(grid: dict[str, list]) -> int:
    """Settings of a grid (the product of its value counts)."""
    return math.prod(len(v) for v in grid.values()) if grid else 1


def ranking_work(
    shape: SweepShape, n_settings: float, *, dense: bool = False, transform: float = 0.0
) -> Work:
    """Scoring ``n_settings`` settings on the validation queries.

    Offset settings (``dense=False``): a subtraction and two comparisons per score entry
    over the shared validation scores. Dense ones: their own query x gallery product,
    ``transform`` more elementwise operations per entry, and the counting.
    """
    entries = float(shape.n_queries) * shape.n_gallery
    if not dense:
        return Work(elem=3.0 * entries * n_settings)
    return Work(gemm=entries * shape.dim, elem=(3.0 + transform) * entries) * n_settings


def pass_work(rows: int, cols: int, dim: int, *, elem: float = 1.0, exp: float = 0.0) -> Work:
    """One pass over a ``rows x cols`` score matrix: its product and per-entry work."""
    entries = float(rows) * cols
    return Work(gemm=entries * dim, elem=elem * entries, exp=exp * entries)
