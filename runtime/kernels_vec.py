"""The simulator's compiled elementwise loops EADD and EMUL (``runtime/kernels.py`` compiles them through
``kernels.loop``; their helpers, ``_HELPERS``, are compiled in this module's namespace). They call no loop of another
module, so numba's on-disk cache, which checks only the file a function is defined in, stays right for them here.

Each computes exactly what ``pcc.isa`` defines (the rescale ``mul_shift_round`` capped at ``ACC_MAX``, EMUL's
saturated product and its rounding from 31-bit halves); the tests compare them with the executor
(``runtime/isa_ref.py``) and with Python integers on operands of every range.
"""

from __future__ import annotations

import numpy as np

_HELPERS = (
    "_fmax",
    "_rescale_one",
    "_rescale_span",
    "_eadd_one",
    "_eadd_span",
    "_emul",
    "_emul_plain",
    "_emul_one",
    "_emul_span",
    "_emul_span_io",
)


def _fmax(x):  # noqa: ANN001, ANN202
    # max |x| of an int64 array as a float64 (rounded; a bound to compare with a margin)
    lo = np.int64(0)
    hi = np.int64(0)
    for t in range(x.shape[0]):
        lo = min(lo, x[t])
        hi = max(hi, x[t])
    return max(np.float64(hi), -np.float64(lo))


def _rescale_one(a, mx, sx, hx, acc_max):  # noqa: ANN001, ANN202
    # t(a): a mul_shift_round'ed (int64 common-shift path, hx = 2**(sx-1)) and capped at +-acc_max
    ta = a * mx
    if sx > 0:
        ta = (ta + hx - (a < 0)) >> sx
    return min(max(ta, -acc_max), acc_max)


def _eadd_one(a, b, mx, sx, hx, my, sy, hy, acc_max):  # noqa: ANN001, ANN202
    # t(a) + t(b), each term as _rescale_one
    return _rescale_one(a, mx, sx, hx, acc_max) + _rescale_one(b, my, sy, hy, acc_max)


def _eadd_span(x, y, mx, sx, hx, my, sy, hy, acc_max, cap, out):  # noqa: ANN001, ANN202
    # out[i] = clip(t(x[i]) + t(y[i]), +-cap) for arrays that do not overlap out (else the loop does not vectorise);
    # True if anything clipped. A multiplier operand my of 0 makes t(y[i]) 0 for every y[i] (the rounding term
    # 2**(sy-1), less one for a negative y, is below 2**sy): the compiler's rescale of one tensor, x alone.
    if my == 0:
        return _rescale_span(x, mx, sx, hx, acc_max, cap, out)
    clipped = False
    for i in range(x.shape[0]):
        v = _eadd_one(x[i], y[i], mx, sx, hx, my, sy, hy, acc_max)
        clipped |= (v > cap) | (v < -cap)
        out[i] = min(max(v, -cap), cap)
    return clipped


def _eadd_io(io, y, mx, sx, hx, lx, my, sy, hy, ly, acc_max, cap):  # noqa: ANN001, ANN202
    # _eadd with the destination the first source itself (io; y coincides with it or lies apart): one array read
    # and written at the same index, which LLVM vectorises without a buffer. 1, 0 or -1 as _eadd.
    bad = False
    for i in range(io.shape[0]):
        bad |= (io[i] > lx) | (io[i] < -lx) | (y[i] > ly) | (y[i] < -ly)
    if bad:
        return -1
    clipped = False
    for i in range(io.shape[0]):
        v = _eadd_one(io[i], y[i], mx, sx, hx, my, sy, hy, acc_max)
        clipped |= (v > cap) | (v < -cap)
        io[i] = min(max(v, -cap), cap)
    return 1 if clipped else 0


def _rescale_span(x, mx, sx, hx, acc_max, cap, out):  # noqa: ANN001, ANN202
    # _eadd_span with a second term of 0
    clipped = False
    for i in range(x.shape[0]):
        v = _rescale_one(x[i], mx, sx, hx, acc_max)
        clipped |= (v > cap) | (v < -cap)
        out[i] = min(max(v, -cap), cap)
    return clipped


def _rescale_io(io, y, mx, sx, hx, lx, ly, acc_max, cap):  # noqa: ANN001, ANN202
    # _eadd with a second multiplier of 0 and the destination the first source itself (io): one array read and
    # written at the same index, which LLVM vectorises without a buffer. y only has its limit checked.
    bad = False
    for i in range(io.shape[0]):
        bad |= (io[i] > lx) | (io[i] < -lx) | (y[i] > ly) | (y[i] < -ly)
    if bad:
        return -1
    clipped = False
    for i in range(io.shape[0]):
        v = _rescale_one(io[i], mx, sx, hx, acc_max)
        clipped |= (v > cap) | (v < -cap)
        io[i] = min(max(v, -cap), cap)
    return 1 if clipped else 0


_CHUNK = 2048  # elements an in-place elementwise loop computes into a buffer of its own before writing them back


def _rescale_lut(io, mx, sx, hx, lx, acc_max, cap, tab, lo, n):  # noqa: ANN001, ANN202
    # The compiler's table activation in one pass (runtime/fuse.py lut_pair): EADD's rescale of io in place (a
    # second multiplier of 0, the second source io itself), then TLUT of io in place through tab (n >= 1 entries
    # for the inputs lo .. lo+n-1; tab does not overlap io). Chunk by chunk: the rescaled table indices into a
    # buffer (that loop vectorises), then the lookups. 1 if the rescale clipped, 0 if not, -1 (nothing written)
    # if some |io[i]| exceeds lx.
    bad = False
    for i in range(io.shape[0]):
        bad |= (io[i] > lx) | (io[i] < -lx)
    if bad:
        return -1
    clipped = False
    hi = lo + n - 1
    buf = np.empty(_CHUNK, dtype=np.int64)
    for i0 in range(0, io.shape[0], _CHUNK):
        x = io[i0 : min(i0 + _CHUNK, io.shape[0])]
        for j in range(x.shape[0]):
            v = _rescale_one(x[j], mx, sx, hx, acc_max)
            clipped |= (v > cap) | (v < -cap)
            v = min(max(v, -cap), cap)
            buf[j] = min(max(v, lo), hi) - lo
        for j in range(x.shape[0]):
            x[j] = tab[np.uint64(buf[j])]  # unsigned: no negative-index wraparound test
    return 1 if clipped else 0


def _eadd(x, y, mx, sx, hx, lx, my, sy, hy, ly, acc_max, cap, out, inplace):  # noqa: ANN001, ANN202
    # out[i] = clip(t(x[i]) + t(y[i]), +-cap) with t = mul_shift_round capped at +-acc_max; out may be x or y itself
    # (inplace: element i is read before it is written, chunk by chunk through a buffer, so that the loop over a
    # chunk vectorises). 1: clipped, 0: not, -1: an operand past its limit (checked for all elements before any is
    # written, as out may be a source).
    n = x.shape[0]
    bad = False
    for i in range(n):
        bad |= (x[i] > lx) | (x[i] < -lx) | (y[i] > ly) | (y[i] < -ly)
    if bad:
        return -1
    if not inplace:
        return 1 if _eadd_span(x, y, mx, sx, hx, my, sy, hy, acc_max, cap, out) else 0
    clipped = False
    buf = np.empty(_CHUNK, dtype=np.int64)
    for i0 in range(0, n, _CHUNK):
        i1 = min(i0 + _CHUNK, n)
        t = buf[: i1 - i0]
        clipped |= _eadd_span(x[i0:i1], y[i0:i1], mx, sx, hx, my, sy, hy, acc_max, cap, t)
        o = out[i0:i1]
        for j in range(i1 - i0):
            o[j] = t[j]
    return 1 if clipped else 0


def _emul(x, y, mult, shift, acc_max, cap, out):  # noqa: ANN001, ANN202
    # out[i] = clip(msr(sat_acc(x[i] * y[i]), mult, shift), +-cap), exactly pcc.isa.emul: the product saturated at
    # +-acc_max (a product past 2**62 by its sign), then rounded half away from zero from 31-bit halves (exact for
    # every valid operand); out may be x or y itself (element i is read before it is written). 1: clipped, 0: not.
    # Where max|x| * max|y| <= acc_max no product saturates: a loop without the saturation test and with the shift's
    # case decided once (it vectorises), the same integers.
    n = x.shape[0]
    half = (np.int64(1) << (shift - 1)) if shift > 0 else np.int64(0)
    if _fmax(x) * _fmax(y) < np.float64(acc_max) * 0.5:
        return _emul_plain(x, y, mult, shift, half, acc_max, cap, out)
    clipped = False
    for i in range(n):
        a = x[i]
        b = y[i]
        if abs(np.float64(a) * np.float64(b)) > 4611686018427387904.0:  # 2**62
            p = acc_max if (a > 0) == (b > 0) else -acc_max
        else:
            p = min(max(a * b, -acc_max), acc_max)
        m = -p if p < 0 else p
        hi = (m >> 31) * mult
        lo = (m & 0x7FFFFFFF) * mult + half
        hi += lo >> 31
        lo &= 0x7FFFFFFF
        if shift >= 31:
            q = hi >> (shift - 31)
        else:
            k = 31 - shift
            q = (min(hi, (acc_max >> k) + 1) << k) + (lo >> shift)
        q = min(q, acc_max)
        v = -q if p < 0 else q
        clipped |= (v > cap) | (v < -cap)
        out[i] = min(max(v, -cap), cap)
    return 1 if clipped else 0


def _emul_io(io, y, mult, shift, acc_max, cap):  # noqa: ANN001, ANN202
    # _emul with the destination the first source itself (io): a loop over one array read and written at the same
    # index, which LLVM vectorises without the buffer (y coincides with io or lies apart from it)
    half = (np.int64(1) << (shift - 1)) if shift > 0 else np.int64(0)
    if _fmax(io) * _fmax(y) < np.float64(acc_max) * 0.5:
        return 1 if _emul_span_io(io, y, mult, shift, half, acc_max, cap) else 0
    return _emul(io, y, mult, shift, acc_max, cap, io)


def _emul_plain(x, y, mult, shift, half, acc_max, cap, out):  # noqa: ANN001, ANN202
    # _emul where |x[i] * y[i]| <= acc_max for every i (no saturation): chunk by chunk into a buffer of its own and
    # then copied to out (which may be x or y: the loop over a chunk vectorises only into memory nothing aliases)
    n = x.shape[0]
    nclip = 0
    buf = np.empty(_CHUNK, dtype=np.int64)
    for i0 in range(0, n, _CHUNK):
        i1 = min(i0 + _CHUNK, n)
        nclip += _emul_span(x[i0:i1], y[i0:i1], mult, shift, half, acc_max, cap, buf)
        o = out[i0:i1]
        for j in range(i1 - i0):
            o[j] = buf[j]
    return 1 if nclip else 0


def _emul_one(a, b, mult, shift, half, acc_max, cap):  # noqa: ANN001, ANN202
    # _emul's element for a product that does not saturate (|a * b| <= acc_max), branch-free but for the shift's
    # case, which is the same for every element (LLVM takes it out of the loop)
    p = a * b
    m = abs(p)
    lo = (m & 0x7FFFFFFF) * mult + half
    hi = (m >> 31) * mult + (lo >> 31)
    if shift >= 31:
        q = min(hi >> (shift - 31), acc_max)
    else:
        k = 31 - shift
        q = min((min(hi, (acc_max >> k) + 1) << k) + ((lo & 0x7FFFFFFF) >> shift), acc_max)
    return q - 2 * q * (p < 0)


def _emul_span(x, y, mult, shift, half, acc_max, cap, buf):  # noqa: ANN001, ANN202
    # buf[i] = _emul's element i, for products that do not saturate; the count of clipped elements
    nclip = 0
    for i in range(x.shape[0]):
        v = _emul_one(x[i], y[i], mult, shift, half, acc_max, cap)
        nclip += (v > cap) | (v < -cap)
        buf[i] = min(max(v, -cap), cap)
    return nclip


def _emul_span_io(io, y, mult, shift, half, acc_max, cap):  # noqa: ANN001, ANN202
    # _emul_span with buf the first source itself, one array read and written at the same index (it vectorises)
    nclip = 0
    for i in range(io.shape[0]):
        v = _emul_one(io[i], y[i], mult, shift, half, acc_max, cap)
        nclip += (v > cap) | (v < -cap)
        io[i] = min(max(v, -cap), cap)
    return nclip
