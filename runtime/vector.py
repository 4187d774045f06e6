"""Vector-unit closures: POOL, REQUANT, REQUANTC, EADD, TRELU, TCLAMP, TLUT.

Requantisation and EADD call ``isa.mul_shift_round`` / ``isa.requantize``, the primitives that define them;
REQUANTC and EADD run ``mul_shift_round``'s own int64 common-shift path in place (:func:`_msr_into`) where it
applies, and call it otherwise; REQUANTC keeps its checked multipliers and shifts while the C scratchpad holds the
same words. A POOL without padding reduces over strided views of A made once. With the compiled loops, POOL,
REQUANTC, EADD, EMUL, TLUT, TRELU and TCLAMP run as loops of ``runtime/kernels.py`` and fall back to numpy where a
guard stops them.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np

from pcc import isa
from pcc.isa import ACC_MAX, MULT_MAX, SHIFT_MAX, conv_out, mul_shift_round
from pcc.pentary import word_max
from pcc.runtime import kernels
from pcc.runtime.faults import Fault
from pcc.runtime.tensor_base import (
    _I64_MAX,
    _I64_MIN,
    _SMALL,
    _absmax,
    _first,
    _raiser,
    _span,
    padded,
    windows,
)

if TYPE_CHECKING:
    from pcc.runtime.simulator import Simulator


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
    if sim.fused:
        kern = kernels.loop("pool")
        apart = dst + n_out <= src or src + n_in <= dst
        tmp = np.empty(1 if apart else n_out, dtype=np.int64)  # the result, where it would overwrite the source
        numpy_pool = _pool_numpy(sim, (dst, src, ih, iw, c, kh, kw, sh, sw, pt, pl, pb, pr, mode), i)
        X, xs = sim.reads_from(i, src)  # A, or a forwarded TLOAD's source in main memory

        def pool_loop() -> None:
            if kern(X, xs, A, dst, ih, iw, c, kh, kw, sh, sw, pt, pl, oh, ow, mode, tmp, X is A) < 0:
                numpy_pool()  # an average whose sums could leave int64

        return pool_loop
    return _pool_numpy(sim, (dst, src, ih, iw, c, kh, kw, sh, sw, pt, pl, pb, pr, mode), i)


def _pool_numpy(sim: Simulator, fields: tuple[int, ...], i: int) -> Callable:
    """POOL's numpy closure (the fields of :func:`_pool`, checked there; ``i``: its index)."""
    dst, src, ih, iw, c, kh, kw, sh, sw, pt, pl, pb, pr, mode = fields
    A = sim.spad_a
    X, xs = sim.reads_from(i, src)  # A, or a forwarded TLOAD's source in main memory (apart from the destination)
    oh, ow = conv_out(ih, pt, pb, kh, sh), conv_out(iw, pl, pr, kw, sw)
    n_in, n_out = ih * iw * c, oh * ow * c
    pads = (pt, pl, pb, pr)
    if mode == 1:  # taps inside the input, per output pixel
        ones = np.ones((ih, iw, 1), dtype=np.int64)
        count = windows(ones, kh, kw, sh, sw, pads, 0).sum(axis=(3, 4))  # (oh, ow, 1)
    else:
        count = np.int64(kh * kw)

    ws = sim.workspace
    padded_shape = (ih + pt + pb, iw + pl + pr, c)
    by_tap = oh * ow >= kh * kw
    if by_tap and not any(pads):
        # no padding: the taps are fixed strided views of A itself, made once; a max pool reduces straight into the
        # destination unless it overlaps the source
        src_view = X[xs : xs + n_in].reshape(ih, iw, c)
        win = windows(src_view, kh, kw, sh, sw, pads, 0)
        taps = [win[..., ky, kx] for ky in range(kh) for kx in range(kw)]
        dst_view = A[dst : dst + n_out].reshape(oh, ow, c)
        apart = X is not A or dst + n_out <= src or src + n_in <= dst

        def pool() -> None:
            if mode == 0 and apart:
                out = dst_view
            else:
                out = ws.get("pool_out", (oh, ow, c), np.int64)
            if len(taps) == 1:
                out[...] = taps[0]
            else:
                (np.maximum if mode == 0 else np.add)(taps[0], taps[1], out=out)
                for t in taps[2:]:
                    if mode == 0:
                        np.maximum(out, t, out=out)
                    else:
                        out += t
            if mode:
                dst_view[...] = isa.div_round(out, count)
            elif out is not dst_view:
                dst_view[...] = out

        return pool

    reduce2 = np.maximum if mode == 0 else np.add

    def fold(taps: list[np.ndarray], out: np.ndarray) -> None:  # out = the max (sum) of the taps
        if len(taps) == 1:
            out[...] = taps[0]
            return
        reduce2(taps[0], taps[1], out=out)
        for t in taps[2:]:
            reduce2(out, t, out=out)

    wp = iw + pl + pr
    # a max pool whose destination lies apart from its source reduces straight into it
    apart = X is not A or dst + n_out <= src or src + n_in <= dst
    direct = A[dst : dst + n_out].reshape(oh, ow, c) if mode == 0 and apart else None

    def pool() -> None:
        x = X[xs : xs + n_in].reshape(ih, iw, c)
        fill = _I64_MIN if mode == 0 else 0
        if by_tap:
            # separably: the kh taps of each window row over whole padded rows, then the kw taps of those
            # (kh + kw - 2 strided passes instead of kh * kw - 1); max and sum are associative and commutative
            xp = padded(x, pads, fill, np.int64, ws.get("pool", padded_shape, np.int64))
            s0, s1, s2 = xp.strides
            rows = ws.get("pool_rows", (oh, wp, c), np.int64)
            fold([np.ndarray((oh, wp, c), np.int64, xp, ky * s0, (s0 * sh, s1, s2)) for ky in range(kh)], rows)
            r0, r1, r2 = rows.strides
            out = direct if direct is not None else ws.get("pool_out", (oh, ow, c), np.int64)
            fold([np.ndarray((oh, ow, c), np.int64, rows, kx * r1, (r0, r1 * sw, r2)) for kx in range(kw)], out)
        else:
            win = windows(x, kh, kw, sh, sw, pads, fill, ws.get("pool", padded_shape, np.int64))
            out = win.max(axis=(3, 4)) if mode == 0 else win.sum(axis=(3, 4))
        if mode:
            out = isa.div_round(out, count)
        if out is not direct:
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


def _msr_plan(
    m0: np.ndarray | int, s0: np.ndarray | int, limits: tuple[int, int, int, int] | None = None
) -> tuple | None:
    """What :func:`_msr_into` needs of the multipliers and shifts alone, worked out once for operands that stay.

    ``(multiplier operand, common shift S, 2**(S-1), max m')``, ``m' = m0 * 2**(S - s0)``, where the int64
    common-shift path can apply (``m0 >= 0``, ``0 <= s0 <= SHIFT_MAX``, ``max m' < 2**63``); else None.
    ``limits`` are ``(m_lo, m_hi, s_lo, s_hi)`` when the caller has them.
    """
    if limits is not None:
        m_lo, m_hi, s_lo, s_hi = limits
    else:
        m_lo, m_hi = (m0, m0) if isinstance(m0, int) else (int(m0.min()), int(m0.max()))
        s_lo, s_hi = (s0, s0) if isinstance(s0, int) else (int(s0.min()), int(s0.max()))
    if m_lo >= 0 and 0 <= s_lo <= s_hi <= SHIFT_MAX:
        mp_max = m_hi << (s_hi - s_lo)
        if mp_max < 1 << 63:
            return (m0 if s_lo == s_hi else m0 << (s_hi - s0), s_hi, (1 << s_hi) >> 1, mp_max)
    return None


def _limit(half: int, mp_max: int) -> int:
    """The largest ``|x|`` with ``|x| * mp_max + half < 2**63`` (mul_shift_round's common-shift condition)."""
    return (2**63 - 1 - half) // mp_max if mp_max else 2**63 - 1


def _msr_into(
    x: np.ndarray,
    m0: np.ndarray | int,
    s0: np.ndarray | int,
    out: np.ndarray,
    neg: np.ndarray,
    plan: tuple | None = None,
) -> int:
    """``isa.mul_shift_round(x, m0, s0, ACC_MAX)`` written into ``out`` (``x``'s shape); returns a bound on ``|out|``.

    ``m0`` and ``s0`` are ints or arrays that broadcast against ``x``; ``plan`` is :func:`_msr_plan` of them (None:
    worked out here). Where ``mul_shift_round`` takes its int64 path with one common shift, the same operations run
    here in place (``neg`` is a bool buffer of ``x``'s shape), with no fresh temporaries and the result's bound
    known without a pass over it; otherwise this calls it.
    """
    if plan is None:
        plan = _msr_plan(m0, s0)
    if plan is not None:
        mp, s_hi, half, mp_max = plan
        x_lo, x_hi = int(x.min()), int(x.max())
        a_max = x_hi if x_hi > -x_lo else -x_lo
        if a_max * mp_max + half < 1 << 63:  # mul_shift_round's common-shift condition
            np.multiply(x, mp, out=out)
            if s_hi:
                out += half
                if x_lo < 0:
                    out -= np.less(x, 0, out=neg)
                out >>= s_hi
            bound = (a_max * mp_max + half) >> s_hi
            if bound > ACC_MAX:
                np.clip(out, -ACC_MAX, ACC_MAX, out=out)
                bound = ACC_MAX
            return bound
    out[...] = mul_shift_round(x, m0, s0, ACC_MAX)
    return ACC_MAX


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
    params = C[q : q + 2 * cols]
    x = C[src : src + n].reshape(rows, cols)
    # the result goes straight into A (the sources are in C), rounded in place, clipped only if it can exceed
    out = A[dst : dst + n].reshape(rows, cols)
    # the multipliers and shifts, checked and planned for as long as C holds the same words (compared each run)
    # bytes of C[q : q + 2*cols], multipliers, shifts, plan
    last: list = [None, None, None, None]

    def prepare(raw: bytes) -> None:
        mult = params[:cols].copy()
        shift = params[cols:].copy()
        limits = int(mult.min()), int(mult.max()), int(shift.min()), int(shift.max())
        if limits[0] < 0 or limits[1] > MULT_MAX:
            j = int(np.flatnonzero((mult < 0) | (mult > MULT_MAX))[0])
            raise Fault(i, f"REQUANTC multiplier of channel {j} (C[{q + j}]) = {int(mult[j])} outside 0..{MULT_MAX}")
        if limits[2] < 0 or limits[3] > SHIFT_MAX:
            j = int(np.flatnonzero((shift < 0) | (shift > SHIFT_MAX))[0])
            raise Fault(
                i, f"REQUANTC shift of channel {j} (C[{q + cols + j}]) = {int(shift[j])} outside 0..{SHIFT_MAX}"
            )
        plan = _msr_plan(mult, shift, limits)
        last[:] = [raw, mult, shift, plan]

    fused = sim.fused
    if fused and n > 0:
        kern = kernels.loop("requantc")
        numpy_requantc = _requantc_numpy(sim, rows, cols, n, cap, params, x, out, prepare, last)

        tab = np.zeros((4, cols), dtype=np.int64)
        nowhere, no_table = sim.mem[:0], A[:0]  # no fused TSTORE, no fused table activation
        no_lut = (no_table, 0, 0, 0, 0, ACC_MAX, 0)  # and the values kept in A

        def requantc_loop() -> None:
            st = kern(C, src, rows, cols, q, A, dst, cap, MULT_MAX, SHIFT_MAX, tab, -cap, cap, nowhere, *no_lut)
            if st < 0:  # a multiplier or shift out of range (the numpy path faults), or a wide operand
                numpy_requantc()
            elif st:
                flags[3] = 1

        return requantc_loop
    return _requantc_numpy(sim, rows, cols, n, cap, params, x, out, prepare, last)


def _requantc_numpy(
    sim: Simulator,
    rows: int,
    cols: int,
    n: int,
    cap: int,
    params: np.ndarray,
    x: np.ndarray,
    out: np.ndarray,
    prepare: Callable[[bytes], None],
    last: list,
) -> Callable:
    flags = sim._flags
    ws = sim.workspace
    if 0 < n <= _SMALL:
        # small: the int64 common-shift path of _msr_into with the bounds from one abs and one reduction each, and
        # x's sign as x >> 63 (-1 where x < 0) added in int64 rather than a bool subtracted (a casting loop)
        absmax = _absmax((rows, cols))
        sign = np.empty((rows, cols), dtype=np.int64)
        neg = np.empty((rows, cols), dtype=np.bool_)

        def requantc_small() -> None:
            raw = params.tobytes()
            if raw != last[0]:
                prepare(raw)
            plan = last[3]
            if plan is not None:
                mp, s_hi, half, mp_max = plan
                a_max = absmax(x)
                if a_max * mp_max + half < 1 << 63:  # mul_shift_round's common-shift condition
                    np.multiply(x, mp, out=out)
                    if s_hi:
                        np.right_shift(x, 63, out=sign)
                        np.add(out, sign, out=out)
                        np.add(out, half, out=out)
                        np.right_shift(out, s_hi, out=out)
                    bound = (a_max * mp_max + half) >> s_hi
                    if bound > ACC_MAX:
                        np.clip(out, -ACC_MAX, ACC_MAX, out=out)
                    if bound > cap and absmax(out) > cap:
                        flags[3] = 1
                        np.clip(out, -cap, cap, out=out)
                    return
            if _msr_into(x, last[1], last[2], out, neg, plan) > cap and (int(out.max()) > cap or int(out.min()) < -cap):
                flags[3] = 1
                np.clip(out, -cap, cap, out=out)

        return requantc_small

    def requantc() -> None:
        raw = params.tobytes()
        if raw != last[0]:
            prepare(raw)
        if n == 0:
            return
        neg = ws.get("neg", (rows, cols), np.bool_)
        if _msr_into(x, last[1], last[2], out, neg, last[3]) > cap and (int(out.max()) > cap or int(out.min()) < -cap):
            flags[3] = 1
            np.clip(out, -cap, cap, out=out)

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
    ws = sim.workspace
    xv, yv, out = A[x : x + count], A[y : y + count], A[dst : dst + count]
    plan_x, plan_y = _msr_plan(mx, sx), _msr_plan(my, sy)
    # the fused loop reads element i of both sources before it writes element i of the destination: it needs the
    # destination to coincide with a source or to lie apart from it
    aligned = all(dst == s or dst + count <= s or s + count <= dst for s in (x, y))
    fused = sim.fused and aligned and plan_x is not None and plan_y is not None
    if fused:
        px = (plan_x[0], plan_x[1], plan_x[2], _limit(plan_x[2], plan_x[3]))
        py = (plan_y[0], plan_y[1], plan_y[2], _limit(plan_y[2], plan_y[3]))
    if fused and dst == x and py[0] == 0:  # the compiler's rescale in place: one array read and written (vectorises)
        rescale = kernels.loop("rescale_io")

        def eadd_rescale() -> None:
            st = rescale(out, yv, px[0], px[1], px[2], px[3], py[3], ACC_MAX, cap)
            if st >= 0:
                if st:
                    flags[3] = 1
                return
            eadd_numpy()

    if fused and dst in (x, y):  # in place over a source: one array read and written (the sum is symmetric)
        io_args = (out, yv, *px, *py) if dst == x else (out, xv, *py, *px)
        add_io = kernels.loop("eadd_io")

        def eadd_io() -> None:
            st = add_io(*io_args, ACC_MAX, cap)
            if st >= 0:
                if st:
                    flags[3] = 1
                return
            eadd_numpy()

    def eadd() -> None:
        if fused:
            st = kernels.eadd(xv, yv, px, py, cap, out)
            if st >= 0:
                if st:
                    flags[3] = 1
                return
        eadd_numpy()

    def eadd_numpy() -> None:
        # both terms into work buffers (the sources may overlap the destination), their sum into the destination
        neg = ws.get("neg", (count,), np.bool_)
        tx, ty = ws.get("eadd_x", (count,), np.int64), ws.get("eadd_y", (count,), np.int64)
        bound = _msr_into(xv, mx, sx, tx, neg, plan_x)
        bound += _msr_into(yv, my, sy, ty, neg, plan_y)  # |each| <= ACC_MAX: the sum fits an int64
        np.add(tx, ty, out=out)
        if bound > cap and (int(out.max()) > cap or int(out.min()) < -cap):
            flags[3] = 1
            np.clip(out, -cap, cap, out=out)

    if fused and dst == x and py[0] == 0:
        return eadd_rescale
    return eadd_io if fused and dst in (x, y) else eadd


def _unary(name: str, fn: Callable[..., np.ndarray]) -> Callable:
    """An elementwise instruction ``A[dst + i] = fn(A[src + i], *extra)``; ``fn`` takes an ``out`` array.

    Each element depends only on the source element of the same index, so the result is written straight into
    the destination when the ranges coincide or do not overlap; otherwise the sources are read first.
    """

    def make(sim: Simulator, i: int, dst: int, src: int, count: int, *extra: int) -> Callable:
        A = sim.spad_a
        bad = _first(_span("A", src, count, A.size), _span("A", dst, count, A.size))
        if bad:
            return _raiser(i, f"{name}: {bad}", False)
        if count == 0:
            return lambda: None
        sim.touch_spad("A", dst, count)
        if sim.fused:
            kern = kernels.loop("clamp")
            lo, hi = extra if extra else (0, _I64_MAX)

            def unary_loop() -> None:
                kern(A, dst, src, count, lo, hi)

            return unary_loop
        direct = dst == src or dst + count <= src or src + count <= dst
        x, out = A[src : src + count], A[dst : dst + count]

        def unary() -> None:
            if direct:
                fn(x, out, *extra)
            else:
                out[...] = fn(x, None, *extra)

        return unary

    return make


def _relu(x: np.ndarray, out: np.ndarray | None) -> np.ndarray:
    return np.maximum(x, 0, out=out)


def _clamp(x: np.ndarray, out: np.ndarray | None, lo: int, hi: int) -> np.ndarray:
    out = np.maximum(x, lo, out=out)
    return np.minimum(out, hi, out=out)  # lo > hi gives hi, as the table says


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

    if sim.fused and n > 0:
        kern = kernels.loop("tlut")
        apart = (dst == src or dst + count <= src or src + count <= dst) and (dst + count <= table or table + n <= dst)
        tmp = np.empty(1 if apart else count, dtype=np.int64)  # the result, where it would overwrite a source

        def tlut_loop() -> None:
            kern(A, dst, src, count, table, lo, n, tmp)

        return tlut_loop
    return tlut


def _rescale_lut(sim: Simulator, i: int, eadd: Callable, tlut: Callable) -> Callable | None:
    """One closure for instruction ``i``, an EADD, and ``i + 1``, a TLUT, that ``fuse.lut_pair`` matched (their own
    closures ``eadd`` and ``tlut`` run them where the compiled loop declines); None where the loop cannot take them
    (no compiled loops, a range outside A, a multiplier or shift the int64 rescale does not cover)."""
    A, flags = sim.spad_a, sim._flags
    ins = sim.program.instructions
    dst, _x, _y, count, mx, sx, _my, _sy, pents = ins[i].args
    _d, _s, _c, table, lo, n = ins[i + 1].args
    if not sim.fused or _first(_span("A", dst, count, A.size), _span("A", table, n, A.size)):
        return None
    plan = _msr_plan(mx, sx)
    if plan is None:
        return None
    kern = kernels.loop("rescale_lut")
    io, tab, cap = A[dst : dst + count], A[table : table + n], word_max(pents)
    args = (io, plan[0], plan[1], plan[2], _limit(plan[2], plan[3]), ACC_MAX, cap, tab, lo, n)

    def rescale_lut() -> None:
        st = kern(*args)
        if st < 0:
            eadd()
            tlut()
        elif st:
            flags[3] = 1

    return rescale_lut


def _emul(sim: Simulator, i: int, dst: int, x: int, y: int, count: int, mult: int, shift: int, pents: int) -> Callable:
    A, flags = sim.spad_a, sim._flags
    bad = _first(_span("A", x, count, A.size), _span("A", y, count, A.size), _span("A", dst, count, A.size))
    if bad:
        return _raiser(i, f"EMUL: {bad}", False)
    if count == 0:
        return lambda: None
    sim.touch_spad("A", dst, count)
    # the compiled loop reads element i of both sources before it writes element i of the destination: it needs
    # the destination to coincide with a source or to lie apart from it
    aligned = all(dst == s or dst + count <= s or s + count <= dst for s in (x, y))
    if sim.fused and aligned and kernels.available():
        xv, yv, dv, cap = A[x : x + count], A[y : y + count], A[dst : dst + count], word_max(pents)
        kern = kernels.loop("emul")  # kernels.emul's loop, called directly
        if dst in (x, y):  # in place: one array read and written at the same index (the product is symmetric)
            io, other = (xv, yv) if dst == x else (yv, xv)
            kern_io = kernels.loop("emul_io")

            def emul_io() -> None:
                if kern_io(io, other, mult, shift, ACC_MAX, cap):
                    flags[3] = 1

            return emul_io

        def emul_fused() -> None:
            if kern(xv, yv, mult, shift, ACC_MAX, cap, dv):
                flags[3] = 1

        return emul_fused

    def emul() -> None:
        out, clipped = isa.emul(A[x : x + count], A[y : y + count], mult, shift, pents)
        if clipped:
            flags[3] = 1
        A[dst : dst + count] = out

    return emul
