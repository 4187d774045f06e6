"""MATMUL, MATVEC and CONV closures: exact integer dot products through the simulator's engine.

The int8 GEMM on balanced base-256 digits of the activations (``runtime/intgemm.py``; not for grouped CONVs), or
float64 BLAS where the operand bounds prove every partial sum an integer below 2**53 and exact int64 ``matmul``
otherwise; with the compiled loops, small products and depthwise CONVs run as one direct loop
(``runtime/kernels.py``), and on either engine a single-group CONV whose bound is below 2**24 is one float32 BLAS
product (``_F32_CONV``, loops in ``runtime/kernels_conv.py``). On the float engine, CONV with one group and vertical
stride 1 expands only the kw taps of each row and adds kh matrix products over row-shifted slices of that strip
(``_BAND_CONV``); many pixels and few channels multiply weights-first (``_WIDE_GEMM``); a small single-group CONV
gathers its patch matrix with one precomputed index array (``_GATHER_CONV``); otherwise the full im2col matrix. The
switches are for tests and timing: the results are the same. The weights, in the engine's layout, are kept in the
simulator's ``conv_weights`` cache.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np

from pcc.isa import ACC_MAX, conv_out
from pcc.pentary import word_max
from pcc.runtime import intgemm, kernels
from pcc.runtime.tensor_base import (
    EXACT_F64,
    _absmax,
    _first,
    _raiser,
    _span,
    _strided,
    exact_dot,
    padded,
    windows,
)

if TYPE_CHECKING:
    from pcc.runtime.simulator import Simulator

_WIDE_GEMM = True
_BAND_CONV = True
_GATHER_CONV = True
_GATHER_MAX = 1 << 14  # patch-matrix elements up to which a CONV gathers it by index
# with the compiled loops (sim.fused), a CONV, MATMUL or MATVEC of up to this many multiply-accumulates runs as one
# direct loop (runtime/kernels.py): cheaper than the patch matrix and a BLAS or int8 product below it
_DIRECT_MACS = 1 << 18
# with the compiled loops, a single-group CONV whose actual bound on every partial sum (max|x| times the largest
# sum of |w| over an output's weights) is below 2**24 multiplies a float32 patch matrix by float32 weights in one
# BLAS product: every value and partial sum is then an integer float32 holds exactly, in any summation order. It
# skips the int8 engine's three digit planes and their recombination, and float64's double width
_F32_CONV = True
F32_EXACT = 1 << 24
# a single-group CONV of at most _F32_K weights per output (where 8-pent activations always fit the float32
# bound: 195,312 * 2 * 42 < 2**24) and more than _F32_DIRECT multiply-accumulates takes the float32 product
# rather than the direct loop, whose sums over a few output channels per input value vectorise poorly
_F32_K = 42
_F32_DIRECT = 1 << 16
# on the int8 engine (torch loaded), a single-group CONV past the float32 bound with at most _TORCH_IC input
# channels and strides of 2 or more (a first layer on an RGB image, such as ResNet's 7x7: the int8 engine's
# patch matrix of three digit planes costs more than its products, in runs of kw*ic bytes; at stride 1, as
# Inception's 5x5 CONVs of 4 channels, torch was slower) and more than _TORCH_MACS multiply-accumulates
# runs as torch's float32 convolution (oneDNN's kernels, no patch matrix) on the zero-padded image cut as x = hi
# * 2**s + lo into two images that each pass the bound; the store adds hi's sums times 2**s to lo's
# (runtime/kernels_conv.py). Below the bound the float32 patch matrix is as fast (a 3x3 first layer)
_TORCH_CONV = True
_TORCH_IC = 4
_TORCH_MACS = 1 << 20


def direct_conv(ic: int, oc: int, kk: int, pixels: int, groups: int) -> bool:
    """Whether a CONV of these sizes (``kk`` weights per output, ``pixels`` outputs per channel) runs as the direct
    compiled loop: up to ``_DIRECT_MACS`` multiply-accumulates, or at any size when depthwise (one input and one
    output channel per group), whose loop runs over the channels of a tap as one vector where the patch matrix
    would multiply ``groups`` products of one column each; not a single-group CONV that the float32 product takes
    instead (at most ``_F32_K`` weights per output, more than ``_F32_DIRECT`` multiply-accumulates)."""
    if kk == 0 or pixels * oc == 0 or ic == 0:
        return False
    if groups == 1 and _F32_CONV and kk <= _F32_K and pixels * oc * kk > _F32_DIRECT:
        return False
    return pixels * oc * kk <= _DIRECT_MACS or (groups > 1 and ic == groups and oc == groups)


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


def _amatmul(
    sim: Simulator, i: int, c: int, a: int, b: int, m: int, n: int, k: int, kn: int, pents: int, acc: int
) -> Callable:
    """AMATMUL: both operands from scratchpad A; the sums in float64 where the operand bounds prove them exact
    integers below 2**53, in int64 where below 2**63, else in Python integers."""
    A, C, flags = sim.spad_a, sim.spad_c, sim._flags
    bad = _first(_span("A", a, m * k, A.size), _span("A", b, n * k, A.size), _span("C", c, m * n, C.size))
    if bad:
        return _raiser(i, f"AMATMUL: {bad}", False)
    if m * n == 0:
        return lambda: None
    sim.touch_spad("C", c, m * n)
    cap = word_max(pents)

    def amatmul() -> None:
        x = A[a : a + m * k].reshape(m, k)
        y = np.clip(A[b : b + n * k], -cap, cap)
        y = y.reshape(n, k).T if kn == 0 else y.reshape(k, n)
        bound = max(int(np.abs(x).max()), 1) * max(int(np.abs(y).max()), 1) * k
        if bound < EXACT_F64:
            prod = np.matmul(x.astype(np.float64), y.astype(np.float64)).astype(np.int64)
        elif bound < 2**62:  # the base added below stays inside int64
            prod = np.matmul(x, y)
        else:
            prod = np.matmul(x.astype(object), y.astype(object))
        out = prod.reshape(-1) + (C[c : c + m * n].astype(prod.dtype) if acc else 0)
        C[c : c + m * n] = _saturate_acc(out, flags).astype(np.int64)

    return amatmul


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
    wflat = W[w : w + n * k]
    wt = wflat.reshape(n, k)
    x = A[a : a + m * k].reshape(m, k)
    cs = C[c : c + mn]
    cache = sim.conv_weights
    key = ("DOT", i)
    seen = [0, 0]  # executions through the cache, cache misses

    def weights(wv: np.ndarray) -> tuple[np.ndarray, int, int]:
        # (float64 weights [k, n], zero pents, max |pent|), kept while the W scratchpad holds the same pents
        return (
            np.ascontiguousarray(wv.reshape(n, k).T, dtype=np.float64),
            n * k - int(np.count_nonzero(wv)),
            max(int(wv.max()), -int(wv.min())),
        )

    int8 = sim.int8_gemm and k > 0
    xflat = A[a : a + m * k]
    x_absmax = _absmax((m * k,)) if k else None
    cs_absmax = _absmax((mn,))

    def count(zeros: int) -> None:  # the zero weights met, for the profile
        if zeros:
            zw[i] += zeros
            zm[i] += m * zeros

    def finish(prod: np.ndarray) -> None:  # add the base, saturate into C
        if acc:
            prod += cs
        cs[...] = _saturate_acc(prod, flags)

    if sim.direct_products and k > 0 and m * n * k <= _DIRECT_MACS:
        kern = kernels.loop("dot_small")

        bufs = _direct_buffers(n, k, m * k)

        def dot_direct() -> None:
            st, zeros = kern(A, a, W, w, C, c, m, n, k, acc, ACC_MAX, *bufs)
            if st < 0:  # an operand past what int64 sums hold: the exact numpy path
                dot()
                return
            count(zeros)
            if st:
                flags[3] = 1

    def dot() -> None:
        if int8:
            amax, wmax = x_absmax(xflat), max(int(wt.max()), -int(wt.min()))
            if intgemm.fits_int32(wmax, k) and intgemm.digits_for(amax) <= intgemm.MAX_DIGITS:
                count(n * k - int(np.count_nonzero(wt)))
                finish(intgemm.dot(x, wt.T, amax, wmax * k).reshape(-1))
                return
        if k == 0 or seen[1] >= 3 and 2 * seen[1] > seen[0]:  # weights that change from run to run: no cache
            count(n * k - int(np.count_nonzero(wt)))
            finish(exact_dot(x, wt.T, k).reshape(-1))
            return
        seen[0] += 1
        misses = cache.misses
        w64, zeros, wmax = cache.lookup(key, wflat, weights)
        seen[1] += cache.misses - misses
        count(zeros)
        bound = x_absmax(xflat) * wmax * k
        if bound >= EXACT_F64:
            finish(exact_dot(x, wt.T, k).reshape(-1))
            return
        # every partial sum an integer below 2**53: exact in float64, as in exact_dot
        res = np.matmul(x.astype(np.float64), w64).reshape(-1)
        if not acc and bound <= ACC_MAX:  # within the accumulator range: no saturation
            cs[...] = res
            return
        prod = res.astype(np.int64)
        if acc and bound + cs_absmax(cs) <= ACC_MAX:  # cannot saturate: add in place
            np.add(cs, prod, out=cs)
            return
        finish(prod)

    return dot_direct if sim.direct_products and k > 0 and m * n * k <= _DIRECT_MACS else dot


def _direct_buffers(n: int, k: int, nx: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """A direct product loop's own buffers (runtime/kernels.py) for ``n`` outputs of ``k`` weights each and ``nx``
    inputs: the pents its transposed weights were made from; float64 and int32 buffers, each holding those weights
    (``[k, n]``, flat), one output vector of sums and the converted input; the weights' state (zero pents, max sum
    |pent|, valid)."""
    size = k * n + n + nx
    return (
        np.zeros(n * k, dtype=np.int8),
        np.zeros(size, dtype=np.float64),
        np.zeros(size, dtype=np.int32),
        np.zeros(3, dtype=np.int64),
    )


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
    bias: tuple[Callable, int] | None = None,
) -> Callable | None:
    """CONV's closure; with ``bias`` = (the closure of the TLOADC right before it, that TLOADC's offset), the
    closure of the two (``fuse.bias_pair``; it takes the TLOADC's base register value), or None where the products
    have no float32 store to add the bias row in."""
    A, W, C = sim.spad_a, sim.spad_w, sim.spad_c
    oh, ow = conv_out(ih, pt, pb, kh, sh), conv_out(iw, pl, pr, kw, sw)
    g = groups
    icg, ocg = ic // g, oc // g
    kk = kh * kw * icg
    p = oh * ow
    bad = _first(_span("A", a, ih * iw * ic, A.size), _span("W", w, oc * kk, W.size), _span("C", c, p * oc, C.size))
    n_out = p * oc
    if bad or n_out == 0:
        return None if bias is not None else _raiser(i, f"CONV: {bad}", False) if bad else lambda: None
    flags, zw, zm = sim._flags, sim.zero_weights, sim.zero_macs
    n_in = ih * iw * ic
    pads = (pt, pl, pb, pr)
    sim.touch_spad("C", c, n_out)
    ws = sim.workspace
    padded_shape = (ih + pt + pb, iw + pl + pr, ic)
    pointwise = kh == 1 and kw == 1 and sh == 1 and sw == 1 and not (pt or pl or pb or pr)
    wide = g == 1 and p >= 2 * ocg and _WIDE_GEMM
    # stride-1 rows: expand the kw taps only and sum kh matrix products over row-shifted slices of it, instead of
    # expanding all kh * kw taps (im2col): a third of the copying for 3x3, the same sums
    band = g == 1 and sh == 1 and kh > 1 and _BAND_CONV
    hp = ih + pt + pb
    # a small single-group CONV gathers its patch matrix with one precomputed index array (input element, or the
    # zero placed after the input for a tap in the padding): a few numpy calls instead of a dozen, which is most of
    # a small CONV's time
    gather = None
    if g == 1 and 0 < p * kk <= _GATHER_MAX and _GATHER_CONV:
        oy, ox, ky, kx, ci = np.ix_(np.arange(oh), np.arange(ow), np.arange(kh), np.arange(kw), np.arange(ic))
        iy, ix = oy * sh + ky - pt, ox * sw + kx - pl
        inside = (iy >= 0) & (iy < ih) & (ix >= 0) & (ix < iw)
        gather = np.where(inside, (iy * iw + ix) * ic + ci, ih * iw * ic).reshape(p, kk).astype(np.intp)
        gather_bufs = (np.zeros(n_in + 1), np.empty((p, kk)), np.empty((p, oc)))

    def conv_rows(x: np.ndarray, wt: np.ndarray, dt: type) -> np.ndarray:
        xp = padded(x, pads, 0, dt, ws.get("pad", padded_shape, dt))
        s0, s1, s2 = xp.strides
        strip = _strided(xp, (hp, ow, kw, ic), (s0, s1 * sw, s1, s2))  # row y, column ox, tap kx, channel
        xs = ws.get("cols", (hp, ow, kw, ic), dt)
        np.copyto(xs, strip)
        xs = xs.reshape(hp * ow, kw * ic)  # row-major (y, ox) x (kx, ci): rows ky*ow .. ky*ow + p-1 are tap row ky
        w3 = wt.reshape(oc, kh, kw * ic)
        if wide:
            out, tmp = ws.get("out", (oc, p), dt), ws.get("tmp", (oc, p), dt)
            np.matmul(w3[:, 0], xs[:p].T, out=out)
            for ky in range(1, kh):
                np.matmul(w3[:, ky], xs[ky * ow : ky * ow + p].T, out=tmp)
                out += tmp
            return out.T
        out, tmp = ws.get("out", (p, oc), dt), ws.get("tmp", (p, oc), dt)
        np.matmul(xs[:p], w3[:, 0].T, out=out)
        for ky in range(1, kh):
            np.matmul(xs[ky * ow : ky * ow + p], w3[:, ky].T, out=tmp)
            out += tmp
        return out

    # int8 GEMM on balanced base-256 digits of the activations (runtime/intgemm.py): the digit is the leading row
    # index of the patch matrix, so that each digit's products come out as one block
    int8 = sim.int8_gemm and g == 1 and kk > 0
    fused = int8 and sim.fused
    # float32 products (with the compiled loops, unless the int8 engine was asked for by name)
    f32 = g == 1 and kk > 0 and sim.direct_products and _F32_CONV
    if f32:
        f32_cols, f32_store = kernels.loop("f32_cols"), kernels.loop("f32_store")
        f32_store_bias = kernels.loop("f32_store_bias")
    wp = iw + pl + pr
    tconv = f32 and _TORCH_CONV and sim.int8_gemm and ic <= _TORCH_IC and kh * kw > 1 and min(sh, sw) > 1
    tconv = tconv and p * oc * kk > _TORCH_MACS and intgemm.conv_exact()
    if tconv:
        f32_image, store_parts = kernels.loop("f32_image"), kernels.loop("f32_store_parts")
    taps1 = kh == 1 and kw == 1 and not (pt or pl or pb or pr)

    def conv_int8(x: np.ndarray, amax: int, w8: np.ndarray, bound: int, rb: int, res: np.ndarray, add: bool) -> None:
        # res (int64, (p, oc)) = or += the products
        nd = intgemm.digits_for(amax)
        off = intgemm.offset(nd)
        o = ws.get("acc8", (nd * p, oc), np.int32)
        if fused:  # the digit planes of the patch matrix in one compiled call
            cols = ws.get("cols8", (nd, p, kk), np.int8)
            if pointwise:  # 1x1, stride 1, no padding: the digit planes of the image are the patch matrix
                kernels.digit_split(x, off, nd, cols.reshape(nd, p * kk))
            else:
                planes = ws.get("planes", (nd, *padded_shape), np.int8)
                kernels.digit_cols(x, off, nd, (ih, iw, ic, kh, kw, sh, sw, pt, pl, oh, ow), planes, cols)
            intgemm.int_mm(cols.reshape(nd * p, kk), w8, o)
            recombine(o.reshape(nd, p, oc), res, bound, rb, add)
            return
        if taps1:  # 1x1 without padding: the digits of the pixels the strides pick are the patch matrix
            u = ws.get("digits", (oh, ow, ic), np.int64)
            np.add(x[: (oh - 1) * sh + 1 : sh, : (ow - 1) * sw + 1 : sw], off, out=u)
            u ^= off
            s0, s1, s2 = u.strides
            cols = ws.get("cols8", (nd, oh, ow, ic), np.int8)
            np.copyto(cols, np.ndarray((nd, oh, ow, ic), np.int8, u, 0, (1, s0, s1, s2)))
            intgemm.int_mm(cols.reshape(nd * p, kk), w8, o)
            recombine(o.reshape(nd, p, oc), res, bound, rb, add)
            return
        # the digit planes, padded with zeros: d[j, y, x, c], digit j of the padded image at row y, column x
        d = ws.get("planes", (nd, *padded_shape), np.int8)
        if pt:
            d[:, :pt] = 0
        if pb:
            d[:, pt + ih :] = 0
        if pl:
            d[:, pt : pt + ih, :pl] = 0
        if pr:
            d[:, pt : pt + ih, pl + iw :] = 0
        if fused:
            kernels.digit_planes(x, off, nd, d, pt, pl)
        else:
            u = ws.get("digits", (ih, iw, ic), np.int64)
            np.add(x, off, out=u)
            u ^= off  # the low nd bytes of each word are its digits
            s0, s1, s2 = u.strides
            np.copyto(d[:, pt : pt + ih, pl : pl + iw], np.ndarray((nd, ih, iw, ic), np.int8, u, 0, (1, s0, s1, s2)))
        d0, d1, d2, d3 = d.strides
        cols = ws.get("cols8", (nd, oh, ow, kh, kw, ic), np.int8)
        np.copyto(cols, np.ndarray((nd, oh, ow, kh, kw, ic), np.int8, d, 0, (d0, d1 * sh, d2 * sw, d1, d2, d3)))
        intgemm.int_mm(cols.reshape(nd * p, kk), w8, o)
        recombine(o.reshape(nd, p, oc), res, bound, rb, add)

    def f32_patches() -> int:
        # the float32 patch matrix (exact where the caller's bound holds); max |x|, or -1 past 2**62
        cols = ws.get("cols32", (p, kk), np.float32)
        planes = ws.get("planes32", (hp * wp * ic,), np.float32)
        return int(f32_cols(xflat, ih, iw, ic, kh, kw, sh, sw, pt, pl, hp, wp, oh, ow, planes, cols.reshape(-1)))

    def conv_f32(w32: np.ndarray, brow: np.ndarray | None) -> None:
        # the float32 patch matrix (made) times the float32 weights [kk, oc] (every partial sum an integer below
        # 2**24: exact), stored into C with the base (C itself, or the bias row brow a fused TLOADC would have
        # broadcast into it) added and saturated in one compiled pass
        o = ws.get("out32", (p, oc), np.float32)
        np.matmul(ws.get("cols32", (p, kk), np.float32), w32, out=o)
        if brow is not None:
            st = f32_store_bias(o.reshape(-1), brow, cs, ACC_MAX)
            if st >= 0:
                if st:
                    flags[3] = 1
                return
            cs.reshape(p, oc)[...] = brow  # a bias past 2**62: the TLOADC's words, then the exact path below
        st = f32_store(o.reshape(-1), cs, bool(acc), ACC_MAX)
        if st < 0:  # a base past 2**62: the exact int64 (or Python) addition
            prod = o.reshape(-1).astype(np.int64) + cs
            cs[:] = _saturate_acc(prod, flags)
        elif st:
            flags[3] = 1

    def conv_torch(wl1: int, slot: list | None, brow: np.ndarray | None) -> bool:
        # torch's float32 convolution of the padded image (in one or two exact parts) stored into C with its
        # base; False, having written nothing, where no two parts pass the bound, torch declines or a base is
        # past 2**62 (another engine then runs the CONV)
        planes = ws.get("planes_t", (2, hp * wp * ic), np.float32)
        s = int(f32_image(xflat, ih, iw, ic, pt, pl, hp, wp, wl1, F32_EXACT, planes))
        if s < 0:
            return False
        tw = slot[1] if slot is not None else None
        if tw is None:
            tw = intgemm.conv_weights(wflat.reshape(oc, kh, kw, ic))
            if slot is not None:
                slot[1] = tw
        o = intgemm.f32_conv(planes[: 2 if s else 1].reshape(-1, hp, wp, ic), tw, (sh, sw))
        if o is None:
            return False
        o = o.reshape(o.shape[0], -1)
        mode, row = (2, brow) if brow is not None else (int(bool(acc)), cs[:oc])
        st = store_parts(o[0], o[-1], s, row, cs, mode, ACC_MAX)
        if st < 0:
            return False
        if st:
            flags[3] = 1
        return True

    def recombine(r: np.ndarray, res: np.ndarray, bound: int, rb: int, add: bool) -> None:
        if fused:
            kernels.recombine(r, res, add)
        else:
            intgemm.recombine(r, res, bound, rb, add)

    def conv_float(x: np.ndarray, wflat: np.ndarray, wt64: np.ndarray | None, bound: int) -> np.ndarray:
        # float64 BLAS where every partial sum is an integer below 2**53, int64 otherwise; (p, oc) or (p, g, ocg)
        dt = np.float64 if bound < EXACT_F64 else np.int64
        if wt64 is not None and dt is np.float64:
            wt = wt64
        else:
            wt = ws.get("wt", (g, ocg, kk), dt)
            wt[...] = wflat.reshape(g, ocg, kk)
        if gather is not None:
            if dt is np.float64:  # buffers of its own (small), the zero after the input written once
                xz, cols, out = gather_bufs
            else:
                xz, cols, out = (
                    ws.get("gather_src", (n_in + 1,), dt),
                    ws.get("cols", (p, kk), dt),
                    ws.get("out", (p, oc), dt),
                )
                xz[-1] = 0
            xz[:-1] = xflat
            xz.take(gather, out=cols, mode="clip")  # every index is valid: no bounds-checked (buffered) take
            np.matmul(cols, wt[0].T, out=out)
            return out
        if band:
            return conv_rows(x, wt[0], dt)
        # patches[g, pixel, (ky, kx, ci)] in the weights' order, converted once into a reused buffer
        cols = ws.get("cols", (g, p, kk), dt)
        if pointwise and g == 1:
            cols[0] = x.reshape(p, ic)
        else:
            win = windows(x, kh, kw, sh, sw, pads, 0, ws.get("pad", padded_shape, dt))  # (oh, ow, ic, kh, kw)
            np.copyto(
                cols.reshape(g, oh, ow, kh, kw, icg),
                win.reshape(oh, ow, g, icg, kh, kw).transpose(2, 0, 1, 4, 5, 3),
            )
        if wide:  # weights @ patches^T: faster in BLAS for many pixels and few channels
            out = ws.get("out", (ocg, p), dt)
            np.matmul(wt[0], cols[0].T, out=out)
            return out.T
        out = ws.get("out", (g, p, ocg), dt)
        np.matmul(cols, wt.transpose(0, 2, 1), out=out)
        return out[0] if g == 1 else out.transpose(1, 0, 2)  # (p, ocg) or (p, g, ocg), C's order

    cache = sim.conv_weights
    seen = [0, 0]  # executions, weight-cache misses
    key = ("CONV", i)

    def weights(wflat: np.ndarray) -> tuple[np.ndarray, int, int, int, list]:
        # (weights in the layout the products use, zero pents, max |pent|, max over output channels of sum |pent|,
        # a slot for their float32 [kk, oc] copy, made on the first float32 product): a third of a small CONV's
        # time when recomputed. float64 [g, ocg, kk], or [kk, oc] int8 for the int8 GEMM
        w2 = wflat.reshape(oc, kk)
        if int8:
            wl = np.ascontiguousarray(w2.T)
        else:
            wl = wflat.astype(np.float64).reshape(g, ocg, kk)
        return (
            wl,
            oc * kk - int(np.count_nonzero(wflat)),
            max(int(wflat.max()), -int(wflat.min())),
            int(np.abs(w2, dtype=np.int64).sum(axis=1).max()),
            [None, None],  # the float32 [kk, oc] copy, torch's weights (conv_torch)
        )

    XA, xa = sim.reads_from(i, a)  # A, or a forwarded TLOAD's source in main memory
    xflat = XA[xa : xa + n_in]
    x3 = xflat.reshape(ih, iw, ic)
    wflat = W[w : w + oc * kk]
    cs = C[c : c + n_out]
    x_absmax = _absmax((n_in,), sim.fused) if n_in else None
    cs_absmax = _absmax((n_out,), sim.fused)

    def conv(brow: np.ndarray | None = None) -> None:
        # brow: the bias row of a fused TLOADC (bias_conv), broadcast into C here unless the float32 store adds it
        wl = w32 = None  # w32: the slot of the float32 weights, where cached
        if kk == 0 or seen[1] >= 3 and 2 * seen[1] > seen[0]:  # weights that change from run to run: no cache
            zeros = oc * kk - int(np.count_nonzero(wflat))
            wmax = max(int(wflat.max()), -int(wflat.min())) if kk else 0
            wl1 = wmax * kk
        else:
            seen[0] += 1
            misses = cache.misses
            wl, zeros, wmax, wl1, w32 = cache.lookup(key, wflat, weights)
            seen[1] += cache.misses - misses
        if zeros:
            zw[i] += zeros
            zm[i] += p * zeros
        if x_absmax is None or kk == 0:
            if brow is not None:  # no input (bias_conv is built only for float32 products, so kk > 0)
                cs.reshape(p, oc)[...] = brow
            prod = np.zeros(n_out, dtype=np.int64)
            if acc:
                prod += cs
            cs[:] = _saturate_acc(prod, flags)
            return
        made = f32 and kk <= _F32_K  # where the bound usually holds: the patch matrix and max |x| in one pass
        amax = f32_patches() if made else -1
        if amax < 0:
            amax = x_absmax(xflat)
        bound = amax * wl1  # every partial sum of an output is a sum of some of its products
        if f32 and bound < F32_EXACT:
            if not made:
                f32_patches()
            if w32 is None or w32[0] is None:
                wf = np.ascontiguousarray(wflat.reshape(oc, kk).T, dtype=np.float32)
                if w32 is not None:
                    w32[0] = wf
            conv_f32(wf if w32 is None else w32[0], brow)
            return
        if tconv and conv_torch(wl1, w32, brow):  # past the float32 bound: torch's convolution in two parts
            return
        if brow is not None:  # another engine: the TLOADC's broadcast, then the products added to it
            cs.reshape(p, oc)[...] = brow
        if int8 and intgemm.fits_int32(wmax, kk) and intgemm.digits_for(amax) <= intgemm.MAX_DIGITS:
            if wl is None:
                wl = weights(wflat)[0]
            rbound = 128 * wl1
            if not acc and bound <= ACC_MAX:  # cannot saturate: straight into C
                conv_int8(x3, amax, wl, bound, rbound, cs.reshape(p, oc), False)
                return
            if acc and bound + cs_absmax(cs) <= ACC_MAX:  # cannot saturate: add in place
                conv_int8(x3, amax, wl, bound, rbound, cs.reshape(p, oc), True)
                return
            res = ws.get("prod", (p, oc), np.int64)
            conv_int8(x3, amax, wl, bound, rbound, res, False)
        else:
            res = conv_float(x3, wflat, None if int8 else wl, bound)
            if not acc and bound <= ACC_MAX:  # every sum is within the accumulator range: no saturation
                cs.reshape(res.shape)[...] = res
                return
        if res.dtype == np.int64:  # the int64 products (conv_float's int64 path, or conv_int8's into "prod")
            prod = res
        else:
            prod = ws.get("prod", res.shape, np.int64)
            prod[...] = res
        if acc and bound + cs_absmax(cs) <= ACC_MAX:  # cannot saturate: add in place
            cs.reshape(res.shape)[...] += prod
            return
        prod = prod.reshape(-1)
        if acc:
            prod += cs
        if int(prod.max()) > ACC_MAX or int(prod.min()) < -ACC_MAX:
            flags[3] = 1
            np.clip(prod, -ACC_MAX, ACC_MAX, out=prod)
        cs[:] = prod

    if bias is not None:
        if not f32 or not acc or direct_conv(ic, oc, kk, p, g):
            return None
        tloadc, off = bias
        mem = sim.mem

        def bias_conv(base: int) -> None:
            b = base + off
            if b < 0 or b + oc > mem.size:
                tloadc(base)  # faults, as the TLOADC alone
            conv(mem[b : b + oc])

        return bias_conv
    if sim.direct_products and n_in > 0 and direct_conv(ic, oc, kk, p, g):
        kern = kernels.loop("conv_small")

        geometry = (ih, iw, ic, W, w, oc, kh, kw, sh, sw, pt, pl, oh, ow, g)
        args = (XA, xa, *geometry, C, c, acc, ACC_MAX, *_direct_buffers(oc, kk, n_in), C[:0])  # no bias row

        def conv_direct() -> None:
            st, zeros = kern(*args)
            if st < 0:  # an operand past what int64 sums hold: the exact numpy path
                conv()
                return
            if zeros:
                zw[i] += zeros
                zm[i] += p * zeros
            if st:
                flags[3] = 1

        return conv_direct
    return conv
