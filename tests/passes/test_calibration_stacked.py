"""Calibration runs its samples stacked: the float reference runs S samples of a batch-1 graph in one pass
(``interpreter.run(samples=S)``) and every value equals, bit for bit, the per-sample runs stacked; the
quantize pass gives the same pent IR and weights, bit for bit, with the samples stacked or run one by one."""

from __future__ import annotations

import sys
import warnings
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "frontends"))

from zoo_models import build_zoo  # noqa: E402

from pcc import interpreter  # noqa: E402
from pcc.diagnostics import PccError  # noqa: E402
from pcc.frontends import onnx as onnx_frontend  # noqa: E402
from pcc.ir import Module  # noqa: E402
from pcc.parser import parse_module  # noqa: E402
from pcc.pass_manager import parse_pipeline  # noqa: E402
from pcc.passes import quantize_calibrate  # noqa: E402
from pcc.passes.pipeline import FLOAT_PASSES  # noqa: E402
from pcc.passes.quantize import quantize_module  # noqa: E402
from pcc.printer import print_module, weights_npz_bytes  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning", "ignore::DeprecationWarning")


def zoo_module(name: str, tmp_path: Path, fold: bool = True) -> Module:
    m, xs = build_zoo(name)
    path = tmp_path / f"{name}.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(m, xs, str(path), dynamo=False, input_names=["x"], output_names=["y"])
    module = onnx_frontend.load(path)
    if fold:
        for p in parse_pipeline(FLOAT_PASSES):
            p.run(module)
    return module


# shufflenet: chunk (split), concat, channel shuffle (reshape / transpose), depthwise convs; mobilenet_v3:
# squeeze-excitation (x * s[c]), hard-swish, a residual add; inception: parallel branches, max/avg pooling
@pytest.mark.parametrize("name", ["shufflenet_v2", "mobilenet_v3", "inception"])
def test_stacked_run_equals_per_sample_runs_bit_for_bit(name: str, tmp_path: Path) -> None:
    module = zoo_module(name, tmp_path, fold=False)  # batch norms and all, as imported
    xs = np.random.default_rng(0).standard_normal((3, 3, 64, 64)).astype(np.float32)
    assert interpreter.stacked_values(module.main) is not None
    seen: dict[str, list[np.ndarray]] = {}

    def observe(op, results):  # noqa: ANN001, ANN202
        for r, a in zip(op.results, results, strict=True):
            seen.setdefault(r.name or "", []).append(a)

    stacked = interpreter.run(module, {"x": xs}, samples=3, return_all=True, observe=observe)
    for i in range(3):
        one = interpreter.run(module, {"x": xs[i : i + 1]}, return_all=True)
        for k, v in one.items():
            if k in seen:  # a value computed from the inputs: sample i of the stacked run
                assert np.array_equal(stacked[k][i : i + 1], v), (k, i)
    assert len(seen) > 20


def test_graphs_that_cannot_stack_are_said_so() -> None:
    batch2 = parse_module(
        "module @m {\n  func @main(%x: tensor<2x4xf32>) -> tensor<2x4xf32> {\n"
        "    %y = nn.relu(%x) : tensor<2x4xf32>\n    return %y\n  }\n}"
    )
    folds = parse_module(
        "module @m {\n  func @main(%x: tensor<1x2x4xf32>) -> tensor<2x4xf32> {\n"
        "    %y = nn.reshape(%x) : tensor<2x4xf32>\n    return %y\n  }\n}"
    )
    for m in (batch2, folds):
        assert interpreter.stacked_values(m.main) is None
        with pytest.raises(PccError, match="cannot run samples stacked"):
            interpreter.run(m, {"x": np.zeros((2, *m.main.args[0].type.shape[1:]), np.float32)}, samples=2)


def quantized(module: Module, cal: dict[str, np.ndarray], **opts: object) -> tuple[str, bytes]:
    quantize_module(module, cal, **opts)
    return print_module(module), weights_npz_bytes(module)


@pytest.mark.parametrize(
    "name, opts",
    [
        ("mobilenet_v3", {}),  # bias correction through the quantized simulation
        ("squeezenet", {"calib_method": "percentile"}),
        ("resnet", {"weight_method": "gptq"}),  # the hessians of the simulation's inputs
    ],
)
def test_quantize_stacked_equals_one_run_per_sample(
    name: str, opts: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cal = {"x": np.random.default_rng(3).standard_normal((6, 3, 64, 64)).astype(np.float32)}
    stacked = quantized(zoo_module(name, tmp_path), cal, **opts)
    calls: list[int] = []
    run = interpreter.run
    monkeypatch.setattr(interpreter, "run", lambda *a, **k: calls.append(k.get("samples", 0)) or run(*a, **k))
    monkeypatch.setattr(quantize_calibrate, "STACK_ELEMENTS", 1)  # groups of one sample: one run each
    single = quantized(zoo_module(name, tmp_path), cal, **opts)
    assert calls == [1] * 6
    assert stacked == single
