"""Transformer models end to end: token embeddings by run-time ids (``pent.embed``), learned positions, causal
masks from a constant ``where`` and padding masks from the attention-mask input (``x + (1 - m) * finfo.min``),
pre- and post-norm blocks.  Pentary-exact twins of the BERT- and GPT-2-like models of
``tests/frontends/zoo_models.py`` (every Linear and Embedding weight projected onto ``s_c x {-2..2}``) compile,
the simulator equals the pent reference bit for bit, and they match onnxruntime within 1e-2 of the output's range
(measured in docs/compiler.md: BERT 7.1e-4 / 6.1e-4, GPT-2 5.0e-4 / 1.4e-4 at 6 / 8 pents)."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
from compile_helpers import Builder, compile_sim, sim_matches_reference

from pcc import pent_reference
from pcc.dialects import nn, pent_move
from pcc.ir import Location

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "frontends"))


def embed_model() -> tuple:
    b = Builder("emb", 0)
    ids = b.arg("ids", (2, 5), "i64")
    table = b.w("wte", (7, 6))
    pos = b.w("wpe", (1, 5, 6))
    y = b.op(nn.Add, [b.op(nn.Gather, [table, ids], "wte", axis=0), pos], "pos")
    return b.done(y), b.m.weight(table)


def test_embedding_by_run_time_ids(tmp_path) -> None:  # noqa: ANN001
    f, table = embed_model()
    m, _, prog = compile_sim(f, tmp_path)
    (emb,) = m.main.ops_of(pent_move.Embed)
    sim_matches_reference(m, prog, seeds=3, scale=4.0)  # ids outside 0..6 are clamped, on both sides
    ids = np.array([[0, 6, 3, 3, 1], [5, 4, 2, 0, 6]])
    got = pent_reference.eval_op(emb, [ids, m.weight(emb.operands[1])])[0]
    want = np.clip(np.rint(table[ids] / emb.attr("scale")), -(5**8 // 2), 5**8 // 2)
    np.testing.assert_array_equal(got, want)


def test_causal_where_and_padding_mask(tmp_path) -> None:  # noqa: ANN001
    """softmax(where(tril, s, finfo.min) + (1 - pad) * finfo.min): masked probabilities are exactly 0."""
    b = Builder("mask", 0)
    s = b.arg("s", (2, 1, 4, 4))
    pad = b.arg("pad", (2, 1, 1, 4), "i64")
    tril = b.const("tril", np.tril(np.ones((1, 1, 4, 4), bool)))
    lo = b.const("min", np.array(np.finfo(np.float32).min, np.float32))
    w = b.op(nn.Where, [tril, s, lo], "causal")
    cast = nn.Cast([pad], [pad.type.with_dtype("f32")], {}, Location(node="cast"))
    b.g.append(cast)
    keep = cast.results[0]
    one = b.const("one", np.array(1.0, np.float32))
    term = b.op(nn.Mul, [b.op(nn.Sub, [one, keep], "inv"), lo], "term")
    y = b.op(nn.Softmax, [b.op(nn.Add, [w, term], "add")], "sm", axis=-1)
    f = b.done(y)
    m, _, prog = compile_sim(f, tmp_path)
    sim_matches_reference(m, prog, seeds=2)
    x = {"s": np.random.default_rng(1).standard_normal((2, 1, 4, 4)).astype(np.float32)}
    x["pad"] = np.array([[[[1, 1, 1, 1]]], [[[1, 1, 0, 0]]]])
    got = pent_reference.run(m, x)[0]
    keep_all = np.tril(np.ones((4, 4), bool))[None, None] & (x["pad"] == 1)
    assert np.all(got[~np.broadcast_to(keep_all, got.shape)] == 0)
    e = np.where(keep_all, np.exp(x["s"] - x["s"].max(-1, keepdims=True)), 0)
    want = e / e.sum(-1, keepdims=True)
    assert np.abs(got - want).max() < 2e-3


def test_constant_additive_causal_mask(tmp_path) -> None:  # noqa: ANN001
    """softmax(s + c), c = -1e9 above the diagonal (the native frontend's causal mask): exactly 0 there."""
    b = Builder("cmask", 0)
    s = b.arg("s", (1, 2, 5, 5))
    c = b.const("mask", np.where(np.triu(np.ones((5, 5), bool), 1), np.float32(-1e9), np.float32(0)))
    f = b.done(b.op(nn.Softmax, [b.op(nn.Add, [s, c], "add")], "sm", axis=-1))
    m, _, prog = compile_sim(f, tmp_path)
    sim_matches_reference(m, prog, seeds=2)
    x = {"s": np.random.default_rng(2).standard_normal((1, 2, 5, 5)).astype(np.float32)}
    got = pent_reference.run(m, x)[0]
    keep = ~np.triu(np.ones((5, 5), bool), 1)
    assert np.all(got[..., ~keep] == 0)
    e = np.where(keep, np.exp(x["s"] - x["s"].max(-1, keepdims=True)), 0)
    assert np.abs(got - e / e.sum(-1, keepdims=True)).max() < 2e-3


torch = pytest.importorskip("torch")


def _tokens(seed: int, n: int):  # noqa: ANN202
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, 50, (n, 16), generator=g)
    mask = torch.ones(n, 16, dtype=torch.long)
    mask[1::2, 9 + seed % 3 :] = 0
    return ids, mask


def twin_error(tmp_path: Path, name: str, act_pents: int, layers: int) -> float:
    pytest.importorskip("onnxruntime")
    from xfmr_helpers import compile_check, export, pentary_exact
    from zoo_models import GPT2, Bert

    torch.manual_seed(0)
    model = pentary_exact((Bert if name == "bert" else GPT2)(False, layers=layers))
    ids, mask = _tokens(1, 2)
    path = export(model, (ids, mask), tmp_path / f"{name}.onnx", ["ids", "attention_mask"])
    cids, cmask = _tokens(2, 16)
    cal = {"ids": np.concatenate([ids.numpy(), cids.numpy()]), "attention_mask": np.concatenate([mask, cmask])}
    err, _ = compile_check(
        path, tmp_path, cal, {"ids": ids.numpy(), "attention_mask": mask.numpy()}, act_pents=act_pents, seeds=1
    )
    return err


def test_gpt2_one_layer_twin(tmp_path) -> None:  # noqa: ANN001
    assert twin_error(tmp_path, "gpt2", 8, 1) < 1e-2


@pytest.mark.slow
@pytest.mark.parametrize("name", ["bert", "gpt2"])
@pytest.mark.parametrize("act_pents", [6, 8])
def test_two_layer_twins(tmp_path, name: str, act_pents: int) -> None:  # noqa: ANN001
    assert twin_error(tmp_path, name, act_pents, 2) < 1e-2


def test_trained_char_lm_compiles_bit_exact(tmp_path: Path) -> None:
    """The trainer's transformer (pentary embedding table, attention with a constant causal mask, LayerNorm,
    GELU) compiles from its model JSON; the simulator equals the pent reference bit for bit."""
    from pcc.cli import main
    from pcc.drivers.compile import compile_module
    from pcc.frontends import load_model
    from pcc.pass_manager import parse_pipeline
    from pcc.passes.pipeline import DEFAULT_PIPELINE

    corpus = tmp_path / "tiny.txt"
    corpus.write_text("the cat sat on the mat. " * 40, encoding="utf-8")
    args = ["train", "--model", "transformer", "--context", "8", "--layers", "1", "--heads", "2", "--dim", "8"]
    args += ["--steps", "5", "--batch-size", "4", "--save-model", "--output-dir", str(tmp_path), "--model-name", "lm"]
    assert main([*args, "--text", str(corpus)]) == 0
    m = load_model(tmp_path / "lm.json")
    result = compile_module(m, parse_pipeline(DEFAULT_PIPELINE), verify_each=True)
    assert list(result.module.main.ops_of(pent_move.Embed))
    from pcc.backend.assembler import assemble_file
    from pcc.backend.codegen import write_program

    write_program(result.compiled, tmp_path / "lm.pasm")
    sim_matches_reference(result.module, assemble_file(tmp_path / "lm.pasm"), seeds=2)
