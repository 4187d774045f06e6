"""Tensor instructions: one numpy closure per instruction, built once with its field values bound (:func:`build`,
from the makers of ``runtime/dma.py``, ``runtime/products.py`` and ``runtime/vector.py``, which share
``runtime/tensor_base.py``), and runs of them as one call of the compiled run loop (:func:`build_run`).

Every closure implements its instruction's rule in ``runtime/isa_ref.py`` exactly (tested against it):

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
``_msr_into``'s arithmetic with them and no bool temporary. ``products._BAND_CONV``,
``_WIDE_GEMM`` and ``_GATHER_CONV`` switch the CONV formulations (for tests and timing; the results are the same).

S (sticky) is set through the simulator's flag list when a result saturates.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np

from pcc import isa
from pcc.backend.program import Instruction
from pcc.isa import ACC_MAX, MULT_MAX, SHIFT_MAX, WORD_MAX, Op, cdiv, conv_out
from pcc.runtime import fuse, kernels
from pcc.runtime.dma import (
    _DIRECT_WORDS,
    _tload,
    _tloadc,
    _tloadw,
    _tstore,
    _tstorec,
    build_loads,
    decode_words,
)
from pcc.runtime.products import _DIRECT_MACS, _amatmul, _conv, _matmul, _matvec, direct_conv
from pcc.runtime.tensor_base import (
    EXACT_F64,
    ContentCache,
    Workspace,
    _first,
    _span,
    exact_dot,
    padded,
    windows,
)
from pcc.runtime.vector import _clamp, _eadd, _emul, _pool, _relu, _requant, _requantc, _rescale_lut, _tlut, _unary

if TYPE_CHECKING:
    from pcc.runtime.simulator import Simulator


def build(sim: Simulator, i: int, ins: Instruction) -> Callable:
    """The closure that executes tensor instruction ``i`` (DMA closures take the base register's value)."""
    maker = _MAKERS[ins.op]
    return maker(sim, i, *ins.args)


_RUN_OPS = frozenset(
    {Op.TLOAD, Op.TSTORE, Op.TLOADW, Op.TLOADC, Op.TSTOREC, Op.MATMUL, Op.MATVEC, Op.CONV, Op.POOL}
    | {Op.REQUANTC, Op.TRELU, Op.TCLAMP}
)
_DMA_OPS = frozenset({Op.TLOAD, Op.TSTORE, Op.TLOADW, Op.TLOADC, Op.TSTOREC})


def run_row(sim: Simulator, ins: Instruction) -> tuple[int, int, int, int] | None:
    """Whether the compiled run loop (kernels_run._tensor_run) executes ``ins``, and its buffers if so: the (int8,
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
        if bad or not sim.direct_products or ih * iw * ic == 0 or not direct_conv(ic, oc, kk, p, g):
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


def run_tail(sim: Simulator, prev: list[Instruction], a: Instruction, b: Instruction) -> bool:
    """Whether the table activation ``a``, ``b`` (an EADD rescale, a TLUT) joins a run whose last rows are ``prev``
    (up to two): where a REQUANTC, or a REQUANTC and its clamp, ends ``prev`` and fuses with them
    (``fuse.fusions`` bit 2) and the table lies inside A. The run loop then applies it in the REQUANTC's pass."""
    if not sim.fused or not prev or a.op != Op.EADD or b.op != Op.TLUT:
        return False
    table, n = b.args[3], b.args[5]
    if _span("A", table, n, sim.spad_a.size) or _span("A", a.args[0], a.args[3], sim.spad_a.size):
        return False
    last = len(prev) - 1
    return any(what & 4 and r + (what & 1) == last for r, what, _lo, _hi in fuse.fusions([*prev, a, b]))


def build_run(sim: Simulator, items: list[tuple[int, Instruction]], regs: list[int]) -> Callable:
    """One closure for consecutive instructions that :func:`run_row` accepts: a single call of the compiled run loop
    (kernels_run._tensor_run) executes them in order. Its arguments are the values of ``regs`` (the distinct base
    registers of the DMA instructions other than P0, in that order). Where the loop stops at an instruction (an
    access outside main memory, a word TLOADW refuses, an operand past a loop's guard), that instruction's own
    closure runs it (and reports any fault) and the loop goes on after it."""
    from pcc.runtime import kernels_run as _k

    kern = kernels.loop("tensor_run")
    n = len(items)
    table = np.zeros((n, _k._ROW), dtype=np.int64)
    sizes = [0, 0, 0, 0]
    fns: list[Callable] = []
    calls_base: list[bool] = []
    for r, (i, ins) in enumerate(items):
        need = (0, 0, 0, 0) if ins.op in (Op.EADD, Op.TLUT) else run_row(sim, ins)  # EADD, TLUT: a run_tail
        assert need is not None
        fns.append(sim._tensor_fn(i))  # built as well: its static checks and touch_spad, and the fallback
        table[r, 0], table[r, 1] = int(ins.op), i
        table[r, 2 : 2 + len(ins.args)] = ins.args
        dma = ins.op in _DMA_OPS
        calls_base.append(dma)
        if dma:
            rb = ins.args[1] if ins.op in (Op.TLOAD, Op.TLOADC, Op.TLOADW) else ins.args[0]
            table[r, _k._BASE] = 0 if rb == 0 else 1 + regs.index(rb)
            part = sim.forwarded(i) if ins.op == Op.TLOAD else None
            if part is not None:  # its reader reads the source in main memory: it loads only this part, or skips
                lo, hi = part
                if hi > lo:
                    a, _rb, off = ins.args[:3]
                    table[r, 2:8] = (lo, 0, off + lo - a, 1, hi - lo, hi - lo)
                else:
                    table[r, fuse._FUSED] = _k._SKIP
        elif ins.op in (Op.CONV, Op.POOL) and (src := sim.source(i)) is not None:
            table[r, _k._BASE] = 1 + src  # the input in main memory from there (a forwarded TLOAD's source)
        table[r, _k._P8], table[r, _k._PF], table[r, _k._P64], table[r, _k._P32] = sizes
        for k in range(4):
            sizes[k] += need[k]
    for r in range(n - 1):  # a bias broadcast the CONV after it takes (fuse.bias_pair; kernels_run._conv_small)
        (_, a), (_, b) = items[r], items[r + 1]
        if fuse.bias_pair(a, b) and a.args[1] == 0 and 0 <= a.args[2] <= sim.mem.size - a.args[4]:
            table[r, fuse._FUSED] = _k._SKIP
            table[r + 1, _k._BIAS] = 1 + a.args[2]
    for r, what, lo, hi in fuse.fusions([ins for _, ins in items]):  # REQUANTC + TRELU/TCLAMP + TSTORE, one pass
        t = r + 1 + (what & 1) + 2 * ((what >> 2) & 1)  # the fused TSTORE's row (what & 2)
        if what & 2 and fuse.ELIDE and sim.elide(items[r][0], items[t][0]):
            what |= 8  # its values die in A before they are read: the pass writes only main memory
        table[r, fuse._FUSED], table[r, fuse._LO], table[r, fuse._HI] = what, lo, hi
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


def build_pair(sim: Simulator, i: int) -> Callable | None:
    """One closure for instructions ``i`` and ``i + 1`` where ``fuse.lut_pair`` fuses them (the compiler's table
    activation: an EADD rescale and a TLUT in place, one pass); None where they run as themselves."""
    instrs = sim.program.instructions
    if i + 1 >= len(instrs) or not fuse.lut_pair(instrs[i], instrs[i + 1]):
        return None
    return _rescale_lut(sim, i, sim._tensor_fn(i), sim._tensor_fn(i + 1))


def build_bias(sim: Simulator, i: int) -> Callable | None:
    """One closure for instructions ``i``, a TLOADC, and ``i + 1``, a CONV, where ``fuse.bias_pair`` fuses them
    (the layer's bias added in the CONV's float32 store; it takes the TLOADC's base register value); None where
    they run as themselves (no compiled loops, a scratchpad extent that faults, a CONV of the run loop or of no
    float32 store)."""
    instrs = sim.program.instructions
    if not sim.fused or i + 1 >= len(instrs) or not fuse.bias_pair(instrs[i], instrs[i + 1]):
        return None
    a, b = instrs[i], instrs[i + 1]
    c, _rb, off, rows, cols, _stride = a.args
    if _span("C", c, rows * cols, sim.spad_c.size) or run_row(sim, b) is not None:
        return None
    return _conv(sim, i + 1, *b.args, bias=(sim._tensor_fn(i), off))


_MAKERS: dict[int, Callable[..., Callable]] = {
    Op.TLOAD: _tload,
    Op.TSTORE: _tstore,
    Op.TLOADW: _tloadw,
    Op.TLOADC: _tloadc,
    Op.TSTOREC: _tstorec,
    Op.MATMUL: _matmul,
    Op.AMATMUL: _amatmul,
    Op.MATVEC: _matvec,
    Op.CONV: _conv,
    Op.POOL: _pool,
    Op.REQUANT: _requant,
    Op.REQUANTC: _requantc,
    Op.EADD: _eadd,
    Op.TRELU: _unary("TRELU", _relu),
    Op.TCLAMP: _unary("TCLAMP", _clamp),
    Op.TLUT: _tlut,
    Op.EMUL: _emul,
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
    "build_pair",
    "decode_words",
    "exact_dot",
    "padded",
    "tensor_opcodes",
    "windows",
]
