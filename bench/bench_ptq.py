"""Post-training quantization quality on scikit-learn's digits: float vs pentary test accuracy.

A float MLP and a small CNN (with batch norms, which fold-batchnorm removes) are trained with torch on
``load_digits`` (80/20 split, random_state=0, pixels / 16), exported to ONNX, compiled by the default pipeline with
the training images as calibration data, and evaluated on the test split with the ``pent`` reference (which the
simulator matches bit for bit; ``--sim`` also runs the assembled program on the simulator).  Rows: weight scales
per channel (pcc.quant's mse scales with bias correction, the default; without it; with gptq rounding; max/2)
and per tensor (max/2 with and without bias correction); then a sweep of activation widths.

    .venv/bin/python bench/bench_ptq.py [--epochs 60] [--seeds 0,1,2] [--sim]
"""

from __future__ import annotations

import argparse
import tempfile
import warnings
from pathlib import Path

import numpy as np
import torch
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

from pcc import pent_reference
from pcc.drivers.compile import compile_module
from pcc.frontends.onnx import load
from pcc.pass_manager import parse_pipeline
from pcc.passes.pipeline import FLOAT_PASSES, PENT_PASSES
from pcc.passes.quantize import Quantize


def data() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    x, y = load_digits(return_X_y=True)
    x = (x / 16.0).astype(np.float32).reshape(-1, 1, 8, 8)
    xtr, xte, ytr, yte = train_test_split(x, y, test_size=0.2, random_state=0)
    return xtr, xte, ytr, yte


class MLP(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.net = torch.nn.Sequential(
            torch.nn.Flatten(),
            torch.nn.Linear(64, 128),
            torch.nn.ReLU(),
            torch.nn.Linear(128, 64),
            torch.nn.ReLU(),
            torch.nn.Linear(64, 10),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class CNN(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.net = torch.nn.Sequential(
            torch.nn.Conv2d(1, 16, 3, padding=1),
            torch.nn.BatchNorm2d(16),
            torch.nn.ReLU(),
            torch.nn.Conv2d(16, 32, 3, padding=1),
            torch.nn.BatchNorm2d(32),
            torch.nn.ReLU(),
            torch.nn.MaxPool2d(2),
            torch.nn.Conv2d(32, 32, 3, padding=1),
            torch.nn.BatchNorm2d(32),
            torch.nn.ReLU(),
            torch.nn.AdaptiveAvgPool2d(1),
            torch.nn.Flatten(),
            torch.nn.Linear(32, 10),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def train(net: torch.nn.Module, xtr: np.ndarray, ytr: np.ndarray, epochs: int, seed: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    opt = torch.optim.Adam(net.parameters(), lr=3e-3)
    x, y = torch.from_numpy(xtr), torch.from_numpy(ytr)
    g = torch.Generator().manual_seed(seed)
    for _ in range(epochs):
        net.train()
        perm = torch.randperm(len(x), generator=g)
        for i in range(0, len(x), 64):
            idx = perm[i : i + 64]
            opt.zero_grad()
            torch.nn.functional.cross_entropy(net(x[idx]), y[idx]).backward()
            opt.step()
    return net.eval()


def float_accuracy(net: torch.nn.Module, x: np.ndarray, y: np.ndarray) -> float:
    with torch.no_grad():
        return float((net(torch.from_numpy(x)).argmax(1).numpy() == y).mean())


def export(net: torch.nn.Module, path: Path) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            net,
            (torch.zeros(1, 1, 8, 8),),
            str(path),
            dynamo=False,
            do_constant_folding=False,
            input_names=["image"],
            output_names=["logits"],
        )


def pent_accuracy(onnx_path: Path, cal: Path, x: np.ndarray, y: np.ndarray, sim: bool = False, **q: object) -> float:
    m = load(str(onnx_path))
    passes = [*parse_pipeline(FLOAT_PASSES), Quantize(calibration=str(cal), **q), *parse_pipeline(PENT_PASSES)]
    result = compile_module(m, passes, generate=sim)
    if sim:
        from pcc.backend.assembler import assemble_file
        from pcc.backend.codegen import write_program
        from pcc.runtime.simulator import run_program

        with tempfile.TemporaryDirectory() as d:
            write_program(result.compiled, Path(d) / "m.pasm")
            prog = assemble_file(Path(d) / "m.pasm")
        logits = run_program(prog, {"image": x})["logits"]
        return float((logits.argmax(1) == y).mean())
    pred = [int(np.argmax(pent_reference.run(m, {"image": x[i : i + 1]})[0])) for i in range(len(x))]
    return float((np.array(pred) == y).mean())


CONFIGS = {
    "per-channel mse + bias corr. (default)": {},
    "per-channel mse": {"bias_correction": False},
    "per-channel gptq + bias corr.": {"weight_method": "gptq"},
    "per-channel max/2": {"weight_method": "max", "bias_correction": False},
    "per-tensor max/2": {"per_tensor": True, "weight_method": "max", "bias_correction": False},
    "per-tensor max/2 + bias corr.": {"per_tensor": True, "weight_method": "max"},
}
DEFAULT = "per-channel mse + bias corr. (default)"


def measure(
    epochs: int,
    seeds: list[int],
    calibration_samples: int = 256,
    sim: bool = False,
    widths: tuple[int, ...] = (1, 2, 3, 4, 6, 8),
    configs: dict[str, dict] | None = None,
) -> list[tuple[str, int, dict[str, float]]]:
    """(model, seed, column -> test accuracy) for the MLP and the CNN."""
    configs = CONFIGS if configs is None else configs
    xtr, xte, ytr, yte = data()
    rows: list[tuple[str, int, dict[str, float]]] = []
    with tempfile.TemporaryDirectory() as d:
        cal = Path(d) / "cal.npz"
        np.savez(cal, image=xtr[:calibration_samples])
        for name, cls in (("MLP", MLP), ("CNN", CNN)):
            for seed in seeds:
                torch.manual_seed(seed)  # the initial weights too
                net = train(cls(), xtr, ytr, epochs, seed)
                path = Path(d) / f"{name}{seed}.onnx"
                export(net, path)
                acc = {"float": float_accuracy(net, xte, yte)}
                acc.update({k: pent_accuracy(path, cal, xte, yte, **q) for k, q in configs.items()})
                if sim:
                    acc["simulator (default)"] = pent_accuracy(path, cal, xte, yte, sim=True)
                acc.update({f"{p} pents": pent_accuracy(path, cal, xte, yte, act_pents=p) for p in widths})
                rows.append((name, seed, acc))
    return rows


def rows(quick: bool = False) -> list:
    """The rows of docs/benchmarks.md (bench/run_all.py): default and per-tensor max/2 accuracy vs float."""
    from common import PY, Row

    epochs, seeds = (30, [0]) if quick else (60, [0, 1, 2])
    configs = {k: CONFIGS[k] for k in (DEFAULT, "per-tensor max/2")}
    data_rows = measure(epochs, seeds, widths=(), configs=configs)
    cmd = f"{PY} bench/bench_ptq.py --epochs {epochs} --seeds {','.join(map(str, seeds))}"
    out = []
    for name in ("MLP", "CNN"):
        accs = [a for n, _, a in data_rows if n == name]
        f = 100 * float(np.mean([a["float"] for a in accs]))
        for col, label in ((DEFAULT, "per-channel scales + bias correction"), ("per-tensor max/2", "per-tensor max/2")):
            q = 100 * float(np.mean([a[col] for a in accs]))
            out.append(
                Row(
                    f"PTQ digits {name} test accuracy, {label} (mean of {len(seeds)} seed(s))",
                    f"{q:.2f} %",
                    peer=f"float: {f:.2f} %",
                    target="within 2 points of float" if col == DEFAULT else "",
                    command=cmd,
                )
            )
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=60)
    ap.add_argument("--seeds", default="0", help="comma-separated training seeds; the table shows their mean")
    ap.add_argument("--calibration-samples", type=int, default=256)
    ap.add_argument("--sim", action="store_true", help="also run the default configuration on the simulator")
    args = ap.parse_args()
    seeds = [int(x) for x in args.seeds.split(",")]
    widths = (1, 2, 3, 4, 6, 8)
    rows = measure(args.epochs, seeds, args.calibration_samples, args.sim, widths)
    main_cols = ["float", *CONFIGS] + (["simulator (default)"] if args.sim else [])
    width_cols = [f"{p} pents" for p in widths]

    def table(cols: list[str]) -> None:
        print("| model | seed | " + " | ".join(cols) + " |")
        print("|---|---|" + "---:|" * len(cols))
        for name, seed, acc in rows:
            print(f"| {name} | {seed} | " + " | ".join(f"{100 * acc[c]:.2f}" for c in cols) + " |")
        if len(seeds) > 1:
            for name in dict.fromkeys(n for n, _, _ in rows):
                mean = {c: np.mean([a[c] for n, _, a in rows if n == name]) for c in cols}
                print(f"| **{name}** | mean | " + " | ".join(f"**{100 * mean[c]:.2f}**" for c in cols) + " |")

    n_test = len(data()[3])
    print(f"digits test accuracy (%), {n_test} test images, {args.epochs} epochs, 8-pent activations\n")
    table(main_cols)
    print("\nactivation width sweep (per-channel mse weights + bias correction)\n")
    table(width_cols)


if __name__ == "__main__":
    main()
