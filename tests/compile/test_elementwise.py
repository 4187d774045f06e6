"""Broadcasting elementwise arithmetic (pent.mul: EMUL; pent.eadd: EADD, with EMUL by -1 for a difference) and
the table activations: the simulator equals the pent reference bit for bit on random inputs and shapes (tiled
and not), and the error against float stays small at 4, 6 and 8 pents (docs/compiler.md states it)."""

from __future__ import annotations

import numpy as np
import pytest
from compile_helpers import Builder, compile_sim, sim_matches_reference

from pcc import interpreter, pent_reference
from pcc.backend import codegen_binary
from pcc.backend.codegen_binary import blocks, gather_map
from pcc.dialects import nn, pent, pent_binary
from pcc.ir import Module


def test_gather_blocks_by_hand() -> None:
    # a per-channel [1, 3, 1, 1] operand of a channels-last [1, 3, 2, 2] result: one block, stride 0
    src = gather_map((1, 3, 1, 1), (1, 3, 2, 2))
    np.testing.assert_array_equal(src, [0, 1, 2] * 4)
    assert blocks(src) == [(0, 4, 3, 0)]
    # a spatial [1, 1, 2, 2] operand: each pixel's value repeated over the 3 channels
    src = gather_map((1, 1, 2, 2), (1, 3, 2, 2))
    np.testing.assert_array_equal(src, [0, 0, 0, 1, 1, 1, 2, 2, 2, 3, 3, 3])
    assert blocks(src) == [(0, 3, 1, 0), (3, 3, 1, 0), (6, 3, 1, 0), (9, 3, 1, 0)]
    assert blocks(np.arange(5)) == [(0, 1, 5, 0)]
    assert blocks(np.array([4, 5, 0, 1, 7])) == [(0, 2, 2, -4), (4, 1, 1, 0)]


@pytest.mark.parametrize("seed", range(6))
def test_blocks_reproduce_the_gather(seed: int) -> None:
    rng = np.random.default_rng(seed)
    rank = int(rng.integers(1, 5))
    out = tuple(int(d) for d in rng.integers(1, 5, rank))
    src_shape = tuple(d if rng.random() < 0.5 else 1 for d in out)[int(rng.integers(0, rank)) :]
    src = gather_map(src_shape, out)
    got = np.empty_like(src)
    for start, rows, cols, stride in blocks(src):
        for i in range(rows):
            got[start + i * cols : start + (i + 1) * cols] = src[start] + i * stride + np.arange(cols)
    np.testing.assert_array_equal(got, src)


def _plain_blocks(src: np.ndarray) -> list[tuple[int, int, int, int]]:
    """The greedy split of :func:`blocks` word by word: the contiguous run at ``i`` is the columns, the step to
    the next word the stride, and rows follow while every word of the next row is where the stride puts it."""
    u9, smax = codegen_binary._U9, codegen_binary._STRIDE
    s, n, out, i = [int(v) for v in src], len(src), [], 0
    while i < n:
        cols = 1
        while i + cols < n and cols < u9 and s[i + cols] == s[i] + cols:
            cols += 1
        rows, stride = 1, 0
        if i + cols < n and abs(s[i + cols] - s[i]) <= smax:
            stride = s[i + cols] - s[i]
            r_max = min((n - i) // cols, u9, max(1, 65536 // cols))
            while rows < r_max and all(s[i + rows * cols + j] == s[i] + rows * stride + j for j in range(cols)):
                rows += 1
        out.append((i, rows, cols, stride if rows > 1 else 0))
        i += rows * cols
    return out


@pytest.mark.parametrize("seed", range(4))
def test_blocks_equal_the_plain_greedy_split(seed: int) -> None:
    rng = np.random.default_rng(seed)
    cases = [np.arange(70_000), np.zeros(70_000, np.int64), np.arange(0, 140_000, 2), np.array([0, 10**7, 5, 6])]
    for _ in range(200):
        shape = tuple(int(d) for d in rng.integers(1, 7, 3))
        perm = np.arange(int(np.prod(shape))).reshape(shape).transpose(rng.permutation(3)).ravel()
        out = tuple(int(d) for d in rng.integers(1, 6, 3))
        cast = gather_map(tuple(d if rng.random() < 0.5 else 1 for d in out), out)
        runs = [np.arange(int(rng.integers(1, 60))) * int(rng.integers(0, 3)) + int(rng.integers(0, 999)) for _ in "ab"]
        cases += [perm[int(rng.integers(0, 3)) :], cast, np.concatenate(runs), np.repeat(perm, int(rng.integers(1, 4)))]
    for src in cases:
        assert blocks(src) == _plain_blocks(src)


def pentary(b: Builder, name: str, shape: tuple[int, ...], s: float = 0.2) -> object:
    """A weight exactly on the pentary grid ``s x {-2..2}`` (quantization keeps it as it is)."""
    return b.w(name, shape, data=(b.rng.integers(-2, 3, shape) * s).astype(np.float32))


def se_block(seed: int, kind: str = "mul", shape: tuple[int, ...] = (1, 3, 6, 6)) -> Module:
    """conv, then its product (or sum/difference) with a per-channel gate computed from its global average."""
    b = Builder("se", seed)
    n, c, h, w = shape
    x = b.arg("x", shape)
    y = b.op(nn.Conv2d, [x, pentary(b, "w1", (6, c, 3, 3))], "conv", pads=[1, 1, 1, 1])
    p = b.op(nn.GlobalAvgPool, [y], "gap")
    s = b.op(nn.Conv2d, [p, pentary(b, "w2", (6, 6, 1, 1), 0.5)], "fc")
    s = b.op(nn.Sigmoid, [s], "gate")
    if kind == "mul":
        z = b.op(nn.Mul, [y, s], "scale")
    elif kind == "add":
        z = b.op(nn.Add, [s, y], "add")  # the broadcast operand first
    else:
        z = b.op(nn.Sub, [y, s], "sub")
    z = b.op(nn.Div, [z, b.const("two", np.array(2.0, np.float32))], "half")
    k = b.op(nn.Mul, [z, b.const("k", np.linspace(-1, 1, 6 * h * w).reshape(1, 6, h, w).astype(np.float32))], "k")
    return b.done(k, z)


@pytest.mark.parametrize("kind", ["mul", "add", "sub"])
@pytest.mark.parametrize("pents", [4, 8])
def test_broadcast_ops_bit_exact(tmp_path, kind: str, pents: int) -> None:  # noqa: ANN001
    m, _, prog = compile_sim(se_block(pents, kind), tmp_path, act_pents=pents)
    ops = list(m.main.ops_of(pent_binary.Mul)) + list(m.main.ops_of(pent_binary.Eadd))
    assert len(ops) == 3
    sim_matches_reference(m, prog, seeds=3, scale=2.0)
    # a small scratchpad A: several tiles per op, each gathering the broadcast operand
    big = se_block(pents, kind, (1, 3, 24, 24))
    m2, _, prog2 = compile_sim(big, tmp_path, act_pents=pents, tile="tile{a-words=5000}")
    assert all(op.attr("tile")[0] < op.results[0].type.size for op in m2.main.ops_of(pent_binary.Broadcast))
    sim_matches_reference(m2, prog2, seeds=2, scale=2.0)


@pytest.mark.parametrize("seed", range(4))
def test_random_broadcast_shapes_bit_exact(tmp_path, seed: int) -> None:  # noqa: ANN001
    rng = np.random.default_rng(seed)
    out = tuple(int(d) for d in rng.integers(1, 5, 4))
    other = tuple(d if rng.random() < 0.5 else 1 for d in out)[int(rng.integers(0, 4)) :]
    b = Builder("bc", seed)
    x, y = b.arg("x", out), b.arg("y", other)
    prod = b.op(nn.Mul, [y, x], "mul")
    diff = b.op(nn.Sub, [y, prod], "sub")
    m, _, prog = compile_sim(b.done(diff, prod), tmp_path, act_pents=int(rng.choice([4, 6, 8])))
    sim_matches_reference(m, prog, seeds=2, scale=1.5)


def _relative_error(m_float: Module, m_pent: Module, x: dict) -> float:
    want = interpreter.run(m_float, x)
    got = pent_reference.run(m_pent, x)
    errs = []
    for v, g in zip(m_float.main.outputs, got, strict=True):
        w = want[v.name or ""].astype(np.float64)
        errs.append(np.abs(g - w).max() / max(np.abs(w).max(), 1e-12))
    return max(errs)


@pytest.mark.parametrize("pents, bound", [(4, 0.02), (6, 1e-3), (8, 3e-4)])
def test_broadcast_error_against_float(pents: int, bound: float) -> None:
    """Output error relative to the output range (the SE block, mul form, pentary-exact weights, calibrated on
    its input): measured 6.5e-3, 2.1e-4 and 9.6e-5 at 4, 6 and 8 pents (docs/compiler.md)."""
    from pcc.passes.quantize import quantize_module

    m = se_block(0)
    x = {"x": np.random.default_rng(5).standard_normal((1, 3, 6, 6)).astype(np.float32)}
    mq = se_block(0)
    quantize_module(mq, x, act_pents=pents)
    assert any(isinstance(op, pent_binary.Mul) for op in mq.main.body)
    assert _relative_error(m, mq, x) < bound


def unary_model(cls: type, n: int = 2048, **attrs: object) -> Module:
    b = Builder("act", 0)
    x = b.arg("x", (1, n))
    return b.done(b.op(cls, [x], "act", **attrs))


TABLE_CASES = [
    (nn.Tanh, {}),
    (nn.HardSigmoid, {"alpha": 0.2, "beta": 0.5}),
    (nn.HardSwish, {}),
    (nn.Erf, {}),
    (nn.Gelu, {}),
    (nn.Gelu, {"approximate": "tanh"}),
    (nn.LeakyRelu, {"alpha": 0.1}),
    (nn.Exp, {}),
    (nn.Elu, {"alpha": 1.0}),
    (nn.Selu, {}),
    (nn.Celu, {"alpha": 0.5}),
    (nn.Softplus, {}),
    (nn.Softsign, {}),
    (nn.Mish, {}),
]


@pytest.mark.parametrize("cls, attrs", TABLE_CASES, ids=lambda c: getattr(c, "name", str(c)))
@pytest.mark.parametrize("pents", [4, 6, 8])
def test_table_activation_error(cls: type, attrs: dict, pents: int) -> None:
    """Every table activation: max error relative to the output range, on inputs in [-4, 4] (calibrated there)."""
    from pcc.passes.quantize import quantize_module

    x = {"x": np.linspace(-4, 4, 2048, dtype=np.float32)[None]}
    m = unary_model(cls, **attrs)
    mq = unary_model(cls, **attrs)
    quantize_module(mq, x, act_pents=pents)
    assert [op.name for op in mq.main.body] == ["pent.quantize", "pent.lut", "pent.dequantize"]
    assert _relative_error(m, mq, x) < {4: 0.02, 6: 2e-3, 8: 1.5e-3}[pents]  # docs/compiler.md


def test_a_discontinuous_table_activation_errs_only_at_its_jump() -> None:
    """ThresholdedReLU (x if x > 1 else 0) at 4 pents: an input within half a step of the threshold may land on
    the other side (an error of the jump, 1); away from it the error is the output's rounding."""
    from pcc.passes.quantize import quantize_module

    x = {"x": np.linspace(-4, 4, 2048, dtype=np.float32)[None]}
    mq = unary_model(nn.ThresholdedRelu, alpha=1.0)
    quantize_module(mq, x, act_pents=4)
    s_x = mq.main.body[0].attr("scale")
    got = pent_reference.run(mq, x)[0][0]
    want = np.where(x["x"][0] > 1, x["x"][0], 0)
    far = np.abs(x["x"][0] - 1) > s_x
    assert np.abs(got - want)[far].max() < 0.02 * 4
    assert np.abs(got - want).max() <= 1 + s_x


def silu_model(seed: int) -> Module:
    """SiLU as x * sigmoid(x), and hard-swish as x * hard_sigmoid(x), after a conv."""
    b = Builder("silu", seed)
    x = b.arg("x", (1, 3, 5, 5))
    y = b.op(nn.Conv2d, [x, b.w("w1", (4, 3, 3, 3))], "conv", pads=[1, 1, 1, 1])
    s = b.op(nn.Mul, [y, b.op(nn.Sigmoid, [y], "sig")], "silu")
    h = b.op(nn.Mul, [b.op(nn.HardSigmoid, [s], "hsig", alpha=1 / 6, beta=0.5), s], "hswish")
    t = b.op(nn.Tanh, [h], "tanh")
    return b.done(b.op(nn.Gemm, [b.op(nn.Flatten, [t], "flat"), b.w("fw", (5, 100))], "fc", trans_b=True))


@pytest.mark.parametrize("pents", [4, 6, 8])
def test_self_products_are_one_table_bit_exact(tmp_path, pents: int) -> None:  # noqa: ANN001
    m, _, prog = compile_sim(silu_model(pents), tmp_path, act_pents=pents, fuse="fuse{table=false}")
    luts = list(m.main.ops_of(pent.Lut))
    assert len(luts) == 3  # silu, hard-swish, tanh: the sigmoid and hard-sigmoid fused away
    assert not list(m.main.ops_of(pent_binary.Mul))
    sim_matches_reference(m, prog, seeds=3, scale=2.0)
    # with the table fusion, SiLU's table moves onto the conv (hard-swish and tanh follow a lut: they stay)
    m, _, prog = compile_sim(silu_model(pents), tmp_path, act_pents=pents)
    assert len(list(m.main.ops_of(pent.Lut))) == 2 and m.main.ops_of(pent.Conv2d)[0].attr("act") == "lut"
    sim_matches_reference(m, prog, seeds=3, scale=2.0)


def test_reduce_mean_over_space_is_a_global_pool(tmp_path) -> None:  # noqa: ANN001
    b = Builder("rm", 1)
    x = b.arg("x", (1, 3, 4, 4))
    y = b.op(nn.Conv2d, [x, b.w("w1", (5, 3, 3, 3))], "conv", pads=[1, 1, 1, 1])
    keep = b.op(nn.ReduceMean, [y], "mean", axes=[2, 3], keepdims=True)
    flat = b.op(nn.ReduceMean, [y], "mean2", axes=[-1, -2], keepdims=False)
    m, _, prog = compile_sim(b.done(keep, flat), tmp_path)
    # both means are the global pool (the two equal pools may be merged, the flat one then a reshape of it)
    assert list(m.main.ops_of(pent.AvgPool)) and not [op for op in m.main.body if op.name == "pent.reduce"]
    sim_matches_reference(m, prog, seeds=2)


def compositions(kind: str) -> Module:
    """max / min of two operands (one broadcast or constant), PReLU with a per-channel and a scalar slope."""
    b = Builder("mm", 0)
    x, z = b.arg("x", (1, 4, 3, 3)), b.arg("z", (1, 4, 1, 1))
    if kind == "max":
        y = b.op(nn.Max, [x, z], "mx")
    elif kind == "min":
        y = b.op(nn.Min, [x, b.const("c", np.array([0.3], np.float32))], "mn")
    elif kind == "prelu":
        y = b.op(nn.PRelu, [x, b.const("sl", np.array([0.1, -0.2, 0.5, 1.5], np.float32).reshape(4, 1, 1))], "pr")
    else:
        y = b.op(nn.PRelu, [x, b.const("sl", np.array([0.25], np.float32))], "pr1")
    return b.done(b.op(nn.Add, [y, z], "plus"))


@pytest.mark.parametrize("kind", ["max", "min", "prelu", "prelu-scalar"])
def test_max_min_prelu_bit_exact_and_close(tmp_path, kind: str) -> None:  # noqa: ANN001
    """Compositions of EADD, TRELU and EMUL (a table for a scalar slope): bit-exact, and measured 4.9e-6
    (max), 2.4e-6 (min), 5.0e-6 (prelu), 2.7e-4 (scalar prelu, a table) of the range at 8 pents."""
    from pcc.passes.quantize import quantize_module

    m, _, prog = compile_sim(compositions(kind), tmp_path)
    assert (kind == "prelu-scalar") == any(op.name == "pent.lut" for op in m.main.body)
    sim_matches_reference(m, prog, seeds=3)
    rng = np.random.default_rng(1)
    xs = {"x": rng.standard_normal((1, 4, 3, 3)).astype(np.float32), "z": rng.standard_normal((1, 4, 1, 1))}
    xs["z"] = xs["z"].astype(np.float32)
    f, mq = compositions(kind), compositions(kind)
    quantize_module(mq, xs, act_pents=8)
    assert _relative_error(f, mq, xs) < 1e-3
