"""Linear and cubic nn.resize lowered per resized axis to gathers, EMUL by the tap weights and EADD: the
simulator equals the pent reference bit for bit, the result stays within the activation rounding of the float
resize at each width, and torch's bilinear ``interpolate`` (``align_corners`` false and true) compiled from
ONNX matches onnxruntime."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
from compile_helpers import Builder, compile_sim, sim_matches_reference

from pcc import interpreter, pent_reference
from pcc.diagnostics import PccError
from pcc.dialects import nn, pent_binary
from pcc.ir import Location, Module, TensorType
from pcc.passes.lower_resize import axis_taps
from pcc.passes.quantize import quantize_module

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "frontends"))


def resized(seed: int, attrs: dict, out_hw: tuple[int, int] = (7, 10), hw: tuple[int, int] = (4, 5)) -> Module:
    b = Builder("rs", seed)
    x = b.arg("x", (1, 2, *hw))
    w = b.w("w", (3, 2, 3, 3), data=(b.rng.integers(-2, 3, (3, 2, 3, 3)) * 0.25).astype(np.float32))
    c = b.op(nn.Conv2d, [x, w], "c", pads=[1, 1, 1, 1])
    up = nn.Resize([c], [TensorType((1, 3, *out_hw), "f32")], dict(attrs), Location(node="up"))
    b.g.append(up)
    return b.done(up.results[0])


def test_linear_taps_by_hand() -> None:
    # 2 -> 4, half_pixel: coordinates -0.25, 0.25, 0.75, 1.25 -> the edge, then 3/4 + 1/4 mixes, the edge
    m = resized(0, {"mode": "linear"}, (4, 4), (2, 2))
    up = next(op for op in m.main.body if isinstance(op, nn.Resize))
    idx, w = axis_taps(up, 2, 2, 4)
    got = np.zeros((4, 2))
    for t in range(idx.shape[0]):
        np.add.at(got, (np.arange(4), idx[t]), w[t])
    np.testing.assert_allclose(got, [[1, 0], [0.75, 0.25], [0.25, 0.75], [0, 1]])


CASES = {
    "linear-half_pixel": {"mode": "linear"},
    "linear-align_corners": {"mode": "linear", "coordinate_transformation_mode": "align_corners"},
    "linear-pytorch_half_pixel": {"mode": "linear", "coordinate_transformation_mode": "pytorch_half_pixel"},
    "linear-asymmetric": {"mode": "linear", "coordinate_transformation_mode": "asymmetric"},
    "cubic-half_pixel": {"mode": "cubic"},
    "cubic-exclude_outside": {"mode": "cubic", "exclude_outside": True, "cubic_coeff_a": -0.5},
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_resize_bit_exact_and_close_to_float(tmp_path, case: str) -> None:  # noqa: ANN001
    m, _, prog = compile_sim(resized(1, CASES[case]), tmp_path)
    assert not any(isinstance(op, nn.Resize) for op in m.main.body)
    assert len(m.main.ops_of(pent_binary.Mul)) >= 4  # two axes, two taps or more each
    sim_matches_reference(m, prog, seeds=2)


def resize_error(attrs: dict, pents: int) -> float:
    """Max |pent - float| / max |float| of a 4x5 -> 7x10 resize after a conv, calibrated on its inputs."""
    rng = np.random.default_rng(3)
    xs = rng.standard_normal((4, 1, 2, 4, 5)).astype(np.float32)
    f, q = resized(2, attrs), resized(2, attrs)
    quantize_module(q, {"x": xs.reshape(4, 2, 4, 5)}, act_pents=pents)
    worst = 0.0
    for x in xs:
        want = interpreter.run(f, {"x": x})[f.main.outputs[0].name]
        got = pent_reference.run(q, {"x": x})[0]
        worst = max(worst, float(np.abs(got - want).max() / np.abs(want).max()))
    return worst


# measured max error / range (bilinear half_pixel, bilinear align_corners, bicubic):
# 4 pents 6.3e-3 / 5.5e-3 / 6.7e-3, 6 pents 2.7e-4 / 2.4e-4 / 2.5e-4, 8 pents 1.2e-5 / 1.2e-5 / 1.3e-5
@pytest.mark.parametrize(("pents", "bound"), [(4, 2e-2), (6, 8e-4), (8, 4e-5)])
def test_resize_error_per_width(pents: int, bound: float) -> None:
    for case in ("linear-half_pixel", "linear-align_corners", "cubic-half_pixel"):
        err = resize_error(CASES[case], pents)
        assert err < bound, (case, err)


def test_crop_outside_the_input_is_refused() -> None:
    attrs = {"mode": "linear", "coordinate_transformation_mode": "tf_crop_and_resize",
             "roi": [0, 0, -0.5, 0, 1, 1, 1.5, 1]}  # fmt: skip
    m = resized(0, attrs)
    with pytest.raises(PccError, match="node 'up'.*extrapolation"):
        quantize_module(m, {"x": np.ones((1, 2, 4, 5), np.float32)})


@pytest.mark.parametrize("align", [False, True])
def test_torch_bilinear_interpolate_matches_onnxruntime(tmp_path, align: bool) -> None:  # noqa: ANN001
    torch = pytest.importorskip("torch")
    from test_cnn_twins import compile_and_compare

    class Up(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.c1 = torch.nn.Conv2d(3, 4, 3, padding=1)
            self.c2 = torch.nn.Conv2d(4, 2, 3, padding=1)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            y = torch.relu(self.c1(x))
            y = torch.nn.functional.interpolate(y, scale_factor=2, mode="bilinear", align_corners=align)
            return self.c2(y)

    torch.manual_seed(0)
    model = Up().eval()
    with torch.no_grad():
        for mod in (model.c1, model.c2):
            s = mod.weight.abs().amax(dim=(1, 2, 3), keepdim=True) / 2
            mod.weight.copy_(torch.round(mod.weight / s).clamp(-2, 2) * s)
    err = compile_and_compare(tmp_path, model, (1, 3, 6, 6))
    assert err < 1e-3, err  # measured 1.5e-5 (both)
