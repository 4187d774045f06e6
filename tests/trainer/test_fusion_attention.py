"""The learned attention fusion: its gradient against torch autograd, its training, its JSON form, the CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest

from pcc.cli import main
from pcc.diagnostics import PccError
from pcc.trainer import fusion_grad
from pcc.trainer.data import make_multimodal_dataset
from pcc.trainer.multimodal import FusionTuner, MultimodalFusion

torch = pytest.importorskip("torch")


def _torch_fuse(u, context, k, params):
    tokens = torch.tensor(context, dtype=torch.float64).clone()
    if k is not None:
        tokens[:, k] = u
    c = tokens - tokens.mean(-1, keepdim=True)
    z = c / (c.pow(2).mean(-1, keepdim=True).sqrt() + 1e-5)
    q, kk, v = (z @ p for p in params) if params is not None else (z, z, z)
    w = torch.softmax(q @ kk.transpose(1, 2) / np.sqrt(z.shape[-1]), -1)
    return (w @ v).reshape(len(z), -1)


@pytest.mark.parametrize("k, learned", [(None, True), (1, True), (1, False)])
def test_attention_fusion_gradients_match_torch(k, learned) -> None:
    rng = np.random.default_rng(0)
    n, m, d = 5, 3, 8
    context = rng.standard_normal((n, m, d)).astype(np.float32)
    u = rng.standard_normal((n, d)).astype(np.float32)
    params = [np.eye(d, dtype=np.float32) + 0.3 * rng.standard_normal((d, d)).astype(np.float32) for _ in range(3)]
    params = params if learned else None
    g = rng.standard_normal((n, m * d)).astype(np.float32)
    out = fusion_grad.fuse("attention", u, context, k, params)
    grads = [np.zeros((d, d), np.float32) for _ in range(3)]
    du = fusion_grad.fuse_backward("attention", u, context, k, g, params, grads)
    ut = torch.tensor(u, dtype=torch.float64, requires_grad=True)
    pt = [torch.tensor(p, dtype=torch.float64, requires_grad=True) for p in params] if learned else None
    ot = _torch_fuse(ut, context, k, pt)
    (ot * torch.tensor(g, dtype=torch.float64)).sum().backward()
    assert np.allclose(out, ot.detach().numpy(), atol=1e-5)
    if k is not None:
        assert np.allclose(du, ut.grad.numpy(), atol=1e-4)
    if learned:
        for a, b in zip(grads, pt, strict=True):
            assert np.allclose(a, b.grad.numpy(), atol=1e-4 * max(1.0, float(b.grad.abs().max())))


def test_identity_parameters_are_the_parameter_free_fusion() -> None:
    data = make_multimodal_dataset(40, ["text", "image", "audio"], 8, seed=0).x
    fixed = MultimodalFusion(["text", "image", "audio"], "attention", text={"learned": False})
    learned = MultimodalFusion(["text", "image", "audio"], "attention", text={"learned": False}, learned_attention=True)
    assert np.allclose(fixed.transform(data, fit=True), learned.transform(data, fit=True), atol=1e-5)


def test_learned_attention_trains_and_round_trips() -> None:
    from pcc.trainer.model import PentaryModel
    from pcc.trainer.trainer import PentaryTrainer

    ds = make_multimodal_dataset(240, ["text", "image", "audio"], 8, seed=1)
    y = ds.y
    fusion = MultimodalFusion(
        ["text", "image", "audio"], "attention", common_dim=16, text={"learned": False}, learned_attention=True
    )
    x, ctx = fusion.transform_with_context(ds.x, fit=True)
    before = [p.copy() for p in fusion.attention_params]
    model = PentaryModel(x.shape[1], 8, [16])
    trainer = PentaryTrainer(model, "cross_entropy", 0.01, log=None)
    trainer.text_tuner = FusionTuner(fusion, {"train": ctx[:200], "val": ctx[200:]})
    trainer.train((x[:200], y[:200]), (x[200:], y[200:]), epochs=3, batch_size=16)
    assert max(np.abs(a - b).max() for a, b in zip(fusion.attention_params, before, strict=True)) > 1e-3
    # inference (transform) computes the vectors the tuner trained on
    back = MultimodalFusion.from_dict(json.loads(json.dumps(fusion.to_dict())))
    assert back.learned_attention
    assert np.allclose(back.transform(ds.x), fusion.fuse_tokens(ctx), atol=1e-4)
    bad = fusion.to_dict()
    bad["attention"]["wk"] = [[0.0] * 3]
    with pytest.raises(PccError, match="'wk' must be a .16..16. list"):
        MultimodalFusion.from_dict(bad)


def test_cli_attention_fusion_learns_its_matrices(tmp_path, monkeypatch, capsys) -> None:
    monkeypatch.chdir(tmp_path)
    rc = main(
        ["train", "--multimodal", "--fusion-method", "attention", "--epochs", "2", "--n-samples", "120"]
        + ["--save-model", "--model-name", "mm", "--quiet"]
    )
    assert rc == 0, capsys.readouterr().err
    d = json.loads((tmp_path / "trained_models" / "mm.json").read_text())
    att = d["multimodal"]["attention"]
    wq = np.asarray(att["wq"])
    assert wq.shape == (128, 128) and np.abs(wq - np.eye(128)).max() > 1e-4  # trained away from the identity
