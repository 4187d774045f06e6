"""Simulator throughput: scalar instructions per second and simulated MACs per second.

    .venv/bin/python bench/bench_sim.py                      # both synthetic benchmarks
    .venv/bin/python bench/bench_sim.py --scalar-n 2000000   # a longer scalar loop
    .venv/bin/python bench/bench_sim.py --program net.pbin --input x=x.npy [--onnx net.onnx]

* **scalar**: the seed-style loop (MOVI/ADD/ADDI/BNE/HALT summing N..1), 3N + 3 instructions.
* **tensor**: a synthetic MAC-heavy program: 3x3 convolutions (128 -> 128 channels on 28x28, pad 1), a
  depthwise 3x3 convolution, a 256x512 by 512x256 matrix multiply, each followed by REQUANT and TRELU, with
  4-pent activations and weights about one third zero.
* **--program**: any compiled program (.pasm/.pbin) with its inputs, e.g. ResNet-18 once the compiler emits it:
  wall time per sample, simulated MACs/s and instructions/s; with ``--onnx`` the same inputs through
  onnxruntime for comparison.

Timings are the best of ``--repeat`` runs (after one warm-up run that also translates the code), or their median
with ``--stat median`` (what ``rows()``, used by bench/run_all.py, reports).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np
from common import PY, Row, rate

from pcc.backend.assembler import assemble
from pcc.backend.program import DataSegment, Program
from pcc.pentary import from_digits
from pcc.runtime.profile import Profile
from pcc.runtime.simulator import Simulator


def scalar_program(n: int) -> Program:
    if not 1 <= n <= 4_882_812:
        raise SystemExit("--scalar-n must be in 1..4882812 (a MOVI immediate)")
    return assemble(
        f"""    MOVI P1, 0
    MOVI P2, {n}
loop:
    ADD P1, P1, P2
    ADDI P2, P2, -1
    BNE P2, loop
    HALT
""",
        "scalar.pasm",
    )


def _packed(rng: np.random.Generator, count: int, zero_share: float) -> np.ndarray:
    pents = rng.choice([-2, -1, 0, 1, 2], size=count, p=_pent_p(zero_share))
    pents = np.concatenate([pents, np.zeros((-count) % 16, dtype=pents.dtype)])
    return from_digits(pents.reshape(-1, 16))


def _pent_p(zero_share: float) -> list[float]:
    other = (1 - zero_share) / 4
    return [other, other, zero_share, other, other]


def tensor_program(seed: int = 0, repeat_layers: int = 4) -> Program:
    """A MAC-heavy synthetic program (see the module docstring); data placed as DataSegments."""
    rng = np.random.default_rng(seed)
    h = w = 28
    c = 128
    act = h * w * c  # 100352 words
    w3 = c * 9 * c  # 147456 pents
    wdw = c * 9
    m, k, n = 256, 512, 256
    wmm = n * k
    lines = ["; @layer load"]
    lines.append(f"    TLOAD 0, [P0 + 0], 1, {act}, {act}")
    lines.append(f"    TLOADW 0, [P0 + {act}], {w3}")
    lines.append(f"    TLOADW {w3}, [P0 + {act + w3 // 16}], {wdw}")
    for i in range(repeat_layers):
        lines.append(f"; @layer conv3x3.{i}")
        lines.append(f"    CONV 0, 0, 0, {h}, {w}, {c}, {c}, 3, 3, 1, 1, 1, 1, 1, 1, 1, 0")
        lines.append(f"    REQUANT 0, 0, {act}, 1, 10, 4")
        lines.append(f"    TRELU 0, 0, {act}")
    lines.append("; @layer depthwise")
    lines.append(f"    CONV 0, 0, {w3}, {h}, {w}, {c}, {c}, 3, 3, 1, 1, 1, 1, 1, 1, {c}, 0")
    lines.append(f"    REQUANT 0, 0, {act}, 1, 4, 4")
    mm_w = act + (w3 + wdw) // 16 + 16
    lines.append("; @layer matmul")
    lines.append(f"    TLOADW 0, [P0 + {mm_w}], {wmm}")
    lines.append(f"    MATMUL 0, 0, 0, {m}, {n}, {k}, 0")
    lines.append(f"    REQUANT 0, 0, {m * n}, 1, 12, 4")
    lines.append("    HALT")
    program = assemble("\n".join(lines) + "\n", "tensor.pasm")
    x = rng.integers(-312, 313, size=act)
    program.data = [
        DataSegment(0, x.astype(np.int64)),
        DataSegment(act, _packed(rng, w3, 0.33)),
        DataSegment(act + w3 // 16, _packed(rng, wdw, 0.33)),
        DataSegment(mm_w, _packed(rng, wmm, 0.33)),
    ]
    return program


STATS = {"best": min, "median": statistics.median}


def time_runs(sim: Simulator, repeat: int, before=None, stat: str = "best") -> float:  # noqa: ANN001
    """Best (or median) wall time of ``repeat`` runs (reset, optional ``before(sim)``, run), after a warm-up run."""
    times = []
    for i in range(repeat + 1):
        sim.reset()
        if before is not None:
            before(sim)
        t = time.perf_counter()
        sim.run()
        dt = time.perf_counter() - t
        if i:
            times.append(dt)
    return STATS[stat](times)


def bench_scalar(n: int, repeat: int, stat: str = "best") -> dict:
    sim = Simulator(scalar_program(n))
    dt = time_runs(sim, repeat, stat=stat)
    assert sim.regs[1] == _wrap_sum(n), "wrong sum"
    return {"name": "scalar", "instructions": sim.steps, "seconds": dt, "instr_per_s": sim.steps / dt}


def _wrap_sum(n: int) -> int:
    from pcc.isa import wrap

    return wrap(n * (n + 1) // 2)


def bench_tensor(repeat: int, stat: str = "best") -> dict:
    sim = Simulator(tensor_program())
    dt = time_runs(sim, repeat, stat=stat)
    sim.clear_counts()
    sim.reset()
    sim.run()
    prof = Profile(sim)
    macs = prof.total.macs + prof.total.xbar_macs
    return {
        "name": "tensor",
        "instructions": sim.steps,
        "macs": macs,
        "seconds": dt,
        "macs_per_s": macs / dt,
        "simulated_cycles": prof.total.cycles,
        "per_layer": {r.name: r.macs for r in prof.rows},
    }


def bench_program(
    path: Path, inputs: dict[str, np.ndarray], repeat: int, onnx: Path | None, stat: str = "best"
) -> dict:
    """Time a compiled program on its inputs (one sample), and optionally onnxruntime on the same inputs."""
    from pcc.runtime.cli import load_program
    from pcc.runtime.simulator import run_program

    program = load_program(path)
    sim = Simulator(program)
    times = []
    for i in range(repeat + 1):
        sim.clear_counts()
        t = time.perf_counter()
        run_program(program, inputs, simulator=sim)
        dt = time.perf_counter() - t
        if i:
            times.append(dt)
    best = STATS[stat](times)
    prof = Profile(sim)
    macs = prof.total.macs + prof.total.xbar_macs
    out = {
        "name": str(path),
        "instructions": int(prof.total.instructions),
        "macs": macs,
        "seconds": best,
        "macs_per_s": macs / best,
        "instr_per_s": prof.total.instructions / best,
        "simulated_seconds": prof.seconds,
    }
    if onnx is not None:
        import onnxruntime as ort

        sess = ort.InferenceSession(str(onnx), providers=["CPUExecutionProvider"])
        feeds = {i.name: inputs[i.name].astype(np.float32) for i in sess.get_inputs()}
        sess.run(None, feeds)
        t_ort = STATS[stat]([_timed(lambda: sess.run(None, feeds)) for _ in range(max(repeat, 1))])
        out["onnxruntime_seconds"] = t_ort
        out["slowdown_vs_onnxruntime"] = best / t_ort
    return out


def _timed(fn) -> float:  # noqa: ANN001
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def rows(quick: bool = False) -> list[Row]:
    """The scalar and tensor rates as medians (bench/run_all.py).  Compiled networks against onnxruntime: pending."""
    n, repeat = (200_000, 3) if quick else (1_000_000, 3)
    scalar = bench_scalar(n, repeat, "median")
    tensor = bench_tensor(repeat, "median")
    base = f"{PY} bench/bench_sim.py --repeat {repeat} --stat median"
    return [
        Row(
            f"simulator, scalar code (seed-style summing loop, {scalar['instructions']:,} instructions, "
            f"median of {repeat})",
            rate(scalar["instr_per_s"], "instructions/s"),
            "published simulator of this processor: about 76 k instructions/s (published figure, not run here)",
            None,
            ">= 1 M instructions/s",
            f"{base} --only scalar --scalar-n {n}",
        ),
        Row(
            f"simulator, tensor code (3x3 convolutions at 28x28x128, a depthwise convolution, a 256x512x256 "
            f"MATMUL, REQUANT/TRELU: {tensor['macs'] / 1e9:.3f} G MACs, median of {repeat})",
            rate(tensor["macs_per_s"], "simulated MACs/s"),
            command=f"{base} --only tensor",
        ),
    ]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--scalar-n", type=int, default=1_000_000, help="loop iterations (3N+3 instructions)")
    ap.add_argument("--repeat", type=int, default=3, help="timed runs; the best is reported")
    ap.add_argument("--stat", choices=list(STATS), default="best", help="report the best (default) or the median run")
    ap.add_argument("--only", choices=["scalar", "tensor"], help="run one synthetic benchmark")
    ap.add_argument("--program", type=Path, help="a compiled program to time instead of the synthetic ones")
    ap.add_argument("--input", action="append", default=[], metavar="NAME=FILE.npy", help="its inputs")
    ap.add_argument("--onnx", type=Path, help="the float model, timed with onnxruntime on the same inputs")
    ap.add_argument("--json", action="store_true", help="print JSON")
    args = ap.parse_args(argv)
    results = []
    if args.program is not None:
        from pcc.runtime.cli import load_program, parse_inputs

        names = [d.name for d in load_program(args.program).inputs]
        inputs = parse_inputs(args.input, names)
        results.append(bench_program(args.program, inputs, args.repeat, args.onnx, args.stat))
    else:
        if args.only in (None, "scalar"):
            results.append(bench_scalar(args.scalar_n, args.repeat, args.stat))
        if args.only in (None, "tensor"):
            results.append(bench_tensor(args.repeat, args.stat))
    if args.json:
        print(json.dumps(results, indent=2))
        return 0
    for r in results:
        if r["name"] == "scalar":
            print(
                f"scalar: {r['instructions']:,} instructions in {r['seconds']:.3f} s = "
                f"{r['instr_per_s'] / 1e6:.2f} M instructions/s"
            )
        elif r["name"] == "tensor":
            print(
                f"tensor: {r['macs'] / 1e9:.3f} G MACs ({r['instructions']} instructions, "
                f"{r['simulated_cycles']:,} simulated cycles) in {r['seconds']:.3f} s = "
                f"{r['macs_per_s'] / 1e9:.2f} G simulated MACs/s"
            )
        else:
            line = (
                f"{r['name']}: {r['seconds'] * 1e3:.1f} ms per sample, {r['macs'] / 1e9:.3f} G MACs "
                f"({r['macs_per_s'] / 1e9:.2f} G MACs/s), {r['instructions']:,} instructions"
            )
            if "onnxruntime_seconds" in r:
                line += f"; onnxruntime {r['onnxruntime_seconds'] * 1e3:.1f} ms ({r['slowdown_vs_onnxruntime']:.1f}x)"
            print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
