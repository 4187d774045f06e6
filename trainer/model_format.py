"""Reading and writing the model JSON format (documented in ``docs/trainer.md``, "Model JSON format").

The writer makes every value a plain JSON number/list (NumPy scalars converted, NaN/inf refused) and writes
atomically.  The readers accept the seed's keys and the compatible extensions, and report problems as
``ValueError`` messages that :mod:`pcc.trainer.model` turns into one :class:`~pcc.diagnostics.PccError` naming
the layer.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from pcc.diagnostics import PccError, atomic_write, read_input_json

FORMAT_NAME = "pcc.pentary-model"
FORMAT_VERSION = 1


def _array(value: Any, what: str, dtype: type = np.float32) -> np.ndarray:
    try:
        a = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError(f"{what} is not a (nested) list of numbers") from None
    if a.dtype == object:
        raise ValueError(f"{what} is a ragged list")
    if not np.all(np.isfinite(a)):
        raise ValueError(f"{what} holds NaN or infinity")
    return a.astype(dtype)


def _shape_check(a: np.ndarray, shape: tuple[int, ...], what: str) -> np.ndarray:
    if a.shape != tuple(shape):
        raise ValueError(f"{what} has shape {list(a.shape)}, expected {list(shape)}")
    return a


def read_scale(value: Any, n_channels: int, what: str) -> np.ndarray:
    """A scale: a number (per tensor) or a list of ``n_channels`` numbers (per output channel)."""
    s = _array(value, what)
    if s.ndim == 0:
        return s
    if s.ndim == 1 and s.shape[0] in (1, n_channels):
        return s if s.shape[0] == n_channels else s.reshape(())
    raise ValueError(f"{what} must be a number or a list of {n_channels} numbers, got shape {list(s.shape)}")


def read_pents(value: Any, shape: tuple[int, ...], what: str) -> np.ndarray:
    q = _shape_check(_array(value, what, np.float64), shape, what)
    if q.size and (np.any(q != np.rint(q)) or q.min() < -2 or q.max() > 2):
        raise ValueError(f"{what} must hold integers in -2..2")
    return q.astype(np.int8)


def dequantized(q: np.ndarray, scale: np.ndarray) -> np.ndarray:
    s = scale.reshape((-1,) + (1,) * (q.ndim - 1)) if scale.ndim else scale
    return (q.astype(np.float32) * s).astype(np.float32)


def read_weight(d: dict[str, Any], shape: tuple[int, ...]) -> np.ndarray:
    """The float weights of a layer dict: ``weight_float`` if present, else ``weight_pentary * weight_scale``,
    else the seed quantizer's float ``weights``."""
    if "weight_float" in d:
        return _shape_check(_array(d["weight_float"], "weight_float"), shape, "weight_float")
    for pk, sk in (("weight_pentary", "weight_scale"), ("weights_pentary", "weights_scale")):
        if pk in d:
            if sk not in d and "weight_scale" not in d:
                raise ValueError(f"{pk} without {sk}")
            q = read_pents(d[pk], shape, pk)
            s = read_scale(d.get(sk, d.get("weight_scale")), shape[0], sk)
            return dequantized(q, s)
    if "weights" in d:
        return _shape_check(_array(d["weights"], "weights"), shape, "weights")
    raise ValueError("no weights: expected weight_pentary + weight_scale (or weight_float)")


def read_bias(d: dict[str, Any], n: int) -> np.ndarray:
    """The float bias: ``bias`` if present (inference uses it), else ``bias_pentary * bias_scale``."""
    if "bias" in d and d["bias"] is not None:
        return _shape_check(_array(d["bias"], "bias"), (n,), "bias")
    if "bias_pentary" in d:
        if "bias_scale" not in d:
            raise ValueError("bias_pentary without bias_scale")
        q = read_pents(d["bias_pentary"], (n,), "bias_pentary")
        s = read_scale(d["bias_scale"], n, "bias_scale")
        return dequantized(q, s)
    raise ValueError("use_bias is true but there is no bias (expected bias or bias_pentary + bias_scale)")


def read_vector(d: dict[str, Any], key: str, n: int) -> np.ndarray:
    if key not in d:
        raise ValueError(f"missing key {key!r}")
    return _shape_check(_array(d[key], key), (n,), key)


def jsonable(obj: Any) -> Any:
    """``obj`` with NumPy arrays/scalars turned into lists and Python numbers (NaN/inf raise ValueError)."""
    if type(obj) is list or type(obj) is tuple:  # a row of plain numbers (most of a model's bytes): no recursion
        kinds = set(map(type, obj))
        if kinds == {int}:
            return list(obj)
        if kinds == {float}:
            if not all(map(math.isfinite, obj)):
                raise ValueError("a value is NaN or infinite")
            return list(obj)
    if isinstance(obj, dict):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return jsonable(obj.tolist())
    if isinstance(obj, np.bool_ | bool):
        return bool(obj)
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, np.floating | float):
        f = float(obj)
        if not math.isfinite(f):
            raise ValueError("a value is NaN or infinite")
        return f
    return obj


def write_json(path: str | Path, obj: Any, what: str = "model") -> None:
    """Serialise ``obj`` fully first, then write it atomically (a failure leaves no partial file)."""
    try:
        text = json.dumps(jsonable(obj), allow_nan=False, separators=(",", ":"))
    except ValueError as exc:
        raise PccError(f"cannot save {what} to {path}: {exc} (training diverged?)") from None
    atomic_write(path, text + "\n")


def read_json(path: str | Path, what: str = "model") -> Any:
    return read_input_json(path, f"a {what} JSON file")
