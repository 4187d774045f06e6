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


def _quantize_into(x, scale, m, mem, index, buf):  # noqa: ANN001, ANN202
    # The I/O boundary's quantisation (runtime/boundary.py _rounded: v = x / scale in float64, trunc(v +
    # copysign(0.5, v)), clipped to +-m) of the flat input x into mem[index[t]], through buf (float64, x's size):
    # the rounding in one loop without the scattered store (it vectorises), then the store. Returns 0, or -1
    # (nothing written) if x holds a NaN or an infinity.
    n = x.shape[0]
    bad = False
    for t in range(n):
        bad |= not np.isfinite(x[t])
    if bad:
        return -1
    for t in range(n):
        v = np.float64(x[t]) / scale
        q = np.trunc(v + np.copysign(0.5, v))
        buf[t] = min(max(q, -m), m)
    for t in range(n):
        mem[index[t]] = np.int64(buf[t])
    return 0
