"""A "patchify" convolution (stride equal to the kernel, no padding: ViT's 16x16 patch embedding, beyond CONV's
stride field) compiles as space-to-depth and a 1x1 convolution (``canonicalize``'s ``PatchifyConv``): the float
rewrite is exact to rounding, the simulator equals the pent reference bit for bit, and with pentary-exact
weights the program matches onnxruntime's convolution up to activation rounding."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
from compile_helpers import Builder, compile_sim, sim_matches_reference

from pcc import interpreter
from pcc.dialects import nn, pent
from pcc.ir import Module
from pcc.pass_manager import PassManager, parse_pipeline

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "frontends"))

from onnx_util import ort_run  # noqa: E402

from pcc.backend.assembler import assemble_file  # noqa: E402
from pcc.drivers.compile import compile_model  # noqa: E402
from pcc.runtime.simulator import run_program  # noqa: E402

# (input shape, output channels, kernel, group): 16x16 patches; 14x14 on a 30x44 image (the rows and columns no
# patch covers are cropped); a grouped one
CASES = [((1, 3, 32, 32), 8, (16, 16), 1), ((2, 2, 30, 44), 4, (14, 14), 1), ((1, 4, 26, 13), 6, (13, 13), 2)]


def patchify(shape: tuple, o: int, k: tuple, g: int) -> Module:
    b = Builder("pf", 0)
    x = b.arg("x", shape)
    ws = (o, shape[1] // g, *k)
    w = b.w("w", ws, data=(b.rng.integers(-2, 3, ws) * 0.05).astype(np.float32))
    y = b.op(nn.Conv2d, [x, w, b.w("b", (o,))], "patch", strides=list(k), group=g)
    return b.done(y)


@pytest.mark.parametrize("case", CASES, ids=[f"{c[0]}-k{c[2][0]}" for c in CASES])
def test_patchify_rewrite_is_exact_in_float(case: tuple) -> None:
    m = patchify(*case)
    xs = {"x": np.random.default_rng(3).standard_normal(case[0]).astype(np.float32)}
    want = interpreter.run(m, xs)[m.main.outputs[0].name]
    PassManager(parse_pipeline("canonicalize"), verify_each=True).run(m)
    (conv,) = m.main.ops_of(nn.Conv2d)
    kh, kw = case[2]
    assert conv.attr("strides") == [1, 1] and conv.operands[1].type.shape[2:] == (1, 1)
    assert conv.operands[0].type.shape[1] == case[0][1] * kh * kw  # the patches' pixels as channels
    got = interpreter.run(m, xs)[m.main.outputs[0].name]
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_small_stride_conv_is_kept() -> None:
    m = patchify((1, 3, 16, 16), 4, (4, 4), 1)  # stride 4 is within CONV's range: one strided CONV
    PassManager(parse_pipeline("canonicalize"), verify_each=True).run(m)
    (conv,) = m.main.ops_of(nn.Conv2d)
    assert conv.attr("strides") == [4, 4]


@pytest.mark.parametrize("case", CASES[:2], ids=[f"{c[0]}-k{c[2][0]}" for c in CASES[:2]])
def test_patchify_bit_exact_on_simulator(tmp_path, case: tuple) -> None:  # noqa: ANN001
    m, _, prog = compile_sim(patchify(*case), tmp_path)
    (conv,) = m.main.ops_of(pent.Conv2d)
    assert conv.attr("strides") == [1, 1]
    sim_matches_reference(m, prog, seeds=2)


def test_patch16_conv_matches_onnxruntime(tmp_path) -> None:  # noqa: ANN001
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    w = (rng.integers(-2, 3, (16, 3, 16, 16)) * 0.02).astype(np.float32)  # pentary-exact: one scale per channel
    bias = rng.standard_normal(16).astype(np.float32) * 0.1
    node = helper.make_node("Conv", ["x", "w", "b"], ["y"], kernel_shape=[16, 16], strides=[16, 16])
    graph = helper.make_graph(
        [node], "patch16", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 48, 64])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 16, 3, 4])],
        [numpy_helper.from_array(w, "w"), numpy_helper.from_array(bias, "b")],
    )  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.save(model, tmp_path / "m.onnx")
    x = rng.standard_normal((1, 3, 48, 64)).astype(np.float32)
    np.savez(tmp_path / "cal.npz", x=np.concatenate([x, rng.standard_normal((7, 3, 48, 64)).astype(np.float32)]))
    compile_model(tmp_path / "m.onnx", output=tmp_path / "m.pasm", calibration=tmp_path / "cal.npz")
    (want,) = ort_run(model, {"x": x})
    (got,) = run_program(assemble_file(tmp_path / "m.pasm"), {"x": x}).values()
    err = float(np.abs(got - want).max() / np.abs(want).max())
    print(f"patch16 conv vs onnxruntime: {err:.2e} of the range")
    assert err < 1e-2, err
