"""Compile time of a GPT-2-small-shaped ONNX model (124 M parameters) against onnxruntime's session creation.

The model is transformers' ``GPT2LMHeadModel`` from the default ``GPT2Config`` (12 layers, width 768, 12 heads,
50,257 tokens: 124.4 M parameters, random weights, nothing downloaded), eager attention, exported with
``torch.onnx.export(dynamo=False)`` taking token embeddings (``inputs_embeds``, 1 x SEQ x 768) with every
position attended, so its masks are constants of the export.  One compile is the whole ``pcc compile MODEL
--machine large`` path in process (the default machine's 8.4 M words hold neither the weights nor the logits):
ONNX import, the passes (quantize calibrated on one sample), code generation and writing ``.pasm`` + blob,
split per stage.  onnxruntime's session creation for the same file is measured in the same run.
``--profile`` prints the functions that dominate one compile (cProfile, cumulative time).

    .venv/bin/python bench/bench_xfmr_compile.py [--layers 12] [--seq 64] [--runs 1] [--profile]
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_compile  # noqa: E402
from bench_compile import compile_once, ort_session_seconds  # noqa: E402


def build(path: Path, layers: int, seq: int) -> int:
    """Export the GPT-2-shaped model with ``layers`` blocks to ``path``; returns its parameter count."""
    import torch
    import transformers

    transformers.logging.set_verbosity_error()
    cfg = transformers.GPT2Config(n_layer=layers, attn_implementation="eager")
    torch.manual_seed(0)
    model = transformers.GPT2LMHeadModel(cfg).eval()

    class Embeds(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            mask = torch.ones(x.shape[:2], dtype=torch.long)
            return self.model(inputs_embeds=x, attention_mask=mask, use_cache=False)[0]

    x = torch.randn(1, seq, cfg.n_embd) * 0.1
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(Embeds().eval(), (x,), str(path), dynamo=False, input_names=["x"], output_names=["y"])
    return sum(p.numel() for p in model.parameters())


def measure(layers: int, seq: int, runs: int, profile: bool = False) -> dict:
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "gpt2.onnx"
        params = build(path, layers, seq)
        cal = Path(d) / "cal.npz"
        np.savez(cal, x=(np.random.default_rng(0).standard_normal((1, seq, 768)) * 0.1).astype(np.float32))
        asm = Path(d) / "gpt2.pasm"
        real = bench_compile.compile_model

        def large(*a, **k):  # noqa: ANN002, ANN003, ANN202
            return real(*a, machine="large", **k)

        bench_compile.compile_model = large  # compile_once calls it by name: target the large machine
        try:
            if profile:
                prof = cProfile.Profile()
                prof.enable()
                compile_once(path, asm, cal)
                prof.disable()
                pstats.Stats(prof).sort_stats("cumulative").print_stats(30)
            times = [compile_once(path, asm, cal) for _ in range(runs)]
        finally:
            bench_compile.compile_model = real
        median = {k: statistics.median(t[k] for t in times) for k in times[0]}
        return dict(params=params, median=median, ort=ort_session_seconds(path, max(1, min(runs, 3))))


def rows(quick: bool = False) -> list:
    """The rows of docs/benchmarks.md (bench/run_all.py): GPT-2-small-shaped compile time vs onnxruntime."""
    from common import PY, Row

    layers, seq = (2, 16) if quick else (12, 64)
    r = measure(layers, seq, 1)
    t = r["median"]["total"]
    split = ", ".join(f"{k} {v:.1f} s" for k, v in r["median"].items() if k != "total" and v >= 0.05)
    return [
        Row(
            f"pcc compile GPT-2-shaped ONNX ({layers} layers, {r['params'] / 1e6:.1f} M params, 1x{seq}x768 "
            f"embeddings, 1 calibration sample, --machine large): {split}",
            f"{t:.1f} s",
            peer=f"onnxruntime session creation: {r['ort']:.2f} s",
            ratio=r["ort"] / t,
            target="<= 10 s (124 M params)",
            command=f"{PY} bench/bench_xfmr_compile.py --layers {layers} --seq {seq}",
        )
    ]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--layers", type=int, default=12)
    ap.add_argument("--seq", type=int, default=64)
    ap.add_argument("--runs", type=int, default=1)
    ap.add_argument("--profile", action="store_true", help="print cProfile's top functions of one compile")
    args = ap.parse_args()
    t0 = time.perf_counter()
    r = measure(args.layers, args.seq, args.runs, args.profile)
    print(f"GPT-2-shaped, {args.layers} layers, {r['params'] / 1e6:.1f} M params, seq {args.seq}")
    for k, v in r["median"].items():
        print(f"  {k:>16}: {v:7.2f} s")
    print(f"  onnxruntime session creation: {r['ort']:.2f} s   (bench wall {time.perf_counter() - t0:.0f} s)")


if __name__ == "__main__":
    main()
