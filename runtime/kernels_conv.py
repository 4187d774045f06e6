"""The compiled loops of the float32 CONV engine (``runtime/products.py``; ``runtime/kernels.py`` compiles them
through ``kernels.loop``): the float32 patch matrix of a single-group CONV and the store of its float32 products
into C. They call no other loop, so numba's on-disk cache, which checks only the file a function is defined in,
stays right for them here.

The caller has bounded every partial sum below 2**24 (``max|x|`` times the largest sum of ``|w|`` over an output's
weights), so every input, weight, product and partial sum is an integer that float32 represents exactly, and the
float32 products converted to int64 are the exact sums whatever order BLAS adds in.
"""

from __future__ import annotations

import numpy as np


def _f32_cols(x, ih, iw, ic, kh, kw, sh, sw, pt, pl, hp, wp, oh, ow, planes, cols):  # noqa: ANN001, ANN202, PLR0913
    # The float32 patch matrix of a single-group CONV: cols[oy*ow + ox, (ky*kw + kx)*ic + ci] = x[y, xx, ci] with
    # y = oy*sh - pt + ky, xx = ox*sw - pl + kx, or 0 for a tap in the padding (x: int64, flat [ih, iw, ic]). A 1x1
    # stride-1 CONV without padding converts x itself. Otherwise the zero-padded image in float32 first (planes,
    # flat [hp, wp, ic]), then each window row is one contiguous run of kw*ic values of it. Returns max |x|, found
    # on the way (-1 where some |x| exceeds 2**62; the caller checks its bound before it uses cols).
    lo = np.int64(0)
    hi = np.int64(0)
    if kh == 1 and kw == 1 and sh == 1 and sw == 1 and pt == 0 and pl == 0 and hp == ih and wp == iw:
        for t in range(ih * iw * ic):
            v = x[t]
            lo = min(lo, v)
            hi = max(hi, v)
            cols[t] = np.float32(v)
        return np.int64(-1) if lo < -(1 << 62) or hi > 1 << 62 else max(hi, -lo)
    left, inner, width = pl * ic, iw * ic, wp * ic
    for yy in range(hp):  # a padded row: zeros, the input row (one contiguous run), zeros
        y = yy - pt
        row = planes[yy * width : (yy + 1) * width]
        if y < 0 or y >= ih:
            for t in range(width):
                row[t] = 0
            continue
        for t in range(left):
            row[t] = 0
        src = x[y * inner : (y + 1) * inner]
        dst = row[left : left + inner]
        for t in range(inner):
            v = src[t]
            lo = min(lo, v)
            hi = max(hi, v)
            dst[t] = np.float32(v)
        for t in range(left + inner, width):
            row[t] = 0
    run = kw * ic
    kk = kh * run
    for oy in range(oh):
        for ox in range(ow):
            r = cols[(oy * ow + ox) * kk : (oy * ow + ox + 1) * kk]
            for ky in range(kh):
                b = ((oy * sh + ky) * wp + ox * sw) * ic
                src = planes[b : b + run]
                dst = r[ky * run : ky * run + run]
                for t in range(run):
                    dst[t] = src[t]
    return np.int64(-1) if lo < -(1 << 62) or hi > 1 << 62 else max(hi, -lo)


def _f32_store(o, out, add, acc_max):  # noqa: ANN001, ANN202
    # out[t] = sat(int64(o[t]) (+ out[t])) for the float32 products o (exact integers), out int64, both flat; 1 if
    # anything saturated. Where add and some |out[t]| exceeds 2**62, nothing is written and -1 is returned (the
    # caller's int64 path adds the base exactly).
    n = o.shape[0]
    if add:
        lo = np.int64(0)
        hi = np.int64(0)
        for t in range(n):
            lo = min(lo, out[t])
            hi = max(hi, out[t])
        if lo < -(1 << 62) or hi > 1 << 62:
            return -1
    clipped = False
    if add:
        for t in range(n):
            v = np.int64(o[t]) + out[t]
            clipped |= (v > acc_max) | (v < -acc_max)
            out[t] = min(max(v, -acc_max), acc_max)
    else:
        for t in range(n):
            v = np.int64(o[t])
            clipped |= (v > acc_max) | (v < -acc_max)
            out[t] = min(max(v, -acc_max), acc_max)
    return 1 if clipped else 0
