"""REQUANTC + TRELU/TCLAMP + TSTORE fused into one pass of the compiled run loop (runtime/fuse.py): the simulator
with the fusion leaves exactly the ISA executor's state (runtime/isa_ref.py), also where the fused values are read
later, where the loop hands the REQUANTC back (an operand past int64), where a row faults (a multiplier out of
range, a store outside main memory) and where the rows do not qualify; likewise the table activation's EADD
rescale + TLUT pair, one pass outside the run loop or inside the REQUANTC's pass, and a layer's bias broadcast
added in its CONV's float32 store."""

from __future__ import annotations

import numpy as np
import pytest
from runtime_helpers import A_WORDS, ACC, DRAM, assert_same_state, loop_calls, outcome, preset, run_asm, run_ref

from pcc.backend.assembler import assemble
from pcc.runtime import fuse, isa_ref, kernels
from pcc.runtime.simulator import Simulator

pytestmark = pytest.mark.skipif(not kernels.available(), reason="numba is not installed")

_RNG = np.random.default_rng(11)
_X = _RNG.integers(-(10**9), 10**9, 48)  # C[0..47]: 12 rows x 4 channels of accumulators
_Q = [3, 70000, 1, 600000000, 20, 30, 0, 62]  # C[100..107]: per-channel multipliers, then shifts
_SETUP = {"C@0": _X, "C@100": _Q, "A@0": _RNG.integers(-50, 50, 64)}
_WIDE = {**_SETUP, "C@5": [ACC]}  # |x| * multiplier past int64: the loop hands the REQUANTC back

# the table activation after a REQUANTC: its values (|v| <= 195312 at 8 pents) rescaled by 6 / 2 into a 101-entry
# table for the inputs -50..50 at A[200..]
_TAIL_LUT = "TLUT 0, 0, 48, 200, -50, 101"
_TAIL_PAIR = "EADD 0, 0, 0, 48, 6, 1, 0, 0, 8\n" + _TAIL_LUT
_TAIL_STORE = "TSTORE [P0 + 3000], 0, 12, 4, 4"
_TAIL = {**_SETUP, "A@200": _RNG.integers(-(10**5), 10**5, 101)}
_TAIL_WIDE = {**_TAIL, "C@5": [ACC]}

# (name, program, setup, what fuse.fusions marks for each fused REQUANTC: 1 clamp, 2 store, 3 both, 4 table)
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
    # a table activation after the REQUANTC (bit 2): A[200..] the table, preset by _TAIL
    ("table", f"REQUANTC 0, 0, 12, 4, 100, 8\n{_TAIL_PAIR}", _TAIL, [4]),
    ("clamp, table, store", f"REQUANTC 0, 0, 12, 4, 100, 8\nTRELU 0, 0, 48\n{_TAIL_PAIR}\n{_TAIL_STORE}", _TAIL, [7]),
    ("table, store, S", f"REQUANTC 0, 0, 12, 4, 100, 3\n{_TAIL_PAIR}\n{_TAIL_STORE}", _TAIL, [6]),
    ("table saturates (S)", "REQUANTC 0, 0, 12, 4, 100, 8\nEADD 0, 0, 0, 48, 9, 0, 0, 0, 2\n" + _TAIL_LUT, _TAIL, [4]),
    ("table, wide operand, handed back", f"REQUANTC 0, 0, 12, 4, 100, 8\n{_TAIL_PAIR}\n{_TAIL_STORE}", _TAIL_WIDE, [6]),
    (
        "table values read later",
        f"REQUANTC 0, 0, 12, 4, 100, 8\n{_TAIL_PAIR}\nEADD 100, 0, 0, 48, 1, 0, 0, 0, 8",
        _TAIL,
        [4],
    ),
    # the rescale could leave int64 for a 16-pent REQUANTC's values: the pair runs on its own
    (
        "table past the rescale's limit",
        f"REQUANTC 0, 0, 12, 4, 100, 16\nEADD 0, 0, 0, 48, 600000000, 40, 0, 0, 8\n{_TAIL_LUT}\n{_TAIL_STORE}",
        _TAIL,
        [],
    ),
    (
        "table of part",
        "REQUANTC 0, 0, 12, 4, 100, 8\nEADD 0, 0, 0, 40, 6, 1, 0, 0, 8\n" + _TAIL_LUT.replace("48", "40"),
        _TAIL,
        [],
    ),
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
        (
            "table outside A",
            f"REQUANTC 0, 0, 12, 4, 100, 8\nEADD 0, 0, 0, 48, 6, 1, 0, 0, 8\nTLUT 0, 0, 48, {A_WORDS - 10}, -50, 101",
            {},
        ),
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


def test_table_activation_after_requantc_runs_in_the_run_loop(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = loop_calls(monkeypatch, "rescale_lut")
    text = f"REQUANTC 0, 0, 12, 4, 100, 8\nTRELU 0, 0, 48\n{_TAIL_PAIR}\n{_TAIL_STORE}"
    body = "\n".join("    " + line for line in text.splitlines())
    on = run_asm(body, setup=_TAIL, fused=True)
    assert calls == [0]  # not the pair's own closure: the REQUANTC's pass applied it
    monkeypatch.setattr(fuse, "LUT_TAIL", False)
    assert not fuse.fusions(on.program.instructions)[0][1] & 4
    assert_same_state(run_asm(body, setup=_TAIL, fused=True), on, "tail off")
    assert calls == [1]


# A layer's bias broadcast (TLOADC, stride 0) and the CONV adding to it, as one float32 store (fuse.bias_pair): a
# 16x16x8 image, 16 output channels of 3x3 taps with padding 1 (past the direct loops' size: float32 products)
_BIAS_DATA = ".data\nb: .word " + ", ".join(str(v) for v in _RNG.integers(-(10**9), 10**9, 16)) + "\n.text\n"
_BIAS_CONV = "CONV 0, 0, 0, 16, 16, 8, 16, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1"
_BIAS_SETUP = {"A@0": _RNG.integers(-3000, 3000, 16 * 16 * 8), "W@0": _RNG.integers(-2, 3, 16 * 72), "C@0": [7] * 9}
_BIAS_WIDE = {**_BIAS_SETUP, "A@5": [10**12]}  # products past float32's exact range: another engine
_BCAST = "TLOADC 0, [P0 + b], 256, 16, 0"  # the bias row over the 16x16 outputs
_DW_CONV = "CONV 0, 0, 0, 16, 16, 16, 16, 3, 3, 1, 1, 1, 1, 1, 1, 16, 1"  # depthwise, 16 channels
_DW_HUGE = {**_BIAS_SETUP, "A@5": [10**15]}  # sums past float64's exact range: the run loop hands the CONV back
BIAS_CASES = [
    ("bias", f"{_BCAST}\n{_BIAS_CONV}", _BIAS_SETUP, True, 1),
    ("through a register", f"MOVI P3, b\nTLOADC 0, [P3 + 0], 256, 16, 0\n{_BIAS_CONV}", _BIAS_SETUP, True, 1),
    ("wide activations", f"{_BCAST}\n{_BIAS_CONV}", _BIAS_WIDE, True, 0),
    (
        "values read later",
        f"{_BCAST}\n{_BIAS_CONV}\nREQUANTC 0, 0, 256, 16, 5000, 8",
        _BIAS_SETUP,
        True,
        1,
    ),
    ("bias rows", f"TLOADC 0, [P0 + b], 128, 32, 0\n{_BIAS_CONV}", _BIAS_SETUP, False, 0),
    ("rows at a stride", f"TLOADC 0, [P0 + b], 256, 16, 1\n{_BIAS_CONV}", _BIAS_SETUP, False, 0),
    ("no accumulation", f"{_BCAST}\n{_BIAS_CONV[:-1]}0", _BIAS_SETUP, False, 0),
    ("another range", f"TLOADC 16, [P0 + b], 256, 16, 0\n{_BIAS_CONV}", _BIAS_SETUP, False, 0),
    # the run loop's depthwise CONV adds the bias row itself; past float64's exact sums it hands the CONV back
    ("depthwise (run loop)", f"{_BCAST}\n{_DW_CONV}\nREQUANTC 0, 0, 256, 16, 5000, 8", _BIAS_SETUP, True, 0),
    ("depthwise, wide activations", f"{_BCAST}\n{_DW_CONV}", _BIAS_WIDE, True, 0),
    ("depthwise, handed back", f"{_BCAST}\n{_DW_CONV}", _DW_HUGE, True, 0),
    (
        "small CONV (run loop)",
        "TLOADC 0, [P0 + b], 4, 16, 0\nCONV 0, 0, 0, 2, 2, 8, 16, 1, 1, 1, 1, 0, 0, 0, 0, 1, 1",
        _BIAS_SETUP,
        True,
        0,
    ),
]


@pytest.mark.parametrize(("name", "text", "setup", "pair", "stores"), BIAS_CASES, ids=[c[0] for c in BIAS_CASES])
def test_bias_and_conv_match_executor(
    monkeypatch: pytest.MonkeyPatch, name: str, text: str, setup: dict, pair: bool, stores: int
) -> None:
    calls = loop_calls(monkeypatch, "f32_store_bias")
    lines = text.splitlines()
    first = next(k for k, line in enumerate(lines) if line.startswith("TLOADC"))
    body = _BIAS_DATA + "\n".join("    " + line for line in lines)
    instrs = assemble(body + "\n    HALT\n", "case.pasm").instructions
    assert fuse.bias_pair(instrs[first], instrs[first + 1]) == pair
    setup = {**setup, "C@5000": [1 << 20] * 16 + [8] * 16}  # a REQUANTC's multipliers and shifts
    assert_same_state(run_asm(body, setup=setup, fused=True), run_ref(body, setup=setup), name)
    assert calls == [stores]


def test_bias_outside_main_memory_faults_as_the_tloadc() -> None:
    body = f"    TLOADC 0, [P0 + {DRAM - 4}], 256, 16, 0\n    {_BIAS_CONV}\n    HALT\n"
    sim = Simulator(assemble(body, "case.pasm"), fused=True)
    ref = isa_ref.Machine(assemble(body, "case.pasm"))
    preset(sim, _BIAS_SETUP)
    preset(ref, _BIAS_SETUP)
    got, want = outcome(lambda: sim.run(1000)), outcome(lambda: isa_ref.run(ref, 1000))
    assert got is not None and got == want and got[0].startswith("TLOADC main-memory access")
    assert_same_state(sim, ref, "bias outside main memory")
