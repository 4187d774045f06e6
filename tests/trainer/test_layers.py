"""Every layer's forward and backward: against numerical gradients and against torch autograd."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from pcc.trainer.layers import (
    Dropout,
    Flatten,
    PentaryBatchNorm,
    PentaryConv2D,
    PentaryLinear,
    PentaryMaxPool2D,
    PentaryReLU,
)

torch.manual_seed(0)


def _params_of(layer):
    return {p.name: p for p in layer.params()}


def _numeric_grad(f, a: np.ndarray, eps: float = 1e-3) -> np.ndarray:
    """Central differences of scalar ``f()`` w.r.t. every entry of ``a`` (modified in place, restored)."""
    g = np.zeros(a.shape, np.float64)
    flat, gflat = a.reshape(-1), g.reshape(-1)
    for i in range(flat.size):
        old = flat[i]
        flat[i] = old + eps
        hi = f()
        flat[i] = old - eps
        lo = f()
        flat[i] = old
        gflat[i] = (hi - lo) / (2 * eps)
    return g


def _check_numeric(layer, x: np.ndarray, rng, atol: float = 2e-3, rtol: float = 2e-2) -> None:
    """d/dx and d/dparams of sum(forward(x) * r) match central differences (float mode)."""
    x = x.astype(np.float64)
    y = layer.forward(x, training=True, quantized=False)
    r = rng.standard_normal(y.shape)

    def loss() -> float:
        return float(np.sum(layer.forward(x, training=True, quantized=False) * r))

    layer.forward(x, training=True, quantized=False)
    dx = layer.backward(r)
    grads = {name: p.grad.copy() for name, p in _params_of(layer).items()}
    np.testing.assert_allclose(dx, _numeric_grad(loss, x), atol=atol, rtol=rtol)
    for name, p in _params_of(layer).items():
        np.testing.assert_allclose(grads[name], _numeric_grad(loss, p.value), atol=atol * 10, rtol=rtol, err_msg=name)


# --- numerical gradients ------------------------------------------------------------------------------------


def test_linear_numeric(rng):
    _check_numeric(PentaryLinear(5, 4, rng=rng), rng.standard_normal((3, 5)), rng)


@pytest.mark.parametrize("stride,padding,kernel", [(1, 0, 3), (2, 1, 3), (1, 1, (2, 3))])
def test_conv_numeric(rng, stride, padding, kernel):
    _check_numeric(PentaryConv2D(2, 3, kernel, stride, padding, rng=rng), rng.standard_normal((2, 2, 5, 6)), rng)


def test_relu_numeric(rng):
    x = rng.standard_normal((4, 7))
    x[np.abs(x) < 0.05] = 0.5  # keep away from the kink
    _check_numeric(PentaryReLU(), x, rng)


@pytest.mark.parametrize("kernel,stride,padding", [(2, 2, 0), (3, 2, 1), (2, 1, 0)])
def test_maxpool_numeric(rng, kernel, stride, padding):
    x = rng.permutation(2 * 2 * 6 * 6).reshape(2, 2, 6, 6) / 10.0  # distinct values: no ties
    _check_numeric(PentaryMaxPool2D(kernel, stride, padding), x, rng)


@pytest.mark.parametrize("shape", [(6, 3), (3, 2, 4, 4)])
def test_batchnorm_numeric(rng, shape):
    bn = PentaryBatchNorm(shape[1])
    bn.gamma.value[...] = rng.uniform(0.5, 1.5, shape[1])
    bn.beta.value[...] = rng.standard_normal(shape[1])
    _check_numeric(bn, rng.standard_normal(shape) * 2 + 1, rng, atol=5e-3)


def test_flatten_numeric(rng):
    _check_numeric(Flatten(), rng.standard_normal((2, 3, 2, 2)), rng)


def test_dropout_numeric_with_fixed_mask(rng):
    d = Dropout(0.3, rng=np.random.default_rng(5))
    x = rng.standard_normal((4, 10))
    y = d.forward(x, training=True)
    mask = d._mask
    np.testing.assert_allclose(y, x * mask)
    r = rng.standard_normal(y.shape)
    np.testing.assert_allclose(d.backward(r), r * mask)
    assert set(np.unique(mask)) <= {0.0, np.float32(1 / 0.7)}
    np.testing.assert_array_equal(d.forward(x, training=False), x)


# --- torch autograd -----------------------------------------------------------------------------------------


def _torch_grads(fn, x: np.ndarray, params: dict[str, np.ndarray], r: np.ndarray):
    xt = torch.tensor(x, requires_grad=True)
    pt = {k: torch.tensor(v, requires_grad=True) for k, v in params.items()}
    y = fn(xt, pt)
    (y * torch.tensor(r)).sum().backward()
    return y.detach().numpy(), xt.grad.numpy(), {k: v.grad.numpy() for k, v in pt.items()}


def _ours(layer, x, r, quantized=False):
    y = layer.forward(x, training=True, quantized=quantized)
    dx = layer.backward(r.astype(np.float32))
    return y, dx, {p.name: p.grad.copy() for p in layer.params()}


def _compare(ours, ref, atol=1e-4):
    (y, dx, g), (yt, dxt, gt) = ours, ref
    np.testing.assert_allclose(y, yt, atol=atol, rtol=1e-4)
    np.testing.assert_allclose(dx, dxt, atol=atol, rtol=1e-4)
    for k in gt:
        np.testing.assert_allclose(g[k], gt[k], atol=atol * 10, rtol=1e-4, err_msg=k)


@pytest.mark.parametrize("quantized", [False, True])
def test_linear_vs_torch(rng, quantized):
    layer = PentaryLinear(20, 7, rng=rng)
    layer.bias.value[...] = rng.standard_normal(7)
    x = rng.standard_normal((5, 20)).astype(np.float32)
    w = layer.effective_weight(training=False, quantized=quantized)  # STE: torch sees the pentary weights
    y = layer.forward(x, training=True, quantized=quantized)
    r = rng.standard_normal(y.shape).astype(np.float32)
    ref = _torch_grads(lambda a, p: F.linear(a, p["weight"], p["bias"]), x, {"weight": w, "bias": layer.bias.value}, r)
    _compare(_ours(layer, x, r, quantized), ref)


@pytest.mark.parametrize("quantized", [False, True])
@pytest.mark.parametrize("stride,padding,kernel", [(1, 1, 3), (2, 1, 3), (2, 0, (3, 2))])
def test_conv_vs_torch(rng, stride, padding, kernel, quantized):
    layer = PentaryConv2D(3, 4, kernel, stride, padding, rng=rng)
    layer.bias.value[...] = rng.standard_normal(4)
    x = rng.standard_normal((2, 3, 9, 8)).astype(np.float32)
    w = layer.effective_weight(training=False, quantized=quantized)
    y = layer.forward(x, training=True, quantized=quantized)
    r = rng.standard_normal(y.shape).astype(np.float32)
    ref = _torch_grads(
        lambda a, p: F.conv2d(a, p["weight"], p["bias"], stride=stride, padding=padding),
        x,
        {"weight": w, "bias": layer.bias.value},
        r,
    )
    _compare(_ours(layer, x, r, quantized), ref)


def test_relu_vs_torch(rng):
    x = rng.standard_normal((3, 4, 5)).astype(np.float32)
    r = rng.standard_normal(x.shape).astype(np.float32)
    _compare(_ours(PentaryReLU(), x, r), _torch_grads(lambda a, p: torch.relu(a), x, {}, r))


@pytest.mark.parametrize("kernel,stride,padding", [(2, 2, 0), (3, 2, 1), (3, 1, 1), (2, 3, 0)])
def test_maxpool_vs_torch(rng, kernel, stride, padding):
    x = rng.standard_normal((2, 3, 7, 8)).astype(np.float32)
    layer = PentaryMaxPool2D(kernel, stride, padding)
    y = layer.forward(x, training=True)
    r = rng.standard_normal(y.shape).astype(np.float32)
    ref = _torch_grads(lambda a, p: F.max_pool2d(a, kernel, stride, padding), x, {}, r)
    _compare(_ours(layer, x, r), ref)


@pytest.mark.parametrize("shape", [(8, 5), (4, 3, 5, 6)])
def test_batchnorm_vs_torch(rng, shape):
    c = shape[1]
    bn = PentaryBatchNorm(c, eps=1e-5, momentum=0.1)
    bn.gamma.value[...] = rng.uniform(0.5, 1.5, c)
    bn.beta.value[...] = rng.standard_normal(c)
    tbn = (torch.nn.BatchNorm1d if len(shape) == 2 else torch.nn.BatchNorm2d)(c)
    with torch.no_grad():
        tbn.weight.copy_(torch.tensor(bn.gamma.value))
        tbn.bias.copy_(torch.tensor(bn.beta.value))
    tbn.train()
    x = (rng.standard_normal(shape) * 3 + 2).astype(np.float32)
    y = bn.forward(x, training=True)
    r = rng.standard_normal(y.shape).astype(np.float32)
    xt = torch.tensor(x, requires_grad=True)
    yt = tbn(xt)
    (yt * torch.tensor(r)).sum().backward()
    dx = bn.backward(r)
    np.testing.assert_allclose(y, yt.detach().numpy(), atol=1e-4)
    np.testing.assert_allclose(dx, xt.grad.numpy(), atol=1e-4)
    np.testing.assert_allclose(bn.gamma.grad, tbn.weight.grad.numpy(), atol=1e-3)
    np.testing.assert_allclose(bn.beta.grad, tbn.bias.grad.numpy(), atol=1e-3)
    np.testing.assert_allclose(bn.running_mean, tbn.running_mean.numpy(), atol=1e-5)
    np.testing.assert_allclose(bn.running_var, tbn.running_var.numpy(), atol=1e-4)
    tbn.eval()
    np.testing.assert_allclose(bn.forward(x), tbn(torch.tensor(x)).detach().numpy(), atol=1e-4)


def test_flatten_vs_torch(rng):
    x = rng.standard_normal((2, 3, 4, 5)).astype(np.float32)
    r = rng.standard_normal((2, 60)).astype(np.float32)
    _compare(_ours(Flatten(), x, r), _torch_grads(lambda a, p: torch.flatten(a, 1), x, {}, r))


def test_cnn_model_vs_torch(rng):
    """A whole CNN (float mode): logits and every parameter gradient equal torch's."""
    from pcc.trainer.model import PentaryModel
    from pcc.trainer.trainer import LossFunction

    layers = [
        PentaryConv2D(1, 4, 3, padding=1), PentaryBatchNorm(4), PentaryReLU(), PentaryMaxPool2D(2),
        Flatten(), PentaryLinear(4 * 4 * 4, 10),
    ]  # fmt: skip
    model = PentaryModel.sequential(layers, (1, 8, 8), seed=3)
    tm = torch.nn.Sequential(
        torch.nn.Conv2d(1, 4, 3, padding=1), torch.nn.BatchNorm2d(4), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
        torch.nn.Flatten(), torch.nn.Linear(64, 10),
    )  # fmt: skip
    with torch.no_grad():
        tm[0].weight.copy_(torch.tensor(layers[0].weight.value))
        tm[0].bias.copy_(torch.tensor(layers[0].bias.value))
        tm[5].weight.copy_(torch.tensor(layers[5].weight.value))
        tm[5].bias.copy_(torch.tensor(layers[5].bias.value))
    x = rng.standard_normal((6, 64)).astype(np.float32)
    y = rng.integers(0, 10, 6)
    out = model.forward(x, training=True, quantized=False)
    loss, g = LossFunction.cross_entropy_loss(out, y)
    model.backward(g)
    tout = tm(torch.tensor(x).reshape(6, 1, 8, 8))
    tloss = F.cross_entropy(tout, torch.tensor(y))
    tloss.backward()
    assert loss == pytest.approx(tloss.item(), rel=1e-5)
    np.testing.assert_allclose(layers[0].weight.grad, tm[0].weight.grad.numpy(), atol=1e-5)
    np.testing.assert_allclose(layers[1].gamma.grad, tm[1].weight.grad.numpy(), atol=1e-5)
    np.testing.assert_allclose(layers[5].weight.grad, tm[5].weight.grad.numpy(), atol=1e-5)


def test_losses_vs_torch(rng):
    from pcc.trainer.trainer import LossFunction

    logits = rng.standard_normal((5, 4)).astype(np.float32)
    y = rng.integers(0, 4, 5)
    lt = torch.tensor(logits, requires_grad=True)
    F.cross_entropy(lt, torch.tensor(y)).backward()
    loss, g = LossFunction.cross_entropy_loss(logits, y)
    assert loss == pytest.approx(F.cross_entropy(torch.tensor(logits), torch.tensor(y)).item(), rel=1e-5)
    np.testing.assert_allclose(g, lt.grad.numpy(), atol=1e-6)
    lt = torch.tensor(logits, requires_grad=True)
    onehot = F.one_hot(torch.tensor(y), 4).float()
    F.mse_loss(lt, onehot).backward()
    loss, g = LossFunction.mse_loss(logits, y)
    assert loss == pytest.approx(F.mse_loss(torch.tensor(logits), onehot).item(), rel=1e-5)
    np.testing.assert_allclose(g, lt.grad.numpy(), atol=1e-6)


@pytest.mark.parametrize("name", ["sgd", "adam"])
def test_optimizers_match_torch(rng, name):
    from pcc.trainer.model import PentaryModel
    from pcc.trainer.optim import make_optimizer

    model = PentaryModel(6, 3, [5], seed=1)
    params = [torch.tensor(p.value.copy(), requires_grad=True) for p in model.params()]
    decay = [p.decay for p in model.params()]
    groups = [
        {"params": [t for t, d in zip(params, decay, strict=True) if d], "weight_decay": 0.01},
        {"params": [t for t, d in zip(params, decay, strict=True) if not d], "weight_decay": 0.0},
    ]
    topt = torch.optim.SGD(groups, lr=0.05, momentum=0.9) if name == "sgd" else torch.optim.Adam(groups, lr=0.05)
    opt = make_optimizer(name, model, momentum=0.9, weight_decay=0.01)
    for _ in range(4):
        grads = [rng.standard_normal(p.value.shape).astype(np.float32) for p in model.params()]
        for p, g, t in zip(model.params(), grads, params, strict=True):
            p.grad[...] = g
            t.grad = torch.tensor(g)
        opt.step(0.05)
        topt.step()
    for p, t in zip(model.params(), params, strict=True):
        np.testing.assert_allclose(p.value, t.detach().numpy(), atol=1e-6)


def test_output_shapes_and_errors():
    conv = PentaryConv2D(3, 8, 3, stride=2, padding=1)
    assert conv.output_shape((3, 32, 32)) == (8, 16, 16)
    assert PentaryMaxPool2D(2).output_shape((8, 16, 16)) == (8, 8, 8)
    with pytest.raises(ValueError):
        conv.output_shape((4, 32, 32))
    with pytest.raises(ValueError):
        PentaryLinear(10, 2).output_shape((11,))
    with pytest.raises(ValueError):
        Dropout(1.0)
