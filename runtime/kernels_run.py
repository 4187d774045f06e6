"""The run loop (:func:`_tensor_run`: a table of consecutive tensor instructions in one compiled call) and the
whole-instruction loops it calls: small CONV, MATMUL and MATVEC, depthwise CONV at any size, POOL, REQUANTC (with
the rows ``runtime/fuse.py`` fuses into it), TRELU/TCLAMP, TLOADW tiles and the DMA instructions.

They are one module because numba's on-disk cache checks only the file a function is defined in: the run loop
calls no loop of another module, so its cached machine code stays right when another file changes.
``runtime/kernels.py`` compiles them (``_HELPERS`` in this module's namespace, where the run loop calls them) and
hands them out (``kernels.loop``).
"""

from __future__ import annotations

import numpy as np

from pcc.isa import Op
from pcc.runtime.fuse import _FUSED, _HI, _LO

_OP_TLOAD, _OP_TSTORE, _OP_TLOADW, _OP_TLOADC, _OP_TSTOREC = (
    int(Op.TLOAD),
    int(Op.TSTORE),
    int(Op.TLOADW),
    int(Op.TLOADC),
    int(Op.TSTOREC),
)
_OP_MATMUL, _OP_MATVEC, _OP_CONV, _OP_POOL = int(Op.MATMUL), int(Op.MATVEC), int(Op.CONV), int(Op.POOL)
_OP_REQUANTC, _OP_TRELU, _OP_TCLAMP = int(Op.REQUANTC), int(Op.TRELU), int(Op.TCLAMP)

# ---- small tensor instructions, whole (one compiled call instead of a dozen numpy calls) -----------------------
# They read and write the scratchpads in place through their offsets (the closures have checked every extent) and
# return -1, having written nothing the numpy path will not overwrite, where an operand is past what their
# arithmetic holds exactly; the caller then takes its numpy path. Inner loops run over slices (an index computed
# from an offset costs a negative-index check per element and keeps the loop from vectorising).

_LIM = 1 << 62  # |sum| bound the int64 loops keep to: a base of up to ACC_MAX can still be added in int64
_F64_EXACT = 1 << 53  # float64 sums are exact while every partial sum is an integer below this
_I32_EXACT = 1 << 31  # int32 sums, while every partial sum is below this
_U = np.uint64
_DW_ROWS = 512  # outputs from which a depthwise CONV runs as whole rows (_dw_rows): below, its setup costs more
_REQ_BLOCK = 2048  # elements of REQUANTC rows that its fused table activation and TSTORE take at a time
_DW_PHASED = 64  # a stride-2 (or more) depthwise CONV of fewer channels reorders its input into phases (_dw_rows)


def _weights_t(W, w, oc, kk, wcopy, wt, wt32, wstate):  # noqa: ANN001, ANN202
    # The product loops' view of the weights W[w : w + oc*kk] (oc rows of kk): wt[t*oc + o] = W[w + o*kk + t] as
    # float64 and as int32 (wt32), with wstate = (zero pents, max over rows of sum |pent|, valid), redone only when
    # W no longer holds wcopy (so W may change from run to run and the view is never stale).
    src = W[w : w + oc * kk]
    same = wstate[2] == 1
    for t in range(oc * kk):
        same &= src[t] == wcopy[t]
    if same:
        return
    zeros = 0
    wl1 = 0
    for o in range(oc):
        s1 = 0
        for t in range(kk):
            q = np.int64(src[o * kk + t])
            wt[t * oc + o] = q
            wt32[t * oc + o] = q
            s1 += abs(q)
            if q == 0:
                zeros += 1
        wl1 = max(wl1, s1)
    for t in range(oc * kk):
        wcopy[t] = src[t]
    wstate[0] = zeros
    wstate[1] = wl1
    wstate[2] = 1


def _absmax(x):  # noqa: ANN001, ANN202
    # max |x| of an int64 array, or -1 where some |x| exceeds 2**62
    lo = np.int64(0)
    hi = np.int64(0)
    for t in range(x.shape[0]):
        lo = min(lo, x[t])
        hi = max(hi, x[t])
    if lo < -_LIM or hi > _LIM:
        return np.int64(-1)
    return max(hi, -lo)


def _saturate_into(sums, out, ob, add, acc_max):  # noqa: ANN001, ANN202
    # out[ob + o] = sat(sums[o] (+ out[ob + o])) for the int32 or float64 sums (exact integers); True if anything
    # clipped
    clipped = False
    for o in range(sums.shape[0]):
        v = np.int64(sums[o])
        j = _U(ob) + _U(o)
        if add:
            v += out[j]
        clipped |= (v > acc_max) | (v < -acc_max)
        out[j] = min(max(v, -acc_max), acc_max)
    return clipped


def _conv_sums(x, ih, iw, ic, oc, kh, kw, sh, sw, pt, pl, oh, ow, groups, wt, sums, out, acc, acc_max):  # noqa: ANN001, ANN202, PLR0913
    # CONV's products for _conv_small: per output pixel, each input value of a tap inside the input times the weights
    # of every output channel (wt[t*oc + o]), summed over the channels' vector in x's, wt's and sums's type (int32
    # or float64: the caller has checked that every partial sum is exact in it), then saturated into out. Indices
    # are unsigned (_U): a signed one costs a negative-index check per element. True if an output saturated.
    icg = ic // groups
    ocg = oc // groups
    uoc = _U(oc)
    clipped = False
    for oy in range(oh):
        y0 = oy * sh - pt
        ky0 = max(0, -y0)
        ky1 = min(kh, ih - y0)
        for ox in range(ow):
            x0 = ox * sw - pl
            kx0 = max(0, -x0)
            kx1 = min(kw, iw - x0)
            for o in range(oc):
                sums[o] = 0
            for ky in range(ky0, ky1):
                for kx in range(kx0, kx1):
                    pb = _U(((y0 + ky) * iw + x0 + kx) * ic)
                    tb = _U((ky * kw + kx) * icg)
                    if groups == 1:
                        for ci in range(ic):
                            xv = x[pb + _U(ci)]
                            wb = (tb + _U(ci)) * uoc
                            for o in range(oc):
                                sums[o] += xv * wt[wb + _U(o)]
                    elif icg == 1 and ocg == 1:  # depthwise: channel o of the tap times its own weight
                        xs = x[pb : pb + uoc]
                        ws = wt[tb * uoc : tb * uoc + uoc]
                        for o in range(oc):
                            sums[o] += xs[o] * ws[o]
                    else:
                        for ci in range(icg):
                            wb = (tb + _U(ci)) * uoc
                            for o in range(oc):
                                sums[o] += x[pb + _U((o // ocg) * icg + ci)] * wt[wb + _U(o)]
            clipped |= _saturate_into(sums, out, (oy * ow + ox) * oc, acc, acc_max)
    return clipped


def _dot_sums(x, m, n, k, wt, sums, out, acc, acc_max):  # noqa: ANN001, ANN202
    # MATMUL's products for _dot_small, as _conv_sums: row i of x times the weights of every output (wt[t*n + j])
    un = _U(n)
    clipped = False
    for i in range(m):
        for j in range(n):
            sums[j] = 0
        for t in range(k):
            xv = x[_U(i * k + t)]
            wb = _U(t) * un
            for j in range(n):
                sums[j] += xv * wt[wb + _U(j)]
        clipped |= _saturate_into(sums, out, i * n, acc, acc_max)
    return clipped


def _operands(x, nx, nw, ns, fbuf, ibuf, wcopy, wstate, W, w, acc, out, acc_max, iw, ic, sw, brow):  # noqa: ANN001, ANN202
    # The checks and buffers the direct products share: (kind, x converted, weights, sums) with kind 1 for int32
    # (every partial sum of max|x| * max sum|w| below 2**31), 2 for float64 (below 2**53), -1 for neither or a base
    # past acc_max (the numpy path then runs). fbuf and ibuf hold the weights (nw), the sums (ns), the input (nx):
    # in x's order, or with sw > 1 in _convert's phases (x as rows of iw pixels of ic channels). The int32 copy is
    # made in the pass that finds max|x| (the usual kind; kept only where the bound allows it).
    _weights_t(W, w, ns, nw // ns, wcopy, fbuf[:nw], ibuf[:nw], wstate)
    xb = ibuf[nw + ns : nw + ns + nx]
    lo, hi = _convert(x, xb, iw, ic, sw)
    amax = np.int64(-1) if lo < -_LIM or hi > _LIM else max(hi, -lo)
    bound = np.int64(-1) if amax < 0 else amax * wstate[1] if amax < _LIM // max(wstate[1], 1) else np.int64(-1)
    kind = 1 if 0 <= bound < _I32_EXACT else 2 if 0 <= bound < _F64_EXACT else -1
    if acc and (_absmax(brow) if brow.shape[0] > 0 else _absmax(out)) > acc_max:  # the base: C, or a bias row
        kind = -1
    if kind == 2:
        _convert(x, fbuf[nw + ns : nw + ns + nx], iw, ic, sw)
    return kind


def _convert(x, xb, iw, ic, sw):  # noqa: ANN001, ANN202
    # xb = x converted to xb's type (int32 wraps a value past it: the caller then does not use xb), and (min, max)
    # of x. With sw > 1, each row's pixels in sw phases: phase r (the pixels r, r + sw, r + 2*sw, ...) after phases
    # 0..r-1, so that the pixels one tap of a stride-sw row reads are one contiguous run (_dw_rows)
    lo = np.int64(0)
    hi = np.int64(0)
    n = x.shape[0]
    if sw == 1:
        for t in range(n):
            v = x[t]
            lo = min(lo, v)
            hi = max(hi, v)
            xb[t] = v
        return lo, hi
    row = iw * ic
    for y in range(n // row):
        xr = x[y * row : (y + 1) * row]
        for t in range(row):  # the extremes over the whole row (a reduction inside the short copies below costs
            v = xr[t]  # several times the copy)
            lo = min(lo, v)
            hi = max(hi, v)
        d = y * row
        for r in range(min(sw, iw)):
            for xx in range(r, iw, sw):
                src = xr[xx * ic : xx * ic + ic]
                dst = xb[d : d + ic]
                for c in range(ic):
                    dst[c] = src[c]
                d += ic
    return lo, hi


def _broadcast(row, out):  # noqa: ANN001, ANN202
    # out[r*n + j] = row[j] for every whole row of out (n = len(row)): a TLOADC of one row at stride 0
    n = row.shape[0]
    for r in range(out.shape[0] // n):
        d = out[r * n : r * n + n]
        for j in range(n):
            d[j] = row[j]


def _dw_rows(x, ih, iw, oc, kh, kw, sh, sw, pt, pl, oh, ow, wt, out, acc, acc_max, brow):  # noqa: ANN001, ANN202, PLR0913
    # Depthwise CONV's products for _conv_small, a whole output row at a time: for each tap inside the input, the
    # run of the row's outputs whose input column it reaches times the tap's weights repeated once per pixel (wrep),
    # summed as one vector of up to ow*oc (a pixel's vector of oc alone is too short for the vectorised loop's step:
    # it ran scalar), three horizontal taps at once where they all reach (a third of the sums' loads and stores).
    # With sw > 1 and fewer than _DW_PHASED channels x is in _convert's phases (one tap's inputs then contiguous
    # too); otherwise a tap's inputs are runs of oc, sw*oc apart. Sums in x's and wt's type (the caller has checked
    # that every partial sum is exact in it), saturated into out. With acc, each output adds its base: out's word,
    # or a non-empty brow's word of its channel (a fused TLOADC bias, runtime/fuse.py; out is then not read).
    # True if an output saturated.
    nrow = ow * oc
    bias = acc and brow.shape[0] > 0
    brep = np.empty(nrow if bias else 0, np.int64)  # the bias row once per pixel of an output row
    if bias:
        for b in range(ow):
            for o in range(oc):
                brep[b * oc + o] = brow[o]
    rs = np.zeros(nrow, wt.dtype)
    wrep = np.empty(kh * kw * nrow, wt.dtype)
    for t in range(kh * kw):
        for b in range(ow):
            dst = wrep[t * nrow + b * oc : t * nrow + b * oc + oc]
            src = wt[t * oc : t * oc + oc]
            for o in range(oc):
                dst[o] = src[o]
    phased = sw > 1 and oc < _DW_PHASED
    ps = oc if phased or sw == 1 else sw * oc  # the step between one tap's inputs of adjacent output columns
    first = np.zeros(kw, np.int64)  # tap kx's input for output column 0 (possibly outside), within an input row
    lo = np.zeros(kw, np.int64)  # output columns ox whose tap kx is inside the row: lo[kx] <= ox < hi[kx]
    hi = np.zeros(kw, np.int64)
    for kx in range(kw):
        q = kx - pl  # output column ox reads input column ox*sw + q
        lo[kx] = max(0, (sw - 1 - q) // sw)
        hi[kx] = max(lo[kx], min(ow, (iw - 1 - q) // sw + 1))
        if phased:
            r = q % sw
            start = 0  # phase r's first pixel: after the pixels of phases 0..r-1
            for rr in range(r):
                start += (iw - rr + sw - 1) // sw
            first[kx] = (start + (q - r) // sw) * oc
        else:
            first[kx] = q * oc
    lim = np.int64(acc_max)
    vmin = np.int64(0)
    vmax = np.int64(0)
    for oy in range(oh):
        y0 = oy * sh - pt
        for t in range(nrow):
            rs[t] = 0
        for ky in range(max(0, -y0), min(kh, ih - y0)):
            xr = x[(y0 + ky) * iw * oc : (y0 + ky + 1) * iw * oc]
            wr = wrep[ky * kw * nrow : (ky + 1) * kw * nrow]
            kx = 0
            while kx < kw:
                a3 = b3 = 0  # the columns taps kx, kx+1, kx+2 all reach
                if kx + 2 < kw:
                    a3 = max(lo[kx], lo[kx + 1], lo[kx + 2])
                    b3 = max(a3, min(hi[kx], hi[kx + 1], hi[kx + 2]))
                if b3 > a3:
                    for j in range(kx, kx + 3):  # each tap alone outside them
                        _dw_tap(rs, xr, wr[j * nrow :], first[j], lo[j], a3, oc, ps)
                        _dw_tap(rs, xr, wr[j * nrow :], first[j], b3, hi[j], oc, ps)
                    _dw_tap3(rs, xr, wr[kx * nrow :], nrow, first[kx], first[kx + 1], first[kx + 2], a3, b3, oc, ps)
                    kx += 3
                else:
                    _dw_tap(rs, xr, wr[kx * nrow :], first[kx], lo[kx], hi[kx], oc, ps)
                    kx += 1
        o = out[oy * nrow : oy * nrow + nrow]
        base = brep if bias else o
        for t in range(nrow):
            v = np.int64(rs[t]) + base[t] if acc else np.int64(rs[t])
            vmin = min(vmin, v)
            vmax = max(vmax, v)
            o[t] = min(max(v, -lim), lim)
    return vmin < -lim or vmax > lim


def _dw_tap(rs, xr, wr, f, a, b, oc, ps):  # noqa: ANN001, ANN202
    # rs[ox*oc + o] += xr[f + ox*ps + o] * wr[ox*oc + o] for a <= ox < b (one tap of _dw_rows)
    if b <= a:
        return
    if ps == oc:  # contiguous: one vector
        n = (b - a) * oc
        xs = xr[f + a * oc : f + a * oc + n]
        ws = wr[a * oc : a * oc + n]
        dst = rs[a * oc : a * oc + n]
        for t in range(n):
            dst[t] += xs[t] * ws[t]
        return
    for ox in range(a, b):
        xs = xr[f + ox * ps : f + ox * ps + oc]
        ws = wr[ox * oc : ox * oc + oc]
        dst = rs[ox * oc : ox * oc + oc]
        for t in range(oc):
            dst[t] += xs[t] * ws[t]


def _dw_tap3(rs, xr, wr, nrow, f0, f1, f2, a, b, oc, ps):  # noqa: ANN001, ANN202
    # three adjacent taps of _dw_rows (weights nrow apart in wr) in one pass over their common columns a <= ox < b
    if ps == oc:
        n = (b - a) * oc
        x0, x1, x2 = xr[f0 + a * oc : f0 + a * oc + n], xr[f1 + a * oc : f1 + a * oc + n], xr[f2 + a * oc :]
        w0, w1, w2 = wr[a * oc : a * oc + n], wr[nrow + a * oc : nrow + a * oc + n], wr[2 * nrow + a * oc :]
        dst = rs[a * oc : a * oc + n]
        for t in range(n):
            dst[t] += x0[t] * w0[t] + x1[t] * w1[t] + x2[t] * w2[t]
        return
    for ox in range(a, b):
        x0, x1, x2 = xr[f0 + ox * ps :], xr[f1 + ox * ps :], xr[f2 + ox * ps :]
        w0, w1, w2 = wr[ox * oc :], wr[nrow + ox * oc :], wr[2 * nrow + ox * oc :]
        dst = rs[ox * oc : ox * oc + oc]
        for t in range(oc):
            dst[t] += x0[t] * w0[t] + x1[t] * w1[t] + x2[t] * w2[t]


def _conv_small(  # noqa: ANN202, PLR0913
    A,
    a,
    ih,
    iw,
    ic,
    W,
    w,
    oc,
    kh,
    kw,
    sh,
    sw,
    pt,
    pl,
    oh,
    ow,
    groups,
    C,
    c,
    acc,
    acc_max,
    wcopy,
    fbuf,
    ibuf,
    wstate,
    brow,  # noqa: ANN001
):
    # CONV (docs/ISA.md) with exact int32 or float64 sums (_operands, _conv_sums); -1 and C untouched where neither
    # is exact. A non-empty brow (a fused TLOADC bias broadcast) is the base of every output pixel in place of C's
    # words: a depthwise CONV adds it as it stores, any other broadcasts it into C first, as the TLOADC would have.
    # Returns (status, zero weights): status 1 if an output saturated, else 0.
    kk = kh * kw * (ic // groups)
    nx = ih * iw * ic
    nw = kk * oc
    x = A[a : a + nx]
    out = C[c : c + oh * ow * oc]
    dw = groups == ic and groups == oc and oh * ow * oc >= _DW_ROWS  # depthwise: whole output rows (_dw_rows)
    phases = sw if dw and oc < _DW_PHASED else 1
    if brow.shape[0] > 0 and not (dw and acc):  # a bias row only where _dw_rows adds it: else broadcast into C
        if acc:
            _broadcast(brow, out)
        brow = brow[:0]
    kind = _operands(x, nx, nw, oc, fbuf, ibuf, wcopy, wstate, W, w, acc, out, acc_max, iw, ic, phases, brow)
    if kind < 0:
        return -1, wstate[0]
    if kind == 1:
        xb, wt, sb = ibuf[nw + oc : nw + oc + nx], ibuf[:nw], ibuf[nw : nw + oc]
        if dw:
            clipped = _dw_rows(xb, ih, iw, oc, kh, kw, sh, sw, pt, pl, oh, ow, wt, out, acc, acc_max, brow)
        else:
            clipped = _conv_sums(xb, ih, iw, ic, oc, kh, kw, sh, sw, pt, pl, oh, ow, groups, wt, sb, out, acc, acc_max)
    else:
        xf, wf, sf = fbuf[nw + oc : nw + oc + nx], fbuf[:nw], fbuf[nw : nw + oc]
        if dw:
            clipped = _dw_rows(xf, ih, iw, oc, kh, kw, sh, sw, pt, pl, oh, ow, wf, out, acc, acc_max, brow)
        else:
            clipped = _conv_sums(xf, ih, iw, ic, oc, kh, kw, sh, sw, pt, pl, oh, ow, groups, wf, sf, out, acc, acc_max)
    return (1 if clipped else 0), wstate[0]


def _dot_small(A, a, W, w, C, c, m, n, k, acc, acc_max, wcopy, fbuf, ibuf, wstate):  # noqa: ANN001, ANN202
    # MATMUL / MATVEC (m = 1): C[c + i*n + j] = sat(base + sum_t A[a + i*k + t] * W[w + j*k + t]), summed as
    # _conv_small does. Returns (status, zero weights).
    nx = m * k
    nw = k * n
    x = A[a : a + nx]
    out = C[c : c + m * n]
    kind = _operands(x, nx, nw, n, fbuf, ibuf, wcopy, wstate, W, w, acc, out, acc_max, 1, 1, 1, out[:0])
    if kind < 0:
        return -1, wstate[0]
    if kind == 1:
        clipped = _dot_sums(ibuf[nw + n : nw + n + nx], m, n, k, ibuf[:nw], ibuf[nw : nw + n], out, acc, acc_max)
    else:
        clipped = _dot_sums(fbuf[nw + n : nw + n + nx], m, n, k, fbuf[:nw], fbuf[nw : nw + n], out, acc, acc_max)
    return (1 if clipped else 0), wstate[0]


def _pool(X, src, A, dst, ih, iw, ch, kh, kw, sh, sw, pt, pl, oh, ow, mode, tmp, own):  # noqa: ANN001, ANN202
    # POOL (docs/ISA.md): 0 max, 1 average over the taps inside, 2 average over all kh*kw taps; the average
    # div_round'ed (nearest, ties away from zero). The input is X[src:]: A (own), or main memory where the POOL
    # reads a forwarded TLOAD's source. Into tmp first where the destination overlaps the source. Returns 0, or -1
    # (nothing written) for an average whose sums could leave int64.
    n_in = ih * iw * ch
    n_out = oh * ow * ch
    x = X[src : src + n_in]
    if mode != 0:
        amax = _absmax(x)
        if amax < 0 or amax > (np.int64(1) << 61) // (kh * kw):
            return -1
    apart = not own or dst + n_out <= src or src + n_in <= dst
    out = A[dst : dst + n_out] if apart else tmp[:n_out]
    for oy in range(oh):
        y0 = oy * sh - pt
        ky0 = max(0, -y0)
        ky1 = min(kh, ih - y0)
        for ox in range(ow):
            x0 = ox * sw - pl
            kx0 = max(0, -x0)
            kx1 = min(kw, iw - x0)
            ob = _U((oy * ow + ox) * ch)
            first = True
            for ky in range(ky0, ky1):
                for kx in range(kx0, kx1):
                    ib = _U(((y0 + ky) * iw + x0 + kx) * ch)
                    if first:
                        for q in range(ch):
                            out[ob + _U(q)] = x[ib + _U(q)]
                        first = False
                    elif mode == 0:
                        for q in range(ch):
                            out[ob + _U(q)] = max(out[ob + _U(q)], x[ib + _U(q)])
                    else:
                        for q in range(ch):
                            out[ob + _U(q)] += x[ib + _U(q)]
            if mode != 0:
                cnt = (ky1 - ky0) * (kx1 - kx0) if mode == 1 else kh * kw
                for q in range(ch):
                    v = out[ob + _U(q)]
                    r = (abs(v) * 2 + cnt) // (2 * cnt)
                    out[ob + _U(q)] = -r if v < 0 else r
    if not apart:
        d = A[dst : dst + n_out]
        for t in range(n_out):
            d[t] = out[t]
    return 0


def _clamp(A, dst, src, count, lo, hi):  # noqa: ANN001, ANN202
    # TRELU (lo = 0, hi = the largest int64) and TCLAMP: A[dst + i] = min(max(A[src + i], lo), hi); each element
    # reads only its own source element, so the loop runs the way that reads every source before it is overwritten
    x = A[src : src + count]
    out = A[dst : dst + count]
    if dst == src:  # in place: one view read and written at the same index (it vectorises; two views do not)
        for t in range(count):
            x[t] = min(max(x[t], lo), hi)
    elif dst < src:
        for t in range(count):
            out[t] = min(max(x[t], lo), hi)
    else:
        for t in range(count - 1, -1, -1):
            out[t] = min(max(x[t], lo), hi)


def _tloadw(mem, b, nw, W, w, count, word_max, wcopy, pents, state):  # noqa: ANN001, ANN202
    # TLOADW (docs/ISA.md): W[w + i] = pent (i mod 16) of mem[b + i div 16]. The words' pents are kept (pents) with
    # a copy of the words they came from (wcopy, valid when state[0] == 1) and decoded again only when memory
    # holds other words. Returns 0, or -1 (nothing written) for a word outside the 16-pent range.
    src = mem[b : b + nw]
    same = state[0] == 1
    for t in range(nw):
        same &= src[t] == wcopy[t]
    if not same:
        for t in range(nw):
            if src[t] < -word_max or src[t] > word_max:
                state[0] = 0
                return -1
        for t in range(nw):
            u = src[t] + word_max  # base-5 digits d + 2 of the balanced digits d
            for j in range(16):
                q = u // 5
                pents[t * 16 + j] = u - q * 5 - 2
                u = q
            wcopy[t] = src[t]
        state[0] = 1
    dst = W[w : w + count]
    for t in range(count):
        dst[t] = pents[t]
    return 0


def _requantc(
    C, src, rows, cols, q, A, dst, cap, mult_max, shift_max, tab, lo, hi, mo, lt, llo, em, es, ecap, acc_max, elide
):  # noqa: ANN001, ANN202, PLR0913
    # REQUANTC (docs/ISA.md): A[dst + r*cols + j] = sat_cap(round(C[src + r*cols + j] * M_j / 2**S_j)), ties away
    # from zero, M_j = C[q + j], S_j = C[q + cols + j], then min(max(., lo), hi) (lo = -cap, hi = cap: none; a
    # fused TRELU/TCLAMP: its bounds), each row also copied to mo (a fused TSTORE's main-memory range; empty for
    # none) while every operand so far was in range; tab (4 x cols int64) holds them with the rounding term and
    # the |x| limit per channel. A non-empty lt is a fused table activation (runtime/fuse.py, bit 4): each row is
    # then rescaled as EADD's first term (multiplier em, shift es, capped at +-acc_max, clipped to +-ecap; the
    # caller has checked that no clamped value can leave int64 in it) and looked up in lt (inputs llo ..
    # llo + len(lt) - 1, clamped into them) before it is copied. Returns 1 if the requantisation (or the rescale)
    # clipped, 0 if not, -1 for a multiplier or shift out of range (nothing written) or an operand whose product
    # with the rounding term could leave int64 (A garbage: the numpy path rewrites all of it; the source is in C;
    # mo holds only exact rows, which the TSTORE rewrites).
    mult = tab[0]
    shift = tab[1]
    half = tab[2]
    lim = tab[3]
    for j in range(cols):
        mj = C[q + j]
        sj = C[q + cols + j]
        if mj < 0 or mj > mult_max or sj < 0 or sj > shift_max:
            return -1
        mult[j] = mj
        shift[j] = sj
        half[j] = (np.int64(1) << sj) >> 1
        lim[j] = (np.int64(0x7FFFFFFFFFFFFFFF) - half[j]) // mj if mj > 0 else np.int64(0x7FFFFFFFFFFFFFFF)
    x = C[src : src + rows * cols]
    elide = elide and mo.shape[0] == rows * cols  # the values die in A (runtime/fuse.py, bit 3 of _FUSED): mo only
    out = mo if elide else A[dst : dst + rows * cols]
    nl = lt.shape[0]
    lhi = llo + nl - 1
    eh = (np.int64(1) << es) >> 1
    block = max(1, _REQ_BLOCK // cols)  # rows requantised, then looked up and copied, while they are in cache
    idx = np.empty(block * cols if nl > 0 else 0, dtype=np.int64)
    bad = False
    clipped = False
    for r0 in range(0, rows, block):
        r1 = min(r0 + block, rows)
        for r in range(r0, r1):
            rb = _U(r * cols)
            for j in range(cols):
                v = x[rb + _U(j)]
                bad |= (v > lim[j]) | (v < -lim[j])
                y = (v * mult[j] + half[j] - ((v < 0) & (shift[j] > 0))) >> shift[j]
                clipped |= (y > cap) | (y < -cap)
                out[rb + _U(j)] = min(max(min(max(y, -cap), cap), lo), hi)
        seg = out[r0 * cols : r1 * cols]
        if nl > 0:  # the table indices first (a loop that vectorises), then the lookups
            for j in range(seg.shape[0]):  # kernels_vec._rescale_one (EADD's term): this module calls no other's
                u = seg[j]
                v = min(max((u * em + eh - ((u < 0) & (es > 0))) >> es, -acc_max), acc_max)
                clipped |= (v > ecap) | (v < -ecap)
                idx[j] = min(max(min(max(v, -ecap), ecap), llo), lhi) - llo
            for j in range(seg.shape[0]):
                seg[j] = lt[_U(idx[j])]
        if mo.shape[0] > 0 and not bad and not elide:
            dst_m = mo[r0 * cols : r1 * cols]
            for j in range(seg.shape[0]):
                dst_m[j] = seg[j]
    if bad:
        return -1
    return 1 if clipped else 0


# ---- runs of tensor instructions: one compiled call for a straight-line stretch --------------------------------
# A row of the table (built by runtime/tensor.py build_run) is: opcode, instruction index, the instruction's fields
# (17 columns, zero-padded), the slot in bv of its base register's value (DMA), its offsets into the four buffer
# pools (int8, float64, int64, int32) that hold the loops' own buffers, and a CONV's fused bias row (_BIAS).
_ROW = 25
_BASE, _P8, _PF, _P64, _P32, _BIAS = 19, 20, 21, 22, 23, 24
_SKIP = 16  # in a TLOAD row's _FUSED column: forwarded, not executed (Simulator.forwarded); a CONV row's _BASE
# column then holds 1 + the main-memory word its input starts at. In a TLOADC row's: a bias broadcast the CONV
# after it adds itself (runtime/fuse.py bias_pair), whose _BIAS column then holds 1 + the bias row's word.


def _copy(src, s, dst, d, n):  # noqa: ANN001, ANN202
    # dst[d : d + n] = src[s : s + n] for two different arrays, by index (no view made per call)
    for j in range(n):
        dst[_U(d + j)] = src[_U(s + j)]


def _dma(mem, A, C, t, base, dirty, flags, word_max):  # noqa: ANN001, ANN202
    # TLOAD / TLOADC / TSTORE / TSTOREC (docs/ISA.md); -1 (nothing done) where an access leaves main memory
    op = t[0]
    load = op == _OP_TLOAD or op == _OP_TLOADC
    if load:
        d, off, rows, cols, stride = t[2], t[4], t[5], t[6], t[7]
    else:
        off, d, rows, cols, stride = t[3], t[4], t[5], t[6], t[7]
    if rows * cols == 0:
        return 0
    b = base + off
    lo = min(0, (rows - 1) * stride)
    hi = max(0, (rows - 1) * stride) + cols - 1
    if b + lo < 0 or b + hi >= mem.shape[0]:
        return -1
    spad = A if op == _OP_TLOAD or op == _OP_TSTORE else C
    flat = rows == 1 or stride == cols  # one contiguous main-memory range: one loop (rows of a few words cost)
    if load:
        if flat:
            _copy(mem, b, spad, d, rows * cols)
        elif cols == 1:  # one word per row (a channel of an interleaved tensor): no view per row, 2.5x faster
            for r in range(rows):
                spad[_U(d + r)] = mem[_U(b + r * stride)]
        else:
            for r in range(rows):
                src = mem[b + r * stride : b + r * stride + cols]
                dst = spad[d + r * cols : d + (r + 1) * cols]
                for j in range(cols):
                    dst[j] = src[j]
        return 0
    if op == _OP_TSTOREC:
        v = spad[d : d + rows * cols]
        clipped = False
        for j in range(rows * cols):
            clipped |= (v[j] > word_max) | (v[j] < -word_max)
        if clipped:
            flags[0] = 1
        for r in range(rows):  # in order: where rows overlap, the later one wins
            dst = mem[b + r * stride : b + r * stride + cols]
            src = v[r * cols : (r + 1) * cols]
            for j in range(cols):
                dst[j] = min(max(src[j], -word_max), word_max)
    elif flat:
        _copy(spad, d, mem, b, rows * cols)
    elif cols == 1:  # as the load's (channel shuffles store one word per row); rows in order, the later one wins
        for r in range(rows):
            mem[_U(b + r * stride)] = spad[_U(d + r)]
    else:
        for r in range(rows):  # in order: where rows overlap, the later one wins
            dst = mem[b + r * stride : b + r * stride + cols]
            src = spad[d + r * cols : d + (r + 1) * cols]
            for j in range(cols):
                dst[j] = src[j]
    dirty[0] = min(dirty[0], b + lo)
    dirty[1] = max(dirty[1], b + hi)
    return 0


def _tensor_run(mem, A, W, C, table, start, bv, p8, pf, p64, p32, zw, zm, dirty, flags, word_max, acc_max, mm, sm):  # noqa: ANN001, ANN202, PLR0913
    # Rows start.. of table, in order, each as its whole-instruction loop. Returns the index of the first row that
    # needs its numpy closure (a fault to report, an operand past a loop's guard), or the row count when all ran.
    # flags[0] = 1 where an instruction set S; dirty = the main-memory range the stores wrote.
    n = table.shape[0]
    r = start - 1
    while r < n - 1:
        r += 1
        t = table[r]
        op = t[0]
        i = t[1]
        o8 = t[_P8]
        of = t[_PF]
        o64 = t[_P64]
        o32 = t[_P32]
        st = 0
        if (op == _OP_TLOAD or op == _OP_TLOADC) and t[_FUSED] & _SKIP:
            st = 0
        elif op == _OP_TLOAD or op == _OP_TLOADC or op == _OP_TSTORE or op == _OP_TSTOREC:
            st = _dma(mem, A, C, t, bv[t[_BASE]], dirty, flags, word_max)
        elif op == _OP_TLOADW:
            count = t[5]
            nw = (count + 15) // 16
            b = bv[t[_BASE]] + t[4]
            if b < 0 or b + nw > mem.shape[0]:
                st = -1
            else:
                st = _tloadw(
                    mem,
                    b,
                    nw,
                    W,
                    t[2],
                    count,
                    word_max,
                    p64[o64 : o64 + nw],
                    p8[o8 : o8 + 16 * nw],
                    p64[o64 + nw : o64 + nw + 1],
                )
        elif op == _OP_CONV:
            c, a, w, ih, iw, ic, oc, kh, kw, sh, sw, pt, pl, pb, pr, g, acc = t[2:19]
            oh = (ih + pt + pb - kh) // sh + 1
            ow = (iw + pl + pr - kw) // sw + 1
            kk = kh * kw * (ic // g)
            st, z = _conv_small(
                A if t[_BASE] == 0 else mem,
                a if t[_BASE] == 0 else t[_BASE] - 1,
                ih,
                iw,
                ic,
                W,
                w,
                oc,
                kh,
                kw,
                sh,
                sw,
                pt,
                pl,
                oh,
                ow,
                g,
                C,
                c,
                acc,
                acc_max,
                p8[o8 : o8 + oc * kk],
                pf[of : of + kk * oc + oc + ih * iw * ic],
                p32[o32 : o32 + kk * oc + oc + ih * iw * ic],
                p64[o64 : o64 + 3],
                mem[t[_BIAS] - 1 : t[_BIAS] - 1 + oc] if t[_BIAS] > 0 else mem[0:0],
            )
            if st >= 0:
                zw[i] += z
                zm[i] += oh * ow * z
            elif t[_BIAS] > 0:  # handed back: the skipped TLOADC's broadcast first, which the closure adds to
                _broadcast(mem[t[_BIAS] - 1 : t[_BIAS] - 1 + oc], C[c : c + oh * ow * oc])
        elif op == _OP_MATMUL or op == _OP_MATVEC:
            if op == _OP_MATMUL:
                c, a, w, m, nn, k, acc = t[2], t[3], t[4], t[5], t[6], t[7], t[8]
            else:
                c, a, w, m, nn, k, acc = t[2], t[3], t[4], 1, t[5], t[6], t[7]
            st, z = _dot_small(
                A,
                a,
                W,
                w,
                C,
                c,
                m,
                nn,
                k,
                acc,
                acc_max,
                p8[o8 : o8 + nn * k],
                pf[of : of + k * nn + nn + m * k],
                p32[o32 : o32 + k * nn + nn + m * k],
                p64[o64 : o64 + 3],
            )
            if st >= 0:
                zw[i] += z
                zm[i] += m * z
        elif op == _OP_POOL:
            dst, src, ih, iw, ch, kh, kw, sh, sw, pt, pl, pb, pr, mode = t[2:16]
            oh = (ih + pt + pb - kh) // sh + 1
            ow = (iw + pl + pr - kw) // sw + 1
            tmp = p64[o64 : o64 + oh * ow * ch]
            if t[_BASE] == 0:
                st = _pool(A, src, A, dst, ih, iw, ch, kh, kw, sh, sw, pt, pl, oh, ow, mode, tmp, True)
            else:  # a forwarded TLOAD's source in main memory
                st = _pool(mem, t[_BASE] - 1, A, dst, ih, iw, ch, kh, kw, sh, sw, pt, pl, oh, ow, mode, tmp, False)
        elif op == _OP_REQUANTC:
            cols = t[5]
            cap = (np.int64(5) ** t[7] - 1) // 2
            # runtime/fuse.py: bit 0, a TRELU/TCLAMP row follows; bit 2, then an EADD rescale + TLUT pair over the
            # destination; bit 1, then a TSTORE of it
            fz = t[_FUSED]
            lo, hi = (t[_LO], t[_HI]) if fz & 1 else (-cap, cap)
            nxt = r + 1 + (fz & 1)
            lt = A[0:0]
            em = es = llo = ecap = np.int64(0)
            if fz & 4:
                te, tl = table[nxt], table[nxt + 1]
                em, es, ecap = te[6], te[7], (np.int64(5) ** te[10] - 1) // 2
                lt, llo = A[tl[5] : tl[5] + tl[7]], tl[6]
                nxt += 2
            mo = mem[0:0]
            b = 0
            if fz & 2:
                ts = table[nxt]
                b = bv[ts[_BASE]] + ts[3]
                if b >= 0 and b + t[4] * cols <= mem.shape[0]:
                    mo = mem[b : b + t[4] * cols]
            tab = p64[o64 : o64 + 4 * cols].reshape((4, cols))
            st = _requantc(
                C, t[3], t[4], cols, t[6], A, t[2], cap, mm, sm, tab, lo, hi, mo, lt, llo, em, es, ecap, acc_max, fz & 8
            )
            if st >= 0:
                r = nxt - 1 + (1 if mo.shape[0] > 0 else 0)
                if mo.shape[0] > 0:
                    dirty[0] = min(dirty[0], b)
                    dirty[1] = max(dirty[1], b + mo.shape[0] - 1)
        elif op == _OP_TRELU:
            _clamp(A, t[2], t[3], t[4], 0, np.int64(0x7FFFFFFFFFFFFFFF))
        elif op == _OP_TCLAMP:
            _clamp(A, t[2], t[3], t[4], t[5], t[6])
        else:  # an EADD or TLUT of a fused table activation whose REQUANTC was handed back: their closures run them
            st = -1
        if st < 0:
            return r
        if st > 0:
            flags[0] = 1
    return n


_HELPERS = (  # compiled in this module's namespace (kernels._get), where the loops above call them
    "_weights_t",
    "_conv_sums",
    "_dot_sums",
    "_operands",
    "_convert",
    "_dw_rows",
    "_dw_tap",
    "_dw_tap3",
    "_absmax",
    "_saturate_into",
    "_copy",
    "_broadcast",
    "_dma",
    "_conv_small",
    "_dot_small",
    "_pool",
    "_requantc",
    "_clamp",
    "_tloadw",
)
