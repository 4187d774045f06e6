"""ONNX import rules: shapes, indexing, constants and import-time folding."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from onnx import numpy_helper

from pcc import limits
from pcc.dialects import nn
from pcc.frontends import Const, Sym, ir_dtype, shape_of
from pcc.frontends.onnx_rules import (
    NUMPY_TYPES,
    Ctx,
    Node,
    axis_of,
    cast,
    converter,
    fold_only,
    onnx_type_name,
    values,
)

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
    xs = values(cx, n)
    r = len(shape_of(xs[0]))
    ax = axis_of(int(n.attr("axis")), r, n)
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
    ax = axis_of(int(n.attr("axis", 0)), len(shape), n)
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
    axes = list(range(len(starts))) if axes is None else [axis_of(a, r, n) for a in axes]
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
    axes = sorted({axis_of(a, len(shape), n) for a in axes})
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
    axes = sorted(axis_of(a, r, n) for a in axes)
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
            a = axis_of(a, r, n)
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
    ax = axis_of(int(n.attr("axis", 0)), r, n)
    if isinstance(idx, Const) and idx.data.dtype not in (np.int32, np.int64):
        idx = Const(idx.data.astype(np.int64), idx.name)
    return [cx.op1(n, nn.Gather, [x, idx], {"axis": ax})]


# ----------------------------------------------------------------------------------------------- constants


def _attr_tensor(n: Node) -> np.ndarray:
    a = n.attrs
    if "value" in a:
        t = a["value"]
        if t.data_type not in NUMPY_TYPES:
            raise n.unsupported(f"a Constant of type {onnx_type_name(t.data_type)}")
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
    what = f"ONNX node {n.name!r} ({n.op_type})"
    dims = limits.check_shape([int(d) for d in shape.reshape(-1)], fill.dtype.itemsize, what, n.loc)
    return np.full(dims, fill[0], dtype=fill.dtype)


@fold_only("Range", since=11)
def _range(n: Node, start: np.ndarray, limit: np.ndarray, delta: np.ndarray) -> np.ndarray:
    what = f"ONNX node {n.name!r} ({n.op_type})"
    limits.check_range(start.item(), limit.item(), delta.item(), start.dtype.itemsize, what, n.loc)
    return np.arange(start.item(), limit.item(), delta.item(), dtype=start.dtype)


@converter("EyeLike", since=9)
def _eye_like(cx: Ctx, n: Node) -> list[Sym]:
    shape = shape_of(n.x())
    if len(shape) != 2:
        raise n.error(f"EyeLike needs a 2-D input, got shape {list(shape)}")
    dtype = n.attr("dtype")
    np_dtype = NUMPY_TYPES.get(int(dtype)) if dtype is not None else None
    if dtype is not None and np_dtype is None:
        raise n.unsupported(f"EyeLike of {onnx_type_name(int(dtype))}")
    like = cx.type_of(n.x()).np_dtype
    return [Const(np.eye(shape[0], shape[1], int(n.attr("k", 0)), dtype=np_dtype or like), n.outputs[0])]


@fold_only("NonZero", since=9)
def _non_zero(n: Node, x: np.ndarray) -> np.ndarray:
    return np.array(np.nonzero(x), dtype=np.int64).reshape(x.ndim, -1)


@fold_only("Compress", since=9)
def _compress(n: Node, x: np.ndarray, cond: np.ndarray) -> np.ndarray:
    ax = n.attr("axis")
    return np.compress(cond.astype(bool), x, axis=None if ax is None else int(ax))


# ----------------------------------------------------------------------------------------------- indexing


def _top_k(cx: Ctx, n: Node, k: int) -> list[Sym]:
    x = n.x()
    r = len(shape_of(x))
    attrs = {
        "k": k,
        "axis": axis_of(int(n.attr("axis", -1)), r, n),
        "largest": bool(int(n.attr("largest", 1))),
        "sorted": bool(int(n.attr("sorted", 1))),
    }
    return cx.emit(n, nn.TopK, [x], attrs, n_results=2, names=n.outputs[:2])


@converter("TopK", since=1)
def _top_k_1(cx: Ctx, n: Node) -> list[Sym]:
    return _top_k(cx, n, int(n.attr("k")))


@converter("TopK", since=10)
def _top_k_10(cx: Ctx, n: Node) -> list[Sym]:
    k = n.ints(1)
    if k is None or len(k) != 1:
        raise n.error("K must be one integer")
    return _top_k(cx, n, k[0])


@converter("Tile", since=6)
def _tile(cx: Ctx, n: Node) -> list[Sym]:
    reps = n.ints(1) or []
    if all(r == 1 for r in reps):
        return [n.x()]
    return [cx.op1(n, nn.Tile, [n.x()], {"repeats": reps})]


@converter("CumSum", since=11)
def _cum_sum(cx: Ctx, n: Node) -> list[Sym]:
    x = n.x()
    (ax,) = n.ints(1) or [0]
    attrs = {
        "axis": axis_of(ax, len(shape_of(x)), n),
        "exclusive": bool(int(n.attr("exclusive", 0))),
        "reverse": bool(int(n.attr("reverse", 0))),
    }
    return [cx.op1(n, nn.CumSum, [x], attrs)]


@converter("Trilu", since=14)
def _trilu(cx: Ctx, n: Node) -> list[Sym]:
    k = n.ints(1, 0) or [0]
    return [cx.op1(n, nn.Trilu, [n.x()], {"upper": bool(int(n.attr("upper", 1))), "k": k[0]})]


def _index(cx: Ctx, n: Node, s: Sym) -> Sym:
    if ir_dtype(s) in ("i32", "i64"):
        return s
    return cast(cx, n, s, "i64")


@converter("GatherElements", since=11)
def _gather_elements(cx: Ctx, n: Node) -> list[Sym]:
    x = n.x(0)
    ax = axis_of(int(n.attr("axis", 0)), len(shape_of(x)), n)
    return [cx.op1(n, nn.GatherElements, [x, _index(cx, n, n.x(1))], {"axis": ax})]


@converter("GatherND", since=11)
def _gather_nd(cx: Ctx, n: Node) -> list[Sym]:
    attrs = {"batch_dims": int(n.attr("batch_dims", 0))}
    return [cx.op1(n, nn.GatherND, [n.x(0), _index(cx, n, n.x(1))], attrs)]


@converter("Scatter", "ScatterElements", since=9)
def _scatter_elements(cx: Ctx, n: Node) -> list[Sym]:
    x = n.x(0)
    ax = axis_of(int(n.attr("axis", 0)), len(shape_of(x)), n)
    attrs = {"axis": ax, "reduction": n.attr("reduction", "none")}
    return [cx.op1(n, nn.ScatterElements, [x, _index(cx, n, n.x(1)), n.x(2)], attrs)]


@converter("ScatterND", since=11)
def _scatter_nd(cx: Ctx, n: Node) -> list[Sym]:
    attrs = {"reduction": n.attr("reduction", "none")}
    return [cx.op1(n, nn.ScatterND, [n.x(0), _index(cx, n, n.x(1)), n.x(2)], attrs)]


@converter("OneHot", since=9)
def _one_hot(cx: Ctx, n: Node) -> list[Sym]:
    idx = n.x(0)
    depth = n.const(1)
    if depth is None or depth.size != 1:
        raise n.error("depth must be one number")
    if cx.type_of(idx).is_float:
        idx = cast(cx, n, idx, "i64")
    r = len(shape_of(idx))
    attrs = {"depth": int(depth.reshape(-1)[0]), "axis": axis_of(int(n.attr("axis", -1)), r + 1, n)}
    return [cx.op1(n, nn.OneHot, [idx, n.x(2)], attrs)]


@converter("Einsum", since=12)
def _einsum(cx: Ctx, n: Node) -> list[Sym]:
    return [cx.op1(n, nn.Einsum, values(cx, n), {"equation": str(n.attr("equation"))})]


def _blocks(cx: Ctx, n: Node, shape: Sequence[int], dims: list[int], perm: list[int], out: list[int]) -> Sym:
    y = cx.op1(n, nn.Reshape, [n.x()], {"shape": dims}, out=False)
    y = cx.op1(n, nn.Transpose, [y], {"perm": perm}, out=False)
    return cx.op1(n, nn.Reshape, [y], {"shape": out})


@converter("DepthToSpace", since=1)
def _depth_to_space(cx: Ctx, n: Node) -> list[Sym]:
    """[N, C, H, W] -> [N, C/b^2, H*b, W*b] as reshape, transpose, reshape (DCR: depth-column-row order)."""
    shape = shape_of(n.x())
    b = int(n.attr("blocksize"))
    if len(shape) != 4 or shape[1] % (b * b):
        raise n.error(f"blocksize {b} does not fit input {list(shape)}")
    nb, c, h, w = shape
    out = [nb, c // (b * b), h * b, w * b]
    if n.attr("mode", "DCR") == "CRD":
        return [_blocks(cx, n, shape, [nb, c // (b * b), b, b, h, w], [0, 1, 4, 2, 5, 3], out)]
    return [_blocks(cx, n, shape, [nb, b, b, c // (b * b), h, w], [0, 3, 4, 1, 5, 2], out)]


@converter("SpaceToDepth", since=1)
def _space_to_depth(cx: Ctx, n: Node) -> list[Sym]:
    shape = shape_of(n.x())
    b = int(n.attr("blocksize"))
    if len(shape) != 4 or shape[2] % b or shape[3] % b:
        raise n.error(f"blocksize {b} does not fit input {list(shape)}")
    nb, c, h, w = shape
    dims = [nb, c, h // b, b, w // b, b]
    perm = [0, 1, 3, 5, 2, 4] if n.attr("mode", "DCR") == "CRD" else [0, 3, 5, 1, 2, 4]
    return [_blocks(cx, n, shape, dims, perm, [nb, c * b * b, h // b, w // b])]
