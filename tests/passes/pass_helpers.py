"""Helpers for the pass tests: build small graphs in Python, run them before and after a pass, compare."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

import pcc.dialects  # noqa: F401
import pcc.passes  # noqa: F401
from pcc import interpreter, pent_reference
from pcc.diagnostics import Location
from pcc.dialects import nn
from pcc.ir import Module, Operation, TensorType, Value
from pcc.pass_manager import PassManager, parse_pipeline
from pcc.verifier import verify_module


class Builder:
    """A module under construction: ``arg``, ``w`` (random weight), ``op`` (result types inferred)."""

    def __init__(self, name: str = "t", seed: int = 0) -> None:
        self.m = Module(name)
        self.g = self.m.add_function("main")
        self.rng = np.random.default_rng(seed)

    def arg(self, name: str, shape: Sequence[int], dtype: str = "f32") -> Value:
        return self.g.add_arg(name, TensorType(shape, dtype))

    def w(self, name: str, shape: Sequence[int], scale: float = 0.5, data: np.ndarray | None = None) -> Value:
        if data is None:
            data = (self.rng.standard_normal(shape) * scale).astype(np.float32)
        return self.m.add_weight(name, np.asarray(data))

    def const(self, name: str, data: np.ndarray, dtype: str | None = None) -> Value:
        return self.m.add_weight(name, np.asarray(data), dtype)

    def op(self, cls: type[Operation], operands: Sequence[Value], node: str | None = None, **attrs: object) -> Value:
        n = max(1, len([s for s in cls.results_spec if not s.endswith("*")]))
        op = cls(list(operands), [TensorType((1,), "f32")] * n, dict(attrs), Location(node=node) if node else None)
        for r, t in zip(op.results, op.infer_types(), strict=True):
            r.type = t
        self.g.append(op)
        return op.results[0]

    def done(self, *outputs: Value) -> Module:
        self.g.set_outputs(list(outputs))
        verify_module(self.m)
        return self.m


def random_inputs(module: Module, seed: int = 0, scale: float = 1.0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {a.name or "": (rng.standard_normal(a.type.shape) * scale).astype(a.type.np_dtype) for a in module.main.args}


def float_outputs(module: Module, inputs: dict[str, np.ndarray]) -> list[np.ndarray]:
    out = interpreter.run(module, inputs)
    return [out[v.name or ""] for v in module.main.outputs]


def run_passes(module: Module, pipeline: str) -> Module:
    PassManager(parse_pipeline(pipeline), verify_each=True).run(module)
    return module


def ops(module: Module) -> list[str]:
    return [op.name for op in module.main.body]


def check_float_pass(
    make: Callable[[int], Module], pipeline: str, *, trials: int = 3, rtol: float = 1e-5
) -> list[Module]:
    """Run ``pipeline`` on ``make(seed)`` for a few seeds; outputs on random inputs must agree to ``rtol``
    (relative to the output's largest magnitude).  Returns the transformed modules."""
    done = []
    for seed in range(trials):
        m = make(seed)
        inputs = random_inputs(m, seed + 100)
        before = float_outputs(m, inputs)
        names = [v.name for v in m.main.outputs]
        run_passes(m, pipeline)
        after = float_outputs(m, inputs)
        assert [v.name for v in m.main.outputs] == names, "the model's output names must survive"
        for b, a in zip(before, after, strict=True):
            assert a.shape == b.shape
            err = float(np.max(np.abs(a.astype(np.float64) - b))) if b.size else 0.0
            assert err <= rtol * max(float(np.max(np.abs(b))), 1e-30), f"{pipeline}: error {err} (seed {seed})"
        done.append(m)
    return done


def pent_int_outputs(module: Module, inputs: dict[str, np.ndarray]) -> list[np.ndarray]:
    """Integer outputs of a pent module (the operands of its dequantize ops) on float inputs."""
    ints: dict[int, np.ndarray] = {}

    def keep(op: Operation, results: list[np.ndarray]) -> None:
        for r, x in zip(op.results, results, strict=True):
            ints[id(r)] = x

    pent_reference.run(module, inputs, observe=keep)
    return [ints[id(v.owner.operands[0])] for v in module.main.outputs if v.owner is not None]


def small_cnn(seed: int = 0, bn: bool = True, residual: bool = True) -> Module:
    """conv-bn-relu, conv-bn + residual, relu, maxpool, flatten, gemm: the shapes the compiler meets most."""
    b = Builder("cnn", seed)
    x = b.arg("x", (1, 3, 8, 8))
    y = b.op(nn.Conv2d, [x, b.w("w1", (8, 3, 3, 3)), b.w("b1", (8,), 0.1)], "conv1", pads=[1, 1, 1, 1])
    if bn:
        y = b.op(nn.BatchNorm, [y, *_bn_params(b, "bn1", 8)], "bn1")
    y = b.op(nn.Relu, [y], "relu1")
    z = b.op(nn.Conv2d, [y, b.w("w2", (8, 8, 3, 3), 0.2)], "conv2", pads=[1, 1, 1, 1])
    if bn:
        z = b.op(nn.BatchNorm, [z, *_bn_params(b, "bn2", 8)], "bn2")
    if residual:
        z = b.op(nn.Add, [z, y], "add")
    z = b.op(nn.Relu, [z], "relu2")
    z = b.op(nn.MaxPool, [z], "pool", kernel_shape=[2, 2], strides=[2, 2])
    z = b.op(nn.Flatten, [z], "flatten", axis=1)
    z = b.op(nn.Gemm, [z, b.w("fc", (10, 128), 0.1), b.w("fcb", (10,), 0.1)], "fc", trans_b=True)
    return b.done(z)


def _bn_params(b: Builder, name: str, c: int) -> list[Value]:
    rng = b.rng
    return [
        b.w(name + ".g", (c,), data=rng.uniform(0.5, 1.5, c).astype(np.float32)),
        b.w(name + ".b", (c,), data=rng.uniform(-0.3, 0.3, c).astype(np.float32)),
        b.w(name + ".m", (c,), data=rng.uniform(-0.3, 0.3, c).astype(np.float32)),
        b.w(name + ".v", (c,), data=rng.uniform(0.5, 2.0, c).astype(np.float32)),
    ]


bn_params = _bn_params


def quantized(m: Module, seed: int = 0, act_pents: int = 8) -> Module:
    """``m`` through canonicalize and fold-batchnorm, then quantized on 8 standard-normal calibration samples,
    one pent per weight (``error-budget=0``: the passes after quantize are tested on that form; the random
    weights would exceed the default budget and get two-pent layers)."""
    from pcc.passes.quantize import quantize_module

    rng = np.random.default_rng(seed)
    cal = {a.name or "": rng.standard_normal((8, *a.type.shape[1:])).astype(np.float32) for a in m.main.args}
    run_passes(m, "canonicalize,fold-batchnorm")
    quantize_module(m, cal, act_pents=act_pents, error_budget=0.0)
    return m
