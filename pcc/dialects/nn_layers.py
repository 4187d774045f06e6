"""Layer ops of the ``nn`` dialect beyond the core set: transposed convolution, group / local response
normalisation, and the integer and quantize/dequantize ops of quantized ONNX models (QDQ and QOperator)."""

from __future__ import annotations

from pcc.dialects.nn_base import Unary, float_operands, matmul_shape, norm_axis
from pcc.ir import Operation, TensorType, VerifyError, attr, register_op, required


def _window_attrs(op: Operation, n: int) -> tuple[list[int], list[int], list[int]]:
    strides, pads, dil = op.attr("strides"), op.attr("pads"), op.attr("dilations")
    if len(strides) != n or len(pads) != 2 * n or len(dil) != n:
        raise VerifyError(f"strides/dilations need {n} values and pads {2 * n}")
    if any(s <= 0 for s in strides) or any(d <= 0 for d in dil):
        raise VerifyError("strides and dilations must be positive")
    return strides, pads, dil


@register_op
class ConvTranspose2d(Operation):
    """2-D transposed convolution (ONNX ConvTranspose): x [N,C,H,W], w [C, M/group, kh, kw], b [M].

    Output size per axis: ``(in - 1) * stride + (k - 1) * dilation + 1 - pad_begin - pad_end + output_padding``
    (the frontend resolves ``output_shape`` and ``auto_pad`` into ``pads`` and ``output_padding``)."""

    name = "nn.conv_transpose2d"
    operands_spec = ("x", "w", "b?")
    attrs = {
        "strides": attr("ints", (1, 1)),
        "pads": attr("ints", (0, 0, 0, 0)),
        "dilations": attr("ints", (1, 1)),
        "output_padding": attr("ints", (0, 0)),
        "group": attr("int", 1),
    }
    example = "%y = nn.conv_transpose2d(%x, @w) {strides = [2, 2]} : tensor<1x4x9x9xf32>"
    example_types = {"%x": "tensor<1x8x4x4xf32>", "@w": "tensor<8x4x3x3xf32>"}

    def verify_(self) -> None:
        float_operands(self)
        x, w = self.x.type, self.w.type
        g = self.attr("group")
        if x.rank != 4 or w.rank != 4 or g <= 0 or x.shape[1] != w.shape[0] or w.shape[0] % g:
            raise VerifyError(f"input {x} does not match weight {w} with group {g}")
        if len(self.operands) == 3 and self.operands[2].type.shape != (w.shape[1] * g,):
            raise VerifyError(f"bias must have shape [{w.shape[1] * g}], got {self.operands[2].type}")

    def infer_types(self) -> list[TensorType]:
        x, w = self.x.type, self.w.type
        strides, pads, dil = _window_attrs(self, 2)
        opad = self.attr("output_padding")
        out = []
        for i in range(2):
            o = (x.shape[2 + i] - 1) * strides[i] + (w.shape[2 + i] - 1) * dil[i] + 1 - pads[i] - pads[i + 2] + opad[i]
            if o <= 0:
                raise VerifyError(f"empty output on axis {2 + i}")
            out.append(o)
        return [x.with_shape((x.shape[0], w.shape[1] * self.attr("group"), *out))]


@register_op
class GroupNorm(Operation):
    """Normalise each of ``num_groups`` channel groups over its channels and spatial positions, then scale and
    shift per channel: ``(x - mean) / sqrt(var + epsilon) * scale[c] + bias[c]`` (instance norm: one group per
    channel)."""

    name = "nn.group_norm"
    operands_spec = ("x", "scale", "bias")
    attrs = {"num_groups": required("int"), "epsilon": attr("float", 1e-5)}
    example = "%y = nn.group_norm(%x, @g, @b) {num_groups = 2} : tensor<1x8x4x4xf32>"
    example_types = {"%x": "tensor<1x8x4x4xf32>", "@g": "tensor<8xf32>", "@b": "tensor<8xf32>"}

    def verify_(self) -> None:
        float_operands(self)
        x = self.x.type
        g = self.attr("num_groups")
        if x.rank < 2 or g <= 0 or x.shape[1] % g:
            raise VerifyError(f"{g} groups do not divide the channels of {x}")
        for v in self.operands[1:]:
            if v.type.shape != (x.shape[1],):
                raise VerifyError(f"{v.ref()} must have shape [{x.shape[1]}], got {v.type}")

    def infer_types(self) -> list[TensorType]:
        return [self.x.type]


@register_op
class LRN(Unary):
    """Local response normalisation across channels: ``x / (bias + alpha / size * sum(x^2 over the size
    channels around c)) ** beta`` (the window reaches ``(size - 1) // 2`` channels back, the rest forward)."""

    name = "nn.lrn"
    attrs = {
        "size": required("int"),
        "alpha": attr("float", 0.0001),
        "beta": attr("float", 0.75),
        "bias": attr("float", 1.0),
    }
    example = "%y = nn.lrn(%x) {size = 3} : tensor<1x8x4x4xf32>"
    example_types = {"%x": "tensor<1x8x4x4xf32>"}

    def verify_(self) -> None:
        super().verify_()
        if self.attr("size") <= 0 or self.x.type.rank < 2:
            raise VerifyError("size must be positive and the input of rank >= 2")


def _int8ish(t: TensorType) -> bool:
    return t.dtype in ("i8", "u8")


def _zero_point(op: Operation, name: str, of: TensorType, channels: int | None) -> None:
    z = op.operand(name)
    if z is None:
        return
    if z.type.dtype != of.dtype or z.type.rank > 1 or (z.type.rank == 1 and z.type.shape[0] not in (1, channels)):
        raise VerifyError(f"{name} must be a scalar or per-channel [{channels}] {of.dtype} tensor, got {z.type}")


@register_op
class ConvInteger2d(Operation):
    """Integer 2-D convolution (ONNX ConvInteger): ``conv(x - x_zero_point, w - w_zero_point)`` in i32; the
    zero points are scalars or per output channel for ``w``; padding holds ``x_zero_point`` (zero after the
    shift)."""

    name = "nn.conv_integer2d"
    operands_spec = ("x", "w", "x_zero_point?", "w_zero_point?")
    attrs = {
        "strides": attr("ints", (1, 1)),
        "pads": attr("ints", (0, 0, 0, 0)),
        "dilations": attr("ints", (1, 1)),
        "group": attr("int", 1),
    }
    example = "%y = nn.conv_integer2d(%x, @w) : tensor<1x8x2x2xi32>"
    example_types = {"%x": "tensor<1x8x4x4xu8>", "@w": "tensor<8x8x3x3xi8>"}

    def verify_(self) -> None:
        x, w = self.x.type, self.w.type
        g = self.attr("group")
        if not (_int8ish(x) and _int8ish(w)) or x.rank != 4 or w.rank != 4:
            raise VerifyError(f"need 4-D i8/u8 input and weight, got {x} and {w}")
        if g <= 0 or x.shape[1] != w.shape[1] * g or w.shape[0] % g:
            raise VerifyError(f"input channels {x.shape[1]} do not match weight {w.shape} with group {g}")
        _zero_point(self, "x_zero_point", x, None)
        _zero_point(self, "w_zero_point", w, w.shape[0])

    def infer_types(self) -> list[TensorType]:
        x, w = self.x.type, self.w.type
        strides, pads, dil = _window_attrs(self, 2)
        out = []
        for i in range(2):
            o = (x.shape[2 + i] + pads[i] + pads[i + 2] - dil[i] * (w.shape[2 + i] - 1) - 1) // strides[i] + 1
            if o <= 0:
                raise VerifyError(f"window {w.shape[2:]} does not fit input {x}")
            out.append(o)
        return [TensorType((x.shape[0], w.shape[0], *out), "i32")]


@register_op
class MatMulInteger(Operation):
    """``matmul(a - a_zero_point, b - b_zero_point)`` in i32 (ONNX MatMulInteger; ``a_zero_point`` scalar or per
    row of a 2-D ``a``, ``b_zero_point`` scalar or per column)."""

    name = "nn.matmul_integer"
    operands_spec = ("a", "b", "a_zero_point?", "b_zero_point?")
    example = "%y = nn.matmul_integer(%x, @w) : tensor<2x8xi32>"
    example_types = {"%x": "tensor<2x4xu8>", "@w": "tensor<4x8xi8>"}

    def verify_(self) -> None:
        a, b = self.a.type, self.b.type
        if not (_int8ish(a) and _int8ish(b)) or a.rank < 1 or b.rank < 1:
            raise VerifyError(f"need i8/u8 operands, got {a} and {b}")
        _zero_point(self, "a_zero_point", a, a.shape[-2] if a.rank >= 2 else None)
        _zero_point(self, "b_zero_point", b, b.shape[-1])

    def infer_types(self) -> list[TensorType]:

        a, b = self.a.type, self.b.type
        try:
            shape = matmul_shape(a.shape, b.shape)
        except ValueError:
            raise VerifyError(f"matmul of {a} and {b}: shapes do not match") from None
        return [TensorType(shape, "i32")]


def _scale_shape(op: Operation, x: TensorType) -> None:
    s = op.operands[1].type
    if not s.is_float:
        raise VerifyError(f"scale must be a float tensor, got {s}")
    if s.rank == 0 or s.shape == (1,):
        return
    ax = norm_axis(op.attr("axis"), x.rank)
    if s.rank != 1 or s.shape[0] != x.shape[ax]:
        raise VerifyError(f"scale must be a scalar or [{x.shape[ax]}] (axis {ax} of {x}), got {s}")


QUANT_TYPES = ("i8", "u8", "i16", "i32")


@register_op
class QuantizeLinear(Operation):
    """``saturate(round_half_even(x / scale) + zero_point)`` into the result's integer type; scale and zero
    point per tensor or per slice along ``axis``."""

    name = "nn.quantize_linear"
    operands_spec = ("x", "scale", "zero_point?")
    attrs = {"axis": attr("int", 1)}
    example = "%y = nn.quantize_linear(%x, @s) : tensor<1x4xi8>"
    example_types = {"@s": "tensor<f32>"}

    def verify_(self) -> None:
        x, y = self.x.type, self.out.type
        if not x.is_float or y.dtype not in QUANT_TYPES or y.shape != x.shape:
            raise VerifyError(f"quantizes a float tensor into one of {', '.join(QUANT_TYPES)}: {x} -> {y}")
        _scale_shape(self, x)
        z = self.operand("zero_point")
        if z is not None and (z.type.dtype != y.dtype or z.type.shape != self.scale.type.shape):
            raise VerifyError(f"zero_point must be a {y.dtype} tensor shaped like the scale, got {z.type}")


@register_op
class DequantizeLinear(Operation):
    """``(x - zero_point) * scale`` in the scale's float type; per tensor or per slice along ``axis``."""

    name = "nn.dequantize_linear"
    operands_spec = ("x", "scale", "zero_point?")
    attrs = {"axis": attr("int", 1)}
    example = "%y = nn.dequantize_linear(%x, @s) : tensor<1x4xf32>"
    example_types = {"%x": "tensor<1x4xi8>", "@s": "tensor<f32>"}

    def verify_(self) -> None:
        x = self.x.type
        if x.dtype not in QUANT_TYPES:
            raise VerifyError(f"dequantizes one of {', '.join(QUANT_TYPES)}, got {x}")
        _scale_shape(self, x)
        z = self.operand("zero_point")
        if z is not None and (z.type.dtype != x.dtype or z.type.shape != self.scale.type.shape):
            raise VerifyError(f"zero_point must be a {x.dtype} tensor shaped like the scale, got {z.type}")

    def infer_types(self) -> list[TensorType]:
        return [self.x.type.with_dtype(self.scale.type.dtype)]


__all__ = [
    "ConvTranspose2d",
    "GroupNorm",
    "LRN",
    "ConvInteger2d",
    "MatMulInteger",
    "QuantizeLinear",
    "DequantizeLinear",
    "QUANT_TYPES",
]
