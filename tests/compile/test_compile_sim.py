"""Compiled programs on the simulator equal the pent reference bit for bit (tiled or not), and the code carries
its layers, I/O declarations and a cycle estimate the profiler confirms."""

from __future__ import annotations

import numpy as np
import pytest
from compile_helpers import Builder, compile_sim, sim_matches_reference, small_cnn

from pcc.dialects import nn
from pcc.runtime.profile import Profile, layer_names


@pytest.mark.parametrize("fuse", [True, False])
def test_small_cnn_bit_exact(tmp_path, fuse: bool) -> None:  # noqa: ANN001
    m, compiled, prog = compile_sim(small_cnn(0), tmp_path, fuse=fuse)
    sim = sim_matches_reference(m, prog)
    prof = Profile(sim)
    assert prof.total.cycles == compiled.cycles * prof.runs  # straight-line code: the estimate is exact
    layers = {r.name for r in prof.rows}
    assert {"conv1", "conv2", "pool", "flatten", "fc"} <= layers
    assert (tmp_path / "model.weights.bin").stat().st_size == len(compiled.blob)
    decl = prog.inputs[0]
    assert decl.name == "x" and decl.shape == (1, 3, 8, 8) and decl.order == (0, 2, 3, 1) and decl.pents == 8


def test_tiled_on_small_scratchpads_bit_exact(tmp_path) -> None:  # noqa: ANN001
    m, compiled, prog = compile_sim(small_cnn(1), tmp_path, tile="tile{a-words=200 w-pents=130 c-words=40}")
    tiles = [op.attr("tile") for op in m.main.body if op.attributes.get("tile")]
    assert any(t[0] < 8 for t in tiles[:2])  # output channels tiled
    sim_matches_reference(m, prog)
    assert len(prog.instructions) > 60


def zoo(seed: int):  # noqa: ANN201
    """Grouped and depthwise convs with strides, avg/global pools, scale-shift, relu6, batch-2 gemms, a
    residual on a gemm, two inputs and two outputs."""
    b = Builder("zoo", seed)
    x = b.arg("x", (1, 4, 9, 7))
    y = b.op(nn.Conv2d, [x, b.w("w1", (8, 2, 3, 3))], "grouped", pads=[1, 0, 1, 2], strides=[2, 1], group=2)
    y = b.op(nn.Clip, [y], "relu6", min=0.0, max=6.0)
    y = b.op(nn.Conv2d, [y, b.w("dw", (8, 1, 3, 3)), b.w("dwb", (8,), 0.1)], "depthwise", pads=[1, 1, 1, 1], group=8)
    y = b.op(nn.ScaleShift, [y, b.w("g", (8,)), b.w("s", (8,))], "affine")
    y = b.op(nn.AvgPool, [y], "avg", kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1], count_include_pad=True)
    y = b.op(nn.MaxPool, [y], "max", kernel_shape=[2, 2], strides=[1, 1], ceil_mode=True)
    y = b.op(nn.GlobalAvgPool, [y], "gap")
    y = b.op(nn.Reshape, [y], "reshape", shape=[2, 4])
    z = b.arg("z", (2, 4))
    h = b.op(nn.Gemm, [y, b.w("fw", (4, 4)), b.w("fb", (4,), 0.1)], "fc1")
    h = b.op(nn.Add, [z, h], "res")
    h2 = b.op(nn.Relu, [b.op(nn.Gemm, [h, b.w("fw2", (6, 4))], "fc2", trans_b=True)], "relu")
    return b.done(h2, h)


@pytest.mark.parametrize("seed", [0, 1])
def test_op_zoo_bit_exact(tmp_path, seed: int) -> None:  # noqa: ANN001
    m, compiled, prog = compile_sim(zoo(seed), tmp_path, act_pents=6)
    names = [op.name for op in m.main.body]
    assert "pent.avg_pool" in names and "pent.clamp" not in names  # relu6 fused into the grouped conv
    sim_matches_reference(m, prog, scale=2.0)
    assert [d.name for d in prog.inputs] == ["x", "z"] and len(prog.outputs) == 2
    m2, _, prog2 = compile_sim(zoo(seed), tmp_path, act_pents=4, tile="tile{a-words=150 c-words=40}")
    sim_matches_reference(m2, prog2, scale=2.0)


@pytest.mark.parametrize("tile", ["tile", "tile{a-words=150 c-words=40}"])
def test_profiled_macs_per_layer_are_the_ops_macs(tmp_path, tile: str) -> None:  # noqa: ANN001
    """The MACs the profiler counts from the executed instructions equal, layer by layer, those the profiling
    rule of each pent op states from its shapes (tiled or not)."""
    from pcc.backend.codegen import layer_name
    from pcc.runtime.profile import op_macs

    m, _, prog = compile_sim(zoo(0), tmp_path, act_pents=6, tile=tile)
    sim = sim_matches_reference(m, prog, seeds=1, scale=2.0)
    prof = Profile(sim)
    want: dict[str, int] = {}
    for op in m.main.body:
        if op.name not in ("pent.quantize", "pent.dequantize"):
            want[layer_name(op)] = want.get(layer_name(op), 0) + op_macs(op) * prof.runs
    got = {r.name: r.macs + r.xbar_macs for r in prof.rows}
    assert got == want and sum(want.values()) > 0


def test_every_instruction_belongs_to_a_layer(tmp_path) -> None:  # noqa: ANN001
    m, compiled, prog = compile_sim(small_cnn(2), tmp_path)
    names = layer_names(prog)
    assert "(program)" not in names[:-1]  # the final HALT is the only unattributed instruction
    text = (tmp_path / "model.pasm").read_text()
    assert text.count("; @layer ") == len(compiled.layers)
    per_layer = {lay.name: lay.cycles for lay in compiled.layers}
    assert sum(per_layer.values()) + 1 == compiled.cycles  # + HALT


def test_packed_weights_round_trip(tmp_path) -> None:  # noqa: ANN001
    m, compiled, prog = compile_sim(small_cnn(3), tmp_path)
    (seg,) = prog.data
    from pcc.pentary import to_digits

    digits = to_digits(seg.words, 16).reshape(-1)
    conv1 = next(op for op in m.main.body if op.name == "pent.conv2d")
    w = m.weight(conv1.operands[1]).transpose(0, 2, 3, 1).reshape(-1)  # [oc][kh][kw][ic]
    text = (tmp_path / "model.pasm").read_text()
    tloadw = next(line for line in text.splitlines() if "TLOADW" in line)
    addr = int(tloadw.split("[P0 + ")[1].split("]")[0]) - seg.addr
    np.testing.assert_array_equal(digits[addr * 16 : addr * 16 + w.size], w)


def _mnemonics(path, layer: str) -> list[str]:  # noqa: ANN001
    """The mnemonics of one layer's instructions in a written .pasm."""
    out, inside = [], False
    for line in path.read_text().splitlines():
        if line.startswith("; @layer "):
            inside = line.split()[2] == layer
        elif inside and line.startswith("    ") and not line.strip().startswith(";"):
            out.append(line.split()[0])
    return out


@pytest.mark.parametrize("perm", [[0, 2, 3, 1], [0, 1, 3, 2], [0, 3, 1, 2]])
def test_flatten_in_any_axis_order_bit_exact(tmp_path, perm: list[int]) -> None:  # noqa: ANN001
    """fold-flatten makes the flatten of small_cnn one contiguous copy; any other axis order (with the gemm weight
    columns in that order) is a gather of strided loads, and the simulator agrees with the pent reference on both."""
    from pass_helpers import pent_int_outputs, random_inputs

    from pcc.backend.assembler import assemble_file
    from pcc.backend.codegen import generate, write_program
    from pcc.dialects import pent

    m, _, prog = compile_sim(small_cnn(0), tmp_path)
    x = random_inputs(m, 5, scale=2.0)
    before = pent_int_outputs(m, x)
    reshape = next(op for op in m.main.body if isinstance(op, pent.Reshape))
    gemm = next(op for op in m.main.body if isinstance(op, pent.Gemm))
    assert reshape.attr("perm") == [0, 2, 3, 1]
    n, c, h, w = reshape.operands[0].type.shape
    if perm == [0, 2, 3, 1]:
        assert _mnemonics(tmp_path / "model.pasm", "flatten") == ["TLOAD", "TSTORE"]
    else:
        name = gemm.operands[1].name or ""
        hwc = m.weight_data[name]
        nchw = hwc.reshape(-1, h, w, c).transpose(0, 3, 1, 2)
        m.weight_data[name] = np.ascontiguousarray(nchw.transpose(perm).reshape(hwc.shape))
        reshape.attributes["perm"] = perm
        write_program(generate(m), tmp_path / "other.pasm")
        prog = assemble_file(tmp_path / "other.pasm")
        assert _mnemonics(tmp_path / "other.pasm", "flatten").count("TLOAD") > 1
    for got, want in zip(pent_int_outputs(m, x), before, strict=True):  # the gemm's integers do not change
        np.testing.assert_array_equal(got, want)
    sim_matches_reference(m, prog)


def test_each_conv_follows_its_bias(tmp_path) -> None:  # noqa: ANN001
    """Code generation puts each row tile's bias broadcast right before the CONV that adds to it, the pair the
    simulator runs as one store (runtime/fuse.py bias_pair)."""
    from pcc.isa import Op
    from pcc.runtime import fuse

    _m, _compiled, prog = compile_sim(small_cnn(4), tmp_path, tile="tile{a-words=200 w-pents=130 c-words=40}")
    ins = prog.instructions
    convs = [j for j, i in enumerate(ins) if i.op == Op.CONV]
    assert len(convs) > 2
    assert all(fuse.bias_pair(ins[j - 1], ins[j]) for j in convs)
