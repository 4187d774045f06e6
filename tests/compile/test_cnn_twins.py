"""Pentary-exact twins of small CNN families (torch, random weights, every conv/linear weight projected to
``s_c x {-2..2}`` per output channel before export, so weight quantization loses nothing): exported with
``torch.onnx.export(dynamo=False)``, compiled and simulated, within 1e-2 relative of onnxruntime at 8-pent
activations.  This isolates activation rounding and the nonlinear approximations (measured: classifier with
a softmax head 1.6e-4, DeepLab-style dilated 1.7e-6, SENet 1.6e-5, DenseNet 3.7e-4, ShuffleNet 8.7e-6,
MobileNetV3 2.2e-4, pixel-shuffle + nearest-upsample decoder 6.4e-6, U-Net with a transposed conv and a
per-pixel softmax 1.2e-4)."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("onnxruntime")
nn = torch.nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "frontends"))


def pentary_exact(family: str, seed: int) -> torch.nn.Module:
    """The family's model with seeded random weights, every conv/linear weight projected onto ``s_c x {-2..2}``
    (s_c: the output channel's max |w| / 2)."""
    torch.manual_seed(seed)
    model = FAMILIES[family]()
    with torch.no_grad():
        for mod in model.modules():
            if isinstance(mod, nn.Conv2d | nn.Linear | nn.ConvTranspose2d):
                w = mod.weight
                axes = (0, 2, 3) if isinstance(mod, nn.ConvTranspose2d) else tuple(range(1, w.dim()))
                s = w.abs().amax(dim=axes, keepdim=True).clamp_min(1e-6) / 2
                w.copy_(torch.round(w / s).clamp(-2, 2) * s)
    return model.eval()


class SE(nn.Module):
    def __init__(self, c: int, r: int, gate: nn.Module) -> None:
        super().__init__()
        self.fc1, self.fc2, self.gate = nn.Conv2d(c, r, 1), nn.Conv2d(r, c, 1), gate

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = self.gate(self.fc2(torch.relu(self.fc1(torch.mean(x, dim=(2, 3), keepdim=True)))))
        return x * s


class SENet(nn.Module):
    """Squeeze-excitation (ReduceMean, sigmoid gate, per-channel x * s[c]), SiLU, a linear head."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.se = SE(8, 4, nn.Sigmoid())
        self.conv2 = nn.Conv2d(8, 8, 3, padding=1)
        self.fc = nn.Linear(8, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.se(torch.relu(self.conv(x)))
        y = nn.functional.silu(self.conv2(y))
        return self.fc(torch.flatten(nn.functional.adaptive_avg_pool2d(y, 1), 1))


class DenseNet(nn.Module):
    """Dense blocks: each layer's output concatenated to its input; a transition (1x1 conv, average pool)."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 4, 3, padding=1)
        self.layers = nn.ModuleList([nn.Conv2d(4 + 3 * i, 3, 3, padding=1) for i in range(3)])
        self.trans = nn.Conv2d(13, 6, 1)
        self.fc = nn.Linear(6, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.stem(x))
        for conv in self.layers:
            x = torch.cat([x, torch.relu(conv(x))], dim=1)
        x = nn.functional.avg_pool2d(torch.relu(self.trans(x)), 2)
        return self.fc(torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1))


def shuffle(x: torch.Tensor, groups: int) -> torch.Tensor:
    n, c, h, w = x.shape
    return x.view(n, groups, c // groups, h, w).transpose(1, 2).reshape(n, c, h, w)


class ShuffleNet(nn.Module):
    """ShuffleNet-v2 units: channel split, a branch of 1x1 / depthwise / 1x1 convs, concat, channel shuffle."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.b1 = nn.Conv2d(4, 4, 1)
        self.dw = nn.Conv2d(4, 4, 3, padding=1, groups=4)
        self.b2 = nn.Conv2d(4, 4, 1)
        self.g = nn.Conv2d(8, 8, 1, groups=2)
        self.fc = nn.Linear(8, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.stem(x))
        for _ in range(2):
            a, b = x.chunk(2, dim=1)
            b = torch.relu(self.b2(self.dw(torch.relu(self.b1(b)))))
            x = shuffle(torch.cat([a, b], dim=1), 2)
        x = shuffle(torch.relu(self.g(x)), 2)
        return self.fc(torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1))


class MobileNetV3(nn.Module):
    """Inverted residual with hard-swish, a hard-sigmoid SE gate, a residual add; hard-swish head."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.expand = nn.Conv2d(8, 16, 1)
        self.dw = nn.Conv2d(16, 16, 3, padding=1, groups=16)
        self.se = SE(16, 4, nn.Hardsigmoid())
        self.project = nn.Conv2d(16, 8, 1)
        self.head = nn.Linear(8, 12)
        self.fc = nn.Linear(12, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = nn.functional.hardswish(self.stem(x))
        y = nn.functional.hardswish(self.dw(nn.functional.hardswish(self.expand(x))))
        x = x + self.project(self.se(y))
        x = torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1)
        return self.fc(nn.functional.hardswish(self.head(x)))


class Classifier(nn.Module):
    """A classifier with a softmax head: convs, max pooling, global average, linear layers, softmax."""

    def __init__(self) -> None:
        super().__init__()
        self.c1, self.c2 = nn.Conv2d(3, 8, 3, padding=1), nn.Conv2d(8, 16, 3, padding=1)
        self.fc1, self.fc2 = nn.Linear(16, 32), nn.Linear(32, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.max_pool2d(torch.relu(self.c1(x)), 2)
        x = torch.flatten(nn.functional.adaptive_avg_pool2d(torch.relu(self.c2(x)), 1), 1)
        return torch.softmax(self.fc2(torch.relu(self.fc1(x))) * 4, dim=1)


class Dilated(nn.Module):
    """DeepLab-style: dilated 3x3 convolutions (rates 2 and 3) keeping the resolution, a 1x1 fusion of the
    rates (concat), a linear head."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 6, 3, padding=1)
        self.r2, self.r3 = nn.Conv2d(6, 4, 3, padding=2, dilation=2), nn.Conv2d(6, 4, 3, padding=3, dilation=3)
        self.fuse = nn.Conv2d(8, 6, 1)
        self.fc = nn.Linear(6, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.stem(x))
        x = torch.relu(self.fuse(torch.cat([torch.relu(self.r2(x)), torch.relu(self.r3(x))], dim=1)))
        return self.fc(torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1))


class Upsampler(nn.Module):
    """Super-resolution / decoder style: a pixel shuffle written as reshape / 6-D permute / reshape (the ONNX
    frontend does not read DepthToSpace yet), a nearest 4x upsample, a skip connection by concat."""

    def __init__(self) -> None:
        super().__init__()
        self.c1 = nn.Conv2d(3, 12, 3, padding=1)
        self.c2 = nn.Conv2d(3, 4, 3, padding=1)
        self.c3 = nn.Conv2d(7, 4, 3, padding=1)
        self.fc = nn.Linear(4, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.relu(self.c1(x)).view(1, 3, 2, 2, 8, 8).permute(0, 1, 4, 2, 5, 3).reshape(1, 3, 16, 16)
        z = torch.relu(self.c2(nn.functional.max_pool2d(y, 4)))  # [1, 4, 4, 4]
        z = nn.functional.interpolate(z, scale_factor=4, mode="nearest")  # [1, 4, 16, 16]
        z = torch.relu(self.c3(torch.cat([y, z], dim=1)))
        return self.fc(torch.flatten(nn.functional.adaptive_avg_pool2d(z, 1), 1))


class UNet(nn.Module):
    """U-Net style: a strided-conv encoder, a transposed-conv decoder, a skip concat, a per-pixel softmax."""

    def __init__(self) -> None:
        super().__init__()
        self.enc = nn.Conv2d(3, 6, 3, padding=1)
        self.down = nn.Conv2d(6, 8, 3, stride=2, padding=1)
        self.up = nn.ConvTranspose2d(8, 6, 2, stride=2)
        self.dec = nn.Conv2d(12, 4, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        e = torch.relu(self.enc(x))
        u = torch.relu(self.up(torch.relu(self.down(e))))
        return torch.softmax(self.dec(torch.cat([e, u], dim=1)), dim=1)


FAMILIES = {
    "unet": UNet,
    "upsampler": Upsampler,
    "dilated": Dilated,
    "classifier": Classifier,
    "senet": SENet,
    "densenet": DenseNet,
    "shufflenet": ShuffleNet,
    "mobilenetv3": MobileNetV3,
}


def compile_and_compare(tmp_path: Path, model: torch.nn.Module, shape: tuple[int, ...]) -> float:
    """Export, compile (8-pent activations, calibrated on 16 random inputs), simulate; the relative error."""
    import onnx
    from onnx_util import ort_run

    from pcc.backend.assembler import assemble_file
    from pcc.drivers.compile import compile_model
    from pcc.runtime.simulator import run_program

    rng = np.random.default_rng(0)
    x = rng.standard_normal(shape).astype(np.float32)
    path = tmp_path / "m.onnx"
    torch.onnx.export(model, (torch.from_numpy(x),), str(path), input_names=["x"], output_names=["y"], dynamo=False)
    np.savez(tmp_path / "cal.npz", x=rng.standard_normal((16, *shape[1:])).astype(np.float32))
    compile_model(path, output=tmp_path / "m.pasm", calibration=tmp_path / "cal.npz", act_pents=8)
    (want,) = ort_run(onnx.load(str(path)), {"x": x})
    got = run_program(assemble_file(tmp_path / "m.pasm"), {"x": x})["y"]
    return float(np.abs(got - want).max() / np.abs(want).max())


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_pentary_exact_twin_matches_onnxruntime(tmp_path, family: str) -> None:  # noqa: ANN001
    model = pentary_exact(family, 0)
    err = compile_and_compare(tmp_path, model, (1, 3, 8, 8))
    assert err < 1e-2, err
