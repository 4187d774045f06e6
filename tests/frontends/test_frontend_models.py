"""Whole models built with torch, imported two ways, checked against onnxruntime and torch.

Each model of ``torch_models.MODELS`` (MLP, LeNet-style CNN with BatchNorm, ResNet basic blocks, depthwise-
separable MobileNet-style net, transformer encoder block) is

- exported with ``torch.onnx.export(..., dynamo=False)`` (constant folding on, which folds BatchNorm into the
  convolutions, and off, which keeps BatchNormalization nodes), imported by the ONNX frontend and run on the
  reference interpreter: compared with onnxruntime (ORT_ENABLE_BASIC) and with torch;
- exported with ``torch.export`` and imported by the torch frontend: compared with torch; also saved as a
  ``.pt2`` file and read back.

Tolerance: rtol 1e-5 with atol 1e-6 (the outputs are of order 1; the float32 results differ from the
references only by summation order, by at most about 5e-7 absolute here).
"""

from __future__ import annotations

import warnings

import numpy as np
import onnx
import pytest

torch = pytest.importorskip("torch")

from onnx_util import ort_run  # noqa: E402
from torch_models import MODELS, build  # noqa: E402

from pcc import interpreter  # noqa: E402
from pcc.diagnostics import PccError  # noqa: E402
from pcc.dialects import nn  # noqa: E402
from pcc.frontends import load_model  # noqa: E402
from pcc.frontends import onnx as onnx_frontend  # noqa: E402
from pcc.frontends import torch as torch_frontend  # noqa: E402

RTOL, ATOL = 1e-5, 1e-6
pytestmark = pytest.mark.filterwarnings("ignore::FutureWarning")  # from torch.export internals


def _export_onnx(m, x, path, fold: bool) -> onnx.ModelProto:  # noqa: ANN001
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            m, (x,), str(path), dynamo=False, input_names=["x"], output_names=["y"], do_constant_folding=fold
        )
    return onnx.load(str(path))


def _torch_ref(m, x) -> np.ndarray:  # noqa: ANN001
    with torch.no_grad():
        return m(x).numpy()


@pytest.mark.parametrize("fold", [True, False], ids=["folded", "unfolded"])
@pytest.mark.parametrize("name", list(MODELS))
def test_onnx_export_matches_onnxruntime_and_torch(name: str, fold: bool, tmp_path) -> None:  # noqa: ANN001
    m, x = build(name)
    path = tmp_path / f"{name}.onnx"
    proto = _export_onnx(m, x, path, fold)
    module = onnx_frontend.load(path)
    got = interpreter.run(module, {"x": x.numpy()})["y"]
    np.testing.assert_allclose(got, ort_run(proto, {"x": x.numpy()})[0], rtol=RTOL, atol=ATOL)
    np.testing.assert_allclose(got, _torch_ref(m, x), rtol=RTOL, atol=ATOL)
    if not fold and name != "mlp":
        ops = {op.name for op in module.main.body}
        assert ops & {"nn.batch_norm", "nn.layer_norm", "nn.reduce_mean"}, ops


@pytest.mark.parametrize("name", list(MODELS))
def test_torch_export_matches_torch(name: str) -> None:
    m, x = build(name)
    module = torch_frontend.load(m, (x,))
    got = interpreter.run(module, {"x": x.numpy()})
    (out,) = got.values()
    np.testing.assert_allclose(out, _torch_ref(m, x), rtol=RTOL, atol=ATOL)
    # every op knows the model node (module path / FX node) it came from
    assert all(op.loc is not None and op.loc.node for op in module.main.body)


def test_torch_linear_keeps_out_in_weight_layout() -> None:
    m, x = build("mlp")
    module = torch_frontend.load(m, (x,))
    gemms = module.main.ops_of(nn.Gemm)
    assert len(gemms) == 3
    for g in gemms:
        assert g.attr("trans_b") is True and g.operands[1].is_weight
    assert module.weights["net.0.weight"].type.shape == (32, 64)


def test_torch_batchnorm_and_locations() -> None:
    m, x = build("lenet_bn")
    module = torch_frontend.load(m, (x,))
    bns = module.main.ops_of(nn.BatchNorm)
    assert [op.loc.node for op in bns] == [
        "bn1/_native_batch_norm_legit_no_training",
        "bn2/_native_batch_norm_legit_no_training_1",
    ]
    assert m.training is False


def test_torch_load_restores_training_mode() -> None:
    m, x = build("resnet_basic")
    m.train()
    module = torch_frontend.load(m, (x,))
    assert m.training is True
    m.eval()
    np.testing.assert_allclose(
        interpreter.run(module, {"x": x.numpy()})["linear"], _torch_ref(m, x), rtol=RTOL, atol=ATOL
    )


@pytest.mark.parametrize("name", ["resnet_basic", "transformer_block"])
def test_pt2_file_roundtrip(name: str, tmp_path) -> None:  # noqa: ANN001
    m, x = build(name)
    path = tmp_path / f"{name}.pt2"
    torch.export.save(torch.export.export(m, (x,)), str(path))
    module = load_model(path)
    assert module.source == str(path)
    (out,) = interpreter.run(module, {"x": x.numpy()}).values()
    np.testing.assert_allclose(out, _torch_ref(m, x), rtol=RTOL, atol=ATOL)
    assert all(op.loc.file == str(path) for op in module.main.body)


def test_unsupported_aten_ops_are_listed_together() -> None:
    class Odd(torch.nn.Module):
        def forward(self, x):  # noqa: ANN001, ANN202
            y = torch.cummax(x, 1).values + torch.sort(x, 1).values
            return torch.special.i0(y) + torch.cummax(y, 0).values

    with pytest.raises(PccError) as info:
        torch_frontend.load(Odd(), (torch.randn(3, 4),))
    msg = info.value.message
    assert "3 unsupported ATen operators" in msg
    assert "aten.cummax.default ('cummax', 'cummax_1')" in msg and "aten.sort.default" in msg
    assert "aten.i0.default" in msg


def test_pt2_errors(tmp_path) -> None:  # noqa: ANN001
    with pytest.raises(PccError, match="no such file"):
        torch_frontend.load_pt2(tmp_path / "missing.pt2")
    bad = tmp_path / "bad.pt2"
    bad.write_bytes(b"not a zip archive")
    with pytest.raises(PccError, match=r"bad.pt2: error: not a torch.export program"):
        torch_frontend.load_pt2(bad)


def test_missing_torch_names_the_extra(monkeypatch) -> None:  # noqa: ANN001
    import sys

    monkeypatch.setitem(sys.modules, "torch", None)  # import torch now raises ImportError
    with pytest.raises(PccError, match=r"pip install 'pcc\[torch\]'"):
        torch_frontend.load_pt2("model.pt2")


class _Zoo(torch.nn.Module):
    """Many ATen ops in one graph (the less common converters of the torch frontend)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1d = torch.nn.Conv1d(4, 6, 3, stride=2, padding=1)
        self.lin = torch.nn.Linear(4, 5, bias=False)
        self.scale = torch.nn.Parameter(torch.rand(1, 4, 1, 1) + 0.5)

    def forward(self, x):  # noqa: ANN001, ANN201
        f = torch.nn.functional
        a = f.leaky_relu(x, 0.2) + torch.sigmoid(x) - f.hardsigmoid(x) * self.scale
        a = torch.cat([a, torch.rsqrt(x * x + 1.0)], dim=1)[:, 2:6]  # slice
        a = f.pad(a, (1, 2, 0, 1), value=0.5)
        a = f.interpolate(a, scale_factor=2, mode="nearest")
        a = f.max_pool2d(a, 3, stride=2, ceil_mode=True, dilation=1)
        a = f.avg_pool2d(a, 2, stride=2, ceil_mode=True, count_include_pad=False)
        b = f.adaptive_avg_pool2d(x[:, :, 1:, :8], (2, 4))
        s = a.sum(dim=(2, 3)) + b.mean(dim=(2, 3)) + (1.0 - b.pow(2)).mean()  # rsub, pow, mean of all
        row = x[:, :, 0]  # select
        c = self.conv1d(row.transpose(1, 2).reshape(2, 9, 4).transpose(1, 2)[:, :, :8])
        att = torch.softmax(c @ c.transpose(1, 2), dim=1)  # bmm on activations
        d = self.lin(att @ c).unsqueeze(1).squeeze(1)  # linear on a 3-D input
        e = d.to(torch.float64).to(torch.float32).sum(dim=-1)
        return torch.cat([s, e[:, :2]], dim=1) - torch.tanh(s).sub(s, alpha=0.5).sum(dim=1, keepdim=True)


def test_torch_op_zoo_matches_torch() -> None:
    torch.manual_seed(3)
    m = _Zoo().eval()
    x = torch.randn(2, 4, 7, 9)
    module = torch_frontend.load(m, (x,))
    (out,) = interpreter.run(module, {"x": x.numpy()}).values()
    np.testing.assert_allclose(out, _torch_ref(m, x), rtol=RTOL, atol=ATOL)


class _Raw(torch.nn.Module):
    """Ops as ``torch.export`` writes them before decomposition (linear, matmul, softmax.int, split, t, ...)."""

    def __init__(self) -> None:
        super().__init__()
        self.lin = torch.nn.Linear(6, 4)
        self.w = torch.nn.Parameter(torch.randn(4, 3))

    def forward(self, x):  # noqa: ANN001, ANN201
        f = torch.nn.functional
        y = self.lin(x)
        y = torch.erf(y) + torch.exp(-y * 0.5) - torch.neg(torch.sqrt(y * y + 1))
        y = y.reshape(2, 3, 4).transpose(1, 2).flatten(1)
        a, b = torch.split(y, 6, dim=1)
        z = torch.matmul(a.reshape(2, 2, 3), self.w.t()[:3, :3])
        z = torch.softmax(z, dim=-1) + torch.log_softmax(z, dim=1)
        z = z.unsqueeze(0).squeeze(0).squeeze()
        z = 2.0 - z ** torch.full_like(z, 2.0)
        z = f.hardsigmoid(z) + f.hardswish(z) + f.relu6(z) + f.gelu(z, approximate="tanh")
        z = f.max_pool2d(z.unsqueeze(1), 2, ceil_mode=True)
        z = f.interpolate(z, size=(4, 4), mode="nearest")
        return f.adaptive_avg_pool2d(z, 2).sum() + b.sum(dim=1).mean() + z.mean()


@pytest.mark.parametrize("decompose", [True, False], ids=["core-aten", "as-exported"])
def test_torch_ops_before_and_after_decomposition(decompose: bool) -> None:
    torch.manual_seed(4)
    m = _Raw().eval()
    x = torch.randn(6, 6)
    module = torch_frontend.load_exported(torch.export.export(m, (x,)), decompose=decompose)
    (out,) = interpreter.run(module, {"x": x.numpy()}).values()
    np.testing.assert_allclose(out, _torch_ref(m, x), rtol=RTOL, atol=ATOL)


class _ShiftedWindows(torch.nn.Module):
    """Swin's shifted windows: a roll, a mask filled region by region in place (torch.export: slice_scatter and
    copy of constants, folded at import), F.normalize and a vector norm (linalg_vector_norm)."""

    def forward(self, x):  # noqa: ANN001, ANN201
        y = torch.roll(x, shifts=(-1, 2), dims=(2, 3))
        mask = x.new_zeros((x.shape[2], x.shape[3]))
        mask[:2, :] = 1.0
        mask[2:, 3:] = 2.0
        n = torch.linalg.vector_norm(x, dim=1, keepdim=True)
        return torch.nn.functional.normalize(y, dim=-1) + mask + n


def test_roll_mask_and_norms() -> None:
    """In the core ATen form (the default import; the as-exported form keeps in-place ops)."""
    x = torch.randn(1, 3, 4, 5, generator=torch.Generator().manual_seed(2))
    m = _ShiftedWindows().eval()
    module = torch_frontend.load_exported(torch.export.export(m, (x,)))
    assert len(list(module.main.ops_of(nn.Concat))) == 2  # the roll: two slices and a concat per axis
    (out,) = interpreter.run(module, {"x": x.numpy()}).values()
    np.testing.assert_allclose(out, _torch_ref(m, x), rtol=RTOL, atol=ATOL)


def test_unsupported_second_output_is_a_clear_error() -> None:
    class Idx(torch.nn.Module):
        def forward(self, x):  # noqa: ANN001, ANN202
            y, i = torch.nn.functional.max_pool2d(x, 2, return_indices=True)
            return y + i.float()

    with pytest.raises(PccError, match=r"output #1 of max_pool2d_with_indices .* is not supported"):
        torch_frontend.load(Idx(), (torch.randn(1, 2, 4, 4),))
