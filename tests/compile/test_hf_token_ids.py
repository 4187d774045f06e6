"""HF transformers' BERT and GPT-2 (small configs, random weights) on their real inputs, token ids and an
attention mask, compile to the simulator from ``torch.onnx.export`` and from ``torch.export`` (.pt2), with sdpa
and eager attention: the word, position and token-type embeddings are ``pent.embed`` lookups (the position and
token-type ids are constants of the export, from ``arange`` or a buffer), the padding mask is a run-time input.

The pentary-exact twins (every matrix weight and table on ``s_c x {-2..2}``) match onnxruntime within 1e-2 of
the output range at 8-pent activations, on a padding the calibration set did not hold; the simulator equals the
pent reference bit for bit."""

from __future__ import annotations

import sys
import warnings
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")
pytest.importorskip("transformers", reason="the HF model tests need the transformers package")
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "frontends"))

from hf_models import SEQ, VOCAB, build_hf, pentary_exact_torch  # noqa: E402
from onnx_util import ort_run  # noqa: E402

from pcc import pent_reference  # noqa: E402
from pcc.backend.assembler import assemble_file  # noqa: E402
from pcc.drivers.compile import compile_model  # noqa: E402
from pcc.parser import parse_file  # noqa: E402
from pcc.runtime.simulator import run_program  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore::FutureWarning", "ignore::DeprecationWarning", "ignore::UserWarning")


def _export(tmp_path: Path, name: str, impl: str, fmt: str) -> tuple[Path, onnx.ModelProto, dict[str, np.ndarray]]:
    """The pentary-exact twin as ``fmt`` (onnx, onnx-dyn: batch and sequence axes dynamic, so that the position
    ids are a ``Range`` over the input's shape, or pt2), its ONNX export (the reference) and the example feeds."""
    m, (ids, mask) = build_hf(name, impl)
    pentary_exact_torch(m.model)
    ref = tmp_path / "ref.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(m, (ids, mask), str(ref), dynamo=False, input_names=["ids", "mask"], output_names=["y"])
    path = ref
    if fmt == "onnx-dyn":
        path = tmp_path / "dyn.onnx"
        axes = {"ids": {0: "b", 1: "s"}, "mask": {0: "b", 1: "s"}}
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(
                m,
                (ids, mask),
                str(path),
                dynamo=False,
                input_names=["ids", "mask"],
                output_names=["y"],
                dynamic_axes=axes,
            )
        assert "Range" in {n.op_type for n in onnx.load(str(path)).graph.node}
    if fmt == "pt2":
        path = tmp_path / "m.pt2"
        torch.export.save(torch.export.export(m, (ids, mask)), str(path))
    return path, onnx.load(str(ref)), {"ids": ids.numpy(), "mask": mask.numpy()}


def _calibration(tmp_path: Path, feeds: dict[str, np.ndarray]) -> Path:
    rng = np.random.default_rng(0)
    ids = np.concatenate([feeds["ids"], rng.integers(0, VOCAB, (6, SEQ))])
    mask = np.ones((8, SEQ), np.int64)
    for i, n in enumerate(rng.integers(SEQ // 2, SEQ + 1, 8)):
        mask[i, n:] = 0
    mask[:2] = feeds["mask"]
    np.savez(tmp_path / "cal.npz", ids=ids, mask=mask)
    return tmp_path / "cal.npz"


CASES = [
    ("bert", "sdpa", "onnx"),
    ("bert", "eager", "onnx"),
    ("gpt2", "sdpa", "onnx"),
    ("gpt2", "eager", "onnx"),
    ("gpt2", "sdpa", "pt2"),
    ("bert", "eager", "onnx-dyn"),
    pytest.param("gpt2", "sdpa", "onnx-dyn", marks=pytest.mark.slow),
    pytest.param("bert", "sdpa", "pt2", marks=pytest.mark.slow),
    pytest.param("bert", "eager", "pt2", marks=pytest.mark.slow),
    pytest.param("gpt2", "eager", "pt2", marks=pytest.mark.slow),
]


@pytest.mark.parametrize(("name", "impl", "fmt"), CASES)
def test_hf_token_ids_on_the_simulator_match_onnxruntime(name: str, impl: str, fmt: str, tmp_path) -> None:  # noqa: ANN001
    path, ref, feeds = _export(tmp_path, name, impl, fmt)
    cal = _calibration(tmp_path, feeds)
    shapes = {"ids": feeds["ids"].shape, "mask": feeds["mask"].shape} if fmt == "onnx-dyn" else None
    compile_model(path, output=tmp_path / "m.pasm", calibration=cal, act_pents=8, input_shapes=shapes)
    prog = assemble_file(tmp_path / "m.pasm")
    pad = np.ones_like(feeds["mask"])
    pad[0, SEQ // 2 - 2 :] = 0  # a padding the calibration set did not hold
    for mask in (feeds["mask"], pad):
        f = {"ids": feeds["ids"], "mask": mask}
        (want,) = ort_run(ref, f)
        (got,) = run_program(prog, f).values()
        assert got.shape == want.shape and np.std(want) > 0
        err = float(np.abs(got - want).max() / np.abs(want).max())
        assert err < 1e-2, (mask.tolist(), err)


@pytest.mark.parametrize("name", ["bert", "gpt2"])
def test_hf_token_ids_simulator_equals_pent_reference(name: str, tmp_path) -> None:  # noqa: ANN001
    path, _, feeds = _export(tmp_path, name, "eager", "onnx")
    cal = _calibration(tmp_path, feeds)
    compile_model(path, emit="pent", output=tmp_path / "m.pir", calibration=cal, act_pents=8)
    compile_model(path, output=tmp_path / "m.pasm", calibration=cal, act_pents=8)
    text = (tmp_path / "m.pir").read_text()
    assert "pent.embed(" in text  # the word table; the position and token-type rows are constants of the export
    m = parse_file(tmp_path / "m.pir")
    quants, _ = pent_reference.program_io(m)
    q = {
        a.name or "": pent_reference.quantize_input(feeds[a.name or ""], qop.attr("scale"), qop.results[0].type.pents)
        for a, qop in zip(m.main.args, quants, strict=True)
    }
    want = pent_reference.run_int(m, q)
    prog = assemble_file(tmp_path / "m.pasm")
    got = run_program(prog, q, quantized=True)
    for decl, w in zip(prog.outputs, want, strict=True):
        np.testing.assert_array_equal(got[decl.name], w)


class _AllIds(torch.nn.Module):
    """The model with its position ids (and BERT's token-type ids) as inputs too: every table is gathered by
    run-time ids."""

    def __init__(self, model: torch.nn.Module, name: str) -> None:
        super().__init__()
        self.model, self.name = model, name

    def forward(self, ids: torch.Tensor, mask: torch.Tensor, pos: torch.Tensor, *types: torch.Tensor) -> torch.Tensor:
        extra = {"token_type_ids": types[0]} if types else {"use_cache": False}
        return self.model(input_ids=ids, attention_mask=mask, position_ids=pos, **extra)[0]


@pytest.mark.parametrize("name", ["bert", "gpt2"])
def test_hf_position_and_token_type_ids_as_inputs_are_embeddings(name: str, tmp_path) -> None:  # noqa: ANN001
    m, (ids, mask) = build_hf(name, "sdpa")
    pentary_exact_torch(m.model)
    pos = torch.arange(SEQ).expand(2, SEQ).contiguous()
    pos[1] = torch.arange(SEQ).flip(0)  # not arange: the rows come from the run-time ids
    xs = [ids, mask, pos]
    names = ["ids", "mask", "pos"]
    if name == "bert":
        types = torch.zeros_like(ids)
        types[:, SEQ // 2 :] = 1
        xs.append(types)
        names.append("types")
    path = tmp_path / "m.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(_AllIds(m.model, name).eval(), tuple(xs), str(path), dynamo=False, input_names=names,
                          output_names=["y"])  # fmt: skip
    feeds = {k: x.numpy() for k, x in zip(names, xs, strict=True)}
    np.savez(tmp_path / "cal.npz", **{k: np.concatenate([v] * 4) for k, v in feeds.items()})
    compile_model(path, emit="pent", output=tmp_path / "m.pir", calibration=tmp_path / "cal.npz", act_pents=8)
    assert (tmp_path / "m.pir").read_text().count("pent.embed(") == len(names) - 1  # all but the mask
    compile_model(path, output=tmp_path / "m.pasm", calibration=tmp_path / "cal.npz", act_pents=8)
    (want,) = ort_run(onnx.load(str(path)), feeds)
    (got,) = run_program(assemble_file(tmp_path / "m.pasm"), feeds).values()
    err = float(np.abs(got - want).max() / np.abs(want).max())
    assert err < 1e-2, err
