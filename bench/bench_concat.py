"""Concat without copies: cycles and main-memory words moved by the zoo's concat families with the producers
writing into the concat's buffer (plan-memory's default) against every concat copying its inputs
(``plan-memory{concat-in-place=false}``), from the profiler after one simulated sample.

The families are ``tests/frontends/zoo_models.py``'s DenseNet, Inception and SqueezeNet (random weights),
exported at 1x3xSxS, calibrated on 4 standard-normal inputs; both programs come from the same quantized graph,
so their outputs are identical (checked).

    .venv/bin/python bench/bench_concat.py [--size 224] [--models densenet,inception,squeezenet]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import warnings
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "frontends"))
sys.path.insert(0, str(ROOT / "bench"))

MODELS = ["densenet", "inception", "squeezenet"]


def _profile(path: Path, cal: Path, out: Path, x: np.ndarray, in_place: bool) -> dict:
    from pcc.backend.assembler import assemble_file
    from pcc.drivers.compile import compile_model
    from pcc.passes.pipeline import FLOAT_PASSES, PENT_PASSES
    from pcc.runtime.profile import Profile
    from pcc.runtime.simulator import Simulator, run_program

    pent = PENT_PASSES if in_place else PENT_PASSES.replace("plan-memory", "plan-memory{concat-in-place=false}")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        compile_model(path, emit="asm", output=out, calibration=cal, passes=f"{FLOAT_PASSES},quantize,{pent}")
    prog = assemble_file(out)
    sim = Simulator(prog)
    y = run_program(prog, {"x": x}, simulator=sim)["y"]
    prof = Profile(sim)
    cat = [r for r in prof.rows if "Concat" in r.name]
    t = prof.total
    return {
        "y": y,
        "instructions": len(prog.instructions),
        "cycles": t.cycles,
        "words": t.dram_read_words + t.dram_write_words,
        "concat_cycles": sum(r.cycles for r in cat),
        "concat_instructions": sum(r.instructions for r in cat),
    }


def measure(name: str, size: int, workdir: Path) -> dict:
    from bench_zoo import export
    from zoo_models import build_zoo

    model, _ = build_zoo(name)
    model.eval()
    path = workdir / f"{name}.onnx"
    export(model, size, path)
    rng = np.random.default_rng(0)
    cal = workdir / f"{name}.cal.npz"
    np.savez(cal, x=rng.standard_normal((4, 3, size, size)).astype(np.float32))
    x = rng.standard_normal((1, 3, size, size)).astype(np.float32)
    after = _profile(path, cal, workdir / f"{name}.pasm", x, True)
    before = _profile(path, cal, workdir / f"{name}.copy.pasm", x, False)
    if not np.array_equal(after.pop("y"), before.pop("y")):
        raise AssertionError(f"{name}: the in-place program's output differs from the copying one's")
    return {"model": name, "in_place": after, "copies": before}


def table(results: list[dict], size: int) -> str:
    lines = [
        f"| model (1x3x{size}x{size}) | cycles in place (copies) | main-memory words moved in place (copies) | "
        "concat cycles in place (copies) | instructions in place (copies) |",
        "|---|---:|---:|---:|---:|",
    ]
    for r in results:
        a, b = r["in_place"], r["copies"]
        lines.append(
            f"| {r['model']} | {a['cycles']:,} ({b['cycles']:,}) | {a['words']:,} ({b['words']:,}) | "
            f"{a['concat_cycles']:,} ({b['concat_cycles']:,}) | {a['instructions']:,} ({b['instructions']:,}) |"
        )
    return "\n".join(lines)


def rows(quick: bool = False) -> list:
    """Rows of docs/benchmarks.md (bench/run_all.py): per family, the simulated cycles with the concat in place
    against the copying program's."""
    from common import PY, Row

    size = 64 if quick else 224
    out = []
    with tempfile.TemporaryDirectory() as d:
        for name in MODELS:
            r = measure(name, size, Path(d))
            a, b = r["in_place"], r["copies"]
            out.append(
                Row(
                    f"zoo {name} 1x3x{size}x{size}: cycles with concat inputs written in place (main-memory words "
                    f"{a['words']:,} vs {b['words']:,} copying)",
                    f"{a['cycles']:,} cycles",
                    peer=f"every concat copying: {b['cycles']:,} cycles",
                    ratio=b["cycles"] / a["cycles"],
                    target="fewer cycles than copying (ratio > 1)",
                    command=f"{PY} bench/bench_concat.py --models {name} --size {size}",
                )
            )
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default=",".join(MODELS))
    ap.add_argument("--size", type=int, default=224)
    args = ap.parse_args()
    from common import model_names

    names = model_names(ap, args.models, MODELS)
    print(f"load average: {', '.join(f'{v:.1f}' for v in os.getloadavg())}")
    with tempfile.TemporaryDirectory() as d:
        results = [measure(n, args.size, Path(d)) for n in names]
    print(table(results, args.size))


if __name__ == "__main__":
    main()
