"""The ``pent`` dialect: exact integer ops on pentary types, produced by the quantizer.

Values are N-pent integer words (``pN``) and weights are single pents (``p5``, -2..2).  Floats appear only at
the program boundary (``pent.quantize`` / ``pent.dequantize``).  The executable meaning of each op is the
``pent`` numpy reference, which has exactly the ISA's integer semantics (docs/ISA.md).
"""

from __future__ import annotations

from pcc.ir import Operation, TensorType, VerifyError, register_op, required


def _pent_word(v_type: TensorType, what: str) -> int:
    if not v_type.is_pent or v_type.dtype == "p5":
        raise VerifyError(f"{what} must be an N-pent word tensor (pN), got {v_type}")
    return v_type.pents or 0


@register_op
class Quantize(Operation):
    """Float to N-pent integers at the program boundary: q = clamp(round_half_even(x / scale), word range)."""

    name = "pent.quantize"
    operands_spec = ("x",)
    attrs = {"scale": required("float")}
    example = "%q = pent.quantize(%x) {scale = 0.05} : tensor<1x4xp8>"

    def verify_(self) -> None:
        if not self.operands[0].type.is_float:
            raise VerifyError(f"input must be a float tensor, got {self.operands[0].type}")
        _pent_word(self.results[0].type, "result")
        if not self.attr("scale") > 0:
            raise VerifyError("scale must be positive")

    def infer_types(self) -> list[TensorType] | None:
        return [self.operands[0].type.with_dtype(self.results[0].type.dtype)]


@register_op
class Dequantize(Operation):
    """N-pent integers back to float at the program boundary: x = q * scale."""

    name = "pent.dequantize"
    operands_spec = ("q",)
    attrs = {"scale": required("float")}
    example = "%y = pent.dequantize(%q) {scale = 0.05} : tensor<1x4xf32>"
    example_types = {"%q": "tensor<1x4xp8>"}

    def verify_(self) -> None:
        _pent_word(self.operands[0].type, "input")
        if not self.results[0].type.is_float:
            raise VerifyError(f"result must be a float tensor, got {self.results[0].type}")
        if not self.attr("scale") > 0:
            raise VerifyError("scale must be positive")

    def infer_types(self) -> list[TensorType] | None:
        return [self.operands[0].type.with_dtype(self.results[0].type.dtype)]
