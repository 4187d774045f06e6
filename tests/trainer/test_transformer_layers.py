"""The transformer layers' forward and backward passes against torch autograd; the model JSON round trip and
its size checks."""

from __future__ import annotations

import json

import numpy as np
import pytest

from pcc.diagnostics import PccError
from pcc.trainer.charlm import char_transformer, lm_loss
from pcc.trainer.model import PentaryModel
from pcc.trainer.transformer_layers import (
    GELU,
    LayerNorm,
    MultiHeadAttention,
    PentaryEmbedding,
    PositionalEmbedding,
    Residual,
)

torch = pytest.importorskip("torch")
F = torch.nn.functional


def _t(a: np.ndarray, grad: bool = False) -> torch.Tensor:
    return torch.tensor(np.asarray(a, np.float64), requires_grad=grad)


def _close(a: np.ndarray, b: torch.Tensor, tol: float = 2e-4) -> None:
    b = b.detach().numpy()
    scale = max(float(np.abs(b).max()), 1e-6)
    assert np.abs(np.asarray(a, np.float64) - b).max() <= tol * scale


@pytest.mark.parametrize("approximate", ["none", "tanh"])
def test_gelu_matches_torch(approximate: str) -> None:
    x = np.random.default_rng(0).standard_normal((3, 5, 7)).astype(np.float32) * 3
    g = np.random.default_rng(1).standard_normal(x.shape).astype(np.float32)
    layer = GELU(approximate)
    y = layer.forward(x.copy(), training=True)
    dx = layer.backward(g)
    xt = _t(x, True)
    yt = F.gelu(xt, approximate=approximate)
    (yt * _t(g)).sum().backward()
    _close(y, yt, 1e-5)
    _close(dx, xt.grad, 1e-5)


def test_layernorm_matches_torch() -> None:
    rng = np.random.default_rng(2)
    x = (rng.standard_normal((4, 6, 10)) * 2 + 1).astype(np.float32)
    g = rng.standard_normal(x.shape).astype(np.float32)
    layer = LayerNorm(10, eps=1e-5)
    layer.gamma.value[...] = rng.standard_normal(10)
    layer.beta.value[...] = rng.standard_normal(10)
    y = layer.forward(x, training=True)
    dx = layer.backward(g)
    xt, gt, bt = _t(x, True), _t(layer.gamma.value, True), _t(layer.beta.value, True)
    yt = F.layer_norm(xt, (10,), gt, bt, 1e-5)
    (yt * _t(g)).sum().backward()
    _close(y, yt)
    _close(dx, xt.grad)
    _close(layer.gamma.grad, gt.grad)
    _close(layer.beta.grad, bt.grad)


@pytest.mark.parametrize("causal", [True, False])
@pytest.mark.parametrize("quantized", [True, False])
def test_attention_matches_torch(causal: bool, quantized: bool) -> None:
    rng = np.random.default_rng(3)
    b, t, d, h = 2, 7, 12, 3
    layer = MultiHeadAttention(d, h, causal, rng=rng)
    for lin in (layer.qkv, layer.out):
        lin.weight.value[...] = rng.standard_normal(lin.weight.value.shape) * 0.3
        lin.bias.value[...] = rng.standard_normal(lin.bias.value.shape) * 0.1
    layer.reset_quant_state()
    x = rng.standard_normal((b, t, d)).astype(np.float32)
    g = rng.standard_normal((b, t, d)).astype(np.float32)
    y = layer.forward(x, training=True, quantized=quantized)
    dx = layer.backward(g)
    # the weights the forward pass used (pentary: q * s; the gradient goes straight through to the shadow)
    wqkv = layer.qkv._w if quantized else layer.qkv.weight.value
    wout = layer.out._w if quantized else layer.out.weight.value
    if quantized:
        q, s = layer.qkv.quantized()
        assert np.allclose(wqkv, q * s[:, None])
        assert set(np.unique(q)) <= {-2, -1, 0, 1, 2}
    xt = _t(x, True)
    wq, bq, wo, bo = _t(wqkv, True), _t(layer.qkv.bias.value, True), _t(wout, True), _t(layer.out.bias.value, True)
    qkv = (xt @ wq.T + bq).reshape(b, t, 3, h, d // h).permute(2, 0, 3, 1, 4)
    o = F.scaled_dot_product_attention(qkv[0], qkv[1], qkv[2], is_causal=causal)
    yt = o.transpose(1, 2).reshape(b, t, d) @ wo.T + bo
    (yt * _t(g)).sum().backward()
    _close(y, yt)
    _close(dx, xt.grad)
    _close(layer.qkv.weight.grad, wq.grad)
    _close(layer.qkv.bias.grad, bq.grad)
    _close(layer.out.weight.grad, wo.grad)
    _close(layer.out.bias.grad, bo.grad)


def _torch_twin(model: PentaryModel, ids: np.ndarray, quantized: bool) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The char transformer written with torch ops, on the weights the numpy forward used."""
    leaves: dict[str, torch.Tensor] = {}

    def leaf(name: str, a: np.ndarray) -> torch.Tensor:
        leaves[name] = _t(a, True)
        return leaves[name]

    def weight(name: str, layer: object) -> torch.Tensor:
        return leaf(name, layer._wq if quantized else layer.weight.value)  # type: ignore[attr-defined]

    emb, pos = model.layers[0], model.layers[1]
    x = weight("emb", emb)[torch.tensor(ids)]
    x = x + weight("pos", pos)[: ids.shape[1]]
    for i, block in enumerate(model.layers[2:-2]):
        ln = block.layers[0]
        hx = F.layer_norm(x, (ln.dim,), leaf(f"{i}.g", ln.gamma.value), leaf(f"{i}.b", ln.beta.value), ln.eps)
        if isinstance(block.layers[1], MultiHeadAttention):
            att = block.layers[1]
            b, t, d = hx.shape
            qkv = hx @ weight(f"{i}.qkv", att.qkv).T + leaf(f"{i}.qkvb", att.qkv.bias.value)
            qkv = qkv.reshape(b, t, 3, att.heads, att.head_dim).permute(2, 0, 3, 1, 4)
            o = F.scaled_dot_product_attention(qkv[0], qkv[1], qkv[2], is_causal=True)
            hx = o.transpose(1, 2).reshape(b, t, d) @ weight(f"{i}.o", att.out).T + leaf(f"{i}.ob", att.out.bias.value)
        else:
            fc1, fc2 = block.layers[1], block.layers[3]
            hx = F.gelu(hx @ weight(f"{i}.fc1", fc1).T + leaf(f"{i}.fc1b", fc1.bias.value), approximate="tanh")
            hx = hx @ weight(f"{i}.fc2", fc2).T + leaf(f"{i}.fc2b", fc2.bias.value)
        x = x + hx
    ln, head = model.layers[-2], model.layers[-1]
    x = F.layer_norm(x, (ln.dim,), leaf("lnf.g", ln.gamma.value), leaf("lnf.b", ln.beta.value), ln.eps)
    return x @ weight("head", head).T + leaf("head.b", head.bias.value), leaves


@pytest.mark.parametrize("quantized", [True, False])
def test_char_transformer_loss_and_gradients_match_torch(quantized: bool) -> None:
    model = char_transformer(11, context=8, layers=2, heads=2, dim=16, seed=1)
    rng = np.random.default_rng(4)
    for p in model.params():  # larger than the initialisation, so that every path matters
        p.value[...] += rng.standard_normal(p.value.shape).astype(np.float32) * 0.2
    model.reset_quant_state()
    ids = rng.integers(0, 11, (3, 8))
    targets = rng.integers(0, 11, (3, 8))
    model.flat_grads[...] = 0
    logits = model.forward(ids, training=True, quantized=quantized)
    loss, grad = lm_loss(logits, targets)
    model.backward(grad)
    lt, leaves = _torch_twin(model, ids, quantized)
    loss_t = F.cross_entropy(lt.reshape(-1, 11), torch.tensor(targets.reshape(-1)))
    loss_t.backward()
    assert abs(loss - float(loss_t.detach())) < 1e-5
    _close(logits, lt)
    emb, pos = model.layers[0], model.layers[1]
    _close(emb.weight.grad, leaves["emb"].grad)
    _close(pos.weight.grad, leaves["pos"].grad)
    for i, block in enumerate(model.layers[2:-2]):
        _close(block.layers[0].gamma.grad, leaves[f"{i}.g"].grad)
        if isinstance(block.layers[1], MultiHeadAttention):
            _close(block.layers[1].qkv.weight.grad, leaves[f"{i}.qkv"].grad)
            _close(block.layers[1].out.bias.grad, leaves[f"{i}.ob"].grad)
        else:
            _close(block.layers[1].weight.grad, leaves[f"{i}.fc1"].grad)
            _close(block.layers[3].weight.grad, leaves[f"{i}.fc2"].grad)
    _close(model.layers[-1].weight.grad, leaves["head"].grad)
    _close(model.layers[-2].beta.grad, leaves["lnf.b"].grad)


def test_embedding_layers_quantize_per_row() -> None:
    emb = PentaryEmbedding(9, 6, rng=np.random.default_rng(0))
    pos = PositionalEmbedding(5, 6, rng=np.random.default_rng(1))
    ids = np.array([[3, 3, 0, 8]])
    y = pos.forward(emb.forward(ids, training=True), training=True)
    q, s = emb.quantized()
    qp, sp = pos.quantized()
    assert s.shape == (9,) and sp.shape == (5,)
    assert np.allclose(y[0], q[ids[0]] * s[ids[0], None] + qp[:4] * sp[:4, None])
    g = np.ones_like(y)
    pos.backward(g)
    emb.backward(g)
    assert np.allclose(emb.weight.grad[3], 2) and np.allclose(emb.weight.grad[1], 0)
    assert np.allclose(pos.weight.grad[:4], 1) and np.allclose(pos.weight.grad[4], 0)
    with pytest.raises(ValueError, match="0..8"):
        emb.forward(np.array([[9]]))
    with pytest.raises(ValueError, match="longer than the context"):
        pos.forward(np.zeros((1, 6, 6), np.float32))


def test_model_json_round_trip(tmp_path) -> None:
    model = char_transformer(5, context=6, layers=1, heads=2, dim=8, seed=3, vocabulary="abcd ")
    path = tmp_path / "lm.json"
    model.save(path)
    d = json.loads(path.read_text())
    assert d["input_kind"] == "token_ids" and d["output_shape"] == [6, 5]
    assert d["tokenizer"] == {"type": "characters", "vocabulary": list("abcd ")}
    assert [ld["type"] for ld in d["layers"]] == [
        "embedding",
        "positional_embedding",
        "residual",
        "residual",
        "layernorm",
        "linear",
    ]
    back = PentaryModel.load(path)
    ids = np.array([[0, 1, 2, 3, 4, 0]])
    assert back.vocabulary == "abcd "
    for quantized in (True, False):
        assert np.array_equal(back.predict(ids, quantized), model.predict(ids, quantized))
    assert np.allclose(back.predict(ids[:, :3]), model.predict(ids)[:, :3], atol=1e-6)  # causal: prefix stays
    hist = model.pent_histogram()
    assert "layer2.residual.1.attention.qkv.linear" in hist and sum(hist["total"]) == sum(
        layer.weight.value.size for layer in model.weight_layers()
    )


def _lm_dict() -> dict:
    return char_transformer(4, context=3, layers=1, heads=1, dim=4, vocabulary="abcd").to_dict()


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda d: d["layers"][0].update(num_embeddings=10**12), "has shape .4, 4., expected .1000000000000, 4."),
        (lambda d: d["layers"][1].update(dim=10**9), "expected .3, 1000000000."),
        (lambda d: d["layers"][2]["layers"][1].update(heads=3), "heads .3. must divide dim"),
        (lambda d: d["layers"][2]["layers"][1]["qkv"].update(out_features=5), "'qkv' must be a linear layer 4 -> 12"),
        (lambda d: d["layers"][2]["layers"][1].pop("out"), "missing 'out'"),
        (lambda d: d["layers"][2].update(layers=[]), "non-empty list"),
        (lambda d: d["layers"][2]["layers"].append({"type": "linear"}), "sub-layer 2 .linear.: missing key"),
        (lambda d: d["layers"][4].update(gamma=[1.0]), "'gamma' must be a list of 4"),
        (lambda d: d["layers"][3]["layers"][2].update(approximate="erf"), "approximate must be"),
        (lambda d: d["tokenizer"].update(vocabulary=list("abc")), "3 distinct characters, the embedding 4"),
        (lambda d: d["tokenizer"].update(vocabulary=["ab", "c", "d", "e"]), "single characters"),
        (lambda d: d["layers"][0].update(weight_pentary=[[3] * 4] * 4) or d["layers"][0].pop("weight_float"), "-2..2"),
    ],
)
def test_bad_transformer_json_is_one_error(edit, message) -> None:
    d = _lm_dict()
    edit(d)
    with pytest.raises(PccError, match=message):
        PentaryModel.from_dict(d, source="lm.json")


def test_residual_nesting_is_bounded() -> None:
    inner: dict = {"type": "gelu"}
    for _ in range(10):
        inner = {"type": "residual", "layers": [inner]}
    with pytest.raises(ValueError, match="nested more than"):
        Residual.from_dict(inner)
