"""The float reference interpreter: API, input validation, hooks, and kernels against independent references."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from pcc import interpreter
from pcc.diagnostics import Location, PccError
from pcc.dialects import nn
from pcc.ir import Module, Operation, TensorType
from pcc.parser import parse_module

TEXT = """module @m {
  weight @w : tensor<4x3xf32> = dense<[1.0, 0.0, -1.0, 0.5, 0.5, 0.5, 2.0, 1.0, 0.0, -1.0, -1.0, -1.0]>
  func @main(%x: tensor<2x3xf32>) -> tensor<2x4xf32> {
    %h = nn.gemm(%x, @w) {trans_b = true} : tensor<2x4xf32> loc("m.onnx" : "fc")
    %y = nn.relu(%h) : tensor<2x4xf32> loc("m.onnx" : "act")
    return %y
  }
}
"""


def _module() -> Module:
    return parse_module(TEXT)


X = np.array([[1.0, 2.0, 3.0], [-1.0, 0.5, 2.0]], np.float32)
W = np.array([[1, 0, -1], [0.5, 0.5, 0.5], [2, 1, 0], [-1, -1, -1]], np.float32)


def test_run_returns_outputs_by_name() -> None:
    out = interpreter.run(_module(), {"x": X})
    assert list(out) == ["y"]
    np.testing.assert_allclose(out["y"], np.maximum(X @ W.T, 0))
    assert out["y"].dtype == np.float32


def test_observe_and_return_all() -> None:
    seen: list[tuple[str, tuple[int, ...]]] = []
    interpreter.run(_module(), {"x": X}, observe=lambda op, res: seen.append((op.name, res[0].shape)))
    assert seen == [("nn.gemm", (2, 4)), ("nn.relu", (2, 4))]
    everything = interpreter.run(_module(), {"x": X}, return_all=True)
    assert set(everything) == {"x", "w", "h", "y"}
    np.testing.assert_allclose(everything["h"], X @ W.T)


@pytest.mark.parametrize(
    ("inputs", "message"),
    [
        ({}, r"missing input\(s\) 'x'"),
        ({"x": X, "z": X}, r"unknown input\(s\) 'z'"),
        ({"x": X[:1]}, r"input 'x': expected shape \[2, 3\]"),
        ({"x": X.astype(np.float64)}, r"input 'x': expected element type float32"),
        ({"x": X.tolist()}, r"input 'x': expected a numpy array"),
        ({"x": np.where(X > 2, np.nan, X).astype(np.float32)}, r"input 'x' holds NaN"),
        ({"x": np.where(X > 2, np.inf, X).astype(np.float32)}, r"input 'x' holds infinity"),
    ],
)
def test_input_validation(inputs, message: str) -> None:  # noqa: ANN001
    with pytest.raises(PccError, match=message):
        interpreter.run(_module(), inputs)


def test_nonfinite_inputs_can_be_allowed() -> None:
    x = np.full((2, 3), np.inf, np.float32)
    out = interpreter.run(_module(), {"x": x}, check_finite=False)["y"]
    assert np.isnan(out).any() or np.isinf(out).any()


def test_unknown_function() -> None:
    with pytest.raises(PccError, match=r"no function @other \(functions: @main\)"):
        interpreter.run(_module(), {"x": X}, function="other")


class _Mystery(Operation):
    """An op with no kernel (deliberately not registered)."""

    name = "nn.mystery"
    operands_spec = ("x",)


def test_unknown_op_names_op_and_node() -> None:
    m = _module()
    g = m.main
    y = g.outputs[0]
    op = _Mystery([y], [y.type], loc=Location("m.onnx", node="odd_node"), result_names=["z"])
    g.append(op)
    g.set_outputs([op.result])
    with pytest.raises(PccError, match=r"no kernel for op nn.mystery \(from node 'odd_node'\)"):
        interpreter.run(m, {"x": X})


def test_kernel_result_checked_against_type() -> None:
    m = _module()
    relu = m.main.body[1]
    relu.results[0].type = TensorType((4, 2), "f32")  # a lie the interpreter must catch
    with pytest.raises(PccError, match=r"nn.relu \(node 'act'\): computed shape \[2, 4\] but the result type"):
        interpreter.run(m, {"x": X})


def _conv_direct(x, w, b, strides, pads, dil, group):  # noqa: ANN001, ANN202
    """Convolution by its definition (loops; small sizes only)."""
    n, c, h, wd = x.shape
    m, cg = w.shape[:2]
    kh, kw = w.shape[2:]
    xp = np.pad(x.astype(np.float64), ((0, 0), (0, 0), (pads[0], pads[2]), (pads[1], pads[3])))
    oh = (xp.shape[2] - dil[0] * (kh - 1) - 1) // strides[0] + 1
    ow = (xp.shape[3] - dil[1] * (kw - 1) - 1) // strides[1] + 1
    y = np.zeros((n, m, oh, ow))
    per = m // group
    for b_, o, i, j in itertools.product(range(n), range(m), range(oh), range(ow)):
        g = o // per
        for ci, di, dj in itertools.product(range(cg), range(kh), range(kw)):
            y[b_, o, i, j] += (
                xp[b_, g * cg + ci, i * strides[0] + di * dil[0], j * strides[1] + dj * dil[1]] * w[o, ci, di, dj]
            )
    return y + (0 if b is None else b.reshape(1, -1, 1, 1))


@pytest.mark.parametrize(
    ("c", "m", "group", "k", "strides", "pads", "dil"),
    [
        (3, 4, 1, (3, 3), (1, 1), (1, 1, 1, 1), (1, 1)),
        (4, 6, 2, (3, 2), (2, 1), (0, 1, 2, 0), (1, 2)),
        (5, 5, 5, (3, 3), (2, 2), (1, 1, 1, 1), (1, 1)),
        (2, 6, 2, (1, 1), (1, 2), (0, 0, 0, 0), (1, 1)),
        (3, 2, 1, (2, 3), (3, 2), (2, 0, 1, 3), (2, 1)),
    ],
)
def test_conv2d_matches_direct_definition(c, m, group, k, strides, pads, dil) -> None:  # noqa: ANN001
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, c, 7, 8)).astype(np.float32)
    w = rng.standard_normal((m, c // group, *k)).astype(np.float32)
    b = rng.standard_normal(m).astype(np.float32)
    ref = _conv_direct(x, w, b, strides, pads, dil, group)
    mod = Module()
    g = mod.add_function()
    xa = g.add_arg("x", TensorType(x.shape, "f32"))
    op = nn.Conv2d(
        [xa, mod.add_weight("w", w), mod.add_weight("b", b)],
        [TensorType(ref.shape, "f32")],
        {"strides": list(strides), "pads": list(pads), "dilations": list(dil), "group": group},
    )
    assert op.infer_types() == [TensorType(ref.shape, "f32")]
    g.append(op)
    g.set_outputs([op.result])
    np.testing.assert_allclose(interpreter.run(mod, {"x": x})[op.result.name], ref, rtol=1e-5, atol=1e-5)


def test_eval_op_is_usable_alone() -> None:
    m = _module()
    (y,) = interpreter.eval_op(m.main.body[1], [np.array([[-1.0, 2.0, 0.0, -3.0]] * 2, np.float32)])
    np.testing.assert_array_equal(y, [[0, 2, 0, 0]] * 2)
    assert "nn.conv2d" in interpreter.supported_ops() and "nn.dequantize_weight" in interpreter.supported_ops()


def test_every_nn_op_has_a_kernel() -> None:
    from pcc.ir import OP_REGISTRY

    missing = [n for n, cls in OP_REGISTRY.items() if n.startswith("nn.") and cls not in interpreter.KERNELS]
    assert not missing, f"nn ops without a reference kernel: {missing}"


def test_dequantize_weight_kernel() -> None:
    q = np.array([[-2, -1, 0], [1, 2, 0]], np.int8)
    s = np.array([0.5, 0.25], np.float32)
    mod = Module()
    g = mod.add_function()
    op = nn.DequantizeWeight(
        [mod.add_weight("q", q, "p5"), mod.add_weight("s", s)], [TensorType((2, 3), "f32")], {"axis": 0}
    )
    g.append(op)
    g.set_outputs([op.result])
    np.testing.assert_array_equal(interpreter.run(mod, {})[op.result.name], [[-1, -0.5, 0], [0.25, 0.5, 0]])
