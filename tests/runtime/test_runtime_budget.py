"""Runaway programs stop by themselves: the step, cycle and time budgets of a run, on the simulator, the ISA's
plain executor and ``pcc run`` (small budgets, so that the tests are fast).

The default cycle budget (``DEFAULT_MAX_CYCLES``) is what stops a loop around the largest MATMULs, which the step
budget alone would let run for days; these tests check that it is the default and that a budget stops such a loop
at the exact instruction, with a fault that names the budget and the option that raises it.
"""

from __future__ import annotations

import inspect
from pathlib import Path

import numpy as np
import pytest
from runtime_helpers import assert_same_state, outcome

from pcc import isa
from pcc.backend.assembler import assemble
from pcc.cli import main
from pcc.runtime import isa_ref
from pcc.runtime.simulator import DEFAULT_MAX_CYCLES, Simulator, run_program

# MATMUL 8 x 8 x 8 costs cdiv(8, 32) * cdiv(8, 32) * (8 + 32) = 40 cycles, JUMP 2
LOOP = "loop:\n    MATMUL 0, 0, 0, 8, 8, 8, 0\n    JUMP loop\n"


def test_the_cycle_budget_is_the_default_everywhere() -> None:
    for fn in (Simulator.run, isa_ref.run, run_program):
        assert inspect.signature(fn).parameters["max_cycles"].default == DEFAULT_MAX_CYCLES, fn
    # the step budget alone would take a loop of 33 M-MAC MATMULs (42,834 cycles each) through 5e7 of them; the
    # cycle budget stops it after fewer than 1,200
    big = isa.cycles(isa.BY_MNEMONIC["MATMUL"], (0, 0, 0, 322, 322, 322, 0))
    assert big == 42_834 and DEFAULT_MAX_CYCLES // big < 1200


@pytest.mark.parametrize("budget", [41, 42, 43, 1000, 1001])
def test_a_cycle_budget_stops_a_loop_at_the_instruction_that_would_pass_it(budget: int) -> None:
    prog = assemble(LOOP, "loop.pasm")
    sim, ref = Simulator(prog), isa_ref.Machine(prog)
    rng = np.random.default_rng(budget)
    sim.spad_a[:64] = ref.A[:64] = rng.integers(-99, 99, 64)
    sim.spad_w[:64] = ref.W[:64] = rng.integers(-2, 3, 64)
    got = outcome(lambda: sim.run(max_cycles=budget))
    assert got == outcome(lambda: isa_ref.run(ref, max_cycles=budget))
    assert_same_state(sim, ref, f"budget {budget}")
    assert got is not None and got[0].startswith(
        f"cycle limit reached: the next instruction would take the run past {budget} cycles"
    )
    assert "--max-cycles" in got[0]
    # the instructions that ran fit the budget, the next one would not
    per = [40, 2]
    assert sim.cycles <= budget < sim.cycles + per[sim.steps % 2]
    assert sim.pc == (0 if sim.steps % 2 == 0 else 4)  # MATMUL takes four words


def test_a_cycle_budget_mid_block_and_the_exact_budget() -> None:
    text = "NOP\nNOP\nTRELU 0, 0, 64\nNOP\nNOP\nNOP\nHALT\n"  # TRELU costs 3 cycles: 9 in all
    prog = assemble(text, "b.pasm")
    for budget in (2, 4, 5, 8):
        sim, ref = Simulator(prog), isa_ref.Machine(prog)
        got = outcome(lambda sim=sim, b=budget: sim.run(max_cycles=b))
        assert got == outcome(lambda ref=ref, b=budget: isa_ref.run(ref, max_cycles=b))
        assert got is not None and "cycle limit" in got[0]
        assert_same_state(sim, ref, f"budget {budget}")
    sim, ref = Simulator(prog), isa_ref.Machine(prog)
    sim.run(max_cycles=9)
    isa_ref.run(ref, max_cycles=9)
    assert sim.halted and ref.halted and sim.cycles == ref.cycles == 9
    # the step limit comes first where both are reached at one instruction
    sim = Simulator(prog)
    with pytest.raises(Exception, match="step limit"):
        sim.run(2, max_cycles=2)


def test_cycles_of_a_run_are_the_tables_costs() -> None:
    text = "MOVI P1, 3\nloop:\n    MATVEC 0, 0, 0, 4, 4, 0\n    ADDI P1, P1, -1\n    BNE P1, loop\n    HALT\n"
    prog = assemble(text, "c.pasm")
    sim, ref = Simulator(prog), isa_ref.Machine(prog)
    sim.run()
    isa_ref.run(ref)
    costs = [isa.cycles(i.info, i.args) for i in prog.instructions]
    assert sim.cycles == ref.cycles == costs[0] + 3 * sum(costs[1:4]) + costs[4]
    assert sim.cycles == int((sim.instruction_counts() * np.asarray(sim.cost)).sum())


def test_a_timeout_stops_a_scalar_loop() -> None:
    prog = assemble("loop:\n    JUMP loop\n", "t.pasm")
    sim = Simulator(prog)
    got = outcome(lambda: sim.run(10**12, max_cycles=10**15, timeout=0.05))
    assert got is not None and got[0].startswith("time limit reached: the run took longer than 0.05 s")
    assert "--timeout" in got[0] and sim.steps > 0 and sim.cycles == 2 * sim.steps
    ref = isa_ref.Machine(prog)
    got = outcome(lambda: isa_ref.run(ref, 10**12, max_cycles=10**15, timeout=0.05))
    assert got is not None and got[0].startswith("time limit reached") and ref.cycles == 2 * ref.steps


def test_pcc_run_budgets(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    src = tmp_path / "loop.pasm"
    src.write_text(LOOP)
    assert main(["run", str(src), "--max-cycles", "1000"]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"{src}:2:1: error: cycle limit reached: the next instruction would take the run past 1000")
    assert "raise it with --max-cycles" in err and "Traceback" not in err
    assert main(["run", str(src), "--max-cycles", "1000000000000", "--timeout", "0.1"]) == 1
    err = capsys.readouterr().err
    assert "time limit reached" in err and "raise it with --timeout" in err and "Traceback" not in err
    assert main(["run", str(src), "--max-cycles", "0"]) != 0  # a budget must be positive
    assert "Traceback" not in capsys.readouterr().err
