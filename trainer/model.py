"""``PentaryModel``: a sequential stack of pentary layers, its JSON form, evaluation helpers.

``PentaryModel(input_dim, output_dim, hidden_dims)`` builds the seed's multilayer perceptron
(Linear, ReLU, ..., Linear); :meth:`PentaryModel.sequential` takes any list of layers and a per-sample input
shape, e.g. a CNN on ``input_shape=(1, 8, 8)``.  Flat inputs ``[B, prod(input_shape)]`` are reshaped to the
input shape, so a CNN can be fed the same ``[B, 64]`` arrays as an MLP.

All trainable tensors live as views into one flat float32 buffer (and one for the gradients), so an
optimiser step is a handful of whole-buffer NumPy operations.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from pcc.diagnostics import PccError
from pcc.trainer import model_format as fmt
from pcc.trainer.layers import (
    F32,
    Dropout,
    Layer,
    Param,
    PentaryLinear,
    PentaryReLU,
    _PentaryWeights,
    layer_from_dict,
)
from pcc.trainer.transformer_layers import MultiHeadAttention, PentaryEmbedding

__all__ = ["PentaryModel", "DEFAULT_HIDDEN_DIMS"]

DEFAULT_HIDDEN_DIMS: tuple[int, ...] = (64, 32)


class PentaryModel:
    """A feed-forward network of pentary layers.

    ``PentaryModel(input_dim, output_dim, hidden_dims)`` is the seed's MLP (``hidden_dims`` defaults to
    ``[64, 32]``; ``dropout`` > 0 adds Dropout after each hidden ReLU).  ``seed`` makes the initial weights
    reproducible.  ``per_channel`` and ``quant_method`` set how weight layers quantize (see :mod:`pcc.quant`).
    """

    def __init__(
        self,
        input_dim: int | None = None,
        output_dim: int | None = None,
        hidden_dims: Sequence[int] | None = None,
        *,
        seed: int = 0,
        dropout: float = 0.0,
        per_channel: bool = True,
        quant_method: str = "mse",
        layers: Sequence[Layer] | None = None,
        input_shape: Sequence[int] | None = None,
        vocabulary: str | None = None,
    ) -> None:
        self.seed = int(seed)
        built_here = layers is None
        if layers is None:
            if input_dim is None or output_dim is None:
                raise ValueError("PentaryModel needs input_dim and output_dim (or layers=...)")
            hidden = list(DEFAULT_HIDDEN_DIMS if hidden_dims is None else hidden_dims)
            dims = [int(input_dim), *map(int, hidden), int(output_dim)]
            if min(dims) < 1:
                raise ValueError(f"layer widths must be positive, got {dims}")
            built: list[Layer] = []
            for i, (a, b) in enumerate(zip(dims[:-1], dims[1:], strict=True)):
                built.append(PentaryLinear(a, b, per_channel=per_channel, quant_method=quant_method))
                if i < len(dims) - 2:
                    built.append(PentaryReLU())
                    if dropout > 0:
                        built.append(Dropout(dropout))
            layers = built
            input_shape = (int(input_dim),)
        elif input_shape is None:
            if input_dim is None:
                raise ValueError("a sequential model needs input_shape (or input_dim)")
            input_shape = (int(input_dim),)
        self.layers: list[Layer] = list(layers)
        self.input_shape: tuple[int, ...] = tuple(int(v) for v in input_shape)
        shape = self._check_shapes()
        self.sequence = bool(self.layers) and isinstance(self.layers[0], PentaryEmbedding)
        if len(shape) != 1 and not (self.sequence and len(shape) == 2):
            raise ValueError(f"the last layer must produce a vector per sample, got shape {list(shape)}")
        if output_dim is not None and shape[-1] != int(output_dim):
            raise ValueError(f"the layers produce {shape[-1]} outputs, but output_dim is {output_dim}")
        self.output_dim = shape[-1]
        self.output_shape: tuple[int, ...] = tuple(shape)
        self.vocabulary = vocabulary
        if vocabulary is not None:
            _check_vocabulary(vocabulary, self.layers[0] if self.sequence else None)
        self.input_dim = int(np.prod(self.input_shape))
        self.hidden_dims = [layer.out_features for layer in self.layers if isinstance(layer, PentaryLinear)][:-1]
        if self.layers:
            self.layers[0].need_input_grad = False
        self._bind_flat()
        if built_here:
            self.reset_parameters()

    @classmethod
    def sequential(
        cls, layers: Sequence[Layer], input_shape: Sequence[int], *, seed: int = 0, init: bool = True
    ) -> PentaryModel:
        """A model of any ``layers`` on per-sample ``input_shape`` (e.g. ``(1, 8, 8)``); ``init`` re-draws the
        parameters from ``seed`` so that the model is reproducible."""
        model = cls(layers=layers, input_shape=input_shape, seed=seed)
        if init:
            model.reset_parameters(seed)
        return model

    # --- structure -----------------------------------------------------------------------------------------

    def _check_shapes(self) -> tuple[int, ...]:
        shape = self.input_shape
        for i, layer in enumerate(self.layers):
            try:
                shape = layer.output_shape(shape)
            except ValueError as exc:
                raise ValueError(f"layer {i} ({layer.type}): {exc}") from None
        return shape

    def _bind_flat(self) -> None:
        """Move every parameter into one flat value buffer and one flat gradient buffer (views)."""
        params = self.params()
        total = sum(p.value.size for p in params)
        self.flat_values = np.zeros(total, F32)
        self.flat_grads = np.zeros(total, F32)
        self.decay_mask = np.zeros(total, F32)
        offset = 0
        for p in params:
            n = p.value.size
            self.flat_values[offset : offset + n] = p.value.ravel()
            p.value = self.flat_values[offset : offset + n].reshape(p.value.shape)
            p.grad = self.flat_grads[offset : offset + n].reshape(p.value.shape)
            self.decay_mask[offset : offset + n] = 1.0 if p.decay else 0.0
            offset += n

    def params(self) -> list[Param]:
        return [p for layer in self.layers for p in layer.params()]

    def num_params(self) -> int:
        return int(self.flat_values.size)

    def named_layers(self) -> list[tuple[str, Layer]]:
        """Every layer, nested ones included (``"layer3.residual.1.attention.qkv"``), in execution order."""
        out: list[tuple[str, Layer]] = []

        def walk(prefix: str, layer: Layer) -> None:
            out.append((prefix, layer))
            subs = layer.sublayers()
            names = ["qkv", "out"] if isinstance(layer, MultiHeadAttention) else [str(j) for j in range(len(subs))]
            for name, sub in zip(names, subs, strict=True):
                walk(f"{prefix}.{name}.{sub.type}", sub)

        for i, layer in enumerate(self.layers):
            walk(f"layer{i}.{layer.type}", layer)
        return out

    def weight_layers(self) -> list[_PentaryWeights]:
        return [layer for _, layer in self.named_layers() if isinstance(layer, _PentaryWeights)]

    def reset_parameters(self, seed: int | None = None) -> None:
        rng = np.random.default_rng(self.seed if seed is None else seed)
        for layer in self.layers:
            layer.reset_parameters(rng)

    def reset_quant_state(self) -> None:
        for layer in self.layers:
            layer.reset_quant_state()

    # --- computation ---------------------------------------------------------------------------------------

    def _prepare(self, x: np.ndarray) -> np.ndarray:
        if self.sequence:  # token ids [B, T], 1 <= T <= context
            ids = np.asarray(x)
            if ids.ndim == 1:
                ids = ids[None, :]
            if ids.ndim != 2 or not 1 <= ids.shape[1] <= self.input_shape[0]:
                raise PccError(
                    f"token ids have shape {list(ids.shape)}, the model expects [batch, T] with 1 <= T <= "
                    f"{self.input_shape[0]}"
                )
            if not np.issubdtype(ids.dtype, np.integer):
                raise PccError(f"token ids must be integers, got {ids.dtype}")
            return ids
        x = np.asarray(x, dtype=F32)
        if x.ndim == 1 and len(self.input_shape) == 1:
            x = x[None, :]
        if x.shape[1:] != self.input_shape:
            if int(np.prod(x.shape[1:])) != self.input_dim:
                raise PccError(
                    f"input has shape {list(x.shape[1:])} per sample, the model expects "
                    f"{list(self.input_shape)} ({self.input_dim} values)"
                )
            x = x.reshape((x.shape[0], *self.input_shape))
        return x

    def forward(self, x: np.ndarray, training: bool = False, quantized: bool = True) -> np.ndarray:
        """Logits for a batch; ``quantized`` selects pentary weights (else the float shadow weights)."""
        x = self._prepare(x)
        for layer in self.layers:
            x = layer.forward(x, training, quantized)
        return x

    __call__ = forward

    def backward(self, grad: np.ndarray) -> np.ndarray:
        """Back-propagate the loss gradient w.r.t. the logits; fills every parameter's ``grad``.  Returns the
        gradient w.r.t. the input when the first layer computes it (``need_input_grad``)."""
        for layer in reversed(self.layers):
            grad = layer.backward(grad)
        return grad

    def predict(self, x: np.ndarray, quantized: bool = True, batch_size: int = 2048) -> np.ndarray:
        """Logits in inference mode (quantized once for the whole call), computed in chunks."""
        x = self._prepare(x)
        layers = self.weight_layers()
        for layer in layers:
            layer.freeze_quant(quantized)
        try:
            outs = [self.forward(x[i : i + batch_size], False, quantized) for i in range(0, len(x), batch_size)]
        finally:
            for layer in layers:
                layer.freeze_quant(False)
        return np.concatenate(outs) if outs else np.zeros((0, self.output_dim), F32)

    def predict_classes(self, x: np.ndarray, quantized: bool = True) -> np.ndarray:
        return np.argmax(self.predict(x, quantized), axis=1)

    def accuracy(self, x: np.ndarray, y: np.ndarray, quantized: bool = True) -> float:
        y = np.asarray(y)
        if y.ndim == 2:
            y = np.argmax(y, axis=1)
        return float(np.mean(self.predict_classes(x, quantized) == y)) if len(y) else float("nan")

    # --- pentary statistics --------------------------------------------------------------------------------

    def pent_histogram(self) -> dict[str, list[int]]:
        """Count of weights at each level -2..+2, per weight layer (``"layer3.conv2d"``) and in total."""
        out: dict[str, list[int]] = {}
        total = np.zeros(5, np.int64)
        for name, layer in self.named_layers():
            if isinstance(layer, _PentaryWeights):
                q, _ = layer.quantized()
                h = np.bincount(q.ravel().astype(np.int64) + 2, minlength=5)
                out[name] = h.tolist()
                total += h
        out["total"] = total.tolist()
        return out

    # --- JSON ----------------------------------------------------------------------------------------------

    def to_dict(self, include_float: bool = True) -> dict[str, Any]:
        """The model JSON object (see docs/trainer.md, "Model JSON format")."""
        quant_cfg = {"method": "mse", "granularity": "per_channel"}
        wl = self.weight_layers()
        if wl:
            quant_cfg = {
                "method": wl[0].quant_method,
                "granularity": "per_channel" if wl[0].per_channel else "per_tensor",
            }
        d: dict[str, Any] = {
            "format": fmt.FORMAT_NAME,
            "version": fmt.FORMAT_VERSION,
            "input_dim": self.input_dim,
            "output_dim": self.output_dim,
            "hidden_dims": list(self.hidden_dims),
            "input_shape": list(self.input_shape),
            "quantization": quant_cfg,
            "layers": [layer.to_dict(include_float) for layer in self.layers],
        }
        if self.sequence:
            d["input_kind"] = "token_ids"
            d["output_shape"] = list(self.output_shape)
        if self.vocabulary is not None:
            d["tokenizer"] = {"type": "characters", "vocabulary": list(self.vocabulary)}
        return d

    @classmethod
    def from_dict(cls, d: Any, source: str = "model") -> PentaryModel:
        """Rebuild a model from its JSON object; any problem is one PccError naming the layer."""
        if not isinstance(d, dict):
            raise PccError(f"{source}: a model JSON file holds an object, not {type(d).__name__}")
        if "layers" not in d or not isinstance(d["layers"], list):
            raise PccError(f"{source}: missing 'layers' list")
        quant_cfg = d.get("quantization") or {}
        per_channel = quant_cfg.get("granularity", "per_channel") != "per_tensor"
        method = quant_cfg.get("method", "mse")
        if method not in ("mse", "max"):
            raise PccError(f"{source}: unknown quantization method {method!r}")
        layers: list[Layer] = []
        for i, ld in enumerate(d["layers"]):
            kind = ld.get("type") if isinstance(ld, dict) else None
            try:
                if not isinstance(ld, dict):
                    raise ValueError("a layer is a JSON object")
                if kind not in fmt_types():
                    raise ValueError(f"unknown layer type {kind!r} (known: {', '.join(fmt_types())})")
                layer = layer_from_dict(ld)
            except (KeyError, ValueError, TypeError) as exc:
                msg = f"missing key {exc}" if isinstance(exc, KeyError) else str(exc)
                raise PccError(f"{source}: layer {i} ({kind}): {msg}") from None
            if isinstance(layer, _PentaryWeights):
                layer.per_channel, layer.quant_method = per_channel, method
            layers.append(layer)
        if "input_shape" in d:
            input_shape = d["input_shape"]
        elif "input_dim" in d:
            input_shape = [d["input_dim"]]
        elif layers and isinstance(layers[0], PentaryLinear):
            input_shape = [layers[0].in_features]
        else:
            raise PccError(f"{source}: missing 'input_shape' (or 'input_dim')")
        try:
            vocabulary = read_vocabulary(d.get("tokenizer"))
            model = cls(layers=layers, input_shape=input_shape, output_dim=d.get("output_dim"), vocabulary=vocabulary)
        except (ValueError, TypeError) as exc:
            raise PccError(f"{source}: {exc}") from None
        for layer in model.weight_layers():  # nested ones too (an attention's projections)
            layer.per_channel, layer.quant_method = per_channel, method
        if "input_dim" in d and int(d["input_dim"]) != model.input_dim:
            raise PccError(f"{source}: input_dim {d['input_dim']} does not match input_shape {list(input_shape)}")
        return model

    def save(self, path: str | Path, include_float: bool = True) -> None:
        """Write the model JSON atomically (nothing is written if any value is not finite)."""
        fmt.write_json(path, self.checked_dict(path, include_float))

    def checked_dict(self, path: str | Path, include_float: bool = True) -> dict[str, Any]:
        """:meth:`to_dict`, with non-finite parameters reported as one PccError."""
        try:
            return self.to_dict(include_float)
        except ValueError as exc:
            raise PccError(f"cannot save model to {path}: {exc} (training diverged?)") from None

    @classmethod
    def load(cls, path: str | Path) -> PentaryModel:
        return cls.from_dict(fmt.read_json(path), source=str(path))

    def summary(self) -> str:
        lines = [f"PentaryModel input {list(self.input_shape)} -> {self.output_dim} ({self.num_params()} params)"]
        shape = self.input_shape
        for i, layer in enumerate(self.layers):
            shape = layer.output_shape(shape)
            lines.append(f"  {i:2d} {layer!r:60s} -> {list(shape)}")
        return "\n".join(lines)

    def __repr__(self) -> str:
        shape, n = list(self.input_shape), len(self.layers)
        return f"PentaryModel(input_shape={shape}, output_dim={self.output_dim}, layers={n})"


def read_vocabulary(tok: Any) -> str | None:
    """The ``tokenizer`` key's vocabulary as a string (character ``i`` has id ``i``); ``None`` when absent."""
    if tok is None:
        return None
    if not isinstance(tok, dict) or tok.get("type") != "characters":
        raise ValueError("'tokenizer' must be an object with type 'characters'")
    vocab = tok.get("vocabulary")
    if not isinstance(vocab, list) or not vocab or not all(isinstance(c, str) and len(c) == 1 for c in vocab):
        raise ValueError("'tokenizer.vocabulary' must be a non-empty list of single characters")
    if len(set(vocab)) != len(vocab):
        raise ValueError("'tokenizer.vocabulary' lists a character twice")
    return "".join(vocab)


def _check_vocabulary(vocabulary: str, first: Layer | None) -> None:
    if not isinstance(first, PentaryEmbedding):
        raise ValueError("a vocabulary needs a model that starts with an embedding layer")
    if len(vocabulary) != first.num_embeddings or len(set(vocabulary)) != len(vocabulary):
        raise ValueError(
            f"the vocabulary has {len(vocabulary)} distinct characters, the embedding {first.num_embeddings} rows"
        )


def fmt_types() -> list[str]:
    from pcc.trainer.layers import LAYER_TYPES

    return list(LAYER_TYPES)
