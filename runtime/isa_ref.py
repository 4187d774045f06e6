"""The ISA's definition as a plain executor: one small function per instruction over a plain machine state.

This module is the reference the simulator (``runtime/simulator.py`` with its translated scalar code and the
tensor closures, compiled loops and GEMM engines of ``runtime/tensor*.py``) is tested against: every instruction
of the table in ``pcc/isa.py`` has one rule here, registered by opcode in :data:`RULES`; each rule's docstring
is its instruction's semantics text as docs/ISA.md shows it (a test checks that the two are the same), and its
body is that text in Python, with no formulation chosen for speed. The run loop (:func:`run`) executes one
instruction at a time, counts steps and cycles (each instruction costs ``isa.cycles`` of its fields) and stops
on the same faults as the simulator (the same message, instruction and source line, the same state left behind).

Machine state (:class:`Machine`, in ``runtime/isa_state.py``): the registers P0..P31 and ACC as Python ints,
the flags Z N P V C S, main memory and the scratchpads A (activations), W (pents) and C (accumulators) as numpy
arrays read element by element or by row, the PC (a text word address), the steps and cycles of the run.

Integer arithmetic is exact: words and accumulators are Python ints; the dot products of MATMUL, MATVEC and CONV
are int64 sums of at most a scratchpad's worth of products of a word (``|a| <= word_max(16)``) and a pent
(``|w| <= 2``), below 2**63 by a margin even with an accumulator base added, so int64 gives their exact value.

It is slow (a Python call per instruction and per output element of the vector unit) and meant to be: use it
on small programs, in tests, and to settle what an instruction does.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np

from pcc import isa
from pcc.diagnostics import PccError
from pcc.isa import ACC_MAX, MULT_MAX, SHIFT_MAX, WORD_MAX, Op, conv_out
from pcc.pentary import to_digits, word_max
from pcc.runtime.faults import (
    PAST_END,
    cycle_limit,
    dram_fault,
    fault_error,
    invalid_reason,
    quant_fault,
    ret_fault,
    stack_fault,
    step_limit,
    time_limit,
)
from pcc.runtime.isa_state import Machine, MachineFault

DEFAULT_MAX_STEPS = 100_000_000  # instructions per run before the step-limit fault
# Cycles per run before the cycle-limit fault: 0.05 s of machine time at 1 GHz, five times a compiled ResNet-50
# at 224x224 (10.9 M cycles; ResNet-18: 3.6 M). A loop around the largest MATMULs (33 M MACs, 42,834 cycles each)
# reaches it after 1,168 of them: about 10 s of simulation on the int8 engine, 35 s on the float one, where the
# step budget alone would let it run for days.
DEFAULT_MAX_CYCLES = 50_000_000

RULES: dict[int, Callable[..., int | None]] = {}  # opcode -> rule(machine, *fields) -> next PC, or None


def rule(op: Op) -> Callable[[Callable[..., int | None]], Callable[..., int | None]]:
    """Register ``fn`` as the rule of ``op``: ``fn(machine, *field values)``, returning the next PC or None."""

    def register(fn: Callable[..., int | None]) -> Callable[..., int | None]:
        assert int(op) not in RULES, op
        RULES[int(op)] = fn
        return fn

    return register


# ---- integer helpers (Python ints, written out) -------------------------------------------------------------


def mul_shift_round(x: int, mult: int, shift: int, cap: int = ACC_MAX) -> int:
    """``isa.mul_shift_round`` of one value: round(x * mult / 2**shift), ties away from zero, clipped to +-cap."""
    q = (abs(x) * mult + ((1 << shift) >> 1)) >> shift
    q = min(q, cap)
    return -q if x < 0 else q


def _div_round(total: int, count: int) -> int:
    """``div_round``: total / count to nearest, ties away from zero (count > 0)."""
    q = (abs(total) * 2 + count) // (2 * count)
    return -q if total < 0 else q


def _rows(rows: int, cols: int, stride: int) -> tuple[int, int]:
    """Lowest and highest word offset of a rows x cols access with a row stride (rows, cols >= 1)."""
    return min(0, (rows - 1) * stride), max(0, (rows - 1) * stride) + cols - 1


# ---- running ------------------------------------------------------------------------------------------------


def step(m: Machine, index: dict[int, int], max_steps: int, max_cycles: int) -> None:
    """Execute the instruction at ``m.pc``; raises :class:`_Stop` with the faulting instruction on a fault."""
    program = m.program
    i = index[m.pc]
    ins = program.instructions[i]
    if m.steps >= max_steps:
        raise _Stop(i, step_limit(max_steps))
    info = isa.BY_OPCODE.get(ins.op)
    bad = invalid_reason(ins, info)
    if bad is not None:
        raise _Stop(i, bad)
    assert info is not None
    cost = isa.cycles(info, ins.args, m.config)
    if m.cycles + cost > max_cycles:
        raise _Stop(i, cycle_limit(max_cycles))
    try:
        nxt = RULES[ins.op](m, *ins.args)
    except MachineFault as f:
        raise _Stop(i, f.message) from None
    m.steps += 1
    m.cycles += cost
    if m.halted:
        return
    if nxt is None:
        nxt = ins.addr + info.words
        if nxt not in m.valid_pcs:
            raise _Stop(i, PAST_END)
    m.pc = nxt


class _Stop(Exception):
    """A fault at instruction ``index`` (the run loop turns it into the PccError)."""

    def __init__(self, index: int, message: str) -> None:
        super().__init__(message)
        self.index, self.message = index, message


def run(
    m: Machine,
    max_steps: int = DEFAULT_MAX_STEPS,
    max_cycles: int = DEFAULT_MAX_CYCLES,
    timeout: float | None = None,
) -> Machine:
    """Run ``m`` from its PC until HALT; ``max_steps``, ``max_cycles`` and ``timeout`` (seconds) bound the run.

    A fault raises the PccError the simulator raises (message, instruction, source line, the note saying how
    many instructions ran); the state is left as the fault found it, the PC at the faulting instruction.
    """
    program = m.program
    if not program.instructions:
        raise PccError("the program has no instructions", None)
    index = {ins.addr: i for i, ins in enumerate(program.instructions)}
    deadline = None if timeout is None else time.monotonic() + timeout
    try:
        if m.pc not in index:
            raise _Stop(0, f"PC {m.pc} is not the start of an instruction")
        m.halted = False
        while not m.halted:
            if deadline is not None and time.monotonic() > deadline:
                raise _Stop(index[m.pc], time_limit(timeout or 0.0))
            step(m, index, max_steps, max_cycles)
    except _Stop as stop:
        m.pc = program.instructions[stop.index].addr
        raise fault_error(program, stop.index, stop.message, m.steps) from None
    return m


def execute(m: Machine, op: Op, *args: int) -> None:
    """Apply one instruction's rule to ``m`` (no PC, step or cycle bookkeeping); a fault raises MachineFault."""
    RULES[int(op)](m, *args)


# ---- control ------------------------------------------------------------------------------------------------


@rule(Op.NOP)
def nop(m: Machine) -> None:
    """Does nothing."""


@rule(Op.HALT)
def halt(m: Machine) -> None:
    """Stops the machine; the simulator returns. PC stays at the HALT."""
    m.halted = True


@rule(Op.SYNC)
def sync(m: Machine) -> None:
    """Waits until every earlier tensor instruction has completed. In this in-order model every instruction completes
    before the next starts, so SYNC only costs its cycle; code for a pipelined implementation must place SYNC before
    reading a scratchpad region that a DMA or tensor instruction is still writing."""


@rule(Op.FENCE)
def fence(m: Machine) -> None:
    """Orders memory: every main-memory access before it completes before any after it. Like SYNC, a no-op in this
    in-order model apart from its cycle."""


# ---- ALU ----------------------------------------------------------------------------------------------------


@rule(Op.ADD)
def add(m: Machine, rd: int, rs1: int, rs2: int) -> None:
    """rd = wrap(rs1 + rs2). wrap(x) reduces x modulo 5^16 into the balanced word range; V is set iff the exact result
    was outside it. Z, N, P are set from the value written (zero, negative, positive)."""
    v = m.wrap(m.regs[rs1] + m.regs[rs2])
    m.write(rd, v)
    m.set_znp(v)


@rule(Op.SUB)
def sub(m: Machine, rd: int, rs1: int, rs2: int) -> None:
    """rd = wrap(rs1 - rs2). wrap(x) reduces x modulo 5^16 into the balanced word range; V is set iff the exact result
    was outside it. Z, N, P are set from the value written (zero, negative, positive)."""
    v = m.wrap(m.regs[rs1] - m.regs[rs2])
    m.write(rd, v)
    m.set_znp(v)


@rule(Op.ADDI)
def addi(m: Machine, rd: int, rs: int, imm: int) -> None:
    """rd = wrap(rs + imm), imm a signed 7-pent immediate (-39062..39062). wrap(x) reduces x modulo 5^16 into the
    balanced word range; V is set iff the exact result was outside it. Z, N, P are set from the value written (zero,
    negative, positive)."""
    v = m.wrap(m.regs[rs] + imm)
    m.write(rd, v)
    m.set_znp(v)


@rule(Op.MUL)
def mul(m: Machine, rd: int, rs1: int, rs2: int) -> None:
    """rd = wrap(rs1 * rs2), the exact product wrapped. wrap(x) reduces x modulo 5^16 into the balanced word range; V is
    set iff the exact result was outside it. Z, N, P are set from the value written (zero, negative, positive)."""
    v = m.wrap(m.regs[rs1] * m.regs[rs2])
    m.write(rd, v)
    m.set_znp(v)


@rule(Op.NEG)
def neg(m: Machine, rd: int, rs: int) -> None:
    """rd = -rs. The balanced range is symmetric, so negation never overflows. Z, N, P are set from the value written
    (zero, negative, positive)."""
    v = -m.regs[rs]
    m.write(rd, v)
    m.set_znp(v)


@rule(Op.ABS)
def abs_(m: Machine, rd: int, rs: int) -> None:
    """rd = |rs|; never overflows. Z, N, P are set from the value written (zero, negative, positive)."""
    v = abs(m.regs[rs])
    m.write(rd, v)
    m.set_znp(v)


@rule(Op.MUL2)
def mul2(m: Machine, rd: int, rs: int) -> None:
    """rd = wrap(2 * rs). wrap(x) reduces x modulo 5^16 into the balanced word range; V is set iff the exact result was
    outside it. Z, N, P are set from the value written (zero, negative, positive)."""
    v = m.wrap(2 * m.regs[rs])
    m.write(rd, v)
    m.set_znp(v)


@rule(Op.DIV2)
def div2(m: Machine, rd: int, rs: int) -> None:
    """rd = rs / 2 truncated toward zero (7 -> 3, -7 -> -3); C is set iff rs is odd (a remainder was dropped). Z, N, P
    are set from the value written (zero, negative, positive)."""
    x = m.regs[rs]
    v = abs(x) // 2 * (1 if x >= 0 else -1)
    m.flags["C"] = x % 2 != 0
    m.write(rd, v)
    m.set_znp(v)


@rule(Op.MIN)
def min_(m: Machine, rd: int, rs1: int, rs2: int) -> None:
    """rd = min(rs1, rs2). Z, N, P are set from the value written (zero, negative, positive)."""
    v = min(m.regs[rs1], m.regs[rs2])
    m.write(rd, v)
    m.set_znp(v)


@rule(Op.MAX)
def max_(m: Machine, rd: int, rs1: int, rs2: int) -> None:
    """rd = max(rs1, rs2). Z, N, P are set from the value written (zero, negative, positive)."""
    v = max(m.regs[rs1], m.regs[rs2])
    m.write(rd, v)
    m.set_znp(v)


@rule(Op.CLAMP)
def clamp(m: Machine, rd: int, rs: int, rlo: int, rhi: int) -> None:
    """rd = min(max(rs, rlo), rhi): three sources, so four register fields (15 pents). If rlo > rhi the result is rhi.
    Z, N, P are set from the value written (zero, negative, positive)."""
    v = min(max(m.regs[rs], m.regs[rlo]), m.regs[rhi])
    m.write(rd, v)
    m.set_znp(v)


@rule(Op.SIGN)
def sign(m: Machine, rd: int, rs: int) -> None:
    """rd = -1, 0 or +1, the sign of rs. Z, N, P are set from the value written (zero, negative, positive)."""
    x = m.regs[rs]
    v = (x > 0) - (x < 0)
    m.write(rd, v)
    m.set_znp(v)


@rule(Op.RELU)
def relu(m: Machine, rd: int, rs: int) -> None:
    """rd = max(rs, 0). Z, N, P are set from the value written (zero, negative, positive)."""
    v = max(m.regs[rs], 0)
    m.write(rd, v)
    m.set_znp(v)


@rule(Op.QUANT)
def quant(m: Machine, rd: int, rs: int, rstep: int) -> None:
    """Quantises to the five pent levels: rd = clamp(round(rs / rstep), -2, 2), rounding to nearest with ties away from
    zero (div_round). rstep <= 0 is a fault. Z, N, P are set from the value written (zero, negative, positive)."""
    stepv = m.regs[rstep]
    if stepv <= 0:
        raise MachineFault(quant_fault(rstep, stepv))
    v = max(-2, min(2, _div_round(m.regs[rs], stepv)))
    m.write(rd, v)
    m.set_znp(v)


@rule(Op.MOVI)
def movi(m: Machine, rd: int, imm: int) -> None:
    """rd = imm, a signed 10-pent immediate (-4882812..4882812). Z, N, P are set from the value written (zero, negative,
    positive)."""
    m.write(rd, imm)
    m.set_znp(imm)


@rule(Op.MOVHI)
def movhi(m: Machine, rd: int, imm: int) -> None:
    """rd = wrap(rd + imm * 5^10). Any word v is built by MOVI rd, lo; MOVHI rd, hi where lo is v's low 10 balanced
    pents and hi = (v - lo) / 5^10. wrap(x) reduces x modulo 5^16 into the balanced word range; V is set iff the
    exact result was outside it. Z, N, P are set from the value written (zero, negative, positive)."""
    v = m.wrap(m.regs[rd] + imm * 5**10)
    m.write(rd, v)
    m.set_znp(v)


@rule(Op.MAC)
def mac(m: Machine, rd: int, rs1: int, rs2: int) -> None:
    """ACC = sat27(ACC + rs1 * rs2); rd = sat16(ACC). ACC is the 32-pent accumulator; this machine implements it
    saturating at +-word_max(27) = +-3725290298461914062 (the widest balanced range an int64 holds), so the upper 5
    pents always read as zero. V is set iff either saturation clipped (ACC or the copy into rd), and then S is set
    too (S is sticky). Z, N, P are set from the value written to rd. MAC rd, P0, P0 reads ACC."""
    exact = m.acc + m.regs[rs1] * m.regs[rs2]
    m.acc = max(-ACC_MAX, min(ACC_MAX, exact))
    v = max(-WORD_MAX, min(WORD_MAX, m.acc))
    m.flags["V"] = m.acc != exact or v != m.acc
    if m.flags["V"]:
        m.flags["S"] = True
    m.write(rd, v)
    m.set_znp(v)


@rule(Op.CLRACC)
def clracc(m: Machine) -> None:
    """ACC = 0."""
    m.acc = 0


# ---- memory -------------------------------------------------------------------------------------------------


@rule(Op.LOAD)
def load(m: Machine, rd: int, rb: int, off: int) -> None:
    """rd = mem[rb + off]. The effective address must lie in 0 .. dram_words-1, else a memory fault."""
    e = m.address("LOAD", m.regs[rb] + off)
    m.write(rd, int(m.mem[e]))


@rule(Op.STORE)
def store(m: Machine, rs: int, rb: int, off: int) -> None:
    """mem[rb + off] = rs. Address rules as LOAD."""
    e = m.address("STORE", m.regs[rb] + off)
    m.mem[e] = m.regs[rs]


@rule(Op.LOADV)
def loadv(m: Machine, rd: int, rb: int, off: int, n: int) -> None:
    """Loads n consecutive words into consecutive registers: P(rd+i) = mem[rb + off + i] for i = 0..n-1; rd + n must not
    exceed 32 (checked by the assembler). The base is read before any register is written; a write to P0 is
    discarded."""
    e = m.address("LOADV", m.regs[rb] + off, n)
    for i in range(n):
        m.write(rd + i, int(m.mem[e + i]))


@rule(Op.STOREV)
def storev(m: Machine, rs: int, rb: int, off: int, n: int) -> None:
    """Stores n consecutive registers: mem[rb + off + i] = P(rs+i) for i = 0..n-1; rs + n <= 32."""
    e = m.address("STOREV", m.regs[rb] + off, n)
    for i in range(n):
        m.mem[e + i] = m.regs[rs + i]


@rule(Op.PUSH)
def push(m: Machine, rs: int) -> None:
    """SP = SP - 1; mem[SP] = rs, in that order (PUSH SP stores the decremented SP). The stack grows down from SP's
    reset value dram_words; an address outside main memory is a fault."""
    sp_reg, size = m.config.sp_reg, m.config.dram_words
    sp = m.regs[sp_reg]
    if not 0 <= sp - 1 < size:
        raise MachineFault(stack_fault(sp, size, push=True))
    m.regs[sp_reg] = sp - 1
    m.mem[sp - 1] = m.regs[rs]


@rule(Op.POP)
def pop(m: Machine, rd: int) -> None:
    """rd = mem[SP]; SP = old SP + 1, in that order (POP SP leaves SP = old SP + 1; the loaded value is discarded). An
    address outside main memory is a fault."""
    sp_reg, size = m.config.sp_reg, m.config.dram_words
    sp = m.regs[sp_reg]
    if not 0 <= sp < size:
        raise MachineFault(stack_fault(sp, size, push=False))
    m.write(rd, int(m.mem[sp]))
    m.regs[sp_reg] = sp + 1


# ---- branches -----------------------------------------------------------------------------------------------


@rule(Op.BEQ)
def beq(m: Machine, rs: int, target: int) -> int | None:
    """If rs == 0 then PC = PC + target, else PC = PC + 1. PC is the word address of the branch; target is a signed
    10-pent word offset (a label in assembly, resolved by the assembler)."""
    return m.goto(m.pc + target) if m.regs[rs] == 0 else None


@rule(Op.BNE)
def bne(m: Machine, rs: int, target: int) -> int | None:
    """As BEQ, taken if rs != 0."""
    return m.goto(m.pc + target) if m.regs[rs] != 0 else None


@rule(Op.BLT)
def blt(m: Machine, rs: int, target: int) -> int | None:
    """As BEQ, taken if rs < 0."""
    return m.goto(m.pc + target) if m.regs[rs] < 0 else None


@rule(Op.BGT)
def bgt(m: Machine, rs: int, target: int) -> int | None:
    """As BEQ, taken if rs > 0."""
    return m.goto(m.pc + target) if m.regs[rs] > 0 else None


@rule(Op.JUMP)
def jump(m: Machine, target: int) -> int:
    """PC = PC + target (signed 13-pent word offset)."""
    return m.goto(m.pc + target)


@rule(Op.CALL)
def call(m: Machine, target: int) -> int:
    """LR = PC + 1; PC = PC + target. LR is P31."""
    m.regs[m.config.lr_reg] = m.pc + 1
    return m.goto(m.pc + target)


@rule(Op.RET)
def ret(m: Machine) -> int:
    """PC = LR (P31)."""
    dest = m.regs[m.config.lr_reg]
    if dest not in m.valid_pcs:
        raise MachineFault(ret_fault(dest))
    return dest


# ---- DMA: main memory <-> scratchpads -----------------------------------------------------------------------


def _dma_in(m: Machine, what: str, spad: str, d: int, rb: int, off: int, rows: int, cols: int, stride: int) -> None:
    """spad[d + i*cols + j] = mem[rb + off + i*stride + j] for i < rows, j < cols."""
    m.spads(what, (spad, d, rows * cols))
    if rows * cols == 0:
        return
    b = m.regs[rb] + off
    lo, hi = _rows(rows, cols, stride)
    reason = dram_fault(what, b + lo, b + hi, m.mem.size)
    if reason is not None:
        raise MachineFault(reason)
    dst = {"A": m.A, "C": m.C}[spad]
    for i in range(rows):
        dst[d + i * cols : d + (i + 1) * cols] = m.mem[b + i * stride : b + i * stride + cols]


def _dma_out(
    m: Machine, what: str, spad: str, rb: int, off: int, s: int, rows: int, cols: int, stride: int, saturate: bool
) -> None:
    """mem[rb + off + i*stride + j] = spad[s + i*cols + j], row after row (sat16 if ``saturate``, setting S)."""
    m.spads(what, (spad, s, rows * cols))
    if rows * cols == 0:
        return
    b = m.regs[rb] + off
    lo, hi = _rows(rows, cols, stride)
    reason = dram_fault(what, b + lo, b + hi, m.mem.size)
    if reason is not None:
        raise MachineFault(reason)
    src = {"A": m.A, "C": m.C}[spad][s : s + rows * cols].tolist()
    if saturate:
        clipped = [max(-WORD_MAX, min(WORD_MAX, v)) for v in src]
        if clipped != src:
            m.flags["S"] = True
        src = clipped
    for i in range(rows):
        m.mem[b + i * stride : b + i * stride + cols] = src[i * cols : (i + 1) * cols]


@rule(Op.TLOAD)
def tload(m: Machine, a: int, rb: int, off: int, rows: int, cols: int, stride: int) -> None:
    """Activation DMA into scratchpad A: A[a + i*cols + j] = mem[rb + off + i*stride + j] for i < rows, j < cols
    (row-major, dense in A; stride 0 broadcasts one row). One activation per word. Any address outside main memory or
    A is a fault."""
    _dma_in(m, "TLOAD", "A", a, rb, off, rows, cols, stride)


@rule(Op.TSTORE)
def tstore(m: Machine, rb: int, off: int, a: int, rows: int, cols: int, stride: int) -> None:
    """mem[rb + off + i*stride + j] = A[a + i*cols + j] for i < rows, j < cols (rows in order, so with overlapping rows
    the later one wins)."""
    _dma_out(m, "TSTORE", "A", rb, off, a, rows, cols, stride, saturate=False)


@rule(Op.TLOADW)
def tloadw(m: Machine, w: int, rb: int, off: int, count: int) -> None:
    """Packed-weight DMA into scratchpad W: W[w + i] = pent (i mod 16) of mem[rb + off + i div 16] for i < count.
    Weights are stored 16 pents per word, pent 0 (least significant) first, so a weight costs one sixteenth of a word
    in memory and 2.33 bits in the binary."""
    m.spads("TLOADW", ("W", w, count))
    if count == 0:
        return
    b = m.regs[rb] + off
    nw = isa.cdiv(count, isa.WORD_PENTS)
    reason = dram_fault("TLOADW", b, b + nw - 1, m.mem.size)
    if reason is not None:
        raise MachineFault(reason)
    pents = to_digits(m.mem[b : b + nw], isa.WORD_PENTS).reshape(-1)  # word by word, pent 0 first
    m.W[w : w + count] = pents[:count]


@rule(Op.TLOADC)
def tloadc(m: Machine, c: int, rb: int, off: int, rows: int, cols: int, stride: int) -> None:
    """Accumulator DMA into scratchpad C (biases, per-channel multipliers and shifts): C[c + i*cols + j] = mem[rb + off
    + i*stride + j]; stride 0 broadcasts a bias row over all output rows. The word is taken at full value;
    accumulators are wider than words."""
    _dma_in(m, "TLOADC", "C", c, rb, off, rows, cols, stride)


@rule(Op.TSTOREC)
def tstorec(m: Machine, rb: int, off: int, c: int, rows: int, cols: int, stride: int) -> None:
    """mem[rb + off + i*stride + j] = sat16(C[c + i*cols + j]); S is set if any value was clipped."""
    _dma_out(m, "TSTOREC", "C", rb, off, c, rows, cols, stride, saturate=True)


# ---- tensor compute -----------------------------------------------------------------------------------------


def _products(m: Machine, c: int, sums: list[int], acc: int) -> None:
    """C[c + i] = sat27(base + sums[i]), base = C[c + i] if acc else 0; S if any clipped."""
    base = m.C[c : c + len(sums)].tolist() if acc else [0] * len(sums)
    m.saturate_into(m.C, c, [b + s for b, s in zip(base, sums, strict=True)], ACC_MAX)


@rule(Op.MATMUL)
def matmul(m: Machine, c: int, a: int, w: int, m_: int, n: int, k: int, acc: int) -> None:
    """Pentary-weight matrix multiply on the MAC array: C[c + i*n + j] = sat27(base + sum_{t<k} A[a + i*k + t] * W[w +
    j*k + t]) for i < m, j < n, where base = C[c + i*n + j] if acc = 1 else 0. The sum is exact (for extents that fit
    the scratchpads it cannot overflow an int64) and saturates once; S is set if any element clipped. A is m x k
    row-major, W is n x k (each output's k weights contiguous), C is m x n row-major. Cost: the array holds a
    mac_rows x mac_cols weight tile; each tile is loaded (mac_rows cycles) and the m rows stream through it."""
    m.spads("MATMUL", ("A", a, m_ * k), ("W", w, n * k), ("C", c, m_ * n))
    if m_ * n == 0:
        return
    x = m.A[a : a + m_ * k].reshape(m_, k)
    wt = m.W[w : w + n * k].astype(np.int64).reshape(n, k)  # row j: the k weights of output j
    sums = [int(s) for i in range(m_) for s in wt @ x[i]]  # exact int64 sums (module docstring)
    _products(m, c, sums, acc)


@rule(Op.AMATMUL)
def amatmul(m: Machine, c: int, a: int, b: int, m_: int, n: int, k: int, kn: int, pents: int, acc: int) -> None:
    """Activation-by-activation matrix multiply on the MAC array (attention's Q K^T and P V): C[c + i*n + j] =
    sat27(base + sum_{t<k} A[a + i*k + t] * B(t, j)) for i < m, j < n, with B(t, j) = sat_pents(A[b + j*k + t]) (kn =
    0: the second operand n x k, each output's k values contiguous, as MATMUL's W) or sat_pents(A[b + t*n + j]) (kn =
    1: k x n row-major), base as in MATMUL. The sum is exact and saturates once; S is set if any element clipped.
    Cost: the array multiplies a word by a pent, so the second operand streams through it digit-serially, one pent
    plane per pass (value = sum_p 5^p digit_p, the partial sums shifted by a pent position in the accumulators):
    pents passes of MATMUL's schedule."""
    m.spads("AMATMUL", ("A", a, m_ * k), ("A", b, n * k), ("C", c, m_ * n))
    if m_ * n == 0:
        return
    cap = word_max(pents)
    x = [[int(v) for v in m.A[a + i * k : a + (i + 1) * k]] for i in range(m_)]
    flat = [max(-cap, min(cap, int(v))) for v in m.A[b : b + n * k]]
    cols = [flat[j * k : (j + 1) * k] if kn == 0 else flat[j::n] for j in range(n)]  # column j: its k values
    sums = [sum(u * v for u, v in zip(row, col, strict=True)) for row in x for col in cols]  # Python ints: exact
    _products(m, c, sums, acc)


@rule(Op.MATVEC)
def matvec(m: Machine, c: int, a: int, w: int, n: int, k: int, acc: int) -> None:
    """Crossbar matrix-vector product: C[c + j] = sat27(base + sum_{t<k} A[a + t] * W[w + j*k + t]) for j < n, base as
    in MATMUL. Same result as MATMUL with m = 1, computed on the 256 x 256 crossbar: each xbar_rows x xbar_cols block
    costs xbar_cycles."""
    m.spads("MATVEC", ("A", a, k), ("W", w, n * k), ("C", c, n))
    if n == 0:
        return
    x = m.A[a : a + k]
    wt = m.W[w : w + n * k].astype(np.int64).reshape(n, k)
    _products(m, c, [int(s) for s in wt @ x], acc)


@rule(Op.CONV)
def conv(
    m: Machine,
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
) -> None:
    """2-D convolution, channels last (HWC), zero padding, no dilation. Input A[a + (y*iw + x)*ic + ci], output C[c +
    (oy*ow + ox)*oc + o], weights W[w + ((o*kh + ky)*kw + kx)*icg + ci] with icg = ic / groups, ocg = oc / groups
    (both must divide exactly; checked by the assembler, as oh, ow >= 1 and pads < kernel). Windows: oh =
    conv_out(ih, pt, pb, kh, sh), ow = conv_out(iw, pl, pr, kw, sw); input pixel (y, x) of output (oy, ox) and tap
    (ky, kx) is y = oy*sh - pt + ky, x = ox*sw - pl + kx. For output channel o of group g = o div ocg: C[...] =
    sat27(base + sum over ky < kh, kx < kw, ci < icg of A[y, x, g*icg + ci] * W[o, ky, kx, ci]), taps outside the
    input contributing 0, base as in MATMUL; S if any element clipped. Cost: the im2col matrix multiply per group on
    the MAC array."""
    oh, ow = conv_out(ih, pt, pb, kh, sh), conv_out(iw, pl, pr, kw, sw)
    icg, ocg = ic // groups, oc // groups
    m.spads("CONV", ("A", a, ih * iw * ic), ("W", w, oc * kh * kw * icg), ("C", c, oh * ow * oc))
    if oh * ow * oc == 0:
        return
    x = m.A[a : a + ih * iw * ic].reshape(ih, iw, ic)
    wt = m.W[w : w + oc * kh * kw * icg].astype(np.int64).reshape(oc, kh * kw * icg)
    sums = []
    for oy in range(oh):
        for ox in range(ow):
            patch = np.zeros((kh, kw, ic), dtype=np.int64)  # taps outside the input contribute 0
            for ky in range(kh):
                for kx in range(kw):
                    y, xx = oy * sh - pt + ky, ox * sw - pl + kx
                    if 0 <= y < ih and 0 <= xx < iw:
                        patch[ky, kx] = x[y, xx]
            for o in range(oc):
                g = o // ocg
                sums.append(int(wt[o] @ patch[:, :, g * icg : (g + 1) * icg].reshape(-1)))
    _products(m, c, sums, acc)


@rule(Op.POOL)
def pool(
    m: Machine,
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
) -> None:
    """Pooling on scratchpad A, HWC: input A[src + (y*iw + x)*c + ch], output A[dst + (oy*ow + ox)*c + ch]. Windows: oh
    = conv_out(ih, pt, pb, kh, sh), ow = conv_out(iw, pl, pr, kw, sw); input pixel (y, x) of output (oy, ox) and tap
    (ky, kx) is y = oy*sh - pt + ky, x = ox*sw - pl + kx. mode 0: the maximum over the taps inside the input (padding
    never wins). mode 1: average over the taps inside the input; mode 2: average over all kh*kw taps (padding counts
    as 0). The average is div_round(sum, count): nearest, ties away from zero. Pads must be smaller than the kernel,
    so every window has an input tap."""
    oh, ow = conv_out(ih, pt, pb, kh, sh), conv_out(iw, pl, pr, kw, sw)
    m.spads("POOL", ("A", src, ih * iw * c), ("A", dst, oh * ow * c))
    if oh * ow * c == 0:
        return
    x = m.A[src : src + ih * iw * c].reshape(ih, iw, c).tolist()
    out = []
    for oy in range(oh):
        for ox in range(ow):
            inside = [
                (oy * sh - pt + ky, ox * sw - pl + kx)
                for ky in range(kh)
                for kx in range(kw)
                if 0 <= oy * sh - pt + ky < ih and 0 <= ox * sw - pl + kx < iw
            ]
            for ch in range(c):
                taps = [x[y][xx][ch] for y, xx in inside]
                if mode == 0:
                    out.append(max(taps))
                else:
                    out.append(_div_round(sum(taps), len(taps) if mode == 1 else kh * kw))
    m.A[dst : dst + len(out)] = out


@rule(Op.REQUANT)
def requant(m: Machine, dst: int, src: int, count: int, mult: int, shift: int, pents: int) -> None:
    """Requantise accumulators to activations: A[dst + i] = sat_pents(round(C[src + i] * mult / 2^shift)) for i < count,
    rounding to nearest with ties away from zero, computed exactly (mul_shift_round), then saturated to the
    pents-pent range +-(5^pents - 1)/2. S is set if any element clipped."""
    m.spads("REQUANT", ("C", src, count), ("A", dst, count))
    values = [mul_shift_round(v, mult, shift) for v in m.C[src : src + count].tolist()]
    m.saturate_into(m.A, dst, values, word_max(pents))


@rule(Op.REQUANTC)
def requantc(m: Machine, dst: int, src: int, rows: int, cols: int, q: int, pents: int) -> None:
    """Per-channel requantisation: A[dst + i*cols + j] = sat_pents(round(C[src + i*cols + j] * M_j / 2^S_j)) with M_j =
    C[q + j] and S_j = C[q + cols + j] (loaded with TLOADC), rounding as REQUANT. M_j outside 0..MULT_MAX or S_j
    outside 0..62 is a fault. S as REQUANT."""
    m.spads("REQUANTC", ("C", src, rows * cols), ("C", q, 2 * cols), ("A", dst, rows * cols))
    mults, shifts = m.C[q : q + cols].tolist(), m.C[q + cols : q + 2 * cols].tolist()
    for j, v in enumerate(mults):
        if not 0 <= v <= MULT_MAX:
            raise MachineFault(f"REQUANTC multiplier of channel {j} (C[{q + j}]) = {v} outside 0..{MULT_MAX}")
    for j, v in enumerate(shifts):
        if not 0 <= v <= SHIFT_MAX:
            raise MachineFault(f"REQUANTC shift of channel {j} (C[{q + cols + j}]) = {v} outside 0..{SHIFT_MAX}")
    x = m.C[src : src + rows * cols].tolist()
    values = [mul_shift_round(v, mults[i % cols], shifts[i % cols]) for i, v in enumerate(x)]
    m.saturate_into(m.A, dst, values, word_max(pents))


@rule(Op.EADD)
def eadd(m: Machine, dst: int, x: int, y: int, count: int, mx: int, sx: int, my: int, sy: int, pents: int) -> None:
    """Elementwise add with rescale (residual connections): A[dst + i] = sat_pents( mul_shift_round(A[x + i], mx, sx) +
    mul_shift_round(A[y + i], my, sy)); each term is rounded (nearest, ties away from zero) and clipped to +-ACC_MAX
    on its own, then the sum is saturated. S is set if the final saturation clipped."""
    m.spads("EADD", ("A", x, count), ("A", y, count), ("A", dst, count))
    xs, ys = m.A[x : x + count].tolist(), m.A[y : y + count].tolist()
    values = [mul_shift_round(u, mx, sx) + mul_shift_round(v, my, sy) for u, v in zip(xs, ys, strict=True)]
    m.saturate_into(m.A, dst, values, word_max(pents))


@rule(Op.EMUL)
def emul(m: Machine, dst: int, x: int, y: int, count: int, mult: int, shift: int, pents: int) -> None:
    """Elementwise product with rescale (gates, per-channel scales): A[dst + i] = sat_pents( mul_shift_round(sat27(A[x +
    i] * A[y + i]), mult, shift)): the exact product, clipped to +-ACC_MAX, times mult / 2^shift rounded to nearest
    (ties away from zero), then saturated. S is set if the final saturation clipped."""
    m.spads("EMUL", ("A", x, count), ("A", y, count), ("A", dst, count))
    xs, ys = m.A[x : x + count].tolist(), m.A[y : y + count].tolist()
    prods = [max(-ACC_MAX, min(ACC_MAX, u * v)) for u, v in zip(xs, ys, strict=True)]
    m.saturate_into(m.A, dst, [mul_shift_round(p, mult, shift) for p in prods], word_max(pents))


@rule(Op.TRELU)
def trelu(m: Machine, dst: int, src: int, count: int) -> None:
    """A[dst + i] = max(A[src + i], 0) for i < count."""
    m.spads("TRELU", ("A", src, count), ("A", dst, count))
    m.A[dst : dst + count] = [max(v, 0) for v in m.A[src : src + count].tolist()]


@rule(Op.TCLAMP)
def tclamp(m: Machine, dst: int, src: int, count: int, lo: int, hi: int) -> None:
    """A[dst + i] = min(max(A[src + i], lo), hi) for i < count (ReLU6 is lo = 0, hi = the quantised 6). If lo > hi the
    result is hi."""
    m.spads("TCLAMP", ("A", src, count), ("A", dst, count))
    m.A[dst : dst + count] = [min(max(v, lo), hi) for v in m.A[src : src + count].tolist()]


@rule(Op.TLUT)
def tlut(m: Machine, dst: int, src: int, count: int, table: int, lo: int, n: int) -> None:
    """Table lookup for other activations (sigmoid, tanh, ...): A[dst + i] = A[table + v - lo] with v = min(max(A[src +
    i], lo), lo + n - 1), i.e. the table holds the outputs for inputs lo .. lo+n-1 and inputs beyond either end use
    the end entries."""
    m.spads("TLUT", ("A", src, count), ("A", table, n), ("A", dst, count))
    entries = m.A[table : table + n].tolist()
    m.A[dst : dst + count] = [entries[min(max(v, lo), lo + n - 1) - lo] for v in m.A[src : src + count].tolist()]


__all__ = [
    "DEFAULT_MAX_CYCLES",
    "DEFAULT_MAX_STEPS",
    "RULES",
    "Machine",
    "MachineFault",
    "execute",
    "mul_shift_round",
    "run",
    "rule",
]
