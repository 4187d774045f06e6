"""``pcc train --model transformer``: train a pentary character-level language model on a UTF-8 text.

The model (``pcc.trainer.charlm``) and its vocabulary are written as one model JSON file, the metrics (validation
loss in nats per character with the pentary weights and with the float shadow weights, the training time, the
machine's load, the per-step history) beside it.
"""

from __future__ import annotations

import hashlib
import math
import os
import time
from pathlib import Path
from typing import Any

import typer

from pcc import limits
from pcc.diagnostics import PccError

__all__ = ["train_charlm", "SHARED_OPTIONS"]

# the options of `pcc train` that mean the same for the transformer; every other one given is refused
SHARED_OPTIONS = {
    "batch_size": "--batch-size",
    "learning_rate": "--learning-rate",
    "seed": "--seed",
    "save_model": "--save-model",
    "output_dir": "--output-dir",
    "model_name": "--model-name",
    "threads": "--threads",
    "quiet": "--quiet",
    "qat": "--qat/--no-qat",
    "grid_pull": "--grid-pull",
    "weight_decay": "--weight-decay",
    "val_split": "--val-split",
}
LM_OPTIONS = (
    "model_kind",
    "text",
    "context",
    "n_layers",
    "heads",
    "dim",
    "steps",
    "time_budget",
    "float_twin",
    "float_warmup",
)


def _loadavg() -> list[float] | None:
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except OSError:
        return None


def _given(ctx: typer.Context, name: str) -> bool:
    source = ctx.get_parameter_source(name)  # typer may carry its own copy of click: compare by name
    return source is not None and source.name not in ("DEFAULT", "DEFAULT_MAP")


def train_charlm(
    ctx: typer.Context,
    *,
    text: Path | None,
    context: int | None,
    layers: int | None,
    heads: int | None,
    dim: int | None,
    steps: int | None,
    time_budget: float | None,
    float_twin: bool = False,
    float_warmup: float | None = None,
) -> None:
    from pcc.trainer import charlm
    from pcc.trainer.model_format import write_json
    from pcc.trainer.trainer import blas_threads

    p = ctx.params
    refused = [
        "--" + name.replace("_", "-")
        for name in p
        if name not in SHARED_OPTIONS and name not in LM_OPTIONS and _given(ctx, name)
    ]
    if refused:
        raise PccError(f"{', '.join(refused)} do(es) not apply to --model transformer")
    d = charlm.DEFAULTS
    context = d["context"] if context is None else context
    layers = d["layers"] if layers is None else layers
    heads = d["heads"] if heads is None else heads
    dim = d["dim"] if dim is None else dim
    if steps is None and time_budget is None:
        steps = d["steps"]
    float_warmup = d["float_warmup"] if float_warmup is None else float_warmup
    batch_size = p["batch_size"] if _given(ctx, "batch_size") else d["batch_size"]
    lr = p["learning_rate"] if _given(ctx, "learning_rate") else d["learning_rate"]
    val_split = d["val_fraction"] if p["val_split"] is None else p["val_split"]
    for flag, v in (("--context", context), ("--layers", layers), ("--heads", heads), ("--dim", dim)):
        if v < 1:
            raise PccError(f"{flag} must be at least 1, got {v}")
    if (steps is not None and steps < 1) or batch_size < 1:
        raise PccError("--steps and --batch-size must be at least 1")
    if not (math.isfinite(lr) and lr > 0):
        raise PccError(f"--learning-rate must be a finite number > 0, got {lr}")
    if time_budget is not None and not (math.isfinite(time_budget) and time_budget > 0):
        raise PccError(f"--time-budget must be a number of seconds > 0, got {time_budget}")
    if not (math.isfinite(float_warmup) and 0 <= float_warmup < 1):
        raise PccError(f"--float-warmup must be a fraction of the run in [0, 1), got {float_warmup}")
    if float_twin and not p["qat"]:
        raise PccError("--float-twin compares a QAT run with its float twin; it does not go with --no-qat")
    if not 0 < val_split < 1:
        raise PccError(f"--val-split must be in (0, 1) for a language model, got {val_split}")
    if p["threads"] < 0:
        raise PccError("--threads must be 0 (library default) or more")
    if not p["save_model"] and (_given(ctx, "output_dir") or _given(ctx, "model_name")):
        raise PccError("--output-dir and --model-name need --save-model")
    limits.check_elements(layers * 12 * dim * dim, 4, f"{layers} blocks of width {dim} (--layers/--dim)")
    limits.check_elements(batch_size * heads * context * context, 4, "the attention scores (--batch-size/--context)")
    echo = typer.echo

    if text is None:
        corpus, description = charlm.default_corpus()
    else:
        corpus = charlm.read_corpus(text)
        description = f"{text} ({len(corpus):,} characters)"
    n_val = int(len(corpus) * val_split)
    if len(corpus) - n_val < context + 2 or n_val < context + 1:
        where = f"{text}: " if text is not None else ""
        raise PccError(
            f"{where}the text has {len(corpus)} characters: too short for a context of {context} with "
            f"{val_split:.0%} held out (need {context + 2} for training and {context + 1} for validation)"
        )
    vocab = charlm.Vocabulary.from_text(corpus)
    limits.check_elements(len(vocab) * dim, 4, f"an embedding of {len(vocab)} characters x {dim}")
    ids = vocab.encode(corpus)
    train_ids, val_ids = ids[: len(ids) - n_val], ids[len(ids) - n_val :]
    echo(f"data: {description}; {len(vocab)} distinct characters; last {val_split:.0%} held out for validation")

    def make(qat: bool, log: Any) -> tuple[Any, Any]:
        model = charlm.char_transformer(len(vocab), context, layers, heads, dim, seed=p["seed"], vocabulary=vocab.chars)
        trainer = charlm.CharLMTrainer(
            model,
            learning_rate=lr,
            weight_decay=p["weight_decay"],
            grid_pull=p["grid_pull"],
            qat=qat,
            float_warmup=float_warmup if qat else 0.0,
            seed=p["seed"],
            log=log,
        )
        return model, trainer

    log = None if p["quiet"] else echo
    model, trainer = make(p["qat"], log)
    length = " or ".join(
        x for x in (f"{steps} steps" if steps else "", f"{time_budget:g} s" if time_budget else "") if x
    )
    kind = "float training + PTQ"
    if p["qat"]:
        kind = f"float for the first {float_warmup:.0%}, then QAT" if float_warmup else "QAT"
    echo(
        f"model: pentary transformer, {layers} blocks, {heads} heads, width {dim}, context {context} "
        f"({model.num_params():,} parameters); adam lr {lr} (warm-up, cosine), batch {batch_size}, {length}, "
        f"{kind}"
    )
    load_before = _loadavg()
    twin: dict[str, Any] = {}
    with blas_threads(p["threads"] or None):
        trainer.train(train_ids, val_ids, steps=steps, batch_size=batch_size, time_budget=time_budget)
        t0 = time.perf_counter()
        val_pent = trainer.evaluate(val_ids, quantized=True)
        val_float = trainer.evaluate(val_ids, quantized=False)
        eval_s = time.perf_counter() - t0
        done = len(trainer.history)
        if float_twin:
            echo(f"float twin: the same model, data order and schedule ({done} steps), no quantization")
            _, twin_trainer = make(False, None if log is None else (lambda msg: echo("twin " + msg)))
            twin_trainer.train(train_ids, val_ids, batch_size=batch_size, follow=trainer.history)
            twin = {
                "val_loss_float_twin": twin_trainer.evaluate(val_ids, quantized=False),
                "float_twin_train_seconds": round(twin_trainer.train_time, 2),
            }
            twin["twin_gap"] = val_pent - twin["val_loss_float_twin"]
    hist = model.pent_histogram()["total"]
    total = max(sum(hist), 1)
    echo("")
    echo(f"done: {done} steps in {trainer.train_time:.1f}s ({trainer.cpu_time:.1f}s of CPU; load average {_loadavg()})")
    echo(f"validation loss  pentary {val_pent:.4f} nats/char   float shadow {val_float:.4f} nats/char")
    if twin:
        echo(
            f"float twin       {twin['val_loss_float_twin']:.4f} nats/char   "
            f"pentary - float twin {twin['twin_gap']:+.4f} nats/char"
        )
    levels = zip(range(-2, 3), hist, strict=True)
    echo("weights per pent level  " + "  ".join(f"{lv:+d}: {100 * c / total:.1f}%" for lv, c in levels))
    if not p["save_model"]:
        return
    from pcc.trainer.cli import _unique_name

    output_dir = p["output_dir"] or Path("trained_models")
    name = p["model_name"] or _unique_name(output_dir, "charlm", ".json")
    output_dir.mkdir(parents=True, exist_ok=True)
    model_path = output_dir / f"{name}.json"
    metrics_path = output_dir / f"{name}.metrics.json"
    model.save(model_path)
    metrics: dict[str, Any] = {
        "val_loss_pentary": val_pent,
        "val_loss_float": val_float,
        **twin,
        "units": "nats per character",
        "steps": done,
        "train_seconds": round(trainer.train_time, 2),
        "train_cpu_seconds": round(trainer.cpu_time, 2),
        "eval_seconds": round(eval_s, 2),
        "load_average_before": load_before,
        "load_average_after": _loadavg(),
        "parameters": model.num_params(),
        "pent_histogram": model.pent_histogram(),
    }
    write_json(
        metrics_path,
        {
            "model": str(model_path),
            "model_sha256": hashlib.sha256(model_path.read_bytes()).hexdigest(),
            "data": description,
            "config": {
                "model": "transformer",
                "context": context,
                "layers": layers,
                "heads": heads,
                "dim": dim,
                "vocabulary_size": len(vocab),
                "steps": steps,
                "time_budget": time_budget,
                "float_warmup": float_warmup,
                "float_twin": float_twin,
                "threads": p["threads"],
                "batch_size": batch_size,
                "learning_rate": lr,
                "warmup": trainer.warmup,
                "weight_decay": p["weight_decay"],
                "qat": p["qat"],
                "grid_pull": p["grid_pull"],
                "seed": p["seed"],
                "val_split": val_split,
                "train_characters": int(len(train_ids)),
                "val_characters": int(len(val_ids)),
            },
            "metrics": metrics,
            "history": trainer.history,
        },
        what="metrics",
    )
    echo(f"saved {model_path} and {metrics_path}")
