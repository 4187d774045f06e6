"""REQUANTC + TRELU/TCLAMP fused into one pass of the compiled run loop (runtime/fuse.py): the simulator with the
fusion leaves exactly the ISA executor's state (runtime/isa_ref.py), also where the fused values are read later,
where the loop hands the REQUANTC back (an operand past int64, a multiplier out of range: a fault), and where the
pair does not qualify."""

from __future__ import annotations

import numpy as np
import pytest
from runtime_helpers import ACC, assert_same_state, outcome, run_asm, run_ref

from pcc.backend.assembler import assemble
from pcc.runtime import fuse, kernels

pytestmark = pytest.mark.skipif(not kernels.available(), reason="numba is not installed")

_RNG = np.random.default_rng(11)
_X = _RNG.integers(-(10**9), 10**9, 48)  # C[0..47]: 12 rows x 4 channels of accumulators
_Q = [3, 70000, 1, 600000000, 20, 30, 0, 62]  # C[100..107]: per-channel multipliers, then shifts
_SETUP = {"C@0": _X, "C@100": _Q, "A@0": _RNG.integers(-50, 50, 64)}
_WIDE = {**_SETUP, "C@5": [ACC]}  # |x| * multiplier past int64: the loop hands the REQUANTC back

# (name, program, setup, fused pairs expected)
CASES = [
    ("relu", "REQUANTC 0, 0, 12, 4, 100, 8\nTRELU 0, 0, 48", _SETUP, 1),
    ("clamp", "REQUANTC 0, 0, 12, 4, 100, 8\nTCLAMP 0, 0, 48, -7, 900", _SETUP, 1),
    ("clamp lo > hi", "REQUANTC 0, 0, 12, 4, 100, 8\nTCLAMP 0, 0, 48, 5, -5", _SETUP, 1),
    ("saturates (S)", "REQUANTC 0, 0, 12, 4, 100, 3\nTRELU 0, 0, 48", _SETUP, 1),
    ("offset", "REQUANTC 16, 0, 12, 4, 100, 8\nTCLAMP 16, 16, 48, 0, 40", _SETUP, 1),
    (
        "fused values read later",
        "REQUANTC 0, 0, 12, 4, 100, 8\nTRELU 0, 0, 48\nTSTORE [P0 + 1000], 0, 12, 4, 4\n"
        "REQUANTC 0, 0, 12, 4, 100, 8\nTCLAMP 0, 0, 48, -3, 3\nEADD 48, 0, 0, 16, 1, 0, 0, 0, 8\n"
        "TLOAD 64, [P0 + 1000], 12, 4, 4",
        _SETUP,
        2,
    ),
    ("wide operand, handed back", "REQUANTC 0, 0, 12, 4, 100, 8\nTRELU 0, 0, 48", _WIDE, 1),
    ("clamp of part of it", "REQUANTC 0, 0, 12, 4, 100, 8\nTRELU 0, 0, 40", _SETUP, 0),
    ("clamp elsewhere", "REQUANTC 0, 0, 12, 4, 100, 8\nTRELU 48, 0, 48", _SETUP, 0),
    ("clamp first", "TRELU 0, 0, 48\nREQUANTC 0, 0, 12, 4, 100, 8", _SETUP, 0),
    ("chain", "REQUANTC 0, 0, 12, 4, 100, 8\nTRELU 0, 0, 48\nTCLAMP 0, 0, 48, -2, 2", _SETUP, 1),
]


@pytest.mark.parametrize(("name", "text", "setup", "pairs"), CASES, ids=[c[0] for c in CASES])
def test_fused_pairs_match_executor(name: str, text: str, setup: dict, pairs: int) -> None:
    body = "\n".join("    " + line for line in text.splitlines())
    found = fuse.fusions(assemble(body + "\n    HALT\n", "case.pasm").instructions)
    assert len(found) == pairs
    sim = run_asm(body, setup=setup, fused=True)
    assert_same_state(sim, run_ref(body, setup=setup), name)


def test_fusion_off_gives_the_same_state(monkeypatch: pytest.MonkeyPatch) -> None:
    body = "\n".join("    " + line for line in CASES[5][1].splitlines())
    on = run_asm(body, setup=_SETUP, fused=True)
    monkeypatch.setattr(fuse, "ENABLED", False)
    assert not fuse.fusions(on.program.instructions)
    assert_same_state(run_asm(body, setup=_SETUP, fused=True), on, "fusion off")


def test_fused_pair_with_a_bad_multiplier_faults_as_the_executor() -> None:
    body = "    REQUANTC 0, 0, 12, 4, 100, 8\n    TRELU 0, 0, 48"
    setup = {**_SETUP, "C@101": [-1]}
    sims: list = []
    got = outcome(lambda: sims.append(run_asm(body, setup=setup, fused=True)))
    want = outcome(lambda: run_ref(body, setup=setup))
    assert got is not None and got[0] == want[0]
