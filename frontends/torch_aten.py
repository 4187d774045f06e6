"""More ATen rules of the torch frontend: comparisons and logic on run-time tensors, the elementwise math
table, tensor constructors (``arange``, ``full``, ``scalar_tensor``), ``where``, embeddings, reductions to
booleans (``any``/``all``), indexing and the remaining layer ops the model families produce after
``run_decompositions()``.  Registered into :data:`pcc.frontends.torch.ATEN` like the rules there."""

from __future__ import annotations

from typing import Any

import numpy as np

from pcc.dialects import nn
from pcc.frontends import Builder, Const, Sym, ir_dtype, shape_of
from pcc.frontends.torch import _DTYPES, Node, _is_tensor, _norm, _scalar_like, aten
from pcc.ir import Operation, TensorType

#: ATen unary op -> nn op (the ``.default`` overload)
UNARY: dict[str, type[Operation]] = {
    "abs": nn.Abs,
    "ceil": nn.Ceil,
    "floor": nn.Floor,
    "round": nn.Round,
    "reciprocal": nn.Reciprocal,
    "sign": nn.Sign,
    "log": nn.Log,
    "sin": nn.Sin,
    "cos": nn.Cos,
    "tan": nn.Tan,
    "asin": nn.Asin,
    "acos": nn.Acos,
    "atan": nn.Atan,
    "sinh": nn.Sinh,
    "cosh": nn.Cosh,
    "asinh": nn.Asinh,
    "acosh": nn.Acosh,
    "atanh": nn.Atanh,
    "isnan": nn.IsNaN,
    "mish": nn.Mish,
    "bitwise_not": nn.BitwiseNot,
}

#: ATen binary op -> (nn op, attributes); ``.Tensor`` and ``.Scalar`` overloads
BINARY: dict[str, tuple[type[Operation], dict[str, Any]]] = {
    "eq": (nn.Equal, {}),
    "lt": (nn.Less, {}),
    "le": (nn.LessOrEqual, {}),
    "gt": (nn.Greater, {}),
    "ge": (nn.GreaterOrEqual, {}),
    "maximum": (nn.Max, {}),
    "minimum": (nn.Min, {}),
    "remainder": (nn.Mod, {"fmod": False}),
    "fmod": (nn.Mod, {"fmod": True}),
    "bitwise_and": (nn.BitwiseAnd, {}),
    "bitwise_or": (nn.BitwiseOr, {}),
    "bitwise_xor": (nn.BitwiseXor, {}),
    "logical_and": (nn.And, {}),
    "logical_or": (nn.Or, {}),
    "logical_xor": (nn.Xor, {}),
}
_ON_BOOL = {nn.BitwiseAnd: nn.And, nn.BitwiseOr: nn.Or, nn.BitwiseXor: nn.Xor}
_LOGICAL = (nn.And, nn.Or, nn.Xor)


def _to_bool(b: Builder, n: Node, x: Sym) -> Sym:
    """``x != 0`` as i1 (torch's truthiness for the logical ops)."""
    if ir_dtype(x) == "i1":
        return x
    eq = b.op1(n, nn.Equal, [x, _scalar_like(b, x, 0)], out=False)
    return b.op1(n, nn.Not, [eq], out=False)


@aten(*(f"aten.{k}.default" for k in UNARY))
def _unary(b: Builder, n: Node) -> Sym:
    return b.op1(n, UNARY[n.target.split(".")[1]], [n["self"]])


@aten("aten.logical_not.default")
def _logical_not(b: Builder, n: Node) -> Sym:
    return b.op1(n, nn.Not, [_to_bool(b, n, n["self"])])


@aten(*(f"aten.{k}.{o}" for k in BINARY for o in ("Tensor", "Scalar", "default")))
def _binary(b: Builder, n: Node) -> Sym:
    cls, attrs = BINARY[n.target.split(".")[1]]
    a, other = n["self"], n["other"]
    if not _is_tensor(a):
        a = _scalar_like(b, other, a)
    other = _scalar_like(b, a, other)
    if cls in _LOGICAL:
        a, other = _to_bool(b, n, a), _to_bool(b, n, other)
    if ir_dtype(a) == "i1" and cls in _ON_BOOL:
        cls = _ON_BOOL[cls]
    if ir_dtype(other) != ir_dtype(a):
        other = _cast(b, n, other, b.type_of(a).dtype)
    return b.op1(n, cls, [a, other], attrs)


@aten("aten.ne.Tensor", "aten.ne.Scalar")
def _ne(b: Builder, n: Node) -> Sym:
    a = n["self"]
    other = _scalar_like(b, a, n["other"])
    if ir_dtype(other) != ir_dtype(a):
        other = _cast(b, n, other, b.type_of(a).dtype)
    return b.op1(n, nn.Not, [b.op1(n, nn.Equal, [a, other], out=False)])


def _cast(b: Builder, n: Node, s: Sym, dtype: str) -> Sym:
    if isinstance(s, Const):
        return Const(s.data.astype(TensorType((), dtype).np_dtype), s.name)
    return b.op1(n, nn.Cast, [s], type=b.type_of(s).with_dtype(dtype), out=False)


@aten("aten.where.self", "aten.where.ScalarOther", "aten.where.ScalarSelf", "aten.where.Scalar")
def _where(b: Builder, n: Node) -> Sym:
    cond, x, y = n["condition"], n["self"], n["other"]
    if not _is_tensor(x):
        x = _scalar_like(b, y, x) if _is_tensor(y) else Const(np.array(x, np.float32))
    y = _scalar_like(b, x, y)
    if ir_dtype(y) != ir_dtype(x):
        y = _cast(b, n, y, b.type_of(x).dtype)
    return b.op1(n, nn.Where, [_to_bool(b, n, cond), x, y])


@aten("aten.masked_fill.Scalar", "aten.masked_fill.Tensor")
def _masked_fill(b: Builder, n: Node) -> Sym:
    x = n["self"]
    v = _scalar_like(b, x, n["value"])
    if ir_dtype(v) != ir_dtype(x):
        v = _cast(b, n, v, b.type_of(x).dtype)
    return b.op1(n, nn.Where, [_to_bool(b, n, n["mask"]), v, x])


def _dtype(n: Node, default: str) -> str:
    d = n.get("dtype")
    if d is None:
        return default
    ir = _DTYPES.get(str(d))
    if ir is None:
        raise n.unsupported(f"dtype {d}")
    return ir


@aten("aten.scalar_tensor.default")
def _scalar_tensor(b: Builder, n: Node) -> Sym:
    return Const(np.array(n["s"], TensorType((), _dtype(n, "f32")).np_dtype), n.name)


@aten("aten.arange.start_step", "aten.arange.start", "aten.arange.default")
def _arange(b: Builder, n: Node) -> Sym:
    start, end, step = n.get("start", 0), n["end"], n.get("step", 1)
    ints = all(isinstance(v, int) for v in (start, end, step))
    return Const(
        np.arange(start, end, step, dtype=TensorType((), _dtype(n, "i64" if ints else "f32")).np_dtype), n.name
    )


@aten("aten.full.default", "aten.zeros.default", "aten.ones.default")
def _full(b: Builder, n: Node) -> Sym:
    value = {"aten.zeros.default": 0, "aten.ones.default": 1}.get(n.target, n.get("fill_value", 0))
    default = "f32" if isinstance(value, float) or n.target != "aten.full.default" else "i64"
    if isinstance(value, bool):
        default = "i1"
    shape = [int(d) for d in n["size"]]
    return Const(np.full(shape, value, TensorType((), _dtype(n, default)).np_dtype), n.name)


@aten("aten.embedding.default")
def _embedding(b: Builder, n: Node) -> Sym:
    return b.op1(n, nn.Gather, [n["weight"], n["indices"]], {"axis": 0})


@aten("aten.index_select.default")
def _index_select(b: Builder, n: Node) -> Sym:
    x = n["self"]
    return b.op1(n, nn.Gather, [x, n["index"]], {"axis": _norm(int(n["dim"]), len(shape_of(x)), n)})


@aten("aten.gather.default")
def _gather(b: Builder, n: Node) -> Sym:
    x = n["self"]
    return b.op1(n, nn.GatherElements, [x, n["index"]], {"axis": _norm(int(n["dim"]), len(shape_of(x)), n)})


def _bool_reduce(cls: type[Operation]) -> Any:
    def conv(b: Builder, n: Node) -> Sym:
        x = _to_bool(b, n, n["self"])
        r = len(shape_of(x))
        dims = n.get("dim")
        dims = [dims] if isinstance(dims, int) else dims
        attrs: dict[str, Any] = {"keepdims": bool(n.get("keepdim", False))}
        if dims:
            attrs["axes"] = sorted({_norm(int(d), r, n) for d in dims})
        return b.op1(n, cls, [x], attrs)

    return conv


aten("aten.any.dim", "aten.any.dims", "aten.any.default")(_bool_reduce(nn.ReduceMax))
aten("aten.all.dim", "aten.all.dims", "aten.all.default")(_bool_reduce(nn.ReduceMin))


def _value_reduce(cls: type[Operation]) -> Any:
    def conv(b: Builder, n: Node) -> Sym:
        x = n["self"]
        r = len(shape_of(x))
        dims = n.get("dim")
        dims = [dims] if isinstance(dims, int) else dims
        attrs: dict[str, Any] = {"keepdims": bool(n.get("keepdim", False))}
        if dims:
            attrs["axes"] = sorted({_norm(int(d), r, n) for d in dims})
        return b.op1(n, cls, [x], attrs)

    return conv


aten("aten.amax.default")(_value_reduce(nn.ReduceMax))
aten("aten.amin.default")(_value_reduce(nn.ReduceMin))
aten("aten.prod.dim_int")(_value_reduce(nn.ReduceProd))


@aten("aten.argmax.default", "aten.argmin.default")
def _argmax(b: Builder, n: Node) -> Sym:
    x = n["self"]
    dim = n.get("dim")
    if dim is None:
        raise n.unsupported(f"{n.target} over all elements (dim=None)")
    cls = nn.ArgMax if "argmax" in n.target else nn.ArgMin
    attrs = {"axis": _norm(int(dim), len(shape_of(x)), n), "keepdims": bool(n.get("keepdim", False))}
    return b.op1(n, cls, [x], attrs)


@aten("aten.cumsum.default")
def _cumsum(b: Builder, n: Node) -> Sym:
    x = n["self"]
    if n.get("dtype") is not None and _dtype(n, "") != b.type_of(x).dtype:
        x = _cast(b, n, x, _dtype(n, ""))
    return b.op1(n, nn.CumSum, [x], {"axis": _norm(int(n["dim"]), len(shape_of(x)), n)})


@aten("aten.triu.default", "aten.tril.default")
def _trilu(b: Builder, n: Node) -> Sym:
    return b.op1(n, nn.Trilu, [n["self"]], {"upper": "triu" in n.target, "k": int(n.get("diagonal", 0))})


@aten("aten.topk.default")
def _topk(b: Builder, n: Node) -> list[Sym]:
    x = n["self"]
    attrs = {
        "k": int(n["k"]),
        "axis": _norm(int(n.get("dim", -1)), len(shape_of(x)), n),
        "largest": bool(n.get("largest", True)),
        "sorted": bool(n.get("sorted", True)),
    }
    return b.emit(n, nn.TopK, [x], attrs, n_results=2)


@aten("aten.elu.default")
def _elu(b: Builder, n: Node) -> Sym:
    if float(n.get("scale", 1.0)) != 1.0 or float(n.get("input_scale", 1.0)) != 1.0:
        raise n.unsupported("elu with scale or input_scale")
    return b.op1(n, nn.Elu, [n["self"]], {"alpha": float(n.get("alpha", 1.0))})


@aten("aten.softplus.default")
def _softplus(b: Builder, n: Node) -> Sym:
    if float(n.get("beta", 1.0)) != 1.0:
        raise n.unsupported("softplus with beta != 1")
    return b.op1(n, nn.Softplus, [n["self"]])


@aten("aten.prelu.default", "aten._prelu_kernel.default")
def _prelu(b: Builder, n: Node) -> Sym:
    x, w = n["self"], n["weight"]
    r = len(shape_of(x))
    if len(shape_of(w)) == 1 and r >= 2 and shape_of(w)[0] > 1:  # one slope per channel (axis 1)
        w = b.op1(n, nn.Reshape, [w], {"shape": [shape_of(w)[0]] + [1] * (r - 2)}, out=False)
    return b.op1(n, nn.PRelu, [x, w])


@aten("aten.native_group_norm.default")
def _group_norm(b: Builder, n: Node) -> list[Sym | None]:
    x = n["input"]
    c = shape_of(x)[1]
    ones = Const(np.ones(c, b.type_of(x).np_dtype))
    zeros = Const(np.zeros(c, b.type_of(x).np_dtype))
    w, bias = n.get("weight") or ones, n.get("bias") or zeros
    attrs = {"num_groups": int(n["group"]), "epsilon": float(n["eps"])}
    return [b.op1(n, nn.GroupNorm, [x, w, bias], attrs), None, None]


@aten("aten.upsample_bilinear2d.vec", "aten.upsample_bilinear2d.default")
def _upsample_bilinear(b: Builder, n: Node) -> Sym:
    x = n["input"] if "input" in n.args else n["self"]
    xs = shape_of(x)
    size = n.get("output_size")
    if size is None:
        f = n.get("scale_factors") or [n.get("scales_h"), n.get("scales_w")]
        size = [int(xs[2] * f[0]), int(xs[3] * f[1])]
    out = [xs[0], xs[1], int(size[0]), int(size[1])]
    align = bool(n.get("align_corners", False))
    attrs = {
        "mode": "linear",
        "coordinate_transformation_mode": "align_corners" if align else "pytorch_half_pixel",
        "scales": [1.0, 1.0, out[2] / xs[2], out[3] / xs[3]],
    }
    return b.op1(n, nn.Resize, [x], attrs, type=b.type_of(x).with_shape(out))
