"""The ONNX file reader that keeps large weights out of the parsed message (``pcc.frontends.onnx_wire``).

Checked against onnx's own reader: the same arrays, the same message (byte for byte, less the left-out
``raw_data``), the same interpreter results; and the safety of its length handling on truncated and altered
files (every cut gives a PccError naming the file, never a crash or an array of the wrong size)."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from onnx_util import model

from pcc import interpreter
from pcc.diagnostics import PccError
from pcc.frontends import onnx as onnx_frontend
from pcc.frontends import onnx_wire

RNG = np.random.default_rng(3)


def node(op: str, ins: list[str], outs: list[str], **attrs) -> onnx.NodeProto:  # noqa: ANN003
    return helper.make_node(op, ins, outs, name=f"{op.lower()}_{outs[0]}", **attrs)


def _model() -> onnx.ModelProto:
    w = RNG.standard_normal((16, 8, 3, 3)).astype(np.float32)  # 4608 bytes: left out of the message
    b = RNG.standard_normal(16).astype(np.float32)  # small: stays in the message
    mask = RNG.random((1, 16, 8, 8)) > 0.5  # bool, 1024 elements: stays (below the threshold)
    big_mask = RNG.random((4, 16, 8, 8)) > 0.5  # bool, 4096 bytes: left out, read back by onnx's reader
    shift = np.arange(16 * 64, dtype=np.int64).reshape(1, 16, 8, 8)  # int64, 8192 bytes
    nodes = [
        node("Conv", ["x", "w", "b"], ["c"], pads=[1, 1, 1, 1]),
        node("Where", ["mask", "c", "c2"], ["m"]),
        node("Cast", ["shift"], ["s"], to=TensorProto.FLOAT),
        node("Add", ["m", "s"], ["a"]),
        node("ReduceMax", ["big"], ["bm"], axes=[0], keepdims=1),
        node("Cast", ["bm"], ["bf"], to=TensorProto.FLOAT),
        node("Mul", ["a", "bf"], ["y"]),
        node("Neg", ["c"], ["c2"]),
    ]
    inits = {"w": w, "b": b, "mask": mask, "shift": shift}
    m = model(nodes, {"x": np.zeros((1, 8, 8, 8), np.float32)}, ["y"], 13, inits)
    big = numpy_helper.from_array(big_mask.astype(np.int32), "big_i")  # ReduceMax on int32, then cast
    m.graph.initializer.append(big)
    m.graph.node[4].input[0] = "big_i"
    return m


def test_reader_matches_onnx_load(tmp_path) -> None:  # noqa: ANN001
    m = _model()
    path = tmp_path / "m.onnx"
    onnx.save(m, str(path))
    got = onnx_wire.read_model(path)
    assert got is not None
    skeleton, raws = got
    names = [t.name for t in skeleton.graph.initializer]
    assert sorted(names[i] for i in raws) == ["big_i", "shift", "w"]
    full = onnx.load(str(path))
    for i, (a, b) in enumerate(zip(skeleton.graph.initializer, full.graph.initializer, strict=True)):
        x, y = onnx_frontend._initializer_array(a, raws.get(i)), numpy_helper.to_array(b)
        assert a.name == b.name and x.dtype == y.dtype and x.shape == y.shape and np.array_equal(x, y), a.name
        assert not x.flags.writeable  # a view on the read-only mapping (or on protobuf's bytes)
    for i in raws:
        full.graph.initializer[i].ClearField("raw_data")
    assert skeleton.SerializeToString() == full.SerializeToString()

    x = RNG.standard_normal((1, 8, 8, 8)).astype(np.float32)
    via_file = interpreter.run(onnx_frontend.load(path), {"x": x})["y"]
    via_proto = interpreter.run(onnx_frontend.load_proto(onnx.load(str(path))), {"x": x})["y"]
    np.testing.assert_array_equal(via_file, via_proto)


def test_every_truncation_is_one_clear_error(tmp_path) -> None:  # noqa: ANN001
    data = _model().SerializeToString()
    path = tmp_path / "cut.onnx"
    for cut in range(1, len(data), max(len(data) // 97, 1)):
        path.write_bytes(data[:cut])
        try:
            onnx_frontend.load(path)
        except PccError as exc:
            assert str(path) in str(exc)
        # a cut that happens to leave a valid model (between top-level fields) may import: never another error


def test_raw_data_of_the_wrong_length_names_the_initializer(tmp_path) -> None:  # noqa: ANN001
    m = _model()
    w = next(t for t in m.graph.initializer if t.name == "w")
    w.raw_data = w.raw_data + b"\0" * 8  # 8 bytes more than dims [16, 8, 3, 3] of float32 hold
    path = tmp_path / "long.onnx"
    onnx.save(m, str(path))
    with pytest.raises(PccError, match=r"initializer 'w'.*4616 bytes.*need 4608"):
        onnx_frontend.load(path)


def test_a_repeated_graph_field_is_left_to_protobuf(tmp_path) -> None:  # noqa: ANN001
    """Protobuf merges a message field written twice; the reader does not guess and the ordinary path runs."""
    m = _model()
    extra = onnx.ModelProto()
    extra.graph.doc_string = "second graph record"
    data = m.SerializeToString() + extra.SerializeToString()
    path = tmp_path / "twice.onnx"
    path.write_bytes(data)
    assert onnx_wire.read_model(path) is None
    module = onnx_frontend.load(path)
    x = RNG.standard_normal((1, 8, 8, 8)).astype(np.float32)
    ref = interpreter.run(onnx_frontend.load_proto(m), {"x": x})["y"]
    np.testing.assert_array_equal(interpreter.run(module, {"x": x})["y"], ref)


def test_a_length_past_the_end_falls_back_to_the_ordinary_error(tmp_path) -> None:  # noqa: ANN001
    g = helper.make_graph([], "g", [], [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])])
    body = g.SerializeToString()
    data = bytes([7 << 3 | 2]) + bytes([0xFF, 0xFF, 0xFF, 0x7F]) + body  # graph: a length of 268 MB
    path = tmp_path / "long_len.onnx"
    path.write_bytes(data)
    assert onnx_wire.read_model(path) is None
    with pytest.raises(PccError, match="not a valid ONNX model"):
        onnx_frontend.load(path)
