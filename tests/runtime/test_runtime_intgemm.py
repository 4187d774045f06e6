"""The int8 GEMM engine (``runtime/intgemm.py``) and the simulator's products through it, against Python integers.

* balanced base-256 digits: hand-worked digit counts, and ``(x + OFF) ^ OFF`` read back as digits for any value;
* ``intgemm.dot`` and ``recombine`` (int32 and int64 Horner) against exact object-dtype products;
* CONV, MATMUL and MATVEC with ``gemm="int8"``: random shapes, strides, pads, accumulation onto any base,
  saturation and S, activations up to the 16-pent word (5 digits), against Python integers and against
  ``gemm="float"``;
* the choice of engine: ``auto`` takes int8 only for programs with a product of at least ``MIN_MACS``.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from runtime_helpers import ACC, W, ref_conv

from pcc import isa
from pcc.backend.assembler import assemble
from pcc.backend.program import Instruction
from pcc.diagnostics import PccError
from pcc.runtime import intgemm, tensor
from pcc.runtime.simulator import Simulator

needs_int8 = pytest.mark.skipif(not intgemm.available(), reason=f"int8 GEMM: {intgemm.unavailable_reason()}")


# ---- digits --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("amax", "n"),
    [(0, 1), (127, 1), (128, 2), (32639, 2), (32640, 3), (195312, 3), (8355711, 3), (8355712, 4), (W, 5)],
)
def test_digits_for(amax: int, n: int) -> None:
    # n digits of -128..127 reach 127, 127 + 127*256 = 32639, 32639 + 127*65536 = 8355711, ... (and -128, -32896, ...)
    assert intgemm.digits_for(amax) == n


def test_offset() -> None:
    assert [intgemm.offset(n) for n in (1, 2, 3)] == [0x80, 0x8080, 0x808080]


EDGES = [127, 128, 32639, 32640, 32896, 8355711, 8355712, 8421504, W]


@given(st.lists(st.integers(-W, W) | st.sampled_from(EDGES + [-e for e in EDGES]), min_size=1, max_size=30))
def test_xor_bytes_are_the_balanced_digits(values: list[int]) -> None:
    x = np.array(values, dtype=np.int64)
    n = intgemm.digits_for(max(abs(v) for v in values))
    off = intgemm.offset(n)
    u = (x + off) ^ off
    d = u.view(np.int8).reshape(-1, 8)[:, :n].astype(np.int64)
    assert (d >= -128).all() and (d <= 127).all()
    back = [sum(int(d[i, j]) * 256**j for j in range(n)) for i in range(len(values))]
    assert back == values
    assert (u.view(np.int8).reshape(-1, 8)[:, n:] == 0).all()  # nothing above the digits


# ---- dot and recombine ---------------------------------------------------------------------------------------


@needs_int8
@settings(max_examples=60)
@given(st.data())
def test_dot_matches_python_integers(data: st.DataObject) -> None:
    m, k, n = data.draw(st.integers(1, 6)), data.draw(st.integers(1, 40)), data.draw(st.integers(1, 6))
    big = data.draw(st.sampled_from([3, 127, 128, 40000, 195312, 8355712, W]))
    edges = st.sampled_from([v for e in EDGES for v in (e, -e) if e <= big] or [0])
    values = st.lists(st.integers(-big, big) | edges, min_size=m * k, max_size=m * k)
    x = np.array(data.draw(values), np.int64).reshape(m, k)
    w = np.array(data.draw(st.lists(st.integers(-2, 2), min_size=k * n, max_size=k * n)), np.int8).reshape(k, n)
    amax = max(int(np.abs(x).max()), 1)
    wl1 = int(np.abs(w.astype(np.int64)).sum(axis=0).max())
    want = (x.astype(object) @ w.astype(object)).tolist()
    assert intgemm.dot(x, w, amax, wl1).tolist() == want
    assert intgemm.dot(x, np.ascontiguousarray(w.T).T, amax, wl1).tolist() == want  # a transposed operand


@pytest.mark.parametrize("bound", [10, 2**31])  # the int32 Horner steps, then the int64 ones
@pytest.mark.parametrize("add", [False, True])
def test_recombine(bound: int, add: bool) -> None:
    rng = np.random.default_rng(3)
    r = rng.integers(-1000, 1000, (3, 4, 5)).astype(np.int32)
    want = r[0].astype(np.int64) + 256 * r[1].astype(np.int64) + 65536 * r[2].astype(np.int64)
    out = np.full((4, 5), 7, np.int64)
    intgemm.recombine(r.copy(), out, bound, 1000, add)
    np.testing.assert_array_equal(out, want + 7 if add else want)


# ---- the simulator's products ---------------------------------------------------------------------------------


def _sim(gemm: str) -> Simulator:
    return Simulator(assemble("HALT\n", "case.pasm"), gemm=gemm)


def _build(sim: Simulator, op: isa.Op, *args: int):  # noqa: ANN202
    return tensor.build(sim, 0, Instruction(op=op, args=tuple(args), addr=0, line=None))


@needs_int8
@settings(max_examples=80)
@given(st.data())
def test_conv_int8_matches_python_integers(data: st.DataObject) -> None:
    ic, oc = data.draw(st.integers(1, 5)), data.draw(st.integers(1, 5))
    kh, kw = data.draw(st.integers(1, 3)), data.draw(st.integers(1, 3))
    ih, iw = data.draw(st.integers(kh, 8)), data.draw(st.integers(kw, 8))
    sh, sw = data.draw(st.sampled_from([1, 1, 2, 3])), data.draw(st.integers(1, 3))
    pt, pb = data.draw(st.integers(0, kh - 1)), data.draw(st.integers(0, kh - 1))
    pl, pr = data.draw(st.integers(0, kw - 1)), data.draw(st.integers(0, kw - 1))
    big = data.draw(st.sampled_from([2, 128, 195312, 8355712, W]))
    edges = st.sampled_from([v for e in EDGES for v in (e, -e) if e <= big] or [0])
    x = data.draw(st.lists(st.integers(-big, big) | edges, min_size=ih * iw * ic, max_size=ih * iw * ic))
    w = data.draw(st.lists(st.integers(-2, 2), min_size=oc * kh * kw * ic, max_size=oc * kh * kw * ic))
    acc = data.draw(st.integers(0, 1))
    oh, ow = isa.conv_out(ih, pt, pb, kh, sh), isa.conv_out(iw, pl, pr, kw, sw)
    base = data.draw(
        st.lists(st.integers(-ACC, ACC) | st.integers(-99, 99), min_size=oh * ow * oc, max_size=oh * ow * oc)
    )
    want = ref_conv(x, w, ih, iw, ic, oc, kh, kw, sh, sw, pt, pl, pb, pr)
    if acc:
        want = [a + b for a, b in zip(want, base, strict=True)]
    sat = [max(-ACC, min(ACC, v)) for v in want]
    for gemm in ("int8", "float"):
        sim = _sim(gemm)
        sim.spad_a[5 : 5 + len(x)] = x
        sim.spad_w[3 : 3 + len(w)] = w
        sim.spad_c[7 : 7 + len(base)] = base
        fn = _build(sim, isa.Op.CONV, 7, 5, 3, ih, iw, ic, oc, kh, kw, sh, sw, pt, pl, pb, pr, 1, acc)
        for _ in range(2):  # the second run goes through the weight cache and the reused buffers
            sim.spad_c[7 : 7 + len(base)] = base
            fn()
            assert sim.spad_c[7 : 7 + len(sat)].tolist() == sat, gemm
            assert bool(sim.flags & 32) == (sat != want)


@needs_int8
@settings(max_examples=60)
@given(st.data())
def test_matmul_and_matvec_int8_match_python_integers(data: st.DataObject) -> None:
    m, n, k = data.draw(st.integers(1, 5)), data.draw(st.integers(1, 5)), data.draw(st.integers(1, 30))
    big = data.draw(st.sampled_from([2, 40000, W]))
    x = data.draw(st.lists(st.integers(-big, big), min_size=m * k, max_size=m * k))
    w = data.draw(st.lists(st.integers(-2, 2), min_size=n * k, max_size=n * k))
    acc = data.draw(st.integers(0, 1))
    base = data.draw(st.lists(st.integers(-ACC, ACC) | st.integers(-9, 9), min_size=m * n, max_size=m * n))
    xs, ws = np.array(x, dtype=object).reshape(m, k), np.array(w, dtype=object).reshape(n, k)
    for op, args, rows in (
        (isa.Op.MATMUL, (0, 0, 0, m, n, k, acc), m),
        (isa.Op.MATVEC, (0, 0, 0, n, k, acc), 1),
    ):
        want = (xs[:rows] @ ws.T).reshape(-1).tolist()
        if acc:
            want = [a + b for a, b in zip(want, base, strict=False)]
        sat = [max(-ACC, min(ACC, v)) for v in want]
        sim = _sim("int8")
        sim.spad_a[: len(x)] = x
        sim.spad_w[: len(w)] = w
        sim.spad_c[: len(base)] = base
        _build(sim, op, *args)()
        assert sim.spad_c[: len(sat)].tolist() == sat
        assert bool(sim.flags & 32) == (sat != want)


# ---- choosing the engine ---------------------------------------------------------------------------------------


def _conv_program(ih: int, ic: int, oc: int) -> str:
    return f"CONV 0, 0, 0, {ih}, {ih}, {ic}, {oc}, 3, 3, 1, 1, 1, 1, 1, 1, 1, 0\nHALT\n"


def test_auto_takes_int8_only_for_large_products() -> None:
    small = Simulator(assemble(_conv_program(4, 2, 2), "s.pasm"))
    assert small.gemm == "auto" and not small.int8_gemm  # 4*4*2*18 MACs: float64 BLAS, torch not needed
    large = Simulator(assemble(_conv_program(32, 64, 64), "l.pasm"))  # 32*32*64*576 = 37.7 M MACs
    assert large.int8_gemm == intgemm.faster()  # exact here, and faster than float64 BLAS
    assert not Simulator(assemble(_conv_program(32, 64, 64), "l.pasm"), gemm="float").int8_gemm


def test_unknown_gemm_is_an_error() -> None:
    with pytest.raises(PccError, match="gemm must be one of auto, int8, float"):
        Simulator(assemble("HALT\n", "h.pasm"), gemm="fast")


def test_int8_without_torch_is_an_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(intgemm._state, "ok", False)
    monkeypatch.setitem(intgemm._state, "why", "torch is not installed")
    with pytest.raises(PccError, match="gemm 'int8' is not available: torch is not installed"):
        Simulator(assemble("HALT\n", "h.pasm"), gemm="int8")
    assert not Simulator(assemble(_conv_program(32, 64, 64), "l.pasm")).int8_gemm  # auto falls back


@pytest.mark.parametrize("size", [1 << 16, (1 << 16) + 3, 3 << 20])  # compared as uint64 words, or bytes
def test_content_cache_sees_any_change_in_a_large_source(size: int) -> None:
    """Large sources are compared in place as words: one changed pent anywhere, or a new shape, is a miss."""
    cache = tensor.ContentCache(limit=1 << 30)
    src = np.random.default_rng(0).integers(-2, 3, size).astype(np.int8)
    calls = []

    def derive(v: np.ndarray) -> int:
        calls.append(1)
        return int(v.astype(np.int64).sum())

    assert cache.lookup(("w", 0), src, derive) == int(src.sum(dtype=np.int64))
    assert cache.lookup(("w", 0), src, derive) == int(src.sum(dtype=np.int64)) and len(calls) == 1
    for pos in (0, size // 2, size - 1):
        src[pos] = 2 if src[pos] != 2 else -2
        assert cache.lookup(("w", 0), src, derive) == int(src.sum(dtype=np.int64))
    assert len(calls) == 4
    cache.lookup(("w", 0), src[:-8], derive)  # a shorter source under the same key
    cache.lookup(("w", 0), src[:64], derive)  # small: compared as bytes
    assert cache.lookup(("w", 0), src[:64], derive) == int(src[:64].sum(dtype=np.int64)) and len(calls) == 6
