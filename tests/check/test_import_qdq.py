"""Import of models quantized elsewhere: onnxruntime.quantization's QDQ output, and a QONNX (Brevitas-style)
model with ``Quant`` nodes.  A weight whose integer levels fit five stays pentary exactly; the others are
re-quantized; a note names each weight."""

from __future__ import annotations

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
quantization = pytest.importorskip("onnxruntime.quantization")

from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from pcc import interpreter  # noqa: E402
from pcc.frontends import load_model  # noqa: E402
from pcc.pass_manager import PassManager  # noqa: E402
from pcc.passes.pipeline import default_passes  # noqa: E402


def _quantize_static(src, dst, cal: np.ndarray) -> None:  # noqa: ANN001
    class Reader(quantization.CalibrationDataReader):
        def __init__(self) -> None:
            self.it = iter([{"x": c[None]} for c in cal])

        def get_next(self):  # noqa: ANN202
            return next(self.it, None)

    quantization.quantize_static(
        str(src), str(dst), Reader(), quant_format=quantization.QuantFormat.QDQ, per_channel=True,
        weight_type=quantization.QuantType.QInt8, activation_type=quantization.QuantType.QInt8,
    )  # fmt: skip


def _ort(path, x: np.ndarray) -> np.ndarray:  # noqa: ANN001
    s = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return np.concatenate([s.run(None, {s.get_inputs()[0].name: x[i : i + 1]})[0] for i in range(len(x))])


def _pents(m) -> list[np.ndarray]:  # noqa: ANN001
    return [m.weight(op.operands[1]) for op in m.main.body if op.name in ("pent.conv2d", "pent.gemm")]


def test_onnxruntime_qdq_model_imports_and_compiles(onnx_cnn, tmp_path, capsys) -> None:  # noqa: ANN001
    cal = np.load(onnx_cnn["cal"])["x"]
    q = tmp_path / "q.onnx"
    _quantize_static(onnx_cnn["model"], q, cal)
    assert sum(n.op_type == "QuantizeLinear" for n in onnx.load(str(q)).graph.node) >= 5
    capsys.readouterr()
    m = load_model(q)
    err = capsys.readouterr().err
    assert err.count("do not fit five: re-quantized") == 3  # conv1 (BN folded in), conv2, fc: int8 levels
    x = np.concatenate([np.load(onnx_cnn["x"]), np.load(onnx_cnn["batch"])])
    # the float graph pcc imported (activation pairs run as the float reference's QuantizeLinear/Dequantize)
    ref = np.concatenate([interpreter.run(m, {"x": x[i : i + 1]})["logits"] for i in range(len(x))])
    np.testing.assert_allclose(ref, _ort(q, x), rtol=1e-4, atol=1e-4 * np.abs(ref).max())
    PassManager(default_passes(calibration=str(onnx_cnn["cal"]))).run(m)
    assert [op.name for op in m.main.body].count("pent.conv2d") == 2  # the pairs left no op behind


def test_pentary_twin_through_onnxruntime_quantizer_keeps_its_pents(tmp_path) -> None:  # noqa: ANN001
    """Weights that are pents times a per-channel scale, quantized to INT8 by onnxruntime (levels -127, +-64,
    0: not a multiple of -2..2 after its rounding), come back as the same pents after pcc re-quantizes."""
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(1)
    conv = torch.nn.Conv2d(3, 6, 3, padding=1)
    pents = rng.integers(-2, 3, (6, 3, 3, 3))
    pents[:, 0, 0, 0] = 2  # every channel reaches +-2, so the scale is its max / 2
    scale = rng.uniform(0.05, 0.2, (6, 1, 1, 1))
    with torch.no_grad():
        conv.weight.copy_(torch.from_numpy((pents * scale).astype(np.float32)))
    net = torch.nn.Sequential(conv, torch.nn.ReLU()).eval()
    x = rng.standard_normal((8, 3, 8, 8)).astype(np.float32)
    f = tmp_path / "f.onnx"
    torch.onnx.export(net, (torch.from_numpy(x[:1]),), str(f), dynamo=False, input_names=["x"])
    q = tmp_path / "q.onnx"
    _quantize_static(f, q, x)
    np.savez(tmp_path / "cal.npz", x=x)
    m = load_model(q)
    PassManager(default_passes(calibration=str(tmp_path / "cal.npz"))).run(m)
    np.testing.assert_array_equal(_pents(m)[0], pents)


def _qonnx_model(path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:  # noqa: ANN001
    """conv (3-bit narrow Quant of pents x per-channel scales) -> ReLU -> pool -> gemm (4-bit Quant, levels to
    +-7), the input through an 8-bit activation Quant."""
    rng = np.random.default_rng(0)
    dom = "qonnx.custom_op.general"
    s1 = rng.uniform(0.1, 0.3, (4, 1, 1, 1)).astype(np.float32)
    p1 = rng.integers(-2, 3, (4, 3, 3, 3))
    w1 = (p1 * s1).astype(np.float32)
    w2 = (rng.standard_normal((5, 4 * 6 * 6)) * 0.1).astype(np.float32)
    s2 = (np.abs(w2).max(1, keepdims=True) / 7).astype(np.float32)
    arrays = {"w1": w1, "s1": s1, "z": np.zeros((), np.float32), "b3": np.array(3.0, np.float32),
              "b4": np.array(4.0, np.float32), "b8": np.array(8.0, np.float32), "sa": np.array(0.02, np.float32),
              "w2": w2, "s2": s2, "shape": np.array([1, -1], np.int64)}  # fmt: skip
    nodes = [
        helper.make_node("Quant", ["x", "sa", "z", "b8"], ["xq"], domain=dom, name="act_q", signed=1, narrow=0),
        helper.make_node("Quant", ["w1", "s1", "z", "b3"], ["w1q"], domain=dom, name="w1_q", signed=1, narrow=1),
        helper.make_node("Conv", ["xq", "w1q"], ["c1"], name="conv1", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c1"], ["r1"], name="relu1"),
        helper.make_node("MaxPool", ["r1"], ["p1"], name="pool1", kernel_shape=[2, 2], strides=[2, 2]),
        helper.make_node("Reshape", ["p1", "shape"], ["f"], name="flat"),
        helper.make_node("Quant", ["w2", "s2", "z", "b4"], ["w2q"], domain=dom, name="w2_q", signed=1, narrow=1),
        helper.make_node("Gemm", ["f", "w2q"], ["y"], name="fc", transB=1),
    ]
    inits = [numpy_helper.from_array(a, k) for k, a in arrays.items()]
    x_info = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 12, 12])
    g = helper.make_graph(nodes, "qonnx_cnn", [x_info], [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 5])],
                          inits)  # fmt: skip
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 13), helper.make_opsetid(dom, 1)]), path)
    w2q = np.clip(np.round(w2 / s2), -7, 7) * s2
    return p1, w1, w2q


def test_qonnx_quant_model(tmp_path, capsys) -> None:  # noqa: ANN001
    path = tmp_path / "qonnx.onnx"
    p1, w1, w2q = _qonnx_model(path)
    capsys.readouterr()
    m = load_model(path)
    err = capsys.readouterr().err
    assert "'w1' (Quant 'w1_q'): 3-bit levels -2..2 fit five: kept as pents" in err
    assert "'w2' (Quant 'w2_q'): 4-bit levels -7..7" in err and "re-quantized" in err
    assert "activation quantizer 'act_q'" in err
    # the float meaning against onnxruntime on the same network with the Quant nodes' weights as constants
    rng = np.random.default_rng(2)
    x = (rng.standard_normal((4, 1, 3, 12, 12)) * 0.5).astype(np.float32)
    std = onnx.load(str(path))
    keep = [n for n in std.graph.node if n.op_type != "Quant"]
    for n in keep:
        n.input[:] = [{"xq": "x", "w1q": "w1c", "w2q": "w2c"}.get(i, i) for i in n.input]
    inits = [numpy_helper.from_array(w1, "w1c"), numpy_helper.from_array(w2q.astype(np.float32), "w2c"),
             numpy_helper.from_array(np.array([1, -1], np.int64), "shape")]  # fmt: skip
    g = helper.make_graph(keep, "std", list(std.graph.input), list(std.graph.output), inits)
    sess = ort.InferenceSession(helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)]).SerializeToString())
    for xi in x:
        np.testing.assert_allclose(interpreter.run(m, {"x": xi})["y"], sess.run(None, {"x": xi})[0], rtol=1e-5,
                                   atol=1e-5)  # fmt: skip
    np.savez(tmp_path / "cal.npz", x=x[:, 0])
    PassManager(default_passes(calibration=str(tmp_path / "cal.npz"))).run(m)
    np.testing.assert_array_equal(_pents(m)[0], p1)  # kept exactly
