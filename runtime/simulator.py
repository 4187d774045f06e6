"""The pentary simulator: runs a :class:`~pcc.backend.program.Program` bit-exactly and counts what it did.

This module is the executable definition of the ISA in ``pcc/isa.py``: every instruction of the table,
scalar and tensor, with its integer semantics (word width, wrap or saturation, flags), and the faults that stop a
run (memory access out of range, invalid instruction, stack overflow, a QUANT step <= 0, running past
``max_steps``) as a :class:`~pcc.diagnostics.PccError` that names the instruction, its text address and its source
line.

Speed
-----
Scalar code is translated, one *basic block* at a time and only when first reached, into a Python function
(``exec`` of generated source). A block runs from its entry to the first branch, jump, call, return or HALT
(at most ``MAX_BLOCK`` instructions). Inside a block the registers live in local variables (loaded on first
use, written back at the exits), field values are literals, P0 reads fold to ``0``, and a flag group is stored
only by its last writer in the block (flags are kept lazily: the value Z/N/P derive from, and V, C, S). Branch
targets are static, so they are checked when the block is built; RET's dynamic target is checked against the
set of instruction addresses. The driver loop does one dictionary lookup, one step-budget subtraction and one
call per block; each block counts its own executions. Tensor instructions are calls to closures built once per
instruction with their field values bound (``runtime/tensor.py``), vectorised in numpy; a run of consecutive
loads (TLOAD, TLOADC) of one base register may be one call (``tensor.build_loads``: the same effect and faults).

Counting
--------
The cycle cost of every instruction depends only on its fields (``isa.cycles``), so the simulator counts block
executions and the profiler (``runtime/profile.py``) multiplies by static per-instruction costs. The only
data-dependent statistics, the zero weights a MAC instruction met, are accumulated by the tensor closures. With
``trace=True`` the driver also records the sequence of executed blocks, from which ``runtime/trace.py`` rebuilds
the timeline.
"""

from __future__ import annotations

from array import array
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np

from pcc import isa
from pcc.backend.program import Instruction, Program
from pcc.diagnostics import Location, PccError, source_line
from pcc.isa import ACC_MAX, DEFAULT_CONFIG, WORD_MAX, MachineConfig, Op
from pcc.runtime import boundary

DEFAULT_MAX_STEPS = 100_000_000  # instructions per run before the step-limit fault
# How MATMUL, MATVEC and CONV compute their integer products (all exact, the results are the same):
#   auto  - int8 when torch is installed and the program has a product of at least intgemm.MIN_MACS
#           multiply-accumulates (where the int8 kernel pays for its fixed costs and torch's import), else float;
#   int8  - int8 GEMM (runtime/intgemm.py) on balanced base-256 digits of the activations, for every product
#           but grouped CONVs (an error if torch is missing);
#   float - float64 BLAS where the operand bounds make every sum exact, int64 otherwise.
GEMM_CHOICES = ("auto", "int8", "float")
MAX_BLOCK = 256  # longest straight-line block translated into one function

_MOD = 5**isa.WORD_PENTS
_HI10 = 5**10
_CONTROL_END = frozenset({Op.HALT, Op.BEQ, Op.BNE, Op.BLT, Op.BGT, Op.JUMP, Op.CALL, Op.RET})
_BRANCH_TEST = {Op.BEQ: "== 0", Op.BNE: "!= 0", Op.BLT: "< 0", Op.BGT: "> 0"}


class Fault(Exception):
    """A machine fault inside the simulator: the index of the faulting instruction and the reason.

    Internal: :meth:`Simulator.run` turns it into a :class:`PccError` at the instruction's source line.
    """

    def __init__(self, index: int, message: str, completed: bool = False) -> None:
        super().__init__(message)
        self.index = index
        self.message = message
        self.completed = completed  # the instruction itself ran (e.g. the last one, before falling off the end)


def _mem_fault(index: int, what: str, addr: int, size: int) -> Fault:
    return Fault(index, f"{what} address {addr} outside main memory (0..{size - 1})")


def _stack_fault(index: int, sp: int, size: int, push: bool) -> Fault:
    if push and sp - 1 < 0:
        return Fault(index, f"stack overflow: PUSH with SP = {sp} would write address {sp - 1}")
    if not push and sp >= size:
        return Fault(index, f"stack underflow: POP with SP = {sp} reads past the top of memory ({size - 1})")
    return Fault(index, f"stack address {sp - 1 if push else sp} outside main memory (0..{size - 1})")


def _quant_fault(index: int, reg: int, step: int) -> Fault:
    return Fault(index, f"QUANT step P{reg} = {step} must be positive (division by zero or a negative step)")


def _ret_fault(index: int, target: int) -> Fault:
    return Fault(index, f"RET to address {target} (LR), which is not the start of an instruction")


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


@dataclass(slots=True)
class Block:
    """One translated block: instructions ``start .. start+length-1`` (indices); ``count`` holds its runs."""

    start: int
    length: int
    count: list[int]
    fn: Callable[[], int]


class Simulator:
    """The machine state of one program and the translated code that runs it.

    State: ``regs`` (P0..P31, Python ints), ``acc``, the flags (:attr:`flags`, :meth:`flag`), ``mem`` (main
    memory, int64 words), the scratchpads ``spad_a`` (int64 activations), ``spad_w`` (int8 pents) and ``spad_c``
    (int64 accumulators), ``pc`` and ``steps`` (instructions executed since the last reset). Translated blocks
    and statistics survive :meth:`reset`, so a batch runs sample after sample on one simulator and its profile
    covers all of them (``runs`` counts completed runs).
    """

    def __init__(
        self,
        program: Program,
        config: MachineConfig = DEFAULT_CONFIG,
        *,
        trace: bool = False,
        gemm: str = "auto",
        fused: bool | None = None,
    ) -> None:
        from pcc.runtime import intgemm, kernels, tensor  # local: tensor imports this module's Fault

        if gemm not in GEMM_CHOICES:
            raise PccError(f"gemm must be one of {', '.join(GEMM_CHOICES)}, got {gemm!r}")
        if gemm == "int8" and not intgemm.available():
            raise PccError(f"gemm 'int8' is not available: {intgemm.unavailable_reason()}")
        if fused and not kernels.available():
            raise PccError("fused kernels are not available: numba is not installed (pip install 'pcc[fast]')")
        self.gemm = gemm  # how MATMUL, MATVEC and CONV multiply: see GEMM_CHOICES

        self.program = program
        self.config = config
        self.trace_enabled = trace
        n = len(program.instructions)
        self.mem = np.zeros(config.dram_words, dtype=np.int64)
        self.spad_a = np.zeros(config.a_spad_words, dtype=np.int64)
        self.spad_w = np.zeros(config.w_spad_pents, dtype=np.int8)
        self.spad_c = np.zeros(config.c_spad_words, dtype=np.int64)
        self._mv = memoryview(self.mem)
        self.regs: list[int] = [0] * config.num_regs
        self._flags: list = [None, 0, 0, 0]  # value Z/N/P derive from (None: all clear), V, C, S
        self._acc: list[int] = [0]
        self.pc = 0
        self.steps = 0
        self.halted = False
        self.runs = 0
        # What reset must clear: [lowest, highest] main-memory word written (data, inputs, stores, DMA), and
        # per scratchpad the union of the static write extents of the tensor instructions built so far.
        self._dirty: list[int] = [config.dram_words, -1]
        self._spad_dirty: dict[str, list[int]] = {k: [1 << 62, -1] for k in "AWC"}
        # statistics the tensor closures accumulate (per instruction index)
        self.zero_weights = np.zeros(n, dtype=np.int64)  # zero pents met in the weight operand, summed over runs
        self.zero_macs = np.zeros(n, dtype=np.int64)  # MACs whose weight was zero, summed over executions
        # static facts per instruction
        self._info: list[isa.Instr | None] = [isa.BY_OPCODE.get(ins.op) for ins in program.instructions]
        self._invalid: list[str | None] = [
            invalid_reason(ins, info) for ins, info in zip(program.instructions, self._info, strict=True)
        ]
        self.cost: list[int] = []
        for ins, info, bad in zip(program.instructions, self._info, self._invalid, strict=True):
            self.cost.append(0 if bad is not None or info is None else isa.cycles(info, ins.args, config))
        # one engine for every product of the program: mixing BLAS's and torch's thread pools costs more than either
        self.int8_gemm = gemm == "int8" or (
            gemm == "auto" and self._largest_product() >= intgemm.MIN_MACS and intgemm.available()
        )
        # the compiled loops of runtime/kernels.py (whole small tensor instructions, and the elementwise and digit
        # work of large ones): by default wherever numba is installed (the ``fast`` extra)
        self.fused = kernels.available() if fused is None else fused
        # small CONV, MATMUL and MATVEC as direct compiled loops, unless the int8 engine was asked for by name
        self.direct_products = self.fused and gemm != "int8"
        self._addr_index: dict[int, int] = {ins.addr: i for i, ins in enumerate(program.instructions)}
        self._valid_pcs = frozenset(self._addr_index)
        self._blocks: dict[int, tuple[Callable[[], int], int]] = {}
        self.block_list: list[Block] = []  # every block translated, for the profiler
        self._tensor = tensor
        self._tensor_fns: dict[int, Callable] = {}
        self._load_runs: dict[tuple[int, int], Callable | None] = {}  # (first index, length) -> tensor.build_loads
        self._runs: dict[tuple[int, int], Callable] = {}  # (first index, length) -> tensor.build_run
        self.decoded = tensor.ContentCache()  # TLOADW's pents, reused while memory holds the same words
        self.workspace = tensor.Workspace()  # scratch buffers the tensor closures reuse
        # CONV's float64 weights (and their zero count and max), reused while the W scratchpad holds the same pents
        self.conv_weights = tensor.ContentCache(limit=1 << 28)
        self.block_trace: array | None = array("q") if trace else None
        self.io_layouts: dict[int, tuple] = {}  # id(IODecl) -> its words in main memory (runtime/boundary.py)
        self._check_data()
        # what reset restores: the data segments (where a run wrote over them), the registers
        self._segments = [(seg.addr, seg.end, seg.words) for seg in program.data if seg.words.size]
        self._regs0 = [0] * config.num_regs
        self._regs0[config.sp_reg] = config.stack_top
        self._spads = [(self.spad_a, self._spad_dirty["A"]), (self.spad_w, self._spad_dirty["W"])]
        self._spads.append((self.spad_c, self._spad_dirty["C"]))
        if self._segments:  # the first reset loads every data segment
            self._dirty[:] = [min(a for a, _, _ in self._segments), max(e for _, e, _ in self._segments) - 1]
        self.reset()

    def _largest_product(self) -> int:
        return largest_product(self.program, self.config, self._invalid)

    # ---- state ---------------------------------------------------------------------------------------
    def _check_data(self) -> None:
        for seg in self.program.data:
            if seg.addr < 0 or seg.end > self.mem.size:
                raise PccError(
                    f"data segment at {seg.addr}..{seg.end - 1} does not fit main memory of {self.mem.size} words"
                )
            w = np.asarray(seg.words)
            if w.size and (int(w.min()) < -WORD_MAX or int(w.max()) > WORD_MAX):
                raise PccError(f"data segment at address {seg.addr} holds a value outside the 16-pent word range", None)

    def reset(self, full: bool = False) -> None:
        """Zero the machine, load the data segments, SP = top of memory, PC = 0. Counts are kept.

        Only what the machine and :meth:`write_memory` wrote is cleared, and only the data words among it are
        loaded again (a run rarely touches more than a small part of the 64 MB of main memory, and seldom its own
        weights); after writing into the arrays directly, pass ``full=True``.
        """
        lo, hi = self._dirty
        mem = self.mem
        if full:
            mem[:] = 0
            lo, hi = 0, mem.size - 1
        elif hi >= lo:
            mem[lo : hi + 1] = 0
        for a, end, words in self._segments:
            if a <= hi and end > lo:  # the written words of this segment, as the program has them
                x, y = max(a, lo), min(end, hi + 1)
                mem[x:y] = words[x - a : y - a]
        for arr, (slo, shi) in self._spads:
            if full:
                arr[:] = 0
            elif shi >= slo:
                arr[slo : shi + 1] = 0
        self._dirty[:] = [mem.size, -1]
        self.regs[:] = self._regs0
        self._flags[:] = [None, 0, 0, 0]
        self._acc[0] = 0
        self.pc = 0
        self.steps = 0
        self.halted = False

    @property
    def acc(self) -> int:
        return self._acc[0]

    @acc.setter
    def acc(self, value: int) -> None:
        self._acc[0] = int(value)

    @property
    def flags(self) -> int:
        """The flags register: bit ``i`` is ``isa.FLAGS[i]`` (Z, N, P, V, C, S)."""
        v, fv, fc, fs = self._flags
        bits = 0
        if v is not None:
            bits |= 1 if v == 0 else (2 if v < 0 else 4)
        return bits | (8 if fv else 0) | (16 if fc else 0) | (32 if fs else 0)

    def flag(self, name: str) -> bool:
        """One flag by its letter (``"Z"``, ``"N"``, ``"P"``, ``"V"``, ``"C"``, ``"S"``)."""
        return bool(self.flags >> isa.FLAGS.index(name) & 1)

    # ---- running -------------------------------------------------------------------------------------
    def run(self, max_steps: int = DEFAULT_MAX_STEPS) -> None:
        """Run from the current PC until HALT; ``max_steps`` bounds the instructions of this reset's run.

        Raises PccError on a fault; the state is left as the fault found it (registers written back).
        """
        if not self.program.instructions:
            raise PccError("the program has no instructions", None)
        left = max_steps - self.steps
        pc = self.pc
        blocks = self._blocks
        get = blocks.get
        seq = self.block_trace
        n = 0
        try:
            if pc not in self._valid_pcs:
                raise Fault(0, f"PC {pc} is not the start of an instruction")
            # Two copies of the driver loop on purpose: it is the hot path of scalar code, and the copy without a
            # block trace saves a test and a call per block.
            if seq is None:
                while True:
                    ent = get(pc)
                    if ent is None:
                        if pc < 0:
                            break
                        ent = self._translate(pc)
                    fn, n = ent
                    left -= n
                    if left < 0:
                        left += n
                        n = 0
                        self._step_limit(pc, left, max_steps)
                    pc = fn()
            else:
                append = seq.append
                while True:
                    ent = get(pc)
                    if ent is None:
                        if pc < 0:
                            break
                        ent = self._translate(pc)
                    fn, n = ent
                    left -= n
                    if left < 0:
                        left += n
                        n = 0
                        self._step_limit(pc, left, max_steps)
                    append(pc)
                    pc = fn()
        except Fault as flt:
            done = max_steps - left - n
            start = self._addr_index.get(pc)
            if start is not None and flt.index >= start:
                done += flt.index - start + flt.completed
            self.steps = done
            self.pc = self.program.instructions[flt.index].addr
            err = self._error(flt.index, flt.message)
            err.notes.append(f"{done} instruction{'' if done == 1 else 's'} ran before the fault")
            raise err from None
        self.steps = max_steps - left
        self.pc = -pc - 1
        self.halted = True
        self.runs += 1

    def _error(self, index: int, message: str) -> PccError:
        if self._info[index] is not None:
            return self.program.error_at(index, message)
        # Program.error_at looks the mnemonic up and cannot name an invalid opcode
        ins = self.program.instructions[index]
        text = f"{message} (at text address {ins.addr}: opcode {ins.op})"
        loc = Location(self.program.file, ins.line, 1 if ins.line is not None else None)
        return PccError(text, loc, source_line=source_line(self.program.source, ins.line))

    def _step_limit(self, pc: int, left: int, max_steps: int) -> None:
        """Run the first ``left`` instructions of the block at ``pc``, then fault at the next one."""
        i0 = self._addr_index[pc]
        if left:
            fn = self._build(i0, left)
            fn()
        raise Fault(
            i0 + left,
            f"step limit reached: {max_steps} instructions executed without HALT (raise it with --max-steps)",
        )

    # ---- translation ---------------------------------------------------------------------------------
    def _translate(self, pc: int) -> tuple[Callable[[], int], int]:
        i0 = self._addr_index[pc]
        fn, length = self._build(i0, MAX_BLOCK, keep=True)
        ent = (fn, length)
        self._blocks[pc] = ent
        return ent

    def _tensor_fn(self, i: int) -> Callable:
        fn = self._tensor_fns.get(i)
        if fn is None:
            fn = self._tensor.build(self, i, self.program.instructions[i])
            self._tensor_fns[i] = fn
        return fn

    def _load_run(self, group: list[int]) -> Callable | None:
        key = (group[0], len(group))
        if key not in self._load_runs:
            instrs = self.program.instructions
            self._load_runs[key] = self._tensor.build_loads(self, [(i, instrs[i]) for i in group])
        return self._load_runs[key]

    def _run(self, group: list[int], regs: list[int]) -> Callable:
        key = (group[0], len(group))
        fn = self._runs.get(key)
        if fn is None:
            instrs = self.program.instructions
            fn = self._runs[key] = self._tensor.build_run(self, [(i, instrs[i]) for i in group], regs)
        return fn

    def _build(self, i0: int, limit: int, keep: bool = False):  # noqa: ANN202 - internal
        """Translate the block of at most ``limit`` instructions starting at index ``i0``."""
        gen = _BlockGen(self, i0, limit)
        src, ns, length = gen.generate()
        ns["__builtins__"] = {}
        code = compile(src, f"<pcc block @{self.program.instructions[i0].addr}>", "exec")
        exec(code, ns)  # generated from the decoded instructions only, never from user text
        fn = ns["_mk"]()
        count = ns["K"]
        blk = Block(i0, length, count, fn)
        self.block_list.append(blk)
        if keep:
            return fn, length
        return fn

    # ---- I/O helpers ---------------------------------------------------------------------------------
    def write_memory(self, addr: int, values: np.ndarray) -> None:
        """Store words at ``addr`` (values must be in the 16-pent word range)."""
        v = np.asarray(values, dtype=np.int64).reshape(-1)
        if addr < 0 or addr + v.size > self.mem.size:
            raise PccError(f"words {addr}..{addr + v.size - 1} do not fit main memory of {self.mem.size} words")
        self.mem[addr : addr + v.size] = v
        if v.size:
            self.touch(addr, addr + v.size - 1)

    def touch(self, lo: int, hi: int) -> None:
        """Note that main-memory words ``lo..hi`` were written (so that :meth:`reset` clears them)."""
        d = self._dirty
        if lo < d[0]:
            d[0] = lo
        if hi > d[1]:
            d[1] = hi

    def touch_spad(self, name: str, start: int, length: int) -> None:
        """Note that a tensor instruction may write scratchpad ``name`` at ``start .. start+length-1``."""
        if length > 0:
            d = self._spad_dirty[name]
            d[0] = min(d[0], start)
            d[1] = max(d[1], start + length - 1)

    def read_memory(self, addr: int, count: int) -> np.ndarray:
        if addr < 0 or addr + count > self.mem.size:
            raise PccError(f"words {addr}..{addr + count - 1} do not fit main memory of {self.mem.size} words")
        return self.mem[addr : addr + count].copy()

    def instruction_counts(self) -> np.ndarray:
        """How often each instruction ran (over every completed run and the current one)."""
        counts = np.zeros(len(self.program.instructions), dtype=np.int64)
        for b in self.block_list:
            if b.count[0]:
                counts[b.start : b.start + b.length] += b.count[0]
        return counts

    def clear_counts(self) -> None:
        """Forget every execution count and statistic (not the machine state)."""
        for b in self.block_list:
            b.count[0] = 0
        n = len(self.program.instructions)
        self.zero_weights[:] = [0] * n
        self.zero_macs[:] = [0] * n
        self.runs = 0
        if self.block_trace is not None:
            del self.block_trace[:]


class _BlockGen:
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
        # the last writer of each flag group
        last: dict[str, int] = {}
        for j in idx:
            info = sim._info[j]
            if info is None or sim._invalid[j] is not None:
                continue
            for g in ("Z", "V", "C"):
                if g in info.flags:
                    last[g] = j
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
            ended = self.instr(j, ins, last.get("Z") == j, last.get("V") == j, last.get("C") == j)
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
        instructions the compiled run loop takes (``tensor.build_run``); then consecutive TLOAD / TLOADC
        instructions with one base register (``tensor.build_loads``)."""
        sim = self.sim
        prog = sim.program.instructions
        loads = (Op.TLOAD, Op.TLOADC)
        out: dict[int, tuple[str | None, tuple[int, ...]]] = {}
        if sim.fused:
            k = 0
            while k < len(idx):
                e = k
                while e < len(idx) and sim._invalid[idx[e]] is None and sim._tensor.run_row(sim, prog[idx[e]]):
                    e += 1
                if e - k >= 2:
                    group = idx[k:e]
                    regs = sorted({_base_reg(prog[g]) for g in group} - {0, None})
                    name = f"R{group[0]}_{len(group)}"
                    self.ns[name] = sim._run(group, regs)
                    out[group[0]] = (name, tuple(regs))
                    for g in group[1:]:
                        out[g] = (None, ())
                k = max(e, k + 1)
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


def _g_nop(g: _BlockGen, j, ins, a, z, v, c) -> bool:  # noqa: ANN001
    return False


def _g_halt(g: _BlockGen, j, ins, a, z, v, c) -> bool:  # noqa: ANN001
    g.flush()
    g.emit(f"return {-ins.addr - 1}")
    return True


def _binop(expr: str, wraps: bool) -> Callable:
    def gen(g: _BlockGen, j, ins, a, z, v, c) -> bool:  # noqa: ANN001
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


def _g_addi(g: _BlockGen, j, ins, a, z, v, c) -> bool:  # noqa: ANN001
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


def _g_movi(g: _BlockGen, j, ins, a, z, v, c) -> bool:  # noqa: ANN001
    d, imm = a
    t = g.target(d)
    g.emit(f"{t} = {imm}")
    if z:
        g.emit(f"F[0] = {t}")
    g.written(d)
    return False


def _g_movhi(g: _BlockGen, j, ins, a, z, v, c) -> bool:  # noqa: ANN001
    d, imm = a
    t = g.target(d)
    g.emit(f"{t} = {g.rd(d)} + ({imm * _HI10})")
    g.wrap(t, v)
    if z:
        g.emit(f"F[0] = {t}")
    g.written(d)
    return False


def _g_div2(g: _BlockGen, j, ins, a, z, v, c) -> bool:  # noqa: ANN001
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


def _g_clamp(g: _BlockGen, j, ins, a, z, v, c) -> bool:  # noqa: ANN001
    d, s, lo, hi = a
    x, xl, xh = g.rd(s), g.rd(lo), g.rd(hi)
    t = g.target(d)
    g.emit(f"u = {x} if {x} > {xl} else {xl}")
    g.emit(f"{t} = u if u < {xh} else {xh}")
    if z:
        g.emit(f"F[0] = {t}")
    g.written(d)
    return False


def _g_quant(g: _BlockGen, j, ins, a, z, v, c) -> bool:  # noqa: ANN001
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


def _g_mac(g: _BlockGen, j, ins, a, z, v, c) -> bool:  # noqa: ANN001
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


def _g_clracc(g: _BlockGen, j, ins, a, z, v, c) -> bool:  # noqa: ANN001
    g.emit("X[0] = 0")
    return False


def _addr(g: _BlockGen, j: int, base: int, off: int, what: str, span: int = 1) -> None:
    """``e`` = the effective address ``base + off``; fault unless ``e .. e+span-1`` lies in main memory."""
    if base == 0:
        g.emit(f"e = {off}")
    else:
        g.emit(f"e = {g.rd(base)} + ({off})")
    if span == 1:
        g.fail(f"not 0 <= e < {g.N}", f"MF({j}, '{what}', e, {g.N})")
    else:
        g.fail(f"e < 0 or e + {span} > {g.N}", f"MF({j}, '{what}', e if e < 0 else e + {span - 1}, {g.N})")


def _g_load(g: _BlockGen, j, ins, a, z, v, c) -> bool:  # noqa: ANN001
    d, base, off = a
    _addr(g, j, base, off, "LOAD")
    if d:
        g.emit(f"r{d} = m[e]")
        g.written(d)
    return False


def _dirty(g: _BlockGen, last: str = "e") -> None:
    """Widen the written range of main memory to ``e .. last`` (for reset)."""
    g.emit("if e < D[0]:")
    g.emit("    D[0] = e")
    g.emit(f"if {last} > D[1]:")
    g.emit(f"    D[1] = {last}")


def _g_store(g: _BlockGen, j, ins, a, z, v, c) -> bool:  # noqa: ANN001
    s, base, off = a
    _addr(g, j, base, off, "STORE")
    g.emit(f"m[e] = {g.rd(s)}")
    _dirty(g)
    return False


def _g_loadv(g: _BlockGen, j, ins, a, z, v, c) -> bool:  # noqa: ANN001
    d, base, off, n = a
    _addr(g, j, base, off, "LOADV", n)
    for i in range(n):
        if d + i:
            g.emit(f"r{d + i} = m[e + {i}]")
            g.written(d + i)
    return False


def _g_storev(g: _BlockGen, j, ins, a, z, v, c) -> bool:  # noqa: ANN001
    s, base, off, n = a
    _addr(g, j, base, off, "STOREV", n)
    for i in range(n):
        g.emit(f"m[e + {i}] = {g.rd(s + i)}")
    _dirty(g, f"e + {n - 1}")
    return False


def _g_push(g: _BlockGen, j, ins, a, z, v, c) -> bool:  # noqa: ANN001
    (s,) = a
    sp = g.sp
    g.emit(f"e = {g.rd(sp)} - 1")
    g.fail(f"not 0 <= e < {g.N}", f"SF({j}, e + 1, {g.N}, True)")
    g.emit(f"r{sp} = e")
    g.written(sp)
    g.emit(f"m[e] = {g.rd(s)}")  # read after SP is written: PUSH SP stores the decremented SP
    _dirty(g)
    return False


def _g_pop(g: _BlockGen, j, ins, a, z, v, c) -> bool:  # noqa: ANN001
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


def _target_ok(g: _BlockGen, j: int, dest: int) -> bool:
    if dest in g.sim._valid_pcs:
        return True
    g.flush()
    g.ns[f"E{j}t"] = Fault(j, f"branch target {dest} is not the start of an instruction")
    g.emit(f"raise E{j}t")
    return False


def _g_branch(g: _BlockGen, j, ins, a, z, v, c) -> bool:  # noqa: ANN001
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


def _g_jump(g: _BlockGen, j, ins, a, z, v, c) -> bool:  # noqa: ANN001
    dest = ins.addr + a[0]
    g.flush()
    if _target_ok(g, j, dest):
        g.emit(f"return {dest}")
    return True


def _g_call(g: _BlockGen, j, ins, a, z, v, c) -> bool:  # noqa: ANN001
    dest = ins.addr + a[0]
    g.emit(f"r{g.lr} = {ins.addr + 1}")
    g.written(g.lr)
    g.flush()
    if _target_ok(g, j, dest):
        g.emit(f"return {dest}")
    return True


def _g_ret(g: _BlockGen, j, ins, a, z, v, c) -> bool:  # noqa: ANN001
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


def largest_product(program: Program, config: MachineConfig = DEFAULT_CONFIG, invalid: list | None = None) -> int:
    """The most multiply-accumulates one MATMUL, MATVEC or CONV of ``program`` does (from its fields)."""
    from pcc.runtime.profile import static_cost

    products = (Op.MATMUL, Op.MATVEC, Op.CONV)
    if invalid is None:
        invalid = [invalid_reason(ins, isa.BY_OPCODE.get(ins.op)) for ins in program.instructions]
    return max(
        (
            static_cost(ins, config).macs
            for ins, bad in zip(program.instructions, invalid, strict=True)
            if bad is None and ins.op in products
        ),
        default=0,
    )


# ---- the I/O boundary and the Python API --------------------------------------------------------------


def run_program(
    program: Program,
    inputs: Mapping[str, np.ndarray],
    *,
    max_steps: int = DEFAULT_MAX_STEPS,
    quantized: bool = False,
    simulator: Simulator | None = None,
    config: MachineConfig = DEFAULT_CONFIG,
) -> dict[str, np.ndarray]:
    """Run ``program`` on ``inputs`` (name -> array) and return its outputs (name -> array).

    Real-valued inputs are quantised at the boundary as the program's ``.input`` declarations say
    (``q = clip(round_half_even(x / scale), +-word_max(pents))``) and outputs are dequantised
    (``element * scale``, float32), so the results compare directly with any float runtime. With
    ``quantized=True`` inputs are the stored integers and outputs are returned as int64 integers.

    A batch (the declared first axis is 1 and the arrays have B on it) runs sample after sample on one simulator
    and the outputs are concatenated. Pass ``simulator`` to read its profile afterwards.
    """
    sim = simulator if simulator is not None else Simulator(program, config)
    if not quantized and boundary.write_inputs(sim, program, inputs):  # one sample of real arrays: the short way
        sim.run(max_steps)
        return {d.name: boundary.read_output(sim, d) for d in program.outputs}
    samples = boundary.prepare_inputs(program, inputs, quantized=quantized)
    results: list[dict[str, np.ndarray]] = []
    for sample in samples:
        sim.reset()
        for decl, words in sample:
            sim.write_memory(decl.addr, words)
        sim.run(max_steps)
        results.append({d.name: boundary.read_output(sim, d, quantized=quantized) for d in program.outputs})
    return boundary.stack_outputs(program, results, batched=len(samples) > 1)


__all__ = [
    "DEFAULT_MAX_STEPS",
    "GEMM_CHOICES",
    "Fault",
    "Simulator",
    "largest_product",
    "run_program",
    "scalar_opcodes",
]
