"""The in-memory program: what the assembler and the binary reader produce and the simulator consumes.

Everything is pre-decoded: an instruction is an opcode (``isa.Op``) and a tuple of its field values in the
order of ``isa.BY_OPCODE[op].fields`` (the same order as the assembly operands, a memory operand ``[Pb + off]``
giving two fields). A branch, jump or call target field holds the encoded word offset relative to the
instruction's own address, so the destination is ``instr.addr + instr.args[-1]``.

Memory model: the text section is its own instruction memory, word-addressed from 0 (PC values are text word
addresses; tensor instructions occupy several words). The data section is a list of segments placed in main
memory (word addresses 0 .. dram_words-1) before the program starts. Program inputs are written at their
declared addresses before the run and outputs are read from theirs after HALT.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import numpy as np

from pcc import isa, isa_encoding
from pcc.diagnostics import Location, PccError, source_line
from pcc.isa import DEFAULT_CONFIG, MachineConfig


@dataclass(frozen=True, slots=True)
class Instruction:
    """One decoded instruction at text word address ``addr``; ``line`` is its 1-based source line, if known."""

    op: int  # an isa.Op value
    args: tuple[int, ...]
    addr: int
    line: int | None = None

    @property
    def info(self) -> isa.Instr:
        return isa.BY_OPCODE[self.op]

    @property
    def mnemonic(self) -> str:
        """The instruction's mnemonic, or ``<invalid opcode N>`` for an opcode the ISA lacks."""
        spec = isa.BY_OPCODE.get(self.op)
        return spec.mnemonic if spec is not None else f"<invalid opcode {self.op}>"

    @property
    def words(self) -> int:
        return isa.BY_OPCODE[self.op].words

    def arg(self, name: str) -> int:
        """The value of the field called ``name`` (e.g. ``"rd"``, ``"off"``, ``"k"``)."""
        return self.args[isa.BY_OPCODE[self.op].field_names.index(name)]


@dataclass(slots=True)
class DataSegment:
    """Consecutive main-memory words starting at ``addr`` (values in the 16-pent word range, int64)."""

    addr: int
    words: np.ndarray

    @property
    def end(self) -> int:
        return self.addr + int(self.words.size)


# The assembly's names: a label, a symbol or a bare I/O name is an identifier that is not a register's name
# (P0..P31 in either case, and the aliases); every reader and writer of names asks these two.
NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_.]*\Z")
REGISTER_NAME_RE = re.compile(r"[Pp]\d+|" + "|".join(f"{a}|{a.lower()}" for a in isa.REG_ALIASES))


def plain_name_ok(name: str) -> bool:
    """Whether ``name`` can be a label or a symbol (and an I/O name written bare)."""
    return NAME_RE.match(name) is not None and REGISTER_NAME_RE.fullmatch(name) is None


def io_name_ok(name: str) -> bool:
    """Whether ``name`` can be a program I/O name: 1..255 UTF-8 bytes of printable text without ``"``."""
    return 1 <= len(name.encode("utf-8")) <= 255 and name.isprintable() and '"' not in name


def format_io_name(name: str) -> str:
    """An I/O name as the assembly writes it: bare when it is a plain identifier, else quoted (``"gpu_0/data_0"``),
    so the program keeps the model's own input and output names."""
    if plain_name_ok(name):
        return name
    return f'"{name}"'


@dataclass(frozen=True, slots=True)
class IODecl:
    """A program input or output tensor in main memory.

    ``shape`` is the model's (logical) shape. The tensor is stored one element per word, row-major, starting at
    ``addr``, after transposing its axes by ``order`` (``memory = logical.transpose(order)``; None means the
    identity, e.g. ``order=(0, 2, 3, 1)`` stores an NCHW tensor as NHWC). Each element is an integer of at most
    ``pents`` pents; the real value is ``element * scale``.
    """

    name: str
    shape: tuple[int, ...]
    pents: int
    scale: float
    addr: int
    order: tuple[int, ...] | None = None

    @property
    def size(self) -> int:
        n = 1
        for d in self.shape:
            n *= d
        return n

    @property
    def memory_shape(self) -> tuple[int, ...]:
        return self.shape if self.order is None else tuple(self.shape[i] for i in self.order)


@dataclass(frozen=True, slots=True)
class Symbol:
    """A label: ``section`` is ``"text"`` or ``"data"``; ``addr`` a text or main-memory word address."""

    name: str
    section: str
    addr: int


@dataclass
class Program:
    """A whole program: code, data, symbols and its I/O declarations."""

    instructions: list[Instruction] = field(default_factory=list)
    data: list[DataSegment] = field(default_factory=list)
    symbols: list[Symbol] = field(default_factory=list)
    inputs: list[IODecl] = field(default_factory=list)
    outputs: list[IODecl] = field(default_factory=list)
    file: str | None = None  # the source (.pasm) or binary (.pbin) it came from
    source: str | None = None  # the assembly text, when assembled from text (for diagnostics)
    machine: dict[str, int] = field(default_factory=dict)  # sizes that differ from the default machine

    @property
    def config(self) -> MachineConfig:
        """The machine the program was compiled for (the default one with :attr:`machine`'s sizes)."""
        if not self.machine:
            return DEFAULT_CONFIG
        from pcc.machine import from_overrides

        return from_overrides(self.machine, self.file or "program")

    # ---- layout ------------------------------------------------------------------------------------
    @property
    def text_words(self) -> int:
        """Size of the text section in words."""
        if not self.instructions:
            return 0
        last = self.instructions[-1]
        return last.addr + last.words

    def code_words(self) -> np.ndarray:
        """The encoded text section, one balanced 16-pent integer per word (int64)."""
        out: list[int] = []
        for ins in self.instructions:
            out.extend(isa_encoding.encode(ins.op, ins.args))
        return np.asarray(out, dtype=np.int64)

    def symbol(self, name: str) -> Symbol | None:
        for s in self.symbols:
            if s.name == name:
                return s
        return None

    def load_data(self, memory: np.ndarray) -> None:
        """Copy the data segments into a main-memory array (indexed by word address)."""
        for seg in self.data:
            if seg.addr < 0 or seg.end > memory.size:
                raise PccError(
                    f"data segment at {seg.addr}..{seg.end - 1} does not fit main memory of {memory.size} words"
                )
            memory[seg.addr : seg.end] = seg.words

    # ---- diagnostics -------------------------------------------------------------------------------
    def location(self, index: int) -> Location:
        """Where instruction ``index`` came from: file:line:1, or just the file when there is no source."""
        ins = self.instructions[index]
        return Location(self.file, ins.line, 1 if ins.line is not None else None)

    def error_at(self, index: int, message: str) -> PccError:
        """A PccError pointing at instruction ``index`` (for simulator faults); names the text address too."""
        ins = self.instructions[index]
        text = f"{message} (at text address {ins.addr}: {ins.mnemonic})"
        return PccError(text, self.location(index), source_line=source_line(self.source, ins.line))


__all__ = ["DataSegment", "IODecl", "Instruction", "Program", "Symbol"]
