"""quantize: nn -> pent with integer-only requantization; SQNR against the float graph, options, errors."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from pass_helpers import Builder, float_outputs, ops, random_inputs, run_passes, small_cnn

from pcc import pent_reference
from pcc.diagnostics import PccError
from pcc.dialects import nn
from pcc.ir import Module
from pcc.isa import MULT_MAX, mul_shift_round
from pcc.passes.quantize import CalibrationWarning, quantize_module, requant_params, round_away, sqnr_db


def calibration(m: Module, n: int = 16, seed: int = 1) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {a.name or "": rng.standard_normal((n, *a.type.shape[1:])).astype(np.float32) for a in m.main.args}


def sqnr_after_quantize(m: Module, inputs: dict[str, np.ndarray], **kw: object) -> float:
    ref = float_outputs(m, inputs)[0]
    quantize_module(m, calibration(m), **kw)
    return sqnr_db(ref, pent_reference.run(m, inputs)[0])


def pentary_cnn(seed: int = 0) -> Module:
    """small_cnn with every conv/gemm weight already s_c x {-2..2} per output channel."""
    m = run_passes(small_cnn(seed), "canonicalize,fold-batchnorm")
    rng = np.random.default_rng(seed)
    for op in m.main.ops_of(nn.Conv2d, nn.Gemm):
        w = m.weight(op.operands[1])
        q = rng.integers(-2, 3, w.shape)
        s = rng.uniform(0.05, 0.3, w.shape[0]).reshape((-1,) + (1,) * (w.ndim - 1))
        m.weight_data[op.operands[1].name] = (q * s).astype(np.float32)
    return m


def test_requant_params_are_precise_and_in_range() -> None:
    rng = np.random.default_rng(0)
    ratio = np.exp(rng.uniform(np.log(1e-9), np.log(1e3), 2000))
    mult, shift = requant_params(ratio)
    assert mult.min() >= 0 and mult.max() <= MULT_MAX and shift.min() >= 0 and shift.max() <= 62
    approx = mult / np.exp2(shift.astype(np.float64))
    assert np.max(np.abs(approx / ratio - 1)) < 2.0**-27
    # the integer primitive applies them exactly: acc * ratio, rounded
    acc = rng.integers(-(10**9), 10**9, 2000)
    got = mul_shift_round(acc, mult, shift, 2**62)
    assert np.max(np.abs(got - acc * ratio)) <= 0.5 + 1e-6 * np.max(np.abs(acc * ratio))
    assert requant_params(0.0)[0][0] == 0


def test_round_away_ties() -> None:
    assert round_away(np.array([0.5, 1.5, -0.5, -2.5, 2.4999])).tolist() == [1, 2, -1, -3, 2]


def test_quantize_cnn_sqnr_reported() -> None:
    base = run_passes(small_cnn(0), "canonicalize,fold-batchnorm")
    inputs = random_inputs(base, 7)
    db_random = sqnr_after_quantize(base, inputs)
    assert all(n.startswith("pent.") for n in ops(base))
    assert ops(base)[0] == "pent.quantize" and ops(base)[-1] == "pent.dequantize"
    m = pentary_cnn(0)
    db_pentary = sqnr_after_quantize(m, inputs)
    print(f"\nSQNR small CNN, random float weights: {db_random:.1f} dB; pentary weights: {db_pentary:.1f} dB")
    assert db_random > 8.0  # five weight levels on Gaussian weights: about 15 dB a layer
    assert db_pentary > 60.0  # only 8-pent activation rounding left


def test_more_activation_pents_more_sqnr() -> None:
    inputs = random_inputs(pentary_cnn(0), 3)
    dbs = [sqnr_after_quantize(pentary_cnn(0), inputs, act_pents=p) for p in (2, 4, 6)]
    assert dbs[0] < dbs[1] < dbs[2]


def test_per_tensor_gives_uniform_requantization() -> None:
    m = run_passes(small_cnn(1), "canonicalize,fold-batchnorm")
    quantize_module(m, calibration(m), per_tensor=True, weight_method="max")
    for op in m.main.body:
        if op.name in ("pent.conv2d", "pent.gemm"):
            assert len(set(m.weight(op.operands[3]).tolist())) == 1
            assert np.max(np.abs(m.weight(op.operands[1]))) == 2  # max method: the largest weight is +-2


def test_overrides_by_node_name() -> None:
    m = run_passes(small_cnn(2), "canonicalize,fold-batchnorm")
    quantize_module(m, calibration(m), act_pents=4, overrides="conv1:10;fc:12;x:9")
    by_node = {op.loc.node: op.results[0].type.dtype for op in m.main.body if op.loc and op.loc.node}
    assert by_node["conv1"] == "p10" and by_node["fc"] == "p12" and by_node["conv2"] == "p4"
    assert m.main.body[0].results[0].type.dtype == "p9"  # the input
    m2 = run_passes(small_cnn(2), "canonicalize,fold-batchnorm")
    with pytest.raises(PccError, match="no such node"):
        quantize_module(m2, calibration(m2), overrides="nope:8")


def test_relu_scale_is_shared_with_its_producer() -> None:
    m = run_passes(small_cnn(3), "canonicalize,fold-batchnorm")
    quantize_module(m, calibration(m), error_budget=0.0)  # one pent per weight (a two-pent conv ends in an add)
    conv = next(op for op in m.main.body if op.name == "pent.conv2d")
    relu = conv.results[0].uses[0]
    assert relu.name == "pent.relu"  # fuse merges them exactly because they share the scale


def test_calibration_file_methods_and_fallback(tmp_path) -> None:  # noqa: ANN001
    from pcc.passes.quantize import Quantize

    m = run_passes(small_cnn(4), "canonicalize,fold-batchnorm")
    path = tmp_path / "cal.npz"
    np.savez(path, **calibration(m, 8))
    Quantize(calibration=str(path), calib_method="percentile", percentile=99.0).run(m)
    assert ops(m)[0] == "pent.quantize"
    m2 = run_passes(small_cnn(4), "canonicalize,fold-batchnorm")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        Quantize().run(m2)
    assert any(issubclass(w.category, CalibrationWarning) for w in caught)
    # percentile clips the tails: the input scale is smaller than with min/max
    assert m.main.body[0].attr("scale") < m2.main.body[0].attr("scale") * 1.5
    bad = tmp_path / "bad.npz"
    np.savez(bad, y=np.zeros((4, 3, 8, 8), np.float32))
    m3 = run_passes(small_cnn(4), "canonicalize,fold-batchnorm")
    with pytest.raises(PccError, match="no array for input 'x'"):
        Quantize(calibration=str(bad)).run(m3)
    np.savez(bad, x=np.zeros((4, 3, 7, 8), np.float32))
    with pytest.raises(PccError, match="stacked on the batch axis"):
        Quantize(calibration=str(bad)).run(m3)


def test_unsupported_ops_are_listed() -> None:
    b = Builder("u")
    x = b.arg("x", (1, 4))
    y = b.op(nn.Sigmoid, [x], "sig")
    y = b.op(nn.BatchNorm, [b.op(nn.Reshape, [y], shape=[1, 4, 1, 1]), *[b.w(f"p{i}", (4,)) for i in range(4)]], "bn")
    m = b.done(y)
    with pytest.raises(PccError) as e:
        quantize_module(m, calibration(m))
    text = e.value.format()
    assert "nn.sigmoid" in text and "nn.batch_norm" in text and "fold-batchnorm" in text


def test_scale_shift_and_pool_variants() -> None:
    b = Builder("v", 5)
    x = b.arg("x", (1, 4, 7, 7))
    y = b.op(nn.ScaleShift, [x, b.w("g", (4,)), b.w("s", (4,))], "ss")
    y = b.op(nn.MaxPool, [y], "mp", kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1], ceil_mode=True)
    y = b.op(nn.AvgPool, [y], "ap", kernel_shape=[2, 2], strides=[1, 1], pads=[1, 1, 0, 0])
    y = b.op(nn.Clip, [y], "clip", min=-0.5, max=0.75)
    y = b.op(nn.GlobalAvgPool, [y], "gap")
    y = b.op(nn.Flatten, [y], "flat")
    y = b.op(nn.ScaleShift, [y, b.w("g2", (4,)), b.w("s2", (4,))], "ss2")
    m = b.done(y)
    inputs = random_inputs(m, 2)
    db = sqnr_after_quantize(m, inputs)
    assert db > 50, db  # only activation rounding: the scale-shift weights are exact
    assert "pent.clamp" in ops(m) and "pent.avg_pool" in ops(m)


def test_gptq_rounding_lowers_the_output_error() -> None:
    from pcc.passes.quantize import gptq_round
    from pcc.quant import quantize_weights

    rng = np.random.default_rng(0)
    k, n = 48, 16
    mix = rng.standard_normal((k, k))
    x = mix @ rng.standard_normal((k, 2000))  # correlated inputs
    w = rng.standard_normal((n, k)).astype(np.float32)
    q0, s = quantize_weights(w, per_channel=True, axis=0)
    q1 = gptq_round(w, s.astype(np.float64), x @ x.T / x.shape[1])
    assert q1.dtype == np.int8 and q1.min() >= -2 and q1.max() <= 2

    def out_err(q: np.ndarray) -> float:
        return float(np.sum(((w - q * s[:, None]) @ x) ** 2))

    assert out_err(q1) < 0.7 * out_err(q0)


def test_bias_correction_and_gptq_on_a_network() -> None:
    inputs = random_inputs(small_cnn(5), 8)
    plain = sqnr_after_quantize(run_passes(small_cnn(5), "canonicalize,fold-batchnorm"), inputs, bias_correction=False)
    corrected = sqnr_after_quantize(run_passes(small_cnn(5), "canonicalize,fold-batchnorm"), inputs)
    gptq = sqnr_after_quantize(run_passes(small_cnn(5), "canonicalize,fold-batchnorm"), inputs, weight_method="gptq")
    print(f"\nSQNR plain {plain:.1f} dB, bias-corrected {corrected:.1f} dB, gptq {gptq:.1f} dB")
    assert corrected > plain - 0.5 and gptq > plain


def test_the_simulation_weights_and_corrections_match_the_straightforward_path(monkeypatch) -> None:
    """The pentary weight the quantized simulation multiplies by is ``q * s`` (computed in place on the float
    copy of the pents the bias correction used); an op whose result only the graph output reads (a language
    model's head) gets none, and the program is the same as when every weight is dequantized for it."""
    from pcc.passes.quantize_calibrate import QuantizedSim
    from pcc.passes.quantize_lower import Lowering

    seen = []
    weight = Lowering.weight

    def checked(self, op, wv, out_axis, alpha=1.0):  # noqa: ANN001, ANN202
        q, s = weight(self, op, wv, out_axis, alpha)
        seen.append(op.name)
        if self.sim is not None and self.sim.runs(op):
            assert alpha == 1.0  # small_cnn's gemm: the returned pents and scales are the simulated ones
            want = q.astype(np.float32) * s.astype(np.float32).reshape((-1,) + (1,) * (q.ndim - 1))
            np.testing.assert_array_equal(self.sim_weight, np.moveaxis(want, 0, out_axis))
        else:
            assert self.sim_weight is None
        return q, s

    def build() -> tuple[Module, dict[str, np.ndarray]]:
        m = run_passes(small_cnn(4), "canonicalize,fold-batchnorm")
        return m, calibration(m, 8)

    fast, cal = build()
    monkeypatch.setattr(Lowering, "weight", checked)
    quantize_module(fast, cal, error_budget=0.0)  # the plain simulation (the budget's also runs the output op)
    assert seen == ["nn.conv2d", "nn.conv2d", "nn.gemm"]  # the gemm is the output: no simulation weight
    monkeypatch.setattr(QuantizedSim, "runs", lambda self, op: True)
    plain, cal = build()
    quantize_module(plain, cal, error_budget=0.0)
    assert ops(fast) == ops(plain)
    assert [op.attributes for op in fast.main.body] == [op.attributes for op in plain.main.body]
    assert sorted(fast.weight_data) == sorted(plain.weight_data)
    for name, data in fast.weight_data.items():
        np.testing.assert_array_equal(data, plain.weight_data[name])


def test_every_pent_value_carries_its_scale_through_the_pipeline() -> None:
    """The scale of each pent value is in the IR (the ``scale`` attribute of its op), equal to the one the
    quantizer used; it survives fuse (a fused op takes the scale of the value it now computes) and printing."""
    from pcc.parser import parse_module
    from pcc.printer import print_module

    m = run_passes(small_cnn(3), "canonicalize,fold-batchnorm")
    mapping = quantize_module(m, calibration(m), error_budget=0.0)
    by_value = {id(v): s for v, s in mapping.values()}
    pent_ops = [op for op in m.main.body if op.name not in ("pent.quantize", "pent.dequantize")]
    assert pent_ops and all(op.attr("scale") == by_value[id(op.results[0])] for op in pent_ops)
    before = {op.results[0].name: op.attr("scale") for op in pent_ops}
    x = random_inputs(m, 0)
    run_passes(m, "fold-flatten,fuse,schedule,plan-memory,tile")
    fused = [op for op in m.main.body if op.name not in ("pent.quantize", "pent.dequantize")]
    assert len(fused) < len(pent_ops)  # relus and the residual add were fused
    for op in fused:
        assert op.attr("scale") == before[op.results[0].name]  # the scale of the value the op now computes
    text = print_module(m)
    assert "scale = " in text.split("pent.conv2d", 1)[1].split("\n", 1)[0]
    m2 = parse_module(text, weights=dict(m.weight_data))
    assert print_module(m2) == text
    np.testing.assert_array_equal(pent_reference.run(m2, x)[0], pent_reference.run(m, x)[0])


def test_scale_attribute_is_verified() -> None:
    from pcc.parser import parse_module
    from pcc.verifier import verify_module

    text = """module @m {
  func @main(%x: tensor<1x4xp8>) -> tensor<1x4xp8> {
    %y = pent.relu(%x) {scale = -0.5} : tensor<1x4xp8>
    return %y
  }
}
"""
    with pytest.raises(PccError, match="scale must be a positive finite number"):
        verify_module(parse_module(text))
