"""Reference kernels of the indexing, reduction, layer and quantization ops
(:mod:`pcc.dialects.nn_tensor`, :mod:`pcc.dialects.nn_layers`)."""

from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from pcc.diagnostics import PccError
from pcc.dialects import nn
from pcc.interpreter import _conv2d, _f, _per_channel, _reduce_axes, _where, kernel
from pcc.ir import Operation

# ----------------------------------------------------------------------------------------------- reductions


def _lowest(x: np.ndarray) -> object:
    if x.dtype == np.bool_:
        return False
    return -np.inf if np.issubdtype(x.dtype, np.floating) else np.iinfo(x.dtype).min


def _highest(x: np.ndarray) -> object:
    if x.dtype == np.bool_:
        return True
    return np.inf if np.issubdtype(x.dtype, np.floating) else np.iinfo(x.dtype).max


def _reduce(fn, *, initial=None, pre=None, post=None):  # noqa: ANN001, ANN202
    def k(op: Operation, x: np.ndarray) -> np.ndarray:
        kw = {"axis": _reduce_axes(op, x), "keepdims": op.attr("keepdims")}
        if initial is not None:
            kw["initial"] = initial(x)
        v = pre(x) if pre is not None else x
        y = fn(v, **kw)
        return post(y) if post is not None else y

    return k


def _log_sum_exp(op: Operation, x: np.ndarray) -> np.ndarray:
    axes, keep = _reduce_axes(op, x), op.attr("keepdims")
    if x.size == 0:
        return np.log(np.sum(x, axis=axes, keepdims=keep))
    m = np.max(x, axis=axes, keepdims=True)
    m = np.where(np.isfinite(m), m, 0).astype(x.dtype)
    y = np.log(np.sum(np.exp(x - m), axis=axes, keepdims=True)) + m
    return y if keep else np.squeeze(y, axis=axes)


kernel(nn.ReduceMax)(_reduce(np.max, initial=_lowest))
kernel(nn.ReduceMin)(_reduce(np.min, initial=_highest))
kernel(nn.ReduceProd)(_reduce(np.prod))
kernel(nn.ReduceL1)(_reduce(np.sum, pre=np.abs))
kernel(nn.ReduceL2)(_reduce(np.sum, pre=lambda x: x * x, post=np.sqrt))
kernel(nn.ReduceLogSum)(_reduce(np.sum, post=np.log))
kernel(nn.ReduceSumSquare)(_reduce(np.sum, pre=lambda x: x * x))
kernel(nn.ReduceLogSumExp)(_log_sum_exp)


@kernel(nn.ArgMax, nn.ArgMin)
def _arg(op: Operation, x: np.ndarray) -> np.ndarray:
    ax = op.attr("axis") % x.ndim
    fn = np.argmax if isinstance(op, nn.ArgMax) else np.argmin
    if op.attr("select_last_index"):
        i = x.shape[ax] - 1 - fn(np.flip(x, axis=ax), axis=ax)
    else:
        i = fn(x, axis=ax)
    i = i.astype(np.int64)
    return np.expand_dims(i, ax) if op.attr("keepdims") else i


@kernel(nn.TopK)
def _top_k(op: Operation, x: np.ndarray) -> list[np.ndarray]:
    ax = op.attr("axis") % x.ndim
    key = x.astype(np.float64) if not np.issubdtype(x.dtype, np.floating) else x
    order = np.argsort(-key if op.attr("largest") else key, axis=ax, kind="stable")
    idx = np.take(order, np.arange(op.attr("k")), axis=ax)
    return [np.take_along_axis(x, idx, axis=ax), idx.astype(np.int64)]


@kernel(nn.Hardmax)
def _hardmax(op: Operation, x: np.ndarray) -> np.ndarray:
    ax = op.attr("axis") % x.ndim
    i = np.expand_dims(np.argmax(x, axis=ax), ax)
    y = np.zeros_like(x)
    np.put_along_axis(y, i, x.dtype.type(1), axis=ax)
    return y


@kernel(nn.CumSum)
def _cum_sum(op: Operation, x: np.ndarray) -> np.ndarray:
    ax = op.attr("axis") % x.ndim
    v = np.flip(x, ax) if op.attr("reverse") else x
    c = np.cumsum(v, axis=ax, dtype=x.dtype)
    if op.attr("exclusive"):
        zero = np.zeros_like(np.take(c, [0], axis=ax))
        c = np.concatenate([zero, np.take(c, np.arange(c.shape[ax] - 1), axis=ax)], axis=ax)
    return np.flip(c, ax) if op.attr("reverse") else c


@kernel(nn.Trilu)
def _trilu(op: Operation, x: np.ndarray) -> np.ndarray:
    k = op.attr("k")
    return np.triu(x, k) if op.attr("upper") else np.tril(x, k)


@kernel(nn.Tile)
def _tile(op: Operation, x: np.ndarray) -> np.ndarray:
    return np.tile(x, op.attr("repeats"))


# ----------------------------------------------------------------------------------------------- indexing


def _checked_index(op: Operation, idx: np.ndarray, n: int) -> np.ndarray:
    if idx.size and (idx.min() < -n or idx.max() >= n):
        raise PccError(f"{_where(op)}: index out of range [-{n}, {n - 1}]", op.loc)
    return np.where(idx < 0, idx + n, idx).astype(np.intp)


def _element_index(op: Operation, x: np.ndarray, idx: np.ndarray) -> tuple[np.ndarray, ...]:
    """The full index tuple of GatherElements / ScatterElements: ``idx`` on ``axis``, the position elsewhere."""
    ax = op.attr("axis") % x.ndim
    grid = list(np.indices(idx.shape, sparse=True))
    grid[ax] = _checked_index(op, idx, x.shape[ax])
    return tuple(grid)


@kernel(nn.GatherElements)
def _gather_elements(op: Operation, x: np.ndarray, idx: np.ndarray) -> np.ndarray:
    return x[_element_index(op, x, idx)]


_UFUNC = {"add": np.add, "mul": np.multiply, "max": np.maximum, "min": np.minimum}


def _scatter(op: Operation, out: np.ndarray, where: tuple[np.ndarray, ...], updates: np.ndarray) -> np.ndarray:
    red = op.attr("reduction")
    if red == "none":
        out[where] = updates
    else:
        _UFUNC[red].at(out, where, updates)
    return out


@kernel(nn.ScatterElements)
def _scatter_elements(op: Operation, x: np.ndarray, idx: np.ndarray, updates: np.ndarray) -> np.ndarray:
    return _scatter(op, x.copy(), _element_index(op, x, idx), updates)


def _nd_index(op: Operation, x: np.ndarray, idx: np.ndarray, offset: int = 0) -> tuple[np.ndarray, ...]:
    k = idx.shape[-1]
    flat = idx.reshape(-1, k)
    return tuple(_checked_index(op, flat[:, j], x.shape[offset + j]) for j in range(k))


@kernel(nn.GatherND)
def _gather_nd(op: Operation, x: np.ndarray, idx: np.ndarray) -> np.ndarray:
    b = op.attr("batch_dims")
    out_shape = op.results[0].type.shape
    bshape = x.shape[:b]
    nb = int(np.prod(bshape)) if b else 1
    xs = x.reshape((nb,) + x.shape[b:])
    ids = idx.reshape((nb, -1, idx.shape[-1]))
    parts = [xs[i][_nd_index(op, xs[i], ids[i])] for i in range(nb)]
    return np.stack(parts).reshape(out_shape)


@kernel(nn.ScatterND)
def _scatter_nd(op: Operation, x: np.ndarray, idx: np.ndarray, updates: np.ndarray) -> np.ndarray:
    k = idx.shape[-1]
    upd = updates.reshape((-1,) + x.shape[k:])
    return _scatter(op, x.copy(), _nd_index(op, x, idx), upd)


@kernel(nn.OneHot)
def _one_hot(op: Operation, idx: np.ndarray, values: np.ndarray) -> np.ndarray:
    depth = op.attr("depth")
    i = idx.astype(np.int64)
    i = np.where(i < 0, i + depth, i)
    hot = i[..., None] == np.arange(depth)
    y = np.where(hot, values[1], values[0]).astype(values.dtype)
    return np.moveaxis(y, -1, op.attr("axis") % (idx.ndim + 1))


@kernel(nn.Einsum)
def _einsum(op: Operation, *xs: np.ndarray) -> np.ndarray:
    return np.einsum(op.attr("equation").replace(" ", ""), *xs, optimize=len(xs) > 2)


# ----------------------------------------------------------------------------------------------- layers


@kernel(nn.ConvTranspose2d)
def _conv_transpose2d(op: Operation, x: np.ndarray, w: np.ndarray, b: np.ndarray | None = None) -> np.ndarray:
    n, c, h, wd = x.shape
    _, mg, kh, kw = w.shape
    g = op.attr("group")
    cg = c // g
    sh, sw = op.attr("strides")
    dh, dw = op.attr("dilations")
    pt, pl, pb, pr = op.attr("pads")
    oph, opw = op.attr("output_padding")
    full_h = (h - 1) * sh + (kh - 1) * dh + 1 + oph
    full_w = (wd - 1) * sw + (kw - 1) * dw + 1 + opw
    y = np.zeros((n, g, mg, full_h, full_w), x.dtype)
    xg = x.reshape(n, g, cg, h * wd)
    wg = w.reshape(g, cg, mg * kh * kw)
    # per group: [N, Mg*kh*kw, H*W] contributions, then each kernel tap adds a strided block
    cols = np.matmul(wg.transpose(0, 2, 1)[None], xg).reshape(n, g, mg, kh, kw, h, wd)
    for i in range(kh):
        for j in range(kw):
            y[:, :, :, i * dh : i * dh + (h - 1) * sh + 1 : sh, j * dw : j * dw + (wd - 1) * sw + 1 : sw] += cols[
                :, :, :, i, j
            ]
    y = y.reshape(n, g * mg, full_h, full_w)
    grow = [(0, 0), (0, 0), (max(-pt, 0), max(-pb, 0)), (max(-pl, 0), max(-pr, 0))]
    if any(a or b for a, b in grow):  # negative pads (an output_shape past the last tap) add zeros
        y = np.pad(y, grow)
        full_h, full_w = y.shape[2:]
        pt, pb, pl, pr = max(pt, 0), max(pb, 0), max(pl, 0), max(pr, 0)
    y = y[:, :, pt : full_h - pb, pl : full_w - pr]
    if b is not None:
        y = y + b.reshape(1, -1, 1, 1)
    return np.ascontiguousarray(y)


@kernel(nn.GroupNorm)
def _group_norm(op: Operation, x: np.ndarray, scale: np.ndarray, bias: np.ndarray) -> np.ndarray:
    n, c = x.shape[:2]
    g = op.attr("num_groups")
    v = x.reshape(n, g, -1)
    mean = v.mean(axis=2, keepdims=True)
    d = v - mean
    var = (d * d).mean(axis=2, keepdims=True)
    y = (d / np.sqrt(var + _f(x, op.attr("epsilon")))).reshape(x.shape)
    return y * _per_channel(scale, x.ndim) + _per_channel(bias, x.ndim)


@kernel(nn.LRN)
def _lrn(op: Operation, x: np.ndarray) -> np.ndarray:
    size = op.attr("size")
    lo, hi = (size - 1) // 2, size - 1 - (size - 1) // 2
    sq = x * x
    widths = [(0, 0)] * x.ndim
    widths[1] = (lo, hi)
    s = sliding_window_view(np.pad(sq, widths), size, axis=1).sum(axis=-1)
    base = _f(x, op.attr("bias")) + _f(x, op.attr("alpha") / size) * s
    return x / base ** _f(x, op.attr("beta"))


# ----------------------------------------------------------------------------------------------- quantization


def _along(v: np.ndarray, axis: int, rank: int) -> np.ndarray:
    """A scale / zero point shaped to broadcast along ``axis`` (scalars stay scalars)."""
    if v.ndim == 0 or v.size == 1:
        return v.reshape(())
    shape = [1] * rank
    shape[axis % rank] = -1
    return v.reshape(shape)


def _shifted(v: np.ndarray, zp: np.ndarray | None, axis: int) -> np.ndarray:
    f = v.astype(np.float64)
    return f if zp is None else f - _along(zp.astype(np.float64), axis, v.ndim)


@kernel(nn.ConvInteger2d)
def _conv_integer(
    op: Operation, x: np.ndarray, w: np.ndarray, xz: np.ndarray | None = None, wz: np.ndarray | None = None
) -> np.ndarray:
    # exact: products of 8-bit values summed in float64 stay far below 2**53
    y = _conv2d(op, _shifted(x, xz, 1), _shifted(w, wz, 0))
    return np.rint(y).astype(np.int32)


@kernel(nn.MatMulInteger)
def _matmul_integer(
    op: Operation, a: np.ndarray, b: np.ndarray, az: np.ndarray | None = None, bz: np.ndarray | None = None
) -> np.ndarray:
    af = _shifted(a, az, -2) if a.ndim >= 2 else _shifted(a, az, 0)
    return np.rint(np.matmul(af, _shifted(b, bz, -1))).astype(np.int32)


@kernel(nn.QuantizeLinear)
def _quantize_linear(op: Operation, x: np.ndarray, s: np.ndarray, z: np.ndarray | None = None) -> np.ndarray:
    out = op.results[0].type.np_dtype
    ax = op.attr("axis")
    q = np.rint(x / _along(s.astype(x.dtype), ax, x.ndim))
    if z is not None:
        q = q + _along(z, ax, x.ndim).astype(q.dtype)
    info = np.iinfo(out)
    return np.clip(q, info.min, info.max).astype(out)


@kernel(nn.DequantizeLinear)
def _dequantize_linear(op: Operation, x: np.ndarray, s: np.ndarray, z: np.ndarray | None = None) -> np.ndarray:
    ax = op.attr("axis")
    v = x.astype(np.float32 if s.dtype != np.float64 else np.float64)
    if z is not None:
        v = v - _along(z, ax, x.ndim).astype(v.dtype)
    return (v * _along(s, ax, x.ndim)).astype(s.dtype)
