"""Fusion of consecutive tensor instructions inside the compiled run loop (``kernels_run._tensor_run``).

A REQUANTC followed directly by a TRELU or TCLAMP whose source and destination are both exactly the REQUANTC's
destination range (the compiler's conv -> requantise -> activation) is one pass: the loop requantises each
element, clamps it, and writes the clamped value once, where the two instructions take two passes over the A
scratchpad (a write, then a read and a write). Every word either writes holds the same value afterwards, and the
S flag is the REQUANTC's (the clamp sets no flag), so the machine state is the one the two instructions leave
(``runtime/isa_ref.py``; tested in ``tests/runtime/test_runtime_fuse.py``).

:func:`fusions` marks the pairs in a run's table: the REQUANTC row carries ``_FUSED = 1`` and the clamp's bounds
(TRELU's are 0 and the largest int64) in columns its six fields leave free. The run loop then executes the pair
as one call of ``kernels_run._requantc`` with the clamp's bounds and steps past the clamp row. Where the loop hands
the REQUANTC back (a multiplier or shift out of range, an operand past int64), nothing is skipped: the
REQUANTC's own closure runs it and the loop goes on at the clamp row, which then runs as itself.

The compiler's table activation, an EADD that rescales a range in place (``EADD d, d, d, n, m, s, 0, sy, p``: a
second multiplier of 0) followed directly by ``TLUT d, d, n, table, lo, k`` over the same range with a table
apart from it, is one pass too (:func:`lut_pair`; ``runtime/vector.py`` ``_rescale_lut``): each element is
rescaled, clipped to the EADD's width, clamped into the table and looked up, and only the looked-up value is
written, which is the value the TLUT leaves there; the S flag is the EADD's (TLUT writes no flag). Where the loop
declines (an operand past the rescale's int64 limit), the two instructions run as themselves.

Where such a pair follows a REQUANTC (and its clamp) over exactly the REQUANTC's destination, the run loop takes
it into the REQUANTC's pass (bit 2 of ``_FUSED``; the pair's two rows are then rows of the run): each row of
requantised values is rescaled and looked up while it is in cache, and the fused TSTORE, if any, copies the
looked-up row. It fuses only where every value the REQUANTC (and clamp) can leave is within the rescale's int64
limit, so the rescale cannot decline; the S flag is set if either the REQUANTC or the EADD clipped, as the two set
it. Where the loop hands the REQUANTC back, the EADD and TLUT rows are handed back too and run as themselves.

Where the values such a pass leaves in A die there unread (the straight-line program overwrites the whole range
before any instruction reads a word of it, and the TSTORE's copy stays as it is until then:
``Simulator.elide``, ``effects.dead_after``), bit 3 (8) of ``_FUSED`` makes the pass write only the TSTORE's
main-memory range, a third less traffic than A and the copy; a fault before the range dies puts the copy back
into A, so every state a run can stop in is the one the instructions leave.

A layer's bias, a TLOADC broadcasting one row over the C range that the next instruction, a CONV with ``acc = 1``,
adds its products to (:func:`bias_pair`; the compiler emits the two together), is one closure where the CONV's
products are float32 (``runtime/products.py``): the store adds the row to each pixel's products as it writes C,
where the two instructions write C, then read it back and write it again. The TLOADC's main-memory range is
checked first (a fault there is the TLOADC's, with nothing written); on the CONV's other engines the row is
broadcast into C first, as the TLOADC does. In the compiled run loop, a depthwise CONV (whole output rows) adds
the row itself where the pair are consecutive rows of a run with the TLOADC's range static (P0) and inside main
memory: the TLOADC row is skipped, and where the loop hands the CONV back, the row is broadcast into C first.
"""

from __future__ import annotations

from pcc.backend.program import Instruction
from pcc.isa import SHIFT_MAX, Op, conv_out
from pcc.pentary import word_max

ENABLED = True  # False: every row runs as itself (for tests and timing; the machine state is the same)
LUT_PAIR = True  # False: EADD + TLUT table activations run as two instructions (the same machine state)
LUT_TAIL = True  # False: a table activation after a REQUANTC runs as its own pass (the same machine state)
BIAS_PAIR = True  # False: a TLOADC bias broadcast and the CONV adding to it run as two instructions (the same)
ELIDE = True  # False: a fused REQUANTC .. TSTORE writes A even where the values die there unread (the same)
_FUSED, _LO, _HI = 8, 9, 10  # columns of a REQUANTC row of the run table (its fields are columns 2..7)
_I64_MAX = (1 << 63) - 1


def fusions(items: list[Instruction]) -> list[tuple[int, int, int, int]]:
    """(row, what, lo, hi) for each REQUANTC of ``items`` (consecutive rows of one run) that fuses with the rows
    after it: ``what`` bit 0 (1), the next row is a TRELU or TCLAMP over exactly its destination, in place (lo, hi:
    its bounds); bit 2 (4), the two rows after those are a table activation (:func:`lut_tail`) over that range;
    bit 1 (2), the row after those is a TSTORE of exactly that range to one contiguous range of main memory (rows
    of ``cols`` words at a stride of ``cols``, or one row)."""
    out: list[tuple[int, int, int, int]] = []
    for r in range(len(items) if ENABLED else 0):
        a = items[r]
        if a.op != Op.REQUANTC:
            continue
        dst, _src, rows, cols, _q, pents = a.args
        n = rows * cols
        what, lo, hi, nxt = 0, 0, 0, r + 1
        b = items[nxt] if nxt < len(items) else None
        if n and b is not None and b.op in (Op.TRELU, Op.TCLAMP) and b.args[:3] == (dst, dst, n):
            what, nxt = 1, nxt + 1
            lo, hi = (0, _I64_MAX) if b.op == Op.TRELU else (b.args[3], b.args[4])
        cap = word_max(pents)
        # the largest |value| left in A (the clamp is monotonic: its images of -cap and cap)
        bound = max(abs(min(max(-cap, lo), hi)), abs(min(max(cap, lo), hi))) if what else cap
        if n and nxt + 1 < len(items) and lut_tail(items[nxt], items[nxt + 1], dst, n, bound):
            what, nxt = what | 4, nxt + 2
        s = items[nxt] if nxt < len(items) else None
        if n and s is not None and s.op == Op.TSTORE:
            _rb, _off, src, srows, scols, stride = s.args
            if src == dst and srows * scols == n and (srows == 1 or stride == scols):
                what |= 2
        if what:
            out.append((r, what, lo, hi))
    return out


def lut_pair(a: Instruction, b: Instruction) -> bool:
    """Whether ``a`` then ``b`` is the table activation that runs as one pass: ``a`` an EADD rescaling a range in
    place (destination and both sources the same, second multiplier 0), ``b`` a TLUT of exactly that range in
    place, with at least one table entry and the table apart from the range."""
    if not (ENABLED and LUT_PAIR) or a.op != Op.EADD or b.op != Op.TLUT:
        return False
    dst, x, y, count, _mx, _sx, my, _sy, _pents = a.args
    tdst, tsrc, tcount, table, _lo, n = b.args
    if not (dst == x == y == tdst == tsrc and count == tcount and my == 0 and count > 0 and n >= 1):
        return False
    return table + n <= dst or dst + count <= table


def lut_tail(a: Instruction, b: Instruction, dst: int, n: int, bound: int) -> bool:
    """Whether ``a`` then ``b`` is a table activation (:func:`lut_pair`) of exactly ``A[dst : dst + n]`` whose
    rescale keeps in int64 for every ``|x| <= bound`` (its multiplier and shift in range; the common-shift
    condition of ``pcc.runtime.vector._limit``), so that the run loop can apply it to a REQUANTC's rows."""
    if not LUT_TAIL or not lut_pair(a, b) or a.args[0] != dst or a.args[3] != n:
        return False
    mx, sx = a.args[4], a.args[5]
    return mx >= 0 and 0 <= sx <= SHIFT_MAX and bound * mx + ((1 << sx) >> 1) < 1 << 63


def bias_pair(a: Instruction, b: Instruction) -> bool:
    """Whether ``a`` then ``b`` is a layer's bias and its products: ``a`` a TLOADC broadcasting one row of words
    (stride 0) over exactly the C range that ``b``, a CONV with ``acc = 1``, then adds its products to, one word
    per output channel. The simulator may then add the row in CONV's store instead of writing C twice
    (``products._conv``'s ``bias``); C holds the same words after the two."""
    if not (ENABLED and BIAS_PAIR) or a.op != Op.TLOADC or b.op != Op.CONV:
        return False
    c, _rb, _off, rows, cols, stride = a.args
    cc, _x, _w, ih, iw, _ic, oc, kh, kw, sh, sw, pt, pl, pb, pr, _g, acc = b.args
    if stride != 0 or acc != 1 or cc != c or cols != oc or oc == 0:
        return False
    return rows == conv_out(ih, pt, pb, kh, sh) * conv_out(iw, pl, pr, kw, sw) > 0
