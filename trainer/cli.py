"""``pcc train``, ``pcc convert`` and ``pcc quantize``: the trainer's commands.

``pcc train`` takes every flag of the seed's ``train_pentary_nn.py``; ``--hidden-dims`` and ``--modalities``
take several space-separated values after one flag (``--hidden-dims 64 32``), which click options cannot do by
themselves: :class:`_SpaceSeparatedCommand` rewrites them to repeated options before click parses.
"""

from __future__ import annotations

import io
import math
import time
from pathlib import Path
from typing import Any

import numpy as np
import typer
from typer.core import TyperCommand

from pcc import limits
from pcc.diagnostics import PccError, atomic_write, refuse_overwrite
from pcc.trainer.progress import Progress, progress_wanted

MULTI_VALUE_OPTIONS = ("--hidden-dims", "--modalities")


def expand_multi_value_options(args: list[str], flags: tuple[str, ...] = MULTI_VALUE_OPTIONS) -> list[str]:
    """``["--hidden-dims", "64", "32"]`` -> ``["--hidden-dims", "64", "--hidden-dims", "32"]``: the values that
    follow one of ``flags`` up to the next option become repeated options."""
    out: list[str] = []
    current: str | None = None
    seen_value = False
    for n, tok in enumerate(args):
        if tok == "--":
            out.extend(args[n:])
            return out
        if current is not None and not tok.startswith("-"):
            if seen_value:
                out.append(current)
            out.append(tok)
            seen_value = True
            continue
        current, seen_value = None, False
        out.append(tok)
        if tok in flags:
            current = tok
        elif tok.startswith("--") and "=" in tok and tok.split("=", 1)[0] in flags:
            current, seen_value = tok.split("=", 1)[0], True
    return out


class SpaceSeparatedCommand(TyperCommand):
    """A command whose list options take space-separated values after one flag, as in argparse ``nargs='+'``."""

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        return super().parse_args(ctx, expand_multi_value_options(list(args)))


def _int_list(values: list[str] | None, flag: str) -> list[int] | None:
    if not values:
        return None
    out: list[int] = []
    for v in values:
        for part in v.split(","):
            part = part.strip()
            if not part:
                continue
            try:
                n = int(part)
            except ValueError:
                raise PccError(f"{flag} takes whole numbers, got {part!r}") from None
            if n < 1:
                raise PccError(f"{flag} takes positive numbers, got {n}")
            out.append(n)
    return out


def _word_list(values: list[str] | None) -> list[str] | None:
    if not values:
        return None
    return [p.strip() for v in values for p in v.split(",") if p.strip()]


def _choice(value: str, choices: tuple[str, ...], flag: str) -> str:
    v = value.strip().lower().replace("-", "_")
    if v not in choices:
        raise PccError(f"{flag} must be one of {', '.join(choices)}, got {value!r}")
    return v


def _preprocessing(
    vocab_size: int | None,
    max_length: int | None,
    image_size: int | None,
    layout: str,
    n_mels: int | None,
    sample_rate: int | None,
) -> dict[str, Any]:
    """The processor settings given on the command line: ``{"processors": {"text": {...}, ...}, "flags": [...]}``
    (``flags``: the preprocessing flags that were given, so that they can be refused where nothing uses them)."""
    procs: dict[str, dict[str, Any]] = {"text": {}, "image": {}, "audio": {}}
    flags: list[str] = []
    for flag, value, modality, key in (
        ("--vocab-size", vocab_size, "text", "vocab_size"),
        ("--max-length", max_length, "text", "max_length"),
        ("--image-size", image_size, "image", "size"),
        ("--n-mels", n_mels, "audio", "n_mels"),
        ("--sample-rate", sample_rate, "audio", "input_rate"),
    ):
        if value is None:
            continue
        least = 3 if flag == "--vocab-size" else 1
        if value < least:
            raise PccError(f"{flag} must be at least {least}, got {value}")
        procs[modality][key] = int(value)
        flags.append(flag)
    if layout != "auto":
        procs["image"]["layout"] = layout
        flags.append("--image-layout")
    return {"processors": procs, "flags": flags}


def _check_flags(
    *,
    multimodal: bool,
    data_dir: Path | None,
    dataset: str | None,
    given: dict[str, bool],
    writes: bool,
    val_split: float | None,
    save_best: bool | None,
    patience: int,
) -> None:
    """Refuse flags that the other flags make meaningless (each with a message saying what to do)."""
    if not multimodal and data_dir is None:
        source = "--dataset digits" if dataset is not None else "synthetic feature vectors"
        for flag in ("--modalities", "--fusion-method"):
            if given.get(flag):
                raise PccError(
                    f"{flag} has no effect without --multimodal or --data-dir (the data are {source})",
                    notes=["add --multimodal for synthetic text/image/audio data, or --data-dir DIR"],
                )
        for flag in (
            "--vocab-size",
            "--max-length",
            "--image-size",
            "--image-layout",
            "--n-mels",
            "--sample-rate",
            "--text-embedding",
        ):
            if given.get(flag):
                raise PccError(f"{flag} sets up text/image/audio preprocessing, but the data are {source}")
    if multimodal and data_dir is None:
        for flag in ("--sample-rate", "--image-layout"):
            if given.get(flag):
                raise PccError(
                    f"{flag} describes the files of a --data-dir; the synthetic data are 16 kHz audio and HWC images"
                )
    if dataset is not None and given.get("--modalities"):
        raise PccError("--dataset digits has no modalities; drop --modalities")
    if not writes:
        for flag in ("--output-dir", "--model-name"):
            if given.get(flag):
                raise PccError(
                    f"{flag} is given but nothing is written: add --save-model (the model and its metrics) "
                    "or --plot (the training curves)"
                )
    if val_split is not None:
        if dataset is not None:
            raise PccError("--dataset digits comes with its fixed 80/20 split; --val-split does not apply")
        if not 0 <= val_split < 1:
            raise PccError(f"--val-split must be in [0, 1), got {val_split}")
    no_val = val_split == 0
    if patience < 0:
        raise PccError(f"--patience must be 0 (off) or more, got {patience}")
    if no_val and (save_best or patience):
        flag = "--save-best" if save_best else "--patience"
        raise PccError(f"{flag} needs a validation set, but --val-split is 0")


def _unique_name(output_dir: Path, kind: str, suffix: str) -> str:
    """``pentary_<kind>_<date>_<time>``, with ``_2``, ``_3``, ... when a file of that name exists; the first
    file (``<name><suffix>``) is created empty at once (``O_EXCL``), so that two runs never pick one name."""
    import os

    stem = f"pentary_{kind}_{time.strftime('%Y%m%d_%H%M%S')}"
    output_dir.mkdir(parents=True, exist_ok=True)
    for n in range(1, 10_000):
        name = stem if n == 1 else f"{stem}_{n}"
        try:
            fd = os.open(output_dir / f"{name}{suffix}", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        except FileExistsError:
            continue
        os.close(fd)
        return name
    raise PccError(f"no free model name {stem}_N in {output_dir}")


def _json_args(text: str | None, module: str | None) -> dict[str, Any] | list[Any] | None:
    """``--module-args``: a JSON object (keyword arguments) or list (positional ones)."""
    if text is None:
        return None
    if module is None:
        raise PccError("--module-args needs --module")
    import json

    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise PccError(f"--module-args is not valid JSON: {exc.msg} at column {exc.colno}") from None
    if not isinstance(value, dict | list):
        raise PccError("--module-args takes a JSON object (keyword arguments) or a list (positional arguments)")
    return value


def _plot(history: list[dict[str, Any]], path: Path, title: str) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise PccError("--plot needs matplotlib (pip install matplotlib)") from None
    epochs = [r["epoch"] for r in history]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4))
    ax1.plot(epochs, [r["train_loss"] for r in history], label="train")
    if history and "val_loss" in history[0]:
        ax1.plot(epochs, [r["val_loss"] for r in history], label="validation (pentary)")
    ax1.set_xlabel("epoch")
    ax1.set_ylabel("loss")
    ax1.legend()
    ax2.plot(epochs, [100 * r["train_acc"] for r in history], label="train (pentary forward)")
    if history and "val_acc" in history[0]:
        ax2.plot(epochs, [100 * r["val_acc"] for r in history], label="validation, pentary")
        ax2.plot(epochs, [100 * r["val_acc_float"] for r in history], "--", label="validation, float")
    ax2.set_xlabel("epoch")
    ax2.set_ylabel("accuracy (%)")
    ax2.legend()
    fig.suptitle(title)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    plt.close(fig)
    atomic_write(path, buf.getvalue())


def _engine_options(
    engine: str, checkpoint_every: int, resume: Path | None, compile_step: bool | None = None, graph: bool | None = None
) -> Any:
    """The torch engine module for ``--engine torch`` (None for numpy); the torch-only flags are refused with
    the numpy engine."""
    name = _choice(engine, ("numpy", "torch"), "--engine")
    if name == "numpy":
        if checkpoint_every or resume is not None or compile_step is not None or graph is not None:
            raise PccError("--checkpoint-every, --resume, --[no-]compile and --[no-]cuda-graph need --engine torch")
        return None
    if checkpoint_every < 0:
        raise PccError("--checkpoint-every takes a number of epochs (0: never)")
    from pcc.trainer import torch_engine

    torch_engine.require_torch()
    return torch_engine


def train(
    ctx: typer.Context,
    model_kind: str = typer.Option(
        "mlp", "--model", help="mlp (the seed's network; also CNNs via --dataset) or transformer (character LM)."
    ),
    text: Path | None = typer.Option(
        None, "--text", help="Transformer: UTF-8 text to train on [CPython's pydoc_data/topics.py text]."
    ),
    context: int | None = typer.Option(None, "--context", help="Transformer: context length in characters [64]."),
    n_layers: int | None = typer.Option(None, "--layers", help="Transformer: number of blocks [4]."),
    heads: int | None = typer.Option(None, "--heads", help="Transformer: attention heads [4]."),
    dim: int | None = typer.Option(None, "--dim", help="Transformer: model width [128]."),
    steps: int | None = typer.Option(None, "--steps", help="Transformer: training steps [2200]."),
    time_budget: float | None = typer.Option(
        None,
        "--time-budget",
        help="Transformer: train for this many seconds of wall time; the schedule follows the clock (with --steps: "
        "whichever ends first).",
    ),
    float_twin: bool = typer.Option(
        False, "--float-twin", help="Transformer: also train the float twin (same data, schedule) and report the gap."
    ),
    float_warmup: float | None = typer.Option(
        None, "--float-warmup", help="Transformer: fraction of the run trained in float before QAT starts [0]."
    ),
    input_dim: int | None = typer.Option(
        None, "--input-dim", help="Input dimension (non-multimodal synthetic data; default 128)."
    ),
    output_dim: int = typer.Option(10, "--output-dim", help="Number of output classes (one-hot width)."),
    hidden_dims: list[str] | None = typer.Option(
        None, "--hidden-dims", metavar="N [N ...]", help="Hidden layer widths, space-separated [64 32]."
    ),
    epochs: int = typer.Option(20, "--epochs", help="Number of training epochs."),
    batch_size: int = typer.Option(32, "--batch-size", help="Batch size."),
    learning_rate: float = typer.Option(0.01, "--learning-rate", help="Peak learning rate."),
    loss: str = typer.Option("cross_entropy", "--loss", help="Loss function: cross_entropy or mse."),
    multimodal: bool = typer.Option(False, "--multimodal", help="Enable multimodal processing."),
    modalities: list[str] | None = typer.Option(
        None, "--modalities", metavar="M [M ...]", help="Modalities: text image audio (space-separated)."
    ),
    fusion_method: str | None = typer.Option(
        None, "--fusion-method", help="Fusion: concat (default), add, multiply or attention."
    ),
    data_dir: Path | None = typer.Option(None, "--data-dir", help="Directory with labels.npy and data files."),
    n_samples: int = typer.Option(1000, "--n-samples", help="Number of samples of synthetic data."),
    output_dir: Path | None = typer.Option(None, "--output-dir", help="Where models are saved [trained_models]."),
    model_name: str | None = typer.Option(None, "--model-name", help="Model name (default: generated)."),
    save_model: bool = typer.Option(False, "--save-model", help="Save the model JSON and its metrics."),
    optimizer: str = typer.Option("adam", "--optimizer", help="adam or sgd (momentum 0.9)."),
    seed: int = typer.Option(0, "--seed", help="Seed for initialisation, shuffling and synthetic data."),
    dataset: str | None = typer.Option(
        None, "--dataset", help="Built-in dataset: digits (scikit-learn's 8x8 digits, 80/20 split)."
    ),
    plot: bool = typer.Option(False, "--plot", help="Write training curves as <model>.png."),
    schedule: str = typer.Option("cosine", "--schedule", help="Learning-rate schedule: cosine or constant."),
    weight_decay: float = typer.Option(0.0, "--weight-decay", help="L2 weight decay (weights only)."),
    qat: bool = typer.Option(True, "--qat/--no-qat", help="Quantization-aware training (else float + PTQ)."),
    grid_pull: float = typer.Option(
        0.01, "--grid-pull", help="End-of-training pull of float weights onto the pentary grid (0: off)."
    ),
    threads: int = typer.Option(1, "--threads", help="BLAS threads while training (0: the BLAS library's own choice)."),
    val_split: float | None = typer.Option(
        None, "--val-split", help="Fraction held out for validation [0.2]; 0: none."
    ),
    save_best: bool | None = typer.Option(
        None, "--save-best/--no-save-best", help="End with the best validation epoch [on with validation]."
    ),
    patience: int = typer.Option(0, "--patience", help="Stop after N epochs without a better validation."),
    per_tensor: bool = typer.Option(False, "--per-tensor", help="One weight scale per tensor (seed format)."),
    quiet: bool = typer.Option(False, "--quiet", help="No progress bars."),
    vocab_size: int | None = typer.Option(None, "--vocab-size", help="Text vocabulary size [1000]."),
    max_length: int | None = typer.Option(None, "--max-length", help="Text tokens kept per sample [32]."),
    image_size: int | None = typer.Option(None, "--image-size", help="Images resized to N x N [16]."),
    image_layout: str = typer.Option("auto", "--image-layout", help="images.npy layout: auto, hwc or chw."),
    n_mels: int | None = typer.Option(None, "--n-mels", help="Mel bands of the audio features [40]."),
    sample_rate: int | None = typer.Option(
        None, "--sample-rate", help="Sample rate of audio.npy in Hz [16000]; others are resampled to 16 kHz."
    ),
    text_embedding: str = typer.Option(
        "auto",
        "--text-embedding",
        help="learned (trained with the network), fixed, or auto (learned; fixed with --engine torch).",
    ),
    engine: str = typer.Option("numpy", "--engine", help="Training engine: numpy (default) or torch."),
    device: str = typer.Option("auto", "--device", help="Torch engine: auto, cpu, cuda or cuda:N."),
    precision: str = typer.Option(
        "auto", "--precision", help="Torch engine: auto (bf16 autocast on CUDA, else fp32), fp32 or bf16."
    ),
    checkpoint_every: int = typer.Option(
        0, "--checkpoint-every", help="Torch engine: write <model>.ckpt.npz every K epochs (0: never)."
    ),
    resume: Path | None = typer.Option(None, "--resume", help="Torch engine: continue from this checkpoint."),
    compile_step: bool | None = typer.Option(
        None,
        "--compile/--no-compile",
        help=(
            "Torch engine: fuse each step's quantization with torch.compile (default: on CUDA for models of "
            "1 M weights or more; 12-15 s of compiling at the start)."
        ),
    ),
    cuda_graph: bool | None = typer.Option(
        None,
        "--cuda-graph/--no-cuda-graph",
        help="Torch engine: replay each training step as one CUDA graph (default: on CUDA, one process, no dropout).",
    ),
) -> None:
    kind = _choice(model_kind, ("mlp", "transformer"), "--model")
    lm_flags = {
        "--text": text,
        "--context": context,
        "--layers": n_layers,
        "--heads": heads,
        "--dim": dim,
        "--steps": steps,
        "--time-budget": time_budget,
        "--float-warmup": float_warmup,
    }
    if kind == "transformer":
        from pcc.trainer.charlm_cli import train_charlm

        train_charlm(ctx, float_twin=float_twin, **{k.lstrip("-").replace("-", "_"): v for k, v in lm_flags.items()})
        return
    given_lm = [flag for flag, v in lm_flags.items() if v is not None] + (["--float-twin"] if float_twin else [])
    if given_lm:
        raise PccError(f"{', '.join(given_lm)} need --model transformer")
    from pcc.trainer import data as data_mod
    from pcc.trainer.model import PentaryModel
    from pcc.trainer.multimodal import FUSION_METHODS, FusionTuner, MultimodalFusion, TextTuner
    from pcc.trainer.optim import OPTIMIZERS, SCHEDULES
    from pcc.trainer.trainer import LOSSES, PentaryTrainer, blas_threads

    hidden = _int_list(hidden_dims, "--hidden-dims") or [64, 32]
    mods = _word_list(modalities) or ["text", "image", "audio"]
    loss_name = _choice(loss, tuple(LOSSES), "--loss")
    fusion_name = _choice(fusion_method or "concat", FUSION_METHODS, "--fusion-method")
    opt_name = _choice(optimizer, OPTIMIZERS, "--optimizer")
    sched_name = _choice(schedule, SCHEDULES, "--schedule")
    layout = _choice(image_layout, data_mod.IMAGE_LAYOUTS, "--image-layout")
    if threads < 0:
        raise PccError("--threads must be 0 (library default) or more")
    if epochs < 1 or batch_size < 1 or learning_rate <= 0 or output_dim < 1:
        raise PccError("--epochs, --batch-size and --output-dim must be >= 1 and --learning-rate > 0")
    for flag, value in (
        ("--learning-rate", learning_rate),
        ("--weight-decay", weight_decay),
        ("--grid-pull", grid_pull),
    ):
        if not math.isfinite(value) or value < 0:
            raise PccError(f"{flag} must be a finite number >= 0, got {value}")
    # sizes that decide allocations: checked against pcc.limits before anything is built
    dims = [input_dim or 128, *hidden, output_dim]
    for a, b in zip(dims, dims[1:], strict=False):
        limits.check_elements(a * b, 4, f"a {a}x{b} layer (--input-dim/--hidden-dims/--output-dim)")
    limits.check_elements(max(n_samples, 0) * (input_dim or 128), 8, f"--n-samples {n_samples} of synthetic data")
    for m in mods:
        if m not in data_mod.MODALITY_FILES:
            raise PccError(f"unknown modality {m!r} (expected text, image, audio)")
    if dataset is not None and data_dir is not None:
        raise PccError("give --dataset or --data-dir, not both")
    preprocessing = _preprocessing(vocab_size, max_length, image_size, layout, n_mels, sample_rate)
    embedding = _choice(text_embedding, ("auto", "learned", "fixed"), "--text-embedding")
    if embedding != "auto":
        preprocessing["flags"].append("--text-embedding")
    preprocessing["processors"]["text"]["learned"] = embedding == "learned" or (
        embedding == "auto" and engine.strip().lower() != "torch"
    )
    _check_flags(
        multimodal=multimodal,
        data_dir=data_dir,
        dataset=dataset,
        given={
            "--modalities": modalities is not None,
            "--fusion-method": fusion_method is not None,
            "--output-dir": output_dir is not None,
            "--model-name": model_name is not None,
            **{flag: True for flag in preprocessing["flags"]},
        },
        writes=save_model or plot or checkpoint_every > 0,
        val_split=val_split,
        save_best=save_best,
        patience=patience,
    )
    output_dir = output_dir or Path("trained_models")
    split_fraction = 0.2 if val_split is None else val_split
    echo = typer.echo
    show_progress = progress_wanted(quiet)
    torch_run = _engine_options(engine, checkpoint_every, resume, compile_step, cuda_graph)
    if torch_run is not None and torch_run.process_rank() != 0:
        echo, show_progress = torch_run.rank_zero(echo), False

    # --- data
    synthetic = False
    if dataset is not None:
        if _choice(dataset, ("digits",), "--dataset") and multimodal:
            raise PccError("--dataset digits is not multimodal; drop --multimodal")
        train_ds, val_ds = data_mod.load_digits_dataset()
    elif data_dir is not None:
        chosen = mods if multimodal or modalities is not None else None
        full = data_mod.load_data_dir(data_dir, chosen, layout)
        train_ds, val_ds = data_mod.split(full, split_fraction, seed)
    else:
        synthetic = True
        if multimodal:
            full = data_mod.make_multimodal_dataset(n_samples, mods, output_dim, seed)
        else:
            full = data_mod.make_dummy_dataset(n_samples, input_dim or 128, output_dim, seed)
        train_ds, val_ds = data_mod.split(full, split_fraction, seed)
        echo("note: no --data-dir or --dataset given: training on synthetic data")
    echo(f"data: {train_ds.description}; {len(train_ds)} training / {len(val_ds)} validation samples")

    fusion = None
    if isinstance(train_ds.x, dict):
        present = list(train_ds.x)
        # attention fusion: learned query/key/value matrices with the NumPy engine (the torch engine keeps the
        # parameter-free attention)
        learned_attention = fusion_name == "attention" and torch_run is None
        fusion = MultimodalFusion(
            present, fusion_method=fusion_name, learned_attention=learned_attention, **preprocessing["processors"]
        )
        t0 = time.perf_counter()
        bar = Progress(len(train_ds) + len(val_ds), "features", show_progress)
        with bar, blas_threads(threads or None):
            x_train, ctx_train = fusion.transform_with_context(train_ds.x, fit=True, progress=bar)
            x_val, ctx_val = (
                fusion.transform_with_context(val_ds.x, progress=bar) if len(val_ds) else (x_train[:0], None)
            )
        echo(
            f"multimodal: {', '.join(present)} fused by {fusion_name} into {x_train.shape[1]} features "
            f"({time.perf_counter() - t0:.2f}s)"
        )
    else:
        if fusion_method is not None or preprocessing["flags"]:
            given = "--fusion-method" if fusion_method is not None else preprocessing["flags"][0]
            raise PccError(
                f"{given} applies to text, image and audio data, but the data here are feature vectors "
                f"({train_ds.description})",
                notes=["drop the flag, or point --data-dir at a directory without features.npy"],
            )
        x_train, x_val = np.asarray(train_ds.x, np.float32), np.asarray(val_ds.x, np.float32)
        x_train = x_train.reshape(len(x_train), -1)
        x_val = x_val.reshape(len(x_val), x_train.shape[1])
    features = int(x_train.shape[1])
    if input_dim is not None and input_dim != features and not (synthetic and not multimodal):
        raise PccError(f"--input-dim {input_dim} does not match the data's {features} features")
    top = int(max(train_ds.y.max(), val_ds.y.max() if len(val_ds) else 0))
    if top >= output_dim:
        raise PccError(
            f"the data has label {top}, but --output-dim {output_dim} allows only 0..{output_dim - 1}",
            notes=[f"use --output-dim {top + 1} or more"],
        )

    # --- model and training
    model = PentaryModel(features, output_dim, hidden, seed=seed, per_channel=not per_tensor)
    tuner = None
    if fusion is not None and fusion.learned_attention:
        ids = None
        if fusion.learned_text:
            tp = fusion.processors["text"]
            ids = {"train": tp.encode(train_ds.x["text"]), "val": tp.encode(val_ds.x["text"])}
        tuner = FusionTuner(fusion, {"train": ctx_train, "val": ctx_val}, opt_name, ids=ids)
    elif fusion is not None and fusion.learned_text:
        tp = fusion.processors["text"]
        ids = {"train": tp.encode(train_ds.x["text"]), "val": tp.encode(val_ds.x["text"])}
        tuner = TextTuner(fusion, ids, opt_name, contexts={"train": ctx_train, "val": ctx_val})
    trainer_cls: Any = PentaryTrainer
    engine_kwargs: dict[str, Any] = {}
    if torch_run is not None:
        trainer_cls = torch_run.TorchTrainer
        kind = "multimodal" if fusion is not None else "mlp"
        ckpt = model_name or (_unique_name(output_dir, kind, ".ckpt.npz") if checkpoint_every else kind)
        engine_kwargs = {
            "device": device,
            "precision": precision,
            "checkpoint_every": checkpoint_every,
            "checkpoint_path": output_dir / f"{ckpt}.ckpt.npz",
            "compile": "auto" if compile_step is None else compile_step,
            "cuda_graph": "auto" if cuda_graph is None else cuda_graph,
        }
    trainer = trainer_cls(
        model,
        loss_name,
        learning_rate,
        use_multimodal=fusion is not None,
        modalities=list(fusion.modalities) if fusion else None,
        optimizer=opt_name,
        weight_decay=weight_decay,
        schedule=sched_name,
        seed=seed,
        qat=qat,
        grid_pull=grid_pull,
        fusion=fusion,
        log=echo,
        threads=threads or None,
        progress=show_progress,
        **engine_kwargs,
    )
    try:  # under torchrun: every rank ends the process group here (after a barrier unless something failed)
        trainer.text_tuner = tuner
        if torch_run is not None:
            info = trainer.engine_info()
            echo(f"engine: torch on {info['device']}, {info['precision']}, {info['world_size']} process(es)")
        if resume is not None:
            trainer.load_checkpoint(resume)
            echo(f"resuming from {resume} after epoch {len(trainer.history)}")
        dims = " -> ".join(map(str, [features, *hidden, output_dim]))
        echo(
            f"model: pentary MLP {dims} ({model.num_params()} parameters); {opt_name} lr {learning_rate} "
            f"({sched_name}), batch {batch_size}, {epochs} epochs, {'QAT' if qat else 'float training + PTQ'}"
        )
        has_val = len(val_ds) > 0
        keep_best = has_val if save_best is None else save_best
        trainer.train(
            (x_train, train_ds.y),
            (x_val, val_ds.y) if has_val else None,
            epochs,
            batch_size,
            keep_best=keep_best,
            patience=patience or None,
        )
    except BaseException:
        if torch_run is not None:
            trainer.close(wait=False)
        raise
    if torch_run is not None:
        trainer.close()

    # --- summary
    m = trainer.metrics
    echo("")
    echo(f"done in {trainer.train_time:.2f}s")
    echo(f"{'':12s}{'loss':>10s}{'accuracy':>10s}")
    for split_name in ("train", "val"):
        for mode in ("pentary", "float"):
            key = f"{split_name}_loss_{mode}"
            if key in m:
                label = f"{split_name} {mode}"
                echo(f"{label:12s}{m[key]:10.4f}{100 * m[f'{split_name}_acc_{mode}']:9.2f}%")
    hist = np.asarray(m["pent_histogram"]["total"], np.float64)
    frac = "  ".join(f"{lv:+d}: {100 * c / max(hist.sum(), 1):.1f}%" for lv, c in zip(range(-2, 3), hist, strict=True))
    echo(f"weights per pent level  {frac}")

    if m.get("kept_best") and m["best_epoch"] != len(trainer.history):
        echo(f"the model is epoch {m['best_epoch']}'s, the best on validation (--no-save-best: the last)")
    kind = "multimodal" if fusion is not None else "mlp"
    if not (save_model or plot) or (torch_run is not None and not trainer.is_main_process):
        return  # (rank 0 of a torchrun job writes the files)
    name = model_name or _unique_name(output_dir, kind, ".json" if save_model else ".png")
    if save_model:
        model_path = output_dir / f"{name}.json"
        metrics_path = output_dir / f"{name}.metrics.json"
        trainer.save_model(model_path)
        import hashlib

        from pcc.trainer.model_format import write_json

        write_json(
            metrics_path,
            {
                "model": str(model_path),
                # the metrics name their model by content: a model beside another run's metrics is detectable
                "model_sha256": hashlib.sha256(model_path.read_bytes()).hexdigest(),
                "data": train_ds.description,
                "config": {
                    "input_dim": features,
                    "output_dim": output_dim,
                    "hidden_dims": hidden,
                    "epochs": epochs,
                    "batch_size": batch_size,
                    "learning_rate": learning_rate,
                    "loss": loss_name,
                    "optimizer": opt_name,
                    "schedule": sched_name,
                    "weight_decay": weight_decay,
                    "qat": qat,
                    "grid_pull": grid_pull,
                    "seed": seed,
                    "multimodal": fusion is not None,
                    "modalities": list(fusion.modalities) if fusion else [],
                    "fusion_method": fusion_name if fusion else None,
                    "val_split": split_fraction if dataset is None else 0.2,
                    "save_best": keep_best,
                    "patience": patience,
                    "granularity": "per_tensor" if per_tensor else "per_channel",
                },
                "metrics": m,
                "history": trainer.history,
            },
            what="metrics",
        )
        echo(f"saved {model_path} and {metrics_path}")
    if plot:
        png = output_dir / f"{name}.png"
        _plot(trainer.history, png, f"{name}: {dims}")
        echo(f"saved {png}")


def convert(
    model_file: Path = typer.Argument(..., metavar="MODEL", help="The model to convert."),
    output: Path = typer.Option(Path("pentary_model.json"), "-o", "--output", help="Output JSON path."),
    method: str = typer.Option("per_channel", "--method", help="Scale granularity: per_channel or per_tensor."),
    input_shape: str | None = typer.Option(
        None, "--input-shape", help="Input shape for .pt/.pth conv models, e.g. 1,3,32,32."
    ),
    activations: str | None = typer.Option(
        None, "--activations", help="State dict of Linear layers: the activation after each, e.g. relu,none."
    ),
    module: str | None = typer.Option(
        None, "--module", help="Build the architecture from your code: pkg.mod:Class (or file.py:Class)."
    ),
    module_args: str | None = typer.Option(
        None, "--module-args", help="Constructor arguments of --module as JSON, e.g. '{\"hidden\": 64}'."
    ),
) -> None:
    from pcc.trainer.convert import convert_file

    refuse_overwrite(output, model_file)
    shape = _int_list([input_shape], "--input-shape") if input_shape else None
    ctor = _json_args(module_args, module)
    model = convert_file(
        model_file,
        output,
        shape,
        _choice(method, ("per_channel", "per_tensor"), "--method"),
        activations=_word_list([activations]) if activations else None,
        module=module,
        module_args=ctor,
    )
    kinds = ", ".join(layer.type for layer in model.layers)
    typer.echo(f"wrote {output}: input {list(model.input_shape)} -> {model.output_dim} outputs; layers: {kinds}")


def quantize(
    model_file: Path = typer.Argument(..., metavar="MODEL_JSON", help="Model JSON to quantize."),
    output: Path = typer.Option(Path("quantized.json"), "-o", "--output", help="Output JSON path."),
    method: str = typer.Option("per_channel", "--method", help="per_tensor or per_channel."),
    scale: str = typer.Option("mse", "--scale", help="Scale choice: mse (error-minimising) or max."),
) -> None:
    from pcc.trainer.model_format import read_json
    from pcc.trainer.quantizer import ModelQuantizer

    refuse_overwrite(output, model_file)
    q = ModelQuantizer(
        _choice(method, ("per_tensor", "per_channel"), "--method"), _choice(scale, ("mse", "max"), "--scale")
    )
    src = read_json(model_file)
    if not isinstance(src, dict):
        raise PccError(f"{model_file}: a model JSON file holds an object")
    if "layers" in src or src.get("format") == "pcc.pentary-model":
        # the model format: the checks `pcc compile` makes, before anything is re-quantized
        from pcc.frontends.native import load_dict

        load_dict(src, file=str(model_file))
    out = q.quantize_model_from_dict(src)
    q.save_quantized_model(out, output)
    st = q.compression_stats(out)
    typer.echo(
        f"wrote {output}: {st['weights']} weights, {100 * st['zero_fraction']:.1f}% zero pents, "
        f"{st['pentary_bytes'] / 1024:.1f} KiB packed vs {st['float32_bytes'] / 1024:.1f} KiB float32"
    )


train.command_class = SpaceSeparatedCommand  # type: ignore[attr-defined]  (lists after --hidden-dims etc.)
