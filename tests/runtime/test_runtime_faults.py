"""Faults stop the run with a PccError that names the instruction, its text address and its source line.

Each case: (name, snippet, setup, max_steps, line of the faulting instruction in the snippet, mnemonic, words
the message must contain). The snippet is run as written (no HALT appended). The ISA's plain executor
(``runtime/isa_ref.py``) stops on the same fault (message, location, note) and leaves the same state.
"""

from __future__ import annotations

import dataclasses

import pytest
from runtime_helpers import DRAM, assert_same_state, outcome, preset, run_asm

from pcc.backend.assembler import assemble
from pcc.backend.program import Instruction, Program
from pcc.diagnostics import PccError
from pcc.runtime import isa_ref
from pcc.runtime.simulator import Simulator

FAULTS: list[tuple[str, str, dict, int, int, str, tuple[str, ...]]] = [
    (
        "load-negative",
        "MOVI P1, -1\nLOAD P2, [P1 + 0]\nHALT",
        {},
        100,
        2,
        "LOAD",
        ("address -1", "outside main memory"),
    ),
    ("store-past-end", "STORE P1, [SP + 0]\nHALT", {}, 100, 1, "STORE", (f"address {DRAM}",)),
    ("loadv-span", "NOP\nLOADV P1, [SP - 1], 2\nHALT", {}, 100, 2, "LOADV", (f"address {DRAM}",)),
    ("storev-negative", "STOREV P1, [P0 - 1], 2\nHALT", {}, 100, 1, "STOREV", ("address -1",)),
    ("push-overflow", "MOVI SP, 0\nPUSH P1\nHALT", {}, 100, 2, "PUSH", ("stack overflow",)),
    ("pop-underflow", "POP P1\nHALT", {}, 100, 1, "POP", ("stack underflow",)),
    ("quant-by-zero", "MOVI P1, 5\nQUANT P2, P1, P0\nHALT", {}, 100, 2, "QUANT", ("division by zero",)),
    ("quant-negative-step", "MOVI P3, -2\nQUANT P2, P1, P3\nHALT", {}, 100, 2, "QUANT", ("P3 = -2",)),
    ("step-limit-loop", "NOP\nloop: JUMP loop\nHALT", {}, 100, 2, "JUMP", ("step limit", "100")),
    ("step-limit-mid-block", "NOP\nNOP\nNOP\nNOP\nNOP\nNOP\nHALT", {}, 4, 5, "NOP", ("step limit",)),
    ("ret-to-nowhere", "MOVI LR, 100\nRET\nHALT", {}, 100, 2, "RET", ("RET to address 100",)),
    ("run-past-end", "NOP\nNOP", {}, 100, 2, "NOP", ("past the end",)),
    (
        "jump-into-tensor-instruction",
        "JUMP 2\nMATMUL 0, 0, 0, 1, 1, 1, 0\nHALT",
        {},
        100,
        1,
        "JUMP",
        ("not the start of an instruction",),
    ),
    ("spad-a-range", "NOP\nTRELU 600000, 0, 10\nHALT", {}, 100, 2, "TRELU", ("scratchpad A", "600000")),
    ("spad-w-range", "MATMUL 0, 0, 2097150, 1, 2, 2, 0\nHALT", {}, 100, 1, "MATMUL", ("scratchpad W",)),
    ("spad-c-range", "REQUANT 0, 131070, 3, 1, 0, 4\nHALT", {}, 100, 1, "REQUANT", ("scratchpad C",)),
    ("dma-past-end", "TLOAD 0, [SP + 0], 1, 4, 4\nHALT", {}, 100, 1, "TLOAD", ("main-memory access", str(DRAM))),
    ("dma-negative-stride", "TSTORE [P0 + 3], 0, 3, 1, -2\nHALT", {}, 100, 1, "TSTORE", ("access -1..3",)),
    ("tloadw-past-end", "MOVI P1, 1\nADD P1, P1, SP\nTLOADW 0, [P1 - 2], 40\nHALT", {}, 100, 3, "TLOADW", ("TLOADW",)),
    (
        "requantc-multiplier",
        "REQUANTC 0, 0, 1, 2, 10, 4\nHALT",
        {"C@10": [5, -1, 0, 0]},
        100,
        1,
        "REQUANTC",
        ("multiplier of channel 1", "-1"),
    ),
    (
        "requantc-shift",
        "REQUANTC 0, 0, 1, 2, 10, 4\nHALT",
        {"C@10": [5, 1, 0, 63]},
        100,
        1,
        "REQUANTC",
        ("shift of channel 1", "63"),
    ),
]


@pytest.mark.parametrize("name, snippet, setup, max_steps, line, mnemonic, words", FAULTS, ids=[f[0] for f in FAULTS])
def test_fault(name: str, snippet: str, setup: dict, max_steps: int, line: int, mnemonic: str, words: tuple) -> None:
    with pytest.raises(PccError) as info:
        run_asm(snippet, setup=setup, max_steps=max_steps, halt=False)
    err = info.value
    assert err.loc is not None and err.loc.file == "case.pasm" and err.loc.line == line, err.format()
    program = assemble(snippet, "case.pasm")
    addr = next(i.addr for i in program.instructions if i.line == line)
    assert f"at text address {addr}: {mnemonic}" in err.message, err.message
    for w in words:
        assert w in err.message, err.message
    text = err.format()
    assert text.startswith(f"case.pasm:{line}:1: error: ")
    assert snippet.splitlines()[line - 1] in text  # the source line is shown
    # the ISA's plain executor stops on the same fault, in the same state
    sim = Simulator(program)
    ref = isa_ref.Machine(program)
    preset(sim, setup)
    preset(ref, setup)
    got = outcome(lambda: sim.run(max_steps))
    assert got == outcome(lambda: isa_ref.run(ref, max_steps)) == (err.message, str(err.loc), *err.notes)
    assert_same_state(sim, ref, name)


def test_step_limit_counts_exactly() -> None:
    program = assemble("NOP\nNOP\nNOP\nNOP\nNOP\nNOP\nHALT", "x.pasm")
    sim = Simulator(program)
    with pytest.raises(PccError, match="step limit"):
        sim.run(max_steps=4)
    assert sim.steps == 4 and sim.pc == 4
    sim.reset()
    sim.run(max_steps=7)  # exactly enough
    assert sim.halted and sim.steps == 7


def test_fault_leaves_registers_written_back() -> None:
    sim = Simulator(assemble("MOVI P1, 5\nMOVI P2, -1\nLOAD P3, [P2 + 0]\nHALT"))
    with pytest.raises(PccError) as info:
        sim.run()
    assert sim.regs[1] == 5 and sim.regs[2] == -1 and sim.pc == 2 and sim.steps == 2
    assert info.value.notes == ["2 instructions ran before the fault"]


def test_invalid_opcode_in_a_hand_built_program() -> None:
    program = assemble("MOVI P1, 1\nNOP\nHALT", "h.pasm")
    program.instructions[1] = dataclasses.replace(program.instructions[1], op=0)
    with pytest.raises(PccError, match="invalid opcode 0") as info:
        Simulator(program).run()
    assert info.value.loc.line == 2 and "NOP" not in info.value.message.split("(")[0]


def test_invalid_fields_in_a_hand_built_program() -> None:
    program = Program(instructions=[Instruction(5, (40, 1, 2), 0), Instruction(2, (), 1)])  # ADD P40
    with pytest.raises(PccError, match="register 40 out of range"):
        Simulator(program).run()
    program = Program(instructions=[Instruction(25, (30, 0, 0, 5), 0), Instruction(2, (), 1)])  # LOADV P30.., 5
    with pytest.raises(PccError, match="rd \\+ n <= 32"):
        Simulator(program).run()


def test_empty_program() -> None:
    with pytest.raises(PccError, match="no instructions"):
        Simulator(Program()).run()


def test_data_outside_word_range() -> None:
    import numpy as np

    from pcc.backend.program import DataSegment

    program = Program(instructions=[Instruction(2, (), 0)], data=[DataSegment(0, np.array([10**12]))])
    with pytest.raises(PccError, match="word range"):
        Simulator(program)


def test_run_past_end_counts_the_last_instruction() -> None:
    sim = Simulator(assemble("NOP\nMOVI P1, 0\nBNE P1, 0\n"))
    with pytest.raises(PccError, match="past the end"):
        sim.run()
    assert sim.steps == 3 and sim.pc == 2
