"""``pcc check`` end to end through ``pcc.cli.main`` on a torch-built ONNX CNN: the table, the JSON report, the
simulator against onnxruntime within the measured quantization error, batches, and errors without tracebacks."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from pcc.cli import main


@pytest.fixture(scope="module")
def report(onnx_cnn: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> dict:
    out = tmp_path_factory.mktemp("report") / "report.json"
    args = ["check", str(onnx_cnn["model"]), "--input", f"x={onnx_cnn['x']}", "--calibration", str(onnx_cnn["cal"])]
    assert main([*args, "--json", str(out)]) == 0
    return json.loads(out.read_text())


def test_json_report_has_per_layer_rows(report: dict) -> None:
    assert report["onnxruntime"] == "ran" and report["per_layer_sim"] is True and report["sim_bit_exact"] is True
    rows = report["layers"]
    assert rows[0]["op"] == "input" and rows[0]["layer"] == "x"
    ops = [r["op"] for r in rows[1:]]
    # bn folded into conv1, relu fused; conv2 absorbed the residual add and its relu
    assert ops[:2] == ["conv2d+relu", "conv2d+add+relu"]
    assert {"max_pool", "avg_pool", "reshape", "gemm"} <= set(ops)
    for r in rows:
        assert isinstance(r["sqnr_db"], float) and math.isfinite(r["sqnr_db"])
        assert r["sim_bit_exact"] is True and r["sim_mismatches"] == 0
        assert r["max_abs_err"] >= 0 and r["scale"] > 0
    assert rows[0]["sqnr_db"] > 80  # 8-pent input rounding
    assert all(5 < r["sqnr_db"] < 60 for r in rows[1:])  # five-level weights
    conv2 = rows[2]
    assert len(conv2["nodes"]) == 3 and conv2["nodes"][0] == conv2["layer"]  # conv, add, relu of the model
    assert conv2["inputs"] == [1] and rows[1]["inputs"] == [0]
    assert report["worst_layer"] in {r["layer"] for r in rows}
    assert report["largest_drop_layer"] == rows[1]["layer"]  # the first conv loses the input's ~100 dB


def test_outputs_match_onnxruntime_within_the_measured_error(report: dict, onnx_cnn: dict[str, Path]) -> None:
    """Compile with ``pcc compile --emit asm``, run with the simulator and compare with onnxruntime directly."""
    import onnxruntime as ort

    from pcc.backend.assembler import assemble_file
    from pcc.runtime.simulator import run_program

    (out,) = report["outputs"]
    assert out["name"] == "logits" and out["shape"] == [1, 5] and out["sim_bit_exact"] is True
    assert out["top1_rows"] == 1 and out["top1_against"] == "onnxruntime"
    d = onnx_cnn["dir"]
    pasm = d / "cnn.pasm"
    assert (
        main(
            ["compile", str(onnx_cnn["model"]), "--emit", "asm", "-o", str(pasm), "--calibration", str(onnx_cnn["cal"])]
        )
        == 0
    )
    x = np.load(onnx_cnn["x"])
    got = run_program(assemble_file(pasm), {"x": x})["logits"]
    want = ort.InferenceSession(str(onnx_cnn["model"]), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    err = float(np.max(np.abs(got.astype(np.float64) - want)))
    # the same program as pcc check compiled: the same error against onnxruntime as it reported
    assert err == pytest.approx(out["onnxruntime_max_abs_err"], rel=1e-6, abs=1e-9)
    # and that error is the quantization error check measured against the float reference (float32 noise aside)
    assert err <= out["max_abs_err"] + 10 * out["float_vs_onnxruntime_max_abs_err"] + 1e-6
    assert out["float_vs_onnxruntime_max_abs_err"] < 1e-4
    assert out["sqnr_db"] == pytest.approx(out["onnxruntime_sqnr_db"], abs=0.05)
    assert np.argmax(got) == np.argmax(want)


def test_table_on_stdout(onnx_cnn: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    args = ["check", str(onnx_cnn["model"]), "-i", str(onnx_cnn["x"]), "--calibration", str(onnx_cnn["cal"])]
    assert main(args) == 0
    text = capsys.readouterr().out
    assert "SQNR dB" in text and "drop dB" in text and "<< " in text
    assert "worst layer:" in text and "largest loss:" in text
    assert "simulator: bit-exact with the pent reference" in text
    assert "vs onnxruntime" in text
    assert "\x1b[" not in text  # no colour codes when stdout is not a terminal
    worst = next(line for line in text.splitlines() if "worst SQNR" in line)
    assert worst.split()[0].isdigit()


def test_batch_and_options(onnx_cnn: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "r.json"
    args = ["check", str(onnx_cnn["model"]), "-i", f"x={onnx_cnn['batch']}", "--calibration", str(onnx_cnn["cal"])]
    assert main([*args, "--act-pents", "4", "--per-tensor", "--json", str(out)]) == 0
    rep = json.loads(out.read_text())
    assert rep["samples"] == 3 and rep["act_pents"] == 4 and rep["per_tensor"] is True
    assert all(r["pents"] == 4 for r in rep["layers"])
    assert rep["outputs"][0]["top1_rows"] == 3 and rep["sim_bit_exact"] is True
    assert rep["layers"][0]["sqnr_db"] < 60  # 4-pent input rounding (+-312 levels) is visible


def _error(capsys: pytest.CaptureFixture[str], argv: list[str]) -> str:
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert any(line.startswith("error: ") or ": error: " in line for line in err.splitlines()), err
    return err


def test_errors_exit_1_without_traceback(
    onnx_cnn: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    model = str(onnx_cnn["model"])
    bad = tmp_path / "bad.npy"
    np.save(bad, np.zeros((1, 3, 10, 12), np.float32))
    assert "has shape (1, 3, 10, 12); the model expects (1, 3, 12, 12)" in _error(
        capsys, ["check", model, "-i", f"x={bad}"]
    )
    nan = np.zeros((1, 3, 12, 12), np.float32)
    nan[0, 1, 2, 3] = np.nan
    np.save(tmp_path / "nan.npy", nan)
    assert "contains NaN" in _error(capsys, ["check", model, "-i", f"x={tmp_path / 'nan.npy'}"])
    assert "no such file" in _error(capsys, ["check", model, "-i", f"x={tmp_path / 'missing.npy'}"])
    assert "no such file" in _error(capsys, ["check", str(tmp_path / "none.onnx"), "-i", f"x={bad}"])
    assert "no input named 'y'" in _error(capsys, ["check", model, "-i", f"y={onnx_cnn['x']}"])
    assert "--input" in _error(capsys, ["check", model])
    err = _error(capsys, ["check", model, "-i", f"x={onnx_cnn['x']}", "--calibration", str(tmp_path / "c.npz")])
    assert "calibration" in err and "no such file" in err
    np.save(tmp_path / "str.npy", np.array(["a", "b"]))
    assert "dtype" in _error(capsys, ["check", model, "-i", f"x={tmp_path / 'str.npy'}"])
    assert "act-pents" in _error(capsys, ["check", model, "-i", f"x={onnx_cnn['x']}", "--act-pents", "40"])
