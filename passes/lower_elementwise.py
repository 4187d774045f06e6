"""Lowering of the elementwise float ops (registered in :data:`pcc.passes.quantize_lower.LOWERING`).

- **Broadcasting arithmetic.** ``nn.mul`` -> ``pent.mul`` (EMUL, ``mult / 2**shift ~= s_a s_b / s_y``);
  ``nn.div`` by a constant -> ``pent.mul`` by its reciprocal; ``nn.neg`` -> ``pent.mul`` by -1; ``nn.sub`` and
  an ``nn.add`` whose operands differ in shape or include a constant -> ``pent.eadd`` (each operand rescaled
  to the output scale by its own multiplier).  A constant operand becomes a 16-pent weight with its own scale
  ``max|c| / word_max(16)``.
- **Table activations.** Every float op that is a function of one activation (its other operands constants
  of one element) is lowered by one mechanism, :func:`lower_unary_table`: its own float kernel
  (:data:`pcc.interpreter.FLOAT_RULES`) is evaluated on the inputs the quantized operand can take, and the result
  is a ``pent.lut`` whose table spans only the inputs where the output is not flat at its resolution.  ``x *
  f(x)`` with ``f`` a chain of such ops ending at ``x`` (SiLU = x * sigmoid(x), hard-swish written as x *
  hard_sigmoid(x), mish = x * tanh(softplus(x))) is one table of the whole product.
- **Reductions.** ``nn.reduce_mean`` over the spatial axes of an image is the global average pool (POOL); over
  other axes, and ``nn.reduce_sum``, see :mod:`pcc.passes.lower_softmax`.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from pcc.dialects import nn, pent, pent_binary
from pcc.interpreter import FLOAT_RULES
from pcc.ir import Operation, Value
from pcc.passes.quantize_lower import LOWERING, Lowering, lower_table, requant_params, round_away
from pcc.pentary import word_max

CONST_PENTS = 16  # a constant operand of a binary op: one full word per element
_SAMPLES = 1 << 16  # inputs at which a table activation is evaluated to find where it is flat


def _claim(*classes: type[Operation]) -> Callable:
    """Register a rule for ``classes``, replacing a declared gap ("no pentary lowering yet")."""
    return LOWERING.claim(*classes)


def _const_operand(lw: Lowering, op: Operation, data: np.ndarray) -> tuple[Value, float]:
    """A float constant as a 16-pent weight and its scale.  An infinity (an additive attention mask's -inf)
    counts as the largest float32, as torch's own masks write it: it saturates whatever it is added to."""
    c = np.asarray(data, dtype=np.float64)
    if np.isinf(c).any():
        big = float(np.finfo(np.float32).max)
        c = np.clip(c, -big, big)
    if c.ndim == 0:
        c = c.reshape(1)
    amax = float(np.abs(c).max(initial=0.0))
    s = lw.scale(amax, CONST_PENTS)
    q = np.clip(round_away(c / s), -word_max(CONST_PENTS), word_max(CONST_PENTS)).astype(np.int64)
    base = (op.loc.node if op.loc and op.loc.node else op.results[0].name) or "c"
    v = lw.m.add_weight(lw.m.fresh_weight_name(base + ".const"), q, f"p{CONST_PENTS}")
    return v, s


def _operand(lw: Lowering, op: Operation, v: Value) -> tuple[Value, float]:
    """The pent value and scale of an operand: an activation the lowering produced, or a constant."""
    if id(v) in lw.map:
        return lw.q(v, op)
    return _const_operand(lw, op, lw.const(op, v))


def _emit_binary(lw: Lowering, op: Operation, cls: type[Operation], a: Value, b: Value, attrs: dict) -> None:
    pents, s_y = lw.out_scale(op)
    r = op.results[0]
    y = lw.emit(cls, [a, b], r.type.with_dtype(f"p{pents}"), attrs, op.loc, r.name, s_y)
    lw.map[id(r)] = (y, s_y)


def _mul_of(lw: Lowering, op: Operation, a: tuple[Value, float], b: tuple[Value, float]) -> None:
    _, s_y = lw.out_scale(op)
    (mult,), (shift,) = requant_params(a[1] * b[1] / s_y)
    _emit_binary(lw, op, pent_binary.Mul, a[0], b[0], {"mult": int(mult), "shift": int(shift)})


@_claim(nn.Mul)
def lower_mul(lw: Lowering, op: Operation) -> None:
    """EMUL; ``x * f(x)`` (f a chain of table activations of x) is one table instead."""
    x, g = op.operands
    for u, v in ((x, g), (g, x)):
        chain = _table_chain(v, u)
        if chain is not None and id(u) in lw.map:
            return _lower_self_product(lw, op, u, chain)
    _mul_of(lw, op, _operand(lw, op, x), _operand(lw, op, g))


@_claim(nn.Div)
def lower_div(lw: Lowering, op: Operation) -> None:
    """Division by a constant: the product with its reciprocal (EMUL); by a run-time value: its reciprocal square
    root (:func:`pcc.passes.lower_divide.lower_tensor_div`)."""
    a, b = op.operands
    if not b.is_weight:
        from pcc.passes.lower_divide import lower_tensor_div

        return lower_tensor_div(lw, op)
    c = np.asarray(lw.const(op, b), dtype=np.float64)
    if np.any(c == 0):
        raise lw.error(op, "division by a constant that holds zeros")
    _mul_of(lw, op, _operand(lw, op, a), _const_operand(lw, op, 1.0 / c))


@_claim(nn.Neg)
def lower_neg(lw: Lowering, op: Operation) -> None:
    """EMUL by a constant -1 (exact: the output keeps the input's scale when calibrated alike)."""
    _mul_of(lw, op, lw.q(op.operands[0], op), _const_operand(lw, op, np.array([-1.0])))


def lower_eadd(lw: Lowering, op: Operation, neg: bool) -> None:
    """``a + b`` or ``a - b`` with broadcasting or a constant operand: pent.eadd."""
    (qa, sa), (qb, sb) = _operand(lw, op, op.operands[0]), _operand(lw, op, op.operands[1])
    _, s_y = lw.out_scale(op)
    (ma, mb), (ha, hb) = requant_params(np.array([sa / s_y, sb / s_y]))
    attrs = {"mult": [int(ma), int(mb)], "shift": [int(ha), int(hb)], "neg": neg}
    _emit_binary(lw, op, pent_binary.Eadd, qa, qb, attrs)


@_claim(nn.Sub)
def lower_sub(lw: Lowering, op: Operation) -> None:
    lower_eadd(lw, op, True)


# ----------------------------------------------------------------------------------------------- tables

# Float ops that are functions of their first operand alone (further operands: one-element constants).
TABLE_OPS: tuple[type[Operation], ...] = tuple(
    c
    for c in (
        nn.Tanh, nn.HardSigmoid, nn.HardSwish, nn.Erf, nn.Gelu, nn.LeakyRelu, nn.Exp, nn.Sqrt, nn.Pow,
        *(getattr(nn, n, None) for n in (
            "Elu", "Selu", "Celu", "Softplus", "Softsign", "Mish", "Silu", "HardTanh", "ThresholdedRelu", "Shrink",
            "Log", "Reciprocal", "Abs", "Sign", "Round", "Floor", "Ceil", "Sin", "Cos", "Tan", "Asin", "Acos",
            "Atan", "Sinh", "Cosh", "Asinh", "Acosh", "Atanh",
        )),
    )
    if c is not None
)  # fmt: skip
_CHAIN_OPS = (*TABLE_OPS, nn.Sigmoid)


def _scalar_consts(op: Operation) -> list[np.ndarray] | None:
    """The constant further operands of a unary op (one element each), or None if there are others."""
    out = []
    for v in op.operands[1:]:
        if not v.is_weight or v.type.size != 1 or op.graph is None or op.graph.module is None:
            return None
        out.append(np.asarray(op.graph.module.weight(v)))
    return out


def _fn_of(op: Operation) -> Callable[[np.ndarray], np.ndarray]:
    """The float function an op computes of its first operand (its own kernel)."""
    consts = _scalar_consts(op) or []
    kern = FLOAT_RULES.lookup(op)

    def fn(x: np.ndarray) -> np.ndarray:
        with np.errstate(all="ignore"):
            y = np.asarray(kern(op, x, *[c.astype(x.dtype).reshape(-1) for c in consts]), dtype=np.float64)
        return np.nan_to_num(y, nan=0.0, posinf=1e300, neginf=-1e300)

    return fn


def _table_chain(v: Value, root: Value) -> list[Operation] | None:
    """The ops, from ``root`` outwards, of a chain of unary table ops that computes ``v`` from ``root``."""
    chain = []
    while v is not root:
        op = v.owner
        if not isinstance(op, _CHAIN_OPS) or _scalar_consts(op) is None:
            return None
        chain.append(op)
        v = op.operands[0]
    return chain[::-1] if chain else None


def _flat_ends(fn: Callable[[np.ndarray], np.ndarray], m_in: int, s_x: float, s_y: float, m_out: int) -> tuple:
    """The real inputs beyond which ``fn``'s quantized output stays at its end values (sampled at most
    :data:`_SAMPLES` times; one sample of margin on each side)."""
    stride = max(1, -(-(2 * m_in + 1) // _SAMPLES))
    grid = np.arange(-m_in, m_in + 1, stride, dtype=np.float64)
    if grid[-1] != m_in:
        grid = np.append(grid, m_in)
    q = np.clip(round_away(fn(grid * s_x) / s_y), -m_out, m_out)
    moved_lo = np.flatnonzero(q != q[0])
    moved_hi = np.flatnonzero(q != q[-1])
    if moved_lo.size == 0:  # constant over the whole range
        return -m_in * s_x, -m_in * s_x
    lo = grid[max(moved_lo[0] - 2, 0)]
    hi = grid[min(moved_hi[-1] + 2, grid.size - 1)]
    return lo * s_x, hi * s_x


def table_lowering(lw: Lowering, op: Operation, x: Value, fn: Callable[[np.ndarray], np.ndarray]) -> None:
    """``op``'s result as ``pent.lut`` of ``fn`` applied to the activation ``x``."""
    q, s_x = lw.q(x, op)
    pents, s_y = lw.out_scale(op)
    flat = _flat_ends(fn, word_max(q.type.pents or 1), s_x, s_y, word_max(pents))
    lower_table(lw, op, fn, flat, x)


def _drop_unused(lw: Lowering, chain: list[Operation]) -> None:
    """Erase the pent ops of a fused chain whose float values nothing else uses."""
    for op in reversed(chain):
        r = op.results[0]
        if len(r.uses) != 1 or r in lw.old.outputs:
            return
        pv, _ = lw.map[id(r)]
        if pv.uses or pv.owner is None:
            return
        lw.g.erase(pv.owner)
        del lw.map[id(r)]


def _lower_self_product(lw: Lowering, op: Operation, x: Value, chain: list[Operation]) -> None:
    fns = [_fn_of(c) for c in chain]

    def fn(v: np.ndarray) -> np.ndarray:
        y = v
        for f in fns:
            y = f(y)
        return v * y

    table_lowering(lw, op, x, fn)
    _drop_unused(lw, chain)


@_claim(*TABLE_OPS)
def lower_unary_table(lw: Lowering, op: Operation) -> None:
    """TLUT of the op's own float function (see the module docstring)."""
    if _scalar_consts(op) is None:
        raise lw.error(op, "only constant one-element further operands have a table lowering")
    table_lowering(lw, op, op.operands[0], _fn_of(op))


# ----------------------------------------------------------------------------------------------- reductions


@_claim(nn.ReduceMean)
def lower_reduce_mean(lw: Lowering, op: Operation) -> None:
    """The mean over the spatial axes of an image: POOL over the whole image (then a reshape without keepdims)."""
    xt = op.operands[0].type
    axes = op.attr("axes")
    axes = sorted({a % xt.rank for a in axes}) if axes is not None else list(range(xt.rank))
    if xt.rank != 4 or axes != [2, 3]:
        from pcc.passes.lower_softmax import lower_reduce

        return lower_reduce(lw, op)
    x, s = lw.q(op.operands[0], op)
    r = op.results[0]
    pooled = xt.with_shape((xt.shape[0], xt.shape[1], 1, 1)).with_dtype(x.type.dtype)
    attrs = {"kernel_shape": list(xt.shape[2:])}
    keep = op.attr("keepdims")
    y = lw.emit(pent.AvgPool, [x], pooled, attrs, op.loc, r.name if keep else f"{r.name}.pool", s)
    if not keep:
        shape = {"shape": list(r.type.shape)}
        y = lw.emit(pent.Reshape, [y], r.type.with_dtype(x.type.dtype), shape, op.loc, r.name, s)
    lw.map[id(r)] = (y, s)


# ----------------------------------------------------------------------------------------------- compositions


def _eadd_op(lw: Lowering, op: Operation, a: tuple[Value, float], b: tuple[Value, float], neg: bool, s_y: float,
             pents: int, name: str) -> tuple[Value, float]:  # fmt: skip
    """``a + b`` (or ``a - b``) at scale ``s_y`` and ``pents`` pents, as pent.eadd."""
    (ma, mb), (ha, hb) = requant_params(np.array([a[1] / s_y, b[1] / s_y]))
    attrs = {"mult": [int(ma), int(mb)], "shift": [int(ha), int(hb)], "neg": neg}
    t = op.results[0].type.with_dtype(f"p{pents}")
    return lw.emit(pent_binary.Eadd, [a[0], b[0]], t, attrs, op.loc, name, s_y), s_y


def _relu_of(lw: Lowering, op: Operation, v: tuple[Value, float], name: str) -> tuple[Value, float]:
    return lw.emit(pent.Relu, [v[0]], v[0].type, {}, op.loc, name, v[1]), v[1]


def _max_min(lw: Lowering, op: Operation) -> None:
    """``max(a, b) = a' + relu(b' - a')`` and ``min(a, b) = a' - relu(a' - b')``, ``a'``, ``b'`` the operands at
    the output scale (the difference kept at 16 pents, so both are exact on the rounded operands)."""
    if len(op.operands) != 2:
        raise lw.error(op, "only a max/min of two operands has a pentary lowering")
    pents, s_y = lw.out_scale(op)
    a, b = _operand(lw, op, op.operands[0]), _operand(lw, op, op.operands[1])
    base = (op.loc.node if op.loc and op.loc.node else op.results[0].name) or "mm"
    is_max = type(op).__name__ == "Max"
    d = (
        _eadd_op(lw, op, b, a, True, s_y, 16, f"{base}.diff")
        if is_max
        else _eadd_op(lw, op, a, b, True, s_y, 16, f"{base}.diff")
    )
    r = _relu_of(lw, op, d, f"{base}.relu")
    res = op.results[0]
    y, _ = _eadd_op(lw, op, a, r, not is_max, s_y, pents, res.name)
    if y.type.shape != res.type.shape:
        raise lw.error(op, "the first operand must have the result's shape")
    lw.map[id(res)] = (y, s_y)


def _prelu(lw: Lowering, op: Operation) -> None:
    """A one-element slope: a table.  A per-channel slope: ``relu(x) + slope * (x - relu(x))`` (TRELU, EADD,
    EMUL by the constant slope, EADD)."""
    if _scalar_consts(op) is not None:
        return table_lowering(lw, op, op.operands[0], _fn_of(op))
    x = lw.q(op.operands[0], op)
    if id(op.operands[1]) in lw.map:
        raise lw.error(op, "only a constant slope has a pentary lowering")
    slope = np.asarray(lw.const(op, op.operands[1]), dtype=np.float64)
    pents, s_y = lw.out_scale(op)
    base = (op.loc.node if op.loc and op.loc.node else op.results[0].name) or "prelu"
    r = _relu_of(lw, op, x, f"{base}.pos")
    neg = _eadd_op(lw, op, x, r, True, x[1], x[0].type.pents or 1, f"{base}.neg")  # min(x, 0), exact
    c = _const_operand(lw, op, slope)
    s_t = x[1] * max(float(np.abs(slope).max(initial=0.0)), 1e-12)
    (m,), (sh,) = requant_params(neg[1] * c[1] / s_t)
    attrs = {"mult": int(m), "shift": int(sh)}
    t16 = op.results[0].type.with_dtype("p16")
    t = lw.emit(pent_binary.Mul, [neg[0], c[0]], t16, attrs, op.loc, f"{base}.scaled", s_t)
    res = op.results[0]
    y, _ = _eadd_op(lw, op, r, (t, s_t), False, s_y, pents, res.name)
    lw.map[id(res)] = (y, s_y)


for _name, _fn in (("Max", _max_min), ("Min", _max_min), ("PRelu", _prelu)):
    if getattr(nn, _name, None) is not None:
        _claim(getattr(nn, _name))(_fn)
