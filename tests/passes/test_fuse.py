"""fuse: conv/gemm/add + activation and conv/gemm + residual add merge; the pent reference output is identical."""

from __future__ import annotations

import numpy as np
from pass_helpers import Builder, ops, pent_int_outputs, random_inputs, run_passes, small_cnn
from pass_helpers import quantized as _quantized

from pcc.dialects import nn
from pcc.ir import Module


def quantized(m: Module, seed: int = 0) -> Module:
    return _quantized(m, seed, act_pents=6)


def mixed(seed: int) -> Module:
    """gemm+relu6, gemm + residual + relu, an add with two activation users, a conv output that is also an
    output (never fused), add + relu."""
    b = Builder("mix", seed)
    x = b.arg("x", (2, 8))
    h = b.op(nn.Gemm, [x, b.w("w1", (8, 8)), b.w("b1", (8,), 0.1)], "fc1")
    h = b.op(nn.Clip, [h], "relu6", min=0.0, max=6.0)
    r = b.op(nn.Gemm, [h, b.w("w2", (8, 8))], "fc2")
    r = b.op(nn.Add, [h, r], "res")  # residual on the right
    r = b.op(nn.Relu, [r], "relu")
    s = b.op(nn.Add, [r, r], "double")  # same operand twice: stays an add
    s = b.op(nn.Relu, [s], "relu_s")
    y = b.arg("y", (1, 2, 4, 4))
    c = b.op(nn.Conv2d, [y, b.w("wc", (2, 2, 3, 3))], "conv", pads=[1, 1, 1, 1])
    return b.done(s, c)


def check_exact(m: Module, expect: list[str], seeds: int = 3) -> None:
    inputs = [random_inputs(m, seed, scale=2.0) for seed in range(seeds)]
    before = [pent_int_outputs(m, x) for x in inputs]
    run_passes(m, "fuse")
    assert ops(m) == expect, ops(m)
    for x, b in zip(inputs, before, strict=True):
        for got, want in zip(pent_int_outputs(m, x), b, strict=True):
            np.testing.assert_array_equal(got, want)


def test_fuse_cnn_bit_exact() -> None:
    for seed in range(3):
        m = quantized(small_cnn(seed), seed)
        inputs = random_inputs(m, 10 + seed)
        before = pent_int_outputs(m, inputs)
        run_passes(m, "fuse")
        assert ops(m) == [
            "pent.quantize",
            "pent.conv2d",
            "pent.conv2d",
            "pent.max_pool",
            "pent.reshape",
            "pent.gemm",
            "pent.dequantize",
        ]
        conv2 = m.main.body[2]
        assert conv2.attr("act") == "relu" and len(conv2.operands) == 6 and conv2.attr("mid_pents") == 6
        np.testing.assert_array_equal(pent_int_outputs(m, inputs)[0], before[0])


def test_fuse_mixed_bit_exact() -> None:
    m = quantized(mixed(0))
    check_exact(
        m,
        [
            "pent.quantize",
            "pent.quantize",
            "pent.gemm",
            "pent.gemm",
            "pent.add",
            "pent.conv2d",
            "pent.dequantize",
            "pent.dequantize",
        ],
    )
    g1, g2, add = m.main.body[2:5]
    assert g1.attr("act") == "clamp" and g1.attr("lo") == 0
    assert g2.attr("act") == "relu" and g2.operands[5] is g1.results[0]
    assert add.attr("act") == "relu"
    from pcc.passes.fuse import Fuse

    assert Fuse().run(m) is False  # a fixpoint


def test_fuse_options_off() -> None:
    m = quantized(small_cnn(0))
    n = len(ops(m))
    run_passes(m, "fuse{residual=false activation=false}")
    assert len(ops(m)) == n
    run_passes(m, "fuse{residual=false}")
    assert "pent.add" in ops(m) and "pent.relu" not in ops(m)
