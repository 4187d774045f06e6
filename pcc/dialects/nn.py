"""The ``nn`` dialect: float tensor ops as the frontends produce them.

Semantics follow the ONNX operator of the same name (attribute names in snake_case, static shapes only,
``auto_pad`` resolved into explicit ``pads`` at import, shape/axis/bound inputs turned into attributes).  The
executable meaning of each op is the float reference interpreter (:mod:`pcc.interpreter`, one kernel per op);
this file declares operands, attributes, result-type inference and checks.
Layouts: activations NCHW, conv weights OIHW (``[out, in/group, kh, kw]``), Gemm ``y = alpha*A'B' + beta*C``
(frontends write linear layers as ``trans_b = true`` with the weight ``[out, in]``, as ONNX exports do).

Beyond ONNX: ``nn.dequantize_weight`` (a pentary weight, ``pents * scale`` per output channel, as the trainer
writes them) and ``nn.scale_shift`` (a folded batch norm).  Ops are float except where noted: ``identity``,
``clip``, ``max_pool``, the shape ops and the elementwise arithmetic also take integer tensors; ``gather``
takes integer indices; ``cast`` converts.
"""

from __future__ import annotations

import math

from pcc.dialects.nn_base import Reduce, broadcast_shapes, matmul_shape
from pcc.dialects.nn_base import Unary as _Unary
from pcc.dialects.nn_base import float_operands as _float_operands
from pcc.dialects.nn_base import norm_axis as _norm_axis
from pcc.dialects.nn_elementwise import *  # noqa: F403  (the table-declared elementwise ops)
from pcc.dialects.nn_layers import *  # noqa: F403
from pcc.dialects.nn_tensor import *  # noqa: F403
from pcc.ir import Operation, TensorType, VerifyError, attr, register_op, required


@register_op
class Clip(_Unary):
    """min(max(x, min), max); an absent bound is unbounded.  Float or integer x (integer bounds for integers)."""

    name = "nn.clip"
    attrs = {"min": attr("float"), "max": attr("float")}
    example = "%y = nn.clip(%x) {min = 0.0, max = 6.0} : tensor<1x4xf32>"

    def verify_(self) -> None:
        x = self.x.type
        if x.is_pent:
            raise VerifyError(f"operand must be a float or integer tensor, got {x}")
        if not x.is_float:
            for k in ("min", "max"):
                v = self.attr(k)
                if v is not None and v != int(v):
                    raise VerifyError(f"{k} = {v} is not an integer, for an integer tensor")


@register_op
class Gelu(_Unary):
    """x * Phi(x); ``approximate = "tanh"`` uses the tanh formula."""

    name = "nn.gelu"
    attrs = {"approximate": attr("str", "none")}
    example = '%y = nn.gelu(%x) {approximate = "tanh"} : tensor<1x4xf32>'

    def verify_(self) -> None:
        super().verify_()
        if self.attr("approximate") not in ("none", "tanh"):
            raise VerifyError('approximate must be "none" or "tanh"')


@register_op
class Identity(_Unary):
    """x, of any element type (removed by canonicalize)"""

    name = "nn.identity"
    example = "%y = nn.identity(%x) : tensor<1x4xf32>"

    def verify_(self) -> None:
        pass


@register_op
class Dropout(_Unary):
    """x at inference (removed by canonicalize)"""

    name = "nn.dropout"
    attrs = {"ratio": attr("float", 0.5)}
    example = "%y = nn.dropout(%x) {ratio = 0.5} : tensor<1x4xf32>"


class _AxisUnary(_Unary):
    attrs = {"axis": attr("int", -1)}

    def verify_(self) -> None:
        super().verify_()
        _norm_axis(self.attr("axis"), self.x.type.rank)


@register_op
class Softmax(_AxisUnary):
    """exp(x) / sum(exp(x)) along ``axis``"""

    name = "nn.softmax"
    example = "%y = nn.softmax(%x) {axis = 1} : tensor<1x4xf32>"


@register_op
class LogSoftmax(_AxisUnary):
    """log(softmax(x)) along ``axis``"""

    name = "nn.log_softmax"
    example = "%y = nn.log_softmax(%x) {axis = 1} : tensor<1x4xf32>"


def _conv_out(size: int, k: int, stride: int, pad_lo: int, pad_hi: int, dil: int, ceil: bool = False) -> int:
    eff = dil * (k - 1) + 1
    num = size + pad_lo + pad_hi - eff
    out = (math.ceil(num / stride) if ceil else num // stride) + 1
    if ceil and (out - 1) * stride >= size + pad_lo:  # the last window must start inside the input or left pad
        out -= 1
    return out


def _spatial(op: Operation, x: TensorType, kernel: list[int]) -> list[int]:
    n = len(kernel)
    strides = op.attr("strides") or [1] * n
    pads = op.attr("pads") or [0] * (2 * n)
    dil = (op.attr("dilations") if "dilations" in op.attrs else None) or [1] * n
    if len(strides) != n or len(pads) != 2 * n or len(dil) != n:
        raise VerifyError(f"strides/dilations need {n} values and pads {2 * n} for a {n}-D window")
    if any(s <= 0 for s in strides) or any(d <= 0 for d in dil) or any(p < 0 for p in pads):
        raise VerifyError("strides and dilations must be positive and pads non-negative")
    ceil = bool(op.attrs.get("ceil_mode") is not None and op.attr("ceil_mode"))
    out = []
    for i in range(n):
        o = _conv_out(x.shape[2 + i], kernel[i], strides[i], pads[i], pads[i + n], dil[i], ceil)
        if o <= 0:
            raise VerifyError(f"window {kernel} does not fit input {x.shape}")
        out.append(o)
    return out


@register_op
class Conv2d(Operation):
    """2-D convolution (ONNX Conv): x [N,C,H,W], w [M, C/group, kh, kw], b [M];
    pads = [top, left, bottom, right]."""

    name = "nn.conv2d"
    operands_spec = ("x", "w", "b?")
    attrs = {
        "strides": attr("ints", (1, 1)),
        "pads": attr("ints", (0, 0, 0, 0)),
        "dilations": attr("ints", (1, 1)),
        "group": attr("int", 1),
    }
    example = "%y = nn.conv2d(%x, @w, @b) {strides = [1, 1], pads = [1, 1, 1, 1], group = 1} : tensor<1x8x4x4xf32>"
    example_types = {"%x": "tensor<1x8x4x4xf32>", "@w": "tensor<8x8x3x3xf32>", "@b": "tensor<8xf32>"}

    def verify_(self) -> None:
        _float_operands(self)
        x, w = self.x.type, self.w.type
        if x.rank != 4 or w.rank != 4:
            raise VerifyError(f"conv2d needs a 4-D input and weight, got {x} and {w}")
        g = self.attr("group")
        if g <= 0 or x.shape[1] != w.shape[1] * g or w.shape[0] % g:
            raise VerifyError(f"input channels {x.shape[1]} do not match weight {w.shape} with group {g}")
        if len(self.operands) == 3 and self.operands[2].type.shape != (w.shape[0],):
            raise VerifyError(f"bias must have shape [{w.shape[0]}], got {self.operands[2].type}")

    def infer_types(self) -> list[TensorType]:
        x, w = self.x.type, self.w.type
        hw = _spatial(self, x, list(w.shape[2:]))
        return [x.with_shape((x.shape[0], w.shape[0], *hw))]


@register_op
class Gemm(Operation):
    """y = alpha * A' B' + beta * C, A' = A^T if trans_a, B' = B^T if trans_b (ONNX Gemm)."""

    name = "nn.gemm"
    operands_spec = ("a", "b", "c?")
    attrs = {
        "alpha": attr("float", 1.0),
        "beta": attr("float", 1.0),
        "trans_a": attr("bool", False),
        "trans_b": attr("bool", False),
    }
    example = "%y = nn.gemm(%x, @w, @b) {trans_b = true} : tensor<1x8xf32>"
    example_types = {"@w": "tensor<8x4xf32>", "@b": "tensor<8xf32>"}

    def verify_(self) -> None:
        _float_operands(self)
        a, b = self.a.type, self.b.type
        if a.rank != 2 or b.rank != 2:
            raise VerifyError(f"gemm needs 2-D operands, got {a} and {b}")
        k1 = a.shape[0] if self.attr("trans_a") else a.shape[1]
        k2 = b.shape[1] if self.attr("trans_b") else b.shape[0]
        if k1 != k2:
            raise VerifyError(f"inner dimensions differ: {k1} and {k2}")

    def infer_types(self) -> list[TensorType]:
        a, b = self.a.type, self.b.type
        m = a.shape[1] if self.attr("trans_a") else a.shape[0]
        n = b.shape[0] if self.attr("trans_b") else b.shape[1]
        if len(self.operands) == 3:
            broadcast_shapes(self.operands[2].type.shape, (m, n))
        return [a.with_shape((m, n))]


@register_op
class MatMul(Operation):
    """numpy matmul semantics (ONNX MatMul)"""

    name = "nn.matmul"
    operands_spec = ("a", "b")
    example = "%y = nn.matmul(%x, @w) : tensor<1x8xf32>"
    example_types = {"@w": "tensor<4x8xf32>"}

    def verify_(self) -> None:
        _float_operands(self)

    def infer_types(self) -> list[TensorType]:
        a, b = self.a.type, self.b.type
        try:
            shape = matmul_shape(a.shape, b.shape)
        except ValueError:
            raise VerifyError(f"matmul of {a} and {b}: shapes do not match") from None
        return [a.with_shape(shape)]


class _Pool(Operation):
    operands_spec = ("x",)

    def verify_(self) -> None:
        _float_operands(self)
        x = self.x.type
        if x.rank != 2 + len(self.attr("kernel_shape")):
            raise VerifyError(f"{len(self.attr('kernel_shape'))}-D window on a rank-{x.rank} input")

    def infer_types(self) -> list[TensorType]:
        x = self.x.type
        return [x.with_shape((x.shape[0], x.shape[1], *_spatial(self, x, self.attr("kernel_shape"))))]


@register_op
class MaxPool(_Pool):
    """Max over windows (ONNX MaxPool); padding never wins."""

    name = "nn.max_pool"

    def verify_(self) -> None:  # float or integer input (ONNX MaxPool takes int8/uint8 too)
        x = self.x.type
        if x.is_pent:
            raise VerifyError(f"operand must be a float or integer tensor, got {x}")
        if x.rank != 2 + len(self.attr("kernel_shape")):
            raise VerifyError(f"{len(self.attr('kernel_shape'))}-D window on a rank-{x.rank} input")

    attrs = {
        "kernel_shape": required("ints"),
        "strides": attr("ints"),
        "pads": attr("ints"),
        "dilations": attr("ints"),
        "ceil_mode": attr("bool", False),
    }
    example = "%y = nn.max_pool(%x) {kernel_shape = [2, 2], strides = [2, 2]} : tensor<1x8x2x2xf32>"
    example_types = {"%x": "tensor<1x8x4x4xf32>"}


@register_op
class AvgPool(_Pool):
    """Mean over windows (ONNX AveragePool)."""

    name = "nn.avg_pool"
    attrs = {
        "kernel_shape": required("ints"),
        "strides": attr("ints"),
        "pads": attr("ints"),
        "dilations": attr("ints"),
        "ceil_mode": attr("bool", False),
        "count_include_pad": attr("bool", False),
    }
    example = "%y = nn.avg_pool(%x) {kernel_shape = [2, 2], strides = [2, 2]} : tensor<1x8x2x2xf32>"
    example_types = {"%x": "tensor<1x8x4x4xf32>"}


def adaptive_windows(size: int, out: int) -> list[tuple[int, int]]:
    """``[start, end)`` of each of ``out`` adaptive-pooling windows over ``size`` positions (torch's rule:
    ``floor(i * size / out)`` to ``ceil((i + 1) * size / out)``; they overlap where ``out`` does not divide)."""
    return [(i * size // out, -(-(i + 1) * size // out)) for i in range(out)]


@register_op
class AdaptivePool(Operation):
    """Average (``kind = avg``) or maximum (``kind = max``) over the adaptive windows of
    :func:`adaptive_windows` on each spatial axis, to ``output_size`` (torch's ``adaptive_avg_pool2d`` /
    ``adaptive_max_pool2d``; a size that divides the input is an ordinary pool and imports as one)."""

    name = "nn.adaptive_pool"
    operands_spec = ("x",)
    attrs = {"output_size": required("ints"), "kind": attr("str", "avg", doc="avg or max")}
    example = "%y = nn.adaptive_pool(%x) {output_size = [3, 3]} : tensor<1x8x3x3xf32>"
    example_types = {"%x": "tensor<1x8x5x5xf32>"}

    def verify_(self) -> None:
        _float_operands(self)
        x, out = self.x.type, self.attr("output_size")
        if x.rank != 2 + len(out) or any(o < 1 for o in out):
            raise VerifyError(f"output_size {out} must give a positive size to each spatial axis of {x}")
        if self.attr("kind") not in ("avg", "max"):
            raise VerifyError(f"kind must be avg or max, got {self.attr('kind')!r}")

    def infer_types(self) -> list[TensorType]:
        x = self.x.type
        return [x.with_shape((*x.shape[:2], *self.attr("output_size")))]


class _GlobalPool(_Unary):
    def infer_types(self) -> list[TensorType]:
        x = self.x.type
        if x.rank < 3:
            raise VerifyError(f"global pooling needs rank >= 3, got {x}")
        return [x.with_shape(x.shape[:2] + (1,) * (x.rank - 2))]


@register_op
class GlobalAvgPool(_GlobalPool):
    """Mean over all spatial axes, kept as size-1 axes."""

    name = "nn.global_avg_pool"
    example = "%y = nn.global_avg_pool(%x) : tensor<1x8x1x1xf32>"
    example_types = {"%x": "tensor<1x8x4x4xf32>"}


@register_op
class GlobalMaxPool(_GlobalPool):
    """Max over all spatial axes, kept as size-1 axes."""

    name = "nn.global_max_pool"
    example = "%y = nn.global_max_pool(%x) : tensor<1x8x1x1xf32>"
    example_types = {"%x": "tensor<1x8x4x4xf32>"}


@register_op
class BatchNorm(Operation):
    """Inference batch norm on axis 1: (x - mean) / sqrt(var + epsilon) * scale + bias."""

    name = "nn.batch_norm"
    operands_spec = ("x", "scale", "bias", "mean", "var")
    attrs = {"epsilon": attr("float", 1e-5)}
    example = "%y = nn.batch_norm(%x, @g, @b, @m, @v) {epsilon = 1e-05} : tensor<1x8x4x4xf32>"
    example_types = {"%x": "tensor<1x8x4x4xf32>", **{k: "tensor<8xf32>" for k in ("@g", "@b", "@m", "@v")}}

    def verify_(self) -> None:
        _float_operands(self)
        x = self.x.type
        if x.rank < 2:
            raise VerifyError(f"batch_norm needs rank >= 2, got {x}")
        for v in self.operands[1:]:
            if v.type.shape != (x.shape[1],):
                raise VerifyError(f"{v.ref()} must have shape [{x.shape[1]}], got {v.type}")

    def infer_types(self) -> list[TensorType]:
        return [self.x.type]


@register_op
class ScaleShift(Operation):
    """Per-channel affine on axis 1: x * scale + shift (a folded batch norm)."""

    name = "nn.scale_shift"
    operands_spec = ("x", "scale", "shift")
    example = "%y = nn.scale_shift(%x, @g, @b) : tensor<1x8x4x4xf32>"
    example_types = {"%x": "tensor<1x8x4x4xf32>", "@g": "tensor<8xf32>", "@b": "tensor<8xf32>"}

    def verify_(self) -> None:
        _float_operands(self)
        x = self.x.type
        for v in self.operands[1:]:
            if x.rank < 2 or v.type.shape != (x.shape[1],):
                raise VerifyError(f"{v.ref()} must have shape [C] with C = dim 1 of {x}")

    def infer_types(self) -> list[TensorType]:
        return [self.x.type]


@register_op
class LayerNorm(Operation):
    """(x - mean) / sqrt(var + epsilon) * scale + bias over axes ``axis..rank-1`` (ONNX LayerNormalization)."""

    name = "nn.layer_norm"
    operands_spec = ("x", "scale", "bias?")
    attrs = {"axis": attr("int", -1), "epsilon": attr("float", 1e-5)}
    example = "%y = nn.layer_norm(%x, @g, @b) {axis = -1, epsilon = 1e-05} : tensor<1x4xf32>"
    example_types = {"@g": "tensor<4xf32>", "@b": "tensor<4xf32>"}

    def verify_(self) -> None:
        _float_operands(self)
        _norm_axis(self.attr("axis"), self.x.type.rank)

    def infer_types(self) -> list[TensorType]:
        return [self.x.type]


@register_op
class Flatten(Operation):
    """Reshape to 2-D: [prod(shape[:axis]), prod(shape[axis:])]."""

    name = "nn.flatten"
    operands_spec = ("x",)
    attrs = {"axis": attr("int", 1)}
    example = "%y = nn.flatten(%x) {axis = 1} : tensor<1x4xf32>"

    def infer_types(self) -> list[TensorType]:
        x = self.x.type
        a = self.attr("axis")
        if not -x.rank <= a <= x.rank:
            raise VerifyError(f"axis {a} out of range for rank {x.rank}")
        if a < 0:
            a += x.rank
        return [x.with_shape((math.prod(x.shape[:a]), math.prod(x.shape[a:])))]


@register_op
class Reshape(Operation):
    """Reshape to the static ``shape`` (no 0 or -1 entries: the frontend resolves them)."""

    name = "nn.reshape"
    operands_spec = ("x",)
    attrs = {"shape": required("ints")}
    example = "%y = nn.reshape(%x) {shape = [2, 2]} : tensor<2x2xf32>"

    def infer_types(self) -> list[TensorType]:
        x = self.x.type
        shape = self.attr("shape")
        if any(d < 0 for d in shape) or math.prod(shape) != x.size:
            raise VerifyError(f"cannot reshape {x} ({x.size} elements) to {shape}")
        return [x.with_shape(shape)]


@register_op
class Transpose(Operation):
    """Permute axes: out.shape[i] = x.shape[perm[i]]."""

    name = "nn.transpose"
    operands_spec = ("x",)
    attrs = {"perm": required("ints")}
    example = "%y = nn.transpose(%x) {perm = [1, 0]} : tensor<4x1xf32>"

    def infer_types(self) -> list[TensorType]:
        x = self.x.type
        perm = self.attr("perm")
        if sorted(perm) != list(range(x.rank)):
            raise VerifyError(f"perm {perm} is not a permutation of {x.rank} axes")
        return [x.with_shape([x.shape[p] for p in perm])]


@register_op
class Concat(Operation):
    """Join along ``axis``."""

    name = "nn.concat"
    operands_spec = ("inputs*",)
    attrs = {"axis": required("int")}
    example = "%y = nn.concat(%x, %x) {axis = 1} : tensor<1x8xf32>"

    def infer_types(self) -> list[TensorType]:
        ts = [v.type for v in self.operands]
        if not ts:
            raise VerifyError("concat needs at least one input")
        ax = _norm_axis(self.attr("axis"), ts[0].rank)
        for t in ts[1:]:
            if (
                t.rank != ts[0].rank
                or t.dtype != ts[0].dtype
                or any(t.shape[i] != ts[0].shape[i] for i in range(t.rank) if i != ax)
            ):
                raise VerifyError(f"cannot concat {ts[0]} and {t} on axis {ax}")
        shape = list(ts[0].shape)
        shape[ax] = sum(t.shape[ax] for t in ts)
        return [ts[0].with_shape(shape)]


@register_op
class Split(Operation):
    """Split along ``axis`` into pieces of the sizes in ``split``."""

    name = "nn.split"
    operands_spec = ("x",)
    results_spec = ("outs*",)
    attrs = {"axis": attr("int", 0), "split": required("ints")}
    example = "%y, %z = nn.split(%x) {axis = 1, split = [2, 2]} : tensor<1x2xf32>, tensor<1x2xf32>"

    def infer_types(self) -> list[TensorType]:
        x = self.x.type
        ax = _norm_axis(self.attr("axis"), x.rank)
        sizes = self.attr("split")
        if sum(sizes) != x.shape[ax] or any(s < 0 for s in sizes):
            raise VerifyError(f"split sizes {sizes} do not add up to {x.shape[ax]}")
        out = []
        for s in sizes:
            shape = list(x.shape)
            shape[ax] = s
            out.append(x.with_shape(shape))
        return out


@register_op
class Slice(Operation):
    """x[starts:ends:steps] on ``axes`` (ONNX Slice with constant, clamped arguments)."""

    name = "nn.slice"
    operands_spec = ("x",)
    attrs = {
        "starts": required("ints"),
        "ends": required("ints"),
        "axes": attr("ints"),
        "steps": attr("ints"),
    }
    example = "%y = nn.slice(%x) {starts = [0], ends = [2], axes = [1]} : tensor<1x2xf32>"

    def infer_types(self) -> list[TensorType]:
        x = self.x.type
        starts, ends = self.attr("starts"), self.attr("ends")
        axes = self.attr("axes") or list(range(len(starts)))
        steps = self.attr("steps") or [1] * len(starts)
        if not len(starts) == len(ends) == len(axes) == len(steps):
            raise VerifyError("starts, ends, axes and steps must have the same length")
        shape = list(x.shape)
        for s, e, a, st in zip(starts, ends, axes, steps, strict=True):
            a = _norm_axis(a, x.rank)
            if st == 0:
                raise VerifyError("slice step must not be 0")
            shape[a] = len(range(*slice(s, e, st).indices(x.shape[a])))
        return [x.with_shape(shape)]


@register_op
class Squeeze(Operation):
    """Remove the size-1 ``axes``."""

    name = "nn.squeeze"
    operands_spec = ("x",)
    attrs = {"axes": required("ints")}
    example = "%y = nn.squeeze(%x) {axes = [0]} : tensor<4xf32>"

    def infer_types(self) -> list[TensorType]:
        x = self.x.type
        axes = {_norm_axis(a, x.rank) for a in self.attr("axes")}
        if any(x.shape[a] != 1 for a in axes):
            raise VerifyError(f"cannot squeeze axes {sorted(axes)} of {x}: not size 1")
        return [x.with_shape([d for i, d in enumerate(x.shape) if i not in axes])]


@register_op
class Unsqueeze(Operation):
    """Insert size-1 ``axes`` (positions in the output)."""

    name = "nn.unsqueeze"
    operands_spec = ("x",)
    attrs = {"axes": required("ints")}
    example = "%y = nn.unsqueeze(%x) {axes = [0]} : tensor<1x1x4xf32>"

    def infer_types(self) -> list[TensorType]:
        x = self.x.type
        r = x.rank + len(self.attr("axes"))
        axes = {_norm_axis(a, r) for a in self.attr("axes")}
        it = iter(x.shape)
        return [x.with_shape([1 if i in axes else next(it) for i in range(r)])]


PAD_MODES = ("constant", "reflect", "edge", "wrap")


@register_op
class Pad(Operation):
    """Pad with ``pads = [x1_begin, x2_begin, ..., x1_end, x2_end, ...]`` (ONNX Pad); a negative pad crops.

    Modes: ``constant`` (with ``value``), ``reflect`` (mirror without repeating the edge), ``edge`` (repeat the
    edge), ``wrap`` (periodic)."""

    name = "nn.pad"
    operands_spec = ("x",)
    attrs = {"pads": required("ints"), "mode": attr("str", "constant"), "value": attr("float", 0.0)}
    example = '%y = nn.pad(%x) {pads = [0, 1, 0, 1], mode = "constant"} : tensor<1x6xf32>'

    def infer_types(self) -> list[TensorType]:
        x = self.x.type
        pads = self.attr("pads")
        if len(pads) != 2 * x.rank:
            raise VerifyError(f"pads needs {2 * x.rank} values for rank {x.rank}")
        if self.attr("mode") not in PAD_MODES:
            raise VerifyError(f"mode must be one of {', '.join(PAD_MODES)}, got {self.attr('mode')!r}")
        shape = [d + pads[i] + pads[i + x.rank] for i, d in enumerate(x.shape)]
        if any(d < 0 for d in shape):
            raise VerifyError(f"pads {pads} crop more than the input {x} holds")
        return [x.with_shape(shape)]


RESIZE_COORDINATE_MODES = (
    "half_pixel",
    "half_pixel_symmetric",
    "pytorch_half_pixel",
    "align_corners",
    "asymmetric",
    "tf_half_pixel_for_nearest",
    "tf_crop_and_resize",
)
RESIZE_MODES = ("nearest", "linear", "cubic")
RESIZE_NEAREST_MODES = ("round_prefer_floor", "round_prefer_ceil", "floor", "ceil")


@register_op
class Resize(Operation):
    """Resize to the static output type (ONNX Resize), separably axis by axis.

    Output index ``o`` on an axis maps to the input coordinate given by ``coordinate_transformation_mode``
    (with ``scales[axis]``, default out/in; ``roi`` = [starts..., ends...] for ``tf_crop_and_resize``, whose
    points outside the input take ``extrapolation_value``).  ``nearest`` rounds it by ``nearest_mode``;
    ``linear`` and ``cubic`` (coefficient ``cubic_coeff_a``) interpolate, ``exclude_outside`` drops and
    renormalises taps outside the input, ``antialias`` widens the filter by 1/scale when downscaling."""

    name = "nn.resize"
    operands_spec = ("x",)
    attrs = {
        "mode": attr("str", "nearest"),
        "coordinate_transformation_mode": attr("str", "half_pixel"),
        "nearest_mode": attr("str", "round_prefer_floor"),
        "scales": attr("floats"),
        "roi": attr("floats"),
        "cubic_coeff_a": attr("float", -0.75),
        "exclude_outside": attr("bool", False),
        "extrapolation_value": attr("float", 0.0),
        "antialias": attr("bool", False),
    }
    example = "%y = nn.resize(%x) {scales = [1.0, 1.0, 2.0, 2.0]} : tensor<1x8x8x8xf32>"
    example_types = {"%x": "tensor<1x8x4x4xf32>"}

    def verify_(self) -> None:
        if self.attr("mode") not in RESIZE_MODES:
            raise VerifyError(f"mode must be one of {', '.join(RESIZE_MODES)}, got {self.attr('mode')!r}")
        x, y = self.x.type, self.out.type
        if self.attr("mode") != "nearest" and not x.is_float:
            raise VerifyError(f"{self.attr('mode')} resizing needs a float tensor, got {x}")
        roi = self.attr("roi")
        if roi is not None and len(roi) != 2 * x.rank:
            raise VerifyError(f"roi needs {2 * x.rank} values, got {roi}")
        if y.rank != x.rank or y.dtype != x.dtype:
            raise VerifyError(f"resize keeps the rank and element type: {x} -> {y}")
        if self.attr("coordinate_transformation_mode") not in RESIZE_COORDINATE_MODES:
            raise VerifyError(f"coordinate_transformation_mode must be one of {', '.join(RESIZE_COORDINATE_MODES)}")
        if self.attr("nearest_mode") not in RESIZE_NEAREST_MODES:
            raise VerifyError(f"nearest_mode must be one of {', '.join(RESIZE_NEAREST_MODES)}")
        scales = self.attr("scales")
        if scales is not None and (len(scales) != x.rank or any(not v > 0 for v in scales)):
            raise VerifyError(f"scales needs {x.rank} positive values, got {scales}")
        if any(d == 0 for d in y.shape) and x.size:
            raise VerifyError(f"empty output {y}")


@register_op
class ReduceMean(Reduce):
    """Mean over ``axes`` (all axes if absent)."""

    name = "nn.reduce_mean"
    example = "%y = nn.reduce_mean(%x) {axes = [1], keepdims = true} : tensor<1x1xf32>"


@register_op
class ReduceSum(Reduce):
    """Sum over ``axes`` (all if absent)."""

    name = "nn.reduce_sum"
    example = "%y = nn.reduce_sum(%x) {axes = [1], keepdims = false} : tensor<1xf32>"


@register_op
class Cast(Operation):
    """Convert the element type to the result's."""

    name = "nn.cast"
    operands_spec = ("x",)
    example = "%y = nn.cast(%x) : tensor<1x4xf64>"

    def verify_(self) -> None:
        if self.out.type.shape != self.x.type.shape:
            raise VerifyError("cast keeps the shape")
        if self.out.type.is_pent or self.x.type.is_pent:
            raise VerifyError("nn.cast converts between float and integer types, not pentary ones")


@register_op
class Gather(Operation):
    """``take(x, indices, axis)`` (ONNX Gather): out.shape = x.shape[:axis] + indices.shape + x.shape[axis+1:];
    negative indices count from the end."""

    name = "nn.gather"
    operands_spec = ("x", "indices")
    attrs = {"axis": attr("int", 0)}
    example = "%y = nn.gather(%x, @i) {axis = 1} : tensor<1x2xf32>"
    example_types = {"@i": "tensor<2xi64>"}

    def verify_(self) -> None:
        i = self.indices.type
        if i.dtype not in ("i32", "i64"):
            raise VerifyError(f"indices must be i32 or i64, got {i}")

    def infer_types(self) -> list[TensorType]:
        x, i = self.x.type, self.indices.type
        ax = _norm_axis(self.attr("axis"), x.rank)
        return [x.with_shape(x.shape[:ax] + i.shape + x.shape[ax + 1 :])]


@register_op
class Expand(Operation):
    """Broadcast ``x`` against ``shape`` (ONNX Expand: the result shape is broadcast(x.shape, shape))."""

    name = "nn.expand"
    operands_spec = ("x",)
    attrs = {"shape": required("ints")}
    example = "%y = nn.expand(%x) {shape = [3, 1]} : tensor<3x4xf32>"

    def infer_types(self) -> list[TensorType]:
        x = self.x.type
        return [x.with_shape(broadcast_shapes(x.shape, tuple(self.attr("shape"))))]


@register_op
class DequantizeWeight(Operation):
    """A pentary weight as floats: ``pents * scale``, the scale per slice along ``axis`` (``[C]``) or one
    scalar (``[]``).

    Frontends that read already-quantized models (the trainer's JSON) write weights this way, so the float
    interpreter runs them and the quantizer can take the pents and scales as they are instead of re-quantizing.
    """

    name = "nn.dequantize_weight"
    operands_spec = ("pents", "scale")
    attrs = {"axis": attr("int", 0)}
    example = "%y = nn.dequantize_weight(@q, @s) {axis = 0} : tensor<4x4xf32>"
    example_types = {"@q": "tensor<4x4xp5>", "@s": "tensor<4xf32>"}

    def verify_(self) -> None:
        q, s = self.pents.type, self.scale.type
        if q.dtype != "p5":
            raise VerifyError(f"pents must be a p5 tensor, got {q}")
        if not s.is_float:
            raise VerifyError(f"scale must be a float tensor, got {s}")
        if s.rank == 0:
            return
        ax = _norm_axis(self.attr("axis"), q.rank)
        if s.shape != (q.shape[ax],):
            raise VerifyError(f"scale must have shape [] or [{q.shape[ax]}] (axis {ax} of {q}), got {s}")

    def infer_types(self) -> list[TensorType]:
        return [TensorType(self.pents.type.shape, self.scale.type.dtype)]
