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


def linear_3d(seed: int) -> Module:
    b = Builder("l3", seed)
    x = b.arg("x", (2, 5, 6))
    h = b.op(nn.MatMul, [x, b.w("w", (6, 4))], "mm")  # ONNX's 3-D linear: MatMul on a [K, N] weight + Add
    h = b.op(nn.Add, [h, b.w("bias", (4,))], "add")
    h = b.op(nn.Reshape, [h], "view", shape=[2, 5, 2, 2])  # reshape of a reshape: one reshape
    h = b.op(nn.Transpose, [h], "t1", perm=[0, 2, 1, 3])
    h = b.op(nn.Transpose, [h], "t2", perm=[0, 1, 3, 2])  # two transposes: one
    h = b.op(nn.Transpose, [h], "t3", perm=[0, 1, 3, 2])
    h = b.op(nn.Transpose, [h], "t4", perm=[0, 2, 1, 3])  # back to the identity: removed
    return b.done(b.op(nn.Relu, [h], "relu"))


def test_3d_matmul_becomes_reshape_gemm_reshape_with_the_bias_and_chains_fold() -> None:
    for m in check_float_pass(linear_3d, "canonicalize"):
        assert ops(m) == ["nn.reshape", "nn.gemm", "nn.reshape", "nn.relu"]
        (gemm,) = m.main.ops_of(nn.Gemm)
        assert len(gemm.operands) == 3 and gemm.attr("trans_b") and gemm.operands[1].type.shape == (4, 6)
        assert m.main.body[2].attr("shape") == [2, 5, 2, 2]


def test_transpose_chain_composes_the_permutations() -> None:
    def make(seed: int) -> Module:
        b = Builder("tc", seed)
        x = b.arg("x", (2, 3, 4, 5))
        y = b.op(nn.Transpose, [x], "a", perm=[0, 2, 1, 3])
        return b.done(b.op(nn.Transpose, [y], "b", perm=[0, 1, 3, 2]))

    for m in check_float_pass(make, "canonicalize"):
        assert ops(m) == ["nn.transpose"] and m.main.body[0].attr("perm") == [0, 2, 3, 1]


def test_split_becomes_slices_and_keeps_output_names() -> None:
    def make(seed: int) -> Module:
        b = Builder("sp", seed)
        x = b.arg("x", (1, 6, 3))
        op = nn.Split([x], [x.type] * 2, {"axis": -2, "split": [2, 4]}, None, result_names=["lo", "hi"])
        for r, t in zip(op.results, op.infer_types(), strict=True):
            r.type = t
        b.g.append(op)
        return b.done(b.op(nn.Relu, [op.results[0]], "relu"), op.results[1])

    for m in check_float_pass(make, "canonicalize"):
        assert ops(m) == ["nn.slice", "nn.slice", "nn.relu"]
        assert [s.attr("starts") + s.attr("ends") + s.attr("axes") for s in m.main.ops_of(nn.Slice)] == [
            [0, 2, 1],
            [2, 6, 1],
        ]
        assert m.main.outputs[1].name == "hi"


def test_gather_of_one_constant_index_becomes_slice_and_squeeze() -> None:
    def make(seed: int) -> Module:
        b = Builder("gs", seed)
        x = b.arg("x", (2, 5, 3))
        i = b.const("i", np.array(-5, np.int64))  # negative: position 0
        return b.done(b.op(nn.Gather, [x, i], "g", axis=1))

    for m in check_float_pass(make, "canonicalize"):
        assert ops(m) == ["nn.slice", "nn.squeeze"] and m.main.body[0].attr("starts") == [0]


def test_an_op_computed_twice_is_computed_once() -> None:
    def make(seed: int) -> Module:
        b = Builder("cse", seed)
        x, mask = b.arg("x", (2, 4)), b.arg("m", (2, 4))
        y = b.op(nn.Add, [x, b.op(nn.Mul, [mask, b.w("s", (1,))], "m1")], "a1")
        y = b.op(nn.Add, [y, b.op(nn.Mul, [mask, b.w("s2", (1,), data=np.ones(1, np.float32))], "m2")], "a2")
        z = b.op(nn.Mul, [mask, y], "m3")
        z = b.op(nn.Add, [z, b.op(nn.Mul, [mask, b.w("s3", (1,), data=np.ones(1, np.float32))], "m4")], "a3")
        return b.done(b.op(nn.Add, [b.op(nn.Relu, [z], "r1"), b.op(nn.Relu, [z], "r2")], "sum"))

    for m in check_float_pass(make, "canonicalize"):
        assert ops(m).count("nn.relu") == 1
        assert ops(m).count("nn.mul") == 3  # m4 is m2 (an equal constant); m1's constant differs


def _exported_attention(seed: int, causal: bool) -> Module:
    """The ONNX exporter's scaled_dot_product_attention with a boolean mask: q and kᵀ each scaled by sqrt(s), the
    mask made additive (``where(m, 0, -inf)``, or a constant of zeros and -infs for ``is_causal``), softmax, and the
    NaN guard with a ``[1]`` zero."""
    b = Builder("sdpa", seed)
    q, k, keys = b.arg("q", (2, 3, 4, 8)), b.arg("k", (2, 3, 8, 4)), b.arg("keys", (2, 1, 4, 4))
    root = np.sqrt(np.float32(1 / np.sqrt(8)))
    qs = b.op(nn.Mul, [q, b.const("rq", np.array([root], np.float32))], "mq")
    ks = b.op(nn.Mul, [b.const("rk", np.array([root], np.float32)), k], "mk")  # constant first: still matched
    s = b.op(nn.MatMul, [qs, ks], "scores")
    zero, ninf = b.const("zero", np.zeros(1, np.float32)), b.const("ninf", np.full(1, -np.inf, np.float32))
    if causal:
        add = b.const("causal", np.where(np.tril(np.ones((4, 4), bool)), 0, -np.inf).astype(np.float32))
    else:  # a row of keys all <= -2 (almost never) would be hidden entirely; keys > -1 keeps the most
        add = b.op(nn.Where, [b.op(nn.Greater, [keys, b.const("t", np.float32(-1.0))], "m"), zero, ninf], "mask")
    p = b.op(nn.Softmax, [b.op(nn.Add, [s, add], "masked")], "p", axis=3)
    return b.done(b.op(nn.Where, [b.op(nn.IsNaN, [p], "nan"), zero, p], "guard"))


def test_exported_attention_meets_the_torch_rule_form() -> None:
    """One scale on the scores (the float64 product of the two roots, rounded once: 1e-7 relative from the
    exporter's rounding), the mask as one where (exact for finite scores), a 0-d guard fill."""
    for causal in (False, True):
        for m in check_float_pass(lambda seed, c=causal: _exported_attention(seed, c), "canonicalize", rtol=1e-6):
            body = [op for op in m.main.body if not isinstance(op, nn.Greater)]  # the mask's condition
            assert [op.name for op in body] == [
                "nn.matmul",
                "nn.mul",
                "nn.where",
                "nn.softmax",
                "nn.is_nan",
                "nn.where",
            ]
            mm, scale, mask, guard = body[0], body[1], body[2], body[5]
            assert mm.operands[0] is m.main.args[0] and mm.operands[1] is m.main.args[1]
            assert mask.operands[1] is scale.results[0] and mask.operands[2].type.rank == 0
            assert guard.operands[1].type.rank == 0
            root = float(np.sqrt(np.float32(1 / np.sqrt(8))))
            assert float(np.asarray(m.weight(scale.operands[1]))) == np.float32(root * root)
