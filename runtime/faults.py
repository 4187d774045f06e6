"""The faults that stop a run, worded once for the plain executor (``runtime/isa_ref.py``) and the simulator.

Each function gives the message of one kind of fault (:class:`Fault` carries one inside the simulator);
:func:`fault_error` turns a message into the PccError that names the instruction, its text address and its
source line, with a note saying how many instructions ran.
"""

from __future__ import annotations

import numpy as np

from pcc import isa
from pcc.backend.program import Instruction, Program
from pcc.diagnostics import Location, PccError, source_line
from pcc.isa import WORD_MAX


def invalid_reason(ins: Instruction, info: isa.Instr | None) -> str | None:
    """Why ``ins`` cannot execute (unknown opcode, wrong field count, a field out of range, a broken
    static constraint), or None if it is well formed. The assembler and binary reader never produce such
    instructions; a hand-built Program can."""
    if info is None:
        return f"invalid opcode {ins.op}"
    if len(ins.args) != len(info.fields):
        return f"malformed {info.mnemonic}: {len(ins.args)} operand fields, expected {len(info.fields)}"
    for f, v in zip(info.fields, ins.args, strict=True):
        if not isinstance(v, int | np.integer):
            return f"malformed {info.mnemonic}: field {f.name} is not an integer"
        reason = f.check(int(v))
        if reason is not None:
            return f"invalid {info.mnemonic}: {reason}"
    if info.checks:
        broken = info.violated(tuple(int(v) for v in ins.args))
        if broken is not None:
            return f"invalid {info.mnemonic}: operands break the constraint '{broken}'"
    return None


def mem_fault(what: str, addr: int, size: int) -> str:
    return f"{what} address {addr} outside main memory (0..{size - 1})"


def stack_fault(sp: int, size: int, push: bool) -> str:
    if push and sp - 1 < 0:
        return f"stack overflow: PUSH with SP = {sp} would write address {sp - 1}"
    if not push and sp >= size:
        return f"stack underflow: POP with SP = {sp} reads past the top of memory ({size - 1})"
    return f"stack address {sp - 1 if push else sp} outside main memory (0..{size - 1})"


def quant_fault(reg: int, step: int) -> str:
    return f"QUANT step P{reg} = {step} must be positive (division by zero or a negative step)"


def ret_fault(target: int) -> str:
    return f"RET to address {target} (LR), which is not the start of an instruction"


def target_fault(dest: int) -> str:
    return f"branch target {dest} is not the start of an instruction"


PAST_END = "execution ran past the end of the program without reaching HALT"


def step_limit(max_steps: int) -> str:
    return f"step limit reached: {max_steps} instructions executed without HALT (raise it with --max-steps)"


def cycle_limit(max_cycles: int) -> str:
    return (
        f"cycle limit reached: the next instruction would take the run past {max_cycles} cycles without HALT "
        f"(raise it with --max-cycles)"
    )


def time_limit(timeout: float) -> str:
    return f"time limit reached: the run took longer than {timeout:g} s without HALT (raise it with --timeout)"


def span_fault(name: str, start: int, length: int, size: int) -> str | None:
    """Why scratchpad ``name`` (of ``size`` entries) cannot hold ``start .. start+length-1``, or None."""
    if length > 0 and (start < 0 or start + length > size):
        return f"scratchpad {name} access {start}..{start + length - 1} outside 0..{size - 1}"
    return None


def dram_fault(what: str, lo: int, hi: int, size: int) -> str | None:
    """Why a DMA cannot touch main-memory words ``lo .. hi``, or None."""
    if lo < 0 or hi >= size:
        return f"{what} main-memory access {lo}..{hi} outside main memory (0..{size - 1})"
    return None


def fault_error(program: Program, index: int, message: str, done: int) -> PccError:
    """The PccError of a fault at instruction ``index`` after ``done`` instructions ran."""
    ins = program.instructions[index]
    if isa.BY_OPCODE.get(ins.op) is not None:
        err = program.error_at(index, message)
    else:  # Program.error_at looks the mnemonic up and cannot name an invalid opcode
        text = f"{message} (at text address {ins.addr}: opcode {ins.op})"
        loc = Location(program.file, ins.line, 1 if ins.line is not None else None)
        err = PccError(text, loc, source_line=source_line(program.source, ins.line))
    err.notes.append(f"{done} instruction{'' if done == 1 else 's'} ran before the fault")
    return err


def check_data(program: Program, words: int) -> None:
    """The data segments fit main memory of ``words`` words and hold words only."""
    for seg in program.data:
        if seg.addr < 0 or seg.end > words:
            raise PccError(f"data segment at {seg.addr}..{seg.end - 1} does not fit main memory of {words} words")
        w = np.asarray(seg.words)
        if w.size and (int(w.min()) < -WORD_MAX or int(w.max()) > WORD_MAX):
            raise PccError(f"data segment at address {seg.addr} holds a value outside the 16-pent word range", None)


class Fault(Exception):
    """A machine fault inside the simulator: the index of the faulting instruction and the reason.

    Internal: :meth:`Simulator.run` turns it into a :class:`PccError` at the instruction's source line.
    """

    def __init__(self, index: int, message: str, completed: bool = False) -> None:
        super().__init__(message)
        self.index = index
        self.message = message
        self.completed = completed  # the instruction itself ran (e.g. the last one, before falling off the end)
