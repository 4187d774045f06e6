"""``pcc export``: a pentary model as standard QDQ ONNX.  onnxruntime runs the file; its outputs are checked
against ``pcc run`` on the compiled program (the simulator), its weights against the program's pents, and the
file round-trips through pcc's own ONNX importer to the same pents."""

from __future__ import annotations

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

from pcc.backend.assembler import assemble_file  # noqa: E402
from pcc.backend.codegen import write_program  # noqa: E402
from pcc.cli import main  # noqa: E402
from pcc.drivers.compile import compile_module  # noqa: E402
from pcc.drivers.export import export_module  # noqa: E402
from pcc.frontends import load_model  # noqa: E402
from pcc.passes.pipeline import default_passes  # noqa: E402
from pcc.runtime.simulator import run_program  # noqa: E402


def _compiled(model, tmp_path, **opts):  # noqa: ANN001, ANN202
    m = load_model(model)
    result = compile_module(m, default_passes(**opts))
    write_program(result.compiled, tmp_path / "m.pasm")
    return m, assemble_file(tmp_path / "m.pasm")


def _ort(proto, feeds: dict[str, np.ndarray]) -> np.ndarray:  # noqa: ANN001
    s = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    (name,) = feeds
    x = feeds[name]
    return np.concatenate([s.run(None, {name: x[i : i + 1]})[0] for i in range(len(x))])


def _pents(m) -> list[np.ndarray]:  # noqa: ANN001
    return [m.weight(op.operands[1]) for op in m.main.body if op.name in ("pent.conv2d", "pent.gemm")]


def _rel(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.max(np.abs(a - b)) / np.max(np.abs(b)))


@pytest.mark.parametrize("opset", [21, 13])
def test_digits_cnn_export_matches_the_simulator(digits_cnn, tmp_path, opset) -> None:  # noqa: ANN001
    m, prog = _compiled(digits_cnn["model"], tmp_path, calibration=digits_cnn["cal"])
    x = digits_cnn["x_test"]
    sim = run_program(prog, {"input": x})["output"].reshape(len(x), -1)
    proto = export_module(m, opset)
    onnx.checker.check_model(proto, full_check=True)
    got = _ort(proto, {"input": x})
    agree = float(np.mean(got.argmax(1) == sim.argmax(1)))
    assert agree >= 0.995, agree
    # 8-pent activations on INT16 at 6x pcc's step (opset 21): 1e-4; on INT8 (opset 13) the 8-bit grid: 3e-2
    assert _rel(got, sim) < (1e-2 if opset == 21 else 3e-2)
    # the weights: INT4 (INT8) initializers holding exactly the program's pents, per-channel scales
    inits = {t.name: t for t in proto.graph.initializer}
    want = onnx.TensorProto.INT4 if opset == 21 else onnx.TensorProto.INT8
    for op, q in zip([op for op in m.main.body if op.name in ("pent.conv2d", "pent.gemm")], _pents(m), strict=True):
        t = inits[f"{op.loc.node}.weight_quantized"]
        assert t.data_type == want
        w = onnx.numpy_helper.to_array(t).astype(np.int8)
        assert set(np.unique(w)) <= {-2, -1, 0, 1, 2}
        if op.name == "pent.conv2d":  # (the gemm's columns are back in the NCHW order of a plain flatten)
            np.testing.assert_array_equal(w, q)
        s = onnx.numpy_helper.to_array(inits[f"{op.loc.node}.weight_scale"])
        assert s.shape == (q.shape[0],) and np.all(s > 0)
    # every QuantizeLinear/DequantizeLinear reads named scale and zero-point initializers
    qdq = [n for n in proto.graph.node if n.op_type in ("QuantizeLinear", "DequantizeLinear")]
    assert len(qdq) >= 8 and all(n.input[1] in inits and n.input[2] in inits for n in qdq)


@pytest.mark.parametrize("opset", [21, 13])
def test_export_round_trips_to_the_same_pents(digits_cnn, tmp_path, opset) -> None:  # noqa: ANN001
    m, _ = _compiled(digits_cnn["model"], tmp_path, calibration=digits_cnn["cal"])
    path = tmp_path / "m.onnx"
    path.write_bytes(export_module(m, opset).SerializeToString())
    back, _ = _compiled(path, tmp_path, calibration=digits_cnn["cal"])
    for a, b in zip(_pents(m), _pents(back), strict=True):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize(("act_pents", "tol"), [(3, 0.1), (6, 1e-2), (8, 1e-2)])
def test_residual_cnn_export(onnx_cnn, tmp_path, act_pents, tol) -> None:  # noqa: ANN001
    """Conv + BN + ReLU, a residual add fused into a conv, max pool, global average pool, linear: at 3 and 6
    pents the words fit INT8/INT16 exactly (pcc's own grid), at 8 on INT16 at 6x the step.  The roundings
    differ (ONNX ties to even, pcc away from zero; the residual add rounded once, not per operand): one level
    per op at most, which at 3 pents (levels -62..62; the 2x2 average pools make ties common) is a few %."""
    m, prog = _compiled(onnx_cnn["model"], tmp_path, calibration=onnx_cnn["cal"], act_pents=act_pents)
    assert any(op.name == "pent.conv2d" and len(op.operands) > 5 for op in m.main.body)  # the fused residual
    x = np.concatenate([np.load(onnx_cnn["x"]), np.load(onnx_cnn["batch"])])
    sim = np.concatenate([run_program(prog, {"x": x[i : i + 1]})["logits"] for i in range(len(x))])
    got = _ort(export_module(m, 21), {"x": x})
    assert _rel(got, sim) < tol
    assert np.array_equal(got.argmax(1), sim.argmax(1))


def test_export_cli(digits_cnn, tmp_path, capsys) -> None:  # noqa: ANN001
    pir = tmp_path / "m.pir"
    assert main(["compile", str(digits_cnn["model"]), "--calibration", str(digits_cnn["cal"]), "--emit", "pent",
                 "-o", str(pir)]) == 0  # fmt: skip
    out = tmp_path / "m.onnx"
    assert main(["export", str(pir), "-o", str(out)]) == 0
    onnx.checker.check_model(onnx.load(str(out)))
    assert main(["export", str(digits_cnn["model"]), "--calibration", str(digits_cnn["cal"]), "-o", str(out),
                 "--opset", "13"]) == 0  # fmt: skip
    assert onnx.load(str(out)).opset_import[0].version == 13
    capsys.readouterr()
    assert main(["export", str(pir), "-o", str(out), "--opset", "17"]) == 1
    err = capsys.readouterr().err
    assert "--opset must be 13" in err and "Traceback" not in err
    assert main(["export", str(pir), "-o", str(out), "--act-pents", "6"]) == 1
    assert "already quantized" in capsys.readouterr().err


@pytest.mark.parametrize("fused", [True, False], ids=["on the conv", "a lut op"])
def test_table_activation_export(tmp_path, fused: bool) -> None:  # noqa: ANN001
    """A sigmoid (a TLUT table: fused onto the conv, or a pent.lut after a ReLU) exports as Round/Clip/Gather on
    the table of outputs."""
    import warnings

    torch = pytest.importorskip("torch")
    layers = [torch.nn.Conv2d(3, 4, 3, padding=1)] + ([] if fused else [torch.nn.ReLU()])
    layers += [torch.nn.Sigmoid(), torch.nn.Flatten(), torch.nn.Linear(4 * 6 * 6, 3)]
    net = torch.nn.Sequential(*layers).eval()
    x = np.random.default_rng(0).standard_normal((8, 3, 6, 6)).astype(np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(net, (torch.from_numpy(x[:1]),), str(tmp_path / "s.onnx"), dynamo=False,
                          input_names=["x"], output_names=["y"])  # fmt: skip
    np.savez(tmp_path / "cal.npz", x=x)
    m, prog = _compiled(tmp_path / "s.onnx", tmp_path, calibration=str(tmp_path / "cal.npz"))
    assert any(op.name == "pent.lut" for op in m.main.body) != fused
    assert any(op.name == "pent.conv2d" and op.attr("act") == "lut" for op in m.main.body) == fused
    sim = np.concatenate([run_program(prog, {"x": x[i : i + 1]})["y"] for i in range(len(x))])
    proto = export_module(m, 21)
    assert any(n.op_type == "Gather" for n in proto.graph.node)
    assert _rel(_ort(proto, {"x": x}), sim) < 1e-2
