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
)
from pcc.ir import Operation

# ----------------------------------------------------------------------------------------------- elementwise

_BINARY = {"Add": nn.Add, "Sub": nn.Sub, "Mul": nn.Mul, "Div": nn.Div, "Pow": nn.Pow}


@converter("Add", "Sub", "Mul", "Div", "Pow", since=7)
def _binary(cx: Ctx, n: Node) -> list[Sym]:
    a, b = n.x(0), n.x(1)
    if n.op_type == "Pow" and ir_dtype(a) != ir_dtype(b):  # Pow allows a different exponent type
        b = cast(cx, n, b, cx.type_of(a).dtype)
    return [cx.op1(n, _BINARY[n.op_type], [a, b])]


_UNARY: dict[str, type[Operation]] = {
    "Relu": nn.Relu,
    "Sigmoid": nn.Sigmoid,
    "Tanh": nn.Tanh,
    "Erf": nn.Erf,
    "Sqrt": nn.Sqrt,
    "Exp": nn.Exp,
    "Neg": nn.Neg,
    "HardSwish": nn.HardSwish,
}


@converter("Relu", "Sigmoid", "Tanh", "Sqrt", "Exp", "Neg", since=6)
@converter("Erf", since=9)
@converter("HardSwish", since=14)
def _unary(cx: Ctx, n: Node) -> list[Sym]:
    return [cx.op1(n, _UNARY[n.op_type], [n.x()])]


@converter("LeakyRelu", since=6)
def _leaky_relu(cx: Ctx, n: Node) -> list[Sym]:
    return [cx.op1(n, nn.LeakyRelu, [n.x()], {"alpha": float(n.attr("alpha", 0.01))})]


@converter("HardSigmoid", since=6)
def _hard_sigmoid(cx: Ctx, n: Node) -> list[Sym]:
    attrs = {"alpha": float(n.attr("alpha", 0.2)), "beta": float(n.attr("beta", 0.5))}
    return [cx.op1(n, nn.HardSigmoid, [n.x()], attrs)]


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


@converter("Cast", since=6)
def _cast_node(cx: Ctx, n: Node) -> list[Sym]:
    to = int(n.attr("to"))
    x = n.x()
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


converter("ReduceMean", since=1)(_reduce(nn.ReduceMean, False))
converter("ReduceMean", since=18)(_reduce(nn.ReduceMean, True))
converter("ReduceSum", since=1)(_reduce(nn.ReduceSum, False))
converter("ReduceSum", since=13)(_reduce(nn.ReduceSum, True))
