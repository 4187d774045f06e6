"""Helpers to build small ONNX models and run them on onnxruntime."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

NP_TO_ONNX = {
    np.dtype(np.float32): TensorProto.FLOAT,
    np.dtype(np.float64): TensorProto.DOUBLE,
    np.dtype(np.int64): TensorProto.INT64,
    np.dtype(np.int32): TensorProto.INT32,
    np.dtype(np.bool_): TensorProto.BOOL,
}


def model(
    nodes: Sequence[onnx.NodeProto],
    inputs: Mapping[str, np.ndarray | tuple],
    outputs: Sequence[str],
    opset: int,
    inits: Mapping[str, np.ndarray] | None = None,
    ir_version: int | None = None,
) -> onnx.ModelProto:
    """A model with the given nodes; ``inputs`` maps names to example arrays (or (shape-with-symbols, dtype))."""
    ins = []
    for name, a in inputs.items():
        if isinstance(a, tuple):
            shape, dtype = a
            ins.append(helper.make_tensor_value_info(name, NP_TO_ONNX[np.dtype(dtype)], list(shape)))
        else:
            ins.append(helper.make_tensor_value_info(name, NP_TO_ONNX[a.dtype], list(a.shape)))
    outs = [helper.make_tensor_value_info(o, TensorProto.UNDEFINED, None) for o in outputs]
    init = [numpy_helper.from_array(np.asarray(v), k) for k, v in (inits or {}).items()]
    g = helper.make_graph(list(nodes), "g", ins, outs, init)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])
    m.ir_version = ir_version or (7 if opset < 15 else 8)
    if opset >= 7:  # give the outputs their inferred types (onnxruntime wants them)
        try:
            inferred = onnx.shape_inference.infer_shapes(m)
        except onnx.shape_inference.InferenceError:
            return m
        for out, inf in zip(m.graph.output, inferred.graph.output, strict=True):
            if inf.type.tensor_type.elem_type:
                out.type.CopyFrom(inf.type)
    return m


def ort_run(m: onnx.ModelProto, feeds: Mapping[str, np.ndarray], basic: bool = True) -> list[np.ndarray]:
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.graph_optimization_level = (
        ort.GraphOptimizationLevel.ORT_ENABLE_BASIC if basic else ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    )
    so.log_severity_level = 3
    sess = ort.InferenceSession(m.SerializeToString(), so, providers=["CPUExecutionProvider"])
    return sess.run(None, dict(feeds))
