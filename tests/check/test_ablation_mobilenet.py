"""``pcc check``'s worst layer against an independent one-layer-at-a-time ablation, on the zoo's MobileNetV2
(random weights, 1x3x64x64, 16 random calibration inputs, 4 random inputs).

The reference is onnxruntime running the exported float model with one conv/gemm's weight and bias replaced
by the program's (its pents times the scale its requantization stands for; for a conv with a fused residual
add, the scale before the EADD), everything else float.  It leaves out the activation rounding (8 pents, ~100 dB
below), so each layer's output SQNR agrees with pcc's ablation within a fraction of a dB, and the two rank the
layers in the same order (measured: 12 conv/gemm layers, 52.7 to 77.5 dB, at most 0.31 dB apart, at a conv
with a fused residual, where the reference leaves out the EADD's rounding)."""

from __future__ import annotations

import math
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "frontends"))

from onnx import numpy_helper  # noqa: E402
from zoo_models import build_zoo  # noqa: E402

from pcc.backend.codegen import layer_name  # noqa: E402
from pcc.drivers.check import check_model, compile_traced  # noqa: E402
from pcc.frontends import load_model  # noqa: E402


def _program_weights(m, op) -> tuple[np.ndarray, np.ndarray]:  # noqa: ANN001
    """The float weight and bias the program's conv/gemm ``op`` computes with."""
    s_x, s_y = float(op.operands[0].owner.attr("scale")), float(op.attr("scale"))
    if op.attr("res_mult") is not None:  # requantized to a mid scale, then added to the residual by EADD
        s_y *= op.attr("res_mult")[0] / 2.0 ** op.attr("res_shift")[0]
    mult, shift = (m.weight(op.operands[k]).astype(np.float64) for k in (3, 4))
    s_w = s_y * mult / np.exp2(shift) / s_x
    q = m.weight(op.operands[1]).astype(np.float64)
    w = q * s_w.reshape((-1,) + (1,) * (q.ndim - 1))
    return w, m.weight(op.operands[2]).astype(np.float64) * s_x * s_w


def test_mobilenet_v2_worst_layer_matches_an_onnxruntime_ablation(tmp_path) -> None:  # noqa: ANN001
    net, xs = build_zoo("mobilenet_v2")
    path = tmp_path / "m.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(net.eval(), xs, str(path), dynamo=False, input_names=["x"], output_names=["y"])
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "cal.npz", x=rng.standard_normal((16, 3, 64, 64)).astype(np.float32))
    x = rng.standard_normal((4, 3, 64, 64)).astype(np.float32)
    cal = str(tmp_path / "cal.npz")
    report = check_model(path, {"x": x}, calibration=cal)
    pcc_db = {r.layer: r.alone_db for r in report.layers if r.alone_rank is not None}

    m = compile_traced(load_model(path), [{"x": x[i : i + 1]} for i in range(len(x))], calibration=cal).module
    model = onnx.load(path)
    nodes = {nd.name: nd for nd in model.graph.node}

    def run(mp) -> np.ndarray:  # noqa: ANN001
        s = ort.InferenceSession(mp.SerializeToString(), providers=["CPUExecutionProvider"])
        return np.concatenate([s.run(None, {"x": x[i : i + 1]})[0] for i in range(len(x))]).astype(np.float64)

    ref = run(model)
    ort_db = {}
    for op in m.main.body:
        if op.name not in ("pent.conv2d", "pent.gemm"):
            continue
        node = nodes[op.loc.node]
        w, b = _program_weights(m, op)
        alt = onnx.load(path)
        inits = {i.name: i for i in alt.graph.initializer}
        w0 = numpy_helper.to_array(inits[node.input[1]])
        inits[node.input[1]].CopyFrom(numpy_helper.from_array(w.reshape(w0.shape).astype(np.float32), node.input[1]))
        inits[node.input[2]].CopyFrom(numpy_helper.from_array(b.astype(np.float32), node.input[2]))
        got = run(alt)
        ort_db[layer_name(op)] = 10 * math.log10(np.sum(ref**2) / np.sum((ref - got) ** 2))

    assert len(ort_db) == 12
    for k, db in ort_db.items():
        assert abs(pcc_db[k] - db) < 0.5, (k, pcc_db[k], db)
    assert sorted(ort_db, key=ort_db.get) == sorted(ort_db, key=pcc_db.get)
    worst = min(ort_db, key=ort_db.get)
    assert report.worst.layer == worst, (report.worst.layer, worst)
    # and the SQNR at each layer would have named another one (errors add up downstream)
    assert report.worst_sqnr.layer != worst
