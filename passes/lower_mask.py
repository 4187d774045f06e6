"""Attention masks (registered in :data:`pcc.passes.quantize_lower.LOWERING`): a value that is a mask times
"minus infinity" (``finfo.min``, ``-inf``, anything at or below ``-1e30``) never gets a scale of its own.

- ``nn.mul(k, c)`` with ``c`` such a constant records ``k`` (``k >= 0``, 1 where masked: ``1 - attention_mask``)
  as a *masking term* instead of emitting an op;
- ``nn.add(x, term)`` (either order) is ``sat_Q(x - 2 word_max(Q) k)`` at ``x``'s scale (``pent.eadd`` with
  ``neg``), ``Q >= P`` the fewest pents (at most 15) that leave ``MASK_DEPTH`` real units between ``-word_max(Q)``
  and the scores' range: masked scores saturate there, and a following softmax (whose exp table then spans
  ``x - max`` down to where exp rounds to 0) maps them to exactly 0, as it does the float ``x + finfo.min``;
- ``nn.add(x, c)`` feeding a softmax, ``c`` a constant of 0 and one value at or below ``MASK_ADD`` (a causal
  mask written as a constant): the same, with ``k = (c < 0)``;
- ``nn.where(cond, x, c)`` with a constant ``cond`` (the causal mask from a buffer) and such a ``c``: the same
  with ``k = 1 - cond`` as a constant.  With a constant ``cond`` and any other ``c``, ``x * cond + c (1 - cond)``
  (``pent.mul`` by the 0/1 constant, ``pent.eadd`` of the constant fill);
- ``nn.where(m, x, -inf)`` with a run-time boolean ``m`` (an attention mask input, 0/1 at scale 1): the same with
  ``k = 1 - m`` computed (``pent.eadd`` with ``neg``); ``nn.and`` of such masks (and constants): their product.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from pcc.dialects import nn, pent_binary
from pcc.ir import Operation, Value
from pcc.passes.lower_elementwise import _claim, _const_operand
from pcc.passes.quantize_lower import LOWERING, Lowering, _nan_guard, requant_params
from pcc.pentary import word_max

NEG_INF = -1e30  # a constant at or below this is "minus infinity" to a softmax
MASK_ADD = -1e4  # an additive constant mask holds 0 and one value at or below this (HF's old -10000, -1e9)
MASK_DEPTH = 40.0  # a masked score lies this far (real units) below the unmasked ones: exp(-40) is 0 at 13 pents


def _neg_inf_const(lw: Lowering, v: Value) -> bool:
    if id(v) in lw.map or not v.is_weight:
        return False
    c = np.asarray(lw.m.weight(v), np.float64)
    return c.size == 1 and float(c.reshape(-1)[0]) <= NEG_INF


def _mask_const(lw: Lowering, op: Operation, x: Value, c: Value) -> np.ndarray | None:
    """For ``x + c`` feeding a softmax, with ``c`` a constant of the values 0 and one value at or below
    ``MASK_ADD`` (a causal mask written as a constant, e.g. ``-1e9`` above the diagonal): 1 where masked."""
    if id(x) not in lw.map or id(c) in lw.map or not c.is_weight:
        return None
    users = op.results[0].uses
    if len(users) != 1 or not isinstance(users[0], nn.Softmax | nn.LogSoftmax):
        return None
    data = np.asarray(lw.m.weight(c), np.float64)
    vals = np.unique(data)
    if not (vals.size == 2 and vals[1] == 0 and vals[0] <= MASK_ADD):
        return None
    return (data < 0).astype(np.int64)


def _masked(lw: Lowering, op: Operation, x: Value, k: Value, s_k: float) -> None:
    """``sat_Q(x - 2 word_max(Q) k s_k)`` at ``x``'s scale, ``Q`` the fewest pents (at most 15) that put a masked
    value at least ``MASK_DEPTH`` (real units) below every unmasked one, so that a softmax's exp of it is 0."""
    qx, s_x = lw.q(x, op)
    p = qx.type.pents or 1
    q = p
    while q < 15 and (word_max(q) - word_max(p)) * s_x < MASK_DEPTH:
        q += 1
    (mx, mk), (sx, sk) = requant_params(np.array([1.0, 2 * word_max(q) * s_k]))
    r = op.results[0]
    attrs = {"mult": [int(mx), int(mk)], "shift": [int(sx), int(sk)], "neg": True}
    y = lw.emit(pent_binary.Eadd, [qx, k], r.type.with_dtype(f"p{q}"), attrs, op.loc, r.name, s_x)
    lw.map[id(r)] = (y, s_x)


Rule = Callable[[Lowering, Operation], None]


@LOWERING.refine(nn.Mul)
def lower_mul(plain: Rule, lw: Lowering, op: Operation) -> None:
    """A masking term (``k * -inf``) is recorded, not computed; any other product as before (``plain``)."""
    a, b = op.operands
    for k, c in ((a, b), (b, a)):
        if id(k) in lw.map and _neg_inf_const(lw, c):
            lw.neg_inf[id(op.results[0])] = lw.q(k, op)
            return None
    return plain(lw, op)


@LOWERING.refine(nn.Add)
def lower_add(plain: Rule, lw: Lowering, op: Operation) -> None:
    """``x + k * -inf``: the masked scores; any other sum as before (``plain``)."""
    a, b = op.operands
    for x, t in ((a, b), (b, a)):
        if id(t) in lw.neg_inf and id(x) in lw.map:
            k, s_k = lw.neg_inf[id(t)]
            return _masked(lw, op, x, k, s_k)
    if id(a) in lw.neg_inf or id(b) in lw.neg_inf:
        raise lw.error(op, "a sum of two masking terms (minus infinity) has no pentary lowering")
    for x, c in ((a, b), (b, a)):
        k = _mask_const(lw, op, x, c)
        if k is not None:
            base = (op.loc.node if op.loc and op.loc.node else op.results[0].name) or "mask"
            kv = lw.m.add_weight(lw.m.fresh_weight_name(base + ".masked"), k, "p16")
            return _masked(lw, op, x, kv, 1.0)
    return plain(lw, op)


@_claim(nn.Where)
def lower_where(lw: Lowering, op: Operation) -> None:
    """A NaN guard ``where(is_nan(x), c, x)`` is ``x``: a pent value is an integer, never NaN (ONNX exports of
    scaled_dot_product_attention guard a fully masked row's float softmax this way; a pent softmax of a row of
    equal entries is uniform).  A constant condition: masked fill (minus infinity) or a constant fill (see the
    module docstring)."""
    cond, a, b = op.operands
    if _nan_guard(op):
        lw.map[id(op.results[0])] = lw.q(b, op)
        return
    if not cond.is_weight:
        return _runtime_mask(lw, op)
    keep = np.asarray(lw.m.weight(cond)).astype(bool)
    inv = id(a) not in lw.map
    x, c = (b, a) if inv else (a, b)
    if id(x) not in lw.map or id(c) in lw.map:
        raise lw.error(op, "where needs one activation and one constant branch")
    if inv:
        keep = ~keep
    shape = op.results[0].type.shape
    base = (op.loc.node if op.loc and op.loc.node else op.results[0].name) or "where"
    pad = (1,) * (len(shape) - keep.ndim)
    if _neg_inf_const(lw, c):
        kv = lw.m.add_weight(
            lw.m.fresh_weight_name(base + ".masked"), (~keep).reshape(pad + keep.shape).astype(np.int64), "p16"
        )
        return _masked(lw, op, x, kv, 1.0)
    qx, s_x = lw.q(x, op)
    pents, s_y = lw.out_scale(op)
    kv = lw.m.add_weight(lw.m.fresh_weight_name(base + ".keep"), keep.reshape(pad + keep.shape).astype(np.int64), "p16")
    (m,), (sh,) = requant_params(s_x / s_y)
    t = op.results[0].type.with_dtype(f"p{pents}")
    kept = lw.emit(pent_binary.Mul, [qx, kv], t, {"mult": int(m), "shift": int(sh)}, op.loc, f"{base}.kept", s_y)
    fill = np.asarray(lw.const(op, c), np.float64) * (~keep).reshape(pad + keep.shape)
    fv, s_f = _const_operand(lw, op, fill)
    (ma, mb), (ha, hb) = requant_params(np.array([1.0, s_f / s_y]))
    attrs = {"mult": [int(ma), int(mb)], "shift": [int(ha), int(hb)]}
    y = lw.emit(pent_binary.Eadd, [kept, fv], t, attrs, op.loc, op.results[0].name, s_y)
    lw.map[id(op.results[0])] = (y, s_y)


def _runtime_mask(lw: Lowering, op: Operation) -> None:
    """``where(m, x, -inf)`` (or ``where(m, -inf, x)``) with a run-time boolean ``m`` (an attention mask input, at
    scale 1: 0 or 1): the masking term is ``k = 1 - m`` (or ``m``), one ``pent.eadd`` with ``neg`` at scale 1,
    then the masked scores as for a constant mask."""
    cond, a, b = op.operands
    if id(cond) not in lw.map:
        raise lw.error(op, "a run-time condition that is not a computed value")
    qm, s_m = lw.q(cond, op)
    if s_m != 1.0:
        raise lw.error(op, "a run-time condition must be an integer 0/1 value (a boolean mask), not a real one")
    if id(a) in lw.map and _neg_inf_const(lw, b):
        x, keep_true = a, True
    elif id(b) in lw.map and _neg_inf_const(lw, a):
        x, keep_true = b, False
    elif _zero_const(lw, a) and _neg_inf_const(lw, b):
        x, keep_true = None, True
    elif _zero_const(lw, b) and _neg_inf_const(lw, a):
        x, keep_true = None, False
    else:
        raise lw.error(op, "a run-time condition has a pentary lowering only as a mask: where(m, x, -inf)")
    k = qm if not keep_true else _one_minus(lw, op, cond, qm)
    if x is None:  # an additive mask where(m, 0, -inf): a masking term, added to the scores later
        lw.neg_inf[id(op.results[0])] = (k, 1.0)
        return None
    return _masked(lw, op, x, k, 1.0)


def _zero_const(lw: Lowering, v: Value) -> bool:
    if id(v) in lw.map or not v.is_weight:
        return False
    return not np.any(np.asarray(lw.m.weight(v), np.float64))


def _one_minus(lw: Lowering, op: Operation, cond: Value, qm: Value) -> Value:
    """``1 - m`` of a 0/1 value ``m`` at scale 1 (``pent.eadd`` with ``neg``)."""
    base = (op.loc.node if op.loc and op.loc.node else op.results[0].name) or "where"
    one = lw.m.add_weight(lw.m.fresh_weight_name(base + ".one"), np.ones((1,) * cond.type.rank, np.int64), "p16")
    (ma, mb), (ha, hb) = requant_params(np.array([1.0, 1.0]))
    attrs = {"mult": [int(ma), int(mb)], "shift": [int(ha), int(hb)], "neg": True}
    return lw.emit(pent_binary.Eadd, [one, qm], qm.type.with_dtype("p2"), attrs, op.loc, f"{base}.masked", 1.0)


def _bool_operand(lw: Lowering, op: Operation, v: Value) -> Value:
    """A 0/1 operand of a boolean op as a pent value at scale 1: a computed one as it is, a constant as ``p16``."""
    if id(v) in lw.map:
        q, s = lw.q(v, op)
        if s != 1.0:
            raise lw.error(op, "a boolean operand must be an integer 0/1 value (scale 1), not a real one")
        return q
    if not v.is_weight:
        raise lw.error(op, "a boolean operand that is neither computed nor a constant")
    data = np.asarray(lw.m.weight(v)).astype(bool).astype(np.int64)
    base = (op.loc.node if op.loc and op.loc.node else op.results[0].name) or "and"
    return lw.m.add_weight(lw.m.fresh_weight_name(base + ".c"), data, "p16")


@_claim(nn.And)
def lower_and(lw: Lowering, op: Operation) -> None:
    """``a and b`` of booleans (a causal mask and a padding mask): their product, 0 or 1 at scale 1 (EMUL)."""
    a, b = (_bool_operand(lw, op, v) for v in op.operands)
    (m,), (sh,) = requant_params(1.0)
    r = op.results[0]
    y = lw.emit(
        pent_binary.Mul, [a, b], r.type.with_dtype("p2"), {"mult": int(m), "shift": int(sh)}, op.loc, r.name, 1.0
    )
    lw.map[id(r)] = (y, 1.0)
