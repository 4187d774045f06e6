"""Model quantization utilities: :class:`ModelQuantizer` and :class:`PyTorchToPentaryConverter`.

``ModelQuantizer`` turns float layer dicts (the seed's ``weights`` / ``bias`` lists, or a model JSON with
``weight_float``) into pentary layers: pents plus scales from :func:`pcc.quant.quantize_weights`, per tensor or
per output channel.  ``PyTorchToPentaryConverter`` walks a ``torch.nn.Sequential``-like module (Linear, Conv2d,
ReLU, MaxPool2d, BatchNorm1d/2d, Flatten, Dropout, Identity; nested Sequentials are flattened) into a
:class:`~pcc.trainer.model.PentaryModel`, checks that the walk reproduces the module's own forward pass, and
writes the model JSON.
"""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any

import numpy as np

from pcc import quant
from pcc.diagnostics import PccError
from pcc.trainer import model_format as fmt
from pcc.trainer.layers import (
    Dropout,
    Flatten,
    Layer,
    PentaryBatchNorm,
    PentaryConv2D,
    PentaryLinear,
    PentaryMaxPool2D,
    PentaryReLU,
)
from pcc.trainer.model import PentaryModel

__all__ = ["ModelQuantizer", "PyTorchToPentaryConverter", "allow_torch_layer_classes", "torch_layer_classes"]

GRANULARITIES = ("per_tensor", "per_channel")


# The keys of a weight layer that quantizing replaces (by weight_pentary and weight_scale) or drops.
_WEIGHT_KEYS = ("weights", "weight_float", "weight_pentary", "weight_scale", "weights_pentary", "weights_scale")


class ModelQuantizer:
    """Quantize the weight layers of a model dict to pents.

    ``quantization_method`` is ``"per_tensor"`` (one scale per tensor) or ``"per_channel"`` (one scale per
    output channel: rows of a linear weight, filters of a conv weight); ``scale_method`` is ``"mse"``
    (error-minimising, default) or ``"max"`` (``max|w| / 2``).
    """

    def __init__(self, quantization_method: str = "per_tensor", scale_method: str = "mse") -> None:
        if quantization_method not in GRANULARITIES:
            raise PccError(
                f"unknown quantization method {quantization_method!r} (expected {' or '.join(GRANULARITIES)})"
            )
        if scale_method not in ("mse", "max"):
            raise PccError(f"unknown scale method {scale_method!r} (expected 'mse' or 'max')")
        self.quantization_method = quantization_method
        self.scale_method = scale_method

    @property
    def per_channel(self) -> bool:
        return self.quantization_method == "per_channel"

    def quantize_tensor(self, w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Pents (int8) and scale of one weight tensor (output channels on axis 0)."""
        return quant.quantize_weights(np.asarray(w, np.float32), self.per_channel, 0, self.scale_method)

    def _layer(self, i: int, layer: dict[str, Any]) -> dict[str, Any]:
        kind = layer.get("type")
        if kind not in ("linear", "conv2d"):
            return copy.deepcopy(layer)
        out = {k: copy.deepcopy(v) for k, v in layer.items() if k not in _WEIGHT_KEYS}  # those are replaced
        seed_style = "weights" in layer and "weight_pentary" not in layer and "weight_float" not in layer
        try:
            if seed_style:
                w = np.asarray(layer["weights"], np.float64)
                if w.dtype == object or w.ndim != (2 if kind == "linear" else 4):
                    raise ValueError(f"weights must be a {'2' if kind == 'linear' else '4'}-d nested list")
                w = fmt.read_weight({"weights": layer["weights"]}, w.shape)
            else:
                shape = _declared_shape(layer)
                w = fmt.read_weight(layer, shape)
        except (KeyError, ValueError, TypeError) as exc:
            msg = f"missing key {exc}" if isinstance(exc, KeyError) else str(exc)
            raise PccError(f"layer {i} ({kind}): {msg}") from None
        q, s = self.quantize_tensor(w)
        out["weight_pentary"] = q.tolist()
        out["weight_scale"] = s.tolist() if np.ndim(s) else float(s)
        if kind == "linear":
            out.setdefault("in_features", int(w.shape[1]))
            out.setdefault("out_features", int(w.shape[0]))
        else:
            out.setdefault("in_channels", int(w.shape[1]))
            out.setdefault("out_channels", int(w.shape[0]))
            out.setdefault("kernel_size", [int(w.shape[2]), int(w.shape[3])])
        has_bias = layer.get("bias") is not None or "bias_pentary" in layer
        out["use_bias"] = bool(layer.get("use_bias", has_bias))
        if out["use_bias"]:
            try:
                b = fmt.read_bias(layer, int(w.shape[0]))
            except ValueError as exc:
                raise PccError(f"layer {i} ({kind}): {exc}") from None
            bq, bs = quant.quantize_weights(b, per_channel=False, method=self.scale_method)
            out["bias"] = b.tolist()
            out["bias_pentary"] = bq.tolist()
            out["bias_scale"] = float(bs)
        return out

    def quantize_model_from_dict(self, model_dict: dict[str, Any]) -> dict[str, Any]:
        """A copy of ``model_dict`` whose linear/conv2d layers carry pents and scales.

        Every quantized layer carries the model JSON's keys ``weight_pentary`` and ``weight_scale`` (a number per
        tensor, a list per channel), whatever keys it came with (the seed's float ``weights``, ``weight_float``,
        or an older quantizer's ``weights_pentary`` / ``weights_scale``); float weights are dropped.  The float ``bias``
        is kept (inference uses it) next to ``bias_pentary`` / ``bias_scale``.  Missing ``input_dim`` /
        ``output_dim`` are filled in from the first and last weight layers.
        """
        if not isinstance(model_dict, dict) or not isinstance(model_dict.get("layers"), list):
            raise PccError("a model dict needs a 'layers' list")
        out = {k: copy.deepcopy(v) for k, v in model_dict.items() if k != "layers"}
        out["layers"] = [self._layer(i, ld) for i, ld in enumerate(model_dict["layers"])]
        weight_layers = [ld for ld in out["layers"] if ld.get("type") in ("linear", "conv2d")]
        if weight_layers:
            first, last = weight_layers[0], weight_layers[-1]
            if first.get("type") == "linear":
                out.setdefault("input_dim", first["in_features"])
            if last.get("type") == "linear":
                out.setdefault("output_dim", last["out_features"])
            out.setdefault(
                "hidden_dims", [ld["out_features"] for ld in weight_layers[:-1] if ld.get("type") == "linear"]
            )
        out["quantization"] = {"method": self.scale_method, "granularity": self.quantization_method}
        return fmt.jsonable(out)

    def quantize_model(self, model: PentaryModel) -> dict[str, Any]:
        """Model JSON (without float shadow weights) of ``model`` quantized with this quantizer's settings."""
        return self.quantize_model_from_dict(model.to_dict(include_float=True))

    def save_quantized_model(self, quantized_model: dict[str, Any], output_path: str | Path) -> None:
        """Write the quantized model dict as JSON, atomically."""
        fmt.write_json(output_path, quantized_model, what="quantized model")

    def load_quantized_model(self, path: str | Path) -> dict[str, Any]:
        return fmt.read_json(path)

    def compression_stats(self, quantized_model: dict[str, Any]) -> dict[str, float]:
        """Weight count, fraction of zero pents, and bytes: float32 vs pentary (7 bits per 3 pents)."""
        counts = np.zeros(5, np.int64)
        for ld in quantized_model.get("layers", []):
            for key in ("weight_pentary", "weights_pentary"):
                if key in ld:
                    q = np.asarray(ld[key], np.int64).ravel()
                    counts += np.bincount(q + 2, minlength=5)
        n = int(counts.sum())
        return {
            "weights": n,
            "zero_fraction": float(counts[2] / n) if n else 0.0,
            "float32_bytes": 4.0 * n,
            "pentary_bytes": float(np.ceil(n / 3) * 7 / 8),
        }


def _declared_shape(layer: dict[str, Any]) -> tuple[int, ...]:
    if layer["type"] == "linear":
        return int(layer["out_features"]), int(layer["in_features"])
    kh, kw = layer["kernel_size"] if isinstance(layer["kernel_size"], list) else [layer["kernel_size"]] * 2
    return int(layer["out_channels"]), int(layer["in_channels"]), int(kh), int(kw)


# --- PyTorch --------------------------------------------------------------------------------------------------


def _load_error(path: str | Path, exc: Exception) -> PccError:
    """One error for a file ``torch.load(weights_only=True)`` refused: torch's line naming the blocked class,
    and the ways forward (the class from the user's code, a .pt2 or an ONNX file)."""
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(exc)).strip()
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    blocked = next((ln for ln in lines if "Unsupported global" in ln or "WeightsUnpickler error" in ln), None)
    line = blocked or (lines[0] if lines else type(exc).__name__)
    line = line.removeprefix("WeightsUnpickler error: ")
    line = line.split(". Please use")[0]
    m = re.search(r"GLOBAL ([\w.]+)", line)
    if m is None:
        return PccError(
            f"cannot load {path} with weights_only=True: {line}",
            notes=["only state dicts and modules of plain torch.nn layers load without unpickling code"],
        )
    name = m.group(1)
    mod, _, cls = name.rpartition(".")
    shape = "1,C,H,W"
    return PccError(
        f"cannot load {path} with weights_only=True: {line}",
        notes=[
            f"the file holds a pickled {name} object; pcc does not unpickle classes from model files (that "
            "would run code from the file)",
            f"build it from your own code instead: save the weights with torch.save(model.state_dict(), "
            f"'weights.pt'), then pcc convert weights.pt --module {mod}:{cls} --module-args '{{...}}' "
            f"--input-shape {shape} (the constructor's keyword arguments as a JSON object)",
            "or write a torch.export program: torch.export.save(torch.export.export(model.eval(), "
            "(torch.randn(1, C, H, W),)), 'model.pt2'), then pcc convert model.pt2",
            "or an ONNX file: torch.onnx.export(model.eval(), (torch.randn(1, C, H, W),), 'model.onnx'), then "
            "pcc convert model.onnx",
        ],
    )


def _torch() -> Any:
    try:
        import torch
    except ImportError:
        raise PccError("converting PyTorch models needs torch (pip install torch)") from None
    return torch


def torch_layer_classes() -> list[type]:
    """The torch.nn classes the converter understands (also what :func:`allow_torch_layer_classes` allows)."""
    nn = _torch().nn
    return [
        nn.Sequential,
        nn.Linear,
        nn.Conv2d,
        nn.ReLU,
        nn.MaxPool2d,
        nn.BatchNorm1d,
        nn.BatchNorm2d,
        nn.Flatten,
        nn.Dropout,
        nn.Identity,
    ]


def allow_torch_layer_classes() -> None:
    """Let ``torch.load`` (``weights_only=True``, the default) unpickle whole modules built only from the
    plain layer classes the converter supports.  These classes only restore attributes when unpickled, so
    the weights-only guarantee (no arbitrary code runs) is kept; the seed-compatible module
    ``pcc.trainer.pentary_quantizer`` calls this so that the seed's ``torch.load('model.pth')`` works."""
    _torch().serialization.add_safe_globals(torch_layer_classes())


def _torch_to_layers(module: Any) -> list[Layer]:
    torch = _torch()
    nn = torch.nn
    out: list[Layer] = []

    def arr(t: Any) -> np.ndarray:
        return t.detach().cpu().to(torch.float32).numpy()

    def walk(m: Any, name: str) -> None:
        if isinstance(m, nn.Sequential) or (type(m) is nn.Module):
            for child_name, child in m.named_children():
                walk(child, f"{name}.{child_name}" if name else child_name)
            return
        where = f"module {name or '<root>'} ({type(m).__name__})"
        if isinstance(m, nn.Linear):
            layer = PentaryLinear(m.in_features, m.out_features, m.bias is not None)
            layer.weight.value[...] = arr(m.weight)
            if m.bias is not None:
                layer.bias.value[...] = arr(m.bias)
            out.append(layer)
        elif isinstance(m, nn.Conv2d):
            if m.groups != 1 or tuple(m.dilation) != (1, 1) or m.padding_mode != "zeros":
                raise PccError(f"{where}: only groups=1, dilation=1, zero padding convolutions are supported")
            if isinstance(m.padding, str):
                if m.padding == "valid":
                    pad = (0, 0)
                elif all(k % 2 == 1 for k in m.kernel_size) and tuple(m.stride) == (1, 1):
                    pad = (m.kernel_size[0] // 2, m.kernel_size[1] // 2)
                else:
                    raise PccError(f"{where}: padding='same' needs odd kernels and stride 1")
            else:
                pad = tuple(m.padding)
            layer = PentaryConv2D(m.in_channels, m.out_channels, m.kernel_size, m.stride, pad, m.bias is not None)
            layer.weight.value[...] = arr(m.weight)
            if m.bias is not None:
                layer.bias.value[...] = arr(m.bias)
            out.append(layer)
        elif isinstance(m, nn.ReLU):
            out.append(PentaryReLU())
        elif isinstance(m, nn.MaxPool2d):
            dil = m.dilation if isinstance(m.dilation, int) else max(m.dilation)
            if dil != 1 or m.ceil_mode or m.return_indices:
                raise PccError(f"{where}: only dilation=1, ceil_mode=False max pooling is supported")
            out.append(PentaryMaxPool2D(m.kernel_size, m.stride if m.stride is not None else m.kernel_size, m.padding))
        elif isinstance(m, nn.BatchNorm1d | nn.BatchNorm2d):
            if m.running_mean is None or not m.affine:
                raise PccError(f"{where}: BatchNorm needs affine=True and track_running_stats=True")
            bn = PentaryBatchNorm(m.num_features, m.eps, m.momentum if m.momentum is not None else 0.1)
            bn.gamma.value[...] = arr(m.weight)
            bn.beta.value[...] = arr(m.bias)
            bn.running_mean[...] = arr(m.running_mean)
            bn.running_var[...] = arr(m.running_var)
            out.append(bn)
        elif isinstance(m, nn.Flatten):
            if m.start_dim != 1 or m.end_dim != -1:
                raise PccError(f"{where}: only Flatten(start_dim=1, end_dim=-1) is supported")
            out.append(Flatten())
        elif isinstance(m, nn.Dropout):
            out.append(Dropout(m.p) if m.p < 1 else Dropout(0.0))
        elif isinstance(m, nn.Identity):
            pass
        else:
            raise PccError(
                f"{where} cannot be expressed as a pentary layer",
                notes=["supported: Linear, Conv2d, ReLU, MaxPool2d, BatchNorm1d/2d, Flatten, Dropout, Identity, "
                       "Sequential; export other models to ONNX and use 'pcc convert model.onnx'"],
            )  # fmt: skip

    walk(module, "")
    if not out:
        raise PccError("the PyTorch model has no layers the converter understands")
    return out


ACTIVATION_MODULES = {
    "relu": "ReLU", "tanh": "Tanh", "sigmoid": "Sigmoid", "gelu": "GELU", "silu": "SiLU", "elu": "ELU",
    "leaky_relu": "LeakyReLU", "softmax": "Softmax", "none": "Identity", "identity": "Identity",
}  # fmt: skip


def _module_hint(source: str, n_inputs: str = "...") -> list[str]:
    return [
        f"or build the model from its own class: pcc convert {source} --module pkg.mod:Class "
        f"--module-args '{{\"arg\": 1}}' --input-shape 1,{n_inputs} (Python: convert.module_to_model)",
    ]


def _state_dict_to_module(state: dict[str, Any], activations: list[str] | None = None, source: str = "") -> Any:
    """Rebuild an ``nn.Sequential`` of Linear layers from its state dict, with ``activations[i]`` after the
    i-th Linear (``"none"`` for no activation).  A state dict holds weights only, so the activations must be
    given: they are never guessed; anything but a Linear stack needs the architecture (``--module``)."""
    torch = _torch()
    nn = torch.nn
    keys = [k for k in state if not k.endswith("num_batches_tracked")]
    groups: dict[str, dict[str, Any]] = {}
    for k in keys:
        prefix, _, leaf = k.rpartition(".")
        groups.setdefault(prefix, {})[leaf] = state[k]
    items = list(groups.items())
    for prefix, g in items:
        w = g.get("weight")
        if set(g) - {"weight", "bias"} or not isinstance(w, torch.Tensor) or w.ndim != 2:
            raise PccError(
                f"{source or 'the model'} is a state dict: it holds weights but no architecture, and entry "
                f"{prefix!r} is not a Linear layer",
                notes=[*_module_hint(source or "weights.pt"), "or save a .pt2 or ONNX file (docs/trainer.md)"],
            )
    n_in = str(items[0][1]["weight"].shape[1]) if items else "..."
    shapes = " -> ".join([n_in, *(str(g["weight"].shape[0]) for _, g in items)])
    if activations is None:
        example = ",".join(["relu"] * (len(items) - 1) + ["none"])
        raise PccError(
            f"{source or 'the model'} is a state dict of {len(items)} Linear layers ({shapes}): it holds no "
            "activations, and pcc does not guess them",
            notes=[
                f"name the activation after each Linear layer: --activations {example} "
                f"(Python: activations={example.split(',')!r}); pentary layers express relu and none",
                *_module_hint(source or "weights.pt", n_in),
            ],
        )
    acts = [a.strip().lower().replace("-", "_") for a in activations]
    if len(acts) != len(items):
        raise PccError(
            f"--activations names {len(acts)} activation(s), but the state dict has {len(items)} Linear layers "
            f"({shapes}): give one per Linear layer ('none' for none)"
        )
    unknown = [a for a in acts if a not in ACTIVATION_MODULES]
    if unknown:
        raise PccError(f"unknown activation {unknown[0]!r} (known: {', '.join(ACTIVATION_MODULES)})")
    layers: list[Any] = []
    for (_, g), act in zip(items, acts, strict=True):
        w = g["weight"]
        lin = nn.Linear(w.shape[1], w.shape[0], bias="bias" in g)
        lin.load_state_dict(g)
        layers.append(lin)
        if act not in ("none", "identity"):
            layers.append(getattr(nn, ACTIVATION_MODULES[act])())
    return nn.Sequential(*layers)


class PyTorchToPentaryConverter:
    """Convert a PyTorch model (an ``nn.Module`` built from plain layers, its ``.pt``/``.pth`` file, or the state
    dict of a Linear stack) to the pentary model JSON."""

    def __init__(self, quantization_method: str = "per_channel", scale_method: str = "mse") -> None:
        if quantization_method not in GRANULARITIES:
            raise PccError(f"unknown quantization method {quantization_method!r}")
        self.quantization_method = quantization_method
        self.scale_method = scale_method

    def load(self, path: str | Path) -> Any:
        """``torch.load(path, weights_only=True)`` with the supported layer classes allowed."""
        from pcc.trainer.torch_safe import safe_torch_load

        try:
            return safe_torch_load(path, torch_layer_classes())
        except PccError:
            raise
        except FileNotFoundError:
            raise PccError(f"PyTorch model file not found: {path}") from None
        except Exception as exc:  # torch raises UnpicklingError / RuntimeError with long texts
            raise _load_error(path, exc) from None

    def to_model(
        self,
        pytorch_model: Any,
        input_shape: tuple[int, ...] | list[int] | None = None,
        *,
        activations: list[str] | None = None,
    ) -> PentaryModel:
        """The :class:`PentaryModel` equivalent of ``pytorch_model`` (checked against its forward pass).

        A state dict (or a file holding one) needs ``activations``: one name per Linear layer, e.g.
        ``["relu", "none"]``; a state dict holds no activations and none is guessed."""
        torch = _torch()
        source = ""
        if isinstance(pytorch_model, str | Path):
            source = str(pytorch_model)
            pytorch_model = self.load(pytorch_model)
        if isinstance(pytorch_model, dict):
            pytorch_model = _state_dict_to_module(pytorch_model, activations, source)
        if not isinstance(pytorch_model, torch.nn.Module):
            raise PccError(f"expected a torch.nn.Module, got {type(pytorch_model).__name__}")
        layers = _torch_to_layers(pytorch_model)
        first = next((ly for ly in layers if isinstance(ly, PentaryLinear | PentaryConv2D)), None)
        shape = self._input_shape(first, input_shape)
        for layer in layers:
            if isinstance(layer, PentaryLinear | PentaryConv2D):
                layer.per_channel = self.quantization_method == "per_channel"
                layer.quant_method = self.scale_method
        try:
            model = PentaryModel(layers=layers, input_shape=shape)
        except ValueError as exc:
            raise PccError(f"the PyTorch model does not fit input shape {list(shape)}: {exc}") from None
        self._check(pytorch_model, model)
        return model

    @staticmethod
    def _input_shape(first: Layer | None, input_shape: Any) -> tuple[int, ...]:
        if input_shape is None:
            if isinstance(first, PentaryLinear):
                return (first.in_features,)
            raise PccError("input_shape is needed for a convolutional model, e.g. input_shape=(1, 3, 224, 224)")
        shape = tuple(int(v) for v in input_shape)
        if isinstance(first, PentaryConv2D):
            if len(shape) == 4:
                shape = shape[1:]
            if len(shape) != 3:
                raise PccError(f"input_shape of a convolutional model is [N, C, H, W] or [C, H, W], got {list(shape)}")
        elif len(shape) >= 2 and isinstance(first, PentaryLinear) and int(np.prod(shape[1:])) == first.in_features:
            shape = shape[1:]
        return shape

    @staticmethod
    def _check(torch_model: Any, model: PentaryModel) -> None:
        torch = _torch()
        rng = np.random.default_rng(0)
        x = rng.standard_normal((4, *model.input_shape)).astype(np.float32)
        was_training = torch_model.training
        torch_model.eval()
        try:
            with torch.no_grad():
                ref = torch_model(torch.from_numpy(x)).reshape(4, -1).numpy()
        except Exception as exc:
            raise PccError(f"the PyTorch model fails on input shape {list(model.input_shape)}: {exc}") from None
        finally:
            torch_model.train(was_training)
        got = model.predict(x, quantized=False)
        if ref.shape != got.shape or not np.allclose(ref, got, rtol=1e-3, atol=1e-3 * (1 + np.abs(ref).max())):
            raise PccError(
                "the converted layers do not reproduce the PyTorch model's output",
                notes=["the converter chains the module's children in order; a custom forward() that does "
                       "something else needs an ONNX export ('pcc convert model.onnx')"],
            )  # fmt: skip

    def convert(
        self,
        pytorch_model: Any,
        output_path: str | Path,
        input_shape: tuple[int, ...] | list[int] | None = None,
        *,
        activations: list[str] | None = None,
    ) -> dict[str, Any]:
        """Convert and write the model JSON (atomically); returns the JSON object."""
        model = self.to_model(pytorch_model, input_shape, activations=activations)
        d = model.to_dict(include_float=True)
        fmt.write_json(output_path, d)
        return d
