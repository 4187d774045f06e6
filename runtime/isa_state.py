"""The machine state of the ISA's plain executor (``runtime/isa_ref.py``, whose rules read and write it).

:class:`Machine`: the registers P0..P31 and ACC as Python ints, the flags Z N P V C S, main memory and the
scratchpads A (activations), W (pents) and C (accumulators) as numpy arrays read element by element or by row,
the PC (a text word address), the steps and cycles of the run; and the few checked operations the rules share
(register writes, flags, wrapping, address and scratchpad checks, saturating stores), each raising
:class:`MachineFault` for the fault the simulator raises.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from pcc import isa, limits
from pcc.backend.program import Program
from pcc.isa import DEFAULT_CONFIG, WORD_MAX, MachineConfig
from pcc.runtime.faults import check_data, mem_fault, span_fault, target_fault

__all__ = ["Machine", "MachineFault"]


class MachineFault(Exception):
    """A fault raised by a rule: the machine stops at the instruction being executed."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


@dataclass
class Machine:
    """The architectural state of one program run (:meth:`reset` puts it in its start state)."""

    program: Program
    config: MachineConfig = DEFAULT_CONFIG
    regs: list[int] = field(default_factory=list)
    acc: int = 0
    flags: dict[str, bool] = field(default_factory=dict)  # "Z", "N", "P", "V", "C", "S"
    mem: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    A: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    W: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int8))
    C: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    pc: int = 0
    steps: int = 0
    cycles: int = 0
    halted: bool = False

    def __post_init__(self) -> None:
        if self.config is DEFAULT_CONFIG and self.program.machine:  # the machine the program was compiled for
            self.config = self.program.config
        for size in ("dram_words", "a_spad_words", "c_spad_words"):  # checked before allocating (a file sets them)
            limits.check_elements(getattr(self.config, size), 8, f"the machine's {size}")
        check_data(self.program, self.config.dram_words)
        self.valid_pcs = frozenset(ins.addr for ins in self.program.instructions)
        self.reset()

    def reset(self) -> None:
        """Main memory holds the data segments, everything else is zero, SP = top of memory, PC = 0."""
        cfg = self.config
        self.mem = np.zeros(cfg.dram_words, dtype=np.int64)
        self.program.load_data(self.mem)
        self.A = np.zeros(cfg.a_spad_words, dtype=np.int64)
        self.W = np.zeros(cfg.w_spad_pents, dtype=np.int8)
        self.C = np.zeros(cfg.c_spad_words, dtype=np.int64)
        self.regs = [0] * cfg.num_regs
        self.regs[cfg.sp_reg] = cfg.stack_top
        self.acc = 0
        self.flags = dict.fromkeys(isa.FLAGS, False)
        self.pc, self.steps, self.cycles, self.halted = 0, 0, 0, False

    @property
    def flag_bits(self) -> int:
        """The flags register: bit ``i`` is ``isa.FLAGS[i]`` (the simulator's ``flags``)."""
        return sum(1 << i for i, f in enumerate(isa.FLAGS) if self.flags[f])

    # ---- what the rules use ---------------------------------------------------------------------------------
    def write(self, rd: int, value: int) -> None:
        """Register ``rd`` = ``value``; a write to P0 is discarded."""
        if rd != 0:
            self.regs[rd] = value

    def set_znp(self, value: int) -> None:
        """Z, N, P from the value written (zero, negative, positive)."""
        self.flags["Z"], self.flags["N"], self.flags["P"] = value == 0, value < 0, value > 0

    def wrap(self, x: int) -> int:
        """``wrap(x)``, setting V iff the exact result was outside the word range."""
        self.flags["V"] = not -WORD_MAX <= x <= WORD_MAX
        return isa.wrap(x)

    def address(self, what: str, addr: int, span: int = 1) -> int:
        """``addr``, after checking that main-memory words ``addr .. addr+span-1`` exist (the fault names the end
        that lies outside: ``addr`` if it is negative, else the last word)."""
        n = self.config.dram_words
        if addr < 0 or addr + span > n:
            raise MachineFault(mem_fault(what, addr if addr < 0 else addr + span - 1, n))
        return addr

    def goto(self, dest: int) -> int:
        """``dest`` as the next PC, which must be the start of an instruction."""
        if dest not in self.valid_pcs:
            raise MachineFault(target_fault(dest))
        return dest

    def spads(self, what: str, *accesses: tuple[str, int, int]) -> None:
        """Check each (scratchpad, start, length) in order; the first one outside its scratchpad is a fault."""
        for name, start, length in accesses:
            reason = span_fault(name, start, length, {"A": self.A, "W": self.W, "C": self.C}[name].size)
            if reason is not None:
                raise MachineFault(f"{what}: {reason}")

    def saturate_into(self, spad: np.ndarray, start: int, values: list[int], cap: int) -> None:
        """``spad[start + i] = clip(values[i], -cap, cap)``; S is set if any value was clipped."""
        clipped = [max(-cap, min(cap, v)) for v in values]
        if clipped != values:
            self.flags["S"] = True
        spad[start : start + len(values)] = clipped
