"""The simulator's fast paths give exactly what the plain paths give.

* ``isa.mul_shift_round``: the int64 fast path (one common shift, or per-element shifts) against the 31-bit-halves
  path and a Python-integer reference, on random and boundary operands (products right at 2**63);
* ``tensor.decode_words`` against ``pentary.to_digits``;
* the TLOADW decode cache: a write over the weights (scalar STORE, TSTORE, a direct write to ``Simulator.mem``)
  between two TLOADWs is seen by the second;
* CONV through the row-band and weights-first matrix products, and POOL tap by tap, against plain references;
* DMA rows through strided views (negative, zero and disjoint strides), one closure over many base values;
* CONV's and MATMUL's float64 weight caches, and REQUANTC / EADD / EMUL written in place (REQUANTC's parameters
  changing between runs), against Python integers;
* the input quantisation of the I/O boundary against ``pent_reference.quantize_input``, and ``run_program``'s
  short way for one sample of real arrays (straight into memory and out) against its general path;
* ``tensor_base._absmax`` (one abs and one reduction) against Python integers, ``INT64_MIN`` included;
* runs of TLOAD / TLOADC as one gather against the loads in order (and their faults against the loads one by one),
  and REQUANTC below and above ``tensor_base._SMALL`` elements.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from runtime_helpers import ACC, W, preset, ref_conv, ref_pool, run_asm

from pcc import isa
from pcc.backend.assembler import assemble
from pcc.pentary import to_digits, word_max
from pcc.runtime import dma, intgemm, isa_ref, kernels, products, tensor, tensor_base
from pcc.runtime.simulator import Fault, Simulator, run_program

MULT_MAX = isa.MULT_MAX
SETTINGS = settings(max_examples=150, deadline=None)


ref_round = isa_ref.mul_shift_round  # one value, in Python integers


def ref_msr(x: np.ndarray, m: np.ndarray, s: np.ndarray, cap: int) -> list:
    xb, mb, sb = np.broadcast_arrays(x, np.broadcast_to(m, x.shape), np.broadcast_to(s, x.shape))
    return [ref_round(int(a), int(b), int(c), cap) for a, b, c in zip(xb.flat, mb.flat, sb.flat, strict=True)]


def wide(x: np.ndarray, m: np.ndarray | int, s: np.ndarray | int, cap: int) -> np.ndarray:
    """The 31-bit-halves path, whatever the operands."""
    x = np.asarray(x, dtype=np.int64)
    mb = np.broadcast_to(np.asarray(m, dtype=np.int64), x.shape)
    sb = np.broadcast_to(np.asarray(s, dtype=np.int64), x.shape)
    return isa._mul_shift_round_wide(x, mb, sb, cap)


class CountWide:
    """Counts the calls that fall back to the 31-bit-halves path."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.calls = 0
        orig = isa._mul_shift_round_wide

        def counted(*a: object) -> np.ndarray:
            self.calls += 1
            return orig(*a)

        monkeypatch.setattr(isa, "_mul_shift_round_wide", counted)


# ---- mul_shift_round -------------------------------------------------------------------------------------

xs = st.one_of(
    st.integers(-9, 9),
    st.integers(-(2**20), 2**20),
    st.integers(-(2**40), 2**40),
    st.integers(-ACC, ACC),
    st.sampled_from([0, 1, -1, ACC, -ACC, 2**31 - 1, -(2**31), 2**31]),
)
mults = st.one_of(st.integers(0, MULT_MAX), st.sampled_from([0, 1, MULT_MAX, 2**28]))
shifts = st.one_of(st.integers(0, 62), st.sampled_from([0, 1, 31, 32, 62]))
caps = st.sampled_from([ACC, W, (5**8 - 1) // 2, 2, 2**62 - 1])


@SETTINGS
@given(st.data())
def test_mul_shift_round_scalar_operands(data: st.DataObject) -> None:
    x = np.array(data.draw(st.lists(xs, min_size=1, max_size=40)), dtype=np.int64)
    m, s, cap = data.draw(mults), data.draw(shifts), data.draw(caps)
    got = isa.mul_shift_round(x, m, s, cap)
    assert got.dtype == np.int64 and got.shape == x.shape
    assert got.tolist() == wide(x, m, s, cap).tolist() == ref_msr(x, np.int64(m), np.int64(s), cap)


@SETTINGS
@given(st.data())
def test_mul_shift_round_per_channel(data: st.DataObject) -> None:
    rows, cols = data.draw(st.integers(1, 6)), data.draw(st.integers(1, 6))
    x = np.array(data.draw(st.lists(xs, min_size=rows * cols, max_size=rows * cols)), dtype=np.int64)
    x = x.reshape(rows, cols)
    m = np.array(data.draw(st.lists(mults, min_size=cols, max_size=cols)), dtype=np.int64)[None, :]
    base = data.draw(st.integers(0, 62))
    spread = data.draw(st.sampled_from([0, 1, 3, 62]))  # one common shift is used when it cannot overflow
    s = np.array(data.draw(st.lists(st.integers(base, min(62, base + spread)), min_size=cols, max_size=cols)))[None]
    cap = data.draw(caps)
    got = isa.mul_shift_round(x, m, s, cap)
    assert got.tolist() == wide(x, m, s, cap).tolist()
    assert got.reshape(-1).tolist() == ref_msr(x, m, s, cap)


@SETTINGS
@given(st.data())
def test_mul_shift_round_small_operands_take_the_fast_path(data: st.DataObject) -> None:
    """Accumulator-sized values (the REQUANTC case): the fast path runs and agrees with the reference."""
    n = data.draw(st.integers(1, 30))
    x = np.array(data.draw(st.lists(st.integers(-(2**31), 2**31), min_size=n, max_size=n)), dtype=np.int64)
    m = data.draw(st.integers(0, MULT_MAX))
    s = np.array(data.draw(st.lists(st.integers(0, 62), min_size=n, max_size=n)), dtype=np.int64)
    orig = isa._mul_shift_round_wide
    try:
        isa._mul_shift_round_wide = None  # would raise if called
        got = isa.mul_shift_round(x, m, s, ACC)
    finally:
        isa._mul_shift_round_wide = orig
    assert got.tolist() == ref_msr(x, np.int64(m), s, ACC)


@pytest.mark.parametrize("delta", [-2, -1, 0, 1])
@pytest.mark.parametrize("shift", [0, 1, 2, 33, 62])
@pytest.mark.parametrize("mult", [MULT_MAX, 3, 1])
def test_mul_shift_round_at_the_overflow_bound(
    monkeypatch: pytest.MonkeyPatch, mult: int, shift: int, delta: int
) -> None:
    """max|x| * mult + 2**(shift-1) just below, at and above 2**63: the fast path exactly when it cannot overflow."""
    half = (1 << shift) >> 1
    a = ((1 << 63) - half) // mult + delta  # a * mult + half crosses 2**63 between delta = -1 and 0 or 1
    if a > ACC:
        a = ACC
    count = CountWide(monkeypatch)
    for sign in (1, -1):
        x = np.array([sign * a, sign * (a - 1), 0, -sign * 7, sign * a // 3], dtype=np.int64)
        got = isa.mul_shift_round(x, mult, shift, ACC)
        assert got.tolist() == ref_msr(x, np.int64(mult), np.int64(shift), ACC)
        per_channel = isa.mul_shift_round(x[None, :], np.full((1, 5), mult), np.full((1, 5), shift), ACC)
        assert per_channel[0].tolist() == got.tolist()
    fits = a * mult + half < 1 << 63
    assert (count.calls == 0) == fits


def test_mul_shift_round_common_shift_boundary(monkeypatch: pytest.MonkeyPatch) -> None:
    """Shifts 30 and 31 in one row: one common shift doubles the first channel's multiplier, so the products it
    forms reach 2**63 before the per-element ones do; each path is taken only where it cannot overflow."""
    m = np.array([[MULT_MAX, MULT_MAX]])
    s = np.array([[30, 31]])
    half = 1 << 30
    common = ((1 << 63) - half - 1) // (2 * MULT_MAX)  # the largest |x| for one common shift
    per_element = ((1 << 63) - half - 1) // MULT_MAX  # the largest |x| for per-element shifts
    count = CountWide(monkeypatch)
    for a in (common - 1, common, common + 1, per_element - 1, per_element):
        x = np.array([[a, -a], [-a, a - 1], [a // 2, -(a // 3)]], dtype=np.int64)
        assert isa.mul_shift_round(x, m, s, ACC).reshape(-1).tolist() == ref_msr(x, m, s, ACC)
    assert count.calls == 0
    x = np.array([[per_element + 1, 0]], dtype=np.int64)
    assert isa.mul_shift_round(x, m, s, ACC).reshape(-1).tolist() == ref_msr(x, m, s, ACC)
    assert count.calls == 1


def test_mul_shift_round_keeps_its_input_and_shapes() -> None:
    x = np.array([[5, -5, 6], [-6, 7, 0]], dtype=np.int64)
    keep = x.copy()
    out = isa.mul_shift_round(x, np.array([[1, 1, 1]]), np.array([[1, 1, 1]]), ACC)
    assert out.tolist() == [[3, -3, 3], [-3, 4, 0]] and np.array_equal(x, keep)
    assert isa.mul_shift_round(np.int64(-5), 1, 1, ACC).tolist() == -3  # 0-d input
    assert isa.mul_shift_round(np.zeros(0, dtype=np.int64), 3, 2, ACC).shape == (0,)
    spread = isa.mul_shift_round(np.zeros((2, 2), dtype=np.int64), np.array([[MULT_MAX] * 2]), np.array([[0, 62]]), 5)
    assert spread.tolist() == [[0, 0], [0, 0]]
    x = np.array([[1, -1, 3, -3]], dtype=np.int64)
    got = isa.mul_shift_round(x, np.array([[MULT_MAX] * 4]), np.array([[0, 62, 0, 62]]), ACC)
    assert got.tolist() == [[MULT_MAX, 0, 3 * MULT_MAX, 0]]
    with pytest.raises(ValueError):
        isa.mul_shift_round(np.arange(3), np.arange(4), 1, ACC)  # mult must broadcast to x's shape


@SETTINGS
@given(st.lists(xs, min_size=1, max_size=20), mults, shifts, st.integers(1, 16))
def test_requantize_matches_reference(x: list[int], m: int, s: int, pents: int) -> None:
    cap = (5**pents - 1) // 2
    got, clipped = isa.requantize(np.array(x, dtype=np.int64), m, s, pents)
    exact = [ref_round(v, m, s, ACC) for v in x]
    assert got.tolist() == [max(-cap, min(cap, v)) for v in exact]
    assert clipped == any(abs(v) > cap for v in exact)


# ---- weight decoding and its cache ----------------------------------------------------------------------


@SETTINGS
@given(st.lists(st.one_of(st.integers(-W, W), st.sampled_from([W, -W, 0, 1, -1, 2, -2, 3, -3])), max_size=50))
def test_decode_words_matches_to_digits(words: list[int]) -> None:
    v = np.array(words, dtype=np.int64)
    got = tensor.decode_words(v)
    assert got.dtype == np.int8
    assert got.tolist() == to_digits(v, 16).reshape(-1).tolist()


def test_decode_words_rejects_out_of_range() -> None:
    with pytest.raises(ValueError, match="out of range"):
        tensor.decode_words(np.array([0, W + 1]))


def pents_of(words: list[int]) -> list[int]:
    return to_digits(np.array(words, dtype=np.int64), 16).reshape(-1).tolist()


def test_tloadw_sees_a_scalar_store_over_its_words() -> None:
    sim = run_asm(
        """.data
w: .word 7, -8, 9
.text
    TLOADW 0, [P0 + w], 48
    MOVI P1, 1234
    MOVI P3, w
    STORE P1, [P3 + 1]
    TLOADW 100, [P0 + w], 48"""
    )
    assert sim.spad_w[0:48].tolist() == pents_of([7, -8, 9])
    assert sim.spad_w[100:148].tolist() == pents_of([7, 1234, 9])


def test_tloadw_sees_a_dma_store_over_its_words() -> None:
    sim = run_asm(
        """.data
w: .word 7, -8, 9, 10
.text
    TLOADW 0, [P0 + w], 64
    MOVI P3, w
    TSTORE [P3 + 2], 0, 1, 2, 2
    TLOADW 100, [P0 + w], 64""",
        setup={"A@0": [-600, 555]},
    )
    assert sim.spad_w[0:64].tolist() == pents_of([7, -8, 9, 10])
    assert sim.spad_w[100:164].tolist() == pents_of([7, -8, -600, 555])


@pytest.mark.parametrize("fused", [False, True])
def test_tloadw_cache_follows_memory_between_runs(fused: bool) -> None:
    """Both the shared cache (numpy path) and the compiled loop's own copy follow the words in memory."""
    if fused and not kernels.available():
        pytest.skip("numba is not installed")
    prog = assemble(
        """.data
w: .word 7, -8
.text
    TLOADW 0, [P0 + w], 32
    HALT
""",
        "case.pasm",
    )
    sim = Simulator(prog, fused=fused)
    sim.run()
    assert sim.spad_w[0:32].tolist() == pents_of([7, -8])
    addr = prog.symbol("w").addr
    for words in ([7, 11], [7, 11], [-W, W], [7, -8], [W + 1, 0]):  # a direct write to memory, then a run
        sim.reset()
        sim.mem[addr : addr + 2] = words
        if words[0] > W:  # not a 16-pent word: the decoder refuses it
            with pytest.raises(Exception, match="16"):
                sim.run()
            continue
        sim.run()
        assert sim.spad_w[0:32].tolist() == pents_of(words)
    if not fused:
        assert sim.decoded.hits == 1 and sim.decoded.misses == 5  # the refused word counts as a miss


def test_tloadw_loop_over_changing_memory() -> None:
    """One TLOADW in a loop, reading words that a STORE changes each iteration."""
    sim = run_asm(
        """.data
w: .word 1
.text
    MOVI P2, 3
loop:
    TLOADW 0, [P0 + w], 16
    LOAD P1, [P0 + w]
    ADDI P1, P1, 5
    STORE P1, [P0 + w]
    ADDI P2, P2, -1
    BNE P2, loop"""
    )
    assert sim.spad_w[0:16].tolist() == pents_of([11])


def test_content_cache_limit() -> None:
    cache = tensor.ContentCache(limit=100)
    src = np.arange(10, dtype=np.int64)
    calls = []

    def derive(v: np.ndarray) -> np.ndarray:
        calls.append(1)
        return v.astype(np.int8)

    for _ in range(3):
        assert cache.lookup(("k", 0), src, derive).tolist() == list(range(10))
    assert len(calls) == 1
    src[3] = 99  # the source changed: derived again
    assert cache.lookup(("k", 0), src, derive)[3] == 99 and len(calls) == 2
    big = np.zeros(200, dtype=np.int64)
    cache.lookup(("big", 0), big, derive)  # larger than the limit: returned, not kept
    cache.lookup(("big", 0), big, derive)
    assert len(calls) == 4 and cache.nbytes <= 100


# ---- CONV and POOL through every formulation ------------------------------------------------------------


def build_conv(sim: Simulator, band: bool | None, wide_gemm: bool, *args: int):  # noqa: ANN201
    """The CONV closure built with the row-band and weights-first formulations allowed or not; ``band=None``: the
    small-CONV index gather (otherwise off, so that the other formulations are the ones tested)."""
    from pcc.backend.program import Instruction

    saved = products._BAND_CONV, products._WIDE_GEMM, products._GATHER_CONV
    products._BAND_CONV, products._WIDE_GEMM, products._GATHER_CONV = bool(band), wide_gemm, band is None
    try:
        return tensor.build(sim, 0, Instruction(op=isa.Op.CONV, args=tuple(args), addr=0, line=None))
    finally:
        products._BAND_CONV, products._WIDE_GEMM, products._GATHER_CONV = saved


PATHS = pytest.mark.parametrize(
    "band, wide_gemm", [(True, True), (True, False), (False, True), (False, False), (None, False)]
)


@PATHS
@settings(max_examples=40, deadline=None)
@given(st.data())
def test_conv_paths_match_reference(band: bool | None, wide_gemm: bool, data: st.DataObject) -> None:
    groups = data.draw(st.sampled_from([1, 1, 2]))
    icg, ocg = data.draw(st.integers(1, 4)), data.draw(st.integers(1, 4))
    ic, oc = icg * groups, ocg * groups
    kh, kw = data.draw(st.integers(1, 3)), data.draw(st.integers(1, 3))
    ih, iw = data.draw(st.integers(kh, 9)), data.draw(st.integers(kw, 9))
    sh, sw = data.draw(st.sampled_from([1, 1, 2, 3])), data.draw(st.integers(1, 3))
    pt, pb = data.draw(st.integers(0, kh - 1)), data.draw(st.integers(0, kh - 1))
    pl, pr = data.draw(st.integers(0, kw - 1)), data.draw(st.integers(0, kw - 1))
    bound = data.draw(st.sampled_from([2, 195312, W, 2**50]))  # 2**50: past 2**53 in sums, the int64 path
    x = data.draw(st.lists(st.integers(-bound, bound), min_size=ih * iw * ic, max_size=ih * iw * ic))
    w = data.draw(st.lists(st.integers(-2, 2), min_size=oc * kh * kw * icg, max_size=oc * kh * kw * icg))
    acc = data.draw(st.integers(0, 1))
    oh, ow = isa.conv_out(ih, pt, pb, kh, sh), isa.conv_out(iw, pl, pr, kw, sw)
    base = data.draw(
        st.lists(st.integers(-ACC, ACC) | st.integers(-99, 99), min_size=oh * ow * oc, max_size=oh * ow * oc)
    )
    sim = Simulator(assemble("HALT\n", "case.pasm"), fused=False)
    sim.spad_a[5 : 5 + len(x)] = x
    sim.spad_w[3 : 3 + len(w)] = w
    sim.spad_c[7 : 7 + len(base)] = base
    fn = build_conv(sim, band, wide_gemm, 7, 5, 3, ih, iw, ic, oc, kh, kw, sh, sw, pt, pl, pb, pr, groups, acc)
    fn()
    want = ref_conv(x, w, ih, iw, ic, oc, kh, kw, sh, sw, pt, pl, pb, pr, groups)
    if acc:
        want = [a + b for a, b in zip(want, base, strict=True)]
    sat = [max(-ACC, min(ACC, v)) for v in want]
    assert sim.spad_c[7 : 7 + len(sat)].tolist() == sat
    assert bool(sim.flags & 32) == (sat != want)
    fn()  # a second run through the reused buffers gives the same (acc adds the products again)
    if not acc:
        assert sim.spad_c[7 : 7 + len(sat)].tolist() == sat


PATH_ENGINES = [(b, w, "float") for b, w in ((False, False), (True, False), (False, True), (True, True), (None, False))]
if intgemm.available():
    PATH_ENGINES.append((False, False, "int8"))  # the int8 GEMM on digits, with the fused loops where numba is


def test_conv_resnet_shapes_agree_across_paths() -> None:
    """Layer shapes of the ResNet-18 benchmark (scaled down in rows) with 8-pent activations: every formulation and
    engine against Python integers."""
    rng = np.random.default_rng(1)
    shapes = [
        (11, 30, 3, 16, 7, 7, 2, 2, 0, 3, 0, 3),
        (9, 14, 16, 16, 3, 3, 1, 1, 0, 1, 0, 1),
        (7, 7, 32, 24, 3, 3, 1, 1, 1, 1, 1, 1),
        (9, 10, 16, 32, 1, 1, 2, 2, 0, 0, 0, 0),
        (6, 6, 8, 8, 3, 3, 2, 2, 1, 1, 0, 0),
        (4, 4, 512, 8, 3, 3, 1, 1, 1, 1, 1, 1),  # K = 4608, as in the last stage
    ]
    for ih, iw, ic, oc, kh, kw, sh, sw, pt, pl, pb, pr in shapes:
        x = rng.integers(-195312, 195313, ih * iw * ic)
        wts = rng.integers(-2, 3, oc * kh * kw * ic)
        results = []
        for band, wide_gemm, gemm in PATH_ENGINES:
            sim = Simulator(assemble("HALT\n", "case.pasm"), gemm=gemm, fused=None if gemm == "int8" else False)
            sim.spad_a[: x.size] = x
            sim.spad_w[: wts.size] = wts
            sim.spad_c[:] = 17
            build_conv(sim, band, wide_gemm, 0, 0, 0, ih, iw, ic, oc, kh, kw, sh, sw, pt, pl, pb, pr, 1, 1)()
            results.append(sim.spad_c[:20000].copy())
        want = np.array(ref_conv(x.tolist(), wts.tolist(), ih, iw, ic, oc, kh, kw, sh, sw, pt, pl, pb, pr, 1)) + 17
        for r in results:
            assert r[: want.size].tolist() == want.tolist()


@settings(max_examples=60, deadline=None)
@given(st.data())
def test_pool_matches_reference(data: st.DataObject) -> None:
    c = data.draw(st.integers(1, 3))
    kh, kw = data.draw(st.integers(1, 4)), data.draw(st.integers(1, 4))
    ih, iw = data.draw(st.integers(kh, 9)), data.draw(st.integers(kw, 9))
    sh, sw = data.draw(st.integers(1, 3)), data.draw(st.integers(1, 3))
    pt, pb = data.draw(st.integers(0, kh - 1)), data.draw(st.integers(0, kh - 1))
    pl, pr = data.draw(st.integers(0, kw - 1)), data.draw(st.integers(0, kw - 1))
    mode = data.draw(st.integers(0, 2))
    x = data.draw(st.lists(st.integers(-W, W), min_size=ih * iw * c, max_size=ih * iw * c))
    text = f"    POOL 500, 0, {ih}, {iw}, {c}, {kh}, {kw}, {sh}, {sw}, {pt}, {pl}, {pb}, {pr}, {mode}"
    sim = run_asm(text, setup={"A@0": x})
    want = ref_pool(x, ih, iw, c, kh, kw, sh, sw, pt, pl, pb, pr, mode)
    assert sim.spad_a[500 : 500 + len(want)].tolist() == want


def test_pool_in_place() -> None:
    """Source and destination overlapping: the sources are read first."""
    x = list(range(1, 17))
    sim = run_asm("    POOL 2, 0, 4, 4, 1, 2, 2, 2, 2, 0, 0, 0, 0, 0", setup={"A@0": x})
    assert sim.spad_a[2:6].tolist() == [6, 8, 14, 16]


# ---- elementwise in place and DMA rows ------------------------------------------------------------------


@pytest.mark.parametrize("dst", [0, 3, 10, 20])
def test_relu_and_clamp_overlapping_ranges(dst: int) -> None:
    x = [-5, 4, -3, 2, -1, 0, 1, -2, 3, -4]
    relu = run_asm(f"    TRELU {dst}, 0, 10", setup={"A@0": x})
    assert relu.spad_a[dst : dst + 10].tolist() == [max(v, 0) for v in x]
    clamp = run_asm(f"    TCLAMP {dst}, 0, 10, -2, 3", setup={"A@0": x})
    assert clamp.spad_a[dst : dst + 10].tolist() == [min(max(v, -2), 3) for v in x]


@pytest.mark.parametrize("stride", [-7, -3, 0, 3, 5, 9])
def test_dma_rows(stride: int) -> None:
    rows, cols = 4, 3
    base = 40
    src = list(range(100, 200))
    sim = run_asm(
        f""".data
m: .word {", ".join(map(str, src))}
.text
    MOVI P1, m
    TLOAD 0, [P1 + {base}], {rows}, {cols}, {stride}
    TLOADC 0, [P1 + {base}], {rows}, {cols}, {stride}
    TSTORE [P1 + {base}], 20, {rows}, {cols}, {stride}
    TSTOREC [P1 + {base}], 40, {rows}, {cols}, {stride}""",
        setup={"A@20": list(range(-1, -13, -1)), "C@40": [W + 5, -W - 5] + list(range(10))},
    )
    addrs = [base + r * stride + k for r in range(rows) for k in range(cols)]
    assert sim.spad_a[0:12].tolist() == [src[a] for a in addrs] == sim.spad_c[0:12].tolist()
    image = list(src)
    for j, a in enumerate(addrs):  # TSTORE then TSTOREC, rows in order
        image[a] = -1 - j
    tc = [W, -W] + list(range(10))
    for j, a in enumerate(addrs):
        image[a] = tc[j]
    m = sim.program.symbol("m").addr
    assert sim.mem[m : m + 100].tolist() == image
    assert sim.flag("S")


@pytest.mark.parametrize("stride", [-3, 0, 2, 3, 5])
def test_dma_closures_over_many_bases(stride: int) -> None:
    """One DMA closure per kind called with more base values than it keeps views for, some again, some out of range
    (a fault, then the closure still works): each call moves exactly the words of its own base."""
    rows, cols = 3, 2
    sim = Simulator(assemble("HALT\n", "case.pasm"), fused=False)
    size = sim.mem.size
    lo, hi, _ = dma._rows(rows, cols, stride)
    rng = np.random.default_rng(stride + 10)
    sim.mem[:400] = rng.integers(-1000, 1000, 400)
    tload = tensor.build(sim, 0, _ins(isa.Op.TLOAD, 5, 1, 7, rows, cols, stride))
    tstore = tensor.build(sim, 0, _ins(isa.Op.TSTORE, 1, 7, 30, rows, cols, stride))
    tstorec = tensor.build(sim, 0, _ins(isa.Op.TSTOREC, 1, 3, 30, rows, cols, stride))
    sim.spad_c[30 : 30 + rows * cols] = [W + 1, 4, -W - 9, 5, 6, 7]
    bases = [int(b) for b in rng.integers(20, 300, 3 * dma._VIEWS)] + [20, 21, 20]
    for k, base in enumerate(bases):
        addrs = [base + 7 + r * stride + j for r in range(rows) for j in range(cols)]
        tload(base)
        assert sim.spad_a[5 : 5 + rows * cols].tolist() == [int(sim.mem[a]) for a in addrs]
        sim.spad_a[30 : 30 + rows * cols] = np.arange(rows * cols) + 1000 * k
        image = sim.mem[:400].copy()
        for j, a in enumerate(addrs):  # rows in order: the later one wins where they overlap
            image[a] = 1000 * k + j
        tstore(base)
        assert sim.mem[:400].tolist() == image.tolist()
        assert sim._dirty[0] <= min(addrs) and sim._dirty[1] >= max(addrs)
        tstorec(base + 4)  # TSTOREC's offset is 3: the same words, saturated
        for j, a in enumerate(addrs):
            image[a] = [W, 4, -W, 5, 6, 7][j]
        assert sim.mem[:400].tolist() == image.tolist()
    for fn, off in ((tload, 7), (tstore, 7), (tstorec, 3)):
        with pytest.raises(Fault):
            fn(size - off - hi)  # the last row ends past main memory
        with pytest.raises(Fault):
            fn(-off - lo - 1)
    tload(20)
    assert sim.spad_a[5 : 5 + rows * cols].tolist() == [
        int(sim.mem[27 + r * stride + j]) for r in range(rows) for j in range(cols)
    ]


def test_requantc_follows_its_parameters() -> None:
    """One REQUANTC closure run again after its multipliers, shifts or sources change (and after a fault)."""
    rows, cols, pents = 3, 2, 4
    cap = word_max(pents)
    sim = Simulator(assemble("HALT\n", "case.pasm"), fused=False)
    fn = tensor.build(sim, 0, _ins(isa.Op.REQUANTC, 3, 0, rows, cols, 20, pents))
    rng = np.random.default_rng(5)
    cases = [
        ([5, 7], [3, 1]),
        ([5, 7], [3, 1]),
        ([9, 7], [3, 1]),
        ([9, 7], [0, 40]),
        ([-1, 7], [0, 1]),
        ([1, 2], [2, 2]),
    ]
    for mult, shift in cases:
        xs = rng.integers(-(10**4), 10**4, rows * cols).tolist()
        sim.spad_c[: rows * cols] = xs
        sim.spad_c[20 : 20 + 2 * cols] = mult + shift
        if min(mult) < 0:
            with pytest.raises(Fault, match="multiplier of channel 0"):
                fn()
            continue
        sim._flags[3] = 0
        fn()
        want = [ref_round(v, mult[j % cols], shift[j % cols], ACC) for j, v in enumerate(xs)]
        sat = [max(-cap, min(cap, v)) for v in want]
        assert sim.spad_a[3 : 3 + rows * cols].tolist() == sat
        assert bool(sim.flags & 32) == (sat != want)


def test_batch_runs_reuse_buffers_and_cache() -> None:
    """Two samples through one simulator: each output as from a fresh simulator."""
    prog = assemble(
        """.data
x: .zero 8
y: .zero 4
w: .word 123456789, -987654321
.input x, shape=[1, 8], pents=8, scale=1.0, addr=x
.output y, shape=[1, 4], pents=8, scale=1.0, addr=y
.text
    TLOAD 0, [P0 + x], 1, 8, 8
    TLOADW 0, [P0 + w], 32
    MATMUL 0, 0, 0, 1, 4, 8, 0
    REQUANT 0, 0, 4, 3, 1, 8
    TSTORE [P0 + y], 0, 1, 4, 4
    HALT
""",
        "case.pasm",
    )
    rng = np.random.default_rng(3)
    x = rng.integers(-100, 100, (2, 8))
    both = run_program(prog, {"x": x}, quantized=True)["y"]
    for k in range(2):
        one = run_program(prog, {"x": x[k : k + 1]}, quantized=True)["y"]
        assert both[k].tolist() == one[0].tolist()


def test_row_view_matches_strided_view() -> None:
    """Disjoint rows as a reshaped slice, and near the end of memory (where that slice would not fit) strided."""
    from numpy.lib.stride_tricks import as_strided

    mem = np.arange(50, dtype=np.int64)
    for b, rows, cols, stride in [
        (0, 4, 3, 5),
        (10, 3, 4, 4),
        (29, 3, 3, 9),
        (40, 2, 3, 7),
        (47, 1, 3, 3),
        (3, 5, 2, 0),
    ]:
        want = as_strided(mem[b:], shape=(rows, cols), strides=(stride * 8, 8)).tolist()
        view = dma._row_view(mem, b, rows, cols, stride)
        assert view.tolist() == want
        assert np.shares_memory(view, mem)


def test_conv_weight_cache_follows_the_weights() -> None:
    """CONV keeps its float64 weights while W holds the same pents; new pents (between or within runs) are seen."""
    rng = np.random.default_rng(5)
    args = (0, 0, 0, 4, 4, 2, 3, 3, 3, 1, 1, 1, 1, 1, 1, 1, 0)  # c, a, w, 4x4x2 -> 3 channels, 3x3, pad 1
    x = rng.integers(-50, 50, 32)
    sim = Simulator(assemble("HALT\n", "case.pasm"), fused=False)
    sim.spad_a[:32] = x
    fn = build_conv(sim, True, True, *args)
    first = rng.integers(-2, 3, 54)
    for k in range(8):  # the same weights twice, then new ones each time: past 3 misses the cache is bypassed
        w = first if k < 2 else rng.integers(-2, 3, 54)
        sim.spad_w[:54] = w
        fn()
        want = ref_conv(x.tolist(), w.tolist(), 4, 4, 2, 3, 3, 3, 1, 1, 1, 1, 1, 1, 1)
        assert sim.spad_c[:48].tolist() == want
        assert sim.zero_weights[0] > 0 or not (w == 0).any()
    assert sim.conv_weights.hits == 1


@settings(max_examples=60, deadline=None)
@given(st.data())
def test_requantc_and_eadd_match_reference(data: st.DataObject) -> None:
    """REQUANTC (per-channel) and EADD written in place, against Python integers, with saturation and S."""
    rows, cols = data.draw(st.integers(1, 4)), data.draw(st.integers(1, 4))
    n = rows * cols
    big = data.draw(st.sampled_from([100, 10**6, ACC]))
    xs = data.draw(st.lists(st.integers(-big, big), min_size=n, max_size=n))
    mult = data.draw(st.lists(st.integers(0, MULT_MAX), min_size=cols, max_size=cols))
    shift = data.draw(st.lists(st.integers(0, 40), min_size=cols, max_size=cols))
    pents = data.draw(st.sampled_from([2, 8, 16]))
    cap = word_max(pents)
    sim = Simulator(assemble("HALT\n", "case.pasm"), fused=False)
    sim.spad_c[:n] = xs
    sim.spad_c[20 : 20 + 2 * cols] = mult + shift
    tensor.build(sim, 0, _ins(isa.Op.REQUANTC, 3, 0, rows, cols, 20, pents))()
    want = [ref_round(v, mult[j % cols], shift[j % cols], ACC) for j, v in enumerate(xs)]
    sat = [max(-cap, min(cap, v)) for v in want]
    assert sim.spad_a[3 : 3 + n].tolist() == sat
    assert bool(sim.flags & 32) == (sat != want)

    sim2 = Simulator(assemble("HALT\n", "case.pasm"), fused=False)
    ys = data.draw(st.lists(st.integers(-W, W), min_size=2 * n, max_size=2 * n))
    sim2.spad_a[: 2 * n] = ys
    mx, my = data.draw(st.integers(0, MULT_MAX)), data.draw(st.integers(0, MULT_MAX))
    sx, sy = data.draw(st.integers(0, 40)), data.draw(st.integers(0, 40))
    dst = data.draw(st.sampled_from([0, n // 2, n, 2 * n]))  # over the sources, or beside them
    tensor.build(sim2, 0, _ins(isa.Op.EADD, dst, 0, n, n, mx, sx, my, sy, pents))()
    want = [ref_round(ys[j], mx, sx, ACC) + ref_round(ys[n + j], my, sy, ACC) for j in range(n)]
    sat = [max(-cap, min(cap, v)) for v in want]
    assert sim2.spad_a[dst : dst + n].tolist() == sat
    assert bool(sim2.flags & 32) == (sat != want)


@settings(max_examples=80, deadline=None)
@given(st.data())
def test_emul_loop_matches_reference(data: st.DataObject) -> None:
    """EMUL through the compiled loop (fused) and through numpy, in place or beside its sources, against Python
    integers: the product saturated at ACC_MAX (past 2**62 too), rounded, clipped, and S."""
    if not kernels.available():
        pytest.skip("numba is not installed")
    n = data.draw(st.integers(1, 12))
    big = data.draw(st.sampled_from([9, 10**6, W, 2**40, ACC]))
    vals = st.one_of(st.integers(-big, big), st.sampled_from([0, 1, -1, big, -big]))
    ys = data.draw(st.lists(vals, min_size=2 * n, max_size=2 * n))
    mult = data.draw(st.one_of(st.integers(0, MULT_MAX), st.sampled_from([0, 1, MULT_MAX])))
    shift = data.draw(st.one_of(st.integers(0, 62), st.sampled_from([0, 1, 30, 31, 32, 62])))
    pents = data.draw(st.sampled_from([2, 8, 16]))
    dst = data.draw(st.sampled_from([0, n // 2, n, 2 * n]))  # over the sources, or beside them
    cap = word_max(pents)
    want = [ref_round(max(-ACC, min(ACC, ys[j] * ys[n + j])), mult, shift, ACC) for j in range(n)]
    sat = [max(-cap, min(cap, v)) for v in want]
    for fused in (True, False):
        sim = Simulator(assemble("HALT\n", "case.pasm"), fused=fused)
        sim.spad_a[: 2 * n] = ys
        tensor.build(sim, 0, _ins(isa.Op.EMUL, dst, 0, n, n, mult, shift, pents))()
        assert sim.spad_a[dst : dst + n].tolist() == sat, fused
        assert bool(sim.flags & 32) == (sat != want), fused


def _ins(op: int, *args: int):  # noqa: ANN202
    from pcc.backend.program import Instruction

    return Instruction(op=op, args=tuple(args), addr=0, line=None)


# ---- the I/O boundary and MATMUL / MATVEC's weight cache ---------------------------------------------------


@settings(max_examples=150, deadline=None)
@given(
    st.lists(st.floats(allow_nan=False, allow_infinity=False, width=32), min_size=1, max_size=20),
    st.sampled_from([1e-5, 0.25, 0.5, 1.0, 3.0, 1e30]),
    st.sampled_from([1, 2, 8, 16]),
    st.booleans(),
)
def test_boundary_quantize_matches_reference(xs: list[float], scale: float, pents: int, f64: bool) -> None:
    """The in-place input quantisation gives quantize_input's integers, ties and signed zeros included."""
    from pcc.backend.program import IODecl
    from pcc.pent_reference import quantize_input
    from pcc.runtime import boundary

    ties = [k * scale / 2 for k in range(-7, 8)] + [-0.0, 0.0, 1e38, -1e38]
    x = np.array(xs + ties, dtype=np.float64 if f64 else np.float32)
    decl = IODecl("x", (x.size,), pents, scale, 0)
    got = boundary.quantize(x, decl)
    assert got.dtype == np.int64
    assert got.tolist() == quantize_input(x, scale, pents).tolist()
    ints = np.arange(-40, 40, dtype=np.int32)
    assert boundary.quantize(ints, decl).tolist() == quantize_input(ints, scale, pents).tolist()


@pytest.mark.parametrize("acc", [0, 1])
@pytest.mark.parametrize(("m", "n", "k", "big"), [(3, 4, 5, 100), (3, 4, 5, W), (2, 2, 70_000, W)])
def test_dot_weight_cache_follows_the_weights(acc: int, m: int, n: int, k: int, big: int) -> None:
    """One MATMUL closure run again and again: the same weights (cached), new ones each time (the cache is then
    bypassed), sums past 2**53 (int64), accumulation into C with saturation."""
    sim = Simulator(assemble("HALT\n", "case.pasm"), fused=False)
    fn = tensor.build(sim, 0, _ins(isa.Op.MATMUL, 0, 0, 0, m, n, k, acc))
    rng = np.random.default_rng(big % 1000 + acc)
    first = rng.integers(-2, 3, n * k)
    for r in range(8):
        w = first if r < 3 else rng.integers(-2, 3, n * k)
        x = rng.integers(-big, big + 1, m * k)
        c0 = rng.integers(-ACC, ACC + 1, m * n) if acc and r % 2 else rng.integers(-10, 11, m * n)
        sim.spad_w[: n * k] = w
        sim.spad_a[: m * k] = x
        sim.spad_c[: m * n] = c0
        sim._flags[3] = 0
        fn()
        xo, wo = x.astype(object).reshape(m, k), w.astype(object).reshape(n, k)
        want = [int(v) for v in (xo @ wo.T).reshape(-1) + (c0.astype(object) if acc else 0)]
        sat = [max(-ACC, min(ACC, v)) for v in want]
        assert sim.spad_c[: m * n].tolist() == sat
        assert bool(sim.flags & 32) == (sat != want)
    assert sim.conv_weights.hits == 2


def test_absmax_small_and_large() -> None:
    """max |v| in one abs and one reduction (small arrays, INT64_MIN's magnitude 2**63 included) or two."""
    rng = np.random.default_rng(7)
    lo, hi = np.iinfo(np.int64).min, np.iinfo(np.int64).max
    for n in (1, 2, 10, tensor_base._SMALL, tensor_base._SMALL + 1, 3 * tensor_base._SMALL):
        f = tensor_base._absmax((n,))
        for extreme in (None, lo, hi, lo + 1, -5):
            v = rng.integers(-1000, 1000, n)
            if extreme is not None:
                v[rng.integers(0, n)] = extreme
            assert f(v) == max(abs(int(e)) for e in v)
    g = tensor_base._absmax((3, 4))
    v = rng.integers(-(2**40), 2**40, (3, 4))
    assert g(v) == max(abs(int(e)) for e in v.reshape(-1))


_IO_PROGRAM = """.data
x: .zero 24
y: .zero 24
.input x, shape=[1, 2, 3, 4], pents=3, scale=0.5, addr=x, order=[0, 2, 3, 1]
.input z, shape=[3], pents=8, scale=2.0, addr=200
.output y, shape=[1, 2, 3, 4], pents=8, scale=0.25, addr=y, order=[0, 3, 1, 2]
.output w, shape=[3], pents=8, scale=3.0, addr=300
.text
    TLOAD 0, [P0 + x], 1, 24, 24
    TSTORE [P0 + y], 0, 1, 24, 24
    TLOAD 0, [P0 + 200], 1, 3, 3
    TSTORE [P0 + 300], 0, 1, 3, 3
    HALT
"""


# the input's axis orders: one axis moved last (2 channels: the blocked store; 3: the RGB store), none, another
_ORDERS = ["[0, 2, 3, 1]", "[0, 1, 3, 2]", "[0, 1, 2, 3]", None, "[0, 3, 1, 2]", "[3, 2, 1, 0]"]


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.int32])
@pytest.mark.parametrize("order", _ORDERS)
def test_run_program_short_way_matches_the_general_path(dtype: type, order: str | None) -> None:
    """One sample of real arrays goes straight into memory and out of it (boundary.write_inputs, read_output's one
    pass); the result is bit for bit the general path's (lists in, memory read and dequantised), in the declared
    axis orders, and the errors are the general path's."""
    from pcc.diagnostics import PccError
    from pcc.runtime import boundary

    text = _IO_PROGRAM.replace(", order=[0, 2, 3, 1]", "" if order is None else f", order={order}")
    prog = assemble(text, "io.pasm")
    ramp = {"x": np.arange(24.0).reshape(1, 2, 3, 4) * 0.5, "z": np.zeros(3)}  # x's words: 0, 1, ... 23
    words = boundary.prepare_inputs(prog, ramp)[0][0][1]  # the general path's layout (numpy's transpose)
    sim = Simulator(prog)
    assert boundary.write_inputs(sim, prog, ramp)
    assert sim.read_memory(prog.inputs[0].addr, 24).tolist() == words.tolist()  # the declared layout, word for word
    rng = np.random.default_rng(11)
    sim = Simulator(prog)
    for _ in range(3):
        x = (rng.normal(0, 40, (1, 2, 3, 4)) * rng.choice([1, 1e3], (1, 2, 3, 4))).astype(dtype)
        x.reshape(-1)[:4] = [0.25, -0.25, 0.75, -0.0] if dtype != np.int32 else [0, 1, -1, 400]
        z = np.array([1.0, -3.0, 1e9], dtype=dtype if dtype != np.int32 else np.float64)
        fast = run_program(prog, {"x": x, "z": z}, simulator=sim)
        general = run_program(prog, {"x": x.tolist(), "z": z.tolist()}, simulator=Simulator(prog))
        for name in ("y", "w"):
            assert fast[name].dtype == general[name].dtype == np.float32
            assert fast[name].flags.c_contiguous and fast[name].shape == general[name].shape
            assert fast[name].tobytes() == general[name].tobytes()
        qz = boundary.quantize(z, prog.inputs[1])
        q = run_program(prog, {"x": boundary.quantize(x, prog.inputs[0]), "z": qz}, quantized=True)
        assert (q["y"] * 0.25).astype(np.float32).tobytes() == fast["y"].tobytes()
    assert boundary.write_inputs(sim, prog, {"x": x, "z": z})
    assert not boundary.write_inputs(sim, prog, {"x": x})  # missing, extra, wrong shape: the general path's errors
    for bad in ({"x": x}, {"x": x, "z": z, "q": z}, {"x": x[0], "z": z}, {"x": x, "z": z.astype(bool)}):
        with pytest.raises(PccError) as fast_err:
            run_program(prog, bad, simulator=sim)
        assert fast_err.value.message == _message(lambda b=bad: boundary.prepare_inputs(prog, b))
    x2 = x.astype(np.float64)
    x2[0, 1, 2, 3] = np.nan
    with pytest.raises(PccError, match="NaN or Inf"):
        run_program(prog, {"x": x2, "z": z}, simulator=sim)
    assert not boundary.write_inputs(sim, prog, {"x": x2, "z": z})
    far = assemble(text.replace("addr=200", f"addr={sim.mem.size - 2}"), "io.pasm")
    with pytest.raises(PccError, match="do not fit main memory"):
        run_program(far, {"x": x, "z": z})


def _message(fn) -> str:  # noqa: ANN001
    from pcc.diagnostics import PccError

    try:
        fn()
    except PccError as e:
        return e.message
    raise AssertionError("no error")


def _ref_loads(mem: np.ndarray, base: int, loads: list[tuple], a: list[int], c: list[int]) -> int:
    """The loads in order on Python lists; returns how many ran before one left main memory (all: len(loads))."""
    for k, (op, d, off, rows, cols, stride) in enumerate(loads):
        addrs = [base + off + r * stride + j for r in range(rows) for j in range(cols)]
        if addrs and (min(addrs) < 0 or max(addrs) >= mem.size):
            return k
        dst = a if op == "TLOAD" else c
        for t, adr in enumerate(addrs):
            dst[d + t] = int(mem[adr])
    return len(loads)


@pytest.mark.parametrize("seed", range(12))
def test_runs_of_loads_match_the_loads_in_order(seed: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """Consecutive TLOAD / TLOADC of one base register run as one gather per scratchpad (tensor.build_loads): the
    scratchpads as after the loads in order (overlapping destinations: the last load wins), over several base
    values; a base that takes one load outside main memory faults at that load, after those before it, exactly as
    the loads one by one do (the same message, steps and state)."""
    from pcc.diagnostics import PccError

    rng = np.random.default_rng(seed)
    nload = int(rng.integers(10, 15))
    loads = []
    for k in range(nload):
        op = "TLOAD" if k % 2 or seed % 3 == 0 else "TLOADC"
        rows, cols = int(rng.integers(1, 4)), int(rng.integers(0 if k == 3 else 1, 5))
        loads.append((op, int(rng.integers(0, 24)), int(rng.integers(20, 200)), rows, cols, int(rng.integers(-6, 7))))
    body = "\n".join(f"    {op} {d}, [P1 + {off}], {r}, {cc}, {st}" for op, d, off, r, cc, st in loads)
    fault_base = -min(off + min(0, (r - 1) * st) for _, _, off, r, cc, st in loads if r * cc) - 1
    bases = [0, 40, 7, 0, 40, fault_base]
    text = ".text\n    LOAD P1, [P0 + 0]\n" + body + "\n    HALT\n"
    images = [rng.integers(-W, W, 300) for _ in bases]
    results = []
    # the gathered run of loads, the compiled run loop (where numba is), the loads one by one
    variants = ["gather"] + (["compiled"] if kernels.available() else []) + ["one by one"]
    for variant in variants:
        if variant == "one by one":
            monkeypatch.setattr(dma, "_LOAD_RUN", 10**9)
        sim = Simulator(assemble(text, "loads.pasm"), fused=variant == "compiled")
        state = []
        for b, image in zip(bases, images, strict=True):
            sim.reset()
            sim.mem[:300] = image
            sim.mem[0] = b
            try:
                sim.run()
                err = None
            except PccError as e:
                err = (e.message, sim.steps)
            state.append((sim.spad_a[:40].tolist(), sim.spad_c[:40].tolist(), err))
        want = {"gather": [True], "compiled": [], "one by one": [False]}[variant]
        assert [fn is not None for fn in sim._load_runs.values()] == want
        assert len(sim._runs) == (variant == "compiled")
        results.append(state)
    assert all(r == results[0] for r in results[1:])
    for (a, c, err), b, image in zip(results[0], bases, images, strict=True):
        mem = np.zeros(1300, dtype=np.int64)
        mem[:300] = image
        mem[0] = b
        ra, rc = [0] * 40, [0] * 40
        done = _ref_loads(mem, b, loads, ra, rc)
        assert (ra, rc) == (a, c)
        assert (err is None) == (done == nload)


@pytest.mark.parametrize("rows", [1, 65])
@pytest.mark.parametrize("big", [10**5, 10**12, ACC])
def test_requantc_small_and_large(rows: int, big: int) -> None:
    """REQUANTC below and above tensor_base._SMALL elements (its own small path, and _msr_into), saturating or not."""
    cols = 64
    n = rows * cols
    assert (n <= tensor_base._SMALL) == (rows == 1)
    rng = np.random.default_rng(rows + big % 97)
    sim = Simulator(assemble("HALT\n", "case.pasm"), fused=False)
    fn = tensor.build(sim, 0, _ins(isa.Op.REQUANTC, 0, 0, rows, cols, n, 8))
    cap = word_max(8)
    for shifts in ([0] * cols, rng.integers(0, 30, cols).tolist(), [17] * cols):
        xs = rng.integers(-big, big + 1, n).tolist()
        mult = rng.integers(0, MULT_MAX + 1, cols).tolist()
        sim.spad_c[:n] = xs
        sim.spad_c[n : n + 2 * cols] = mult + shifts
        sim._flags[3] = 0
        fn()
        want = [ref_round(v, mult[j % cols], shifts[j % cols], ACC) for j, v in enumerate(xs)]
        sat = [max(-cap, min(cap, v)) for v in want]
        assert sim.spad_a[:n].tolist() == sat
        assert bool(sim.flags & 32) == (sat != want)


def test_float_engine_multiplies_on_one_blas_thread_and_restores_the_count(blas_spy) -> None:  # noqa: ANN001
    """A program whose CONV is past the direct loops' size runs its BLAS products on one thread; the caller's
    thread count is back after the run, also after a fault."""
    control, seen = blas_spy
    text = "CONV 0, 0, 0, 32, 32, 16, 16, 3, 3, 1, 1, 1, 1, 1, 1, 1, 0\n"  # 2.4 M MACs: past _DIRECT_MACS
    rng = np.random.default_rng(0)
    setup = {"A@0": rng.integers(-1000, 1000, 32 * 32 * 16), "W@0": rng.integers(-2, 3, 16 * 9 * 16)}
    sim = Simulator(assemble(text + "HALT\n", "case.pasm"), gemm="float")
    preset(sim, setup)
    sim.run()
    assert seen and set(seen) == {1}
    assert control.get_num_threads() == 2
    bad = Simulator(assemble(text + "LOAD P1, [P0 + -1]\nHALT\n", "case.pasm"), gemm="float")
    with pytest.raises(Exception, match="outside main memory"):
        bad.run()
    assert control.get_num_threads() == 2
    want = ref_conv(setup["A@0"].tolist(), setup["W@0"].tolist(), 32, 32, 16, 16, 3, 3, 1, 1, 1, 1, 1, 1)
    assert sim.spad_c[: 32 * 32 * 16].tolist() == want
