"""The ISA's plain executor (``runtime/isa_ref.py``) is complete, documented by docs/ISA.md's text, and the
simulator's engines answer to it.

* every opcode of the table has a rule, whose parameters are the instruction's fields and whose docstring is the
  semantics text docs/ISA.md shows;
* random programs (scalar code, loops, branches, a call, tensor instructions, faults) on several memory images:
  the simulator with the numpy closures, the compiled loops (where numba is) and the int8 GEMM (where torch is)
  leaves exactly the executor's state (registers, ACC, flags, PC, steps, cycles, main memory, scratchpads) or
  stops on exactly its fault;
* compiled models (the digits CNN of the benchmarks, a ResNet-shaped block with a residual, an op zoo with grouped
  and depthwise convolutions, tiled onto small scratchpads) give the executor's outputs and final state on every
  engine, in a run after another (whose reset then leaves the words the program writes before reading them).
"""

from __future__ import annotations

import inspect
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from program_gen import DATA_WORDS, machine_setup, memory_image, program
from runtime_helpers import assert_same_state, outcome, preset

from pcc import isa
from pcc.backend.assembler import assemble
from pcc.backend.program import Program
from pcc.runtime import boundary, intgemm, isa_ref, kernels
from pcc.runtime.simulator import Simulator, run_program

# (gemm, fused) of every engine this machine has: numpy closures with float64 BLAS, the compiled loops with the
# direct products, the int8 GEMM (with the compiled loops where numba is)
ENGINES = [("float", False)]
if kernels.available():
    ENGINES.append(("float", True))
if intgemm.available():
    ENGINES.append(("int8", None))


def test_every_opcode_has_a_rule() -> None:
    missing = [i.mnemonic for i in isa.INSTRUCTIONS if i.opcode not in isa_ref.RULES]
    assert not missing, f"no executor rule for {', '.join(missing)}"
    assert set(isa_ref.RULES) == {i.opcode for i in isa.INSTRUCTIONS}


@pytest.mark.parametrize("ins", isa.INSTRUCTIONS, ids=lambda i: i.mnemonic)
def test_rule_takes_the_fields_and_is_documented_by_the_table(ins: isa.Instr) -> None:
    """The rule's parameters are the fields in table order (a name that would hide the machine ends in ``_``), and
    its docstring is the semantics paragraph of pcc/isa.py that docs/ISA.md prints."""
    fn = isa_ref.RULES[ins.opcode]
    params = list(inspect.signature(fn).parameters)
    assert params[0] == "m" and [p.rstrip("_") for p in params[1:]] == list(ins.field_names), params
    assert fn.__doc__ is not None, f"{ins.mnemonic}'s rule has no docstring"
    assert " ".join(fn.__doc__.split()) == ins.semantics, f"{ins.mnemonic}: the rule's docstring and the table differ"


def test_docs_show_the_rules_text() -> None:
    doc = (Path(__file__).resolve().parents[2] / "docs" / "ISA.md").read_text(encoding="utf-8")
    for ins in isa.INSTRUCTIONS:
        assert " ".join(isa_ref.RULES[ins.opcode].__doc__.split()) in doc, ins.mnemonic


# ---- random programs ------------------------------------------------------------------------------------------


def _compare(text: str, seed: int, max_steps: int = 4000) -> None:
    """Run ``text`` on three memory images with every engine and the executor: the same outcome and state."""
    prog = assemble(text, "random.pasm")
    rng = np.random.default_rng(seed)
    images = [memory_image(rng) for _ in range(3)]
    setup = machine_setup(rng)
    sims = [Simulator(prog, gemm=gemm, fused=fused) for gemm, fused in ENGINES]
    for k, image in enumerate(images):
        ref = isa_ref.Machine(prog)
        ref.mem[:DATA_WORDS] = image
        preset(ref, setup)
        want = outcome(lambda ref=ref: isa_ref.run(ref, max_steps))
        for sim, engine in zip(sims, ENGINES, strict=True):
            sim.reset()
            sim.write_memory(0, image)
            preset(sim, setup)
            got = outcome(lambda sim=sim: sim.run(max_steps))
            assert got == want, f"image {k}, engine {engine}:\n{text}"
            assert_same_state(sim, ref, f"image {k}, engine {engine}")


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(program(), st.integers(0, 2**32 - 1))
def test_random_programs_match_the_executor(text: str, seed: int) -> None:
    _compare(text, seed)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(program(tensor=False), st.integers(0, 2**32 - 1))
def test_random_scalar_programs_match_the_executor(text: str, seed: int) -> None:
    _compare(text, seed)


def test_a_fault_mid_block_leaves_the_flags_of_the_instructions_before_it() -> None:
    """A flag group is stored by its last writer before an instruction that can fault, not only the block's last."""
    text = "MOVI P1, -1\nADD P2, P1, P1\nLOAD P3, [P1 + 0]\nADD P4, P0, P0\nHALT\n"
    prog = assemble(text, "f.pasm")
    sim, ref = Simulator(prog), isa_ref.Machine(prog)
    assert outcome(sim.run) == outcome(lambda: isa_ref.run(ref))
    assert_same_state(sim, ref)
    assert sim.flag("N") and not sim.flag("Z")


# ---- compiled models ------------------------------------------------------------------------------------------

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "compile"))


def digits_cnn():  # noqa: ANN201
    """The digits CNN of the benchmarks: conv 1->16, BN, ReLU, max pool, conv 16->32, BN, ReLU, max pool, fc."""
    from compile_helpers import Builder
    from pass_helpers import bn_params

    from pcc.dialects import nn

    b = Builder("digits", 0)
    x = b.arg("x", (1, 1, 8, 8))
    y = b.op(nn.Conv2d, [x, b.w("w1", (16, 1, 3, 3)), b.w("b1", (16,), 0.1)], "conv1", pads=[1, 1, 1, 1])
    y = b.op(nn.Relu, [b.op(nn.BatchNorm, [y, *bn_params(b, "bn1", 16)], "bn1")], "relu1")
    y = b.op(nn.MaxPool, [y], "pool1", kernel_shape=[2, 2], strides=[2, 2])
    y = b.op(nn.Conv2d, [y, b.w("w2", (32, 16, 3, 3), 0.2), b.w("b2", (32,), 0.1)], "conv2", pads=[1, 1, 1, 1])
    y = b.op(nn.Relu, [b.op(nn.BatchNorm, [y, *bn_params(b, "bn2", 32)], "bn2")], "relu2")
    y = b.op(nn.MaxPool, [y], "pool2", kernel_shape=[2, 2], strides=[2, 2])
    y = b.op(nn.Flatten, [y], "flatten", axis=1)
    y = b.op(nn.Gemm, [y, b.w("fc", (10, 128), 0.1), b.w("fcb", (10,), 0.1)], "fc", trans_b=True)
    return b.done(y)


def _corpus(name: str):  # noqa: ANN202
    from compile_helpers import small_cnn
    from test_compile_sim import zoo

    return {
        "digits-cnn": (digits_cnn, {}),
        "resnet-block": (lambda: small_cnn(0), {}),
        "resnet-block-tiled": (lambda: small_cnn(1), {"tile": "tile{a-words=200 w-pents=130 c-words=40}"}),
        "zoo": (lambda: zoo(0), {"act_pents": 6}),
    }[name]


@pytest.mark.parametrize("name", ["digits-cnn", "resnet-block", "resnet-block-tiled", "zoo"])
def test_compiled_models_match_the_executor(tmp_path: Path, name: str) -> None:
    from compile_helpers import compile_sim, random_inputs

    from pcc import pent_reference

    build, options = _corpus(name)
    m, _, prog = compile_sim(build(), tmp_path, **options)
    quants, _ = pent_reference.program_io(m)
    x = random_inputs(m, 3, 2.0)

    def quantized(x: dict) -> dict:
        return {
            a.name or "": pent_reference.quantize_input(x[a.name or ""], qop.attr("scale"), qop.results[0].type.pents)
            for a, qop in zip(m.main.args, quants, strict=True)
        }

    q, other = quantized(x), quantized(random_inputs(m, 4, 2.0))
    ref = isa_ref.Machine(prog)
    for decl, words in boundary.prepare_inputs(prog, q, quantized=True)[0]:
        ref.mem[decl.addr : decl.addr + words.size] = words
    isa_ref.run(ref)
    assert ref.halted and ref.cycles > 0
    want = pent_reference.run_int(m, q)
    for gemm, fused in ENGINES:
        sim = Simulator(prog, gemm=gemm, fused=fused)
        run_program(prog, other, quantized=True, simulator=sim)  # a run before: the next reset is lazy
        outs = run_program(prog, q, quantized=True, simulator=sim)
        assert_same_state(sim, ref, f"{name}, engine {(gemm, fused)}")
        for decl, w in zip(prog.outputs, want, strict=True):
            np.testing.assert_array_equal(outs[decl.name], w, err_msg=f"{name}: output {decl.name}")


def test_empty_program_and_bad_pc() -> None:
    with pytest.raises(Exception, match="no instructions"):
        isa_ref.run(isa_ref.Machine(Program()))
    prog = assemble("NOP\nHALT\n", "p.pasm")
    ref, sim = isa_ref.Machine(prog), Simulator(prog)
    ref.pc = sim.pc = 7
    assert outcome(lambda: isa_ref.run(ref)) == outcome(sim.run)


@pytest.mark.parametrize("name", ["digits-cnn", "zoo"])
def test_compiled_models_stopped_by_the_budget_match_the_executor(tmp_path: Path, name: str) -> None:
    """A run stopped by its step budget right after each fused requantise-and-store whose values the simulator
    leaves out of A (they die there unread: Simulator.elide) or each TLOAD it leaves unexecuted (its CONV reads the
    source: Simulator.forwarded), and at each instruction until the values die, leaves the executor's state (the
    values back in A, the words a lazy reset left cleared), on every engine, and so does the rest of the run; so
    does a run begun at a forwarded TLOAD's CONV with A not holding its source."""
    from compile_helpers import compile_sim, random_inputs

    from pcc import pent_reference

    build, options = _corpus(name)
    m, _, prog = compile_sim(build(), tmp_path, **options)
    quants, _ = pent_reference.program_io(m)
    qs = [
        {
            a.name or "": pent_reference.quantize_input(x[a.name or ""], qop.attr("scale"), qop.results[0].type.pents)
            for a, qop in zip(m.main.args, quants, strict=True)
        }
        for x in (random_inputs(m, 3, 2.0), random_inputs(m, 4, 2.0))
    ]
    words = boundary.prepare_inputs(prog, qs[1], quantized=True)[0]
    probe = Simulator(prog)
    run_program(prog, qs[0], quantized=True, simulator=probe)
    assert probe._elided, "no elided store: the test would not test it"
    steps = sorted({s for t, k, *_ in probe._elided.values() for s in range(t + 1, k + 1)})
    for gemm, fused in ENGINES:
        sim = Simulator(prog, gemm=gemm, fused=fused)
        for s in steps:
            run_program(prog, qs[0], quantized=True, simulator=sim)  # a whole run first: the next reset is lazy
            sim.reset(lazy=True)
            ref = isa_ref.Machine(prog)
            for decl, w in words:
                sim.write_memory(decl.addr, w)
                ref.mem[decl.addr : decl.addr + w.size] = w
            assert outcome(lambda sim=sim, s=s: sim.run(s)) == outcome(lambda ref=ref, s=s: isa_ref.run(ref, s))
            assert_same_state(sim, ref, f"{name}, engine {(gemm, fused)}, {s} steps")
            sim.run()  # and on from there to HALT
            isa_ref.run(ref)
            assert_same_state(sim, ref, f"{name}, engine {(gemm, fused)}, {s} steps, then on")
    # a run begun (PC set) at the CONV of a forwarded TLOAD, with A not holding the TLOAD's source: A is read
    for c in probe._sources:
        sim, ref = Simulator(prog), isa_ref.Machine(prog)
        for decl, w in words:
            sim.write_memory(decl.addr, w)
            ref.mem[decl.addr : decl.addr + w.size] = w
        sim.pc = ref.pc = prog.instructions[c].addr
        assert outcome(sim.run) == outcome(lambda ref=ref: isa_ref.run(ref))
        assert_same_state(sim, ref, f"{name}, run from instruction {c}")
