"""canonicalize: outputs unchanged on random inputs; identities, constants, matmul+add and conv+add rewritten."""

from __future__ import annotations

import numpy as np
from pass_helpers import Builder, check_float_pass, ops, run_passes

from pcc.dialects import nn
from pcc.ir import Module
from pcc.parser import parse_module


def messy(seed: int) -> Module:
    b = Builder("messy", seed)
    x = b.arg("x", (2, 6))
    x = b.op(nn.Identity, [x], "id")
    x = b.op(nn.Dropout, [x], "drop", ratio=0.3)
    wt = b.op(nn.Transpose, [b.w("wT", (5, 6))], "t", perm=[1, 0])  # constant: folded
    h = b.op(nn.MatMul, [x, wt], "mm")
    h = b.op(nn.Add, [h, b.w("bias", (5,))], "add_bias")  # -> gemm bias
    h = b.op(nn.Relu, [h], "relu")
    scale = b.op(nn.Mul, [b.w("s1", (1, 5)), b.w("s2", (1, 5))], "const_mul")  # constant: folded
    h = b.op(nn.Mul, [h, scale], "scale")
    b.op(nn.Relu, [h], "dead")  # no output depends on it
    g = b.op(nn.Gemm, [h, b.w("w2", (5, 3))], "fc")
    g = b.op(nn.Add, [b.w("b2", (1, 3)), g], "fc_bias")  # bias first: still folded
    return b.done(g)


def conv_bias(seed: int) -> Module:
    b = Builder("cb", seed)
    x = b.arg("x", (1, 2, 5, 5))
    y = b.op(nn.Conv2d, [x, b.w("w", (4, 2, 3, 3))], "conv")
    y = b.op(nn.Add, [y, b.w("b", (1, 4, 1, 1))], "bias")
    z = b.op(nn.Conv2d, [y, b.w("w2", (3, 4, 1, 1)), b.w("b2", (3,))], "conv2")
    z = b.op(nn.Add, [z, b.w("b3", (3, 1, 1))], "bias2")
    return b.done(z)


def test_canonicalize_preserves_outputs_and_simplifies() -> None:
    for m in check_float_pass(messy, "canonicalize"):
        assert ops(m) == ["nn.gemm", "nn.relu", "nn.mul", "nn.gemm"]
        assert all(len(op.operands) == 3 for op in m.main.ops_of(nn.Gemm))  # both biases folded
        assert "wT" not in m.weights and "s1" not in m.weights  # folded constants replaced the originals


def test_conv_bias_add_folded() -> None:
    for m in check_float_pass(conv_bias, "canonicalize"):
        assert ops(m) == ["nn.conv2d", "nn.conv2d"]
        assert all(len(op.operands) == 3 for op in m.main.body)


def test_add_that_is_not_a_bias_is_kept() -> None:
    def make(seed: int) -> Module:
        b = Builder("nb", seed)
        x = b.arg("x", (1, 2, 4, 4))
        y = b.op(nn.Conv2d, [x, b.w("w", (2, 2, 1, 1))], "conv")
        y = b.op(nn.Add, [y, b.w("full", (1, 2, 4, 4))], "add")  # varies per pixel: not a bias
        return b.done(y)

    for m in check_float_pass(make, "canonicalize"):
        assert ops(m) == ["nn.conv2d", "nn.add"]


def test_dequantize_weight_is_not_folded() -> None:
    b = Builder("dq")
    x = b.arg("x", (1, 4))
    q = b.const("q", np.array([[1, -2, 0, 2], [0, 1, 1, -1]], dtype=np.int8), "p5")
    w = b.op(nn.DequantizeWeight, [q, b.const("s", np.array([0.5, 0.25], np.float32))], "dq", axis=0)
    m = b.done(b.op(nn.Gemm, [x, w], "fc", trans_b=True))
    run_passes(m, "canonicalize")
    assert ops(m) == ["nn.dequantize_weight", "nn.gemm"]


def test_canonicalize_from_ir_text_is_idempotent() -> None:
    text = """module @m {
  weight @w : tensor<3x2xf32> = dense<[1.0, 2.0, 3.0, 4.0, 5.0, 6.0]>
  weight @b : tensor<2xf32> = dense<[0.5, -0.5]>
  func @main(%x: tensor<1x3xf32>) -> tensor<1x2xf32> {
    %i = nn.identity(%x) : tensor<1x3xf32>
    %y = nn.matmul(%i, @w) : tensor<1x2xf32>
    %z = nn.add(%y, @b) : tensor<1x2xf32>
    return %z
  }
}
"""
    m = parse_module(text)
    run_passes(m, "canonicalize")
    assert ops(m) == ["nn.gemm"]
    from pcc.passes.canonicalize import Canonicalize

    assert Canonicalize().run(m) is False
