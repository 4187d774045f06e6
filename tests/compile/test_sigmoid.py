"""nn.sigmoid lowered to pent.lut (TLUT after an optional EADD index rescale): the simulator equals the pent
reference bit for bit, the error against the float sigmoid stays within the bound the lowering implies, and a
compiled ONNX model with a Sigmoid matches onnxruntime."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
from compile_helpers import Builder, compile_sim, sim_matches_reference

from pcc import pent_reference
from pcc.dialects import nn, pent
from pcc.ir import Module
from pcc.passes.quantize_lower import sigmoid

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "frontends"))


def test_lut_reference_by_hand() -> None:
    # the table holds the outputs for indices -2..2; beyond either end the end entries
    got = pent_reference.lut(np.array([-5, -2, 0, 1, 2, 9]), np.array([10, 20, 30, 40, 50]), -2)
    np.testing.assert_array_equal(got, [10, 10, 30, 40, 50, 50])


def conv_sigmoid(seed: int) -> Module:
    b = Builder("sig", seed)
    x = b.arg("x", (1, 3, 6, 6))
    y = b.op(nn.Conv2d, [x, b.w("w1", (4, 3, 3, 3))], "conv", pads=[1, 1, 1, 1])
    y = b.op(nn.Sigmoid, [y], "sig")
    z = b.op(nn.Gemm, [b.op(nn.Flatten, [y], "flat"), b.w("fw", (5, 144))], "fc", trans_b=True)
    return b.done(z, y)


@pytest.mark.parametrize("pents", [4, 6, 8])
def test_sigmoid_bit_exact_on_random_inputs(tmp_path, pents: int) -> None:  # noqa: ANN001
    unfused = "fuse{table=false}"
    m, _, prog = compile_sim(conv_sigmoid(pents), tmp_path, act_pents=pents, fuse=unfused)
    (lut,) = m.main.ops_of(pent.Lut)
    assert lut.operands[1].type.size <= 4096  # the table-entries limit (the index is rescaled above it)
    sim_matches_reference(m, prog, seeds=3, scale=3.0)
    # a small scratchpad A: several tiles, the table beside each
    a_words = lut.operands[1].type.size + 60
    small = f"tile{{a-words={a_words}}}"
    m2, _, prog2 = compile_sim(conv_sigmoid(pents), tmp_path, act_pents=pents, fuse=unfused, tile=small)
    (lut2,) = m2.main.ops_of(pent.Lut)
    assert lut2.attr("tile")[0] < lut2.results[0].type.size
    sim_matches_reference(m2, prog2, seeds=2, scale=3.0)


@pytest.mark.parametrize("pents", [4, 8])
def test_sigmoid_fused_into_the_conv_bit_exact(tmp_path, pents: int) -> None:  # noqa: ANN001
    """The fuse pass puts the table on the conv (EADD + TLUT on each tile, the table at the top of A): the same
    integers as the unfused program, and fewer cycles (no store and reload of the conv's output)."""
    m, compiled, prog = compile_sim(conv_sigmoid(pents), tmp_path, act_pents=pents)
    assert not m.main.ops_of(pent.Lut)
    (conv,) = m.main.ops_of(pent.Conv2d)
    assert conv.attr("act") == "lut"
    sim_matches_reference(m, prog, seeds=3, scale=3.0)
    _, unfused, _ = compile_sim(conv_sigmoid(pents), tmp_path, act_pents=pents, fuse="fuse{table=false}")
    assert compiled.cycles < unfused.cycles
    # a scratchpad A that holds the table and 60 words: the conv runs in several row tiles below the table
    small = f"tile{{a-words={len(conv.attr('table')) + 60}}}"
    m2, _, prog2 = compile_sim(conv_sigmoid(pents), tmp_path, act_pents=pents, tile=small)
    (conv2,) = m2.main.ops_of(pent.Conv2d)
    assert conv2.attr("act") == "lut" and conv2.attr("tile")[1] < conv2.results[0].type.shape[2]
    sim_matches_reference(m2, prog2, seeds=2, scale=3.0)


def sigmoid_only(n: int = 4096) -> Module:
    b = Builder("sig", 0)
    x = b.arg("x", (1, n))
    return b.done(b.op(nn.Sigmoid, [x], "sig"))


@pytest.mark.parametrize("pents", [4, 6, 8])
def test_sigmoid_error_within_its_bound(tmp_path, pents: int) -> None:  # noqa: ANN001
    """|y - sigmoid(x)| <= s_y/2 (output rounding) + (s_x/2 + step/2) / 4 (input and index rounding times the
    largest slope 1/4), for inputs inside the calibrated range [-8, 8]."""
    from pcc.passes.quantize import quantize_module

    m = sigmoid_only()
    x = np.linspace(-8, 8, 4096, dtype=np.float32)[None]
    quantize_module(m, {"x": x}, act_pents=pents)
    q_in, lut, q_out = m.main.body
    s_x, s_y = q_in.attr("scale"), q_out.attr("scale")
    step = s_x if lut.attr("mult") is None else s_x * 2.0 ** lut.attr("shift") / lut.attr("mult")
    err = np.abs(pent_reference.run(m, {"x": x})[0].astype(np.float64) - sigmoid(x.astype(np.float64)))
    assert err.max() <= s_y / 2 + (s_x / 2 + step / 2) / 4 + 1e-12
    assert err.max() < {4: 5e-3, 6: 7e-4, 8: 6e-4}[pents]  # docs/compiler.md states these


def test_onnx_sigmoid_model_matches_onnxruntime(tmp_path) -> None:  # noqa: ANN001
    """Compile an ONNX model (conv with pentary-grid weights, Sigmoid, global average pool) and simulate it: the
    result stays within 1e-3 of onnxruntime's (8-pent activations)."""
    from onnx import helper
    from onnx_util import model, ort_run

    from pcc.backend.assembler import assemble_file
    from pcc.drivers.compile import compile_model
    from pcc.runtime.simulator import run_program

    rng = np.random.default_rng(0)
    w = (rng.integers(-2, 3, (4, 3, 3, 3)) * 0.1).astype(np.float32)  # exactly s x {-2..2}
    nodes = [
        helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]),
        helper.make_node("Sigmoid", ["c"], ["s"]),
        helper.make_node("GlobalAveragePool", ["s"], ["y"]),
    ]
    x = rng.standard_normal((1, 3, 8, 8)).astype(np.float32)
    onnx_model = model(nodes, {"x": x}, ["y", "s"], 13, {"w": w})
    path = tmp_path / "sig.onnx"
    path.write_bytes(onnx_model.SerializeToString())
    np.savez(tmp_path / "cal.npz", x=rng.standard_normal((16, 3, 8, 8)).astype(np.float32))
    compile_model(path, output=tmp_path / "sig.pasm", calibration=tmp_path / "cal.npz")
    prog = assemble_file(tmp_path / "sig.pasm")
    want_y, want_s = ort_run(onnx_model, {"x": x})
    got = run_program(prog, {"x": x})
    assert np.abs(got["s"] - want_s).max() < 1e-3  # measured 1.8e-4
    assert np.abs(got["y"] - want_y).max() < 1e-3  # measured 2.5e-5
