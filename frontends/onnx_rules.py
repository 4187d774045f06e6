"""The ONNX importer's rule registry and per-node context (shared by the ``onnx_*`` rule modules).

A rule ("converter") turns one ONNX node into ``nn`` ops; it is registered per op type and opset with
``@converter("Clip", since=11)`` and the newest one not newer than the model's opset is used.  Rules live by
op family in :mod:`pcc.frontends.onnx_math` (elementwise, reductions), :mod:`pcc.frontends.onnx_layers`
(convolution, pooling, normalisation, resizing, quantization) and :mod:`pcc.frontends.onnx_tensor` (shapes,
indexing, constants); :mod:`pcc.frontends.onnx` reads the model and drives them.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper

from pcc.diagnostics import Location, PccError
from pcc.dialects import nn
from pcc.frontends import Builder, Const, Sym
from pcc.ir import Module, TensorType

MIN_OPSET = 7
MAX_OPSET = onnx.defs.onnx_opset_version()

# ONNX element types the IR can hold
ONNX_TO_IR = {
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

NUMPY_TYPES = {
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


def onnx_type_name(elem: int) -> str:
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
    **{
        f"Reduce{k}": {1: "axes"}
        for k in ("Mean", "Sum", "Max", "Min", "Prod", "L1", "L2", "LogSum", "LogSumExp", "SumSquare")
    },
    "TopK": {1: "k"},
    "Tile": {1: "repeats"},
    "CumSum": {1: "axis"},
    "Trilu": {1: "k"},
    "OneHot": {1: "depth"},
    "CenterCropPad": {1: "shape"},
    "Expand": {1: "shape"},
    "Dropout": {1: "ratio", 2: "training_mode"},
    "ConstantOfShape": {0: "input"},
    "Range": {0: "start", 1: "limit", 2: "delta"},
    "BatchNormalization": {3: "input_mean", 4: "input_var"},
}

#: ops that exist only at import: they are folded, so all their inputs must be constants.
FOLD_ONLY: set[str] = set()

#: ops whose output shape depends on input values, with no import rule at all (named as such when rejected)
DATA_DEPENDENT: set[str] = {"NonMaxSuppression", "Unique", "StringSplit", "RegexFullMatch"}


def converter(*op_types: str, since: int = 1) -> Callable[[Converter], Converter]:
    """Register a converter for ``op_types`` valid from opset ``since`` (until a newer one is registered)."""

    def deco(fn: Converter) -> Converter:
        for t in op_types:
            CONVERTERS.setdefault(t, []).append((since, fn))
            CONVERTERS[t].sort(key=lambda p: p[0])
        return fn

    return deco


def pick(op_type: str, opset: int) -> Converter | None:
    best = None
    for since, fn in CONVERTERS.get(op_type, []):
        if since <= opset:
            best = fn
    return best


def supported_ops(opset: int = MAX_OPSET) -> list[str]:
    """The ONNX operator types that import at ``opset``."""
    return sorted(t for t in CONVERTERS if pick(t, opset) is not None)


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
            if a.type == onnx.AttributeProto.FLOAT:  # ONNX floats are float32: keep the shortest decimal form
                v = float(str(np.float32(v)))
            elif a.type == onnx.AttributeProto.FLOATS:
                v = [float(str(np.float32(f))) for f in v]
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
        self.notes: list[str] = []  # printed after the import (e.g. how each quantized weight was taken)

    def static_shape(self, name: str) -> list[int] | None:
        """The output's shape as ONNX shape inference found it, when fully static."""
        info = self.inferred.get(name)
        if info is None or any(d is None for d in info[0]):
            return None
        return list(info[0])  # type: ignore[arg-type]


# ----------------------------------------------------------------------------------------------- helpers


def axis_of(a: int, rank: int, n: Node) -> int:
    if not -rank <= a < max(rank, 1):
        raise n.error(f"axis {a} is out of range for rank {rank}")
    return a % max(rank, 1)


def resolve_pads(
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


def values(cx: Ctx, n: Node) -> list[Sym]:
    return [s for s in n.inputs if s is not None]


def cast(cx: Ctx, n: Node, s: Sym, dtype: str) -> Sym:
    if isinstance(s, Const):
        return Const(s.data.astype(TensorType((), dtype).np_dtype), s.name)
    return cx.op1(n, nn.Cast, [s], out=False, type=s.type.with_dtype(dtype))


def fold(fn: Callable[..., Any]) -> Converter:
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
        converter(op_type, since=since)(fold(fn))
        return fn

    return deco
