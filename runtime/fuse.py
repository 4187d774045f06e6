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

from pcc.backend.program import Instruction
from pcc.isa import Op

ENABLED = True  # False: every row runs as itself (for tests and timing; the machine state is the same)
_FUSED, _LO, _HI = 8, 9, 10  # columns of a REQUANTC row of the run table (its fields are columns 2..7)
_I64_MAX = (1 << 63) - 1


def fusions(items: list[Instruction]) -> list[tuple[int, int, int]]:
    """(row of the REQUANTC, clamp's lo, clamp's hi) for each REQUANTC of ``items`` (consecutive run rows) whose next
    row is a TRELU or TCLAMP over exactly its destination, in place."""
    out: list[tuple[int, int, int]] = []
    for r in range(len(items) - 1 if ENABLED else 0):
        a, b = items[r], items[r + 1]
        if a.op != Op.REQUANTC or b.op not in (Op.TRELU, Op.TCLAMP):
            continue
        dst, _src, rows, cols = a.args[:4]
        n = rows * cols
        if n == 0 or b.args[0] != dst or b.args[1] != dst or b.args[2] != n:
            continue
        lo, hi = (0, _I64_MAX) if b.op == Op.TRELU else (b.args[3], b.args[4])
        out.append((r, lo, hi))
    return out
