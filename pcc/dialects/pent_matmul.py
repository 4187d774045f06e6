"""``pent.matmul``: the product of two activations (attention's ``Q K^T`` and ``P V``), batched, on the MAC array's
activation-by-activation instruction AMATMUL (docs/ISA.md).

``a`` is ``[Ba, M, K]``, ``b`` is ``[Bb, K, N]`` (or, with ``trans_b``, ``[Bb, N, K]``: each output's K values
contiguous, as ``K`` itself is for ``Q K^T``), ``Ba`` and ``Bb`` either the result's batch ``B`` or 1 (broadcast);
the result is ``[B, M, N]``.  With ``msr`` the ISA's ``mul_shift_round`` and ``P`` the result's pents::

    acc[b, i, j] = sat27(sum_t a[b, i, t] * b[b, t, j])
    y = sat_P(msr(acc, mult, shift))          mult / 2**shift ~= s_a s_b / s_y

Per batch and tile of rows: TLOAD a's rows and b (once per batch), AMATMUL (``pents`` = b's pents: the
digit-serial passes), REQUANT, TSTORE.
"""

from __future__ import annotations

from pcc.dialects.pent import _SCALE, _check_scale, _pent_word, _pents_of
from pcc.ir import Operation, TensorType, VerifyError, attr, register_op, required


@register_op
class Matmul(Operation):
    """Batched product of two activations with rescale (AMATMUL + REQUANT), see the module docstring."""

    name = "pent.matmul"
    operands_spec = ("a: pword", "b: pword")
    results_spec = ("out: pword",)
    attrs = {
        "mult": required("int"),
        "shift": required("int"),
        "trans_b": attr("bool", False, doc="b is [B, N, K] (each output's K values contiguous)"),
        **_SCALE,
        "addr": attr("int", doc="word offset of the result in the activation arena (plan-memory)"),
        "tile": attr("sizes", doc="rows of a per tile (tile pass)"),
    }
    example = "%y = pent.matmul(%q, %k) {mult = 1, shift = 4, trans_b = true} : tensor<4x8x8xp8>"
    example_types = {"%q": "tensor<4x8x16xp8>", "%k": "tensor<4x8x16xp8>"}

    def _dims(self) -> tuple[int, int, int, int]:
        a, b = self.operands[0].type, self.operands[1].type
        if a.rank != 3 or b.rank != 3:
            raise VerifyError(f"matmul needs 3-D operands [B, M, K] and [B, K, N], got {a} and {b}")
        k = a.shape[2]
        kb, n = (b.shape[2], b.shape[1]) if self.attr("trans_b") else (b.shape[1], b.shape[2])
        if k != kb:
            raise VerifyError(f"inner dimensions differ: {a} and {b} (trans_b = {self.attr('trans_b')})")
        ba, bb = a.shape[0], b.shape[0]
        if ba != bb and 1 not in (ba, bb):
            raise VerifyError(f"batch dimensions {ba} and {bb} do not broadcast")
        return max(ba, bb), a.shape[1], k, n

    def verify_(self) -> None:
        from pcc.isa import MULT_MAX, SHIFT_MAX

        _check_scale(self)
        _pent_word(self.operands[0].type, "operand a")
        _pent_word(self.operands[1].type, "operand b")
        _pents_of(self)
        if any(v.is_weight for v in self.operands):
            raise VerifyError("both operands must be activations (a constant operand is a pent.gemm)")
        self._dims()
        if not (0 <= self.attr("mult") <= MULT_MAX and 0 <= self.attr("shift") <= SHIFT_MAX):
            raise VerifyError(f"mult must lie in 0..{MULT_MAX} and shift in 0..{SHIFT_MAX}")

    def infer_types(self) -> list[TensorType]:
        bt, m, _, n = self._dims()
        return [TensorType((bt, m, n), self.results[0].type.dtype)]


__all__ = ["Matmul"]
