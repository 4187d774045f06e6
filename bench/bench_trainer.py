"""Trainer benchmark: accuracy and speed of pentary QAT against a float32 PyTorch model trained the same way.

Run from the repository root::

    .venv/bin/python bench/bench_trainer.py            # everything (about two minutes on 2 cores)
    .venv/bin/python bench/bench_trainer.py --quick    # fewer repetitions, no 25 M quantizer run
    .venv/bin/python bench/bench_trainer.py --json results.json

Sections
1. digits MLP protocol: PentaryModel(64, 10, [64, 32]), inputs / 16, 80/20 split random_state=0, 20 epochs,
   batch 32, Adam lr 0.01 with a cosine schedule; the same model (same initial weights, same batch order, same
   per-epoch validation pass) in float32 PyTorch.  Training wall time of both, in the same process, repeated
   and interleaved (min and median), with 1 BLAS/torch thread and with the default thread count.
2. the published approach for comparison: float training then per-tensor ``max|w|/2`` quantization (PTQ),
   and the variants in between (per-tensor, max scale, QAT without the end-of-training grid pull).
3. a pentary CNN with BatchNorm on digits (1x8x8 input) and its float32 PyTorch twin.
4. the shared quantizer (pcc.quant) on 25 M weights: mse vs max, per tensor and per channel.
5. the seed's multimodal command on the synthetic text+image+audio set, for each fusion method.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from pcc import quant  # noqa: E402
from pcc.trainer.data import load_digits_dataset, make_multimodal_dataset, split  # noqa: E402
from pcc.trainer.layers import (  # noqa: E402
    Flatten,
    PentaryBatchNorm,
    PentaryConv2D,
    PentaryLinear,
    PentaryMaxPool2D,
    PentaryReLU,
)
from pcc.trainer.model import PentaryModel  # noqa: E402
from pcc.trainer.multimodal import MultimodalFusion  # noqa: E402
from pcc.trainer.optim import lr_at  # noqa: E402
from pcc.trainer.trainer import PentaryTrainer  # noqa: E402


@contextlib.contextmanager
def threads(n: int | None):
    """Limit NumPy's BLAS and torch to ``n`` threads (None: leave the defaults)."""
    import torch

    if n is None:
        yield
        return
    old = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # pragma: no cover
        threadpool_limits = None
    try:
        if threadpool_limits is not None:
            with threadpool_limits(limits=n, user_api="blas"):
                yield
        else:
            yield
    finally:
        torch.set_num_threads(old)


def mlp_model(seed: int = 0) -> PentaryModel:
    return PentaryModel(64, 10, [64, 32], seed=seed)


def cnn_model(seed: int = 0) -> PentaryModel:
    layers = [
        PentaryConv2D(1, 16, 3, padding=1), PentaryBatchNorm(16), PentaryReLU(), PentaryMaxPool2D(2),
        PentaryConv2D(16, 32, 3, padding=1), PentaryBatchNorm(32), PentaryReLU(), PentaryMaxPool2D(2),
        Flatten(), PentaryLinear(32 * 2 * 2, 10),
    ]  # fmt: skip
    return PentaryModel.sequential(layers, (1, 8, 8), seed=seed)


def torch_twin(model: PentaryModel):
    """A float32 torch.nn.Sequential with the same layers and initial weights."""
    import torch

    mods = []
    for layer in model.layers:
        if isinstance(layer, PentaryLinear):
            m = torch.nn.Linear(layer.in_features, layer.out_features)
        elif isinstance(layer, PentaryConv2D):
            m = torch.nn.Conv2d(layer.in_channels, layer.out_channels, layer.kernel_size, layer.stride, layer.padding)
        elif isinstance(layer, PentaryBatchNorm):
            m = torch.nn.BatchNorm2d(layer.num_features)
        elif isinstance(layer, PentaryReLU):
            m = torch.nn.ReLU()
        elif isinstance(layer, PentaryMaxPool2D):
            m = torch.nn.MaxPool2d(layer.kernel_size, layer.stride)
        else:
            m = torch.nn.Flatten()
        if isinstance(layer, PentaryLinear | PentaryConv2D):
            with torch.no_grad():
                m.weight.copy_(torch.from_numpy(layer.weight.value))
                m.bias.copy_(torch.from_numpy(layer.bias.value))
        mods.append(m)
    return torch.nn.Sequential(*mods)


def train_torch(model: PentaryModel, train, test, epochs=20, batch=32, lr=0.01, seed=0) -> dict[str, float]:
    """The trainer's loop in torch: Adam, per-step cosine LR, the same batch order, a validation pass per epoch."""
    import torch

    net = torch_twin(model)
    shape = (-1, *model.input_shape)
    x = torch.from_numpy(train.x).reshape(shape)
    y = torch.from_numpy(train.y)
    xv = torch.from_numpy(test.x).reshape(shape)
    yv = torch.from_numpy(test.y)
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    rng = np.random.default_rng(seed)
    n = len(x)
    total = epochs * math.ceil(n / batch)
    step = 0
    t0 = time.perf_counter()
    for _ in range(epochs):
        net.train()
        perm = torch.from_numpy(rng.permutation(n))
        for i in range(0, n, batch):
            for g in opt.param_groups:
                g["lr"] = lr_at("cosine", lr, step, total)
            idx = perm[i : i + batch]
            loss = torch.nn.functional.cross_entropy(net(x[idx]), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            step += 1
        net.eval()
        with torch.no_grad():
            val_acc = (net(xv).argmax(1) == yv).float().mean().item()
    seconds = time.perf_counter() - t0
    return {"seconds": seconds, "val_acc": val_acc}


def train_ours(model: PentaryModel, train, test, epochs=20, batch=32, lr=0.01, seed=0, **kw) -> dict[str, Any]:
    trainer = PentaryTrainer(model, "cross_entropy", lr, seed=seed, log=None, **kw)
    t0 = time.perf_counter()
    trainer.train((train.x, train.y), (test.x, test.y), epochs, batch)
    seconds = time.perf_counter() - t0  # includes the final float + pentary metrics passes
    m = trainer.metrics
    return {
        "seconds": seconds,
        "train_loop_seconds": trainer.train_time,
        "val_acc_pentary": m["val_acc_pentary"],
        "val_acc_float": m["val_acc_float"],
        "pent_levels": m["pent_histogram"]["total"],
    }


def timing_duel(make, train, test, reps: int, n_threads: int | None, epochs: int) -> dict[str, Any]:
    ours, theirs = [], []
    with threads(n_threads):
        for _ in range(reps):  # interleaved, so that load changes hit both sides alike
            ours.append(train_ours(make(), train, test, epochs=epochs, threads=n_threads))
            theirs.append(train_torch(make(), train, test, epochs=epochs))
    o = [r["train_loop_seconds"] for r in ours]
    t = [r["seconds"] for r in theirs]
    return {
        "threads": n_threads or "default",
        "ours_min_s": min(o),
        "ours_median_s": statistics.median(o),
        "torch_min_s": min(t),
        "torch_median_s": statistics.median(t),
        "ratio_min": min(o) / min(t),
        "ratio_median": statistics.median(o) / statistics.median(t),
        "ours_val_acc_pentary": ours[0]["val_acc_pentary"],
        "ours_val_acc_float": ours[0]["val_acc_float"],
        "torch_val_acc": theirs[0]["val_acc"],
        "pent_levels": ours[0]["pent_levels"],
    }


def ptq_published(train, test) -> float:
    """The published tool's end state: float weights quantized per tensor with scale max|w| / 2."""
    model = mlp_model()
    PentaryTrainer(model, "cross_entropy", 0.01, qat=False, grid_pull=0.0, log=None).train(
        (train.x, train.y), None, 20, 32
    )
    for layer in model.weight_layers():
        layer.per_channel, layer.quant_method = False, "max"
    return model.accuracy(test.x, test.y, quantized=True)


def variants(train, test, seeds: int) -> dict[str, Any]:
    out: dict[str, Any] = {}
    configs = {
        "QAT per-channel mse + grid pull (default)": ({}, {}),
        "QAT per-channel mse, no grid pull": ({}, {"grid_pull": 0.0}),
        "QAT per-tensor mse": ({"per_channel": False}, {}),
        "QAT per-channel max": ({"quant_method": "max"}, {}),
        "float training + PTQ per-channel mse": ({}, {"qat": False, "grid_pull": 0.0}),
    }
    for name, (mkw, tkw) in configs.items():
        pent, flt = [], []
        for s in range(seeds):
            r = train_ours(PentaryModel(64, 10, [64, 32], seed=s, **mkw), train, test, seed=s, **tkw)
            pent.append(r["val_acc_pentary"])
            flt.append(r["val_acc_float"])
        out[name] = {"pentary": pent, "float": flt}
    out["float training + PTQ per-tensor max/2 (published)"] = {"pentary": [ptq_published(train, test)]}
    return out


def quantizer_bench(n: int = 25_000_000) -> list[dict[str, Any]]:
    rng = np.random.default_rng(0)
    w = rng.standard_normal(n, dtype=np.float32)
    rows = []
    for label, shape, per_channel in [
        ("per tensor [25M]", (n,), False),
        ("per channel [5000, 5000]", (5000, 5000), True),
        ("per channel conv [2048, 1220, 3, 3]", (2048, 1220, 3, 3), True),
    ]:
        x = w[: int(np.prod(shape))].reshape(shape)
        for method in ("mse", "max"):
            t0 = time.perf_counter()
            q, s = quant.quantize_weights(x, per_channel=per_channel, method=method)
            dt = time.perf_counter() - t0
            err = quant.reconstruction_error(x, q, s) / float(np.sum(x.astype(np.float64) ** 2))
            levels = np.bincount(q.ravel().astype(np.int64) + 2, minlength=5) / q.size
            rows.append({"case": label, "method": method, "seconds": dt, "relative_error": err,
                         "levels": [round(float(v), 3) for v in levels]})  # fmt: skip
    return rows


def multimodal_bench() -> dict[str, Any]:
    data = make_multimodal_dataset(1000, ["text", "image", "audio"], 10, seed=0)
    tr, va = split(data, 0.2, 0)
    out = {}
    for method in ("concat", "add", "multiply", "attention"):
        fusion = MultimodalFusion(["text", "image", "audio"], method)
        xtr, xva = fusion.process_batch(tr.x, fit=True), fusion.process_batch(va.x)
        trainer = PentaryTrainer(PentaryModel(xtr.shape[1], 10, [64, 32]), None, 0.01, log=None)
        trainer.train((xtr, tr.y), (xva, va.y), 20, 16)
        out[method] = {"features": int(xtr.shape[1]), "val_acc_pentary": trainer.metrics["val_acc_pentary"],
                       "val_acc_float": trainer.metrics["val_acc_float"], "seconds": trainer.train_time}  # fmt: skip
    for only in ("text", "image", "audio"):
        fusion = MultimodalFusion([only], "concat")
        xtr, xva = fusion.process_batch(tr.x, fit=True), fusion.process_batch(va.x)
        trainer = PentaryTrainer(PentaryModel(xtr.shape[1], 10, [64, 32]), None, 0.01, log=None)
        trainer.train((xtr, tr.y), (xva, va.y), 20, 16)
        out[f"{only} only"] = {"val_acc_pentary": trainer.metrics["val_acc_pentary"]}
    return out


def rows(quick: bool = False) -> list:
    """Rows for bench/run_all.py: training time against torch and test accuracy, MLP and CNN on digits."""
    from common import PY, Row

    train, test = load_digits_dataset()
    cmd = f"{PY} bench/bench_trainer.py" + (" --quick" if quick else "")
    mlp = timing_duel(mlp_model, train, test, 2 if quick else 5, 1, 20)
    cnn = timing_duel(cnn_model, train, test, 1 if quick else 2, 1, 20)
    out = []
    for name, r, shape in (("MLP [64, 32]", mlp, "64-64-32-10"), ("CNN with BatchNorm", cnn, "conv16-conv32-fc")):
        out.append(
            Row(
                f"trainer time, digits {name} ({shape}, 20 epochs, batch 32, 1 thread, min of runs)",
                f"{r['ours_min_s']:.2f} s",
                f"torch float32, same loop: {r['torch_min_s']:.2f} s",
                r["torch_min_s"] / r["ours_min_s"],
                "no slower than 1.5x torch",
                cmd,
            )
        )
        out.append(
            Row(
                f"digits {name} test accuracy: QAT pentary (float shadow weights)",
                f"{100 * r['ours_val_acc_pentary']:.2f} % ({100 * r['ours_val_acc_float']:.2f} %)",
                f"torch float32: {100 * r['torch_val_acc']:.2f} %",
                None,
                ">= 96 % (MLP), >= 97 % (CNN)",
                cmd,
            )
        )
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer repetitions; skip the 25 M quantizer run")
    ap.add_argument("--json", type=Path, help="also write the results as JSON")
    args = ap.parse_args()
    reps = 2 if args.quick else 5
    train, test = load_digits_dataset()
    results: dict[str, Any] = {}

    print("== 1. digits MLP 64-64-32-10, 20 epochs, batch 32, Adam lr 0.01 cosine: pentary QAT vs float32 torch")
    results["mlp"] = []
    for n_threads in (1, None):
        r = timing_duel(mlp_model, train, test, reps, n_threads, 20)
        results["mlp"].append(r)
        print(
            f"  threads={r['threads']}: ours {r['ours_min_s']:.3f}s min / {r['ours_median_s']:.3f}s median, "
            f"torch {r['torch_min_s']:.3f}s / {r['torch_median_s']:.3f}s -> ratio {r['ratio_min']:.2f} (min), "
            f"{r['ratio_median']:.2f} (median)"
        )
    r = results["mlp"][0]
    print(
        f"  test accuracy: pentary {100 * r['ours_val_acc_pentary']:.2f}%, float shadow "
        f"{100 * r['ours_val_acc_float']:.2f}%, torch float32 {100 * r['torch_val_acc']:.2f}%"
    )
    lv = np.asarray(r["pent_levels"], float)
    print("  weights per level -2..+2: " + "  ".join(f"{100 * v / lv.sum():.1f}%" for v in lv))

    print("== 2. quantization variants on the same protocol (test accuracy, seeds 0..)")
    results["variants"] = variants(train, test, 2 if args.quick else 5)
    for name, v in results["variants"].items():
        line = f"  {name:48s} pentary {100 * np.mean(v['pentary']):.2f}% (min {100 * min(v['pentary']):.2f})"
        if "float" in v:
            line += f"  float {100 * np.mean(v['float']):.2f}%"
        print(line)

    print("== 3. digits CNN conv16-bn-relu-pool-conv32-bn-relu-pool-fc, 20 epochs")
    results["cnn"] = timing_duel(cnn_model, train, test, 1 if args.quick else 2, 1, 20)
    c = results["cnn"]
    print(
        f"  pentary {100 * c['ours_val_acc_pentary']:.2f}% (float shadow {100 * c['ours_val_acc_float']:.2f}%), "
        f"torch float32 {100 * c['torch_val_acc']:.2f}%; time ours {c['ours_min_s']:.2f}s vs torch "
        f"{c['torch_min_s']:.2f}s (1 thread) -> {c['ratio_min']:.2f}x"
    )

    if not args.quick:
        print("== 4. pcc.quant.quantize_weights on 25 M float32 weights")
        results["quantizer"] = quantizer_bench()
        for q in results["quantizer"]:
            print(
                f"  {q['case']:38s} {q['method']:3s} {q['seconds']:6.2f}s  relative error {q['relative_error']:.4f}"
                f"  levels {q['levels']}"
            )

    print("== 5. seed multimodal command (1000 synthetic samples, 8 classes, 20 epochs, batch 16, lr 0.01)")
    results["multimodal"] = multimodal_bench()
    for name, v in results["multimodal"].items():
        extra = f" ({v['features']} features, {v['seconds']:.2f}s)" if "features" in v else ""
        print(f"  {name:10s} val pentary {100 * v['val_acc_pentary']:.1f}%{extra}")

    if args.json:
        args.json.write_text(json.dumps(results, indent=1, default=float))


if __name__ == "__main__":
    main()
