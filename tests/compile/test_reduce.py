"""Reductions over any axes (nn.reduce_mean beyond the spatial global pool, nn.reduce_sum, nn.reduce_max and
nn.reduce_min as -max(-x)): a gather to rows, pent.reduce (POOL mode 1, or 0 for the maximum, with the rows as
channels, an EADD rescale), a gather to the result.  The simulator
equals the pent reference bit for bit, and the error against float is small at 4, 6 and 8 pents."""

from __future__ import annotations

import numpy as np
import pytest
from compile_helpers import Builder, compile_sim, sim_matches_reference

from pcc import interpreter, pent_reference
from pcc.dialects import nn, pent_softmax
from pcc.ir import Module

CASES = [
    (nn.ReduceMean, (1, 6, 3, 3), [1], True),  # over the channels (CBAM-style)
    (nn.ReduceSum, (2, 10), [1], False),
    (nn.ReduceMean, (2, 3, 4), [0, 2], False),
    (nn.ReduceSum, (1, 4, 5, 5), [1, 2, 3], True),
    (nn.ReduceMean, (2, 400), [-1], True),  # longer than POOL's window: 2 x 200
    (nn.ReduceSum, (1, 3, 4, 4), [2, 3], False),
    (nn.ReduceMax, (1, 6, 3, 3), [1], True),
    (nn.ReduceMin, (2, 1009), [1], False),  # padded rows: the pads never win
    (nn.ReduceMax, (2, 3, 4), [0, 2], True),
]


def reduce_model(cls: type, shape: tuple[int, ...], axes: list[int], keep: bool) -> Module:
    b = Builder("rd", 0)
    x = b.arg("x", shape)
    return b.done(b.op(cls, [x], "rd", axes=axes, keepdims=keep))


@pytest.mark.parametrize("cls, shape, axes, keep", CASES, ids=[f"{c.name}-{s}-{a}" for c, s, a, _ in CASES])
def test_reduce_bit_exact(tmp_path, cls: type, shape: tuple, axes: list, keep: bool) -> None:  # noqa: ANN001
    m, _, prog = compile_sim(reduce_model(cls, shape, axes, keep), tmp_path)
    assert len(list(m.main.ops_of(pent_softmax.Reduce))) == 1
    sim_matches_reference(m, prog, seeds=2)


def test_reduce_tiled_bit_exact(tmp_path) -> None:  # noqa: ANN001
    m, _, prog = compile_sim(reduce_model(nn.ReduceMean, (1, 8, 6, 6), [1], True), tmp_path, tile="tile{a-words=90}")
    (op,) = m.main.ops_of(pent_softmax.Reduce)
    assert op.attr("tile")[0] < 36
    sim_matches_reference(m, prog, seeds=2)


@pytest.mark.parametrize("pents, bound", [(4, 0.012), (6, 5e-4), (8, 2e-5)])
@pytest.mark.parametrize("cls", [nn.ReduceMean, nn.ReduceSum])
def test_reduce_error_against_float(cls: type, pents: int, bound: float) -> None:
    """Max error relative to the result's range over the channels of a [2, 6, 3, 3] input: measured 6.2e-3, 2.4e-4,
    9.4e-6 at 4, 6 and 8 pents for both (docs/compiler.md)."""
    from pcc.passes.quantize import quantize_module

    x = {"x": np.random.default_rng(1).standard_normal((2, 6, 3, 3)).astype(np.float32)}
    m, mq = reduce_model(cls, (2, 6, 3, 3), [1], True), reduce_model(cls, (2, 6, 3, 3), [1], True)
    quantize_module(mq, x, act_pents=pents)
    want = interpreter.run(m, x)[m.main.outputs[0].name]
    err = np.abs(pent_reference.run(mq, x)[0] - want).max() / np.abs(want).max()
    assert err < bound, err


@pytest.mark.parametrize("cls", [nn.ReduceMax, nn.ReduceMin])
def test_max_min_reductions_are_exact(cls: type) -> None:
    """A maximum (minimum: -max(-x)) keeps the input's scale: it equals the float reduction of the quantized
    input exactly."""
    from pcc.passes.quantize import quantize_module

    x = {"x": np.random.default_rng(4).standard_normal((2, 6, 3, 3)).astype(np.float32)}
    mq = reduce_model(cls, (2, 6, 3, 3), [1, 3], False)
    quantize_module(mq, x, act_pents=6)
    s = mq.main.body[0].attr("scale")
    xq = pent_reference.quantize_input(x["x"], s, 6) * s
    want = xq.max(axis=(1, 3)) if cls is nn.ReduceMax else xq.min(axis=(1, 3))
    np.testing.assert_allclose(pent_reference.run(mq, x)[0], want, rtol=0, atol=1e-6)
