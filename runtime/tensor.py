"""Tensor instructions: one numpy closure per instruction, built once with its field values bound.

Every closure implements the semantics text of its instruction in ``backend/isa.py`` exactly:

* DMA (TLOAD, TSTORE, TLOADW, TLOADC, TSTOREC) takes the base register's value as its argument; the main-memory
  extent is checked when it runs, the scratchpad extent when the closure is built (it depends on fields only),
  and an out-of-range extent becomes a closure that faults when executed.
* MATMUL, MATVEC and CONV are integer dot products. They use float64 BLAS only where the operand bounds prove
  every partial sum an integer below 2**53 (``max|a| * max|w| * K < 2**53``, checked on the actual operands each
  time), and exact int64 ``matmul`` otherwise; both are exact, and int64 cannot overflow because
  ``|a| <= word_max(16)``, ``|w| <= 2`` and ``K <= word_max(9)`` bound a sum by 1.5e17 (plus at most ``ACC_MAX`` of
  base, < 2**63).
* Requantisation and EADD call ``isa.mul_shift_round`` / ``isa.requantize``, the primitives that define them.
* Every instruction reads all its sources before it writes its destination (so overlapping source and
  destination ranges behave as if the sources were copied first), except TSTORE/TSTOREC whose rows are written
  in order, later rows winning, as the table says.

S (sticky) is set through the simulator's flag list when a result saturates.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from pcc.backend import isa
from pcc.backend.isa import ACC_MAX, MULT_MAX, SHIFT_MAX, WORD_MAX, Op, cdiv, conv_out, mul_shift_round
from pcc.backend.program import Instruction
from pcc.pentary import to_digits, word_max
from pcc.runtime.simulator import Fault

if TYPE_CHECKING:
    from pcc.runtime.simulator import Simulator

EXACT_F64 = 2**53  # integers below this are exact in float64
_I64_MIN = np.iinfo(np.int64).min


def exact_dot(x: np.ndarray, w: np.ndarray, k: int) -> np.ndarray:
    """``x @ w`` of integer arrays (int64 activations, int8 pents), exact, as int64.

    ``x`` is ``[..., P, K]`` and ``w`` ``[..., K, Q]``. float64 BLAS is used when ``max|x| * max|w| * K < 2**53``
    (then every product and partial sum is an integer exactly representable in float64, whatever the order of
    summation); otherwise int64 matmul.
    """
    if x.size == 0 or w.size == 0:
        shape = np.broadcast_shapes(x.shape[:-2], w.shape[:-2]) + (x.shape[-2], w.shape[-1])
        return np.zeros(shape, dtype=np.int64)
    amax = max(int(x.max()), -int(x.min()))
    wmax = max(int(w.max()), -int(w.min()))
    if amax * wmax * k < EXACT_F64:
        return np.matmul(x.astype(np.float64), w.astype(np.float64)).astype(np.int64)
    return np.matmul(x.astype(np.int64, copy=False), w.astype(np.int64))


def _span(name: str, start: int, length: int, size: int) -> str | None:
    if length > 0 and (start < 0 or start + length > size):
        return f"scratchpad {name} access {start}..{start + length - 1} outside 0..{size - 1}"
    return None


def _first(*reasons: str | None) -> str | None:
    for r in reasons:
        if r is not None:
            return r
    return None


def _raiser(i: int, message: str, dma: bool) -> Callable:
    flt = Fault(i, message)
    if dma:

        def fault_dma(base: int) -> None:
            raise flt

        return fault_dma

    def fault() -> None:
        raise flt

    return fault


def build(sim: Simulator, i: int, ins: Instruction) -> Callable:
    """The closure that executes tensor instruction ``i`` (DMA closures take the base register's value)."""
    maker = _MAKERS[ins.op]
    return maker(sim, i, *ins.args)


# ---- DMA ---------------------------------------------------------------------------------------------


def _dram_check(i: int, what: str, b: int, lo: int, hi: int, size: int) -> None:
    if b + lo < 0 or b + hi >= size:
        raise Fault(i, f"{what} main-memory access {b + lo}..{b + hi} outside main memory (0..{size - 1})")


def _rows(rows: int, cols: int, stride: int) -> tuple[int, int, bool, np.ndarray | None]:
    """(lowest offset, highest offset, contiguous?, offsets) of a rows x cols access with a row stride."""
    lo = min(0, (rows - 1) * stride)
    hi = max(0, (rows - 1) * stride) + cols - 1
    contiguous = rows == 1 or stride == cols
    rel = None if contiguous else (np.arange(rows, dtype=np.int64)[:, None] * stride + np.arange(cols)).reshape(-1)
    return lo, hi, contiguous, rel


def _load_rows(
    sim: Simulator, i: int, what: str, dst: np.ndarray, dname: str, d: int, off: int, rows: int, cols: int, stride: int
) -> Callable:
    n = rows * cols
    bad = _span(dname, d, n, dst.size)
    if bad:
        return _raiser(i, f"{what}: {bad}", True)
    if n == 0:
        return lambda base: None
    sim.touch_spad(dname, d, n)
    mem = sim.mem
    size = mem.size
    lo, hi, contiguous, rel = _rows(rows, cols, stride)

    def dma_in(base: int) -> None:
        b = base + off
        if b + lo < 0 or b + hi >= size:
            _dram_check(i, what, b, lo, hi, size)
        if contiguous:
            dst[d : d + n] = mem[b : b + n]
        else:
            dst[d : d + n] = mem[b + rel]

    return dma_in


def _store_rows(
    sim: Simulator,
    i: int,
    what: str,
    src: np.ndarray,
    sname: str,
    s: int,
    off: int,
    rows: int,
    cols: int,
    stride: int,
    saturate: bool,
) -> Callable:
    n = rows * cols
    bad = _span(sname, s, n, src.size)
    if bad:
        return _raiser(i, f"{what}: {bad}", True)
    if n == 0:
        return lambda base: None
    mem = sim.mem
    size = mem.size
    flags = sim._flags
    lo, hi, contiguous, rel = _rows(rows, cols, stride)
    overlapping = rows > 1 and abs(stride) < cols
    touch = sim.touch

    def dma_out(base: int) -> None:
        b = base + off
        if b + lo < 0 or b + hi >= size:
            _dram_check(i, what, b, lo, hi, size)
        touch(b + lo, b + hi)
        v = src[s : s + n]
        if saturate:
            c = np.clip(v, -WORD_MAX, WORD_MAX)
            if c.size and (int(v.max()) > WORD_MAX or int(v.min()) < -WORD_MAX):
                flags[3] = 1
            v = c
        if contiguous:
            mem[b : b + n] = v
        elif overlapping:  # rows in order: where rows overlap, the later one wins
            for r in range(rows):
                mem[b + r * stride : b + r * stride + cols] = v[r * cols : (r + 1) * cols]
        else:
            mem[b + rel] = v

    return dma_out


def _tload(sim: Simulator, i: int, a: int, rb: int, off: int, rows: int, cols: int, stride: int) -> Callable:
    return _load_rows(sim, i, "TLOAD", sim.spad_a, "A", a, off, rows, cols, stride)


def _tstore(sim: Simulator, i: int, rb: int, off: int, a: int, rows: int, cols: int, stride: int) -> Callable:
    return _store_rows(sim, i, "TSTORE", sim.spad_a, "A", a, off, rows, cols, stride, False)


def _tloadc(sim: Simulator, i: int, c: int, rb: int, off: int, rows: int, cols: int, stride: int) -> Callable:
    return _load_rows(sim, i, "TLOADC", sim.spad_c, "C", c, off, rows, cols, stride)


def _tstorec(sim: Simulator, i: int, rb: int, off: int, c: int, rows: int, cols: int, stride: int) -> Callable:
    return _store_rows(sim, i, "TSTOREC", sim.spad_c, "C", c, off, rows, cols, stride, True)


def _tloadw(sim: Simulator, i: int, w: int, rb: int, off: int, count: int) -> Callable:
    spw = sim.spad_w
    bad = _span("W", w, count, spw.size)
    if bad:
        return _raiser(i, f"TLOADW: {bad}", True)
    if count == 0:
        return lambda base: None
    sim.touch_spad("W", w, count)
    mem = sim.mem
    size = mem.size
    nw = cdiv(count, isa.WORD_PENTS)

    def dma_w(base: int) -> None:
        b = base + off
        if b < 0 or b + nw > size:
            _dram_check(i, "TLOADW", b, 0, nw - 1, size)
        digits = to_digits(mem[b : b + nw], isa.WORD_PENTS).reshape(-1)
        spw[w : w + count] = digits[:count]

    return dma_w


# ---- MAC array and crossbar --------------------------------------------------------------------------


def _saturate_acc(out: np.ndarray, flags: list) -> np.ndarray:
    if out.size and (int(out.max()) > ACC_MAX or int(out.min()) < -ACC_MAX):
        flags[3] = 1
        return np.clip(out, -ACC_MAX, ACC_MAX)
    return out


def _matmul(sim: Simulator, i: int, c: int, a: int, w: int, m: int, n: int, k: int, acc: int) -> Callable:
    A, W, C = sim.spad_a, sim.spad_w, sim.spad_c
    bad = _first(_span("A", a, m * k, A.size), _span("W", w, n * k, W.size), _span("C", c, m * n, C.size))
    if bad:
        return _raiser(i, f"MATMUL: {bad}", False)
    return _dot_closure(sim, i, c, a, w, m, n, k, acc)


def _matvec(sim: Simulator, i: int, c: int, a: int, w: int, n: int, k: int, acc: int) -> Callable:
    A, W, C = sim.spad_a, sim.spad_w, sim.spad_c
    bad = _first(_span("A", a, k, A.size), _span("W", w, n * k, W.size), _span("C", c, n, C.size))
    if bad:
        return _raiser(i, f"MATVEC: {bad}", False)
    return _dot_closure(sim, i, c, a, w, 1, n, k, acc)


def _dot_closure(sim: Simulator, i: int, c: int, a: int, w: int, m: int, n: int, k: int, acc: int) -> Callable:
    A, W, C = sim.spad_a, sim.spad_w, sim.spad_c
    flags, zw, zm = sim._flags, sim.zero_weights, sim.zero_macs
    mn = m * n
    if mn == 0:
        return lambda: None
    sim.touch_spad("C", c, mn)

    def dot() -> None:
        wt = W[w : w + n * k].reshape(n, k)
        prod = exact_dot(A[a : a + m * k].reshape(m, k), wt.T, k).reshape(-1)
        zeros = n * k - int(np.count_nonzero(wt))
        if zeros:
            zw[i] += zeros
            zm[i] += m * zeros
        if acc:
            prod += C[c : c + mn]
        C[c : c + mn] = _saturate_acc(prod, flags)

    return dot


def windows(
    x: np.ndarray, kh: int, kw: int, sh: int, sw: int, pads: tuple[int, int, int, int], fill: int
) -> np.ndarray:
    """The ``(oh, ow, C, kh, kw)`` view of the windows of an HWC image ``x`` padded with ``fill``.

    ``pads`` is (top, left, bottom, right); window ``(oy, ox)`` covers rows ``oy*sh - top ..`` and columns
    ``ox*sw - left ..`` of the input, as in the table's window rule.
    """
    pt, pl, pb, pr = pads
    ih, iw, ch = x.shape
    oh, ow = conv_out(ih, pt, pb, kh, sh), conv_out(iw, pl, pr, kw, sw)
    if pt or pl or pb or pr:
        xp = np.full((ih + pt + pb, iw + pl + pr, ch), fill, dtype=x.dtype)
        xp[pt : pt + ih, pl : pl + iw] = x
    else:
        xp = x
    v = sliding_window_view(xp, (kh, kw), axis=(0, 1))
    return v[: (oh - 1) * sh + 1 : sh, : (ow - 1) * sw + 1 : sw]


def _conv(
    sim: Simulator,
    i: int,
    c: int,
    a: int,
    w: int,
    ih: int,
    iw: int,
    ic: int,
    oc: int,
    kh: int,
    kw: int,
    sh: int,
    sw: int,
    pt: int,
    pl: int,
    pb: int,
    pr: int,
    groups: int,
    acc: int,
) -> Callable:
    A, W, C = sim.spad_a, sim.spad_w, sim.spad_c
    oh, ow = conv_out(ih, pt, pb, kh, sh), conv_out(iw, pl, pr, kw, sw)
    g = groups
    icg, ocg = ic // g, oc // g
    kk = kh * kw * icg
    p = oh * ow
    bad = _first(_span("A", a, ih * iw * ic, A.size), _span("W", w, oc * kk, W.size), _span("C", c, p * oc, C.size))
    if bad:
        return _raiser(i, f"CONV: {bad}", False)
    flags, zw, zm = sim._flags, sim.zero_weights, sim.zero_macs
    n_out = p * oc
    pads = (pt, pl, pb, pr)
    if n_out == 0:
        return lambda: None
    sim.touch_spad("C", c, n_out)

    def conv() -> None:
        x = A[a : a + ih * iw * ic].reshape(ih, iw, ic)
        wflat = W[w : w + oc * kk]
        if kk == 0 or x.size == 0:
            prod = np.zeros(n_out, dtype=np.int64)
        else:
            amax = max(int(x.max()), -int(x.min()))
            wmax = max(int(wflat.max()), -int(wflat.min()))
            dt = np.float64 if amax * wmax * kk < EXACT_F64 else np.int64
            win = windows(x, kh, kw, sh, sw, pads, 0)  # (oh, ow, ic, kh, kw)
            # patches[g, pixel, (ky, kx, ci)] in the weights' order
            cols = (
                win.reshape(oh, ow, g, icg, kh, kw).transpose(2, 0, 1, 4, 5, 3).astype(dt, order="C").reshape(g, p, kk)
            )
            wt = wflat.reshape(g, ocg, kk).astype(dt).transpose(0, 2, 1)  # (g, kk, ocg)
            out = cols[0] @ wt[0] if g == 1 else np.matmul(cols, wt).transpose(1, 0, 2)
            prod = out.astype(np.int64, order="C").reshape(-1)
        zeros = oc * kk - int(np.count_nonzero(wflat))
        if zeros:
            zw[i] += zeros
            zm[i] += p * zeros
        if acc:
            prod += C[c : c + n_out]
        C[c : c + n_out] = _saturate_acc(prod, flags)

    return conv


# ---- vector unit -------------------------------------------------------------------------------------


def _pool(
    sim: Simulator,
    i: int,
    dst: int,
    src: int,
    ih: int,
    iw: int,
    c: int,
    kh: int,
    kw: int,
    sh: int,
    sw: int,
    pt: int,
    pl: int,
    pb: int,
    pr: int,
    mode: int,
) -> Callable:
    A = sim.spad_a
    oh, ow = conv_out(ih, pt, pb, kh, sh), conv_out(iw, pl, pr, kw, sw)
    n_in, n_out = ih * iw * c, oh * ow * c
    bad = _first(_span("A", src, n_in, A.size), _span("A", dst, n_out, A.size))
    if bad:
        return _raiser(i, f"POOL: {bad}", False)
    if n_out == 0:
        return lambda: None
    sim.touch_spad("A", dst, n_out)
    pads = (pt, pl, pb, pr)
    if mode == 1:  # taps inside the input, per output pixel
        ones = np.ones((ih, iw, 1), dtype=np.int64)
        count = windows(ones, kh, kw, sh, sw, pads, 0).sum(axis=(3, 4))  # (oh, ow, 1)
    else:
        count = np.int64(kh * kw)

    def pool() -> None:
        x = A[src : src + n_in].reshape(ih, iw, c)
        if mode == 0:
            out = windows(x, kh, kw, sh, sw, pads, _I64_MIN).max(axis=(3, 4))
        else:
            out = isa.div_round(windows(x, kh, kw, sh, sw, pads, 0).sum(axis=(3, 4)), count)
        A[dst : dst + n_out] = out.reshape(-1)

    return pool


def _requant(sim: Simulator, i: int, dst: int, src: int, count: int, mult: int, shift: int, pents: int) -> Callable:
    A, C, flags = sim.spad_a, sim.spad_c, sim._flags
    bad = _first(_span("C", src, count, C.size), _span("A", dst, count, A.size))
    if bad:
        return _raiser(i, f"REQUANT: {bad}", False)
    if count == 0:
        return lambda: None
    sim.touch_spad("A", dst, count)

    def requant() -> None:
        out, clipped = isa.requantize(C[src : src + count], mult, shift, pents)
        if clipped:
            flags[3] = 1
        A[dst : dst + count] = out

    return requant


def _requantc(sim: Simulator, i: int, dst: int, src: int, rows: int, cols: int, q: int, pents: int) -> Callable:
    A, C, flags = sim.spad_a, sim.spad_c, sim._flags
    n = rows * cols
    bad = _first(_span("C", src, n, C.size), _span("C", q, 2 * cols, C.size), _span("A", dst, n, A.size))
    if bad:
        return _raiser(i, f"REQUANTC: {bad}", False)
    if cols == 0:
        return lambda: None
    sim.touch_spad("A", dst, n)
    cap = word_max(pents)

    def requantc() -> None:
        mult = C[q : q + cols].copy()
        shift = C[q + cols : q + 2 * cols].copy()
        bad_m = np.flatnonzero((mult < 0) | (mult > MULT_MAX))
        if bad_m.size:
            j = int(bad_m[0])
            raise Fault(i, f"REQUANTC multiplier of channel {j} (C[{q + j}]) = {int(mult[j])} outside 0..{MULT_MAX}")
        bad_s = np.flatnonzero((shift < 0) | (shift > SHIFT_MAX))
        if bad_s.size:
            j = int(bad_s[0])
            raise Fault(
                i, f"REQUANTC shift of channel {j} (C[{q + cols + j}]) = {int(shift[j])} outside 0..{SHIFT_MAX}"
            )
        if n == 0:
            return
        exact = mul_shift_round(C[src : src + n].reshape(rows, cols), mult[None, :], shift[None, :], ACC_MAX)
        out = np.clip(exact, -cap, cap)
        if int(exact.max()) > cap or int(exact.min()) < -cap:
            flags[3] = 1
        A[dst : dst + n] = out.reshape(-1)

    return requantc


def _eadd(
    sim: Simulator, i: int, dst: int, x: int, y: int, count: int, mx: int, sx: int, my: int, sy: int, pents: int
) -> Callable:
    A, flags = sim.spad_a, sim._flags
    bad = _first(_span("A", x, count, A.size), _span("A", y, count, A.size), _span("A", dst, count, A.size))
    if bad:
        return _raiser(i, f"EADD: {bad}", False)
    if count == 0:
        return lambda: None
    sim.touch_spad("A", dst, count)
    cap = word_max(pents)

    def eadd() -> None:
        s = mul_shift_round(A[x : x + count], mx, sx, ACC_MAX) + mul_shift_round(A[y : y + count], my, sy, ACC_MAX)
        if int(s.max()) > cap or int(s.min()) < -cap:
            flags[3] = 1
            s = np.clip(s, -cap, cap)
        A[dst : dst + count] = s

    return eadd


def _unary(name: str, fn: Callable[[np.ndarray], np.ndarray]) -> Callable:
    def make(sim: Simulator, i: int, dst: int, src: int, count: int, *extra: int) -> Callable:
        A = sim.spad_a
        bad = _first(_span("A", src, count, A.size), _span("A", dst, count, A.size))
        if bad:
            return _raiser(i, f"{name}: {bad}", False)
        if count == 0:
            return lambda: None
        sim.touch_spad("A", dst, count)

        def unary() -> None:
            A[dst : dst + count] = fn(A[src : src + count], *extra)

        return unary

    return make


def _clamp(x: np.ndarray, lo: int, hi: int) -> np.ndarray:
    return np.minimum(np.maximum(x, lo), hi)  # lo > hi gives hi, as the table says


def _tlut(sim: Simulator, i: int, dst: int, src: int, count: int, table: int, lo: int, n: int) -> Callable:
    A = sim.spad_a
    bad = _first(_span("A", src, count, A.size), _span("A", table, n, A.size), _span("A", dst, count, A.size))
    if bad:
        return _raiser(i, f"TLUT: {bad}", False)
    if count == 0:
        return lambda: None
    sim.touch_spad("A", dst, count)

    def tlut() -> None:
        v = np.clip(A[src : src + count], lo, lo + n - 1)
        A[dst : dst + count] = A[table + (v - lo)]

    return tlut


_MAKERS: dict[int, Callable[..., Callable]] = {
    Op.TLOAD: _tload,
    Op.TSTORE: _tstore,
    Op.TLOADW: _tloadw,
    Op.TLOADC: _tloadc,
    Op.TSTOREC: _tstorec,
    Op.MATMUL: _matmul,
    Op.MATVEC: _matvec,
    Op.CONV: _conv,
    Op.POOL: _pool,
    Op.REQUANT: _requant,
    Op.REQUANTC: _requantc,
    Op.EADD: _eadd,
    Op.TRELU: _unary("TRELU", lambda x: np.maximum(x, 0)),
    Op.TCLAMP: _unary("TCLAMP", _clamp),
    Op.TLUT: _tlut,
}


def tensor_opcodes() -> frozenset[int]:
    """The opcodes executed by closures of this module (every tensor instruction of the table)."""
    return frozenset(_MAKERS)


__all__ = ["EXACT_F64", "build", "exact_dot", "tensor_opcodes", "windows"]
