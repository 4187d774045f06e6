"""Transformer layers for the pentary trainer: token and positional embeddings, LayerNorm, GELU, multi-head
self-attention and the residual block, with exact vectorised backward passes.

Activations are float32 ``[B, T, D]`` (batch, positions, features); token ids are integers ``[B, T]``.  The
weight tables and matrices are pentary in the forward pass (quantization-aware training, as in
:mod:`pcc.trainer.layers`): the token table and the positional table are quantized per row (one scale per token,
one per position), the attention's projections per output channel; the gradient reaches the float shadow
weights straight through the rounding.  LayerNorm's gain and shift and all biases stay float.

Semantics (the model JSON format, ``docs/trainer.md``):

* ``embedding``: ``y[b, t] = E[ids[b, t]]`` with ``E = q * s[:, None]`` (``[V, D]``);
* ``positional_embedding``: ``y[b, t] = x[b, t] + P[t]`` for ``t < T <= context`` (``P`` ``[context, D]``);
* ``layernorm``: over the last axis, ``(x - mean) / sqrt(var + eps) * gamma + beta`` (biased variance);
* ``gelu``: ``x * Phi(x)``, or the tanh formula with ``approximate = "tanh"`` (``torch.nn.GELU``);
* ``attention``: ``qkv = x @ Wqkv.T + bqkv`` split into query, key and value (``dim`` columns each, head ``h``
  owning columns ``h * dh .. (h + 1) * dh - 1`` of each), ``softmax(q k^T / sqrt(dh) + mask) v`` per head
  (``mask``: minus infinity where the key comes after the query when ``causal``), heads concatenated, then
  ``@ Wout.T + bout``;
* ``residual``: ``y = x + f(x)`` for the chain ``f`` of its layers.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from pcc.trainer.layers import F32, Layer, Param, PentaryLinear, _floats, _PentaryWeights

__all__ = [
    "PentaryEmbedding",
    "PositionalEmbedding",
    "LayerNorm",
    "GELU",
    "MultiHeadAttention",
    "Residual",
    "TRANSFORMER_LAYER_TYPES",
    "MAX_NESTING",
]

MAX_NESTING = 4  # residual blocks inside residual blocks, at most (a file cannot recurse without bound)
_SQRT_2_OVER_PI = F32(math.sqrt(2.0 / math.pi))


def _size(d: dict[str, Any], key: str, *, minimum: int = 1) -> int:
    v = d[key]
    if isinstance(v, bool) or not isinstance(v, int | float) or v != int(v) or int(v) < minimum:
        raise ValueError(f"{key!r} must be an integer >= {minimum}, got {v!r}")
    return int(v)


def declared_table(d: dict[str, Any], shape: tuple[int, ...]) -> None:
    """Check, before anything of ``shape`` is allocated, that the layer's weight list really has that shape's
    leading lengths (a file's declared sizes are bounded by the data it holds)."""
    for key in ("weight_float", "weight_pentary", "weights_pentary", "weights"):
        if key in d and d[key] is not None:
            v, found = d[key], []
            while isinstance(v, list) and len(found) <= len(shape):
                found.append(len(v))
                v = v[0] if v else None
            if found != list(shape):
                raise ValueError(f"{key} has shape {found}, expected {list(shape)}")
            return
    raise ValueError("no weights: expected weight_pentary + weight_scale (or weight_float)")


def _normal(rng: np.random.Generator, shape: tuple[int, ...], std: float) -> np.ndarray:
    return (rng.standard_normal(shape) * std).astype(F32)


class _PentaryTable(_PentaryWeights):
    """A pentary table ``[rows, cols]`` with one scale per row and no bias (the token and position tables);
    ``sizes`` names the two lengths in the layer's JSON object and in error messages."""

    sizes: tuple[str, str]
    article: str

    def __init__(
        self,
        rows: int,
        cols: int,
        *,
        per_channel: bool = True,
        quant_method: str = "mse",
        init_std: float = 0.02,
        rng: np.random.Generator | None = None,
    ) -> None:
        if rows < 1 or cols < 1:
            raise ValueError(f"{self.article} needs {self.sizes[0]} >= 1 and {self.sizes[1]} >= 1")
        self.rows, self.cols = int(rows), int(cols)
        self.init_std = float(init_std)
        self.weight = Param("weight", np.zeros((self.rows, self.cols), F32), decay=False)
        self.bias = None
        self._init_quant(per_channel, quant_method)
        self.reset_parameters(rng if rng is not None else np.random.default_rng(0))

    def reset_parameters(self, rng: np.random.Generator) -> None:
        self.weight.value[...] = _normal(rng, self.weight.value.shape, self.init_std)
        self.reset_quant_state()

    def to_dict(self, include_float: bool = True) -> dict[str, Any]:
        d: dict[str, Any] = {"type": self.type, self.sizes[0]: self.rows, self.sizes[1]: self.cols}
        self._export_weights(d, include_float)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> _PentaryTable:
        shape = (_size(d, cls.sizes[0]), _size(d, cls.sizes[1]))
        declared_table(d, shape)
        layer = cls(*shape)
        layer._import_weights(d, shape)
        return layer


class PentaryEmbedding(_PentaryTable):
    """Token table ``[num_embeddings, embedding_dim]``, pentary with one scale per row: ids -> vectors."""

    type = "embedding"
    sizes = ("num_embeddings", "embedding_dim")
    article = "an embedding"
    need_input_grad = False

    @property
    def num_embeddings(self) -> int:
        return self.rows

    @property
    def embedding_dim(self) -> int:
        return self.cols

    def forward(self, x: np.ndarray, training: bool = False, quantized: bool = True) -> np.ndarray:
        ids = np.asarray(x)
        if not np.issubdtype(ids.dtype, np.integer):
            if not np.all(ids == np.rint(ids)):
                raise ValueError(f"embedding ids must be integers, got dtype {ids.dtype}")
        ids = ids.astype(np.int64)
        if ids.size and (ids.min() < 0 or ids.max() >= self.rows):
            raise ValueError(f"embedding ids must be in 0..{self.rows - 1}")
        w = self.effective_weight(training, quantized)
        if training:
            self._ids = ids
        return w[ids]

    def backward(self, grad: np.ndarray) -> np.ndarray:
        g = np.asarray(grad, F32).reshape(-1, self.cols)
        ids = self._ids.reshape(-1)
        if self.rows <= 1024:  # one-hot product: one BLAS call instead of a scatter
            onehot = (ids[None, :] == np.arange(self.rows)[:, None]).astype(F32)
            np.matmul(onehot, g, out=self.weight.grad)
        else:
            self.weight.grad[...] = 0
            np.add.at(self.weight.grad, ids, g)
        return np.zeros((0,), F32)

    def output_shape(self, shape: tuple[int, ...]) -> tuple[int, ...]:
        if len(shape) != 1:
            raise ValueError(f"embedding expects a sequence of token ids [T] per sample, got {list(shape)}")
        return (*shape, self.cols)

    def __repr__(self) -> str:
        return f"PentaryEmbedding({self.rows}, {self.cols})"


class PositionalEmbedding(_PentaryTable):
    """Learned absolute positions: ``x[:, t] + P[t]``, ``P`` ``[context, dim]`` pentary with one scale per row."""

    type = "positional_embedding"
    sizes = ("context", "dim")
    article = "a positional embedding"

    @property
    def context(self) -> int:
        return self.rows

    @property
    def dim(self) -> int:
        return self.cols

    def forward(self, x: np.ndarray, training: bool = False, quantized: bool = True) -> np.ndarray:
        t = x.shape[-2]
        if t > self.rows:
            raise ValueError(f"sequence of {t} positions is longer than the context of {self.rows}")
        w = self.effective_weight(training, quantized)
        if training:
            self._t = t
        return x + w[:t]

    def backward(self, grad: np.ndarray) -> np.ndarray:
        self.weight.grad[...] = 0
        self.weight.grad[: self._t] = grad.reshape(-1, self._t, self.cols).sum(axis=0)
        return grad

    def output_shape(self, shape: tuple[int, ...]) -> tuple[int, ...]:
        if len(shape) != 2 or shape[1] != self.cols or shape[0] > self.rows:
            raise ValueError(f"positional embedding expects [T <= {self.rows}, {self.cols}], got {list(shape)}")
        return shape

    def __repr__(self) -> str:
        return f"PositionalEmbedding(context={self.rows}, dim={self.cols})"


class LayerNorm(Layer):
    """Normalisation over the last axis (``torch.nn.LayerNorm(dim, eps)``); float gain and shift."""

    type = "layernorm"

    def __init__(self, dim: int, eps: float = 1e-5) -> None:
        if dim < 1:
            raise ValueError("layernorm needs dim >= 1")
        self.dim, self.eps = int(dim), float(eps)
        self.gamma = Param("gamma", np.ones(self.dim, F32))
        self.beta = Param("beta", np.zeros(self.dim, F32))

    def params(self) -> list[Param]:
        return [self.gamma, self.beta]

    def reset_parameters(self, rng: np.random.Generator) -> None:
        self.gamma.value[...] = 1
        self.beta.value[...] = 0

    def forward(self, x: np.ndarray, training: bool = False, quantized: bool = True) -> np.ndarray:
        mean = x.mean(axis=-1, keepdims=True)
        xc = x - mean
        var = np.mean(xc * xc, axis=-1, keepdims=True)
        inv = (1.0 / np.sqrt(var + F32(self.eps))).astype(F32)
        xhat = xc * inv
        if training:
            self._xhat, self._inv = xhat, inv
        return xhat * self.gamma.value + self.beta.value

    def backward(self, grad: np.ndarray) -> np.ndarray:
        xhat, inv = self._xhat, self._inv
        g2 = grad.reshape(-1, self.dim)
        self.beta.grad[...] = g2.sum(axis=0)
        self.gamma.grad[...] = (g2 * xhat.reshape(-1, self.dim)).sum(axis=0)
        gx = grad * self.gamma.value
        return inv * (gx - gx.mean(axis=-1, keepdims=True) - xhat * (gx * xhat).mean(axis=-1, keepdims=True))

    def output_shape(self, shape: tuple[int, ...]) -> tuple[int, ...]:
        if not shape or shape[-1] != self.dim:
            raise ValueError(f"layernorm over {self.dim} features, got shape {list(shape)}")
        return shape

    def to_dict(self, include_float: bool = True) -> dict[str, Any]:
        return {
            "type": self.type,
            "dim": self.dim,
            "eps": self.eps,
            "gamma": _floats(self.gamma.value),
            "beta": _floats(self.beta.value),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> LayerNorm:
        from pcc.trainer.model_format import read_vector

        dim = _size(d, "dim")
        eps = d.get("eps", 1e-5)
        if isinstance(eps, bool) or not isinstance(eps, int | float) or not 0 < eps < 1:
            raise ValueError(f"'eps' must be a number in (0, 1), got {eps!r}")
        for key in ("gamma", "beta"):
            if not isinstance(d.get(key), list) or len(d[key]) != dim:
                raise ValueError(f"{key!r} must be a list of {dim} numbers")
        layer = cls(dim, float(eps))
        layer.gamma.value[...] = read_vector(d, "gamma", dim)
        layer.beta.value[...] = read_vector(d, "beta", dim)
        return layer

    def __repr__(self) -> str:
        return f"LayerNorm({self.dim}, eps={self.eps})"


def _erf(x: np.ndarray) -> np.ndarray:
    from scipy.special import erf

    return erf(x).astype(F32)


class GELU(Layer):
    """``x * Phi(x)`` (``approximate="none"``, the erf form) or the tanh formula (``"tanh"``)."""

    type = "gelu"

    def __init__(self, approximate: str = "tanh") -> None:
        if approximate not in ("none", "tanh"):
            raise ValueError(f"gelu approximate must be 'none' or 'tanh', got {approximate!r}")
        self.approximate = approximate

    def forward(self, x: np.ndarray, training: bool = False, quantized: bool = True) -> np.ndarray:
        if self.approximate == "tanh":
            t = x * x  # in place, few temporaries: this is the widest activation of a transformer block
            t *= F32(0.044715) * _SQRT_2_OVER_PI
            t += _SQRT_2_OVER_PI
            t *= x
            np.tanh(t, out=t)
            if training:
                self._x, self._t = x, t
            y = t + F32(1)
            y *= x
            y *= F32(0.5)
            return y
        cdf = F32(0.5) * (F32(1) + _erf(x * F32(1 / math.sqrt(2))))
        if training:
            self._x, self._t = x, cdf
        return x * cdf

    def backward(self, grad: np.ndarray) -> np.ndarray:
        x, t = self._x, self._t
        if self.approximate == "tanh":
            # d/dx = 0.5 (1 + t) + 0.5 x (1 - t^2) c (1 + 3 a x^2)
            du = x * x
            du *= F32(3 * 0.044715) * _SQRT_2_OVER_PI
            du += _SQRT_2_OVER_PI
            du *= x
            tt = t * t
            np.subtract(F32(1), tt, out=tt)
            du *= tt
            du += t
            du += F32(1)
            du *= F32(0.5)
            du *= grad
            return du
        pdf = np.exp(F32(-0.5) * x * x) * F32(1 / math.sqrt(2 * math.pi))
        return grad * (t + x * pdf)

    def to_dict(self, include_float: bool = True) -> dict[str, Any]:
        return {"type": self.type, "approximate": self.approximate}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> GELU:
        return cls(str(d.get("approximate", "none")))

    def __repr__(self) -> str:
        return f"GELU(approximate={self.approximate!r})"


_MASKS: dict[int, np.ndarray] = {}


def _causal_mask(t: int) -> np.ndarray:
    """``[t, t]``: 0 where key ``j <= i`` (query ``i``), minus infinity after it."""
    m = _MASKS.get(t)
    if m is None:
        m = np.where(np.triu(np.ones((t, t), bool), 1), F32(-np.inf), F32(0))
        m.setflags(write=False)
        _MASKS[t] = m
    return m


class MultiHeadAttention(Layer):
    """Multi-head scaled dot-product self-attention (causal by default) with pentary projections."""

    type = "attention"

    def __init__(
        self,
        dim: int,
        heads: int,
        causal: bool = True,
        *,
        per_channel: bool = True,
        quant_method: str = "mse",
        rng: np.random.Generator | None = None,
    ) -> None:
        if dim < 1 or heads < 1 or dim % heads:
            raise ValueError(f"attention needs heads >= 1 dividing dim, got dim {dim}, heads {heads}")
        self.dim, self.heads, self.causal = int(dim), int(heads), bool(causal)
        self.head_dim = self.dim // self.heads
        self.qkv = PentaryLinear(dim, 3 * dim, per_channel=per_channel, quant_method=quant_method)
        self.out = PentaryLinear(dim, dim, per_channel=per_channel, quant_method=quant_method)
        self.reset_parameters(rng if rng is not None else np.random.default_rng(0))

    def sublayers(self) -> list[Layer]:
        return [self.qkv, self.out]

    def params(self) -> list[Param]:
        return self.qkv.params() + self.out.params()

    def reset_parameters(self, rng: np.random.Generator) -> None:
        for lin in (self.qkv, self.out):
            lin.weight.value[...] = _normal(rng, lin.weight.value.shape, 0.02)
            assert lin.bias is not None
            lin.bias.value[...] = 0
            lin.reset_quant_state()

    def reset_quant_state(self) -> None:
        self.qkv.reset_quant_state()
        self.out.reset_quant_state()

    def forward(self, x: np.ndarray, training: bool = False, quantized: bool = True) -> np.ndarray:
        b, t, d = x.shape
        h, dh = self.heads, self.head_dim
        qkv = self.qkv.forward(x, training, quantized).reshape(b, t, 3, h, dh).transpose(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]  # [B, H, T, dh]
        s = np.matmul(q, k.transpose(0, 1, 3, 2))
        s *= F32(1.0 / math.sqrt(dh))
        if self.causal and t > 1:
            s += _causal_mask(t)
        s -= s.max(axis=-1, keepdims=True)
        p = np.exp(s, out=s)
        p /= p.sum(axis=-1, keepdims=True)
        o = np.matmul(p, v).transpose(0, 2, 1, 3).reshape(b, t, d)
        if training:
            self._q, self._k, self._v, self._p = q, k, v, p
        return self.out.forward(o, training, quantized)

    def backward(self, grad: np.ndarray) -> np.ndarray:
        q, k, v, p = self._q, self._k, self._v, self._p
        b, h, t, dh = q.shape
        go = self.out.backward(grad).reshape(b, t, h, dh).transpose(0, 2, 1, 3)
        dv = np.matmul(p.transpose(0, 1, 3, 2), go)
        dp = np.matmul(go, v.transpose(0, 1, 3, 2))
        ds = p * (dp - (dp * p).sum(axis=-1, keepdims=True))
        ds *= F32(1.0 / math.sqrt(dh))
        dq = np.matmul(ds, k)
        dk = np.matmul(ds.transpose(0, 1, 3, 2), q)
        dqkv = np.empty((b, t, 3, h, dh), F32)
        for j, part in enumerate((dq, dk, dv)):
            dqkv[:, :, j] = part.transpose(0, 2, 1, 3)
        return self.qkv.backward(dqkv.reshape(b, t, 3 * self.dim))

    def output_shape(self, shape: tuple[int, ...]) -> tuple[int, ...]:
        if len(shape) != 2 or shape[1] != self.dim:
            raise ValueError(f"attention expects [T, {self.dim}] per sample, got {list(shape)}")
        return shape

    def to_dict(self, include_float: bool = True) -> dict[str, Any]:
        return {
            "type": self.type,
            "dim": self.dim,
            "heads": self.heads,
            "causal": self.causal,
            "qkv": self.qkv.to_dict(include_float),
            "out": self.out.to_dict(include_float),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> MultiHeadAttention:
        dim, heads = _size(d, "dim"), _size(d, "heads")
        causal = d.get("causal", True)
        if not isinstance(causal, bool):
            raise ValueError(f"'causal' must be true or false, got {causal!r}")
        if dim % heads:
            raise ValueError(f"heads ({heads}) must divide dim ({dim})")
        subs = {}
        for key, rows in (("qkv", 3 * dim), ("out", dim)):
            sd = d.get(key)
            if not isinstance(sd, dict):
                raise ValueError(f"missing {key!r} projection object")
            if sd.get("in_features") != dim or sd.get("out_features") != rows or sd.get("use_bias", True) is not True:
                raise ValueError(f"{key!r} must be a linear layer {dim} -> {rows} with a bias")
            declared_table(sd, (rows, dim))
            subs[key] = sd
        layer = cls(dim, heads, causal)
        for key in ("qkv", "out"):
            lin = getattr(layer, key)
            try:
                lin._import_weights(subs[key], lin.weight.value.shape)
            except ValueError as exc:
                raise ValueError(f"{key}: {exc}") from None
        return layer

    def __repr__(self) -> str:
        return f"MultiHeadAttention(dim={self.dim}, heads={self.heads}, causal={self.causal})"


class Residual(Layer):
    """``x + f(x)`` for a chain ``f`` of layers that keeps the shape (a pre-norm transformer sub-block)."""

    type = "residual"

    def __init__(self, layers: list[Layer]) -> None:
        if not layers:
            raise ValueError("a residual block needs at least one layer")
        self.layers = list(layers)

    def sublayers(self) -> list[Layer]:
        return self.layers

    def params(self) -> list[Param]:
        return [p for layer in self.layers for p in layer.params()]

    def reset_parameters(self, rng: np.random.Generator) -> None:
        for layer in self.layers:
            layer.reset_parameters(rng)

    def reset_quant_state(self) -> None:
        for layer in self.layers:
            layer.reset_quant_state()

    def forward(self, x: np.ndarray, training: bool = False, quantized: bool = True) -> np.ndarray:
        y = x
        for layer in self.layers:
            y = layer.forward(y, training, quantized)
        return x + y

    def backward(self, grad: np.ndarray) -> np.ndarray:
        g = grad
        for layer in reversed(self.layers):
            g = layer.backward(g)
        return grad + g

    def output_shape(self, shape: tuple[int, ...]) -> tuple[int, ...]:
        inner = shape
        for i, layer in enumerate(self.layers):
            try:
                inner = layer.output_shape(inner)
            except ValueError as exc:
                raise ValueError(f"sub-layer {i} ({layer.type}): {exc}") from None
        if inner != shape:
            raise ValueError(f"the block maps {list(shape)} to {list(inner)}; a residual block keeps the shape")
        return shape

    def to_dict(self, include_float: bool = True) -> dict[str, Any]:
        return {"type": self.type, "layers": [layer.to_dict(include_float) for layer in self.layers]}

    @classmethod
    def from_dict(cls, d: dict[str, Any], depth: int = 0) -> Residual:
        from pcc.trainer.layers import LAYER_TYPES

        if depth >= MAX_NESTING:
            raise ValueError(f"residual blocks nested more than {MAX_NESTING} deep")
        subs = d.get("layers")
        if not isinstance(subs, list) or not subs:
            raise ValueError("'layers' must be a non-empty list of layer objects")
        layers: list[Layer] = []
        for i, sd in enumerate(subs):
            kind = sd.get("type") if isinstance(sd, dict) else None
            try:
                if kind not in LAYER_TYPES:
                    raise ValueError(f"unknown layer type {kind!r}")
                if kind == cls.type:
                    layers.append(cls.from_dict(sd, depth + 1))
                else:
                    layers.append(LAYER_TYPES[kind].from_dict(sd))
            except KeyError as exc:
                raise ValueError(f"sub-layer {i} ({kind}): missing key {exc}") from None
            except (ValueError, TypeError) as exc:
                raise ValueError(f"sub-layer {i} ({kind}): {exc}") from None
        return cls(layers)

    def __repr__(self) -> str:
        return f"Residual({', '.join(layer.type for layer in self.layers)})"


TRANSFORMER_LAYER_TYPES: tuple[type[Layer], ...] = (
    PentaryEmbedding,
    PositionalEmbedding,
    LayerNorm,
    GELU,
    MultiHeadAttention,
    Residual,
)
