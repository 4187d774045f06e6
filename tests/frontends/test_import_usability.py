"""What a new user meets first: dynamic dimensions, any value names end to end, wrong file kinds.

Each test runs the CLI (``pcc.cli.main``) on a small ONNX model written here and checks the exit status, the
files written and the one-line diagnostics (never a traceback)."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from pcc import interpreter
from pcc.cli import main
from pcc.frontends import load_model
from pcc.parser import parse_file

RNG = np.random.default_rng(0)
W = RNG.standard_normal((2, 12)).astype(np.float32)


def _dynamic_model(path, batch: int | str, out_batch: int | str) -> None:  # noqa: ANN001
    """Flatten + Gemm on x[batch, 3, 2, 2]; batch and the declared output batch as given (-1, a name, a size)."""

    def dim(d: int | str) -> dict:
        return {"dim_param": d} if isinstance(d, str) else {"dim_value": d}

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [3, 2, 2])
    x.type.tensor_type.shape.dim.insert(0, onnx.TensorShapeProto.Dimension(**dim(batch)))
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])
    y.type.tensor_type.shape.dim.insert(0, onnx.TensorShapeProto.Dimension(**dim(out_batch)))
    nodes = [helper.make_node("Flatten", ["x"], ["f"]), helper.make_node("Gemm", ["f", "w"], ["y"], transB=1)]
    g = helper.make_graph(nodes, "g", [x], [y], [numpy_helper.from_array(W, "w")])
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)]), path)


@pytest.mark.parametrize(("batch", "out_batch"), [(-1, -1), ("N", -1), (-1, "batch"), ("N", "N")])
def test_dynamic_batch_defaults_to_one_and_input_shape_fixes_it(tmp_path, capsys, batch, out_batch) -> None:  # noqa: ANN001
    path = tmp_path / "dyn.onnx"
    _dynamic_model(path, batch, out_batch)
    assert main(["compile", str(path), "--emit", "ir", "-o", str(tmp_path / "a.pir")]) == 0
    err = capsys.readouterr().err
    assert "dynamic" in err or "symbolic batch dimension" in err
    assert "using 1" in err
    assert parse_file(tmp_path / "a.pir").main.args[0].type.shape == (1, 3, 2, 2)
    assert (
        main(["compile", str(path), "--emit", "ir", "-o", str(tmp_path / "b.pir"), "--input-shape", "x=4x3x2x2"]) == 0
    )
    m = parse_file(tmp_path / "b.pir")
    assert m.main.args[0].type.shape == (4, 3, 2, 2) and m.main.outputs[0].type.shape == (4, 2)
    x = RNG.standard_normal((4, 3, 2, 2)).astype(np.float32)
    got = interpreter.run(load_model(path, {"x": (4, 3, 2, 2)}), {"x": x})["y"]
    np.testing.assert_allclose(got, x.reshape(4, -1) @ W.T, rtol=1e-5, atol=1e-6)


def test_input_shape_contradicting_a_static_dim_and_nonpositive_sizes(tmp_path, capsys) -> None:  # noqa: ANN001
    path = tmp_path / "dyn.onnx"
    _dynamic_model(path, -1, -1)
    assert main(["compile", str(path), "--emit", "ir", "--input-shape", "x=1x4x2x2"]) == 1
    assert "contradicts" in capsys.readouterr().err
    assert main(["compile", str(path), "--emit", "ir", "--input-shape", "x=-1x3x2x2"]) != 0
    assert "positive integer" in capsys.readouterr().err


def test_check_takes_input_shape(tmp_path, capsys) -> None:  # noqa: ANN001
    path = tmp_path / "dyn.onnx"
    _dynamic_model(path, "N", -1)
    np.save(tmp_path / "x.npy", RNG.standard_normal((2, 3, 2, 2)).astype(np.float32))
    assert main(["check", str(path), "-i", f"x={tmp_path / 'x.npy'}", "--input-shape", "x=2x3x2x2"]) == 0
    out = capsys.readouterr().out
    assert "bit-exact" in out


NAMES = ("gpu_0/data_0", "gpu_0/softmax 1")


def _named_model(path) -> None:  # noqa: ANN001
    x = helper.make_tensor_value_info(NAMES[0], TensorProto.FLOAT, [1, 12])
    y = helper.make_tensor_value_info(NAMES[1], TensorProto.FLOAT, [1, 2])
    nodes = [
        helper.make_node("Gemm", [NAMES[0], "fc/w:0"], ["fc/out:0"], transB=1),
        helper.make_node("Relu", ["fc/out:0"], [NAMES[1]]),
    ]
    g = helper.make_graph(nodes, "g", [x], [y], [numpy_helper.from_array(W, "fc/w:0")])
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)]), path)


@pytest.mark.parametrize("ext", [".pasm", ".pbin"])
def test_any_value_name_works_end_to_end(tmp_path, capsys, ext: str) -> None:  # noqa: ANN001
    path = tmp_path / "named.onnx"
    _named_model(path)
    cal = tmp_path / "cal.npz"
    np.savez(cal, **{NAMES[0]: RNG.standard_normal((32, 12)).astype(np.float32)})
    prog = tmp_path / f"named{ext}"
    assert main(["compile", str(path), "-o", str(prog), "--calibration", str(cal)]) == 0
    x = RNG.standard_normal((1, 12)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    out = tmp_path / "out.npz"
    assert main(["run", str(prog), "-i", f"{NAMES[0]}={tmp_path / 'x.npy'}", "-o", str(out)]) == 0
    with np.load(out) as z:
        assert z.files == [NAMES[1]]  # the model's own output name (values: pentary weights, see pcc check)
        assert z[NAMES[1]].shape == (1, 2)
    assert main(["check", str(path), "-i", f"{NAMES[0]}={tmp_path / 'x.npy'}", "--calibration", str(cal)]) == 0
    assert "Traceback" not in capsys.readouterr().err


def test_calibration_of_the_wrong_kind_is_one_clear_error(tmp_path, capsys) -> None:  # noqa: ANN001
    path = tmp_path / "named.onnx"
    _named_model(path)
    npy = tmp_path / "cal.npy"
    np.save(npy, RNG.standard_normal((8, 12)).astype(np.float32))
    junk = tmp_path / "junk.npz"
    junk.write_text("not numpy\n")
    for bad in (npy, junk):
        assert main(["compile", str(path), "-o", str(tmp_path / "p.pasm"), "--calibration", str(bad)]) == 1
        err = capsys.readouterr().err
        assert f"calibration file {bad}" in err and "expected an .npz" in err
        assert "Traceback" not in err and "internal error" not in err
    assert main(["compile", str(path), "-o", str(tmp_path / "p.pasm")]) == 0
    capsys.readouterr()
    np.savez(tmp_path / "two.npz", a=np.zeros(3), b=np.zeros(3))
    assert main(["run", str(tmp_path / "p.pasm"), "-i", f"{NAMES[0]}={tmp_path / 'two.npz'}"]) == 1
    assert "give one .npy per input" in capsys.readouterr().err
