"""``nn.conv_transpose2d`` as a convolution (registered in :data:`pcc.passes.quantize_lower.LOWERING`).

A transposed convolution with stride ``s``, pads ``(pt, pl, pb, pr)`` and output padding ``op`` is the plain
convolution (stride 1, no pads) of the input spread out by ``s`` (``s - 1`` zeros between elements), padded by
``k - 1 - pt`` before and ``k - 1 - pb + op`` after (cropped where that is negative), with the kernel flipped in
both axes and its in/out channels exchanged per group: ``w'[g Mg + m, c, u, v] = w[g Cg + c, m, kh-1-u,
kw-1-v]``.  The spreading and padding is one ``pent.gather`` (fill 0, the quantized zero), the convolution a
``pent.conv2d`` with the transformed weight quantized as any conv weight.  Exact rearrangements, so the result
is what a transposed convolution of the quantized input with the pentary weight computes.
"""

from __future__ import annotations

import numpy as np

from pcc.dialects import nn, pent, pent_move
from pcc.ir import Operation
from pcc.passes.lower_elementwise import _claim
from pcc.passes.quantize_lower import Lowering


def spread_map(n: int, c: int, h: int, w: int, k: tuple[int, int], s: tuple[int, int], pads: list[int],
               opad: list[int]) -> tuple[np.ndarray, tuple[int, int, int, int]]:  # fmt: skip
    """The gather map of the spread, padded input (-1: a zero) and its shape."""
    (kh, kw), (sh, sw) = k, s
    pt, pl, pb, pr = pads
    top, left = kh - 1 - pt, kw - 1 - pl
    hu = (h - 1) * sh + 1 + top + kh - 1 - pb + opad[0]
    wu = (w - 1) * sw + 1 + left + kw - 1 - pr + opad[1]
    nn_, cc, i, j = np.meshgrid(np.arange(n), np.arange(c), np.arange(hu), np.arange(wu), indexing="ij")
    yy, xx = i - top, j - left
    ok = (yy >= 0) & (yy % sh == 0) & (yy // sh < h) & (xx >= 0) & (xx % sw == 0) & (xx // sw < w)
    src = ((nn_ * c + cc) * h + np.clip(yy // sh, 0, h - 1)) * w + np.clip(xx // sw, 0, w - 1)
    return np.where(ok, src, -1).ravel(), (n, c, hu, wu)


def conv_weight(w: np.ndarray, group: int) -> np.ndarray:
    """The convolution weight ``[M, C/group, kh, kw]`` of a transposed convolution's ``[C, M/group, kh, kw]``."""
    c, mg, kh, kw = w.shape
    cg = c // group
    wg = w.reshape(group, cg, mg, kh, kw).transpose(0, 2, 1, 3, 4)[..., ::-1, ::-1]
    return np.ascontiguousarray(wg.reshape(group * mg, cg, kh, kw))


@_claim(nn.ConvTranspose2d)
def lower_conv_transpose(lw: Lowering, op: Operation) -> None:
    """pent.gather (spread and pad) + pent.conv2d (flipped, exchanged weight); dilation 1."""
    if any(d != 1 for d in op.attr("dilations")):
        raise lw.error(op, f"a dilated transposed convolution ({list(op.attr('dilations'))}) has no lowering yet")
    x, s_x = lw.q(op.operands[0], op)
    wf = np.asarray(lw.const(op, op.operands[1]), dtype=np.float32)
    g = op.attr("group")
    n, c, h, w = x.type.shape
    _, _, kh, kw = wf.shape
    idx, shape = spread_map(n, c, h, w, (kh, kw), tuple(op.attr("strides")), list(op.attr("pads")),
                            list(op.attr("output_padding")))  # fmt: skip
    base = (op.loc.node if op.loc and op.loc.node else op.results[0].name) or "convt"
    mv = lw.m.add_weight(lw.m.fresh_weight_name(base + ".spread"), idx, "p16")
    xs = lw.emit(pent_move.Gather, [mv, x], x.type.with_shape(shape), {"shape": list(shape), "fill": 0}, op.loc,
                 f"{base}.spread", s_x)  # fmt: skip
    wv = lw.m.add_weight(lw.m.fresh_weight_name(base + ".w"), conv_weight(wf, g))
    q, s_w = lw.weight(op, wv, 0)
    o = q.shape[0]
    bias = np.zeros(o) if len(op.operands) < 3 else np.asarray(lw.const(op, op.operands[2]), np.float64)
    lw.requant_op(op, pent.Conv2d, xs, s_x, q, s_w, bias, {"strides": [1, 1], "pads": [0, 0, 0, 0], "group": g})
