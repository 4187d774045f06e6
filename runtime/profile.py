"""The profiler: cycles, MACs, utilisation, data movement, zero weights and energy, in total and per layer.

Everything is derived from the simulator's execution counts and the static facts of each instruction:

* **cycles** from the ISA's cost model (``isa.cycles``), per unit (alu, mem, dma, mac, xbar, vec);
* **MACs** of MATMUL, CONV (MAC array) and MATVEC (crossbar), dense (padding taps included: the array does them);
  **utilisation** is MACs / (MAC-array cycles x mac_rows x mac_cols);
* **data moved** between main memory (DRAM) and the scratchpads A, W, C and the registers, in words and in bytes
  at the binary's density (three pents in 7 bits, so a 16-pent word is 14/3 bytes);
* **zero weights**: the zero pents the MAC instructions met (counted as they ran) and the MACs they make;
* **energy** in pJ from a per-action table (:data:`ENERGY_PJ`, each entry with its source or assumption). The
  reported energy assumes a zero-gated MAC array (a zero weight does not switch the multiplier or the
  accumulator); ``energy_saved_pj`` is what the zero weights save against a dense array.

Layers: each instruction belongs to a layer (the model node it came from). The name comes from, in order: a
``; @layer NAME`` comment (also ``; @node NAME``, ``; layer: NAME``, ``; node: NAME``) in the assembly source,
which names the layer of the instructions after it (the code generator writes one per op); without such
comments, the nearest text label at or before the instruction (a ``.pbin`` keeps the code generator's labels in
its symbol table); else ``(program)``.

Each opcode's accounting is one rule in :data:`COST`, and each ``pent`` op's MACs one rule in :data:`PROFILE`
(the same mechanism as every stage, :mod:`pcc.rules`).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from pcc import isa
from pcc.backend.program import Instruction, Program
from pcc.diagnostics import PccError
from pcc.dialects import pent, pent_matmul, pent_move, pent_softmax
from pcc.ir import Operation
from pcc.isa import MachineConfig, Op, Unit, cdiv, conv_out
from pcc.rules import RuleTable

if TYPE_CHECKING:
    from pcc.runtime.simulator import Simulator

# ---------------------------------------------------------------------------------------------------------
# Energy per action
# ---------------------------------------------------------------------------------------------------------

BITS_PER_PENT = math.log2(5)  # 2.32 bits of information in one pent
WORD_BITS = 16 * BITS_PER_PENT  # 37.2: a 16-pent word
ACC_BITS = 27 * BITS_PER_PENT  # 62.7: an accumulator (saturating at 27 pents)
MULT_BITS = 13 * BITS_PER_PENT  # 30.2: a requantisation multiplier (u13)
BYTES_PER_WORD = 16 * 7 / 3 / 8  # 4.67: a word at the binary's packing density (3 pents in 7 bits)

# Horowitz, "Computing's energy problem (and what we can do about it)", ISSCC 2014, 45 nm, 0.9 V:
# 8-bit add 0.03 pJ, 32-bit add 0.1 pJ, 8-bit multiply 0.2 pJ, 32-bit multiply 3.1 pJ,
# 32-bit read of an 8 KB SRAM about 5 pJ, 32-bit DRAM read about 640 pJ.
_ADD32, _MUL32, _SRAM32, _DRAM32 = 0.1, 3.1, 5.0, 640.0

ENERGY_PJ: dict[str, tuple[float, str]] = {
    "add_word": (
        _ADD32 * WORD_BITS / 32,
        "add/compare of a 16-pent word: the 32-bit add (0.1 pJ, Horowitz ISSCC 2014) scaled linearly to 37.2 bits "
        "(assumption: a pentary adder costs per bit of information what a binary one does)",
    ),
    "add_acc": (
        _ADD32 * ACC_BITS / 32,
        "accumulate into a 27-pent accumulator: the 32-bit add scaled linearly to 62.7 bits (assumption)",
    ),
    "pent_mul": (
        _ADD32 * WORD_BITS / 32,
        "pent x word product: x1 is a wire, x(-1) a digit-wise negation (free in balanced base 5), x2 one add, "
        "so it is costed as one add of the word's width (assumption, an upper bound)",
    ),
    "mul_word": (
        _MUL32 * (WORD_BITS / 32) ** 2,
        "word x word multiply (scalar MUL, MAC, QUANT's division): the 32-bit multiply (3.1 pJ, Horowitz) "
        "scaled with the product of the operand widths (the cited 8- and 32-bit figures grow about that way)",
    ),
    "mul_requant": (
        _MUL32 * (ACC_BITS * MULT_BITS) / (32 * 32),
        "requantisation multiply, 27-pent accumulator x 13-pent multiplier: the 32-bit multiply scaled by the "
        "product of the widths (assumption)",
    ),
    "xbar_mac": (
        _ADD32 * WORD_BITS / 32 + _ADD32 * ACC_BITS / 32,
        "one crossbar (MATVEC) MAC: no analog figure in the cited source; costed as a digital pent MAC "
        "(pent_mul + add_acc), a placeholder",
    ),
    "sram_word": (
        _SRAM32 * WORD_BITS / 32,
        "scratchpad access of a 16-pent word: the 32-bit 8 KB SRAM read (5 pJ, Horowitz) scaled to 37.2 bits "
        "(assumption: the scratchpads are built from 8 KB banks)",
    ),
    "sram_pent": (
        _SRAM32 * BITS_PER_PENT / 32,
        "scratchpad W access of one pent (2.32 bits) at the same energy per bit",
    ),
    "sram_acc": (
        _SRAM32 * ACC_BITS / 32,
        "scratchpad C access of one accumulator (62.7 bits) at the same energy per bit",
    ),
    "dram_word": (
        _DRAM32 * WORD_BITS / 32,
        "main-memory (DRAM) access of a 16-pent word: the 32-bit DRAM read (640 pJ, Horowitz) scaled to 37.2 bits",
    ),
}
MAC_PJ = ENERGY_PJ["pent_mul"][0] + ENERGY_PJ["add_acc"][0]  # what a zero-gated MAC saves
ENERGY_NOTES = (
    "Not modelled: instruction fetch and decode, register-file and pipeline overheads, clock tree, leakage.",
    "Reported energy assumes a zero-gated MAC array; energy_saved_pj is the saving against a dense array.",
)

# Data-movement levels between main memory (DRAM) and the on-chip stores.
LEVELS = ("dram->A", "dram->W", "dram->C", "A->dram", "C->dram", "dram->reg", "reg->dram")
TRACKS = ("alu", "mem", "dma", "mac", "xbar", "vec")
UNIT_TRACK = {
    Unit.ALU: "alu",
    Unit.BRANCH: "alu",
    Unit.CONTROL: "alu",
    Unit.MEM: "mem",
    Unit.DMA: "dma",
    Unit.MAC: "mac",
    Unit.XBAR: "xbar",
    Unit.VEC: "vec",
}


@dataclass
class StaticCost:
    """What one execution of an instruction does (independent of data)."""

    cycles: int = 0
    track: str = "alu"
    macs: int = 0  # MAC-array or crossbar multiply-accumulates
    weights: int = 0  # weight pents the MAC instruction uses (each used for ``macs / weights`` MACs)
    moved: dict[str, int] = field(default_factory=dict)  # words (pents for dram->W's scratchpad side) per level
    dram_words: tuple[int, int] = (0, 0)  # main-memory words read, written
    actions: dict[str, int] = field(default_factory=dict)


def _pixels(a: dict[str, int]) -> int:
    """Output pixels of a CONV or POOL window: oh * ow."""
    return conv_out(a["ih"], a["pt"], a["pb"], a["kh"], a["sh"]) * conv_out(a["iw"], a["pl"], a["pr"], a["kw"], a["sw"])


CostRule = Callable[[StaticCost, dict[str, int], MachineConfig], None]

COST: RuleTable[CostRule] = RuleTable("instruction-accounting")
"""Per ISA opcode, what one execution adds to a :class:`StaticCost` beyond its cycles (MACs, data moved,
energy actions): ``rule(sc, fields, cfg)`` with the instruction's fields by name."""


def static_cost(ins: Instruction, cfg: MachineConfig = isa.DEFAULT_CONFIG) -> StaticCost:
    """The static facts of ``ins`` (an invalid instruction costs nothing)."""
    from pcc.runtime.simulator import invalid_reason

    info = isa.BY_OPCODE.get(ins.op)
    if info is None or invalid_reason(ins, info) is not None:
        return StaticCost()
    sc = StaticCost(cycles=isa.cycles(info, ins.args, cfg), track=UNIT_TRACK[info.unit])
    rule = COST.get(Op(ins.op))
    if rule is None:  # pragma: no cover - the coverage test gives every opcode a rule
        raise PccError(f"instruction-accounting: no rule for {Op(ins.op).name}")
    rule(sc, dict(zip(info.field_names, ins.args, strict=True)), cfg)
    return sc


def _scalar_cost(sc: StaticCost, a: dict[str, int], cfg: MachineConfig, op: Op) -> None:
    act = sc.actions
    if op in (Op.MUL, Op.QUANT):
        act["mul_word"] = 1
    elif op == Op.MAC:
        act["mul_word"] = 1
        act["add_acc"] = 1
    else:
        act["add_word"] = 1  # ALU op, or the PC/address update of control flow and memory ops
    if isa.BY_OPCODE[op].unit is Unit.MEM:
        n = a.get("n", 1)
        reads = op in (Op.LOAD, Op.LOADV, Op.POP)
        sc.moved["dram->reg" if reads else "reg->dram"] = n
        sc.dram_words = (n, 0) if reads else (0, n)
        act["dram_word"] = n


for _i in isa.INSTRUCTIONS:
    if not _i.is_tensor:
        COST.register(Op(_i.opcode))(lambda sc, a, cfg, _op=Op(_i.opcode): _scalar_cost(sc, a, cfg, _op))


def _transfer(op: Op, level: str, store: str) -> CostRule:
    def rule(sc: StaticCost, a: dict[str, int], cfg: MachineConfig) -> None:
        n = a["rows"] * a["cols"]
        sc.moved[level] = n
        sc.dram_words = (n, 0) if op in (Op.TLOAD, Op.TLOADC) else (0, n)
        sc.actions["dram_word"] = n
        sc.actions[store] = n

    return rule


COST.register(Op.TLOAD)(_transfer(Op.TLOAD, "dram->A", "sram_word"))
COST.register(Op.TSTORE)(_transfer(Op.TSTORE, "A->dram", "sram_word"))
COST.register(Op.TLOADC)(_transfer(Op.TLOADC, "dram->C", "sram_acc"))
COST.register(Op.TSTOREC)(_transfer(Op.TSTOREC, "C->dram", "sram_acc"))


@COST.register(Op.TLOADW)
def _tloadw(sc: StaticCost, a: dict[str, int], cfg: MachineConfig) -> None:
    nw = cdiv(a["count"], isa.WORD_PENTS)
    sc.moved["dram->W"] = nw
    sc.dram_words = (nw, 0)
    sc.actions["dram_word"] = nw
    sc.actions["sram_pent"] = a["count"]


@COST.register(Op.MATMUL)
def _matmul(sc: StaticCost, a: dict[str, int], cfg: MachineConfig) -> None:
    m, n, k = a["m"], a["n"], a["k"]
    act = sc.actions
    sc.macs, sc.weights = m * n * k, n * k
    act["pent_mul"] = act["add_acc"] = sc.macs
    act["sram_word"] = m * k * cdiv(n, cfg.mac_cols)
    act["sram_pent"] = n * k
    act["sram_acc"] = m * n * (1 + a["acc"])


@COST.register(Op.AMATMUL)
def _amatmul(sc: StaticCost, a: dict[str, int], cfg: MachineConfig) -> None:
    m, n, k = a["m"], a["n"], a["k"]
    act = sc.actions
    sc.macs = m * n * k  # word x (pents-pent word) products; each is `pents` pent multiplies on the array
    act["pent_mul"] = act["add_acc"] = sc.macs * a["pents"]
    act["sram_word"] = m * k * cdiv(n, cfg.mac_cols) * a["pents"] + n * k
    act["sram_acc"] = m * n * (1 + a["acc"])


@COST.register(Op.MATVEC)
def _matvec(sc: StaticCost, a: dict[str, int], cfg: MachineConfig) -> None:
    n, k = a["n"], a["k"]
    act = sc.actions
    sc.macs, sc.weights = n * k, n * k
    act["xbar_mac"] = sc.macs
    act["sram_word"] = k * cdiv(n, cfg.xbar_cols)
    act["sram_pent"] = n * k
    act["sram_acc"] = n * (1 + a["acc"])


@COST.register(Op.CONV)
def _conv(sc: StaticCost, a: dict[str, int], cfg: MachineConfig) -> None:
    g = a["groups"]
    icg, ocg = a["ic"] // g, a["oc"] // g
    kk = a["kh"] * a["kw"] * icg
    p = _pixels(a)
    act = sc.actions
    sc.macs, sc.weights = p * a["oc"] * kk, a["oc"] * kk
    act["pent_mul"] = act["add_acc"] = sc.macs
    act["sram_word"] = p * kk * g * cdiv(ocg, cfg.mac_cols)
    act["sram_pent"] = a["oc"] * kk
    act["sram_acc"] = p * a["oc"] * (1 + a["acc"])


@COST.register(Op.POOL)
def _pool(sc: StaticCost, a: dict[str, int], cfg: MachineConfig) -> None:
    p = _pixels(a)
    taps = p * a["c"] * a["kh"] * a["kw"]
    sc.actions["add_word"] = taps
    sc.actions["sram_word"] = taps + p * a["c"]


@COST.register(Op.REQUANT)
def _requant(sc: StaticCost, a: dict[str, int], cfg: MachineConfig) -> None:
    n = a["count"]
    sc.actions["sram_acc"] = n
    sc.actions["mul_requant"] = n
    sc.actions["sram_word"] = n


@COST.register(Op.REQUANTC)
def _requantc(sc: StaticCost, a: dict[str, int], cfg: MachineConfig) -> None:
    n = a["rows"] * a["cols"]
    sc.actions["sram_acc"] = n + 2 * a["cols"]  # the accumulators, then each column's multiplier and shift
    sc.actions["mul_requant"] = n
    sc.actions["sram_word"] = n


@COST.register(Op.EADD)
def _eadd(sc: StaticCost, a: dict[str, int], cfg: MachineConfig) -> None:
    n = a["count"]
    sc.actions["sram_word"] = 3 * n
    sc.actions["mul_requant"] = 2 * n
    sc.actions["add_acc"] = n


@COST.register(Op.EMUL)
def _emul(sc: StaticCost, a: dict[str, int], cfg: MachineConfig) -> None:
    n = a["count"]
    sc.actions["sram_word"] = 3 * n
    sc.actions["mul_requant"] = 2 * n  # the product, then its rescale


@COST.register(Op.TRELU, Op.TCLAMP)
def _unary(sc: StaticCost, a: dict[str, int], cfg: MachineConfig) -> None:
    sc.actions["sram_word"] = 2 * a["count"]
    sc.actions["add_word"] = a["count"]


@COST.register(Op.TLUT)
def _tlut(sc: StaticCost, a: dict[str, int], cfg: MachineConfig) -> None:
    sc.actions["sram_word"] = 3 * a["count"]  # the source, the table entry, the result
    sc.actions["add_word"] = a["count"]


# ---------------------------------------------------------------------------------------------------------
# The MACs of each pent op (the arithmetic the IR states; the profile's per-layer MACs must equal it)
# ---------------------------------------------------------------------------------------------------------

PROFILE: RuleTable[Callable[[Operation], int]] = RuleTable("profiling")
"""Per ``pent`` op class, the multiply-accumulates its math implies (dense: padding taps included, as the MAC
array does them); the code generator's instructions for the op must do exactly that many (a test checks the
simulated profile against it)."""


@PROFILE.register(pent.Conv2d)
def conv_macs(op: Operation) -> int:
    n, o, oh, ow = op.results[0].type.shape
    _, icg, kh, kw = op.operands[1].type.shape
    return n * o * oh * ow * icg * kh * kw


@PROFILE.register(pent.Gemm)
def gemm_macs(op: Operation) -> int:
    m, k = op.operands[0].type.shape
    return m * k * op.operands[1].type.shape[0]


@PROFILE.register(pent_matmul.Matmul)
def matmul_macs(op: Operation) -> int:
    bt, m, n = op.results[0].type.shape
    return bt * m * n * op.operands[0].type.shape[2]


@PROFILE.register(pent.Add, pent.Relu, pent.Clamp, pent.MaxPool, pent.AvgPool, pent.Reshape, pent.Elementwise)
@PROFILE.register(pent_move.Gather, pent_move.Embed, pent_softmax.Softmax, pent_softmax.Reduce)
@PROFILE.register(pent.Quantize, pent.Dequantize)
def no_macs(op: Operation) -> int:
    """Vector, pooling and copy ops (and the boundary) use neither the MAC array nor the crossbar."""
    return 0


def op_macs(op: Operation) -> int:
    """The MACs of one ``pent`` op (its rule in :data:`PROFILE`)."""
    return PROFILE.lookup(op)(op)


# ---------------------------------------------------------------------------------------------------------
# Layers
# ---------------------------------------------------------------------------------------------------------

_LAYER_RE = re.compile(r"(?:;|(?<!\S)#)\s*(?:@(?:layer|node)\s+|(?:layer|node)\s*[:=]\s*)(\S+)")


def layer_names(program: Program) -> list[str]:
    """The layer (model node) of each instruction; see the module docstring for where it comes from."""
    n = len(program.instructions)
    out: list[str | None] = [None] * n
    by_line: list[str | None] | None = None
    if program.source:
        marks: list[str | None] = [None]
        current: str | None = None
        for line in program.source.splitlines():
            m = _LAYER_RE.search(line)
            if m:
                current = m.group(1)
            marks.append(current)
        if any(mk is not None for mk in marks):
            by_line = marks
    labels = sorted((s.addr, s.name) for s in program.symbols if s.section == "text")
    addrs = [a for a, _ in labels]
    for i, ins in enumerate(program.instructions):
        if out[i] is not None:
            continue
        if by_line is not None and ins.line is not None and 0 < ins.line < len(by_line) and by_line[ins.line]:
            out[i] = by_line[ins.line]
        elif by_line is None and labels:
            j = int(np.searchsorted(addrs, ins.addr, side="right")) - 1
            out[i] = labels[j][1] if j >= 0 else "(program)"
        else:
            out[i] = "(program)"
    return out  # type: ignore[return-value]


# ---------------------------------------------------------------------------------------------------------
# The profile
# ---------------------------------------------------------------------------------------------------------


@dataclass
class Row:
    """Totals of one layer (or of the whole program)."""

    name: str
    instructions: int = 0
    cycles: int = 0
    cycles_by_unit: dict[str, int] = field(default_factory=lambda: dict.fromkeys(TRACKS, 0))
    macs: int = 0  # on the MAC array
    xbar_macs: int = 0  # on the crossbar
    weights: int = 0  # weight pents used by MAC instructions, summed over executions
    zero_weights: int = 0
    zero_macs: int = 0
    words_moved: dict[str, int] = field(default_factory=lambda: dict.fromkeys(LEVELS, 0))
    dram_read_words: int = 0
    dram_write_words: int = 0
    actions: dict[str, int] = field(default_factory=lambda: dict.fromkeys(ENERGY_PJ, 0))
    cfg: MachineConfig = field(default=isa.DEFAULT_CONFIG, repr=False)

    @property
    def mac_utilization(self) -> float:
        """MACs / (MAC-array cycles x array size); 0 with no MAC-array cycles."""
        c = self.cycles_by_unit["mac"]
        return self.macs / (c * self.cfg.mac_rows * self.cfg.mac_cols) if c else 0.0

    @property
    def xbar_utilization(self) -> float:
        c = self.cycles_by_unit["xbar"]
        return self.xbar_macs * self.cfg.xbar_cycles / (c * self.cfg.xbar_rows * self.cfg.xbar_cols) if c else 0.0

    @property
    def zero_weight_share(self) -> float:
        return self.zero_weights / self.weights if self.weights else 0.0

    @property
    def dense_energy_pj(self) -> float:
        return sum(n * ENERGY_PJ[k][0] for k, n in self.actions.items())

    @property
    def energy_saved_pj(self) -> float:
        return self.zero_macs * MAC_PJ

    @property
    def energy_pj(self) -> float:
        return self.dense_energy_pj - self.energy_saved_pj

    @property
    def dram_read_bytes(self) -> float:
        return self.dram_read_words * BYTES_PER_WORD

    @property
    def dram_write_bytes(self) -> float:
        return self.dram_write_words * BYTES_PER_WORD

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "instructions": self.instructions,
            "cycles": self.cycles,
            "cycles_by_unit": dict(self.cycles_by_unit),
            "macs": self.macs,
            "xbar_macs": self.xbar_macs,
            "mac_utilization": self.mac_utilization,
            "xbar_utilization": self.xbar_utilization,
            "weights": self.weights,
            "zero_weights": self.zero_weights,
            "zero_weight_share": self.zero_weight_share,
            "zero_macs": self.zero_macs,
            "words_moved": dict(self.words_moved),
            "bytes_moved": {k: v * BYTES_PER_WORD for k, v in self.words_moved.items()},
            "dram_read_bytes": self.dram_read_bytes,
            "dram_write_bytes": self.dram_write_bytes,
            "energy_pj": self.energy_pj,
            "dense_energy_pj": self.dense_energy_pj,
            "energy_saved_pj": self.energy_saved_pj,
            "energy_by_action_pj": {k: n * ENERGY_PJ[k][0] for k, n in self.actions.items()},
        }


class Profile:
    """Per-layer and total statistics of the runs a simulator made."""

    def __init__(self, sim: Simulator) -> None:
        self.program = sim.program
        self.config = sim.config
        self.runs = sim.runs
        self.counts = sim.instruction_counts()
        self.layers = layer_names(sim.program)
        self.costs = [static_cost(ins, sim.config) for ins in sim.program.instructions]
        order: dict[str, Row] = {}
        total = Row("total", cfg=sim.config)
        for i, (cnt, sc, name) in enumerate(zip(self.counts.tolist(), self.costs, self.layers, strict=True)):
            if not cnt:
                continue
            row = order.get(name)
            if row is None:
                row = order[name] = Row(name, cfg=sim.config)
            for r in (row, total):
                r.instructions += cnt
                r.cycles += cnt * sc.cycles
                r.cycles_by_unit[sc.track] += cnt * sc.cycles
                if sc.track == "xbar":
                    r.xbar_macs += cnt * sc.macs
                else:
                    r.macs += cnt * sc.macs
                r.weights += cnt * sc.weights
                r.zero_weights += int(sim.zero_weights[i])
                r.zero_macs += int(sim.zero_macs[i])
                for k, v in sc.moved.items():
                    r.words_moved[k] += cnt * v
                r.dram_read_words += cnt * sc.dram_words[0]
                r.dram_write_words += cnt * sc.dram_words[1]
                for k, v in sc.actions.items():
                    r.actions[k] += cnt * v
        self.rows: list[Row] = list(order.values())
        self.total = total

    @property
    def seconds(self) -> float:
        return self.total.cycles / self.config.clock_hz

    # ---- output --------------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        cfg = self.config
        return {
            "program": self.program.file,
            "runs": self.runs,
            "clock_hz": cfg.clock_hz,
            "seconds": self.seconds,
            "mac_array": [cfg.mac_rows, cfg.mac_cols],
            "total": self.total.to_dict(),
            "layers": [r.to_dict() for r in self.rows],
            "energy_table_pj": {k: {"pj": v, "source": s} for k, (v, s) in ENERGY_PJ.items()},
            "energy_notes": list(ENERGY_NOTES),
            "bytes_per_word": BYTES_PER_WORD,
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2) + "\n"

    def table(self) -> str:
        """The per-layer table and the totals, as text."""
        head = (
            f"{'layer':<24} {'instrs':>10} {'cycles':>12} {'cyc%':>6} {'MACs':>13} {'util%':>6} "
            f"{'zero-w%':>7} {'DRAM rd':>9} {'DRAM wr':>9} {'energy uJ':>10} {'saved uJ':>9}"
        )
        lines = [head, "-" * len(head)]
        tot = max(self.total.cycles, 1)
        for r in [*self.rows, self.total]:
            if r is self.total:
                lines.append("-" * len(head))
            macs = r.macs + r.xbar_macs
            lines.append(
                f"{_clip(r.name, 24):<24} {r.instructions:>10} {r.cycles:>12} {100 * r.cycles / tot:>6.1f} "
                f"{macs:>13} {100 * r.mac_utilization:>6.1f} {100 * r.zero_weight_share:>7.1f} "
                f"{_size(r.dram_read_bytes):>9} {_size(r.dram_write_bytes):>9} "
                f"{r.energy_pj / 1e6:>10.3f} {r.energy_saved_pj / 1e6:>9.3f}"
            )
        t = self.total
        units = ", ".join(f"{k} {v}" for k, v in t.cycles_by_unit.items() if v)
        lines.append("")
        lines.append(
            f"{self.runs} run(s): {t.cycles} cycles = {_duration(self.seconds)} at "
            f"{self.config.clock_hz / 1e9:g} GHz; by unit: {units or 'none'}"
        )
        lines.append(
            f"MACs {t.macs} on the {self.config.mac_rows}x{self.config.mac_cols} array "
            f"(utilisation {100 * t.mac_utilization:.1f}%), {t.xbar_macs} on the crossbar; zero weights "
            f"{100 * t.zero_weight_share:.1f}% ({t.zero_macs} MACs, {t.energy_saved_pj / 1e6:.3f} uJ saved)"
        )
        moved = ", ".join(f"{k} {_size(v * BYTES_PER_WORD)}" for k, v in t.words_moved.items() if v)
        lines.append(
            f"energy {t.energy_pj / 1e6:.3f} uJ (45 nm figures, Horowitz ISSCC 2014; the pentary assumptions are in "
            f"--profile-json); data moved: {moved or 'none'}"
        )
        return "\n".join(lines) + "\n"

    def plot(self, path: str) -> None:
        """A per-layer bar chart (cycles by unit, stacked; energy beside) as a PNG, with matplotlib's Agg."""
        import io

        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        from pcc.diagnostics import atomic_write

        rows = self.rows or [self.total]
        names = [_clip(r.name, 28) for r in rows]
        y = np.arange(len(rows))
        fig, (ax1, ax2) = plt.subplots(
            1, 2, figsize=(12, max(2.5, 0.32 * len(rows) + 1.5)), sharey=True, gridspec_kw={"width_ratios": [3, 2]}
        )
        left = np.zeros(len(rows))
        colors = dict(zip(TRACKS, ("#4c72b0", "#dd8452", "#55a868", "#c44e52", "#8172b3", "#937860"), strict=True))
        for unit in TRACKS:
            vals = np.array([r.cycles_by_unit[unit] for r in rows], dtype=float)
            if vals.any():
                ax1.barh(y, vals, left=left, label=unit, color=colors[unit])
                left += vals
        ax1.set_yticks(y, names)
        ax1.invert_yaxis()
        ax1.set_xlabel("cycles")
        ax1.set_title("cycles per layer, by unit")
        ax1.legend(loc="lower right", fontsize="small")
        energy = np.array([r.energy_pj for r in rows]) / 1e6
        saved = np.array([r.energy_saved_pj for r in rows]) / 1e6
        ax2.barh(y, energy, color="#2f4b7c", label="energy")
        ax2.barh(y, saved, left=energy, color="#cccccc", label="saved by zero weights")
        ax2.set_xlabel("energy (uJ)")
        ax2.set_title("energy per layer")
        ax2.legend(loc="lower right", fontsize="small")
        fig.tight_layout()
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=110)
        plt.close(fig)
        atomic_write(path, buf.getvalue())


def _duration(seconds: float) -> str:
    if seconds >= 1:
        return f"{seconds:.3f} s"
    if seconds >= 1e-3:
        return f"{seconds * 1e3:.3f} ms"
    return f"{seconds * 1e6:.3f} us"


def _size(nbytes: float) -> str:
    for unit, div in (("GB", 1 << 30), ("MB", 1 << 20), ("KB", 1 << 10)):
        if nbytes >= div:
            return f"{nbytes / div:.1f} {unit}"
    return f"{nbytes:.0f} B"


def _clip(s: str, n: int) -> str:
    return s if len(s) <= n else s[: n - 1] + "~"


__all__ = [
    "COST",
    "ENERGY_PJ",
    "LEVELS",
    "MAC_PJ",
    "PROFILE",
    "TRACKS",
    "Profile",
    "Row",
    "StaticCost",
    "layer_names",
    "op_macs",
    "static_cost",
]
