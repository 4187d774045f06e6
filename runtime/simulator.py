"""The pentary simulator: runs a :class:`~pcc.backend.program.Program` bit-exactly and counts what it did.

The ISA's definition is the plain executor of ``runtime/isa_ref.py`` (one rule per instruction of the table in
``pcc/isa.py``); this simulator is the fast implementation tested against it: the same machine state after every
run, the same faults (memory access out of range, invalid instruction, stack overflow, a QUANT step <= 0, running
past the step, cycle or time budget) as a :class:`~pcc.diagnostics.PccError` that names the instruction, its text
address and its source line (``runtime/faults.py`` words them for both).

Speed
-----
Scalar code is translated one basic block at a time, when first reached, into a Python function
(``runtime/translate.py``); tensor instructions are closures built once per instruction with their field values
bound (``runtime/tensor.py``: DMA in ``runtime/dma.py``, products in ``runtime/products.py``, the vector unit in
``runtime/vector.py``). The driver loop does, per block, one dictionary lookup, one subtraction from a counter that
holds both the step and the cycle budget (see :meth:`Simulator.run`) and one call; the budgets (and the clock, for
a timeout, every ``CHECK_CYCLES`` cycles) are looked at only when a block would use up the counter, and then the
block runs up to the instruction that would pass one.

Counting
--------
The cycle cost of every instruction depends only on its fields (``isa.cycles``), so the simulator counts block
executions (and the cycles of a run, ``cycles``) and the profiler (``runtime/profile.py``) multiplies by static
per-instruction costs. The only data-dependent statistics, the zero weights a MAC instruction met, are accumulated
by the tensor closures. With ``trace=True`` the driver also records the sequence of executed blocks, from which
``runtime/trace.py`` rebuilds the timeline.
"""

from __future__ import annotations

import time
from array import array
from collections.abc import Callable, Mapping

import numpy as np

from pcc import isa, limits
from pcc.backend.program import Program
from pcc.diagnostics import PccError
from pcc.isa import DEFAULT_CONFIG, MachineConfig, Op
from pcc.runtime import boundary, effects, faults
from pcc.runtime.faults import Fault, invalid_reason
from pcc.runtime.isa_ref import DEFAULT_MAX_CYCLES, DEFAULT_MAX_STEPS
from pcc.runtime.translate import MAX_BLOCK, Block, BlockGen, scalar_opcodes

# How MATMUL, MATVEC and CONV compute their integer products (all exact, the results are the same):
#   auto  - int8 when torch is installed, its int8 kernel beats float64 BLAS on this CPU (intgemm.faster: not on
#           CPUs without int8 dot-product instructions) and the program has a product of at least
#           intgemm.MIN_MACS multiply-accumulates (where the int8 kernel pays for its fixed costs), else float;
#   int8  - int8 GEMM (runtime/intgemm.py) on balanced base-256 digits of the activations, for every product
#           but grouped CONVs (an error if torch is missing);
#   float - float64 BLAS where the operand bounds make every sum exact, int64 otherwise.
GEMM_CHOICES = ("auto", "int8", "float")
# The driver loop looks at the clock (for a timeout) each time the run has done this many more cycles: between two
# looks the simulator runs for a fraction of a second of real time whatever the instructions.
CHECK_CYCLES = 1 << 14
# A block's budget charge is ``cycles << STEP_BITS | steps`` (see Simulator.run): with CHECK_CYCLES below
# 2**(30 - STEP_BITS) the driver loop's counter stays a one-digit Python int for scalar code (cheaper arithmetic).
STEP_BITS = 15
STEP_MASK = (1 << STEP_BITS) - 1  # the steps field of a block's budget charge


def _spent(left: int, arm: tuple[int, int, int]) -> tuple[int, int]:
    """The steps and cycles of the run, from the driver loop's counter and its allowance (see Simulator.run)."""
    a, steps0, cycles0 = arm
    steps = -left & STEP_MASK
    return steps0 + steps, cycles0 + a - ((left + steps) >> STEP_BITS)


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
        from pcc.runtime import intgemm, kernels, products, tensor  # local: only a simulator needs the engines

        if gemm not in GEMM_CHOICES:
            raise PccError(f"gemm must be one of {', '.join(GEMM_CHOICES)}, got {gemm!r}")
        if gemm == "int8" and not intgemm.available():
            raise PccError(f"gemm 'int8' is not available: {intgemm.unavailable_reason()}")
        if fused and not kernels.available():
            raise PccError("fused kernels are not available: numba is not installed (pip install 'pcc[fast]')")
        self.gemm = gemm  # how MATMUL, MATVEC and CONV multiply: see GEMM_CHOICES

        if config is DEFAULT_CONFIG and program.machine:  # the machine the program was compiled for
            config = program.config
        self.program = program
        self.config = config
        n = len(program.instructions)
        for size in ("dram_words", "a_spad_words", "c_spad_words"):  # checked before allocating (a file sets them)
            limits.check_elements(getattr(config, size), 8, f"the machine's {size}")
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
        self.cycles = 0  # cycles of this reset's run (isa.cycles of every instruction executed)
        self.halted = False
        self.runs = 0
        # What reset must clear: [lowest, highest] main-memory word written (data, inputs, stores, DMA), and
        # per scratchpad the union of the static write extents of the tensor instructions built so far.
        self._dirty: list[int] = [config.dram_words, -1]
        self._spad_dirty: dict[str, list[int]] = {k: [1 << 62, -1] for k in "AWC"}
        # the lazy reset (reset(lazy=True)): the plan (False until computed), whether the last run went from a reset
        # to HALT, whether no run has started since the reset, and the words it left uncleared per space
        self._plan: dict[str, effects.Words] | None | bool = False
        self._clean = False
        self._fresh = False
        self._by_runner = False
        self._skipped: dict[str, effects.Words] | None = None
        self._pending: effects.Words | None = None  # the inputs' words the lazy reset left, until written
        self._path_effects: list | None | bool = False  # effects.path of the program (False until computed)
        # values left out of A (elide, forwarded): instruction index -> (index after which the copy holds them,
        # index at which the last dies, their A ranges, the copy's main-memory address less the A address)
        self._elided: dict[int, tuple[int, int, tuple[tuple[int, int], ...], int]] = {}
        self._forwards: dict[int, int] | None = None  # TLOAD index -> its reader's index (None until computed)
        self._sources: dict[int, int] = {}  # that reader's index -> the main-memory word its input starts at
        self._parts: dict[int, tuple[int, int]] = {}  # a forwarded TLOAD's index -> the A words it still loads
        self._no_forward = False  # a run began between a forwarded TLOAD and its reader with A unlike the source
        self._inputs = effects.Words()
        for d in program.inputs:
            if 0 <= d.addr and d.addr + d.size <= config.dram_words:
                self._inputs.add(d.addr, d.addr + d.size)
        self._keep_mem = effects.Words()
        self._zero_spads: dict[str, effects.Words] = {}
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
            gemm == "auto" and self._largest_product() >= intgemm.MIN_MACS and intgemm.faster()
        )
        # the compiled loops of runtime/kernels.py (whole small tensor instructions, and the elementwise and digit
        # work of large ones): by default wherever numba is installed (the ``fast`` extra)
        self.fused = kernels.available() if fused is None else fused
        # small CONV, MATMUL and MATVEC as direct compiled loops, unless the int8 engine was asked for by name
        self.direct_products = self.fused and gemm != "int8"
        # BLAS products (the float engine's, and the float32 CONVs of either engine) run on one thread, as the int8
        # ones do (intgemm.THREADS): on a loaded two-core machine BLAS's second thread made ResNet-18's products
        # several times slower
        self._blas = []
        if self._largest_product() > products._DIRECT_MACS:
            from pcc.runtime.tensor_base import blas_controls

            self._blas = blas_controls()
        self._addr_index: dict[int, int] = {ins.addr: i for i, ins in enumerate(program.instructions)}
        self._valid_pcs = frozenset(self._addr_index)
        self._blocks: dict[int, tuple[Callable[[], int], int]] = {}  # pc -> (fn, charge << STEP_BITS | steps)
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
        faults.check_data(self.program, self.mem.size)

    def reset(self, full: bool = False, *, lazy: bool = False) -> None:
        """Zero the machine, load the data segments, SP = top of memory, PC = 0. Counts are kept.

        Only what the machine and :meth:`write_memory` wrote is cleared, and only the data words among it are
        loaded again (a run rarely touches more than a small part of the 64 MB of main memory, and seldom its own
        weights); after writing into the arrays directly, pass ``full=True``.

        ``lazy=True`` (for a caller that writes the inputs and runs from PC 0 next, as :func:`run_program` does)
        leaves uncleared the words a straight-line program writes before it reads them, where the last run was
        such a run of the program from a lazy reset to its HALT (``runtime/effects.py``; so not one after a reset
        that the arrays were then written into directly, whose words the next reset clears): the run that follows
        overwrites them before they matter, and ends in the state it ends in from a cleared machine. Should it
        fault, the ones it had not yet written are cleared then; should the next run start elsewhere, all are
        cleared first.
        """
        if self._skipped is not None or self._pending is not None:  # a lazy reset and no run since
            self.settle()
        plan = self._reset_plan() if lazy and not full and self._clean else None
        skipped: dict[str, effects.Words] = {}
        lo, hi = self._dirty
        mem = self.mem
        if full:
            mem[:] = 0
            lo, hi = 0, mem.size - 1
        elif hi >= lo:
            self._clear(mem, lo, hi + 1, None if plan is None else self._keep_mem, None, skipped, "M")
        for a, end, words in self._segments:
            if a <= hi and end > lo:  # the written words of this segment, as the program has them
                x, y = max(a, lo), min(end, hi + 1)
                mem[x:y] = words[x - a : y - a]
        for (arr, (slo, shi)), name in zip(self._spads, "AWC", strict=True):
            if full:
                arr[:] = 0
            elif shi >= slo:
                keep, zero = (None, None) if plan is None else (plan[name], self._zero_spads[name])
                self._clear(arr, slo, shi + 1, keep, zero, skipped, name)
        self._skipped = skipped or None
        # the inputs' words among them: the caller writes them next (Simulator.touch takes them out of both sets)
        self._pending = None
        if "M" in skipped:
            pending = effects.Words()
            for a, b in self._inputs.ranges():
                for x, y in skipped["M"].within(a, b):
                    pending.add(x, y)
            self._pending = pending or None
        self._fresh = True
        self._by_runner = lazy  # a caller that writes only the inputs before the run (no scratchpad presets)
        self._clean = False
        self._dirty[:] = [mem.size, -1]
        self.regs[:] = self._regs0
        self._flags[:] = [None, 0, 0, 0]
        self._acc[0] = 0
        self.pc = 0
        self.steps = 0
        self.cycles = 0
        self.halted = False

    @staticmethod
    def _clear(
        arr: np.ndarray,
        lo: int,
        hi: int,
        keep: effects.Words | None,
        zero: effects.Words | None,
        skipped: dict,
        name: str,
    ) -> None:
        """Zero ``arr[lo:hi]`` but for the words of ``keep`` (noted in ``skipped[name]``), or where ``zero`` is
        given, only its words there (the rest is zero already)."""
        if keep is None:
            arr[lo:hi] = 0
            return
        for a, b in keep.missing(lo, hi) if zero is None else zero.within(lo, hi):
            arr[a:b] = 0
        kept = effects.Words()
        for a, b in keep.within(lo, hi):
            kept.add(a, b)
        if kept:
            skipped[name] = kept

    def _reset_plan(self) -> dict[str, effects.Words] | None:
        """:func:`effects.reset_plan` of the program (data segments excluded: reset loads them), computed once."""
        if self._plan is False:
            plan = None
            instrs = self.program.instructions
            if instrs and instrs[0].addr == 0 and not any(self._invalid):
                plan = effects.reset_plan(instrs)
            if plan is not None:
                segs = effects.Words()
                for a, end, _words in self._segments:
                    segs.add(a, end)
                plan["M"] = plan["M"].minus(segs)
                # and the inputs' words (but for data: reset loads those), which the caller writes after the reset
                self._keep_mem = self._inputs.minus(segs)
                for r in plan["M"].ranges():
                    self._keep_mem.add(*r)
                # a scratchpad's words the path writes and reads first: the only ones a lazy reset zeroes (only the
                # path's instructions wrote the scratchpads since the last reset, which left every other word zero)
                written = effects.written_before(instrs, len(self._path() or ()))
                self._zero_spads = {k: written[k].minus(plan[k]) for k in "AWC"}
            self._plan = plan
        return self._plan

    def _path(self) -> list | None:
        """:func:`effects.path` of the program (None unless it is one straight-line path of valid instructions from
        address 0), computed once."""
        if self._path_effects is False:
            instrs = self.program.instructions
            ok = instrs and instrs[0].addr == 0 and not any(self._invalid)
            self._path_effects = effects.path(instrs) if ok else None
        return self._path_effects

    def elide(self, e: int, t: int) -> bool:
        """Whether the fused pass of instructions ``e`` (a REQUANTC) .. ``t`` (the TSTORE of its destination, one
        contiguous range) may leave A unwritten and write only main memory: where the path overwrites that range
        of A after ``t`` before reading it (:func:`effects.dead_after`). A fault before then puts the stored
        values into A (:meth:`_restore`), so the state is the one the instructions leave."""
        path = self._path()
        ins, st = self.program.instructions[e], self.program.instructions[t]
        if path is None or ins.op != isa.Op.REQUANTC or st.op != isa.Op.TSTORE or st.args[0] != 0:
            return False
        lo, n = ins.args[0], ins.args[2] * ins.args[3]
        k = effects.dead_after(path, t, lo, lo + n, st.args[1])
        if k is None:
            return False
        self._elided[e] = (t, k, ((lo, lo + n),), st.args[1] - lo)
        return True

    def _forwarding(self) -> dict[int, int]:
        """The TLOADs left unexecuted, each with the CONV or POOL that reads its source in main memory instead: a
        TLOAD of one contiguous range (P0 base, inside main memory and A) whose first reader is one reading inside it,
        nothing writing the range or its source before, and whose values then die unread (the copy intact until
        then): :func:`effects.first_reader`, :func:`effects.dead_after`. Computed once, before any closure that
        depends on it."""
        if self._forwards is None:
            self._forwards, self._sources = {}, {}
            path = self._path() if self.fused and not self._no_forward else None
            instrs = self.program.instructions
            for t, ins in enumerate(instrs[: len(path or ())]):
                if ins.op != isa.Op.TLOAD:
                    continue
                lo, rb, off, rows, cols, stride = ins.args
                n = rows * cols
                if rb != 0 or n == 0 or not (rows == 1 or stride == cols) or lo < 0 or lo + n > self.spad_a.size:
                    continue
                if off < 0 or off + n > self.mem.size:
                    continue
                c = effects.first_reader(path, t, lo, lo + n, off)
                reader = None if c is None else _READS_A.get(instrs[c].op)
                if reader is None:
                    continue
                x, nx = reader(instrs[c].args)
                if not (lo <= x and x + nx <= lo + n) or c in self._sources:
                    continue
                dead, k = effects.dead_words(path, c, lo, lo + n, off)
                must = effects.Words()
                must.add(lo, lo + n)
                must = must.minus(dead)
                if k < 0 or len(must.ranges()) > 1:  # nothing dies, or the rest is not one range
                    continue
                self._forwards[t] = c
                self._sources[c] = off + x - lo
                self._parts[t] = must.ranges()[0] if must else (lo, lo)
                self._elided[t] = (t, k, tuple(dead.ranges()), off - lo)
        return self._forwards

    def forwarded(self, i: int) -> tuple[int, int] | None:
        """For a forwarded TLOAD ``i`` (:meth:`_forwarding`), the A words ``[lo, hi)`` it still loads (those its
        reader's successors read, or alive at the end; empty: it is left unexecuted); None where it is not
        forwarded."""
        return self._parts.get(i) if i in self._forwarding() else None

    def source(self, i: int) -> int | None:
        """The main-memory word instruction ``i`` (a CONV or a POOL) reads its input from (a forwarded TLOAD's
        source), or None: A."""
        self._forwarding()
        return self._sources.get(i)

    def reads_from(self, i: int, a: int) -> tuple[np.ndarray, int]:
        """The array and start from which instruction ``i`` reads its input at A[a]: main memory at a forwarded
        TLOAD's source (:meth:`source`), else A itself."""
        src = self.source(i)
        return (self.spad_a, a) if src is None else (self.mem, src)

    def _check_start(self, start: int) -> None:
        """Before a run that begins at instruction ``start`` > 0: where that is between a forwarded TLOAD and its
        reader and A does not hold the TLOAD's source there (the PC was set, or A written), forwarding ends: the
        translated code is dropped and built again without it."""
        instrs = self.program.instructions
        for t, c in self._forwarding().items():
            lo, _rb, b, rows, cols, _stride = instrs[t].args
            n = rows * cols
            if t < start <= c and not np.array_equal(self.spad_a[lo : lo + n], self.mem[b : b + n]):
                self._no_forward = True
                for t2 in self._forwards:
                    del self._elided[t2]
                self._forwards, self._sources, self._parts = None, {}, {}
                self._blocks.clear()
                self._tensor_fns.clear()
                self._runs.clear()
                self._load_runs.clear()
                return

    def _restore(self, start: int, index: int) -> None:
        """After a fault at instruction ``index`` of a run that began at instruction ``start``: put back into A the
        values of each elided REQUANTC (:meth:`elide`) of the run whose store ran before the fault and whose values
        were still to be overwritten, from their copy in main memory, where no instruction since wrote them."""
        for e, (t, k, ranges, delta) in self._elided.items():
            if start <= e and t < index <= k:
                since = effects.written_before(self.program.instructions, index, t + 1)["A"]
                for lo, hi in ranges:
                    for a, z in since.missing(lo, hi):
                        self.spad_a[a:z] = self.mem[a + delta : z + delta]

    def _clear_pending(self) -> None:
        """Clear the inputs' words the last lazy reset left and the caller did not write, as reset would have."""
        if self._pending is not None:
            for a, b in self._pending.ranges():
                self.mem[a:b] = 0
            self._pending = None

    def settle(self) -> None:
        """Clear every word the last lazy reset left, as a reset would have: for a caller of ``reset(lazy=True)``
        that does not run the program after all."""
        self._clear_pending()
        self._unskip(None)

    def _unskip(self, index: int | None) -> None:
        """Clear the words the last lazy reset left that the instructions before ``index`` (of a run from PC 0) did
        not write; all of them where ``index`` is None."""
        skipped, self._skipped = self._skipped, None
        if not skipped:
            return
        written = effects.written_before(self.program.instructions, index) if index is not None else None
        arrays = {"M": self.mem, "A": self.spad_a, "W": self.spad_w, "C": self.spad_c}
        for name, words in skipped.items():
            for lo, hi in words.ranges():
                for a, b in [(lo, hi)] if written is None else written[name].missing(lo, hi):
                    arrays[name][a:b] = 0

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
    def run(
        self,
        max_steps: int = DEFAULT_MAX_STEPS,
        *,
        max_cycles: int = DEFAULT_MAX_CYCLES,
        timeout: float | None = None,
    ) -> None:
        """Run from the current PC until HALT. ``max_steps`` bounds the instructions and ``max_cycles`` the cycles
        of this reset's run (an instruction that would take it past either is not executed); ``timeout`` bounds the
        seconds of this call (the clock is read every ``CHECK_CYCLES`` cycles).

        Raises PccError on a fault; the state is left as the fault found it (registers written back).

        The driver loop keeps both budgets in one integer: each block entry holds ``charge << STEP_BITS |
        steps`` (its charge is its cycles, at least its steps), and ``left`` starts at ``A << STEP_BITS`` for an
        allowance ``A`` of cycles no larger than what is left of either budget, so after blocks of ``S`` steps and
        ``C`` cycles it is ``(A - C) << STEP_BITS - S``: negative once ``C`` reaches ``A`` (every cycle is at least a
        step, so the step budget cannot pass first), and both sums can be read back from it (:func:`_spent`).
        """
        if not self.program.instructions:
            raise PccError("the program has no instructions", None)
        if not self._blas:
            self._drive(max_steps, max_cycles, timeout)
            return
        threads = [c.get_num_threads() for c in self._blas]
        for c in self._blas:
            c.set_num_threads(1)
        try:
            self._drive(max_steps, max_cycles, timeout)
        finally:
            for c, n in zip(self._blas, threads, strict=True):
                c.set_num_threads(n)

    def _drive(self, max_steps: int, max_cycles: int, timeout: float | None) -> None:
        """The driver loop of :meth:`run`."""
        limits = (max_steps, max_cycles, timeout, None if timeout is None else time.monotonic() + timeout)
        fresh = self._fresh and self.pc == 0 and self.steps == 0  # a run of the program from a reset
        clean = fresh and self._by_runner  # ... that run_program began: what ends then is all the path wrote
        start = self._addr_index.get(self.pc, len(self.program.instructions))
        if start > 0 and not self._no_forward:
            self._check_start(start)
        self._fresh = self._clean = False
        self._clear_pending()
        if self._skipped is not None and not fresh:
            self._unskip(None)
        arm = self._arm(self.steps, self.cycles, max_steps, max_cycles)  # (A, steps, cycles) when left was set
        left = arm[0] << STEP_BITS
        pc = self.pc
        blocks = self._blocks
        get = blocks.get
        seq = self.block_trace
        p = 0
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
                    fn, p = ent
                    left -= p
                    if left < 0:
                        left, arm = self._budget(pc, left + p, arm, limits)
                    pc = fn()
            else:
                append = seq.append
                while True:
                    ent = get(pc)
                    if ent is None:
                        if pc < 0:
                            break
                        ent = self._translate(pc)
                    fn, p = ent
                    left -= p
                    if left < 0:
                        left, arm = self._budget(pc, left + p, arm, limits)
                    append(pc)
                    pc = fn()
        except Fault as flt:
            # left includes the block that was running (or about to run, for a budget fault): take it out again
            steps, cycles = _spent(left + p, arm)
            start = self._addr_index.get(pc)
            if start is not None and flt.index >= start:
                ran = flt.index - start + flt.completed
                steps += ran
                cycles += sum(self.cost[start : start + ran])
            self.steps, self.cycles = steps, cycles
            self.pc = self.program.instructions[flt.index].addr
            if self._skipped is not None:
                self._unskip(flt.index)
            if self._elided:
                self._restore(start, flt.index)
            raise faults.fault_error(self.program, flt.index, flt.message, steps) from None
        self.steps, self.cycles = _spent(left, arm)
        self.pc = -pc - 1
        self.halted = True
        self._skipped = None
        self._clean = clean
        self.runs += 1

    @staticmethod
    def _arm(steps: int, cycles: int, max_steps: int, max_cycles: int) -> tuple[int, int, int]:
        """The cycle allowance until the next look at the budgets (see :meth:`run`), with the counts it starts at."""
        return max(0, min(max_cycles - cycles, max_steps - steps, CHECK_CYCLES)), steps, cycles

    def _budget(self, pc: int, left: int, arm: tuple[int, int, int], limits: tuple) -> tuple[int, tuple]:
        """The driver loop's slow path, before the block at ``pc`` runs, when it would use up the allowance: if an
        instruction of the block would pass the step or the cycle limit, run those before it and fault there; else
        read the clock (for the timeout) and return the counter and allowance with the block charged."""
        max_steps, max_cycles, timeout, deadline = limits
        steps, cycles = _spent(left, arm)  # of this run, before the block
        i0 = self._addr_index[pc]
        p = self._blocks[pc][1]
        n, c = p & STEP_MASK, p >> STEP_BITS
        if steps + n > max_steps or cycles + c > max_cycles:
            k, used = 0, cycles
            while k < n and steps + k < max_steps and used + self.cost[i0 + k] <= max_cycles:
                used += self.cost[i0 + k]
                k += 1
            if k < n:
                if k:
                    self._build(i0, k)()  # a fault among these comes first
                message = faults.step_limit(max_steps) if steps + k >= max_steps else faults.cycle_limit(max_cycles)
                raise Fault(i0 + k, message)
        if deadline is not None and time.monotonic() > deadline:
            raise Fault(i0, faults.time_limit(timeout))
        arm = self._arm(steps, cycles, max_steps, max_cycles)
        return (arm[0] << STEP_BITS) - p, arm

    # ---- translation ---------------------------------------------------------------------------------
    def _translate(self, pc: int) -> tuple[Callable[[], int], int]:
        i0 = self._addr_index[pc]
        fn, length = self._build(i0, MAX_BLOCK, keep=True)
        # the budget charge (see run): the block's cycles, at least its steps (more only where it ends at an invalid
        # instruction, which faults and is then counted exactly)
        ent = (fn, max(sum(self.cost[i0 : i0 + length]), length) << STEP_BITS | length)
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
        gen = BlockGen(self, i0, limit)
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
        if self._skipped is not None and "M" in self._skipped:  # written: what a cleared machine would hold then
            self._skipped["M"].remove(lo, hi + 1)
            if self._pending is not None:
                self._pending.remove(lo, hi + 1)
                self._pending = self._pending or None

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


# the instructions that may read a forwarded TLOAD's source in main memory: opcode -> (A start, count) of the input
_READS_A: dict[int, Callable[[tuple[int, ...]], tuple[int, int]]] = {
    isa.Op.CONV: lambda a: (a[1], a[3] * a[4] * a[5]),
    isa.Op.POOL: lambda a: (a[1], a[2] * a[3] * a[4]),
}


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
    max_cycles: int = DEFAULT_MAX_CYCLES,
    timeout: float | None = None,
    quantized: bool = False,
    simulator: Simulator | None = None,
    config: MachineConfig = DEFAULT_CONFIG,
) -> dict[str, np.ndarray]:
    """Run ``program`` on ``inputs`` (name -> array) and return its outputs (name -> array).

    Real-valued inputs are quantised at the boundary as the program's ``.input`` declarations say
    (``q = clip(round(x / scale), +-word_max(pents))``, rounding to nearest with ties away from zero, as
    ``pent_reference.quantize_input``) and outputs are dequantised
    (``element * scale``, float32), so the results compare directly with any float runtime. With
    ``quantized=True`` inputs are the stored integers and outputs are returned as int64 integers.

    A batch (the declared first axis is 1 and the arrays have B on it) runs sample after sample on one simulator
    and the outputs are concatenated. ``max_steps``, ``max_cycles`` and ``timeout`` (seconds) bound each sample's
    run (:meth:`Simulator.run`). Pass ``simulator`` to read its profile afterwards.
    """
    sim = simulator if simulator is not None else Simulator(program, config)
    if not quantized and boundary.write_inputs(sim, program, inputs):  # one sample of real arrays: the short way
        sim.run(max_steps, max_cycles=max_cycles, timeout=timeout)
        return {d.name: boundary.read_output(sim, d) for d in program.outputs}
    samples = boundary.prepare_inputs(program, inputs, quantized=quantized)
    results: list[dict[str, np.ndarray]] = []
    for sample in samples:
        sim.reset(lazy=True)
        for decl, words in sample:
            sim.write_memory(decl.addr, words)
        sim.run(max_steps, max_cycles=max_cycles, timeout=timeout)
        results.append({d.name: boundary.read_output(sim, d, quantized=quantized) for d in program.outputs})
    return boundary.stack_outputs(program, results, batched=len(samples) > 1)


__all__ = [
    "DEFAULT_MAX_CYCLES",
    "DEFAULT_MAX_STEPS",
    "GEMM_CHOICES",
    "Fault",
    "Simulator",
    "largest_product",
    "run_program",
    "scalar_opcodes",
]
