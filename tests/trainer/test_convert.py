"""ONNX, torch.export (.pt2) and PyTorch module conversion to the pentary model JSON."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper

from pcc.cli import main
from pcc.diagnostics import PccError
from pcc.trainer.convert import onnx_to_model, pt2_to_model
from pcc.trainer.model import PentaryModel
from pcc.trainer.quantizer import PyTorchToPentaryConverter
from pcc.trainer.trainer import PentaryTrainer

ort = pytest.importorskip("onnxruntime")


def _init(name, a):
    return numpy_helper.from_array(np.asarray(a, np.float32), name)


def _save(nodes, inits, in_shape, out_shape, path, opset=13):
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", *in_shape])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", *out_shape])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    onnx.checker.check_model(model)
    onnx.save(model, path)
    return path


def _ort(path, x):
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return sess.run(None, {"x": x})[0]


def test_onnx_mlp_gemm_and_matmul_add(rng, tmp_path):
    w1 = rng.standard_normal((16, 8)).astype(np.float32)  # Gemm with transB=1: [out, in]
    w2 = rng.standard_normal((16, 4)).astype(np.float32)  # MatMul: [in, out]
    nodes = [
        helper.make_node("Gemm", ["x", "w1", "b1"], ["h"], name="fc1", transB=1),
        helper.make_node("Relu", ["h"], ["r"], name="relu"),
        helper.make_node("MatMul", ["r", "w2"], ["m"], name="fc2"),
        helper.make_node("Add", ["m", "b2"], ["y"], name="bias2"),
    ]
    inits = [
        _init("w1", w1),
        _init("b1", rng.standard_normal(16)),
        _init("w2", w2),
        _init("b2", rng.standard_normal(4)),
    ]
    path = _save(nodes, inits, [8], [4], tmp_path / "mlp.onnx")
    model = onnx_to_model(path)
    assert [ly.type for ly in model.layers] == ["linear", "relu", "linear"]
    x = rng.standard_normal((5, 8)).astype(np.float32)
    np.testing.assert_allclose(model.predict(x, quantized=False), _ort(path, x), rtol=1e-4, atol=1e-4)


def test_onnx_cnn_against_onnxruntime_and_fine_tuning(rng, tmp_path, capsys):
    nodes = [
        helper.make_node("Conv", ["x", "cw", "cb"], ["c"], name="conv", pads=[1, 1, 1, 1], strides=[1, 1]),
        helper.make_node("BatchNormalization", ["c", "g", "be", "mu", "var"], ["bn"], name="bn", epsilon=1e-5),
        helper.make_node("Relu", ["bn"], ["r"], name="relu"),
        helper.make_node("MaxPool", ["r"], ["p"], name="pool", kernel_shape=[2, 2], strides=[2, 2]),
        helper.make_node("Flatten", ["p"], ["f"], name="flat", axis=1),
        helper.make_node("Gemm", ["f", "fw", "fb"], ["y"], name="fc", transB=1),
    ]
    inits = [
        _init("cw", rng.standard_normal((4, 1, 3, 3))), _init("cb", rng.standard_normal(4)),
        _init("g", rng.uniform(0.5, 1.5, 4)), _init("be", rng.standard_normal(4)),
        _init("mu", rng.standard_normal(4)), _init("var", rng.uniform(0.5, 2, 4)),
        _init("fw", rng.standard_normal((10, 64)) * 0.1), _init("fb", rng.standard_normal(10)),
    ]  # fmt: skip
    path = _save(nodes, inits, [1, 8, 8], [10], tmp_path / "cnn.onnx")
    assert main(["convert", str(path), "-o", str(tmp_path / "cnn.json")]) == 0
    capsys.readouterr()
    model = PentaryModel.load(tmp_path / "cnn.json")
    assert model.input_shape == (1, 8, 8)
    assert [ly.type for ly in model.layers] == ["conv2d", "batchnorm", "relu", "maxpool2d", "flatten", "linear"]
    x = rng.standard_normal((6, 1, 8, 8)).astype(np.float32)
    np.testing.assert_allclose(model.predict(x, quantized=False), _ort(path, x), rtol=1e-4, atol=1e-4)
    # the converted file loads into a trainer for evaluation and fine-tuning
    y = np.argmax(_ort(path, x), axis=1)
    trainer = PentaryTrainer(log=None)
    trainer.load_model(tmp_path / "cnn.json")
    trainer.train((x.reshape(6, -1), y), (x.reshape(6, -1), y), epochs=2, batch_size=3)
    assert np.isfinite(trainer.metrics["val_loss_pentary"])


def test_onnx_unsupported_op_is_named(rng, tmp_path, capsys):
    nodes = [
        helper.make_node("Gemm", ["x", "w", "b"], ["h"], name="fc", transB=1),
        helper.make_node("Sigmoid", ["h"], ["s"], name="act"),
        helper.make_node("Softmax", ["s"], ["y"], name="sm"),
    ]
    path = _save(nodes, [_init("w", np.ones((3, 2))), _init("b", np.zeros(3))], [2], [3], tmp_path / "m.onnx")
    with pytest.raises(PccError, match="ONNX op Sigmoid cannot be expressed"):
        onnx_to_model(path)
    assert main(["convert", str(path), "-o", str(tmp_path / "m.json")]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"{path} (node 'act'): error: ONNX op Sigmoid") and "Traceback" not in err
    assert not (tmp_path / "m.json").exists()


def test_onnx_branching_graph_is_refused(rng, tmp_path):
    nodes = [
        helper.make_node("Relu", ["x"], ["a"], name="r1"),
        helper.make_node("Relu", ["x"], ["b"], name="r2"),
        helper.make_node("Gemm", ["b", "w"], ["y"], name="fc", transB=1),
    ]
    path = _save(nodes, [_init("w", np.ones((3, 2)))], [2], [3], tmp_path / "b.onnx")
    with pytest.raises(PccError, match="not a simple chain"):
        onnx_to_model(path)


def test_torch_onnx_export_round_trip(rng, tmp_path):
    m = torch.nn.Sequential(torch.nn.Conv2d(1, 3, 3, padding=1), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
                            torch.nn.Flatten(), torch.nn.Linear(48, 5)).eval()  # fmt: skip
    try:
        torch.onnx.export(m, (torch.randn(1, 1, 8, 8),), str(tmp_path / "t.onnx"), dynamo=False)
    except Exception as exc:  # pragma: no cover - exporter availability varies
        pytest.skip(f"torch.onnx.export unavailable: {exc}")
    model = onnx_to_model(tmp_path / "t.onnx")
    x = rng.standard_normal((3, 1, 8, 8)).astype(np.float32)
    with torch.no_grad():
        np.testing.assert_allclose(model.predict(x, quantized=False), m(torch.from_numpy(x)).numpy(), atol=1e-4)


@pytest.mark.parametrize("decompose", [False, True])
def test_pt2_export(rng, tmp_path, decompose):
    m = torch.nn.Sequential(
        torch.nn.Conv2d(1, 4, 3, padding=1), torch.nn.BatchNorm2d(4), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
        torch.nn.Flatten(), torch.nn.Linear(64, 10),
    ).eval()  # fmt: skip
    ep = torch.export.export(m, (torch.randn(2, 1, 8, 8),))
    if decompose:
        ep = ep.run_decompositions()
    torch.export.save(ep, str(tmp_path / "m.pt2"))
    model = pt2_to_model(tmp_path / "m.pt2")
    x = rng.standard_normal((3, 1, 8, 8)).astype(np.float32)
    with torch.no_grad():
        np.testing.assert_allclose(model.predict(x, quantized=False), m(torch.from_numpy(x)).numpy(), atol=1e-4)


def test_pt2_unsupported_op(tmp_path):
    m = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.Sigmoid()).eval()
    torch.export.save(torch.export.export(m, (torch.randn(2, 4),)), str(tmp_path / "s.pt2"))
    with pytest.raises(PccError, match="op sigmoid.default cannot be expressed"):
        pt2_to_model(tmp_path / "s.pt2")


def test_pytorch_converter_module_state_dict_and_errors(rng, tmp_path):
    mlp = torch.nn.Sequential(torch.nn.Linear(6, 5), torch.nn.ReLU(), torch.nn.Linear(5, 2))
    conv = PyTorchToPentaryConverter()
    d = conv.convert(mlp, tmp_path / "a.json")
    assert d["input_dim"] == 6 and d["hidden_dims"] == [5]
    torch.save(mlp.state_dict(), tmp_path / "sd.pt")
    model = conv.to_model(str(tmp_path / "sd.pt"), activations=["relu", "none"])
    x = rng.standard_normal((4, 6)).astype(np.float32)
    with torch.no_grad():
        np.testing.assert_allclose(model.predict(x, quantized=False), mlp(torch.from_numpy(x)).numpy(), atol=1e-5)
    with pytest.raises(PccError, match="Sigmoid"):
        conv.to_model(torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.Sigmoid()))

    class Residual(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.a = torch.nn.Linear(3, 3)

        def forward(self, x):
            return x + self.a(x)

    with pytest.raises(PccError, match="Residual"):
        conv.to_model(Residual())

    class Custom(torch.nn.Sequential):
        def forward(self, x):
            return super().forward(x) * 2

    with pytest.raises(PccError, match="do not reproduce"):
        conv.to_model(Custom(torch.nn.Linear(3, 3)))
    with pytest.raises(PccError, match="input_shape"):
        conv.to_model(torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3)))


def test_pt_file_through_cli(rng, tmp_path, capsys):
    m = torch.nn.Sequential(
        torch.nn.Conv2d(3, 2, 3), torch.nn.ReLU(), torch.nn.Flatten(), torch.nn.Linear(2 * 4 * 4, 3)
    )
    torch.save(m, tmp_path / "m.pt")
    assert main(["convert", str(tmp_path / "m.pt"), "--input-shape", "1,3,6,6", "-o", str(tmp_path / "m.json")]) == 0
    assert PentaryModel.load(tmp_path / "m.json").input_shape == (3, 6, 6)
    capsys.readouterr()
