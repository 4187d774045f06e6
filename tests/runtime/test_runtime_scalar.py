"""Every scalar instruction against hand-worked examples: an assembly snippet and the machine state it leaves.

Each case is (name, snippet, expected state); ``HALT`` is appended to the snippet. The simulator and the ISA's
plain executor (``runtime/isa_ref.py``) both reach the expected state and agree on the rest. ``W`` is the largest word,
76 293 945 312 (sixteen +2 pents), built with MOVI + MOVHI in ``SETW``.
"""

from __future__ import annotations

import pytest
from runtime_helpers import ACC, DRAM, W, assert_same_state, check_state, mnemonics_of, run_asm, run_ref

SETW = "MOVI P1, 4882812\n    MOVHI P1, 7812\n"  # P1 = W (low 10 pents all +2, high 6 pents all +2)

CASES: list[tuple[str, str, dict]] = [
    ("nop", "NOP\n NOP", {"pc": 2, "steps": 3, "flags": ""}),
    ("halt-stays", "NOP\n HALT\n MOVI P1, 5", {"pc": 1, "steps": 2, "P1": 0}),
    ("sync-fence", "MOVI P1, 4\n SYNC\n FENCE", {"P1": 4, "flags": "P", "steps": 4}),
    ("setw", SETW, {"P1": W, "flags": "P"}),
    ("add", "MOVI P1, 3\n MOVI P2, -5\n ADD P3, P1, P2", {"P3": -2, "flags": "N"}),
    ("add-wrap", SETW + "MOVI P2, 1\n ADD P3, P1, P2", {"P3": -W, "flags": "NV"}),
    ("add-to-p0-sets-flags", "MOVI P1, 3\n ADD P0, P1, P1", {"P0": 0, "flags": "P"}),
    ("add-clears-v", SETW + "ADD P3, P1, P1\n ADD P4, P0, P0", {"P3": -1, "P4": 0, "flags": "Z"}),
    ("sub-zero", "MOVI P1, 3\n SUB P2, P1, P1", {"P2": 0, "flags": "Z"}),
    ("sub-wrap", SETW + "NEG P2, P1\n SUB P3, P2, P1", {"P2": -W, "P3": 1, "flags": "PV"}),
    ("addi", "MOVI P1, 10\n ADDI P2, P1, -39062", {"P2": -39052, "flags": "N"}),
    ("addi-from-p0", "ADDI P2, P0, 39062", {"P2": 39062, "flags": "P"}),
    ("addi-wrap", SETW + "ADDI P2, P1, 39062", {"P2": -W + 39061, "flags": "NV"}),
    ("mul", "MOVI P1, 7\n MOVI P2, -6\n MUL P3, P1, P2", {"P3": -42, "flags": "N"}),
    ("mul-wrap-to-zero", "MOVI P1, 390625\n MUL P2, P1, P1", {"P2": 0, "flags": "ZV"}),  # 5^8 * 5^8 = 5^16
    ("mul-wrap", SETW + "MOVI P2, 2\n MUL P3, P1, P2", {"P3": -1, "flags": "NV"}),
    ("neg", "MOVI P1, 5\n NEG P2, P1", {"P2": -5, "flags": "N"}),
    ("neg-keeps-v", SETW + "ADDI P3, P1, 1\n NEG P2, P1", {"P2": -W, "P3": -W, "flags": "NV"}),
    ("neg-zero", "NEG P2, P0", {"P2": 0, "flags": "Z"}),
    ("abs", "MOVI P1, -7\n ABS P2, P1", {"P2": 7, "flags": "P"}),
    ("mul2", "MOVI P1, 21\n MUL2 P2, P1", {"P2": 42, "flags": "P"}),
    ("mul2-wrap", SETW + "MUL2 P2, P1", {"P2": -1, "flags": "NV"}),
    ("div2-odd", "MOVI P1, 7\n DIV2 P2, P1", {"P2": 3, "flags": "PC"}),
    ("div2-negative-odd", "MOVI P1, -7\n DIV2 P2, P1", {"P2": -3, "flags": "NC"}),
    ("div2-even", "MOVI P1, 7\n DIV2 P2, P1\n MOVI P1, 8\n DIV2 P2, P1", {"P2": 4, "flags": "P"}),
    ("div2-one", "MOVI P1, -1\n DIV2 P2, P1", {"P2": 0, "flags": "ZC"}),
    ("div2-in-place", "MOVI P1, 9\n DIV2 P1, P1", {"P1": 4, "flags": "PC"}),
    ("min-max", "MOVI P1, 3\n MOVI P2, -4\n MIN P3, P1, P2\n MAX P4, P1, P2", {"P3": -4, "P4": 3, "flags": "P"}),
    (
        "clamp",
        "MOVI P1, 10\n MOVI P2, -2\n MOVI P3, 5\n CLAMP P4, P1, P2, P3\n MOVI P1, -10\n CLAMP P5, P1, P2, P3",
        {"P4": 5, "P5": -2, "flags": "N"},
    ),
    ("clamp-lo-above-hi", "MOVI P2, 5\n MOVI P3, 2\n CLAMP P4, P0, P2, P3", {"P4": 2, "flags": "P"}),
    (
        "sign",
        "MOVI P1, -9\n SIGN P2, P1\n SIGN P3, P0\n MOVI P4, 4\n SIGN P5, P4",
        {"P2": -1, "P3": 0, "P5": 1, "flags": "P"},
    ),
    ("relu-neg", "MOVI P1, -3\n RELU P2, P1", {"P2": 0, "flags": "Z"}),
    ("relu-pos", "MOVI P1, 3\n RELU P2, P1", {"P2": 3, "flags": "P"}),
    ("quant-tie-up", "MOVI P1, 3\n MOVI P2, 2\n QUANT P3, P1, P2", {"P3": 2, "flags": "P"}),
    ("quant-tie-down", "MOVI P1, -3\n MOVI P2, 2\n QUANT P3, P1, P2", {"P3": -2, "flags": "N"}),
    ("quant-half", "MOVI P1, 1\n MOVI P2, 2\n QUANT P3, P1, P2", {"P3": 1, "flags": "P"}),
    ("quant-small", "MOVI P1, -1\n MOVI P2, 4\n QUANT P3, P1, P2", {"P3": 0, "flags": "Z"}),
    ("quant-round-down", "MOVI P1, 5\n MOVI P2, 4\n QUANT P3, P1, P2", {"P3": 1, "flags": "P"}),
    ("quant-clamp-hi", "MOVI P1, 100\n MOVI P2, 3\n QUANT P3, P1, P2", {"P3": 2, "flags": "P"}),
    ("quant-clamp-lo", "MOVI P1, -7\n MOVI P2, 2\n QUANT P3, P1, P2", {"P3": -2, "flags": "N"}),
    ("quant-in-place", "MOVI P1, 9\n MOVI P2, 4\n QUANT P1, P1, P2", {"P1": 2, "flags": "P"}),
    ("movi", "MOVI P1, -4882812", {"P1": -4882812, "flags": "N"}),
    ("movi-zero", "MOVI P1, 5\n MOVI P1, 0", {"P1": 0, "flags": "Z"}),
    ("movhi", "MOVI P1, 1\n MOVHI P1, -2", {"P1": 1 - 2 * 5**10, "flags": "N"}),
    ("movhi-wrap", SETW + "MOVHI P1, 1", {"P1": W + 5**10 - 5**16, "flags": "NV"}),
    (
        "mac",
        "CLRACC\n MOVI P1, 6\n MOVI P2, -7\n MAC P3, P1, P2\n MAC P4, P1, P1\n MAC P5, P0, P0",
        {"P3": -42, "P4": -6, "P5": -6, "acc": -6, "flags": "N"},
    ),
    ("mac-saturates-acc", SETW + "MAC P3, P1, P1", {"acc": ACC, "P3": W, "flags": "PVS"}),
    (
        "mac-saturates-word",
        SETW + "MOVI P2, 1\n MAC P3, P1, P2\n MAC P3, P2, P2",
        {"acc": W + 1, "P3": W, "flags": "PVS"},
    ),
    (
        "mac-s-is-sticky",
        SETW + "MOVI P2, 1\n MAC P3, P1, P2\n MAC P3, P2, P2\n CLRACC\n MAC P4, P2, P2",
        {"acc": 1, "P4": 1, "flags": "PS"},
    ),
    ("clracc", "MOVI P1, 5\n MAC P0, P1, P1\n CLRACC\n MAC P2, P0, P0", {"acc": 0, "P2": 0, "flags": "Z"}),
    (
        "load-store",
        """.data
val: .word 1234, -5
out: .zero 5
.text
    LOAD P1, [P0 + val]
    MOVI P2, val
    LOAD P3, [P2 + 1]
    STORE P1, [P2 + 2]
    STORE P3, [P2 + 4]
    LOAD P0, [P2 + 0]""",
        {"P1": 1234, "P3": -5, "mem:out": [1234, 0, -5, 0, 0], "flags": "Z", "P0": 0},
    ),
    (
        "loadv-storev",
        """.data
arr: .word 1, 2, 3, 4
out: .zero 4
.text
    LOADV P1, [P0 + arr], 3
    STOREV P1, [P0 + out], 3""",
        {"P1": 1, "P2": 2, "P3": 3, "P4": 0, "mem:out": [1, 2, 3, 0]},
    ),
    (
        "loadv-base-read-first",
        """.data
pad: .word 9
arr: .word 11, 12
.text
    MOVI P5, arr
    LOADV P5, [P5 + 0], 2
    LOADV P0, [P0 + arr], 2""",
        {"P5": 11, "P6": 12, "P1": 12, "P0": 0},
    ),
    (
        "loadv-to-top",
        """.data
arr: .word 7, 8
.text
    LOADV P30, [P0 + arr], 2""",
        {"SP": 7, "LR": 8},
    ),
    (
        "push-pop",
        "MOVI P1, 42\n PUSH P1\n PUSH P0\n POP P2\n POP P3",
        {"P2": 0, "P3": 42, "SP": DRAM, f"mem@{DRAM - 2}": [0, 42]},
    ),
    ("push-sp-stores-new-sp", "PUSH SP", {"SP": DRAM - 1, f"mem@{DRAM - 1}": [DRAM - 1]}),
    ("pop-sp-increments", "MOVI P1, 7\n PUSH P1\n POP SP", {"SP": DRAM}),
    (
        "branches",
        """    MOVI P1, -1
    BLT P1, a
    MOVI P2, 9
a:  BGT P1, b
    MOVI P3, 9
b:  BNE P0, c
    MOVI P4, 9
c:  BEQ P0, d
    MOVI P5, 9
d:  BNE P1, e
    MOVI P6, 9
e:  BEQ P1, f
    MOVI P7, 9
f:  NOP""",
        {"P2": 0, "P3": 9, "P4": 9, "P5": 0, "P6": 0, "P7": 9, "steps": 12},
    ),
    ("bgt-taken", "MOVI P1, 1\n BGT P1, x\n MOVI P2, 9\nx: NOP", {"P2": 0}),
    ("jump", "JUMP over\n MOVI P1, 1\nover: MOVI P2, 2", {"P1": 0, "P2": 2, "steps": 3}),
    ("jump-back", "MOVI P1, 3\nloop: ADDI P1, P1, -1\n BGT P1, loop", {"P1": 0, "steps": 8, "flags": "Z"}),
    (
        "call-ret",
        """    CALL fn
    MOVI P2, 2
    HALT
fn: MOVI P1, 1
    RET""",
        {"P1": 1, "P2": 2, "LR": 1, "pc": 2, "steps": 5},
    ),
    (
        "sum-1-to-1000",
        """    MOVI P1, 0
    MOVI P2, 1000
loop:
    ADD P1, P1, P2
    ADDI P2, P2, -1
    BNE P2, loop""",
        {"P1": 500500, "P2": 0, "steps": 3003, "flags": "Z"},
    ),
]


@pytest.mark.parametrize("name, snippet, expected", CASES, ids=[c[0] for c in CASES])
def test_scalar(name: str, snippet: str, expected: dict) -> None:
    """The hand-worked state, on the simulator and on the ISA's plain executor, which agree on everything else."""
    sim, ref = run_asm(snippet), run_ref(snippet)
    check_state(sim, expected)
    check_state(ref, expected)
    assert_same_state(sim, ref, name)


def test_sum_loop_is_500500() -> None:
    """The seed-style loop: MOVI/ADD/ADDI/BNE/HALT summing 1..1000."""
    sim = run_asm("MOVI P1, 0\n MOVI P2, 1000\nloop: ADD P1, P1, P2\n ADDI P2, P2, -1\n BNE P2, loop")
    assert sim.regs[1] == 500500
    assert sim.halted


def test_reset_state() -> None:
    sim = run_asm("NOP")
    assert sim.regs[30] == DRAM and sum(sim.regs) == DRAM and sim.acc == 0 and sim.flags == 0
    sim.regs[5] = 3
    sim.reset()
    assert sim.regs[5] == 0 and sim.pc == 0 and sim.steps == 0 and not sim.halted


def test_rerun_reuses_translated_blocks() -> None:
    sim = run_asm("MOVI P1, 0\n MOVI P2, 10\nloop: ADD P1, P1, P2\n ADDI P2, P2, -1\n BNE P2, loop")
    blocks = len(sim.block_list)
    sim.reset()
    sim.run()
    assert sim.regs[1] == 55 and len(sim.block_list) == blocks
    assert sim.instruction_counts().tolist() == [2, 2, 20, 20, 20, 2]


def test_every_scalar_instruction_has_a_case() -> None:
    from pcc import isa

    used = set().union(*(mnemonics_of(c[1]) for c in CASES)) | {"HALT"}
    scalar = {i.mnemonic for i in isa.INSTRUCTIONS if not i.is_tensor}
    assert scalar <= used, sorted(scalar - used)


def test_reset_clears_everything_the_run_wrote() -> None:
    import numpy as np

    text = """.data
d: .word 5, 6
.text
    MOVI P1, 7
    STORE P1, [P0 + 100]
    MOVI P2, 4000
    STOREV P1, [P2 + 0], 3
    PUSH P1
    TLOAD 10, [P0 + d], 1, 2, 2
    TLOADW 0, [P0 + d], 5
    TLOADC 3, [P0 + d], 1, 2, 2
    TSTORE [P0 + 9000], 10, 1, 2, 2
    MATMUL 20, 10, 0, 1, 1, 2, 1
    TRELU 30, 10, 2"""
    sim = run_asm(text)
    assert np.count_nonzero(sim.mem) == 2 + 1 + 2 + 1 + 2  # data, STORE, STOREV (7, 4000, 0), PUSH, TSTORE
    assert np.count_nonzero(sim.spad_a) and np.count_nonzero(sim.spad_w) and np.count_nonzero(sim.spad_c)
    sim.write_memory(70000, np.array([1, 2, 3]))
    sim.reset()
    assert np.count_nonzero(sim.mem) == 2 and sim.mem[0:2].tolist() == [5, 6]
    assert not np.count_nonzero(sim.spad_a) and not np.count_nonzero(sim.spad_w) and not np.count_nonzero(sim.spad_c)
    sim.run()
    assert np.count_nonzero(sim.mem) == 8
    sim.spad_a[500000] = 1  # a direct write is not tracked: full=True clears it
    sim.reset(full=True)
    assert not np.count_nonzero(sim.spad_a) and np.count_nonzero(sim.mem) == 2


def test_reset_restores_data_the_run_wrote_over() -> None:
    """Only written data words are loaded again; a run that overwrites part of a segment sees the original next."""
    text = """.data
pad: .zero 3
d: .word 5, 6, 7, 8
.text
    LOAD P1, [P0 + d]
    ADDI P1, P1, 10
    STORE P1, [P0 + 4]
    STORE P1, [P0 + 1]"""
    sim = run_asm(text)
    assert sim.mem[0:7].tolist() == [0, 15, 0, 5, 15, 7, 8]
    for _ in range(2):  # the same result from the restored data, twice
        sim.reset()
        assert sim.mem[0:7].tolist() == [0, 0, 0, 5, 6, 7, 8]
        sim.run()
        assert sim.mem[0:7].tolist() == [0, 15, 0, 5, 15, 7, 8]
