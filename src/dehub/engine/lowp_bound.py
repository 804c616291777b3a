"""The error bound of the bf16 pass and the once-per-search pass that feeds it.

:func:`bound_coefficients` and :func:`pair_bound` are Theorem 1 and 1' of
``docs/precision.md`` as code: ``E(q, x)`` bounds ``|t_b - t|``, the distance between a
pair's bf16 score (bf16 inputs, fp32 accumulation, bf16 result, offset subtracted in
float32) and the score the fp32 engine computes. :func:`norm_bounds` gives the upper
bounds of the row norms and of the bf16 residual norms the bound reads, in one pass that
also rounds the rows to bf16 (the compiled ``bf16_prepare`` where built);
:func:`prepare_database` is that pass over a database, once per search (i.e. per fit).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from .._errors import InputError
from ._rows import row_blocks
from ._workers import SEQUENTIAL, Workers
from .topk import kernel_isa

try:  # the compiled bf16 preparation (rounding, norms, residual norms in one pass)
    from . import _topk_kernel as _kernel
except ImportError:  # not built: numpy does the same
    _kernel = None  # type: ignore[assignment]

__all__ = [
    "BoundCoefficients",
    "bound_coefficients",
    "pair_bound",
    "without_result_rounding",
    "entry_bounds",
    "norm_bounds",
    "sq_norm_upper",
    "round_down_f32",
    "bf16_bits",
    "bf16_as_f32",
    "PreparedDatabase",
    "prepare_database",
    "gamma",
]

U_BF16 = 2.0**-8  # unit roundoff of bf16 (8 significant bits, round to nearest)
U_FP32 = 2.0**-24
U_FP64 = 2.0**-53
ETA = 2.0**-126  # smallest normal float32/bf16: bound of a flushed (DAZ/FTZ) value
SAFETY = 1.0 + 2.0**-20  # covers the float64 evaluation of norms and of the bound itself


def gamma(n: int, u: float) -> float:
    nu = n * u
    if nu >= 0.5:
        raise InputError(f"dimension {n} too large for the accumulation bound (n*u={nu})")
    return nu / (1.0 - nu)


@dataclass(frozen=True)
class BoundCoefficients:
    """``|t_b - t| <= a |q||x| + b |o| + c (sqrt(d) (|q| + |x|) + d)`` for every pair;
    ``a_input`` is the share of ``a`` that bounds the rounding of the inputs to bf16, which
    measured residual norms replace (:func:`pair_bound`, Theorem 1')."""

    a: float
    b: float
    c: float
    d: int
    a_input: float = 0.0
    a_result: float = 0.0  # the share of ``a`` that bounds the bf16 rounding of the result


def bound_coefficients(d: int, input_dtype: Any, compute_dtype: Any) -> BoundCoefficients:
    """The coefficients of the per-pair bound (docs/precision.md, Theorem 1).

    ``rho``: relative error of rounding an input to bf16 (float64 inputs go through
    float32: ``(1+u)(1+u32) - 1``); ``gamma_v``: fp32 accumulation of the bf16 products;
    ``u``: the bf16 result; ``gamma_w``, ``w``: the reference's own accumulation and
    offset subtraction in the compute dtype.
    """
    u, v = U_BF16, U_FP32
    w = U_FP64 if np.dtype(compute_dtype) == np.float64 else U_FP32
    rho = (1 + u) * (1 + v) - 1 if np.dtype(input_dtype) == np.float64 else u
    g_v = gamma(d, v)
    g_w = gamma(d, w)
    grow = (1 + rho) ** 2 * (1 + g_v)  # |sum of the bf16 products| / sum|x_i y_i|
    a = (2 * rho + rho**2) + g_v * (1 + rho) ** 2 + u * grow + g_w + v * (1 + u) * grow + w * (1 + g_w)
    b = 2 * v + v * v + w  # the pass subtracts the float32 rounding of the offset
    c = 16.0 * ETA
    return BoundCoefficients(
        a * SAFETY, b * SAFETY, c * SAFETY, int(d), (2 * rho + rho**2) * SAFETY, u * grow * SAFETY
    )


def without_result_rounding(coef: BoundCoefficients) -> BoundCoefficients:
    """The coefficients less the bf16 result's rounding (``u G N``): what
    :func:`entry_bounds` adds back per entry as ``u |s_b|`` (Theorem 1'')."""
    return replace(coef, a=coef.a - coef.a_result, a_result=0.0)


def entry_bounds(
    e_rest: np.ndarray, e_row: np.ndarray, v: np.ndarray, offset: np.ndarray | None
) -> np.ndarray:
    """Per-entry bounds (float64) of ``|t_b - t|`` for kept bf16 entries ``v`` (float32,
    offset already subtracted; ``offset``: each entry's float32 offset, or None) of rows
    with ``e_rest`` (:func:`without_result_rounding`'s row bound) and ``e_row`` (the row's
    bound for every entry): ``min(e_row, e_rest + u |s_b| (1 + 2^-20))`` (Theorem 1'').
    ``|s_b|``, the bf16 GEMM output, is recovered from ``v = fl32(s_b - o)`` as at most
    ``|v + o| (1 + 2^-52) + 2^-24 |v|``."""
    v64 = v.astype(np.float64)
    raw = np.abs(v64) if offset is None else np.abs(v64 + offset) * (1.0 + 2.0**-52) + U_FP32 * np.abs(v64)
    e = e_rest[:, None] + (U_BF16 * SAFETY) * raw
    return np.minimum(e, e_row[:, None])


def pair_bound(
    coef: BoundCoefficients,
    q_norm: np.ndarray | float,
    x_norm: np.ndarray | float,
    offset_abs: np.ndarray | float = 0.0,
    q_residual: np.ndarray | float | None = None,
    x_residual: np.ndarray | float | None = None,
) -> np.ndarray:
    """``E(q, x)`` (float64) for broadcastable arrays of norms and ``|offset|``.

    With the residual norms ``|bf16(q) - q|`` and ``|bf16(x) - x|`` (upper bounds, as
    :func:`norm_bounds` computes them), the input-rounding share ``a_input |q||x|`` is
    replaced by ``(|q| + |r_q|) |r_x| + |r_q| |x|`` (Theorem 1', docs/precision.md): at most
    the same, and about half of it for real data, whose residuals are far from the worst
    case."""
    qn = np.asarray(q_norm, np.float64)
    xn = np.asarray(x_norm, np.float64)
    sd = math.sqrt(coef.d)
    rest = coef.b * np.asarray(offset_abs, np.float64) + coef.c * (sd * (qn + xn) + coef.d)
    if q_residual is None or x_residual is None:
        return coef.a * qn * xn + rest
    qr = np.asarray(q_residual, np.float64)
    xr = np.asarray(x_residual, np.float64)
    inputs = ((qn + qr) * xr + qr * xn) * SAFETY
    return (coef.a - coef.a_input) * qn * xn + inputs + rest


def sq_norm_upper(sq: np.ndarray, d: int) -> np.ndarray:
    """Upper bounds of the norms from float32 sums of ``d`` squares, in any order: the sum
    is at least ``(1 - gamma_{d+1})`` times the exact one, less ``d 2^-126`` for products
    flushed to zero (the float64 evaluation is covered by the bound's safety factor)."""
    g = gamma(d + 1, U_FP32)
    return np.sqrt(sq / (1.0 - g) + d * 2.0 * ETA)


def norm_bounds(
    a: Any, bits: np.ndarray | None = None, block: int = 32768, *, workers: Workers = SEQUENTIAL
) -> tuple[np.ndarray, np.ndarray]:
    """Upper bounds (float64) of each row's norm ``|x|`` and of its bf16 residual's norm
    ``|bf16(x) - x|``, in one pass over the rows (once per search, i.e. per fit).

    float32 (and float16) rows: sums of squares in float32 (:func:`sq_norm_upper`), the
    residual ``bf16(x) - x`` exact in float32 (Sterbenz: the two are within a factor 2, or
    the bf16 value is 0). float64 rows: the residual of the bf16 of their float32 rounding,
    exact in float64, squares summed in float64 (``gamma_{d+1}(2^-53)``); the norm as
    float32's, divided by ``1 - 2^-24`` and plus ``sqrt(d) 2^-125`` for the rounding to
    float32. Residual norms get ``sqrt(d) 2^-125`` more: the GEMM flushes subnormal bf16
    inputs to zero, which moves a component by less than ``2^-126``.

    With the compiled kernel (float32/float16 rows): one C pass per row that also writes
    the rows' bf16 ``bits`` (when given), sums of squares in double (exact products,
    ``gamma_{d+1}(2^-53)`` for the sums), its row blocks shared by the ``workers``.
    """
    if _kernel is not None and kernel_isa() is not None and np.dtype(a.dtype) != np.float64:
        n, d = a.shape
        sq = np.empty(n, np.float64)
        rsq = np.empty(n, np.float64)

        def one(s: slice) -> None:
            x32 = np.ascontiguousarray(a[s], dtype=np.float32)
            _kernel.bf16_prepare(x32, None if bits is None else bits[s], sq[s], rsq[s])

        workers.map(one, list(row_blocks(n, max(1, min(block, -(-n // workers.n))))))
        grow = 1.0 + gamma(d + 1, U_FP64)
        return np.sqrt(sq * grow), np.sqrt(rsq * grow) + math.sqrt(d) * 2.0 * ETA
    n, d = a.shape
    norms = np.empty(n, np.float64)
    res = np.empty(n, np.float64)
    f64 = np.dtype(a.dtype) == np.float64
    for s in row_blocks(n, block):
        x = np.asarray(a[s])
        x32 = np.ascontiguousarray(x, dtype=np.float32)
        b16 = bf16_bits(x32)
        if bits is not None:
            bits[s] = b16
        b = bf16_as_f32(b16)
        norms[s] = np.einsum("ij,ij->i", x32, x32)
        if f64:
            r64 = b.astype(np.float64) - np.asarray(x, dtype=np.float64)
            res[s] = np.einsum("ij,ij->i", r64, r64) / (1.0 - gamma(d + 1, U_FP64))
        else:
            r = b - x32
            res[s] = np.einsum("ij,ij->i", r, r)
    norms = sq_norm_upper(norms, d)
    if f64:
        norms = norms / (1.0 - U_FP32) + math.sqrt(d) * 2.0 * ETA
        res = np.sqrt(res)
    else:
        res = sq_norm_upper(res, d)
    res += math.sqrt(d) * 2.0 * ETA
    return norms, res


def round_down_f32(x64: np.ndarray) -> np.ndarray:
    """float32 values <= the float64 ones (thresholds must not move up)."""
    x32 = x64.astype(np.float32)
    up = x32.astype(np.float64) > x64
    x32[up] = np.nextafter(x32[up], np.float32(-np.inf))
    return x32


@dataclass(frozen=True)
class PreparedDatabase:
    """The once-per-search pass over a database: the largest norm and bf16 residual norm
    (upper bounds) and, when kept, the bf16 bits of every row."""

    norm_max: float
    residual_max: float
    bits: np.ndarray | None


def prepare_database(
    database: Any, *, with_bits: bool = True, workers: Workers = SEQUENTIAL
) -> PreparedDatabase:
    """:func:`norm_bounds` of the database (and its bf16 bits when ``with_bits``)."""
    bits = np.empty(database.shape, np.uint16) if with_bits else None
    xn, xr = norm_bounds(database, bits, workers=workers)
    if xn.size == 0:
        return PreparedDatabase(0.0, 0.0, bits)
    return PreparedDatabase(float(xn.max()), float(xr.max()), bits)


def bf16_bits(x32: np.ndarray) -> np.ndarray:
    """The bf16 rounding (to nearest, ties to even) of finite float32 values, as their bits
    (uint16): the upper half of ``bits + 0x7FFF + (bit 16)``, which is exact for normal and
    subnormal values alike (bf16 is float32 with the low 16 bits cut); numpy, a few passes,
    and the same bits as torch's conversion (tested)."""
    u = np.ascontiguousarray(x32, dtype=np.float32).view(np.uint32)
    r = (u >> 16) & 1
    r += u
    r += 0x7FFF
    r >>= 16
    return r.astype(np.uint16)


def bf16_as_f32(bits: np.ndarray) -> np.ndarray:
    """float32 values of bf16 bits (exact)."""
    return (bits.astype(np.uint32) << 16).view(np.float32)
