"""More ATen rules of the torch frontend: comparisons and logic on run-time tensors, the elementwise math
table, tensor constructors (``arange``, ``full``, ``scalar_tensor``), ``where``, embeddings, reductions to
booleans (``any``/``all``), indexing and the remaining layer ops the model families produce after
``run_decompositions()``.  Registered into :data:`pcc.frontends.torch.ATEN` like the rules there."""

from __future__ import annotations

from typing import Any

import numpy as np

from pcc import limits
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
    dtype = TensorType((), _dtype(n, "i64" if ints else "f32")).np_dtype
    limits.check_range(start, end, step, np.dtype(dtype).itemsize, f"torch node {n.loc.node!r} ({n.target})", n.loc)
    return Const(np.arange(start, end, step, dtype=dtype), n.name)


@aten("aten.full.default", "aten.zeros.default", "aten.ones.default")
def _full(b: Builder, n: Node) -> Sym:
    value = {"aten.zeros.default": 0, "aten.ones.default": 1}.get(n.target, n.get("fill_value", 0))
    default = "f32" if isinstance(value, float) or n.target != "aten.full.default" else "i64"
    if isinstance(value, bool):
        default = "i1"
    dtype = TensorType((), _dtype(n, default)).np_dtype
    what = f"torch node {n.loc.node!r} ({n.target})"
    shape = limits.check_shape([int(d) for d in n["size"]], np.dtype(dtype).itemsize, what, n.loc)
    return Const(np.full(shape, value, dtype), n.name)


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


@aten("aten.index.Tensor")
def _index(b: Builder, n: Node) -> Sym:
    """Advanced indexing ``x[i0, i1, ...]`` (``None`` keeps a dim): the index tensors broadcast to one shape B;
    the indexed dims are moved to the front and one ``gather_nd`` reads ``x[i0, i1, ...]`` over B.  The B dims
    take the place of the first indexed dim when the indexed dims are adjacent (else they lead), as in numpy."""
    x = n["self"]
    xs = shape_of(x)
    idx = list(n["indices"])
    if len(idx) > len(xs):
        raise n.error(f"{len(idx)} indices for a tensor of rank {len(xs)}")
    idx += [None] * (len(xs) - len(idx))
    pos = [i for i, t in enumerate(idx) if t is not None]
    if not pos:
        return x
    for i in pos:
        if ir_dtype(idx[i]) not in ("i32", "i64"):
            raise n.error(f"index {i} has type {ir_dtype(idx[i])}: only integer index tensors are supported")
    bshape = tuple(np.broadcast_shapes(*(shape_of(idx[i]) for i in pos)))
    rest = [i for i in range(len(xs)) if i not in pos]
    perm = pos + rest
    if perm != list(range(len(xs))):
        x = b.op1(n, nn.Transpose, [x], {"perm": perm}, out=False)
    cols = []
    for i in pos:
        t = idx[i] if ir_dtype(idx[i]) == "i64" else _cast(b, n, idx[i], "i64")
        if shape_of(t) != bshape:
            t = b.op1(n, nn.Expand, [t], {"shape": list(bshape)}, out=False)
        cols.append(b.op1(n, nn.Unsqueeze, [t], {"axes": [len(bshape)]}, out=False))
    where = cols[0] if len(cols) == 1 else b.op1(n, nn.Concat, cols, {"axis": len(bshape)}, out=False)
    adjacent = pos == list(range(pos[0], pos[-1] + 1))
    if not adjacent or pos[0] == 0:
        return b.op1(n, nn.GatherND, [x, where])
    y = b.op1(n, nn.GatherND, [x, where], out=False)  # B + rest: the rest's leading pos[0] dims go first
    nb, lead = len(bshape), pos[0]
    order = [nb + j for j in range(lead)] + list(range(nb)) + [nb + j for j in range(lead, len(rest))]
    return b.op1(n, nn.Transpose, [y], {"perm": order})


@aten("aten.scaled_dot_product_attention.default")
def _sdpa(b: Builder, n: Node) -> Sym:
    """``softmax(q kᵀ · scale + mask) v`` (torch's math definition): a boolean mask keeps the True positions
    (the others get -inf) and a row it hides entirely gives 0 (torch's safe softmax: ``where(is_nan(p), 0, p)``),
    a float mask is added, ``is_causal`` keeps the lower triangle; the default scale is ``1/sqrt(E)``.
    Only kept whole when torch's own decomposition of it cannot be applied to the program."""
    q, k, v = n["query"], n["key"], n["value"]
    if float(n.get("dropout_p", 0.0) or 0.0) != 0.0:
        raise n.unsupported("dropout inside scaled_dot_product_attention (export the model in eval mode)")
    if n.get("enable_gqa", False):
        raise n.unsupported("grouped-query attention (enable_gqa)")
    qs, ks = shape_of(q), shape_of(k)
    scale = n.get("scale")
    scale = 1.0 / float(np.sqrt(qs[-1])) if scale is None else float(scale)
    r = len(ks)
    kt = b.op1(n, nn.Transpose, [k], {"perm": [*range(r - 2), r - 1, r - 2]}, out=False)
    s = b.op1(n, nn.MatMul, [q, kt], out=False)
    s = b.op1(n, nn.Mul, [s, _scalar_like(b, s, scale)], out=False)
    mask = n.get("attn_mask")
    guard = mask is not None and ir_dtype(mask) == "i1"  # a boolean mask can hide a whole row
    if n.get("is_causal", False):
        causal = Const(np.tril(np.ones((qs[-2], ks[-2]), bool)), None)
        mask = causal if mask is None else b.op1(n, nn.And, [_to_bool(b, n, mask), causal], out=False)
    if mask is not None:
        if ir_dtype(mask) == "i1":
            s = b.op1(n, nn.Where, [mask, s, _scalar_like(b, s, -np.inf)], out=False)
        else:
            s = b.op1(n, nn.Add, [s, mask], out=False)
    p = b.op1(n, nn.Softmax, [s], {"axis": len(shape_of(s)) - 1}, out=False)
    if guard:  # torch's softmax of a fully masked row is 0 there, not the 0/0 of a plain softmax
        nan = b.op1(n, nn.IsNaN, [p], out=False)
        p = b.op1(n, nn.Where, [nan, _scalar_like(b, p, 0.0), p], out=False)
    return b.op1(n, nn.MatMul, [p, v])


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


@aten("aten.slice_scatter.default")
def _slice_scatter(b: Builder, n: Node) -> Sym:
    """``self`` with ``src`` written into a slice (functionalized in-place slice assignment: Swin's shifted-window
    mask, filled region by region): folded at import when both are constants, else not supported."""
    x, src = n["self"], n["src"]
    if not (isinstance(x, Const) and isinstance(src, Const)):
        raise n.unsupported("a slice_scatter of run-time values")
    out = np.array(x.data)
    ax = _norm(int(n.get("dim", 0)), out.ndim, n)
    idx = [slice(None)] * out.ndim
    idx[ax] = slice(n.get("start"), n.get("end"), int(n.get("step", 1)))
    out[tuple(idx)] = src.data
    return Const(out, n.name)


@aten("aten.copy.default")
def _copy(b: Builder, n: Node) -> Sym:
    """``src`` in ``self``'s shape and dtype (functionalized ``copy_``): folded for constants; a run-time ``src``
    of ``self``'s type is itself."""
    x, src = n["self"], n["src"]
    if isinstance(src, Const):
        dtype = x.data.dtype if isinstance(x, Const) else b.type_of(x).np_dtype
        return Const(np.broadcast_to(src.data, shape_of(x)).astype(dtype), n.name)
    if shape_of(src) == shape_of(x) and (isinstance(x, Const) or b.type_of(x).dtype == b.type_of(src).dtype):
        return src
    raise n.unsupported("a copy that broadcasts or casts a run-time value")


@aten("aten.roll.default")
def _roll(b: Builder, n: Node) -> Sym:
    """``torch.roll`` along given dims (Swin's shifted windows): per dim, the last ``shift`` elements moved to the
    front, two slices and a concat (the ONNX export's form)."""
    x = n["self"]
    xs = shape_of(x)
    shifts, dims = list(n["shifts"]), list(n.get("dims", []) or [])
    if len(shifts) != len(dims):
        raise n.unsupported("a roll of the flattened tensor (no dims)")
    axes = [_norm(int(d), len(xs), n) for d in dims]
    moves = [(ax, int(s) % xs[ax]) for s, ax in zip(shifts, axes, strict=True) if int(s) % xs[ax]]
    if not moves:
        return x
    for i, (ax, s) in enumerate(moves):
        d = xs[ax]
        parts = [
            b.op1(n, nn.Slice, [x], {"starts": [lo], "ends": [hi], "axes": [ax], "steps": [1]}, out=False)
            for lo, hi in ((d - s, d), (0, d - s))
        ]
        x = b.op1(n, nn.Concat, parts, {"axis": ax}, out=i == len(moves) - 1)
    return x


@aten("aten.linalg_vector_norm.default")
def _vector_norm(b: Builder, n: Node) -> Sym:
    """``torch.linalg.vector_norm`` (F.normalize's norm): ``ord`` 2 is ``nn.reduce_l2``, 1 ``nn.reduce_l1``."""
    order = float(n.get("ord", 2))
    cls = {2.0: nn.ReduceL2, 1.0: nn.ReduceL1}.get(order)
    if cls is None:
        raise n.unsupported(f"a vector norm of order {order:g} (only 1 and 2)")
    if n.get("dtype") is not None:
        raise n.unsupported("a vector norm with a dtype argument")
    return _value_reduce(cls)(b, n)


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
