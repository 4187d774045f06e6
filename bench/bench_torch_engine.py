"""Torch engine benchmark: QAT throughput against plain float torch, and digits CNN accuracy against NumPy.

Run from the repository root::

    .venv/bin/python bench/bench_torch_engine.py                      # on the CPU (about a minute on 2 cores)
    python3 bench/bench_torch_engine.py --device cuda --json out.json  # on a GPU

Sections
1. **Throughput.**  For each model (the digits CNN at batch 32; on a GPU also a VGG-style CNN on 3x32x32 at
   batch 256 and a wide MLP at batch 1024), training samples per second of the torch engine (QAT: pentary
   forward, per-step scale refinement, straight-through gradients, Adam, cosine schedule, grid pull; bf16
   autocast on CUDA) against the same model in plain torch float (``nn.Sequential`` of ``Linear``/``Conv2d``/
   ``BatchNorm``/..., the same initial weights, batch order, Adam and per-step learning rate; bf16 autocast and
   TF32 on CUDA, float32 on the CPU), timed in the same process.  One epoch of warm-up, then the median epoch
   time.  The engine runs with its defaults (on CUDA: the per-step quantization compiled by ``torch.compile``,
   each full step replayed as a CUDA graph); on CUDA also with the other settings (``VARIANTS``), and the float
   loop also with its forward and backward replayed as a CUDA graph (what the graph alone gains).
2. **Digits CNN accuracy.**  The CNN of docs/trainer.md (conv 16, BN, ReLU, pool, conv 32, BN, ReLU, pool,
   linear), 20 epochs, batch 32, Adam lr 0.01, seed 0: test accuracy of the NumPy engine (CPU) and of the torch
   engine on ``--device``, with their wall times.

``rows()`` measures on the CPU (the project machine has no GPU) and adds the rows recorded on a GPU in
``bench/torch_engine_gpu.json`` (written by ``--json`` on the GPU machine), labelled as recorded.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
for p in (str(ROOT), str(ROOT / "bench")):
    if p not in sys.path:
        sys.path.insert(0, p)

from pcc.trainer.data import load_digits_dataset  # noqa: E402
from pcc.trainer.layers import (  # noqa: E402
    Flatten,
    PentaryBatchNorm,
    PentaryConv2D,
    PentaryLinear,
    PentaryMaxPool2D,
    PentaryReLU,
)
from pcc.trainer.model import PentaryModel  # noqa: E402
from pcc.trainer.optim import lr_at  # noqa: E402
from pcc.trainer.trainer import PentaryTrainer  # noqa: E402

RECORDED = ROOT / "bench" / "torch_engine_gpu.json"


def digits_cnn(seed: int = 0) -> PentaryModel:
    layers = [
        PentaryConv2D(1, 16, 3, padding=1), PentaryBatchNorm(16), PentaryReLU(), PentaryMaxPool2D(2),
        PentaryConv2D(16, 32, 3, padding=1), PentaryBatchNorm(32), PentaryReLU(), PentaryMaxPool2D(2),
        Flatten(), PentaryLinear(32 * 2 * 2, 10),
    ]  # fmt: skip
    return PentaryModel.sequential(layers, (1, 8, 8), seed=seed)


def vgg_cnn(seed: int = 0) -> PentaryModel:
    layers: list[Any] = []
    c_in = 3
    for c_out, pool in ((64, False), (64, True), (128, False), (128, True), (256, False), (256, True)):
        layers += [PentaryConv2D(c_in, c_out, 3, padding=1), PentaryBatchNorm(c_out), PentaryReLU()]
        if pool:
            layers.append(PentaryMaxPool2D(2))
        c_in = c_out
    layers += [Flatten(), PentaryLinear(256 * 4 * 4, 512), PentaryReLU(), PentaryLinear(512, 10)]
    return PentaryModel.sequential(layers, (3, 32, 32), seed=seed)


def wide_mlp(seed: int = 0) -> PentaryModel:
    return PentaryModel(1024, 10, [4096, 4096], seed=seed)


# name, builder, batch, steps per epoch (CPU, CUDA); the large models are left out on the CPU (minutes a step)
MODELS = {
    "digits-cnn": (digits_cnn, 32, (45, 45)),
    "vgg-cifar": (vgg_cnn, 256, (0, 100)),
    "wide-mlp": (wide_mlp, 1024, (0, 100)),
}


def float_twin(model: PentaryModel) -> Any:
    """``nn.Sequential`` with the same layers and initial weights, trained in plain float."""
    import torch

    mods = []
    for layer in model.layers:
        if isinstance(layer, PentaryLinear):
            m = torch.nn.Linear(layer.in_features, layer.out_features)
        elif isinstance(layer, PentaryConv2D):
            m = torch.nn.Conv2d(layer.in_channels, layer.out_channels, layer.kernel_size, layer.stride, layer.padding)
        elif isinstance(layer, PentaryBatchNorm):
            m = torch.nn.BatchNorm2d(layer.num_features, layer.eps, layer.momentum)
        elif isinstance(layer, PentaryReLU):
            m = torch.nn.ReLU()
        elif isinstance(layer, PentaryMaxPool2D):
            m = torch.nn.MaxPool2d(layer.kernel_size, layer.stride, layer.padding)
        elif isinstance(layer, Flatten):
            m = torch.nn.Flatten()
        else:
            raise TypeError(layer)
        if isinstance(layer, PentaryLinear | PentaryConv2D):
            with torch.no_grad():
                m.weight.copy_(torch.from_numpy(layer.weight.value))
                m.bias.copy_(torch.from_numpy(layer.bias.value))
        mods.append(m)
    return torch.nn.Sequential(*mods)


def time_float(
    model: PentaryModel, x: np.ndarray, y: np.ndarray, batch: int, epochs: int, device: Any, graph: bool = False
) -> list[float]:
    """Epoch times of the plain-float twin with the torch engine's loop structure; ``graph``: its forward and
    backward replayed as a CUDA graph from the third step on (the optimiser eager), as the engine does."""
    import torch

    net = float_twin(model).to(device)
    opt = torch.optim.Adam(net.parameters(), lr=0.01)
    xs = torch.from_numpy(x.reshape((len(x), *model.input_shape))).to(device)
    ys = torch.from_numpy(y).to(device)
    rng = np.random.default_rng(0)
    n = len(x)
    total = -(-n // batch) * epochs
    step, times = 0, []
    bf16 = device.type == "cuda"
    side = torch.cuda.Stream(device) if graph else None
    captured: Any = None

    def forward_backward(idx: Any) -> Any:
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16, cache_enabled=False):
            out = net(xs.index_select(0, idx))
        loss = torch.nn.functional.cross_entropy(out.float(), ys.index_select(0, idx), reduction="sum")
        (loss / idx.shape[0]).backward()
        return loss.detach()

    for _ in range(epochs):
        t0 = time.perf_counter()
        perm = torch.from_numpy(rng.permutation(n)).to(device)
        loss_sum = torch.zeros((), dtype=torch.float64, device=device)
        for i in range(0, n, batch):
            idx = perm[i : i + batch]
            for g in opt.param_groups:
                g["lr"] = lr_at("cosine", 0.01, step, total)
            if side is None:
                opt.zero_grad(set_to_none=True)
                loss = forward_backward(idx)
            elif step < 2:  # warm-up on the capture stream
                opt.zero_grad(set_to_none=True)
                side.wait_stream(torch.cuda.current_stream())
                with torch.cuda.stream(side):
                    loss = forward_backward(idx)
                torch.cuda.current_stream().wait_stream(side)
            else:
                if captured is None:
                    opt.zero_grad(set_to_none=True)
                    static_idx, g = idx.clone(), torch.cuda.CUDAGraph()
                    with torch.cuda.graph(g, stream=side):
                        static_loss = forward_backward(static_idx)
                    captured = (g, static_idx, static_loss)
                g, static_idx, static_loss = captured
                static_idx.copy_(idx)
                g.replay()
                loss = static_loss
            opt.step()
            loss_sum += loss.double()
            step += 1
        float(loss_sum)  # synchronise
        times.append(time.perf_counter() - t0)
    return times


# the engine's settings timed besides its defaults (on CUDA: compiled quantization inside a CUDA graph)
VARIANTS = {
    "eager": {"compile": False, "cuda_graph": False},
    "compile_only": {"compile": True, "cuda_graph": False},
    "graph_only": {"compile": False, "cuda_graph": True},
}


def time_engine(
    model: PentaryModel, x: np.ndarray, y: np.ndarray, batch: int, epochs: int, device: str, **options: Any
) -> tuple[list[float], dict[str, Any]]:
    """Epoch times of the torch engine and its engine record (what it ran with)."""
    from pcc.trainer.torch_engine import TorchTrainer

    tr = TorchTrainer(model, "cross_entropy", 0.01, log=None, device=device, threads=1, **options)
    tr.train((x, y), None, epochs=epochs, batch_size=batch)
    return [r["seconds"] for r in tr.history], tr.engine_info()


def throughput(device: str, quick: bool, only: list[str] | None = None) -> list[dict[str, Any]]:
    import torch

    from pcc.trainer.torch_engine import resolve_device

    dev = resolve_device(device)
    torch.set_num_threads(1)  # the CPU rows: one thread each (a shared machine); on CUDA the host only launches
    if dev.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        torch.backends.cudnn.benchmark = True
    out = []
    for name, (build, batch, steps) in MODELS.items():
        if only and name not in only:
            continue
        n_steps = steps[1 if dev.type == "cuda" else 0]
        if not n_steps:
            continue
        if quick:
            n_steps = max(2, n_steps // 4)
        model = build(0)
        rng = np.random.default_rng(1)
        n = n_steps * batch
        x = rng.standard_normal((n, model.input_dim), dtype=np.float32)
        y = rng.integers(0, 10, n)
        epochs = 3 if not quick else 2
        tf, tq = [], []
        for _ in range(2):  # interleaved
            tf += time_float(build(0), x, y, batch, epochs, dev)[1:]
            times, info = time_engine(build(0), x, y, batch, epochs, device)
            tq += times[1:]
        rf, rq = n / statistics.median(tf), n / statistics.median(tq)
        extra: dict[str, Any] = {"engine": {k: info[k] for k in ("precision", "compile", "cuda_graph")}}
        if dev.type == "cuda":  # the other settings, and the float loop replayed as a CUDA graph too
            variants: dict[str, Any] = {}
            for vname, options in VARIANTS.items():
                try:
                    times, _ = time_engine(build(0), x, y, batch, epochs, device, **options)
                    variants[vname] = n / statistics.median(times[1:])
                except Exception as exc:  # noqa: BLE001  (report, keep the other rows)
                    variants[vname] = f"{type(exc).__name__}: {exc}"[:300]
            extra["variants_samples_per_s"] = variants
            extra["float_graph_samples_per_s"] = n / statistics.median(
                time_float(build(0), x, y, batch, epochs, dev, graph=True)[1:]
            )
        out.append(
            {
                **extra,
                "model": name,
                "params": model.num_params(),
                "batch": batch,
                "samples_per_epoch": n,
                "qat_samples_per_s": rq,
                "float_samples_per_s": rf,
                "ratio": rq / rf,
                "device": str(dev),
            }
        )
        print(
            f"{name:11s} batch {batch:5d}: QAT {rq:12,.0f} samples/s  float {rf:12,.0f} samples/s  "
            f"ratio {rq / rf:.3f}x  {extra}",
            flush=True,
        )
    return out


def digits_accuracy(device: str, epochs: int = 20) -> dict[str, Any]:
    from pcc.trainer.torch_engine import TorchTrainer

    train, test = load_digits_dataset()
    x, xt = (np.asarray(d.x, np.float32).reshape(len(d.x), -1) for d in (train, test))
    res: dict[str, Any] = {"epochs": epochs}
    for engine in ("numpy", "torch"):
        if engine == "numpy":
            tr = PentaryTrainer(digits_cnn(0), "cross_entropy", 0.01, log=None)
        else:
            tr = TorchTrainer(digits_cnn(0), "cross_entropy", 0.01, log=None, device=device, threads=1)
        t0 = time.perf_counter()
        tr.train((x, train.y), None, epochs=epochs, batch_size=32)
        wall = time.perf_counter() - t0
        res[engine] = {
            "test_acc_pentary": tr.evaluate((xt, test.y), quantized=True)[1],
            "test_acc_float": tr.evaluate((xt, test.y), quantized=False)[1],
            "seconds": wall,
        }
        if engine == "torch":
            res[engine].update(tr.engine_info())
        r = res[engine]
        print(
            f"digits CNN, {engine:5s} engine: test accuracy {100 * r['test_acc_pentary']:.2f} % pentary, "
            f"{100 * r['test_acc_float']:.2f} % float shadow, {wall:.1f} s",
            flush=True,
        )
    return res


LM_CONFIG = {"context": 256, "layers": 6, "heads": 6, "dim": 384, "batch_size": 64, "steps": 2500, "lr": 1e-3}


def lm_run(device: str, steps: int | None = None, max_seconds: float = 420.0) -> dict[str, Any]:
    """The character-level transformer LM (GPU size, ``LM_CONFIG``) trained by the torch engine on the default
    English corpus (CPython's language-reference topics, 90 % train / 10 % validation): validation loss in nats
    per character, pentary (the model file's pents and scales) and float shadow, every 250 steps, and wall time."""
    from pcc.trainer.charlm import Vocabulary, char_transformer, default_corpus
    from pcc.trainer.torch_charlm import TorchCharLMTrainer

    cfg = dict(LM_CONFIG, steps=steps or LM_CONFIG["steps"])
    text, source = default_corpus()
    vocab = Vocabulary.from_text(text)
    ids = vocab.encode(text)
    cut = int(0.9 * len(ids))
    model = char_transformer(
        len(vocab), cfg["context"], cfg["layers"], cfg["heads"], cfg["dim"], seed=0, vocabulary=vocab.chars
    )
    tr = TorchCharLMTrainer(model, device=device, learning_rate=cfg["lr"], warmup=100, seed=0, log=print)
    t0 = time.perf_counter()
    tr.train(ids[:cut], ids[cut:], steps=cfg["steps"], batch_size=cfg["batch_size"], max_seconds=max_seconds)
    wall = time.perf_counter() - t0
    curve = [{"step": r["step"], "val_loss": r["val_loss"]} for r in tr.history if "val_loss" in r]
    return {
        **cfg,
        "corpus": source,
        "chars": len(ids),
        "vocab": len(vocab),
        "params": model.num_params(),
        "steps_run": len(tr.history),
        "train_seconds": tr.train_time,
        "wall_seconds": wall,
        "val_loss_pentary": tr.evaluate(ids[cut:], quantized=True),
        "val_loss_float": tr.evaluate(ids[cut:], quantized=False),
        "val_curve": curve,
        "engine": {"device": str(tr.device), "precision": tr.precision},
    }


def environment(device: str) -> dict[str, Any]:
    import torch

    env = {"python": platform.python_version(), "torch": torch.__version__, "numpy": np.__version__}
    if device != "cpu" and torch.cuda.is_available():
        env["gpu"] = torch.cuda.get_device_name(0)
    env["cpu"] = platform.processor() or platform.machine()
    env["date"] = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    return env


def run(device: str, quick: bool) -> dict[str, Any]:
    res = {"environment": environment(device)}
    print(res["environment"], flush=True)
    res["throughput"] = throughput(device, quick)
    res["digits"] = digits_accuracy(device, 4 if quick else 20)
    return res


def _rows_from(res: dict[str, Any], recorded: bool, command: str) -> list[Any]:
    from common import Row

    env = res["environment"]
    where = env.get("gpu", "CPU")
    tag = f"{where}, recorded {env['date']}" if recorded else where
    rows = []
    labels = {
        "eager": "eager (compile=False, cuda_graph=False)",
        "compile_only": "compiled quantization, no CUDA graph",
        "graph_only": "CUDA graph, eager quantization",
    }
    for t in res["throughput"]:
        eng = t.get("engine", {})
        how = ", ".join(k for k in ("compile", "cuda_graph") if eng.get(k)) or "eager"
        rows.append(
            Row(
                f"torch engine QAT training throughput, {t['model']} ({t['params']:,} params, batch {t['batch']}; "
                f"defaults: {how}; {tag})",
                f"{t['qat_samples_per_s']:,.0f} samples/s",
                f"plain torch float (same model, loop, Adam{', bf16 autocast + TF32' if 'gpu' in env else ''}): "
                f"{t['float_samples_per_s']:,.0f} samples/s",
                t["ratio"],
                ">= 0.7x float",
                command,
            )
        )
        for name, value in t.get("variants_samples_per_s", {}).items():
            if isinstance(value, int | float):
                rows.append(
                    Row(
                        f"torch engine QAT throughput, {labels.get(name, name)}, {t['model']} (batch {t['batch']}; "
                        f"{tag})",
                        f"{value:,.0f} samples/s",
                        f"plain torch float: {t['float_samples_per_s']:,.0f} samples/s",
                        value / t["float_samples_per_s"],
                        "(a setting besides the defaults)",
                        command,
                    )
                )
        if "float_graph_samples_per_s" in t:
            rows.append(
                Row(
                    f"torch engine QAT throughput (defaults) against a float loop replayed as a CUDA graph too, "
                    f"{t['model']} (batch {t['batch']}; {tag})",
                    f"{t['qat_samples_per_s']:,.0f} samples/s",
                    f"float forward and backward as a CUDA graph: {t['float_graph_samples_per_s']:,.0f} samples/s",
                    t["qat_samples_per_s"] / t["float_graph_samples_per_s"],
                    "(the cost of QAT itself)",
                    command,
                )
            )
    lm_env = res.get("lm_environment", env)  # the LM runs may come from another run than the throughput rows
    lm_tag = f"{lm_env.get('gpu', 'CPU')}, recorded {lm_env['date']}" if recorded else tag
    for lm in res.get("lm", []):
        rows.append(
            Row(
                f"character LM {lm['layers']}x{lm['dim']} ({lm['params']:,} params, context {lm['context']}, batch "
                f"{lm['batch_size']}, {lm['steps']} steps) on {lm['corpus']}, torch engine, "
                f"{lm['engine']['precision']} ({lm_tag})",
                f"{lm['val_loss_pentary']:.3f} nats/char pentary validation loss, {lm['train_seconds']:.0f} s",
                "nanoGPT's float model: 1.47 nats/char on Shakespeare in about 3 minutes on an A100",
                None,
                "a real run (no ratio target)",
                command + " --lm-only --lm-steps " + str(lm["steps"]),
            )
        )
    if "digits" not in res:
        return rows
    d = res["digits"]
    rows.append(
        Row(
            f"digits CNN with BatchNorm test accuracy, torch engine on {d['torch']['device']} "
            f"({d['torch']['precision']}; {d['epochs']} epochs; {tag})",
            f"{100 * d['torch']['test_acc_pentary']:.2f} % pentary ({100 * d['torch']['test_acc_float']:.2f} % "
            f"float), {d['torch']['seconds']:.1f} s",
            f"NumPy engine: {100 * d['numpy']['test_acc_pentary']:.2f} %, {d['numpy']['seconds']:.1f} s",
            None,
            "the NumPy engine's accuracy",
            command,
        )
    )
    return rows


def rows(quick: bool = False) -> list[Any]:
    cmd = "PY bench/bench_torch_engine.py" + (" --quick" if quick else "")
    from common import PY

    out = _rows_from(run("cpu", quick), False, cmd.replace("PY", PY))
    if RECORDED.exists():
        rec = json.loads(RECORDED.read_text(encoding="utf-8"))
        gpu_cmd = "python3 bench/bench_torch_engine.py --device cuda --json bench/torch_engine_gpu.json"
        out += _rows_from(rec, True, gpu_cmd)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--json", type=Path)
    ap.add_argument("--lm", action="store_true", help="also train the GPU-size character LM (minutes on a GPU)")
    ap.add_argument("--lm-only", action="store_true", help="only the character LM")
    ap.add_argument("--lm-steps", type=int, nargs="+", help="character LM runs of these step counts")
    args = ap.parse_args()
    if args.lm_only:
        res = {"environment": environment(args.device)}
    else:
        res = run(args.device, args.quick)
    if args.lm or args.lm_only:
        res["lm"] = [lm_run(args.device, n) for n in (args.lm_steps or [LM_CONFIG["steps"]])]
    if args.json:
        args.json.write_text(json.dumps(res, indent=1) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
