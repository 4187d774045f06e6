"""Products of two activations (``pent.matmul`` on AMATMUL) and attention: the simulator equals the pent reference
bit for bit on batched, broadcast and transposed products (tiled and not), and pentary-exact attention blocks
(torch, weights projected to ``s_c x {-2..2}``) match onnxruntime within 1e-2 of the output's range at 6 and 8
pents (measured in docs/compiler.md)."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
from compile_helpers import Builder, compile_sim, sim_matches_reference

from pcc import interpreter, pent_reference
from pcc.dialects import nn, pent_matmul, pent_move
from pcc.ir import Module

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "frontends"))

CASES = [  # (a's shape, b's shape, transpose b's last two axes first)
    ((2, 4, 6), (2, 6, 5), False),  # batched
    ((1, 3, 4, 8), (1, 3, 8, 4), False),  # heads
    ((2, 1, 4, 6), (1, 3, 6, 5), False),  # both batch axes broadcast
    ((3, 4, 6), (6, 5), False),  # a 2-D right operand shared by the batch
    ((1, 2, 5, 8), (1, 2, 5, 8), True),  # Q K^T
]


def product_model(sa: tuple[int, ...], sb: tuple[int, ...], trans: bool) -> Module:
    b = Builder("mm", 0)
    x, y = b.arg("x", sa), b.arg("y", sb)
    if trans:
        perm = [*range(len(sb) - 2), len(sb) - 1, len(sb) - 2]
        y = b.op(nn.Transpose, [y], "t", perm=perm)
    return b.done(b.op(nn.MatMul, [x, y], "mm"))


@pytest.mark.parametrize("sa, sb, trans", CASES, ids=[f"{a}@{b}{'T' if t else ''}" for a, b, t in CASES])
@pytest.mark.parametrize("tile", ["tile", "tile{a-words=64}"])
def test_product_bit_exact(tmp_path, sa, sb, trans, tile: str) -> None:  # noqa: ANN001
    f = product_model(sa, sb, trans)
    rng = np.random.default_rng(5)
    x = {a.name or "": rng.standard_normal(a.type.shape).astype(np.float32) for a in f.main.args}
    want = interpreter.run(f, x)[f.main.outputs[0].name or ""]
    m, _, prog = compile_sim(f, tmp_path, tile=tile)
    (mm,) = m.main.ops_of(pent_matmul.Matmul)
    assert mm.attr("trans_b") == trans
    sim_matches_reference(m, prog, seeds=2)
    # and the integers are the float product's to the rounding of the operands
    got = pent_reference.run(m, x)[0]
    assert np.abs(got - want).max() <= 1e-3 * np.abs(want).max()


def test_transpose_of_a_moved_operand_costs_no_extra_copy(tmp_path) -> None:  # noqa: ANN001
    """K^T of a heads split (reshape, transpose) is one gather into the [B, N, K] layout."""
    b = Builder("qk", 0)
    q, k = b.arg("q", (1, 6, 8)), b.arg("k", (1, 6, 8))
    heads = [b.op(nn.Reshape, [v], f"r{i}", shape=[1, 6, 2, 4]) for i, v in enumerate((q, k))]
    qh = b.op(nn.Transpose, [heads[0]], "tq", perm=[0, 2, 1, 3])
    kt = b.op(nn.Transpose, [heads[1]], "tk", perm=[0, 2, 3, 1])
    m, _, prog = compile_sim(b.done(b.op(nn.MatMul, [qh, kt], "mm")), tmp_path)
    (mm,) = m.main.ops_of(pent_matmul.Matmul)
    assert mm.attr("trans_b")
    for v in mm.operands:  # each operand one gather straight from the argument's quantized value
        assert isinstance(v.owner, pent_move.Gather) and v.owner.operands[1].owner.name == "pent.quantize"
    sim_matches_reference(m, prog, seeds=2)


torch = pytest.importorskip("torch")


@pytest.mark.parametrize("act_pents", [6, 8])
def test_attention_twin_matches_onnxruntime(tmp_path, act_pents: int) -> None:  # noqa: ANN001
    pytest.importorskip("onnxruntime")
    from xfmr_helpers import compile_check, export, pentary_exact
    from zoo_models import Attention

    rng = np.random.default_rng(0)
    torch.manual_seed(0)
    x = rng.standard_normal((1, 8, 32)).astype(np.float32)
    path = export(pentary_exact(Attention(32, 4)), (torch.from_numpy(x),), tmp_path / "a.onnx", ["x"])
    # the calibration covers the input compared (an input beyond the calibrated ranges saturates)
    cal = {"x": np.concatenate([x, rng.standard_normal((15, 8, 32)).astype(np.float32)])}
    err, _ = compile_check(path, tmp_path, cal, {"x": x}, act_pents=act_pents)
    assert err < 1e-2, err
