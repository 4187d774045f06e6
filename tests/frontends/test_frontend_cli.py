"""``pcc compile`` through ``pcc.cli.main``: outputs, exit codes, and diagnostics without tracebacks."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from onnx import helper
from onnx_util import model

from pcc import interpreter
from pcc.cli import main
from pcc.drivers.compile import EMITTERS, compile_model, parse_input_shape
from pcc.frontends import onnx as onnx_frontend
from pcc.parser import parse_file
from pcc.verifier import verify_module


@pytest.fixture
def onnx_file(tmp_path):  # noqa: ANN001, ANN201
    rng = np.random.default_rng(0)
    nodes = [
        helper.make_node("Conv", ["x", "w", "b"], ["c"], name="conv", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c"], ["r"], name="relu"),
        helper.make_node("GlobalAveragePool", ["r"], ["y"], name="gap"),
    ]
    m = model(
        nodes,
        {"x": (("N", 3, 8, 8), np.float32)},
        ["y"],
        13,
        {"w": rng.standard_normal((4, 3, 3, 3)).astype(np.float32), "b": rng.standard_normal(4).astype(np.float32)},
    )
    path = tmp_path / "net.onnx"
    onnx.save(m, path)
    return path


def _no_traceback(err: str) -> None:
    assert "Traceback" not in err


def test_compile_emits_ir_and_sidecar(onnx_file, tmp_path, capsys) -> None:  # noqa: ANN001
    out = tmp_path / "out" / "net.pir"
    assert main(["compile", str(onnx_file), "-o", str(out), "--input-shape", "x=2x3x8x8"]) == 0
    err = capsys.readouterr().err
    assert f"wrote {out}" in err and f"wrote {out.with_suffix('.npz')}" in err
    m = parse_file(out)
    verify_module(m)
    assert m.main.args[0].type.shape == (2, 3, 8, 8)
    x = np.random.default_rng(1).standard_normal((2, 3, 8, 8)).astype(np.float32)
    ref = interpreter.run(onnx_frontend.load(onnx_file, {"x": (2, 3, 8, 8)}), {"x": x})["y"]
    np.testing.assert_array_equal(interpreter.run(m, {"x": x})["y"], ref)


def test_compile_default_output_and_stdout(onnx_file, tmp_path, monkeypatch, capsys) -> None:  # noqa: ANN001
    monkeypatch.chdir(tmp_path)
    assert main(["compile", str(onnx_file), "--emit", "ir"]) == 0
    assert (tmp_path / "net.pir").exists()
    assert "symbolic batch dimension 'N'; using 1" in capsys.readouterr().err
    assert main(["compile", str(onnx_file), "--emit", "ir", "-o", "-", "--input-shape", "x=1x3x8x8"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("module @net") and "nn.conv2d" in out and 'loc("' in out
    # compiling the .pir again must not overwrite it in place
    assert main(["compile", "net.pir", "--emit", "ir"]) == 1
    assert "would overwrite the input" in capsys.readouterr().err


def test_compile_runs_passes_and_dumps(onnx_file, tmp_path, capsys) -> None:  # noqa: ANN001
    dump = tmp_path / "dumps"
    rc = main(
        [
            "compile",
            str(onnx_file),
            "-o",
            str(tmp_path / "o.pir"),
            "--passes",
            "dce",
            "--dump-dir",
            str(dump),
            "--print-ir-after-all",
        ]
    )
    assert rc == 0
    assert "// ----- IR after dce -----" in capsys.readouterr().err
    assert (dump / "000-input.pir").exists() and (dump / "001-dce.pir").exists()


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["--input-shape", "x=2xfoo"], 2, "bad dimensions"),
        (["--input-shape", "x"], 2, "expected NAME=DIMS"),
        (["--input-shape", "y=1x3x8x8"], 1, "names unknown input(s) ['y']"),
        (["--emit", "bogus"], 2, "known: "),
        (["--passes", "no-such-pass"], 1, "unknown pass 'no-such-pass'"),
    ],
)
def test_usage_errors(onnx_file, tmp_path, capsys, args, code: int, message: str) -> None:  # noqa: ANN001
    assert main(["compile", str(onnx_file), "-o", str(tmp_path / "o.pir"), *args]) == code
    err = capsys.readouterr().err
    assert message in err
    _no_traceback(err)


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("missing.onnx", None, "missing.onnx: error: no such file"),
        ("garbage.onnx", b"\x08\x07garbage\xff\xfe", "not a valid ONNX model"),
        ("empty.onnx", b"", "not a valid ONNX model"),
        ("bad.json", b'{"layers": [', "invalid JSON"),
        ("model.h5", b"HDF", "unknown model type '.h5'"),
    ],
)
def test_bad_model_files(tmp_path, capsys, name: str, content: bytes | None, message: str) -> None:  # noqa: ANN001
    path = tmp_path / name
    if content is not None:
        path.write_bytes(content)
    assert main(["compile", str(path), "-o", str(tmp_path / "o.pir")]) == 1
    err = capsys.readouterr().err
    assert message in err and err.startswith(("error:", str(path)))
    _no_traceback(err)


def test_unsupported_ops_exit_1_with_full_list(tmp_path, capsys) -> None:  # noqa: ANN001
    nodes = [
        helper.make_node("MaxUnpool", ["x", "k"], ["v"], name="unpool", kernel_shape=[2]),
        helper.make_node("Det", ["v"], ["a"], name="det"),
        helper.make_node("Unique", ["a"], ["y"], name="unique"),
    ]
    m = model(nodes, {"x": np.zeros((2, 5), np.float32)}, ["y"], 13, {"k": np.array([2], np.int64)})
    path = tmp_path / "odd.onnx"
    onnx.save(m, path)
    assert main(["compile", str(path), "-o", str(tmp_path / "o.pir")]) == 1
    err = capsys.readouterr().err
    assert "3 unsupported operators" in err
    for op in ("MaxUnpool", "Det", "Unique"):
        assert op in err
    _no_traceback(err)


def test_compile_native_json(tmp_path, capsys) -> None:  # noqa: ANN001
    d = {
        "input_dim": 2,
        "output_dim": 1,
        "layers": [
            {
                "type": "linear",
                "in_features": 2,
                "out_features": 1,
                "use_bias": False,
                "weight_pentary": [[1, -2]],
                "weight_scale": [0.5],
            }
        ],
    }
    path = tmp_path / "tiny.json"
    path.write_text(json.dumps(d))
    assert main(["compile", str(path), "--emit", "ir", "-o", "-", "--input-shape", "input=3x2"]) == 0
    out = capsys.readouterr().out
    assert "nn.dequantize_weight" in out and "tensor<1x2xp5>" in out and "tensor<3x2xf32>" in out


def test_python_api_and_helpers(onnx_file, tmp_path) -> None:  # noqa: ANN001
    assert parse_input_shape("images=1x3x224x224") == ("images", (1, 3, 224, 224))
    assert parse_input_shape("a=b=4,5") == ("a=b", (4, 5))
    assert "ir" in EMITTERS and EMITTERS["ir"].ext == ".pir"
    written = compile_model(onnx_file, output=tmp_path / "api.pir", input_shapes={"x": (1, 3, 8, 8)})
    assert written[0] == tmp_path / "api.pir"
