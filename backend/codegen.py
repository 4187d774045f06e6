"""Code generation: a scheduled, planned and tiled ``pent`` graph -> pentary assembly (``.pasm``) + a packed
parameter blob (``.incbin``), the form ``pcc asm`` / ``pcc run`` take.

Main memory (word addresses):

- ``0 .. arena-1``: the activation arena planned by ``plan-memory`` (program inputs and outputs included; each
  is declared with ``.input`` / ``.output``: name, logical shape, pents, scale, address and, for 4-D tensors,
  ``order=[0, 2, 3, 1]`` because activations are stored channels last);
- ``arena ..``: the parameter blob, ``params: .incbin "<stem>.weights.bin", sha256="..."`` (the blob's digest):
  per weight tile its pents (16 per word, word aligned, in the ``[oc][kh][kw][ic/groups]`` / ``[n][k]`` order
  that CONV / MATMUL read), and per layer its biases and, when they differ per channel, the multipliers
  followed by the shifts (one word each).

Each op becomes one straight-line instruction sequence that owns the scratchpads while it runs (see
``passes/tile.py`` for the tiles).  Every sequence starts with a line ``; @layer NAME | op summary`` naming the
model node it came from: the assembler keeps each instruction's source line, so a profiler attributes cycles
to layers by the last ``@layer`` line above an instruction.  The estimated cycle count is the sum of the ISA
table's cost of every emitted instruction (the code is straight-line, so it is exact for the cost model).
"""

from __future__ import annotations

import hashlib
import os
import re
from bisect import bisect_right
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from pcc import isa, machine
from pcc.backend.program import format_io_name, io_name_ok, plain_name_ok
from pcc.diagnostics import PccError, atomic_write
from pcc.dialects import pent
from pcc.ir import Graph, Module, Operation, Value
from pcc.isa import DEFAULT_CONFIG, MachineConfig
from pcc.passes.plan_memory import PlanMemory, arena_words
from pcc.passes.tile import Tile
from pcc.pent_reference import program_io
from pcc.pentary import pack_pents, to_digits
from pcc.rules import RuleTable

WORD = isa.WORD_PENTS

EMIT: RuleTable[Callable[[_Gen, Operation], None]] = RuleTable("emission")


@dataclass(frozen=True, slots=True)
class Mem:
    """A main-memory operand ``[Pb + off]``: an absolute word address (``b = 0``) or an offset from register
    ``Pb`` (the embedding lookup's rows, addressed by token id)."""

    off: int
    base: int = 0


@dataclass(frozen=True, slots=True)
class Reg:
    """A register operand ``Pn``."""

    n: int


class Params:
    """The parameter blob under construction: word-aligned chunks of pents."""

    def __init__(self) -> None:
        self.chunks: list[np.ndarray] = []
        self.words = 0
        self.weight_pents = 0

    def add_pents(self, pents: np.ndarray) -> int:
        """Append weights (one pent each), padded to whole words; returns the word offset."""
        flat = np.asarray(pents, dtype=np.int8).reshape(-1)
        self.weight_pents += flat.size
        pad = (-flat.size) % WORD
        if pad:
            flat = np.concatenate([flat, np.zeros(pad, np.int8)])
        return self._append(flat)

    def add_words(self, values: np.ndarray) -> int:
        """Append full words (biases, multipliers, shifts); returns the word offset."""
        return self._append(to_digits(np.asarray(values, dtype=np.int64).reshape(-1), WORD).reshape(-1))

    def _append(self, digits: np.ndarray) -> int:
        off = self.words
        self.chunks.append(digits)
        self.words += digits.size // WORD
        return off

    def blob(self) -> bytes:
        if not self.chunks:
            return b""
        return pack_pents(np.concatenate(self.chunks))


@dataclass
class LayerStats:
    name: str
    op: str
    instructions: int = 0
    cycles: int = 0


_SPECS: dict[str, tuple[isa.Instr, tuple[tuple[int, int], ...], str]] = {}


def _spec(mnemonic: str) -> tuple[isa.Instr, tuple[tuple[int, int], ...], str]:
    """An instruction's table entry, its fields' ranges and the start of its assembly line (cached)."""
    ins = isa.BY_MNEMONIC[mnemonic]
    spec = _SPECS[mnemonic] = (ins, tuple((f.lo, f.hi) for f in ins.fields), f"    {mnemonic:<8} ")
    return spec


class Emitter:
    """Collects instruction lines, checking every field against the ISA table and adding up the cycle costs."""

    def __init__(self, cfg: MachineConfig) -> None:
        self.cfg = cfg
        self.lines: list[str] = []
        self.cycles = 0
        self.count = 0
        self.layer: LayerStats | None = None
        self.op: Operation | None = None

    def __call__(self, mnemonic: str, *operands: int | Mem | Reg) -> None:
        spec = _SPECS.get(mnemonic) or _spec(mnemonic)
        ins, bounds, head = spec
        flat: list[int] = []
        parts: list[str] = []
        for o in operands:
            if type(o) is int:
                flat.append(o)
                parts.append(str(o))
            elif isinstance(o, Mem):
                flat += [o.base, o.off]
                parts.append(f"[P{o.base} + {o.off}]")
            elif isinstance(o, Reg):
                flat.append(o.n)
                parts.append(f"P{o.n}")
            else:
                flat.append(int(o))
                parts.append(str(int(o)))
        fits = len(flat) == len(bounds)
        if fits:
            for v, (lo, hi) in zip(flat, bounds, strict=True):
                if v < lo or v > hi:
                    fits = False
                    break
        if not fits:
            for f, v in zip(ins.fields, flat, strict=True):
                why = f.check(v)
                if why:
                    raise self._error(f"{mnemonic}: {why}")
        if not ins.check(*flat):
            raise self._error(f"{mnemonic}: operands break '{ins.violated(tuple(flat))}'")
        c = ins.cost(*flat, self.cfg)
        self.cycles += c
        self.count += 1
        if self.layer is not None:
            self.layer.cycles += c
            self.layer.instructions += 1
        self.lines.append(head + ", ".join(parts))

    def _error(self, msg: str) -> PccError:
        op = self.op
        where = op.loc if op is not None else None
        return PccError(f"code generation: {msg}" + (f" (in {op.name})" if op is not None else ""), where)


def io_name(name: str) -> str:
    """A program I/O name the assembler accepts (letters, digits, '_' and '.', not starting with a digit)."""
    s = re.sub(r"[^A-Za-z0-9_.]", "_", name)
    if not plain_name_ok(s):
        s = "_" + s  # a register name (P0, sp, ...) cannot be a label or a symbol
    return s


def memory_order(shape: tuple[int, ...]) -> tuple[int, ...] | None:
    """Axis order of a tensor in memory: channels last for 4-D tensors, else row-major (None)."""
    return (0, 2, 3, 1) if len(shape) == 4 else None


def _to_memory(a: np.ndarray) -> np.ndarray:
    return a.transpose(0, 2, 3, 1) if a.ndim == 4 else a


def layer_name(op: Operation) -> str:
    """The model node an op came from (no blanks: the profiler reads the name up to the first blank)."""
    if op.loc is not None and op.loc.node:
        name = op.loc.node
    else:
        name = op.results[0].name if op.results and op.results[0].name else op.name
    return re.sub(r"\s+", "_", name)


# ----------------------------------------------------------------------------------------------- the generator


@dataclass
class Compiled:
    """The generated program: assembly text, parameter blob and statistics."""

    asm: str
    blob: bytes
    blob_name: str
    instructions: int
    cycles: int
    arena_words: int
    param_words: int
    weight_pents: int
    layers: list[LayerStats] = field(default_factory=list)

    def write(self, asm_path: str | os.PathLike[str]) -> list[Path]:
        """Write the ``.pasm`` and, beside it, the blob it includes; returns the paths."""
        p = Path(asm_path)
        if p.is_dir():  # before the blob is written: never leave new weights beside an old assembly
            raise PccError(f"{p}: is a directory; give a file name to write")
        out = [p]
        if self.blob:
            atomic_write(p.parent / self.blob_name, self.blob)
            out.append(p.parent / self.blob_name)
        atomic_write(p, self.asm)
        return out


class _Gen:
    def __init__(self, module: Module, cfg: MachineConfig) -> None:
        self.m = module
        self.g: Graph = module.main
        self.cfg = cfg
        self.e = Emitter(cfg)
        self.params = Params()
        self.layers: list[LayerStats] = []
        self.labels: set[str] = set()
        self.arena = arena_words(self.g)
        self.base = self.arena  # first word of the parameter blob

    def label(self, name: str) -> str:
        """A unique text label for a layer (the binary keeps labels, so a profile of a .pbin names layers)."""
        base = io_name(re.sub(r"[^A-Za-z0-9_.]+", "_", name).strip("_") or "layer")
        label, i = base, 1
        while label in self.labels or label == "params":
            label, i = f"{base}.{i}", i + 1
        self.labels.add(label)
        return label

    # -- addresses
    def addr(self, v: Value) -> int:
        op = v.owner
        a = op.attributes.get("addr") if op is not None else None
        if a is None:
            raise PccError(f"{v.ref()} has no arena address: run 'plan-memory' first", op.loc if op else None)
        return int(a)

    def pitch(self, v: Value) -> int:
        """Words between the pixels of the 4-D activation ``v`` (its channels, or the ``pitch`` plan-memory gave
        a value that lives inside a concat's buffer)."""
        p = v.owner.attributes.get("pitch") if v.owner is not None else None
        return int(p) if p is not None else v.type.shape[1]

    def words(self, v: Value) -> np.ndarray:
        """The main-memory word of each element of ``v`` in its logical (row-major) order."""
        word_of = np.empty(v.type.size, dtype=np.int64)
        pos = np.arange(v.type.size, dtype=np.int64)
        if v.type.rank == 4 and self.pitch(v) != v.type.shape[1]:
            c = v.type.shape[1]
            pos = pos // c * self.pitch(v) + pos % c
        word_of[_to_memory(np.arange(v.type.size).reshape(v.type.shape)).ravel()] = pos
        return self.addr(v) + word_of

    def const(self, v: Value) -> np.ndarray:
        return self.m.weight(v)

    # -- common pieces
    def requant(self, op: Operation, dst: int, src: int, rows: int, cols: int, cq: int, uniform: tuple | None) -> None:
        mid = len(op.operands) > 5 or pent.act_of(op) == "lut"
        pents = op.attr("mid_pents") if mid else op.results[0].type.pents
        if uniform is not None:
            self.e("REQUANT", dst, src, rows * cols, uniform[0], uniform[1], pents)
        else:
            self.e("REQUANTC", dst, src, rows, cols, cq, pents)

    def residual(
        self, op: Operation, dst: int, tmp: int, count: int, res_addr: int, rows: int, cols: int, stride: int
    ) -> None:
        if len(op.operands) <= 5:
            return
        mx, my = op.attr("res_mult")
        sx, sy = op.attr("res_shift")
        self.e("TLOAD", tmp, Mem(res_addr), rows, cols, stride)
        self.e("EADD", dst, dst, tmp, count, mx, sx, my, sy, op.results[0].type.pents)

    def table_at(self, op: Operation) -> int:
        """Where a fused table activation's table lives: the top of scratchpad A (the tile pass leaves it free)."""
        return self.cfg.a_spad_words - len(op.attr("table"))

    def table(self, op: Operation) -> None:
        """A fused table activation's table, loaded once (:meth:`table_at`)."""
        if pent.act_of(op) == "lut":
            table = np.asarray(op.attr("table"), dtype=np.int64)
            self.e("TLOAD", self.table_at(op), self.p(self.params.add_words(table)), 1, table.size, 0)

    def act(self, op: Operation, at: int, count: int) -> None:
        a = pent.act_of(op)
        if a == "relu":
            self.e("TRELU", at, at, count)
        elif a == "clamp":
            self.e("TCLAMP", at, at, count, op.attr("lo"), op.attr("hi"))
        elif a == "lut":
            mult = op.attr("index_mult")
            if mult is not None:
                self.e("EADD", at, at, at, count, mult, op.attr("index_shift"), 0, 0, op.attr("mid_pents"))
            self.e("TLUT", at, at, count, self.table_at(op), op.attr("table_lo"), len(op.attr("table")))

    def per_channel(self, op: Operation) -> tuple[int, np.ndarray, tuple[int, int] | None]:
        """Bias offset, the [mult..., shift...] table and, when uniform, the single (mult, shift)."""
        bias = self.const(op.operands[2]).astype(np.int64)
        mult = self.const(op.operands[3]).astype(np.int64)
        shift = self.const(op.operands[4]).astype(np.int64)
        if mult.size and (mult.min() < 0 or mult.max() > isa.MULT_MAX or shift.min() < 0 or shift.max() > 62):
            raise PccError(f"{op.name}: multiplier or shift out of the ISA's range", op.loc)
        uniform = None
        if mult.size and np.all(mult == mult[0]) and np.all(shift == shift[0]):
            uniform = (int(mult[0]), int(shift[0]))
        return self.params.add_words(bias), np.concatenate([mult, shift]), uniform

    def p(self, rel: int) -> Mem:
        """A parameter operand: the blob follows the arena."""
        return Mem(self.base + rel)

    # -- driver
    def run(self) -> Compiled:
        g = self.g
        quants, deqs = program_io(self.m)
        for op in g.body:
            fn = EMIT.lookup(op)
            if fn is emit_boundary:
                continue
            name = layer_name(op)
            stats = LayerStats(name, op.name)
            self.layers.append(stats)
            self.e.layer, self.e.op = stats, op
            self.e.lines.append(f"; @layer {name} | {_summary(op)}")
            self.e.lines.append(f"{self.label(name)}:")  # kept in the binary's symbol table
            fn(self, op)
        self.e.layer = self.e.op = None
        self.e("HALT")
        arena, base = self.arena, self.base
        total = base + self.params.words
        if total > self.cfg.dram_words:
            raise PccError(
                f"the program needs {total} words of main memory (arena {arena} + parameters "
                f"{self.params.words}) but the machine has {self.cfg.dram_words}",
                notes=[machine.too_small_note()],
            )
        text = "\n".join(self.e.lines)
        header = [
            f"; generated by pcc from module @{self.m.name}" + (f" ({self.m.source})" if self.m.source else ""),
            f"; activation arena: words 0..{max(arena - 1, 0)}; parameters: words {base}..{max(total - 1, base)}",
            f"; estimated cycles: {self.e.cycles}",
        ]
        for a, q in zip(g.args, quants, strict=True):
            header.append(_io_line(".input", a.name or "x", q.results[0], q.attr("scale"), self.addr(q.results[0])))
        for v, d in zip(g.outputs, deqs, strict=True):
            src = d.operands[0]
            header.append(_io_line(".output", v.name or "y", src, d.attr("scale"), self.addr(src)))
        sizes = machine.overrides(self.cfg)
        if sizes:  # the machine the program is compiled for, where it is not the default one
            header.append(".machine " + ", ".join(f"{k}={v}" for k, v in sizes.items()))
        blob_name = "weights.bin"
        blob = self.params.blob()
        # the assembly names its blob by content: a .pasm beside another compile's blob is refused on load
        digest = hashlib.sha256(blob).hexdigest()
        data = (
            [".data", f".org {base}", f'params: .incbin "{blob_name}", sha256="{digest}"'] if self.params.words else []
        )
        asm = "\n".join([*header, *data, ".text", text]) + "\n"
        return Compiled(
            asm,
            blob,
            blob_name,
            self.e.count,
            self.e.cycles,
            arena,
            self.params.words,
            self.params.weight_pents,
            self.layers,
        )


# ----------------------------------------------------------------------------------------------- the rules


@EMIT.register(pent.Conv2d)
def emit_conv(gen: _Gen, op: Operation) -> None:
    """Per output-channel tile: TLOADW the weights (and TLOADC the per-channel constants); per row tile:
    TLOAD the input rows, TLOADC the bias, CONV, requantize, the fused residual and activation, TSTORE (a fused
    table activation's table is loaded once, first)."""
    e = gen.e
    x, wv = op.operands[0], op.operands[1]
    n_img, c, h, w = x.type.shape
    o, icg, kh, kw = wv.type.shape
    oh, ow = op.results[0].type.shape[2:]
    g = op.attr("group")
    ocg = o // g
    sh, sw = op.attr("strides")
    pt, pl, pb, pr = op.attr("pads")
    ot, rt = op.attr("tile")
    weights = gen.const(wv).transpose(0, 2, 3, 1)  # [oc][kh][kw][icg]
    b_rel, q_table, uniform = gen.per_channel(op)
    q_rel = None if uniform is not None else gen.params.add_words(q_table)
    xa, ya = gen.addr(x), gen.addr(op.results[0])
    xp, yp = gen.pitch(x), gen.pitch(op.results[0])  # words between pixels (a concat's slice: more)
    ra = gen.addr(op.operands[5]) if len(op.operands) > 5 else 0
    gen.table(op)
    for o0 in range(0, o, ot):
        o1 = min(o, o0 + ot)
        otl = o1 - o0
        c0, c1, gt = (0, c, 1) if g == 1 else ((o0 // ocg) * icg, (o1 // ocg) * icg, otl // ocg)
        ct = c1 - c0
        w_rel = gen.params.add_pents(weights[o0:o1])
        e("TLOADW", 0, gen.p(w_rel), otl * kh * kw * icg)
        cq = min(rt, oh) * ow * otl
        if q_rel is not None:
            e("TLOADC", cq, gen.p(q_rel + o0), 2, otl, o)
        for n in range(n_img):
            xb, yb, rb = xa + n * h * w * xp, ya + n * oh * ow * yp, ra + n * oh * ow * o
            for oy0 in range(0, oh, rt):
                oy1 = min(oh, oy0 + rt)
                ys, ye = oy0 * sh - pt, (oy1 - 1) * sh - pt + kh
                iy0, iy1 = max(0, ys), min(h, ye)
                pix = (oy1 - oy0) * ow
                cnt = pix * otl
                e("TLOAD", 0, Mem(xb + iy0 * w * xp + c0), (iy1 - iy0) * w, ct, xp)
                e("TLOADC", 0, gen.p(b_rel + o0), pix, otl, 0)  # right before the CONV that adds to it
                e("CONV", 0, 0, 0, iy1 - iy0, w, ct, otl, kh, kw, sh, sw, iy0 - ys, pl, ye - iy1, pr, gt, 1)
                gen.requant(op, 0, 0, pix, otl, cq, uniform)
                gen.residual(op, 0, cnt, cnt, rb + oy0 * ow * o + o0, pix, otl, o)
                gen.act(op, 0, cnt)
                e("TSTORE", Mem(yb + oy0 * ow * yp + o0), 0, pix, otl, yp)


@EMIT.register(pent.Gemm)
def emit_gemm(gen: _Gen, op: Operation) -> None:
    """As conv, with MATMUL, or one MATVEC per row where that costs fewer cycles."""
    e = gen.e
    x, wv = op.operands[0], op.operands[1]
    m, k = x.type.shape
    n = wv.type.shape[0]
    nt, mt = op.attr("tile")
    weights = gen.const(wv)
    b_rel, q_table, uniform = gen.per_channel(op)
    q_rel = None if uniform is not None else gen.params.add_words(q_table)
    xa, ya = gen.addr(x), gen.addr(op.results[0])
    ra = gen.addr(op.operands[5]) if len(op.operands) > 5 else 0
    cfg = gen.cfg
    gen.table(op)
    for n0 in range(0, n, nt):
        n1 = min(n, n0 + nt)
        ntl = n1 - n0
        w_rel = gen.params.add_pents(weights[n0:n1])
        e("TLOADW", 0, gen.p(w_rel), ntl * k)
        cq = min(mt, m) * ntl
        if q_rel is not None:
            e("TLOADC", cq, gen.p(q_rel + n0), 2, ntl, n)
        for m0 in range(0, m, mt):
            mtl = min(m, m0 + mt) - m0
            cnt = mtl * ntl
            e("TLOAD", 0, Mem(xa + m0 * k), mtl, k, k)
            e("TLOADC", 0, gen.p(b_rel + n0), mtl, ntl, 0)
            matvec = isa.cycles(isa.BY_MNEMONIC["MATVEC"], (0, 0, 0, ntl, k, 1), cfg)
            matmul = isa.cycles(isa.BY_MNEMONIC["MATMUL"], (0, 0, 0, mtl, ntl, k, 1), cfg)
            if mtl * matvec <= matmul:
                for i in range(mtl):
                    e("MATVEC", i * ntl, i * k, 0, ntl, k, 1)
            else:
                e("MATMUL", 0, 0, 0, mtl, ntl, k, 1)
            gen.requant(op, 0, 0, mtl, ntl, cq, uniform)
            gen.residual(op, 0, cnt, cnt, ra + m0 * n + n0, mtl, ntl, n)
            gen.act(op, 0, cnt)
            e("TSTORE", Mem(ya + m0 * n + n0), 0, mtl, ntl, n)


@EMIT.register(pent.MaxPool, pent.AvgPool)
def emit_pool(gen: _Gen, op: Operation) -> None:
    """Per channel and row tile: TLOAD the input rows, POOL, TSTORE."""
    e = gen.e
    x = op.operands[0]
    n_img, c, h, w = x.type.shape
    oh, ow = op.results[0].type.shape[2:]
    kh, kw = op.attr("kernel_shape")
    sh, sw = op.attr("strides")
    pt, pl, pb, pr = op.attr("pads")
    mode = 0 if isinstance(op, pent.MaxPool) else (2 if op.attr("count_include_pad") else 1)
    ct, rt = op.attr("tile")
    xa, ya = gen.addr(x), gen.addr(op.results[0])
    xp, yp = gen.pitch(x), gen.pitch(op.results[0])
    for n in range(n_img):
        xb, yb = xa + n * h * w * xp, ya + n * oh * ow * yp
        for c0 in range(0, c, ct):
            ctl = min(c, c0 + ct) - c0
            for oy0 in range(0, oh, rt):
                oy1 = min(oh, oy0 + rt)
                ys, ye = oy0 * sh - pt, (oy1 - 1) * sh - pt + kh
                iy0, iy1 = max(0, ys), min(h, ye)
                dst = (iy1 - iy0) * w * ctl
                e("TLOAD", 0, Mem(xb + iy0 * w * xp + c0), (iy1 - iy0) * w, ctl, xp)
                e("POOL", dst, 0, iy1 - iy0, w, ctl, kh, kw, sh, sw, iy0 - ys, pl, ye - iy1, pr, mode)
                e("TSTORE", Mem(yb + oy0 * ow * yp + c0), dst, (oy1 - oy0) * ow, ctl, yp)


def elementwise(gen: _Gen, op: Operation, compute: Callable[[int], None]) -> None:
    """The loop of an elementwise op: per tile of ``cnt`` elements, TLOAD every activation operand (the i-th at
    ``i * cnt`` in A), ``compute(cnt)`` (its result at 0), TSTORE."""
    e = gen.e
    total = op.results[0].type.size
    (t,) = op.attr("tile")
    ya = gen.addr(op.results[0])
    srcs = [gen.addr(v) for v in op.operands if not v.is_weight]
    for e0 in range(0, total, t):
        cnt = min(total, e0 + t) - e0
        for i, s in enumerate(srcs):
            e("TLOAD", i * cnt, Mem(s + e0), 1, cnt, 0)
        compute(cnt)
        e("TSTORE", Mem(ya + e0), 0, 1, cnt, 0)


@EMIT.register(pent.Add)
def emit_add(gen: _Gen, op: Operation) -> None:
    (ma, mb), (sa, sb) = op.attr("mult"), op.attr("shift")

    def compute(cnt: int) -> None:
        gen.e("EADD", 0, 0, cnt, cnt, ma, sa, mb, sb, op.results[0].type.pents)
        gen.act(op, 0, cnt)

    elementwise(gen, op, compute)


@EMIT.register(pent.Relu)
def emit_relu(gen: _Gen, op: Operation) -> None:
    elementwise(gen, op, lambda cnt: gen.e("TRELU", 0, 0, cnt))


@EMIT.register(pent.Clamp)
def emit_clamp(gen: _Gen, op: Operation) -> None:
    elementwise(gen, op, lambda cnt: gen.e("TCLAMP", 0, 0, cnt, op.attr("lo"), op.attr("hi")))


@EMIT.register(pent.Lut)
def emit_lut(gen: _Gen, op: Operation) -> None:
    """TLOAD the table once, after the tile in A; per tile: TLOAD, [EADD: the index rescale], TLUT, TSTORE."""
    (t,) = op.attr("tile")
    table = gen.const(op.operands[1]).astype(np.int64)
    gen.e("TLOAD", t, gen.p(gen.params.add_words(table)), 1, table.size, 0)
    lo, mult, shift = op.attr("lo"), op.attr("mult"), op.attr("shift")

    def compute(cnt: int) -> None:
        if mult is not None:
            gen.e("EADD", 0, 0, 0, cnt, mult, shift, 0, 0, op.operands[0].type.pents)
        gen.e("TLUT", 0, 0, cnt, t, lo, table.size)

    elementwise(gen, op, compute)


@EMIT.register(pent.Quantize, pent.Dequantize)
def emit_boundary(gen: _Gen, op: Operation) -> None:
    """No code: the runner quantizes the inputs and dequantizes the outputs (the ``.input`` / ``.output``
    declarations of the header)."""


@EMIT.register(pent.Reshape)
def emit_reshape(gen: _Gen, op: Operation) -> None:
    """A copy; when the memory orders differ (e.g. flattening a channels-last image in NCHW order), a gather
    made of strided TLOAD runs (one per run of constant stride), then one TSTORE per tile."""
    e = gen.e
    xt, yt = op.operands[0].type, op.results[0].type
    size = yt.size
    (t,) = op.attr("tile")
    perm = np.arange(size).reshape(xt.shape)  # y's logical flat index -> x's (the elements of x.transpose(perm))
    if op.attr("perm") is not None:
        perm = perm.transpose(op.attr("perm"))
    perm = perm.ravel()
    if memory_order(yt.shape) is not None:  # y's words -> x's logical indices
        perm = perm[_to_memory(np.arange(size).reshape(yt.shape)).ravel()]
    if memory_order(xt.shape) is not None:  # -> x's words
        inv_in = np.empty(size, dtype=np.int64)  # x's logical flat index -> its word in memory
        inv_in[_to_memory(np.arange(size).reshape(xt.shape)).ravel()] = np.arange(size)
        perm = inv_in[perm]
    xa, ya = gen.addr(op.operands[0]), gen.addr(op.results[0])
    for j0 in range(0, size, t):
        j1 = min(size, j0 + t)
        for start, length, stride in _runs(perm[j0:j1]):
            if stride == 1:
                e("TLOAD", start, Mem(xa + int(perm[j0 + start])), 1, length, 0)
            else:
                e("TLOAD", start, Mem(xa + int(perm[j0 + start])), length, 1, stride)
        e("TSTORE", Mem(ya + j0), 0, 1, j1 - j0, 0)


def _io_line(kind: str, name: str, v: Value, scale: float, addr: int) -> str:
    shape = list(v.type.shape)
    order = memory_order(v.type.shape)
    shown = format_io_name(name) if io_name_ok(name) else io_name(name)
    line = f"{kind} {shown}, shape={shape}, pents={v.type.pents}, scale={scale!r}, addr={addr}"
    if order is not None:
        line += f", order={list(order)}"
    return line


def _summary(op: Operation) -> str:
    ins = ", ".join("x".join(map(str, v.type.shape)) for v in op.operands if not v.is_weight)
    out = "x".join(map(str, op.results[0].type.shape))
    extra = ""
    if pent.act_of(op) != "none":
        extra += f" act={pent.act_of(op)}"
    if len(op.operands) > 5:
        extra += " +residual"
    if op.attributes.get("tile"):
        extra += f" tile={op.attr('tile')}"
    return f"{op.name} {ins} -> {out}{extra}"


def _runs(perm: np.ndarray) -> list[tuple[int, int, int]]:
    """Split a gather ``dst[j] = src[perm[j]]`` into runs (start, length, stride) of constant source stride."""
    n = perm.size
    if n == 1:
        return [(0, 1, 1)]
    d = np.diff(perm)
    changes = (np.flatnonzero(d[1:] != d[:-1]) + 1).tolist()  # diff index where the stride changes
    out = []
    i = 0
    while i < n:
        if i == n - 1:
            out.append((i, 1, 1))
            break
        s = int(d[i])
        k = bisect_right(changes, i)
        j = changes[k] if k < len(changes) else n - 1  # run covers elements i..j
        if s <= 0 or abs(s) > isa.BY_MNEMONIC["TLOAD"].fields[-1].hi:
            out.append((i, 1, 1))
            i += 1
            continue
        out.append((i, j - i + 1, s))
        i = j + 1
    return out


def generate(module: Module, cfg: MachineConfig = DEFAULT_CONFIG) -> Compiled:
    """Generate the program of a ``pent`` module (planning memory and tiles first if that was not done)."""
    g = module.main
    for op in g.body:
        if op.name.startswith("nn."):
            raise PccError(f"code generation needs a pent graph, found {op.name}: run 'quantize' first", op.loc)
    if any(op.attributes.get("addr") is None for op in g.body if op.results and op.results[0].type.is_pent):
        PlanMemory().run(module)
    if any(op.attributes.get("tile") is None for op in g.body if op.name not in ("pent.quantize", "pent.dequantize")):
        Tile().run(module)
    return _Gen(module, cfg).run()


def write_program(compiled: Compiled, asm_path: str | os.PathLike[str]) -> list[Path]:
    """Write ``<stem>.pasm`` and ``<stem>.weights.bin`` (the blob name is made to match the file)."""
    p = Path(asm_path)
    blob_name = p.stem + ".weights.bin"
    if blob_name != compiled.blob_name:
        compiled.asm = compiled.asm.replace(f'.incbin "{compiled.blob_name}"', f'.incbin "{blob_name}"', 1)
        compiled.blob_name = blob_name
    return compiled.write(p)


__all__ = [
    "EMIT",
    "Compiled",
    "Emitter",
    "Mem",
    "Params",
    "Reg",
    "generate",
    "io_name",
    "memory_order",
    "write_program",
]


from pcc.backend import codegen_binary  # noqa: E402,F401  (its rules register in EMIT)
