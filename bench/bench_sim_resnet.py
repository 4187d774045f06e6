"""Simulator wall time against onnxruntime on the same float model and input, in the same run.

    .venv/bin/python bench/bench_sim_resnet.py                    # ResNet-18 (1x3x224x224) and the digits CNN
    .venv/bin/python bench/bench_sim_resnet.py --models digits --repeat 20 --json out.json

Each model is written in torch with random weights (batch norms with random statistics), exported to ONNX
(``torch.onnx.export(..., dynamo=False)``), compiled with ``pcc compile --emit asm`` (default pipeline, two
random calibration samples), assembled, and run on one random input:

* **simulator**: ``run_program`` on a kept ``Simulator`` with the default engine (``gemm="auto"``: the int8 GEMM
  when torch is installed and the model has a product of at least 1 M MACs; the first run translates the code
  and is not timed; the compiled loops where numba is installed), best of ``--repeat`` runs; the input
  quantization and output dequantization are included; again with BLAS and torch limited to one thread; and on a
  second ``Simulator`` whose outputs must be bit-identical: with the float64-BLAS engine (the previous version)
  when the default is the int8 engine, else with the numpy closures alone (``fused=False``, as without numba);
* **onnxruntime**: ``InferenceSession`` on the CPU provider with its default threads, and again with one
  intra-op thread, best of ``--repeat`` rounds (each of at least 5 runs in all) after a warm-up.

These are timed in interleaved rounds, so that a change in machine load hits both sides of a ratio: in each
round every case makes one untimed call (the thread pools of the case before it, onnxruntime's or BLAS's, keep
spinning for a while and would slow it) and then its timed calls, and each case keeps its best time. The float
engine is timed after the rounds, for the same reason.

With ``--breakdown`` one more simulator run goes through cProfile and its time is split by tensor closure
(``conv`` is CONV, ``requantc`` REQUANTC, ``dma_in`` TLOAD/TLOADC, ...; the rest is scalar code and the I/O
boundary). The header names the BLAS library and torch's thread count: on a loaded machine a multithreaded
kernel can be several times slower than one thread, for the simulator and onnxruntime alike.

The ratio ``simulator / onnxruntime`` (default threads) is the number to compare with the target (<= 5x for
ResNet-18).  Models:

* ``resnet18``: torchvision's ResNet-18 layout (7x7/2 stem, max pool, 4 stages of 2 basic blocks with 1x1
  projection shortcuts, global average pool, 1000-way linear), 1.8 G MACs;
* ``digits``: the trainer's digits CNN of ``docs/trainer.md`` (conv 1->16, BN, ReLU, pool, conv 16->32, BN,
  ReLU, pool, linear 128->10) on 1x1x8x8.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np


def resnet18():  # noqa: ANN201 - a torch module
    import torch
    from torch import nn

    class Block(nn.Module):
        def __init__(self, cin: int, cout: int, stride: int) -> None:
            super().__init__()
            self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
            self.bn1 = nn.BatchNorm2d(cout)
            self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
            self.bn2 = nn.BatchNorm2d(cout)
            self.down = None
            if stride != 1 or cin != cout:
                self.down = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            y = self.bn2(self.conv2(torch.relu(self.bn1(self.conv1(x)))))
            return torch.relu(y + (x if self.down is None else self.down(x)))

    class ResNet18(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False)
            self.bn1 = nn.BatchNorm2d(64)
            self.pool = nn.MaxPool2d(3, 2, 1)
            blocks, cin = [], 64
            for cout, stride in ((64, 1), (128, 2), (256, 2), (512, 2)):
                blocks += [Block(cin, cout, stride), Block(cout, cout, 1)]
                cin = cout
            self.layers = nn.Sequential(*blocks)
            self.avg = nn.AdaptiveAvgPool2d(1)
            self.fc = nn.Linear(512, 1000)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            x = self.layers(self.pool(torch.relu(self.bn1(self.conv1(x)))))
            return self.fc(torch.flatten(self.avg(x), 1))

    return ResNet18(), (1, 3, 224, 224)


def digits_cnn():  # noqa: ANN201 - a torch module
    from torch import nn

    net = nn.Sequential(
        nn.Conv2d(1, 16, 3, padding=1),
        nn.BatchNorm2d(16),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(16, 32, 3, padding=1),
        nn.BatchNorm2d(32),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(32 * 2 * 2, 10),
    )
    return net, (1, 1, 8, 8)


MODELS = {"resnet18": resnet18, "digits": digits_cnn}


_CLOSURES = {  # tensor closure (runtime/tensor.py) -> the instructions it runs
    "conv": "CONV",
    "dot": "MATMUL/MATVEC",
    "requantc": "REQUANTC",
    "requant": "REQUANT",
    "eadd": "EADD",
    "pool": "POOL",
    "unary": "TRELU/TCLAMP",
    "tlut": "TLUT",
    "dma_in": "TLOAD/TLOADC",
    "dma_out": "TSTORE/TSTOREC",
    "dma_w": "TLOADW",
    "dma_w_loop": "TLOADW",
    "conv_direct": "CONV",
    "dot_direct": "MATMUL/MATVEC",
    "pool_loop": "POOL",
    "requantc_loop": "REQUANTC",
    "unary_loop": "TRELU/TCLAMP",
    "run": "compiled runs of small instructions (DMA, REQUANTC, POOL, TRELU, small products)",
}


def breakdown(fn) -> dict[str, float]:  # noqa: ANN001
    """Seconds of one call of ``fn`` by tensor closure (cumulative, from cProfile), plus ``total``."""
    import cProfile
    import pstats

    prof = cProfile.Profile()
    t0 = time.perf_counter()
    prof.runcall(fn)
    total = time.perf_counter() - t0
    out = dict.fromkeys(_CLOSURES.values(), 0.0)
    for (path, _line, func), (_cc, _nc, _tt, ct, _callers) in pstats.Stats(prof).stats.items():
        if func in _CLOSURES and path.replace("\\", "/").endswith("runtime/tensor.py"):
            out[_CLOSURES[func]] += ct
    out = {k: v for k, v in out.items() if v > 0}
    out["scalar code, I/O, other"] = max(total - sum(out.values()), 0.0)
    out["total"] = total
    return out


def _one_thread() -> Callable[[], contextlib.AbstractContextManager]:
    """A context manager factory: inside, BLAS (threadpoolctl) and torch's intra-op pool use one thread. It is
    entered around a case's calls of a round, not per call: setting the limits costs tens of microseconds, as much
    as a small program's run."""
    try:
        from threadpoolctl import ThreadpoolController
    except ImportError:  # pragma: no cover - scikit-learn brings it
        ThreadpoolController = None  # noqa: N806
    ctl = ThreadpoolController() if ThreadpoolController else None  # inspects the loaded libraries once

    @contextlib.contextmanager
    def limited():  # noqa: ANN202
        torch = sys.modules.get("torch")
        threads = torch.get_num_threads() if torch else 0
        if torch:
            torch.set_num_threads(1)
        try:
            if ctl is None:
                yield
            else:
                with ctl.limit(limits=1, user_api="blas"):
                    yield
        finally:
            if torch:
                torch.set_num_threads(threads)

    return limited


def _timed(fn: Callable[[], object]) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def blas_info() -> str:
    try:
        from threadpoolctl import threadpool_info
    except ImportError:  # pragma: no cover - scikit-learn brings it
        return "BLAS: unknown"
    libs = [i for i in threadpool_info() if i.get("user_api") == "blas"]
    if not libs:
        return "BLAS: unknown"
    text = "BLAS: " + ", ".join(
        f"{i.get('internal_api')} {i.get('version')} ({i.get('num_threads')} threads)" for i in libs
    )
    try:
        import torch
    except ImportError:
        return text + "; torch: not installed (float engine only)"
    return text + f"; torch {torch.__version__} ({torch.get_num_threads()} threads)"


_ENGINE_TEXT = {"int8": "int8 engine", "float": "float engine", "direct": "direct compiled products"}


def _all_direct(sim) -> bool:  # noqa: ANN001 - a Simulator
    """Whether every CONV/MATMUL/MATVEC of the program runs as a direct compiled loop (runtime/products.py)."""
    from pcc.runtime import products
    from pcc.runtime.simulator import largest_product

    return bool(sim.direct_products) and largest_product(sim.program) <= products._DIRECT_MACS


def bench_model(name: str, repeat: int, workdir: Path, split: bool = False) -> dict:
    import onnxruntime as ort
    import torch

    from pcc.backend.assembler import assemble_file
    from pcc.drivers.compile import compile_model
    from pcc.runtime.simulator import Simulator, run_program

    torch.manual_seed(0)
    net, shape = MODELS[name]()
    net.eval()
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.1, 0.1)
                m.running_var.uniform_(0.5, 1.5)
    rng = np.random.default_rng(0)
    x = rng.standard_normal(shape).astype(np.float32)
    onnx_path = workdir / f"{name}.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(net, (torch.from_numpy(x),), str(onnx_path), dynamo=False, input_names=["x"])
    cal = workdir / f"{name}.cal.npz"
    np.savez(cal, x=rng.standard_normal((2, *shape[1:])).astype(np.float32))
    t0 = time.perf_counter()
    compile_model(onnx_path, emit="asm", output=workdir / f"{name}.pasm", calibration=cal)
    t_compile = time.perf_counter() - t0
    program = assemble_file(workdir / f"{name}.pasm")
    sim = Simulator(program)
    sim_float = Simulator(program, gemm="float")  # the float64-BLAS engine: the previous version, as a peer

    # a program whose products stay on the float engine is also timed with the numpy closures alone (fused=False):
    # the simulator where numba is not installed, and the previous version for small programs
    sim_numpy = Simulator(program, fused=False) if sim.fused and not sim.int8_gemm else None
    feed = {program.inputs[0].name: x}
    t0 = time.perf_counter()
    out = run_program(program, feed, simulator=sim)  # translates the code
    t_first = time.perf_counter() - t0
    out_float = run_program(program, feed, simulator=sim_float)
    same = all(np.array_equal(out[k], out_float[k]) for k in out)
    if sim_numpy is not None:
        out_numpy = run_program(program, feed, simulator=sim_numpy)
        same = same and all(np.array_equal(out[k], out_numpy[k]) for k in out)

    ort_feed = {ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"]).get_inputs()[0].name: x}
    sessions = {}
    ref = None
    for label, threads in (("default", 0), ("1 thread", 1)):
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        sess = ort.InferenceSession(str(onnx_path), opts, providers=["CPUExecutionProvider"])
        ref = sess.run(None, ort_feed)[0]  # warm-up
        sessions[label] = sess
    # Interleaved rounds, so that both sides of each ratio meet the same machine load; best of each.
    one_thread = _one_thread()
    cases = {
        "sim": lambda: run_program(program, feed, simulator=sim),
        "sim 1 thread": lambda: run_program(program, feed, simulator=sim),  # inside one_thread(), below
    }
    if sim_numpy is not None:
        cases["sim numpy"] = lambda: run_program(program, feed, simulator=sim_numpy)
    for label, sess in sessions.items():
        cases[label] = lambda sess=sess: sess.run(None, ort_feed)
    # Each round runs every case in turn: one untimed call first (so that the thread pools the previous case left
    # spinning have gone idle, and caches hold this case's data), then `inner` timed calls; each keeps its best.
    inner = max(1, -(-5 // repeat))
    best = dict.fromkeys(cases, float("inf"))
    for _ in range(repeat):
        for label, fn in cases.items():
            with one_thread() if label == "sim 1 thread" else contextlib.nullcontext():
                fn()
                best[label] = min(best[label], min(_timed(fn) for _ in range(inner)))
    if sim.int8_gemm:
        # Timed apart: the float engine's BLAS threads keep spinning after it returns and would slow whatever runs
        # next, onnxruntime included.
        best["sim float"] = min(_timed(lambda: run_program(program, feed, simulator=sim_float)) for _ in range(repeat))
    t_sim, t_sim1 = best["sim"], best["sim 1 thread"]
    times = {k: best[k] for k in sessions}
    parts = breakdown(lambda: run_program(program, feed, simulator=sim)) if split else None
    got = next(iter(out.values()))
    macs = 0
    from pcc.runtime.profile import Profile

    prof = Profile(sim)
    macs = (prof.total.macs + prof.total.xbar_macs) // max(prof.runs, 1)
    return {
        "model": name,
        "input": list(shape),
        "instructions": len(program.instructions),
        "macs": macs,
        "compile_seconds": t_compile,
        "simulator_first_run_seconds": t_first,
        # how the products ran: the int8 GEMM, direct compiled loops (every product small enough), or float64 BLAS
        "engine": "int8" if sim.int8_gemm else "direct" if _all_direct(sim) else "float",
        "simulator_seconds": t_sim,
        "simulator_1thread_seconds": t_sim1,
        "simulator_float_engine_seconds": best.get("sim float", t_sim),
        "fused": sim.fused,
        "simulator_numpy_seconds": best.get("sim numpy", t_sim),
        "engines_agree": same,
        "onnxruntime_seconds": times["default"],
        "onnxruntime_1thread_seconds": times["1 thread"],
        "ratio": t_sim / times["default"],
        "ratio_1thread": t_sim / times["1 thread"],
        "ratio_both_1thread": t_sim1 / times["1 thread"],
        "top1_agrees": bool(np.argmax(got) == np.argmax(ref)),
        "max_abs_err_vs_onnxruntime": float(np.max(np.abs(got - ref))),
        **({"simulator_breakdown_seconds": parts} if parts else {}),
    }


def rows(quick: bool = False) -> list:
    """Rows for bench/run_all.py: simulator time over onnxruntime's, ResNet-18 and the digits CNN."""
    import tempfile

    from common import PY, Row

    repeat = 2 if quick else 3
    out = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, label in (("resnet18", "ResNet-18, 1x3x224x224"), ("digits", "digits CNN, 1x1x8x8")):
            r = bench_model(name, repeat, Path(tmp))
            out.append(
                Row(
                    f"simulator time per sample, {label} ({r['macs'] / 1e6:,.1f} M MACs, bit-exact; best of runs)",
                    f"{1e3 * r['simulator_seconds']:.2f} ms = {r['macs'] / r['simulator_seconds'] / 1e9:,.2f} G "
                    f"simulated MACs/s, {_ENGINE_TEXT[r['engine']]}"
                    f"{', compiled loops' if r['fused'] else ''} "
                    f"(1 thread: {1e3 * r['simulator_1thread_seconds']:.2f} ms; "
                    + (
                        f"float engine: {1e3 * r['simulator_float_engine_seconds']:.2f} ms)"
                        if r["engine"] == "int8"
                        else f"numpy closures alone, fused=False: {1e3 * r['simulator_numpy_seconds']:.2f} ms)"
                    ),
                    f"onnxruntime float, default threads: {1e3 * r['onnxruntime_seconds']:.3f} ms "
                    f"(1 thread: {1e3 * r['onnxruntime_1thread_seconds']:.3f} ms)",
                    r["onnxruntime_seconds"] / r["simulator_seconds"],
                    "simulator <= 5x onnxruntime's time (ratio >= 0.2)",
                    f"{PY} bench/bench_sim_resnet.py --models {name} --repeat {repeat}",
                )
            )
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="resnet18,digits", help="comma-separated: resnet18, digits")
    ap.add_argument("--repeat", type=int, default=3, help="timed runs per measurement (best is kept)")
    ap.add_argument("--json", type=Path, help="also write the results as JSON")
    ap.add_argument("--keep", type=Path, help="keep the ONNX models and programs in this folder")
    ap.add_argument("--breakdown", action="store_true", help="split one simulator run by tensor instruction")
    args = ap.parse_args(argv)
    names = [n.strip() for n in args.models.split(",") if n.strip()]
    unknown = [n for n in names if n not in MODELS]
    if unknown:
        ap.error(f"unknown model {unknown[0]!r}; known: {', '.join(MODELS)}")
    print(f"cpus: {os.cpu_count()}, load average: {', '.join(f'{v:.1f}' for v in os.getloadavg())}; {blas_info()}")
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        work = args.keep or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        for name in names:
            r = bench_model(name, args.repeat, work, args.breakdown)
            results.append(r)
            print(
                f"{name}: {r['instructions']} instructions, {r['macs'] / 1e6:,.1f} M MACs; simulator "
                f"{r['simulator_seconds'] * 1e3:,.2f} ms/sample ({r['macs'] / r['simulator_seconds'] / 1e9:,.2f} G "
                f"simulated MACs/s; first run "
                f"{r['simulator_first_run_seconds'] * 1e3:,.1f} ms); onnxruntime "
                f"{r['onnxruntime_seconds'] * 1e3:,.3f} ms ({r['ratio']:,.1f}x), one thread "
                f"{r['onnxruntime_1thread_seconds'] * 1e3:,.3f} ms ({r['ratio_1thread']:,.1f}x); simulator with "
                f"one thread {r['simulator_1thread_seconds'] * 1e3:,.2f} ms "
                f"({r['ratio_both_1thread']:,.1f}x onnxruntime's one thread); {_ENGINE_TEXT[r['engine']]}"
                + (
                    f", float engine {r['simulator_float_engine_seconds'] * 1e3:,.2f} ms, "
                    f"{'bit-identical' if r['engines_agree'] else 'OUTPUTS DIFFER'}"
                    if r["engine"] == "int8"
                    else f", numpy closures alone (fused=False) {r['simulator_numpy_seconds'] * 1e3:,.2f} ms "
                    f"({r['simulator_numpy_seconds'] / r['onnxruntime_seconds']:,.1f}x), "
                    f"{'bit-identical' if r['engines_agree'] else 'OUTPUTS DIFFER'}"
                )
                + f"; compile "
                f"{r['compile_seconds']:.2f} s; top-1 {'agrees' if r['top1_agrees'] else 'DIFFERS'}, max |sim - ort| "
                f"{r['max_abs_err_vs_onnxruntime']:.3g}",
                flush=True,
            )
            parts = r.get("simulator_breakdown_seconds")
            if parts:
                total = parts["total"]
                print(
                    "  one profiled run: "
                    + ", ".join(f"{k} {v * 1e3:,.1f} ms ({v / total:.0%})" for k, v in parts.items() if k != "total"),
                    flush=True,
                )
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
