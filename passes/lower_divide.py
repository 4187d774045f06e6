"""Lowering of the L2 norm (``nn.reduce_l2``) and of a division by a run-time tensor (``nn.div``), both on the
normalization layers' reciprocal square root ``pent.rsqrt`` (:mod:`pcc.dialects.pent_norm`, the parameters from
:func:`pcc.passes.lower_norm.rsqrt_params`); registered in :data:`pcc.passes.quantize_lower.LOWERING`.

- ``nn.reduce_l2`` over any axes: rows ``[R, K]`` (a ``pent.gather`` with the reduced axes last, unless they are
  the memory-last axis already), ``sq = pent.mul(x, x)`` (``word_max(P)**2`` inside a word),
  ``m = pent.reduce(sq)`` (their mean, ``div_round`` of the sum, at ``s_v = 2**g s_x**2``: ``g`` puts the
  largest mean near ``2**30``, where the root below keeps 15 bits), ``n = pent.rsqrt(m)`` (``2**30 /
  sqrt(m + 1)``), and ``||x|| = sqrt(K s_v m) = m n sqrt(K s_v) 2**-30`` (``pent.mul`` at the result's
  calibrated scale): the root of the sum as the sum over its root.
- ``nn.div(a, b)`` with ``b`` a run-time value: ``1 / |b| = rsqrt(b**2)`` (``pent.mul(b, b)`` at ``s_v = 2**g
  s_b**2``, the same ``g``, then ``n = pent.rsqrt``, one unit of ``v`` as the bias, at ``2**-30 / sqrt(s_v)``),
  ``y = pent.mul(a, n)`` at the result's scale.  A divisor that cannot be negative (a norm, a root, an
  exponential, a ReLU, a sigmoid, a softmax, an absolute value, a clip at a non-negative minimum, through views
  and expands) needs nothing more; any other gets its sign first: ``c = pent.clamp(b, -1, 1)`` (TCLAMP:
  ``sign(b)`` of the integer, exactly), ``a' = pent.mul(a, c)`` (exact, at ``a``'s scale), ``y = a' n``.  The
  operands broadcast as numpy's (``pent.mul``'s strided gathers; canonicalize drops an ``nn.expand`` that only
  broadcasts a divisor), so ``x / ||x||`` (``F.normalize``: the norm of each row clipped at ``eps``, expanded
  along the row) costs one reciprocal per row.

*Error.* ``n`` is exact to ``2**-28`` relative (:mod:`pcc.dialects.pent_norm`), so the quotient's error is the
divisor's own rounding ``s_b / 2`` relative to ``|b|`` (and its bias, one unit of ``s_v``) plus the result's
rounding; the norm's is the mean's rounding (half a unit of ``s_v``) and the result's
(``tests/compile/test_divide.py``; docs/compiler.md has the measured errors).
"""

from __future__ import annotations

import math

import numpy as np

from pcc.dialects import nn, pent, pent_binary, pent_norm, pent_softmax
from pcc.ir import Operation, TensorType, Value
from pcc.isa import WORD_MAX
from pcc.passes.lower_elementwise import _claim
from pcc.passes.lower_norm import rsqrt_params
from pcc.passes.lower_softmax import reduction_rows, window
from pcc.passes.quantize_lower import Lowering, requant_params, round_away
from pcc.pentary import word_max

F = pent_norm.RSQRT_FRAC
MAX_NUMERATOR_PENTS = 13  # a * n (n <= 2**30) stays inside EMUL's 27-pent product
ROOT_BITS = 30  # the largest square the reciprocal root takes: 2**30 (see _root_shift)

# ops whose result is never negative, and the views a divisor may pass through on the way
_NON_NEGATIVE = tuple(
    c
    for c in (getattr(nn, n, None) for n in ("ReduceL2", "Sqrt", "Exp", "Relu", "Sigmoid", "Softmax", "Abs"))
    if c is not None
)
_VIEWS = tuple(
    c
    for c in (getattr(nn, n, None) for n in ("Expand", "Reshape", "Flatten", "Squeeze", "Unsqueeze", "Transpose"))
    if c is not None
)


def non_negative(v: Value) -> bool:
    """True if the float value ``v`` cannot be negative by construction (see the module docstring)."""
    op = v.owner
    while isinstance(op, _VIEWS):
        op = op.operands[0].owner
    if isinstance(op, nn.Clip):
        lo = op.attr("min")
        return (lo is not None and lo >= 0) or non_negative(op.operands[0])
    return isinstance(op, _NON_NEGATIVE)


def _base(op: Operation) -> str:
    return (op.loc.node if op.loc and op.loc.node else op.results[0].name) or "div"


def _word_shift(pents: int) -> int:
    """``h``: ``word_max(pents)**2 / 2**h`` fits a word (the squares' shift)."""
    return max(0, math.ceil(math.log2(word_max(pents) ** 2 / WORD_MAX)))


def _root_shift(pents: int) -> int:
    """``g``: ``word_max(pents)**2 / 2**g`` is at most ``2**ROOT_BITS``, where ``n = 2**30 / sqrt(v)`` still has
    15 bits (``n``'s rounding below ``2**-15`` relative) and ``v``'s own rounding, half a unit, is below the
    divisor's (``s_b / 2``) for every divisor above ``2**(g / 2)`` units."""
    return max(0, math.ceil(math.log2(word_max(pents) ** 2)) - ROOT_BITS)


def _rsqrt(lw: Lowering, op: Operation, v: Value, s_v: float, v_max: int, name: str) -> tuple[Value, float]:
    """``n = 2**30 / sqrt(v + 1)`` (``pent.rsqrt``) of the non-negative ``v`` (at most ``v_max``), at
    ``2**-30 / sqrt(s_v)``: the real ``1 / sqrt(v s_v)``."""
    table, im, ish, iters = rsqrt_params(min(WORD_MAX, v_max), 1)
    tv = lw.m.add_weight(lw.m.fresh_weight_name(name + ".rsqrt"), table, "p16")
    s_n = 2.0**-F / math.sqrt(s_v)
    attrs = {"bias": 1, "imult": im, "ishift": ish, "iters": iters}
    return lw.emit(pent_norm.Rsqrt, [v, tv], v.type.with_dtype("p16"), attrs, op.loc, f"{name}.rsqrt", s_n), s_n


@_claim(nn.ReduceL2)
def lower_reduce_l2(lw: Lowering, op: Operation) -> None:
    """``sqrt(sum x**2)`` over any axes (see the module docstring)."""
    x, s_x = lw.q(op.operands[0], op)
    p = x.type.pents or 1
    base = _base(op)
    x, red, rest, rows, k = reduction_rows(lw, op, x, s_x, base)
    try:
        k1, k2 = window(k)
    except ValueError as exc:
        raise lw.error(op, str(exc)) from None
    h, g = _word_shift(p), _root_shift(p)
    s_sq = 2.0**h * s_x * s_x
    sq = lw.emit(pent_binary.Mul, [x, x], x.type.with_dtype("p16"), {"mult": 1, "shift": h}, op.loc, f"{base}.sq", s_sq)
    (m,), (sh,) = requant_params(k1 * k2 / k / 2.0 ** max(0, g - h))  # the mean at 2**g s_x**2
    s_v = 2.0 ** max(g, h) * s_x * s_x
    attrs = {"axis": 1, "k1": k1, "k2": k2, "mult": int(m), "shift": int(sh), "kind": "mean"}
    t16 = TensorType((rows,), "p16")
    mean = lw.emit(pent_softmax.Reduce, [sq], t16, attrs, op.loc, f"{base}.meansq", s_v)
    n, s_n = _rsqrt(lw, op, mean, s_v, word_max(p) ** 2 >> max(g, h), base)
    pents, s_y = lw.out_scale(op)
    r = op.results[0]
    (ym,), (ys,) = requant_params(math.sqrt(k) * s_v * s_n / s_y)  # sqrt(K s_v m) = sqrt(K) s_v m * s_n n
    name = r.name if r.type.rank == 1 else f"{base}.norm"
    y = lw.emit(pent_binary.Mul, [mean, n], TensorType((rows,), f"p{pents}"), {"mult": int(ym), "shift": int(ys)},
                op.loc, name, s_y)  # fmt: skip
    if r.type.rank != 1:
        y = lw.emit(pent.Reshape, [y], r.type.with_dtype(f"p{pents}"), {"shape": list(r.type.shape)}, op.loc, r.name,
                    s_y)  # fmt: skip
    lw.map[id(r)] = (y, s_y)


def _numerator_const(lw: Lowering, op: Operation) -> tuple[Value, float]:
    """A constant numerator as a ``p13`` weight (its products with ``n`` stay inside EMUL's 27-pent product)."""
    c = np.asarray(lw.const(op, op.operands[0]), np.float64).reshape(op.operands[0].type.shape or (1,))
    s = lw.scale(float(np.abs(c).max(initial=0.0)), MAX_NUMERATOR_PENTS)
    wm = word_max(MAX_NUMERATOR_PENTS)
    q = np.clip(round_away(c / s), -wm, wm).astype(np.int64)
    v = lw.m.add_weight(lw.m.fresh_weight_name(_base(op) + ".numerator"), q, f"p{MAX_NUMERATOR_PENTS}")
    return v, s


def lower_tensor_div(lw: Lowering, op: Operation) -> None:
    """``a / b`` with ``b`` a run-time value: ``a * sign(b) * rsqrt(b**2)`` (see the module docstring)."""
    a, s_a = lw.q(op.operands[0], op) if id(op.operands[0]) in lw.map else _numerator_const(lw, op)
    b, s_b = lw.q(op.operands[1], op)
    pa, pb = a.type.pents or 1, b.type.pents or 1
    if pa > MAX_NUMERATOR_PENTS:
        raise lw.error(op, f"a numerator of {pa} pents has no pentary division (at most {MAX_NUMERATOR_PENTS})")
    base = _base(op)
    h = max(_word_shift(pb), _root_shift(pb))
    s_v = 2.0**h * s_b * s_b
    sq = lw.emit(pent_binary.Mul, [b, b], b.type.with_dtype("p16"), {"mult": 1, "shift": h}, op.loc, f"{base}.sq", s_v)
    n, s_n = _rsqrt(lw, op, sq, s_v, word_max(pb) ** 2 >> h, base)
    if not non_negative(op.operands[1]):
        c = lw.emit(pent.Clamp, [b], b.type, {"lo": -1, "hi": 1}, op.loc, f"{base}.sign", 1.0)
        shape = tuple(int(d) for d in np.broadcast_shapes(a.type.shape, c.type.shape))
        a = lw.emit(pent_binary.Mul, [a, c], a.type.with_shape(shape), {"mult": 1, "shift": 0}, op.loc,
                    f"{base}.signed", s_a)  # fmt: skip
    pents, s_y = lw.out_scale(op)
    r = op.results[0]
    (m,), (sh,) = requant_params(s_a * s_n / s_y)
    y = lw.emit(pent_binary.Mul, [a, n], r.type.with_dtype(f"p{pents}"), {"mult": int(m), "shift": int(sh)}, op.loc,
                r.name, s_y)  # fmt: skip
    lw.map[id(r)] = (y, s_y)
