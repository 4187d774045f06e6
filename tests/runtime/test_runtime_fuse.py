"""REQUANTC + TRELU/TCLAMP + TSTORE fused into one pass of the compiled run loop (runtime/fuse.py): the simulator
with the fusion leaves exactly the ISA executor's state (runtime/isa_ref.py), also where the fused values are read
later, where the loop hands the REQUANTC back (an operand past int64), where a row faults (a multiplier out of
range, a store outside main memory) and where the rows do not qualify; likewise the table activation's EADD
rescale + TLUT pair, one pass outside the run loop."""

from __future__ import annotations

import numpy as np
import pytest
from runtime_helpers import ACC, DRAM, assert_same_state, loop_calls, outcome, preset, run_asm, run_ref

from pcc.backend.assembler import assemble
from pcc.runtime import fuse, isa_ref, kernels
from pcc.runtime.simulator import Simulator

pytestmark = pytest.mark.skipif(not kernels.available(), reason="numba is not installed")

_RNG = np.random.default_rng(11)
_X = _RNG.integers(-(10**9), 10**9, 48)  # C[0..47]: 12 rows x 4 channels of accumulators
_Q = [3, 70000, 1, 600000000, 20, 30, 0, 62]  # C[100..107]: per-channel multipliers, then shifts
_SETUP = {"C@0": _X, "C@100": _Q, "A@0": _RNG.integers(-50, 50, 64)}
_WIDE = {**_SETUP, "C@5": [ACC]}  # |x| * multiplier past int64: the loop hands the REQUANTC back

# (name, program, setup, what fuse.fusions marks for each fused REQUANTC: 1 clamp, 2 store, 3 both)
_REUSE = (
    "REQUANTC 0, 0, 12, 4, 100, 8\nTRELU 0, 0, 48\nTSTORE [P0 + 1000], 0, 12, 4, 4\n"
    "REQUANTC 0, 0, 12, 4, 100, 8\nTCLAMP 0, 0, 48, -3, 3\nEADD 48, 0, 0, 16, 1, 0, 0, 0, 8\n"
    "TLOAD 64, [P0 + 1000], 12, 4, 4"
)
_OUTSIDE = f"REQUANTC 0, 0, 12, 4, 100, 8\nTRELU 0, 0, 48\nTSTORE [P0 + {DRAM - 40}], 0, 12, 4, 4"
CASES = [
    ("relu", "REQUANTC 0, 0, 12, 4, 100, 8\nTRELU 0, 0, 48", _SETUP, [1]),
    ("clamp", "REQUANTC 0, 0, 12, 4, 100, 8\nTCLAMP 0, 0, 48, -7, 900", _SETUP, [1]),
    ("clamp lo > hi", "REQUANTC 0, 0, 12, 4, 100, 8\nTCLAMP 0, 0, 48, 5, -5", _SETUP, [1]),
    ("saturates (S)", "REQUANTC 0, 0, 12, 4, 100, 3\nTRELU 0, 0, 48", _SETUP, [1]),
    ("offset", "REQUANTC 16, 0, 12, 4, 100, 8\nTCLAMP 16, 16, 48, 0, 40", _SETUP, [1]),
    ("fused values read later", _REUSE, _SETUP, [3, 1]),
    ("wide operand, handed back", "REQUANTC 0, 0, 12, 4, 100, 8\nTRELU 0, 0, 48", _WIDE, [1]),
    ("clamp of part of it", "REQUANTC 0, 0, 12, 4, 100, 8\nTRELU 0, 0, 40", _SETUP, []),
    ("clamp elsewhere", "REQUANTC 0, 0, 12, 4, 100, 8\nTRELU 48, 0, 48", _SETUP, []),
    ("clamp first", "TRELU 0, 0, 48\nREQUANTC 0, 0, 12, 4, 100, 8", _SETUP, []),
    ("chain", "REQUANTC 0, 0, 12, 4, 100, 8\nTRELU 0, 0, 48\nTCLAMP 0, 0, 48, -2, 2", _SETUP, [1]),
    ("store", "REQUANTC 0, 0, 12, 4, 100, 8\nTSTORE [P0 + 2000], 0, 1, 48, 0", _SETUP, [2]),
    ("store, S", "REQUANTC 0, 0, 12, 4, 100, 3\nTSTORE [P0 + 2000], 0, 12, 4, 4", _SETUP, [2]),
    (
        "store through a register",
        "MOVI P3, 700\nREQUANTC 0, 0, 12, 4, 100, 8\nTCLAMP 0, 0, 48, -9, 9\nTSTORE [P3 + 11], 0, 12, 4, 4\n"
        "LOAD P4, [P3 + 20]",
        _SETUP,
        [3],
    ),
    ("store, wide operand", "REQUANTC 0, 0, 12, 4, 100, 8\nTSTORE [P0 + 2000], 0, 12, 4, 4", _WIDE, [2]),
    ("strided store", "REQUANTC 0, 0, 12, 4, 100, 8\nTRELU 0, 0, 48\nTSTORE [P0 + 900], 0, 12, 4, 8", _SETUP, [1]),
    ("store of part", "REQUANTC 0, 0, 12, 4, 100, 8\nTSTORE [P0 + 900], 0, 6, 4, 4", _SETUP, []),
    ("store of another range", "REQUANTC 0, 0, 12, 4, 100, 8\nTSTORE [P0 + 900], 4, 12, 4, 4", _SETUP, []),
]


@pytest.mark.parametrize(("name", "text", "setup", "what"), CASES, ids=[c[0] for c in CASES])
def test_fused_rows_match_executor(name: str, text: str, setup: dict, what: list[int]) -> None:
    body = "\n".join("    " + line for line in text.splitlines())
    found = fuse.fusions(assemble(body + "\n    HALT\n", "case.pasm").instructions)
    assert [f[1] for f in found] == what
    sim = run_asm(body, setup=setup, fused=True)
    assert_same_state(sim, run_ref(body, setup=setup), name)
    sim.reset()  # zeroes the main memory the run wrote (a fused store included): these programs have no data
    assert not sim.mem.any()


@pytest.mark.parametrize(
    ("name", "text", "change"),
    [
        (
            "bad multiplier",
            "REQUANTC 0, 0, 12, 4, 100, 8\nTRELU 0, 0, 48\nTSTORE [P0 + 900], 0, 12, 4, 4",
            {"C@101": [-1]},
        ),
        ("store outside main memory", _OUTSIDE, {}),
    ],
)
def test_fused_rows_fault_as_the_executor(name: str, text: str, change: dict) -> None:
    body = "\n".join("    " + line for line in text.splitlines()) + "\n    HALT\n"
    setup = {**_SETUP, **change}
    sim = Simulator(assemble(body, "case.pasm"), fused=True)
    ref = isa_ref.Machine(assemble(body, "case.pasm"))
    preset(sim, setup)
    preset(ref, setup)
    got, want = outcome(lambda: sim.run(1000)), outcome(lambda: isa_ref.run(ref, 1000))
    assert got is not None and want is not None and got[0] == want[0], name
    assert_same_state(sim, ref, name)


def test_fusion_off_gives_the_same_state(monkeypatch: pytest.MonkeyPatch) -> None:
    body = "\n".join("    " + line for line in _REUSE.splitlines())
    on = run_asm(body, setup=_SETUP, fused=True)
    monkeypatch.setattr(fuse, "ENABLED", False)
    assert not fuse.fusions(on.program.instructions)
    assert_same_state(run_asm(body, setup=_SETUP, fused=True), on, "fusion off")


# EADD rescale + TLUT in place, the compiler's table activation, as one pass (fuse.lut_pair): A[0..63] the values,
# A[200..] the table
_LUT = {"A@0": _RNG.integers(-(10**6), 10**6, 64), "A@200": _RNG.integers(-(10**5), 10**5, 201)}
_LUT_WIDE = {**_LUT, "A@7": [5 * 10**10]}  # |x| * multiplier past int64's common shift: the two run as themselves
_PAIR = "EADD 0, 0, 0, 64, 600000000, 40, 0, 0, 8\nTLUT 0, 0, 64, 200, -50, 101"
LUT_CASES = [
    ("pair", _PAIR, _LUT, True),
    ("saturates (S), wide table", "EADD 0, 0, 0, 64, 9, 0, 0, 0, 3\nTLUT 0, 0, 64, 200, -100, 201", _LUT, True),
    ("shift 0, one entry", "EADD 0, 0, 0, 64, 1, 0, 0, 5, 8\nTLUT 0, 0, 64, 200, 3, 1", _LUT, True),
    ("wide operand, handed back", _PAIR, _LUT_WIDE, True),
    ("values read later", _PAIR + "\nEADD 100, 0, 0, 64, 1, 0, 0, 0, 8\nTSTORE [P0 + 50], 0, 1, 64, 0", _LUT, True),
    ("table in the range", "EADD 0, 0, 0, 64, 600000000, 40, 0, 0, 8\nTLUT 0, 0, 64, 60, -2, 5", _LUT, False),
    ("two terms", "EADD 0, 0, 0, 64, 600000000, 40, 1, 0, 8\nTLUT 0, 0, 64, 200, -50, 101", _LUT, False),
    ("lookup of part", "EADD 0, 0, 0, 64, 600000000, 40, 0, 0, 8\nTLUT 0, 0, 60, 200, -50, 101", _LUT, False),
    ("lookup elsewhere", "EADD 0, 0, 0, 64, 600000000, 40, 0, 0, 8\nTLUT 64, 0, 64, 200, -50, 101", _LUT, False),
    ("rescale elsewhere", "EADD 64, 0, 0, 64, 600000000, 40, 0, 0, 8\nTLUT 64, 64, 64, 200, -50, 101", _LUT, False),
    ("lookup first", "TLUT 0, 0, 64, 200, -50, 101\nEADD 0, 0, 0, 64, 600000000, 40, 0, 0, 8", _LUT, False),
]


@pytest.mark.parametrize(("name", "text", "setup", "pair"), LUT_CASES, ids=[c[0] for c in LUT_CASES])
def test_table_activation_pair_matches_executor(name: str, text: str, setup: dict, pair: bool) -> None:
    body = "\n".join("    " + line for line in text.splitlines())
    instrs = assemble(body + "\n    HALT\n", "case.pasm").instructions
    assert fuse.lut_pair(instrs[0], instrs[1]) == pair
    assert_same_state(run_asm(body, setup=setup, fused=True), run_ref(body, setup=setup), name)


def test_table_activation_pair_runs_as_one_closure(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = loop_calls(monkeypatch, "rescale_lut")
    body = "\n".join("    " + line for line in _PAIR.splitlines())
    on = run_asm(body, setup=_LUT, fused=True)
    assert calls == [1]
    monkeypatch.setattr(fuse, "LUT_PAIR", False)
    assert_same_state(run_asm(body, setup=_LUT, fused=True), on, "pair off")
    assert calls == [1]
