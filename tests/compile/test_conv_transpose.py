"""nn.conv_transpose2d as a pent.gather (the input spread by the stride and padded, zeros between) and a
pent.conv2d with the flipped, channel-exchanged weight: bit-exact against the pent reference (strides, pads,
output padding, groups, a batch of two), and within activation rounding of float with pentary weights."""

from __future__ import annotations

import numpy as np
import pytest
from compile_helpers import Builder, compile_sim, sim_matches_reference

from pcc import interpreter, pent_reference
from pcc.dialects import nn, pent
from pcc.ir import Module
from pcc.passes.lower_conv_transpose import conv_weight

CASES = [
    ((1, 4, 3, 3), 3, 3, (2, 2), [1, 1, 1, 1], [1, 1], 1),
    ((1, 4, 4, 5), 4, 2, (2, 2), [0, 0, 0, 0], [0, 0], 2),
    ((2, 2, 3, 3), 3, 3, (1, 2), [0, 1, 2, 0], [0, 1], 1),
]


def conv_t(shape: tuple, m_out: int, k: int, s: tuple, pads: list, opad: list, g: int) -> Module:
    b = Builder("ct", 0)
    x = b.arg("x", shape)
    ws = (shape[1], m_out // g, k, k)
    w = b.w("w", ws, data=(b.rng.integers(-2, 3, ws) * 0.3).astype(np.float32))
    y = b.op(nn.ConvTranspose2d, [x, w, b.w("b", (m_out,))], "ct", strides=list(s), pads=pads,
             output_padding=opad, group=g)  # fmt: skip
    return b.done(y)


def test_conv_weight_by_hand() -> None:
    w = np.arange(2 * 1 * 2 * 2, dtype=np.float32).reshape(2, 1, 2, 2)  # C = 2 inputs, M = 1 output
    got = conv_weight(w, 1)
    assert got.shape == (1, 2, 2, 2)
    np.testing.assert_array_equal(got[0, 0], [[3, 2], [1, 0]])  # flipped in both axes
    np.testing.assert_array_equal(got[0, 1], [[7, 6], [5, 4]])


@pytest.mark.parametrize("case", CASES, ids=[f"{c[0]}-s{c[3]}-g{c[6]}" for c in CASES])
def test_conv_transpose_bit_exact_and_close_to_float(tmp_path, case: tuple) -> None:  # noqa: ANN001
    from pcc.passes.quantize import quantize_module

    m, _, prog = compile_sim(conv_t(*case), tmp_path)
    assert [op.name for op in m.main.body].count(pent.Conv2d.name) == 1
    sim_matches_reference(m, prog, seeds=2)
    f, mq = conv_t(*case), conv_t(*case)
    xs = {"x": np.random.default_rng(1).standard_normal(case[0]).astype(np.float32)}
    quantize_module(mq, xs, act_pents=8)
    want = interpreter.run(f, xs)[f.main.outputs[0].name]
    assert np.abs(pent_reference.run(mq, xs)[0] - want).max() / np.abs(want).max() < 2e-5  # measured 3.1e-6..5.8e-6
