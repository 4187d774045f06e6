"""PyTorch models into the ``nn`` IR, through ``torch.export`` (no TorchScript).

- ``load(module, example_inputs)`` exports an ``nn.Module`` (in eval mode) with ``torch.export.export``;
- ``load_exported(program)`` converts an ``ExportedProgram``;
- ``load_pt2(path)`` reads a file written by ``torch.export.save`` through :mod:`pcc.frontends.pt2`, which
  checks the whole archive first and never unpickles or evaluates anything from it (``torch.export.load`` does).

The program is lowered to core ATen with ``run_decompositions()`` (except the composite ops that :data:`ATEN`
converts whole, such as ``linear``, ``matmul`` and ``hardswish``); each ATen op maps onto ``nn`` ops through
the table :data:`ATEN` (keyed by the overload name, e.g. ``aten.convolution.default``).  Parameters, buffers and
lifted constants become constants (module weights when a real op uses them; ``permute``/``t`` of a weight that
feeds ``addmm``/``mm`` becomes ``nn.gemm {trans_b}`` on the untransposed weight, as ONNX exports write it).
Every op's location is the FX node, prefixed with the module path it came from (``layer1.conv1/convolution_2``).
Unsupported ATen ops are reported together, before any conversion.  torch is optional: without it a PccError
names the extra to install.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from pcc.diagnostics import Location, PccError
from pcc.dialects import nn
from pcc.frontends import Builder, Const, Sym, ir_dtype, shape_of
from pcc.ir import Module, Operation, TensorType

__all__ = ["load", "load_exported", "load_pt2", "supported_ops", "ATEN"]

INSTALL_HINT = "the PyTorch frontend needs torch: pip install 'pcc[torch]'"


def _torch() -> Any:
    try:
        import torch
    except ImportError:
        raise PccError(INSTALL_HINT) from None
    return torch


# ----------------------------------------------------------------------------------------------- nodes


class Node:
    """One FX node during conversion: arguments by schema name (nodes resolved to symbols) and its location."""

    def __init__(self, fx: Any, args: dict[str, Any], raw: dict[str, Any], env: dict[str, Any], file: str | None):
        self.fx = fx
        self.raw = raw  # the arguments as FX wrote them (nodes unresolved)
        self.env = env
        self.name = fx.name
        self.target = str(fx.target)
        self.outputs = [fx.name]
        self.args = args
        stack = fx.meta.get("nn_module_stack") or {}
        path = list(stack.values())[-1][0] if stack else ""
        self.loc = Location(file, node=f"{path}/{fx.name}" if path else fx.name)

    def __getitem__(self, key: str) -> Any:
        return self.args[key]

    def get(self, key: str, default: Any = None) -> Any:
        v = self.args.get(key, default)
        return default if v is None else v

    def error(self, message: str) -> PccError:
        return PccError(f"torch node {self.loc.node!r} ({self.target}): {message}", self.loc)

    def unsupported(self, what: str) -> PccError:
        return self.error(f"{what} is not supported")


Converter = Callable[[Builder, Node], Sym | Sequence[Sym | None] | None]
ATEN: dict[str, Converter] = {}


def aten(*names: str) -> Callable[[Converter], Converter]:
    """Register a converter for ATen overloads (``aten.relu.default``)."""

    def deco(fn: Converter) -> Converter:
        for n in names:
            ATEN[n] = fn
        return fn

    return deco


def supported_ops() -> list[str]:
    return sorted(ATEN)


# ----------------------------------------------------------------------------------------------- helpers


def _is_tensor(v: Any) -> bool:
    return isinstance(v, Const) or hasattr(v, "type")


def _scalar_like(b: Builder, ref: Sym, v: Any) -> Sym:
    """A Python number as a 0-d constant of ``ref``'s element type."""
    if _is_tensor(v):
        return v
    dtype = b.type_of(ref).np_dtype
    return Const(np.array(v, dtype=dtype), None)


def _pair(v: Any, n: int) -> list[int]:
    if isinstance(v, int):
        return [v] * n
    v = [int(x) for x in v]
    return v * n if len(v) == 1 else v


def _norm(a: int, r: int, n: Node) -> int:
    if not -r <= a < max(r, 1):
        raise n.error(f"dimension {a} is out of range for rank {r}")
    return a % max(r, 1)


# ----------------------------------------------------------------------------------------------- converters


@aten("aten.convolution.default")
def _conv(b: Builder, n: Node) -> Sym:
    if n["transposed"]:
        raise n.unsupported("transposed convolution")
    x, w, bias = n["input"], n["weight"], n.get("bias")
    xs, ws = shape_of(x), shape_of(w)
    nd = len(xs) - 2
    if nd not in (1, 2):
        raise n.unsupported(f"{nd}-D convolution")
    stride, pad, dil = _pair(n["stride"], nd), _pair(n["padding"], nd), _pair(n["dilation"], nd)
    if nd == 1:
        x = b.op1(n, nn.Reshape, [x], {"shape": [xs[0], xs[1], 1, xs[2]]}, out=False)
        w = b.op1(n, nn.Reshape, [w], {"shape": [ws[0], ws[1], 1, ws[2]]}, out=False)
        stride, pad, dil = [1, *stride], [0, *pad], [1, *dil]
    attrs = {"strides": stride, "pads": pad + pad, "dilations": dil, "group": int(n["groups"])}
    y = b.op1(n, nn.Conv2d, [x, w] + ([bias] if bias is not None else []), attrs, out=nd == 2)
    if nd == 1:
        ys = shape_of(y)
        y = b.op1(n, nn.Reshape, [y], {"shape": [ys[0], ys[1], ys[3]]})
    return y


def _weight_t(n: Node, key: str) -> Sym | None:
    """The untransposed weight when argument ``key`` is ``permute(W, [1, 0])`` / ``t(W)`` of a constant."""
    fx = n.raw.get(key)
    if fx is None or not hasattr(fx, "op") or fx.op != "call_function":
        return None
    t = str(fx.target)
    if t in ("aten.permute.default", "aten.t.default") and (t == "aten.t.default" or list(fx.args[1]) == [1, 0]):
        src = n.env.get(fx.args[0].name)
        if isinstance(src, Const) and src.data.ndim == 2:
            return src
    return None


def _gemm(b: Builder, n: Node, a: Sym, mat2_key: str, c: Sym | None, alpha: float, beta: float) -> Sym:
    w = _weight_t(n, mat2_key)
    attrs: dict[str, Any] = {"alpha": float(alpha) if alpha != 1 else None, "beta": float(beta) if beta != 1 else None}
    if w is not None:
        attrs["trans_b"] = True
        operands = [a, w]
    else:
        operands = [a, n[mat2_key]]
    if c is not None:
        operands.append(c)
    return b.op1(n, nn.Gemm, operands, attrs)


@aten("aten.addmm.default")
def _addmm(b: Builder, n: Node) -> Sym:
    return _gemm(b, n, n["mat1"], "mat2", n["self"], n.get("alpha", 1), n.get("beta", 1))


@aten("aten.mm.default")
def _mm(b: Builder, n: Node) -> Sym:
    if _weight_t(n, "mat2") is not None:
        return _gemm(b, n, n["self"], "mat2", None, 1.0, 1.0)
    return b.op1(n, nn.MatMul, [n["self"], n["mat2"]])


@aten("aten.bmm.default", "aten.matmul.default")
def _bmm(b: Builder, n: Node) -> Sym:
    return b.op1(n, nn.MatMul, [n["self"], n["mat2" if "mat2" in n.args else "other"]])


@aten("aten.linear.default")
def _linear(b: Builder, n: Node) -> Sym:
    x, w, bias = n["input"], n["weight"], n.get("bias")
    xs = shape_of(x)
    flat = x if len(xs) == 2 else b.op1(n, nn.Reshape, [x], {"shape": [math.prod(xs[:-1]), xs[-1]]}, out=False)
    y = b.op1(n, nn.Gemm, [flat, w] + ([bias] if bias is not None else []), {"trans_b": True}, out=len(xs) == 2)
    if len(xs) != 2:
        y = b.op1(n, nn.Reshape, [y], {"shape": [*xs[:-1], shape_of(w)[0]]})
    return y


_ELEMENTWISE = {
    "aten.add": nn.Add,
    "aten.sub": nn.Sub,
    "aten.mul": nn.Mul,
    "aten.div": nn.Div,
    "aten.pow": nn.Pow,
}


@aten(
    "aten.add.Tensor",
    "aten.add.Scalar",
    "aten.sub.Tensor",
    "aten.sub.Scalar",
    "aten.mul.Tensor",
    "aten.mul.Scalar",
    "aten.div.Tensor",
    "aten.div.Scalar",
    "aten.pow.Tensor_Tensor",
    "aten.pow.Tensor_Scalar",
)
def _binary(b: Builder, n: Node) -> Sym:
    if n.get("rounding_mode") is not None:
        raise n.unsupported(f"division with rounding_mode={n['rounding_mode']!r}")
    base = n.target.rsplit(".", 1)[0]
    a = n["self"]
    other = n["exponent"] if base == "aten.pow" else n["other"]
    if not _is_tensor(a):
        if not _is_tensor(other):
            raise n.unsupported("arithmetic on two Python numbers")
        a = _scalar_like(b, other, a)
    other = _scalar_like(b, a, other)
    alpha = n.get("alpha", 1)
    if alpha != 1 and base in ("aten.add", "aten.sub"):
        other = b.op1(n, nn.Mul, [other, _scalar_like(b, a, alpha)], out=False)
    if ir_dtype(other) != ir_dtype(a) and isinstance(other, Const):
        other = Const(other.data.astype(b.type_of(a).np_dtype), other.name)
    return b.op1(n, _ELEMENTWISE[base], [a, other])


@aten("aten.rsub.Scalar", "aten.rsub.Tensor")
def _rsub(b: Builder, n: Node) -> Sym:
    a = n["self"]
    return b.op1(n, nn.Sub, [_scalar_like(b, a, n["other"]), a])


_UNARY = {
    "aten.relu.default": nn.Relu,
    "aten.sigmoid.default": nn.Sigmoid,
    "aten.tanh.default": nn.Tanh,
    "aten.erf.default": nn.Erf,
    "aten.sqrt.default": nn.Sqrt,
    "aten.exp.default": nn.Exp,
    "aten.neg.default": nn.Neg,
    "aten.hardswish.default": nn.HardSwish,
}


@aten(*_UNARY)
def _unary(b: Builder, n: Node) -> Sym:
    return b.op1(n, _UNARY[n.target], [n["self"]])


@aten("aten.relu6.default")
def _relu6(b: Builder, n: Node) -> Sym:
    return b.op1(n, nn.Clip, [n["self"]], {"min": 0.0, "max": 6.0})


@aten("aten.full_like.default", "aten.zeros_like.default", "aten.ones_like.default")
def _full_like(b: Builder, n: Node) -> Sym:
    x = n["self"]
    value = {"aten.zeros_like.default": 0, "aten.ones_like.default": 1}.get(n.target, n.get("fill_value", 0))
    dtype = _DTYPES.get(str(n.get("dtype"))) if n.get("dtype") is not None else b.type_of(x).dtype
    if dtype is None:
        raise n.unsupported(f"dtype {n.get('dtype')}")
    return Const(np.full(shape_of(x), value, TensorType((), dtype).np_dtype), n.name)


@aten("aten.rsqrt.default")
def _rsqrt(b: Builder, n: Node) -> Sym:
    x = n["self"]
    s = b.op1(n, nn.Sqrt, [x], out=False)
    return b.op1(n, nn.Div, [_scalar_like(b, x, 1.0), s])


@aten("aten.gelu.default")
def _gelu(b: Builder, n: Node) -> Sym:
    return b.op1(n, nn.Gelu, [n["self"]], {"approximate": n.get("approximate", "none")})


@aten("aten.leaky_relu.default")
def _leaky(b: Builder, n: Node) -> Sym:
    return b.op1(n, nn.LeakyRelu, [n["self"]], {"alpha": float(n.get("negative_slope", 0.01))})


@aten("aten.hardsigmoid.default")
def _hardsigmoid(b: Builder, n: Node) -> Sym:
    alpha = float(str(np.float32(1.0 / 6.0)))  # as ONNX attributes (float32) arrive: the ONNX export meets it
    return b.op1(n, nn.HardSigmoid, [n["self"]], {"alpha": alpha, "beta": 0.5})


@aten("aten.hardtanh.default", "aten.clamp.default")
def _clamp(b: Builder, n: Node) -> Sym:
    if n.target == "aten.hardtanh.default":
        lo, hi = n.get("min_val", -1.0), n.get("max_val", 1.0)
    else:
        lo, hi = n.get("min"), n.get("max")
    if _is_tensor(lo) or _is_tensor(hi):
        raise n.unsupported("tensor clamp bounds")
    return b.op1(
        n, nn.Clip, [n["self"]], {"min": None if lo is None else float(lo), "max": None if hi is None else float(hi)}
    )


@aten("aten._softmax.default", "aten.softmax.int")
def _softmax(b: Builder, n: Node) -> Sym:
    x = n["self"]
    return b.op1(n, nn.Softmax, [x], {"axis": _norm(int(n["dim"]), len(shape_of(x)), n)})


@aten("aten._log_softmax.default", "aten.log_softmax.int")
def _log_softmax(b: Builder, n: Node) -> Sym:
    x = n["self"]
    return b.op1(n, nn.LogSoftmax, [x], {"axis": _norm(int(n["dim"]), len(shape_of(x)), n)})


def _pool_window(n: Node, nd: int) -> tuple[list[int], list[int], list[int]]:
    k = _pair(n["kernel_size"], nd)
    stride = n.get("stride") or k
    return k, _pair(stride, nd) if stride else k, _pair(n.get("padding", 0), nd)


@aten("aten.max_pool2d_with_indices.default", "aten.max_pool2d.default")
def _max_pool(b: Builder, n: Node) -> Sym | list[Sym | None]:
    x = n["self"]
    k, stride, pad = _pool_window(n, 2)
    dil = _pair(n.get("dilation", 1), 2)
    attrs = {
        "kernel_shape": k,
        "strides": stride,
        "pads": pad + pad,
        "dilations": dil,
        "ceil_mode": bool(n.get("ceil_mode", False)),
    }
    y = b.op1(n, nn.MaxPool, [x], attrs)
    if n.target == "aten.max_pool2d.default":
        return y
    return [y, None]  # the indices (output 1) are not supported: an error if used


@aten("aten.avg_pool2d.default")
def _avg_pool(b: Builder, n: Node) -> Sym:
    if n.get("divisor_override") is not None:
        raise n.unsupported("avg_pool2d with divisor_override")
    k, stride, pad = _pool_window(n, 2)
    attrs = {
        "kernel_shape": k,
        "strides": stride,
        "pads": pad + pad,
        "dilations": [1, 1],
        "ceil_mode": bool(n.get("ceil_mode", False)),
        "count_include_pad": bool(n.get("count_include_pad", True)),
    }
    return b.op1(n, nn.AvgPool, [n["self"]], attrs)


@aten("aten._adaptive_avg_pool2d.default", "aten.adaptive_avg_pool2d.default")
def _adaptive_avg(b: Builder, n: Node) -> Sym:
    return _adaptive(b, n, "avg")


@aten("aten.adaptive_max_pool2d.default")
def _adaptive_max(b: Builder, n: Node) -> list[Sym | None]:
    return [_adaptive(b, n, "max"), None]  # the indices (output 1) are not supported: an error if used


def _adaptive(b: Builder, n: Node, kind: str) -> Sym:
    """An adaptive pool: global, an ordinary pool where the output size divides the input's, else the
    adaptive windows (nn.adaptive_pool)."""
    x = n["self"]
    xs = shape_of(x)
    out = _pair(n["output_size"], 2)
    if out == [1, 1]:
        return b.op1(n, nn.GlobalAvgPool if kind == "avg" else nn.GlobalMaxPool, [x])
    if xs[2] % out[0] or xs[3] % out[1]:
        return b.op1(n, nn.AdaptivePool, [x], {"output_size": out, "kind": kind})
    k = [xs[2] // out[0], xs[3] // out[1]]
    attrs = {"kernel_shape": k, "strides": k, "pads": [0, 0, 0, 0], "dilations": [1, 1]}
    return b.op1(n, nn.AvgPool if kind == "avg" else nn.MaxPool, [x], attrs)


def _reduce(cls: type[Operation]) -> Converter:
    def conv(b: Builder, n: Node) -> Sym:
        x = n["self"]
        r = len(shape_of(x))
        dims = n.get("dim")
        if n.get("dtype") is not None:
            raise n.unsupported("a reduction with a dtype argument")
        attrs: dict[str, Any] = {"keepdims": bool(n.get("keepdim", False))}
        if dims is not None and len(dims):
            attrs["axes"] = sorted({_norm(int(d), r, n) for d in dims})
        return b.op1(n, cls, [x], attrs)

    return conv


aten("aten.mean.dim", "aten.mean.default")(_reduce(nn.ReduceMean))
aten("aten.sum.dim_IntList", "aten.sum.default")(_reduce(nn.ReduceSum))


@aten("aten._native_batch_norm_legit_no_training.default")
def _batch_norm(b: Builder, n: Node) -> list[Sym | None]:
    x = n["input"]
    c = shape_of(x)[1]
    dtype = b.type_of(x).np_dtype
    w = n.get("weight") or Const(np.ones(c, dtype), f"{n.name}.weight")
    bias = n.get("bias") or Const(np.zeros(c, dtype), f"{n.name}.bias")
    y = b.op1(n, nn.BatchNorm, [x, w, bias, n["running_mean"], n["running_var"]], {"epsilon": float(n["eps"])})
    return [y, None, None]


@aten("aten.native_layer_norm.default")
def _layer_norm(b: Builder, n: Node) -> list[Sym | None]:
    x = n["input"]
    xs = shape_of(x)
    norm = list(n["normalized_shape"])
    dtype = b.type_of(x).np_dtype
    w = n.get("weight") or Const(np.ones(norm, dtype), f"{n.name}.weight")
    bias = n.get("bias")
    attrs = {"axis": len(xs) - len(norm), "epsilon": float(n["eps"])}
    return [b.op1(n, nn.LayerNorm, [x, w] + ([bias] if bias is not None else []), attrs), None, None]


def _target_shape(n: Node, shape: Sequence[int], size: Sequence[int]) -> list[int]:
    size = [int(d) for d in size]
    if size.count(-1) > 1:
        raise n.error(f"shape {size} has more than one -1")
    if -1 in size:
        known = math.prod(d for d in size if d != -1)
        size[size.index(-1)] = math.prod(shape) // max(known, 1)
    if math.prod(size) != math.prod(shape):
        raise n.error(f"cannot view {list(shape)} as {size}")
    return size


@aten("aten.view.default", "aten.reshape.default", "aten._unsafe_view.default")
def _view(b: Builder, n: Node) -> Sym:
    x = n["self"]
    target = _target_shape(n, shape_of(x), n["size"] if "size" in n.args else n["shape"])
    if target == list(shape_of(x)):
        return x
    return b.op1(n, nn.Reshape, [x], {"shape": target})


@aten("aten.flatten.using_ints")
def _flatten(b: Builder, n: Node) -> Sym:
    x = n["self"]
    xs = shape_of(x)
    r = len(xs)
    s, e = _norm(int(n.get("start_dim", 0)), r, n), _norm(int(n.get("end_dim", -1)), r, n)
    target = [*xs[:s], math.prod(xs[s : e + 1]), *xs[e + 1 :]]
    return x if target == list(xs) else b.op1(n, nn.Reshape, [x], {"shape": target})


@aten("aten.permute.default")
def _permute(b: Builder, n: Node) -> Sym:
    x = n["self"]
    r = len(shape_of(x))
    perm = [_norm(int(d), r, n) for d in n["dims"]]
    if perm == list(range(r)):
        return x
    return b.op1(n, nn.Transpose, [x], {"perm": perm})


@aten("aten.t.default", "aten.transpose.int")
def _transpose(b: Builder, n: Node) -> Sym:
    x = n["self"]
    r = len(shape_of(x))
    perm = list(range(r))
    if n.target == "aten.t.default":
        if r < 2:
            return x
        d0, d1 = 0, 1
    else:
        d0, d1 = _norm(int(n["dim0"]), r, n), _norm(int(n["dim1"]), r, n)
    perm[d0], perm[d1] = perm[d1], perm[d0]
    if perm == list(range(r)):
        return x
    return b.op1(n, nn.Transpose, [x], {"perm": perm})


@aten("aten.cat.default")
def _cat(b: Builder, n: Node) -> Sym:
    xs = [t for t in n["tensors"] if math.prod(shape_of(t)) or len(n["tensors"]) == 1]
    if len(xs) == 1:
        return xs[0]
    r = len(shape_of(xs[0]))
    return b.op1(n, nn.Concat, xs, {"axis": _norm(int(n.get("dim", 0)), r, n)})


@aten("aten.split_with_sizes.default", "aten.split.Tensor")
def _split(b: Builder, n: Node) -> list[Sym]:
    x = n["self"]
    xs = shape_of(x)
    ax = _norm(int(n.get("dim", 0)), len(xs), n)
    if "split_sizes" in n.args:
        sizes = [int(s) for s in n["split_sizes"]]
    else:
        size = int(n["split_size"])
        sizes = [min(size, xs[ax] - i) for i in range(0, xs[ax], size)]
    types = [b.type_of(x).with_shape(xs[:ax] + (s,) + xs[ax + 1 :]) for s in sizes]
    names = [f"{n.name}.{i}" for i in range(len(sizes))]
    return b.emit(n, nn.Split, [x], {"axis": ax, "split": sizes}, types=types, names=names)


@aten("aten.unsqueeze.default")
def _unsqueeze(b: Builder, n: Node) -> Sym:
    x = n["self"]
    r = len(shape_of(x)) + 1
    return b.op1(n, nn.Unsqueeze, [x], {"axes": [_norm(int(n["dim"]), r, n)]})


@aten("aten.squeeze.dim", "aten.squeeze.dims", "aten.squeeze.default")
def _squeeze(b: Builder, n: Node) -> Sym:
    x = n["self"]
    xs = shape_of(x)
    dims = n.get("dim")
    dims = list(range(len(xs))) if dims is None else ([dims] if isinstance(dims, int) else list(dims))
    axes = sorted({_norm(int(d), len(xs), n) for d in dims if xs[_norm(int(d), len(xs), n)] == 1})
    return x if not axes else b.op1(n, nn.Squeeze, [x], {"axes": axes})


@aten("aten.expand.default")
def _expand(b: Builder, n: Node) -> Sym:
    x = n["self"]
    xs = shape_of(x)
    size = [int(d) for d in n["size"]]
    lead = len(size) - len(xs)
    size = [xs[i - lead] if d == -1 else d for i, d in enumerate(size)]
    if size == list(xs):
        return x
    return b.op1(n, nn.Expand, [x], {"shape": size})


@aten("aten.slice.Tensor")
def _slice(b: Builder, n: Node) -> Sym:
    x = n["self"]
    xs = shape_of(x)
    ax = _norm(int(n.get("dim", 0)), len(xs), n)
    d = xs[ax]
    start = n.get("start", 0)
    end = n.get("end", d)
    step = int(n.get("step", 1))
    start, end = max(-d - 1, min(int(start), d)), max(-d - 1, min(int(end), d))
    if len(range(*slice(start, end, step).indices(d))) == d and step == 1:
        return x
    return b.op1(n, nn.Slice, [x], {"starts": [start], "ends": [end], "axes": [ax], "steps": [step]})


@aten("aten.select.int")
def _select(b: Builder, n: Node) -> Sym:
    x = n["self"]
    xs = shape_of(x)
    ax = _norm(int(n["dim"]), len(xs), n)
    i = int(n["index"]) % xs[ax]
    s = b.op1(n, nn.Slice, [x], {"starts": [i], "ends": [i + 1], "axes": [ax], "steps": [1]}, out=False)
    return b.op1(n, nn.Squeeze, [s], {"axes": [ax]})


@aten("aten.constant_pad_nd.default")
def _pad(b: Builder, n: Node) -> Sym:
    x = n["self"]
    r = len(shape_of(x))
    pad = [int(p) for p in n["pad"]]  # (last dim: begin, end), (second to last: begin, end), ...
    begins, ends = [0] * r, [0] * r
    for j in range(len(pad) // 2):
        begins[r - 1 - j], ends[r - 1 - j] = pad[2 * j], pad[2 * j + 1]
    if not any(begins + ends):
        return x
    return b.op1(n, nn.Pad, [x], {"pads": begins + ends, "mode": "constant", "value": float(n.get("value", 0))})


@aten("aten.upsample_nearest2d.default", "aten.upsample_nearest2d.vec")
def _upsample(b: Builder, n: Node) -> Sym:
    x = n["input"] if "input" in n.args else n["self"]
    out = list(n.fx.meta["val"].shape)
    xs = shape_of(x)
    scales = [1.0, 1.0] + [out[i] / xs[i] for i in (2, 3)]
    attrs = {
        "mode": "nearest",
        "coordinate_transformation_mode": "asymmetric",
        "nearest_mode": "floor",
        "scales": scales,
    }
    return b.op1(n, nn.Resize, [x], attrs, type=b.type_of(x).with_shape(out))


@aten(
    "aten.clone.default",
    "aten.alias.default",
    "aten.detach.default",
    "aten.lift_fresh_copy.default",
    "aten.contiguous.default",
    "aten.dropout.default",
)
def _alias(b: Builder, n: Node) -> Sym:
    return n["input"] if "input" in n.args else n["self"]


@aten("aten._to_copy.default", "aten.to.dtype")
def _to_copy(b: Builder, n: Node) -> Sym:
    x = n["self"]
    dtype = n.get("dtype")
    if dtype is None:
        return x
    ir = _DTYPES.get(str(dtype))
    if ir is None:
        raise n.unsupported(f"conversion to {dtype}")
    if ir_dtype(x) == ir:
        return x
    return b.op1(n, nn.Cast, [x], type=b.type_of(x).with_dtype(ir))


@aten("aten._assert_tensor_metadata.default", "aten._assert_scalar.default")
def _assertion(b: Builder, n: Node) -> None:
    """Export-time checks (dtype/shape assertions) with no run-time effect: shapes are static here."""
    return None


@aten("_operator.getitem")
def _getitem(b: Builder, n: Node) -> Sym | None:
    seq, i = n.args["seq"], n.args["index"]
    if not isinstance(seq, list | tuple) or seq[i] is None:
        src = n.fx.args[0]
        raise n.unsupported(f"output #{i} of {src.name} ({src.target}), e.g. pooling indices or batch statistics,")
    return seq[i]


_DTYPES = {
    "torch.float32": "f32",
    "torch.float16": "f16",
    "torch.float64": "f64",
    "torch.int8": "i8",
    "torch.int16": "i16",
    "torch.int32": "i32",
    "torch.int64": "i64",
    "torch.uint8": "u8",
    "torch.bool": "i1",
}


# ----------------------------------------------------------------------------------------------- the importer


def _bind_args(fx: Any, env: dict[str, Any], resolved: bool = True) -> dict[str, Any]:
    """The node's arguments by schema name (defaults filled in), FX nodes replaced by their symbols."""

    def resolve(v: Any) -> Any:
        if not resolved:
            return v
        if hasattr(v, "op") and hasattr(v, "name") and v.name in env:
            return env[v.name]
        if isinstance(v, list | tuple):
            return type(v)(resolve(x) for x in v)
        return v

    target = fx.target
    if str(target) == "_operator.getitem" or getattr(target, "__name__", "") == "getitem":
        return {"seq": resolve(fx.args[0]), "index": fx.args[1]}
    schema = getattr(target, "_schema", None)
    if schema is None:
        return {f"arg{i}": resolve(a) for i, a in enumerate(fx.args)}
    out: dict[str, Any] = {}
    for i, arg in enumerate(schema.arguments):
        if i < len(fx.args):
            out[arg.name] = resolve(fx.args[i])
        elif arg.name in fx.kwargs:
            out[arg.name] = resolve(fx.kwargs[arg.name])
        elif arg.has_default_value():
            out[arg.name] = arg.default_value
    return out


def _target_name(fx: Any) -> str:
    t = fx.target
    if getattr(t, "__name__", "") == "getitem" and getattr(t, "__module__", "") in ("_operator", "operator"):
        return "_operator.getitem"
    return str(t)


def _ir_type(val: Any, what: str, file: str | None) -> TensorType:
    torch = _torch()
    if not isinstance(val, torch.Tensor):
        raise PccError(f"{file or 'program'}: {what} is not a tensor ({type(val).__name__})")
    dims = []
    for d in val.shape:
        if not isinstance(d, int):
            raise PccError(
                f"{file or 'program'}: {what} has a symbolic dimension ({d}); pcc needs static shapes: "
                "export without dynamic_shapes"
            )
        dims.append(int(d))
    dtype = _DTYPES.get(str(val.dtype))
    if dtype is None:
        raise PccError(f"{file or 'program'}: {what} has element type {val.dtype}, which pcc does not support")
    return TensorType(dims, dtype)


def _numpy(t: Any) -> np.ndarray:
    t = t.detach().cpu()
    if str(t.dtype) == "torch.bfloat16":
        raise PccError("bfloat16 weights are not supported")
    return t.contiguous().numpy().copy()


def check_supported(ep: Any, file: str | None = None) -> None:
    """One PccError listing every ATen op of the program that has no converter (with its nodes)."""
    missing: dict[str, list[str]] = {}
    for fx in ep.graph.nodes:
        if fx.op == "call_function" and _target_name(fx) not in ATEN:
            missing.setdefault(_target_name(fx), []).append(fx.name)
    if missing:
        parts = [
            f"{op} ({', '.join(map(repr, nodes[:6]))}{' ...' if len(nodes) > 6 else ''})"
            for op, nodes in sorted(missing.items())
        ]
        raise PccError(
            f"the program uses {len(missing)} unsupported ATen operator{'s' if len(missing) > 1 else ''}: "
            + "; ".join(parts),
            Location(file),
            notes=[f"supported: {', '.join(supported_ops())}"],
        )


def _decompositions(torch: Any) -> dict:
    """torch's core-ATen decomposition table less the ops that :data:`ATEN` converts whole: ``hardswish``,
    ``linear``, ``matmul``, ``split``, ``softmax``, ``scaled_dot_product_attention``, ... stay one op, so that the
    program meets the ONNX export of the same model in one form instead of arriving as pieces (``add``/``clamp``/
    ``div``, ``view``/``addmm``, ``expand``/``bmm``) that pcc would have to reassemble.  (torch's decomposition of
    ``scaled_dot_product_attention`` can also give its result other strides than the program assumes, and a later
    ``view`` then fails: HF GPT-2 with sdpa attention, torch 2.13.)"""
    table = torch.export.default_decompositions()
    for op in list(table.keys()):
        if str(op) in ATEN:
            del table[op]
    return table


def load_exported(program: Any, *, file: str | None = None, name: str | None = None, decompose: bool = True) -> Module:
    """Convert a ``torch.export.ExportedProgram`` into a verified ``nn`` module.

    The program is lowered to core ATen first (``run_decompositions()``, keeping whole the composite ops that
    :data:`ATEN` converts); ``decompose=False`` converts the ops
    as exported (only those in :data:`ATEN` import)."""
    torch = _torch()
    from torch.export.graph_signature import InputKind, OutputKind

    try:
        ep = program.run_decompositions(_decompositions(torch)) if decompose else program
    except Exception as exc:
        raise PccError(f"{file or 'program'}: torch could not lower the program to core ATen: {exc}") from None
    check_supported(ep, file)
    sig = ep.graph_signature
    reserved = {fx.name for fx in ep.graph.nodes}
    module = Module(name or (Path(file).stem if file else "torch_model"))
    module.source = file
    b = Builder(module, file, reserved)
    env: dict[str, Any] = {}
    consts = {**ep.state_dict, **getattr(ep, "constants", {})}
    specs = {s.arg.name: s for s in sig.input_specs}
    for fx in ep.graph.nodes:
        if fx.op != "placeholder":
            continue
        spec = specs.get(fx.name)
        kind = spec.kind if spec is not None else InputKind.USER_INPUT
        if kind == InputKind.USER_INPUT:
            val = fx.meta.get("val")
            if not isinstance(val, torch.Tensor):  # a Python scalar input baked in at export
                env[fx.name] = val
                continue
            env[fx.name] = b.graph.add_arg(fx.name, _ir_type(val, f"input {fx.name!r}", file))
        elif kind in (InputKind.PARAMETER, InputKind.BUFFER, InputKind.CONSTANT_TENSOR):
            target = spec.target
            if target not in consts:
                raise PccError(f"{file or 'program'}: no data for {kind.name.lower()} {target!r}")
            env[fx.name] = Const(_numpy(consts[target]), target)
        else:
            raise PccError(f"{file or 'program'}: unsupported program input kind {kind.name} ({fx.name})")
    outputs: list[tuple[str, Sym]] = []
    for fx in ep.graph.nodes:
        if fx.op == "call_function":
            n = Node(fx, _bind_args(fx, env), _bind_args(fx, env, resolved=False), env, file)
            b.site = n
            result = ATEN[_target_name(fx)](b, n)
            env[fx.name] = result
            _crosscheck(n, result)
        elif fx.op == "output":
            b.site = None
            out_specs = sig.output_specs
            results = fx.args[0]
            for spec, r in zip(out_specs, results, strict=True):
                if spec.kind != OutputKind.USER_OUTPUT:
                    raise PccError(
                        f"{file or 'program'}: the program mutates {spec.kind.name} {spec.target!r}; "
                        "export the model in eval mode"
                    )
                s = env.get(r.name) if hasattr(r, "name") else None
                if not _is_tensor(s):
                    raise PccError(f"{file or 'program'}: output {r} is not a tensor")
                outputs.append((r.name, s))
        elif fx.op != "placeholder":
            raise PccError(f"{file or 'program'}: unsupported FX node kind {fx.op} ({fx.name})")
    return b.finish(outputs)


def _crosscheck(n: Node, result: Any) -> None:
    val = n.fx.meta.get("val")
    if result is None or val is None:
        return
    vals = val if isinstance(val, list | tuple) else [val]
    res = result if isinstance(result, list | tuple) else [result]
    for v, r in zip(vals, res, strict=False):
        if r is None or not hasattr(v, "shape"):
            continue
        if tuple(int(d) for d in v.shape) != shape_of(r):
            raise n.error(f"pcc computed shape {list(shape_of(r))} but torch says {list(v.shape)} (an importer bug)")


def load(model: Any, example_inputs: tuple, *, name: str | None = None, strict: bool = False) -> Module:
    """Export ``model`` (an ``nn.Module``, evaluated in eval mode) with ``torch.export`` on ``example_inputs``
    (a tuple of tensors, which fix the static shapes) and convert it."""
    torch = _torch()
    if not isinstance(example_inputs, tuple):
        example_inputs = (example_inputs,)
    was_training = getattr(model, "training", False)
    model.eval()
    try:
        ep = torch.export.export(model, example_inputs, strict=strict)
    except Exception as exc:
        raise PccError(f"torch.export could not export {type(model).__name__}: {type(exc).__name__}: {exc}") from None
    finally:
        model.train(was_training)
    return load_exported(ep, name=name or type(model).__name__)


def load_pt2(path: str | os.PathLike[str]) -> Module:
    """Read a ``.pt2`` file written by ``torch.export.save`` (checked by :mod:`pcc.frontends.pt2`) and convert it."""
    from pcc.frontends.pt2 import read_exported_program

    p = Path(path)
    ep = read_exported_program(p)
    return load_exported(ep, file=str(p), name=p.stem)


from pcc.frontends import torch_aten  # noqa: E402, F401  (registers the remaining ATen rules)
