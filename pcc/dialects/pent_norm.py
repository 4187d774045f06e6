"""``pent.rsqrt``: the integer reciprocal square root of normalization layers (LayerNorm, GroupNorm,
InstanceNorm), elementwise on a vector of row variances, in EADD, TLUT and EMUL steps.

``v`` holds non-negative integers (a variance at its scale ``s_v``); with ``msr`` the ISA's ``mul_shift_round``
and ``emul`` / ``eadd`` EMUL's and EADD's arithmetic at 16 pents, ``F = 30``::

    w  = sat16(v + bias)                                  (bias: epsilon / s_v, at least 1)
    n  = table[sat16(msr(w, imult, ishift))]              a first guess of 2**F / sqrt(w), from below
    iters times (Newton for 1 / sqrt:  n <- n (3 - w n**2 / 2**2F) / 2):
        t = emul(n, w, 1, 12);  u = emul(t, n, 1, 18)     u = w n**2 / 2**30, 2**30 at the root
        m = emul(n, -1, 1, 0);  q = emul(u, m, 1, 31)     q = -n u / 2**31
        n = eadd(n, q, [3, 1], [1, 0])                    round(3 n / 2) + q

so ``n ~= 2**30 / sqrt(v + bias)`` and the real ``1 / sqrt(v s_v + epsilon)`` is ``n 2**-30 / sqrt(s_v)`` (the
result's scale).  The guesses start below the root, where Newton's steps rise monotonically and never overshoot
(``e = w n**2 / 2**2F`` goes to ``e (3 - e)**2 / 4 <= 1``), so every product stays inside EMUL's 27-pent product
and 16-pent result; ``iters`` is what the worst bucket of the table needs to reach ``1 - e < 2**-28``.
"""

from __future__ import annotations

from pcc.dialects.pent import _SCALE, Elementwise, _check_scale, _pent_word
from pcc.ir import TensorType, VerifyError, attr, register_op, required

RSQRT_FRAC = 30  # n = 2**30 / sqrt(w)


@register_op
class Rsqrt(Elementwise):
    """``n ~= 2**30 / sqrt(v + bias)`` elementwise (see the module docstring)."""

    name = "pent.rsqrt"
    operands_spec = ("v: pword", "table: pword")
    attrs = {
        "bias": required("int"),
        "imult": required("int"),
        "ishift": required("int"),
        "iters": required("int"),
        **_SCALE,
        "addr": attr("int", doc="word offset of the result in the activation arena (plan-memory)"),
        "tile": attr("sizes", doc="elements per tile (tile pass)"),
    }
    example = "%n = pent.rsqrt(%v, @t) {bias = 1, imult = 1, ishift = 0, iters = 4} : tensor<4xp16>"
    example_types = {"%v": "tensor<4xp16>", "@t": "tensor<8xp16>"}

    def verify_(self) -> None:
        from pcc.isa import MULT_MAX, SHIFT_MAX, WORD_MAX

        _check_scale(self)
        _pent_word(self.operands[0].type, "input")
        if self.results[0].type.dtype != "p16":
            raise VerifyError(f"the result must be p16, got {self.results[0].type}")
        t = self.operands[1]
        if not t.is_weight or t.type.rank != 1 or t.type.dtype != "p16" or not 1 <= t.type.shape[0] <= 976562:
            raise VerifyError(f"the table must be a 1-D p16 weight of 1..976562 entries, got {t.type}")
        if not (1 <= self.attr("bias") <= WORD_MAX):
            raise VerifyError("bias must lie in 1..word_max(16)")
        if not (0 <= self.attr("imult") <= MULT_MAX and 0 <= self.attr("ishift") <= SHIFT_MAX):
            raise VerifyError(f"imult must lie in 0..{MULT_MAX} and ishift in 0..{SHIFT_MAX}")
        if not 0 <= self.attr("iters") <= 64:
            raise VerifyError("iters must lie in 0..64")

    def infer_types(self) -> list[TensorType]:
        return [self.operands[0].type.with_dtype("p16")]


__all__ = ["RSQRT_FRAC", "Rsqrt"]
