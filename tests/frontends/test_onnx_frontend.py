"""The ONNX frontend: opset dispatch checked against onnxruntime, shapes, weights, names, folding, errors."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import helper
from onnx_util import model, ort_run

from pcc import interpreter
from pcc.diagnostics import PccError
from pcc.dialects import nn
from pcc.frontends import onnx as onnx_frontend
from pcc.parser import parse_file
from pcc.printer import write_module
from pcc.verifier import verify_module

R = np.random.default_rng(0)


def f32(*shape: int) -> np.ndarray:
    return R.standard_normal(shape).astype(np.float32)


def i64(*v: int) -> np.ndarray:
    return np.array(v, np.int64)


def node(op: str, ins: list[str], outs: list[str] | None = None, **attrs) -> onnx.NodeProto:  # noqa: ANN003
    """A node named ``<op>_node`` when it writes ``y``, else ``<op>_<first output>`` (names stay unique)."""
    outs = outs or ["y"]
    name = f"{op.lower()}_node" if outs[0] == "y" else f"{op.lower()}_{outs[0]}"
    return helper.make_node(op, ins, outs, name=name, **attrs)


X4 = f32(2, 3, 6, 5)

# (id, opset, nodes, graph inputs, initializers, outputs): every case runs on onnxruntime and on pcc
CASES = [
    ("clip-6-attrs", 7, [node("Clip", ["x"], min=-0.5, max=0.7)], {"x": X4}, {}, ["y"]),
    (
        "clip-11-inputs",
        11,
        [node("Clip", ["x", "lo", "hi"])],
        {"x": X4},
        {"lo": np.float32(-0.2), "hi": np.float32(0.4)},
        ["y"],
    ),
    ("clip-13-max-only", 13, [node("Clip", ["x", "", "hi"])], {"x": X4}, {"hi": np.float32(0.1)}, ["y"]),
    ("split-2-attr", 7, [node("Split", ["x"], ["a", "b"], axis=1, split=[1, 2])], {"x": X4}, {}, ["a", "b"]),
    ("split-13-input", 13, [node("Split", ["x", "s"], ["a", "b"], axis=3)], {"x": X4}, {"s": i64(2, 3)}, ["a", "b"]),
    ("split-13-equal", 13, [node("Split", ["x"], ["a", "b", "c"], axis=1)], {"x": X4}, {}, ["a", "b", "c"]),
    ("split-18-num-outputs", 18, [node("Split", ["x"], ["a", "b"], axis=3, num_outputs=2)], {"x": X4}, {}, ["a", "b"]),
    ("squeeze-1-attr", 7, [node("Squeeze", ["x"], axes=[0])], {"x": f32(1, 3, 4)}, {}, ["y"]),
    ("squeeze-1-all", 7, [node("Squeeze", ["x"])], {"x": f32(1, 3, 1, 4)}, {}, ["y"]),
    ("squeeze-13-input", 13, [node("Squeeze", ["x", "ax"])], {"x": f32(1, 3, 1, 4)}, {"ax": i64(-2)}, ["y"]),
    ("unsqueeze-1-attr", 7, [node("Unsqueeze", ["x"], axes=[0, 3])], {"x": f32(3, 4)}, {}, ["y"]),
    ("unsqueeze-13-input", 13, [node("Unsqueeze", ["x", "ax"])], {"x": f32(3, 4)}, {"ax": i64(-1, 0)}, ["y"]),
    ("reducemean-1-attr", 7, [node("ReduceMean", ["x"], axes=[2, 3], keepdims=0)], {"x": X4}, {}, ["y"]),
    ("reducemean-18-input", 18, [node("ReduceMean", ["x", "ax"])], {"x": X4}, {"ax": i64(-1)}, ["y"]),
    ("reducemean-18-all", 18, [node("ReduceMean", ["x"], keepdims=0)], {"x": X4}, {}, ["y"]),
    ("reducesum-1-attr", 11, [node("ReduceSum", ["x"], axes=[1])], {"x": X4}, {}, ["y"]),
    ("reducesum-13-input", 13, [node("ReduceSum", ["x", "ax"], keepdims=0)], {"x": X4}, {"ax": i64(0, 2)}, ["y"]),
    ("slice-1-attrs", 7, [node("Slice", ["x"], starts=[1, 0], ends=[3, -1], axes=[2, 3])], {"x": X4}, {}, ["y"]),
    (
        "slice-10-steps",
        10,
        [node("Slice", ["x", "s", "e", "a", "st"])],
        {"x": X4},
        {"s": i64(-1, 0), "e": i64(-100, 9**18), "a": i64(2, 3), "st": i64(-2, 2)},
        ["y"],
    ),
    ("slice-13-default-axes", 13, [node("Slice", ["x", "s", "e"])], {"x": X4}, {"s": i64(1, 1), "e": i64(2, 3)}, ["y"]),
    ("pad-2-attrs", 7, [node("Pad", ["x"], pads=[0, 0, 1, 2, 0, 0, 2, 1], value=1.5)], {"x": X4}, {}, ["y"]),
    (
        "pad-11-reflect",
        11,
        [node("Pad", ["x", "p"], mode="reflect")],
        {"x": X4},
        {"p": i64(0, 0, 2, 1, 0, 0, 1, 2)},
        ["y"],
    ),
    ("pad-11-edge", 11, [node("Pad", ["x", "p"], mode="edge")], {"x": X4}, {"p": i64(0, 1, 2, 1, 0, 0, 1, 2)}, ["y"]),
    (
        "pad-13-crop",
        13,
        [node("Pad", ["x", "p", "v"])],
        {"x": X4},
        {"p": i64(0, 0, -1, 2, 0, 0, 1, -2), "v": np.float32(0.25)},
        ["y"],
    ),
    (
        "pad-18-axes",
        18,
        [node("Pad", ["x", "p", "", "ax"])],
        {"x": X4},
        {"p": i64(1, 2, 3, 0), "ax": i64(2, -1)},
        ["y"],
    ),
    ("pad-19-wrap", 19, [node("Pad", ["x", "p"], mode="wrap")], {"x": X4}, {"p": i64(0, 0, 2, 1, 0, 0, 1, 3)}, ["y"]),
    ("softmax-11-legacy", 11, [node("Softmax", ["x"], axis=2)], {"x": X4}, {}, ["y"]),
    ("softmax-11-default", 11, [node("Softmax", ["x"])], {"x": X4}, {}, ["y"]),
    ("logsoftmax-11-legacy", 11, [node("LogSoftmax", ["x"], axis=1)], {"x": X4}, {}, ["y"]),
    ("softmax-13-axis", 13, [node("Softmax", ["x"], axis=1)], {"x": X4}, {}, ["y"]),
    ("upsample-7-attr", 7, [node("Upsample", ["x"], scales=[1.0, 1.0, 2.0, 3.0])], {"x": X4}, {}, ["y"]),
    (
        "upsample-9-input",
        9,
        [node("Upsample", ["x", "s"])],
        {"x": X4},
        {"s": np.array([1, 1, 1.5, 2], np.float32)},
        ["y"],
    ),
    (
        "resize-10-down",
        10,
        [node("Resize", ["x", "s"])],
        {"x": X4},
        {"s": np.array([1, 1, 0.6, 0.5], np.float32)},
        ["y"],
    ),
    (
        "resize-11-scales",
        11,
        [node("Resize", ["x", "roi", "s"], coordinate_transformation_mode="asymmetric", nearest_mode="floor")],
        {"x": X4},
        {"roi": np.zeros(0, np.float32), "s": np.array([1, 1, 2, 1.5], np.float32)},
        ["y"],
    ),
    (
        "resize-13-sizes-half-pixel",
        13,
        [node("Resize", ["x", "", "", "sz"])],
        {"x": X4},
        {"sz": i64(2, 3, 9, 4)},
        ["y"],
    ),
    (
        "resize-13-align-corners",
        13,
        [
            node(
                "Resize",
                ["x", "", "s"],
                coordinate_transformation_mode="align_corners",
                nearest_mode="round_prefer_ceil",
            )
        ],
        {"x": X4},
        {"s": np.array([1, 1, 2, 2], np.float32)},
        ["y"],
    ),
    (
        "resize-13-pytorch-half-pixel",
        13,
        [node("Resize", ["x", "", "s"], coordinate_transformation_mode="pytorch_half_pixel", nearest_mode="ceil")],
        {"x": X4},
        {"s": np.array([1, 1, 0.5, 1.7], np.float32)},
        ["y"],
    ),
    (
        "resize-18-axes",
        18,
        [node("Resize", ["x", "", "s"], axes=[3, 2])],
        {"x": X4},
        {"s": np.array([2, 1.5], np.float32)},
        ["y"],
    ),
    ("dropout-7", 7, [node("Dropout", ["x"], ["y", "m"], ratio=0.3)], {"x": X4}, {}, ["y"]),
    ("dropout-12-ratio", 12, [node("Dropout", ["x", "r"])], {"x": X4}, {"r": np.float32(0.4)}, ["y"]),
    (
        "batchnorm-7-spatial",
        7,
        [node("BatchNormalization", ["x", "g", "b", "m", "v"], epsilon=1e-3)],
        {"x": X4},
        {"g": f32(3), "b": f32(3), "m": f32(3), "v": np.abs(f32(3)) + 0.5},
        ["y"],
    ),
    (
        "batchnorm-15",
        15,
        [node("BatchNormalization", ["x", "g", "b", "m", "v"])],
        {"x": f32(4, 3)},
        {"g": f32(3), "b": f32(3), "m": f32(3), "v": np.abs(f32(3)) + 0.5},
        ["y"],
    ),
    (
        "maxpool-8",
        8,
        [node("MaxPool", ["x"], kernel_shape=[3, 2], strides=[2, 1], pads=[1, 0, 1, 1])],
        {"x": X4},
        {},
        ["y"],
    ),
    (
        "maxpool-10-ceil",
        10,
        [node("MaxPool", ["x"], kernel_shape=[2, 2], strides=[2, 2], ceil_mode=1)],
        {"x": X4},
        {},
        ["y"],
    ),
    (
        "maxpool-12-dilations",
        12,
        [node("MaxPool", ["x"], kernel_shape=[2, 2], dilations=[2, 2], pads=[1, 1, 1, 1])],
        {"x": X4},
        {},
        ["y"],
    ),
    (
        "maxpool-12-same-lower",
        12,
        [node("MaxPool", ["x"], kernel_shape=[3, 3], strides=[2, 2], auto_pad="SAME_LOWER")],
        {"x": X4},
        {},
        ["y"],
    ),
    ("maxpool-1d", 12, [node("MaxPool", ["x"], kernel_shape=[3], strides=[2])], {"x": f32(2, 3, 9)}, {}, ["y"]),
    (
        "avgpool-7-include-pad",
        7,
        [node("AveragePool", ["x"], kernel_shape=[3, 3], pads=[1, 1, 1, 1], count_include_pad=1)],
        {"x": X4},
        {},
        ["y"],
    ),
    (
        "avgpool-10-ceil",
        10,
        [node("AveragePool", ["x"], kernel_shape=[3, 3], strides=[2, 2], ceil_mode=1)],
        {"x": X4},
        {},
        ["y"],
    ),
    (
        "avgpool-19-dilations",
        19,
        [node("AveragePool", ["x"], kernel_shape=[2, 2], dilations=[2, 1], pads=[1, 0, 0, 1])],
        {"x": X4},
        {},
        ["y"],
    ),
    (
        "avgpool-11-same-upper",
        11,
        [node("AveragePool", ["x"], kernel_shape=[2, 3], strides=[2, 2], auto_pad="SAME_UPPER")],
        {"x": X4},
        {},
        ["y"],
    ),
    (
        "global-pools",
        13,
        [node("GlobalAveragePool", ["x"], ["a"]), node("GlobalMaxPool", ["x"], ["b"])],
        {"x": X4},
        {},
        ["a", "b"],
    ),
    (
        "conv-groups-dilation",
        13,
        [node("Conv", ["x", "w", "b"], group=3, dilations=[2, 1], strides=[1, 2], pads=[2, 1, 0, 1])],
        {"x": f32(2, 6, 7, 8)},
        {"w": f32(9, 2, 3, 3), "b": f32(9)},
        ["y"],
    ),
    (
        "conv-depthwise-same-upper",
        11,
        [node("Conv", ["x", "w"], group=6, strides=[2, 2], auto_pad="SAME_UPPER")],
        {"x": f32(1, 6, 7, 8)},
        {"w": f32(6, 1, 3, 3)},
        ["y"],
    ),
    (
        "conv-same-lower",
        11,
        [node("Conv", ["x", "w"], strides=[2, 2], auto_pad="SAME_LOWER", kernel_shape=[4, 4])],
        {"x": f32(1, 3, 7, 8)},
        {"w": f32(4, 3, 4, 4)},
        ["y"],
    ),
    (
        "conv-valid",
        11,
        [node("Conv", ["x", "w"], auto_pad="VALID")],
        {"x": f32(1, 3, 7, 8)},
        {"w": f32(4, 3, 2, 3)},
        ["y"],
    ),
    (
        "conv-1d",
        13,
        [node("Conv", ["x", "w", "b"], pads=[2, 1], strides=[2])],
        {"x": f32(2, 3, 11)},
        {"w": f32(5, 3, 4), "b": f32(5)},
        ["y"],
    ),
    (
        "conv-dynamic-weight",
        13,
        [node("Conv", ["x", "w"], pads=[1, 1, 1, 1])],
        {"x": f32(1, 2, 5, 5), "w": f32(3, 2, 3, 3)},
        {},
        ["y"],
    ),
    (
        "gemm-7",
        7,
        [node("Gemm", ["a", "b", "c"], alpha=0.5, beta=2.0, transA=1)],
        {"a": f32(4, 3)},
        {"b": f32(4, 5), "c": f32(5)},
        ["y"],
    ),
    ("gemm-13-no-c", 13, [node("Gemm", ["a", "b"], transB=1)], {"a": f32(3, 4)}, {"b": f32(5, 4)}, ["y"]),
    ("matmul-batched", 13, [node("MatMul", ["a", "b"])], {"a": f32(2, 3, 4, 5), "b": f32(3, 5, 6)}, {}, ["y"]),
    ("matmul-vector", 13, [node("MatMul", ["a", "b"])], {"a": f32(2, 3, 4)}, {"b": f32(4)}, ["y"]),
    (
        "layernorm-17-stats",
        17,
        [node("LayerNormalization", ["x", "g", "b"], ["y", "m", "s"], axis=2)],
        {"x": X4},
        {"g": f32(6, 5), "b": f32(6, 5)},
        ["y", "m", "s"],
    ),
    ("layernorm-17", 17, [node("LayerNormalization", ["x", "g"], epsilon=1e-3)], {"x": X4}, {"g": f32(5)}, ["y"]),
    ("gelu-20-tanh", 20, [node("Gelu", ["x"], approximate="tanh")], {"x": X4}, {}, ["y"]),
    ("gelu-20", 20, [node("Gelu", ["x"])], {"x": X4}, {}, ["y"]),
    (
        "activations",
        14,
        [
            node("HardSigmoid", ["x"], ["a"], alpha=0.3, beta=0.4),
            node("HardSwish", ["x"], ["b"]),
            node("LeakyRelu", ["x"], ["c"], alpha=0.2),
            node("Sigmoid", ["x"], ["d"]),
            node("Tanh", ["x"], ["e"]),
            node("Erf", ["x"], ["f"]),
            node("Exp", ["x"], ["g"]),
            node("Neg", ["x"], ["h"]),
        ],
        {"x": X4 * 4},
        {},
        list("abcdefgh"),
    ),
    (
        "arith-broadcast",
        13,
        [
            node("Add", ["x", "p"], ["a"]),
            node("Sub", ["p", "x"], ["b"]),
            node("Mul", ["x", "q"], ["c"]),
            node("Div", ["x", "q"], ["d"]),
            node("Pow", ["q", "x"], ["e"]),
            node("Sqrt", ["q"], ["f"]),
        ],
        {"x": X4},
        {"p": f32(5), "q": np.abs(f32(3, 1, 1)) + 0.5},
        list("abcdef"),
    ),
    ("pow-int-exponent", 15, [node("Pow", ["x", "e"])], {"x": X4}, {"e": np.int64(3)}, ["y"]),
    ("flatten-1-axis0", 7, [node("Flatten", ["x"], axis=0)], {"x": X4}, {}, ["y"]),
    ("flatten-13-negative", 13, [node("Flatten", ["x"], axis=-2)], {"x": X4}, {}, ["y"]),
    ("transpose-default", 13, [node("Transpose", ["x"])], {"x": X4}, {}, ["y"]),
    ("reshape-zero-minus-one", 13, [node("Reshape", ["x", "s"])], {"x": X4}, {"s": i64(0, -1, 5)}, ["y"]),
    ("concat-mixed-const", 13, [node("Concat", ["x", "c"], axis=-1)], {"x": X4}, {"c": f32(2, 3, 6, 2)}, ["y"]),
    ("expand-8", 8, [node("Expand", ["x", "s"])], {"x": f32(3, 1)}, {"s": i64(2, 1, 4)}, ["y"]),
    ("gather-13-negative", 13, [node("Gather", ["x", "i"], axis=1)], {"x": X4}, {"i": i64(-1, 0, 2)}, ["y"]),
    (
        "gather-13-dynamic-index",
        13,
        [node("Gather", ["x", "i"], axis=0)],
        {"x": f32(5, 3), "i": i64(4, 0, 4)},
        {},
        ["y"],
    ),
    (
        "cast-13",
        13,
        [node("Cast", ["x"], ["a"], to=onnx.TensorProto.DOUBLE), node("Cast", ["a"], to=7)],
        {"x": X4 * 10},
        {},
        ["y"],
    ),
    (
        "identity-and-constants",
        13,
        [
            node("Constant", [], ["k"], value_floats=[1.0, 2.0, 3.0, 4.0, 5.0]),
            node("Identity", ["x"], ["i"]),
            node("Mul", ["i", "k"]),
        ],
        {"x": X4},
        {},
        ["y"],
    ),
]


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_op_matches_onnxruntime(case) -> None:  # noqa: ANN001
    name, opset, nodes, inputs, inits, outputs = case
    m = model(nodes, inputs, outputs, opset, inits)
    mod = onnx_frontend.load(m)
    got = interpreter.run(mod, inputs)
    ref = ort_run(m, inputs, basic=False)
    for o, r in zip(outputs, ref, strict=True):
        assert got[o].shape == r.shape, (o, got[o].shape, r.shape)
        assert got[o].dtype == r.dtype
        np.testing.assert_allclose(got[o], r, rtol=1e-5, atol=1e-6, err_msg=f"{name}: output {o}")


def test_every_converter_is_reachable() -> None:
    """The op list of the brief imports at the newest opset (and at opset 7 where the op existed then)."""
    ops = set(onnx_frontend.supported_ops())
    for op in (
        "Conv Gemm MatMul Add Sub Mul Div Relu LeakyRelu Clip Sigmoid Tanh HardSigmoid HardSwish Softmax LogSoftmax "
        "MaxPool AveragePool GlobalAveragePool GlobalMaxPool BatchNormalization Flatten Reshape Transpose Concat "
        "Split Slice Squeeze Unsqueeze Pad Identity Dropout Constant Shape Gather Resize ReduceMean Erf Gelu "
        "LayerNormalization Pow Sqrt ReduceSum Cast Upsample Expand"
    ).split():
        assert op in ops, op
    assert "Gelu" not in onnx_frontend.supported_ops(17)  # Gelu exists from opset 20


def test_old_opset_is_upgraded() -> None:
    x = f32(2, 3, 4, 4)
    m = model(
        [node("Add", ["x", "x"], ["t"]), node("Relu", ["t"], ["u"]), node("Softmax", ["u"], axis=1)],
        {"x": x},
        ["y"],
        6,
        ir_version=3,
    )
    mod = onnx_frontend.load(m)
    flat = np.maximum(2 * x, 0).reshape(2, -1)  # opset < 13: softmax over the flattened trailing axes
    e = np.exp(flat - flat.max(1, keepdims=True))
    np.testing.assert_allclose(
        interpreter.run(mod, {"x": x})["y"], (e / e.sum(1, keepdims=True)).reshape(x.shape), rtol=1e-5, atol=1e-7
    )


def test_failed_upgrade_is_a_clear_error() -> None:
    m = model([node("Upsample", ["x"], scales=[1.0, 1.0, 2.0, 2.0])], {"x": X4}, ["y"], 1, ir_version=3)
    with pytest.raises(PccError, match=r"opset 1 is older than 7 and onnx's version converter could not upgrade"):
        onnx_frontend.load(m)


def test_newer_opset_than_onnx_knows() -> None:
    m = model([node("Relu", ["x"])], {"x": X4}, ["y"], onnx_frontend.MAX_OPSET + 1)
    with pytest.raises(PccError, match="newer than this onnx package knows"):
        onnx_frontend.load(m)


# ----------------------------------------------------------------------------------------------- shapes


def test_symbolic_batch_defaults_to_one_with_a_note(capsys) -> None:  # noqa: ANN001
    m = model([node("Relu", ["x"])], {"x": (("N", 3, 4), np.float32)}, ["y"], 13)
    mod = onnx_frontend.load(m)
    assert mod.main.args[0].type.shape == (1, 3, 4)
    err = capsys.readouterr().err
    assert "symbolic batch dimension 'N'; using 1" in err and "--input-shape x=" in err


def test_input_shapes_fix_symbolic_dims(capsys) -> None:  # noqa: ANN001
    m = model([node("Relu", ["x"])], {"x": (("N", 3, "L"), np.float32)}, ["y"], 13)
    with pytest.raises(PccError, match=r"symbolic dimensions \(Nx3xL\).*--input-shape x=Nx3xN"):
        onnx_frontend.load(m)
    mod = onnx_frontend.load(m, {"x": (4, 3, 7)})
    assert mod.main.args[0].type.shape == (4, 3, 7) and mod.main.outputs[0].type.shape == (4, 3, 7)
    assert capsys.readouterr().err == ""
    with pytest.raises(PccError, match="unknown input"):
        onnx_frontend.load(m, {"nope": (1, 2)})
    with pytest.raises(PccError, match="rank 3"):
        onnx_frontend.load(m, {"x": (4, 3)})
    with pytest.raises(PccError, match="contradicts"):
        onnx_frontend.load(m, {"x": (4, 5, 7)})


def test_shape_chain_folds_to_constants() -> None:
    """Shape -> Gather -> Unsqueeze -> Concat -> Reshape (the classic flatten export) leaves one reshape."""
    nodes = [
        node("Shape", ["x"], ["s"]),
        node("Gather", ["s", "zero"], ["n"], axis=0),
        node("Unsqueeze", ["n", "ax"], ["n1"]),
        node("Concat", ["n1", "minus1"], ["shape"], axis=0),
        node("Reshape", ["x", "shape"]),
    ]
    m = model(
        nodes, {"x": (("N", 3, 4, 5), np.float32)}, ["y"], 13, {"zero": np.int64(0), "ax": i64(0), "minus1": i64(-1)}
    )
    mod = onnx_frontend.load(m, {"x": (2, 3, 4, 5)})
    assert [op.name for op in mod.main.body] == ["nn.reshape"]
    assert mod.main.body[0].attr("shape") == [2, 60]
    assert not mod.weights  # the shape constants are gone


def test_data_dependent_shape_on_runtime_data_is_an_error() -> None:
    m = model([node("NonZero", ["x"], ["nz"]), node("Shape", ["nz"])], {"x": X4}, ["y"], 13)
    with pytest.raises(PccError, match=r"'nonzero_nz' \(NonZero\).*data-dependent shape.*only evaluates NonZero"):
        onnx_frontend.load(m)


def test_logic_ops_run_on_runtime_tensors() -> None:
    nodes = [
        node("Greater", ["x", "z"], ["g"]),
        node("IsNaN", ["x"], ["n"]),
        node("Not", ["n"], ["nn"]),
        node("And", ["g", "nn"], ["b"]),
        node("Where", ["b", "x", "z"]),
    ]
    m = model(nodes, {"x": X4}, ["y"], 13, {"z": np.float32(0.25) * np.ones(X4.shape[1:], np.float32)})
    got = interpreter.run(onnx_frontend.load(m), {"x": X4})["y"]
    np.testing.assert_array_equal(got, np.where(X4 > 0.25, X4, np.float32(0.25)))


def test_parameter_input_must_be_constant_or_bound() -> None:
    m = model([node("Reshape", ["x", "s"])], {"x": X4, "s": i64(6, 30)}, ["y"], 13)
    with pytest.raises(PccError, match=r"input 'shape' \('s'\) must be known at import time"):
        onnx_frontend.load(m)
    mod = onnx_frontend.load(m, bind={"s": i64(6, 30)})
    assert [a.name for a in mod.main.args] == ["x"]


# ----------------------------------------------------------------------------------------------- weights, names


def test_initializers_and_constants_become_weights_with_onnx_names() -> None:
    m = model(
        [
            node("Constant", [], ["k"], value=onnx.numpy_helper.from_array(f32(5, 4), "k")),
            node("Gemm", ["x", "w", "b"], ["g"], transB=1),
            node("MatMul", ["g", "k"]),
        ],
        {"x": f32(2, 4)},
        ["y"],
        13,
        {"w": f32(5, 4), "b": f32(5)},
    )
    mod = onnx_frontend.load(m)
    assert set(mod.weights) == {"w", "b", "k"}
    gemm = mod.main.body[0]
    assert isinstance(gemm, nn.Gemm) and gemm.operands[1].name == "w" and gemm.attr("trans_b") is True


def test_odd_names_survive_print_and_parse(tmp_path) -> None:  # noqa: ANN001
    names = {"in": "input:0 (image)", "w": "onnx::Conv_7", "y": "/layer1/conv/Conv_output_0", "z": 'out"put'}
    x = f32(1, 2, 5, 5)
    nodes = [
        helper.make_node("Conv", [names["in"], names["w"]], [names["y"]], name="/layer1/conv/Conv", pads=[1] * 4),
        helper.make_node("Relu", [names["y"]], [names["z"]], name=""),
    ]
    m = model(nodes, {names["in"]: x}, [names["z"], names["y"]], 13, {names["w"]: f32(3, 2, 3, 3)})
    path = tmp_path / "odd.onnx"
    onnx.save(m, path)
    mod = onnx_frontend.load(path)
    conv = mod.main.body[0]
    assert conv.loc.node == "/layer1/conv/Conv" and conv.loc.file == str(path)
    assert mod.main.body[1].loc.node == "Relu_1"  # unnamed nodes are named op_type + index
    write_module(mod, tmp_path / "odd.pir")
    back = parse_file(tmp_path / "odd.pir")
    verify_module(back)
    a, b = interpreter.run(mod, {names["in"]: x}), interpreter.run(back, {names["in"]: x})
    assert list(a) == [names["z"], names["y"]]
    for k in a:
        np.testing.assert_array_equal(a[k], b[k])
    np.testing.assert_allclose(a[names["z"]], ort_run(m, {names["in"]: x})[0], rtol=1e-5, atol=1e-6)


def test_output_that_is_an_input_or_repeated_keeps_its_name() -> None:
    m = model([node("Identity", ["x"], ["a"]), node("Identity", ["a"], ["b"])], {"x": X4}, ["a", "b", "x"], 13)
    mod = onnx_frontend.load(m)
    out = interpreter.run(mod, {"x": X4})
    assert list(out) == ["a", "b", "x"]
    for v in out.values():
        np.testing.assert_array_equal(v, X4)


def test_external_data(tmp_path) -> None:  # noqa: ANN001
    w = f32(16, 8)
    m = model([node("MatMul", ["x", "w"])], {"x": f32(2, 16)}, ["y"], 13, {"w": w})
    path = tmp_path / "ext.onnx"
    onnx.save_model(
        m, path, save_as_external_data=True, all_tensors_to_one_file=True, location="ext.bin", size_threshold=0
    )
    assert (tmp_path / "ext.bin").exists()
    mod = onnx_frontend.load(path)
    np.testing.assert_array_equal(mod.weight_data["w"], w)
    (tmp_path / "ext.bin").unlink()
    with pytest.raises(PccError, match="external weight data"):
        onnx_frontend.load(path)


# ----------------------------------------------------------------------------------------------- errors


def test_unsupported_ops_are_listed_in_one_error() -> None:
    nodes = [
        node("Relu", ["x"], ["a"]),
        helper.make_node("MaxUnpool", ["a", "k"], ["t"], name="unpool_1", kernel_shape=[2, 2]),
        helper.make_node("MaxUnpool", ["a", "k"], ["u"], name="unpool_2", kernel_shape=[2, 2]),
        helper.make_node("NonMaxSuppression", ["a", "a"], ["nms"], name="nms"),
        helper.make_node("FusedConv", ["a"], ["fc"], name="fused", domain="com.microsoft"),
        helper.make_node("Det", ["t"], ["y"], name=""),
    ]
    m = model(nodes, {"x": X4}, ["y"], 17, {"k": i64(2)})
    m.opset_import.append(helper.make_opsetid("com.microsoft", 1))
    with pytest.raises(PccError) as info:
        onnx_frontend.load(m)
    msg = info.value.message
    assert "4 unsupported operators (ai.onnx opset 17)" in msg
    for part in (
        "MaxUnpool (2 nodes: 'unpool_1', 'unpool_2')",
        "NonMaxSuppression (1 node: 'nms') [its output shape depends on the input values",
        "Det (1 node: 'Det_5')",
        "com.microsoft::FusedConv (1 node: 'fused')",
    ):
        assert part in msg, part
    assert any("supported operators:" in n for n in info.value.notes)


@pytest.mark.parametrize("cut", [0.03, 0.5, 0.97])
def test_truncated_file(tmp_path, cut: float) -> None:  # noqa: ANN001
    m = model([node("Conv", ["x", "w", "b"])], {"x": f32(1, 3, 8, 8)}, ["y"], 13, {"w": f32(8, 3, 3, 3), "b": f32(8)})
    data = m.SerializeToString()
    path = tmp_path / "cut.onnx"
    path.write_bytes(data[: int(len(data) * cut)])
    with pytest.raises(PccError) as info:
        onnx_frontend.load(path)
    assert str(path) in str(info.value)


@pytest.mark.parametrize("content", [b"", b"hello, I am not a model\n", bytes(range(256)) * 4])
def test_garbage_file(tmp_path, content: bytes) -> None:  # noqa: ANN001
    path = tmp_path / "garbage.onnx"
    path.write_bytes(content)
    with pytest.raises(PccError, match="not a valid ONNX model"):
        onnx_frontend.load(path)


def test_missing_file_and_directory(tmp_path) -> None:  # noqa: ANN001
    with pytest.raises(PccError, match="no such file"):
        onnx_frontend.load(tmp_path / "nope.onnx")
    with pytest.raises(PccError, match="is a directory"):
        onnx_frontend.load(tmp_path)


def test_undefined_input_names_the_node() -> None:
    m = model([node("Add", ["x", "ghost"])], {"x": X4}, ["y"], 13)
    with pytest.raises(PccError, match=r"'add_node' \(Add\): input #1 'ghost' is not defined"):
        onnx_frontend.load(m)


def test_unsupported_variant_names_node_and_what() -> None:
    m = model([node("MaxPool", ["x"], kernel_shape=[2, 2], storage_order=1)], {"x": X4}, {"y"}, 13)
    with pytest.raises(PccError, match=r"'maxpool_node' \(MaxPool\): storage_order=1 is not supported"):
        onnx_frontend.load(m)


def test_unsorted_graph_is_sorted() -> None:
    nodes = [node("Mul", ["t", "t"]), node("Relu", ["x"], ["t"])]  # the consumer comes first
    m = model(nodes, {"x": X4}, ["y"], 13)
    out = interpreter.run(onnx_frontend.load(m), {"x": X4})["y"]
    np.testing.assert_allclose(out, np.maximum(X4, 0) ** 2, rtol=1e-6)


def test_blocked_dequantize_of_a_constant_weight() -> None:
    """A weight stored in blocks (``block_size`` 2 along axis 1, opset 21): each scale covers two columns."""
    from onnx import TensorProto, numpy_helper

    rng = np.random.default_rng(0)
    q = rng.integers(-5, 5, (4, 6)).astype(np.int8)
    s = (rng.random((4, 3)) + 0.1).astype(np.float32)
    nodes = [
        helper.make_node("DequantizeLinear", ["q", "s"], ["w"], axis=1, block_size=2),
        helper.make_node("MatMul", ["x", "w"], ["y"]),
    ]
    g = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        [numpy_helper.from_array(q, "q"), numpy_helper.from_array(s, "s")],
    )
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 21)])
    m.ir_version = 10
    x = rng.standard_normal((2, 4)).astype(np.float32)
    got = interpreter.run(onnx_frontend.load_proto(m), {"x": x})["y"]
    np.testing.assert_allclose(got, x @ (q.astype(np.float32) * np.repeat(s, 2, axis=1)), rtol=1e-6, atol=1e-6)
    s_bad = numpy_helper.from_array(np.ones((4, 2), np.float32), "s")  # 6 columns in blocks of 2 need 3
    m.graph.initializer[1].CopyFrom(s_bad)
    with pytest.raises(PccError, match=r"blocked scale / zero point must have shape \[4, 3\]"):
        onnx_frontend.load_proto(m)
