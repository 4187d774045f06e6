"""scaled_dot_product_attention with run-time boolean masks compiles to the simulator: the padding mask is a
model input (``where(m, scores, -inf)`` after canonicalize), GPT-2's is a constant causal mask ``and`` it.

The pentary-exact twins (every matrix weight on ``s_c x {-2..2}``) of the zoo's BERT and GPT-2 with sdpa
attention and of one small masked attention block match onnxruntime within 1e-2 of the output range at 8-pent
activations, on a padding mask the calibration set did not contain; a mask that changes the reference changes
the simulator's result the same way."""

from __future__ import annotations

import sys
import warnings
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "frontends"))

from hf_models import pentary_exact_onnx  # noqa: E402
from onnx_util import ort_run  # noqa: E402
from zoo_models import Attention, build_zoo  # noqa: E402

from pcc.backend.assembler import assemble_file  # noqa: E402
from pcc.drivers.compile import compile_model  # noqa: E402
from pcc.runtime.simulator import run_program  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore::FutureWarning", "ignore::DeprecationWarning", "ignore::UserWarning")


class _MaskedBlock(torch.nn.Module):
    """One sdpa attention block over token embeddings, its padding mask an input (``and`` a causal one)."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.embed = torch.nn.Embedding(20, 16)
        self.attn = Attention(16, 2, sdpa=True)
        self.register_buffer("causal", torch.tril(torch.ones(8, 8, dtype=torch.bool))[None, None])

    def forward(self, ids: torch.Tensor, pad: torch.Tensor) -> torch.Tensor:
        return self.attn(self.embed(ids), self.causal & pad[:, None, None, :].bool())


def _block() -> tuple[torch.nn.Module, tuple[torch.Tensor, ...]]:
    ids = torch.randint(0, 20, (2, 8), generator=torch.Generator().manual_seed(1))
    pad = torch.ones(2, 8, dtype=torch.int64)
    pad[1, 6:] = 0
    return _MaskedBlock().eval(), (ids, pad)


CASES = ["block", "bert_sdpa", "gpt2_sdpa"]


@pytest.mark.parametrize("name", CASES)
def test_sdpa_with_a_runtime_mask_on_the_simulator_matches_onnxruntime(name: str, tmp_path) -> None:  # noqa: ANN001
    m, xs = _block() if name == "block" else build_zoo(name)
    path = tmp_path / "m.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(m, xs, str(path), dynamo=False, input_names=["ids", "pad"], output_names=["y"])
    model = pentary_exact_onnx(onnx.load(str(path)))
    onnx.save(model, str(path))
    batch, seq = xs[0].shape
    vocab = int(xs[0].max()) + 1
    rng = np.random.default_rng(0)
    cal_ids = np.concatenate([xs[0].numpy(), rng.integers(0, vocab, (3 * batch, seq))])
    cal_pad = np.ones((4 * batch, seq), np.int64)
    for i, n in enumerate(rng.integers(1, seq + 1, 4 * batch)):
        cal_pad[i, n:] = 0
    np.savez(tmp_path / "cal.npz", ids=cal_ids, pad=cal_pad)
    compile_model(path, output=tmp_path / "m.pasm", calibration=tmp_path / "cal.npz", act_pents=8)
    prog = assemble_file(tmp_path / "m.pasm")
    pad = np.ones((batch, seq), np.int64)
    pad[0, seq // 2 - 1 :] = 0  # a padding the calibration set did not hold
    results = []
    for p in (xs[1].numpy(), pad):
        feeds = {"ids": xs[0].numpy(), "pad": p}
        (want,) = ort_run(model, feeds)
        got = run_program(prog, feeds)["y"]
        assert got.shape == want.shape and np.std(want) > 0
        err = float(np.abs(got - want).max() / np.abs(want).max())
        assert err < 1e-2, (p.tolist(), err)
        results.append((want, got))
    (w0, g0), (w1, g1) = results
    effect = float(np.abs(w1 - w0).max() / np.abs(w0).max())
    assert effect > 0.02  # the masks differ in what they hide, and that shows in the reference
    assert float(np.abs((g1 - g0) - (w1 - w0)).max() / np.abs(w0).max()) < 1e-2


@pytest.mark.parametrize("dtype", [np.int64, np.float32])
def test_a_mask_cast_to_bool_is_nonzero_in_every_stage(dtype: type, tmp_path) -> None:  # noqa: ANN001
    """``Cast(m, to=BOOL)`` of a mask holding 2 and -1 (and, as floats, 0.5 and -3) is ``m != 0``: the float
    interpreter, the lowering (``clamp(m, -1, 1)`` squared) and the simulator agree with onnxruntime, both as a
    softmax's mask and as a 0/1 factor."""
    from onnx import TensorProto, helper
    from onnx_util import model as onnx_model

    from pcc import interpreter
    from pcc.frontends import onnx as onnx_frontend

    nodes = [
        helper.make_node("Cast", ["m"], ["b"], to=TensorProto.BOOL),
        helper.make_node("Where", ["b", "x", "ninf"], ["w"]),
        helper.make_node("Softmax", ["w"], ["p"], axis=-1),
        helper.make_node("Cast", ["b"], ["f"], to=TensorProto.FLOAT),
        helper.make_node("Mul", ["x", "f"], ["g"]),
    ]
    inits = {"ninf": np.array(-np.inf, np.float32)}
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 8)).astype(np.float32)
    vals = [0, 1, 2, -1] if dtype == np.int64 else [0.0, 1.0, 0.5, -3.0]
    m = np.array([vals * 2, [1, 0, 0, 1, 1, vals[2], 0, vals[3]]], dtype)
    model = onnx_model(nodes, {"x": x, "m": m}, ["p", "g"], 17, inits)
    onnx.save(model, tmp_path / "mask.onnx")
    want = ort_run(model, {"x": x, "m": m})
    assert float(want[1][0, 2]) == float(x[0, 2])  # 2 (or 0.5) counts as true
    got_float = interpreter.run(onnx_frontend.load(tmp_path / "mask.onnx"), {"x": x, "m": m})
    for w, g in zip(want, got_float.values(), strict=True):
        np.testing.assert_allclose(g, w, rtol=1e-6, atol=1e-7)
    cal_m = rng.choice(np.array(vals, dtype), (8, 8))
    cal_m[:, 0] = 1  # every row keeps one score
    np.savez(tmp_path / "cal.npz", x=rng.standard_normal((8, 8)).astype(np.float32) * 1.5, m=cal_m)
    compile_model(tmp_path / "mask.onnx", output=tmp_path / "m.pasm", calibration=tmp_path / "cal.npz")
    got = run_program(assemble_file(tmp_path / "m.pasm"), {"x": x, "m": m})
    for w, name in zip(want, ("p", "g"), strict=True):
        err = float(np.abs(got[name] - w).max() / np.abs(w).max())
        assert err < 1e-2, (name, err)
