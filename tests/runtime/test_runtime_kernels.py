"""The fused loops of ``runtime/kernels.py`` (numba) against Python integers, through the simulator's closures.

REQUANTC and EADD with ``fused=True``: per-channel multipliers and shifts, operands up to ``ACC_MAX`` (where the
per-element guard sends the instruction to the exact wide path), saturation and S, EADD over its own sources;
the recombination of digit products for every digit count; digit planes and extremes; the whole-instruction
loops (small CONV and MATMUL, POOL, TRELU/TCLAMP, REQUANTC's faults) where their guards send operands to the numpy
path, where they write over their own source, and where the weights change between runs. (Every tensor
instruction test of test_runtime_tensor.py also runs with both loop sets and compares the machine states.)
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import event, given, settings
from hypothesis import strategies as st
from program_gen import tensor_instruction
from runtime_helpers import ACC, W, executed, preset, ref_conv, ref_pool

from pcc import isa
from pcc.backend.assembler import assemble
from pcc.backend.program import Instruction
from pcc.pentary import word_max
from pcc.runtime import intgemm, isa_ref, kernels, tensor
from pcc.runtime.simulator import Simulator

pytestmark = pytest.mark.skipif(not kernels.available(), reason="numba is not installed")


ref_round = isa_ref.mul_shift_round  # one value, in Python integers


def _sim() -> Simulator:
    return Simulator(assemble("HALT\n", "case.pasm"), fused=True)


def _build(sim: Simulator, op: isa.Op, *args: int):  # noqa: ANN202
    return tensor.build(sim, 0, Instruction(op=op, args=tuple(args), addr=0, line=None))


@settings(max_examples=150)
@given(st.data())
def test_requantc_fused(data: st.DataObject) -> None:
    rows, cols = data.draw(st.integers(1, 5)), data.draw(st.integers(1, 5))
    n = rows * cols
    big = data.draw(st.sampled_from([100, 10**6, 2**40, ACC]))  # ACC: past the guard, the wide path
    xs = data.draw(st.lists(st.integers(-big, big) | st.sampled_from([0, -1, 1]), min_size=n, max_size=n))
    mult = data.draw(st.lists(st.integers(0, isa.MULT_MAX), min_size=cols, max_size=cols))
    shift = data.draw(st.lists(st.integers(0, 40) | st.just(0), min_size=cols, max_size=cols))
    pents = data.draw(st.sampled_from([2, 8, 16]))
    cap = word_max(pents)
    sim = _sim()
    sim.spad_c[:n] = xs
    sim.spad_c[40 : 40 + 2 * cols] = mult + shift
    fn = _build(sim, isa.Op.REQUANTC, 3, 0, rows, cols, 40, pents)
    for _ in range(2):  # the second call reuses the checked parameters
        fn()
        want = [ref_round(v, mult[j % cols], shift[j % cols], ACC) for j, v in enumerate(xs)]
        sat = [max(-cap, min(cap, v)) for v in want]
        assert sim.spad_a[3 : 3 + n].tolist() == sat
        assert bool(sim.flags & 32) == (sat != want)


@settings(max_examples=150)
@given(st.data())
def test_eadd_fused(data: st.DataObject) -> None:
    n = data.draw(st.integers(1, 12))
    big = data.draw(st.sampled_from([100, 10**6, W]))
    ys = data.draw(st.lists(st.integers(-big, big), min_size=2 * n, max_size=2 * n))
    mx = data.draw(st.integers(0, isa.MULT_MAX))
    my = data.draw(st.integers(0, isa.MULT_MAX) | st.just(0))  # 0: the rescale of x alone
    sx, sy = data.draw(st.integers(0, 40)), data.draw(st.integers(0, 40))
    pents = data.draw(st.sampled_from([2, 8, 16]))
    cap = word_max(pents)
    dst = data.draw(st.sampled_from([0, n, 2 * n, n // 2]))  # over a source, beside them, or overlapping (numpy)
    sim = _sim()
    sim.spad_a[: 2 * n] = ys
    _build(sim, isa.Op.EADD, dst, 0, n, n, mx, sx, my, sy, pents)()
    want = [ref_round(ys[j], mx, sx, ACC) + ref_round(ys[n + j], my, sy, ACC) for j in range(n)]
    sat = [max(-cap, min(cap, v)) for v in want]
    assert sim.spad_a[dst : dst + n].tolist() == sat
    assert bool(sim.flags & 32) == (sat != want)


def test_eadd_guard_leaves_aliased_sources_intact() -> None:
    """An operand past the int64 guard sends EADD to the wide path before anything is written over it."""
    sim = _sim()
    x = [W, 5, -7]
    y = [3, -W, 1]
    sim.spad_a[:6] = x + y
    m = isa.MULT_MAX
    _build(sim, isa.Op.EADD, 0, 0, 3, 3, m, 0, m, 0, 16)()  # |W * MULT_MAX| > 2**63: guard fails
    want = [ref_round(a, m, 0, ACC) + ref_round(b, m, 0, ACC) for a, b in zip(x, y, strict=True)]
    assert sim.spad_a[:3].tolist() == [max(-W, min(W, v)) for v in want]


def test_eadd_rescale_in_place_guard_takes_the_wide_path() -> None:
    """The in-place rescale (second multiplier 0, destination over the first source) past the int64 guard: the
    loop writes nothing and the wide path gives the exact values."""
    sim = _sim()
    x = [W, 5, -W]
    sim.spad_a[:6] = x + [1, 2, 3]
    m = isa.MULT_MAX
    _build(sim, isa.Op.EADD, 0, 0, 3, 3, m, 3, 0, 0, 16)()
    assert sim.spad_a[:3].tolist() == [max(-W, min(W, ref_round(a, m, 3, ACC))) for a in x]
    assert bool(sim.flags & 32)


@pytest.mark.parametrize("nd", [1, 2, 3, 4, 5])
@pytest.mark.parametrize("add", [False, True])
def test_recombine_every_digit_count(nd: int, add: bool) -> None:
    rng = np.random.default_rng(nd)
    r = rng.integers(-(2**20), 2**20, (nd, 7, 9)).astype(np.int32)
    base = rng.integers(-(10**6), 10**6, (7, 9))
    out = base.copy()
    kernels.recombine(r, out, add)
    want = sum(r[d].astype(object) * 256**d for d in range(nd)) + (base.astype(object) if add else 0)
    assert out.astype(object).tolist() == want.tolist()


@given(st.lists(st.integers(-W, W), min_size=1, max_size=40), st.integers(0, 2), st.integers(0, 2))
def test_digit_planes_and_extremes(values: list[int], top: int, left: int) -> None:
    x = np.array(values, np.int64).reshape(1, -1, 1)
    nd = intgemm.digits_for(max(abs(v) for v in values))
    d = np.full((nd, 1 + top, x.shape[1] + left, 1), 99, np.int8)
    kernels.digit_planes(x, intgemm.offset(nd), nd, d, top, left)
    got = [sum(int(d[j, top, left + i, 0]) * 256**j for j in range(nd)) for i in range(len(values))]
    assert got == values
    assert kernels.extremes(x) == (min(values), max(values))


# ---- whole small instructions (conv_small, dot_small, pool, clamp): guards, aliasing, weights that change -------


def test_conv_past_the_float64_guard_takes_the_exact_path() -> None:
    """Word-range inputs whose sums can leave float64's exact integers (max |x| * sum |w| >= 2**53: 15,000
    channels of 2x2 taps at +-2) go to the numpy path's int64 products: exact."""
    rng = np.random.default_rng(5)
    ic, oc = 15_000, 2
    x = [int(v) for v in rng.integers(W - 1000, W, 2 * 2 * ic, endpoint=True)]
    w = [int(v) for v in rng.choice([-2, 2, 2, 0], oc * 4 * ic)]
    assert W * 2 * 4 * ic >= 2**53
    sim = _sim()
    sim.spad_a[: len(x)] = x
    sim.spad_w[: len(w)] = w
    _build(sim, isa.Op.CONV, 0, 0, 0, 2, 2, ic, oc, 2, 2, 1, 1, 0, 0, 0, 0, 1, 0)()
    assert sim.spad_c[:oc].tolist() == ref_conv(x, w, 2, 2, ic, oc, 2, 2, 1, 1, 0, 0, 0, 0, 1)
    assert sim.zero_weights[0] == w.count(0) and sim.zero_macs[0] == w.count(0)


def test_direct_products_follow_weights_that_change() -> None:
    """The compiled CONV and MATMUL keep transposed weights only while W holds the pents they came from."""
    rng = np.random.default_rng(3)
    sim = Simulator(assemble("HALT\nHALT\n", "case.pasm"), fused=True)
    conv = _build(sim, isa.Op.CONV, 0, 0, 0, 4, 4, 2, 3, 3, 3, 1, 1, 1, 1, 1, 1, 1, 0)
    dot = tensor.build(sim, 1, Instruction(op=isa.Op.MATMUL, args=(100, 0, 0, 2, 3, 16, 1), addr=1, line=None))
    x = rng.integers(-1000, 1000, 32)
    sim.spad_a[:32] = x
    for k in range(4):
        w = rng.integers(-2, 3, 54) if k != 1 else sim.spad_w[:54].copy()  # run 1: the same pents again
        w[k] = 0
        sim.spad_w[:54] = w
        base = rng.integers(-(10**6), 10**6, 6)
        sim.spad_c[100:106] = base
        conv()
        dot()
        assert sim.spad_c[:48].tolist() == ref_conv(x.tolist(), w.tolist(), 4, 4, 2, 3, 3, 3, 1, 1, 1, 1, 1, 1, 1)
        a2 = x[:32].reshape(2, 16).astype(object)
        w2 = w[:48].reshape(3, 16).astype(object)
        assert sim.spad_c[100:106].tolist() == (a2.dot(w2.T).reshape(-1) + base.astype(object)).tolist()


@pytest.mark.parametrize("mode", [0, 1, 2])
@pytest.mark.parametrize("dst", [0, 1, 4, 40])  # over the source (in place, shifted) and apart from it
def test_pool_over_its_own_source(mode: int, dst: int) -> None:
    rng = np.random.default_rng(mode * 7 + dst)
    x = [int(v) for v in rng.integers(-W, W, 4 * 4 * 3)]
    if mode:
        x[5] = 2**60  # an average past the loop's int64 guard: the numpy path
    sim = _sim()
    sim.spad_a[:48] = x
    _build(sim, isa.Op.POOL, dst, 0, 4, 4, 3, 2, 2, 2, 2, 0, 0, 0, 0, mode)()
    want = ref_pool(x, 4, 4, 3, 2, 2, 2, 2, 0, 0, 0, 0, mode)
    assert sim.spad_a[dst : dst + 12].tolist() == want


@pytest.mark.parametrize("op", ["TRELU", "TCLAMP"])
@pytest.mark.parametrize("shift", [-3, 0, 3, 20])
def test_clamp_over_its_own_source(op: str, shift: int) -> None:
    rng = np.random.default_rng(abs(shift))
    x = [int(v) for v in rng.integers(-1000, 1000, 16)]
    sim = _sim()
    sim.spad_a[10:26] = x
    args = (10 + shift, 10, 16) + ((-300, 400) if op == "TCLAMP" else ())
    _build(sim, getattr(isa.Op, op), *args)()
    lo, hi = (-300, 400) if op == "TCLAMP" else (0, None)
    want = [max(v, lo) if hi is None else min(max(v, lo), hi) for v in x]
    assert sim.spad_a[10 + shift : 26 + shift].tolist() == want


def test_requantc_bad_parameter_faults_as_before() -> None:
    sim = _sim()
    sim.spad_c[:4] = [5, 6, 7, 8]
    sim.spad_c[40:44] = [3, -1, 2, 2]  # the multiplier of channel 1 is negative
    fn = _build(sim, isa.Op.REQUANTC, 0, 0, 2, 2, 40, 8)
    with pytest.raises(Exception, match=r"REQUANTC multiplier of channel 1 \(C\[41\]\) = -1"):
        fn()


# ---- straight-line programs: the compiled run loop against the numpy closures -----------------------------------


@settings(max_examples=200, deadline=None)
@given(st.data())
def test_compiled_runs_match_the_closures(data: st.DataObject) -> None:
    """Random straight-line tensor programs (two to eight instructions, so that they run as one compiled run) leave
    the same machine state, flags, statistics and faults with the compiled loops as with the numpy closures, over
    three runs of one simulator with different memory images and bases (a negative base makes DMA fault)."""
    body = [tensor_instruction(data) for _ in range(data.draw(st.integers(2, 8)))]
    text = ".text\n    LOAD P1, [P0 + 0]\n" + "\n".join(f"    {line}" for line in body) + "\n    HALT\n"
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1)))
    images = []
    for _ in range(3):
        img = rng.integers(-W, W, 400, endpoint=True)
        img[0] = rng.choice([0, 0, 3, -2])
        images.append(img)
    a0 = rng.integers(-(10**6), 10**6, 260)
    c0 = rng.integers(-(2**40), 2**40, 340)
    c0[300:304] = rng.integers(0, isa.MULT_MAX, 4)  # valid per-channel multipliers and shifts at C[300..307]
    c0[304:308] = rng.integers(0, 40, 4)
    w0 = rng.integers(-2, 3, 200)
    states = []
    for fused in (False, True):
        sim = Simulator(assemble(text, "prog.pasm"), fused=fused)
        got = []
        for img in images:
            sim.reset()
            sim.mem[:400] = img
            sim.spad_a[:260], sim.spad_c[:340], sim.spad_w[:200] = a0, c0, w0
            try:
                sim.run()
                err = None
            except Exception as e:  # noqa: BLE001 - the fault message is part of the compared state
                err = str(e)
            got.append(
                (
                    err,
                    sim.steps,
                    sim.flags,
                    sim.spad_a[:400].tolist(),
                    sim.spad_c[:400].tolist(),
                    sim.spad_w[:400].tolist(),
                    sim.mem[:600].tolist(),
                )
            )
        got.append((sim.zero_weights.tolist(), sim.zero_macs.tolist(), len(sim._runs)))
        states.append(got)
    event(f"compiled runs: {states[1][-1][2]}")
    event(f"faulted: {sum(g[0] is not None for g in states[1][:-1])} of 3")
    assert states[0][:-1] == states[1][:-1]
    assert states[0][-1][:2] == states[1][-1][:2]


# ---- large vector and depthwise instructions: the compiled loops against the ISA's plain executor ---------------


def _against_executor(op: isa.Op, args: tuple[int, ...], setup: dict, gemm: str = "auto") -> Simulator:
    """Run one instruction through the simulator's closure (compiled loops) and the executor's rule on the same
    scratchpads: the same A, C and S."""
    sim = Simulator(assemble("HALT\n", "case.pasm"), fused=True, gemm=gemm)
    preset(sim, setup)
    _build(sim, op, *args)()
    ref = executed(op, *args, setup=setup)
    for name, got, want in (("A", sim.spad_a, ref.A), ("C", sim.spad_c, ref.C)):
        if not np.array_equal(got, want):
            i = int(np.flatnonzero(got != want)[0])
            raise AssertionError(f"{op.name}: {name}[{i}] = {int(got[i])}, the executor has {int(want[i])}")
    assert bool(sim.flags & 32) == bool(ref.flag_bits & 32), f"{op.name}: S differs"
    return sim


_I64 = 2**63 - 1


@settings(max_examples=150, deadline=None)
@given(st.data())
def test_emul_loop_matches_the_executor(data: st.DataObject) -> None:
    """Products past int64 (saturated at ACC_MAX), past the int64 rounding path (31-bit halves), every shift, and a
    destination over a source, beside them or overlapping them shifted."""
    n = data.draw(st.integers(1, 12))
    big = data.draw(st.sampled_from([100, 10**6, W, 2**40, ACC, _I64]))
    xs = data.draw(st.lists(st.integers(-big, big) | st.sampled_from([0, 1, -1]), min_size=2 * n, max_size=2 * n))
    mult = data.draw(st.integers(0, isa.MULT_MAX) | st.sampled_from([0, 1, isa.MULT_MAX]))
    shift = data.draw(st.integers(0, isa.SHIFT_MAX) | st.sampled_from([0, 31, 46, 62]))
    pents = data.draw(st.sampled_from([2, 8, 16]))
    dst = data.draw(st.sampled_from([0, n, 2 * n, 1, n + 1, 3 * n]))
    _against_executor(isa.Op.EMUL, (dst, 0, n, n, mult, shift, pents), {"A@0": xs})


@pytest.mark.parametrize(
    ("n", "big", "shift", "dst"),
    [
        (5000, 3000, 46, 0),  # past one chunk of the loop without saturation, in place over the first source
        (4097, 3000, 12, 4097),  # a shift below 31, in place over the second source
        (2100, 10**10, 46, 9000),  # products past ACC_MAX: the saturating loop, apart from both sources
        (2049, 3000, 0, 1),  # a destination overlapping a source shifted by one (not the compiled loop)
    ],
)
def test_emul_loop_matches_the_executor_on_long_vectors(n: int, big: int, shift: int, dst: int) -> None:
    """Vectors longer than the loop's chunk, with and without saturating products, in place and apart."""
    rng = np.random.default_rng(n)
    xs = [int(v) for v in rng.integers(-big, big + 1, 2 * n)]
    xs[n - 1], xs[2 * n - 1] = big, -big
    _against_executor(isa.Op.EMUL, (dst, 0, n, n, 431870071, shift, 8), {"A@0": xs})


@settings(max_examples=150, deadline=None)
@given(st.data())
def test_tlut_loop_matches_the_executor(data: st.DataObject) -> None:
    """Inputs below, inside and past the table, a destination over the source, over the table or apart."""
    n = data.draw(st.integers(1, 9))
    count = data.draw(st.integers(1, 12))
    lo = data.draw(st.integers(-20, 20))
    xs = data.draw(st.lists(st.integers(lo - 5, lo + n + 5) | st.sampled_from([-W, W]), min_size=count, max_size=count))
    table = data.draw(st.lists(st.integers(-W, W), min_size=n, max_size=n))
    src, tab = 0, 40
    dst = data.draw(st.sampled_from([0, 1, count, 40, 41, 38, 60]))
    _against_executor(isa.Op.TLUT, (dst, src, count, tab, lo, n), {"A@0": xs, "A@40": table})


@pytest.mark.parametrize(
    ("ih", "iw", "ch", "k", "s", "pads", "big"),
    [
        (24, 23, 64, 3, 1, (1, 1, 1, 1), 10**5),  # 3x3 same padding, past the direct-loop size of dense CONVs
        (25, 26, 40, 3, 2, (0, 1, 1, 0), 10**5),  # stride 2, odd sizes, uneven padding
        (17, 19, 24, 5, 1, (2, 2, 2, 2), W),  # word-range inputs: float64 sums
        (6, 7, 5, 1, 1, (0, 0, 0, 0), 3),  # 1x1 taps, small values
        (30, 33, 16, 3, 2, (1, 1, 1, 1), 195312),  # stride 2, the input in phases (fewer than 64 channels)
        (21, 20, 64, 3, 3, (1, 0, 2, 1), 195312),  # stride 3, 64 channels: runs 3*64 apart
        (20, 19, 72, 7, 2, (3, 3, 3, 3), W),  # 7x7 stride 2 (taps three, three and one), float64 sums
    ],
)
@pytest.mark.parametrize("acc", [0, 1])
def test_depthwise_conv_loop_matches_the_executor(
    ih: int, iw: int, ch: int, k: int, s: int, pads: tuple[int, int, int, int], big: int, acc: int
) -> None:
    rng = np.random.default_rng(ih * iw + acc)
    x = rng.integers(-big, big, ih * iw * ch, endpoint=True)
    w = rng.choice([-2, -1, 0, 1, 2], ch * k * k)
    oh, ow = isa.conv_out(ih, pads[0], pads[2], k, s), isa.conv_out(iw, pads[1], pads[3], k, s)
    base = rng.integers(-ACC, ACC, oh * ow * ch, endpoint=True) if acc else np.zeros(1, np.int64)
    args = (0, 0, 0, ih, iw, ch, ch, k, k, s, s, *pads, ch, acc)
    sim = _against_executor(isa.Op.CONV, args, {"A@0": x, "W@0": w, "C@0": base})
    assert sim.zero_weights[0] == int((w == 0).sum())


@settings(max_examples=80, deadline=None)
@given(st.data())
def test_depthwise_rows_match_the_executor(data: st.DataObject) -> None:
    """The depthwise loop's whole output rows (from kernels._DW_ROWS outputs; smaller CONVs pixel by pixel):
    strides 1 to 3 with the input in phases (fewer than kernels._DW_PHASED channels) or in runs sw*oc apart, three
    taps at once over the columns they all reach and one at a time at the edges, padding on either side, int32
    and float64 sums, any base."""
    ch = data.draw(st.integers(1, 100))
    kh, kw = data.draw(st.integers(1, 5)), data.draw(st.integers(1, 7))
    sh, sw = data.draw(st.integers(1, 3)), data.draw(st.integers(1, 3))
    ih, iw = data.draw(st.integers(kh, kh + 6)), data.draw(st.integers(kw, kw + 40))
    pt, pb = data.draw(st.integers(0, kh - 1)), data.draw(st.integers(0, kh - 1))
    pl, pr = data.draw(st.integers(0, kw - 1)), data.draw(st.integers(0, kw - 1))
    big = data.draw(st.sampled_from([3, 10**5, W]))
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1)))
    x = rng.integers(-big, big, ih * iw * ch, endpoint=True)
    x[rng.random(x.size) < 0.05] = big  # some at the extreme
    w = rng.integers(-2, 2, ch * kh * kw, endpoint=True)
    acc = data.draw(st.integers(0, 1))
    n_out = isa.conv_out(ih, pt, pb, kh, sh) * isa.conv_out(iw, pl, pr, kw, sw) * ch
    base = rng.integers(-ACC, ACC, n_out, endpoint=True) if data.draw(st.booleans()) else rng.integers(-9, 9, n_out)
    args = (0, 0, 0, ih, iw, ch, ch, kh, kw, sh, sw, pt, pl, pb, pr, ch, acc)
    sim = _against_executor(isa.Op.CONV, args, {"A@0": x, "W@0": w, "C@0": base})
    assert sim.zero_weights[0] == int((w == 0).sum())


@pytest.mark.skipif(not intgemm.available(), reason="torch's int8 matrix product is not available")
@settings(max_examples=40, deadline=None)
@given(st.data())
def test_int8_conv_digit_patches_match_the_executor(data: st.DataObject) -> None:
    """The int8 CONV's digit patch matrix (made by one compiled call): odd sizes, strides, uneven padding, 1x1
    taps, one to five digits, a base that saturates."""
    ih, iw = data.draw(st.integers(1, 9)), data.draw(st.integers(1, 9))
    ic, oc = data.draw(st.integers(1, 6)), data.draw(st.integers(1, 5))
    kh, kw = data.draw(st.integers(1, min(ih, 4))), data.draw(st.integers(1, min(iw, 4)))
    sh, sw = data.draw(st.integers(1, 3)), data.draw(st.integers(1, 3))
    pt, pb = data.draw(st.integers(0, kh - 1)), data.draw(st.integers(0, kh - 1))
    pl, pr = data.draw(st.integers(0, kw - 1)), data.draw(st.integers(0, kw - 1))
    big = data.draw(st.sampled_from([127, 195312, 2**31, W]))
    x = data.draw(st.lists(st.integers(-big, big), min_size=ih * iw * ic, max_size=ih * iw * ic))
    w = data.draw(st.lists(st.integers(-2, 2), min_size=oc * kh * kw * ic, max_size=oc * kh * kw * ic))
    acc = data.draw(st.integers(0, 1))
    oh, ow = isa.conv_out(ih, pt, pb, kh, sh), isa.conv_out(iw, pl, pr, kw, sw)
    base = data.draw(st.lists(st.integers(-ACC, ACC), min_size=oh * ow * oc, max_size=oh * ow * oc))
    args = (0, 0, 0, ih, iw, ic, oc, kh, kw, sh, sw, pt, pl, pb, pr, 1, acc)
    _against_executor(isa.Op.CONV, args, {"A@0": x, "W@0": w, "C@0": base}, gemm="int8")


_WIDTH_PROBE = """
import sys
import numpy as np
if sys.argv[1] == "after":  # the process compiled with numba before pcc's loops
    import numba
    numba.njit(lambda v: v + 1)(1)
from pcc.runtime import kernels
kernels.extremes(np.arange(5))
import numba
print(numba.config.CPU_FEATURES)
"""


@pytest.mark.parametrize("case", ["default", "user", "after"])
def test_vector_width_is_chosen_only_where_nothing_else_chose(case: str) -> None:
    # the loops ask LLVM for 512-bit vectors on AVX-512 CPUs (kernels._wide_vectors), but never override a
    # feature string the user set or one numba's code generator already uses
    import os
    import subprocess
    import sys

    import llvmlite.binding as ll

    host = ll.get_host_cpu_features().flatten()
    env = {k: v for k, v in os.environ.items() if not k.startswith("NUMBA_CPU")}
    if case == "user":
        env["NUMBA_CPU_FEATURES"] = host
    out = subprocess.run(
        [sys.executable, "-c", _WIDTH_PROBE, case], env=env, capture_output=True, text=True, check=True, timeout=300
    ).stdout.strip()
    if case == "default" and "+avx512f" in host.split(","):
        assert out == host + ",-prefer-256-bit"
    elif case == "user":
        assert out == host
    else:
        assert out == "None"
