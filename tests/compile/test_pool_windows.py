"""Pools whose window POOL cannot take in one instruction (strides or pads above 12, windows that overlap and do
not divide the image, a torchvision adaptive pool on a larger map, more channels than POOL's field): the exact
decomposition of ``passes/lower_pool.py`` (pools of each window size at an ISA stride, a gather of the outputs).

Against onnxruntime on the dequantized input the simulator is exact for a maximum and within half a unit of the
scale for an average (its one rounding, ``div_round``, nearest with ties away from zero, as one POOL gives it);
the simulator equals the pent reference bit for bit."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("onnxruntime")
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "frontends"))

from compile_helpers import compile_sim, sim_matches_reference  # noqa: E402

from pcc import pent_reference  # noqa: E402
from pcc.dialects import pent, pent_move  # noqa: E402

# (op, input shape, attributes)
CASES = {
    "vgg-adaptive-14x14-stride-14": ("AveragePool", (1, 64, 28, 28), {"kernel_shape": [14, 14], "strides": [14, 14]}),
    "avg-overlap-15-stride-13": ("AveragePool", (1, 3, 41, 37), {"kernel_shape": [15, 15], "strides": [13, 13]}),
    "avg-overlap-ceil-pads": (
        "AveragePool",
        (1, 2, 30, 33),
        {"kernel_shape": [17, 15], "strides": [13, 14], "pads": [3, 2, 3, 2], "ceil_mode": 1},
    ),
    "avg-pads-13-include-pad": (
        "AveragePool",
        (1, 2, 20, 20),
        {"kernel_shape": [27, 27], "strides": [14, 14], "pads": [13, 13, 13, 13], "count_include_pad": 1},
    ),
    "avg-pads-13-exclude-pad": (
        "AveragePool",
        (1, 2, 20, 20),
        {"kernel_shape": [27, 27], "strides": [14, 14], "pads": [13, 13, 13, 13]},
    ),
    "max-gaps-5-stride-16": ("MaxPool", (1, 4, 40, 40), {"kernel_shape": [5, 5], "strides": [16, 16], "pads": [2] * 4}),
    "max-20-stride-20-ceil": (
        "MaxPool",
        (1, 3, 50, 47),
        {"kernel_shape": [20] * 2, "strides": [20] * 2, "ceil_mode": 1},
    ),
    "avg-prime-stride-13": ("AveragePool", (1, 2, 31, 31), {"kernel_shape": [5, 3], "strides": [13, 17]}),
}


def pool_model(kind: str, shape: tuple[int, ...], attrs: dict, path: Path) -> Path:
    import onnx
    from onnx import TensorProto, helper

    node = helper.make_node(kind, ["x"], ["y"], **attrs)
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, list(shape))
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)
    graph = helper.make_graph([node], "pool", [x], [y])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 19)]), path)
    return path


def _compile(tmp: Path, path: Path):  # noqa: ANN202
    """The pent module and the assembled program (compile_helpers' pipeline, calibrated on 8 random inputs)."""
    from pcc.frontends import load_model

    m, _, prog = compile_sim(load_model(path), tmp)
    return m, prog


@pytest.mark.parametrize("case", sorted(CASES))
def test_pool_decomposition_matches_onnxruntime(tmp_path, case: str) -> None:  # noqa: ANN001
    import onnx
    from onnx_util import ort_run

    from pcc.runtime.simulator import run_program

    kind, shape, attrs = CASES[case]
    path = pool_model(kind, shape, attrs, tmp_path / "m.onnx")
    m, prog = _compile(tmp_path, path)
    assert list(m.main.ops_of(pent_move.Gather)) or case.startswith("vgg"), "decomposed"
    for op in [*m.main.ops_of(pent.AvgPool), *m.main.ops_of(pent.MaxPool)]:
        assert max(op.attr("strides")) <= 12 and max(op.attr("pads")) <= 12
    sim_matches_reference(m, prog, seeds=2)
    (decl,) = prog.inputs
    x = np.random.default_rng(5).standard_normal(shape).astype(np.float32)
    xq = (pent_reference.quantize_input(x, decl.scale, decl.pents) * decl.scale).astype(np.float32)
    (want,) = ort_run(onnx.load(str(path)), {"x": xq})
    got = run_program(prog, {"x": x})["y"]
    assert got.shape == want.shape
    s_y = prog.outputs[0].scale
    tol = 1e-6 if kind == "MaxPool" else s_y / 2 + 1e-5 * np.abs(xq).max()  # and onnxruntime's float32 sums
    assert np.abs(got - want).max() <= tol, (np.abs(got - want).max(), s_y)


def test_pool_over_more_channels_than_the_field(tmp_path) -> None:  # noqa: ANN001
    """More channels than POOL's 39,062-channel field are more channel tiles."""
    shape = (1, 39100, 2, 2)
    path = pool_model("MaxPool", shape, {"kernel_shape": [2, 2]}, tmp_path / "m.onnx")
    m, prog = _compile(tmp_path, path)
    sim_matches_reference(m, prog, seeds=1)


# torch's adaptive pools whose output size does not divide the input's: windows of two sizes that overlap
ADAPTIVE = {
    "avg-10x11-to-3x4": ("avg", (1, 3, 10, 11), (3, 4)),
    "avg-10x10-to-7x7": ("avg", (1, 2, 10, 10), (7, 7)),
    "avg-9x30-to-4x7": ("avg", (1, 2, 9, 30), (4, 7)),
    "max-10x7-to-4x3": ("max", (1, 3, 10, 7), (4, 3)),
}


@pytest.mark.parametrize("case", sorted(ADAPTIVE))
def test_adaptive_pool_matches_torch(tmp_path, case: str) -> None:  # noqa: ANN001
    """Imported from ``torch.export`` as nn.adaptive_pool; against torch on the dequantized input."""
    torch = pytest.importorskip("torch")
    from pcc import interpreter
    from pcc.frontends import load_model
    from pcc.runtime.simulator import run_program

    kind, shape, out = ADAPTIVE[case]

    class Net(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            f = torch.nn.functional.adaptive_avg_pool2d if kind == "avg" else torch.nn.functional.adaptive_max_pool2d
            return f(x, out)

    pt2 = tmp_path / "m.pt2"
    torch.export.save(torch.export.export(Net(), (torch.zeros(shape),)), str(pt2))
    model = load_model(pt2)
    assert "nn.adaptive_pool" in [op.name for op in model.main.body]
    x = np.random.default_rng(5).standard_normal(shape).astype(np.float32)
    (want_f,) = interpreter.run(model, {"x": x}).values()
    np.testing.assert_allclose(want_f, Net()(torch.from_numpy(x)).numpy(), rtol=1e-6, atol=1e-6)
    m, _, prog = compile_sim(load_model(pt2), tmp_path)
    sim_matches_reference(m, prog, seeds=2)
    (decl,) = prog.inputs
    xq = (pent_reference.quantize_input(x, decl.scale, decl.pents) * decl.scale).astype(np.float32)
    want = Net()(torch.from_numpy(xq)).numpy()
    got = run_program(prog, {"x": x})[prog.outputs[0].name]
    tol = 1e-6 if kind == "max" else prog.outputs[0].scale / 2 + 1e-5 * np.abs(xq).max()
    assert np.abs(got - want).max() <= tol
