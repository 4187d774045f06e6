"""(TLOAD ->) EADD -> TLUT (-> TSTORE) chains run as one pass (runtime/fuse.py ``chains``): the simulator leaves
exactly the ISA executor's state (runtime/isa_ref.py), also where the stored values are read later, where the
loop hands the rows back (an EADD operand past the rescale's int64 limit, a store over the load's range shifted),
where a row faults (a load or a store outside main memory: the same message at the same instruction) and where
the rows do not qualify."""

from __future__ import annotations

import numpy as np
import pytest
from runtime_helpers import DRAM, assert_same_state, outcome, preset, run_asm, run_ref

from pcc.backend.assembler import assemble
from pcc.runtime import fuse, isa_ref, kernels
from pcc.runtime.simulator import Simulator

pytestmark = pytest.mark.skipif(not kernels.available(), reason="numba is not installed")

_RNG = np.random.default_rng(5)
_N = 3000  # past one chunk of the loop
_SETUP = {
    "A@0": _RNG.integers(-400, 400, _N),  # the values the first TSTORE puts in main memory at 10000
    "A@4000": _RNG.integers(-150, 150, _N),  # a second EADD source in A
    "A@8000": _RNG.integers(-(10**5), 10**5, 41),  # the table: inputs -20 .. 20
}
_WIDE = {**_SETUP, "A@17": [7 * 10**10]}  # past the rescale's limit for the multiplier below
_PUT = f"TSTORE [P0 + 10000], 0, 1, {_N}, 0"  # main memory from A (the programs have no data)
_EADD = f"EADD 0, 0, 0, {_N}, 600000000, 34, 0, 0, 8"
_LUT = f"TLUT 0, 0, {_N}, 8000, -20, 41"
_LOAD = f"TLOAD 0, [P0 + 10000], 1, {_N}, 0"
_STORE = f"TSTORE [P0 + 20000], 0, 1, {_N}, 0"

# (name, program, setup, (load, store) of each chain fuse.chains finds)
CASES = [
    ("load, store", [_PUT, _LOAD, _EADD, _LUT, _STORE], _SETUP, [(True, True)]),
    (
        "rows of a load and a store",
        [_PUT, _LOAD.replace(f"1, {_N}, 0", "30, 100, 100"), _EADD, _LUT, _STORE.replace(f"1, {_N}, 0", "60, 50, 50")],
        _SETUP,
        [(True, True)],
    ),
    ("no load", [_PUT, _EADD, _LUT, _STORE], _SETUP, [(False, True)]),
    ("no store", [_PUT, _LOAD, _EADD, _LUT, f"TSTORE [P0 + 20000], 0, 1, {_N - 1}, 0"], _SETUP, [(True, False)]),
    (
        "second source in A",
        [_PUT, _LOAD, f"EADD 0, 4000, 0, {_N}, 300000, 20, 500000000, 33, 8", _LUT, _STORE],
        _SETUP,
        [(True, True)],
    ),
    ("saturates (S)", [_PUT, _LOAD, _EADD.replace("34, 0, 0, 8", "30, 0, 0, 2"), _LUT, _STORE], _SETUP, [(True, True)]),
    (
        "store over the load's range",
        [_PUT, _LOAD, _EADD, _LUT, _STORE.replace("20000", "10000")],
        _SETUP,
        [(True, True)],
    ),
    (
        "store over the load's range, shifted (rows run)",
        [_PUT, _LOAD, _EADD, _LUT, _STORE.replace("20000", "10007")],
        _SETUP,
        [(True, True)],
    ),
    ("wide operand (rows run)", [_PUT, _LOAD, _EADD, _LUT, _STORE], _WIDE, [(True, True)]),
    (
        "through registers, read later",
        [
            "MOVI P3, 4000",
            _PUT,
            _LOAD.replace("P0 + 10000", "P3 + 6000"),
            _EADD,
            _LUT,
            _STORE.replace("P0 + 20000", "P3 + 16000"),
            f"TLOAD 5000, [P0 + 20000], 1, {_N}, 0",
            f"EADD 0, 5000, 0, {_N}, 1, 0, 1, 0, 8",
            "LOAD P4, [P3 + 16005]",
        ],
        _SETUP,
        [(True, True)],
    ),
    (
        "two chains",
        [_PUT, _LOAD, _EADD, _LUT, _STORE, _LOAD.replace("10000", "20000"), _EADD, _LUT, _STORE],
        _SETUP,
        [(True, True), (True, True)],
    ),
    ("table over the destination", [_PUT, _LOAD, _EADD, _LUT.replace("8000", "2990"), _STORE], _SETUP, []),
    (
        "source shifted over the destination",
        [_PUT, _LOAD, _EADD.replace("EADD 0, 0, 0", "EADD 0, 1, 0"), _LUT],
        _SETUP,
        [],
    ),
    ("lookup of part", [_PUT, _LOAD, _EADD, _LUT.replace(f"0, 0, {_N}", f"0, 0, {_N - 1}"), _STORE], _SETUP, []),
    (
        "load of another range",
        [_PUT, _LOAD.replace("TLOAD 0", "TLOAD 1"), _EADD, _LUT, _STORE],
        _SETUP,
        [(False, True)],
    ),
    ("strided load", [_PUT, _LOAD.replace(f"1, {_N}, 0", "30, 100, 101"), _EADD, _LUT], _SETUP, [(False, False)]),
]


def _body(lines: list[str]) -> str:
    return "\n".join("    " + line for line in lines)


@pytest.mark.parametrize(("name", "lines", "setup", "found"), CASES, ids=[c[0] for c in CASES])
def test_chains_match_executor(name: str, lines: list[str], setup: dict, found: list[tuple[bool, bool]]) -> None:
    body = _body(lines)
    chains = fuse.chains(assemble(body + "\n    HALT\n", "case.pasm").instructions)
    assert [(c.load, c.store) for c in chains] == found
    sim = run_asm(body, setup=setup, fused=True)
    assert_same_state(sim, run_ref(body, setup=setup), name)
    sim.reset()  # zeroes the main memory the run wrote (the chain's store included): these programs have no data
    assert not sim.mem.any()


@pytest.mark.parametrize(
    ("name", "lines"),
    [
        ("load outside main memory", [_PUT, _LOAD.replace("10000", str(DRAM - 100)), _EADD, _LUT, _STORE]),
        ("store outside main memory", [_PUT, _LOAD, _EADD, _LUT, _STORE.replace("20000", str(DRAM - 100))]),
        ("store below main memory", ["MOVI P3, -20003", _PUT, _LOAD, _EADD, _LUT, _STORE.replace("P0", "P3")]),
    ],
)
def test_chains_fault_as_the_executor(name: str, lines: list[str]) -> None:
    body = _body(lines) + "\n    HALT\n"
    sim = Simulator(assemble(body, "case.pasm"), fused=True)
    ref = isa_ref.Machine(assemble(body, "case.pasm"))
    preset(sim, _SETUP)
    preset(ref, _SETUP)
    got, want = outcome(lambda: sim.run(1000)), outcome(lambda: isa_ref.run(ref, 1000))
    assert got is not None and want is not None and got[:2] == want[:2], name
    assert_same_state(sim, ref, name)


def test_chains_off_give_the_same_state(monkeypatch: pytest.MonkeyPatch) -> None:
    body = _body(CASES[0][1])
    on = run_asm(body, setup=_SETUP, fused=True)
    monkeypatch.setattr(fuse, "ENABLED", False)
    assert not fuse.chains(on.program.instructions)
    assert_same_state(run_asm(body, setup=_SETUP, fused=True), on, "chains off")
