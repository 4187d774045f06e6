"""What each instruction reads and writes (``runtime/effects.py``), checked against the ISA's plain executor, and
the lazy reset it gives the simulator (``Simulator.reset(lazy=True)``), checked against a cleared machine.

* every opcode has a rule (tests/core/test_rules.py);
* random tensor instructions on random machine states: the executor changes no word outside the rule's writes,
  and with every word outside the rule's reads changed beforehand, it leaves the same values in the writes;
* a straight-line program run again and again through ``run_program`` on one simulator (whose resets then leave
  the words the program writes before reading uncleared) ends each run in exactly the state of a fresh
  simulator's run, and so does a run stopped by its step budget after any number of instructions.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from program_gen import machine_setup, memory_image, tensor_instruction
from runtime_helpers import outcome

from pcc import isa
from pcc.backend.assembler import assemble
from pcc.runtime import effects, isa_ref
from pcc.runtime.isa_state import MachineFault
from pcc.runtime.simulator import Simulator, run_program

WINDOW = 1024  # the generated instructions stay within the first words of every space
_OPS = ["TLOAD", "TLOADC", "TSTORE", "TSTOREC", "TLOADW", "CONV", "MATMUL", "MATVEC", "POOL", "REQUANTC"]
_OPS += ["REQUANT", "EADD", "TLUT", "TRELU", "TCLAMP"]


def _instruction(data: st.DataObject) -> str:
    d = data.draw
    kind = d(st.sampled_from(["gen"] * 8 + ["EMUL", "AMATMUL"]))
    small = st.integers(0, 120)
    if kind == "EMUL":
        return (
            f"EMUL {d(small)}, {d(small)}, {d(small)}, {d(st.integers(0, 20))}, {d(st.integers(0, isa.MULT_MAX))}, "
            f"{d(st.integers(0, 40))}, {d(st.integers(1, 16))}"
        )
    if kind == "AMATMUL":
        return (
            f"AMATMUL {d(small)}, {d(small)}, {d(small)}, {d(st.integers(1, 3))}, {d(st.integers(1, 4))}, "
            f"{d(st.integers(1, 6))}, {d(st.integers(0, 1))}, {d(st.integers(1, 4))}, {d(st.integers(0, 1))}"
        )
    return tensor_instruction(data, _OPS).replace("[P1 +", "[P0 +")  # P0: addresses the fields give


def _state(rng: np.random.Generator, prog) -> isa_ref.Machine:  # noqa: ANN001
    m = isa_ref.Machine(prog)
    m.mem[:400] = memory_image(rng)
    for key, values in machine_setup(rng).items():
        arr = {"A": m.A, "W": m.W, "C": m.C}[key[0]]
        arr[: values.size] = values
    return m


def _windows(m: isa_ref.Machine) -> dict[str, np.ndarray]:
    return {"M": m.mem[:WINDOW].copy(), "A": m.A[:WINDOW].copy(), "W": m.W[:WINDOW].copy(), "C": m.C[:WINDOW].copy()}


def _mask(ranges: tuple, space: str) -> np.ndarray:
    mask = np.zeros(WINDOW, dtype=bool)
    for s, lo, hi in ranges:
        if s == space:
            assert 0 <= lo <= hi <= WINDOW
            mask[lo:hi] = True
    return mask


@given(st.data(), st.integers(0, 2**32 - 1))
@settings(max_examples=400, deadline=None)
def test_effects_bound_what_the_executor_reads_and_writes(data: st.DataObject, seed: int) -> None:
    prog = assemble(f".text\n    {_instruction(data)}\n    HALT\n", "effects.pasm")
    ins = prog.instructions[0]
    reads, writes = effects.EFFECTS[int(ins.op)](ins.args)
    rng = np.random.default_rng(seed)
    m = _state(rng, prog)
    before = _windows(m)
    try:
        isa_ref.execute(m, ins.op, *ins.args)
    except MachineFault:  # a fault writes nothing
        for s, arr in _windows(m).items():
            assert (arr == before[s]).all(), s
        return
    after = _windows(m)
    for s in effects.SPACES:
        changed = after[s] != before[s]
        assert not (changed & ~_mask(writes, s)).any(), f"{ins}: writes {s} outside its rule's writes"
    # every word outside the reads changed (within its space's range of values): the same values in the writes
    m2 = _state(rng, prog)
    for s, arr in zip(effects.SPACES, (m2.mem, m2.A, m2.W, m2.C), strict=True):
        keep = _mask(reads, s)
        if s == "W":
            other = rng.integers(-2, 3, WINDOW)
        elif s == "M":
            other = rng.integers(-isa.WORD_MAX, isa.WORD_MAX, WINDOW, endpoint=True)
        else:
            other = rng.integers(-(10**6), 10**6, WINDOW)
        arr[:WINDOW] = np.where(keep, before[s], other)
    isa_ref.execute(m2, ins.op, *ins.args)
    again = _windows(m2)
    for s in effects.SPACES:
        w = _mask(writes, s)
        assert (again[s][w] == after[s][w]).all(), f"{ins}: writes {s} depend on words outside its rule's reads"


def test_words_sets() -> None:
    w = effects.Words()
    for lo, hi in [(10, 20), (30, 40), (20, 25), (50, 50), (5, 8), (39, 45)]:
        w.add(lo, hi)
    assert w.ranges() == [(5, 8), (10, 25), (30, 45)]
    assert w.missing(0, 50) == [(0, 5), (8, 10), (25, 30), (45, 50)]
    assert w.within(7, 31) == [(7, 8), (10, 25), (30, 31)]
    other = effects.Words()
    other.add(12, 32)
    assert w.minus(other).ranges() == [(5, 8), (10, 12), (32, 45)]


# Words the program writes before it reads (mem 100..115 and y, A 0..31, 40..55, 60..67, C 0..11), and words it
# reads first: A 70..73 (added to), mem 200..207 (then overwritten: a run that found the last run's values there
# would add them) and the input (apart from the data, whose words a reset loads again).
_PROGRAM = """.data
y: .zero 8
q: .word 3, 5, 1, 2
.input x, shape=[16], pents=8, scale=1.0, addr=500
.output y, shape=[8], pents=8, scale=1.0, addr=y
.text
    TLOAD 0, [P0 + 500], 1, 16, 16
    TSTORE [P0 + 100], 0, 2, 8, 8
    TLOAD 16, [P0 + 100], 1, 16, 16
    EADD 70, 70, 16, 4, 1, 0, 1, 0, 8
    TLOAD 40, [P0 + 200], 1, 8, 8
    TSTORE [P0 + 200], 16, 1, 8, 8
    EADD 48, 16, 40, 8, 1, 0, 1, 0, 8
    TLOADC 0, [P0 + q], 1, 4, 4
    TLOADC 4, [P0 + 100], 4, 2, 2
    REQUANTC 60, 4, 4, 2, 0, 8
    TSTORE [P0 + y], 48, 1, 8, 8
    HALT
"""


def _same_state(a: Simulator, b: Simulator) -> None:
    assert (a.mem == b.mem).all() and (a.spad_a == b.spad_a).all()
    assert (a.spad_w == b.spad_w).all() and (a.spad_c == b.spad_c).all()
    assert a.regs == b.regs and a.pc == b.pc and a.steps == b.steps and a.cycles == b.cycles


def test_lazy_reset_ends_each_run_in_a_cleared_machines_state() -> None:
    prog = assemble(_PROGRAM, "lazy.pasm")
    plan = effects.reset_plan(prog.instructions)
    assert plan is not None
    assert plan["M"].ranges() == sorted([(100, 116), (prog.outputs[0].addr, prog.outputs[0].addr + 8)])
    assert plan["A"].ranges() == [(0, 32), (40, 56), (60, 68)] and plan["C"].ranges() == [(0, 12)]
    rng = np.random.default_rng(5)
    sim = Simulator(prog)
    for _ in range(4):
        x = rng.integers(-1000, 1000, 16).astype(np.float64)
        got = run_program(prog, {"x": x}, simulator=sim)
        fresh = Simulator(prog)
        want = run_program(prog, {"x": x}, simulator=fresh)
        assert (got["y"] == want["y"]).all()
        assert (got["y"] == x[:8]).all()  # mem 200..207 read as zero on every run (else: plus the last x)
        _same_state(sim, fresh)
    assert sim._skipped is None  # a run to HALT wrote every word the reset left


def test_lazy_reset_state_at_a_budget_fault_is_a_cleared_machines() -> None:
    prog = assemble(_PROGRAM, "lazy.pasm")
    rng = np.random.default_rng(6)
    sim = Simulator(prog)
    x0 = rng.integers(-1000, 1000, 16).astype(np.float64)
    for k in range(len(prog.instructions)):
        run_program(prog, {"x": x0}, simulator=sim)  # a whole run: the next reset is lazy
        x = rng.integers(-1000, 1000, 16)
        stops = []
        for s, lazy in ((sim, True), (fresh := Simulator(prog), False)):
            s.reset(lazy=lazy)
            if k % 2:  # else the input stays as the reset leaves it: cleared
                s.write_memory(prog.inputs[0].addr, x[: 4 + k])
            stops.append(outcome(lambda s=s, k=k: s.run(max_steps=k)))
        assert stops[0] == stops[1] and stops[0] is not None and "step" in stops[0][0]
        assert sim._skipped is None  # cleared at the fault: what the instructions before it did not write
        _same_state(sim, fresh)


def test_no_reset_plan_where_the_path_depends_on_the_state() -> None:
    for text in (
        ".text\n    TLOAD 0, [P1 + 0], 1, 4, 4\n    HALT\n",  # an address in a register
        ".text\n    BEQ P1, 2\n    TRELU 0, 0, 4\n    HALT\n",  # a branch
        ".text\n    TRELU 0, 0, 4\n",  # no HALT
    ):
        assert effects.reset_plan(assemble(text, "p.pasm").instructions) is None


def test_a_lazy_reset_without_a_run_settles_to_a_cleared_machine() -> None:
    prog = assemble(_PROGRAM, "lazy.pasm")
    sim, fresh = Simulator(prog), Simulator(prog)
    run_program(prog, {"x": np.arange(16.0)}, simulator=sim)
    sim.reset(lazy=True)
    assert sim._skipped is not None and sim._pending is not None  # the words it left, the input's among them
    sim.reset(lazy=True)  # again, with no run between: the first one's words are cleared first
    sim.settle()
    _same_state(sim, fresh)
    run_program(prog, {"x": np.arange(16.0)}, simulator=sim)
    sim.reset(lazy=True)
    sim.settle()
    _same_state(sim, fresh)


_DEAD = """.text
    REQUANTC 0, 0, 2, 4, 8, 8
    TSTORE [P0 + 100], 0, 2, 4, 4
    {between}
    TLOAD 0, [P0 + 200], 1, 6, 6
    TLOAD 6, [P0 + 300], 1, 2, 2
    HALT
"""


def test_dead_after_names_where_stored_values_die_in_a() -> None:
    """A[0..7], stored to mem 100..107 by instruction 1, dies at the TLOAD that overwrites its last words (unless a
    read of a word comes first, or the copy in main memory is overwritten before then)."""
    cases = {
        "NOP": 4,  # the two TLOADs cover 0..5 and 6..7
        "TRELU 20, 8, 4": 4,  # reads and writes apart from it
        "TRELU 20, 7, 1": None,  # reads A[7] first
        "TSTORE [P0 + 104], 20, 1, 2, 2": None,  # overwrites the copy before A[6..7] are overwritten
        "TSTORE [P0 + 90], 20, 1, 2, 2": 4,  # apart from the copy
    }
    for between, want in cases.items():
        path = effects.path(assemble(_DEAD.format(between=between), "d.pasm").instructions)
        assert path is not None
        assert effects.dead_after(path, 1, 0, 8, 100) == want, between


_FORWARD = """.data
x: .word 3, -1, 4, 1, -5, 9, 2, -6
y: .word 7, 7, 7, 7, 7, 7, 7, 7
w: .word 2
out: .zero 8
.text
    TLOADW 0, [P0 + w], 1
    TLOAD 0, [P0 + x], 1, 8, 8
    {reader}
    TLOAD 0, [P0 + y], 1, 8, 8
    {store}
    HALT
"""
_READERS = {  # the reader of TLOAD 1's values, the store of its result to out (word 17), the result from the start
    "CONV": (
        "CONV 0, 0, 0, 1, 8, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 1, 0",
        "TSTOREC [P0 + out], 0, 1, 8, 8",
        [6, -2, 8, 2, -10, 18, 4, -12],
    ),
    "POOL max": ("POOL 8, 0, 1, 8, 1, 1, 2, 1, 2, 0, 0, 0, 0, 0", "TSTORE [P0 + out], 8, 1, 4, 4", [3, 4, 9, 2]),
    "POOL avg": ("POOL 8, 0, 1, 8, 1, 1, 3, 1, 2, 0, 0, 0, 1, 1", "TSTORE [P0 + out], 8, 1, 4, 4", [2, 0, 2, -2]),
}


@pytest.mark.parametrize("reader", list(_READERS))
def test_a_forwarded_tload_gives_the_executors_state_from_any_start(reader: str) -> None:
    """TLOAD 1's values are read only by the CONV (POOL), then overwritten: the simulator leaves it unexecuted and
    the reader reads x in main memory. Run from the start, and from the reader with A not holding x (then A is
    read: zeros), the state is the executor's."""
    text, store, want = _READERS[reader]
    prog = assemble(_FORWARD.format(reader=text, store=store), "fwd.pasm")
    for start in (0, 2):
        sim, ref = Simulator(prog), isa_ref.Machine(prog)
        sim.pc = ref.pc = prog.instructions[start].addr
        sim.run()
        isa_ref.run(ref)
        assert (sim.mem[:40] == ref.mem[:40]).all() and (sim.spad_a[:16] == ref.A[:16]).all()
        assert (sim.spad_c[:16] == ref.C[:16]).all()
        assert sim.mem[17 : 17 + len(want)].tolist() == (want if start == 0 else [0] * len(want))
        assert (sim.forwarded(1) is not None) == (start == 0)  # begun at the reader with A unlike x: dropped
        assert (sim.source(2) is not None) == (start == 0)


_PARTIAL = """.data
x: .word 3, -1, 4, 1, -5, 9, 2, -6
y: .word 7, 7, 7, 7
w: .word 2
out: .zero 12
.text
    TLOADW 0, [P0 + w], 1
    TLOAD 0, [P0 + x], 1, 8, 8
    CONV 0, 0, 0, 1, 8, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 1, 0
    TLOAD 0, [P0 + y], 1, 4, 4
    TSTOREC [P0 + out], 0, 1, 8, 8
    TSTORE [P0 + 25], 2, 1, 4, 4
    HALT
"""


def test_a_forwarded_tload_loads_the_words_read_later() -> None:
    """TLOAD 1's words 0..3 die (TLOAD 3 overwrites them unread), words 4..7 are read by the last TSTORE: the TLOAD
    loads only those, the CONV reads x in main memory; stopped by the budget at every step, and run to HALT, the
    state is the executor's."""
    prog = assemble(_PARTIAL, "part.pasm")
    assert Simulator(prog).forwarded(1) == (4, 8)
    for steps in range(len(prog.instructions) + 1):
        sim, ref = Simulator(prog), isa_ref.Machine(prog)
        stop = outcome(lambda sim=sim, steps=steps: sim.run(steps))
        assert stop == outcome(lambda ref=ref, steps=steps: isa_ref.run(ref, steps)), steps
        assert (stop is None) == (steps == len(prog.instructions)), steps
        assert (sim.mem[:40] == ref.mem[:40]).all() and (sim.spad_a[:16] == ref.A[:16]).all(), steps
        assert (sim.spad_c[:16] == ref.C[:16]).all() and sim.steps == ref.steps, steps
    assert sim.mem[13:21].tolist() == [6, -2, 8, 2, -10, 18, 4, -12] and sim.mem[25:29].tolist() == [7, 7, -5, 9]


def test_a_run_after_presets_is_followed_by_a_whole_reset() -> None:
    """After a reset, words written into the scratchpads directly and a run, the next reset clears the static extents
    as ever (only a run that run_program began leaves nothing but the program's writes behind)."""
    prog = assemble(_PROGRAM, "lazy.pasm")
    sim = Simulator(prog)
    sim.reset()
    sim.spad_a[33] = 99  # inside A's written extent, a word the program never writes
    sim.run()
    run_program(prog, {"x": np.arange(16.0)}, simulator=sim)
    fresh = Simulator(prog)
    run_program(prog, {"x": np.arange(16.0)}, simulator=fresh)
    assert sim.spad_a[33] == 0
    _same_state(sim, fresh)


def test_many_rows_at_a_stride_stay_bounded() -> None:
    """A file sets the row counts: past effects.ROWS rows apart a load's reads are their bounding range and a
    store has no rule (its program no plan), and a path past effects.RANGES ranges in all has none either."""
    n = effects.ROWS + 1
    reads, writes = effects.EFFECTS[int(isa.Op.TLOAD)]((0, 0, 10, n, 2, 3))
    assert reads == (("M", 10, 10 + 3 * (n - 1) + 2),) and writes == (("A", 0, 2 * n),)
    assert effects.EFFECTS[int(isa.Op.TSTORE)]((0, 10, 0, n, 2, 3)) is None
    assert len(effects.EFFECTS[int(isa.Op.TSTORE)]((0, 10, 0, n - 1, 2, 3))[1]) == n - 1
    store = f"    TSTORE [P0 + 0], 0, {effects.ROWS}, 1, 2\n"
    text = ".text\n" + store * (effects.RANGES // effects.ROWS + 1) + "    HALT\n"
    assert effects.path(assemble(text, "rows.pasm").instructions) is None
    assert effects.path(assemble(".text\n" + store + "    HALT\n", "rows.pasm").instructions) is not None
