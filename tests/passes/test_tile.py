"""tile: every op gets tiles that fit the scratchpads; smaller scratchpads give more tiles; misfits are errors."""

from __future__ import annotations

import numpy as np
import pytest
from pass_helpers import Builder, pent_int_outputs, random_inputs, run_passes, small_cnn

from pcc.diagnostics import PccError
from pcc.dialects import nn
from pcc.passes.quantize import quantize_module
from pcc.passes.tile import Scratch, in_rows


def quantized(m, fuse: bool = True):  # noqa: ANN001, ANN201
    rng = np.random.default_rng(0)
    cal = {a.name or "": rng.standard_normal((4, *a.type.shape[1:])).astype(np.float32) for a in m.main.args}
    run_passes(m, "canonicalize,fold-batchnorm")
    quantize_module(m, cal)
    return run_passes(m, "fuse,schedule,plan-memory" if fuse else "schedule,plan-memory")


def working_set_fits(op, sp: Scratch) -> None:  # noqa: ANN001
    t = op.attr("tile")
    if op.name == "pent.conv2d":
        ot, rt = t
        _, c, h, w = op.operands[0].type.shape
        o, icg, kh, kw = op.operands[1].type.shape
        ow = op.results[0].type.shape[3]
        g = op.attr("group")
        ct = c if g == 1 else ot // (o // g) * icg
        res = 2 if len(op.operands) > 5 else 1
        assert ot * kh * kw * icg <= sp.w and rt * ow * ot + 2 * ot <= sp.c
        assert in_rows(rt, op.attr("strides")[0], kh, h) * w * ct <= sp.a and res * rt * ow * ot <= sp.a
    elif op.name == "pent.gemm":
        nt, mt = t
        k = op.operands[0].type.shape[1]
        assert nt * k <= sp.w and mt * nt + 2 * nt <= sp.c and mt * k <= sp.a
    elif op.name in ("pent.add",):
        assert 2 * t[0] <= sp.a
    elif t is not None:
        assert t[0] >= 1


@pytest.mark.parametrize("sizes", [(0, 0, 0), (300, 200, 150), (200, 130, 40)])
def test_tiles_fit_and_outputs_unchanged(sizes: tuple[int, int, int]) -> None:
    a, w, c = sizes
    m = quantized(small_cnn(0))
    inputs = random_inputs(m, 1)
    before = pent_int_outputs(m, inputs)
    run_passes(m, f"tile{{a-words={a} w-pents={w} c-words={c}}}")
    sp = Scratch.of(a=a, w=w, c=c)
    for op in m.main.body:
        if op.name not in ("pent.quantize", "pent.dequantize"):
            working_set_fits(op, sp)
    np.testing.assert_array_equal(pent_int_outputs(m, inputs)[0], before[0])
    tiles = {op.loc.node: op.attr("tile") for op in m.main.body if op.loc and op.loc.node}
    if a == 0:
        assert tiles["conv1"] == [8, 8] and tiles["fc"] == [10, 1]  # one tile each on the real machine
    else:
        assert tiles["conv2"][0] < 8 or tiles["conv2"][1] < 8  # really tiled


def test_too_small_scratchpads_are_an_error_at_the_node() -> None:
    m = quantized(small_cnn(0))
    with pytest.raises(PccError, match="cannot lower to the ISA") as e:
        run_passes(m, "tile{a-words=20}")
    assert e.value.loc is not None and e.value.loc.node


def test_isa_field_limits_checked() -> None:
    b = Builder("big")
    x = b.arg("x", (1, 1, 4, 4))
    y = b.op(nn.Conv2d, [x, b.w("w", (2, 1, 3, 3))], "conv", pads=[3, 3, 3, 3])  # pads >= kernel
    m = quantized(b.done(y))
    with pytest.raises(PccError, match="smaller than the kernel"):
        run_passes(m, "tile")
