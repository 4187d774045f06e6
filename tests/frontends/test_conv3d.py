"""ONNX 3-D Conv and ConvTranspose: imported as depth-tap gathers around a 2-D (transposed) convolution; the
float interpreter matches onnxruntime, and a 3-D conv compiles to the pentary machine and simulates."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import helper
from onnx_util import model, ort_run

from pcc import interpreter
from pcc.frontends import onnx as onnx_frontend

R = np.random.default_rng(3)


def f32(*shape: int) -> np.ndarray:
    return R.standard_normal(shape).astype(np.float32)


# (id, input shape, weight shape, attributes, bias)
CONV = [
    ("plain", (1, 2, 5, 6, 6), (3, 2, 3, 3, 3), {}, True),
    ("pads-strides", (2, 2, 7, 6, 5), (4, 2, 3, 2, 3), {"pads": [1, 0, 1, 2, 1, 0], "strides": [2, 1, 2]}, False),
    ("dilated-grouped", (1, 4, 8, 6, 6), (4, 2, 2, 3, 3), {"dilations": [3, 1, 2], "group": 2, "pads": [0, 1, 1] * 2},
     True),
    ("same-upper", (1, 3, 5, 5, 4), (2, 3, 3, 3, 3), {"auto_pad": "SAME_UPPER", "strides": [2, 2, 1]}, True),
]  # fmt: skip
CONV_T = [
    ("plain", (1, 2, 3, 4, 4), (2, 3, 3, 3, 3), {}, True),
    ("stride-pads-outpad", (1, 2, 4, 3, 3), (2, 2, 3, 3, 2),
     {"strides": [2, 2, 1], "pads": [1, 0, 1, 0, 1, 0], "output_padding": [1, 1, 0]}, False),
    ("grouped-dilated", (2, 4, 3, 3, 4), (4, 1, 2, 2, 3), {"group": 2, "dilations": [2, 1, 1], "strides": [3, 1, 2]},
     True),
    ("output-shape", (1, 2, 3, 3, 3), (2, 2, 3, 3, 3), {"strides": [2, 2, 2], "output_shape": [6, 6, 6]}, True),
]  # fmt: skip


def _case(op: str, xs: tuple, ws: tuple, attrs: dict, bias: bool) -> tuple[onnx.ModelProto, dict]:
    m_out = ws[0] if op == "Conv" else ws[1] * attrs.get("group", 1)
    inits = {"w": f32(*ws)} | ({"b": f32(m_out)} if bias else {})
    nd = helper.make_node(op, ["x", "w"] + (["b"] if bias else []), ["y"], name="n3d", **attrs)
    x = f32(*xs)
    return model([nd], {"x": x}, ["y"], 13, inits), {"x": x}


@pytest.mark.parametrize(("op", "case"), [("Conv", c) for c in CONV] + [("ConvTranspose", c) for c in CONV_T],
                         ids=[f"conv-{c[0]}" for c in CONV] + [f"convT-{c[0]}" for c in CONV_T])  # fmt: skip
def test_3d_window_matches_onnxruntime(op: str, case: tuple) -> None:
    m, feeds = _case(op, *case[1:])
    mod = onnx_frontend.load(m)
    kinds = {o.name for o in mod.main.body}
    assert ("nn.conv2d" if op == "Conv" else "nn.conv_transpose2d") in kinds
    got = interpreter.run(mod, feeds)["y"]
    (want,) = ort_run(m, feeds, basic=False)
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_3d_conv_compiles_and_simulates(tmp_path) -> None:  # noqa: ANN001
    """Pentary-exact weights: the simulator matches onnxruntime within the activation rounding."""
    from pcc.backend.assembler import assemble_file
    from pcc.drivers.compile import compile_model
    from pcc.runtime.simulator import run_program

    w = (R.integers(-2, 3, (4, 2, 3, 3, 3)) * 0.25).astype(np.float32)
    nodes = [
        helper.make_node("Conv", ["x", "w"], ["c"], name="c3d", pads=[1, 1, 1, 1, 1, 1], strides=[2, 1, 1]),
        helper.make_node("Relu", ["c"], ["y"], name="r"),
    ]
    x = f32(1, 2, 5, 6, 6)
    m = model(nodes, {"x": x}, ["y"], 13, {"w": w})
    onnx.save(m, tmp_path / "m.onnx")
    np.savez(tmp_path / "cal.npz", x=R.standard_normal((8, 2, 5, 6, 6)).astype(np.float32))
    compile_model(tmp_path / "m.onnx", output=tmp_path / "m.pasm", calibration=tmp_path / "cal.npz", act_pents=8)
    (want,) = ort_run(m, {"x": x})
    got = run_program(assemble_file(tmp_path / "m.pasm"), {"x": x})["y"]
    err = np.abs(got - want).max() / np.abs(want).max()

    assert err < 1e-4, err  # measured 8.1e-6


def test_4d_conv_is_refused_by_name() -> None:
    m, _ = _case("Conv", (1, 1, 3, 3, 3, 3), (1, 1, 2, 2, 2, 2), {}, False)
    with pytest.raises(Exception, match="4-D convolution"):
        onnx_frontend.load(m)
