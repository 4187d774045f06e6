"""Fusion of consecutive tensor instructions inside the compiled run loop (``kernels._tensor_run``).

A REQUANTC followed directly by a TRELU or TCLAMP whose source and destination are both exactly the REQUANTC's
destination range (the compiler's conv -> requantise -> activation) is one pass: the loop requantises each
element, clamps it, and writes the clamped value once, where the two instructions take two passes over the A
scratchpad (a write, then a read and a write). Every word either writes holds the same value afterwards, and the
S flag is the REQUANTC's (the clamp sets no flag), so the machine state is the one the two instructions leave
(``runtime/isa_ref.py``; tested in ``tests/runtime/test_runtime_fuse.py``).

:func:`fusions` marks the pairs in a run's table: the REQUANTC row carries ``_FUSED = 1`` and the clamp's bounds
(TRELU's are 0 and the largest int64) in columns its six fields leave free. The run loop then executes the pair
as one call of ``kernels._requantc`` with the clamp's bounds and steps past the clamp row. Where the loop hands
the REQUANTC back (a multiplier or shift out of range, an operand past int64), nothing is skipped: the
REQUANTC's own closure runs it and the loop goes on at the clamp row, which then runs as itself.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from pcc.backend.program import Instruction
from pcc.isa import ACC_MAX, Op, word_max

if TYPE_CHECKING:
    from pcc.runtime.simulator import Simulator

ENABLED = True  # False: every row runs as itself (for tests and timing; the machine state is the same)
_FUSED, _LO, _HI = 8, 9, 10  # columns of a REQUANTC row of the run table (its fields are columns 2..7)
_I64_MAX = (1 << 63) - 1
HAND = -1  # the opcode column of a row the run loop hands to Python: the first row of a chain (below)


def fusions(items: list[Instruction]) -> list[tuple[int, int, int, int]]:
    """(row, what, lo, hi) for each REQUANTC of ``items`` (consecutive rows of one run) that fuses with the rows
    after it: ``what`` bit 0 (1), the next row is a TRELU or TCLAMP over exactly its destination, in place (lo, hi:
    its bounds); bit 1 (2), the row after those is a TSTORE of exactly that range to one contiguous range of main
    memory (rows of ``cols`` words at a stride of ``cols``, or one row)."""
    out: list[tuple[int, int, int, int]] = []
    for r in range(len(items) if ENABLED else 0):
        a = items[r]
        if a.op != Op.REQUANTC:
            continue
        dst, _src, rows, cols = a.args[:4]
        n = rows * cols
        what, lo, hi, nxt = 0, 0, 0, r + 1
        b = items[nxt] if nxt < len(items) else None
        if n and b is not None and b.op in (Op.TRELU, Op.TCLAMP) and b.args[:3] == (dst, dst, n):
            what, nxt = 1, nxt + 1
            lo, hi = (0, _I64_MAX) if b.op == Op.TRELU else (b.args[3], b.args[4])
        s = items[nxt] if nxt < len(items) else None
        if n and s is not None and s.op == Op.TSTORE:
            _rb, _off, src, srows, scols, stride = s.args
            if src == dst and srows * scols == n and (srows == 1 or stride == scols):
                what |= 2
        if what:
            out.append((r, what, lo, hi))
    return out


# ---- chains: (TLOAD ->) EADD -> TLUT (-> TSTORE), one pass through a closure of their own ------------------------


def _apart(a: int, b: int, n: int) -> bool:
    """Whether the ranges ``[a, a + n)`` and ``[b, b + n)`` coincide or do not overlap (an element-for-element
    loop then reads every element before it writes it)."""
    return a == b or a + n <= b or b + n <= a


def _contiguous(rows: int, cols: int, stride: int) -> bool:
    return rows == 1 or stride == cols


@dataclass(frozen=True)
class Chain:
    """Rows ``row .. row + length - 1`` of a run: an optional TLOAD of exactly the EADD's destination from one
    contiguous main-memory range, the EADD (each source its destination or apart from it), a TLUT in place over
    that destination (its table apart from it) and an optional TSTORE of exactly that range to one contiguous
    range. The compiler's hard-swish, SiLU and sigmoid: TLOAD x, rescale, look up, TSTORE."""

    row: int
    length: int
    load: bool
    store: bool


def chains(items: list[Instruction]) -> list[Chain]:
    """The chains among ``items`` (consecutive rows of one run), none overlapping another or a REQUANTC fusion."""
    out: list[Chain] = []
    r = 0
    while ENABLED and r < len(items):
        c = _chain_at(items, r)
        if c is None:
            r += 1
            continue
        out.append(c)
        r += c.length
    return out


def _chain_at(items: list[Instruction], r: int) -> Chain | None:
    at = lambda k: items[k] if k < len(items) else None  # noqa: E731
    load = at(r) is not None and items[r].op == Op.TLOAD
    e = at(r + load)
    if e is None or e.op != Op.EADD:
        return None
    dst, x, y, n = e.args[:4]
    if n == 0 or not (_apart(x, dst, n) and _apart(y, dst, n)):
        return None
    if load:
        d, _rb, _off, rows, cols, stride = items[r].args
        if d != dst or rows * cols != n or not _contiguous(rows, cols, stride):
            return None
    t = at(r + load + 1)
    if t is None or t.op != Op.TLUT:
        return None
    tdst, tsrc, tcount, table, _lo, tn = t.args
    if (tdst, tsrc, tcount) != (dst, dst, n) or tn < 1 or not (table + tn <= dst or dst + n <= table):
        return None
    s = at(r + load + 2)
    store = False
    if s is not None and s.op == Op.TSTORE:
        _rb, _off, src, rows, cols, stride = s.args
        store = src == dst and rows * cols == n and _contiguous(rows, cols, stride)
    return Chain(r, load + 2 + store, load, store)


def chain_fn(
    sim: Simulator, chain: Chain, items: list[Instruction], fns: list[Callable], bases: list[int], bv: np.ndarray
) -> Callable[[], None]:
    """The closure that executes ``chain`` (its rows' closures ``fns``, their base-value slots ``bases``, -1 for
    none, in the run's value array ``bv``): one pass of ``kernels_vec._eadd_lut`` that reads the sources (main
    memory for the fused TLOAD's), writes each result once to A and to the store's range. Where a main-memory
    range is outside memory, the load's and the store's ranges overlap other than exactly, or an EADD operand is
    past the rescale's int64 limit (the loop writes nothing then), the rows' own closures run instead, in order,
    and report any fault."""
    from pcc.runtime import kernels
    from pcc.runtime.vector import _limit, _msr_plan

    r, ld = chain.row, chain.load
    e, t = items[r + ld], items[r + ld + 1]
    dst, x, y, n, mx, sx, my, sy, pents = e.args
    _t, _s, _c, table, lo, tn = t.args
    plans = _msr_plan(mx, sx), _msr_plan(my, sy)
    rows = range(r, r + chain.length)
    own = [(fns[k], bases[k]) for k in rows]

    def each() -> None:
        for fn, slot in own:
            if slot < 0:
                fn()
            else:
                fn(int(bv[slot]))

    if plans[0] is None or plans[1] is None:
        return each
    px, py = ((p[0], p[1], p[2], _limit(p[2], p[3])) for p in plans)
    kern = kernels.loop("eadd_lut")
    A, mem, flags, dirty = sim.spad_a, sim.mem, sim._flags, sim._dirty
    size, cap = mem.size, word_max(pents)
    out, tab, none = A[dst : dst + n], A[table : table + tn], mem[0:0]
    xa, ya = A[x : x + n], A[y : y + n]
    lslot, loff = (bases[r], items[r].args[2]) if ld else (0, 0)
    sins = items[r + chain.length - 1]
    sslot, soff = (bases[r + chain.length - 1], sins.args[1]) if chain.store else (0, 0)

    def run_chain() -> None:
        xv, yv, mo = xa, ya, none
        if ld:
            b = int(bv[lslot]) + loff
            if b < 0 or b + n > size:
                return each()
            if x == dst:
                xv = mem[b : b + n]
            if y == dst:
                yv = mem[b : b + n]
        if chain.store:
            c = int(bv[sslot]) + soff
            if c < 0 or c + n > size or (ld and not _apart(b, c, n)):
                return each()
            mo = mem[c : c + n]
        st = kern(xv, yv, *px, *py, ACC_MAX, cap, tab, lo, tn, out, mo)
        if st < 0:
            return each()
        if st:
            flags[3] = 1
        if chain.store:
            dirty[0] = min(dirty[0], c)
            dirty[1] = max(dirty[1], c + n - 1)
        return None

    return run_chain
