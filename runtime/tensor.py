"""Tensor instructions: one numpy closure per instruction, built once with its field values bound.

Every closure implements the semantics text of its instruction in ``pcc/isa.py`` exactly:

* DMA (TLOAD, TSTORE, TLOADW, TLOADC, TSTOREC) takes the base register's value as its argument; the main-memory
  extent is checked when it runs, the scratchpad extent when the closure is built (it depends on fields only),
  and an out-of-range extent becomes a closure that faults when executed.
* MATMUL, MATVEC and CONV are integer dot products, through the simulator's engine (``sim.int8_gemm``): the int8
  GEMM on balanced base-256 digits of the activations (``runtime/intgemm.py``; not for grouped CONVs), or float64
  BLAS where the operand bounds prove every partial sum an integer below 2**53 (``max|a|`` times the largest sum
  of ``|w|`` of an output, checked on the actual operands each time) and exact int64 ``matmul`` otherwise. All are
  exact; int64 cannot overflow because ``|a| <= word_max(16)``, ``|w| <= 2`` and ``K <= word_max(9)`` bound a sum
  by 1.5e17 (plus at most ``ACC_MAX`` of base, < 2**63). On the float engine, CONV with one group and vertical
  stride 1 expands only the kw taps of each row and adds kh matrix products over row-shifted slices of that
  strip; otherwise it multiplies the full im2col matrix. Either way every sum is a sum of a subset of the same
  products, so the bound covers it.
* Requantisation and EADD call ``isa.mul_shift_round`` / ``isa.requantize``, the primitives that define them;
  REQUANTC and EADD run ``mul_shift_round``'s own int64 common-shift path in place (:func:`_msr_into`) where it
  applies, and call it otherwise.
* Every instruction reads all its sources before it writes its destination (so overlapping source and
  destination ranges behave as if the sources were copied first), except TSTORE/TSTOREC whose rows are written
  in order, later rows winning, as the table says.

Speed: TLOADW decodes a word range once and keeps the pents while main memory holds the same words
(:class:`ContentCache`, compared on every use); the closures write their temporaries (padded images, patch
matrices, products) into buffers of the simulator's :class:`Workspace` that live from run to run, because a
fresh multi-megabyte array costs more in page faults than the arithmetic done on it. CONV keeps its weights, in
its engine's layout, in the simulator's ``conv_weights`` :class:`ContentCache` (compared with the W scratchpad on
every use), and so do MATMUL and MATVEC on the float engine. A POOL without padding reduces over strided views of
A made once. A DMA closure keeps its checked main-memory view per base register value (up to ``_VIEWS`` of them;
main memory is never reallocated); a run of consecutive TLOAD / TLOADC of one base register, several into each
scratchpad, is one gather per scratchpad (:func:`build_loads`, used by the simulator's block generator). REQUANTC
keeps its checked multipliers and shifts while the C scratchpad
holds the same words (compared on every use). A small single-group CONV gathers its patch matrix with one
precomputed index array into float64 buffers of its own. The operand bounds of small instructions (``max |v|``)
take one ``abs`` and one reduction (:func:`_absmax`) instead of a ``max`` and a ``min``; a small REQUANTC runs
``_msr_into``'s arithmetic with them and no bool temporary. ``_BAND_CONV``,
``_WIDE_GEMM`` and ``_GATHER_CONV`` switch the CONV formulations (for tests and timing; the results are the same).

S (sticky) is set through the simulator's flag list when a result saturates.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np
from numpy.lib.stride_tricks import as_strided

from pcc import isa
from pcc.backend.program import Instruction
from pcc.isa import ACC_MAX, MULT_MAX, SHIFT_MAX, WORD_MAX, Op, cdiv, conv_out, mul_shift_round
from pcc.pentary import to_digits, word_max
from pcc.runtime import intgemm, kernels
from pcc.runtime.simulator import Fault

if TYPE_CHECKING:
    from pcc.runtime.simulator import Simulator

EXACT_F64 = 2**53  # integers below this are exact in float64
_WIDE_GEMM = True
_BAND_CONV = True
_GATHER_CONV = True
_GATHER_MAX = 1 << 14  # patch-matrix elements up to which a CONV gathers it by index
_I64_MIN = np.iinfo(np.int64).min
_I64_MAX = np.iinfo(np.int64).max
_VIEWS = 64  # main-memory views a DMA closure keeps, one per base register value
_SMALL_FILL = 1 << 14  # padded images up to this many elements are filled whole, then the interior copied
# with the compiled loops (sim.fused), a CONV, MATMUL or MATVEC of up to this many multiply-accumulates runs as one
# direct loop (runtime/kernels.py): cheaper than the patch matrix and a BLAS or int8 product below it
_DIRECT_MACS = 1 << 18
_DIRECT_WORDS = 1 << 14  # TLOADW tiles of up to this many words keep their decoded pents in the compiled loop
_SMALL = 1 << 12  # int64 operands up to this many elements get max |v| from one abs into a buffer and one reduction
_MAX, _MIN = np.maximum.reduce, np.minimum.reduce


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


def _absmax(shape: tuple[int, ...], fused: bool = False) -> Callable[[np.ndarray], int]:
    """A function giving ``max |v|`` (a Python int, exact) of an int64 array ``v`` of ``shape`` (not empty).

    Up to ``_SMALL`` elements: ``abs`` into a buffer of its own and one ``maximum`` reduction over it read as
    uint64 (``abs(INT64_MIN)`` wraps to itself, whose bits read as uint64 are ``2**63``, its true magnitude), about
    half the cost of a ``max`` and a ``min`` reduction on small arrays; larger ones get the two reductions (no extra
    pass writing memory), or with ``fused`` both in one compiled pass (:func:`kernels.extremes`).
    """
    if fused and int(np.prod(shape)) > _SMALL:

        def absmax_fused(v: np.ndarray) -> int:
            lo, hi = kernels.extremes(v)
            return hi if hi > -lo else -lo

        return absmax_fused
    if int(np.prod(shape)) <= _SMALL:
        buf = np.empty(shape, dtype=np.int64)
        ubuf = buf.view(np.uint64)

        def absmax_small(v: np.ndarray) -> int:
            np.abs(v, out=buf)
            return int(_MAX(ubuf, None))

        return absmax_small

    def absmax(v: np.ndarray) -> int:
        hi, lo = int(_MAX(v, None)), int(_MIN(v, None))
        return hi if hi > -lo else -lo

    return absmax


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


def _rows(rows: int, cols: int, stride: int) -> tuple[int, int, bool]:
    """(lowest offset, highest offset, contiguous?) of a rows x cols access with a row stride."""
    lo = min(0, (rows - 1) * stride)
    hi = max(0, (rows - 1) * stride) + cols - 1
    contiguous = rows == 1 or stride == cols
    return lo, hi, contiguous


def _row_view(mem: np.ndarray, b: int, rows: int, cols: int, stride: int) -> np.ndarray:
    """The ``rows x cols`` view of ``mem`` whose row ``r`` is ``mem[b + r*stride : b + r*stride + cols]``.

    The caller has checked that every element lies inside ``mem``; rows may overlap (stride 0 repeats one).
    Disjoint rows that end inside ``mem`` are a reshaped slice (a few times cheaper than ``as_strided``).
    """
    if stride >= cols and b + rows * stride <= mem.size:
        return mem[b : b + rows * stride].reshape(rows, stride)[:, :cols]
    step = mem.itemsize
    if mem.flags.c_contiguous:  # as below, without as_strided's overhead (numpy checks the extent)
        if stride >= 0:
            return np.ndarray((rows, cols), mem.dtype, mem, b * step, (stride * step, step))
        first = b + (rows - 1) * stride
        return np.ndarray((rows, cols), mem.dtype, mem, first * step, (-stride * step, step))[::-1]
    if stride >= 0:
        return as_strided(mem[b:], shape=(rows, cols), strides=(stride * step, step))
    first = b + (rows - 1) * stride  # the lowest row, read in reverse
    return as_strided(mem[first:], shape=(rows, cols), strides=(-stride * step, step))[::-1]


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
    lo, hi, contiguous = _rows(rows, cols, stride)
    target = dst[d : d + n] if contiguous else dst[d : d + n].reshape(rows, cols)
    views: dict[int, np.ndarray] = {}  # base -> the checked source view (main memory is never reallocated)

    def dma_in(base: int) -> None:
        v = views.get(base)
        if v is None:
            b = base + off
            if b + lo < 0 or b + hi >= size:
                _dram_check(i, what, b, lo, hi, size)
            v = mem[b : b + n] if contiguous else _row_view(mem, b, rows, cols, stride)
            if len(views) < _VIEWS:
                views[base] = v
        target[...] = v

    return dma_in


_LOAD_RUN = 4  # consecutive loads (TLOAD, TLOADC) of one base register, this many per scratchpad, run as one gather
_LOAD_RUN_MAX = 1 << 12  # words in all up to which they are gathered (larger ones copy their rows faster one by one)


def build_loads(sim: Simulator, items: list[tuple[int, Instruction]]) -> Callable | None:
    """One closure for consecutive TLOAD / TLOADC instructions of one base register (their closures' effect, in
    order), or None where that does not pay (fewer than ``_LOAD_RUN`` into a scratchpad, more than ``_LOAD_RUN_MAX``
    words, a static fault among them).

    The loads only read main memory, so run in order they leave each scratchpad word written by any of them holding
    the word of the last load that writes it: per scratchpad one gather (``take``) of main memory with index arrays
    worked out once, straight into the scratchpad where the written words are one range. It runs when every load's
    main-memory extent lies inside main memory (checked as one range per base value, and kept per base value like
    the DMA closures' views); otherwise the loads' own closures run one by one, so the faulting one faults after
    those before it have loaded.
    """
    if len(items) < _LOAD_RUN:
        return None
    fns = [sim._tensor_fn(i) for i, _ in items]  # built first: their static checks, touch_spad, the fallback
    targets: dict[str, tuple[np.ndarray, list[np.ndarray], list[np.ndarray]]] = {}
    lo, hi, total = 1 << 62, -(1 << 62), 0
    for _, ins in items:
        d, _rb, off, rows, cols, stride = ins.args
        name, spad = ("A", sim.spad_a) if ins.op == Op.TLOAD else ("C", sim.spad_c)
        n = rows * cols
        if _span(name, d, n, spad.size):
            return None
        if n == 0:
            continue
        total += n
        r_lo, r_hi, _ = _rows(rows, cols, stride)
        lo, hi = min(lo, off + r_lo), max(hi, off + r_hi)
        src = (np.arange(rows, dtype=np.int64)[:, None] * stride + np.arange(cols, dtype=np.int64) + off).reshape(-1)
        ent = targets.setdefault(name, (spad, [], []))
        ent[1].append(np.arange(d, d + n, dtype=np.int64))
        ent[2].append(src)
    if total > _LOAD_RUN_MAX or not targets or min(len(t[1]) for t in targets.values()) < _LOAD_RUN:
        return None
    plans = []  # (scratchpad view written whole, or None; destination indices; source offsets from the base)
    for spad, dsts, srcs in targets.values():
        dst, src = np.concatenate(dsts)[::-1], np.concatenate(srcs)[::-1]
        dst, last = np.unique(dst, return_index=True)  # the first in reverse order: the last load's word wins
        src = src[last]
        whole = spad[dst[0] : dst[-1] + 1] if dst[-1] - dst[0] + 1 == dst.size else None
        plans.append((whole, spad, dst.astype(np.intp), src))
    mem = sim.mem
    size = mem.size
    index: dict[int, list[np.ndarray]] = {}  # base -> the source indices of each plan (checked extent)

    def dma_in_run(base: int) -> None:
        idx = index.get(base)
        if idx is None:
            if base + lo < 0 or base + hi >= size:  # some load faults: the loads one by one
                for fn in fns:
                    fn(base)
                return  # pragma: no cover - one of them faulted
            idx = [(src + base).astype(np.intp) for _, _, _, src in plans]
            if len(index) < _VIEWS:
                index[base] = idx
        for (whole, spad, dst, _), ix in zip(plans, idx, strict=True):
            if whole is not None:
                mem.take(ix, out=whole, mode="clip")  # every index checked: no buffered bounds-checking take
            else:
                spad[dst] = mem.take(ix, mode="clip")

    return dma_in_run


_RUN_OPS = frozenset(
    {Op.TLOAD, Op.TSTORE, Op.TLOADW, Op.TLOADC, Op.TSTOREC, Op.MATMUL, Op.MATVEC, Op.CONV, Op.POOL}
    | {Op.REQUANTC, Op.TRELU, Op.TCLAMP}
)
_DMA_OPS = frozenset({Op.TLOAD, Op.TSTORE, Op.TLOADW, Op.TLOADC, Op.TSTOREC})


def run_row(sim: Simulator, ins: Instruction) -> tuple[int, int, int, int] | None:
    """Whether the compiled run loop (kernels._tensor_run) executes ``ins``, and its buffers if so: the (int8,
    float64, int64, int32) pool elements it needs. None for an instruction it leaves to its closure: another
    opcode, one whose closure faults on every execution (a scratchpad extent), a product past the direct loops'
    size, a large TLOADW."""
    op, a = ins.op, ins.args
    if op not in _RUN_OPS or not sim.fused:
        return None
    if op in (Op.TLOAD, Op.TLOADC, Op.TSTORE, Op.TSTOREC):
        d, rows, cols = (a[0], a[3], a[4]) if op in (Op.TLOAD, Op.TLOADC) else (a[2], a[3], a[4])
        spad, name = (sim.spad_a, "A") if op in (Op.TLOAD, Op.TSTORE) else (sim.spad_c, "C")
        return None if _span(name, d, rows * cols, spad.size) else (0, 0, 0, 0)
    if op == Op.TLOADW:
        w, count = a[0], a[3]
        nw = cdiv(count, isa.WORD_PENTS)
        if _span("W", w, count, sim.spad_w.size) or nw > _DIRECT_WORDS:
            return None
        return (16 * nw, 0, nw + 1, 0)
    if op in (Op.MATMUL, Op.MATVEC):
        c, x, w, m, n, k, _acc = a if op == Op.MATMUL else (a[0], a[1], a[2], 1, a[3], a[4], a[5])
        bad = _first(
            _span("A", x, m * k, sim.spad_a.size),
            _span("W", w, n * k, sim.spad_w.size),
            _span("C", c, m * n, sim.spad_c.size),
        )
        if bad or not sim.direct_products or m * n == 0 or k == 0 or m * n * k > _DIRECT_MACS:
            return None
        return (n * k, k * n + n + m * k, 3, k * n + n + m * k)
    if op == Op.CONV:
        c, x, w, ih, iw, ic, oc, kh, kw, sh, sw, pt, pl, pb, pr, g, _acc = a
        oh, ow = conv_out(ih, pt, pb, kh, sh), conv_out(iw, pl, pr, kw, sw)
        kk = kh * kw * (ic // g)
        p = oh * ow
        bad = _first(
            _span("A", x, ih * iw * ic, sim.spad_a.size),
            _span("W", w, oc * kk, sim.spad_w.size),
            _span("C", c, p * oc, sim.spad_c.size),
        )
        if bad or not sim.direct_products or p * oc == 0 or kk == 0 or ih * iw * ic == 0 or p * oc * kk > _DIRECT_MACS:
            return None
        return (oc * kk, kk * oc + oc + ih * iw * ic, 3, kk * oc + oc + ih * iw * ic)
    if op == Op.POOL:
        dst, src, ih, iw, c, kh, kw, sh, sw, pt, pl, pb, pr, _mode = a
        n_out = conv_out(ih, pt, pb, kh, sh) * conv_out(iw, pl, pr, kw, sw) * c
        if _first(_span("A", src, ih * iw * c, sim.spad_a.size), _span("A", dst, n_out, sim.spad_a.size)) or not n_out:
            return None
        return (0, 0, n_out, 0)
    if op == Op.REQUANTC:
        dst, src, rows, cols, q, _pents = a
        n = rows * cols
        bad = _first(
            _span("C", src, n, sim.spad_c.size),
            _span("C", q, 2 * cols, sim.spad_c.size),
            _span("A", dst, n, sim.spad_a.size),
        )
        return None if bad or n == 0 else (0, 0, 4 * cols, 0)
    dst, src, count = a[0], a[1], a[2]  # TRELU, TCLAMP
    return (
        None
        if _first(_span("A", src, count, sim.spad_a.size), _span("A", dst, count, sim.spad_a.size))
        else (0, 0, 0, 0)
    )


def build_run(sim: Simulator, items: list[tuple[int, Instruction]], regs: list[int]) -> Callable:
    """One closure for consecutive instructions that :func:`run_row` accepts: a single call of the compiled run loop
    (kernels._tensor_run) executes them in order. Its arguments are the values of ``regs`` (the distinct base
    registers of the DMA instructions other than P0, in that order). Where the loop stops at an instruction (an
    access outside main memory, a word TLOADW refuses, an operand past a loop's guard), that instruction's own
    closure runs it (and reports any fault) and the loop goes on after it."""
    from pcc.runtime import kernels as _k

    kern = kernels.loop("tensor_run")
    n = len(items)
    table = np.zeros((n, _k._ROW), dtype=np.int64)
    sizes = [0, 0, 0, 0]
    fns: list[Callable] = []
    calls_base: list[bool] = []
    for r, (i, ins) in enumerate(items):
        need = run_row(sim, ins)
        assert need is not None
        fns.append(sim._tensor_fn(i))  # built as well: its static checks and touch_spad, and the fallback
        table[r, 0], table[r, 1] = int(ins.op), i
        table[r, 2 : 2 + len(ins.args)] = ins.args
        dma = ins.op in _DMA_OPS
        calls_base.append(dma)
        if dma:
            rb = ins.args[1] if ins.op in (Op.TLOAD, Op.TLOADC, Op.TLOADW) else ins.args[0]
            table[r, _k._BASE] = 0 if rb == 0 else 1 + regs.index(rb)
        table[r, _k._P8], table[r, _k._PF], table[r, _k._P64], table[r, _k._P32] = sizes
        for k in range(4):
            sizes[k] += need[k]
    pools = (np.zeros(sizes[0], np.int8), np.zeros(sizes[1], np.float64), np.zeros(sizes[2], np.int64))
    pools += (np.zeros(sizes[3], np.int32),)
    bv = np.zeros(1 + len(regs), dtype=np.int64)  # bv[0]: P0, always 0
    dirty_run = np.array([1 << 62, -1], dtype=np.int64)
    flag = np.zeros(1, dtype=np.int64)
    mem, A, W, C = sim.mem, sim.spad_a, sim.spad_w, sim.spad_c
    zw, zm, dirty, flags = sim.zero_weights, sim.zero_macs, sim._dirty, sim._flags
    rest = (bv, *pools, zw, zm, dirty_run, flag, WORD_MAX, ACC_MAX, MULT_MAX, SHIFT_MAX)

    def run(*values: int) -> None:
        for k, v in enumerate(values):
            bv[k + 1] = v
        r = 0
        while True:
            r = kern(mem, A, W, C, table, r, *rest)
            if flag[0]:
                flags[3] = 1
                flag[0] = 0
            if dirty_run[1] >= 0:
                dirty[0] = min(dirty[0], int(dirty_run[0]))
                dirty[1] = max(dirty[1], int(dirty_run[1]))
                dirty_run[0], dirty_run[1] = 1 << 62, -1
            if r >= n:
                return
            if calls_base[r]:
                fns[r](int(bv[table[r, _k._BASE]]))
            else:
                fns[r]()
            r += 1

    return run


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
    lo, hi, contiguous = _rows(rows, cols, stride)
    overlapping = rows > 1 and abs(stride) < cols
    dirty = sim._dirty
    sflat = src[s : s + n]
    srows = sflat.reshape(rows, cols)
    views: dict[int, tuple[np.ndarray | None, int, int]] = {}  # base -> (checked destination view, lo, hi)

    def dma_out(base: int) -> None:
        ent = views.get(base)
        if ent is None:
            b = base + off
            if b + lo < 0 or b + hi >= size:
                _dram_check(i, what, b, lo, hi, size)
            if contiguous:
                view = mem[b : b + n]
            elif overlapping:
                view = None
            else:
                view = _row_view(mem, b, rows, cols, stride)
            ent = (view, b + lo, b + hi)
            if len(views) < _VIEWS:
                views[base] = ent
        view, wlo, whi = ent
        if wlo < dirty[0]:  # the written range of main memory, for reset (Simulator.touch)
            dirty[0] = wlo
        if whi > dirty[1]:
            dirty[1] = whi
        v = sflat
        if saturate and (int(v.max()) > WORD_MAX or int(v.min()) < -WORD_MAX):
            flags[3] = 1
            v = np.clip(v, -WORD_MAX, WORD_MAX)
        if contiguous:
            view[...] = v
        elif view is None:  # overlapping rows, in order: where rows overlap, the later one wins
            b = wlo - lo
            for r in range(rows):
                mem[b + r * stride : b + r * stride + cols] = v[r * cols : (r + 1) * cols]
        else:  # disjoint rows
            view[...] = srows if v is sflat else v.reshape(rows, cols)

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
    lookup = sim.decoded.lookup

    def dma_w(base: int) -> None:
        b = base + off
        if b < 0 or b + nw > size:
            _dram_check(i, "TLOADW", b, 0, nw - 1, size)
        spw[w : w + count] = lookup(("TLOADW", b, nw), mem[b : b + nw], decode_words)[:count]

    if sim.fused and nw <= _DIRECT_WORDS:
        # the compiled loop with the pents of its own last words (a larger tile keeps the shared cache, which
        # compares megabytes of words faster than it decodes them)
        kern = kernels.loop("tloadw")
        wcopy, pents, state = np.zeros(nw, np.int64), np.zeros(nw * isa.WORD_PENTS, np.int8), np.zeros(1, np.int64)

        def dma_w_loop(base: int) -> None:
            b = base + off
            if b < 0 or b + nw > size or kern(mem, b, nw, spw, w, count, WORD_MAX, wcopy, pents, state) < 0:
                dma_w(base)  # a fault, or a word outside the 16-pent range: the numpy path reports it

        return dma_w_loop
    return dma_w


def _pent_table() -> np.ndarray:
    """Row ``u`` (0 <= u < 625) holds the four balanced pents of ``u - word_max(4)``, viewed as one uint32."""
    u = np.arange(_CHUNK, dtype=np.int64)
    t = np.empty((_CHUNK, _CHUNK_PENTS), dtype=np.int8)
    for j in range(_CHUNK_PENTS):
        t[:, j] = u % 5 - 2
        u //= 5
    return t.view(np.uint32).reshape(-1)


_CHUNK_PENTS = 4
_CHUNK = 5**_CHUNK_PENTS
_PENTS4 = _pent_table()


def decode_words(words: np.ndarray) -> np.ndarray:
    """The pents of 16-pent words, little-endian, flat int8: ``to_digits(words, 16).reshape(-1)``, faster.

    ``u = v + word_max(16)`` has the ordinary base-5 digits ``d + 2`` of ``v``'s balanced digits ``d`` (the offset
    is 2 in every digit), so ``u`` is cut into four base-625 chunks and each chunk's four pents are read from a
    625-entry table. A word outside the 16-pent range raises ``to_digits``'s ValueError.
    """
    v = np.asarray(words, dtype=np.int64).reshape(-1)
    if v.size and (int(v.min()) < -WORD_MAX or int(v.max()) > WORD_MAX):
        to_digits(v, isa.WORD_PENTS)  # raises
    out = np.empty((v.size, isa.WORD_PENTS // _CHUNK_PENTS), dtype=np.uint32)
    u = v + WORD_MAX
    for j in range(out.shape[1] - 1):
        q = u // _CHUNK
        np.take(_PENTS4, u - q * _CHUNK, out=out[:, j])
        u = q
    np.take(_PENTS4, u, out=out[:, -1])
    return out.view(np.int8).reshape(-1)


class ContentCache:
    """Values derived from the contents of memory (the pents TLOADW decodes from a word range), per simulator.

    An entry holds a copy of the source it was derived from and is used only while the source still holds exactly
    that (compared on every use: about 1 ns a word, against 10-60 ns a word to decode), so no write path (scalar
    stores, DMA, reset, direct writes to the arrays) can make it stale. At most ``limit`` bytes of derived values
    are kept (the source copies add half as much for pents); past that the cache is emptied and refills with what
    runs next.
    """

    def __init__(self, limit: int = 1 << 27) -> None:
        self.limit = limit
        self.nbytes = 0
        self.hits = 0
        self.misses = 0
        self._entries: dict[tuple, tuple[bytes | np.ndarray, object, int, tuple, np.dtype]] = {}

    def lookup(self, key: tuple, source: np.ndarray, derive: Callable[[np.ndarray], object]) -> object:
        """``derive(source)``, from the cache when ``source`` holds what it held when last derived under ``key``."""
        ent = self._entries.get(key)
        same = ent is not None and ent[3] == source.shape and ent[4] == source.dtype
        if source.nbytes >= _BIG_SOURCE and source.flags.c_contiguous:
            # megabytes: compared as uint64 words in place (a bytes copy of the source costs more in fresh pages)
            if same and isinstance(ent[0], np.ndarray) and np.array_equal(_words(ent[0]), _words(source)):
                self.hits += 1
                return ent[1]
            raw: bytes | np.ndarray = source.copy()
        else:
            # the source's bytes, compared as a bytes object: one copy and one memcmp, a tenth of array_equal's
            # overhead for small sources
            raw = source.tobytes()
            if same and isinstance(ent[0], bytes) and ent[0] == raw:
                self.hits += 1
                return ent[1]
        self.misses += 1
        value = derive(source)
        if ent is not None:
            del self._entries[key]
            self.nbytes -= ent[2]
        size = _nbytes(value)
        if size <= self.limit:
            if self.nbytes + size > self.limit:
                self.clear()
            self._entries[key] = (raw, value, size, source.shape, source.dtype)
            self.nbytes += size
        return value

    def clear(self) -> None:
        self._entries.clear()
        self.nbytes = 0

    def __len__(self) -> int:
        return len(self._entries)


_BIG_SOURCE = 1 << 16


def _words(a: np.ndarray) -> np.ndarray:
    """A C-contiguous array's bytes as uint64 words (uint8 when the size is not a multiple of 8)."""
    flat = a.reshape(-1).view(np.uint8)
    return flat.view(np.uint64) if flat.size % 8 == 0 else flat


def _nbytes(value: object) -> int:
    if isinstance(value, np.ndarray):
        return value.nbytes
    if isinstance(value, tuple):
        return sum(_nbytes(v) for v in value)
    return 0


class Workspace:
    """Scratch buffers the closures of one simulator reuse from run to run, one per (role, dtype).

    Instructions run one at a time and no closure keeps a view past its call, so a role's buffer is shared by
    every instruction. Reusing it spares the allocator: a fresh multi-megabyte array is new pages, and a page
    fault per 4 KiB costs more than the arithmetic done on them.
    """

    def __init__(self) -> None:
        self._bufs: dict[tuple[str, np.dtype], np.ndarray] = {}
        self._views: dict[tuple, np.ndarray] = {}  # (role, dtype as passed, shape) -> the view get returned

    def get(self, role: str, shape: tuple[int, ...], dtype: type | np.dtype) -> np.ndarray:
        """An uninitialised C-contiguous array of ``shape`` (a view of the role's buffer, grown as needed)."""
        view = self._views.get((role, dtype, shape))
        if view is not None:  # the same view as last time (a buffer that grows drops every remembered view)
            return view
        key = (role, np.dtype(dtype))
        n = 1
        for d in shape:
            n *= d
        buf = self._bufs.get(key)
        if buf is None or buf.size < n:
            buf = np.empty(max(n, 1), dtype=key[1])
            self._bufs[key] = buf
            self._views.clear()
        view = buf[:n].reshape(shape)
        self._views[(role, dtype, shape)] = view
        return view

    def clear(self) -> None:
        self._bufs.clear()
        self._views.clear()


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


def padded(
    x: np.ndarray, pads: tuple[int, int, int, int], fill: int, dtype: type | np.dtype, out: np.ndarray | None = None
) -> np.ndarray:
    """The HWC image ``x`` padded with ``fill`` by ``pads`` (top, left, bottom, right), as ``dtype``.

    Written into ``out`` (of the padded shape) when given; ``x`` itself when there is nothing to pad or convert.
    """
    pt, pl, pb, pr = pads
    if not (pt or pl or pb or pr) and x.dtype == dtype:
        return x
    ih, iw, ch = x.shape
    shape = (ih + pt + pb, iw + pl + pr, ch)
    xp = np.empty(shape, dtype=dtype) if out is None else out
    if xp.size <= _SMALL_FILL:  # one fill of the whole image costs less than four border writes
        xp.fill(fill)
    else:
        if pt:
            xp[:pt] = fill
        if pb:
            xp[pt + ih :] = fill
        if pl:
            xp[pt : pt + ih, :pl] = fill
        if pr:
            xp[pt : pt + ih, pl + iw :] = fill
    xp[pt : pt + ih, pl : pl + iw] = x
    return xp


def windows(
    x: np.ndarray,
    kh: int,
    kw: int,
    sh: int,
    sw: int,
    pads: tuple[int, int, int, int],
    fill: int,
    out: np.ndarray | None = None,
) -> np.ndarray:
    """The ``(oh, ow, C, kh, kw)`` view of the windows of an HWC image ``x`` padded with ``fill``.

    ``pads`` is (top, left, bottom, right); window ``(oy, ox)`` covers rows ``oy*sh - top ..`` and columns
    ``ox*sw - left ..`` of the input, as in the table's window rule. The padded image is written into ``out``
    when given (its shape, ``x``'s dtype or another one to convert to).
    """
    pt, pl, pb, pr = pads
    ih, iw, ch = x.shape
    oh, ow = conv_out(ih, pt, pb, kh, sh), conv_out(iw, pl, pr, kw, sw)
    xp = padded(x, pads, fill, x.dtype if out is None else out.dtype, out)
    s0, s1, s2 = xp.strides
    return _strided(xp, (oh, ow, ch, kh, kw), (s0 * sh, s1 * sw, s2, s0, s1))


def _strided(base: np.ndarray, shape: tuple[int, ...], strides: tuple[int, ...]) -> np.ndarray:
    """A read-only view of ``base`` (whose extent it must stay within) with ``shape`` and byte ``strides``.

    Built directly on a C-contiguous ``base`` (``sliding_window_view`` and ``as_strided`` cost tens of microseconds,
    much of a small instruction's time); numpy checks the extent against ``base``'s memory.
    """
    if base.flags.c_contiguous and base.size and all(shape):
        v = np.ndarray(shape, base.dtype, base, 0, strides)
    else:
        v = as_strided(base, shape, strides)
    v.flags.writeable = False
    return v


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
    n_in = ih * iw * ic
    pads = (pt, pl, pb, pr)
    if n_out == 0:
        return lambda: None
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
    taps1 = kh == 1 and kw == 1 and not (pt or pl or pb or pr)

    def conv_int8(x: np.ndarray, amax: int, w8: np.ndarray, bound: int, rb: int, res: np.ndarray, add: bool) -> None:
        # res (int64, (p, oc)) = or += the products
        nd = intgemm.digits_for(amax)
        off = intgemm.offset(nd)
        o = ws.get("acc8", (nd * p, oc), np.int32)
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

    def weights(wflat: np.ndarray) -> tuple[np.ndarray, int, int, int]:
        # (weights in the layout the products use, zero pents, max |pent|, max over output channels of sum |pent|):
        # a third of a small CONV's time when recomputed. float64 [g, ocg, kk], or [kk, oc] int8 for the int8 GEMM
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
        )

    xflat = A[a : a + n_in]
    x3 = xflat.reshape(ih, iw, ic)
    wflat = W[w : w + oc * kk]
    cs = C[c : c + n_out]
    x_absmax = _absmax((n_in,), sim.fused) if n_in else None
    cs_absmax = _absmax((n_out,), sim.fused)

    def conv() -> None:
        wl = None
        if kk == 0 or seen[1] >= 3 and 2 * seen[1] > seen[0]:  # weights that change from run to run: no cache
            zeros = oc * kk - int(np.count_nonzero(wflat))
            wmax = max(int(wflat.max()), -int(wflat.min())) if kk else 0
            wl1 = wmax * kk
        else:
            seen[0] += 1
            misses = cache.misses
            wl, zeros, wmax, wl1 = cache.lookup(key, wflat, weights)
            seen[1] += cache.misses - misses
        if zeros:
            zw[i] += zeros
            zm[i] += p * zeros
        if x_absmax is None or kk == 0:
            prod = np.zeros(n_out, dtype=np.int64)
            if acc:
                prod += cs
            cs[:] = _saturate_acc(prod, flags)
            return
        amax = x_absmax(xflat)
        bound = amax * wl1  # every partial sum of an output is a sum of some of its products
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

    if sim.direct_products and kk > 0 and n_in > 0 and p * oc * kk <= _DIRECT_MACS:
        kern = kernels.loop("conv_small")

        geometry = (ih, iw, ic, W, w, oc, kh, kw, sh, sw, pt, pl, oh, ow, g)
        args = (A, a, *geometry, C, c, acc, ACC_MAX, *_direct_buffers(oc, kk, n_in))

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
    if sim.fused:
        kern = kernels.loop("pool")
        apart = dst + n_out <= src or src + n_in <= dst
        tmp = np.empty(1 if apart else n_out, dtype=np.int64)  # the result, where it would overwrite the source
        numpy_pool = _pool_numpy(sim, (dst, src, ih, iw, c, kh, kw, sh, sw, pt, pl, pb, pr, mode))

        def pool_loop() -> None:
            if kern(A, dst, src, ih, iw, c, kh, kw, sh, sw, pt, pl, oh, ow, mode, tmp) < 0:
                numpy_pool()  # an average whose sums could leave int64

        return pool_loop
    return _pool_numpy(sim, (dst, src, ih, iw, c, kh, kw, sh, sw, pt, pl, pb, pr, mode))


def _pool_numpy(sim: Simulator, fields: tuple[int, ...]) -> Callable:
    """POOL's numpy closure (the fields of :func:`_pool`, checked there)."""
    dst, src, ih, iw, c, kh, kw, sh, sw, pt, pl, pb, pr, mode = fields
    A = sim.spad_a
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
        src_view = A[src : src + n_in].reshape(ih, iw, c)
        win = windows(src_view, kh, kw, sh, sw, pads, 0)
        taps = [win[..., ky, kx] for ky in range(kh) for kx in range(kw)]
        dst_view = A[dst : dst + n_out].reshape(oh, ow, c)
        apart = dst + n_out <= src or src + n_in <= dst

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
    apart = dst + n_out <= src or src + n_in <= dst
    direct = A[dst : dst + n_out].reshape(oh, ow, c) if mode == 0 and apart else None

    def pool() -> None:
        x = A[src : src + n_in].reshape(ih, iw, c)
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

        def requantc_loop() -> None:
            st = kern(C, src, rows, cols, q, A, dst, cap, MULT_MAX, SHIFT_MAX, tab)
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

    def eadd() -> None:
        if fused:
            st = kernels.eadd(xv, yv, px, py, cap, out)
            if st >= 0:
                if st:
                    flags[3] = 1
                return
        # both terms into work buffers (the sources may overlap the destination), their sum into the destination
        neg = ws.get("neg", (count,), np.bool_)
        tx, ty = ws.get("eadd_x", (count,), np.int64), ws.get("eadd_y", (count,), np.int64)
        bound = _msr_into(xv, mx, sx, tx, neg, plan_x)
        bound += _msr_into(yv, my, sy, ty, neg, plan_y)  # |each| <= ACC_MAX: the sum fits an int64
        np.add(tx, ty, out=out)
        if bound > cap and (int(out.max()) > cap or int(out.min()) < -cap):
            flags[3] = 1
            np.clip(out, -cap, cap, out=out)

    return eadd


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
    Op.TRELU: _unary("TRELU", _relu),
    Op.TCLAMP: _unary("TCLAMP", _clamp),
    Op.TLUT: _tlut,
}


def tensor_opcodes() -> frozenset[int]:
    """The opcodes executed by closures of this module (every tensor instruction of the table)."""
    return frozenset(_MAKERS)


__all__ = [
    "EXACT_F64",
    "ContentCache",
    "Workspace",
    "build",
    "build_loads",
    "decode_words",
    "exact_dot",
    "padded",
    "tensor_opcodes",
    "windows",
]
