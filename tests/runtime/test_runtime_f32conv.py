"""CONV's float32 engine (``runtime/products.py``, loops in ``runtime/kernels_conv.py``) against Python integers.

* a single-group CONV whose bound ``max|x| * max_o sum|w_o|`` is below 2**24 runs as one float32 product, and one
  at the bound or past it does not (a spy on the float32 store counts the executions); both are exact: random
  shapes, strides, pads and bases, on both engines, and worst-case operands at 2**24 - 1 and just past it, where
  a float32 product would round;
* the base: accumulation onto any value, saturation and S, and a base past 2**62 (the int64 addition instead);
* the choice: before the direct loop for CONVs of up to ``_F32_K`` weights per output past ``_F32_DIRECT``
  multiply-accumulates, and never where ``gemm="int8"`` was asked for by name.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from runtime_helpers import (
    ACC,
    check_changing_weights,
    conv_twice,
    draw_conv,
    loop_calls,
    ref_conv,
    run_both,
    want_conv,
)

from pcc import isa
from pcc.backend.assembler import assemble
from pcc.backend.program import Instruction
from pcc.runtime import intgemm, kernels, products, tensor
from pcc.runtime.simulator import Simulator

pytestmark = pytest.mark.skipif(not kernels.available(), reason="the float32 CONV engine needs numba")
F32 = products.F32_EXACT


@pytest.fixture
def spy(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Executions of the float32 store (one per float32 CONV); no direct loops, so that small CONVs take it."""
    calls = loop_calls(monkeypatch, "f32_store")
    monkeypatch.setattr(products, "_DIRECT_MACS", 0)
    return calls


def _simulator(engine: str) -> Simulator:
    """A simulator on the int8 engine (chosen by ``auto``, for a program with a large CONV after its HALT: by
    name, ``gemm="int8"`` keeps every product on the int8 engine) or on the float engine."""
    if engine == "float":
        return Simulator(assemble("HALT\n", "case.pasm"), gemm="float", fused=True)
    if not intgemm.available():
        pytest.skip(intgemm.unavailable_reason())
    with pytest.MonkeyPatch.context() as mp:  # auto's timing (int8 against float64 BLAS) aside
        mp.setattr(intgemm, "faster", intgemm.available)
        sim = Simulator(assemble(f"HALT\n{_LARGE}", "case.pasm"), fused=True)
    assert sim.int8_gemm
    return sim


_LARGE = "CONV 0, 0, 0, 32, 32, 64, 64, 3, 3, 1, 1, 1, 1, 1, 1, 1, 0\n"  # 37.7 M MACs


def _conv(gemm: str, fields: tuple[int, ...], x: list[int], w: list[int], base: list[int], acc: int) -> Simulator:
    """CONV (C at 7, A at 5, W at 3) on a fresh simulator, twice (the second through the weight cache)."""
    return conv_twice(_simulator(gemm), fields, x, w, base, acc)


def _bound(x: list[int], w: list[int], oc: int) -> int:
    wl1 = max(sum(abs(v) for v in w[o * (len(w) // oc) : (o + 1) * (len(w) // oc)]) for o in range(oc))
    return max(abs(v) for v in x) * wl1


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.data())
def test_float32_conv_matches_python_integers(spy: list[int], data: st.DataObject) -> None:
    # activations up to the float32 bound (and past it, by one), or the compiler's 8 pents, or small
    tops = lambda wl1: [(F32 - 1) // wl1, F32 // wl1 + 1, 195312, 300]  # noqa: E731
    fields, x, w, base, acc = draw_conv(data, ic=5, k=3, hw=8, sw_min=1, tops=tops)
    oc, n_out = fields[3], len(base)
    sat, clipped = want_conv(x, w, fields, base, acc)
    for gemm in ("int8", "float"):
        before = spy[0]
        sim = _conv(gemm, fields, x, w, base, acc)
        assert sim.spad_c[7 : 7 + n_out].tolist() == sat, gemm
        assert bool(sim.flags & 32) == clipped
        assert spy[0] - before == (2 if _bound(x, w, oc) < F32 else 0), gemm


@pytest.mark.parametrize(
    ("x", "w", "floated"),
    [
        ([2**24 - 1], [1], True),  # the largest sum below the bound
        ([2**24], [1], False),  # at the bound: exact in float32, but not taken
        ([2**24 + 1], [1], False),  # float32 would round it to 2**24
        ([2**23 - 1, 2**23 - 1], [1, 1], True),  # 2**24 - 2
        ([2**23 + 1, 2**23], [1, 1], False),  # 2**24 + 1
        ([-(2**22) + 1] * 2, [2, 2], True),  # |sum| = 2**24 - 4, negative
        ([(2**24 - 1) // 10] * 5, [2, -2, 2, -2, 2], True),  # partial sums up and down
        ([2**22 + 1] * 5, [2, -2, 2, -2, 2], False),  # final sum 2**23 + 2, but partial sums past 2**24
    ],
)
def test_float32_bound(spy: list[int], x: list[int], w: list[int], floated: bool) -> None:
    fields = (1, 1, len(x), 1, 1, 1, 1, 1, 0, 0, 0, 0)  # a 1x1 CONV over len(x) channels, one output
    for gemm in ("int8", "float"):
        before = spy[0]
        sim = _conv(gemm, fields, x, w, [0], 0)
        assert sim.spad_c[7] == sum(a * b for a, b in zip(x, w, strict=True))
        assert spy[0] - before == (2 if floated else 0)


@pytest.mark.parametrize("base", [ACC - 3, -ACC + 3, ACC, 2**62 + 7, -(2**62) - 7, 2**63 - 2**25, 0])
def test_float32_base_and_saturation(spy: list[int], base: int) -> None:
    x = [1000, -7, 12, 5] * 9  # a 3x3 CONV on a 3x3 image of 4 channels, padding 1: 9 outputs of 2 channels
    rng = np.random.default_rng(1)
    w = rng.integers(-2, 3, size=2 * 36).tolist()
    fields = (3, 3, 4, 2, 3, 3, 1, 1, 1, 1, 1, 1)
    bases = [base, -base] * 9
    sat, clipped = want_conv(x, w, fields, bases, 1)
    sim = _conv("int8", fields, x, w, bases, 1)
    assert sim.spad_c[7 : 7 + 18].tolist() == sat
    assert bool(sim.flags & 32) == clipped
    assert spy[0] == 2


@pytest.mark.parametrize(
    ("ic", "floated"),
    [(16, True), (42, True), (43, False)],  # past 42 weights per output the direct loop keeps it (up to 2**18 MACs)
)
def test_float32_before_the_direct_loop(
    spy: list[int], monkeypatch: pytest.MonkeyPatch, ic: int, floated: bool
) -> None:
    """A single-group CONV of at most ``_F32_K`` weights per output and more than ``_F32_DIRECT``
    multiply-accumulates takes the float32 product where the direct loop would otherwise run; the same state as
    the numpy closures, also beside a direct-loop CONV that a straight-line run executes."""
    monkeypatch.setattr(products, "_DIRECT_MACS", 1 << 18)
    hw, oc = 24, 8
    assert products._F32_DIRECT < hw * hw * ic * oc <= products._DIRECT_MACS
    rng = np.random.default_rng(ic)
    x = rng.integers(-195312, 195313, hw * hw * ic)
    w = rng.integers(-2, 3, oc * ic)
    text = (
        f"CONV 0, 0, 0, {hw}, {hw}, {ic}, {oc}, 1, 1, 1, 1, 0, 0, 0, 0, 1, 0\n"
        f"CONV {hw * hw * oc}, 0, 0, 2, 2, 3, 2, 1, 1, 1, 1, 0, 0, 0, 0, 1, 1\n"
    )
    sim = run_both(text, setup={"A@0": x, "W@0": w})
    want = ref_conv(x.tolist(), w.tolist(), hw, hw, ic, oc, 1, 1, 1, 1, 0, 0, 0, 0)
    assert sim.spad_c[: hw * hw * oc].tolist() == want
    assert spy[0] == (1 if floated else 0)


def test_int8_by_name_keeps_the_int8_engine(spy: list[int]) -> None:
    if not intgemm.available():
        pytest.skip(intgemm.unavailable_reason())
    sim = Simulator(assemble("HALT\n", "case.pasm"), gemm="int8", fused=True)
    x, w = [5, -3, 2, 7], [1, 2, -1, 0]
    sim.spad_a[:4] = x
    sim.spad_w[:4] = w
    args = (0, 0, 0, 1, 1, 4, 1, 1, 1, 1, 1, 0, 0, 0, 0, 1, 0)  # a 1x1 CONV over 4 channels, one output
    tensor.build(sim, 0, Instruction(op=isa.Op.CONV, args=args, addr=0, line=None))()
    assert sim.spad_c[0] == 5 - 6 - 2 and spy[0] == 0


def test_int8_engine_runs_float32_products_on_one_blas_thread(monkeypatch: pytest.MonkeyPatch, blas_spy) -> None:  # noqa: ANN001
    """On the int8 engine too, a program with float32 CONVs runs BLAS on one thread; the count is restored."""
    control, seen = blas_spy
    text = "CONV 0, 0, 0, 32, 32, 3, 16, 3, 3, 2, 2, 1, 1, 0, 1, 1, 0\nHALT\n"  # a stem: K = 27
    rng = np.random.default_rng(0)
    x, w = rng.integers(-195312, 195313, 32 * 32 * 3), rng.integers(-2, 3, 16 * 27)
    if not intgemm.available():
        pytest.skip(intgemm.unavailable_reason())
    monkeypatch.setattr(intgemm, "faster", intgemm.available)
    sim = Simulator(assemble(text + _LARGE, "case.pasm"), fused=True)
    sim.spad_a[: x.size] = x
    sim.spad_w[: w.size] = w
    sim.run()
    assert sim.int8_gemm and seen and set(seen) == {1}
    assert control.get_num_threads() == 2
    want = ref_conv(x.tolist(), w.tolist(), 32, 32, 3, 16, 3, 3, 2, 2, 1, 1, 0, 1)
    assert sim.spad_c[: len(want)].tolist() == want


def test_float32_weights_that_change_between_runs(spy: list[int]) -> None:
    """New pents in W on every execution: the cached float32 weights are never stale, and once the weights keep
    changing the CONV stops caching them."""
    rng = np.random.default_rng(3)
    fields = (5, 6, 3, 4, 3, 3, 2, 1, 1, 1, 0, 1)
    check_changing_weights(_simulator("float"), fields, rng.integers(-1000, 1001, 5 * 6 * 3).tolist(), rng)
    assert spy[0] == 6
