"""Data movement lowered to pent.gather (the map from the float op's own kernel on index arrays): concat of
differently scaled inputs, split, slice, channel shuffle, pad in every mode, expand, gather by constant
indices.  The simulator equals the pent reference bit for bit (tiled and not), and a pure rearrangement loses
nothing against float beyond the inputs' own rounding."""

from __future__ import annotations

import numpy as np
import pytest
from compile_helpers import Builder, compile_sim, sim_matches_reference

from pcc import pent_reference
from pcc.dialects import nn, pent, pent_move
from pcc.ir import Location, Module, TensorType


def _pentary(b: Builder, name: str, shape: tuple[int, ...], s: float = 0.25) -> object:
    return b.w(name, shape, data=(b.rng.integers(-2, 3, shape) * s).astype(np.float32))


def dense_shuffle(seed: int, hw: int = 5) -> Module:
    """DenseNet-style concat, a ShuffleNet channel shuffle, a split, slices and pads, after two convs."""
    b = Builder("mv", seed)
    x = b.arg("x", (1, 3, hw, hw))
    c1 = b.op(nn.Conv2d, [x, _pentary(b, "w1", (4, 3, 3, 3))], "c1", pads=[1, 1, 1, 1])
    c1 = b.op(nn.Relu, [c1], "r1")
    c2 = b.op(nn.Conv2d, [c1, _pentary(b, "w2", (4, 4, 3, 3), 0.5)], "c2", pads=[1, 1, 1, 1])
    cat = b.op(nn.Concat, [x, c1, c2], "cat", axis=1)  # 11 channels, three scales
    sh = b.op(nn.Reshape, [b.op(nn.Slice, [cat], "s10", starts=[0], ends=[10], axes=[1])], "g", shape=[1, 2, 5, hw, hw])
    sh = b.op(nn.Transpose, [sh], "shuffle", perm=[0, 2, 1, 3, 4])
    sh = b.op(nn.Reshape, [sh], "ung", shape=[1, 10, hw, hw])
    halves = nn.Split([sh], [sh.type, sh.type], {"axis": 1, "split": [4, 6]}, None)
    for r, t in zip(halves.results, halves.infer_types(), strict=True):
        r.type = t
    b.g.append(halves)
    lo, hi = halves.results
    pr = b.op(nn.Pad, [lo], "reflect", pads=[0, 0, 1, 2, 0, 0, 2, 1], mode="reflect")
    pe = b.op(nn.Pad, [hi], "edge", pads=[0, 0, 1, 1, 0, 0, 1, 1], mode="edge")
    pc = b.op(nn.Pad, [hi], "const", pads=[0, 0, 0, 1, 0, 0, 2, 0], value=0.5)
    st = b.op(nn.Slice, [pc], "strided", starts=[hw, 0], ends=[0, 100], axes=[2, 3], steps=[-2, 2])
    return b.done(pr, pe, st)


@pytest.mark.parametrize("pents", [4, 8])
def test_movement_bit_exact(tmp_path, pents: int) -> None:  # noqa: ANN001
    # without fold-moves, so that the concat is a gather of its own (fold-moves merges it with the shuffle)
    m, compiled, prog = compile_sim(dense_shuffle(pents), tmp_path, act_pents=pents, fold_moves=False)
    kinds = {op.name for op in m.main.body}
    lines = compiled.asm.splitlines()
    at = next(i for i, line in enumerate(lines) if line.startswith("; @layer cat | pent.gather"))
    body = [line.split()[0] for line in lines[at + 2 :] if not line.startswith(";")][:8]
    dma = body[: next((i for i, w in enumerate(body) if w.startswith(";") or w.endswith(":")), len(body))]
    assert len(dma) <= 6 and "TSTORE" in dma  # the concat: per input one TLOAD at most, one strided TSTORE
    assert "pent.gather" in kinds and not any(k.startswith("nn.") for k in kinds)
    sim_matches_reference(m, prog, seeds=3, scale=2.0)
    m2, _, prog2 = compile_sim(dense_shuffle(pents, 7), tmp_path, act_pents=pents, tile="tile{a-words=120}")
    assert len(list(m2.main.ops_of(pent_move.Gather))) < len(list(m.main.ops_of(pent_move.Gather)))  # merged
    assert any(op.attr("tile")[0] < op.results[0].type.size for op in m2.main.ops_of(pent_move.Gather))
    sim_matches_reference(m2, prog2, seeds=2, scale=2.0)


def test_movement_is_exact_against_float() -> None:
    """A rearrangement of quantized inputs equals the float op on the dequantized inputs (and the constant pad
    value 0.5 is rounded to the result's scale)."""
    from pcc.passes.quantize import quantize_module

    b = Builder("mv", 0)
    x = b.arg("x", (1, 6, 4, 4))
    y = b.op(nn.Transpose, [x], "t", perm=[0, 1, 3, 2])
    y = b.op(nn.Pad, [y], "p", pads=[0, 0, 1, 1, 0, 0, 1, 1], mode="reflect")
    mq = b.done(y)
    xs = {"x": np.random.default_rng(1).standard_normal((1, 6, 4, 4)).astype(np.float32)}
    quantize_module(mq, xs, act_pents=6)
    q_in = mq.main.body[0]
    s = q_in.attr("scale")
    xq = (pent_reference.quantize_input(xs["x"], s, 6) * s).astype(np.float32)
    want = np.pad(xq.transpose(0, 1, 3, 2), ((0, 0), (0, 0), (1, 1), (1, 1)), mode="reflect")
    np.testing.assert_allclose(pent_reference.run(mq, xs)[0], want, rtol=0, atol=1e-6)


def _expand_pick() -> Module:
    b = Builder("eg", 3)
    x = b.arg("x", (1, 4, 1, 3))
    e = b.op(nn.Expand, [x], "expand", shape=[2, 4, 3, 3])
    return b.done(b.op(nn.Gather, [e, b.const("idx", np.array([3, 0, 0, 2], np.int64))], "pick", axis=1))


def test_expand_and_constant_gather_bit_exact(tmp_path) -> None:  # noqa: ANN001
    m, _, prog = compile_sim(_expand_pick(), tmp_path, fold_moves=False)
    assert [op.name for op in m.main.body].count("pent.gather") == 2
    sim_matches_reference(m, prog, seeds=2)
    m, _, prog = compile_sim(_expand_pick(), tmp_path)  # fold-moves: the expand and the pick are one gather
    assert [op.name for op in m.main.body].count("pent.gather") == 1
    sim_matches_reference(m, prog, seeds=2)


def test_a_concat_with_a_constant_takes_the_constant_as_a_weight(tmp_path) -> None:  # noqa: ANN001
    """A class token (a float constant) concatenated to computed rows: the gather reads it from the weights,
    quantized at the concat's scale (bit-exact, and within half a step of the float concat)."""
    b = Builder("tok", 3)
    x = b.arg("x", (4, 6))
    c = b.op(nn.Gemm, [x, _pentary(b, "w", (6, 6))], "proj")
    cls = np.linspace(-1.5, 1.0, 6, dtype=np.float32).reshape(1, 6)
    tok = b.w("cls", cls.shape, data=cls)
    m, _, prog = compile_sim(b.done(b.op(nn.Concat, [tok, c], "cat", axis=0)), tmp_path)
    (g,) = m.main.ops_of(pent_move.Gather)
    assert [v.is_weight for v in g.operands] == [True, True, False]
    sim_matches_reference(m, prog, seeds=2)
    xs = {"x": np.random.default_rng(0).standard_normal((4, 6)).astype(np.float32)}
    (got,) = pent_reference.run(m, xs)
    np.testing.assert_allclose(got[:1], cls, atol=float(np.abs(got).max()) / 40)


@pytest.mark.parametrize("ctm", ["half_pixel", "asymmetric"])
def test_nearest_resize_bit_exact(tmp_path, ctm: str) -> None:  # noqa: ANN001
    b = Builder("up", 2)
    x = b.arg("x", (1, 2, 3, 3))
    c = b.op(nn.Conv2d, [x, _pentary(b, "w", (3, 2, 3, 3))], "c", pads=[1, 1, 1, 1])
    up = nn.Resize([c], [TensorType((1, 3, 6, 6), "f32")], {"scales": [1.0, 1.0, 2.0, 2.0],
                   "coordinate_transformation_mode": ctm}, Location(node="up"))  # fmt: skip
    b.g.append(up)
    m, _, prog = compile_sim(b.done(up.results[0]), tmp_path)
    assert [op.name for op in m.main.body].count("pent.gather") == 1
    sim_matches_reference(m, prog, seeds=2)
    xs = {"x": np.random.default_rng(0).standard_normal((1, 2, 3, 3)).astype(np.float32)}
    vals = pent_reference.run(m, xs, return_all=True)
    c_int = vals[next(op.results[0].name for op in m.main.ops_of(pent.Conv2d))]
    want = np.repeat(np.repeat(c_int, 2, axis=2), 2, axis=3)  # scale 2 in both modes: each pixel twice
    np.testing.assert_array_equal(vals[next(op.results[0].name for op in m.main.ops_of(pent_move.Gather))], want)


@pytest.mark.parametrize("mode", ["DCR", "CRD"])
def test_onnx_depth_space_and_pad_modes_end_to_end(tmp_path, mode: str) -> None:  # noqa: ANN001
    """ONNX DepthToSpace, SpaceToDepth and Pad (constant, reflect, edge) between pentary-exact convs: imported,
    lowered to gathers, simulated; the simulator matches onnxruntime within the activation rounding."""
    import sys
    from pathlib import Path

    pytest.importorskip("onnxruntime")
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "frontends"))
    import onnx
    from onnx import helper
    from onnx_util import model, ort_run

    from pcc.backend.assembler import assemble_file
    from pcc.drivers.compile import compile_model
    from pcc.runtime.simulator import run_program

    rng = np.random.default_rng(4)
    w1 = (rng.integers(-2, 3, (8, 2, 3, 3)) * 0.25).astype(np.float32)
    w2 = (rng.integers(-2, 3, (3, 8, 3, 3)) * 0.25).astype(np.float32)
    nodes = [
        helper.make_node("Conv", ["x", "w1"], ["c1"], pads=[1, 1, 1, 1]),
        helper.make_node("DepthToSpace", ["c1"], ["d2s"], blocksize=2, mode=mode),  # [1, 2, 10, 12]
        helper.make_node("Pad", ["d2s", "p_reflect"], ["pr"], mode="reflect"),  # [1, 2, 12, 14]
        helper.make_node("Pad", ["pr", "p_edge"], ["pe"], mode="edge"),  # [1, 2, 12, 16]
        helper.make_node("Pad", ["pe", "p_const", "fill"], ["pc"], mode="constant"),  # [1, 2, 14, 16]
        helper.make_node("SpaceToDepth", ["pc"], ["s2d"], blocksize=2),  # [1, 8, 7, 8]
        helper.make_node("Conv", ["s2d", "w2"], ["y"], pads=[1, 1, 1, 1]),
    ]
    inits = {
        "w1": w1, "w2": w2, "fill": np.array(0.5, np.float32),
        "p_reflect": np.array([0, 0, 1, 1, 0, 0, 1, 1], np.int64),
        "p_edge": np.array([0, 0, 0, 2, 0, 0, 0, 0], np.int64),
        "p_const": np.array([0, 0, 2, 0, 0, 0, 0, 0], np.int64),
    }  # fmt: skip
    x = rng.standard_normal((1, 2, 5, 6)).astype(np.float32)
    m = model(nodes, {"x": x}, ["y"], 13, inits)
    path = tmp_path / "m.onnx"
    onnx.save(m, path)
    np.savez(tmp_path / "cal.npz", x=rng.standard_normal((8, 2, 5, 6)).astype(np.float32))
    compile_model(path, output=tmp_path / "m.pasm", calibration=tmp_path / "cal.npz", act_pents=8)
    (want,) = ort_run(m, {"x": x})
    got = run_program(assemble_file(tmp_path / "m.pasm"), {"x": x})["y"]
    err = np.abs(got - want).max() / np.abs(want).max()
    assert err < 1e-4, err  # activation rounding only: measured 7.5e-6 (DCR), 1.2e-5 (CRD)
