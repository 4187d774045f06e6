"""The learned text embedding: the Embedding layer against torch autograd, and its training with the network."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from pcc.cli import main
from pcc.diagnostics import PccError
from pcc.trainer.data import make_multimodal_dataset, split
from pcc.trainer.layers import Embedding
from pcc.trainer.model import PentaryModel
from pcc.trainer.multimodal import MultimodalFusion, TextProcessor, TextTuner
from pcc.trainer.trainer import LossFunction, PentaryTrainer


def test_embedding_forward_and_backward_match_torch(rng):
    layer = Embedding(11, 5, padding_idx=0)
    layer.reset_parameters(rng)
    ids = rng.integers(0, 11, (6, 7))
    ids[:, -2:] = 0  # padding, and repeated ids within and across samples
    ref = torch.nn.Embedding(11, 5, padding_idx=0)
    with torch.no_grad():
        ref.weight.copy_(torch.from_numpy(layer.weight.value))
    g = rng.standard_normal((6, 7, 5)).astype(np.float32)
    out = ref(torch.from_numpy(ids))
    (out * torch.from_numpy(g)).sum().backward()
    np.testing.assert_array_equal(layer.forward(ids, training=True), out.detach().numpy())
    layer.weight.grad[...] = 0
    layer.backward(g)
    np.testing.assert_allclose(layer.weight.grad, ref.weight.grad.numpy(), rtol=1e-6, atol=1e-6)
    assert not layer.weight.grad[0].any()

    # the text processor's pooling: sum over the real tokens / sqrt(their count)
    ref.weight.grad = None
    t_ids = torch.from_numpy(ids)
    count = (t_ids != 0).sum(1, keepdim=True).clamp(min=1).float()
    pooled = ref(t_ids).sum(1) / count.sqrt()
    gp = rng.standard_normal((6, 5)).astype(np.float32)
    (pooled * torch.from_numpy(gp)).sum().backward()
    np.testing.assert_allclose(layer.pooled(ids, training=True), pooled.detach().numpy(), rtol=1e-6, atol=1e-6)
    layer.weight.grad[...] = 0
    layer.pooled_backward(gp)
    np.testing.assert_allclose(layer.weight.grad, ref.weight.grad.numpy(), rtol=1e-6, atol=1e-6)
    with pytest.raises(ValueError, match="ids must be in 0..10"):
        layer.forward(np.array([[11]]))


def _text_image(n=120, seed=4):
    ds = make_multimodal_dataset(n, ["text", "image"], 4, seed=seed)
    tr, va = split(ds, 0.25, seed)
    fusion = MultimodalFusion(["image", "text"], text={"learned": True, "vocab_size": 40, "embed_dim": 8},
                              image={"size": 4})  # fmt: skip
    xtr = fusion.transform(tr.x, fit=True)
    xva = fusion.transform(va.x)
    tp = fusion.processors["text"]
    ids = {"train": tp.encode(tr.x["text"]), "val": tp.encode(va.x["text"])}
    return fusion, ids, (xtr, tr.y), (xva, va.y), (tr, va)


def test_the_networks_gradient_reaches_the_table_as_torch_computes_it():
    fusion, ids, (x, y), _, _ = _text_image()
    model = PentaryModel(x.shape[1], 4, [16], seed=1)
    tuner = TextTuner(fusion, ids)
    model.layers[0].need_input_grad = True
    rows = np.arange(10, 26)
    xb = tuner.features(x[rows], "train", rows)
    out = model.forward(xb, training=True, quantized=True)
    _, grad = LossFunction.cross_entropy_loss(out, y[rows])
    tuner.backward(model.backward(grad))

    # the same composite in torch: pooled embedding into the text columns, then the pentary (effective) weights
    table = torch.tensor(tuner.table.weight.value.copy(), requires_grad=True)
    t_ids = torch.from_numpy(ids["train"][rows])
    count = (t_ids != 0).sum(1, keepdim=True).clamp(min=1).float()
    text = (table[t_ids] * (t_ids != 0)[..., None]).sum(1) / count.sqrt()  # padding: no value, no gradient
    cols = fusion.text_columns
    inp = torch.cat([torch.from_numpy(x[rows][:, : cols.start]), text], dim=1)
    w1, w2 = (torch.from_numpy(layer.effective_weight(False, True)) for layer in model.weight_layers())
    b1, b2 = (torch.from_numpy(layer.bias.value) for layer in model.weight_layers())
    logits = torch.relu(inp @ w1.T + b1) @ w2.T + b2
    torch.nn.functional.cross_entropy(logits, torch.from_numpy(y[rows])).backward()
    np.testing.assert_allclose(tuner.table.weight.grad, table.grad.numpy(), rtol=1e-4, atol=1e-6)
    assert np.abs(table.grad.numpy()).sum() > 0


def test_learned_table_trains_is_kept_with_the_best_epoch_and_saved(tmp_path):
    fusion, ids, train, val, (tr, va) = _text_image()
    start = fusion.processors["text"].embedding.copy()
    trainer = PentaryTrainer(PentaryModel(train[0].shape[1], 4, [16], seed=1), "cross_entropy", 0.05,
                             schedule="constant", fusion=fusion, log=None)  # fmt: skip
    trainer.text_tuner = TextTuner(fusion, ids)
    trainer.train(train, val, epochs=6, batch_size=8, keep_best=True)
    table = fusion.processors["text"].embedding
    assert np.abs(table - start).max() > 1e-3 and not table[0].any()  # trained; padding row stays 0
    best = trainer.metrics["best_epoch"]
    loss, acc = trainer.evaluate(val)
    assert loss == pytest.approx(trainer.history[best - 1]["val_loss"], rel=1e-5)
    # the validation features are those of the kept table
    fresh = fusion.transform(va.x)
    np.testing.assert_allclose(val[0], fresh, rtol=1e-5, atol=1e-5)
    trainer.save_model(tmp_path / "m.json")
    d = json.loads((tmp_path / "m.json").read_text())
    again = MultimodalFusion.from_dict(d["multimodal"])
    assert again.processors["text"].learned
    np.testing.assert_allclose(again.transform(va.x), fresh, rtol=1e-5, atol=1e-5)


def test_cli_learns_the_text_embedding_with_concat(capsys, tmp_path):
    d = tmp_path / "d"
    ds = make_multimodal_dataset(80, ["text", "image"], 4, seed=2)
    d.mkdir()
    np.save(d / "labels.npy", ds.y)
    (d / "text.json").write_text(json.dumps(ds.x["text"]))
    np.save(d / "images.npy", ds.x["image"])
    args = ["train", "--data-dir", str(d), "--epochs", "2", "--save-model", "--model-name", "t"]
    assert main(args) == 0
    text = json.loads((tmp_path / "trained_models" / "t.json").read_text())["multimodal"]["processors"]["text"]
    init = TextProcessor(**{k: text[k] for k in ("vocab_size", "max_length", "embed_dim")}).embedding
    assert text["learned"] and np.abs(np.asarray(text["embedding"]) - init).max() > 1e-4
    assert main([*args[:-1], "f", "--text-embedding", "fixed"]) == 0
    fixed = json.loads((tmp_path / "trained_models" / "f.json").read_text())["multimodal"]["processors"]["text"]
    assert "embedding" not in fixed
    # the projected fusions learn it too (auto: learned with the numpy engine)
    assert main([*args[:-1], "a", "--fusion-method", "add"]) == 0
    text = json.loads((tmp_path / "trained_models" / "a.json").read_text())["multimodal"]["processors"]["text"]
    assert text["learned"] and np.abs(np.asarray(text["embedding"]) - init).max() > 1e-4


def _torch_fused(method, text, others, k, proj, mean, std):
    """The fusion written independently in torch: ``text`` [N, E] pooled, ``others`` the other modalities'
    fixed projections in order, ``k`` the text's slot."""
    u = text @ proj
    tokens = [*others[:k], u, *others[k:]]
    if method == "add":
        raw = sum(tokens[1:], tokens[0])
    elif method == "multiply":
        raw = tokens[0]
        for t in tokens[1:]:
            raw = raw * t
    else:
        t = torch.stack(tokens, dim=1)
        t = (t - t.mean(-1, keepdim=True)) / (t.std(-1, unbiased=False, keepdim=True) + 1e-5)
        w = torch.softmax(t @ t.transpose(1, 2) / t.shape[-1] ** 0.5, dim=-1)
        raw = (w @ t).flatten(1)
    return (raw - mean) / std


@pytest.mark.parametrize("method", ["add", "multiply", "attention"])
def test_projected_fusions_take_the_gradient_back_to_the_table_as_torch_computes_it(method):
    ds = make_multimodal_dataset(60, ["text", "image", "audio"], 4, seed=5)
    fusion = MultimodalFusion(["image", "text", "audio"], method, common_dim=12,
                              text={"learned": True, "vocab_size": 30, "embed_dim": 6}, image={"size": 4},
                              audio={"n_mels": 8, "n_frames": 4})  # fmt: skip
    x, ctx = fusion.transform_with_context(ds.x, fit=True, batch_size=7)
    tp = fusion.processors["text"]
    ids = {"train": tp.encode(ds.x["text"])}
    tuner = TextTuner(fusion, ids, contexts={"train": ctx})
    rows = np.arange(5, 25)
    xb = tuner.features(x[rows], "train", rows)
    np.testing.assert_allclose(xb, x[rows], rtol=1e-4, atol=1e-4)  # the untrained table gives transform's rows
    model = PentaryModel(x.shape[1], 4, [16], seed=1)
    model.layers[0].need_input_grad = True
    out = model.forward(xb, training=True, quantized=True)
    _, grad = LossFunction.cross_entropy_loss(out, ds.y[rows])
    tuner.backward(model.backward(grad))

    table = torch.tensor(tuner.table.weight.value.copy(), requires_grad=True)
    t_ids = torch.from_numpy(ids["train"][rows])
    count = (t_ids != 0).sum(1, keepdim=True).clamp(min=1).float()
    text = (table[t_ids] * (t_ids != 0)[..., None]).sum(1) / count.sqrt()
    feats = {"image": fusion.processors["image"].process(ds.x["image"][rows], batched=True),
             "audio": fusion.processors["audio"].process(np.asarray(ds.x["audio"][rows]))}  # fmt: skip
    others = [torch.from_numpy(feats[m] @ fusion._projection(m)) for m in ("image", "audio")]
    proj = torch.from_numpy(fusion._projection("text"))
    mean, std = torch.from_numpy(fusion.feature_mean), torch.from_numpy(fusion.feature_std)
    inp = _torch_fused(method, text, others, 1, proj, mean, std)
    np.testing.assert_allclose(inp.detach().numpy(), xb, rtol=1e-4, atol=1e-4)
    w1, w2 = (torch.from_numpy(layer.effective_weight(False, True)) for layer in model.weight_layers())
    b1, b2 = (torch.from_numpy(layer.bias.value) for layer in model.weight_layers())
    logits = torch.relu(inp @ w1.T + b1) @ w2.T + b2
    torch.nn.functional.cross_entropy(logits, torch.from_numpy(ds.y[rows])).backward()
    assert np.abs(table.grad.numpy()).sum() > 0
    np.testing.assert_allclose(tuner.table.weight.grad, table.grad.numpy(), rtol=1e-3, atol=1e-6)


@pytest.mark.parametrize("method", ["add", "multiply", "attention"])
def test_projected_fusions_train_the_table_and_save_it(method, tmp_path):
    ds = make_multimodal_dataset(120, ["text", "image"], 4, seed=4)
    tr, va = split(ds, 0.25, 4)
    fusion = MultimodalFusion(["image", "text"], method, common_dim=16,
                              text={"learned": True, "vocab_size": 40, "embed_dim": 8}, image={"size": 4})  # fmt: skip
    xtr, ctr = fusion.transform_with_context(tr.x, fit=True)
    xva, cva = fusion.transform_with_context(va.x)
    tp = fusion.processors["text"]
    ids = {"train": tp.encode(tr.x["text"]), "val": tp.encode(va.x["text"])}
    start = tp.embedding.copy()
    trainer = PentaryTrainer(PentaryModel(xtr.shape[1], 4, [16], seed=1), "cross_entropy", 0.05,
                             schedule="constant", fusion=fusion, log=None)  # fmt: skip
    trainer.text_tuner = TextTuner(fusion, ids, contexts={"train": ctr, "val": cva})
    trainer.train((xtr, tr.y), (xva, va.y), epochs=4, batch_size=8, keep_best=True)
    assert np.abs(tp.embedding - start).max() > 1e-3 and not tp.embedding[0].any()
    fresh = fusion.transform(va.x)  # the features of the kept table, as inference computes them
    np.testing.assert_allclose(xva, fresh, rtol=1e-4, atol=1e-4)
    trainer.save_model(tmp_path / "m.json")
    again = MultimodalFusion.from_dict(json.loads((tmp_path / "m.json").read_text())["multimodal"])
    np.testing.assert_allclose(again.transform(va.x), fresh, rtol=1e-5, atol=1e-5)
    with pytest.raises(PccError, match="needs the text context"):
        TextTuner(fusion, ids)
