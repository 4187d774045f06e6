"""Lowering of local response normalisation (``nn.lrn``, registered in :data:`pcc.passes.quantize_lower.LOWERING`).

``y = x * f(S)``, ``S[c] = sum of x[c']^2`` over the ``size`` channels around ``c`` and ``f(S) = (bias + alpha /
size * S) ** -beta``, as four pent ops:

1. ``sq = x * x`` (``pent.mul``, EMUL) at 16 pents and scale ``s_x**2``: exact, since ``word_max(P)**2`` fits
   in 16 pents for inputs of up to 8 pents (``mult / 2**shift = 1``);
2. ``S`` = a 1x1 ``pent.conv2d`` of ``sq`` whose weight is the band of ones ``w[o, c] = 1`` for ``c`` in the
   window of ``o`` (CONV + REQUANTC, pents {0, 1}: the sum itself is exact), requantized to 16 pents at the
   scale that holds ``size * (word_max(P) s_x)**2``;
3. ``f = pent.lut`` of ``f`` on ``S`` (TLUT after an EADD rescale of the index to ``table-entries`` steps over
   the calibrated range of ``S``), at the activation width and the scale of ``f(0) = bias**-beta``;
4. ``y = x * f`` (``pent.mul``, EMUL) at the result's calibrated scale.

The error is that of the table's index step on ``S`` and of rounding ``f`` and ``y``; ``docs/compiler.md``
lists it at each activation width.
"""

from __future__ import annotations

import numpy as np

from pcc.dialects import nn, pent, pent_binary
from pcc.ir import Operation
from pcc.passes.lower_elementwise import _claim
from pcc.passes.quantize_lower import Lowering, requant_params, table_value
from pcc.pentary import word_max

SUM_PENTS = 16  # the squares and their window sums: one full word


def band(c: int, size: int) -> np.ndarray:
    """The ``[C, C, 1, 1]`` pents of the window sum: ``w[o, k] = 1`` for ``o - (size-1)//2 <= k <= o + rest``."""
    lo, hi = (size - 1) // 2, size - 1 - (size - 1) // 2
    o, k = np.meshgrid(np.arange(c), np.arange(c), indexing="ij")
    return ((k >= o - lo) & (k <= o + hi)).astype(np.int8).reshape(c, c, 1, 1)


@_claim(nn.LRN)
def lower_lrn(lw: Lowering, op: Operation) -> None:
    """EMUL, CONV (band of ones), TLUT, EMUL (see the module docstring)."""
    xt = op.operands[0].type
    if xt.rank != 4:
        raise lw.error(op, f"only the LRN of an image [N, C, H, W] has a pentary lowering, got {xt}")
    x, s_x = lw.q(op.operands[0], op)
    p_x = x.type.pents or 1
    if 2 * p_x > SUM_PENTS:
        raise lw.error(op, f"the squares of a {p_x}-pent input do not fit {SUM_PENTS} pents")
    size, alpha, beta, bias = (op.attr(k) for k in ("size", "alpha", "beta", "bias"))
    if bias <= 0:
        raise lw.error(op, f"bias {bias} must be positive (the base of the power)")
    c = xt.shape[1]
    base = (op.loc.node if op.loc and op.loc.node else op.results[0].name) or "lrn"
    t16 = x.type.with_dtype(f"p{SUM_PENTS}")
    s_sq = s_x * s_x
    (m1,), (h1,) = requant_params(1.0)
    sq = lw.emit(pent_binary.Mul, [x, x], t16, {"mult": int(m1), "shift": int(h1)}, op.loc, f"{base}.sq", s_sq)

    peak = min(size, c) * float(word_max(p_x)) ** 2  # the largest window sum, in units of s_sq
    s_sum = s_sq * max(1.0, peak / word_max(SUM_PENTS))
    w = lw.m.add_weight(lw.m.fresh_weight_name(base + ".band"), band(c, size), "p5")
    consts = lw.add_consts(lw.m.fresh_weight_name(base + ".sum"), op, np.zeros(c), np.full(c, s_sq), s_sum)
    attrs = {"strides": [1, 1], "pads": [0, 0, 0, 0], "group": 1}
    ssum = lw.emit(pent.Conv2d, [sq, w, *consts], t16, attrs, op.loc, f"{base}.sum", s_sum)

    k = alpha / size

    def fn(s: np.ndarray) -> np.ndarray:
        return (bias + k * np.maximum(s, 0.0)) ** -beta

    pents, s_y = lw.out_scale(op)
    f_max = max(float(fn(np.zeros(1))[0]), float(fn(np.array([peak * s_sq]))[0]))
    s_f = f_max / word_max(pents)
    f = table_value(lw, op, (ssum, s_sum), fn, (0.0, peak * s_sq), (pents, s_f), f"{base}.factor")

    r = op.results[0]
    (m2,), (h2,) = requant_params(s_x * s_f / s_y)
    attrs2 = {"mult": int(m2), "shift": int(h2)}
    y = lw.emit(pent_binary.Mul, [x, f], r.type.with_dtype(f"p{pents}"), attrs2, op.loc, r.name, s_y)
    lw.map[id(r)] = (y, s_y)
