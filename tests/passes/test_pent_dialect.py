"""The pent dialect: op checks, and the numpy reference against independent hand computations."""

from __future__ import annotations

import numpy as np
import pytest

from pcc import pent_reference as ref
from pcc.diagnostics import PccError
from pcc.parser import parse_module
from pcc.verifier import verify_module

HEAD = """module @m {
  weight @w : tensor<2x1x3x3xp5>
  weight @b : tensor<2xp16> = dense<[0p0, 0p+]>
  weight @mu : tensor<2xp13> = dense<[0p+, 0p+]>
  weight @mu3 : tensor<3xp13> = dense<[0p+, 0p+, 0p+]>
  weight @s : tensor<2xp3> = dense<[0p0, 0p+]>
  func @main(%x: tensor<1x1x4x4xp8>) -> tensor<1x2x4x4xp8> {
"""
W = {"w": np.ones((2, 1, 3, 3), np.int8)}


def verify(body: str) -> None:
    verify_module(parse_module(HEAD + body + "  }\n}\n", weights=W))


def test_valid_conv_and_its_checks() -> None:
    verify("    %y = pent.conv2d(%x, @w, @b, @mu, @s) {pads = [1, 1, 1, 1]} : tensor<1x2x4x4xp8>\n    return %y\n")
    bad = {
        '{pads = [1, 1, 1, 1], act = "relu6"}': "act must be one of",
        "{pads = [1, 1, 1, 1], lo = 0}": "only allowed with act = clamp",
        '{pads = [1, 1, 1, 1], act = "clamp", lo = 5, hi = 1}': "lo <= hi",
        "{pads = [1, 1, 1, 1], mid_pents = 4}": "need a residual operand",
        "{pads = [1, 1, 1, 1], table = [1, 2]}": "only allowed with act = lut",
        '{pads = [1, 1, 1, 1], act = "lut", table = [1, 2], table_lo = 0}': "needs mid_pents, mid_scale",
        '{pads = [1, 1, 1, 1], act = "lut", table = [1, 2], table_lo = 0, mid_pents = 2, mid_scale = 0.5, '
        "index_mult = 3}": "index_mult and index_shift go together",
        '{pads = [1, 1, 1, 1], act = "lut", table = [1, 2], table_lo = 12, mid_pents = 2, mid_scale = 0.5}': (
            "within the intermediate's range -12..12"
        ),
        '{pads = [1, 1, 1, 1], act = "lut", table = [1, 200000], table_lo = 0, mid_pents = 2, mid_scale = 0.5}': (
            "within the result's range -195312..195312"
        ),
    }
    for attrs, msg in bad.items():
        with pytest.raises(PccError, match=msg):
            verify(f"    %y = pent.conv2d(%x, @w, @b, @mu, @s) {attrs} : tensor<1x2x4x4xp8>\n    return %y\n")
    with pytest.raises(PccError, match=r"operand 'mult' must be a p13 tensor, got tensor<2xp3>"):
        verify("    %y = pent.conv2d(%x, @w, @b, @s, @s) {pads = [1, 1, 1, 1]} : tensor<1x2x4x4xp8>\n    return %y\n")
    with pytest.raises(PccError, match="mult must be tensor<2xp13>"):  # the declared type, the wrong shape
        verify("    %y = pent.conv2d(%x, @w, @b, @mu3, @s) {pads = [1, 1, 1, 1]} : tensor<1x2x4x4xp8>\n    return %y\n")
    with pytest.raises(PccError, match="residual shape"):
        verify(
            "    %y = pent.conv2d(%x, @w, @b, @mu, @s, %x) {pads = [1, 1, 1, 1]} : tensor<1x2x4x4xp8>\n    return %y\n"
        )
    with pytest.raises(PccError, match="needs res_mult"):
        verify(
            "    %y = pent.conv2d(%x, @w, @b, @mu, @s) {pads = [1, 1, 1, 1]} : tensor<1x2x4x4xp8>\n"
            "    %z = pent.conv2d(%x, @w, @b, @mu, @s, %y) {pads = [1, 1, 1, 1]} : tensor<1x2x4x4xp8>\n    return %z\n"
        )


def test_activation_width_limit() -> None:
    text = HEAD.replace("-> tensor<1x2x4x4xp8>", "-> tensor<1x2x4x4xp17>")
    body = "    %z = pent.conv2d(%x, @w, @b, @mu, @s) {pads = [1, 1, 1, 1]} : tensor<1x2x4x4xp17>\n    return %z\n"
    with pytest.raises(PccError, match="at most 16 pents"):
        verify_module(parse_module(text + body + "  }\n}\n", weights=W))


def naive_conv(x: np.ndarray, w: np.ndarray, pads: list[int], stride: int) -> np.ndarray:
    n, c, h, wd = x.shape
    o, _, kh, kw = w.shape
    xp = np.zeros((n, c, h + pads[0] + pads[2], wd + pads[1] + pads[3]), np.int64)
    xp[:, :, pads[0] : pads[0] + h, pads[1] : pads[1] + wd] = x
    oh = (xp.shape[2] - kh) // stride + 1
    ow = (xp.shape[3] - kw) // stride + 1
    out = np.zeros((n, o, oh, ow), np.int64)
    for i in range(oh):
        for j in range(ow):
            patch = xp[:, :, i * stride : i * stride + kh, j * stride : j * stride + kw]
            out[:, :, i, j] = np.einsum("ncij,ocij->no", patch, w.astype(np.int64))
    return out


@pytest.mark.parametrize("big", [False, True])
def test_conv_accumulation_is_exact(big: bool) -> None:
    rng = np.random.default_rng(0)
    hi = 7 * 10**10 if big else 200  # big values take the int64 path instead of float64 BLAS
    x = rng.integers(-hi, hi, (1, 3, 6, 5))
    w = rng.integers(-2, 3, (4, 3, 3, 2))
    bias = rng.integers(-1000, 1000, 4)
    got = ref.conv_acc(x, w, bias, [2, 1], [1, 0, 1, 1], 1)
    want = naive_conv(x, w, [1, 0, 1, 1], 1)[:, :, ::2, :] + bias.reshape(1, -1, 1, 1)
    np.testing.assert_array_equal(got, want)
    # grouped: two groups of two channels
    wg = rng.integers(-2, 3, (4, 2, 3, 3))
    xg = rng.integers(-hi, hi, (1, 4, 5, 5))
    got = ref.conv_acc(xg, wg, np.zeros(4, np.int64), [1, 1], [1, 1, 1, 1], 2)
    want = np.concatenate(
        [naive_conv(xg[:, :2], wg[:2], [1, 1, 1, 1], 1), naive_conv(xg[:, 2:], wg[2:], [1, 1, 1, 1], 1)], axis=1
    )
    np.testing.assert_array_equal(got, want)


def test_rounding_is_ties_away_from_zero() -> None:
    assert ref.quantize_input(np.array([0.5, 1.5, -0.5, -1.5, 0.49]), 1.0, 2).tolist() == [1, 2, -1, -2, 0]
    assert ref.quantize_input(np.array([1000.0, -1000.0]), 1.0, 2).tolist() == [12, -12]  # saturates
    # avg pool of [1, 2] is 1.5 -> 2 and of [-1, -2] is -2
    x = np.array([[[[1, 2], [-1, -2]]]])
    assert ref.avg_pool(x, [1, 2], [1, 1], [0, 0, 0, 0], False).reshape(-1).tolist() == [2, -2]
    # include_pad counts the padding: (1 + 2 + 0) / 3 = 1
    assert ref.avg_pool(x[:, :, :1], [1, 3], [1, 1], [0, 0, 0, 1], True).reshape(-1).tolist() == [1]
    assert ref.avg_pool(x[:, :, :1], [1, 3], [1, 1], [0, 0, 0, 1], False).reshape(-1).tolist() == [2]


def test_max_pool_padding_never_wins() -> None:
    x = -np.arange(1, 10).reshape(1, 1, 3, 3)
    got = ref.max_pool(x, [2, 2], [2, 2], [1, 1, 0, 0])
    assert got.reshape(-1).tolist() == [-1, -2, -4, -5]


def gemm_module(attrs: str, residual: bool = False) -> str:
    """A 2x2 identity gemm (mult 1, shift 1: y = round(x / 2) before the tail) with ``attrs``, on 4-pent words."""
    res_arg, res_q, res = (
        (", %r: tensor<1x2xf32>", "    %qr = pent.quantize(%r) {scale = 1.0} : tensor<1x2xp4>\n", ", %qr")
        if residual
        else ("", "", "")
    )
    return (
        """module @m {
  weight @w : tensor<2x2xp5> = dense<[0p+, 0p0, 0p0, 0p+]>
  weight @b : tensor<2xp16> = dense<[0p0, 0p0]>
  weight @mu : tensor<2xp13> = dense<[0p+, 0p+]>
  weight @s : tensor<2xp3> = dense<[0p+, 0p+]>
"""
        f"  func @main(%x: tensor<1x2xf32>{res_arg}) -> tensor<1x2xf32> {{\n"
        "    %q = pent.quantize(%x) {scale = 1.0} : tensor<1x2xp4>\n"
        f"{res_q}    %y = pent.gemm(%q, @w, @b, @mu, @s{res}) {{{attrs}}} : tensor<1x2xp4>\n"
        "    %o = pent.dequantize(%y) {scale = 1.0} : tensor<1x2xf32>\n    return %o\n  }\n}\n"
    )


def test_requant_residual_and_activation_tail() -> None:
    attrs = 'act = "clamp", lo = -3, hi = 40, res_mult = [3, 1], res_shift = [0, 1], mid_pents = 2'
    m = parse_module(gemm_module(attrs, residual=True))
    verify_module(m)
    # acc = x; mid = sat_2(round(x / 2)) (at most 12); y = clamp(3 * mid + round(r / 2), -3, 40)
    out = ref.run(m, {"x": np.array([[5.0, 100.0]], np.float32), "r": np.array([[3.0, -9.0]], np.float32)})[0]
    assert out.tolist() == [[3 * 3 + 2, 3 * 12 - 5]]  # round(-4.5) = -5
    out = ref.run(m, {"x": np.array([[-7.0, 0.0]], np.float32), "r": np.array([[-1.0, -9.0]], np.float32)})[0]
    assert out.tolist() == [[-3.0, -3.0]]


def test_run_int_matches_run() -> None:
    text = """module @m {
  func @main(%x: tensor<1x6xf32>) -> tensor<1x6xf32> {
    %q = pent.quantize(%x) {scale = 0.5} : tensor<1x6xp3>
    %r = pent.relu(%q) : tensor<1x6xp3>
    %o = pent.dequantize(%r) {scale = 0.5} : tensor<1x6xf32>
    return %o
  }
}
"""
    m = parse_module(text)
    x = np.array([[-1.0, 0.2, 0.25, 3.0, 100.0, -0.75]], np.float32)
    q = ref.quantize_input(x, 0.5, 3)
    assert ref.run_int(m, {"x": q})[0].tolist() == np.maximum(q, 0).tolist()
    assert ref.run(m, {"x": x})[0].tolist() == (np.maximum(q, 0) * 0.5).tolist()


def test_fused_table_tail() -> None:
    """act = lut: the requantized intermediate (mid_pents), its index rescale, then the table (by hand)."""
    attrs = 'act = "lut", table = [10, 20, 30, 40], table_lo = -1, mid_pents = 2, mid_scale = 2.0'
    m = parse_module(gemm_module(attrs))
    verify_module(m)
    # mid = sat_2(round(x / 2)) (|mid| <= 12); y = table[clamp(mid, -1, 2) + 1]
    out = ref.run(m, {"x": np.array([[-9.0, 3.0]], np.float32)})[0]
    assert out.tolist() == [[10.0, 40.0]]  # mid -5 (round(-4.5) away from zero) -> the first entry; mid 2 -> 40
    out = ref.run(m, {"x": np.array([[0.0, 1.0]], np.float32)})[0]
    assert out.tolist() == [[20.0, 30.0]]  # mid 0, mid 1 (round(0.5) = 1)
    # with the index rescale: v = sat_2(round(mid * 3 / 2)); x = 2 -> mid 1 -> v 2 (round(1.5)) -> 40
    m = parse_module(gemm_module(attrs + ", index_mult = 3, index_shift = 1"))
    verify_module(m)
    assert ref.run(m, {"x": np.array([[2.0, -2.0]], np.float32)})[0].tolist() == [[40.0, 10.0]]  # v 2, v -2
