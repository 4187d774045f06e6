"""CONV on torch's float32 convolution (``runtime/products.py`` ``conv_torch``; ``runtime/intgemm.py`` ``f32_conv``;
the image and the store in ``runtime/kernels_conv.py``) against Python integers and the ISA's plain executor.

* the cut of the padded image, ``x = hi * 2**s + lo``: both parts reproduce x, each passes the float32 bound, s is
  the smallest that does, and where none does nothing is written;
* a strided CONV of few input channels past the float32 bound takes it (a spy on its store) and matches the
  executor for random shapes, strides, pads, bases and saturation, with the bias broadcast it takes the place
  of, and with weights that change between runs;
* it is not taken below the bound (the float32 patch matrix is), nor where oneDNN may round float32 more
  coarsely (``fp32_precision``), nor where the check of the kernel failed; the values stay exact.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from runtime_helpers import (
    assert_same_state,
    check_changing_weights,
    conv_twice,
    draw_conv,
    loop_calls,
    preset,
    ref_conv,
    run_ref,
    want_conv,
)

from pcc.backend.assembler import assemble
from pcc.runtime import intgemm, kernels, products
from pcc.runtime.simulator import Simulator

pytestmark = pytest.mark.skipif(not kernels.available(), reason="the float32 CONV engines need numba")
F32 = products.F32_EXACT
_LARGE = "CONV 0, 0, 0, 32, 32, 64, 64, 3, 3, 1, 1, 1, 1, 1, 1, 1, 0\n"  # 37.7 M MACs: auto picks the int8 engine


@pytest.fixture
def spy(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Executions of torch's convolution's store; every size takes it (no direct loops, no size threshold)."""
    if not intgemm.available() or not intgemm.conv_exact():
        pytest.skip("torch's int8 product or float32 convolution is not usable here")
    calls = loop_calls(monkeypatch, "f32_store_parts")
    monkeypatch.setattr(products, "_DIRECT_MACS", 0)
    monkeypatch.setattr(products, "_TORCH_MACS", 0)
    monkeypatch.setattr(intgemm, "faster", intgemm.available)
    return calls


def _simulator(text: str = "HALT\n") -> Simulator:
    sim = Simulator(assemble(f"{text}\n{_LARGE}", "case.pasm"), fused=True)
    assert sim.int8_gemm
    return sim


def _conv(fields: tuple[int, ...], x: list[int], w: list[int], base: list[int], acc: int) -> Simulator:
    """CONV (C at 7, A at 5, W at 3) on a fresh simulator, twice (the second through the weight cache)."""
    return conv_twice(_simulator(), fields, x, w, base, acc)


def _wl1(w: list[int], oc: int) -> int:
    kk = len(w) // oc
    return max(sum(abs(v) for v in w[o * kk : (o + 1) * kk]) for o in range(oc))


def _passes(amax: int, wl1: int) -> bool:
    return amax * wl1 < F32


def _image(x: np.ndarray, wl1: int, pads: tuple[int, int, int, int]) -> tuple[int, np.ndarray]:
    ih, iw, ic = x.shape
    pt, pl, pb, pr = pads
    hp, wp = ih + pt + pb, iw + pl + pr
    planes = np.full((2, hp * wp * ic), 7.0, np.float32)  # not zero: what the kernel writes shows
    s = int(kernels.loop("f32_image")(x.reshape(-1), ih, iw, ic, pt, pl, hp, wp, wl1, F32, planes))
    return s, planes.reshape(2, hp, wp, ic)


@pytest.mark.parametrize(
    ("amax", "wl1"),
    [(195312, 294), (195312, 1), (F32 - 1, 1), (F32, 1), (2**30, 2), (2**34, 8), (2**40, 64), (2**47, 2), (10**6, 0)],
)
def test_image_cut_in_two_exact_parts(amax: int, wl1: int) -> None:
    if not kernels.available():
        pytest.skip("numba")
    rng = np.random.default_rng(amax % 1000 + wl1)
    x = rng.integers(-amax, amax + 1, size=(5, 4, 3))
    x[0, 0, 0], x[1, 1, 1] = amax, -amax
    pads = (1, 2, 0, 1)
    s, planes = _image(x, wl1, pads)
    half = lambda k: 1 << (k - 1)  # noqa: E731
    fits = lambda k: half(k) * wl1 < F32 and ((amax + half(k)) >> k) * wl1 < F32  # noqa: E731
    if _passes(amax, wl1):
        assert s == 0
    elif s < 0:  # nothing written, and no cut works
        assert (planes == 7).all() and not any(fits(k) for k in range(1, 41))
        return
    else:
        assert fits(s) and (s == 1 or not fits(s - 1))
    inner = planes[:, 1 : 1 + 5, 2 : 2 + 4]
    hi, lo = inner[0].astype(np.int64), inner[1].astype(np.int64)
    got = hi if s == 0 else hi * 2**s + lo
    assert np.array_equal(got, x)
    if s:
        assert np.abs(lo).max() * wl1 < F32 and np.abs(hi).max() * wl1 < F32
    for j in range(2 if s else 1):  # the padding is zero
        p = planes[j].copy()
        p[1 : 1 + 5, 2 : 2 + 4] = 0
        assert not p.any()


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.data())
def test_torch_conv_matches_python_integers(spy: list[int], data: st.DataObject) -> None:
    # activations past the float32 bound (8 pents, or just past it), within it, or past two parts
    tops = lambda wl1: [195312, F32 // wl1 + 1, 300, 2**41]  # noqa: E731
    fields, x, w, base, acc = draw_conv(data, ic=4, k=7, hw=10, sw_min=2, tops=tops, no_1x1=True)
    oc, sh, sw, n_out = fields[3], fields[6], fields[7], len(base)
    sat, clipped = want_conv(x, w, fields, base, acc)
    before = spy[0]  # the fixture's count runs over every example
    sim = _conv(fields, x, w, base, acc)
    assert sim.spad_c[7 : 7 + n_out].tolist() == sat
    assert bool(sim.flags & 32) == clipped
    amax = max(abs(v) for v in x)
    if _passes(amax, _wl1(w, oc)) or min(sh, sw) == 1:
        assert spy[0] == before  # below the bound: the float32 patch matrix; at stride 1: the int8 engine
    elif amax <= 4 * 195312:
        assert spy[0] == before + 2


_DATA = ".data\nb: .word " + ", ".join(str(v) for v in range(-8, 8)) + "\n.text\n"
_STEM = "CONV 0, 0, 0, 20, 18, 3, 16, 7, 7, 2, 2, 3, 3, 2, 3, 1, 1"  # a ResNet stem's shape on a small image
_BCAST = "TLOADC 0, [P0 + b], 80, 16, 0"  # its bias row over the 10x8 outputs


@pytest.mark.parametrize("top", [195312, 2**24, 300])
def test_bias_broadcast_and_stem_match_the_executor(spy: list[int], top: int) -> None:
    rng = np.random.default_rng(top)
    setup = {"A@0": rng.integers(-top, top + 1, 20 * 18 * 3), "W@0": rng.integers(-2, 3, 16 * 147)}
    body = f"{_DATA}    {_BCAST}\n    {_STEM}\n    HALT\n"
    sim = _simulator(body)
    preset(sim, setup)
    sim.run(1000)
    assert_same_state(sim, run_ref(body, setup=setup), "stem")
    assert spy[0] == (0 if top == 300 else 1)


def test_weights_that_change_between_runs(spy: list[int]) -> None:
    rng = np.random.default_rng(5)
    fields = (9, 8, 3, 4, 5, 5, 2, 2, 2, 2, 1, 2)
    check_changing_weights(_simulator(), fields, rng.integers(-195312, 195313, 9 * 8 * 3).tolist(), rng)
    assert spy[0] == 6


def test_coarser_float32_precision_is_declined(spy: list[int]) -> None:
    """With oneDNN allowed to round float32 convolutions through bfloat16, torch's convolution is not used and
    the CONV stays exact on the int8 engine."""
    import torch

    conv = torch.backends.mkldnn.conv
    before = conv.fp32_precision
    rng = np.random.default_rng(9)
    fields = (12, 12, 3, 8, 7, 7, 2, 2, 3, 3, 3, 3)
    x, w = rng.integers(-195312, 195313, 12 * 12 * 3).tolist(), rng.integers(-2, 3, 8 * 147).tolist()
    try:
        conv.fp32_precision = "bf16"
        sim = _conv(fields, x, w, [0] * 288, 0)
    finally:
        conv.fp32_precision = before
    assert sim.spad_c[7 : 7 + 288].tolist() == ref_conv(x, w, *fields)
    assert spy[0] == 0


def test_a_failed_kernel_check_keeps_the_other_engines(spy: list[int], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(intgemm._state, "conv", False)
    rng = np.random.default_rng(2)
    fields = (10, 10, 3, 4, 3, 3, 2, 2, 1, 1, 1, 1)
    x, w = rng.integers(-(2**22), 2**22, 300).tolist(), rng.integers(-2, 3, 4 * 27).tolist()
    sim = _conv(fields, x, w, [0] * 100, 0)
    assert sim.spad_c[7 : 7 + 100].tolist() == ref_conv(x, w, *fields)
    assert spy[0] == 0


def test_the_kernel_check_passes_here() -> None:
    """torch's float32 convolution gives the exact integers on this machine (else the engine is off: the other
    tests skip)."""
    if not intgemm.available():
        pytest.skip(intgemm.unavailable_reason())
    assert intgemm.conv_exact()
