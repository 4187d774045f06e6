"""torchvision's VisionTransformer (vit_b_16's structure at a small size: 32x32 images, 8x8 patches, 2 layers,
2 heads, width 32) compiles to the simulator from ``torch.onnx.export`` and from ``torch.export`` (.pt2): the
class token, a constant concatenated to the patch embeddings, is a weight of the concat's ``pent.gather``.

The pentary-exact twin (every matrix and convolution weight on ``s_c x {-2..2}``) matches onnxruntime within
1e-2 of the output range at 8-pent activations; the simulator equals the pent reference bit for bit.  Skipped,
saying so, where torchvision is neither installed nor where .ci/run puts it."""

from __future__ import annotations

import sys
import warnings
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")


sys.path.insert(0, str(Path(__file__).resolve().parent))
from torchvision_util import import_torchvision  # noqa: E402

torchvision = import_torchvision()
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "frontends"))

from hf_models import pentary_exact_torch  # noqa: E402
from onnx_util import ort_run  # noqa: E402

from pcc import pent_reference  # noqa: E402
from pcc.backend.assembler import assemble_file  # noqa: E402
from pcc.drivers.compile import compile_model  # noqa: E402
from pcc.parser import parse_file  # noqa: E402
from pcc.runtime.simulator import run_program  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore::FutureWarning", "ignore::DeprecationWarning", "ignore::UserWarning")


def _vit() -> tuple[torch.nn.Module, torch.Tensor]:
    """The small ViT with random weights (the class token, positions and head too: torchvision starts them at
    zero) projected to pentary, and an example image."""
    torch.manual_seed(0)
    m = torchvision.models.VisionTransformer(
        image_size=32, patch_size=8, num_layers=2, num_heads=2, hidden_dim=32, mlp_dim=64, num_classes=10
    ).eval()
    with torch.no_grad():
        m.class_token.normal_()
        m.encoder.pos_embedding.normal_(std=0.5)
        m.heads.head.weight.normal_(std=0.2)
        m.heads.head.bias.normal_(std=0.1)
    pentary_exact_torch(m)
    return m, torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(1))


def _export(tmp_path: Path, fmt: str) -> tuple[Path, onnx.ModelProto, np.ndarray]:
    m, x = _vit()
    ref = tmp_path / "vit.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(m, (x,), str(ref), dynamo=False, input_names=["x"], output_names=["y"])
    path = ref
    if fmt == "pt2":
        path = tmp_path / "vit.pt2"
        torch.export.save(torch.export.export(m, (x,)), str(path))
    rng = np.random.default_rng(0)
    cal = np.concatenate([x.numpy(), rng.standard_normal((7, 3, 32, 32)).astype(np.float32)])
    np.savez(tmp_path / "cal.npz", x=cal)
    return path, onnx.load(str(ref)), x.numpy()


@pytest.mark.parametrize("fmt", ["onnx", "pt2"])
def test_torchvision_vit_on_the_simulator_matches_onnxruntime(fmt: str, tmp_path) -> None:  # noqa: ANN001
    path, ref, x = _export(tmp_path, fmt)
    compile_model(path, output=tmp_path / "m.pasm", calibration=tmp_path / "cal.npz", act_pents=8)
    prog = assemble_file(tmp_path / "m.pasm")
    for seed in (1, 2):
        xs = x if seed == 1 else np.random.default_rng(seed).standard_normal(x.shape).astype(np.float32)
        (want,) = ort_run(ref, {"x": xs})
        (got,) = run_program(prog, {"x": xs}).values()
        assert got.shape == want.shape and np.std(want) > 0
        err = float(np.abs(got - want).max() / np.abs(want).max())
        assert err < 1e-2, err


def test_torchvision_vit_simulator_equals_pent_reference(tmp_path) -> None:  # noqa: ANN001
    path, _, x = _export(tmp_path, "onnx")
    compile_model(path, emit="pent", output=tmp_path / "m.pir", calibration=tmp_path / "cal.npz", act_pents=8)
    compile_model(path, output=tmp_path / "m.pasm", calibration=tmp_path / "cal.npz", act_pents=8)
    m = parse_file(tmp_path / "m.pir")
    (qop,), _ = pent_reference.program_io(m)
    q = {"x": pent_reference.quantize_input(x, qop.attr("scale"), qop.results[0].type.pents)}
    want = pent_reference.run_int(m, q)
    prog = assemble_file(tmp_path / "m.pasm")
    got = run_program(prog, q, quantized=True)
    for decl, w in zip(prog.outputs, want, strict=True):
        np.testing.assert_array_equal(got[decl.name], w)
