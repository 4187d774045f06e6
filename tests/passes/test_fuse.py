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


def tables(seed: int) -> Module:
    """conv + sigmoid (fused), conv + tanh whose conv output is also used by an add (not fused), gemm + sigmoid
    (fused), a conv + residual add + sigmoid (the residual fuses, the table stays a lut)."""
    b = Builder("tables", seed)
    x = b.arg("x", (1, 2, 6, 6))
    c1 = b.op(nn.Conv2d, [x, b.w("w1", (4, 2, 3, 3)), b.w("b1", (4,), 0.1)], "conv1", pads=[1, 1, 1, 1])
    s1 = b.op(nn.Sigmoid, [c1], "sig1")
    c2 = b.op(nn.Conv2d, [s1, b.w("w2", (4, 4, 1, 1))], "conv2")
    t2 = b.op(nn.Tanh, [c2], "tanh2")
    a2 = b.op(nn.Add, [t2, c2], "add2")
    c3 = b.op(nn.Conv2d, [a2, b.w("w3", (4, 4, 3, 3))], "conv3", pads=[1, 1, 1, 1])
    r3 = b.op(nn.Add, [c3, a2], "res3")
    s3 = b.op(nn.Sigmoid, [r3], "sig3")
    f = b.op(nn.Flatten, [s3], "flat", axis=1)
    g = b.op(nn.Gemm, [f, b.w("wf", (3, 144)), b.w("bf", (3,), 0.1)], "fc", trans_b=True)
    return b.done(b.op(nn.Sigmoid, [g], "sig_fc"))


def test_fuse_tables_bit_exact() -> None:
    for seed in range(2):
        m = quantized(tables(seed), seed)
        inputs = [random_inputs(m, seed * 10 + k, scale=2.0) for k in range(3)]
        before = [pent_int_outputs(m, x) for x in inputs]
        run_passes(m, "fuse")
        body = [op for op in m.main.body if op.name in ("pent.conv2d", "pent.gemm", "pent.lut", "pent.add")]
        got = [(op.name, op.attr("act") if "act" in op.attrs else "-", len(op.operands)) for op in body]
        assert got == [
            ("pent.conv2d", "lut", 5),
            ("pent.conv2d", "none", 5),
            ("pent.lut", "-", 2),
            ("pent.add", "none", 2),
            ("pent.conv2d", "none", 6),
            ("pent.lut", "-", 2),
            ("pent.gemm", "lut", 5),
        ], got
        conv1 = body[0]
        assert conv1.attr("mid_pents") == 6 and conv1.attr("table_lo") is not None and conv1.attr("mid_scale") > 0
        assert not any(n.endswith(".table") and "sig1" in n for n in m.weights)  # the fused table's weight is gone
        for x, want in zip(inputs, before, strict=True):
            for a, b in zip(pent_int_outputs(m, x), want, strict=True):
                np.testing.assert_array_equal(a, b)


def test_fuse_table_off() -> None:
    m = quantized(tables(0))
    run_passes(m, "fuse{table=false}")
    assert all(op.attr("act") != "lut" for op in m.main.body if "act" in op.attrs)
    assert ops(m).count("pent.lut") == 4
