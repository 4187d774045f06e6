"""``pcc demo``: the whole toolchain on scikit-learn's digits, in one command.

Stages (each prints one progress line with its time):

1. **data**: the bundled 8x8 digits (no download), inputs / 16, split 80/20 with ``random_state=0``
   (:func:`pcc.trainer.data.load_digits_dataset`);
2. **train**: a small pentary CNN (conv-BN-ReLU-pool twice, linear) with quantization-aware training
   (:class:`pcc.trainer.PentaryTrainer`), saved as ``model.json`` + ``model.metrics.json``;
3. **compile**: the driver's default pipeline to assembly (:func:`pcc.drivers.compile.compile_model`, ``--emit asm``),
   calibrated on training images, with an IR dump after every pass in ``ir/``;
4. **assemble**: ``model.pasm`` -> ``model.pbin``;
5. **simulate**: the whole test set on the simulator, from the binary (:func:`pcc.runtime.simulator.run_program`);
6. **profile**: cycles, energy, zero weights (``profile.json``) and a Chrome trace (``trace.json``).

It then prints the test accuracy three ways (the float shadow weights, the trainer's pentary forward, the
simulator), checks that the simulator predicts exactly what the trainer's pentary forward predicts, sample for
sample (a difference is reported in detail and makes the command fail), and prints the profile summary and the
model's size packed, as int8 and as float32.
"""

from __future__ import annotations

import contextlib
import io
import re
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import typer

from pcc.diagnostics import PccError, atomic_write

__all__ = ["DemoResult", "run_demo", "demo", "DEFAULT_EPOCHS", "QUICK_EPOCHS"]

DEFAULT_EPOCHS = 20  # the trainer's digits CNN protocol (docs/trainer.md, "Benchmarks")
QUICK_EPOCHS = 4  # already > 95 % on the test set
# Calibration images for the quantizer, from the training set.  The quantize pass uses at most `max-batches`
# batches (default 64 = 64 images for this batch-1 model); the demo raises it so that the activation ranges
# cover the whole training set: with 64 images a few test images saturate the output (logit differences up to
# 1.5 against the trainer), with all 1,437 the largest difference is ~0.01, for 1.3 s more compile time.
CALIBRATION_SAMPLES: int | None = None  # None: the whole training set
QUICK_CALIBRATION_SAMPLES = 256
STAGES = 6


@dataclass
class DemoResult:
    """What :func:`run_demo` measured (also written to ``model.metrics.json`` under ``"demo"``)."""

    out_dir: Path
    epochs: int
    n_train: int
    n_test: int
    acc_float: float
    acc_pentary: float
    acc_sim: float
    agree: int  # test samples where the simulator's class equals the trainer's pentary-forward class
    mismatches: list[dict[str, Any]] = field(default_factory=list)
    max_logit_diff: float = 0.0
    profile: dict[str, Any] = field(default_factory=dict)
    sizes: dict[str, Any] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)
    written: list[Path] = field(default_factory=list)

    @property
    def identical(self) -> bool:
        return self.agree == self.n_test

    def to_dict(self) -> dict[str, Any]:
        return {
            "epochs": self.epochs,
            "n_train": self.n_train,
            "n_test": self.n_test,
            "test_accuracy": {"float": self.acc_float, "pentary": self.acc_pentary, "simulator": self.acc_sim},
            "simulator_vs_trainer": {
                "agree": self.agree,
                "of": self.n_test,
                "max_logit_diff": self.max_logit_diff,
                "mismatches": self.mismatches,
            },
            "profile": self.profile,
            "sizes": self.sizes,
            "seconds": self.timings,
        }


def _digits_cnn(seed: int) -> Any:
    """The trainer's digits CNN (docs/trainer.md): conv 1->16, BN, ReLU, pool; conv 16->32, BN, ReLU, pool; linear."""
    from pcc.trainer.layers import (
        Flatten,
        PentaryBatchNorm,
        PentaryConv2D,
        PentaryLinear,
        PentaryMaxPool2D,
        PentaryReLU,
    )
    from pcc.trainer.model import PentaryModel

    return PentaryModel.sequential(
        [
            PentaryConv2D(1, 16, 3, padding=1),
            PentaryBatchNorm(16),
            PentaryReLU(),
            PentaryMaxPool2D(2),
            PentaryConv2D(16, 32, 3, padding=1),
            PentaryBatchNorm(32),
            PentaryReLU(),
            PentaryMaxPool2D(2),
            Flatten(),
            PentaryLinear(32 * 2 * 2, 10),
        ],
        input_shape=(1, 8, 8),
        seed=seed,
    )


def _size(nbytes: float) -> str:
    if nbytes < 1024:
        return f"{nbytes:,.0f} B"
    if nbytes < 1024 * 1024:
        return f"{nbytes / 1024:,.1f} KiB"
    return f"{nbytes / 1024 / 1024:,.1f} MiB"


def _pct(x: float) -> str:
    return f"{100 * x:6.2f} %"


class _Stages:
    """Progress lines: ``[k/6] name   what ... (seconds)``."""

    def __init__(self, echo: Callable[[str], None]) -> None:
        self.echo = echo
        self.k = 0
        self.t0 = 0.0
        self.timings: dict[str, float] = {}
        self.name = ""

    def start(self, name: str, what: str) -> None:
        self.k += 1
        self.name = name
        self.echo(f"[{self.k}/{STAGES}] {name:<9} {what}")
        self.t0 = time.perf_counter()

    def done(self, what: str) -> None:
        dt = time.perf_counter() - self.t0
        self.timings[self.name] = dt
        self.echo(f"      {'':<9} {what} ({dt:.2f} s)")


def _clear_dumps(ir_dir: Path) -> None:
    """Remove the IR dumps of an earlier run (``NNN-<pass>.pir`` / ``.npz`` only), so none are stale."""
    if ir_dir.is_dir():
        for p in ir_dir.iterdir():
            if p.is_file() and re.fullmatch(r"\d{3}-[\w.-]+\.(pir|npz)", p.name):
                p.unlink()


def run_demo(
    out_dir: str | Path = "pcc-demo",
    *,
    epochs: int | None = None,
    quick: bool = False,
    seed: int = 0,
    echo: Callable[[str], None] = print,
) -> DemoResult:
    """Train, compile, assemble, simulate and profile the digits CNN; write every artefact to ``out_dir``.

    Returns the measurements; the caller decides what a simulator/trainer mismatch means (the command fails).
    """
    from pcc.trainer.data import load_digits_dataset
    from pcc.trainer.model_format import write_json
    from pcc.trainer.trainer import PentaryTrainer

    t_all = time.perf_counter()
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise PccError(f"--out {out}: exists and is not a folder")
    n_epochs = epochs if epochs is not None else (QUICK_EPOCHS if quick else DEFAULT_EPOCHS)
    if n_epochs < 1:
        raise PccError(f"--epochs must be at least 1, got {n_epochs}")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise PccError(f"--out {out}: cannot create the folder ({exc.strerror or exc})") from None
    st = _Stages(echo)
    written: list[Path] = []
    echo(
        f"pcc demo: train, compile, assemble, simulate and profile a pentary CNN on scikit-learn's digits "
        f"-> {out}/{' (quick)' if quick else ''}"
    )

    # 1. data -------------------------------------------------------------------------------------------------
    st.start("data", "scikit-learn's 8x8 digits (bundled, no download)")
    train_ds, test_ds = load_digits_dataset()
    x_train = np.asarray(train_ds.x, np.float32).reshape(-1, 1, 8, 8)
    x_test = np.asarray(test_ds.x, np.float32).reshape(-1, 1, 8, 8)
    y_train, y_test = np.asarray(train_ds.y), np.asarray(test_ds.y)
    for name, arr in (("test_x.npy", x_test), ("test_y.npy", y_test)):
        buf = io.BytesIO()
        np.save(buf, arr, allow_pickle=False)
        atomic_write(out / name, buf.getvalue())
        written.append(out / name)
    st.done(f"{train_ds.description}: {len(x_train)} training / {len(x_test)} test images")

    # 2. train ------------------------------------------------------------------------------------------------
    model = _digits_cnn(seed)
    n_weights = sum(int(np.prod(layer.quantized()[0].shape)) for layer in model.weight_layers())
    st.start(
        "train",
        f"pentary CNN conv 1->16 3x3, BN, ReLU, maxpool 2, conv 16->32 3x3, BN, ReLU, maxpool 2, linear 128->10 "
        f"({n_weights:,} weights, {model.num_params():,} parameters); QAT, Adam lr 0.01 cosine, batch 32, "
        f"{n_epochs} epoch{'s' if n_epochs != 1 else ''}",
    )
    trainer = PentaryTrainer(model, "cross_entropy", 0.01, seed=seed, log=lambda line: echo("      " + line))
    trainer.train((x_train, y_train), (x_test, y_test), epochs=n_epochs, batch_size=32)
    model_path, metrics_path = out / "model.json", out / "model.metrics.json"
    trainer.save_model(model_path)
    written += [model_path, metrics_path]
    hist = np.asarray(trainer.metrics["pent_histogram"]["total"], np.float64)
    zero_static = float(hist[2] / max(hist.sum(), 1))
    st.done(f"trained in {trainer.train_time:.2f} s -> model.json; {100 * zero_static:.1f} % of the pents are 0")

    # 3. compile ----------------------------------------------------------------------------------------------
    from pcc.drivers.compile import compile_model
    from pcc.passes.pipeline import FLOAT_PASSES, PENT_PASSES

    n_cal = min(len(x_train), (QUICK_CALIBRATION_SAMPLES if quick else CALIBRATION_SAMPLES) or len(x_train))
    cal_path = out / "calibration.npz"
    buf = io.BytesIO()
    np.savez(buf, input=x_train[:n_cal])
    atomic_write(cal_path, buf.getvalue())
    written.append(cal_path)
    ir_dir = out / "ir"
    _clear_dumps(ir_dir)
    st.start("compile", f"model.json -> model.pasm (default pipeline, calibrated on {n_cal:,} training images)")
    err = io.StringIO()
    with warnings.catch_warnings(record=True) as caught, contextlib.redirect_stderr(err):
        warnings.simplefilter("always")
        paths = compile_model(
            model_path,
            emit="asm",
            output=out / "model.pasm",
            calibration=cal_path,
            dump_dir=ir_dir,
            passes=f"{FLOAT_PASSES},quantize{{max-batches={n_cal}}},{PENT_PASSES}",
        )
    for w in caught:
        echo(f"      warning: {w.message}")
    for line in err.getvalue().splitlines():
        echo("      " + line)
    written += list(paths)
    dumps = sorted(p for p in ir_dir.iterdir() if p.is_file())
    written += dumps
    st.done(f"-> {', '.join(p.name for p in paths)}; {len(dumps)} IR dumps in {ir_dir.name}/ (one per pass)")

    # 4. assemble ---------------------------------------------------------------------------------------------
    from pcc.backend import binary
    from pcc.backend.assembler import assemble_file

    st.start("assemble", "model.pasm -> model.pbin")
    pbin = out / "model.pbin"
    binary.write(assemble_file(out / "model.pasm"), pbin)
    program = binary.read(pbin)  # simulate what was written
    written.append(pbin)
    st.done(f"{len(program.instructions):,} instructions, {_size(pbin.stat().st_size)}")

    # 5. simulate ---------------------------------------------------------------------------------------------
    from pcc.runtime.simulator import Simulator, run_program

    if len(program.inputs) != 1 or len(program.outputs) != 1:
        raise PccError(
            f"{pbin}: expected one input and one output, the program declares {len(program.inputs)} and "
            f"{len(program.outputs)}"
        )
    in_name, out_name = program.inputs[0].name, program.outputs[0].name
    st.start("simulate", f"all {len(x_test)} test images through {pbin.name} on the simulator, one after another")
    sim = Simulator(program, trace=True)
    outputs = run_program(program, {in_name: x_test}, simulator=sim)
    logits_sim = np.asarray(outputs[out_name], np.float32).reshape(len(x_test), -1)
    buf = io.BytesIO()
    np.savez(buf, **outputs)
    atomic_write(out / "outputs.npz", buf.getvalue())
    written.append(out / "outputs.npz")
    st.done(f"{int(sim.instruction_counts().sum()):,} instructions executed -> outputs.npz")

    # 6. profile ----------------------------------------------------------------------------------------------
    from pcc.runtime.profile import Profile
    from pcc.runtime.trace import write_trace

    st.start("profile", "cycles, energy and zero weights per layer; Chrome trace")
    prof = Profile(sim)
    atomic_write(out / "profile.json", prof.to_json())
    n_events = write_trace(sim, str(out / "trace.json"))
    written += [out / "profile.json", out / "trace.json"]
    st.done(f"-> profile.json, trace.json ({n_events:,} events; open in https://ui.perfetto.dev)")

    # accuracy three ways, and the sample-for-sample check -----------------------------------------------------
    logits_pent = model.predict(x_test, quantized=True)
    pred_pent = np.argmax(logits_pent, axis=1)
    pred_sim = np.argmax(logits_sim, axis=1)
    pred_float = model.predict_classes(x_test, quantized=False)
    diff = np.abs(logits_sim.astype(np.float64) - logits_pent.astype(np.float64))
    max_diff = float(diff.max()) if diff.size else 0.0
    mismatches = []
    for i in np.flatnonzero(pred_sim != pred_pent).tolist():
        top2 = np.sort(logits_pent[i])[-2:]
        mismatches.append(
            {
                "sample": i,
                "label": int(y_test[i]),
                "trainer": int(pred_pent[i]),
                "simulator": int(pred_sim[i]),
                "trainer_margin": float(top2[1] - top2[0]),
                "max_logit_diff": float(diff[i].max()),
                "trainer_logits": [round(float(v), 5) for v in logits_pent[i]],
                "simulator_logits": [round(float(v), 5) for v in logits_sim[i]],
            }
        )

    t = prof.total
    runs = max(prof.runs, 1)
    bytes_packed = n_weights * 7 / 3 / 8  # the binary's density: three pents in 7 bits
    blob = out / "model.weights.bin"
    sizes = {
        "weights": n_weights,
        "packed_bytes": bytes_packed,
        "int8_bytes": n_weights,
        "float32_bytes": 4 * n_weights,
        "blob_bytes": blob.stat().st_size if blob.exists() else None,
        "pbin_bytes": pbin.stat().st_size,
        "zero_pent_share": zero_static,
    }
    profile_summary = {
        "runs": prof.runs,
        "cycles": t.cycles,
        "cycles_per_image": t.cycles / runs,
        "seconds_per_image": prof.seconds / runs,
        "energy_uj": t.energy_pj / 1e6,
        "energy_uj_per_image": t.energy_pj / 1e6 / runs,
        "energy_saved_uj": t.energy_saved_pj / 1e6,
        "macs": t.macs + t.xbar_macs,
        "zero_weight_share": t.zero_weight_share,
        "zero_macs": t.zero_macs,
    }
    result = DemoResult(
        out_dir=out,
        epochs=n_epochs,
        n_train=len(x_train),
        n_test=len(x_test),
        acc_float=float(np.mean(pred_float == y_test)),
        acc_pentary=float(np.mean(pred_pent == y_test)),
        acc_sim=float(np.mean(pred_sim == y_test)),
        agree=int(np.sum(pred_sim == pred_pent)),
        mismatches=mismatches,
        max_logit_diff=max_diff,
        profile=profile_summary,
        sizes=sizes,
        timings=st.timings,
    )

    echo("")
    echo(f"test accuracy on the {len(x_test)} held-out digits:")
    echo(f"  float shadow weights        {_pct(result.acc_float)}   (the float32 weights QAT updates)")
    echo(f"  trainer, pentary forward    {_pct(result.acc_pentary)}   (pents x per-channel scales, float activations)")
    echo(f"  simulator, model.pbin       {_pct(result.acc_sim)}   (the compiled program: integer 8-pent activations)")
    span = float(np.ptp(logits_pent)) if logits_pent.size else 0.0
    rel = f" ({100 * max_diff / span:.2f} % of the logit range)" if span > 0 else ""
    if result.identical:
        echo(
            f"simulator vs trainer pentary forward: {result.agree}/{result.n_test} predictions identical; "
            f"largest logit difference {max_diff:.4g}{rel}"
        )
        echo(
            "  (the logits differ by the rounding of the program's 8-pent activations, and more where a test "
            "image drives an activation past its calibrated range, which saturates)"
        )
    else:
        echo(
            f"MISMATCH: the simulator and the trainer's pentary forward disagree on "
            f"{result.n_test - result.agree} of {result.n_test} test images; largest logit difference "
            f"{max_diff:.4g}{rel}"
        )
        for m in mismatches[:10]:
            near = "a near tie" if m["trainer_margin"] <= 2 * m["max_logit_diff"] else "NOT a near tie"
            echo(
                f"  image {m['sample']}: label {m['label']}, trainer {m['trainer']}, simulator {m['simulator']}; "
                f"trainer's top-2 margin {m['trainer_margin']:.4g}, logit difference {m['max_logit_diff']:.4g} "
                f"({near})"
            )
            echo(f"    trainer   {m['trainer_logits']}")
            echo(f"    simulator {m['simulator_logits']}")
        if len(mismatches) > 10:
            echo(f"  ... {len(mismatches) - 10} more in model.metrics.json")

    echo("")
    echo(f"profile of the {prof.runs} simulated runs (profile.json has everything):")
    for line in prof.table().rstrip("\n").splitlines():
        echo(("  " + line).rstrip())
    echo("")
    ghz = prof.config.clock_hz / 1e9
    echo(
        f"per image: {profile_summary['cycles_per_image']:,.0f} cycles "
        f"({1e6 * profile_summary['seconds_per_image']:.2f} us at {ghz:g} GHz), "
        f"{profile_summary['energy_uj_per_image']:.3f} uJ"
    )
    echo(
        f"zero weights: {100 * zero_static:.1f} % of the model's pents are 0; they meet "
        f"{100 * t.zero_weight_share:.1f} % of the MACs ({t.zero_macs:,} MACs, "
        f"{t.energy_saved_pj / 1e6:.3f} uJ saved by a zero-gated MAC array)"
    )
    blob_txt = (
        f"; parameter blob with biases and requantization tables {_size(sizes['blob_bytes'])}" if blob.exists() else ""
    )
    echo(
        f"model size: {n_weights:,} weights = {_size(bytes_packed)} packed pentary (3 pents in 7 bits) vs "
        f"{_size(n_weights)} int8 ({n_weights / bytes_packed:.1f}x) vs {_size(4 * n_weights)} float32 "
        f"({4 * n_weights / bytes_packed:.1f}x){blob_txt}"
    )

    # metrics: what `pcc train --save-model` writes, plus the demo's own results -------------------------------
    result.timings["total"] = time.perf_counter() - t_all
    write_json(
        metrics_path,
        {
            "model": str(model_path),
            "data": train_ds.description,
            "config": {
                "architecture": "conv1-16 3x3 BN ReLU maxpool2, conv16-32 3x3 BN ReLU maxpool2, linear 128-10",
                "input_shape": [1, 8, 8],
                "epochs": n_epochs,
                "batch_size": 32,
                "learning_rate": 0.01,
                "loss": "cross_entropy",
                "optimizer": "adam",
                "schedule": "cosine",
                "qat": True,
                "seed": seed,
                "calibration_samples": n_cal,
            },
            "metrics": trainer.metrics,
            "history": trainer.history,
            "demo": result.to_dict(),
        },
        what="metrics",
    )
    result.written = written

    echo("")
    echo(f"wrote {out}/:")
    width = max(len(str(p.relative_to(out))) for p in written)
    for p in written:
        echo(f"  {str(p.relative_to(out)):<{width}}  {_size(p.stat().st_size):>10}")
    echo(f"total {result.timings['total']:.1f} s")
    return result


def demo(
    out: Path = typer.Option(Path("pcc-demo"), "--out", "-o", help="Folder for every artefact."),
    epochs: int | None = typer.Option(
        None, "--epochs", help=f"Training epochs (default {DEFAULT_EPOCHS}; {QUICK_EPOCHS} with --quick)."
    ),
    quick: bool = typer.Option(
        False,
        "--quick",
        help=f"A short run: {QUICK_EPOCHS} epochs, {QUICK_CALIBRATION_SAMPLES} calibration images (default: "
        "the whole training set).",
    ),
    seed: int = typer.Option(0, "--seed", help="Seed for the initial weights and the shuffling."),
) -> None:
    """Train a pentary CNN on scikit-learn's digits, compile, assemble, simulate and profile it.

    Prints the test accuracy with the float shadow weights, the trainer's pentary forward and the simulator,
    checks that the simulator predicts what the trainer predicts, sample for sample, and prints the profile
    (cycles, energy, zero weights) and the model size. Every artefact goes to --out (default ./pcc-demo).
    Exit status 1 if the simulator and the trainer disagree on any test image.
    """
    result = run_demo(out, epochs=epochs, quick=quick, seed=seed, echo=typer.echo)
    if not result.identical:
        raise PccError(
            f"the simulator and the trainer's pentary forward disagree on {result.n_test - result.agree} of "
            f"{result.n_test} test images (details above and in {result.out_dir / 'model.metrics.json'})",
            notes=[
                "the compiled program computes the trainer's model up to the rounding of its 8-pent activations; "
                "a mismatch that is not a near tie is a bug in pcc: please report it with model.metrics.json"
            ],
        )
