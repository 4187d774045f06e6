"""Pentary layers: vectorised NumPy forward and backward passes with quantization-aware training.

Every layer works on float32 batches (``[B, features]`` or ``[B, C, H, W]``).  Weight layers
(:class:`PentaryLinear`, :class:`PentaryConv2D`) keep float *shadow* weights; with ``quantized=True`` the forward
pass uses the pentary weights ``q * s`` from :func:`pcc.quant.quantize_weights` (pents ``q`` in -2..2, one
float32 scale ``s`` per output channel), and the backward pass hands the gradient straight through the rounding
to the shadow weights (the straight-through estimator).  While training, the scale is re-derived from the shadow
weights on every step: a full error-minimising search on the first step after :meth:`Layer.reset_quant_state`
(the trainer calls it at every epoch start) and warm-started refinement steps in between.  Outside training the
pents and scales are always the full search's, a pure function of the shadow weights, which is also what
:meth:`to_dict` exports.

Biases, BatchNorm parameters and running statistics stay float: a pentary accelerator keeps biases at
accumulator precision, and the compiler folds BatchNorm into the preceding weights (with per-channel scales
the fold changes only the scales, never the pents).

Convolution uses im2col through ``sliding_window_view`` (one copy, one matrix product); its backward and the
max-pool backward loop over the kernel offsets (``kh * kw`` slice additions), never over pixels.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from pcc import quant

__all__ = [
    "Param",
    "Layer",
    "PentaryLinear",
    "PentaryConv2D",
    "PentaryReLU",
    "PentaryMaxPool2D",
    "PentaryBatchNorm",
    "Flatten",
    "Dropout",
    "Embedding",
    "LAYER_TYPES",
    "layer_from_dict",
    "pair",
]

F32 = np.float32


def pair(v: int | tuple[int, int] | list[int]) -> tuple[int, int]:
    """``3 -> (3, 3)``; a pair stays a pair."""
    if isinstance(v, int | np.integer):
        return int(v), int(v)
    a, b = v
    return int(a), int(b)


def _pad2d(x: np.ndarray, ph: int, pw: int, value: float = 0.0) -> np.ndarray:
    """``x`` ([B, C, H, W]) with ``ph`` rows and ``pw`` columns of ``value`` on each side (faster than np.pad)."""
    if not ph and not pw:
        return x
    b, c, h, w = x.shape
    out = np.full((b, c, h + 2 * ph, w + 2 * pw), value, dtype=x.dtype)
    out[:, :, ph : ph + h, pw : pw + w] = x
    return out


def _floats(a: np.ndarray) -> list[Any]:
    return np.asarray(a, dtype=F32).tolist()


class Param:
    """A trainable float32 tensor and its gradient (both may be views into the model's flat buffers)."""

    __slots__ = ("name", "value", "grad", "decay")

    def __init__(self, name: str, value: np.ndarray, decay: bool = False) -> None:
        self.name = name
        self.value = np.ascontiguousarray(value, dtype=F32)
        self.grad = np.zeros_like(self.value)
        self.decay = decay  # weight decay applies (weights yes; biases and BatchNorm no)

    def __repr__(self) -> str:
        return f"Param({self.name!r}, shape={self.value.shape})"


class Layer:
    """Base class: ``forward`` caches what ``backward`` needs when ``training`` is true."""

    type: str = ""
    need_input_grad: bool = True  # the model clears it on the first layer (no gradient w.r.t. the data)

    def params(self) -> list[Param]:
        return []

    def sublayers(self) -> list[Layer]:
        """Layers nested inside this one (a residual block's chain, an attention's projections)."""
        return []

    def reset_parameters(self, rng: np.random.Generator) -> None:
        """Re-initialise the parameters from ``rng`` (no-op for parameterless layers)."""

    def reset_quant_state(self) -> None:
        """Forget cached quantization state (the next training step does a full scale search)."""

    def forward(self, x: np.ndarray, training: bool = False, quantized: bool = True) -> np.ndarray:
        raise NotImplementedError

    def backward(self, grad: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def output_shape(self, shape: tuple[int, ...]) -> tuple[int, ...]:
        """Per-sample output shape for a per-sample input ``shape``."""
        return shape

    def to_dict(self, include_float: bool = True) -> dict[str, Any]:
        return {"type": self.type}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Layer:
        return cls()

    def __call__(self, x: np.ndarray, training: bool = False, quantized: bool = True) -> np.ndarray:
        return self.forward(x, training, quantized)

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class _PentaryWeights(Layer):
    """Shared machinery of the weight layers: shadow weights, pentary forward weights, export."""

    weight: Param
    bias: Param | None

    def _init_quant(self, per_channel: bool, method: str) -> None:
        self.per_channel = per_channel
        self.quant_method = method
        self._train_scale: np.ndarray | None = None
        self._frozen: tuple[np.ndarray, np.ndarray] | None = None

    def params(self) -> list[Param]:
        return [self.weight] + ([self.bias] if self.bias is not None else [])

    def reset_quant_state(self) -> None:
        self._train_scale = None
        self._frozen = None

    def quantized(self) -> tuple[np.ndarray, np.ndarray]:
        """Pents (int8, weight layout) and scale of the current shadow weights (full search)."""
        if self._frozen is not None:
            return self._frozen
        q, s = quant.quantize_weights(self.weight.value, self.per_channel, 0, self.quant_method)
        return q, np.asarray(s, dtype=F32)

    def freeze_quant(self, frozen: bool) -> None:
        """While frozen, evaluation reuses one quantization of the (unchanging) weights."""
        self._frozen = None
        if frozen:
            self._frozen = self.quantized()

    def _scale_shape(self) -> tuple[int, ...]:
        return (-1,) + (1,) * (self.weight.value.ndim - 1)

    def effective_weight(self, training: bool, quantized: bool) -> np.ndarray:
        """The weights the forward pass multiplies by: shadow (float) or dequantized pents."""
        w = self.weight.value
        if not quantized:
            return w
        if training and self.quant_method == "mse" and self._train_scale is not None:
            q, s = quant.quantize_weights(w, self.per_channel, 0, "mse", init_scale=self._train_scale, refine_steps=2)
        else:
            q, s = self.quantized()
        s = np.asarray(s, dtype=F32)
        wq = q.astype(F32) * (s.reshape(self._scale_shape()) if s.ndim else s)
        if training:
            self._train_scale = s
            self._wq = wq
        return wq

    def pull_to_grid(self, strength: float) -> None:
        """Move the shadow weights a fraction ``strength`` of the way to the pentary weights of the last
        training forward pass (the trainer ramps this up at the end so that float and pentary agree)."""
        wq = getattr(self, "_wq", None)
        if wq is not None and strength > 0:
            w = self.weight.value
            w += np.float32(strength) * (wq - w)

    def _export_weights(self, d: dict[str, Any], include_float: bool) -> None:
        q, s = self.quantized()
        d["weight_pentary"] = q.tolist()
        d["weight_scale"] = s.tolist() if s.ndim else float(s)
        if self.bias is not None:
            b = self.bias.value
            bq, bs = quant.quantize_weights(b, per_channel=False)
            d["bias"] = _floats(b)
            d["bias_pentary"] = bq.tolist()
            d["bias_scale"] = float(bs)
        if include_float:
            d["weight_float"] = _floats(self.weight.value)

    def _import_weights(self, d: dict[str, Any], shape: tuple[int, ...]) -> None:
        from pcc.trainer.model_format import read_bias, read_weight

        self.weight.value[...] = read_weight(d, shape)
        if self.bias is not None:
            self.bias.value[...] = read_bias(d, shape[0])


class PentaryLinear(_PentaryWeights):
    """``y = x @ W.T + b`` with ``W`` of shape ``[out_features, in_features]``."""

    type = "linear"

    def __init__(
        self,
        in_features: int,
        out_features: int,
        use_bias: bool = True,
        *,
        per_channel: bool = True,
        quant_method: str = "mse",
        rng: np.random.Generator | None = None,
    ) -> None:
        self.in_features = int(in_features)
        self.out_features = int(out_features)
        self.use_bias = bool(use_bias)
        self.weight = Param("weight", np.zeros((self.out_features, self.in_features), F32), decay=True)
        self.bias = Param("bias", np.zeros(self.out_features, F32)) if use_bias else None
        self._init_quant(per_channel, quant_method)
        self.reset_parameters(rng if rng is not None else np.random.default_rng(0))

    def reset_parameters(self, rng: np.random.Generator) -> None:
        bound = np.sqrt(6.0 / self.in_features)  # He (Kaiming) uniform, for ReLU networks
        self.weight.value[...] = rng.uniform(-bound, bound, self.weight.value.shape)
        if self.bias is not None:
            self.bias.value[...] = 0
        self.reset_quant_state()

    def forward(self, x: np.ndarray, training: bool = False, quantized: bool = True) -> np.ndarray:
        w = self.effective_weight(training, quantized)
        y = x @ w.T
        if self.bias is not None:
            y += self.bias.value
        if training:
            self._x, self._w = x, w
        return y

    def backward(self, grad: np.ndarray) -> np.ndarray:
        g2 = grad.reshape(-1, self.out_features)  # [B, ..., out] -> rows: a per-position layer sums over both
        np.matmul(g2.T, self._x.reshape(-1, self.in_features), out=self.weight.grad)  # straight through
        if self.bias is not None:
            np.sum(g2, axis=0, out=self.bias.grad)
        return grad @ self._w if self.need_input_grad else grad

    def output_shape(self, shape: tuple[int, ...]) -> tuple[int, ...]:
        if len(shape) > 1 and shape[-1] == self.in_features:  # per position, like torch.nn.Linear
            return (*shape[:-1], self.out_features)
        if int(np.prod(shape)) != self.in_features:
            raise ValueError(f"linear layer expects {self.in_features} inputs, got shape {list(shape)}")
        return (self.out_features,)

    def to_dict(self, include_float: bool = True) -> dict[str, Any]:
        d: dict[str, Any] = {
            "type": self.type,
            "in_features": self.in_features,
            "out_features": self.out_features,
            "use_bias": self.use_bias,
        }
        self._export_weights(d, include_float)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> PentaryLinear:
        from pcc.trainer.transformer_layers import _size, declared_table

        fin, fout = _size(d, "in_features"), _size(d, "out_features")
        declared_table(d, (fout, fin))  # the file's sizes are checked against its data before allocating
        layer = cls(fin, fout, bool(d.get("use_bias", True)))
        layer._import_weights(d, (layer.out_features, layer.in_features))
        return layer

    def __repr__(self) -> str:
        return f"PentaryLinear({self.in_features}, {self.out_features}, use_bias={self.use_bias})"


class PentaryConv2D(_PentaryWeights):
    """2-D convolution (cross-correlation, like torch), weight ``[out, in, kh, kw]``, NCHW activations."""

    type = "conv2d"

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int | tuple[int, int],
        stride: int | tuple[int, int] = 1,
        padding: int | tuple[int, int] = 0,
        use_bias: bool = True,
        *,
        per_channel: bool = True,
        quant_method: str = "mse",
        rng: np.random.Generator | None = None,
    ) -> None:
        self.in_channels = int(in_channels)
        self.out_channels = int(out_channels)
        self.kernel_size = pair(kernel_size)
        self.stride = pair(stride)
        self.padding = pair(padding)
        self.use_bias = bool(use_bias)
        kh, kw = self.kernel_size
        shape = (self.out_channels, self.in_channels, kh, kw)
        self.weight = Param("weight", np.zeros(shape, F32), decay=True)
        self.bias = Param("bias", np.zeros(self.out_channels, F32)) if use_bias else None
        self._init_quant(per_channel, quant_method)
        self.reset_parameters(rng if rng is not None else np.random.default_rng(0))

    def reset_parameters(self, rng: np.random.Generator) -> None:
        fan_in = self.in_channels * self.kernel_size[0] * self.kernel_size[1]
        bound = np.sqrt(6.0 / fan_in)
        self.weight.value[...] = rng.uniform(-bound, bound, self.weight.value.shape)
        if self.bias is not None:
            self.bias.value[...] = 0
        self.reset_quant_state()

    def _out_hw(self, h: int, w: int) -> tuple[int, int]:
        (kh, kw), (sh, sw), (ph, pw) = self.kernel_size, self.stride, self.padding
        oh, ow = (h + 2 * ph - kh) // sh + 1, (w + 2 * pw - kw) // sw + 1
        if oh < 1 or ow < 1:
            raise ValueError(f"conv2d kernel {kh}x{kw} does not fit a {h}x{w} input with padding {ph},{pw}")
        return oh, ow

    def forward(self, x: np.ndarray, training: bool = False, quantized: bool = True) -> np.ndarray:
        b, c, h, w_ = x.shape
        (kh, kw), (sh, sw), (ph, pw) = self.kernel_size, self.stride, self.padding
        oh, ow = self._out_hw(h, w_)
        xp = _pad2d(x, ph, pw)
        win = sliding_window_view(xp, (kh, kw), axis=(2, 3))[:, :, : (oh - 1) * sh + 1 : sh, : (ow - 1) * sw + 1 : sw]
        cols = win.transpose(0, 2, 3, 1, 4, 5).reshape(b * oh * ow, c * kh * kw)
        wmat = self.effective_weight(training, quantized).reshape(self.out_channels, -1)
        y = cols @ wmat.T
        if self.bias is not None:
            y += self.bias.value
        if training:
            self._cols, self._wmat, self._xshape = cols, wmat, x.shape
        # an NCHW view of the channels-last product: no copy, and the element-wise layers that follow keep
        # this memory order, which makes the next im2col and this layer's backward cheaper
        return y.reshape(b, oh, ow, self.out_channels).transpose(0, 3, 1, 2)

    def backward(self, grad: np.ndarray) -> np.ndarray:
        b, c, h, w_ = self._xshape
        (kh, kw), (sh, sw), (ph, pw) = self.kernel_size, self.stride, self.padding
        oh, ow = grad.shape[2], grad.shape[3]
        g2 = grad.transpose(0, 2, 3, 1).reshape(-1, self.out_channels)
        self.weight.grad[...] = (g2.T @ self._cols).reshape(self.weight.value.shape)
        if self.bias is not None:
            np.sum(g2, axis=0, out=self.bias.grad)
        if not self.need_input_grad:
            return grad
        dcols = (g2 @ self._wmat).reshape(b, oh, ow, c, kh, kw)
        dxp = np.zeros((b, c, h + 2 * ph, w_ + 2 * pw), dtype=F32)
        for i in range(kh):
            for j in range(kw):
                dxp[:, :, i : i + sh * oh : sh, j : j + sw * ow : sw] += dcols[:, :, :, :, i, j].transpose(0, 3, 1, 2)
        return dxp[:, :, ph : ph + h, pw : pw + w_] if ph or pw else dxp

    def output_shape(self, shape: tuple[int, ...]) -> tuple[int, ...]:
        if len(shape) != 3 or shape[0] != self.in_channels:
            raise ValueError(f"conv2d expects [{self.in_channels}, H, W] inputs, got {list(shape)}")
        return (self.out_channels, *self._out_hw(shape[1], shape[2]))

    def to_dict(self, include_float: bool = True) -> dict[str, Any]:
        d: dict[str, Any] = {
            "type": self.type,
            "in_channels": self.in_channels,
            "out_channels": self.out_channels,
            "kernel_size": list(self.kernel_size),
            "stride": list(self.stride),
            "padding": list(self.padding),
            "use_bias": self.use_bias,
        }
        self._export_weights(d, include_float)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> PentaryConv2D:
        layer = cls(
            int(d["in_channels"]),
            int(d["out_channels"]),
            pair(d["kernel_size"]),
            pair(d.get("stride", 1)),
            pair(d.get("padding", 0)),
            bool(d.get("use_bias", True)),
        )
        layer._import_weights(d, layer.weight.value.shape)
        return layer

    def __repr__(self) -> str:
        return (
            f"PentaryConv2D({self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
            f"stride={self.stride}, padding={self.padding})"
        )


class PentaryReLU(Layer):
    """``max(x, 0)``."""

    type = "relu"

    def forward(self, x: np.ndarray, training: bool = False, quantized: bool = True) -> np.ndarray:
        y = np.maximum(x, 0)
        if training:
            self._mask = x > 0
        return y

    def backward(self, grad: np.ndarray) -> np.ndarray:
        return grad * self._mask


class PentaryMaxPool2D(Layer):
    """Max pooling over ``kernel_size`` windows (stride defaults to the kernel size; padding pads with -inf)."""

    type = "maxpool2d"

    def __init__(
        self,
        kernel_size: int | tuple[int, int] = 2,
        stride: int | tuple[int, int] | None = None,
        padding: int | tuple[int, int] = 0,
    ) -> None:
        self.kernel_size = pair(kernel_size)
        self.stride = pair(stride) if stride is not None else self.kernel_size
        self.padding = pair(padding)

    def _out_hw(self, h: int, w: int) -> tuple[int, int]:
        (kh, kw), (sh, sw), (ph, pw) = self.kernel_size, self.stride, self.padding
        oh, ow = (h + 2 * ph - kh) // sh + 1, (w + 2 * pw - kw) // sw + 1
        if oh < 1 or ow < 1:
            raise ValueError(f"maxpool2d window {kh}x{kw} does not fit a {h}x{w} input")
        return oh, ow

    def forward(self, x: np.ndarray, training: bool = False, quantized: bool = True) -> np.ndarray:
        b, c, h, w_ = x.shape
        (kh, kw), (sh, sw), (ph, pw) = self.kernel_size, self.stride, self.padding
        oh, ow = self._out_hw(h, w_)
        xp = _pad2d(x, ph, pw, -np.inf)
        views = [
            xp[:, :, i : i + sh * (oh - 1) + 1 : sh, j : j + sw * (ow - 1) + 1 : sw]
            for i in range(kh)
            for j in range(kw)
        ]
        y = views[0]
        for v in views[1:]:
            y = np.maximum(y, v)
        if y is views[0]:
            y = y.copy()
        # index of the (first, as torch) window element holding the maximum, for the backward pass
        idx = np.full(y.shape, len(views) - 1, np.int8 if len(views) < 128 else np.int32)
        for n in range(len(views) - 2, -1, -1):
            np.copyto(idx, n, where=views[n] == y)
        if training:
            self._idx, self._xshape = idx, x.shape
        return y

    def backward(self, grad: np.ndarray) -> np.ndarray:
        b, c, h, w_ = self._xshape
        (kh, kw), (sh, sw), (ph, pw) = self.kernel_size, self.stride, self.padding
        oh, ow = grad.shape[2], grad.shape[3]
        dxp = np.zeros((b, c, h + 2 * ph, w_ + 2 * pw), dtype=F32)
        for i in range(kh):
            for j in range(kw):
                dxp[:, :, i : i + sh * oh : sh, j : j + sw * ow : sw] += grad * (self._idx == i * kw + j)
        return dxp[:, :, ph : ph + h, pw : pw + w_] if ph or pw else dxp

    def output_shape(self, shape: tuple[int, ...]) -> tuple[int, ...]:
        if len(shape) != 3:
            raise ValueError(f"maxpool2d expects [C, H, W] inputs, got {list(shape)}")
        return (shape[0], *self._out_hw(shape[1], shape[2]))

    def to_dict(self, include_float: bool = True) -> dict[str, Any]:
        return {
            "type": self.type,
            "kernel_size": list(self.kernel_size),
            "stride": list(self.stride),
            "padding": list(self.padding),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> PentaryMaxPool2D:
        return cls(pair(d["kernel_size"]), pair(d.get("stride", d["kernel_size"])), pair(d.get("padding", 0)))

    def __repr__(self) -> str:
        return f"PentaryMaxPool2D(kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding})"


class PentaryBatchNorm(Layer):
    """Batch normalisation over the channel axis 1 of ``[B, C]`` or ``[B, C, H, W]`` (torch semantics).

    Training normalises with the batch statistics and updates the running ones
    (``running = (1 - momentum) * running + momentum * batch``, the variance unbiased); evaluation uses the
    running statistics.  ``gamma`` and ``beta`` stay float.
    """

    type = "batchnorm"

    def __init__(self, num_features: int, eps: float = 1e-5, momentum: float = 0.1) -> None:
        self.num_features = int(num_features)
        self.eps = float(eps)
        self.momentum = float(momentum)
        self.gamma = Param("gamma", np.ones(self.num_features, F32))
        self.beta = Param("beta", np.zeros(self.num_features, F32))
        self.running_mean = np.zeros(self.num_features, F32)
        self.running_var = np.ones(self.num_features, F32)

    def params(self) -> list[Param]:
        return [self.gamma, self.beta]

    def reset_parameters(self, rng: np.random.Generator) -> None:
        self.gamma.value[...] = 1
        self.beta.value[...] = 0
        self.running_mean[...] = 0
        self.running_var[...] = 1

    def _shape(self, x: np.ndarray) -> tuple[tuple[int, ...], tuple[int, ...]]:
        if x.ndim == 2:
            return (0,), (1, -1)
        return (0, *range(2, x.ndim)), (1, -1) + (1,) * (x.ndim - 2)

    def forward(self, x: np.ndarray, training: bool = False, quantized: bool = True) -> np.ndarray:
        axes, bshape = self._shape(x)
        if training:
            n = x.size // x.shape[1]
            mean = x.mean(axis=axes)
            xc = x - mean.reshape(bshape)
            var = np.mean(xc * xc, axis=axes)
            inv_std = (1.0 / np.sqrt(var + F32(self.eps))).astype(F32)
            xhat = xc * inv_std.reshape(bshape)
            m = F32(self.momentum)
            self.running_mean *= 1 - m
            self.running_mean += m * mean
            self.running_var *= 1 - m
            self.running_var += m * var * F32(n / max(n - 1, 1))
            self._xhat, self._inv_std, self._axes, self._bshape = xhat, inv_std, axes, bshape
            return xhat * self.gamma.value.reshape(bshape) + self.beta.value.reshape(bshape)
        inv_std = 1.0 / np.sqrt(self.running_var + F32(self.eps))
        a = (self.gamma.value * inv_std).astype(F32)
        c = (self.beta.value - self.running_mean * a).astype(F32)
        return x * a.reshape(bshape) + c.reshape(bshape)

    def backward(self, grad: np.ndarray) -> np.ndarray:
        axes, bshape, xhat = self._axes, self._bshape, self._xhat
        n = grad.size // grad.shape[1]
        dbeta = grad.sum(axis=axes)
        dgamma = (grad * xhat).sum(axis=axes)
        self.beta.grad[...] = dbeta
        self.gamma.grad[...] = dgamma
        scale = (self.gamma.value * self._inv_std / n).reshape(bshape)
        return scale * (n * grad - dbeta.reshape(bshape) - xhat * dgamma.reshape(bshape))

    def to_dict(self, include_float: bool = True) -> dict[str, Any]:
        return {
            "type": self.type,
            "num_features": self.num_features,
            "eps": self.eps,
            "momentum": self.momentum,
            "gamma": _floats(self.gamma.value),
            "beta": _floats(self.beta.value),
            "running_mean": _floats(self.running_mean),
            "running_var": _floats(self.running_var),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> PentaryBatchNorm:
        from pcc.trainer.model_format import read_vector

        n = int(d["num_features"])
        layer = cls(n, float(d.get("eps", 1e-5)), float(d.get("momentum", 0.1)))
        layer.gamma.value[...] = read_vector(d, "gamma", n)
        layer.beta.value[...] = read_vector(d, "beta", n)
        layer.running_mean[...] = read_vector(d, "running_mean", n)
        layer.running_var[...] = read_vector(d, "running_var", n)
        return layer

    def __repr__(self) -> str:
        return f"PentaryBatchNorm({self.num_features}, eps={self.eps}, momentum={self.momentum})"


class Flatten(Layer):
    """``[B, C, H, W] -> [B, C*H*W]`` in C-major (NCHW) order, like ``torch.flatten(x, 1)``."""

    type = "flatten"

    def forward(self, x: np.ndarray, training: bool = False, quantized: bool = True) -> np.ndarray:
        if training:
            self._shape = x.shape
        return x.reshape(x.shape[0], -1)

    def backward(self, grad: np.ndarray) -> np.ndarray:
        return grad.reshape(self._shape)

    def output_shape(self, shape: tuple[int, ...]) -> tuple[int, ...]:
        return (int(np.prod(shape)),)


class Dropout(Layer):
    """Inverted dropout: zeroes a fraction ``p`` while training and rescales; the identity at inference."""

    type = "dropout"

    def __init__(self, p: float = 0.5, rng: np.random.Generator | None = None) -> None:
        if not 0.0 <= p < 1.0:
            raise ValueError(f"dropout probability must be in [0, 1), got {p}")
        self.p = float(p)
        self.rng = rng if rng is not None else np.random.default_rng(0)

    def reset_parameters(self, rng: np.random.Generator) -> None:
        self.rng = np.random.default_rng(rng.integers(2**63))

    def forward(self, x: np.ndarray, training: bool = False, quantized: bool = True) -> np.ndarray:
        if not training or self.p == 0.0:
            self._mask = None
            return x
        self._mask = (self.rng.random(x.shape, dtype=F32) >= self.p) * F32(1.0 / (1.0 - self.p))
        return x * self._mask

    def backward(self, grad: np.ndarray) -> np.ndarray:
        return grad if self._mask is None else grad * self._mask

    def to_dict(self, include_float: bool = True) -> dict[str, Any]:
        return {"type": self.type, "p": self.p}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Dropout:
        return cls(float(d.get("p", 0.5)))

    def __repr__(self) -> str:
        return f"Dropout(p={self.p})"


class Embedding(Layer):
    """A learned lookup table ``weight [num_embeddings, embedding_dim]``: ids ``[...]`` -> ``[..., dim]``
    (``torch.nn.Embedding``).  Row ``padding_idx`` stays zero and gets no gradient.

    :meth:`pooled` is the text processor's pooling, the sum of a sample's token vectors divided by the square
    root of its token count (padding excluded); :meth:`pooled_backward` its exact gradient.  The backward
    passes accumulate with ``np.add.at`` (every occurrence of an id adds its row of the gradient), as torch's
    embedding backward does.  Not a model-JSON layer: it runs in the multimodal preprocessing, before the
    network (its table is saved with the preprocessing settings)."""

    type = "text_embedding"

    def __init__(self, num_embeddings: int, embedding_dim: int, padding_idx: int | None = 0) -> None:
        if num_embeddings < 1 or embedding_dim < 1:
            raise ValueError("an embedding needs num_embeddings >= 1 and embedding_dim >= 1")
        self.num_embeddings, self.embedding_dim = int(num_embeddings), int(embedding_dim)
        self.padding_idx = padding_idx
        self.weight = Param("weight", np.zeros((self.num_embeddings, self.embedding_dim), F32))
        self._ids: np.ndarray | None = None
        self._root: np.ndarray | None = None

    def params(self) -> list[Param]:
        return [self.weight]

    def reset_parameters(self, rng: np.random.Generator) -> None:
        self.weight.value[...] = rng.standard_normal(self.weight.value.shape)  # N(0, 1), as torch
        if self.padding_idx is not None:
            self.weight.value[self.padding_idx] = 0.0

    def _check(self, ids: np.ndarray) -> np.ndarray:
        ids = np.asarray(ids)
        if not np.issubdtype(ids.dtype, np.integer):
            raise ValueError(f"embedding ids must be integers, got dtype {ids.dtype}")
        if ids.size and (ids.min() < 0 or ids.max() >= self.num_embeddings):
            raise ValueError(f"embedding ids must be in 0..{self.num_embeddings - 1}")
        return ids.astype(np.int64, copy=False)

    def forward(self, x: np.ndarray, training: bool = False, quantized: bool = True) -> np.ndarray:
        ids = self._check(x)
        if training:
            self._ids = ids
        return self.weight.value[ids]

    def backward(self, grad: np.ndarray) -> np.ndarray:
        """Adds d(loss)/d(weight) into ``weight.grad`` (call ``weight.grad[...] = 0`` between steps); ids have
        no gradient, so this returns an empty array."""
        assert self._ids is not None, "backward before a training forward"
        g = np.asarray(grad, F32).reshape(-1, self.embedding_dim)
        ids = self._ids.reshape(-1)
        keep = ids != self.padding_idx if self.padding_idx is not None else slice(None)
        np.add.at(self.weight.grad, ids[keep], g[keep])
        return np.zeros((0,), F32)

    def pooled(self, ids: np.ndarray, training: bool = False) -> np.ndarray:
        """``[N, L]`` ids -> ``[N, dim]``: the sum of the non-padding token vectors / sqrt(their count)."""
        ids = self._check(ids)
        real = ids != self.padding_idx if self.padding_idx is not None else np.ones(ids.shape, bool)
        root = np.sqrt(np.maximum(real.sum(axis=1, keepdims=True), 1).astype(F32))
        if training:
            self._ids, self._root = ids, root
        return (self.weight.value[ids].sum(axis=1) / root).astype(F32)

    def pooled_backward(self, grad: np.ndarray) -> None:
        """Adds the gradient of :meth:`pooled` (``grad`` is ``[N, dim]``) into ``weight.grad``."""
        assert self._ids is not None and self._root is not None, "pooled_backward before a training pooled()"
        per_sample = np.asarray(grad, F32) / self._root
        self.backward(np.broadcast_to(per_sample[:, None, :], (*self._ids.shape, self.embedding_dim)))

    def output_shape(self, shape: tuple[int, ...]) -> tuple[int, ...]:
        return (*shape, self.embedding_dim)

    def __repr__(self) -> str:
        return f"Embedding({self.num_embeddings}, {self.embedding_dim}, padding_idx={self.padding_idx})"


from pcc.trainer.transformer_layers import TRANSFORMER_LAYER_TYPES  # noqa: E402 (they build on the classes above)

LAYER_TYPES: dict[str, type[Layer]] = {
    cls.type: cls
    for cls in (
        PentaryLinear,
        PentaryConv2D,
        PentaryReLU,
        PentaryMaxPool2D,
        PentaryBatchNorm,
        Flatten,
        Dropout,
        *TRANSFORMER_LAYER_TYPES,
    )
}


def layer_from_dict(d: dict[str, Any]) -> Layer:
    """Rebuild a layer from its model-JSON dict (raises KeyError/ValueError on bad input)."""
    return LAYER_TYPES[d["type"]].from_dict(d)
