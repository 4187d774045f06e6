"""HF transformers' GPT-2 and BERT (small configs, random weights, eager and sdpa attention) compile to the
simulator:
their pentary-exact twins (every matrix weight on ``s_c x {-2..2}``) match onnxruntime within 1e-2 of the
output range at 8-pent activations, and the simulator equals the pent reference bit for bit.

The models take token embeddings (``inputs_embeds``) with every position attended, so the attention mask is a
constant of the export; the causal mask of GPT-2 is one too.  The sdpa exports guard the softmax with
``where(is_nan(p), 0, p)``, which a pent value never needs."""

from __future__ import annotations

import sys
import warnings
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
onnx = pytest.importorskip("onnx")
pytest.importorskip("transformers", reason="the HF model tests need the transformers package")
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "frontends"))

from compile_helpers import compile_sim, sim_matches_reference  # noqa: E402
from hf_models import build_hf_embeds, pentary_exact_onnx  # noqa: E402
from onnx_util import ort_run  # noqa: E402

from pcc.backend.assembler import assemble_file  # noqa: E402
from pcc.drivers.compile import compile_model  # noqa: E402
from pcc.frontends import onnx as onnx_frontend  # noqa: E402
from pcc.runtime.simulator import run_program  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore::FutureWarning", "ignore::DeprecationWarning", "ignore::UserWarning")


def _twin(tmp_path: Path, name: str, impl: str = "eager") -> tuple[Path, np.ndarray]:
    m, x = build_hf_embeds(name, impl)
    path = tmp_path / f"{name}.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(m, (x,), str(path), dynamo=False, input_names=["x"], output_names=["y"])
    onnx.save(pentary_exact_onnx(onnx.load(str(path))), str(path))
    return path, x.numpy()


CASES = [
    pytest.param("gpt2", "eager", marks=pytest.mark.slow),
    ("bert", "eager"),
    ("bert", "sdpa"),
    pytest.param("gpt2", "sdpa", marks=pytest.mark.slow),
]


@pytest.mark.parametrize(("name", "impl"), CASES)
def test_hf_pentary_exact_twin_on_the_simulator_matches_onnxruntime(name: str, impl: str, tmp_path) -> None:  # noqa: ANN001
    path, x = _twin(tmp_path, name, impl)
    rng = np.random.default_rng(0)
    cal = np.concatenate([x, (rng.standard_normal((7, *x.shape[1:])) * x.std()).astype(np.float32)])
    np.savez(tmp_path / "cal.npz", x=cal)
    compile_model(path, output=tmp_path / "m.pasm", calibration=tmp_path / "cal.npz", act_pents=8)
    (want,) = ort_run(onnx.load(str(path)), {"x": x})
    got = run_program(assemble_file(tmp_path / "m.pasm"), {"x": x})["y"]
    assert got.shape == want.shape and np.std(want) > 0
    err = float(np.abs(got - want).max() / np.abs(want).max())
    assert err < 1e-2, err


def test_hf_gpt2_simulator_equals_pent_reference(tmp_path) -> None:  # noqa: ANN001
    path, _ = _twin(tmp_path, "gpt2")
    m, _, prog = compile_sim(onnx_frontend.load(path), tmp_path, calib_scale=0.5)
    sim_matches_reference(m, prog, seeds=1, scale=0.5)
