"""Translation of scalar code: each basic block of a program becomes one Python function (``exec`` of generated
source), built when the simulator first reaches it.

A block runs from its entry to the first branch, jump, call, return or HALT (at most ``MAX_BLOCK`` instructions).
Inside a block the registers live in local variables (loaded on first use, written back at the exits and before
anything that can fault), field values are literals, P0 reads fold to ``0``, and a flag group (Z/N/P, V, C) is
stored only by its last writer before the block's end and before each instruction that can fault (flags are kept
lazily: the value Z/N/P derive from, and V, C, S), so a fault leaves the flags of the instructions before it.
Branch targets are static, so they are checked when the block is built; RET's dynamic target is checked against
the set of instruction addresses. Tensor instructions are calls to the closures of ``runtime/tensor.py``; a run of
consecutive loads (TLOAD, TLOADC) of one base register may be one call (``dma.build_loads``), and with the
compiled loops a run of tensor instructions one call of the compiled run loop (``tensor.build_run``). Each block
counts its own executions. The generated code is made from the decoded instructions only, never from user text.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from pcc import isa
from pcc.backend.program import Instruction
from pcc.isa import ACC_MAX, WORD_MAX, Op
from pcc.runtime import faults
from pcc.runtime.faults import Fault

if TYPE_CHECKING:
    from pcc.runtime.simulator import Simulator

MAX_BLOCK = 256  # longest straight-line block translated into one function

_MOD = 5**isa.WORD_PENTS
_HI10 = 5**10
_CONTROL_END = frozenset({Op.HALT, Op.BEQ, Op.BNE, Op.BLT, Op.BGT, Op.JUMP, Op.CALL, Op.RET})
_BRANCH_TEST = {Op.BEQ: "== 0", Op.BNE: "!= 0", Op.BLT: "< 0", Op.BGT: "> 0"}
_LAZY_FLAGS = ("Z", "V", "C")  # flag groups a block stores only from their last writer (S is stored at once)
# scalar instructions that can fault (tensor instructions all can): loads, stores, the stack, QUANT, control flow
_MAY_FAULT = frozenset({Op.LOAD, Op.STORE, Op.LOADV, Op.STOREV, Op.PUSH, Op.POP, Op.QUANT}) | _CONTROL_END


def _mem_fault(index: int, what: str, addr: int, size: int) -> Fault:
    return Fault(index, faults.mem_fault(what, addr, size))


def _stack_fault(index: int, sp: int, size: int, push: bool) -> Fault:
    return Fault(index, faults.stack_fault(sp, size, push))


def _quant_fault(index: int, reg: int, step: int) -> Fault:
    return Fault(index, faults.quant_fault(reg, step))


def _ret_fault(index: int, target: int) -> Fault:
    return Fault(index, faults.ret_fault(target))


@dataclass(slots=True)
class Block:
    """One translated block: instructions ``start .. start+length-1`` (indices); ``count`` holds its runs."""

    start: int
    length: int
    count: list[int]
    fn: Callable[[], int]


class BlockGen:
    """Generates the Python source of one block (see the module docstring)."""

    def __init__(self, sim: Simulator, i0: int, limit: int) -> None:
        self.sim = sim
        self.i0 = i0
        self.limit = limit
        self.lines: list[str] = []
        self.indent = 2
        self.loaded: set[int] = set()
        self.dirty: set[int] = set()
        self.ns: dict[str, object] = {}
        cfg = sim.config
        self.sp, self.lr = cfg.sp_reg, cfg.lr_reg
        self.N = cfg.dram_words

    # ---- emission helpers ----------------------------------------------------------------------------
    def emit(self, line: str) -> None:
        self.lines.append("    " * self.indent + line)

    def rd(self, k: int) -> str:
        if k == 0:
            return "0"
        if k not in self.loaded:
            self.emit(f"r{k} = r[{k}]")
            self.loaded.add(k)
        return f"r{k}"

    def target(self, k: int) -> str:
        """The variable an instruction writing register ``k`` computes into (``v`` for P0)."""
        return f"r{k}" if k else "v"

    def written(self, k: int) -> None:
        if k:
            self.loaded.add(k)
            self.dirty.add(k)

    def flush_lines(self) -> list[str]:
        return [f"r[{k}] = r{k}" for k in sorted(self.dirty)]

    def flush(self) -> None:
        for line in self.flush_lines():
            self.emit(line)
        self.dirty.clear()

    def fail(self, cond: str, exc: str) -> None:
        """``if cond:`` write back the registers and raise ``exc``."""
        self.emit(f"if {cond}:")
        self.indent += 1
        for line in self.flush_lines():
            self.emit(line)
        self.emit(f"raise {exc}")
        self.indent -= 1

    def wrap(self, t: str, set_v: bool) -> None:
        """Reduce ``t`` into the word range; store V if this is the block's last V writer."""
        w = WORD_MAX
        if set_v:
            self.emit(f"if -{w} <= {t} <= {w}:")
            self.emit("    F[1] = 0")
            self.emit("else:")
            self.emit(f"    {t} = ({t} + {w}) % {_MOD} - {w}")
            self.emit("    F[1] = 1")
        else:
            self.emit(f"if not -{w} <= {t} <= {w}:")
            self.emit(f"    {t} = ({t} + {w}) % {_MOD} - {w}")

    # ---- generation ----------------------------------------------------------------------------------
    def generate(self) -> tuple[str, dict[str, object], int]:
        sim = self.sim
        prog = sim.program.instructions
        n_all = len(prog)
        # the block's instructions
        idx = []
        i = self.i0
        while i < n_all and len(idx) < self.limit:
            idx.append(i)
            if sim._invalid[i] is not None or prog[i].op in _CONTROL_END:
                break
            i += 1
        # which writer of each flag group stores it: the last one before the block's end and before each instruction
        # that can fault (the flags a fault leaves are those of the instructions before it)
        stores: set[tuple[int, str]] = set()
        pending = set(_LAZY_FLAGS)
        for j in reversed(idx):
            info = sim._info[j]
            if info is None or sim._invalid[j] is not None:
                pending = set(_LAZY_FLAGS)
                continue
            for g in _LAZY_FLAGS:
                if g in info.flags and g in pending:
                    stores.add((j, g))
                    pending.discard(g)
            if info.is_tensor or prog[j].op in _MAY_FAULT:
                pending = set(_LAZY_FLAGS)
        self.emit("K[0] += 1")
        runs = self.load_runs(idx)
        ended = False
        for j in idx:
            if j in runs:
                fname, bases = runs[j]
                if fname is None:  # inside a run emitted at its first instruction
                    continue
                self.flush()
                self.emit(f"{fname}({', '.join(self.rd(b) for b in bases)})")
                continue
            ins = prog[j]
            bad = sim._invalid[j]
            if bad is not None:
                self.flush()
                self.ns[f"E{j}"] = Fault(j, bad)
                self.emit(f"raise E{j}")
                ended = True
                break
            ended = self.instr(j, ins, (j, "Z") in stores, (j, "V") in stores, (j, "C") in stores)
        if not ended:
            nxt = idx[-1] + 1
            self.flush()
            if nxt < n_all and len(idx) == self.limit:
                self.emit(f"return {prog[nxt].addr}")
            elif nxt < n_all:  # pragma: no cover - blocks end at control flow or the limit
                self.emit(f"return {prog[nxt].addr}")
            else:
                j = idx[-1]
                self.ns[f"E{j}e"] = Fault(j, "execution ran past the end of the program without reaching HALT", True)
                self.emit(f"raise E{j}e")
        names = ["r", "m", "F", "X", "K", "D", "Fault", "MF", "SF", "QF", "RF", "VALID"] + [
            k for k in self.ns if k not in ("r", "m", "F", "X", "K", "D")
        ]
        names = list(dict.fromkeys(names))
        ns = dict(self.ns)
        ns.update(
            r=sim.regs,
            m=sim._mv,
            F=sim._flags,
            X=sim._acc,
            K=[0],
            D=sim._dirty,
            Fault=Fault,
            MF=_mem_fault,
            SF=_stack_fault,
            QF=_quant_fault,
            RF=_ret_fault,
            VALID=sim._valid_pcs,
        )
        head = "def _mk():\n    def b(" + ", ".join(f"{k}={k}" for k in names) + "):\n"
        src = head + "\n".join(self.lines) + "\n    return b\n"
        return src, ns, len(idx)

    def load_runs(self, idx: list[int]) -> dict[int, tuple[str | None, tuple[int, ...]]]:
        """Runs of instructions that execute as one closure: first index -> (closure name, the base registers whose
        values it takes), later ones -> (None, ...). With the compiled loops, two or more consecutive tensor
        instructions the compiled run loop takes (``tensor.build_run``; an EADD + TLUT table activation right
        after a REQUANTC it fuses with, ``tensor.run_tail``, too), a TLOADC bias and the CONV after it
        (``tensor.build_bias``, found first), and other table activations as one closure (``tensor.build_pair``);
        then consecutive TLOAD / TLOADC instructions with one base register
        (``tensor.build_loads``)."""
        sim = self.sim
        prog = sim.program.instructions
        loads = (Op.TLOAD, Op.TLOADC)
        out: dict[int, tuple[str | None, tuple[int, ...]]] = {}
        if sim.fused:
            for k in range(len(idx) - 1):  # a TLOADC bias and the CONV that adds to it (runtime/fuse.py bias_pair)
                j = idx[k]
                if j in out or sim._invalid[j] is not None or sim._invalid[j + 1] is not None:
                    continue
                fn = sim._tensor.build_bias(sim, j)
                if fn is not None:
                    self.ns[f"B{j}"] = fn
                    out[j], out[j + 1] = (f"B{j}", (prog[j].args[1],)), (None, ())
            k = 0
            while k < len(idx):
                e = k
                while e < len(idx) and idx[e] not in out and sim._invalid[idx[e]] is None:
                    if sim._tensor.run_row(sim, prog[idx[e]]):
                        e += 1
                    elif (  # a table activation the run loop applies in the REQUANTC before it
                        k < e
                        and e + 1 < len(idx)
                        and sim._invalid[idx[e + 1]] is None
                        and sim._tensor.run_tail(
                            sim, [prog[g] for g in idx[max(k, e - 2) : e]], prog[idx[e]], prog[idx[e + 1]]
                        )
                    ):
                        e += 2
                    else:
                        break
                if e - k >= 2:
                    group = idx[k:e]
                    regs = sorted({_base_reg(prog[g]) for g in group} - {0, None})
                    name = f"R{group[0]}_{len(group)}"
                    self.ns[name] = sim._run(group, regs)
                    out[group[0]] = (name, tuple(regs))
                    for g in group[1:]:
                        out[g] = (None, ())
                k = max(e, k + 1)
            for k in range(len(idx) - 1):  # the table activation's EADD + TLUT as one pass (runtime/fuse.py)
                j = idx[k]
                if j in out or idx[k + 1] in out or sim._invalid[j] is not None or sim._invalid[j + 1] is not None:
                    continue
                fn = sim._tensor.build_pair(sim, j)
                if fn is not None:
                    self.ns[f"U{j}"] = fn
                    out[j], out[j + 1] = (f"U{j}", ()), (None, ())
        k = 0
        while k < len(idx):
            j = idx[k]
            if j in out or sim._invalid[j] is not None or prog[j].op not in loads:
                k += 1
                continue
            rb = prog[j].args[1]
            e = k + 1
            while e < len(idx) and idx[e] not in out and sim._invalid[idx[e]] is None and prog[idx[e]].op in loads:
                if prog[idx[e]].args[1] != rb:
                    break
                e += 1
            group = idx[k:e]
            fn = sim._load_run(group)
            if fn is not None:
                name = f"L{group[0]}_{len(group)}"
                self.ns[name] = fn
                out[group[0]] = (name, (rb,))
                for g in group[1:]:
                    out[g] = (None, (rb,))
            k = e
        return out

    def instr(self, j: int, ins: Instruction, z: bool, v: bool, c: bool) -> bool:
        """Emit one instruction; returns True if it ends the block (a return or raise was emitted)."""
        op = ins.op
        a = ins.args
        info = self.sim._info[j]
        assert info is not None
        if info.is_tensor:
            fname = f"T{j}"
            self.ns[fname] = self.sim._tensor_fn(j)
            self.flush()
            if info.unit is isa.Unit.DMA:
                names = info.field_names
                base = self.rd(a[names.index("rb")])
                self.emit(f"{fname}({base})")
            else:
                self.emit(f"{fname}()")
            return False
        gen = _GEN.get(op)
        if gen is None:  # pragma: no cover - every scalar opcode has a generator (checked by the tests)
            raise AssertionError(f"no generator for {info.mnemonic}")
        return gen(self, j, ins, a, z, v, c)


# ---- scalar instruction generators ------------------------------------------------------------------
# Each gets (gen, index, instruction, args, last ZNP writer?, last V writer?, last C writer?) and returns True if
# it ended the block.


def _base_reg(ins: Instruction) -> int | None:
    """The base register of a DMA instruction (TLOAD, TLOADC, TLOADW: field 1; TSTORE, TSTOREC: field 0)."""
    if ins.op in (Op.TLOAD, Op.TLOADC, Op.TLOADW):
        return ins.args[1]
    if ins.op in (Op.TSTORE, Op.TSTOREC):
        return ins.args[0]
    return None


def _g_nop(g: BlockGen, j, ins, a, z, v, c) -> bool:  # noqa: ANN001
    return False


def _g_halt(g: BlockGen, j, ins, a, z, v, c) -> bool:  # noqa: ANN001
    g.flush()
    g.emit(f"return {-ins.addr - 1}")
    return True


def _binop(expr: str, wraps: bool) -> Callable:
    def gen(g: BlockGen, j, ins, a, z, v, c) -> bool:  # noqa: ANN001
        d = a[0]
        srcs = [g.rd(k) for k in a[1:]]
        t = g.target(d)
        g.emit(f"{t} = " + expr.format(*srcs))
        if wraps:
            g.wrap(t, v)
        if z:
            g.emit(f"F[0] = {t}")
        g.written(d)
        return False

    return gen


def _g_addi(g: BlockGen, j, ins, a, z, v, c) -> bool:  # noqa: ANN001
    d, s, imm = a
    t = g.target(d)
    if s == 0:
        g.emit(f"{t} = {imm}")  # |imm| <= word_max(7): never wraps
        if v:
            g.emit("F[1] = 0")
    else:
        g.emit(f"{t} = {g.rd(s)} + ({imm})")
        g.wrap(t, v)
    if z:
        g.emit(f"F[0] = {t}")
    g.written(d)
    return False


def _g_movi(g: BlockGen, j, ins, a, z, v, c) -> bool:  # noqa: ANN001
    d, imm = a
    t = g.target(d)
    g.emit(f"{t} = {imm}")
    if z:
        g.emit(f"F[0] = {t}")
    g.written(d)
    return False


def _g_movhi(g: BlockGen, j, ins, a, z, v, c) -> bool:  # noqa: ANN001
    d, imm = a
    t = g.target(d)
    g.emit(f"{t} = {g.rd(d)} + ({imm * _HI10})")
    g.wrap(t, v)
    if z:
        g.emit(f"F[0] = {t}")
    g.written(d)
    return False


def _g_div2(g: BlockGen, j, ins, a, z, v, c) -> bool:  # noqa: ANN001
    d, s = a
    x = g.rd(s)
    t = g.target(d)
    if c:
        g.emit(f"F[2] = {x} & 1")
    g.emit(f"{t} = {x} // 2 if {x} >= 0 else -((-{x}) // 2)")
    if z:
        g.emit(f"F[0] = {t}")
    g.written(d)
    return False


def _g_clamp(g: BlockGen, j, ins, a, z, v, c) -> bool:  # noqa: ANN001
    d, s, lo, hi = a
    x, xl, xh = g.rd(s), g.rd(lo), g.rd(hi)
    t = g.target(d)
    g.emit(f"u = {x} if {x} > {xl} else {xl}")
    g.emit(f"{t} = u if u < {xh} else {xh}")
    if z:
        g.emit(f"F[0] = {t}")
    g.written(d)
    return False


def _g_quant(g: BlockGen, j, ins, a, z, v, c) -> bool:  # noqa: ANN001
    d, s, st = a
    x, step = g.rd(s), g.rd(st)
    g.emit(f"u = {step}")
    g.fail("u <= 0", f"QF({j}, {st}, u)")
    g.emit(f"w = {x}")
    g.emit("q = ((w if w >= 0 else -w) * 2 + u) // (2 * u)")
    g.emit("if q > 2:")
    g.emit("    q = 2")
    t = g.target(d)
    g.emit(f"{t} = -q if w < 0 else q")
    if z:
        g.emit(f"F[0] = {t}")
    g.written(d)
    return False


def _g_mac(g: BlockGen, j, ins, a, z, v, c) -> bool:  # noqa: ANN001
    d, s1, s2 = a
    x, y = g.rd(s1), g.rd(s2)
    am, w = ACC_MAX, WORD_MAX
    t = g.target(d)
    g.emit(f"u = X[0] + {x} * {y}")
    g.emit(f"if -{am} <= u <= {am}:")
    g.emit("    q = 0")
    g.emit("else:")
    g.emit(f"    u = {am} if u > 0 else -{am}")
    g.emit("    q = 1")
    g.emit("X[0] = u")
    g.emit(f"if -{w} <= u <= {w}:")
    g.emit(f"    {t} = u")
    g.emit("else:")
    g.emit(f"    {t} = {w} if u > 0 else -{w}")
    g.emit("    q = 1")
    g.emit("F[1] = q")
    g.emit("if q:")
    g.emit("    F[3] = 1")
    if z:
        g.emit(f"F[0] = {t}")
    g.written(d)
    return False


def _g_clracc(g: BlockGen, j, ins, a, z, v, c) -> bool:  # noqa: ANN001
    g.emit("X[0] = 0")
    return False


def _addr(g: BlockGen, j: int, base: int, off: int, what: str, span: int = 1) -> None:
    """``e`` = the effective address ``base + off``; fault unless ``e .. e+span-1`` lies in main memory."""
    if base == 0:
        g.emit(f"e = {off}")
    else:
        g.emit(f"e = {g.rd(base)} + ({off})")
    if span == 1:
        g.fail(f"not 0 <= e < {g.N}", f"MF({j}, '{what}', e, {g.N})")
    else:
        g.fail(f"e < 0 or e + {span} > {g.N}", f"MF({j}, '{what}', e if e < 0 else e + {span - 1}, {g.N})")


def _g_load(g: BlockGen, j, ins, a, z, v, c) -> bool:  # noqa: ANN001
    d, base, off = a
    _addr(g, j, base, off, "LOAD")
    if d:
        g.emit(f"r{d} = m[e]")
        g.written(d)
    return False


def _dirty(g: BlockGen, last: str = "e") -> None:
    """Widen the written range of main memory to ``e .. last`` (for reset)."""
    g.emit("if e < D[0]:")
    g.emit("    D[0] = e")
    g.emit(f"if {last} > D[1]:")
    g.emit(f"    D[1] = {last}")


def _g_store(g: BlockGen, j, ins, a, z, v, c) -> bool:  # noqa: ANN001
    s, base, off = a
    _addr(g, j, base, off, "STORE")
    g.emit(f"m[e] = {g.rd(s)}")
    _dirty(g)
    return False


def _g_loadv(g: BlockGen, j, ins, a, z, v, c) -> bool:  # noqa: ANN001
    d, base, off, n = a
    _addr(g, j, base, off, "LOADV", n)
    for i in range(n):
        if d + i:
            g.emit(f"r{d + i} = m[e + {i}]")
            g.written(d + i)
    return False


def _g_storev(g: BlockGen, j, ins, a, z, v, c) -> bool:  # noqa: ANN001
    s, base, off, n = a
    _addr(g, j, base, off, "STOREV", n)
    for i in range(n):
        g.emit(f"m[e + {i}] = {g.rd(s + i)}")
    _dirty(g, f"e + {n - 1}")
    return False


def _g_push(g: BlockGen, j, ins, a, z, v, c) -> bool:  # noqa: ANN001
    (s,) = a
    sp = g.sp
    g.emit(f"e = {g.rd(sp)} - 1")
    g.fail(f"not 0 <= e < {g.N}", f"SF({j}, e + 1, {g.N}, True)")
    g.emit(f"r{sp} = e")
    g.written(sp)
    g.emit(f"m[e] = {g.rd(s)}")  # read after SP is written: PUSH SP stores the decremented SP
    _dirty(g)
    return False


def _g_pop(g: BlockGen, j, ins, a, z, v, c) -> bool:  # noqa: ANN001
    (d,) = a
    sp = g.sp
    g.emit(f"e = {g.rd(sp)}")
    g.fail(f"not 0 <= e < {g.N}", f"SF({j}, e, {g.N}, False)")
    if d:
        g.emit(f"r{d} = m[e]")
        g.written(d)
    g.emit(f"r{sp} = e + 1")  # written last: POP SP leaves SP = old SP + 1
    g.written(sp)
    return False


def _target_ok(g: BlockGen, j: int, dest: int) -> bool:
    if dest in g.sim._valid_pcs:
        return True
    g.flush()
    g.ns[f"E{j}t"] = Fault(j, f"branch target {dest} is not the start of an instruction")
    g.emit(f"raise E{j}t")
    return False


def _g_branch(g: BlockGen, j, ins, a, z, v, c) -> bool:  # noqa: ANN001
    s, off = a
    dest, nxt = ins.addr + off, ins.addr + 1
    x = g.rd(s)
    g.flush()
    test = _BRANCH_TEST[ins.op]
    if s == 0:  # P0: decided now
        taken = ins.op == Op.BEQ  # P0 == 0: BEQ always taken, BNE, BLT, BGT never
        if taken and not _target_ok(g, j, dest):
            return True
        if not taken and nxt not in g.sim._valid_pcs:
            g.ns[f"E{j}e"] = Fault(j, "execution ran past the end of the program without reaching HALT", True)
            g.emit(f"raise E{j}e")
            return True
        g.emit(f"return {dest if taken else nxt}")
        return True
    if dest not in g.sim._valid_pcs:
        g.ns[f"E{j}t"] = Fault(j, f"branch target {dest} is not the start of an instruction")
        g.emit(f"if {x} {test}:")
        g.emit(f"    raise E{j}t")
    else:
        g.emit(f"if {x} {test}:")
        g.emit(f"    return {dest}")
    if nxt not in g.sim._valid_pcs:
        g.ns[f"E{j}e"] = Fault(j, "execution ran past the end of the program without reaching HALT", True)
        g.emit(f"raise E{j}e")
    else:
        g.emit(f"return {nxt}")
    return True


def _g_jump(g: BlockGen, j, ins, a, z, v, c) -> bool:  # noqa: ANN001
    dest = ins.addr + a[0]
    g.flush()
    if _target_ok(g, j, dest):
        g.emit(f"return {dest}")
    return True


def _g_call(g: BlockGen, j, ins, a, z, v, c) -> bool:  # noqa: ANN001
    dest = ins.addr + a[0]
    g.emit(f"r{g.lr} = {ins.addr + 1}")
    g.written(g.lr)
    g.flush()
    if _target_ok(g, j, dest):
        g.emit(f"return {dest}")
    return True


def _g_ret(g: BlockGen, j, ins, a, z, v, c) -> bool:  # noqa: ANN001
    t = g.rd(g.lr)
    g.flush()
    g.emit(f"if {t} not in VALID:")
    g.emit(f"    raise RF({j}, {t})")
    g.emit(f"return {t}")
    return True


_W = WORD_MAX
_GEN: dict[int, Callable] = {
    Op.NOP: _g_nop,
    Op.SYNC: _g_nop,
    Op.FENCE: _g_nop,
    Op.HALT: _g_halt,
    Op.ADD: _binop("{0} + {1}", True),
    Op.SUB: _binop("{0} - {1}", True),
    Op.ADDI: _g_addi,
    Op.MUL: _binop("{0} * {1}", True),
    Op.NEG: _binop("-{0}", False),
    Op.ABS: _binop("{0} if {0} >= 0 else -{0}", False),
    Op.MUL2: _binop("2 * {0}", True),
    Op.DIV2: _g_div2,
    Op.MIN: _binop("{0} if {0} < {1} else {1}", False),
    Op.MAX: _binop("{0} if {0} > {1} else {1}", False),
    Op.CLAMP: _g_clamp,
    Op.SIGN: _binop("({0} > 0) - ({0} < 0)", False),
    Op.RELU: _binop("{0} if {0} > 0 else 0", False),
    Op.QUANT: _g_quant,
    Op.MOVI: _g_movi,
    Op.MOVHI: _g_movhi,
    Op.MAC: _g_mac,
    Op.CLRACC: _g_clracc,
    Op.LOAD: _g_load,
    Op.STORE: _g_store,
    Op.LOADV: _g_loadv,
    Op.STOREV: _g_storev,
    Op.PUSH: _g_push,
    Op.POP: _g_pop,
    Op.BEQ: _g_branch,
    Op.BNE: _g_branch,
    Op.BLT: _g_branch,
    Op.BGT: _g_branch,
    Op.JUMP: _g_jump,
    Op.CALL: _g_call,
    Op.RET: _g_ret,
}


def scalar_opcodes() -> frozenset[int]:
    """The opcodes translated inline (every non-tensor instruction of the table)."""
    return frozenset(_GEN)
