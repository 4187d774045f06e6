"""What each instruction reads and writes, and the reset plan it gives a straight-line program.

Each opcode has one rule in :data:`EFFECTS`: ``rule(args) -> (reads, writes)``, each a tuple of ``(space, lo,
hi)`` half-open word ranges of main memory (``"M"``) or a scratchpad (``"A"``, ``"W"``, ``"C"``), or None where
the ranges depend on the machine state (an address in a register other than P0, the stack, a branch). The reads
may be more than the instruction reads (an operand its fields make irrelevant); the writes are exact: every word
in them holds, afterwards, a value the instruction computed from its reads alone. An instruction faults before it
writes anything (``runtime/isa_ref.py``), so a fault leaves its writes undone.

:func:`reset_plan` walks a program from its first instruction to its first HALT. Where every instruction on the
way has a rule (so the program is one path, the same on every run), it returns, per space, the words the path
writes before it reads them (the union of the writes, less every word some instruction reads before an earlier
one has written it). After a run of that path to its HALT, the next run writes each of these words before it
reads it, so :meth:`Simulator.reset` need not clear them: the value they hold is never seen, and the state the
run ends in is the one it ends in from a cleared machine. Where such a run faults, the simulator clears the ones
the instructions before the fault did not write (:func:`written_before`), so that the state at the fault is the
cleared machine's too.

:func:`dead_words` (and :func:`dead_after`, where all of a range dies) tells where the values an instruction
leaves in A die: where a later one copies them to main memory and the path then overwrites all of them before
reading any, the simulator's fused requantise-and-store writes only the copy; a fault before they die puts the
copy back into A (``Simulator._restore``). Likewise with :func:`first_reader`: a TLOAD whose first reader is a
CONV or a POOL reading inside its range, and of whose values only one range is read later, loads only that range
(or nothing), and the reader reads the TLOAD's source in main memory.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable, Sequence

from pcc.backend.program import Instruction
from pcc.isa import WORD_PENTS, Op, cdiv, conv_out

Range = tuple[str, int, int]
Effect = tuple[tuple[Range, ...], tuple[Range, ...]] | None
SPACES = "MAWC"
SCAN = 512  # instructions a search for a range's readers and writers looks ahead (beyond: as if read there)
ROWS = 1 << 16  # rows at a stride an instruction's rule lists one by one (the zoo's most: 12,544, a 112 x 112 shuffle)
RANGES = 1 << 19  # ranges a path's rules may hold in all (the zoo's most: 65 K, ShuffleNetV2)

EFFECTS: dict[int, Callable[[Sequence[int]], Effect]] = {}


def effect(*ops: Op) -> Callable[[Callable[[Sequence[int]], Effect]], Callable[[Sequence[int]], Effect]]:
    """Register ``fn`` as the rule of ``ops``."""

    def register(fn: Callable[[Sequence[int]], Effect]) -> Callable[[Sequence[int]], Effect]:
        for op in ops:
            assert int(op) not in EFFECTS, op
            EFFECTS[int(op)] = fn
        return fn

    return register


def _span(space: str, lo: int, n: int) -> tuple[Range, ...]:
    return ((space, lo, lo + n),) if n > 0 else ()


def _rows(b: int, rows: int, cols: int, stride: int, exact: bool) -> tuple[Range, ...] | None:
    """The main-memory words of ``rows`` rows of ``cols`` words from ``b`` at ``stride``: one range per row, or one
    for all where they are contiguous (stride == cols) or the same (stride == 0). Past ``ROWS`` rows apart, their
    bounding range where more words may stand for them (reads), else None (a program's file sets the count: the
    analysis of one of many such rows would hold millions of ranges)."""
    if rows <= 0 or cols <= 0:
        return ()
    if rows == 1 or stride == 0:
        return (("M", b, b + cols),)
    if stride == cols:
        return (("M", b, b + rows * cols),)
    if rows > ROWS:
        last = b + (rows - 1) * stride
        return None if exact else (("M", min(b, last), max(b, last) + cols),)
    return tuple(("M", b + i * stride, b + i * stride + cols) for i in range(rows))


@effect(Op.NOP, Op.HALT, Op.SYNC, Op.FENCE, Op.ADD, Op.SUB, Op.ADDI, Op.MUL, Op.NEG, Op.ABS, Op.MUL2, Op.DIV2)
def _registers(a: Sequence[int]) -> Effect:  # registers, flags and ACC only
    return (), ()


effect(Op.MIN, Op.MAX, Op.CLAMP, Op.SIGN, Op.RELU, Op.QUANT, Op.MOVI, Op.MOVHI, Op.MAC, Op.CLRACC)(_registers)


@effect(Op.LOAD, Op.STORE, Op.LOADV, Op.STOREV, Op.PUSH, Op.POP)
@effect(Op.BEQ, Op.BNE, Op.BLT, Op.BGT, Op.JUMP, Op.CALL, Op.RET)
def _dynamic(a: Sequence[int]) -> Effect:  # addresses in registers, or another path
    return None


def _dma_in(space: str) -> Callable[[Sequence[int]], Effect]:
    def rule(a: Sequence[int]) -> Effect:  # d, [rb + off], rows, cols, stride
        d, rb, off, rows, cols, stride = a
        reads = _rows(off, rows, cols, stride, False)
        return None if rb != 0 or reads is None else (reads, _span(space, d, rows * cols))

    return rule


def _dma_out(space: str) -> Callable[[Sequence[int]], Effect]:
    def rule(a: Sequence[int]) -> Effect:  # [rb + off], s, rows, cols, stride
        rb, off, s, rows, cols, stride = a
        writes = _rows(off, rows, cols, stride, True)
        return None if rb != 0 or writes is None else (_span(space, s, rows * cols), writes)

    return rule


effect(Op.TLOAD)(_dma_in("A"))
effect(Op.TLOADC)(_dma_in("C"))
effect(Op.TSTORE)(_dma_out("A"))
effect(Op.TSTOREC)(_dma_out("C"))


@effect(Op.TLOADW)
def _tloadw(a: Sequence[int]) -> Effect:
    w, rb, off, count = a
    if rb != 0:
        return None
    return _span("M", off, cdiv(count, WORD_PENTS)), _span("W", w, count)


def _product(c: int, m: int, acc: int, *operands: Range) -> Effect:
    reads = tuple(r for r in operands if r[2] > r[1]) + (_span("C", c, m) if acc else ())
    return reads, _span("C", c, m)


@effect(Op.MATMUL)
def _matmul(a: Sequence[int]) -> Effect:
    c, x, w, m, n, k, acc = a
    return _product(c, m * n, acc, ("A", x, x + m * k), ("W", w, w + n * k)) if m * n else ((), ())


@effect(Op.AMATMUL)
def _amatmul(a: Sequence[int]) -> Effect:
    c, x, y, m, n, k, _kn, _pents, acc = a
    return _product(c, m * n, acc, ("A", x, x + m * k), ("A", y, y + k * n)) if m * n else ((), ())


@effect(Op.MATVEC)
def _matvec(a: Sequence[int]) -> Effect:
    c, x, w, n, k, acc = a
    return _product(c, n, acc, ("A", x, x + k), ("W", w, w + n * k)) if n else ((), ())


@effect(Op.CONV)
def _conv(a: Sequence[int]) -> Effect:
    c, x, w, ih, iw, ic, oc, kh, kw, sh, sw, pt, pl, pb, pr, g, acc = a
    n = conv_out(ih, pt, pb, kh, sh) * conv_out(iw, pl, pr, kw, sw) * oc
    kk = kh * kw * (ic // g) if g else 0
    return _product(c, n, acc, ("A", x, x + ih * iw * ic), ("W", w, w + oc * kk)) if n > 0 else ((), ())


@effect(Op.POOL)
def _pool(a: Sequence[int]) -> Effect:
    dst, src, ih, iw, ch, kh, kw, sh, sw, pt, pl, pb, pr, _mode = a
    n = conv_out(ih, pt, pb, kh, sh) * conv_out(iw, pl, pr, kw, sw) * ch
    return (_span("A", src, ih * iw * ch), _span("A", dst, n)) if n > 0 else ((), ())


def _elementwise(space: str) -> Callable[[Sequence[int]], Effect]:
    def rule(a: Sequence[int]) -> Effect:  # dst, src, count, ...: A[dst + i] from space[src + i]
        dst, src, count = a[0], a[1], a[2]
        return _span(space, src, count), _span("A", dst, count)

    return rule


effect(Op.REQUANT)(_elementwise("C"))
effect(Op.TRELU, Op.TCLAMP)(_elementwise("A"))


@effect(Op.REQUANTC)
def _requantc(a: Sequence[int]) -> Effect:
    dst, src, rows, cols, q, _pents = a
    return _span("C", src, rows * cols) + _span("C", q, 2 * cols), _span("A", dst, rows * cols)


@effect(Op.EADD, Op.EMUL)
def _binary(a: Sequence[int]) -> Effect:
    dst, x, y, count = a[0], a[1], a[2], a[3]
    return _span("A", x, count) + _span("A", y, count), _span("A", dst, count)


@effect(Op.TLUT)
def _tlut(a: Sequence[int]) -> Effect:
    dst, src, count, table, _lo, n = a
    return _span("A", src, count) + _span("A", table, n), _span("A", dst, count)


# ---- word sets: sorted disjoint half-open ranges ---------------------------------------------------------------


class Words:
    """A set of words as sorted, disjoint, non-adjacent half-open ranges ``[lo, hi)``."""

    __slots__ = ("his", "los")

    def __init__(self) -> None:
        self.los: list[int] = []
        self.his: list[int] = []

    def add(self, lo: int, hi: int) -> None:
        if hi <= lo:
            return
        i = bisect.bisect_left(self.his, lo)  # the first range ending at or after lo
        j = bisect.bisect_right(self.los, hi)  # past the last range starting at or before hi
        if i < j:
            lo, hi = min(lo, self.los[i]), max(hi, self.his[j - 1])
        self.los[i:j], self.his[i:j] = [lo], [hi]

    def remove(self, lo: int, hi: int) -> None:
        """Take ``[lo, hi)`` out of the set, in place."""
        i = bisect.bisect_right(self.his, lo)  # the first range ending past lo
        j = bisect.bisect_left(self.los, hi)  # the first range starting at or past hi
        if i >= j:
            return
        los, his = [], []
        if self.los[i] < lo:
            los.append(self.los[i])
            his.append(lo)
        if self.his[j - 1] > hi:
            los.append(hi)
            his.append(self.his[j - 1])
        self.los[i:j], self.his[i:j] = los, his

    def ranges(self) -> list[tuple[int, int]]:
        return list(zip(self.los, self.his, strict=True))

    def missing(self, lo: int, hi: int) -> list[tuple[int, int]]:
        """The parts of ``[lo, hi)`` outside the set."""
        out: list[tuple[int, int]] = []
        i = bisect.bisect_right(self.his, lo)
        while lo < hi:
            if i >= len(self.los) or self.los[i] >= hi:
                out.append((lo, hi))
                break
            if self.los[i] > lo:
                out.append((lo, self.los[i]))
            lo = max(lo, self.his[i])
            i += 1
        return out

    def minus(self, other: Words) -> Words:
        out = Words()
        out.los, out.his = list(self.los), list(self.his)
        for lo, hi in other.ranges():
            out.remove(lo, hi)
        return out

    def within(self, lo: int, hi: int) -> list[tuple[int, int]]:
        """The parts of ``[lo, hi)`` inside the set."""
        i = bisect.bisect_right(self.his, lo)
        out: list[tuple[int, int]] = []
        while i < len(self.los) and self.los[i] < hi:
            out.append((max(lo, self.los[i]), min(hi, self.his[i])))
            i += 1
        return out

    def __bool__(self) -> bool:
        return bool(self.los)


class Path(list):
    """The effects of a straight-line path, one per instruction, with each one's bounding range per (kind, space)
    (``boxes[k][("r", "A")]``: the lowest and past the highest word instruction ``k`` reads in A), so that a scan
    skips an instruction of many ranges (a store of rows at a stride) that cannot touch what it looks for."""

    def __init__(self, effects: list[Effect]) -> None:
        super().__init__(effects)
        self.boxes: list[dict[tuple[str, str], tuple[int, int]]] = []
        for e in effects:
            box: dict[tuple[str, str], tuple[int, int]] = {}
            assert e is not None
            for kind, ranges in zip("rw", e, strict=True):
                for sp, lo, hi in ranges:
                    old = box.get((kind, sp))
                    box[(kind, sp)] = (lo, hi) if old is None else (min(old[0], lo), max(old[1], hi))
            self.boxes.append(box)

    def touches(self, k: int, kind: str, space: str, lo: int, hi: int) -> bool:
        """Whether instruction ``k``'s bounding range of ``kind`` in ``space`` meets ``[lo, hi)``."""
        b = self.boxes[k].get((kind, space))
        return b is not None and b[0] < hi and b[1] > lo


def _path(instructions: Sequence[Instruction]) -> Path | None:
    """The effects of the instructions from the first to the first HALT; None unless all have one (and a HALT)."""
    out: list[Effect] = []
    total = 0
    for ins in instructions:
        rule = EFFECTS.get(int(ins.op))
        e = None if rule is None else rule(ins.args)
        if e is None:
            return None
        total += len(e[0]) + len(e[1])
        if total > RANGES:  # past what the analysis holds (a program of many strided stores): none
            return None
        out.append(e)
        if ins.op == Op.HALT:
            return Path(out)
    return None


def reset_plan(instructions: Sequence[Instruction]) -> dict[str, Words] | None:
    """Per space, the words the straight-line path from the first instruction to HALT writes before reading them;
    None where the program is not such a path (an instruction without a rule before the first HALT, or no HALT)."""
    path = _path(instructions)
    if path is None:
        return None
    written = {s: Words() for s in SPACES}
    first_read = {s: Words() for s in SPACES}  # read before written
    for reads, writes in path:
        for s, lo, hi in reads:
            for a, b in written[s].missing(lo, hi):
                first_read[s].add(a, b)
        for s, lo, hi in writes:
            written[s].add(lo, hi)
    return {s: written[s].minus(first_read[s]) for s in SPACES}


def written_before(instructions: Sequence[Instruction], index: int, start: int = 0) -> dict[str, Words]:
    """Per space, the words the instructions ``start .. index - 1`` (of a path :func:`reset_plan` accepts) write."""
    written = {s: Words() for s in SPACES}
    for ins in instructions[start:index]:
        e = EFFECTS[int(ins.op)](ins.args)
        assert e is not None
        for s, lo, hi in e[1]:
            written[s].add(lo, hi)
    return written


def dead_words(path: Path, t: int, lo: int, hi: int, copy: int) -> tuple[Words, int]:
    """Where instruction ``t`` of a path (:func:`path`) leaves in scratchpad A's ``[lo, hi)`` the values of main
    memory's ``[copy, copy + hi - lo)`` (a load from there, or a store there): the words of the range that later
    instructions overwrite before any reads them, each while its copy in main memory still holds its value, and
    the index of the instruction that overwrites the last of them (-1 where there are none). The others (read
    first, their copy overwritten first, or alive at the path's end or :data:`SCAN` instructions on) are the
    words that must hold the values."""
    live, dead = Words(), Words()
    live.add(lo, hi)
    last = -1
    for k in range(t + 1, min(len(path), t + 1 + SCAN)):
        reads, writes = path[k]
        a0, a1 = live.los[0], live.his[-1]  # the words still alive lie in here, their copies at + copy - lo
        if path.touches(k, "r", "A", a0, a1):
            for s, a, b in reads:  # read while alive: must hold the values
                if s == "A":
                    live.remove(a, b)
        if live and path.touches(k, "w", "A", a0, a1):
            for s, a, b in writes:  # overwritten while alive: dead
                if s == "A" and live.within(a, b):
                    for x, y in live.within(a, b):
                        dead.add(x, y)
                    live.remove(a, b)
                    last = k
        if live and path.touches(k, "w", "M", a0 + copy - lo, a1 + copy - lo):
            for s, a, b in writes:  # the copy of a word still alive overwritten: it must hold its value
                if s == "M" and a < copy + hi - lo and b > copy:
                    live.remove(max(a, copy) - copy + lo, min(b, copy + hi - lo) - copy + lo)
        if not live:
            break
    return dead, last


def dead_after(path: Path, t: int, lo: int, hi: int, copy: int) -> int | None:
    """:func:`dead_words` where all of ``[lo, hi)`` dies: the index of the instruction overwriting the last word,
    or None where some word must hold the values."""
    dead, last = dead_words(path, t, lo, hi, copy)
    return last if dead.ranges() == [(lo, hi)] else None


def first_reader(path: Path, t: int, lo: int, hi: int, copy: int) -> int | None:
    """Where instruction ``t`` of a path loads A's ``[lo, hi)`` from main memory's ``[copy, copy + hi - lo)``: the
    index of the first later instruction that reads a word of the range, where none before it writes the range
    or its source; None where one does, or none reads it within :data:`SCAN` instructions."""
    for k in range(t + 1, min(len(path), t + 1 + SCAN)):
        reads, writes = path[k]
        if path.touches(k, "r", "A", lo, hi) and any(s == "A" and a < hi and b > lo for s, a, b in reads):
            return k
        if (path.touches(k, "w", "A", lo, hi) or path.touches(k, "w", "M", copy, copy + hi - lo)) and any(
            (s == "A" and a < hi and b > lo) or (s == "M" and a < copy + hi - lo and b > copy) for s, a, b in writes
        ):
            return None
    return None


def path(instructions: Sequence[Instruction]) -> Path | None:
    """The effects of the straight-line path from the first instruction to the first HALT (None: not one)."""
    return _path(instructions)
