"""Dilated convolution without a dilated CONV: the phases of the input become a batch (a space-to-batch
``pent.gather``), an undilated ``pent.conv2d`` runs on it, and a second gather interleaves the phases' outputs.

For dilation ``(dh, dw)`` (and stride 1: a larger stride subsamples that result in the second gather, which
computes the outputs in between for nothing), the zero-padded input ``xp`` (padded further to multiples of the
dilation) splits into ``dh * dw`` sub-images ``sub[a, b][c, i, j] = xp[c, a + dh i, b + dw j]``; then
``y[o, a + dh i, b + dw j] = sum_{c,u,v} sub[a, b][c, i + u, j + v] w[o, c, u, v]``, the undilated convolution of
each sub-image.  Exact: the same products and sums as the dilated convolution, so the result equals what a
dilated CONV would compute.
"""

from __future__ import annotations

import numpy as np

from pcc.dialects import pent, pent_move
from pcc.ir import Operation
from pcc.passes.quantize_lower import Lowering


def phase_maps(n: int, c: int, h: int, w: int, o: int, k: tuple[int, int], d: tuple[int, int], pads: list[int]):  # noqa: ANN201
    """``(into, sub_shape, back, out_shape)``: the gather map of the input into the phase batch, its shape, and
    the map of the phase batch's conv outputs ``[n dh dw, o, hs - kh + 1, ws - kw + 1]`` back to the result."""
    (kh, kw), (dh, dw) = k, d
    pt, pl, pb, pr = pads
    hp, wp = h + pt + pb, w + pl + pr
    oh, ow = hp - dh * (kh - 1), wp - dw * (kw - 1)
    hs, ws = -(-hp // dh), -(-wp // dw)
    nn_, a, b, cc, i, j = np.meshgrid(
        np.arange(n), np.arange(dh), np.arange(dw), np.arange(c), np.arange(hs), np.arange(ws), indexing="ij"
    )
    yy, xx = a + dh * i - pt, b + dw * j - pl
    inside = (yy >= 0) & (yy < h) & (xx >= 0) & (xx < w)
    into = np.where(inside, ((nn_ * c + cc) * h + np.clip(yy, 0, h - 1)) * w + np.clip(xx, 0, w - 1), -1)
    sub = (n * dh * dw, c, hs, ws)
    ch, cw = hs - kh + 1, ws - kw + 1
    nn_, oo, oy, ox = np.meshgrid(np.arange(n), np.arange(o), np.arange(oh), np.arange(ow), indexing="ij")
    batch = (nn_ * dh + oy % dh) * dw + ox % dw
    back = ((batch * o + oo) * ch + oy // dh) * cw + ox // dw
    return into.ravel(), sub, back.ravel(), (n, o, oh, ow)


def lower_dilated_conv(lw: Lowering, op: Operation, x_w_bias: tuple) -> None:
    """``op`` (an nn.conv2d with dilation > 1) as gather, pent.conv2d, gather; ``x_w_bias``: the conv's pent
    input, its scale, pentary weight, weight scales and float bias (as :func:`lower_conv` made them)."""
    x, s_x, q, s_w, bias = x_w_bias
    n, c, h, w = x.type.shape
    o, _, kh, kw = q.shape
    dil = tuple(op.attr("dilations"))
    into, sub, back, out_shape = phase_maps(n, c, h, w, o, (kh, kw), dil, list(op.attr("pads")))
    sh, sw = op.attr("strides")
    if (sh, sw) != (1, 1):  # the stride-1 result subsampled by the interleaving gather
        back = back.reshape(out_shape)[:, :, ::sh, ::sw]
        out_shape = back.shape
        back = back.ravel()
    r = op.results[0]
    base = (op.loc.node if op.loc and op.loc.node else r.name) or "conv"
    mv = lw.m.add_weight(lw.m.fresh_weight_name(base + ".phases"), into, "p16")
    xs = lw.emit(pent_move.Gather, [mv, x], x.type.with_shape(sub), {"shape": list(sub), "fill": 0}, op.loc,
                 f"{base}.phases", s_x)  # fmt: skip
    pents, s_y = lw.out_scale(op)
    wv = lw.m.add_weight(lw.m.fresh_weight_name(base + ".p5"), q.astype(np.int8), "p5")
    consts = lw.add_consts(base, op, bias, s_x * s_w, s_y)
    conv_shape = (sub[0], o, sub[2] - kh + 1, sub[3] - kw + 1)
    attrs = {"strides": [1, 1], "pads": [0, 0, 0, 0], "group": op.attr("group")}
    t = r.type.with_shape(conv_shape).with_dtype(f"p{pents}")
    y = lw.emit(pent.Conv2d, [xs, wv, *consts], t, attrs, op.loc, f"{base}.batched", s_y)
    bv = lw.m.add_weight(lw.m.fresh_weight_name(base + ".interleave"), back, "p16")
    y = lw.emit(pent_move.Gather, [bv, y], r.type.with_dtype(f"p{pents}"), {"shape": list(out_shape), "fill": 0},
                op.loc, r.name, s_y)  # fmt: skip
    lw.map[id(r)] = (y, s_y)
