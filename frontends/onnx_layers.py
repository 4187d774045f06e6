"""ONNX import rules: convolution, matrix products, pooling, normalisation, resizing, quantization."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from pcc.dialects import nn
from pcc.frontends import Const, Sym, shape_of
from pcc.frontends.onnx_rules import (
    Converter,
    Ctx,
    Node,
    axis_of,
    converter,
    resolve_pads,
)
from pcc.ir import Operation, TensorType

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
    pads = resolve_pads(n, xs[2:], k, strides, dil)
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
            "pads": resolve_pads(n, xs[2:], k, strides, dil),
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
    ax = axis_of(int(n.attr("axis", -1)), len(shape), n)
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
    axes = list(range(r)) if axes is None else [axis_of(int(a), r, n) for a in axes]
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
