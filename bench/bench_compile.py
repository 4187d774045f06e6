"""Compile time and planned memory for ResNet-shaped ONNX models (random weights, inference batch norms).

The models are written here in torch (torchvision is not available): ResNet-18 (basic blocks [2, 2, 2, 2]) and
ResNet-50 (bottlenecks [3, 4, 6, 3], 25.6 M parameters), 1x3x224x224 input, exported with
``torch.onnx.export(dynamo=False, do_constant_folding=False)`` so that the batch norms reach pcc and
``fold-batchnorm`` has work to do.  One compile is the whole ``pcc compile MODEL --emit asm`` path in process:
ONNX import, canonicalize, fold-batchnorm, quantize (calibration through the float interpreter), fuse,
schedule, plan-memory, tile, code generation and writing ``.pasm`` + blob.  The median of ``--runs`` compiles
(after one warm-up compile) is reported with its per-stage split, beside one ``pcc compile`` process and
onnxruntime's session creation (its graph optimisation) for the same file.

    .venv/bin/python bench/bench_compile.py [--models resnet18,resnet50] [--runs 3] [--calibration-samples 1]
    .venv/bin/python bench/bench_compile.py --calibration-speed 16,32   # the quantize pass alone, ResNet-18
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch

from pcc.drivers.compile import compile_model

Norm = torch.nn.BatchNorm2d


class Basic(torch.nn.Module):
    expansion = 1

    def __init__(self, cin: int, width: int, stride: int) -> None:
        super().__init__()
        self.c1, self.b1 = torch.nn.Conv2d(cin, width, 3, stride, 1, bias=False), Norm(width)
        self.c2, self.b2 = torch.nn.Conv2d(width, width, 3, 1, 1, bias=False), Norm(width)
        self.down = None
        if stride != 1 or cin != width:
            self.down = torch.nn.Sequential(torch.nn.Conv2d(cin, width, 1, stride, bias=False), Norm(width))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.relu(self.b1(self.c1(x)))
        y = self.b2(self.c2(y))
        return torch.relu(y + (x if self.down is None else self.down(x)))


class Bottleneck(torch.nn.Module):
    expansion = 4

    def __init__(self, cin: int, width: int, stride: int) -> None:
        super().__init__()
        out = width * 4
        self.c1, self.b1 = torch.nn.Conv2d(cin, width, 1, bias=False), Norm(width)
        self.c2, self.b2 = torch.nn.Conv2d(width, width, 3, stride, 1, bias=False), Norm(width)
        self.c3, self.b3 = torch.nn.Conv2d(width, out, 1, bias=False), Norm(out)
        self.down = None
        if stride != 1 or cin != out:
            self.down = torch.nn.Sequential(torch.nn.Conv2d(cin, out, 1, stride, bias=False), Norm(out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.relu(self.b1(self.c1(x)))
        y = torch.relu(self.b2(self.c2(y)))
        y = self.b3(self.c3(y))
        return torch.relu(y + (x if self.down is None else self.down(x)))


class ResNet(torch.nn.Module):
    def __init__(self, block: type, layers: list[int], classes: int = 1000) -> None:
        super().__init__()
        self.stem = torch.nn.Sequential(
            torch.nn.Conv2d(3, 64, 7, 2, 3, bias=False), Norm(64), torch.nn.ReLU(), torch.nn.MaxPool2d(3, 2, 1)
        )
        blocks, cin = [], 64
        for i, n in enumerate(layers):
            width = 64 * 2**i
            for j in range(n):
                blocks.append(block(cin, width, 2 if j == 0 and i > 0 else 1))
                cin = width * block.expansion
        self.blocks = torch.nn.Sequential(*blocks)
        self.fc = torch.nn.Linear(cin, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.blocks(self.stem(x))
        return self.fc(torch.flatten(torch.nn.functional.adaptive_avg_pool2d(y, 1), 1))


MODELS = {"resnet18": (Basic, [2, 2, 2, 2]), "resnet50": (Bottleneck, [3, 4, 6, 3])}


def build(name: str, path: Path, seed: int = 0) -> int:
    """Export the model with random weights and batch-norm statistics; returns its parameter count."""
    torch.manual_seed(seed)
    block, layers = MODELS[name]
    net = ResNet(block, layers).eval()
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, Norm):
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.2, 0.2)
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 2.0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            net,
            (torch.zeros(1, 3, 224, 224),),
            str(path),
            dynamo=False,
            do_constant_folding=False,
            input_names=["image"],
            output_names=["logits"],
        )
    return sum(p.numel() for p in net.parameters())


def compile_once(model: Path, out: Path, calibration: Path | None) -> dict[str, float]:
    """One in-process ``pcc compile --emit asm``: total seconds and its split (import, each pass, the rest)."""
    import pcc.frontends as fe
    import pcc.pass_manager as pm

    split: dict[str, float] = {}
    run, load = pm.PassManager.run, fe.load_model

    def timed_run(self, module):  # noqa: ANN001, ANN202
        result = run(self, module)
        split.update((name.split("{")[0], t) for name, t, _ in self.times)
        return result

    def timed_load(*a, **k):  # noqa: ANN002, ANN003, ANN202
        t0 = time.perf_counter()
        result = load(*a, **k)
        split["import"] = time.perf_counter() - t0
        return result

    pm.PassManager.run, fe.load_model = timed_run, timed_load  # type: ignore[method-assign]
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            t0 = time.perf_counter()
            compile_model(model, emit="asm", output=out, calibration=calibration)
            total = time.perf_counter() - t0
    finally:
        pm.PassManager.run, fe.load_model = run, load  # type: ignore[method-assign]
    split["codegen+write"] = total - sum(split.values())
    return {"total": total, **split}


def cli_seconds(model: Path, out: Path, calibration: Path | None) -> float:
    """Wall time of one ``pcc compile`` process (Python start-up and imports included)."""
    cmd = [sys.executable, "-c", "import sys; from pcc.cli import main; sys.exit(main())", "compile", str(model)]
    cmd += ["--emit", "asm", "-o", str(out)] + (["--calibration", str(calibration)] if calibration else [])
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, capture_output=True)
    return time.perf_counter() - t0


def ort_session_seconds(model: Path, runs: int) -> float:
    """Median time onnxruntime takes to build an inference session (its graph optimisation) for ``model``."""
    import onnxruntime as ort

    t = []
    for _ in range(runs):
        t0 = time.perf_counter()
        ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
        t.append(time.perf_counter() - t0)
    return statistics.median(t)


def measure(models: list[str], runs: int, calibration_samples: int, cli: bool = True) -> list[dict]:
    from pcc.drivers.compile import compile_module
    from pcc.frontends.onnx import load
    from pcc.passes.pipeline import default_passes
    from pcc.passes.plan_memory import plan_graph

    out = []
    with tempfile.TemporaryDirectory() as d:
        for name in models:
            onnx_path = Path(d) / f"{name}.onnx"
            params = build(name, onnx_path)
            cal = None
            if calibration_samples:
                cal = Path(d) / "cal.npz"
                rng = np.random.default_rng(0)
                np.savez(cal, image=rng.standard_normal((calibration_samples, 3, 224, 224)).astype(np.float32))
            asm = Path(d) / f"{name}.pasm"
            compile_once(onnx_path, asm, cal)  # warm-up: first-use costs (grammar tables, imports)
            runs_ = [compile_once(onnx_path, asm, cal) for _ in range(runs)]
            median = {k: statistics.median(r[k] for r in runs_) for k in runs_[0]}
            # the compiled graph once more, in process, for its memory plan and code statistics
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                mod = load(str(onnx_path))
                res = compile_module(mod, default_passes(calibration=cal))
            plan = plan_graph(mod.main)
            out.append(
                dict(
                    name=name,
                    params=params,
                    median=median,
                    runs=[r["total"] for r in runs_],
                    arena=plan.arena_words,
                    naive=plan.naive_words,
                    peak=plan.peak_live_words,
                    ops=sum(1 for op in mod.main.body if op.name not in ("pent.quantize", "pent.dequantize")),
                    instructions=res.compiled.instructions,
                    cycles=res.compiled.cycles,
                    blob=len(res.compiled.blob),
                    cli=cli_seconds(onnx_path, asm, cal) if cli else None,
                    ort=ort_session_seconds(onnx_path, max(1, min(runs, 3))),
                )
            )
    return out


def quantize_seconds(onnx_path: Path, samples: int, workdir: Path) -> float:
    """Seconds of the quantize pass alone (calibration on ``samples`` standard-normal inputs, bias correction)."""
    from pcc.frontends.onnx import load
    from pcc.pass_manager import parse_pipeline
    from pcc.passes.pipeline import FLOAT_PASSES
    from pcc.passes.quantize import Quantize

    cal = workdir / f"cal{samples}.npz"
    rng = np.random.default_rng(1)
    np.savez(cal, image=rng.standard_normal((samples, 3, 224, 224)).astype(np.float32))
    m = load(str(onnx_path))
    for p in parse_pipeline(FLOAT_PASSES):
        p.run(m)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        t0 = time.perf_counter()
        Quantize(calibration=str(cal)).run(m)
        return time.perf_counter() - t0


def calibration_speed(samples: tuple[int, int] = (16, 32), runs: int = 1) -> dict:
    """ResNet-18's quantize pass with ``samples[0]`` and ``samples[1]`` calibration samples (best of ``runs``,
    after one untimed pass), and onnxruntime's forward of the same model (default threads, best of 5, measured
    between them)."""
    import onnxruntime as ort

    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "resnet18.onnx"
        build("resnet18", path)
        sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        x = {"image": np.random.default_rng(0).standard_normal((1, 3, 224, 224)).astype(np.float32)}
        sess.run(None, x)

        def ort_forward() -> float:
            best = float("inf")
            for _ in range(5):
                t0 = time.perf_counter()
                sess.run(None, x)
                best = min(best, time.perf_counter() - t0)
            return best

        quantize_seconds(path, samples[0], Path(d))  # untimed: the first pass in a process pays imports, set-up
        small = large = t_ort = float("inf")
        for _ in range(runs):  # interleaved, so that both sizes and onnxruntime meet the same load
            small = min(small, quantize_seconds(path, samples[0], Path(d)))
            t_ort = min(t_ort, ort_forward())
            large = min(large, quantize_seconds(path, samples[1], Path(d)))
    per = (large - small) / (samples[1] - samples[0])
    return {"samples": samples, "small": small, "large": large, "per_sample": per, "ort": t_ort}


def rows(quick: bool = False) -> list:
    """The rows of docs/benchmarks.md (bench/run_all.py): compile time and planned memory, ResNet-18/50; the
    quantize pass's calibration time on ResNet-18."""
    from common import PY, Row

    runs = 1 if quick else 5
    cmd = f"{PY} bench/bench_compile.py --runs {runs}"
    out = []
    for r in measure(["resnet18", "resnet50"], runs, 1, cli=False):
        t = r["median"]["total"]
        out.append(
            Row(
                f"pcc compile {r['name']} ({r['params'] / 1e6:.1f} M params, 1x3x224x224, 1 calibration sample), "
                "import + all passes + codegen",
                f"{t:.2f} s",
                peer=f"onnxruntime session creation: {r['ort']:.2f} s",
                ratio=r["ort"] / t,
                target="<= 5 s" if r["name"] == "resnet50" else "",
                command=cmd,
            )
        )
        out.append(
            Row(
                f"planned activation memory {r['name']} (words, one activation per word)",
                f"{r['arena']:,} words",
                peer=f"naive sum: {r['naive']:,} words",
                ratio=r["naive"] / r["arena"],
                command=cmd,
            )
        )
    samples, cal_runs = ((4, 8), 1) if quick else ((16, 32), 3)
    c = calibration_speed(samples, cal_runs)
    cmd = f"{PY} bench/bench_compile.py --calibration-speed {samples[0]},{samples[1]} --runs {cal_runs}"
    out.append(
        Row(
            f"quantize pass ResNet-18 (1x3x224x224), {samples[0]} calibration samples (float run, quantized "
            "simulation, bias correction)",
            f"{c['small']:.2f} s",
            peer=f"{samples[0]} onnxruntime forwards: {samples[0] * c['ort']:.2f} s",
            ratio=samples[0] * c["ort"] / c["small"],
            target="<= 1.5 s with 16 samples",
            command=cmd,
        )
    )
    out.append(
        Row(
            f"quantize pass ResNet-18, each further calibration sample ({samples[0]} -> {samples[1]} samples)",
            f"{1e3 * c['per_sample']:.1f} ms",
            peer=f"one onnxruntime forward: {1e3 * c['ort']:.1f} ms",
            ratio=c["ort"] / c["per_sample"],
            target="<= 2x one onnxruntime forward (ratio >= 0.5)",
            command=cmd,
        )
    )
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="resnet18,resnet50")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--calibration-samples", type=int, default=1, help="0: no calibration file (the fallback)")
    ap.add_argument("--calibration-speed", metavar="N1,N2", help="only time the quantize pass with N1 and N2 samples")
    args = ap.parse_args()
    if args.calibration_speed:
        n1, n2 = (int(v) for v in args.calibration_speed.split(","))
        c = calibration_speed((n1, n2), args.runs)
        print(
            f"ResNet-18 quantize pass: {n1} samples {c['small']:.2f} s, {n2} samples {c['large']:.2f} s, "
            f"{1e3 * c['per_sample']:.1f} ms per further sample; onnxruntime forward {1e3 * c['ort']:.1f} ms "
            f"(per further sample / forward: {c['per_sample'] / c['ort']:.1f}x)"
        )
        return
    rows = measure(args.models.split(","), args.runs, args.calibration_samples)
    cal_text = f"{args.calibration_samples} calibration sample(s)" if args.calibration_samples else "no calibration"
    print(f"pcc compile --emit asm, {cal_text}, median of {args.runs} run(s) after one warm-up\n")
    stages = [k for k in rows[0]["median"] if k != "total"]
    print(
        "| model | params | compile s (median) | runs | "
        + " | ".join(stages)
        + " | `pcc compile` process s | onnxruntime session s |"
    )
    print("|---|---:|---:|---|" + "---:|" * len(stages) + "---:|---:|")
    for r in rows:
        runs = ", ".join(f"{t:.2f}" for t in r["runs"])
        cells = " | ".join(f"{r['median'][k]:.2f}" for k in stages)
        print(
            f"| {r['name']} | {r['params'] / 1e6:.1f} M | {r['median']['total']:.2f} | {runs} | {cells} | "
            f"{r['cli']:.2f} | {r['ort']:.2f} |"
        )
    print("\nplanned activation memory (words, one activation per word)\n")
    print("| model | pent ops | planned arena | naive sum | saved | peak live | instructions | est. cycles | blob |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(
            f"| {r['name']} | {r['ops']} | {r['arena']:,} | {r['naive']:,} | {1 - r['arena'] / r['naive']:.0%} | "
            f"{r['peak']:,} | {r['instructions']:,} | {r['cycles']:,} | {r['blob'] / 2**20:.1f} MiB |"
        )


if __name__ == "__main__":
    main()
