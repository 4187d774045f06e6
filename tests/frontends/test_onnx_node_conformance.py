"""ONNX backend node tests: import each case, run it on the reference interpreter, compare with the expected data.

The cases come from ``onnx.backend.test.loader.load_node_model_tests()`` (built in memory by the installed onnx).
A case is in scope when every op of its graph imports (``pcc.frontends.onnx.supported_ops()``).  Harness policy:

- pcc compiles static graphs, so graph inputs that feed a parameter slot (``PARAM_INPUTS``: a Reshape shape,
  Clip bounds, Pad pads, Resize scales, TopK's k, ...), directly or through the ops computing it, and Gather
  indices are bound as constants with ``bind=`` before import; graphs made only of fold-only ops (Shape,
  Range, ConstantOfShape, NonZero, ...) get every input bound (they only ever run at import).
- Tolerance: rtol 1e-5, atol 1e-6 (exact equality for integer and bool outputs), except the cases in
  ``LOOSE`` (each with its reason).
- A case may be skipped only for a reason in ``ALLOWED_SKIPS`` (element types the IR has no type for, training
  mode, 3-D windows, ...); any other import error, and any mismatch, fails the test: a
  supported op with a failing case is a bug.

The summary (cases run, skipped with reasons, out of scope) is printed at the end of the pytest run.
"""

from __future__ import annotations

import re
import warnings
from collections import Counter

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from pcc import interpreter
from pcc.diagnostics import PccError
from pcc.frontends import onnx as onnx_frontend

# Reasons a case may be skipped; anything else is a failure.
ALLOWED_SKIPS: dict[str, str] = {
    r"element type (BFLOAT16|FLOAT8\w*|FLOAT4E2M1|U?INT[24]|UINT(16|32|64)|STRING)\b": "element type the IR lacks",
    r"Cast to (BFLOAT16|FLOAT8\w*|FLOAT4E2M1|U?INT[24]|UINT(16|32|64)|STRING) ": "element type the IR lacks",
    r"element type bfloat16": "element type the IR lacks",
    r"training-mode (Dropout|BatchNormalization)": "training mode (random masks / batch statistics)",
    r"not a tensor \(sequences/maps": "sequence / optional inputs",
    r"MaxPool's Indices output": "MaxPool's Indices output",
    r"only evaluates \w+ on constants at import": "fold-only op fed run-time data",
    r"[3-9]-D (ConvTranspose|convolution)": "3-D and higher windows (pcc compiles 1-D and 2-D)",
}

# Cases whose expected data needs a looser tolerance: name -> (rtol, atol, why)
LOOSE: dict[str, tuple[float, float, str]] = {
    "test_averagepool_2d_ceil_last_window_starts_on_pad": (1e-3, 1e-6, "expected values are rounded to 4 digits"),
}

RTOL, ATOL = 1e-5, 1e-6

SUMMARY: dict[str, object] = {"ran": 0, "skipped": {}, "out_of_scope": 0}


def _cases() -> list:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from onnx.backend.test.loader import load_node_model_tests

        cases = load_node_model_tests()
    supported = set(onnx_frontend.supported_ops())
    in_scope = []
    for c in cases:
        ops = {n.op_type for n in c.model.graph.node}
        if ops and ops <= supported and all(n.domain in ("", "ai.onnx") for n in c.model.graph.node):
            in_scope.append(c)
    SUMMARY["out_of_scope"] = len(cases) - len(in_scope)
    return in_scope


CASES = _cases()


def _array(a: object) -> np.ndarray:
    return numpy_helper.to_array(a) if isinstance(a, onnx.TensorProto) else np.asarray(a)


def _bindings(model: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Graph inputs that reach a parameter slot (directly or through the ops computing it) are bound."""
    ops = {n.op_type for n in model.graph.node}
    fold_all = ops <= onnx_frontend.FOLD_ONLY | {"Shape", "Size", "Constant"}
    producer = {o: node for node in model.graph.node for o in node.output}
    wanted: list[str] = []
    for node in model.graph.node:
        params = onnx_frontend.PARAM_INPUTS.get(node.op_type, {})
        for k, name in enumerate(node.input):
            if name and (fold_all or k in params or (node.op_type == "Gather" and k == 1)):
                wanted.append(name)
    bind, seen = {}, set()
    while wanted:
        name = wanted.pop()
        if name in seen:
            continue
        seen.add(name)
        if name in feeds:
            bind[name] = feeds[name]
        elif name in producer and producer[name].op_type not in ("Shape", "Size"):
            wanted.extend(i for i in producer[name].input if i)
    return bind


def _skip_reason(message: str) -> str | None:
    for pattern, reason in ALLOWED_SKIPS.items():
        if re.search(pattern, message):
            return reason
    return None


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_node_case(case) -> None:  # noqa: ANN001
    model = case.model
    rtol, atol, _ = LOOSE.get(case.name, (RTOL, ATOL, ""))
    for inputs, outputs in case.data_sets:
        feeds = {i.name: _array(a) for i, a in zip(model.graph.input, inputs, strict=False)}
        try:
            module = onnx_frontend.load(model, bind=_bindings(model, feeds))
            args = {a.name: feeds[a.name] for a in module.main.args}
            got = interpreter.run(module, args, check_finite=False)
        except PccError as exc:
            reason = _skip_reason(exc.message)
            if reason is None:
                raise
            SUMMARY["skipped"][case.name] = f"{reason}: {exc.message}"  # type: ignore[index]
            pytest.skip(f"{reason}: {exc.message}")
        for out, expected in zip(model.graph.output, outputs, strict=True):
            e = _array(expected)
            g = got[out.name]
            assert g.shape == e.shape, f"{out.name}: shape {g.shape}, expected {e.shape}"
            assert g.dtype == e.dtype, f"{out.name}: dtype {g.dtype}, expected {e.dtype}"
            if np.issubdtype(e.dtype, np.floating):
                np.testing.assert_allclose(g, e, rtol=rtol, atol=atol, equal_nan=True, err_msg=out.name)
            else:
                np.testing.assert_array_equal(g, e, err_msg=out.name)
    SUMMARY["ran"] = int(SUMMARY["ran"]) + 1  # type: ignore[call-overload]


def test_scope_is_real() -> None:
    """The in-scope set covers every op the brief lists (a guard against a silently shrinking scope)."""
    ops = Counter(n.op_type for c in CASES for n in c.model.graph.node)
    for op in (
        "Conv Gemm MatMul Add Sub Mul Div Relu LeakyRelu Clip Sigmoid Tanh HardSigmoid HardSwish Softmax "
        "LogSoftmax MaxPool AveragePool GlobalAveragePool GlobalMaxPool BatchNormalization Flatten Reshape "
        "Transpose Concat Split Slice Squeeze Unsqueeze Pad Identity Dropout Constant Shape Gather Resize "
        "ReduceMean Erf Gelu LayerNormalization Pow Sqrt ReduceSum Cast "
        # the breadth every common model family needs
        "Sum Max Min Mean LRN PRelu Elu Selu Celu Softplus Softsign Mish ThresholdedRelu ConvTranspose Upsample "
        "DepthToSpace SpaceToDepth InstanceNormalization GroupNormalization Einsum Mod IsNaN IsInf GatherElements "
        "GatherND ScatterND ScatterElements Where Trilu Range CumSum Tile TopK ArgMax ArgMin ReduceMax ReduceMin "
        "ReduceProd ReduceL1 ReduceL2 ReduceLogSum ReduceLogSumExp ReduceSumSquare Reciprocal Abs Sign Floor Ceil "
        "Round And Or Xor Not Equal Less Greater LessOrEqual GreaterOrEqual CastLike OneHot QuantizeLinear "
        "DequantizeLinear QLinearConv QLinearMatMul MatMulInteger ConvInteger"
    ).split():
        assert ops[op] > 0, f"no in-scope node test uses {op}"
    assert len(CASES) > 1300
    assert len(onnx_frontend.supported_ops()) >= 130
