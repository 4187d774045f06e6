"""Integer LayerNorm, GroupNorm and InstanceNorm (mean and variance by POOL, the reciprocal square root by a table
and Newton steps in EMUL/EADD, then the affine gamma/beta): the simulator equals the pent reference bit for bit
(tiled and not) and the result is within the error bound of docs/compiler.md of the float op at 6 and 8 pents."""

from __future__ import annotations

import math

import numpy as np
import pytest
from compile_helpers import Builder, compile_sim, sim_matches_reference

from pcc import interpreter, pent_reference
from pcc.dialects import nn, pent_norm
from pcc.ir import Module
from pcc.passes.lower_norm import rsqrt_params
from pcc.pent_reference_binary import rsqrt_steps


def norm_model(kind: str, seed: int = 0) -> Module:
    b = Builder("norm", seed)
    rng = np.random.default_rng(seed)
    if kind.startswith("layer"):
        shape = (2, 5, 12) if kind == "layer" else (1, 6, 3, 3)
        x = b.arg("x", shape)
        axis = -1 if kind == "layer" else 1
        k = shape[axis]
        g, be = (
            b.const("g", rng.uniform(0.5, 1.5, k).astype(np.float32)),
            b.const("b", rng.normal(0, 0.3, k).astype(np.float32)),
        )
        if kind == "layer_channels":  # normalize the channels only (axis 1 .. 1 of a rank-4 image: ONNX axis = 1)
            y = b.op(
                nn.LayerNorm, [x, b.const("g4", rng.uniform(0.5, 1.5, (6, 3, 3)).astype(np.float32))], "ln", axis=1
            )
        else:
            y = b.op(nn.LayerNorm, [x, g, be], "ln", axis=axis, epsilon=1e-5)
        return b.done(y)
    groups = {"group": 2, "instance": 6, "one_group": 1}[kind]
    x = b.arg("x", (2, 6, 3, 3))
    g, be = (
        b.const("g", rng.uniform(0.5, 1.5, 6).astype(np.float32)),
        b.const("b", rng.normal(0, 0.3, 6).astype(np.float32)),
    )
    return b.done(b.op(nn.GroupNorm, [x, g, be], "gn", num_groups=groups, epsilon=1e-5))


KINDS = ["layer", "layer_channels", "group", "instance", "one_group"]


@pytest.mark.parametrize("kind", KINDS)
def test_norm_bit_exact(tmp_path, kind: str) -> None:  # noqa: ANN001
    m, _, prog = compile_sim(norm_model(kind), tmp_path, calib_scale=2.0)
    assert len(list(m.main.ops_of(pent_norm.Rsqrt))) == 1
    sim_matches_reference(m, prog, seeds=2, scale=2.0)


def test_norm_tiled(tmp_path) -> None:  # noqa: ANN001
    m, _, prog = compile_sim(norm_model("group"), tmp_path, calib_scale=2.0, tile="tile{a-words=4115}")
    assert any(op.attr("tile")[0] < op.results[0].type.size for op in m.main.ops_of(pent_norm.Rsqrt))
    sim_matches_reference(m, prog, seeds=2, scale=2.0)


def norm_error(kind: str, act_pents: int) -> float:
    """Max error relative to the output's range against the float op, on inputs the calibration covers."""
    from pcc.passes.quantize import quantize_module

    f = norm_model(kind)
    rng = np.random.default_rng(3)
    x = {"x": (rng.standard_normal((8, *f.main.args[0].type.shape[1:])) * 2).astype(np.float32)}
    one = {"x": x["x"][: f.main.args[0].type.shape[0]]}
    want = interpreter.run(f, one)[f.main.outputs[0].name or ""]
    quantize_module(f, x, act_pents=act_pents)
    got = pent_reference.run(f, one)[0]
    return float(np.abs(got - want).max() / np.abs(want).max())


@pytest.mark.parametrize("kind", ["layer", "group", "instance"])
@pytest.mark.parametrize("act_pents, bound", [(6, 1e-3), (8, 1e-4)])
def test_norm_error_against_float(kind: str, act_pents: int, bound: float) -> None:
    assert norm_error(kind, act_pents) < bound


def test_rsqrt_steps_reach_the_root_from_every_bucket() -> None:
    """Over variances from the smallest (the epsilon) to the largest, n = 2**30 / sqrt(v + bias) to within a
    relative 2**-12 (n's own rounding at the largest variance, where n ~ 2**12) and far better below."""
    v_max, bias = 2**35, 37
    table, im, ish, iters = rsqrt_params(v_max, bias)
    v = np.unique(np.concatenate([np.geomspace(1, v_max, 3000).astype(np.int64), np.arange(0, 300)]))
    n = rsqrt_steps(v, table, bias, im, ish, iters).astype(np.float64)
    want = 2.0**30 / np.sqrt(v.astype(np.float64) + bias)
    rel = np.abs(n - want) / want
    assert rel.max() < 2**-12
    assert rel[v < 2**20].max() < 2**-20
    assert math.isfinite(float(rel.max()))
