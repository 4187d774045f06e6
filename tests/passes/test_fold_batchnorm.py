"""fold-batchnorm: outputs unchanged; BN folded into conv/gemm, lone BN -> scale_shift, pentary stays pentary."""

from __future__ import annotations

import numpy as np
from pass_helpers import Builder, bn_params, check_float_pass, ops, run_passes, small_cnn

from pcc.dialects import nn
from pcc.ir import Module


def test_conv_bn_folded() -> None:
    for m in check_float_pass(lambda s: small_cnn(s, bn=True), "fold-batchnorm"):
        assert "nn.batch_norm" not in ops(m)
        assert "nn.scale_shift" not in ops(m)
        assert not any(n in m.weights for n in ("bn1.m", "bn1.v", "bn2.g", "w1"))  # originals removed


def gemm_bn(trans_b: bool, bias: bool) -> object:
    def make(seed: int) -> Module:
        b = Builder("g", seed)
        x = b.arg("x", (3, 6))
        w = b.w("w", (4, 6) if trans_b else (6, 4))
        operands = [x, w] + ([b.w("c", (1, 4))] if bias else [])
        y = b.op(nn.Gemm, operands, "fc", trans_b=trans_b, alpha=0.7, beta=1.3)
        y = b.op(nn.BatchNorm, [y, *bn_params(b, "bn", 4)], "bn", epsilon=1e-3)
        return b.done(y)

    return make


def test_gemm_bn_folded_all_layouts() -> None:
    for trans_b in (False, True):
        for bias in (False, True):
            for m in check_float_pass(gemm_bn(trans_b, bias), "fold-batchnorm"):
                assert ops(m) == ["nn.gemm"]


def test_lone_and_shared_bn_become_scale_shift() -> None:
    def make(seed: int) -> Module:
        b = Builder("s", seed)
        x = b.arg("x", (1, 3, 4, 4))
        y = b.op(nn.BatchNorm, [x, *bn_params(b, "bn0", 3)], "bn0")  # after an argument
        c = b.op(nn.Conv2d, [y, b.w("w", (3, 3, 1, 1))], "conv")
        z = b.op(nn.BatchNorm, [c, *bn_params(b, "bn1", 3)], "bn1")  # conv result has 2 uses: not folded
        return b.done(b.op(nn.Add, [z, c], "add"))

    for m in check_float_pass(make, "fold-batchnorm"):
        assert ops(m) == ["nn.scale_shift", "nn.conv2d", "nn.scale_shift", "nn.add"]


def test_pentary_weight_stays_pentary() -> None:
    def make(seed: int) -> Module:
        b = Builder("p", seed)
        rng = np.random.default_rng(seed)
        x = b.arg("x", (1, 2, 5, 5))
        q = b.const("q", rng.integers(-2, 3, (4, 2, 3, 3)).astype(np.int8), "p5")
        s = b.const("s", rng.uniform(0.05, 0.2, 4).astype(np.float32), "f32")  # one scale per channel
        w = b.op(nn.DequantizeWeight, [q, s], "dq", axis=0)
        y = b.op(nn.Conv2d, [x, w], "conv", pads=[1, 1, 1, 1])
        return b.done(b.op(nn.BatchNorm, [y, *bn_params(b, "bn", 4)], "bn"))

    for m in check_float_pass(make, "fold-batchnorm"):
        assert ops(m) == ["nn.dequantize_weight", "nn.conv2d"]
        dq = m.main.body[0]
        assert m.weight(dq.operands[0]).dtype == np.int8 and dq.operands[1].type.shape == (4,)


def test_no_change_without_batch_norm() -> None:
    m = small_cnn(0, bn=False)
    from pcc.passes.fold_batchnorm import FoldBatchNorm

    assert FoldBatchNorm().run(m) is False
    run_passes(m, "fold-batchnorm")
