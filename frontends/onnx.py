"""ONNX models into the ``nn`` IR.

``load(path_or_model, input_shapes=None)`` reads a ``.onnx`` file (external data included) or a ``ModelProto``
and returns a verified :class:`~pcc.ir.Module` whose ``@main`` has one argument per graph input and one result
per graph output, named as in the model.  The steps:

1. Parse; a truncated or foreign file is one clear error naming it.
2. Check, before anything else, that every operator has a converter for the model's opset: one error lists
   every unsupported operator with the nodes using it.
3. Upgrade opsets below 7 with ``onnx.version_converter``; fix symbolic input dimensions (``input_shapes``,
   or a symbolic batch of 1 with a note on stderr); run ONNX shape inference (used to cross-check every
   converted node's result type).
4. Convert node by node.  Each op type has converters registered per opset (``@converter("Clip", since=11)``);
   the newest one not newer than the model's opset is used.  Initializers and ``Constant`` nodes become
   constants; a node whose inputs are all constants is folded at import (through the reference interpreter,
   or NumPy for shape-only ops such as ``Shape``/``Range``/``Where``), so shape computations disappear and
   only constants used by real ops are stored as module weights.

Every op carries ``loc=Location(file, node)``, the ONNX node it came from.  Inputs that must be constants
(a ``Reshape`` shape, ``Clip`` bounds, ``Pad`` pads, ...) are listed in :data:`PARAM_INPUTS`; a graph input in
such a slot can be fixed with ``bind={"name": array}``.
"""

from __future__ import annotations

import math
import os
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from pcc.diagnostics import Location, PccError
from pcc.dialects import nn
from pcc.frontends import Builder, Const, Sym, ir_dtype, shape_of
from pcc.ir import Module, Operation, TensorType

__all__ = ["load", "load_proto", "check_supported", "supported_ops", "PARAM_INPUTS", "MIN_OPSET", "MAX_OPSET"]

MIN_OPSET = 7
MAX_OPSET = onnx.defs.onnx_opset_version()

# ONNX element types the IR can hold
_ONNX_TO_IR = {
    TensorProto.FLOAT: "f32",
    TensorProto.FLOAT16: "f16",
    TensorProto.DOUBLE: "f64",
    TensorProto.INT8: "i8",
    TensorProto.INT16: "i16",
    TensorProto.INT32: "i32",
    TensorProto.INT64: "i64",
    TensorProto.UINT8: "u8",
    TensorProto.BOOL: "i1",
}


def _onnx_type_name(elem: int) -> str:
    try:
        return TensorProto.DataType.Name(elem)
    except ValueError:
        return f"type #{elem}"


# ----------------------------------------------------------------------------------------------- registry

Converter = Callable[["Ctx", "Node"], Sequence[Sym | None]]
CONVERTERS: dict[str, list[tuple[int, Converter]]] = {}

#: inputs that must be known at import (index -> role), by op type: shapes, axes, bounds, pads, scales.
PARAM_INPUTS: dict[str, dict[int, str]] = {
    "Clip": {1: "min", 2: "max"},
    "Reshape": {1: "shape"},
    "Slice": {1: "starts", 2: "ends", 3: "axes", 4: "steps"},
    "Pad": {1: "pads", 2: "constant_value", 3: "axes"},
    "Split": {1: "split"},
    "Squeeze": {1: "axes"},
    "Unsqueeze": {1: "axes"},
    "Resize": {1: "roi", 2: "scales", 3: "sizes"},
    "Upsample": {1: "scales"},
    "ReduceMean": {1: "axes"},
    "ReduceSum": {1: "axes"},
    "Expand": {1: "shape"},
    "Dropout": {1: "ratio", 2: "training_mode"},
    "ConstantOfShape": {0: "input"},
    "Range": {0: "start", 1: "limit", 2: "delta"},
    "BatchNormalization": {3: "input_mean", 4: "input_var"},
}

#: ops that exist only at import: they are folded, so all their inputs must be constants.
FOLD_ONLY: set[str] = set()


def converter(*op_types: str, since: int = 1) -> Callable[[Converter], Converter]:
    """Register a converter for ``op_types`` valid from opset ``since`` (until a newer one is registered)."""

    def deco(fn: Converter) -> Converter:
        for t in op_types:
            CONVERTERS.setdefault(t, []).append((since, fn))
            CONVERTERS[t].sort(key=lambda p: p[0])
        return fn

    return deco


def _pick(op_type: str, opset: int) -> Converter | None:
    best = None
    for since, fn in CONVERTERS.get(op_type, []):
        if since <= opset:
            best = fn
    return best


def supported_ops(opset: int = MAX_OPSET) -> list[str]:
    """The ONNX operator types that import at ``opset``."""
    return sorted(t for t in CONVERTERS if _pick(t, opset) is not None)


# ----------------------------------------------------------------------------------------------- nodes


class Node:
    """One ONNX node during conversion: resolved inputs, attributes, output names and its location."""

    def __init__(self, proto: onnx.NodeProto, index: int, ins: list[Sym | None], cx: Ctx) -> None:
        self.proto = proto
        self.op_type = proto.op_type
        self.name = proto.name or f"{proto.op_type}_{index}"
        self.inputs = ins
        self.outputs = list(proto.output)
        self.cx = cx
        self.attrs: dict[str, Any] = {}
        for a in proto.attribute:
            if a.ref_attr_name:
                raise self.error(f"attribute {a.name!r} refers to a function attribute (only in functions)")
            v = helper.get_attribute_value(a)
            if isinstance(v, bytes):
                v = v.decode("utf-8", "replace")
            elif isinstance(v, list) and v and isinstance(v[0], bytes):
                v = [s.decode("utf-8", "replace") for s in v]
            self.attrs[a.name] = v
        self.loc = Location(cx.file, node=self.name)

    def attr(self, key: str, default: Any = None) -> Any:
        return self.attrs.get(key, default)

    def input(self, i: int) -> Sym | None:
        return self.inputs[i] if i < len(self.inputs) else None

    def x(self, i: int = 0) -> Sym:
        """A required input."""
        s = self.input(i)
        if s is None:
            raise self.error(f"input #{i} is required")
        return s

    def const(self, i: int, default: Any = None) -> np.ndarray | None:
        """Input ``i`` as a constant array (``default`` when absent); an error when it is computed at run time."""
        s = self.input(i)
        if s is None:
            return None if default is None else np.asarray(default)
        if isinstance(s, Const):
            return s.data
        role = PARAM_INPUTS.get(self.op_type, {}).get(i, f"#{i}")
        raise self.error(
            f"input {role!r} ({self.proto.input[i]!r}) must be known at import time (a constant, an initializer "
            "or computed from shapes only), but it depends on a graph input; pcc compiles static graphs"
        )

    def ints(self, i: int, default: Any = None) -> list[int] | None:
        a = self.const(i, default)
        return None if a is None else [int(v) for v in np.asarray(a).reshape(-1)]

    def error(self, message: str) -> PccError:
        return PccError(f"ONNX node {self.name!r} ({self.op_type}): {message}", self.loc)

    def unsupported(self, what: str) -> PccError:
        return self.error(f"{what} is not supported")


# ----------------------------------------------------------------------------------------------- context


class Ctx(Builder):
    """ONNX conversion state: the builder plus the opset, ONNX shape-inference results and the name map."""

    def __init__(self, module: Module, file: str | None, opset: int, inferred: dict[str, Any], names: set[str]):
        super().__init__(module, file, names)
        self.opset = opset
        self.inferred = inferred
        self.env: dict[str, Sym] = {}

    def static_shape(self, name: str) -> list[int] | None:
        """The output's shape as ONNX shape inference found it, when fully static."""
        info = self.inferred.get(name)
        if info is None or any(d is None for d in info[0]):
            return None
        return list(info[0])  # type: ignore[arg-type]


# ----------------------------------------------------------------------------------------------- helpers


def _axis(a: int, rank: int, n: Node) -> int:
    if not -rank <= a < max(rank, 1):
        raise n.error(f"axis {a} is out of range for rank {rank}")
    return a % max(rank, 1)


def _resolve_pads(
    n: Node, spatial: Sequence[int], kernel: Sequence[int], strides: Sequence[int], dil: Sequence[int]
) -> list[int]:
    """Explicit ``[begin..., end...]`` pads from ``pads`` / ``auto_pad``."""
    k = len(kernel)
    auto = n.attr("auto_pad", "NOTSET")
    if auto in ("NOTSET", ""):
        pads = list(n.attr("pads", [0] * (2 * k)))
        if len(pads) != 2 * k:
            raise n.error(f"pads needs {2 * k} values, got {pads}")
        return pads
    if auto == "VALID":
        return [0] * (2 * k)
    if auto in ("SAME_UPPER", "SAME_LOWER"):
        lo, hi = [], []
        for i in range(k):
            out = -(-spatial[i] // strides[i])
            eff = dil[i] * (kernel[i] - 1) + 1
            total = max(0, (out - 1) * strides[i] + eff - spatial[i])
            small = total // 2
            big = total - small
            lo.append(small if auto == "SAME_UPPER" else big)
            hi.append(big if auto == "SAME_UPPER" else small)
        return lo + hi
    raise n.error(f"unknown auto_pad {auto!r}")


def _values(cx: Ctx, n: Node) -> list[Sym]:
    return [s for s in n.inputs if s is not None]


# ----------------------------------------------------------------------------------------------- elementwise

_BINARY = {"Add": nn.Add, "Sub": nn.Sub, "Mul": nn.Mul, "Div": nn.Div, "Pow": nn.Pow}


@converter("Add", "Sub", "Mul", "Div", "Pow", since=7)
def _binary(cx: Ctx, n: Node) -> list[Sym]:
    a, b = n.x(0), n.x(1)
    if n.op_type == "Pow" and ir_dtype(a) != ir_dtype(b):  # Pow allows a different exponent type
        b = _cast(cx, n, b, cx.type_of(a).dtype)
    return [cx.op1(n, _BINARY[n.op_type], [a, b])]


def _cast(cx: Ctx, n: Node, s: Sym, dtype: str) -> Sym:
    if isinstance(s, Const):
        return Const(s.data.astype(TensorType((), dtype).np_dtype), s.name)
    return cx.op1(n, nn.Cast, [s], out=False, type=s.type.with_dtype(dtype))


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
        ax = _axis(n.attr("axis", 1 if legacy else -1), r, n)
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
    if isinstance(x, Const) and to in _NUMPY_TYPES:
        return [Const(x.data.astype(_NUMPY_TYPES[to]), n.outputs[0])]
    dtype = _ONNX_TO_IR.get(to)
    if dtype is None:
        raise n.unsupported(f"Cast to {_onnx_type_name(to)}")
    if ir_dtype(x) == dtype:
        return [x]
    return [cx.op1(n, nn.Cast, [x], type=cx.type_of(x).with_dtype(dtype))]


_NUMPY_TYPES = {
    TensorProto.FLOAT: np.float32,
    TensorProto.FLOAT16: np.float16,
    TensorProto.DOUBLE: np.float64,
    TensorProto.INT8: np.int8,
    TensorProto.INT16: np.int16,
    TensorProto.INT32: np.int32,
    TensorProto.INT64: np.int64,
    TensorProto.UINT8: np.uint8,
    TensorProto.UINT16: np.uint16,
    TensorProto.UINT32: np.uint32,
    TensorProto.UINT64: np.uint64,
    TensorProto.BOOL: np.bool_,
}


# ----------------------------------------------------------------------------------------------- linear algebra


@converter("Conv", since=1)
def _conv(cx: Ctx, n: Node) -> list[Sym]:
    x, w, b = n.x(0), n.x(1), n.input(2)
    xs, ws = shape_of(x), shape_of(w)
    if len(xs) not in (3, 4) or len(ws) != len(xs):
        raise n.unsupported(f"{len(xs) - 2}-D convolution (input {list(xs)}, weight {list(ws)}); 1-D and 2-D are")
    k = list(n.attr("kernel_shape", ws[2:]))
    if list(k) != list(ws[2:]):
        raise n.error(f"kernel_shape {k} does not match the weight shape {list(ws)}")
    nd = len(k)
    strides = list(n.attr("strides", [1] * nd))
    dil = list(n.attr("dilations", [1] * nd))
    pads = _resolve_pads(n, xs[2:], k, strides, dil)
    group = int(n.attr("group", 1))
    if nd == 1:  # a 1-D convolution is a 2-D one over a height of 1
        x = cx.op1(n, nn.Reshape, [x], {"shape": [xs[0], xs[1], 1, xs[2]]}, out=False)
        w = cx.op1(n, nn.Reshape, [w], {"shape": [ws[0], ws[1], 1, ws[2]]}, out=False)
        strides, dil, pads = [1, strides[0]], [1, dil[0]], [0, pads[0], 0, pads[1]]
    attrs = {"strides": strides, "pads": pads, "dilations": dil, "group": group}
    operands = [x, w] + ([b] if b is not None else [])
    y = cx.op1(n, nn.Conv2d, operands, attrs, out=nd == 2)
    if nd == 1:
        ys = shape_of(y)
        y = cx.op1(n, nn.Reshape, [y], {"shape": [ys[0], ys[1], ys[3]]})
    return [y]


@converter("Gemm", since=7)
def _gemm(cx: Ctx, n: Node) -> list[Sym]:
    attrs = {  # defaults left out, as ONNX writes them
        "alpha": float(n.attr("alpha")) if n.attr("alpha", 1.0) != 1.0 else None,
        "beta": float(n.attr("beta")) if n.attr("beta", 1.0) != 1.0 else None,
        "trans_a": True if n.attr("transA", 0) else None,
        "trans_b": True if n.attr("transB", 0) else None,
    }
    c = n.input(2)
    return [cx.op1(n, nn.Gemm, [n.x(0), n.x(1)] + ([c] if c is not None else []), attrs)]


@converter("MatMul", since=1)
def _matmul(cx: Ctx, n: Node) -> list[Sym]:
    return [cx.op1(n, nn.MatMul, [n.x(0), n.x(1)])]


# ----------------------------------------------------------------------------------------------- pooling


def _pool(cls: type[Operation]) -> Converter:
    def conv(cx: Ctx, n: Node) -> list[Sym | None]:
        x = n.x()
        xs = shape_of(x)
        if len(n.outputs) > 1 and n.outputs[1]:
            raise n.unsupported("MaxPool's Indices output")
        if int(n.attr("storage_order", 0)) != 0:
            raise n.unsupported("storage_order=1")
        k = list(n.attr("kernel_shape"))
        nd = len(k)
        if len(xs) != nd + 2:
            raise n.error(f"a {nd}-D window on input {list(xs)}")
        strides = list(n.attr("strides", [1] * nd))
        dil = list(n.attr("dilations", [1] * nd))
        attrs: dict[str, Any] = {
            "kernel_shape": k,
            "strides": strides,
            "pads": _resolve_pads(n, xs[2:], k, strides, dil),
            "dilations": dil,
            "ceil_mode": bool(n.attr("ceil_mode", 0)),
        }
        if cls is nn.AvgPool:
            attrs["count_include_pad"] = bool(n.attr("count_include_pad", 0))
        return [cx.op1(n, cls, [x], attrs)]

    return conv


converter("MaxPool", since=1)(_pool(nn.MaxPool))
converter("AveragePool", since=1)(_pool(nn.AvgPool))


@converter("GlobalAveragePool", since=1)
def _gap(cx: Ctx, n: Node) -> list[Sym]:
    return [cx.op1(n, nn.GlobalAvgPool, [n.x()])]


@converter("GlobalMaxPool", since=1)
def _gmp(cx: Ctx, n: Node) -> list[Sym]:
    return [cx.op1(n, nn.GlobalMaxPool, [n.x()])]


# ----------------------------------------------------------------------------------------------- normalisation


@converter("BatchNormalization", since=7)
def _batch_norm(cx: Ctx, n: Node) -> list[Sym | None]:
    if int(n.attr("training_mode", 0)):
        raise n.unsupported("training-mode BatchNormalization")
    if int(n.attr("spatial", 1)) != 1:
        raise n.unsupported("BatchNormalization with spatial=0")
    if any(o for o in n.outputs[1:]):
        raise n.unsupported("BatchNormalization's training outputs (running/saved mean and variance)")
    ops = [n.x(i) for i in range(5)]
    return [cx.op1(n, nn.BatchNorm, ops, {"epsilon": float(n.attr("epsilon", 1e-5))})]


@converter("LayerNormalization", since=17)
def _layer_norm(cx: Ctx, n: Node) -> list[Sym | None]:
    x, scale, bias = n.x(0), n.x(1), n.input(2)
    shape = shape_of(x)
    ax = _axis(int(n.attr("axis", -1)), len(shape), n)
    eps = float(n.attr("epsilon", 1e-5))
    dtype = cx.type_of(x).dtype
    if int(n.attr("stash_type", 1)) != 1 and dtype != "f64":
        raise n.unsupported("stash_type other than float32")
    want_stats = len(n.outputs) > 1 and any(n.outputs[1:])
    if not want_stats:
        return [
            cx.op1(n, nn.LayerNorm, [x, scale] + ([bias] if bias is not None else []), {"axis": ax, "epsilon": eps})
        ]
    # the Mean / InvStdDev outputs: spell the normalisation out
    axes = list(range(ax, len(shape)))
    npd = TensorType((), dtype).np_dtype
    mean = cx.op1(n, nn.ReduceMean, [x], {"axes": axes, "keepdims": True}, out=False)
    d = cx.op1(n, nn.Sub, [x, mean], out=False)
    var = cx.op1(n, nn.ReduceMean, [cx.op1(n, nn.Mul, [d, d], out=False)], {"axes": axes, "keepdims": True}, out=False)
    std = cx.op1(n, nn.Sqrt, [cx.op1(n, nn.Add, [var, Const(np.array(eps, npd), "epsilon")], out=False)], out=False)
    inv = cx.op1(n, nn.Div, [Const(np.array(1, npd), "one"), std], out=False)
    y = cx.op1(n, nn.Mul, [cx.op1(n, nn.Mul, [d, inv], out=False), scale], out=bias is None)
    if bias is not None:
        y = cx.op1(n, nn.Add, [y, bias])
    outs: list[Sym | None] = [y]
    for k, v in ((1, mean), (2, inv)):
        outs.append(cx.op1(n, nn.Identity, [v], out=False) if k < len(n.outputs) and n.outputs[k] else None)
    return outs


# ----------------------------------------------------------------------------------------------- shapes


@converter("Flatten", since=1)
def _flatten(cx: Ctx, n: Node) -> list[Sym]:
    x = n.x()
    r = len(shape_of(x))
    a = int(n.attr("axis", 1))
    if not -r <= a <= r:
        raise n.error(f"axis {a} is out of range for rank {r}")
    return [cx.op1(n, nn.Flatten, [x], {"axis": a + r if a < 0 else a})]


def _reshape_target(n: Node, shape: Sequence[int], target: Sequence[int], allowzero: bool) -> list[int]:
    out = []
    for i, d in enumerate(target):
        if d == 0 and not allowzero:
            if i >= len(shape):
                raise n.error(f"shape {list(target)}: 0 at position {i} copies a dimension the input lacks")
            out.append(shape[i])
        else:
            out.append(d)
    if out.count(-1) > 1:
        raise n.error(f"shape {list(target)} has more than one -1")
    if -1 in out:
        known = math.prod(d for d in out if d != -1)
        total = math.prod(shape)
        if known == 0 or total % known:
            raise n.error(f"cannot reshape {list(shape)} to {list(target)}")
        out[out.index(-1)] = total // known
    if math.prod(out) != math.prod(shape) or any(d < 0 for d in out):
        raise n.error(f"cannot reshape {list(shape)} ({math.prod(shape)} elements) to {list(target)}")
    return out


@converter("Reshape", since=5)
def _reshape(cx: Ctx, n: Node) -> list[Sym]:
    x = n.x()
    target = _reshape_target(n, shape_of(x), n.ints(1) or [], bool(n.attr("allowzero", 0)))
    return [cx.op1(n, nn.Reshape, [x], {"shape": target})]


@converter("Transpose", since=1)
def _transpose(cx: Ctx, n: Node) -> list[Sym]:
    x = n.x()
    r = len(shape_of(x))
    perm = [int(p) for p in n.attr("perm", list(range(r))[::-1])]
    return [cx.op1(n, nn.Transpose, [x], {"perm": [p % r if r else p for p in perm]})]


@converter("Concat", since=4)
def _concat(cx: Ctx, n: Node) -> list[Sym]:
    xs = _values(cx, n)
    r = len(shape_of(xs[0]))
    ax = _axis(int(n.attr("axis")), r, n)
    xs = [s for s in xs if shape_of(s)[ax] != 0 or len(xs) == 1]  # empty pieces add nothing
    if len(xs) == 1:
        return [xs[0]]
    return [cx.op1(n, nn.Concat, xs, {"axis": ax})]


def _split_sizes(n: Node, dim: int, split: list[int] | None, count: int, num_outputs: int | None) -> list[int]:
    if split is not None:
        if sum(split) != dim or len(split) != count:
            raise n.error(f"split {split} does not cut a dimension of {dim} into {count} outputs")
        return split
    parts = num_outputs or count
    if num_outputs is not None:  # opset 18: the last piece may be smaller
        size = -(-dim // parts)
        sizes = [size] * (parts - 1) + [dim - size * (parts - 1)]
        if sizes[-1] < 0:
            raise n.error(f"cannot split {dim} into {parts} pieces of {size}")
        return sizes
    if dim % parts:
        raise n.error(f"cannot split a dimension of {dim} into {parts} equal parts")
    return [dim // parts] * parts


def _split(cx: Ctx, n: Node, split: list[int] | None, num_outputs: int | None = None) -> list[Sym]:
    x = n.x()
    shape = shape_of(x)
    ax = _axis(int(n.attr("axis", 0)), len(shape), n)
    sizes = _split_sizes(n, shape[ax], split, len(n.outputs), num_outputs)
    ts = [cx.type_of(x).with_shape(shape[:ax] + (s,) + shape[ax + 1 :]) for s in sizes]
    return cx.emit(n, nn.Split, [x], {"axis": ax, "split": sizes}, types=ts, names=n.outputs)


@converter("Split", since=2)
def _split_2(cx: Ctx, n: Node) -> list[Sym]:
    s = n.attr("split")
    return _split(cx, n, list(s) if s else None)


@converter("Split", since=13)
def _split_13(cx: Ctx, n: Node) -> list[Sym]:
    return _split(cx, n, n.ints(1))


@converter("Split", since=18)
def _split_18(cx: Ctx, n: Node) -> list[Sym]:
    num = n.attr("num_outputs")
    return _split(cx, n, n.ints(1), None if num is None else int(num))


def _slice(cx: Ctx, n: Node, starts: list[int], ends: list[int], axes: list[int] | None, steps: list[int] | None):
    x = n.x()
    shape = shape_of(x)
    r = len(shape)
    axes = list(range(len(starts))) if axes is None else [_axis(a, r, n) for a in axes]
    steps = [1] * len(starts) if steps is None else steps
    if not len(starts) == len(ends) == len(axes) == len(steps):
        raise n.error("starts, ends, axes and steps must have the same length")
    if len(set(axes)) != len(axes):
        raise n.error(f"axes {axes} repeat an axis")
    if any(s == 0 for s in steps):
        raise n.error("a slice step of 0")

    def clamp(v: int, d: int) -> int:  # same meaning, small numbers (INT64_MAX -> d)
        return max(-d - 1, min(v, d))

    starts = [clamp(s, shape[a]) for s, a in zip(starts, axes, strict=True)]
    ends = [clamp(e, shape[a]) for e, a in zip(ends, axes, strict=True)]
    out = list(shape)
    for s, e, a, st in zip(starts, ends, axes, steps, strict=True):
        out[a] = len(range(*slice(s, e, st).indices(shape[a])))
    if tuple(out) == shape and all(st == 1 for st in steps):
        return [x]
    attrs = {"starts": starts, "ends": ends, "axes": axes, "steps": steps}
    return [cx.op1(n, nn.Slice, [x], attrs)]


@converter("Slice", since=1)
def _slice_1(cx: Ctx, n: Node) -> list[Sym]:
    axes = n.attr("axes")
    return _slice(cx, n, list(n.attr("starts")), list(n.attr("ends")), None if axes is None else list(axes), None)


@converter("Slice", since=10)
def _slice_10(cx: Ctx, n: Node) -> list[Sym]:
    return _slice(cx, n, n.ints(1) or [], n.ints(2) or [], n.ints(3), n.ints(4))


def _squeeze(cx: Ctx, n: Node, axes: list[int] | None) -> list[Sym]:
    x = n.x()
    shape = shape_of(x)
    if axes is None:
        axes = [i for i, d in enumerate(shape) if d == 1]
    axes = sorted({_axis(a, len(shape), n) for a in axes})
    if any(shape[a] != 1 for a in axes):
        raise n.error(f"cannot squeeze axes {axes} of shape {list(shape)}: not of size 1")
    if not axes:
        return [x]
    return [cx.op1(n, nn.Squeeze, [x], {"axes": axes})]


@converter("Squeeze", since=1)
def _squeeze_1(cx: Ctx, n: Node) -> list[Sym]:
    a = n.attr("axes")
    return _squeeze(cx, n, None if a is None else list(a))


@converter("Squeeze", since=13)
def _squeeze_13(cx: Ctx, n: Node) -> list[Sym]:
    return _squeeze(cx, n, n.ints(1))


def _unsqueeze(cx: Ctx, n: Node, axes: list[int]) -> list[Sym]:
    x = n.x()
    r = len(shape_of(x)) + len(axes)
    axes = sorted(_axis(a, r, n) for a in axes)
    if len(set(axes)) != len(axes):
        raise n.error(f"axes {axes} repeat an axis")
    return [cx.op1(n, nn.Unsqueeze, [x], {"axes": axes})]


@converter("Unsqueeze", since=1)
def _unsqueeze_1(cx: Ctx, n: Node) -> list[Sym]:
    return _unsqueeze(cx, n, list(n.attr("axes")))


@converter("Unsqueeze", since=13)
def _unsqueeze_13(cx: Ctx, n: Node) -> list[Sym]:
    return _unsqueeze(cx, n, n.ints(1) or [])


def _pad(cx: Ctx, n: Node, pads: list[int], mode: str, value: float, axes: list[int] | None) -> list[Sym]:
    x = n.x()
    r = len(shape_of(x))
    if axes is not None:
        full = [0] * (2 * r)
        k = len(axes)
        if len(pads) != 2 * k:
            raise n.error(f"pads needs {2 * k} values for axes {axes}, got {pads}")
        for j, a in enumerate(axes):
            a = _axis(a, r, n)
            full[a], full[a + r] = pads[j], pads[j + k]
        pads = full
    if len(pads) != 2 * r:
        raise n.error(f"pads needs {2 * r} values for rank {r}, got {pads}")
    if mode not in nn.PAD_MODES:
        raise n.unsupported(f"Pad mode {mode!r}")
    if not any(pads):
        return [x]
    return [cx.op1(n, nn.Pad, [x], {"pads": pads, "mode": mode, "value": float(value)})]


@converter("Pad", since=2)
def _pad_2(cx: Ctx, n: Node) -> list[Sym]:
    return _pad(cx, n, list(n.attr("pads")), n.attr("mode", "constant"), float(n.attr("value", 0.0)), None)


@converter("Pad", since=11)
def _pad_11(cx: Ctx, n: Node) -> list[Sym]:
    value = n.const(2)
    v = 0.0 if value is None or value.size == 0 else float(value.reshape(-1)[0])
    return _pad(cx, n, n.ints(1) or [], n.attr("mode", "constant"), v, n.ints(3))


@converter("Expand", since=8)
def _expand(cx: Ctx, n: Node) -> list[Sym]:
    x = n.x()
    shape = n.ints(1) or []
    try:
        out = np.broadcast_shapes(shape_of(x), tuple(shape))
    except ValueError:
        raise n.error(f"cannot expand {list(shape_of(x))} to {shape}") from None
    if tuple(out) == shape_of(x):
        return [x]
    return [cx.op1(n, nn.Expand, [x], {"shape": shape})]


@converter("Gather", since=1)
def _gather(cx: Ctx, n: Node) -> list[Sym]:
    x, idx = n.x(0), n.x(1)
    r = len(shape_of(x))
    ax = _axis(int(n.attr("axis", 0)), r, n)
    if isinstance(idx, Const) and idx.data.dtype not in (np.int32, np.int64):
        idx = Const(idx.data.astype(np.int64), idx.name)
    return [cx.op1(n, nn.Gather, [x, idx], {"axis": ax})]


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
            attrs["axes"] = sorted({_axis(a, r, n) for a in axes})
        return [cx.op1(n, cls, [x], attrs)]

    return conv


converter("ReduceMean", since=1)(_reduce(nn.ReduceMean, False))
converter("ReduceMean", since=18)(_reduce(nn.ReduceMean, True))
converter("ReduceSum", since=1)(_reduce(nn.ReduceSum, False))
converter("ReduceSum", since=13)(_reduce(nn.ReduceSum, True))


# ----------------------------------------------------------------------------------------------- resize


def _resize_nearest(
    cx: Ctx,
    n: Node,
    scales: list[float],
    out_shape: list[int],
    coord: str,
    rounding: str,
    *,
    out: bool = True,
    x: Sym | None = None,
) -> Sym:
    x = n.x() if x is None else x
    attrs = {
        "mode": "nearest",
        "coordinate_transformation_mode": coord,
        "nearest_mode": rounding,
        "scales": [float(s) for s in scales],
    }
    if list(out_shape) == list(shape_of(x)) and all(s == 1.0 for s in scales):
        return x
    return cx.op1(n, nn.Resize, [x], attrs, type=cx.type_of(x).with_shape(out_shape), out=out)


def _floor_sizes(shape: Sequence[int], scales: Sequence[float]) -> list[int]:
    return [int(math.floor(d * float(np.float32(s)))) for d, s in zip(shape, scales, strict=True)]


def _upsample(cx: Ctx, n: Node, scales: list[float]) -> list[Sym]:
    """Upsample and Resize-10, mode nearest: asymmetric coordinates, ``floor`` on axes scaled up and ``ceil`` on
    axes scaled down (what onnxruntime does; the opset-10 spec leaves it open).  Nearest-neighbour resizing is
    separable, so mixed up/down scales become two ``nn.resize`` ops."""
    mode = n.attr("mode", "nearest")
    if mode != "nearest":
        raise n.unsupported(f"{n.op_type} mode {mode!r} (only nearest)")
    x = n.x()
    shape = list(shape_of(x))
    if len(scales) != len(shape) or any(not s > 0 for s in scales):
        raise n.error(f"scales {scales} must be {len(shape)} positive numbers")
    out = cx.static_shape(n.outputs[0]) or _floor_sizes(shape, scales)
    down = [i for i, s in enumerate(scales) if s < 1.0]
    if not down or len(down) == sum(1 for s in scales if s != 1.0):
        return [_resize_nearest(cx, n, scales, out, "asymmetric", "ceil" if down else "floor")]
    mid = [out[i] if i in down else d for i, d in enumerate(shape)]
    first = [s if i in down else 1.0 for i, s in enumerate(scales)]
    second = [1.0 if i in down else s for i, s in enumerate(scales)]
    y = _resize_nearest(cx, n, first, mid, "asymmetric", "ceil", out=False)
    return [_resize_nearest(cx, n, second, out, "asymmetric", "floor", x=y)]


@converter("Upsample", since=7)
def _upsample_7(cx: Ctx, n: Node) -> list[Sym]:
    return _upsample(cx, n, [float(s) for s in n.attr("scales")])


@converter("Upsample", since=9)
def _upsample_9(cx: Ctx, n: Node) -> list[Sym]:
    return _upsample(cx, n, [float(s) for s in n.const(1).reshape(-1)])


@converter("Resize", since=10)
def _resize_10(cx: Ctx, n: Node) -> list[Sym]:
    return _upsample(cx, n, [float(s) for s in n.const(1).reshape(-1)])


@converter("Resize", since=11)
def _resize_11(cx: Ctx, n: Node) -> list[Sym]:
    x = n.x()
    shape = list(shape_of(x))
    r = len(shape)
    mode = n.attr("mode", "nearest")
    if mode != "nearest":
        raise n.unsupported(f"Resize mode {mode!r} (only nearest)")
    coord = n.attr("coordinate_transformation_mode", "half_pixel")
    if coord == "tf_crop_and_resize":
        raise n.unsupported("coordinate_transformation_mode 'tf_crop_and_resize'")
    if int(n.attr("antialias", 0)):
        raise n.unsupported("antialias")
    axes = n.attr("axes")
    axes = list(range(r)) if axes is None else [_axis(int(a), r, n) for a in axes]
    scales_in = n.const(2)
    sizes_in = n.const(3)
    if scales_in is not None and scales_in.size == 0:
        scales_in = None
    if sizes_in is not None and sizes_in.size == 0:
        sizes_in = None
    if (scales_in is None) == (sizes_in is None):
        raise n.error("exactly one of scales and sizes must be given")
    scales = [1.0] * r
    out = list(shape)
    if scales_in is not None:
        vals = [float(v) for v in scales_in.reshape(-1)]
        if len(vals) != len(axes):
            raise n.error(f"scales {vals} do not match axes {axes}")
        for a, s in zip(axes, vals, strict=True):
            if not s > 0:
                raise n.error(f"scale {s} must be positive")
            scales[a] = s
        out = _floor_sizes(shape, scales)
    else:
        sizes = [int(v) for v in sizes_in.reshape(-1)]
        if len(sizes) != len(axes):
            raise n.error(f"sizes {sizes} do not match axes {axes}")
        policy = n.attr("keep_aspect_ratio_policy", "stretch")
        if policy == "stretch":
            for a, s in zip(axes, sizes, strict=True):
                out[a] = s
                scales[a] = s / shape[a]
        elif policy in ("not_larger", "not_smaller"):
            ratios = [s / shape[a] for a, s in zip(axes, sizes, strict=True)]
            k = min(ratios) if policy == "not_larger" else max(ratios)
            for a in axes:
                scales[a] = k
                out[a] = int(math.floor(shape[a] * k + 0.5))
        else:
            raise n.error(f"unknown keep_aspect_ratio_policy {policy!r}")
    inferred = cx.static_shape(n.outputs[0])
    if inferred is not None and scales_in is not None:
        out = inferred
    rounding = n.attr("nearest_mode", "round_prefer_floor")
    return [_resize_nearest(cx, n, scales, out, coord, rounding)]


# ----------------------------------------------------------------------------------------------- constants


def _attr_tensor(n: Node) -> np.ndarray:
    a = n.attrs
    if "value" in a:
        t = a["value"]
        if t.data_type not in _NUMPY_TYPES:
            raise n.unsupported(f"a Constant of type {_onnx_type_name(t.data_type)}")
        return numpy_helper.to_array(t)
    if "value_float" in a:
        return np.array(a["value_float"], np.float32)
    if "value_floats" in a:
        return np.array(a["value_floats"], np.float32)
    if "value_int" in a:
        return np.array(a["value_int"], np.int64)
    if "value_ints" in a:
        return np.array(a["value_ints"], np.int64)
    if "sparse_value" in a:
        raise n.unsupported("a sparse Constant")
    if "value_string" in a or "value_strings" in a:
        raise n.unsupported("a string Constant")
    raise n.error("a Constant without a value")


@converter("Constant", since=1)
def _constant(cx: Ctx, n: Node) -> list[Sym]:
    return [Const(_attr_tensor(n), n.outputs[0])]


def _fold(fn: Callable[..., Any]) -> Converter:
    """A shape-only op computed at import with NumPy (every input must be a constant)."""

    def conv(cx: Ctx, n: Node) -> list[Sym]:
        args = [None if s is None else n.const(i) for i, s in enumerate(n.inputs)]
        out = fn(n, *args)
        outs = out if isinstance(out, list) else [out]
        return [Const(np.asarray(o), name) for o, name in zip(outs, n.outputs, strict=False)]

    return conv


def fold_only(op_type: str, since: int = 1) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    def deco(fn: Callable[..., Any]) -> Callable[..., Any]:
        FOLD_ONLY.add(op_type)
        converter(op_type, since=since)(_fold(fn))
        return fn

    return deco


@converter("Shape", since=1)
def _shape_node(cx: Ctx, n: Node) -> list[Sym]:
    shape = shape_of(n.x())
    r = len(shape)
    start, end = int(n.attr("start", 0)), n.attr("end")
    end = r if end is None else int(end)
    start = min(max(start + r if start < 0 else start, 0), r)
    end = min(max(end + r if end < 0 else end, 0), r)
    return [Const(np.array(shape[start:end], np.int64), n.outputs[0])]


@converter("Size", since=1)
def _size_node(cx: Ctx, n: Node) -> list[Sym]:
    return [Const(np.array(math.prod(shape_of(n.x())), np.int64), n.outputs[0])]


@fold_only("ConstantOfShape", since=9)
def _constant_of_shape(n: Node, shape: np.ndarray) -> np.ndarray:
    value = n.attr("value")
    fill = numpy_helper.to_array(value).reshape(-1) if value is not None else np.zeros(1, np.float32)
    return np.full([int(d) for d in shape.reshape(-1)], fill[0], dtype=fill.dtype)


@fold_only("Range", since=11)
def _range(n: Node, start: np.ndarray, limit: np.ndarray, delta: np.ndarray) -> np.ndarray:
    return np.arange(start.item(), limit.item(), delta.item(), dtype=start.dtype)


def _cmp(fn: Callable[[np.ndarray, np.ndarray], np.ndarray]) -> Callable[..., np.ndarray]:
    return lambda n, a, b: fn(a, b)


for _op, _fn, _since in (
    ("Equal", np.equal, 7),
    ("Less", np.less, 7),
    ("Greater", np.greater, 7),
    ("LessOrEqual", np.less_equal, 12),
    ("GreaterOrEqual", np.greater_equal, 12),
    ("And", np.logical_and, 7),
    ("Or", np.logical_or, 7),
):
    fold_only(_op, since=_since)(_cmp(_fn))


@fold_only("Not", since=1)
def _not(n: Node, x: np.ndarray) -> np.ndarray:
    return np.logical_not(x)


@fold_only("Where", since=9)
def _where(n: Node, c: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.where(c, a, b)


# ----------------------------------------------------------------------------------------------- the importer


def _toposort(nodes: Sequence[onnx.NodeProto], available: set[str]) -> list[onnx.NodeProto]:
    """Nodes in an order where every input is defined first (ONNX requires it; some exporters forget).

    Already-sorted graphs come back unchanged; nodes waiting on values that nothing defines are left at the
    end, where the conversion reports the missing value."""
    order: list[onnx.NodeProto] = []
    defined = set(available)
    pending = list(nodes)
    while pending:
        rest = []
        for nd in pending:
            if all(i in defined or not i for i in nd.input):
                order.append(nd)
                defined.update(nd.output)
            else:
                rest.append(nd)
        if len(rest) == len(pending):
            order.extend(rest)
            break
        pending = rest
    return order


def _opset_of(model: onnx.ModelProto) -> int:
    for o in model.opset_import:
        if o.domain in ("", "ai.onnx"):
            return int(o.version)
    return 1 if not model.opset_import else MIN_OPSET


def check_supported(model: onnx.ModelProto, file: str | None = None) -> None:
    """Raise one PccError listing every operator of ``model`` that pcc cannot import (with the nodes using it)."""
    opset = max(_opset_of(model), MIN_OPSET)
    missing: dict[tuple[str, str], list[str]] = {}
    for i, nd in enumerate(model.graph.node):
        dom = nd.domain or ""
        if dom in ("", "ai.onnx") and _pick(nd.op_type, opset) is not None:
            continue
        missing.setdefault((dom, nd.op_type), []).append(nd.name or f"{nd.op_type}_{i}")
    if not missing:
        return
    lines = []
    for (dom, op), nodes in sorted(missing.items(), key=lambda kv: (kv[0][0], kv[0][1])):
        where = f"{dom}::" if dom not in ("", "ai.onnx") else ""
        shown = ", ".join(repr(x) for x in nodes[:8]) + (f" and {len(nodes) - 8} more" if len(nodes) > 8 else "")
        lines.append(f"{where}{op} ({len(nodes)} node{'s' if len(nodes) > 1 else ''}: {shown})")
    kinds = len(missing)
    raise PccError(
        f"the model uses {kinds} unsupported operator{'s' if kinds > 1 else ''} (ai.onnx opset {opset}): "
        + "; ".join(lines),
        Location(file),
        notes=[f"supported operators: {', '.join(supported_ops(opset))}"],
    )


def _read(path: Path) -> onnx.ModelProto:
    if not path.exists():
        raise PccError(f"{path}: no such file")
    if path.is_dir():
        raise PccError(f"{path}: is a directory, not an ONNX model")
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # protobuf raises DecodeError / RuntimeWarning-ish errors of several kinds
        raise PccError(
            f"{path}: not a valid ONNX model (truncated, corrupted or not ONNX protobuf): {type(exc).__name__}: {exc}"
        ) from None
    _check_model_shell(model, str(path))
    if _uses_external_data(model):
        try:
            onnx.load_external_data_for_model(model, str(path.parent))
        except Exception as exc:  # OSError, or onnx's checker when the file is missing
            raise PccError(f"{path}: cannot read the model's external weight data: {exc}") from None
    return model


def _check_model_shell(model: onnx.ModelProto, file: str | None) -> None:
    if not model.HasField("graph") or model.ir_version <= 0:
        raise PccError(f"{file or 'model'}: not a valid ONNX model (no graph or IR version; truncated or not ONNX?)")
    if not model.graph.output:
        raise PccError(f"{file or 'model'}: the ONNX graph has no outputs (is the file truncated?)")


def check_graph_structure(model: onnx.ModelProto, file: str | None) -> None:
    """Every tensor written once, and no cycle among the nodes (an unsorted graph is fine: it is sorted later)."""
    g = model.graph
    writer: dict[str, str] = {i.name: "graph input" for i in g.input}
    writer.update({t.name: "initializer" for t in g.initializer})
    producer: dict[str, int] = {}
    for i, nd in enumerate(g.node):
        label = nd.name or f"#{i}"
        for o in nd.output:
            if not o:
                continue
            if o in writer:
                raise PccError(
                    f"ONNX node {label!r} ({nd.op_type}): output {o!r} is already written by {writer[o]}; "
                    "every tensor must have one writer",
                    Location(file, node=label),
                )
            writer[o] = f"node {label!r}"
            producer[o] = i
    # Kahn's algorithm over node -> node edges; nodes left over lie on (or behind) a cycle
    deps = [{producer[x] for x in nd.input if x in producer} for nd in g.node]
    users: dict[int, list[int]] = {}
    for i, d in enumerate(deps):
        for j in d:
            users.setdefault(j, []).append(i)
    waiting = [len(d) for d in deps]
    ready = [i for i, n in enumerate(waiting) if n == 0]
    done = 0
    while ready:
        i = ready.pop()
        done += 1
        for u in users.get(i, ()):
            waiting[u] -= 1
            if waiting[u] == 0:
                ready.append(u)
    if done < len(g.node):
        i = next(k for k, n in enumerate(waiting) if n > 0)
        nd = g.node[i]
        label = nd.name or f"#{i}"
        raise PccError(
            f"ONNX node {label!r} ({nd.op_type}): the graph has a cycle through this node "
            f"({len(g.node) - done} node(s) depend on their own outputs)",
            Location(file, node=label),
        )


def _uses_external_data(model: onnx.ModelProto) -> bool:
    return any(t.data_location == TensorProto.EXTERNAL for t in model.graph.initializer)


def _upgrade(model: onnx.ModelProto, file: str | None) -> onnx.ModelProto:
    if not any(o.domain in ("", "ai.onnx") for o in model.opset_import):
        raise PccError(f"{file or 'model'}: the model declares no ai.onnx opset (its opset_import is empty)")
    opset = _opset_of(model)
    if opset > MAX_OPSET:
        raise PccError(
            f"{file or 'model'}: ai.onnx opset {opset} is newer than this onnx package knows ({MAX_OPSET}); "
            "upgrade onnx or export with an older opset"
        )
    if opset >= MIN_OPSET:
        return model
    try:
        from onnx import version_converter

        up = version_converter.convert_version(model, MIN_OPSET)
    except Exception as exc:
        raise PccError(
            f"{file or 'model'}: ai.onnx opset {opset} is older than {MIN_OPSET} and onnx's version converter "
            f"could not upgrade it: {exc}"
        ) from None
    return up


def _dims(t: onnx.TypeProto) -> list[int | str | None]:
    out: list[int | str | None] = []
    for d in t.tensor_type.shape.dim:
        if d.HasField("dim_value"):
            out.append(int(d.dim_value))
        elif d.HasField("dim_param"):
            out.append(d.dim_param)
        else:
            out.append(None)
    return out


def _input_types(
    model: onnx.ModelProto, inits: set[str], input_shapes: Mapping[str, Sequence[int]] | None, file: str | None
) -> list[tuple[str, TensorType]]:
    graph_inputs = [i for i in model.graph.input if i.name not in inits]
    names = [i.name for i in graph_inputs]
    shapes = dict(input_shapes or {})
    unknown = [k for k in shapes if k not in names]
    if unknown:
        raise PccError(f"{file or 'model'}: --input-shape names unknown input(s) {unknown}; the inputs are {names}")
    out = []
    for vi in graph_inputs:
        t = vi.type
        if not t.HasField("tensor_type"):
            raise PccError(f"{file or 'model'}: input {vi.name!r} is not a tensor (sequences/maps are not supported)")
        elem = t.tensor_type.elem_type
        dtype = _ONNX_TO_IR.get(elem)
        if dtype is None:
            raise PccError(
                f"{file or 'model'}: input {vi.name!r} has element type {_onnx_type_name(elem)}, "
                "which pcc does not support"
            )
        has_shape = t.tensor_type.HasField("shape")
        dims = _dims(t)
        if vi.name in shapes:
            given = [int(d) for d in shapes[vi.name]]
            if has_shape and len(given) != len(dims):
                raise PccError(
                    f"{file or 'model'}: input {vi.name!r} has rank {len(dims)} (shape {dims}) but "
                    f"--input-shape gives {len(given)} dimensions {given}"
                )
            for d, g in zip(dims, given, strict=False):
                if isinstance(d, int) and d != g:
                    raise PccError(
                        f"{file or 'model'}: input {vi.name!r} has static shape {dims}; "
                        f"--input-shape {'x'.join(map(str, given))} contradicts it"
                    )
            out.append((vi.name, TensorType(given, dtype)))
            continue
        if not has_shape:
            raise PccError(
                f"{file or 'model'}: input {vi.name!r} has no shape; give one with --input-shape "
                f"{vi.name}=DxDx... (Python: input_shapes={{{vi.name!r}: (...)}})"
            )
        symbolic = [i for i, d in enumerate(dims) if not isinstance(d, int)]
        if symbolic == [0]:
            print(
                f"note: {file or 'model'}: input {vi.name!r} has a symbolic batch dimension "
                f"{dims[0] or '?'!r}; using 1 (set it with --input-shape {vi.name}=...)",
                file=sys.stderr,
            )
            dims = [1] + dims[1:]
        elif symbolic:
            shown = "x".join(str(d) if isinstance(d, int) else (d or "?") for d in dims)
            raise PccError(
                f"{file or 'model'}: input {vi.name!r} has symbolic dimensions ({shown}); pcc needs static shapes: "
                f"give them with --input-shape {vi.name}="
                + "x".join(str(d) if isinstance(d, int) else "N" for d in dims)
                + f" (Python: input_shapes={{{vi.name!r}: (...)}})"
            )
        if any(d < 0 for d in dims):  # type: ignore[operator]
            raise PccError(f"{file or 'model'}: input {vi.name!r} has a negative dimension in its shape {dims}")
        out.append((vi.name, TensorType(dims, dtype)))  # type: ignore[arg-type]
    return out


def _infer_shapes(
    model: onnx.ModelProto, inputs: list[tuple[str, TensorType]], file: str | None
) -> dict[str, tuple[list[int | None], int]]:
    """ONNX shape inference on a skeleton of the model (large initializers replaced by typed inputs)."""
    g = model.graph
    skel = onnx.GraphProto()
    skel.name = g.name
    skel.node.extend(g.node)
    skel.output.extend(g.output)
    ir_of = {v: k for k, v in _ONNX_TO_IR.items()}
    for name, t in inputs:
        skel.input.append(helper.make_tensor_value_info(name, ir_of[t.dtype], list(t.shape)))
    for init in g.initializer:
        if math.prod(init.dims) <= 64 and init.data_location != TensorProto.EXTERNAL:
            skel.initializer.append(init)
        else:
            skel.input.append(helper.make_tensor_value_info(init.name, init.data_type, list(init.dims)))
    m = onnx.ModelProto()
    m.ir_version = model.ir_version
    m.opset_import.extend(model.opset_import)
    m.graph.CopyFrom(skel)
    try:
        inferred = onnx.shape_inference.infer_shapes(m, check_type=False, strict_mode=False, data_prop=True)
    except Exception as exc:
        print(
            f"note: {file or 'model'}: ONNX shape inference failed ({type(exc).__name__}: {exc}); "
            "continuing with pcc's own shapes",
            file=sys.stderr,
        )
        return {}
    out: dict[str, tuple[list[int | None], int]] = {}
    for vi in list(inferred.graph.value_info) + list(inferred.graph.output):
        tt = vi.type.tensor_type
        if vi.type.HasField("tensor_type") and tt.HasField("shape"):
            out[vi.name] = ([d if isinstance(d, int) else None for d in _dims(vi.type)], tt.elem_type)
    return out


def _crosscheck(cx: Ctx, n: Node, name: str, s: Sym) -> None:
    info = cx.inferred.get(name)
    if info is None:
        return
    dims, elem = info
    shape = shape_of(s)
    if len(dims) == len(shape) and all(d is None or d == e for d, e in zip(dims, shape, strict=True)):
        return
    if len(dims) == 0 and elem == 0:
        return
    raise n.error(
        f"output {name!r}: pcc computed shape {list(shape)} but ONNX shape inference says "
        f"{['?' if d is None else d for d in dims]} (a bug in the importer or an invalid model)"
    )


def load_proto(
    model: onnx.ModelProto,
    input_shapes: Mapping[str, Sequence[int]] | None = None,
    *,
    file: str | None = None,
    bind: Mapping[str, np.ndarray] | None = None,
    name: str | None = None,
) -> Module:
    """Convert an in-memory ``ModelProto``; see :func:`load`."""
    _check_model_shell(model, file)
    if _uses_external_data(model) and any(
        t.data_location == TensorProto.EXTERNAL and not t.raw_data for t in model.graph.initializer
    ):
        raise PccError(
            f"{file or 'model'}: the model's weights live in external data files that are not loaded; "
            "load it from its file path (so the data is found beside it)"
        )
    if model.functions:
        try:
            from onnx import inliner

            model = inliner.inline_local_functions(model)
        except Exception as exc:
            raise PccError(f"{file or 'model'}: cannot inline the model's local functions: {exc}") from None
    check_graph_structure(model, file)
    check_supported(model, file)
    model = _upgrade(model, file)
    opset = _opset_of(model)
    g = model.graph
    if any(
        len(nd.attribute)
        and any(a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS) for a in nd.attribute)
        for nd in g.node
    ):
        raise PccError(f"{file or 'model'}: control flow with subgraphs (If/Loop/Scan) is not supported")

    bind = dict(bind or {})
    inits = {t.name for t in g.initializer} | set(bind)
    inputs = _input_types(model, inits, input_shapes, file)
    inferred = _infer_shapes(model, inputs, file)

    names = {i.name for i in g.input} | {t.name for t in g.initializer}
    for nd in g.node:
        names.update(nd.output)
    module = Module(name or (Path(file).stem if file else (g.name or "model")))
    module.source = file
    cx = Ctx(module, file, opset, inferred, names)
    for nm, t in inputs:
        cx.env[nm] = cx.graph.add_arg(nm, t)
    for init in g.initializer:
        if init.data_type not in _NUMPY_TYPES:
            if init.data_type in (TensorProto.STRING,):
                raise PccError(f"{file or 'model'}: initializer {init.name!r} holds strings")
        try:
            cx.env[init.name] = Const(numpy_helper.to_array(init), init.name)
        except Exception as exc:
            raise PccError(f"{file or 'model'}: cannot read initializer {init.name!r}: {exc}") from None
    for k, v in bind.items():
        cx.env[k] = Const(np.asarray(v), k)

    for index, nd in enumerate(_toposort(g.node, set(cx.env))):
        ins: list[Sym | None] = []
        for i, nm in enumerate(nd.input):
            if not nm:
                ins.append(None)
                continue
            s = cx.env.get(nm)
            if s is None:
                where = nd.name or f"{nd.op_type}_{index}"
                raise PccError(
                    f"ONNX node {where!r} ({nd.op_type}): input #{i} {nm!r} is not defined by any node, "
                    "initializer or graph input (a truncated or invalid model?)",
                    Location(file, node=where),
                )
            ins.append(s)
        n = Node(nd, index, ins, cx)
        cx.site = n
        fn = _pick(nd.op_type, opset)
        if fn is None:  # check_supported covers this; kept for models changed by the version converter
            raise n.unsupported(f"operator {nd.op_type} at opset {opset}")
        if nd.op_type in FOLD_ONLY:
            for i, s in enumerate(ins):
                if s is not None and not isinstance(s, Const):
                    raise n.error(
                        f"input {nd.input[i]!r} depends on a graph input, but pcc only evaluates {nd.op_type} on "
                        "constants at import (shape computations); it has no run-time nn op"
                    )
        outs = list(fn(cx, n))
        if len(outs) < len(n.outputs):
            outs += [None] * (len(n.outputs) - len(outs))
        for oname, s in zip(n.outputs, outs, strict=False):
            if not oname:
                continue
            if s is None:
                raise n.error(f"output {oname!r} is not produced by pcc's converter")
            _crosscheck(cx, n, oname, s)
            cx.env[oname] = s
    cx.site = None

    outputs: list[tuple[str, Sym]] = []
    for o in g.output:
        s = cx.env.get(o.name)
        if s is None:
            raise PccError(f"{file or 'model'}: graph output {o.name!r} is not computed by any node")
        outputs.append((o.name, s))
    return cx.finish(outputs)


def load(
    model: str | os.PathLike[str] | onnx.ModelProto,
    input_shapes: Mapping[str, Sequence[int]] | None = None,
    *,
    bind: Mapping[str, np.ndarray] | None = None,
) -> Module:
    """Import an ONNX model (a path or a ``ModelProto``) as a verified ``nn`` module.

    ``input_shapes`` fixes symbolic input dimensions (``{"input": (1, 3, 224, 224)}``); a model whose only
    symbolic dimension is an input's batch gets batch 1 and a note on stderr.  ``bind`` turns graph inputs into
    constants (e.g. a shape that the model takes as an input).  Errors are PccErrors naming the file and node.
    """
    if isinstance(model, onnx.ModelProto):
        return load_proto(model, input_shapes, bind=bind)
    path = Path(model)
    return load_proto(_read(path), input_shapes, file=str(path), bind=bind, name=path.stem)
