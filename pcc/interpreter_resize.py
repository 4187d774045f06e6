"""Reference kernel of ``nn.resize``: separable, one axis at a time.

Each axis maps output index ``o`` to an input coordinate ``c(o)`` (the coordinate transformation mode);
``nearest`` picks one input index, ``linear`` / ``cubic`` weigh the taps around ``c`` with the triangle or
Keys cubic filter (``cubic_coeff_a``).  Taps outside the input repeat the edge, or are dropped and the weights
renormalised (``exclude_outside``); ``antialias`` stretches the filter by 1/scale when downscaling (and
normalises it).  ``tf_crop_and_resize`` maps into ``roi`` and gives ``extrapolation_value`` outside the input.
Interpolation is computed in float64 (one weight matrix per axis) and returned in the input's type.
"""

from __future__ import annotations

import numpy as np

from pcc.diagnostics import PccError
from pcc.dialects import nn
from pcc.interpreter import _where, kernel
from pcc.ir import Operation


def _coords(op: Operation, n_in: int, n_out: int, scale: float, roi: tuple[float, float]) -> np.ndarray:
    o = np.arange(n_out, dtype=np.float64)
    mode = op.attr("coordinate_transformation_mode")
    if mode == "half_pixel":
        return (o + 0.5) / scale - 0.5
    if mode == "pytorch_half_pixel":
        return (o + 0.5) / scale - 0.5 if n_out > 1 else np.full_like(o, -0.5)
    if mode == "tf_half_pixel_for_nearest":
        return (o + 0.5) / scale
    if mode == "align_corners":  # the real-valued output length scale * n_in, as ONNX's reference
        length = scale * n_in
        return o * ((n_in - 1) / (length - 1)) if length != 1 else np.zeros_like(o)
    if mode == "asymmetric":
        return o / scale
    if mode == "half_pixel_symmetric":
        adjust = n_out / (scale * n_in)
        offset = (n_in / 2.0) * (1.0 - adjust)
        return offset + (o + 0.5) / scale - 0.5
    if mode == "tf_crop_and_resize":
        lo, hi = roi
        if n_out > 1:
            return lo * (n_in - 1) + o * (hi - lo) * (n_in - 1) / (n_out - 1)
        return np.full_like(o, 0.5 * (lo + hi) * (n_in - 1))
    raise PccError(f"{_where(op)}: unknown coordinate_transformation_mode {mode!r}", op.loc)


def _nearest(op: Operation, c: np.ndarray, n_in: int) -> np.ndarray:
    rounding = op.attr("nearest_mode")
    if rounding == "floor":
        i = np.floor(c)
    elif rounding == "ceil":
        i = np.ceil(c)
    elif rounding == "round_prefer_ceil":
        i = np.floor(c + 0.5)
    else:  # round_prefer_floor
        i = np.ceil(c - 0.5)
    return np.clip(i, 0, n_in - 1).astype(np.intp)


def _filter(op: Operation, d: np.ndarray) -> np.ndarray:
    d = np.abs(d)
    if op.attr("mode") == "linear":
        return np.clip(1.0 - d, 0.0, 1.0)
    a = op.attr("cubic_coeff_a")
    near = ((a + 2) * d - (a + 3)) * d * d + 1
    far = ((a * d - 5 * a) * d + 8 * a) * d - 4 * a
    return np.where(d <= 1, near, np.where(d < 2, far, 0.0))


def _weights(op: Operation, c: np.ndarray, n_in: int, scale: float) -> np.ndarray:
    """The ``[n_out, n_in]`` interpolation matrix of one axis."""
    support = 1.0 if op.attr("mode") == "linear" else 2.0
    s = min(scale, 1.0) if op.attr("antialias") else 1.0
    start = int(np.floor(-support / s)) + 1
    offsets = np.arange(start, 2 - start)
    base = np.floor(c)
    taps = base[:, None] + offsets[None, :]  # [n_out, taps]
    w = _filter(op, (taps - c[:, None]) * s)
    if op.attr("antialias"):
        w = w / w.sum(axis=1, keepdims=True)
    inside = (taps >= 0) & (taps <= n_in - 1)
    if op.attr("exclude_outside"):
        w = np.where(inside, w, 0.0)
        w = w / np.where(w.sum(axis=1, keepdims=True) == 0, 1.0, w.sum(axis=1, keepdims=True))
    m = np.zeros((len(c), n_in))
    rows = np.repeat(np.arange(len(c)), len(offsets))
    np.add.at(m, (rows, np.clip(taps, 0, n_in - 1).astype(np.intp).reshape(-1)), w.reshape(-1))
    return m


@kernel(nn.Resize)
def _resize(op: Operation, x: np.ndarray) -> np.ndarray:
    out_shape = op.results[0].type.shape
    scales = op.attr("scales")
    roi = op.attr("roi")
    mode = op.attr("mode")
    crop = op.attr("coordinate_transformation_mode") == "tf_crop_and_resize"
    y = x if mode == "nearest" else x.astype(np.float64)
    for ax, (n_in, n_out) in enumerate(zip(x.shape, out_shape, strict=True)):
        scale = float(scales[ax]) if scales is not None else n_out / max(n_in, 1)
        r = (roi[ax], roi[ax + x.ndim]) if roi is not None else (0.0, 1.0)
        if n_in == n_out and scale == 1.0 and not (crop and r != (0.0, 1.0)):
            continue
        c = _coords(op, n_in, n_out, scale, r)
        if mode == "nearest":
            y = np.take(y, _nearest(op, c, n_in), axis=ax)
        else:
            y = np.moveaxis(np.tensordot(_weights(op, c, n_in, scale), np.moveaxis(y, ax, 0), axes=1), 0, ax)
        if crop:
            outside = (c < 0) | (c > n_in - 1)
            if outside.any():
                sl = [slice(None)] * y.ndim
                sl[ax] = outside
                y = y.copy() if mode == "nearest" else y
                y[tuple(sl)] = op.attr("extrapolation_value")
    return y.astype(x.dtype)
