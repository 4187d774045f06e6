"""ONNX import rules: convolution, matrix products, pooling, normalisation, resizing, quantization."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from pcc.dialects import nn
from pcc.frontends import Const, Sym, ir_dtype, shape_of
from pcc.frontends.onnx_rules import (
    ONNX_TO_IR,
    Converter,
    Ctx,
    Node,
    axis_of,
    cast,
    converter,
    onnx_type_name,
    resolve_pads,
)
from pcc.ir import Operation, TensorType

# ----------------------------------------------------------------------------------------------- linear algebra


@converter("Conv", since=1)
def _conv(cx: Ctx, n: Node) -> list[Sym]:
    x, w, b = n.x(0), n.x(1), n.input(2)
    xs, ws = shape_of(x), shape_of(w)
    if len(xs) not in (3, 4, 5) or len(ws) != len(xs):
        raise n.unsupported(f"{len(xs) - 2}-D convolution (input {list(xs)}, weight {list(ws)}); 1-D to 3-D are")
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
    if nd == 3:
        return [conv3d(cx, n, x, w, b, attrs)]
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


def _resize(
    cx: Ctx,
    n: Node,
    scales: list[float],
    out_shape: list[int],
    coord: str,
    rounding: str,
    *,
    out: bool = True,
    x: Sym | None = None,
    extra: dict[str, Any] | None = None,
) -> Sym:
    x = n.x() if x is None else x
    attrs = {
        "mode": "nearest",
        "coordinate_transformation_mode": coord,
        "nearest_mode": rounding,
        "scales": [float(s) for s in scales],
        **(extra or {}),
    }
    if list(out_shape) == list(shape_of(x)) and all(s == 1.0 for s in scales) and coord != "tf_crop_and_resize":
        return x
    return cx.op1(n, nn.Resize, [x], attrs, type=cx.type_of(x).with_shape(out_shape), out=out)


def _floor_sizes(shape: Sequence[int], scales: Sequence[float]) -> list[int]:
    return [int(math.floor(d * float(np.float32(s)))) for d, s in zip(shape, scales, strict=True)]


def _upsample(cx: Ctx, n: Node, scales: list[float]) -> list[Sym]:
    """Upsample and Resize-10, mode nearest: asymmetric coordinates, ``floor`` on axes scaled up and ``ceil`` on
    axes scaled down (what onnxruntime does; the opset-10 spec leaves it open).  Nearest-neighbour resizing is
    separable, so mixed up/down scales become two ``nn.resize`` ops."""
    mode = n.attr("mode", "nearest")
    if mode not in ("nearest", "linear", "bilinear"):
        raise n.error(f"unknown {n.op_type} mode {mode!r}")
    x = n.x()
    shape = list(shape_of(x))
    if len(scales) != len(shape) or any(not s > 0 for s in scales):
        raise n.error(f"scales {scales} must be {len(shape)} positive numbers")
    out = cx.static_shape(n.outputs[0]) or _floor_sizes(shape, scales)
    if mode != "nearest":  # (bi)linear: asymmetric coordinates, edge taps repeated
        return [_resize(cx, n, scales, out, "asymmetric", "floor", extra={"mode": "linear"})]
    down = [i for i, s in enumerate(scales) if s < 1.0]
    if not down or len(down) == sum(1 for s in scales if s != 1.0):
        return [_resize(cx, n, scales, out, "asymmetric", "ceil" if down else "floor")]
    mid = [out[i] if i in down else d for i, d in enumerate(shape)]
    first = [s if i in down else 1.0 for i, s in enumerate(scales)]
    second = [1.0 if i in down else s for i, s in enumerate(scales)]
    y = _resize(cx, n, first, mid, "asymmetric", "ceil", out=False)
    return [_resize(cx, n, second, out, "asymmetric", "floor", x=y)]


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
    if mode not in nn.RESIZE_MODES:
        raise n.error(f"unknown Resize mode {mode!r}")
    coord = n.attr("coordinate_transformation_mode", "half_pixel")
    axes = n.attr("axes")
    axes = list(range(r)) if axes is None else [axis_of(int(a), r, n) for a in axes]
    extra: dict[str, Any] = {
        "mode": mode,
        "cubic_coeff_a": float(n.attr("cubic_coeff_a", -0.75)),
        "exclude_outside": bool(int(n.attr("exclude_outside", 0))),
        "antialias": bool(int(n.attr("antialias", 0))),
    }
    roi = [0.0] * r + [1.0] * r
    if coord == "tf_crop_and_resize":
        roi_in = n.const(1)
        vals = [] if roi_in is None else [float(v) for v in roi_in.reshape(-1)]
        if len(vals) != 2 * len(axes):
            raise n.error(f"roi needs {2 * len(axes)} values for axes {axes}, got {vals}")
        for j, a in enumerate(axes):
            roi[a], roi[a + r] = vals[j], vals[j + len(axes)]
        extra["roi"] = roi
        extra["extrapolation_value"] = float(n.attr("extrapolation_value", 0.0))
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
        crop = [d * (roi[i + r] - roi[i]) for i, d in enumerate(shape)]
        out = _floor_sizes(crop, scales)
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
    return [_resize(cx, n, scales, out, coord, rounding, extra=extra)]


# ----------------------------------------------------------------------------------------------- more layers


def _as_2d(cx: Ctx, n: Node, x: Sym, w: Sym) -> tuple[Sym, Sym]:
    """A 1-D window op as a 2-D one over a height of 1 (input and weight reshaped)."""
    xs, ws = shape_of(x), shape_of(w)
    x = cx.op1(n, nn.Reshape, [x], {"shape": [xs[0], xs[1], 1, xs[2]]}, out=False)
    w = cx.op1(n, nn.Reshape, [w], {"shape": [ws[0], ws[1], 1, ws[2]]}, out=False)
    return x, w


def _from_2d(cx: Ctx, n: Node, y: Sym) -> Sym:
    ys = shape_of(y)
    return cx.op1(n, nn.Reshape, [y], {"shape": [ys[0], ys[1], ys[3]]})


@converter("ConvTranspose", since=1)
def _conv_transpose(cx: Ctx, n: Node) -> list[Sym]:
    x, w, b = n.x(0), n.x(1), n.input(2)
    xs, ws = shape_of(x), shape_of(w)
    if len(xs) not in (3, 4, 5) or len(ws) != len(xs):
        raise n.unsupported(f"{len(xs) - 2}-D ConvTranspose (input {list(xs)}); 1-D to 3-D are")
    k = list(ws[2:])
    nd = len(k)
    strides = list(n.attr("strides", [1] * nd))
    dil = list(n.attr("dilations", [1] * nd))
    opad = list(n.attr("output_padding", [0] * nd))
    group = int(n.attr("group", 1))
    out_shape = n.attr("output_shape")
    auto = n.attr("auto_pad", "NOTSET")
    if out_shape is not None or auto in ("SAME_UPPER", "SAME_LOWER"):
        # total padding from the wanted output size; SAME: output = input * stride
        want = list(out_shape)[-nd:] if out_shape is not None else [d * s for d, s in zip(xs[2:], strides, strict=True)]
        lo, hi = [], []
        for i in range(nd):
            total = strides[i] * (xs[2 + i] - 1) + opad[i] + (k[i] - 1) * dil[i] + 1 - want[i]
            small, big = total // 2, total - total // 2  # as ONNX's reference: the end gets less unless SAME_UPPER
            upper = auto == "SAME_UPPER"
            lo.append(small if upper else big)
            hi.append(big if upper else small)
        pads = lo + hi
    elif auto == "VALID":
        pads = [0] * (2 * nd)
    else:
        pads = list(n.attr("pads", [0] * (2 * nd)))
    if nd == 1:
        x, w = _as_2d(cx, n, x, w)
        strides, dil, opad, pads = [1, strides[0]], [1, dil[0]], [0, opad[0]], [0, pads[0], 0, pads[1]]
    attrs = {"strides": strides, "pads": pads, "dilations": dil, "output_padding": opad, "group": group}
    if nd == 3:
        return [conv_transpose3d(cx, n, x, w, b, attrs)]
    y = cx.op1(n, nn.ConvTranspose2d, [x, w] + ([b] if b is not None else []), attrs, out=nd == 2)
    return [_from_2d(cx, n, y) if nd == 1 else y]


@converter("InstanceNormalization", since=6)
def _instance_norm(cx: Ctx, n: Node) -> list[Sym]:
    x = n.x(0)
    attrs = {"num_groups": shape_of(x)[1], "epsilon": float(n.attr("epsilon", 1e-5))}
    return [cx.op1(n, nn.GroupNorm, [x, n.x(1), n.x(2)], attrs)]


def _group_norm(per_group: bool) -> Converter:
    def conv(cx: Ctx, n: Node) -> list[Sym]:
        x, scale, bias = n.x(0), n.x(1), n.x(2)
        g = int(n.attr("num_groups"))
        c = shape_of(x)[1]
        if per_group:  # opset 18: one scale and bias per group, repeated over its channels
            if g <= 0 or c % g:
                raise n.error(f"{g} groups do not divide {c} channels")
            scale, bias = (
                cx.op1(
                    n,
                    nn.Reshape,
                    [
                        cx.op1(
                            n,
                            nn.Expand,
                            [cx.op1(n, nn.Reshape, [s], {"shape": [g, 1]}, out=False)],
                            {"shape": [g, c // g]},
                            out=False,
                        )
                    ],
                    {"shape": [c]},
                    out=False,
                )
                for s in (scale, bias)
            )
        return [cx.op1(n, nn.GroupNorm, [x, scale, bias], {"num_groups": g, "epsilon": float(n.attr("epsilon", 1e-5))})]

    return conv


converter("GroupNormalization", since=18)(_group_norm(True))
converter("GroupNormalization", since=21)(_group_norm(False))


@converter("LRN", since=1)
def _lrn(cx: Ctx, n: Node) -> list[Sym]:
    attrs = {
        "size": int(n.attr("size")),
        "alpha": float(n.attr("alpha", 0.0001)),
        "beta": float(n.attr("beta", 0.75)),
        "bias": float(n.attr("bias", 1.0)),
    }
    return [cx.op1(n, nn.LRN, [n.x()], attrs)]


def _scalar(cx: Ctx, x: Sym, v: float, name: str) -> Const:
    return Const(np.array(v, cx.type_of(x).np_dtype), name)


@converter("MeanVarianceNormalization", since=9)
def _mvn(cx: Ctx, n: Node) -> list[Sym]:
    """(x - E[x]) / (sqrt(E[x^2] - E[x]^2) + 1e-9) over ``axes`` (ONNX's function body)."""
    x = n.x()
    r = len(shape_of(x))
    axes = sorted(axis_of(int(a), r, n) for a in n.attr("axes", [0, 2, 3]))
    red = {"axes": axes, "keepdims": True}
    mean = cx.op1(n, nn.ReduceMean, [x], red, out=False)
    sq_mean = cx.op1(n, nn.ReduceMean, [cx.op1(n, nn.Mul, [x, x], out=False)], red, out=False)
    var = cx.op1(n, nn.Sub, [sq_mean, cx.op1(n, nn.Mul, [mean, mean], out=False)], out=False)
    std = cx.op1(n, nn.Add, [cx.op1(n, nn.Sqrt, [var], out=False), _scalar(cx, x, 1e-9, "mvn_eps")], out=False)
    return [cx.op1(n, nn.Div, [cx.op1(n, nn.Sub, [x, mean], out=False), std])]


@converter("LpNormalization", since=1)
def _lp_norm(cx: Ctx, n: Node) -> list[Sym]:
    x = n.x()
    p = int(n.attr("p", 2))
    if p not in (1, 2):
        raise n.error(f"p must be 1 or 2, got {p}")
    ax = axis_of(int(n.attr("axis", -1)), len(shape_of(x)), n)
    cls = nn.ReduceL1 if p == 1 else nn.ReduceL2
    norm = cx.op1(n, cls, [x], {"axes": [ax], "keepdims": True}, out=False)
    zero = cx.op1(n, nn.Equal, [norm, _scalar(cx, x, 0.0, "lp_zero")], out=False)  # a zero vector stays zero
    safe = cx.op1(n, nn.Where, [zero, _scalar(cx, x, 1.0, "lp_one"), norm], out=False)
    return [cx.op1(n, nn.Div, [x, safe])]


# ----------------------------------------------------------------------------------------------- quantization

_QUANT_OUT = {"i8", "u8", "i16", "i32"}


def _q_axis(n: Node, x: Sym, scale: Sym) -> int:
    if len(shape_of(scale)) == 0 or shape_of(scale) == (1,):
        return 1
    return axis_of(int(n.attr("axis", 1)), len(shape_of(x)), n)


def _blocks(cx: Ctx, n: Node, x: Sym, params: Sequence[Sym | None]) -> list[Sym | None]:
    """Blocked quantization (``block_size`` B > 0, opset 21): each scale / zero point, of ``x``'s shape but
    ``ceil(D / B)`` along ``axis``, gathered out to ``x``'s shape (position ``i`` takes block ``i // B``)."""
    b = int(n.attr("block_size", 0))
    xs = shape_of(x)
    ax = axis_of(int(n.attr("axis", 1)), len(xs), n)
    out: list[Sym | None] = []
    for p in params:
        if p is None:
            out.append(None)
            continue
        ps = shape_of(p)
        want = [*xs[:ax], -(-xs[ax] // b), *xs[ax + 1 :]]
        if list(ps) != want:
            raise n.error(f"a blocked scale / zero point must have shape {want} (block_size {b}), got {list(ps)}")
        idx = Const(np.arange(xs[ax], dtype=np.int64) // b, "block_index")
        out.append(cx.op1(n, nn.Gather, [p, idx], {"axis": ax}, out=False))
    return out


_QUANT_RANGE = {"i8": (-128, 127), "u8": (0, 255), "i16": (-32768, 32767), "i32": (-(2**31), 2**31 - 1)}


@converter("QuantizeLinear", since=10)
def _quantize(cx: Ctx, n: Node) -> list[Sym]:
    x, scale, zp = n.x(0), n.x(1), n.input(2)
    if zp is not None:
        dtype = ir_dtype(zp)
    else:
        to = n.attr("output_dtype")
        dtype = ONNX_TO_IR.get(int(to)) if to else "u8"
    if dtype not in _QUANT_OUT:
        raise n.unsupported(f"QuantizeLinear to {dtype or onnx_type_name(int(n.attr('output_dtype', 0)))}")
    if ir_dtype(scale) != ir_dtype(x):
        scale = cast(cx, n, scale, cx.type_of(x).dtype)
    if int(n.attr("block_size", 0)):  # elementwise over the gathered blocks: saturate(round(x / s) + zp)
        scale, zp = _blocks(cx, n, x, [scale, zp])
        q = cx.op1(n, nn.Round, [cx.op1(n, nn.Div, [x, scale], out=False)], out=False)
        if zp is not None:
            q = cx.op1(n, nn.Add, [q, cast(cx, n, zp, cx.type_of(x).dtype)], out=False)
        lo, hi = _QUANT_RANGE[dtype]
        q = cx.op1(n, nn.Clip, [q], {"min": float(lo), "max": float(hi)}, out=False)
        return [cx.op1(n, nn.Cast, [q], type=cx.type_of(x).with_dtype(dtype))]
    ops = [x, scale] + ([zp] if zp is not None else [])
    t = cx.type_of(x).with_dtype(dtype)
    return [cx.op1(n, nn.QuantizeLinear, ops, {"axis": _q_axis(n, x, scale)}, type=t)]


_WEIGHT_INT = {"i8", "u8", "i16"}  # a DequantizeLinear of a constant of these types is a quantized weight


def _int_const(c: Const) -> Const:
    """INT4/UINT4 initializers (numpy's ml_dtypes) as int8, so the IR can hold them."""
    if c.data.dtype.kind not in "iub" and c.data.dtype.itemsize == 1 and "int4" in str(c.data.dtype):
        return Const(c.data.astype(np.int8), c.name)
    return c


def _weight_dequantize(cx: Ctx, n: Node, x: Const, scale: Const, zp: Const | None) -> Sym:
    """A quantized weight: ``(q - zp) * scale`` (see :func:`quantized_weight`)."""
    shape = _bshape(x, scale, n)
    levels = x.data.astype(np.int64) - (0 if zp is None else zp.data.astype(np.int64).reshape(shape))
    s = np.asarray(scale.data, np.float32).reshape(shape)
    return quantized_weight(cx, n, levels, np.broadcast_to(s, s.shape), f"{ir_dtype(x)} levels")


def quantized_weight(cx: Ctx, n: Node, levels: np.ndarray, scale: np.ndarray, kind: str) -> Sym:
    """A weight another quantizer stored as integer ``levels`` times ``scale`` (broadcast to the levels; one
    value, or one per slice of one axis).  Where the levels of every slice are a multiple ``g`` of -2..2 (``g``
    = the gcd of the slice's levels; ``g`` = 1 for a 3-bit or INT4 export of pents), the weight stays pentary:
    ``nn.dequantize_weight`` of ``levels / g`` at ``scale * g``, which ``quantize`` takes as it is.  Otherwise
    it becomes the float constant ``levels * scale``, which ``quantize`` re-quantizes.  Either way one note
    names the node, the levels and what was done."""
    name = n.proto.input[0] if n.proto.input else n.name
    lo, hi = (int(levels.min()), int(levels.max())) if levels.size else (0, 0)
    what = f"weight {name!r} ({n.op_type} {n.name!r}): {kind} {lo}..{hi}"
    per = [i for i, d in enumerate(scale.shape) if d > 1]
    s = np.asarray(scale, np.float64)
    if len(per) <= 1 and s.size and np.all(s > 0) and np.all(np.isfinite(s)) and levels.ndim:
        axis = per[0] if per else 0
        moved = np.moveaxis(levels, axis, 0).reshape(levels.shape[axis], -1)
        g = np.gcd.reduce(np.abs(moved), axis=1)
        g = np.where(g == 0, 1, g)
        if np.all(np.abs(moved) <= 2 * g[:, None]):
            gs = g.reshape([-1 if i == axis else 1 for i in range(levels.ndim)])
            pents = (levels // gs).astype(np.int8)
            if per or not np.all(g == g[0]):  # one scale per slice of the axis
                sc = np.moveaxis(np.broadcast_to(s, levels.shape) * gs, axis, 0).reshape(levels.shape[axis], -1)[:, 0]
            else:
                sc = np.asarray(s.reshape(-1)[0] * g[0])
            sc = sc.astype(np.float32)
            pv = cx.weight(Const(pents, f"{name}.p5"), dtype="p5")
            sv = cx.weight(Const(sc, f"{name}.scale"))
            step = "" if np.all(g == 1) else f" (in steps of {int(g.max())})"
            cx.notes.append(f"{what} fit five{step}: kept as pents")
            return cx.emit(n, nn.DequantizeWeight, [pv, sv], {"axis": axis}, names=[n.outputs[0]], fold=False)[0]
    distinct = int(np.unique(levels).size)
    cx.notes.append(f"{what} ({distinct} distinct) do not fit five: re-quantized to pents by quantize")
    return Const((levels * s).astype(np.float32), n.outputs[0])


def _bshape(x: Const, scale: Const, n: Node) -> tuple[int, ...]:
    """The shape that broadcasts a DequantizeLinear's scale (or zero point) over its input."""
    if scale.data.size <= 1:
        return ()
    shape = [1] * x.data.ndim
    shape[_q_axis(n, x, scale)] = -1
    return tuple(shape)


@converter("DequantizeLinear", since=10)
def _dequantize(cx: Ctx, n: Node) -> list[Sym]:
    x, scale, zp = n.x(0), n.x(1), n.input(2)
    if isinstance(x, Const):
        x = _int_const(x)
        zp = _int_const(zp) if isinstance(zp, Const) else zp
        blocked = int(n.attr("block_size", 0)) != 0  # (folded below: the blocks are gathered, then elementwise)
        if ir_dtype(x) in _WEIGHT_INT and isinstance(scale, Const) and (zp is None or isinstance(zp, Const)):
            if not blocked:
                return [_weight_dequantize(cx, n, x, scale, zp)]
    if ir_dtype(x) not in _QUANT_OUT:
        raise n.unsupported(f"DequantizeLinear of {ir_dtype(x) or 'this element type'}")
    if int(n.attr("block_size", 0)):  # elementwise over the gathered blocks: (x - zp) * s
        scale, zp = _blocks(cx, n, x, [scale, zp])
        f = cx.type_of(scale).dtype
        d = cast(cx, n, x, f)
        if zp is not None:
            d = cx.op1(n, nn.Sub, [d, cast(cx, n, zp, f)], out=False)
        return [cx.op1(n, nn.Mul, [d, scale])]
    ops = [x, scale] + ([zp] if zp is not None else [])
    return [cx.op1(n, nn.DequantizeLinear, ops, {"axis": _q_axis(n, x, scale)})]


def _conv_attrs(n: Node, xs: Sequence[int], ws: Sequence[int]) -> dict[str, Any]:
    k = list(ws[2:])
    strides = list(n.attr("strides", [1] * len(k)))
    dil = list(n.attr("dilations", [1] * len(k)))
    return {
        "strides": strides,
        "pads": resolve_pads(n, xs[2:], k, strides, dil),
        "dilations": dil,
        "group": int(n.attr("group", 1)),
    }


def _conv_integer(cx: Ctx, n: Node, x: Sym, w: Sym, xz: Sym | None, wz: Sym | None, out: bool) -> Sym:
    xs, ws = shape_of(x), shape_of(w)
    if len(xs) != 4:
        raise n.unsupported(f"{len(xs) - 2}-D integer convolution (2-D is)")
    ops = [x, w] + ([xz] if xz is not None or wz is not None else [])
    if xz is None and wz is not None:
        ops[2] = Const(np.zeros((), cx.type_of(x).np_dtype), f"{n.name}.x_zero")
    if wz is not None:
        ops.append(wz)
    return cx.op1(n, nn.ConvInteger2d, ops, _conv_attrs(n, xs, ws), out=out)


@converter("ConvInteger", since=10)
def _conv_integer_node(cx: Ctx, n: Node) -> list[Sym]:
    return [_conv_integer(cx, n, n.x(0), n.x(1), n.input(2), n.input(3), True)]


def _matmul_integer(cx: Ctx, n: Node, a: Sym, b: Sym, az: Sym | None, bz: Sym | None, out: bool) -> Sym:
    ops = [a, b]
    if az is not None or bz is not None:
        ops.append(az if az is not None else Const(np.zeros((), cx.type_of(a).np_dtype), f"{n.name}.a_zero"))
    if bz is not None:
        ops.append(bz)
    return cx.op1(n, nn.MatMulInteger, ops, out=out)


@converter("MatMulInteger", since=10)
def _matmul_integer_node(cx: Ctx, n: Node) -> list[Sym]:
    return [_matmul_integer(cx, n, n.x(0), n.x(1), n.input(2), n.input(3), True)]


def _requantize(cx: Ctx, n: Node, acc: Sym, multiplier: Sym, y_zp: Sym, axis: int) -> Sym:
    """``saturate(round(acc * multiplier) + y_zero_point)``: the i32 accumulator back to 8 bits."""
    f = cx.op1(n, nn.Cast, [acc], type=cx.type_of(acc).with_dtype("f32"), out=False)
    y_zp = _scalar_zp(y_zp)
    one = Const(np.ones(shape_of(y_zp), np.float32), f"{n.name}.one")
    if ir_dtype(multiplier) != "f32":
        multiplier = cast(cx, n, multiplier, "f32")
    scaled = cx.op1(n, nn.Mul, [f, multiplier], out=False)
    t = cx.type_of(scaled).with_dtype(cx.type_of(y_zp).dtype)
    return cx.op1(n, nn.QuantizeLinear, [scaled, one, y_zp], {"axis": axis}, type=t)


def _scalar_zp(z: Sym) -> Sym:
    if isinstance(z, Const) and z.data.size == 1:
        return Const(z.data.reshape(()), z.name)
    return z


def _channel(cx: Ctx, n: Node, s: Sym, rank: int, axis: int) -> Sym:
    """A per-channel vector shaped to broadcast along ``axis`` of a rank-``rank`` tensor."""
    if len(shape_of(s)) == 0 or shape_of(s) == (1,):
        return s
    shape = [1] * rank
    shape[axis] = -1
    shape[axis] = shape_of(s)[0]
    return cx.op1(n, nn.Reshape, [s], {"shape": shape}, out=False)


@converter("QLinearConv", since=10)
def _qlinear_conv(cx: Ctx, n: Node) -> list[Sym]:
    x, xs_, xz, w, ws_, wz, ys_, yz = (n.x(i) for i in range(8))
    b = n.input(8)
    acc = _conv_integer(cx, n, x, w, _scalar_zp(xz), wz if shape_of(wz) not in ((), (1,)) else _scalar_zp(wz), False)
    if b is not None:
        acc = cx.op1(n, nn.Add, [acc, _channel(cx, n, b, 4, 1)], out=False)
    m = cx.op1(n, nn.Div, [cx.op1(n, nn.Mul, [xs_, ws_], out=False), ys_], out=False)
    return [_requantize(cx, n, acc, _channel(cx, n, m, 4, 1), yz, 1)]


@converter("QLinearMatMul", since=10)
def _qlinear_matmul(cx: Ctx, n: Node) -> list[Sym]:
    a, as_, az, b, bs_, bz, ys_, yz = (n.x(i) for i in range(8))
    acc = _matmul_integer(cx, n, a, b, _scalar_zp(az), _scalar_zp(bz), False)
    m = cx.op1(n, nn.Div, [cx.op1(n, nn.Mul, [as_, bs_], out=False), ys_], out=False)
    return [_requantize(cx, n, acc, m, yz, 1)]


@converter("DynamicQuantizeLinear", since=11)
def _dynamic_quantize(cx: Ctx, n: Node) -> list[Sym | None]:
    """ONNX's function body: scale = (max(0, max x) - min(0, min x)) / 255, zero point = saturate(round(-min /
    scale)), y = saturate(round(x / scale) + zero point), all in u8."""
    x = n.x()
    zero = _scalar(cx, x, 0.0, "dq_zero")
    hi = cx.op1(n, nn.Max, [cx.op1(n, nn.ReduceMax, [x], {"keepdims": False}, out=False), zero], out=False)
    lo = cx.op1(n, nn.Min, [cx.op1(n, nn.ReduceMin, [x], {"keepdims": False}, out=False), zero], out=False)
    scale = cx.emit(
        n,
        nn.Div,
        [cx.op1(n, nn.Sub, [hi, lo], out=False), _scalar(cx, x, 255.0, "dq_range")],
        names=[n.outputs[1] if len(n.outputs) > 1 and n.outputs[1] else None],
    )[0]
    one = _scalar(cx, x, 1.0, "dq_one")
    zp_f = cx.op1(n, nn.Div, [cx.op1(n, nn.Sub, [zero, lo], out=False), scale], out=False)
    zp = cx.emit(
        n,
        nn.QuantizeLinear,
        [zp_f, one],
        {"axis": 0},
        types=[cx.type_of(zp_f).with_dtype("u8")],
        names=[n.outputs[2] if len(n.outputs) > 2 and n.outputs[2] else None],
    )[0]
    y = cx.op1(n, nn.QuantizeLinear, [x, scale, zp], {"axis": 0}, type=cx.type_of(x).with_dtype("u8"))
    return [y, scale, zp]


# ----------------------------------------------------------------------------------------------- QONNX

QONNX_DOMAINS = ("qonnx.custom_op.general", "finn.custom_op.general")  # Brevitas' QONNX export, FINN


def _qonnx_round(v: np.ndarray, mode: str, n: Node) -> np.ndarray:
    modes = {"ROUND": np.round, "CEIL": np.ceil, "FLOOR": np.floor, "ROUND_TO_ZERO": np.trunc}
    fn = modes.get(mode.upper())
    if fn is None:
        raise n.unsupported(f"rounding_mode {mode!r} (known: {', '.join(modes)})")
    return fn(v)


def _qonnx_quant(cx: Ctx, n: Node) -> list[Sym]:
    """QONNX ``Quant(x, scale, zeropt, bitwidth)``: ``q = clip(round(x / scale + zeropt), min, max)``,
    ``y = (q - zeropt) * scale``, the bounds from ``bitwidth``, ``signed`` and ``narrow``.  On a constant
    (a weight) the levels ``q - zeropt`` are what :func:`quantized_weight` keeps or re-quantizes; on an
    activation it is the exporting quantizer's rounding, which pcc's own replaces (identity, with a note)."""
    x, scale, zp, bits = n.x(0), n.x(1), n.x(2), n.x(3)
    if not all(isinstance(c, Const) for c in (scale, zp, bits)):
        raise n.error("scale, zeropt and bitwidth must be constants")
    if isinstance(x, Const):
        b = float(np.asarray(bits.data).reshape(-1)[0])
        if b != int(b) or not 1 <= b <= 32:
            raise n.error(f"bitwidth must be an integer in 1..32, got {b}")
        signed, narrow = int(n.attr("signed", 1)), int(n.attr("narrow", 0))
        lo = -(2 ** (int(b) - 1)) + narrow if signed else 0
        hi = 2 ** (int(b) - 1) - 1 if signed else 2 ** int(b) - 1 - narrow
        s = np.asarray(scale.data, np.float64)
        z = np.asarray(zp.data, np.float64)
        q = np.clip(_qonnx_round(x.data.astype(np.float64) / s + z, str(n.attr("rounding_mode", "ROUND")), n), lo, hi)
        levels = (q - z).astype(np.int64) if np.all(z == np.round(z)) else None
        if levels is None:
            return [Const(((q - z) * s).astype(np.float32), n.outputs[0])]
        return [quantized_weight(cx, n, levels, np.broadcast_to(s, s.shape), f"{int(b)}-bit levels")]
    cx.notes.append(f"activation quantizer {n.name!r} (Quant): pcc's own activation rounding replaces it")
    return [x]


QONNX_CONVERTERS = {"Quant": _qonnx_quant}


# ----------------------------------------------------------------------------------------------- 3-D windows
#
# A 3-D convolution is a 2-D one over depth slices: the input, padded on depth, is gathered into the ``kd`` depth
# taps of each output depth (``[N, C, OD, kd, H, W]``), moved to ``[N * OD, C * kd, H, W]`` (channel ``c * kd + i``)
# and convolved in 2-D with the weight reshaped alike (``[M, C/g * kd, kh, kw]``; a group's channels stay
# contiguous); the result ``[N * OD, M, OH, OW]`` goes back to ``[N, M, OD, OH, OW]``.  A transposed one first
# spreads the input on depth by the stride and pads it by ``(kd - 1) * dilation - pad`` (a negative pad crops),
# then does the same with the depth taps flipped and a 2-D transposed convolution.  Only existing ops are used, so
# both run on the float reference and lower to the pentary machine (gathers and a 2-D convolution).


def _depth_taps(cx: Ctx, n: Node, x: Sym, od: int, kd: int, step: int, dil: int) -> Sym:
    """``[N, C, D, H, W]`` -> ``[N * OD, C * kd, H, W]``: output depth ``o`` takes depths ``o * step + i * dil``."""
    nb, c, _, h, w = shape_of(x)
    idx = (np.arange(od)[:, None] * step + np.arange(kd)[None, :] * dil).astype(np.int64)
    y = cx.op1(n, nn.Gather, [x, Const(idx, f"{n.outputs[0]}.depth_taps")], {"axis": 2}, out=False)
    y = cx.op1(n, nn.Transpose, [y], {"perm": [0, 2, 1, 3, 4, 5]}, out=False)
    return cx.op1(n, nn.Reshape, [y], {"shape": [nb * od, c * kd, h, w]}, out=False)


def _pad_depth(cx: Ctx, n: Node, x: Sym, lo: int, hi: int) -> Sym:
    if lo == 0 and hi == 0:
        return x
    return cx.op1(n, nn.Pad, [x], {"pads": [0, 0, lo, 0, 0, 0, 0, hi, 0, 0], "mode": "constant"}, out=False)


def _back_to_3d(cx: Ctx, n: Node, y: Sym, nb: int, od: int) -> Sym:
    _, m, oh, ow = shape_of(y)
    y = cx.op1(n, nn.Reshape, [y], {"shape": [nb, od, m, oh, ow]}, out=False)
    return cx.op1(n, nn.Transpose, [y], {"perm": [0, 2, 1, 3, 4]})


def conv3d(cx: Ctx, n: Node, x: Sym, w: Sym, b: Sym | None, attrs: dict[str, Any]) -> Sym:
    """ONNX Conv on ``[N, C, D, H, W]`` (see the comment above); ``attrs`` hold the 3-D strides, pads, dilations."""
    nb, _, d = shape_of(x)[:3]
    m, cg, kd, kh, kw = shape_of(w)
    s, p, dl = attrs["strides"], attrs["pads"], attrs["dilations"]
    od = (d + p[0] + p[3] - (kd - 1) * dl[0] - 1) // s[0] + 1
    if od <= 0:
        raise n.error(f"empty output depth (input depth {d}, kernel {kd}, pads {p[0]}, {p[3]})")
    cols = _depth_taps(cx, n, _pad_depth(cx, n, x, p[0], p[3]), od, kd, s[0], dl[0])
    w2 = cx.op1(n, nn.Reshape, [w], {"shape": [m, cg * kd, kh, kw]}, out=False)
    a2 = {"strides": s[1:], "pads": [p[1], p[2], p[4], p[5]], "dilations": dl[1:], "group": attrs["group"]}
    y = cx.op1(n, nn.Conv2d, [cols, w2] + ([b] if b is not None else []), a2, out=False)
    return _back_to_3d(cx, n, y, nb, od)


def conv_transpose3d(cx: Ctx, n: Node, x: Sym, w: Sym, b: Sym | None, attrs: dict[str, Any]) -> Sym:
    """ONNX ConvTranspose on ``[N, C, D, H, W]`` (see the comment above)."""
    nb, c, d, h, wd = shape_of(x)
    _, mg, kd, kh, kw = shape_of(w)
    s, p, dl, op_ = attrs["strides"], attrs["pads"], attrs["dilations"], attrs["output_padding"]
    if s[0] > 1:  # spread on depth: [N, C, D, 1, H, W] padded to [N, C, D, s, H, W]
        x = cx.op1(n, nn.Reshape, [x], {"shape": [nb, c, d, 1, h, wd]}, out=False)
        spread = {"pads": [0, 0, 0, 0, 0, 0, 0, 0, 0, s[0] - 1, 0, 0], "mode": "constant"}
        x = cx.op1(n, nn.Pad, [x], spread, out=False)
        x = cx.op1(n, nn.Reshape, [x], {"shape": [nb, c, d * s[0], h, wd]}, out=False)
    edge = (kd - 1) * dl[0]
    x = _pad_depth(cx, n, x, edge - p[0], edge - p[3] + op_[0] - (s[0] - 1))
    od = (d - 1) * s[0] + edge + 1 - p[0] - p[3] + op_[0]
    if od <= 0:
        raise n.error(f"empty output depth (input depth {d}, kernel {kd}, pads {p[0]}, {p[3]})")
    cols = _depth_taps(cx, n, x, od, kd, 1, dl[0])
    flip = Const(np.arange(kd - 1, -1, -1, dtype=np.int64), f"{n.outputs[0]}.flip")
    w2 = cx.op1(n, nn.Gather, [w, flip], {"axis": 2}, out=False)
    w2 = cx.op1(n, nn.Transpose, [w2], {"perm": [0, 2, 1, 3, 4]}, out=False)
    w2 = cx.op1(n, nn.Reshape, [w2], {"shape": [c * kd, mg, kh, kw]}, out=False)
    a2 = {"strides": s[1:], "pads": [p[1], p[2], p[4], p[5]], "dilations": dl[1:], "output_padding": op_[1:],
          "group": attrs["group"]}  # fmt: skip
    y = cx.op1(n, nn.ConvTranspose2d, [cols, w2] + ([b] if b is not None else []), a2, out=False)
    return _back_to_3d(cx, n, y, nb, od)
