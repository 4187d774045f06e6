"""Lowering of ``nn.softmax`` and ``nn.log_softmax`` to ``pent.softmax`` (registered in
:data:`pcc.passes.quantize_lower.LOWERING`): the exp table, the reciprocal's first guess, the log tables and the
fixed points (see :mod:`pcc.dialects.pent_softmax`).  A softmax over another axis than the memory-last one is a
``pent.gather`` to rows, the softmax, and a gather back.  Reductions (``nn.reduce_mean`` over other than the
spatial axes, ``nn.reduce_sum``) are the same rows and ``pent.reduce``."""

from __future__ import annotations

import math

import numpy as np

from pcc.dialects import nn, pent_move, pent_softmax
from pcc.ir import Operation, Value
from pcc.isa import ACC_MAX, BY_MNEMONIC
from pcc.passes.lower_elementwise import _claim
from pcc.passes.quantize_lower import Lowering, requant_params, round_away
from pcc.pentary import word_max

_WIN = next(f.hi for f in BY_MNEMONIC["POOL"].fields if f.name == "kw")  # POOL's largest window side


def window(k: int) -> tuple[int, int]:
    """``(k1, k2)``, both at most POOL's window limit, with ``k1 * k2 >= k`` as small as possible."""
    best = None
    for k1 in range(max(1, -(-k // _WIN)), min(k, _WIN) + 1):
        k2 = -(-k // k1)
        if k2 <= _WIN and (best is None or k1 * k2 < best[0] * best[1]):
            best = (k1, k2)
        if best is not None and best[0] * best[1] == k:
            break
    if best is None:
        raise ValueError(f"a softmax over {k} elements exceeds POOL's {_WIN} x {_WIN} window")
    return best


def _gather(lw: Lowering, op: Operation, x: Value, s: float, src: np.ndarray, shape: list[int], name: str) -> Value:
    mv = lw.m.add_weight(lw.m.fresh_weight_name(name + ".map"), src.astype(np.int64).ravel(), "p16")
    t = x.type.with_shape(shape)
    return lw.emit(pent_move.Gather, [mv, x], t, {"shape": shape, "fill": 0}, op.loc, name, s)


def reduction_rows(lw: Lowering, op: Operation, x: Value, s: float, base: str) -> tuple[Value, list, list, int, int]:
    """``x`` as rows ``[R, K]`` with the axes of ``op``'s ``axes`` attribute (all when None) last: a gather unless
    ``x`` is already ``[R, K]`` reduced over its last axis. Returns (rows, reduced axes, kept axes, R, K)."""
    shape = list(x.type.shape)
    axes = op.attr("axes")
    red = sorted({a % len(shape) for a in axes}) if axes is not None else list(range(len(shape)))
    rest = [i for i in range(len(shape)) if i not in red]
    k = int(np.prod([shape[i] for i in red], dtype=np.int64))
    rows = x.type.size // max(k, 1)
    if not (len(shape) == 2 and red == [1]):
        src = np.arange(x.type.size).reshape(shape).transpose(rest + red).reshape(rows, k)
        x = _gather(lw, op, x, s, src, [rows, k], f"{base}.rows")
    return x, red, rest, rows, k


def log_tables(
    lw: Lowering, base: str, attrs: dict, rtable: np.ndarray, sum_unit: float, s_y: float, n_tab: int
) -> list[Value]:
    """The log-softmax's tables: ``ltable[i] = ln(2**frac / -n0_i) + ln(sum_unit)`` (the row sum's real value
    per unit of S) and ``qtable``, ``ln`` of the number near 1 ``S * -n0 / 2**frac``, indexed by
    ``sat16(msr(q, qmult, qshift))`` around ``-V`` (``q ~= -2**30 (1 + delta)``, delta within (-1/2, 1))."""
    g = pent_softmax.NEWTON_BITS
    frac = attrs["frac"]
    n0 = np.maximum(-rtable.astype(np.float64), 1.0)
    lim = word_max(16)
    ltable = np.clip(round_away((frac * math.log(2) - np.log(n0) + math.log(sum_unit)) / s_y), -lim, lim)
    (qm,), (qs,) = requant_params((n_tab - 2) / 1.5 / 2.0**g)
    v_one = 2.0**g * int(qm) / 2.0 ** int(qs)  # the index of 1 + delta = 1, negated
    qlo = math.floor(-2 * v_one)
    v = np.arange(qlo, math.ceil(-v_one / 2) + 1, dtype=np.float64)
    qtable = np.clip(round_away(np.log(np.maximum(-v, 0.5) / v_one) / s_y), -lim, lim)
    attrs.update(log=True, qmult=int(qm), qshift=int(qs), qlo=qlo)
    lv = lw.m.add_weight(lw.m.fresh_weight_name(base + ".lnsum"), ltable.astype(np.int64), "p16")
    qv = lw.m.add_weight(lw.m.fresh_weight_name(base + ".lnq"), qtable.astype(np.int64), "p16")
    return [lv, qv]


@_claim(nn.Softmax, nn.LogSoftmax)
def lower_softmax(lw: Lowering, op: Operation) -> None:
    """pent.softmax over the memory-last axis (gathers around it for another axis)."""
    log = isinstance(op, nn.LogSoftmax)
    x, s_x = lw.q(op.operands[0], op)
    pents, s_y = lw.out_scale(op)
    p_in = x.type.pents or 1
    if p_in > 15:
        raise lw.error(op, "a softmax input of 16 pents has no pentary lowering (x - max must fit a word)")
    shape = list(x.type.shape)
    ax = op.attr("axis") % len(shape)
    r = op.results[0]
    base = (op.loc.node if op.loc and op.loc.node else r.name) or "softmax"
    k = shape[ax]
    moved = ax != pent_softmax.memory_last_axis(len(shape))
    if moved:  # rows [R, K] first
        src = np.moveaxis(np.arange(x.type.size).reshape(shape), ax, -1).reshape(-1, k)
        x = _gather(lw, op, x, s_x, src, list(src.shape), f"{base}.rows")
    try:
        k1, k2 = window(k)
    except ValueError as exc:
        raise lw.error(op, str(exc)) from None
    kp = k1 * k2
    n_tab = max(lw.opts.table_entries, 2)
    # exp table: D = x - max in [-2 m_in, 0]; exp(D s_x) rounds to 0 below ln(1 / (2 word_max(13)))
    wm_e = word_max(pent_softmax.E_PENTS)
    span = min(-math.log(0.5 / wm_e), 2 * word_max(p_in) * s_x)
    attrs: dict = {"axis": pent_softmax.memory_last_axis(len(x.type.shape)), "k1": k1, "k2": k2}
    step = s_x
    if span / s_x + 2 > n_tab:
        (m,), (sh,) = requant_params(s_x * (n_tab - 2) / span)
        attrs.update(mult=int(m), shift=int(sh))
        step = s_x * 2.0 ** int(sh) / int(m)
    lo = -math.ceil(span / step)
    etable = np.clip(round_away(np.exp(np.arange(lo, 1) * step) * wm_e), 0, wm_e).astype(np.int64)
    # reciprocal: S = div_round(sum E, K') in [wm_e / K', wm_e K / K']; n = -2**frac / S
    s_max = wm_e * k / kp
    n_r = max(n_tab, 2 * k + 2)
    (rm,), (rs,) = requant_params((n_r - 1) / s_max)
    rstep = 2.0 ** int(rs) / int(rm)
    frac = min(62, int(math.floor(math.log2(ACC_MAX / 10 / kp))))
    idx = np.arange(n_r, dtype=np.float64)
    rtable = -np.clip(round_away(2.0**frac / np.maximum(idx * rstep, rstep / 2)), 0, word_max(16)).astype(np.int64)
    i_min = max(1.0, math.floor((wm_e / kp) / rstep))
    e0 = 0.5 / i_min
    iters = min(8, max(1, math.ceil(math.log2(44 / -math.log2(e0)))))
    (om,), (osh,) = requant_params(s_x / s_y if log else 1.0 / (2.0**frac * kp * s_y))
    attrs.update(lo=lo, rmult=int(rm), rshift=int(rs), frac=frac, iters=0 if log else iters)
    attrs.update(omult=int(om), oshift=int(osh))
    ev = lw.m.add_weight(lw.m.fresh_weight_name(base + ".exp"), etable, f"p{pent_softmax.E_PENTS}")
    rv = lw.m.add_weight(lw.m.fresh_weight_name(base + ".recip"), rtable, "p16")
    operands = [x, ev, rv]
    if log:
        operands += log_tables(lw, base, attrs, rtable, kp / wm_e, s_y, n_tab)
    name = f"{r.name}.rows" if moved else r.name
    y = lw.emit(pent_softmax.Softmax, operands, x.type.with_dtype(f"p{pents}"), attrs, op.loc, name, s_y)
    if moved:
        back = np.empty(r.type.size, dtype=np.int64)
        back[src.ravel()] = np.arange(r.type.size)
        y = _gather(lw, op, y, s_y, back.reshape(r.type.shape), list(r.type.shape), r.name or base)
    lw.map[id(r)] = (y, s_y)


@_claim(nn.ReduceSum)
def lower_reduce(lw: Lowering, op: Operation) -> None:
    """Mean or sum over any axes: a gather to rows [R, K] (the reduced axes last), pent.reduce, and a gather to
    the result's shape."""
    x, s_x = lw.q(op.operands[0], op)
    sign = {"ReduceMax": 1, "ReduceMin": -1}.get(type(op).__name__, 0)  # the minimum: -max(-x)
    if sign < 0:
        x = _negated(lw, op, x, s_x, "neg_in")
    r = op.results[0]
    base = (op.loc.node if op.loc and op.loc.node else r.name) or "reduce"
    x, red, rest, rows, k = reduction_rows(lw, op, x, s_x, base)
    try:
        k1, k2 = window(k)
    except ValueError as exc:
        raise lw.error(op, str(exc)) from None
    kp = k1 * k2
    if sign:  # the maximum keeps the input's scale
        pents, s_y, m, sh = x.type.pents or 1, s_x, 1, 0
    else:
        pents, s_y = lw.out_scale(op)
        (m,), (sh,) = requant_params(kp * s_x / s_y / (1 if isinstance(op, nn.ReduceSum) else k))
    attrs = {"axis": 1, "k1": k1, "k2": k2, "mult": int(m), "shift": int(sh), "kind": "max" if sign else "mean"}
    t = x.type.with_shape([rows]).with_dtype(f"p{pents}")
    y = lw.emit(pent_softmax.Reduce, [x], t, attrs, op.loc, r.name if r.type.rank == 1 else f"{base}.rows", s_y)
    if r.type.rank != 1:
        y = _gather(lw, op, y, s_y, np.arange(rows), list(r.type.shape), r.name or base)
    if sign < 0:
        y = _negated(lw, op, y, s_y, r.name or base)
    lw.map[id(r)] = (y, s_y)


def _negated(lw: Lowering, op: Operation, v: Value, s: float, name: str) -> Value:
    """``-v`` at the same scale (EMUL by a constant -1: exact)."""
    from pcc.dialects import pent_binary

    c = lw.m.add_weight(lw.m.fresh_weight_name(f"{name}.minus_one"), np.array([-1], np.int64), "p16")
    return lw.emit(pent_binary.Mul, [v, c], v.type, {"mult": 1, "shift": 0}, op.loc, f"{name}.neg", s)


for _name in ("ReduceMax", "ReduceMin"):
    if getattr(nn, _name, None) is not None:
        _claim(getattr(nn, _name))(lower_reduce)
