"""The quantize pass's error budget (``error-budget``, ``passes/quantize_budget.py``): over budget on the
calibration samples, convs and gemms get two pents per weight until the estimate is within it.

The model is a small CNN with Gaussian weights (one pent per weight loses about a quarter of its logits' range);
every error is the compiled program's (the pent reference, which the simulator matches bit for bit) against
onnxruntime, ``max |q - f| / max |f|`` over the samples: the metric the budget estimates."""

from __future__ import annotations

import sys
import warnings
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("onnxruntime")
import onnx  # noqa: E402
from onnx import helper  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "frontends"))

from onnx_util import model, ort_run  # noqa: E402

from pcc import pent_reference  # noqa: E402
from pcc.frontends import load_model  # noqa: E402
from pcc.ir import Module  # noqa: E402
from pcc.machine import min_words  # noqa: E402
from pcc.pass_manager import PassManager  # noqa: E402
from pcc.passes.pipeline import default_passes  # noqa: E402
from pcc.passes.quantize_budget import MEMORY_SHARE  # noqa: E402
from pcc.printer import print_module  # noqa: E402

LAYERS = ("conv0", "conv1", "conv2", "fc")


def gaussian_cnn(seed: int = 0) -> onnx.ModelProto:
    """conv 3->8 + ReLU, conv 8->8 stride 2 + ReLU, conv 8->8 + ReLU, flatten, gemm 128->10; N(0, 1/fan_in)."""
    rng = np.random.default_rng(seed)

    def w(*shape: int) -> np.ndarray:
        return (rng.standard_normal(shape) / np.sqrt(np.prod(shape[1:]))).astype(np.float32)

    def b(n: int) -> np.ndarray:
        return (0.1 * rng.standard_normal(n)).astype(np.float32)

    conv = {"kernel_shape": [3, 3], "pads": [1, 1, 1, 1]}
    nodes = [
        helper.make_node("Conv", ["x", "w0", "b0"], ["c0"], name="conv0", **conv),
        helper.make_node("Relu", ["c0"], ["r0"], name="relu0"),
        helper.make_node("Conv", ["r0", "w1", "b1"], ["c1"], name="conv1", strides=[2, 2], **conv),
        helper.make_node("Relu", ["c1"], ["r1"], name="relu1"),
        helper.make_node("Conv", ["r1", "w2", "b2"], ["c2"], name="conv2", **conv),
        helper.make_node("Relu", ["c2"], ["r2"], name="relu2"),
        helper.make_node("Flatten", ["r2"], ["flat"], name="flatten"),
        helper.make_node("Gemm", ["flat", "fw", "fb"], ["y"], name="fc", transB=1),
    ]
    inits = {
        "w0": w(8, 3, 3, 3), "b0": b(8), "w1": w(8, 8, 3, 3), "b1": b(8), "w2": w(8, 8, 3, 3), "b2": b(8),
        "fw": w(10, 128), "fb": b(10),
    }  # fmt: skip
    return model(nodes, {"x": ((1, 3, 8, 8), np.float32)}, ["y"], 13, inits)


def samples(n: int = 8, seed: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, 3, 8, 8)).astype(np.float32)


def compiled(tmp: Path, m: onnx.ModelProto, calibrate: bool = True, **options: object) -> Module:
    """The pent module of the default pipeline (calibrated on :func:`samples` unless ``calibrate`` is off)."""
    path = tmp / "m.onnx"
    onnx.save(m, path)
    cal = None
    if calibrate:
        cal = tmp / "cal.npz"
        np.savez(cal, x=samples())
    module = load_model(path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        PassManager(default_passes(calibration=cal, **options)).run(module)
    return module


def error(module: Module, m: onnx.ModelProto, xs: np.ndarray) -> float:
    """``max |program - onnxruntime| / max |onnxruntime|`` over the samples ``xs``."""
    got = np.concatenate([pent_reference.run(module, {"x": x[None]})[0] for x in xs])
    want = np.concatenate([ort_run(m, {"x": x[None]})[0] for x in xs])
    return float(np.abs(got - want).max() / np.abs(want).max())


def raised(module: Module) -> set[str]:
    """The layers whose weights are two pents (a ``.hi`` and a ``.lo`` plane)."""
    return {n.removesuffix(".hi.p5") for n in module.weight_data if n.endswith(".hi.p5")}


def program(module: Module) -> tuple[str, dict[str, bytes]]:
    return print_module(module), {k: v.tobytes() for k, v in sorted(module.weight_data.items())}


@pytest.mark.parametrize("budget", [0.3, 0.2])
def test_budget_raises_layers_until_the_calibration_error_is_within_it(tmp_path, budget: float) -> None:  # noqa: ANN001
    m = gaussian_cnn()
    one = compiled(tmp_path, m, error_budget=0.0)
    assert not raised(one)
    assert error(one, m, samples()) > budget  # the model needs the budget
    got = compiled(tmp_path, m, error_budget=budget)
    assert raised(got) and raised(got) < set(LAYERS)  # some layers, not all
    # within the budget on the calibration samples, against onnxruntime (the estimate leaves the activations'
    # rounding out: 8 pents, about 5e-6 of a range)
    assert error(got, m, samples()) <= budget * 1.01
    assert program(got) == program(compiled(tmp_path, m, error_budget=budget))  # deterministic


def test_a_looser_budget_raises_no_more_layers(tmp_path) -> None:  # noqa: ANN001
    m = gaussian_cnn()
    loose, tight = compiled(tmp_path, m, error_budget=0.3), compiled(tmp_path, m, error_budget=0.2)
    assert raised(loose) <= raised(tight)


def test_budget_off_within_budget_and_without_calibration_keep_the_one_pent_program(tmp_path) -> None:  # noqa: ANN001
    m = gaussian_cnn()
    off = program(compiled(tmp_path, m, error_budget=0.0))
    assert program(compiled(tmp_path, m, error_budget=1.0)) == off  # within budget: the same program
    # without calibration data there are no inputs to estimate on: the budget is not applied
    random_off = program(compiled(tmp_path, m, calibrate=False, error_budget=0.0))
    assert program(compiled(tmp_path, m, calibrate=False, error_budget=0.05)) == random_off


def test_the_users_overrides_win(tmp_path) -> None:  # noqa: ANN001
    m = gaussian_cnn()
    auto = raised(compiled(tmp_path, m, error_budget=0.2))
    kept = sorted(auto)[0]
    got = compiled(tmp_path, m, error_budget=0.2, overrides=f"{kept}:w1")
    assert kept not in raised(got)
    assert raised(compiled(tmp_path, m, error_budget=0.1, weight_pents=2)) == set(LAYERS)


def test_no_room_in_main_memory_leaves_one_pent_and_says_what_to_do(tmp_path) -> None:  # noqa: ANN001
    m = gaussian_cnn()
    path = tmp_path / "m.onnx"
    onnx.save(m, path)
    np.savez(tmp_path / "cal.npz", x=samples())
    module = load_model(path)
    weights, arena = min_words(module)
    dram = int((weights + arena + 4) / MEMORY_SHARE)  # room for the one-pent model, not for a layer's 2nd plane
    want = (
        r"over the error budget 0.1 and no layer can take two pents; main memory had no room for fc, conv0, "
        r"conv1, conv2; try --weight-pents 2"
    )
    with pytest.warns(UserWarning, match=want):
        PassManager(default_passes(calibration=tmp_path / "cal.npz", error_budget=0.1, dram_words=dram)).run(module)
    assert not raised(module)


def test_the_cli_flag_prints_the_raised_layers_and_the_budget_off_prints_nothing(tmp_path, capsys) -> None:  # noqa: ANN001
    from pcc.cli import main

    onnx.save(gaussian_cnn(), tmp_path / "m.onnx")
    np.savez(tmp_path / "cal.npz", x=samples())
    args = ["compile", str(tmp_path / "m.onnx"), "--calibration", str(tmp_path / "cal.npz"), "-o"]
    assert main([*args, str(tmp_path / "a.pasm"), "--error-budget", "0.2"]) == 0
    err = capsys.readouterr().err
    assert "quantize: error budget 0.2: estimated output error 0.32" in err and "on 8 calibration sample(s)" in err
    assert "3 layer(s) raised to two pents" in err and "warning" not in err
    assert main([*args, str(tmp_path / "b.pasm"), "--error-budget", "0"]) == 0
    assert "error budget" not in capsys.readouterr().err
    # everything at two pents and still over a tight budget: one warning line that says so
    assert main([*args, str(tmp_path / "c.pasm"), "--error-budget", "0.01", "--weight-pents", "2"]) == 0
    warned = [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("warning:")]
    assert len(warned) == 1 and "over the error budget 0.01 with two pents per weight everywhere" in warned[0]
