"""HF transformers' BERT and GPT-2 (small configs, random weights), both attention implementations (sdpa and
eager), import from ``torch.onnx.export`` (against onnxruntime, ORT_ENABLE_BASIC) and from ``torch.export``
(against torch), to 1e-5 of the largest reference magnitude.  Skipped without the transformers package."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

torch = pytest.importorskip("torch")
ort = pytest.importorskip("onnxruntime")
pytest.importorskip("transformers", reason="the HF model tests need the transformers package")

from hf_models import HF, IMPLS, build_hf  # noqa: E402

from pcc import interpreter  # noqa: E402
from pcc.drivers.compile import compile_model  # noqa: E402
from pcc.frontends import onnx as onnx_frontend  # noqa: E402
from pcc.frontends import torch as torch_frontend  # noqa: E402
from pcc.parser import parse_file  # noqa: E402

REL = 1e-5
CASES = [(m, i) for m in HF for i in IMPLS]
FAST_PT2 = {("gpt2", "sdpa")}  # the path that keeps scaled_dot_product_attention whole
PT2_CASES = [pytest.param(*c, marks=() if c in FAST_PT2 else pytest.mark.slow) for c in CASES]
pytestmark = pytest.mark.filterwarnings("ignore::FutureWarning", "ignore::DeprecationWarning", "ignore::UserWarning")


def _rel_err(got: np.ndarray, ref: np.ndarray) -> float:
    assert got.shape == ref.shape and got.dtype == ref.dtype
    assert np.all(np.isfinite(ref)) and np.std(ref) > 0
    return float(np.max(np.abs(got.astype(np.float64) - ref)) / np.max(np.abs(ref)))


def export_onnx(m, xs, path) -> dict[str, np.ndarray]:  # noqa: ANN001
    """``torch.onnx.export(dynamo=False)`` with inputs ``ids``, ``mask`` and output ``y``; returns the feeds."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(m, xs, str(path), dynamo=False, input_names=["ids", "mask"], output_names=["y"])
    return {"ids": xs[0].numpy(), "mask": xs[1].numpy()}


def ort_run(path, feeds: dict[str, np.ndarray]) -> np.ndarray:  # noqa: ANN001
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    so.log_severity_level = 3
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"]).run(None, feeds)[0]


@pytest.mark.parametrize(("name", "impl"), CASES)
def test_hf_onnx_export_imports_and_matches_onnxruntime(name: str, impl: str, tmp_path) -> None:  # noqa: ANN001
    m, xs = build_hf(name, impl)
    path = tmp_path / f"{name}_{impl}.onnx"
    feeds = export_onnx(m, xs, path)
    got = interpreter.run(onnx_frontend.load(path), feeds)["y"]
    ref = ort_run(path, feeds)
    assert _rel_err(got, ref) <= REL
    (pir, _) = compile_model(path, emit="ir", output=tmp_path / f"{name}.pir")  # what `pcc compile --emit ir` does
    assert [a.name for a in parse_file(pir).main.args] == ["ids", "mask"]


@pytest.mark.parametrize(("name", "impl"), PT2_CASES)
def test_hf_torch_export_imports_and_matches_torch(name: str, impl: str, tmp_path) -> None:  # noqa: ANN001
    m, xs = build_hf(name, impl)
    path = tmp_path / f"{name}_{impl}.pt2"
    torch.export.save(torch.export.export(m, xs), str(path))
    module = torch_frontend.load_pt2(path)
    with torch.no_grad():
        ref = m(*xs).numpy()
    feeds = {a.name: x.numpy() for a, x in zip(module.main.args, xs, strict=True)}
    (got,) = interpreter.run(module, feeds).values()
    assert _rel_err(got, ref) <= REL


class _Index(torch.nn.Module):
    """Advanced indexing in the three placements numpy defines: leading, adjacent in the middle, split."""

    def __init__(self, where: str) -> None:
        super().__init__()
        self.where = where

    def forward(self, x: torch.Tensor, i: torch.Tensor, j: torch.Tensor) -> torch.Tensor:
        if self.where == "lead":
            return x[i, j]
        if self.where == "middle":
            return x[:, i, j]
        return x[i, :, j]


@pytest.mark.parametrize("where", ["lead", "middle", "split"])
def test_aten_index_tensor_matches_torch(where: str) -> None:
    g = torch.Generator().manual_seed(3)
    x = torch.randn(4, 5, 6, 3, generator=g)
    i = torch.tensor([[0, -1, 2]])  # broadcasts with j to 2x3; a negative index counts from the end
    j = torch.tensor([[1], [4]])
    m = _Index(where)
    module = torch_frontend.load(m, (x, i, j))
    ref = m(x, i, j).numpy()
    feeds = {a.name: t.numpy() for a, t in zip(module.main.args, (x, i, j), strict=True)}
    (got,) = interpreter.run(module, feeds).values()
    assert got.shape == ref.shape
    np.testing.assert_array_equal(got, ref)
