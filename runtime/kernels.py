"""Fused integer loops for the simulator's large elementwise work, compiled with numba when it is installed.

REQUANTC, EADD and the recombination of CONV's digit products are a handful of integer operations per element.
numpy runs each operation as its own pass over the array (REQUANTC takes nine: the operands' minimum and maximum,
the multiply, the rounding terms, the shift, the result's minimum and maximum); these loops do it in one, with the
overflow guard per element instead of a bound from the extremes. They compute exactly what the numpy code in
``runtime/tensor.py`` computes (the tests run both on the same operands and compare with Python integers); when a
guard fails they report it and the caller takes its numpy path, which handles every operand.

numba is optional (the ``fast`` extra). :func:`available` imports it on first use; each loop is compiled on its
first call (``cache=True`` keeps the machine code on disk for later processes).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

_state: dict[str, object] = {}


def available() -> bool:
    """Whether numba imports here (the loops are compiled on first use)."""
    if "ok" not in _state:
        try:
            import numba  # noqa: F401
        except ImportError:
            _state["ok"] = False
        else:
            _state["ok"] = True
    return bool(_state["ok"])


def _jit(fn: Callable) -> Callable:
    import numba

    try:
        return numba.njit(cache=True, nogil=True, boundscheck=False)(fn)
    except RuntimeError:  # no writable cache location (a read-only install): compile in each process
        return numba.njit(nogil=True, boundscheck=False)(fn)


def _get(name: str) -> Callable:
    fn = _state.get(name)
    if fn is None:
        fn = _state[name] = _jit(_PY[name])
    return fn  # type: ignore[return-value]


# ---- the loops, as plain Python (numba compiles them) ---------------------------------------------------------


def _requant_rows(x, mp, s, half, limit, cap, out):  # noqa: ANN001, ANN202
    # out[r, c] = clip((x*mp[c] + half - [x < 0]) >> s, +-cap) (just x*mp[c] when s == 0): mul_shift_round's int64
    # common-shift path, then REQUANT's saturation. Returns 1 if anything clipped, 0 if not, -1 if some |x| > limit
    # (then x * mp + half could leave int64 and out holds garbage: the caller takes the exact wide path; out is not
    # a source). No early exit, so that the loop vectorises.
    bad = False
    clipped = False
    rows, cols = x.shape
    for r in range(rows):
        xr = x[r]
        orow = out[r]
        for c in range(cols):
            v = xr[c]
            bad |= (v > limit) | (v < -limit)
            y = v * mp[c]
            if s > 0:
                y = (y + half - (v < 0)) >> s
            clipped |= (y > cap) | (y < -cap)
            orow[c] = min(max(y, -cap), cap)
    if bad:
        return -1
    return 1 if clipped else 0


def _eadd(x, y, mx, sx, hx, lx, my, sy, hy, ly, acc_max, cap, out):  # noqa: ANN001, ANN202
    # out[i] = clip(t(x[i]) + t(y[i]), +-cap) with t = mul_shift_round capped at +-acc_max; out may be x or y itself
    # (element i is read before it is written). 1: clipped, 0: not, -1: an operand past its limit (checked for
    # all elements before any is written, as out may be a source).
    n = x.shape[0]
    bad = False
    for i in range(n):
        bad |= (x[i] > lx) | (x[i] < -lx) | (y[i] > ly) | (y[i] < -ly)
    if bad:
        return -1
    clipped = False
    for i in range(n):
        a = x[i]
        b = y[i]
        ta = a * mx
        if sx > 0:
            ta = (ta + hx - (a < 0)) >> sx
        tb = b * my
        if sy > 0:
            tb = (tb + hy - (b < 0)) >> sy
        v = min(max(ta, -acc_max), acc_max) + min(max(tb, -acc_max), acc_max)
        clipped |= (v > cap) | (v < -cap)
        out[i] = min(max(v, -cap), cap)
    return 1 if clipped else 0


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


def _extremes(x):  # noqa: ANN001, ANN202
    # (min, max) of a flat array in one pass
    lo = x[0]
    hi = x[0]
    for i in range(x.shape[0]):
        v = x[i]
        lo = min(lo, v)
        hi = max(hi, v)
    return lo, hi


_PY = {
    "requant_rows": _requant_rows,
    "eadd": _eadd,
    "recombine": _recombine,
    "digit_planes": _digit_planes,
    "extremes": _extremes,
}


# ---- entry points ---------------------------------------------------------------------------------------------


def requant_rows(x: np.ndarray, mp: np.ndarray, s: int, half: int, limit: int, cap: int, out: np.ndarray) -> int:
    """REQUANTC's common-shift rounding and saturation of ``x`` (rows x channels, int64) into ``out``: 1 if it
    clipped, 0 if not, -1 if an accumulator exceeds ``limit`` (nothing usable was written)."""
    return int(_get("requant_rows")(x, mp, s, half, limit, cap, out))


def eadd(x: np.ndarray, y: np.ndarray, px: tuple[int, ...], py: tuple[int, ...], cap: int, out: np.ndarray) -> int:
    """EADD's rescale-and-add of ``x`` and ``y`` into ``out`` (``p* = (multiplier, shift, 2**(shift-1), limit)``):
    1 if it clipped, 0 if not, -1 if an operand exceeds its limit (nothing usable was written)."""
    from pcc.backend.isa import ACC_MAX

    return int(_get("eadd")(x, y, *px, *py, ACC_MAX, cap, out))


def recombine(r: np.ndarray, out: np.ndarray, add: bool) -> None:
    """``out (+)= sum_d r[d] * 256**d`` for digit products ``r`` (int32, digit first, C-contiguous), in int64
    (``out``: C-contiguous, ``r[0]``'s shape)."""
    if not (out.flags.c_contiguous and r.flags.c_contiguous):
        raise ValueError("recombine needs C-contiguous arrays (a reshaped copy would lose the result)")
    _get("recombine")(r.reshape(r.shape[0], -1), out.reshape(-1), add)


def digit_planes(x: np.ndarray, off: int, nd: int, d: np.ndarray, top: int, left: int) -> None:
    """The nd balanced base-256 digits of the HWC image ``x`` into ``d[j, top:top+ih, left:left+iw]``."""
    _get("digit_planes")(x, off, nd, d, top, left)


def extremes(x: np.ndarray) -> tuple[int, int]:
    """``(x.min(), x.max())`` of a non-empty array, in one pass."""
    lo, hi = _get("extremes")(x.reshape(-1))
    return int(lo), int(hi)


__all__ = ["available", "digit_planes", "eadd", "extremes", "recombine", "requant_rows"]
