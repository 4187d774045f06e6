"""Broadcasting binary ops of the ``pent`` dialect: products (EMUL) and sums or differences (EADD) of two
operands whose shapes broadcast (numpy's rules) to the result's.

Each operand is an activation or a constant (a ``pN`` weight); the code generator loads an operand whose shape
differs from the result's with a gather of strided DMA runs (a per-channel ``s[c]`` of a channels-last image is
one TLOAD with stride 0 per tile), so no broadcast copy is ever materialized in main memory.  With ``msr`` the
ISA's ``mul_shift_round`` (round half away from zero), ``P`` the result's pents:

- ``pent.mul``: ``y = sat_P(msr(sat27(a * b), mult, shift))`` (EMUL), ``mult / 2**shift ~= s_a s_b / s_y``;
- ``pent.eadd``: ``y = sat_P(msr(a, ma, sa) + msr(b, mb, sb))`` (EADD) or, with ``neg``,
  ``y = sat_P(msr(a, ma, sa) - sat16(msr(b, mb, sb)))`` (EMUL by a vector of -1, then EADD).

They derive from ``pent.Elementwise`` (no MACs); their tiling rule counts the gathered operands' tiles.
"""

from __future__ import annotations

import numpy as np

from pcc.dialects.pent import _SCALE, Elementwise, _check_mult_shift, _check_scale, _pent_word, _pents_of
from pcc.ir import TensorType, VerifyError, attr, register_op, required


class Broadcast(Elementwise):
    """Base of the broadcasting binary ops: ``a`` and ``b`` (activations or constants) broadcast to the result."""

    operands_spec = ("a: pword", "b: pword")

    def verify_(self) -> None:
        _check_scale(self)
        a, b = self.operands[0].type, self.operands[1].type
        _pent_word(a, "operand a")
        _pent_word(b, "operand b")
        _pents_of(self)
        try:
            shape = np.broadcast_shapes(a.shape, b.shape)
        except ValueError:
            raise VerifyError(f"operand shapes {list(a.shape)} and {list(b.shape)} do not broadcast") from None
        if tuple(shape) != self.results[0].type.shape:
            want = list(self.results[0].type.shape)
            raise VerifyError(f"operands broadcast to {list(shape)}, not the result's {want}")
        if all(v.is_weight for v in self.operands):
            raise VerifyError("at least one operand must be an activation")

    def infer_types(self) -> list[TensorType]:
        a, b = self.operands[0].type, self.operands[1].type
        try:
            shape = np.broadcast_shapes(a.shape, b.shape)
        except ValueError:
            raise VerifyError(f"operand shapes {list(a.shape)} and {list(b.shape)} do not broadcast") from None
        return [TensorType(tuple(int(d) for d in shape), self.results[0].type.dtype)]


_LATE = {
    "addr": attr("int", doc="word offset of the result in the activation arena (plan-memory)"),
    "tile": attr("sizes", doc="tile sizes chosen by the tile pass"),
}


@register_op
class Mul(Broadcast):
    """Elementwise product with rescale (EMUL): ``y = sat_P(msr(sat27(a * b), mult, shift))``; ``quantize``
    lowers ``nn.mul`` (squeeze-excitation's ``x * s[c]``, gates, scales by constants), ``nn.div`` by a constant
    and ``nn.neg`` to it."""

    name = "pent.mul"
    attrs = {"mult": required("int"), "shift": required("int"), **_SCALE, **_LATE}
    example = "%y = pent.mul(%x, %s) {mult = 1, shift = 3} : tensor<1x4x2x2xp8>"
    example_types = {"%x": "tensor<1x4x2x2xp8>", "%s": "tensor<1x4x1x1xp8>"}

    def verify_(self) -> None:
        from pcc.isa import MULT_MAX, SHIFT_MAX

        super().verify_()
        if not (0 <= self.attr("mult") <= MULT_MAX and 0 <= self.attr("shift") <= SHIFT_MAX):
            raise VerifyError(f"mult must lie in 0..{MULT_MAX} and shift in 0..{SHIFT_MAX}")


@register_op
class Eadd(Broadcast):
    """Sum (EADD) or, with ``neg``, difference (EMUL by -1, then EADD) of two rescaled operands that broadcast:
    ``y = sat_P(msr(a, ma, sa) + msr(b, mb, sb))`` / ``sat_P(msr(a, ma, sa) - sat16(msr(b, mb, sb)))``;
    ``quantize`` lowers ``nn.sub`` and the ``nn.add`` of differing shapes or with a constant to it."""

    name = "pent.eadd"
    attrs = {"mult": required("ints"), "shift": required("ints"), "neg": attr("bool", False), **_SCALE, **_LATE}
    example = "%y = pent.eadd(%x, %s) {mult = [1, 1], shift = [0, 0], neg = true} : tensor<1x4x2x2xp8>"
    example_types = {"%x": "tensor<1x4x2x2xp8>", "%s": "tensor<1x4x1x1xp8>"}

    def verify_(self) -> None:
        super().verify_()
        _check_mult_shift(self.attr("mult"), self.attr("shift"), "mult", "shift")


__all__ = ["Broadcast", "Eadd", "Mul"]
