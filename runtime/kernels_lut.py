"""Two of the simulator's standalone compiled loops (``runtime/kernels.py`` compiles them through
``kernels.loop``): TLUT and the I/O boundary's input quantisation. They call no other loop, so numba's on-disk
cache, which checks only the file a function is defined in, stays right for them here."""

from __future__ import annotations

import numpy as np


def _tlut(A, dst, src, count, table, lo, n, tmp):  # noqa: ANN001, ANN202
    # TLUT (docs/ISA.md): A[dst + i] = A[table + min(max(A[src + i], lo), lo + n - 1) - lo] (n >= 1), every source and
    # entry read before the destination is written: into tmp first where the destination overlaps the table or a
    # source other than element for element
    xs = A[src : src + count]
    tab = A[table : table + n]
    apart = (dst == src or dst + count <= src or src + count <= dst) and (dst + count <= table or table + n <= dst)
    out = A[dst : dst + count] if apart else tmp[:count]
    hi = lo + n - 1
    for t in range(count):
        out[t] = tab[np.uint64(min(max(xs[t], lo), hi) - lo)]  # unsigned: no negative-index wraparound test
    if not apart:
        d = A[dst : dst + count]
        for t in range(count):
            d[t] = out[t]


def _quantize_into(x, scale, m, mem, lo, outer, ch, index, buf):  # noqa: ANN001, ANN202, PLR0913
    # The I/O boundary's quantisation (runtime/boundary.py _rounded: v = x / scale in float64, trunc(v +
    # copysign(0.5, v)), clipped to +-m) of the flat input x into main memory, through buf (float64, x's size): the
    # rounding in one loop in x's order (it vectorises), then the store; for three channels (RGB) one loop of both,
    # a pixel at a time (0.08 against 0.13 ms for 3x224x224). With ch > 0 the words are x's outer blocks
    # in order, each a (ch, inner) block stored transposed as (inner, ch) from mem[lo] on (ch = 1: as it is; the
    # NCHW input of an NHWC program is one block of ch = C channels); with ch = 0, element t goes to mem[index[t]].
    # Returns 0, or -1 (nothing written) if x holds a NaN or an infinity.
    n = x.shape[0]
    bad = False
    for t in range(n):
        bad |= not np.isfinite(x[t])
    if bad:
        return -1
    if ch == 3 and n > 0:  # RGB, the common case: each pixel's three rounded in one loop, stored as they come
        inner = n // (outer * 3)
        for b in range(outer):
            x0, x1, x2 = x[3 * b * inner :][:inner], x[(3 * b + 1) * inner :][:inner], x[(3 * b + 2) * inner :][:inner]
            dst = mem[lo + 3 * b * inner : lo + 3 * (b + 1) * inner]
            for p in range(inner):
                v0, v1, v2 = np.float64(x0[p]) / scale, np.float64(x1[p]) / scale, np.float64(x2[p]) / scale
                dst[3 * p] = np.int64(min(max(np.trunc(v0 + np.copysign(0.5, v0)), -m), m))
                dst[3 * p + 1] = np.int64(min(max(np.trunc(v1 + np.copysign(0.5, v1)), -m), m))
                dst[3 * p + 2] = np.int64(min(max(np.trunc(v2 + np.copysign(0.5, v2)), -m), m))
        return 0
    for t in range(n):
        v = np.float64(x[t]) / scale
        q = np.trunc(v + np.copysign(0.5, v))
        buf[t] = min(max(q, -m), m)
    if ch == 0 or n == 0:
        for t in range(n):
            mem[index[t]] = np.int64(buf[t])
        return 0
    inner = n // (outer * ch)
    size = ch * inner
    for b in range(outer):
        src = buf[b * size : b * size + size]
        dst = mem[lo + b * size : lo + b * size + size]
        if ch == 1:
            for p in range(inner):
                dst[p] = np.int64(src[p])
        else:  # blocks of 64 pixels, a channel at a time
            for p0 in range(0, inner, 64):
                p1 = min(p0 + 64, inner)
                for c in range(ch):
                    sc = src[c * inner : c * inner + inner]
                    for p in range(p0, p1):
                        dst[p * ch + c] = np.int64(sc[p])
    return 0
