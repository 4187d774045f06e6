"""The nine models bundled in the onnx package (``onnx/backend/test/data/light``, opset 9), made testable.

As shipped, every weight is a ``ConstantOfShape(0.02)`` node, so all outputs are equal and a comparison proves
nothing.  :func:`randomized` replaces each such node by an initializer of random values (scaled by the fan-in;
positive values for BatchNorm scales and variances) and drops the shape initializers that fed them; the
softmax's input (the logits) becomes a graph output too."""

from __future__ import annotations

import os

import numpy as np
import onnx
from onnx import helper, numpy_helper

LIGHT_DIR = os.path.join(os.path.dirname(onnx.__file__), "backend", "test", "data", "light")
LIGHT = ("alexnet", "zfnet512", "squeezenet", "vgg19", "inception_v1", "inception_v2", "resnet50", "shufflenet",
         "densenet121")  # fmt: skip


def light_path(name: str) -> str:
    return os.path.join(LIGHT_DIR, f"light_{'bvlc_' if name == 'alexnet' else ''}{name}.onnx")


def randomized(name: str, seed: int = 0, gain: float = 1.0, bias: float = 0.1) -> onnx.ModelProto:
    """The bundled model with random weights: ``N(0, gain^2 / fan_in)`` for weights, ``N(0, bias^2)`` for 1-D
    parameters.  The defaults shrink the signal through the ReLUs until the biases dominate the logits (on
    Inception v2 two random inputs give logits 1e-7 apart); ``gain=sqrt(2), bias=0.01`` (He initialisation) keeps
    the logits input-dependent, which a comparison of the quantized network needs."""
    m = onnx.load(light_path(name))
    rng = np.random.default_rng(seed)
    g = m.graph
    inits = {t.name: t for t in g.initializer}
    positive = {nd.input[k] for nd in g.node if nd.op_type == "BatchNormalization" for k in (1, 4)}
    keep, new, used = [], [], set()
    for nd in g.node:
        if nd.op_type != "ConstantOfShape":
            keep.append(nd)
            continue
        used.add(nd.input[0])
        shape = [int(v) for v in numpy_helper.to_array(inits[nd.input[0]])]
        out = nd.output[0]
        if out in positive:  # BatchNorm scales and variances
            data = rng.uniform(0.5, 1.5, shape)
        elif len(shape) == 1:
            data = rng.standard_normal(shape) * bias
        else:
            data = rng.standard_normal(shape) * gain / np.sqrt(max(int(np.prod(shape[1:])), 1))
        new.append(numpy_helper.from_array(data.astype(np.float32), out))
    del g.node[:]
    g.node.extend(keep)
    rest = [t for t in g.initializer if t.name not in used]
    del g.initializer[:]
    g.initializer.extend(rest + new)
    inputs = [i for i in g.input if i.name not in used]
    del g.input[:]
    g.input.extend(inputs)
    for nd in g.node:  # the logits too: a saturated softmax alone would hide differences
        if nd.op_type == "Softmax" and nd.input[0] not in {o.name for o in g.output}:
            g.output.append(helper.make_tensor_value_info(nd.input[0], onnx.TensorProto.FLOAT, None))
    return m


def data_input(m: onnx.ModelProto) -> onnx.ValueInfoProto:
    inits = {t.name for t in m.graph.initializer}
    return next(i for i in m.graph.input if i.name not in inits)


def pentary_exact(m: onnx.ModelProto) -> onnx.ModelProto:
    """``m`` with every Conv / Gemm weight projected onto ``s_c x {-2..2}`` per output channel (``s_c``: the
    channel's max |w| / 2), so that quantizing the weights loses nothing and a comparison isolates the
    activation rounding and the lowering."""
    out = onnx.ModelProto()
    out.CopyFrom(m)
    axis = {}
    for nd in out.graph.node:
        if nd.op_type == "Conv":
            axis[nd.input[1]] = 0
        elif nd.op_type == "Gemm":
            trans_b = next((a.i for a in nd.attribute if a.name == "transB"), 0)
            axis[nd.input[1]] = 0 if trans_b else 1
    for k, t in enumerate(out.graph.initializer):
        if t.name not in axis:
            continue
        w = numpy_helper.to_array(t).astype(np.float64)
        ax = axis[t.name]
        others = tuple(i for i in range(w.ndim) if i != ax)
        s = np.maximum(np.abs(w).max(axis=others, keepdims=True), 1e-6) / 2
        q = (np.clip(np.rint(w / s), -2, 2) * s).astype(np.float32)
        out.graph.initializer[k].CopyFrom(numpy_helper.from_array(q, t.name))
    return out
