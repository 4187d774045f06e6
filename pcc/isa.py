"""The pentary ISA: one declarative table of instructions, the machine parameters, and the integer primitives.

This module is the single source of truth for the instruction set. Everything else is derived from it:
the assembler's operand parsing and range checks, the binary encoder/decoder (:mod:`pcc.isa_encoding`), the
disassembler, the cycle costs the simulator charges, and the instruction tables of ``docs/ISA.md``
(:mod:`pcc.isa_docs`).

Summary (details in docs/ISA.md):

* A machine word is 16 pents. An instruction is one or more 16-pent words: scalar instructions take one
  word, tensor instructions 2 to 6 words. (The published 8-pent instruction cannot hold an opcode and three
  3-pent register fields, 3 + 3 + 3 + 3 = 12 > 8, so the instruction word is the 16-pent machine word.)
* Encoding: the instruction is read as one balanced integer over all its words (word ``j`` holds pents
  ``16j .. 16j+15``, little-endian). Pents 0..2 hold the opcode (1..62, every opcode unique); the operand
  fields follow in table order, each a balanced integer of its width; unused pents are zero.
* Operand kinds: ``r`` register (3 pents, 0..31), ``sN`` signed N-pent immediate, ``uN`` non-negative
  N-pent immediate, ``tN`` signed N-pent word offset relative to the instruction's own address.
* Tensor instructions take their operands as immediate fields (scratchpad addresses, sizes, quantisation
  parameters) plus, for DMA, a main-memory operand ``[Pb + off]``; no descriptor memory is involved.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from pcc.pentary import word_max

# ---------------------------------------------------------------------------------------------------------
# Machine parameters
# ---------------------------------------------------------------------------------------------------------


def _p(default: int | float, doc: str) -> Any:
    """A machine parameter: its default and a one-line description (shown in docs/ISA.md)."""
    return field(default=default, metadata={"doc": doc})


@dataclass(frozen=True)
class MachineConfig:
    """Every machine parameter, with its default, in one place."""

    word_pents: int = _p(16, "a machine word (register, main-memory word, instruction word)")
    instr_word_pents: int = _p(16, "one instruction word; tensor instructions use several")
    opcode_pents: int = _p(3, "the opcode field (pents 0..2 of the first instruction word)")
    reg_pents: int = _p(3, "a register field (125 codes >= 32 registers)")
    num_regs: int = _p(32, "P0..P31")
    zero_reg: int = _p(0, "P0 reads 0, writes are discarded")
    fp_reg: int = _p(29, "frame pointer (convention only)")
    sp_reg: int = _p(30, "stack pointer, used by PUSH/POP")
    lr_reg: int = _p(31, "link register, written by CALL, read by RET")
    acc_pents: int = _p(32, "architectural width of ACC and of the C-scratchpad accumulators")
    acc_sat_pents: int = _p(27, "accumulators saturate at +-word_max(27) (the widest range an int64 holds)")
    addr_pents: int = _p(20, "architectural main-memory address width (addresses are 0 .. word_max(20))")
    dram_words: int = _p(1 << 23, "populated main memory, in words; addresses >= this fault")
    a_spad_words: int = _p(1 << 19, "activation scratchpad A: entries of one word-range integer")
    w_spad_pents: int = _p(1 << 21, "weight scratchpad W: entries of one pent (-2..2)")
    c_spad_words: int = _p(1 << 17, "accumulator scratchpad C: entries of accumulator precision")
    mac_rows: int = _p(32, "MAC array: K (reduction) dimension of one pass")
    mac_cols: int = _p(32, "MAC array: N (output channel) dimension of one pass")
    xbar_rows: int = _p(256, "analog crossbar used by MATVEC: K dimension")
    xbar_cols: int = _p(256, "analog crossbar: N dimension")
    xbar_cycles: int = _p(8, "cycles for one crossbar matrix-vector pass")
    vec_lanes: int = _p(32, "elementwise unit: elements per cycle")
    dma_words_per_cycle: int = _p(8, "main memory <-> scratchpad bandwidth, words per cycle")
    dma_setup_cycles: int = _p(32, "fixed cost of one DMA instruction")
    mem_cycles: int = _p(2, "scalar LOAD/STORE/PUSH/POP latency")
    branch_cycles: int = _p(2, "branches, jumps, calls and returns (taken or not)")
    clock_hz: float = _p(1.0e9, "clock frequency in Hz (for converting cycles to time)")

    @property
    def stack_top(self) -> int:
        """Reset value of SP: one past the last main-memory word (the stack grows down)."""
        return self.dram_words


DEFAULT_CONFIG = MachineConfig()

WORD_PENTS = DEFAULT_CONFIG.word_pents
WORD_MAX = word_max(WORD_PENTS)  # 76_293_945_312
ACC_MAX = word_max(DEFAULT_CONFIG.acc_sat_pents)  # 3_725_290_298_461_914_062
FLAGS = ("Z", "N", "P", "V", "C", "S")  # bit i of the flags register is FLAGS[i]
REG_ALIASES = {"FP": 29, "SP": 30, "LR": 31}
MULT_MAX = word_max(13)  # largest requantisation multiplier (u13)
SHIFT_MAX = 62  # largest requantisation shift (u3)

# ---------------------------------------------------------------------------------------------------------
# Integer primitives the semantics refer to (exact, vectorised, reproducible in numpy)
# ---------------------------------------------------------------------------------------------------------


def wrap(x: int, pents: int = WORD_PENTS) -> int:
    """``x`` reduced modulo 5**pents into the balanced range (the carry out of the top pent is dropped)."""
    m = word_max(pents)
    return (x + m) % (5**pents) - m


def saturate(x: np.ndarray | int, pents: int) -> np.ndarray | int:
    """``x`` clipped to ``[-word_max(pents), word_max(pents)]``."""
    m = word_max(pents)
    if isinstance(x, np.ndarray):
        return np.clip(x, -m, m)
    return max(-m, min(m, int(x)))


def div_round(a: np.ndarray, b: np.ndarray | int) -> np.ndarray:
    """``a / b`` rounded to nearest, ties away from zero (``b > 0``), exactly, as int64."""
    a = np.asarray(a, dtype=np.int64)
    b = np.asarray(b, dtype=np.int64)
    q = (np.abs(a) * 2 + b) // (2 * b)
    return np.where(a < 0, -q, q)


def mul_shift_round(x: np.ndarray, mult: np.ndarray | int, shift: np.ndarray | int, cap: int) -> np.ndarray:
    """``round(x * mult / 2**shift)``, ties away from zero, computed exactly, then clipped to ``[-cap, cap]``.

    ``|x| <= ACC_MAX``, ``0 <= mult <= MULT_MAX``, ``0 <= shift <= 62``, ``cap < 2**62``. The product can
    exceed 64 bits, so it is formed from 31-bit halves, unless the actual operands bound it (with the rounding
    term) below 2**63, when plain int64 gives the same value: this function is the definition of REQUANT,
    REQUANTC and EADD rounding, and gives the mathematically exact result for every valid input.
    """
    x = np.asarray(x, dtype=np.int64)
    m0 = np.asarray(mult, dtype=np.int64)
    s0 = np.asarray(shift, dtype=np.int64)
    m = np.broadcast_to(m0, x.shape)
    s = np.broadcast_to(s0, x.shape)
    if x.ndim and x.size:
        # Fast path, the same value in plain int64 when the actual operands allow it. With S = max(shift),
        # m' = mult * 2**(S - shift) and y = x * m', round half away from zero of x * mult / 2**shift is
        # (y + 2**(S-1)) >> S for x >= 0 and (y + 2**(S-1) - 1) >> S for x < 0 (S >= 1; for S = 0, y itself):
        # the dropped low bits are a multiple of 2**(S - shift), so one common shift rounds every channel alike.
        # It is used when max|x| * max(m') + 2**(S-1) < 2**63, so nothing overflows.
        m_lo, m_hi, s_lo, s_hi = int(m0.min()), int(m0.max()), int(s0.min()), int(s0.max())
        x_lo, x_hi = int(x.min()), int(x.max())
        a_max = max(x_hi, -x_lo)
        half = (1 << s_hi) >> 1
        mp_max = m_hi << (s_hi - s_lo) if 0 <= s_lo <= s_hi <= SHIFT_MAX else 1 << 63
        if m_lo >= 0 and mp_max < 1 << 63 and a_max * mp_max + half < 1 << 63:
            y = x * (m if s_lo == s_hi else m0 << (s_hi - s0))
            if s_hi:
                y += half
                if x_lo < 0:
                    y -= x < 0  # a bool temporary: an int64 one costs more in fresh pages than in arithmetic
                y >>= s_hi
            if (a_max * mp_max + half) >> s_hi > cap:
                np.clip(y, -cap, cap, out=y)
            return y
        if m_lo >= 0 and 0 <= s_lo and s_hi <= SHIFT_MAX and a_max * m_hi + half < 1 << 63:
            # shifts too far apart for one common shift: the same rounding per element
            y = x * m
            y += np.where(s0 > 0, np.left_shift(np.int64(1), np.maximum(s0 - 1, 0)), 0)
            if x_lo < 0:
                y -= (x < 0) & (s0 > 0)
            y >>= s0
            if (a_max * m_hi + half) >> s_lo > cap:
                np.clip(y, -cap, cap, out=y)
            return y
    return _mul_shift_round_wide(x, m, s, cap)


def _mul_shift_round_wide(x: np.ndarray, m: np.ndarray, s: np.ndarray, cap: int) -> np.ndarray:
    """:func:`mul_shift_round` for any valid operands (int64 arrays of one shape): the product from 31-bit halves."""
    a = np.abs(x)
    ah, al = a >> 31, a & 0x7FFFFFFF
    r = np.where(s > 0, np.left_shift(np.int64(1), np.maximum(s - 1, 0)), 0)
    hi = ah * m  # < 2**62
    lo = al * m + r  # < 2**62 + 2**61
    hi = hi + (lo >> 31)
    lo = lo & 0x7FFFFFFF
    # s >= 31: q = hi >> (s - 31), exact because lo < 2**31
    q_big = hi >> np.maximum(s - 31, 0)
    # s < 31: q = hi * 2**(31 - s) + (lo >> s); clamp hi first so the product cannot overflow
    k = np.maximum(31 - s, 0)
    hi_c = np.minimum(hi, (np.int64(cap) >> k) + 1)
    q_small = (hi_c << k) + (lo >> np.minimum(s, 31))
    q = np.minimum(np.where(s >= 31, q_big, q_small), cap)
    return np.where(x < 0, -q, q)


def requantize(acc: np.ndarray, mult: np.ndarray | int, shift: np.ndarray | int, pents: int) -> tuple[np.ndarray, bool]:
    """REQUANT's arithmetic: ``sat_pents(round_half_away(acc * mult / 2**shift))``; also whether it clipped."""
    cap = word_max(pents)
    exact = mul_shift_round(acc, mult, shift, ACC_MAX)
    if exact.size == 0 or (int(exact.max()) <= cap and int(exact.min()) >= -cap):
        return exact, False
    return np.clip(exact, -cap, cap), True


def emul(x: np.ndarray, y: np.ndarray, mult: int, shift: int, pents: int) -> tuple[np.ndarray, bool]:
    """EMUL's arithmetic: ``sat_pents(mul_shift_round(sat27(x * y), mult, shift))``; also whether it clipped
    (the product saturates at ``ACC_MAX`` first, so it is formed exactly in int64)."""
    x, y = np.asarray(x, dtype=np.int64), np.asarray(y, dtype=np.int64)
    big = np.abs(x.astype(np.float64) * y.astype(np.float64)) > 2.0**62
    prod = np.where(big, 0, x) * y  # |x * y| < 2**62 + rounding where not big: no overflow
    prod = np.where(big, np.sign(x) * np.sign(y) * ACC_MAX, np.clip(prod, -ACC_MAX, ACC_MAX))
    return requantize(prod, mult, shift, pents)


def conv_out(size: int, pad_lo: int, pad_hi: int, kernel: int, stride: int) -> int:
    """Output extent of a convolution or pooling window: ``(size + pad_lo + pad_hi - kernel) // stride + 1``."""
    return (size + pad_lo + pad_hi - kernel) // stride + 1


def cdiv(a: int, b: int) -> int:
    """Ceiling division of non-negative integers."""
    return -(-a // b)


# ---------------------------------------------------------------------------------------------------------
# Operand kinds and instruction table
# ---------------------------------------------------------------------------------------------------------


class Kind(enum.Enum):
    REG = "r"  # register number 0..31, 3 pents
    SIGNED = "s"  # balanced immediate
    UNSIGNED = "u"  # non-negative immediate
    TARGET = "t"  # word offset relative to the instruction's address (a label in assembly)


@dataclass(frozen=True)
class Field:
    """One encoded operand field: its name, kind, width in pents and the values it accepts."""

    name: str
    kind: Kind
    pents: int
    lo: int
    hi: int

    def check(self, value: int) -> str | None:
        """None if ``value`` is acceptable, else the reason."""
        if self.lo <= value <= self.hi:
            return None
        what = {Kind.REG: "register", Kind.TARGET: "branch offset"}.get(self.kind, f"{self.name}")
        return f"{what} {value} out of range [{self.lo}, {self.hi}] ({self.kind.value}{self.pents} field)"


@dataclass(frozen=True)
class Operand:
    """One assembly operand: a single field, or a memory operand ``[Pb + off]`` made of two fields."""

    fields: tuple[Field, ...]

    @property
    def is_mem(self) -> bool:
        return len(self.fields) == 2


class Unit(enum.Enum):
    ALU = "alu"
    MEM = "mem"
    BRANCH = "branch"
    CONTROL = "control"
    DMA = "dma"
    MAC = "mac"  # MAC array (MATMUL, CONV)
    XBAR = "xbar"  # crossbar (MATVEC)
    VEC = "vec"  # elementwise unit


@dataclass(frozen=True)
class Instr:
    """One instruction: everything the toolchain knows about it."""

    mnemonic: str
    opcode: int
    syntax: str  # operand spec, e.g. "rd:r, [rb:r + off:s7]"
    unit: Unit
    flags: str  # flags written, e.g. "ZNPV"; others are unchanged
    cycles: str  # cycle-cost expression over the field names, cfg, cdiv, conv_out
    semantics: str  # exact integer semantics, one paragraph
    operands: tuple[Operand, ...] = ()
    fields: tuple[Field, ...] = ()
    words: int = 1
    checks: tuple[str, ...] = ()  # static constraints over the fields, checked by the assembler
    cost: Callable[..., int] = field(default=lambda *a: 1, repr=False, compare=False)
    check: Callable[..., bool] = field(default=lambda *a: True, repr=False, compare=False)

    def violated(self, args: tuple[int, ...]) -> str | None:
        """The first static constraint that ``args`` break, or None."""
        if self.check(*args):
            return None
        for text, fn in zip(self.checks, _check_fns(self), strict=True):
            if not fn(*args):
                return text
        return None  # pragma: no cover

    @property
    def is_tensor(self) -> bool:
        return self.unit in (Unit.DMA, Unit.MAC, Unit.XBAR, Unit.VEC)

    @property
    def field_names(self) -> tuple[str, ...]:
        return tuple(f.name for f in self.fields)


_FIELD_RE = re.compile(r"^(\w+):([rsut])(\d*)(?:\((-?\d+)\.\.(-?\d+)\))?$")
_MEM_RE = re.compile(r"^\[(\S+)\s*\+\s*(\S+)\]$")


def _field(spec: str, cfg: MachineConfig) -> Field:
    m = _FIELD_RE.match(spec.strip())
    if not m:
        raise ValueError(f"bad field spec {spec!r}")
    name, k, width, lo, hi = m.groups()
    kind = Kind(k)
    if kind is Kind.REG:
        pents, flo, fhi = cfg.reg_pents, 0, cfg.num_regs - 1
    else:
        pents = int(width)
        fhi = word_max(pents)
        flo = 0 if kind is Kind.UNSIGNED else -fhi
    if lo is not None:
        flo, fhi = int(lo), int(hi)
    return Field(name, kind, pents, flo, fhi)


def _parse_syntax(syntax: str, cfg: MachineConfig) -> tuple[Operand, ...]:
    if not syntax:
        return ()
    ops = []
    for part in re.split(r",\s*(?![^\[]*\])", syntax):
        m = _MEM_RE.match(part.strip())
        if m:
            ops.append(Operand((_field(m.group(1), cfg), _field(m.group(2), cfg))))
        else:
            ops.append(Operand((_field(part, cfg),)))
    return tuple(ops)


_COST_NAMES = {"cdiv": cdiv, "conv_out": conv_out}


def _make_cost(expr: str, names: tuple[str, ...]) -> Callable[..., int]:
    args = ", ".join((*names, "cfg")) if names else "cfg"
    fn = eval(f"lambda {args}: int({expr})", dict(_COST_NAMES))  # the table's own text, never user input
    return fn


def _make_check(exprs: tuple[str, ...], names: tuple[str, ...]) -> Callable[..., bool]:
    body = " and ".join(f"({e})" for e in exprs) or "True"
    return eval(f"lambda {', '.join(names)}: {body}", dict(_COST_NAMES))


def _check_fns(ins: Instr) -> list[Callable[..., bool]]:
    return [_make_check((e,), ins.field_names) for e in ins.checks]


def _I(
    mnemonic: str,
    opcode: int,
    syntax: str,
    unit: Unit,
    flags: str,
    cycles: str,
    semantics: str,
    checks: tuple[str, ...] = (),
) -> Instr:
    operands = _parse_syntax(syntax, DEFAULT_CONFIG)
    flds = tuple(f for op in operands for f in op.fields)
    used = DEFAULT_CONFIG.opcode_pents + sum(f.pents for f in flds)
    words = -(-used // DEFAULT_CONFIG.instr_word_pents)
    names = tuple(f.name for f in flds)
    return Instr(
        mnemonic,
        opcode,
        syntax,
        unit,
        flags,
        cycles,
        " ".join(semantics.split()),
        operands,
        flds,
        words,
        checks,
        _make_cost(cycles, names),
        _make_check(checks, names),
    )


A, M, B, C = Unit.ALU, Unit.MEM, Unit.BRANCH, Unit.CONTROL

# Shared wording.
_W = "wrap(x) reduces x modulo 5^16 into the balanced word range; V is set iff the exact result was outside it."
_ZNP = "Z, N, P are set from the value written (zero, negative, positive)."
_DMA_COST = "cfg.dma_setup_cycles + cdiv(rows * cols, cfg.dma_words_per_cycle)"
_WIN = (
    "Windows: oh = conv_out(ih, pt, pb, kh, sh), ow = conv_out(iw, pl, pr, kw, sw); input pixel (y, x) of "
    "output (oy, ox) and tap (ky, kx) is y = oy*sh - pt + ky, x = ox*sw - pl + kx."
)

_WIN_CHECKS = (
    "kh >= 1 and kw >= 1",
    "pt < kh and pb < kh and pl < kw and pr < kw",
    "conv_out(ih, pt, pb, kh, sh) >= 1 and conv_out(iw, pl, pr, kw, sw) >= 1",
)

INSTRUCTIONS: tuple[Instr, ...] = (
    # ---- control -------------------------------------------------------------------------------------
    _I("NOP", 1, "", C, "", "1", "Does nothing."),
    _I("HALT", 2, "", C, "", "1", "Stops the machine; the simulator returns. PC stays at the HALT."),
    _I(
        "SYNC",
        3,
        "",
        C,
        "",
        "1",
        """Waits until every earlier tensor instruction has completed. In this in-order model every
        instruction completes before the next starts, so SYNC only costs its cycle; code for a pipelined
        implementation must place SYNC before reading a scratchpad region that a DMA or tensor instruction
        is still writing.""",
    ),
    _I(
        "FENCE",
        4,
        "",
        C,
        "",
        "1",
        """Orders memory: every main-memory access before it completes before any after it. Like SYNC, a
        no-op in this in-order model apart from its cycle.""",
    ),
    # ---- ALU -----------------------------------------------------------------------------------------
    _I(
        "ADD",
        5,
        "rd:r, rs1:r, rs2:r",
        A,
        "ZNPV",
        "1",
        f"rd = wrap(rs1 + rs2). {_W} {_ZNP}",
    ),
    _I("SUB", 6, "rd:r, rs1:r, rs2:r", A, "ZNPV", "1", f"rd = wrap(rs1 - rs2). {_W} {_ZNP}"),
    _I(
        "ADDI",
        7,
        "rd:r, rs:r, imm:s7",
        A,
        "ZNPV",
        "1",
        f"rd = wrap(rs + imm), imm a signed 7-pent immediate (-39062..39062). {_W} {_ZNP}",
    ),
    _I("MUL", 8, "rd:r, rs1:r, rs2:r", A, "ZNPV", "1", f"rd = wrap(rs1 * rs2), the exact product wrapped. {_W} {_ZNP}"),
    _I(
        "NEG",
        9,
        "rd:r, rs:r",
        A,
        "ZNP",
        "1",
        f"rd = -rs. The balanced range is symmetric, so negation never overflows. {_ZNP}",
    ),
    _I("ABS", 10, "rd:r, rs:r", A, "ZNP", "1", f"rd = |rs|; never overflows. {_ZNP}"),
    _I("MUL2", 11, "rd:r, rs:r", A, "ZNPV", "1", f"rd = wrap(2 * rs). {_W} {_ZNP}"),
    _I(
        "DIV2",
        12,
        "rd:r, rs:r",
        A,
        "ZNPC",
        "1",
        f"rd = rs / 2 truncated toward zero (7 -> 3, -7 -> -3); C is set iff rs is odd (a remainder was "
        f"dropped). {_ZNP}",
    ),
    _I("MIN", 13, "rd:r, rs1:r, rs2:r", A, "ZNP", "1", f"rd = min(rs1, rs2). {_ZNP}"),
    _I("MAX", 14, "rd:r, rs1:r, rs2:r", A, "ZNP", "1", f"rd = max(rs1, rs2). {_ZNP}"),
    _I(
        "CLAMP",
        15,
        "rd:r, rs:r, rlo:r, rhi:r",
        A,
        "ZNP",
        "1",
        f"rd = min(max(rs, rlo), rhi): three sources, so four register fields (15 pents). If rlo > rhi the "
        f"result is rhi. {_ZNP}",
    ),
    _I("SIGN", 16, "rd:r, rs:r", A, "ZNP", "1", f"rd = -1, 0 or +1, the sign of rs. {_ZNP}"),
    _I("RELU", 17, "rd:r, rs:r", A, "ZNP", "1", f"rd = max(rs, 0). {_ZNP}"),
    _I(
        "QUANT",
        18,
        "rd:r, rs:r, rstep:r",
        A,
        "ZNP",
        "1",
        f"Quantises to the five pent levels: rd = clamp(round(rs / rstep), -2, 2), rounding to nearest with "
        f"ties away from zero (div_round). rstep <= 0 is a fault. {_ZNP}",
    ),
    _I(
        "MOVI",
        19,
        "rd:r, imm:s10",
        A,
        "ZNP",
        "1",
        f"rd = imm, a signed 10-pent immediate (-4882812..4882812). {_ZNP}",
    ),
    _I(
        "MOVHI",
        20,
        "rd:r, imm:s6",
        A,
        "ZNPV",
        "1",
        f"rd = wrap(rd + imm * 5^10). Any word v is built by MOVI rd, lo; MOVHI rd, hi where lo is v's low "
        f"10 balanced pents and hi = (v - lo) / 5^10. {_W} {_ZNP}",
    ),
    _I(
        "MAC",
        21,
        "rd:r, rs1:r, rs2:r",
        A,
        "ZNPVS",
        "1",
        """ACC = sat27(ACC + rs1 * rs2); rd = sat16(ACC). ACC is the 32-pent accumulator; this machine
        implements it saturating at +-word_max(27) = +-3725290298461914062 (the widest balanced range an
        int64 holds), so the upper 5 pents always read as zero. V is set iff either saturation clipped
        (ACC or the copy into rd), and then S is set too (S is sticky). Z, N, P are set from the value
        written to rd. MAC rd, P0, P0 reads ACC.""",
    ),
    _I("CLRACC", 22, "", A, "", "1", "ACC = 0."),
    # ---- memory --------------------------------------------------------------------------------------
    _I(
        "LOAD",
        23,
        "rd:r, [rb:r + off:s7]",
        M,
        "",
        "cfg.mem_cycles",
        """rd = mem[rb + off]. The effective address must lie in 0 .. dram_words-1, else a memory fault.""",
    ),
    _I(
        "STORE",
        24,
        "rs:r, [rb:r + off:s7]",
        M,
        "",
        "cfg.mem_cycles",
        "mem[rb + off] = rs. Address rules as LOAD.",
    ),
    _I(
        "LOADV",
        25,
        "rd:r, [rb:r + off:s4], n:u3(1..32)",
        M,
        "",
        "cfg.mem_cycles + n - 1",
        """Loads n consecutive words into consecutive registers: P(rd+i) = mem[rb + off + i] for
        i = 0..n-1; rd + n must not exceed 32 (checked by the assembler). The base is read before any
        register is written; a write to P0 is discarded.""",
        ("rd + n <= 32",),
    ),
    _I(
        "STOREV",
        26,
        "rs:r, [rb:r + off:s4], n:u3(1..32)",
        M,
        "",
        "cfg.mem_cycles + n - 1",
        "Stores n consecutive registers: mem[rb + off + i] = P(rs+i) for i = 0..n-1; rs + n <= 32.",
        ("rs + n <= 32",),
    ),
    _I(
        "PUSH",
        27,
        "rs:r",
        M,
        "",
        "cfg.mem_cycles",
        "SP = SP - 1; mem[SP] = rs, in that order (PUSH SP stores the decremented SP). The stack grows "
        "down from SP's reset value dram_words; an address outside main memory is a fault.",
    ),
    _I(
        "POP",
        28,
        "rd:r",
        M,
        "",
        "cfg.mem_cycles",
        "rd = mem[SP]; SP = old SP + 1, in that order (POP SP leaves SP = old SP + 1; the loaded value is "
        "discarded). An address outside main memory is a fault.",
    ),
    # ---- branches ------------------------------------------------------------------------------------
    _I(
        "BEQ",
        29,
        "rs:r, target:t10",
        B,
        "",
        "cfg.branch_cycles",
        """If rs == 0 then PC = PC + target, else PC = PC + 1. PC is the word address of the branch;
        target is a signed 10-pent word offset (a label in assembly, resolved by the assembler).""",
    ),
    _I("BNE", 30, "rs:r, target:t10", B, "", "cfg.branch_cycles", "As BEQ, taken if rs != 0."),
    _I("BLT", 31, "rs:r, target:t10", B, "", "cfg.branch_cycles", "As BEQ, taken if rs < 0."),
    _I("BGT", 32, "rs:r, target:t10", B, "", "cfg.branch_cycles", "As BEQ, taken if rs > 0."),
    _I("JUMP", 33, "target:t13", B, "", "cfg.branch_cycles", "PC = PC + target (signed 13-pent word offset)."),
    _I(
        "CALL",
        34,
        "target:t13",
        B,
        "",
        "cfg.branch_cycles",
        "LR = PC + 1; PC = PC + target. LR is P31.",
    ),
    _I("RET", 35, "", B, "", "cfg.branch_cycles", "PC = LR (P31)."),
    # ---- DMA: main memory <-> scratchpads -----------------------------------------------------------
    _I(
        "TLOAD",
        36,
        "a:u10, [rb:r + off:s13], rows:u9, cols:u9, stride:s9",
        Unit.DMA,
        "",
        _DMA_COST,
        """Activation DMA into scratchpad A: A[a + i*cols + j] = mem[rb + off + i*stride + j] for
        i < rows, j < cols (row-major, dense in A; stride 0 broadcasts one row). One activation per
        word. Any address outside main memory or A is a fault.""",
    ),
    _I(
        "TSTORE",
        37,
        "[rb:r + off:s13], a:u10, rows:u9, cols:u9, stride:s9",
        Unit.DMA,
        "",
        _DMA_COST,
        "mem[rb + off + i*stride + j] = A[a + i*cols + j] for i < rows, j < cols (rows in order, so with "
        "overlapping rows the later one wins).",
    ),
    _I(
        "TLOADW",
        38,
        "w:u10, [rb:r + off:s13], count:u10",
        Unit.DMA,
        "",
        "cfg.dma_setup_cycles + cdiv(cdiv(count, 16), cfg.dma_words_per_cycle)",
        """Packed-weight DMA into scratchpad W: W[w + i] = pent (i mod 16) of mem[rb + off + i div 16]
        for i < count. Weights are stored 16 pents per word, pent 0 (least significant) first, so a
        weight costs one sixteenth of a word in memory and 2.33 bits in the binary.""",
    ),
    _I(
        "TLOADC",
        39,
        "c:u10, [rb:r + off:s13], rows:u9, cols:u9, stride:s9",
        Unit.DMA,
        "",
        _DMA_COST,
        """Accumulator DMA into scratchpad C (biases, per-channel multipliers and shifts):
        C[c + i*cols + j] = mem[rb + off + i*stride + j]; stride 0 broadcasts a bias row over all
        output rows. The word is taken at full value; accumulators are wider than words.""",
    ),
    _I(
        "TSTOREC",
        40,
        "[rb:r + off:s13], c:u10, rows:u9, cols:u9, stride:s9",
        Unit.DMA,
        "S",
        _DMA_COST,
        "mem[rb + off + i*stride + j] = sat16(C[c + i*cols + j]); S is set if any value was clipped.",
    ),
    # ---- tensor compute -----------------------------------------------------------------------------
    _I(
        "MATMUL",
        41,
        "c:u10, a:u10, w:u10, m:u9, n:u9, k:u9, acc:u1(0..1)",
        Unit.MAC,
        "S",
        "max(1, cdiv(k, cfg.mac_rows) * cdiv(n, cfg.mac_cols) * (m + cfg.mac_rows))",
        """Pentary-weight matrix multiply on the MAC array:
        C[c + i*n + j] = sat27(base + sum_{t<k} A[a + i*k + t] * W[w + j*k + t]) for i < m, j < n,
        where base = C[c + i*n + j] if acc = 1 else 0. The sum is exact (for extents that fit the
        scratchpads it cannot overflow an int64) and saturates once; S is set if any element clipped.
        A is m x k row-major, W is n x k (each output's k weights contiguous), C is m x n row-major.
        Cost: the array holds a mac_rows x mac_cols weight tile; each tile is loaded (mac_rows cycles)
        and the m rows stream through it.""",
    ),
    _I(
        "AMATMUL",
        52,
        "c:u10, a:u10, b:u10, m:u9, n:u9, k:u9, kn:u1(0..1), pents:u3(1..16), acc:u1(0..1)",
        Unit.MAC,
        "S",
        "max(1, pents * cdiv(k, cfg.mac_rows) * cdiv(n, cfg.mac_cols) * (m + cfg.mac_rows))",
        """Activation-by-activation matrix multiply on the MAC array (attention's Q K^T and P V):
        C[c + i*n + j] = sat27(base + sum_{t<k} A[a + i*k + t] * B(t, j)) for i < m, j < n, with
        B(t, j) = sat_pents(A[b + j*k + t]) (kn = 0: the second operand n x k, each output's k values
        contiguous, as MATMUL's W) or sat_pents(A[b + t*n + j]) (kn = 1: k x n row-major), base as in
        MATMUL. The sum is exact and saturates once; S is set if any element clipped. Cost: the array
        multiplies a word by a pent, so the second operand streams through it digit-serially, one pent
        plane per pass (value = sum_p 5^p digit_p, the partial sums shifted by a pent position in the
        accumulators): pents passes of MATMUL's schedule.""",
    ),
    _I(
        "MATVEC",
        42,
        "c:u10, a:u10, w:u10, n:u9, k:u9, acc:u1(0..1)",
        Unit.XBAR,
        "S",
        "max(1, cdiv(k, cfg.xbar_rows) * cdiv(n, cfg.xbar_cols) * cfg.xbar_cycles)",
        """Crossbar matrix-vector product: C[c + j] = sat27(base + sum_{t<k} A[a + t] * W[w + j*k + t])
        for j < n, base as in MATMUL. Same result as MATMUL with m = 1, computed on the 256 x 256
        crossbar: each xbar_rows x xbar_cols block costs xbar_cycles.""",
    ),
    _I(
        "CONV",
        43,
        "c:u10, a:u10, w:u10, ih:u6, iw:u6, ic:u7, oc:u7, kh:u4, kw:u4, sh:u2(1..12), sw:u2(1..12), "
        "pt:u2, pl:u2, pb:u2, pr:u2, groups:u7(1..39062), acc:u1(0..1)",
        Unit.MAC,
        "S",
        "max(1, groups * cdiv(kh * kw * (ic // groups), cfg.mac_rows) * cdiv(oc // groups, cfg.mac_cols) "
        "* (conv_out(ih, pt, pb, kh, sh) * conv_out(iw, pl, pr, kw, sw) + cfg.mac_rows))",
        f"""2-D convolution, channels last (HWC), zero padding, no dilation. Input A[a + (y*iw + x)*ic + ci],
        output C[c + (oy*ow + ox)*oc + o], weights W[w + ((o*kh + ky)*kw + kx)*icg + ci] with
        icg = ic / groups, ocg = oc / groups (both must divide exactly; checked by the assembler, as
        oh, ow >= 1 and pads < kernel). {_WIN} For output channel o of group g = o div ocg:
        C[...] = sat27(base + sum over ky < kh, kx < kw, ci < icg of A[y, x, g*icg + ci] * W[o, ky, kx, ci]),
        taps outside the input contributing 0, base as in MATMUL; S if any element clipped. Cost: the
        im2col matrix multiply per group on the MAC array.""",
        _WIN_CHECKS + ("ic % groups == 0", "oc % groups == 0"),
    ),
    _I(
        "POOL",
        44,
        "dst:u10, src:u10, ih:u6, iw:u6, c:u7, kh:u4, kw:u4, sh:u2(1..12), sw:u2(1..12), "
        "pt:u2, pl:u2, pb:u2, pr:u2, mode:u1(0..2)",
        Unit.VEC,
        "",
        "cdiv(conv_out(ih, pt, pb, kh, sh) * conv_out(iw, pl, pr, kw, sw) * c * kh * kw, cfg.vec_lanes) + 1",
        f"""Pooling on scratchpad A, HWC: input A[src + (y*iw + x)*c + ch], output
        A[dst + (oy*ow + ox)*c + ch]. {_WIN} mode 0: the maximum over the taps inside the input (padding
        never wins). mode 1: average over the taps inside the input; mode 2: average over all kh*kw taps
        (padding counts as 0). The average is div_round(sum, count): nearest, ties away from zero.
        Pads must be smaller than the kernel, so every window has an input tap.""",
        _WIN_CHECKS + ("c >= 1",),
    ),
    _I(
        "REQUANT",
        45,
        "dst:u10, src:u10, count:u9, mult:u13, shift:u3(0..62), pents:u3(1..16)",
        Unit.VEC,
        "S",
        "cdiv(count, cfg.vec_lanes) + 1",
        """Requantise accumulators to activations: A[dst + i] = sat_pents(round(C[src + i] * mult / 2^shift))
        for i < count, rounding to nearest with ties away from zero, computed exactly (mul_shift_round),
        then saturated to the pents-pent range +-(5^pents - 1)/2. S is set if any element clipped.""",
    ),
    _I(
        "REQUANTC",
        46,
        "dst:u10, src:u10, rows:u9, cols:u9, q:u10, pents:u3(1..16)",
        Unit.VEC,
        "S",
        "cdiv(rows * cols, cfg.vec_lanes) + 1",
        """Per-channel requantisation: A[dst + i*cols + j] = sat_pents(round(C[src + i*cols + j] * M_j /
        2^S_j)) with M_j = C[q + j] and S_j = C[q + cols + j] (loaded with TLOADC), rounding as
        REQUANT. M_j outside 0..MULT_MAX or S_j outside 0..62 is a fault. S as REQUANT.""",
    ),
    _I(
        "EADD",
        47,
        "dst:u10, x:u10, y:u10, count:u9, mx:u13, sx:u3(0..62), my:u13, sy:u3(0..62), pents:u3(1..16)",
        Unit.VEC,
        "S",
        "cdiv(count, cfg.vec_lanes) + 1",
        """Elementwise add with rescale (residual connections): A[dst + i] = sat_pents(
        mul_shift_round(A[x + i], mx, sx) + mul_shift_round(A[y + i], my, sy)); each term is rounded
        (nearest, ties away from zero) and clipped to +-ACC_MAX on its own, then the sum is saturated.
        S is set if the final saturation clipped.""",
    ),
    _I(
        "EMUL",
        51,
        "dst:u10, x:u10, y:u10, count:u9, mult:u13, shift:u3(0..62), pents:u3(1..16)",
        Unit.VEC,
        "S",
        "cdiv(count, cfg.vec_lanes) + 1",
        """Elementwise product with rescale (gates, per-channel scales): A[dst + i] = sat_pents(
        mul_shift_round(sat27(A[x + i] * A[y + i]), mult, shift)): the exact product, clipped to +-ACC_MAX,
        times mult / 2^shift rounded to nearest (ties away from zero), then saturated. S is set if the final
        saturation clipped.""",
    ),
    _I(
        "TRELU",
        48,
        "dst:u10, src:u10, count:u9",
        Unit.VEC,
        "",
        "cdiv(count, cfg.vec_lanes) + 1",
        "A[dst + i] = max(A[src + i], 0) for i < count.",
    ),
    _I(
        "TCLAMP",
        49,
        "dst:u10, src:u10, count:u9, lo:s10, hi:s10",
        Unit.VEC,
        "",
        "cdiv(count, cfg.vec_lanes) + 1",
        """A[dst + i] = min(max(A[src + i], lo), hi) for i < count (ReLU6 is lo = 0, hi = the
        quantised 6). If lo > hi the result is hi.""",
    ),
    _I(
        "TLUT",
        50,
        "dst:u10, src:u10, count:u9, table:u10, lo:s10, n:u9(1..976562)",
        Unit.VEC,
        "",
        "cdiv(count, cfg.vec_lanes) + 1",
        """Table lookup for other activations (sigmoid, tanh, ...): A[dst + i] = A[table + v - lo] with
        v = min(max(A[src + i], lo), lo + n - 1), i.e. the table holds the outputs for inputs
        lo .. lo+n-1 and inputs beyond either end use the end entries.""",
    ),
)

del A, M, B, C


# Opcodes by mnemonic, generated from the table: Op.ADD == 5, Op(5).name == "ADD".
Op = enum.IntEnum("Op", {i.mnemonic: i.opcode for i in INSTRUCTIONS})


BY_MNEMONIC: dict[str, Instr] = {i.mnemonic: i for i in INSTRUCTIONS}
BY_OPCODE: dict[int, Instr] = {i.opcode: i for i in INSTRUCTIONS}


def _check_table() -> None:
    opmax = word_max(DEFAULT_CONFIG.opcode_pents)
    assert len(BY_MNEMONIC) == len(INSTRUCTIONS), "duplicate mnemonic"
    assert len(BY_OPCODE) == len(INSTRUCTIONS), "duplicate opcode"
    for ins in INSTRUCTIONS:
        assert 1 <= ins.opcode <= opmax, ins.mnemonic
        assert set(ins.flags) <= set(FLAGS), ins.mnemonic
        names = ins.field_names
        assert len(set(names)) == len(names), ins.mnemonic
        for f in ins.fields:
            assert -word_max(f.pents) <= f.lo <= f.hi <= word_max(f.pents), (ins.mnemonic, f)
        if not ins.is_tensor:
            assert ins.words == 1, ins.mnemonic


_check_table()


def cycles(instr: Instr, args: tuple[int, ...], cfg: MachineConfig = DEFAULT_CONFIG) -> int:
    """The cycle cost of one instruction with its decoded operand fields."""
    return instr.cost(*args, cfg)


__all__ = [
    "ACC_MAX",
    "BY_MNEMONIC",
    "BY_OPCODE",
    "DEFAULT_CONFIG",
    "FLAGS",
    "INSTRUCTIONS",
    "MULT_MAX",
    "REG_ALIASES",
    "SHIFT_MAX",
    "WORD_MAX",
    "WORD_PENTS",
    "Field",
    "Instr",
    "Kind",
    "MachineConfig",
    "Op",
    "Operand",
    "Unit",
    "cdiv",
    "conv_out",
    "cycles",
    "div_round",
    "emul",
    "mul_shift_round",
    "requantize",
    "saturate",
    "wrap",
]
