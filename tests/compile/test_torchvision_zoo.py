"""Real torchvision classification models (``torchvision.models.get_model(name, weights=None)``: the builders'
own random initialisation) compile to the simulator from ``torch.onnx.export`` (TorchScript exporter) and from
``torch.export`` (.pt2), at small inputs so memory and time stay modest; the simulator's output is compared with
onnxruntime's on one standard-normal sample: ``max |sim - ort| / max |ort|``.

By default a fast subset: small models at 32x32, on their pentary-exact twins (every conv/linear weight on
``s_c x {-2..2}``), where the error is activation rounding and the nonlinear approximations only.  The full sweep
(every family at 64x64, AlexNet at 224x224 where torch.onnx.export can pool it adaptively, plain post-training
quantization, both exporters), Swin V2-T's twins, and VGG-11's refusal before quantizing (its weights exceed main
memory) are marked slow (``--runslow``); the measured table is in docs/benchmarks_notes.md ("torchvision
builders")."""

from __future__ import annotations

import sys
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "frontends"))

from torchvision_util import import_torchvision  # noqa: E402

torchvision = import_torchvision()

from hf_models import pentary_exact_torch  # noqa: E402
from onnx_util import ort_run  # noqa: E402

from pcc.backend.assembler import assemble_file  # noqa: E402
from pcc.drivers.compile import compile_model  # noqa: E402
from pcc.runtime.simulator import run_program  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore::FutureWarning", "ignore::DeprecationWarning", "ignore::UserWarning")


@dataclass(frozen=True)
class Case:
    """One builder: its name for ``get_model``, the input side, the builder's keyword arguments and the largest
    relative error accepted against onnxruntime (plain PTQ on the builder's random weights)."""

    name: str
    size: int = 64
    kwargs: dict = field(default_factory=dict)
    tol: float = 0.25


# the full sweep.  ``tol``: the PTQ error measured at 64x64 (docs/benchmarks_notes.md) with headroom; 1.0 where
# it was not measured yet (the output within the reference's range).  EfficientNet-B0's 0.79 is weight rounding
# of the builder's random weights: its pentary-exact twin measured 0.004.
SWEEP = [
    Case("squeezenet1_0", tol=0.1),
    Case("squeezenet1_1", tol=0.1),
    Case("mobilenet_v2", tol=0.35),
    Case("mobilenet_v3_small", tol=0.5),
    Case("mobilenet_v3_large", tol=1.0),
    Case("mnasnet0_5", tol=0.35),
    Case("shufflenet_v2_x0_5", tol=0.01),
    Case("efficientnet_b0", tol=1.0),
    Case("efficientnet_v2_s", tol=1.0),
    Case("regnet_x_400mf", tol=1.0),
    Case("regnet_y_400mf", tol=0.2),
    Case("densenet121", tol=1.0),
    # init_weights: truncated-normal weights of std 0.01; its PTQ output collapses to about 0 (1.6e-7 against
    # onnxruntime's 0.031: a relative error of 1.0), measured back to the start of the current work: open
    Case("googlenet", kwargs={"aux_logits": False, "init_weights": True}, tol=-1.0),
    Case("inception_v3", size=75, kwargs={"aux_logits": False, "init_weights": True}, tol=1.0),
    Case("resnet18", tol=0.15),
    Case("resnet50", tol=1.0),
    Case("resnext50_32x4d", tol=1.0),
    Case("wide_resnet50_2", tol=1.0),
    Case("convnext_tiny", tol=1.0),
    Case("swin_t", tol=1.0),
    Case("vit_b_16", kwargs={"image_size": 64}, tol=0.7),  # its patch conv: space-to-depth + 1x1 conv (0.486)
    Case("swin_v2_t", tol=1.0),  # cosine attention: F.normalize (0.872; its pentary-exact twin 1.3e-3)
    # torch.onnx.export pools adaptively only to a factor of the input: AlexNet's 6x6 needs 224x224
    Case("alexnet", size=224, tol=0.1),  # 0.044
]

# the default: small, quick to simulate, and between them depthwise/grouped convolutions, channel shuffles,
# squeeze-excitation with hard-sigmoid and hard-swish, fire modules' concats
FAST = [Case("squeezenet1_1", size=32), Case("mobilenet_v3_small", size=32), Case("shufflenet_v2_x0_5", size=32)]


def _model(case: Case, *, exact: bool) -> tuple[torch.nn.Module, torch.Tensor]:
    torch.manual_seed(0)
    m = torchvision.models.get_model(case.name, weights=None, **case.kwargs).eval()
    with torch.no_grad():  # a head initialised to zeros (ViT's) would make every output 0: random instead
        for p in m.parameters():
            if p.dim() >= 2 and not p.any():
                p.normal_(0.0, 0.02, generator=torch.Generator().manual_seed(2))
    if exact:
        pentary_exact_torch(m)
    return m, torch.randn(1, 3, case.size, case.size, generator=torch.Generator().manual_seed(1))


def _export(m: torch.nn.Module, x: torch.Tensor, tmp: Path, fmt: str) -> tuple[Path, Path]:
    """(the file to compile, the ONNX file onnxruntime runs)."""
    ref = tmp / "m.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(m, (x,), str(ref), dynamo=False, input_names=["x"], output_names=["y"])
        if fmt == "pt2":
            path = tmp / "m.pt2"
            torch.export.save(torch.export.export(m, (x,)), str(path))
            return path, ref
    return ref, ref


def _error(case: Case, fmt: str, tmp: Path, *, exact: bool) -> float:
    m, x = _model(case, exact=exact)
    path, ref = _export(m, x, tmp, fmt)
    rng = np.random.default_rng(0)
    cal = np.concatenate([x.numpy(), rng.standard_normal((7, *x.shape[1:])).astype(np.float32)])
    np.savez(tmp / "cal.npz", x=cal)
    compile_model(path, output=tmp / "m.pasm", calibration=tmp / "cal.npz")
    (want,) = ort_run(onnx.load(str(ref)), {"x": x.numpy()})
    (got,) = run_program(assemble_file(tmp / "m.pasm"), {"x": x.numpy()}).values()
    assert got.shape == want.shape and np.std(want) > 0
    return float(np.abs(got - want).max() / np.abs(want).max())


@pytest.mark.parametrize("case", FAST, ids=lambda c: c.name)
def test_pentary_exact_torchvision_model_matches_onnxruntime(case: Case, tmp_path) -> None:  # noqa: ANN001
    err = _error(case, "onnx", tmp_path, exact=True)
    assert err < 1e-2, err  # the bound; measured 1.6e-5, 2.1e-3 and 2.6e-6 at 32x32


@pytest.mark.slow
@pytest.mark.parametrize("fmt", ["onnx", "pt2"])
@pytest.mark.parametrize("case", SWEEP, ids=lambda c: c.name)
def test_torchvision_model_matches_onnxruntime(case: Case, fmt: str, tmp_path) -> None:  # noqa: ANN001
    err = _error(case, fmt, tmp_path, exact=False)
    if case.tol < 0:  # a known failure (see SWEEP): xfail while it lasts, a failure once it is fixed
        assert err >= 0.99, f"{case.name}: error {err:.3g}; the collapse is fixed, give the case its tolerance"
        pytest.xfail(f"{case.name}: its PTQ output collapses (relative error {err:.3g})")
    assert err < case.tol, err


@pytest.mark.slow
def test_pentary_exact_vit_b_16_matches_onnxruntime(tmp_path) -> None:  # noqa: ANN001
    """The real ViT-B/16 (12 layers, width 768) at 32x32: its 16x16 patch embedding compiles as space-to-depth
    and a 1x1 conv; measured 9.4e-4 of the range (about a minute on the loaded 2-core machine)."""
    err = _error(Case("vit_b_16", size=32, kwargs={"image_size": 32}), "onnx", tmp_path, exact=True)
    assert err < 1e-2, err


@pytest.mark.slow
@pytest.mark.parametrize("fmt", ["onnx", "pt2"])
@pytest.mark.parametrize("size", [32, 64])
def test_pentary_exact_swin_v2_t_matches_onnxruntime(size: int, fmt: str, tmp_path) -> None:  # noqa: ANN001
    """Swin V2-T's cosine attention (F.normalize: nn.reduce_l2, the division by the norm), its log-spaced
    relative-position MLP and clamped logit scale (constants, folded), at 32x32 (one window per stage: no shift)
    and 64x64 (the first stage's shifted windows: roll, the window masks; .pt2: torch.export's slice_scatter /
    copy of the mask, folded at import)."""
    err = _error(Case("swin_v2_t", size=size), fmt, tmp_path, exact=True)
    assert err < 1e-2, err  # measured 3.9e-3 at 32x32 (ONNX); 1.3e-3 (ONNX) and 1.6e-3 (.pt2) at 64x64


@pytest.mark.slow
def test_vgg11_is_refused_before_quantizing(tmp_path, monkeypatch) -> None:  # noqa: ANN001
    """VGG-11's 132.9 M weights (8.3 M words at one pent) and its first layer's activations exceed the default
    machine's 8.4 M words: at 224x224 (where torch.onnx.export pools 7x7 to 7x7) the compile stops after the
    import with the sizes and the --machine option, and never quantizes."""
    import pcc.passes.quantize as quantize
    from pcc.diagnostics import PccError

    def never(*args: object, **kwargs: object) -> None:
        raise AssertionError("quantized a model that cannot fit")

    monkeypatch.setattr(quantize, "quantize_module", never)
    m, x = _model(Case("vgg11", size=224), exact=False)
    path, _ = _export(m, x, tmp_path, "onnx")
    del m
    with pytest.raises(PccError, match="cannot fit the machine's main memory") as info:
        compile_model(path, output=tmp_path / "m.pasm")
    assert "weights 8,3" in info.value.message and "--machine" in " ".join(info.value.notes)
