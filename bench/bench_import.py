"""Import time of a ResNet-50-shaped ONNX model (about 25.6 M parameters): pcc's ONNX frontend vs onnxruntime.

The model is a ResNet-50 layout (bottleneck blocks 3-4-6-3, widths 64..2048, 1000 classes) written here as a
torch ``nn.Module`` with random weights (torchvision is not needed) and exported with
``torch.onnx.export(..., dynamo=False)`` into a temporary folder.  Timed, each as the median of ``--runs`` runs:

- pcc: ``pcc.frontends.onnx.load(path)``: reading the file, the operator check, ONNX shape inference, conversion
  to the ``nn`` IR and verification (target: under 2 s);
- the peer: ``onnxruntime.InferenceSession(path)`` creation (ORT_ENABLE_BASIC), which also parses, checks and
  prepares the graph.

The two are run alternately (pcc, onnxruntime, pcc, ...) so that load changes on a shared machine hit both.

Run: ``.venv/bin/python bench/bench_import.py`` (``--runs 5``, ``--keep DIR`` to keep the model).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

from common import PY, Row, seconds


def resnet50():  # noqa: ANN201
    import torch
    from torch import nn

    class Bottleneck(nn.Module):
        def __init__(self, cin: int, width: int, stride: int) -> None:
            super().__init__()
            cout = width * 4
            self.conv1 = nn.Conv2d(cin, width, 1, bias=False)
            self.bn1 = nn.BatchNorm2d(width)
            self.conv2 = nn.Conv2d(width, width, 3, stride, 1, bias=False)
            self.bn2 = nn.BatchNorm2d(width)
            self.conv3 = nn.Conv2d(width, cout, 1, bias=False)
            self.bn3 = nn.BatchNorm2d(cout)
            self.down = None
            if stride != 1 or cin != cout:
                self.down = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            y = torch.relu(self.bn1(self.conv1(x)))
            y = torch.relu(self.bn2(self.conv2(y)))
            y = self.bn3(self.conv3(y))
            return torch.relu(y + (x if self.down is None else self.down(x)))

    class ResNet50(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.stem = nn.Sequential(
                nn.Conv2d(3, 64, 7, 2, 3, bias=False), nn.BatchNorm2d(64), nn.ReLU(), nn.MaxPool2d(3, 2, 1)
            )
            blocks, cin = [], 64
            for width, count, stride in ((64, 3, 1), (128, 4, 2), (256, 6, 2), (512, 3, 2)):
                for i in range(count):
                    blocks.append(Bottleneck(cin, width, stride if i == 0 else 1))
                    cin = width * 4
            self.blocks = nn.Sequential(*blocks)
            self.fc = nn.Linear(2048, 1000)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            x = self.blocks(self.stem(x))
            return self.fc(torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1))

    return ResNet50().eval()


def export(folder: Path) -> tuple[Path, int]:
    import torch

    torch.manual_seed(0)
    model = resnet50()
    params = sum(p.numel() for p in model.parameters())
    path = folder / "resnet50.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model,
            (torch.randn(1, 3, 224, 224),),
            str(path),
            dynamo=False,
            input_names=["input"],
            output_names=["logits"],
            dynamic_axes={"input": {0: "batch"}},
        )
    return path, params


def median_time(fn, runs: int) -> tuple[float, list[float]]:  # noqa: ANN001
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), times


def measure(runs: int, keep: Path | None = None) -> dict:
    """Export the model, then time pcc's import and onnxruntime's session creation (medians of ``runs``)."""
    import contextlib
    import io

    import onnxruntime as ort

    from pcc.frontends import onnx as onnx_frontend

    with tempfile.TemporaryDirectory() as tmp:
        folder = keep or Path(tmp)
        folder.mkdir(parents=True, exist_ok=True)
        t0 = time.perf_counter()
        path, params = export(folder)
        t_export = time.perf_counter() - t0
        size = path.stat().st_size

        def pcc_import() -> None:
            with contextlib.redirect_stderr(io.StringIO()):  # the symbolic-batch note
                onnx_frontend.load(path)

        def ort_session() -> None:
            so = ort.SessionOptions()
            so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
            ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])

        module = onnx_frontend.load(path, {"input": (1, 3, 224, 224)})
        ops = len(module.main.body)
        # interleaved (pcc, onnxruntime, pcc, ...), so a change in the machine's load hits both alike
        pcc_all, ort_all = [], []
        for _ in range(runs):
            pcc_all.append(median_time(pcc_import, 1)[0])
            ort_all.append(median_time(ort_session, 1)[0])
        t_pcc, t_ort = statistics.median(pcc_all), statistics.median(ort_all)
    return {
        "params": params,
        "size": size,
        "t_export": t_export,
        "ops": ops,
        "t_pcc": t_pcc,
        "pcc_all": pcc_all,
        "t_ort": t_ort,
        "ort_all": ort_all,
    }


def rows(quick: bool = False) -> list[Row]:
    runs = 1 if quick else 7
    m = measure(runs)
    return [
        Row(
            f"ONNX import of a ResNet-50-shaped model ({m['params'] / 1e6:.2f} M parameters, "
            f"{m['size'] / 2**20:.1f} MiB, {m['ops']} nn ops; load + shape inference + conversion + verify; "
            f"median of {runs})",
            seconds(m["t_pcc"]),
            f"onnxruntime InferenceSession creation (ORT_ENABLE_BASIC): {seconds(m['t_ort'])}",
            m["t_ort"] / m["t_pcc"],
            "< 2 s",
            f"{PY} bench/bench_import.py --runs {runs}",
        )
    ]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--keep", type=Path, default=None, help="write the model into this folder and keep it")
    args = ap.parse_args(argv)
    m = measure(args.runs, args.keep)
    t_pcc, t_ort = m["t_pcc"], m["t_ort"]
    print(
        f"model: ResNet-50 layout, {m['params'] / 1e6:.2f} M parameters, {m['size'] / 2**20:.1f} MiB ONNX "
        f"(exported in {m['t_export']:.1f} s), {m['ops']} nn ops after import"
    )
    print(
        f"pcc ONNX import (load + op check + shape inference + conversion + verify): median {t_pcc:.3f} s "
        f"of {args.runs} ({', '.join(f'{t:.3f}' for t in m['pcc_all'])})  target < 2 s: "
        f"{'met' if t_pcc < 2 else 'MISSED'}"
    )
    print(
        f"onnxruntime InferenceSession creation (ORT_ENABLE_BASIC): median {t_ort:.3f} s "
        f"({', '.join(f'{t:.3f}' for t in m['ort_all'])})"
    )
    print(f"python {sys.version.split()[0]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
