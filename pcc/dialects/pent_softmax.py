"""``pent.softmax``: the softmax (or, with ``log``, the log-softmax) over the last axis of a tensor's memory
order, in integers (TLUT, POOL, EADD, EMUL), row by row.

With ``K`` the axis' length, ``K' = k1 * k2 >= K`` (both at most POOL's window limit), ``msr`` the ISA's
``mul_shift_round`` and ``e`` the exp table's scale (``1 / word_max(13)``):

1. ``M = max_k x`` (POOL mode 0 over a k1 x k2 window, the rows as channels, the K' - K pads at ``-word_max``);
2. ``D = sat16(x - M)`` (EMUL by -1, a round trip through memory to broadcast, EADD);
3. ``E = table[v - lo]``, ``v = D`` or ``sat16(msr(D, mult, shift))``: ``exp(D s_x)`` in units of ``e``, so the
   row's maximum gives ``word_max(13)`` exactly; the pads are set to 0;
4. ``S = div_round(sum_k E, K')`` (POOL mode 1);
5. ``n = -2**frac / S``: from ``rtable`` at ``sat16(msr(S, rmult, rshift))``, then ``iters`` Newton steps
   ``t = emul(S, n, 1, frac - 30)``, ``u = eadd(t, 2**31)``, ``n = emul(n, u, 1, 30)`` (each an EMUL or EADD on
   the row vector); ``r = -n``;
6. ``y = sat_P(msr(E * r, omult, oshift))`` (EMUL; ``omult / 2**oshift ~= 1 / (2**frac K' s_y)``).

With ``log`` (no Newton steps; ``n0`` the table's first guess at index ``i``):
``ln(S) = ln(2**frac / -n0) + ln(S * -n0 / 2**frac)``, the first term from ``ltable[i]`` (``ln K' e`` folded
in), the second, a number near 1, from ``qtable`` at ``sat16(msr(emul(S, n0, 1, frac - 30), qmult, qshift))``
(index from ``qlo``); ``L = eadd(la, lb)`` in units of ``s_y``; ``y = sat_P(msr(D, omult, oshift) - L)``
(``omult / 2**oshift ~= s_x / s_y``).
"""

from __future__ import annotations

from pcc.dialects.pent import _SCALE, _check_scale, _pent_word, _pents_of
from pcc.ir import Operation, TensorType, VerifyError, attr, register_op, required

E_PENTS = 13  # the exp values' pents (their products with the reciprocal stay below ACC_MAX)
NEWTON_BITS = 30  # the Newton steps' fixed point: 2**30 is one


def memory_last_axis(rank: int) -> int:
    """The axis that is contiguous in memory (channels for a 4-D image stored channels last)."""
    return 1 if rank == 4 else rank - 1


@register_op
class Softmax(Operation):
    """Softmax over ``axis`` (the tensor's memory-last axis), see the module docstring."""

    name = "pent.softmax"
    operands_spec = ("x: pword", "etable: pword", "rtable: pword", "ltable?: pword", "qtable?: pword")
    attrs = {
        "axis": required("int"),
        "k1": required("int"),
        "k2": required("int"),
        "lo": required("int"),
        "mult": attr("int", doc="exp index rescale multiplier, with shift"),
        "shift": attr("int"),
        "rmult": required("int"),
        "rshift": required("int"),
        "frac": required("int"),
        "iters": required("int"),
        "omult": required("int"),
        "oshift": required("int"),
        "log": attr("bool", False, doc="the log-softmax (needs ltable, qtable, qmult, qshift, qlo)"),
        "qmult": attr("int"),
        "qshift": attr("int"),
        "qlo": attr("int"),
        **_SCALE,
        "addr": attr("int", doc="word offset of the result in the activation arena (plan-memory)"),
        "tile": attr("sizes", doc="rows per tile (tile pass)"),
    }
    example = (
        "%y = pent.softmax(%x, @e, @r) {axis = 1, k1 = 1, k2 = 4, lo = -3, rmult = 1, rshift = 0, frac = 40, "
        "iters = 3, omult = 1, oshift = 40} : tensor<2x4xp8>"
    )
    example_types = {"%x": "tensor<2x4xp8>", "@e": "tensor<4xp13>", "@r": "tensor<5xp16>"}

    def verify_(self) -> None:
        from pcc.isa import MULT_MAX, SHIFT_MAX

        _check_scale(self)
        x = self.operands[0].type
        p = _pent_word(x, "input")
        _pents_of(self)
        if p > 15:
            raise VerifyError("the input must have at most 15 pents (x - max must fit a word)")
        if self.attr("axis") != memory_last_axis(x.rank):
            raise VerifyError(f"axis must be the memory-last axis {memory_last_axis(x.rank)}")
        k = x.shape[self.attr("axis")]
        if self.attr("k1") < 1 or self.attr("k2") < 1 or self.attr("k1") * self.attr("k2") < k:
            raise VerifyError(f"k1 * k2 must cover the axis' {k} elements")
        for v, what in ((self.operands[1], "exp table"), (self.operands[2], "reciprocal table")):
            if not v.is_weight or v.type.rank != 1:
                raise VerifyError(f"the {what} must be a 1-D weight, got {v.type}")
        if self.operands[1].type.dtype != f"p{E_PENTS}":
            raise VerifyError(f"the exp table must be p{E_PENTS}")
        pairs = [("rmult", "rshift"), ("omult", "oshift")]
        if self.attr("mult") is not None or self.attr("shift") is not None:
            pairs.append(("mult", "shift"))
        if self.attr("log"):
            if len(self.operands) != 5 or self.attr("qlo") is None:
                raise VerifyError("the log-softmax needs ltable, qtable and qlo")
            pairs.append(("qmult", "qshift"))
        elif len(self.operands) != 3:
            raise VerifyError("ltable and qtable belong to the log-softmax")
        for m, s in pairs:
            if self.attr(m) is None or self.attr(s) is None:
                raise VerifyError(f"{m} and {s} go together")
            if not (0 <= self.attr(m) <= MULT_MAX and 0 <= self.attr(s) <= SHIFT_MAX):
                raise VerifyError(f"{m} must lie in 0..{MULT_MAX} and {s} in 0..{SHIFT_MAX}")
        if not NEWTON_BITS <= self.attr("frac") <= SHIFT_MAX or not 0 <= self.attr("iters") <= 8:
            raise VerifyError(f"frac must lie in {NEWTON_BITS}..{SHIFT_MAX} and iters in 0..8")

    def infer_types(self) -> list[TensorType]:
        return [self.operands[0].type.with_dtype(self.results[0].type.dtype)]


@register_op
class Reduce(Operation):
    """Mean, sum or maximum over the memory-last axis, row by row: POOL over a ``k1 x k2`` window (the rows as
    channels), mode 1 with the ``k1 k2 - K`` pads holding 0: ``a = div_round(sum, k1 k2)``, or with ``kind =
    max`` mode 0 with the pads at ``-word_max``: ``a = max``; then ``y = sat_P(msr(a, mult, shift))``
    (``mult / 2**shift ~= k1 k2 / K`` for a mean, ``k1 k2`` for a sum, 1 for the maximum, times ``s_x / s_y``).
    The result holds one element per row ``[rows]``."""

    name = "pent.reduce"
    operands_spec = ("x: pword",)
    attrs = {
        "axis": required("int"),
        "k1": required("int"),
        "k2": required("int"),
        "mult": required("int"),
        "shift": required("int"),
        "kind": attr("str", "mean", doc="mean (also the sum, by mult) or max"),
        **_SCALE,
        "addr": attr("int", doc="word offset of the result in the activation arena (plan-memory)"),
        "tile": attr("sizes", doc="rows per tile (tile pass)"),
    }
    example = "%y = pent.reduce(%x) {axis = 1, k1 = 1, k2 = 4, mult = 1, shift = 0} : tensor<2xp8>"
    example_types = {"%x": "tensor<2x4xp8>"}

    def verify_(self) -> None:
        from pcc.isa import MULT_MAX, SHIFT_MAX

        _check_scale(self)
        x = self.operands[0].type
        _pent_word(x, "input")
        _pents_of(self)
        if self.attr("axis") != memory_last_axis(x.rank):
            raise VerifyError(f"axis must be the memory-last axis {memory_last_axis(x.rank)}")
        k = x.shape[self.attr("axis")]
        if self.attr("k1") < 1 or self.attr("k2") < 1 or self.attr("k1") * self.attr("k2") < k:
            raise VerifyError(f"k1 * k2 must cover the axis' {k} elements")
        if not (0 <= self.attr("mult") <= MULT_MAX and 0 <= self.attr("shift") <= SHIFT_MAX):
            raise VerifyError(f"mult must lie in 0..{MULT_MAX} and shift in 0..{SHIFT_MAX}")
        if self.attr("kind") not in ("mean", "max"):
            raise VerifyError(f"kind must be mean or max, got {self.attr('kind')!r}")

    def infer_types(self) -> list[TensorType]:
        x = self.operands[0].type
        return [TensorType((x.size // x.shape[self.attr("axis")],), self.results[0].type.dtype)]


__all__ = ["E_PENTS", "NEWTON_BITS", "Reduce", "Softmax", "memory_last_axis"]
