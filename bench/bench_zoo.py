"""The CNN zoo on the pentary machine: compile time, simulator time and accuracy per family, beside onnxruntime.

The families are the torchvision shapes of ``tests/frontends/zoo_models.py`` (ResNet-50-style bottlenecks,
MobileNetV2, MobileNetV3 with hard-swish and squeeze-excitation, EfficientNet's MBConv with SiLU and sigmoid
gates, DenseNet, SqueezeNet, ShuffleNetV2, Inception, VGG; small widths, random weights and batch-norm
statistics), exported with ``torch.onnx.export(dynamo=False)`` at 1x3xSxS (``--size``; VGG too).  Per model:

- **compile**: ``pcc compile --emit asm`` in process (import, every pass, code generation, writing), calibrated
  on 16 standard-normal inputs, beside onnxruntime's session creation for the same file;
- **simulator**: wall time per sample of the compiled program on the simulator (bit-exact), beside
  onnxruntime's float run on the same input (default threads), ``--repeat`` interleaved rounds of three calls of
  each, best of all; and the CPU time of each on the calling thread (``time.thread_time``), beside a one-thread
  onnxruntime session's: both compute on that thread, and a loaded machine disturbs it far less than wall time;
- **PTQ error**: ``max |sim - onnxruntime| / max |onnxruntime|`` over 4 standard-normal inputs, default
  options (8-pent activations, per-channel mse weights, bias correction from the random calibration);
- **pentary-exact error**: the same for the model's pentary-exact twin (every conv/linear weight projected onto
  ``s_c x {-2..2}`` per output channel before export), which isolates activation rounding and the nonlinear
  approximations from weight rounding.

    .venv/bin/python bench/bench_zoo.py [--models resnet,mobilenet_v2,...] [--size 64] [--repeat 3]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "frontends"))

CNNS = [
    "resnet",
    "mobilenet_v2",
    "mobilenet_v3",
    "efficientnet",
    "densenet",
    "squeezenet",
    "shufflenet_v2",
    "inception",
    "vgg",
]
LABEL = {
    "resnet": "ResNet (bottlenecks)",
    "mobilenet_v2": "MobileNetV2",
    "mobilenet_v3": "MobileNetV3",
    "efficientnet": "EfficientNet (MBConv)",
    "densenet": "DenseNet",
    "squeezenet": "SqueezeNet",
    "shufflenet_v2": "ShuffleNetV2",
    "inception": "Inception",
    "vgg": "VGG",
}


def project_pentary(model) -> None:  # noqa: ANN001 - a torch module
    """Every conv/linear weight onto ``s_c x {-2..2}`` per output channel (s_c: its max |w| / 2)."""
    import torch

    with torch.no_grad():
        for mod in model.modules():
            if isinstance(mod, torch.nn.Conv2d | torch.nn.Linear):
                w = mod.weight
                s = w.abs().amax(dim=tuple(range(1, w.dim())), keepdim=True).clamp_min(1e-6) / 2
                w.copy_(torch.round(w / s).clamp(-2, 2) * s)


def export(model, size: int, path: Path) -> None:  # noqa: ANN001
    import torch

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model, (torch.zeros(1, 3, size, size),), str(path), dynamo=False, input_names=["x"], output_names=["y"]
        )


def _best(fn, n: int, clock=time.perf_counter) -> float:  # noqa: ANN001
    best = float("inf")
    for _ in range(n):
        t0 = clock()
        fn()
        best = min(best, clock() - t0)
    return best


def compile_and_error(path: Path, workdir: Path, xs: np.ndarray, cal: Path, sess) -> tuple[float, object, float]:  # noqa: ANN001
    """(compile seconds, assembled program, relative error of the simulator against onnxruntime on ``xs``)."""
    from pcc.backend.assembler import assemble_file
    from pcc.drivers.compile import compile_model
    from pcc.runtime.simulator import run_program

    out = workdir / (path.stem + ".pasm")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        t0 = time.perf_counter()
        compile_model(path, emit="asm", output=out, calibration=cal)
        seconds = time.perf_counter() - t0
    program = assemble_file(out)
    err = 0.0
    for x in xs:
        (ref,) = sess.run(None, {"x": x[None]})
        got = run_program(program, {"x": x[None]})["y"]
        err = max(err, float(np.abs(got - ref).max() / max(np.abs(ref).max(), 1e-30)))
    return seconds, program, err


def measure(name: str, size: int, repeat: int, workdir: Path) -> dict:
    import onnxruntime as ort
    import torch
    from zoo_models import build_zoo

    from pcc.runtime.simulator import Simulator, run_program

    model, _ = build_zoo(name)
    model.eval()
    params = sum(p.numel() for p in model.parameters())
    path = workdir / f"{name}.onnx"
    export(model, size, path)
    rng = np.random.default_rng(0)
    cal = workdir / f"{name}.cal.npz"
    np.savez(cal, x=rng.standard_normal((16, 3, size, size)).astype(np.float32))
    xs = rng.standard_normal((4, 3, size, size)).astype(np.float32)
    t0 = time.perf_counter()
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    t_session = time.perf_counter() - t0
    t_compile, program, ptq_err = compile_and_error(path, workdir, xs, cal, sess)

    twin = path.with_name(f"{name}_pentary.onnx")
    torch.manual_seed(0)
    project_pentary(model)
    export(model, size, twin)
    twin_sess = ort.InferenceSession(str(twin), providers=["CPUExecutionProvider"])
    _, _, exact_err = compile_and_error(twin, workdir, xs, cal, twin_sess)

    sim = Simulator(program)
    feed = {"x": xs[:1]}
    run_program(program, feed, simulator=sim)  # translates the code
    sess.run(None, feed)
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = opts.inter_op_num_threads = 1
    sess1 = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    sess1.run(None, feed)
    t_sim, t_ort = float("inf"), float("inf")
    c_sim, c_ort = float("inf"), float("inf")
    for _ in range(repeat):  # interleaved, so that both meet the same load
        t_sim = min(t_sim, _best(lambda: run_program(program, feed, simulator=sim), 3))
        t_ort = min(t_ort, _best(lambda: sess.run(None, feed), 3))
        c_sim = min(c_sim, _best(lambda: run_program(program, feed, simulator=sim), 3, time.thread_time))
        c_ort = min(c_ort, _best(lambda: sess1.run(None, feed), 3, time.thread_time))
    return {
        "model": name,
        "params": params,
        "compile_seconds": t_compile,
        "session_seconds": t_session,
        "simulator_seconds": t_sim,
        "onnxruntime_seconds": t_ort,
        "simulator_cpu_seconds": c_sim,
        "onnxruntime_cpu_seconds": c_ort,
        "ptq_error": ptq_err,
        "pentary_exact_error": exact_err,
    }


def table(results: list[dict], size: int) -> str:
    lines = [
        f"| model (1x3x{size}x{size}) | params | compile s (onnxruntime session s) | simulator ms (onnxruntime ms, "
        "ratio) | CPU ms (onnxruntime one thread, ratio) | pentary-exact error | PTQ error |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        cpu = r["simulator_cpu_seconds"] / r["onnxruntime_cpu_seconds"]
        lines.append(
            f"| {LABEL[r['model']]} | {r['params'] / 1e3:,.1f} k | {r['compile_seconds']:.2f} "
            f"({r['session_seconds']:.3f}) | {1e3 * r['simulator_seconds']:.2f} ({1e3 * r['onnxruntime_seconds']:.2f}, "
            f"{r['simulator_seconds'] / r['onnxruntime_seconds']:.1f}x) | {1e3 * r['simulator_cpu_seconds']:.2f} "
            f"({1e3 * r['onnxruntime_cpu_seconds']:.2f}, {cpu:.1f}x)"
            f" | {r['pentary_exact_error']:.1e} | {r['ptq_error']:.3f} |"
        )
    return "\n".join(lines)


def rows(quick: bool = False) -> list:
    """Rows of docs/benchmarks.md (bench/run_all.py): per zoo family, simulator time against onnxruntime's,
    with the compile time and both errors in the text."""
    from common import PY, Row

    from pcc.diagnostics import PccError

    size, repeat = (64, 2) if quick else (224, 3)
    names = CNNS if not quick else ["resnet", "mobilenet_v2", "mobilenet_v3", "efficientnet", "shufflenet_v2"]
    out = []
    with tempfile.TemporaryDirectory() as d:
        for name in names:
            try:
                r = measure(name, size, repeat, Path(d))
            except Exception as exc:  # a family that does not compile at this size is a row that says why
                while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
                    exc = exc.exceptions[0]
                if not isinstance(exc, PccError):
                    raise
                msg = str(exc).splitlines()[0].split("error: ", 1)[-1]
                out.append(Row(f"zoo {LABEL[name]} 1x3x{size}x{size}: does not compile ({msg})", "-"))
                continue
            out.append(
                Row(
                    f"zoo {LABEL[name]} 1x3x{size}x{size} ({r['params'] / 1e3:,.0f} k params): simulator per "
                    f"sample; compile {r['compile_seconds']:.2f} s (onnxruntime session {r['session_seconds']:.3f} "
                    f"s); CPU time {1e3 * r['simulator_cpu_seconds']:.2f} ms vs onnxruntime one thread "
                    f"{1e3 * r['onnxruntime_cpu_seconds']:.2f} ms; error vs onnxruntime: pentary-exact "
                    f"{r['pentary_exact_error']:.1e}, PTQ {r['ptq_error']:.3f}",
                    f"{1e3 * r['simulator_seconds']:.2f} ms",
                    peer=f"onnxruntime: {1e3 * r['onnxruntime_seconds']:.2f} ms",
                    ratio=r["onnxruntime_seconds"] / r["simulator_seconds"],
                    target="simulator <= 5x onnxruntime (ratio >= 0.2); errors <= 1e-2 / 0.1",
                    command=f"{PY} bench/bench_zoo.py --models {name} --size {size} --repeat {repeat}",
                    table=f"The CNN zoo at 1x3x{size}x{size} (bench/bench_zoo.py)",
                    cells=cells(r),
                )
            )
    return out


def cells(r: dict) -> dict[str, str]:
    """One model's line of the zoo table in docs/benchmarks.md (column -> text)."""
    cpu = r["simulator_cpu_seconds"] / r["onnxruntime_cpu_seconds"]
    return {
        "model": LABEL[r["model"]],
        "params": f"{r['params'] / 1e3:,.1f} k",
        "compile s (onnxruntime session s)": f"{r['compile_seconds']:.2f} ({r['session_seconds']:.3f})",
        "simulator ms (onnxruntime ms)": f"{1e3 * r['simulator_seconds']:.2f} ({1e3 * r['onnxruntime_seconds']:.2f})",
        "CPU ms, simulator vs one-thread onnxruntime (ratio; target <= 5x)": (
            f"{1e3 * r['simulator_cpu_seconds']:.2f} vs {1e3 * r['onnxruntime_cpu_seconds']:.2f} ({cpu:.1f}x)"
        ),
        "pentary-exact error (target 1e-2)": f"{r['pentary_exact_error']:.1e}",
        "PTQ error (target 0.1)": f"{r['ptq_error']:.3f}",
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default=",".join(CNNS))
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    from common import model_names

    names = model_names(ap, args.models, CNNS)
    print(f"load average: {', '.join(f'{v:.1f}' for v in os.getloadavg())}")
    results = []
    with tempfile.TemporaryDirectory() as d:
        for name in names:
            results.append(measure(name, args.size, args.repeat, Path(d)))
            print(table(results[-1:], args.size).splitlines()[-1], flush=True)
    print()
    print(table(results, args.size))


if __name__ == "__main__":
    main()
