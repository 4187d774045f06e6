"""Lowering of the normalization layers (``nn.layer_norm``, ``nn.group_norm``, which is also the instance norm)
to integer steps (registered in :data:`pcc.passes.quantize_lower.LOWERING`).

Over rows ``[R, K]`` of the normalized elements (a ``pent.gather`` to rows when they are not the memory-last
axis; ``fold-moves`` merges it with its neighbours), with ``s_x`` the input's scale and ``P`` its pents:

1. ``mu = pent.reduce(x)`` (mean, at ``s_x``: ``div_round`` of the row sum), then ``d = x - mu`` (``pent.eadd``
   with ``neg``, 16 pents, at ``s_x``: exact on the rounded mean);
2. ``var = pent.reduce(pent.mul(d, d))``: the squares at ``s_v = 2**h s_x**2`` (``h`` the shift that keeps
   ``(2 word_max(P))**2`` inside a word), then their mean;
3. ``n = pent.rsqrt(var)``: ``2**30 / sqrt(var + epsilon / s_v)`` (:mod:`pcc.dialects.pent_norm`), at
   ``2**-30 / sqrt(s_v)``;
4. ``z = pent.mul(d, n)``, the normalized rows at 16 pents (``|z| <= sqrt(K)``), gathered back to the input's
   shape; then ``z * gamma`` (``pent.mul`` by the constant, broadcast per element of the normalized axes or per
   channel) and ``+ beta`` (``pent.eadd``) at the output's calibrated scale.
"""

from __future__ import annotations

import math

import numpy as np

from pcc.dialects import nn, pent, pent_binary, pent_move, pent_norm, pent_softmax
from pcc.ir import Operation, TensorType, Value
from pcc.isa import WORD_MAX
from pcc.passes.lower_elementwise import _claim, _const_operand
from pcc.passes.lower_softmax import window
from pcc.passes.quantize_lower import Lowering, requant_params
from pcc.pentary import word_max

F = pent_norm.RSQRT_FRAC
_TABLE = 4096  # first-guess entries of the reciprocal square root
GAMMA_PENTS = 10


def rsqrt_params(v_max: int, bias: int) -> tuple[np.ndarray, int, int, int]:
    """``(table, imult, ishift, iters)`` of ``pent.rsqrt`` for variances ``0 .. v_max`` plus ``bias``: the table
    holds ``2**30 / sqrt`` of each bucket's upper end (a guess from below), ``iters`` the Newton steps the worst
    bucket needs (bucket 0 from its smallest value ``bias``)."""
    top = min(WORD_MAX, v_max + bias)
    (im,), (ish,) = requant_params((_TABLE - 1) / top)
    step = 2.0 ** int(ish) / max(int(im), 1)  # real units of w per index
    i = np.arange(_TABLE, dtype=np.float64)
    upper = np.maximum((i + 0.5) * step, 1.0)
    table = np.minimum(np.floor(2.0**F / np.sqrt(upper)), 2**F).astype(np.int64)
    e = min(1.0, bias / max(0.5 * step, 1.0))  # the worst start, e = w n0**2 / 2**2F
    e = min(e, 1.0 / 3.0) if _TABLE > 1 else e  # buckets >= 1 start at e >= 1/3
    iters = 0
    while 1 - e > 2.0**-28 and iters < 64:
        e = e * (3 - e) ** 2 / 4
        iters += 1
    return table, int(im), int(ish), iters + 1  # one more for the integer rounding


def _rows(lw: Lowering, op: Operation, x: Value, s: float, src: np.ndarray, name: str) -> Value:
    mv = lw.m.add_weight(lw.m.fresh_weight_name(name + ".map"), src.astype(np.int64).ravel(), "p16")
    shape = list(src.shape)
    return lw.emit(pent_move.Gather, [mv, x], x.type.with_shape(shape), {"shape": shape, "fill": 0}, op.loc, name, s)


def normalize_rows(lw: Lowering, op: Operation, x: Value, s_x: float, eps: float, base: str) -> tuple[Value, float]:
    """``(x - mean) / sqrt(var + eps)`` over the last axis of ``x`` (``[..., K]``, memory-last: rows of K
    contiguous words; steps 1-4 of the module docstring)."""
    k = x.type.shape[-1]
    rows = x.type.size // k
    lead = list(x.type.shape[:-1])
    p_in = x.type.pents or 1
    k1, k2 = window(k)
    kp = k1 * k2
    p16 = x.type.with_dtype("p16")
    (m,), (sh,) = requant_params(kp / k)
    red = {"axis": x.type.rank - 1, "k1": k1, "k2": k2, "mult": int(m), "shift": int(sh), "kind": "mean"}
    mu = lw.emit(pent_softmax.Reduce, [x], TensorType((rows,), "p16"), red, op.loc, f"{base}.mean", s_x)
    col = TensorType((*lead, 1), "p16")  # one value per row, broadcast along it
    mu = lw.emit(pent.Reshape, [mu], col, {"shape": [*lead, 1]}, op.loc, f"{base}.mean2", s_x)
    sub = {"mult": [1, 1], "shift": [0, 0], "neg": True}
    d = lw.emit(pent_binary.Eadd, [x, mu], p16, sub, op.loc, f"{base}.centered", s_x)
    h = max(0, math.ceil(math.log2((2 * word_max(p_in)) ** 2 / WORD_MAX)))
    s_v = 2.0**h * s_x * s_x
    sq = lw.emit(pent_binary.Mul, [d, d], p16, {"mult": 1, "shift": h}, op.loc, f"{base}.square", s_v)
    var = lw.emit(pent_softmax.Reduce, [sq], TensorType((rows,), "p16"), red, op.loc, f"{base}.var", s_v)
    bias = int(min(WORD_MAX, max(1, round(eps / s_v))))
    table, im, ish, iters = rsqrt_params(min(WORD_MAX, (2 * word_max(p_in)) ** 2 >> h), bias)
    tv = lw.m.add_weight(lw.m.fresh_weight_name(base + ".rsqrt"), table, "p16")
    s_n = 2.0**-F / math.sqrt(s_v)
    attrs = {"bias": bias, "imult": im, "ishift": ish, "iters": iters}
    n = lw.emit(pent_norm.Rsqrt, [var, tv], TensorType((rows,), "p16"), attrs, op.loc, f"{base}.rsqrt", s_n)
    n = lw.emit(pent.Reshape, [n], col, {"shape": [*lead, 1]}, op.loc, f"{base}.rsqrt2", s_n)
    s_z = math.sqrt(k) / word_max(15)
    (zm,), (zs,) = requant_params(s_x * s_n / s_z)
    z = lw.emit(pent_binary.Mul, [d, n], p16, {"mult": int(zm), "shift": int(zs)}, op.loc, f"{base}.normed", s_z)
    return z, s_z


def _gamma(lw: Lowering, op: Operation, gamma: np.ndarray) -> tuple[Value, float]:
    """``gamma`` as a ``p10`` constant: its products with the 16-pent normalized values stay inside EMUL's
    27-pent product (``word_max(15) word_max(10) < ACC_MAX``), and 10 pents resolve it to ``2e-7`` of its range."""
    s = float(np.abs(gamma).max()) / word_max(GAMMA_PENTS) or 1.0
    q = np.clip(np.rint(gamma / s), -word_max(GAMMA_PENTS), word_max(GAMMA_PENTS)).astype(np.int64)
    base = (op.loc.node if op.loc and op.loc.node else op.results[0].name) or "norm"
    return lw.m.add_weight(lw.m.fresh_weight_name(base + ".gamma"), q, f"p{GAMMA_PENTS}"), s


def _affine(  # noqa: ANN202
    lw: Lowering, op: Operation, z: Value, s_z: float, gamma: np.ndarray | None, beta: np.ndarray | None, k: int
):
    """``z * gamma + beta`` at the op's output scale (``gamma`` / ``beta`` already shaped to broadcast; ``|z| <=
    sqrt(k)``)."""
    r = op.results[0]
    pents, s_y = lw.out_scale(op)
    out_t = r.type.with_dtype(f"p{pents}")
    if beta is not None and not np.any(beta):
        beta = None
    if gamma is not None and np.all(gamma == 1):
        gamma = None
    if gamma is not None:
        gv, s_g = _gamma(lw, op, gamma)
        s_m = s_y if beta is None else float(np.abs(gamma).max() * math.sqrt(max(1, k)) / word_max(15))
        (gm,), (gs,) = requant_params(s_z * s_g / s_m)
        t = out_t if beta is None else z.type.with_dtype("p16")
        name = r.name if beta is None else f"{r.name}.scaled"
        z = lw.emit(pent_binary.Mul, [z, gv], t, {"mult": int(gm), "shift": int(gs)}, op.loc, name, s_m)
        s_z = s_m
    if beta is not None:
        bv, s_b = _const_operand(lw, op, beta)
        (ma, mb), (ha, hb) = requant_params(np.array([s_z / s_y, s_b / s_y]))
        attrs = {"mult": [int(ma), int(mb)], "shift": [int(ha), int(hb)]}
        z = lw.emit(pent_binary.Eadd, [z, bv], out_t, attrs, op.loc, r.name, s_y)
        s_z = s_y
    if gamma is None and beta is None:
        (m,), (sh,) = requant_params(s_z / s_y)
        one = lw.m.add_weight(lw.m.fresh_weight_name(f"{r.name}.one"), np.array([1], np.int64), "p16")
        z = lw.emit(pent_binary.Mul, [z, one], out_t, {"mult": int(m), "shift": int(sh)}, op.loc, r.name, s_y)
        s_z = s_y
    lw.map[id(r)] = (z, s_z)


def _norm(lw: Lowering, op: Operation, axes: list[int], gamma: np.ndarray | None, beta: np.ndarray | None) -> None:
    x, s_x = lw.q(op.operands[0], op)
    if (x.type.pents or 1) > 15:
        raise lw.error(op, "a 16-pent input has no pentary normalization (x - mean must fit a word)")
    shape = list(x.type.shape)
    rest = [i for i in range(len(shape)) if i not in axes]
    k = int(np.prod([shape[i] for i in axes], dtype=np.int64))
    rows = x.type.size // max(k, 1)
    base = (op.loc.node if op.loc and op.loc.node else op.results[0].name) or "norm"
    direct = len(axes) == 1 and len(shape) != 4 and axes[0] == len(shape) - 1  # rows in memory already
    perm = rest + axes
    src = np.arange(x.type.size).reshape(shape).transpose(perm).reshape(rows, k)
    xr = x if direct else _rows(lw, op, x, s_x, src, f"{base}.rows")
    try:
        z, s_z = normalize_rows(lw, op, xr, s_x, float(op.attr("epsilon")), base)
    except ValueError as exc:
        raise lw.error(op, str(exc)) from None
    if not direct:
        back = np.empty(x.type.size, dtype=np.int64)
        back[src.ravel()] = np.arange(x.type.size)
        z = _rows(lw, op, z, s_z, back.reshape(shape), f"{base}.back")
    _affine(lw, op, z, s_z, gamma, beta, k)


@_claim(nn.LayerNorm)
def lower_layer_norm(lw: Lowering, op: Operation) -> None:
    """Integer LayerNorm over axes ``axis..`` (see the module docstring)."""
    rank = op.operands[0].type.rank
    ax = op.attr("axis") % rank
    axes = list(range(ax, rank))
    norm_shape = op.operands[0].type.shape[ax:]
    gamma = np.asarray(lw.const(op, op.operands[1]), np.float64).reshape(norm_shape)
    beta = None
    if len(op.operands) > 2:
        beta = np.asarray(lw.const(op, op.operands[2]), np.float64).reshape(norm_shape)
    _norm(lw, op, axes, gamma, beta)


@_claim(nn.GroupNorm)
def lower_group_norm(lw: Lowering, op: Operation) -> None:
    """Integer GroupNorm (InstanceNorm: a group per channel): rows of ``C / G`` channels x the spatial axes."""
    xt = op.operands[0].type
    g = op.attr("num_groups")
    n, c = xt.shape[:2]
    if g != c and g != 1:
        _grouped(lw, op, g)
        return
    bshape = (1, c) + (1,) * (xt.rank - 2)
    gamma = np.asarray(lw.const(op, op.operands[1]), np.float64).reshape(bshape)
    beta = np.asarray(lw.const(op, op.operands[2]), np.float64).reshape(bshape)
    axes = list(range(2, xt.rank)) if g == c else list(range(1, xt.rank))
    _norm(lw, op, axes, gamma, beta)


def _grouped(lw: Lowering, op: Operation, g: int) -> None:
    """``G`` groups of ``C / G`` channels: the rows are ``[N G, C/G x spatial]`` (one gather from the input)."""
    x, s_x = lw.q(op.operands[0], op)
    shape = list(x.type.shape)
    n, c = shape[:2]
    spatial = int(np.prod(shape[2:], dtype=np.int64))
    k = c // g * spatial
    base = (op.loc.node if op.loc and op.loc.node else op.results[0].name) or "norm"
    src = np.arange(x.type.size).reshape(n * g, k)  # row-major NCHW: each group's channels are contiguous
    xr = _rows(lw, op, x, s_x, src, f"{base}.rows")
    z, s_z = normalize_rows(lw, op, xr, s_x, float(op.attr("epsilon")), base)
    z = _rows(lw, op, z, s_z, np.arange(x.type.size).reshape(shape), f"{base}.back")
    bshape = (1, c) + (1,) * (len(shape) - 2)
    gamma = np.asarray(lw.const(op, op.operands[1]), np.float64).reshape(bshape)
    beta = np.asarray(lw.const(op, op.operands[2]), np.float64).reshape(bshape)
    _affine(lw, op, z, s_z, gamma, beta, k)
