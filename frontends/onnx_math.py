"""ONNX import rules: elementwise ops, reductions, casts."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from pcc.dialects import nn
from pcc.frontends import Const, Sym, ir_dtype, shape_of
from pcc.frontends.onnx_rules import (
    NUMPY_TYPES,
    ONNX_TO_IR,
    Converter,
    Ctx,
    Node,
    axis_of,
    cast,
    converter,
    onnx_type_name,
    values,
)
from pcc.ir import Operation

# ----------------------------------------------------------------------------------------------- elementwise

#: ONNX op -> (nn op, first opset of the semantics imported); attributes map by name (snake_case in nn)
UNARY_RULES: dict[str, tuple[type[Operation], int]] = {
    "Relu": (nn.Relu, 6),
    "Sigmoid": (nn.Sigmoid, 6),
    "Tanh": (nn.Tanh, 6),
    "Sqrt": (nn.Sqrt, 6),
    "Exp": (nn.Exp, 6),
    "Log": (nn.Log, 6),
    "Neg": (nn.Neg, 6),
    "Abs": (nn.Abs, 6),
    "Floor": (nn.Floor, 6),
    "Ceil": (nn.Ceil, 6),
    "Reciprocal": (nn.Reciprocal, 6),
    "Erf": (nn.Erf, 9),
    "Sign": (nn.Sign, 9),
    "Round": (nn.Round, 11),
    "Sin": (nn.Sin, 7),
    "Cos": (nn.Cos, 7),
    "Tan": (nn.Tan, 7),
    "Asin": (nn.Asin, 7),
    "Acos": (nn.Acos, 7),
    "Atan": (nn.Atan, 7),
    "Sinh": (nn.Sinh, 9),
    "Cosh": (nn.Cosh, 9),
    "Asinh": (nn.Asinh, 9),
    "Acosh": (nn.Acosh, 9),
    "Atanh": (nn.Atanh, 9),
    "Softplus": (nn.Softplus, 1),
    "Softsign": (nn.Softsign, 1),
    "Mish": (nn.Mish, 18),
    "HardSwish": (nn.HardSwish, 14),
    "LeakyRelu": (nn.LeakyRelu, 6),
    "HardSigmoid": (nn.HardSigmoid, 6),
    "Elu": (nn.Elu, 6),
    "Selu": (nn.Selu, 6),
    "Celu": (nn.Celu, 12),
    "ThresholdedRelu": (nn.ThresholdedRelu, 10),
    "Shrink": (nn.Shrink, 9),
    "IsNaN": (nn.IsNaN, 9),
    "IsInf": (nn.IsInf, 10),
    "Not": (nn.Not, 1),
    "BitwiseNot": (nn.BitwiseNot, 18),
}

BINARY_RULES: dict[str, tuple[type[Operation], int]] = {
    "Add": (nn.Add, 7),
    "Sub": (nn.Sub, 7),
    "Mul": (nn.Mul, 7),
    "Div": (nn.Div, 7),
    "Pow": (nn.Pow, 7),
    "Mod": (nn.Mod, 10),
    "PRelu": (nn.PRelu, 7),
    "Equal": (nn.Equal, 7),
    "Less": (nn.Less, 7),
    "Greater": (nn.Greater, 7),
    "LessOrEqual": (nn.LessOrEqual, 12),
    "GreaterOrEqual": (nn.GreaterOrEqual, 12),
    "And": (nn.And, 7),
    "Or": (nn.Or, 7),
    "Xor": (nn.Xor, 7),
    "BitwiseAnd": (nn.BitwiseAnd, 18),
    "BitwiseOr": (nn.BitwiseOr, 18),
    "BitwiseXor": (nn.BitwiseXor, 18),
    "BitShift": (nn.BitShift, 11),
}

#: variadic ONNX ops -> the binary nn op they chain (Mean: the sum divided by the count)
VARIADIC_RULES: dict[str, type[Operation]] = {"Sum": nn.Add, "Max": nn.Max, "Min": nn.Min, "Mean": nn.Add}


def mapped_attrs(n: Node, cls: type[Operation]) -> dict[str, Any]:
    """The node's attributes that ``cls`` declares (same names), converted to the declared kinds."""
    out: dict[str, Any] = {}
    for k, spec in cls.attrs.items():
        v = n.attr(k)
        if v is None:
            continue
        if spec.kind == "float":
            v = float(v)
        elif spec.kind == "bool":
            v = bool(int(v))
        elif spec.kind == "int":
            v = int(v)
        elif spec.kind == "str":
            v = str(v).lower() if k == "direction" else str(v)
        out[k] = v
    return out


def _unary(cx: Ctx, n: Node) -> list[Sym]:
    cls = UNARY_RULES[n.op_type][0]
    return [cx.op1(n, cls, [n.x()], mapped_attrs(n, cls))]


def _binary(cx: Ctx, n: Node) -> list[Sym]:
    cls = BINARY_RULES[n.op_type][0]
    a, b = n.x(0), n.x(1)
    if n.op_type == "Pow" and ir_dtype(a) != ir_dtype(b):  # Pow allows a different exponent type
        b = cast(cx, n, b, cx.type_of(a).dtype)
    return [cx.op1(n, cls, [a, b], mapped_attrs(n, cls))]


def _variadic(cx: Ctx, n: Node) -> list[Sym]:
    xs = values(cx, n)
    if not xs:
        raise n.error("needs at least one input")
    cls = VARIADIC_RULES[n.op_type]
    if len(xs) == 1:
        return [xs[0]]
    acc = xs[0]
    for k, x in enumerate(xs[1:], start=2):
        acc = cx.op1(n, cls, [acc, x], out=k == len(xs) and n.op_type != "Mean")
    if n.op_type == "Mean":
        count = Const(np.array(len(xs), cx.type_of(acc).np_dtype), f"{n.outputs[0]}.count")
        acc = cx.op1(n, nn.Div, [acc, count])
    return [acc]


for _name, (_cls, _since) in UNARY_RULES.items():
    converter(_name, since=_since)(_unary)
for _name, (_cls, _since) in BINARY_RULES.items():
    converter(_name, since=_since)(_binary)
for _name in VARIADIC_RULES:
    converter(_name, since=6)(_variadic)


@converter("Where", since=9)
def _where(cx: Ctx, n: Node) -> list[Sym]:
    return [cx.op1(n, nn.Where, [n.x(0), n.x(1), n.x(2)])]


@converter("Gelu", since=20)
def _gelu(cx: Ctx, n: Node) -> list[Sym]:
    return [cx.op1(n, nn.Gelu, [n.x()], {"approximate": n.attr("approximate", "none")})]


def _clip_bounds(lo: float | None, hi: float | None) -> dict[str, float | None]:
    lo = None if lo is None or lo == -math.inf else float(lo)
    hi = None if hi is None or hi == math.inf else float(hi)
    return {"min": lo, "max": hi}


@converter("Clip", since=6)
def _clip_6(cx: Ctx, n: Node) -> list[Sym]:
    return [cx.op1(n, nn.Clip, [n.x()], _clip_bounds(n.attr("min"), n.attr("max")))]


@converter("Clip", since=11)
def _clip_11(cx: Ctx, n: Node) -> list[Sym]:
    lo, hi = n.const(1), n.const(2)
    x = n.x()
    return [cx.op1(n, nn.Clip, [x], _clip_bounds(None if lo is None else lo.item(), None if hi is None else hi.item()))]


@converter("Identity", since=1)
def _identity(cx: Ctx, n: Node) -> list[Sym]:
    return [n.x()]


@converter("Dropout", since=7)
def _dropout_7(cx: Ctx, n: Node) -> list[Sym | None]:
    x = n.x()
    return [x, _mask(n, x)]


@converter("Dropout", since=12)
def _dropout_12(cx: Ctx, n: Node) -> list[Sym | None]:
    x = n.x()
    training = n.const(2, False)
    ratio = n.const(1, 0.5)
    if bool(np.asarray(training).item()) and float(np.asarray(ratio).item()) != 0.0:
        raise n.unsupported("training-mode Dropout (random masks)")
    return [x, _mask(n, x)]


def _mask(n: Node, x: Sym) -> Const | None:
    if len(n.outputs) < 2 or not n.outputs[1]:
        return None
    return Const(np.ones(shape_of(x), dtype=np.bool_), n.outputs[1])


def _softmax(cls: type[Operation], legacy: bool) -> Converter:
    def conv(cx: Ctx, n: Node) -> list[Sym]:
        x = n.x()
        shape = shape_of(x)
        r = len(shape)
        ax = axis_of(n.attr("axis", 1 if legacy else -1), r, n)
        if not legacy or ax == r - 1:
            return [cx.op1(n, cls, [x], {"axis": ax})]
        # opsets < 13: the input is flattened to 2-D at ``axis`` and normalised over the trailing block
        flat = cx.op1(n, nn.Reshape, [x], {"shape": [math.prod(shape[:ax]), math.prod(shape[ax:])]}, out=False)
        y = cx.op1(n, cls, [flat], {"axis": 1}, out=False)
        return [cx.op1(n, nn.Reshape, [y], {"shape": list(shape)})]

    return conv


converter("Softmax", since=1)(_softmax(nn.Softmax, True))
converter("Softmax", since=13)(_softmax(nn.Softmax, False))
converter("LogSoftmax", since=1)(_softmax(nn.LogSoftmax, True))
converter("LogSoftmax", since=13)(_softmax(nn.LogSoftmax, False))
converter("Hardmax", since=1)(_softmax(nn.Hardmax, True))
converter("Hardmax", since=13)(_softmax(nn.Hardmax, False))


@converter("Cast", since=6)
def _cast_node(cx: Ctx, n: Node) -> list[Sym]:
    return _cast_to(cx, n, n.x(), int(n.attr("to")))


@converter("CastLike", since=15)
def _cast_like(cx: Ctx, n: Node) -> list[Sym]:
    like = n.x(1)
    ir_of = {v: k for k, v in ONNX_TO_IR.items()}
    dtype = ir_dtype(like)
    if dtype is None or dtype not in ir_of:
        raise n.unsupported(f"CastLike to the element type of {n.proto.input[1]!r}")
    return _cast_to(cx, n, n.x(0), ir_of[dtype])


def _cast_to(cx: Ctx, n: Node, x: Sym, to: int) -> list[Sym]:
    if isinstance(x, Const) and to in NUMPY_TYPES:
        return [Const(x.data.astype(NUMPY_TYPES[to]), n.outputs[0])]
    dtype = ONNX_TO_IR.get(to)
    if dtype is None:
        raise n.unsupported(f"Cast to {onnx_type_name(to)}")
    if ir_dtype(x) == dtype:
        return [x]
    return [cx.op1(n, nn.Cast, [x], type=cx.type_of(x).with_dtype(dtype))]


# ----------------------------------------------------------------------------------------------- reductions


def _reduce(cls: type[Operation], axes_input: bool) -> Converter:
    def conv(cx: Ctx, n: Node) -> list[Sym]:
        x = n.x()
        keep = bool(n.attr("keepdims", 1))
        axes = n.ints(1) if axes_input else (list(n.attr("axes")) if n.attr("axes") is not None else None)
        if axes is not None and len(axes) == 0:
            axes = None
        if axes is None and int(n.attr("noop_with_empty_axes", 0)):
            return [x]
        r = len(shape_of(x))
        attrs: dict[str, Any] = {"keepdims": keep}
        if axes is not None:
            attrs["axes"] = sorted({axis_of(a, r, n) for a in axes})
        return [cx.op1(n, cls, [x], attrs)]

    return conv


#: ONNX reduction -> (nn op, the opset from which ``axes`` is an input rather than an attribute)
REDUCE_RULES: dict[str, tuple[type[Operation], int]] = {
    "ReduceMean": (nn.ReduceMean, 18),
    "ReduceSum": (nn.ReduceSum, 13),
    "ReduceMax": (nn.ReduceMax, 18),
    "ReduceMin": (nn.ReduceMin, 18),
    "ReduceProd": (nn.ReduceProd, 18),
    "ReduceL1": (nn.ReduceL1, 18),
    "ReduceL2": (nn.ReduceL2, 18),
    "ReduceLogSum": (nn.ReduceLogSum, 18),
    "ReduceLogSumExp": (nn.ReduceLogSumExp, 18),
    "ReduceSumSquare": (nn.ReduceSumSquare, 18),
}
for _name, (_cls, _since) in REDUCE_RULES.items():
    converter(_name, since=1)(_reduce(_cls, False))
    converter(_name, since=_since)(_reduce(_cls, True))


@converter("ArgMax", "ArgMin", since=1)
def _arg_reduce(cx: Ctx, n: Node) -> list[Sym]:
    cls = nn.ArgMax if n.op_type == "ArgMax" else nn.ArgMin
    attrs = mapped_attrs(n, cls)
    attrs["axis"] = axis_of(int(n.attr("axis", 0)), len(shape_of(n.x())), n)
    return [cx.op1(n, cls, [n.x()], attrs)]
