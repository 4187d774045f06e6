"""Training checkpoints of the torch engine: a ``.npz`` of plain arrays and one JSON document, no pickles.

A checkpoint holds everything a run needs to continue exactly where it stopped:

- ``param.<name>``: the parameters of the torch mirror of the model (shadow weights, biases, BatchNorm);
- ``buffer.<name>``: its buffers (BatchNorm running statistics);
- ``opt.<i>.<key>``: the optimiser state of parameter ``i`` in the optimiser's order (Adam: ``step``,
  ``exp_avg``, ``exp_avg_sq``; SGD: ``momentum_buffer``);
- ``rng.dropout.<layer>``: the state of a dropout layer's torch generator;
- ``state``: UTF-8 JSON as uint8: format and version, the settings that must not change (optimiser, learning
  rate, schedule, seed, ...), the run (epochs, batch size, training samples), the position (step, first step
  of the run, epochs done), the shuffling generator's state and the history.

Reading never unpickles (``allow_pickle=False``) and checks every entry's name, dtype and shape against the
model being resumed *before* reading its data, so a damaged or foreign file is one clear error and cannot make
the reader allocate more than the model needs.  Files are written atomically.
"""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from pcc.diagnostics import PccError, atomic_write

__all__ = ["capture", "write", "read", "restore", "FORMAT_NAME", "FORMAT_VERSION"]

FORMAT_NAME = "pcc.torch-checkpoint"
FORMAT_VERSION = 1
_MAX_STATE_BYTES = 64 << 20
_MAX_RNG_BYTES = 1 << 20
_OPT_KEYS = {"adam": ("step", "exp_avg", "exp_avg_sq"), "sgd": ("momentum_buffer",)}
_CONFIG_KEYS = (
    "optimizer_name",
    "learning_rate",
    "momentum",
    "weight_decay",
    "schedule",
    "seed",
    "qat",
    "grid_pull",
    "loss_name",
)


def _config(trainer: Any) -> dict[str, Any]:
    return {k: getattr(trainer, k) for k in _CONFIG_KEYS}


def _opt_params(trainer: Any) -> list[Any]:
    """The parameters in the optimiser's order (its state is indexed by position over its groups)."""
    return [p for g in trainer._opt.param_groups for p in g["params"]]


def _dropouts(trainer: Any) -> list[tuple[int, Any]]:
    from pcc.trainer.torch_layers import _classes

    return [(i, m) for i, m in enumerate(trainer.net.layers) if isinstance(m, _classes()["Dropout"])]


def capture(
    trainer: Any, rng: np.random.Generator, start_step: int, epoch: int, run: dict[str, Any], control: Any
) -> dict:
    """The checkpoint of ``trainer`` after ``epoch`` epochs of the current ``train`` call (``control``: its
    :class:`~pcc.trainer.control.TrainingControl`, whose best epoch and patience count are kept too)."""
    net, opt = trainer.net, trainer._opt
    arrays: dict[str, np.ndarray] = {}
    for name, p in net.named_parameters():
        arrays[f"param.{name}"] = p.detach().cpu().numpy()
    for name, b in net.named_buffers():
        arrays[f"buffer.{name}"] = b.detach().cpu().numpy()
    state = opt.state_dict()["state"]
    for i in range(len(_opt_params(trainer))):
        for key, value in state.get(i, {}).items():
            arrays[f"opt.{i}.{key}"] = value.detach().cpu().numpy()
    for i, m in _dropouts(trainer):
        if m.generator is not None:
            arrays[f"rng.dropout.{i}"] = m.generator.get_state().numpy()
    doc = {
        "format": FORMAT_NAME,
        "version": FORMAT_VERSION,
        "config": _config(trainer),
        "run": run,
        "step": trainer._step,
        "start_step": start_step,
        "epoch": epoch,
        "train_time": trainer.train_time,
        "history": trainer.history,
        "numpy_rng": rng.bit_generator.state,
    }
    for i, a in enumerate(control._state or []):
        arrays[f"best.{i}"] = a
    doc["control"] = {
        "best": list(control.best) if control.best is not None else None,
        "best_epoch": control.best_epoch,
        "since_best": control._since_best,
        "first": control._first,
        "ema": control._ema,
        "kept": control._state is not None,
    }
    arrays["state"] = np.frombuffer(json.dumps(doc).encode("utf-8"), dtype=np.uint8)
    return arrays


def write(path: str | Path, arrays: dict[str, np.ndarray]) -> None:
    """Write a checkpoint atomically (a crash leaves the previous one in place)."""
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    atomic_write(path, buf.getvalue())


def _expected(trainer: Any) -> dict[str, tuple[tuple[int, ...] | None, np.dtype, int]]:
    """name -> (shape or None for 1-d of any length, dtype, maximum bytes)."""
    net = trainer.net
    out: dict[str, tuple[tuple[int, ...] | None, np.dtype, int]] = {}
    for name, p in net.named_parameters():
        out[f"param.{name}"] = (tuple(p.shape), np.dtype(np.float32), 0)
    for name, b in net.named_buffers():
        out[f"buffer.{name}"] = (tuple(b.shape), np.dtype(np.float32), 0)
    for i, p in enumerate(_opt_params(trainer)):
        for key in _OPT_KEYS[trainer.optimizer_name]:
            shape = () if key == "step" else tuple(p.shape)
            out[f"opt.{i}.{key}"] = (shape, np.dtype(np.float32), 0)
    for i, _ in _dropouts(trainer):
        out[f"rng.dropout.{i}"] = (None, np.dtype(np.uint8), _MAX_RNG_BYTES)
    from pcc.trainer.control import model_state

    for i, a in enumerate(model_state(trainer.model)):  # the kept best epoch's model (with keep_best)
        out[f"best.{i}"] = (tuple(a.shape), np.dtype(np.float32), 0)
    out["state"] = (None, np.dtype(np.uint8), _MAX_STATE_BYTES)
    return out


def _read_arrays(path: Path, expected: dict[str, tuple[tuple[int, ...] | None, np.dtype, int]]) -> dict:
    fmt = np.lib.format
    arrays: dict[str, np.ndarray] = {}
    try:
        zf = zipfile.ZipFile(path)
    except FileNotFoundError:
        raise PccError(f"checkpoint not found: {path}") from None
    except (zipfile.BadZipFile, OSError) as exc:
        raise PccError(f"{path}: not a checkpoint (.npz) file: {exc}") from None
    with zf:
        for info in zf.infolist():
            key = info.filename[:-4] if info.filename.endswith(".npy") else info.filename
            if key not in expected:
                raise PccError(f"{path}: unexpected entry {info.filename!r} (a checkpoint of another model?)")
            shape, dtype, limit = expected[key]
            try:
                with zf.open(info) as f:
                    version = fmt.read_magic(f)
                    if version == (1, 0):
                        fshape, fortran, fdtype = fmt.read_array_header_1_0(f)
                    elif version == (2, 0):
                        fshape, fortran, fdtype = fmt.read_array_header_2_0(f)
                    else:
                        raise ValueError(f"unsupported .npy version {version}")
                if fdtype != dtype or fortran:
                    raise ValueError(f"dtype {fdtype}, expected {dtype}")
                if shape is None:
                    if len(fshape) != 1 or fshape[0] * dtype.itemsize > limit:
                        raise ValueError(f"shape {list(fshape)}: expected a 1-d array of at most {limit} bytes")
                elif tuple(fshape) != shape:
                    raise ValueError(f"shape {list(fshape)}, expected {list(shape)}")
                with zf.open(info) as f:
                    arrays[key] = fmt.read_array(f, allow_pickle=False)
            except (ValueError, OSError, EOFError, zipfile.BadZipFile) as exc:
                raise PccError(f"{path}: entry {key!r}: {exc}") from None
    optional = {k for k in expected if k.startswith(("rng.", "best."))}
    missing = sorted(set(expected) - set(arrays) - optional)
    if missing:
        raise PccError(f"{path}: missing entries {', '.join(missing[:5])}{' ...' if len(missing) > 5 else ''}")
    return arrays


def read(path: str | Path, trainer: Any) -> dict[str, Any]:
    """Load a checkpoint into ``trainer`` (model, optimiser, history, step); returns what :func:`restore` needs
    at the start of the next ``train`` call."""
    from pcc.trainer.torch_setup import require_torch

    torch = require_torch()
    path = Path(path)
    arrays = _read_arrays(path, _expected(trainer))
    try:
        doc = json.loads(arrays.pop("state").tobytes().decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise PccError(f"{path}: the 'state' entry is not JSON: {exc}") from None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT_NAME:
        raise PccError(f"{path}: not a {FORMAT_NAME} file")
    if doc.get("version") != FORMAT_VERSION:
        raise PccError(f"{path}: checkpoint version {doc.get('version')!r}, this pcc reads {FORMAT_VERSION}")
    config = doc.get("config")
    if not isinstance(config, dict):
        raise PccError(f"{path}: 'config' missing")
    for key, value in _config(trainer).items():
        if config.get(key) != value:
            raise PccError(
                f"{path}: the checkpoint was written with {key} = {config.get(key)!r}, this run has {value!r}"
            )
    for key in ("step", "start_step", "epoch"):
        if not isinstance(doc.get(key), int) or doc[key] < 0:
            raise PccError(f"{path}: {key!r} must be a non-negative integer")
    if not isinstance(doc.get("history"), list) or not isinstance(doc.get("run"), dict):
        raise PccError(f"{path}: 'history' and 'run' missing")
    rng = np.random.default_rng()
    try:
        rng.bit_generator.state = doc["numpy_rng"]
    except (KeyError, TypeError, ValueError) as exc:
        raise PccError(f"{path}: bad shuffling generator state: {exc}") from None

    net, opt = trainer.net, trainer._opt
    with torch.no_grad():
        for name, p in net.named_parameters():
            p.copy_(torch.from_numpy(arrays[f"param.{name}"]))
        for name, b in net.named_buffers():
            b.copy_(torch.from_numpy(arrays[f"buffer.{name}"]))
    keys = _OPT_KEYS[trainer.optimizer_name]
    opt_state = {
        i: {k: torch.from_numpy(np.array(arrays[f"opt.{i}.{k}"])) for k in keys}
        for i in range(len(_opt_params(trainer)))
    }
    sd = opt.state_dict()
    opt.load_state_dict({"state": opt_state, "param_groups": sd["param_groups"]})
    for i, m in _dropouts(trainer):
        m.generator = torch.Generator(device=trainer.device)
        key = f"rng.dropout.{i}"
        if key in arrays:
            try:
                m.generator.set_state(torch.from_numpy(arrays[key].copy()))
            except RuntimeError as exc:
                raise PccError(f"{path}: entry {key!r}: {exc}") from None
    trainer._step = doc["step"]
    trainer.history = doc["history"]
    trainer.train_time = float(doc.get("train_time", 0.0))
    ctl = doc.get("control")
    if not isinstance(ctl, dict):
        raise PccError(f"{path}: 'control' missing")
    best = [arrays[k] for k in sorted((k for k in arrays if k.startswith("best.")), key=lambda k: int(k[5:]))]
    if ctl.get("kept") and len(best) != sum(1 for k in _expected(trainer) if k.startswith("best.")):
        raise PccError(f"{path}: the kept best epoch's arrays are incomplete")
    return {
        "path": str(path),
        "rng": rng,
        "start_step": doc["start_step"],
        "epoch": doc["epoch"],
        "run": doc["run"],
        "control": ctl,
        "best_state": best if ctl.get("kept") else None,
    }


def restore(
    trainer: Any, resume: dict[str, Any], run: dict[str, Any], control: Any
) -> tuple[np.random.Generator, int, int]:
    """Check that the resumed ``train`` call is the checkpointed one and restore ``control``'s state;
    ``(shuffling rng, start step, epoch)``."""
    for key, value in run.items():
        if resume["run"].get(key) != value:
            raise PccError(
                f"{resume['path']}: the checkpointed run had {key} = {resume['run'].get(key)!r}, this one has {value!r}"
            )
    ctl = resume["control"]
    try:
        control.best = tuple(float(v) for v in ctl["best"]) if ctl["best"] is not None else None
        control.best_epoch = None if ctl["best_epoch"] is None else int(ctl["best_epoch"])
        control._since_best = int(ctl["since_best"])
        control._first = None if ctl["first"] is None else float(ctl["first"])
        control._ema = None if ctl["ema"] is None else float(ctl["ema"])
    except (KeyError, TypeError, ValueError) as exc:
        raise PccError(f"{resume['path']}: bad training-control state: {exc}") from None
    control._state = resume["best_state"]
    return resume["rng"], resume["start_step"], resume["epoch"]
