"""Lowering of ``nn.resize`` (registered in :data:`pcc.passes.quantize_lower.LOWERING`).

``nearest`` only moves elements: a ``pent.gather`` (:func:`pcc.passes.lower_move.lower_move`).  ``linear`` and
``cubic`` (any coordinate transformation mode, ``exclude_outside``, ``antialias``; the bilinear upsampling of
``torch.nn.functional.interpolate`` with ``align_corners`` false or true) are separable: each resized axis is a
matrix ``M [n_out, n_in]`` (the reference kernel's own, :func:`pcc.interpreter_resize._weights`) with at most
``T`` non-zeros per row (2 for linear, 4 for cubic).  Per axis and tap ``t``:

- ``g_t = gather(x)`` along the axis at the row's ``t``-th input index (``pent.gather``);
- ``p_t = g_t * w_t`` (``pent.mul``, EMUL by the constant ``w_t [n_out]`` broadcast along the axis, a 10-pent
  weight, so that a 16-pent ``g_t`` times it stays within EMUL's 27 pents), at 16 pents;

and ``y = p_0 + p_1 + ...`` (``pent.eadd``).  Axes before the last keep 16 pents at the scale that holds
``max_o sum_t |w_t[o]|`` times the input's range; the last sum is requantized to the result's calibrated scale.
The error is the input's and the output's rounding (the 16-pent terms add ~1e-10 of the range); the weights are
rounded to 10 pents (2·10⁻⁷ of the largest).  ``tf_crop_and_resize`` with points outside the input (the
extrapolation value) is refused.
"""

from __future__ import annotations

import numpy as np

from pcc.dialects import nn, pent_binary, pent_move
from pcc.interpreter_resize import _coords, _weights
from pcc.ir import Operation, Value
from pcc.passes.lower_elementwise import _claim
from pcc.passes.lower_move import lower_move
from pcc.passes.quantize_lower import Lowering, requant_params, round_away
from pcc.pentary import word_max

MID_PENTS = 16  # the taps' products and the sums between axes: one full word
W_PENTS = 10  # the tap weights: a 16-pent value times a 10-pent weight stays within EMUL's 27 pents


def axis_taps(op: Operation, ax: int, n_in: int, n_out: int) -> tuple[np.ndarray, np.ndarray] | None:
    """``(idx [T, n_out], w [T, n_out])``: the input index and weight of each output's taps on axis ``ax`` (None
    when the axis is not resized); padding taps have weight 0."""
    scales = op.attr("scales")
    roi = op.attr("roi")
    scale = float(scales[ax]) if scales is not None else n_out / max(n_in, 1)
    rank = op.operands[0].type.rank
    r = (roi[ax], roi[ax + rank]) if roi is not None else (0.0, 1.0)
    crop = op.attr("coordinate_transformation_mode") == "tf_crop_and_resize"
    if n_in == n_out and scale == 1.0 and not (crop and r != (0.0, 1.0)):
        return None
    c = _coords(op, n_in, n_out, scale, r)
    if crop and np.any((c < 0) | (c > n_in - 1)):
        raise ValueError("tf_crop_and_resize samples outside the input (the extrapolation value)")
    m = _weights(op, c, n_in, scale)
    nz = m != 0
    t = max(int(nz.sum(axis=1).max(initial=0)), 1)
    idx = np.zeros((t, n_out), dtype=np.int64)
    w = np.zeros((t, n_out), dtype=np.float64)
    for o in range(n_out):
        cols = np.flatnonzero(nz[o])
        idx[: cols.size, o] = cols
        idx[cols.size :, o] = cols[0] if cols.size else 0
        w[: cols.size, o] = m[o, cols]
    return idx, w


def _gather_axis(lw: Lowering, op: Operation, x: tuple[Value, float], ax: int, idx: np.ndarray, name: str) -> Value:
    shape = list(x[0].type.shape)
    out = shape.copy()
    out[ax] = idx.size
    elems = np.take(np.arange(int(np.prod(shape)), dtype=np.int64).reshape(shape), idx, axis=ax).ravel()
    mv = lw.m.add_weight(lw.m.fresh_weight_name(name + ".map"), elems, "p16")
    t = x[0].type.with_shape(tuple(out))
    return lw.emit(pent_move.Gather, [mv, x[0]], t, {"shape": out, "fill": 0}, op.loc, name, x[1])


def _resize_axis(
    lw: Lowering, op: Operation, x: tuple[Value, float], ax: int, taps: tuple[np.ndarray, np.ndarray],
    out: tuple[int, float] | None, name: str,
) -> tuple[Value, float]:  # fmt: skip
    """One axis: gathers, EMUL by the tap weights, EADD of the products at ``out = (pents, s)`` (None: 16 pents at
    the scale that holds the sum)."""
    idx, w = taps
    rank = x[0].type.rank
    bshape = [1] * rank
    bshape[ax] = idx.shape[1]
    s_mid = x[1] * float(np.abs(w).sum(axis=0).max(initial=1.0)) * word_max(x[0].type.pents or 1) / word_max(16)
    terms: list[tuple[Value, float]] = []
    for t in range(idx.shape[0]):
        if not np.any(w[t]):
            continue
        g = _gather_axis(lw, op, x, ax, idx[t], f"{name}.tap{t}")
        s_c = float(np.abs(w[t]).max()) / word_max(W_PENTS)
        q = np.clip(round_away(w[t] / s_c), -word_max(W_PENTS), word_max(W_PENTS)).astype(np.int64).reshape(bshape)
        c = lw.m.add_weight(lw.m.fresh_weight_name(f"{name}.w{t}"), q, f"p{W_PENTS}")
        (m,), (sh,) = requant_params(x[1] * s_c / s_mid)
        t16 = g.type.with_dtype(f"p{MID_PENTS}")
        p = lw.emit(pent_binary.Mul, [g, c], t16, {"mult": int(m), "shift": int(sh)}, op.loc, f"{name}.w{t}", s_mid)
        terms.append((p, s_mid))
    pents, s_y = out if out is not None else (MID_PENTS, s_mid)
    if len(terms) == 1:  # one tap per output: rescale it (EADD of the value and itself, the second weight 0)
        terms.append(terms[0])
        zero_second = True
    else:
        zero_second = False
    acc = terms[0]
    for k, b in enumerate(terms[1:], start=1):
        last = k == len(terms) - 1
        p_k, s_k = (pents, s_y) if last else (MID_PENTS, s_mid)
        (ma, mb), (ha, hb) = requant_params(np.array([acc[1] / s_k, b[1] / s_k]))
        if zero_second:
            mb, hb = 0, 0
        attrs = {"mult": [int(ma), int(mb)], "shift": [int(ha), int(hb)], "neg": False}
        t = acc[0].type.with_dtype(f"p{p_k}")
        acc = (lw.emit(pent_binary.Eadd, [acc[0], b[0]], t, attrs, op.loc, name if last else f"{name}.sum{k}", s_k),
               s_k)  # fmt: skip
    return acc


@_claim(nn.Resize)
def lower_resize(lw: Lowering, op: Operation) -> None:
    """nearest: a gather; linear / cubic: per resized axis gathers, EMUL and EADD (see the module docstring)."""
    if op.attr("mode") == "nearest":
        return lower_move(lw, op)
    x = lw.q(op.operands[0], op)
    xt, r = op.operands[0].type, op.results[0]
    try:
        pairs = enumerate(zip(xt.shape, r.type.shape, strict=True))
        axes = [(ax, axis_taps(op, ax, n_in, n_out)) for ax, (n_in, n_out) in pairs]
    except ValueError as exc:
        raise lw.error(op, f"{exc}: no pentary lowering") from None
    axes = [(ax, t) for ax, t in axes if t is not None]
    pents, s_y = lw.out_scale(op)
    base = (op.loc.node if op.loc and op.loc.node else r.name) or "resize"
    if not axes:
        axes = [(0, (np.arange(xt.shape[0])[None, :], np.ones((1, xt.shape[0]))))]
    for k, (ax, taps) in enumerate(axes):
        last = k == len(axes) - 1
        out = (pents, s_y) if last else None
        x = _resize_axis(lw, op, x, ax, taps, out, r.name if last else f"{base}.ax{ax}")
    lw.map[id(r)] = x
