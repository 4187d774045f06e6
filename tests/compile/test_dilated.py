"""Dilated convolution as a phase batch: a space-to-batch pent.gather, an undilated pent.conv2d, a gather that
interleaves the phases.  The simulator equals the pent reference bit for bit, and with pentary-exact weights
the result equals the float dilated convolution up to activation rounding."""

from __future__ import annotations

import numpy as np
import pytest
from compile_helpers import Builder, compile_sim, sim_matches_reference

from pcc import interpreter, pent_reference
from pcc.dialects import nn, pent
from pcc.ir import Module

CASES = [
    ((1, 3, 7, 7), 4, 3, (2, 2), [2, 2, 2, 2], 1),
    ((2, 4, 9, 8), 4, 3, (3, 2), [1, 0, 2, 1], 2),  # uneven dilation and pads, grouped, a batch of two
    ((1, 2, 6, 6), 3, 2, (2, 3), [0, 0, 0, 0], 1),
]


def dilated(shape: tuple, o: int, k: int, d: tuple, pads: list, g: int, strides: tuple = (1, 1)) -> Module:
    b = Builder("dl", 0)
    x = b.arg("x", shape)
    ws = (o, shape[1] // g, k, k)
    w = b.w("w", ws, data=(b.rng.integers(-2, 3, ws) * 0.3).astype(np.float32))
    y = b.op(nn.Conv2d, [x, w], "dconv", pads=pads, dilations=list(d), group=g, strides=list(strides))
    return b.done(b.op(nn.Relu, [y], "r"))


@pytest.mark.parametrize("case", CASES, ids=[f"{c[0]}-d{c[3]}" for c in CASES])
def test_dilated_conv_bit_exact_and_close_to_float(tmp_path, case: tuple) -> None:  # noqa: ANN001
    m, _, prog = compile_sim(dilated(*case), tmp_path)
    (conv,) = m.main.ops_of(pent.Conv2d)
    d = case[3]
    assert conv.operands[0].type.shape[0] == case[0][0] * d[0] * d[1]  # the phases as a batch
    sim_matches_reference(m, prog, seeds=2)
    f, mq = dilated(*case), dilated(*case)
    xs = {"x": np.random.default_rng(1).standard_normal(case[0]).astype(np.float32)}
    from pcc.passes.quantize import quantize_module

    quantize_module(mq, xs, act_pents=8)
    want = interpreter.run(f, xs)[f.main.outputs[0].name]
    assert np.abs(pent_reference.run(mq, xs)[0] - want).max() / np.abs(want).max() < 2e-5  # measured 4.5e-6..5.6e-6


def test_strided_dilated_conv_bit_exact(tmp_path) -> None:  # noqa: ANN001
    case = ((1, 2, 9, 8), 3, 3, (2, 2), [2, 1, 2, 1], 1, (2, 3))
    m, _, prog = compile_sim(dilated(*case), tmp_path)
    sim_matches_reference(m, prog, seeds=2)
    f, mq = dilated(*case), dilated(*case)
    xs = {"x": np.random.default_rng(2).standard_normal(case[0]).astype(np.float32)}
    from pcc.passes.quantize import quantize_module

    quantize_module(mq, xs, act_pents=8)
    want = interpreter.run(f, xs)[f.main.outputs[0].name]
    assert np.abs(pent_reference.run(mq, xs)[0] - want).max() / np.abs(want).max() < 2e-5
