"""``pcc.drivers.check`` as a library: the traced compile is the ordinary compile, a simulator that departs from
the pent reference is caught at the layer where it happens, the outputs-only fallback, trainer JSON models."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from pcc.cli import main
from pcc.drivers import check
from pcc.drivers.check import LayerRow, check_model


def test_traced_compile_is_the_pcc_compile_program(onnx_cnn: dict[str, Path], tmp_path: Path) -> None:
    from pcc.drivers.compile import compile_model
    from pcc.frontends import load_model

    model, cal = onnx_cnn["model"], onnx_cnn["cal"]
    compile_model(model, emit="asm", output=tmp_path / "a.pasm", calibration=cal, act_pents=6)
    m = load_model(model)
    samples = check.split_samples(m, {"x": np.load(onnx_cnn["x"])})
    tr = check.compile_traced(m, samples, calibration=cal, act_pents=6)
    want = (tmp_path / "a.pasm").read_text().replace('.incbin "a.weights.bin"', '.incbin "X"')
    got = tr.compiled.asm.replace(f'.incbin "{tr.compiled.blob_name}"', '.incbin "X"')
    assert got == want
    assert tr.compiled.blob == (tmp_path / "a.weights.bin").read_bytes()
    # every program value has its float counterpart and scale
    layers = [op for op in tr.module.main.body if op.name not in ("pent.quantize", "pent.dequantize")]
    assert all(id(op.results[0]) in tr.counterpart for op in layers)


def _break_layer(monkeypatch: pytest.MonkeyPatch, layer: str, mnemonic: str) -> None:
    """Make code generation drop the first ``mnemonic`` of ``layer``: a miscompiled program."""
    from pcc.backend import codegen

    original = codegen.generate

    def broken(module, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003, ANN202
        c = original(module, *args, **kwargs)
        lines = c.asm.splitlines()
        start = lines.index(next(x for x in lines if x.startswith(f"; @layer {layer} ")))
        k = next(i for i in range(start, len(lines)) if lines[i].split()[:1] == [mnemonic])
        c.asm = "\n".join(lines[:k] + lines[k + 1 :]) + "\n"
        return c

    monkeypatch.setattr(codegen, "generate", broken)


def test_a_miscompiled_layer_is_found(
    onnx_cnn: dict[str, Path], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    _break_layer(monkeypatch, "/conv2/Conv", "TRELU")  # the fused residual block forgets its ReLU
    x = np.load(onnx_cnn["x"])
    rep = check_model(onnx_cnn["model"], {"x": x}, calibration=onnx_cnn["cal"])
    assert not rep.sim_exact
    flags = [(r.layer, r.sim_exact) for r in rep.layers]
    assert flags[:3] == [("x", True), ("/conv1/Conv", True), ("/conv2/Conv", False)]
    assert rep.layers[2].mismatches > 0
    out = tmp_path / "r.json"
    args = ["check", str(onnx_cnn["model"]), "-i", str(onnx_cnn["x"]), "--calibration", str(onnx_cnn["cal"])]
    assert main([*args, "--json", str(out)]) == 1
    captured = capsys.readouterr()
    assert "simulator and the pent reference disagree" in captured.err and "Traceback" not in captured.err
    assert "DIFF" in captured.out and "DIFFERS from the pent reference at /conv2/Conv" in captured.out
    assert json.loads(out.read_text())["sim_bit_exact"] is False  # the report is still written


def test_outputs_only_when_layers_cannot_be_stopped(onnx_cnn: dict[str, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(check, "layer_ends", lambda program, n: "the program has branches (test)")
    rep = check_model(onnx_cnn["model"], {"x": np.load(onnx_cnn["x"])}, calibration=onnx_cnn["cal"], onnxruntime=False)
    assert rep.per_layer_sim is False and rep.onnxruntime == "not run (disabled)"
    assert all(r.sim_exact is None for r in rep.layers) and all(r.sqnr_db is not None for r in rep.layers)
    assert rep.sim_exact and rep.outputs[0].sim_exact and rep.outputs[0].top1_against == "float reference"
    text = rep.table()
    assert "NOT compared per layer" in text and "the program has branches (test)" in text


def test_layer_ends_of_generated_code(onnx_cnn: dict[str, Path]) -> None:
    from pcc.frontends import load_model

    m = load_model(onnx_cnn["model"])
    tr = check.compile_traced(m, check.split_samples(m, {"x": np.load(onnx_cnn["x"])}), calibration=onnx_cnn["cal"])
    n = sum(1 for op in tr.module.main.body if op.name not in ("pent.quantize", "pent.dequantize"))
    ends = check.layer_ends(tr.program, n)
    assert isinstance(ends, list) and len(ends) == n and ends == sorted(ends)
    assert ends[-1] == len(tr.program.instructions) and tr.program.instructions[ends[-2]].mnemonic != "HALT"
    assert sum(c.instructions for c in tr.compiled.layers) + 1 == len(tr.program.instructions)
    assert check.layer_ends(tr.program, n + 1) == f"the assembly has {n} '; @layer' comments for {n + 1} ops"


def test_trainer_json_model(digits_mlp: dict) -> None:
    x = digits_mlp["x_val"][:12]  # 12 samples of the model's [1, 64] input
    cal = digits_mlp["path"].parent / "cal.npz"
    np.savez(cal, input=digits_mlp["x_train"][:200])
    rep = check_model(digits_mlp["path"], {"input": x}, calibration=cal)
    assert rep.onnxruntime == "not an ONNX model" and rep.samples == 12 and rep.sim_exact
    assert [r.op for r in rep.layers] == ["input", "gemm+relu", "gemm"]
    assert rep.layers[1].nodes == ["layer0.linear", "layer1.relu"]
    out = rep.outputs[0]
    assert out.top1_rows == 12 and out.top1_against == "float reference" and out.top1_agree >= 10
    assert out.sqnr_db > 20  # the weights are pentary in the model itself: only activation rounding is lost


def test_input_checks(digits_mlp: dict) -> None:
    from pcc.diagnostics import PccError
    from pcc.frontends import load_model

    m = load_model(digits_mlp["path"])
    with pytest.raises(PccError, match="dtype complex128"):
        check.split_samples(m, {"input": np.zeros((1, 64), complex)})
    with pytest.raises(PccError, match="contains NaN or Inf"):
        check.split_samples(m, {"input": np.full((1, 64), np.inf)})
    with pytest.raises(PccError, match=r"\(B, 64\) for B samples"):
        check.split_samples(m, {"input": np.zeros((2, 63))})
    with pytest.raises(PccError, match="missing input 'input'"):
        check.split_samples(m, {})
    assert len(check.split_samples(m, {"input": np.zeros((4, 64), np.float64)})) == 4


def test_json_numbers() -> None:
    row = LayerRow(0, "a", ["a"], "relu", (1, 2), 8, 0.5, sqnr_db=math.inf, drop_db=0.0)
    d = row.to_dict()
    assert d["sqnr_db"] == "inf" and d["drop_db"] == 0.0
    json.dumps(d, allow_nan=False)
