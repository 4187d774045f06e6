"""The compiled loops of large CONVs (``runtime/products.py``; ``runtime/kernels.py`` compiles them through
``kernels.loop``): the int8 engine's digit planes, digit patch matrix and recombination of digit products, and the
float32 engine's patch matrix and store. They call no loop outside this file, so numba's on-disk cache, which
checks only the file a function is defined in, stays right for them here.

For the float32 engine the caller has bounded every partial sum below 2**24 (``max|x|`` times the largest sum of
``|w|`` over an output's weights), so every input, weight, product and partial sum is an integer that float32
represents exactly, and the float32 products converted to int64 are the exact sums whatever order BLAS adds in.
"""

from __future__ import annotations

import numpy as np


def _recombine(r, out, add):  # noqa: ANN001, ANN202
    # out[k] (+)= sum_d r[d, k] * 256**d, in int64 (the caller has bounded the result and out's sum); flat arrays.
    # Written out per digit count (a loop over the digits inside the element loop keeps it from vectorising)
    nd, n = r.shape
    s = 0 if add else 1  # out[k] * s: keep or drop what out held
    if nd == 1:
        r0 = r[0]
        for k in range(n):
            out[k] = out[k] * (1 - s) + r0[k]
    elif nd == 2:
        r0, r1 = r[0], r[1]
        for k in range(n):
            out[k] = out[k] * (1 - s) + (np.int64(r0[k]) + 256 * np.int64(r1[k]))
    elif nd == 3:
        r0, r1, r2 = r[0], r[1], r[2]
        for k in range(n):
            out[k] = out[k] * (1 - s) + (np.int64(r0[k]) + 256 * (np.int64(r1[k]) + 256 * np.int64(r2[k])))
    else:
        for k in range(n):
            v = np.int64(r[nd - 1, k])
            for d in range(nd - 2, -1, -1):
                v = v * 256 + r[d, k]
            out[k] = out[k] * (1 - s) + v


def _digit_planes(x, off, nd, d, top, left):  # noqa: ANN001, ANN202
    # d[j, top + y, left + x, c] = digit j of x[y, x, c] (balanced base 256, nd digits, x + off >= 0), plane by
    # plane with the channel innermost (contiguous, vectorised)
    ih, iw, ic = x.shape
    for j in range(nd):
        sh = 8 * j
        for yy in range(ih):
            for xx in range(iw):
                row = d[j, top + yy, left + xx]
                for c in range(ic):
                    row[c] = np.int8((((x[yy, xx, c] + off) ^ off) >> sh) & 255)


def _digit_split(x, off, nd, d):  # noqa: ANN001, ANN202
    # d[j, t] = digit j (balanced base 256, x + off >= 0) of x[t]; up to three digits in one pass (each digit's
    # row its own array, so that the loop vectorises), more plane by plane
    n = x.shape[0]
    if nd == 3:
        d0, d1, d2 = d[0], d[1], d[2]
        for t in range(n):
            u = (x[t] + off) ^ off
            d0[t] = np.int8(u & 255)
            d1[t] = np.int8((u >> 8) & 255)
            d2[t] = np.int8((u >> 16) & 255)
    elif nd == 2:
        d0, d1 = d[0], d[1]
        for t in range(n):
            u = (x[t] + off) ^ off
            d0[t] = np.int8(u & 255)
            d1[t] = np.int8((u >> 8) & 255)
    else:
        for j in range(nd):
            dj = d[j]
            s8 = 8 * j
            for t in range(n):
                dj[t] = np.int8((((x[t] + off) ^ off) >> s8) & 255)


def _digit_cols(x, off, nd, ih, iw, ic, kh, kw, sh, sw, pt, pl, oh, ow, planes, cols):  # noqa: ANN001, ANN202
    # The int8 GEMM's patch matrix of a single-group CONV: cols[j, oy*ow + ox, (ky*kw + kx)*ic + ci] = digit j
    # (balanced base 256, nd digits, x + off >= 0) of input x[y, xx, ci] with y = oy*sh - pt + ky, xx = ox*sw - pl +
    # kx, or 0 for a tap in the padding. The digit planes of the zero-padded image first (planes[j, y, xx, ci]), then
    # each window row is one contiguous run of kw*ic bytes of a plane.
    hp, wp = planes.shape[1], planes.shape[2]
    xf = x.reshape(-1)
    left, inner, width = pl * ic, iw * ic, wp * ic
    flat = planes.reshape(nd, hp * width)
    for yy in range(hp):  # a padded row: zeros, the input row's digits (one contiguous run), zeros
        y = yy - pt
        for j in range(nd):
            row = flat[j, yy * width : (yy + 1) * width]
            if y < 0 or y >= ih:
                for t in range(width):
                    row[t] = 0
                continue
            for t in range(left):
                row[t] = 0
            for t in range(left + inner, width):
                row[t] = 0
        if 0 <= y < ih:
            b = yy * width + left
            _digit_split(xf[y * inner : (y + 1) * inner], off, nd, flat[:, b : b + inner])
    run = kw * ic
    for j in range(nd):
        pj = planes[j].reshape(-1)
        cj = cols[j]
        for oy in range(oh):
            for ox in range(ow):
                r = cj[oy * ow + ox]
                for ky in range(kh):
                    b = ((oy * sh + ky) * wp + ox * sw) * ic
                    src = pj[b : b + run]
                    dst = r[ky * run : ky * run + run]
                    for t in range(run):
                        dst[t] = src[t]


def _margins(row, y, ih, left, inner):  # noqa: ANN001, ANN202
    # A row of a zero-padded image (flat): all zeros where it lies in the top or bottom padding (False), else the
    # left margin (left values) and the right one (after inner) zeroed for the caller to fill the rest (True)
    if y < 0 or y >= ih:
        for t in range(row.shape[0]):
            row[t] = 0
        return False
    for t in range(left):
        row[t] = 0
    for t in range(left + inner, row.shape[0]):
        row[t] = 0
    return True


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
        if _margins(row, y, ih, left, inner):
            src = x[y * inner : (y + 1) * inner]
            dst = row[left : left + inner]
            for t in range(inner):
                v = src[t]
                lo = min(lo, v)
                hi = max(hi, v)
                dst[t] = np.float32(v)
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


def _f32_image(x, ih, iw, ic, pt, pl, hp, wp, wl1, limit, planes):  # noqa: ANN001, ANN202, PLR0913
    # The zero-padded image of a single-group CONV's input in float32 (x: int64, flat [ih, iw, ic]) for torch's
    # convolution, whose sums are exact where every part's bound max|part| * wl1 is below limit (2**24): planes[0]
    # (flat [hp, wp, ic]) = x where max|x| passes, else x cut as hi * 2**s + lo (lo = the balanced low s bits, in
    # [-2**(s-1), 2**(s-1)), hi exact) into planes[0] = hi and planes[1] = lo, s the smallest for which hi passes.
    # Returns s (0: one image), or -1, having written nothing, where lo would not pass or some |x| exceeds 2**62.
    n = ih * iw * ic
    lo = np.int64(0)
    hi = np.int64(0)
    for t in range(n):
        v = x[t]
        lo = min(lo, v)
        hi = max(hi, v)
    if lo < -(1 << 62) or hi > 1 << 62:
        return -1
    amax = max(hi, -lo)
    cap = (limit + wl1 - 1) // wl1 if wl1 > 0 else np.int64(1 << 62)  # a part passes while its max |.| < cap
    s = 0
    if amax >= cap:
        s = 1
        while s < 40 and (amax + (np.int64(1) << (s - 1))) >> s >= cap:
            s += 1
        if np.int64(1) << (s - 1) >= cap or (amax + (np.int64(1) << (s - 1))) >> s >= cap:
            return -1
    half = np.int64(1) << (s - 1) if s > 0 else np.int64(0)
    mask = (np.int64(1) << s) - 1
    left, inner, width = pl * ic, iw * ic, wp * ic
    for j in range(2 if s > 0 else 1):
        plane = planes[j]
        for yy in range(hp):  # a padded row: zeros, the input row (one contiguous run), zeros
            y = yy - pt
            row = plane[yy * width : (yy + 1) * width]
            if not _margins(row, y, ih, left, inner):
                continue
            src = x[y * inner : (y + 1) * inner]
            dst = row[left : left + inner]
            if s == 0:
                for t in range(inner):
                    dst[t] = np.float32(src[t])
            elif j == 0:
                for t in range(inner):
                    v = src[t]
                    dst[t] = np.float32((v - (((v + half) & mask) - half)) >> s)
            else:
                for t in range(inner):
                    dst[t] = np.float32(((src[t] + half) & mask) - half)
    return s


def _within62(out):  # noqa: ANN001, ANN202
    # every |out[t]| at most 2**62: a base a float32 store may add its products to without wrapping int64
    lo = np.int64(0)
    hi = np.int64(0)
    for t in range(out.shape[0]):
        lo = min(lo, out[t])
        hi = max(hi, out[t])
    return lo >= -(1 << 62) and hi <= 1 << 62


def _f32_store_parts(o0, o1, s, bias, out, mode, acc_max):  # noqa: ANN001, ANN202
    # out[r*oc + j] = sat(v + base) for the float32 products of torch's convolution (exact integers, flat, oc =
    # bias.shape[0] values per pixel), v = o0 (s = 0) or o0 * 2**s + o1 (the two parts of _f32_image), base = 0
    # (mode 0), out itself (1) or the bias row (2, the TLOADC broadcast the store takes the place of); 1 if
    # anything saturated. Where some base exceeds 2**62, nothing is written and -1 is returned.
    oc = bias.shape[0]
    n = out.shape[0]
    if mode == 2:
        for j in range(oc):
            if bias[j] < -(1 << 62) or bias[j] > 1 << 62:
                return -1
    elif mode == 1 and not _within62(out):
        return -1
    clipped = False
    for r in range(n // oc):
        a0 = o0[r * oc : (r + 1) * oc]
        a1 = o1[r * oc : (r + 1) * oc] if s > 0 else a0
        dst = out[r * oc : (r + 1) * oc]
        for j in range(oc):
            v = np.int64(a0[j])
            if s > 0:
                v = (v << s) + np.int64(a1[j])
            if mode == 2:
                v += bias[j]
            elif mode == 1:
                v += dst[j]
            clipped |= (v > acc_max) | (v < -acc_max)
            dst[j] = min(max(v, -acc_max), acc_max)
    return 1 if clipped else 0


def _f32_store(o, out, add, acc_max):  # noqa: ANN001, ANN202
    # out[t] = sat(int64(o[t]) (+ out[t])) for the float32 products o (exact integers), out int64, both flat; 1 if
    # anything saturated. Where add and some |out[t]| exceeds 2**62, nothing is written and -1 is returned (the
    # caller's int64 path adds the base exactly).
    n = o.shape[0]
    if add and not _within62(out):
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


def _f32_store_bias(o, bias, out, acc_max):  # noqa: ANN001, ANN202
    # out[r*oc + j] = sat(int64(o[r*oc + j]) + bias[j]) for the float32 products o (exact integers) and a bias row
    # of oc words (the TLOADC broadcast the store takes the place of), out int64, both flat; 1 if anything
    # saturated. Where some |bias[j]| exceeds 2**62, nothing is written and -1 is returned.
    oc = bias.shape[0]
    for j in range(oc):
        if bias[j] < -(1 << 62) or bias[j] > 1 << 62:
            return -1
    clipped = False
    for r in range(o.shape[0] // oc):
        src = o[r * oc : (r + 1) * oc]
        dst = out[r * oc : (r + 1) * oc]
        for j in range(oc):
            v = np.int64(src[j]) + bias[j]
            clipped |= (v > acc_max) | (v < -acc_max)
            dst[j] = min(max(v, -acc_max), acc_max)
    return 1 if clipped else 0
