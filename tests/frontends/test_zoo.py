"""The model zoo: every common family imports and the float interpreter matches the reference.

- The nine models bundled in the onnx package (opset 9; ``zoo_light.randomized``: random weights instead of the
  shipped ``ConstantOfShape(0.02)``, logits exposed) against onnxruntime with ORT_ENABLE_BASIC.
- The torchvision / HF families written in torch (``zoo_models``) exported with ``torch.onnx.export(dynamo=False)``
  (against onnxruntime) and with ``torch.export`` (against torch itself).
- The ``.onnx`` and the ``torch.export`` program of one model give the same IR after canonicalize (ops, result
  types and attribute values, defaults resolved): a spatial mean, a pooled flatten and an adaptive pool meet in
  one form, as do a 3-D linear layer (``MatMul`` + ``Add`` / ``linear``), ``chunk`` (``Slice`` nodes /
  ``split``), ``x[:, 0]`` (``Gather`` / ``select``), transpose chains and a mask built once or in every layer.
  All fourteen families, scaled_dot_product_attention included: the exporter's ``q·sqrt(s) @ kᵀ·sqrt(s)``, its
  additive ``where(m, 0, -inf)`` mask and its ``[1]``-shaped NaN-guard constant meet the torch rule's
  ``(q @ kᵀ)·s``, ``where(m, scores, -inf)`` and safe-softmax guard.

Accuracy: the largest absolute error relative to the largest reference magnitude, at most 1e-5 (float32 results
that differ only in summation order stay near 1e-6 here).  The big models are marked slow (``--runslow``); a
representative subset of each kind runs by default.
"""

from __future__ import annotations

import warnings

import numpy as np
import onnx
import pytest

torch = pytest.importorskip("torch")
ort = pytest.importorskip("onnxruntime")

from zoo_light import LIGHT, data_input, randomized  # noqa: E402
from zoo_models import ZOO, build_zoo  # noqa: E402

from pcc import interpreter  # noqa: E402
from pcc.dialects import nn  # noqa: E402
from pcc.drivers.compile import compile_model  # noqa: E402
from pcc.frontends import onnx as onnx_frontend  # noqa: E402
from pcc.frontends import torch as torch_frontend  # noqa: E402
from pcc.ir import Module  # noqa: E402
from pcc.parser import parse_file  # noqa: E402
from pcc.passes.canonicalize import Canonicalize  # noqa: E402

REL = 1e-5
pytestmark = pytest.mark.filterwarnings("ignore::FutureWarning", "ignore::DeprecationWarning", "ignore::UserWarning")

FAST_LIGHT = {"squeezenet", "shufflenet"}
FAST_ZOO = {"resnet", "squeezenet", "vit", "bert_sdpa", "gpt2_eager"}
FAST_SAME_IR = {"resnet", "squeezenet", "bert_eager", "bert_sdpa"}
#: the ONNX exporter writes scaled_dot_product_attention as q and k each scaled by sqrt(scale), an additive
#: mask from Where, softmax, then IsNaN -> Where to zero the rows that the mask hides entirely; the torch frontend's
#: rule scales the scores once and masks them with one Where: one function, two graphs no local rewrite joins
DIFFERENT_SDPA = "the ONNX export of scaled_dot_product_attention and the torch rule for it differ"


def _params(names, fast, xfail=None):  # noqa: ANN001, ANN202
    xfail = xfail or {}
    out = []
    for n in names:
        marks = [] if n in fast else [pytest.mark.slow]
        if n in xfail:
            marks.append(pytest.mark.xfail(reason=xfail[n], strict=True))
        out.append(pytest.param(n, marks=marks))
    return out


def _rel_err(got: np.ndarray, ref: np.ndarray) -> float:
    assert got.shape == ref.shape and got.dtype == ref.dtype
    assert np.all(np.isfinite(ref))
    return float(np.max(np.abs(got.astype(np.float64) - ref)) / max(np.max(np.abs(ref)), 1e-30))


def _ort(model: onnx.ModelProto | str, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    so.log_severity_level = 3
    src = model.SerializeToString() if isinstance(model, onnx.ModelProto) else model
    return ort.InferenceSession(src, so, providers=["CPUExecutionProvider"]).run(None, feeds)


@pytest.mark.parametrize("name", _params(LIGHT, FAST_LIGHT))
def test_bundled_onnx_model_matches_onnxruntime(name: str) -> None:
    m = randomized(name)
    x_info = data_input(m)
    x = np.random.default_rng(1).standard_normal([d.dim_value for d in x_info.type.tensor_type.shape.dim])
    x = x.astype(np.float32)
    module = onnx_frontend.load_proto(m)
    got = interpreter.run(module, {x_info.name: x})
    refs = _ort(m, {x_info.name: x})
    assert len(got) == len(refs) == len(m.graph.output)
    for out, ref in zip(m.graph.output, refs, strict=True):
        assert np.std(ref) > 0, f"{out.name}: a constant output proves nothing"
        assert _rel_err(got[out.name], ref) <= REL, out.name


def _export_onnx(m, xs, path, fold: bool = True) -> list[str]:  # noqa: ANN001
    names = [f"in{i}" for i in range(len(xs))]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(m, xs, str(path), dynamo=False, input_names=names, output_names=["y"],
                          do_constant_folding=fold)  # fmt: skip
    return names


@pytest.mark.parametrize("name", _params(ZOO, FAST_ZOO))
def test_zoo_onnx_export_matches_onnxruntime(name: str, tmp_path) -> None:  # noqa: ANN001
    m, xs = build_zoo(name)
    path = tmp_path / f"{name}.onnx"
    names = _export_onnx(m, xs, path)
    feeds = {n: x.numpy() for n, x in zip(names, xs, strict=True)}
    module = onnx_frontend.load(path)
    got = interpreter.run(module, feeds)["y"]
    (ref,) = _ort(str(path), feeds)
    assert _rel_err(got, ref) <= REL
    (pir, _) = compile_model(path, emit="ir", output=tmp_path / f"{name}.pir")  # what `pcc compile --emit ir` does
    assert [a.name for a in parse_file(pir).main.args] == names


@pytest.mark.parametrize("name", _params(ZOO, FAST_ZOO))
def test_zoo_torch_export_matches_torch(name: str) -> None:
    m, xs = build_zoo(name)
    module = torch_frontend.load(m, xs)
    with torch.no_grad():
        ref = m(*xs).numpy()
    feeds = {a.name: x.numpy() for a, x in zip(module.main.args, xs, strict=True)}
    (got,) = interpreter.run(module, feeds).values()
    assert _rel_err(got, ref) <= REL


def _signature(module: Module) -> list[tuple]:
    """Each op in program order: its name, result types, attribute values, and where each operand comes from (an
    argument's position, an earlier op's position and result, or a constant of a given type)."""
    Canonicalize().run(module)
    body = module.main.body
    where: dict[int, tuple] = {id(a): ("arg", i) for i, a in enumerate(module.main.args)}
    for j, op in enumerate(body):
        where.update({id(r): ("op", j, k) for k, r in enumerate(op.results)})
    return [
        (
            op.name,
            [str(r.type) for r in op.results],
            {k: op.attr(k) for k in op.attrs},
            [where.get(id(v), ("const", str(v.type))) for v in op.operands],
        )
        for op in body
    ]


@pytest.mark.parametrize("name", _params(ZOO, FAST_SAME_IR))
def test_pt2_and_onnx_give_the_same_ir(name: str, tmp_path) -> None:  # noqa: ANN001
    m, xs = build_zoo(name)
    path = tmp_path / f"{name}.onnx"
    _export_onnx(m, xs, path, fold=False)  # BatchNorm kept, as torch.export keeps it
    pt2 = tmp_path / f"{name}.pt2"
    torch.export.save(torch.export.export(m, xs), str(pt2))
    assert _signature(onnx_frontend.load(path)) == _signature(torch_frontend.load_pt2(pt2))


def test_canonical_sdpa_matches_onnxruntime(tmp_path) -> None:  # noqa: ANN001
    """The exporter's attention rewritten to the torch rule's form (scores scaled once by the float64 product of
    the two ``sqrt(s)``, the additive mask as one where) computes what onnxruntime computes on the export."""
    m, xs = build_zoo("gpt2_sdpa")
    path = tmp_path / "gpt2_sdpa.onnx"
    names = _export_onnx(m, xs, path)
    feeds = {n: x.numpy() for n, x in zip(names, xs, strict=True)}
    module = onnx_frontend.load(path)
    Canonicalize().run(module)
    ops = [op.name for op in module.main.body]
    assert "nn.add" not in [op.name for op in module.main.body if isinstance(op.operands[-1].owner, nn.Where)]
    assert ops.count("nn.is_nan") == 2 and ops.count("nn.where") >= 4
    (ref,) = _ort(str(path), feeds)
    assert _rel_err(interpreter.run(module, feeds)["y"], ref) <= REL


class _MaskedRows(torch.nn.Module):
    def forward(self, q: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.scaled_dot_product_attention(q, q * 2, q, attn_mask=m)


def test_sdpa_rule_gives_zero_for_a_fully_masked_row() -> None:
    """torch's scaled_dot_product_attention with a boolean mask that hides a whole row gives 0 there (its safe
    softmax), which the torch rule's NaN guard reproduces; a plain softmax would give NaN."""
    q = torch.randn(1, 2, 4, 8)
    mask = torch.tensor([[True, False, True, True], [False] * 4, [True] * 4, [False, False, False, True]])
    module = torch_frontend.load(_MaskedRows(), (q, mask))
    with torch.no_grad():
        ref = _MaskedRows()(q, mask).numpy()
    assert np.all(ref[:, :, 1] == 0) and np.all(np.isfinite(ref))
    (got,) = interpreter.run(
        module, {a.name: x.numpy() for a, x in zip(module.main.args, (q, mask), strict=True)}
    ).values()
    assert _rel_err(got, ref) <= REL
    assert np.all(got[:, :, 1] == 0)


class _SpatialMean(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 8, 3, padding=1)
        self.fc = torch.nn.Linear(8, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.relu(self.conv(x))
        return self.fc(y.mean((2, 3))) + y.mean((-1, -2), keepdim=True).sum()


def test_spatial_mean_becomes_global_avg_pool_from_both_frontends(tmp_path) -> None:  # noqa: ANN001
    m = _SpatialMean().eval()
    xs = (torch.randn(2, 3, 8, 8),)
    path = tmp_path / "mean.onnx"
    _export_onnx(m, xs, path)
    from_onnx, from_torch = onnx_frontend.load(path), torch_frontend.load(m, xs)
    for module in (from_onnx, from_torch):
        assert sum(isinstance(op, nn.ReduceMean) for op in module.main.body) == 2
        assert sum(isinstance(op, nn.ReduceSum) for op in module.main.body) == 1  # a sum is not a mean
    a, b = _signature(from_onnx), _signature(from_torch)
    assert a == b
    names = [op[0] for op in a]
    # both means become the one pool of y, computed once (the common-subexpression rewrite)
    assert names.count("nn.global_avg_pool") == 1 and "nn.reduce_mean" not in names and "nn.reduce_sum" in names
    with torch.no_grad():
        ref = m(*xs).numpy()
    (got,) = interpreter.run(from_onnx, {"in0": xs[0].numpy()}).values()
    assert _rel_err(got, ref) <= REL
