"""fold-flatten: a flatten feeding a gemm reads the image in its channels-last memory order and the gemm's weight
columns follow; the gemm's integers are unchanged bit for bit, the flatten becomes one contiguous copy."""

from __future__ import annotations

import numpy as np
import pytest
from pass_helpers import Builder, ops, pent_int_outputs, quantized, random_inputs, run_passes, small_cnn

from pcc.diagnostics import PccError
from pcc.dialects import nn, pent
from pcc.ir import Module
from pcc.parser import parse_module
from pcc.printer import print_module
from pcc.verifier import verify_module


def _op(m: Module, cls: type) -> pent.Operation:
    return next(op for op in m.main.body if isinstance(op, cls))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_flatten_into_gemm_is_folded_exactly(seed: int) -> None:
    m = quantized(small_cnn(seed), seed)
    w_before = m.weight(_op(m, pent.Gemm).operands[1]).copy()
    old_name = _op(m, pent.Gemm).operands[1].name
    inputs = [random_inputs(m, 10 + k, scale=2.0) for k in range(3)]
    before = [pent_int_outputs(m, x) for x in inputs]
    run_passes(m, "fold-flatten")
    reshape, gemm = _op(m, pent.Reshape), _op(m, pent.Gemm)
    assert reshape.attr("perm") == [0, 2, 3, 1]
    n, c, h, w = reshape.operands[0].type.shape
    want = w_before.reshape(-1, c, h, w).transpose(0, 2, 3, 1).reshape(w_before.shape[0], -1)
    np.testing.assert_array_equal(m.weight(gemm.operands[1]), want)
    assert old_name not in m.weights  # the NCHW-ordered weight is gone
    for x, b in zip(inputs, before, strict=True):
        for got, ref in zip(pent_int_outputs(m, x), b, strict=True):
            np.testing.assert_array_equal(got, ref)
    assert run_passes(m, "fold-flatten") is m and _op(m, pent.Reshape).attr("perm") == [0, 2, 3, 1]  # idempotent


def _flatten_model(c: int, h: int, w: int, *, second_use: bool = False, output: bool = False) -> Module:
    b = Builder("f", 3)
    x = b.arg("x", (1, c, h, w))
    y = b.op(nn.Relu, [x], "relu")
    f = b.op(nn.Flatten, [y], "flatten", axis=1)
    z = b.op(nn.Gemm, [f, b.w("fc", (4, c * h * w), 0.3)], "fc", trans_b=True)
    if second_use:
        z2 = b.op(nn.Gemm, [f, b.w("fc2", (3, c * h * w), 0.3)], "fc2", trans_b=True)
        return b.done(z, z2)
    return b.done(z, f) if output else b.done(z)


@pytest.mark.parametrize(
    "shape, kwargs",
    [
        ((1, 2, 2), {}),  # one channel: the orders coincide
        ((6, 1, 1), {}),  # one pixel: the orders coincide
        ((3, 2, 2), {"second_use": True}),  # the flattened value has two users
        ((3, 2, 2), {"output": True}),  # the flattened value is a program output
    ],
)
def test_flatten_left_alone(shape: tuple[int, int, int], kwargs: dict) -> None:
    m = quantized(_flatten_model(*shape, **kwargs))
    before = print_module(m)
    run_passes(m, "fold-flatten")
    assert print_module(m) == before


def test_perm_prints_parses_and_verifies() -> None:
    m = quantized(_flatten_model(3, 2, 2))
    run_passes(m, "fold-flatten")
    text = print_module(m)
    assert "perm = [0, 2, 3, 1]" in text
    again = parse_module(text, "folded.pir", weights=dict(m.weight_data))
    assert print_module(again) == text
    verify_module(again)
    bad = text.replace("perm = [0, 2, 3, 1]", "perm = [0, 1, 1, 3]")
    with pytest.raises(PccError, match=r"perm \[0, 1, 1, 3\] is not a permutation of the input's 4 axes"):
        verify_module(parse_module(bad, "bad.pir", weights=dict(m.weight_data)))
    assert ops(m)[-2:] == ["pent.gemm", "pent.dequantize"]
