"""The torch engine's layers (:mod:`pcc.trainer.torch_engine`): each NumPy layer type of
:mod:`pcc.trainer.layers` mirrored as a torch module with the same QAT semantics, the per-step fused
quantization (:func:`fused_quantize`, and its ``torch.compile``'d form) and the mirror of a whole model
(:func:`build_net`).  The classes are built when torch is first needed (:func:`TORCH_LAYERS`)."""

from __future__ import annotations

import math
import warnings
from typing import Any

import numpy as np

from pcc import quant
from pcc.diagnostics import PccError
from pcc.trainer import layers as L
from pcc.trainer import torch_quant
from pcc.trainer.model import PentaryModel
from pcc.trainer.torch_setup import require_torch

__all__ = ["TORCH_LAYERS", "build_net", "fused_quantize"]

# --- quantization ----------------------------------------------------------------------------------------------


def _full_scale(w: Any, per_channel: bool, method: str) -> Any:
    """The full search of :mod:`pcc.quant` (on the CPU, identical to the NumPy engine's and to the model file's),
    as a tensor on ``w``'s device."""
    torch = require_torch()
    _, s = quant.quantize_weights(w.detach().float().cpu().numpy(), per_channel, 0, method)
    return torch.as_tensor(np.asarray(s, np.float32), device=w.device)


def fused_quantize(ws: list[Any], prevs: list[Any], chunk_row: Any, levels: list[Any], width: int) -> Any:
    """One training step's quantization of several weight tensors, without gradients: every row's scale
    refined from its previous one (``prevs``) in one pass over all their rows (laid out as by
    :class:`torch_quant.RowPlan`, whose ``chunk_row``, ``levels`` and ``width`` these are; refined by
    :func:`torch_quant.track_rows`), then each tensor rounded at its scales.  ``([q * s per tensor], s)`` with
    ``s`` the flat vector of every row's scale.  Tensors in, tensors out: the function ``torch.compile`` fuses."""
    torch = require_torch()
    rows = [torch_quant.rows_of(w, p.dim() > 0).abs() for w, p in zip(ws, prevs, strict=True)]
    prev = torch.cat([p.reshape(-1) for p in prevs]) if len(prevs) > 1 else prevs[0].reshape(-1)
    s = torch_quant.track_rows(torch_quant.chunk_rows(rows, width), prev, chunk_row, *levels)
    out, row = [], 0
    for w, p in zip(ws, prevs, strict=True):
        c = p.numel()
        sv = s[row : row + c].reshape((-1,) + (1,) * (w.dim() - 1))
        out.append(torch.clamp(torch.round(w / sv), -2.0, 2.0) * sv)
        row += c
    return out, s


# --- layers ----------------------------------------------------------------------------------------------------
# Each torch layer mirrors one NumPy layer type: built from it (``from_layer``), copied back into it
# (``to_layer``); the table ``TORCH_LAYERS`` maps the model JSON type to the class.


def _build_classes() -> dict[str, Any]:
    torch = require_torch()
    nn = torch.nn
    F = torch.nn.functional

    class PentsSTE(torch.autograd.Function):
        """``clip(rint(w / s), -2, 2) * s`` forward; the gradient passes to ``w`` unchanged (straight through)."""

        @staticmethod
        def forward(ctx: Any, w: Any, s: Any) -> Any:
            return torch.clamp(torch.round(w / s), -2.0, 2.0) * s

        @staticmethod
        def backward(ctx: Any, grad: Any) -> Any:
            return grad, None

    class PassGrad(torch.autograd.Function):
        """``wq`` forward (computed without a graph); the gradient passes to ``w`` unchanged (straight through)."""

        @staticmethod
        def forward(ctx: Any, w: Any, wq: Any) -> Any:
            return wq.view_as(wq)

        @staticmethod
        def backward(ctx: Any, grad: Any) -> Any:
            return grad, None

    def fused_weights(ws: list[Any], prevs: list[Any], plan: Any, step_fn: Any = None) -> list[tuple[Any, Any]]:
        """One training step's ``(q * s, s)`` of several weight tensors, each scale refined from its previous
        one (:func:`fused_quantize`, or ``step_fn``: its compiled form), the gradient straight through to each
        ``w``."""
        with torch.no_grad():
            wqs, s = (step_fn or fused_quantize)(
                [w.detach() for w in ws], list(prevs), plan.chunk_row, list(plan.levels), plan.width
            )
        out, row = [], 0
        for w, wq, p in zip(ws, wqs, prevs, strict=True):
            c = p.numel()
            out.append((PassGrad.apply(w, wq), s[row : row + c].reshape(p.shape)))
            row += c
        return out

    class QWeights(nn.Module):
        """Shared QAT machinery: float shadow weight, pents and scale per step, straight-through gradient."""

        def _init_quant(self, src: L._PentaryWeights) -> None:
            self.weight = nn.Parameter(torch.from_numpy(src.weight.value.copy()))
            self.bias = nn.Parameter(torch.from_numpy(src.bias.value.copy())) if src.bias is not None else None
            self.per_channel = src.per_channel
            self.method = src.quant_method
            self.quantized = True
            self.reset_quant_state()

        def reset_quant_state(self) -> None:
            self.train_scale = None
            self.frozen = None
            self.last = None
            self.pending = None

        @property
        def tracked(self) -> bool:
            """Whether this training step refines the last step's scale (else it searches it afresh)."""
            return self.method == "mse" and self.train_scale is not None and self.weight.numel() > 0

        def freeze(self, on: bool) -> None:
            """While frozen, inference reuses one quantization (:mod:`pcc.quant`'s, as in the model file)."""
            self.frozen = None
            if on:
                with torch.no_grad():
                    self.frozen = self._dequantized(self.weight.detach(), _full_scale(self.weight, *self._q))

        @property
        def _q(self) -> tuple[bool, str]:
            return self.per_channel, self.method

        def _dequantized(self, w: Any, s: Any) -> Any:
            sv = s.reshape((-1,) + (1,) * (w.dim() - 1)) if s.dim() else s
            return torch.clamp(torch.round(w / sv), -2.0, 2.0) * sv

        def effective_weight(self) -> Any:
            """The weight the product uses: ``q * s`` (pents times per-channel scales) when quantized, with the
            straight-through gradient to the shadow weight while training; else the shadow weight itself."""
            w = self.weight
            if not self.quantized:
                return w
            if not self.training:
                if self.frozen is not None:
                    return self.frozen
                with torch.no_grad():
                    wd = w.detach()
                    if self.method == "max":
                        return self._dequantized(wd, torch_quant.max_scale(wd, self.per_channel))
                    return self._dequantized(wd, _full_scale(wd, self.per_channel, self.method))
            if self.pending is None:  # Net.forward prepares it; a layer called on its own searches afresh
                self.pending = self.searched_weight()
            wq, s = self.pending
            self.pending = None
            self.train_scale, self.last = s, wq.detach()
            return wq

        def searched_weight(self) -> tuple[Any, Any]:
            """``(q * s, s)`` with a fresh scale (an epoch's first step, or ``max`` scales)."""
            w = self.weight
            with torch.no_grad():
                wd = w.detach()
                if self.method == "max":
                    s = torch_quant.max_scale(wd, self.per_channel)
                else:
                    s = torch_quant.search_scale(wd, self.per_channel)
            return PentsSTE.apply(w, s.reshape((-1,) + (1,) * (w.dim() - 1)) if s.dim() else s), s

        def copy_to(self, dst: L._PentaryWeights) -> None:
            dst.weight.value[...] = self.weight.detach().float().cpu().numpy()
            if dst.bias is not None:
                dst.bias.value[...] = self.bias.detach().float().cpu().numpy()
            dst.reset_quant_state()

    class Linear(QWeights):
        def __init__(self, src: L.PentaryLinear) -> None:
            super().__init__()
            self._init_quant(src)

        def forward(self, x: Any) -> Any:
            return F.linear(x, self.effective_weight(), self.bias)

    class Conv2d(QWeights):
        def __init__(self, src: L.PentaryConv2D) -> None:
            super().__init__()
            self._init_quant(src)
            self.stride, self.padding = src.stride, src.padding

        def forward(self, x: Any) -> Any:
            return F.conv2d(x, self.effective_weight(), self.bias, self.stride, self.padding)

    class BatchNorm(nn.Module):
        """Batch normalisation, torch semantics; over several ranks the batch statistics are all-reduced."""

        group: Any = None  # set to the process group when distributed

        def __init__(self, src: L.PentaryBatchNorm) -> None:
            super().__init__()
            self.eps, self.momentum = src.eps, src.momentum
            self.gamma = nn.Parameter(torch.from_numpy(src.gamma.value.copy()))
            self.beta = nn.Parameter(torch.from_numpy(src.beta.value.copy()))
            self.register_buffer("running_mean", torch.from_numpy(src.running_mean.copy()))
            self.register_buffer("running_var", torch.from_numpy(src.running_var.copy()))

        def forward(self, x: Any) -> Any:
            if not self.training or self.group is None:
                return F.batch_norm(
                    x,
                    self.running_mean,
                    self.running_var,
                    self.gamma,
                    self.beta,
                    self.training,
                    self.momentum,
                    self.eps,
                )
            # the functional collective: differentiable (its backward all-reduces the gradient, as the
            # deprecated torch.distributed.nn.functional.all_reduce did); the result waits when first read
            from torch.distributed import _functional_collectives as fc

            def all_reduce(t: Any) -> Any:
                return fc.all_reduce(t, "sum", self.group)

            axes = [0, *range(2, x.dim())]
            shape = [1, -1] + [1] * (x.dim() - 2)
            xf = x.float()
            count = torch.tensor([xf.numel() // xf.shape[1]], dtype=torch.float32, device=x.device)
            total = all_reduce(torch.cat([xf.sum(dim=axes), count]))
            n = total[-1]
            mean = total[:-1] / n
            xc = xf - mean.reshape(shape)
            var = all_reduce((xc * xc).sum(dim=axes)) / n
            with torch.no_grad():
                m = self.momentum
                self.running_mean.mul_(1 - m).add_(m * mean.detach())
                self.running_var.mul_(1 - m).add_(m * var.detach() * n / (n - 1).clamp(min=1))
            y = xc * torch.rsqrt(var + self.eps).reshape(shape)
            return y * self.gamma.reshape(shape) + self.beta.reshape(shape)

        def copy_to(self, dst: L.PentaryBatchNorm) -> None:
            dst.gamma.value[...] = self.gamma.detach().float().cpu().numpy()
            dst.beta.value[...] = self.beta.detach().float().cpu().numpy()
            dst.running_mean[...] = self.running_mean.float().cpu().numpy()
            dst.running_var[...] = self.running_var.float().cpu().numpy()

    class ReLU(nn.Module):
        def __init__(self, src: L.PentaryReLU) -> None:
            super().__init__()

        def forward(self, x: Any) -> Any:
            return F.relu(x)

    class MaxPool2d(nn.Module):
        def __init__(self, src: L.PentaryMaxPool2D) -> None:
            super().__init__()
            self.kernel_size, self.stride, self.padding = src.kernel_size, src.stride, src.padding

        def forward(self, x: Any) -> Any:
            (kh, kw), (ph, pw) = self.kernel_size, self.padding
            if ph <= kh // 2 and pw <= kw // 2:
                return F.max_pool2d(x, self.kernel_size, self.stride, self.padding)
            x = F.pad(x, (pw, pw, ph, ph), value=-math.inf)  # torch's own padding is limited to half a window
            return F.max_pool2d(x, self.kernel_size, self.stride)

    class Flatten(nn.Module):
        def __init__(self, src: L.Flatten) -> None:
            super().__init__()

        def forward(self, x: Any) -> Any:
            return x.reshape(x.shape[0], -1)

    class Dropout(nn.Module):
        def __init__(self, src: L.Dropout) -> None:
            super().__init__()
            self.p = src.p
            self.generator: Any = None

        def forward(self, x: Any) -> Any:
            if not self.training or self.p == 0.0:
                return x
            keep = torch.rand(x.shape, generator=self.generator, device=x.device) >= self.p
            return x * keep.to(x.dtype) * (1.0 / (1.0 - self.p))

    class Embedding(QWeights):
        """Token table (pentary, one scale per row): ids -> rows."""

        def __init__(self, src: Any) -> None:
            super().__init__()
            self._init_quant(src)

        def forward(self, x: Any) -> Any:
            return F.embedding(x.long(), self.effective_weight())

    class PositionalEmbedding(QWeights):
        """``x + P[:T]`` with the positional table pentary, one scale per position."""

        def __init__(self, src: Any) -> None:
            super().__init__()
            self._init_quant(src)

        def forward(self, x: Any) -> Any:
            return x + self.effective_weight()[: x.shape[-2]]

    class LayerNorm(nn.Module):
        def __init__(self, src: Any) -> None:
            super().__init__()
            self.eps = src.eps
            self.gamma = nn.Parameter(torch.from_numpy(src.gamma.value.copy()))
            self.beta = nn.Parameter(torch.from_numpy(src.beta.value.copy()))

        def forward(self, x: Any) -> Any:
            return F.layer_norm(x, (x.shape[-1],), self.gamma, self.beta, self.eps)

        def copy_to(self, dst: Any) -> None:
            dst.gamma.value[...] = self.gamma.detach().float().cpu().numpy()
            dst.beta.value[...] = self.beta.detach().float().cpu().numpy()

    class GELU(nn.Module):
        def __init__(self, src: Any) -> None:
            super().__init__()
            self.approximate = src.approximate

        def forward(self, x: Any) -> Any:
            return F.gelu(x, approximate=self.approximate)

    class Attention(nn.Module):
        """Multi-head self-attention: the pentary ``qkv`` and ``out`` projections around torch's fused
        scaled-dot-product attention (causal mask when the layer is causal)."""

        def __init__(self, src: Any) -> None:
            super().__init__()
            self.heads, self.causal = src.heads, src.causal
            self.qkv, self.out = Linear(src.qkv), Linear(src.out)

        def forward(self, x: Any) -> Any:
            b, t, d = x.shape
            h = self.heads
            qkv = self.qkv(x).reshape(b, t, 3, h, d // h).permute(2, 0, 3, 1, 4)
            causal = self.causal and int(t) > 1  # a Python bool also while torch.onnx.export traces the shape
            o = F.scaled_dot_product_attention(qkv[0], qkv[1], qkv[2], is_causal=causal)
            return self.out(o.transpose(1, 2).reshape(b, t, d))

        def copy_to(self, dst: Any) -> None:
            self.qkv.copy_to(dst.qkv)
            self.out.copy_to(dst.out)

    class Residual(nn.Module):
        """``x + f(x)`` for the chain ``f`` of its layers."""

        def __init__(self, src: Any) -> None:
            super().__init__()
            where = "in a residual block, layer"
            self.layers = nn.ModuleList(_mirror(layer, f"{where} {i}") for i, layer in enumerate(src.layers))

        def forward(self, x: Any) -> Any:
            y = x
            for layer in self.layers:
                y = layer(y)
            return x + y

        def copy_to(self, dst: Any) -> None:
            for src, d in zip(self.layers, dst.layers, strict=True):
                if hasattr(src, "copy_to"):
                    src.copy_to(d)

    def _mirror(layer: Any, where: str) -> Any:
        cls = table.get(layer.type)
        if cls is None:
            raise PccError(f"the torch engine has no rule for {where} ({layer.type}); it supports {', '.join(table)}")
        return cls(layer)

    class Net(nn.Module):
        """The torch mirror of a :class:`PentaryModel`: ``layers[i]`` mirrors ``model.layers[i]``."""

        def __init__(self, model: PentaryModel) -> None:
            super().__init__()
            self.layers = nn.ModuleList(_mirror(layer, f"layer {i}") for i, layer in enumerate(model.layers))
            self.input_shape = tuple(model.input_shape)
            self.step_fn: Any = None  # fused_quantize's torch.compile'd form, or None: eager
            self.compile_error: str | None = None  # why the compiled form was given up, if it was
            self._plans: dict[tuple[int, ...], Any] = {}
            self._weight_layers: list[Any] | None = None

        def forward(self, x: Any) -> Any:
            if self.training:
                self.prepare_weights()
            x = x.reshape((x.shape[0], *self.input_shape))
            for layer in self.layers:
                x = layer(x)
            return x

        def weight_layers(self) -> list[Any]:
            """The weight layers, nested ones included, in execution order."""
            if self._weight_layers is None:  # the layers never change: found once (a step asks every time)
                self._weight_layers = [m for m in self.modules() if isinstance(m, QWeights)]
            return list(self._weight_layers)

        def prepare_weights(self) -> None:
            """Every quantized layer's ``q * s`` for this training step: the layers that refine their last
            step's scale all in one fused pass (:func:`fused_weights`), the others by a fresh search."""
            tracked = []
            for i, m in enumerate(self.weight_layers()):
                if m.quantized:
                    if m.tracked:
                        tracked.append((i, m))
                    else:
                        m.pending = m.searched_weight()
            if not tracked:
                return
            key = tuple(i for i, _ in tracked)
            mods = [m for _, m in tracked]
            plan = self._plans.get(key)
            if plan is None:
                shapes = [tuple(torch_quant.rows_of(m.weight.detach(), m.per_channel).shape) for m in mods]
                plan = self._plans[key] = torch_quant.RowPlan(shapes, mods[0].weight.device)
            ws, prevs = [m.weight for m in mods], [m.train_scale for m in mods]
            try:
                results = fused_weights(ws, prevs, plan, self.step_fn)
            except Exception as exc:
                if self.step_fn is None:
                    raise
                # the compiled pass failed (no compiler, an unsupported torch build, ...): eager from now on
                self.step_fn = None
                self.compile_error = f"{type(exc).__name__}: {(str(exc).splitlines() or [''])[0]}"[:300]
                warnings.warn(
                    f"torch.compile of the quantization step failed ({self.compile_error}); it runs eagerly",
                    RuntimeWarning,
                    stacklevel=2,
                )
                results = fused_weights(ws, prevs, plan)
            for m, result in zip(mods, results, strict=True):
                m.pending = result

        def set_quantized(self, on: bool) -> None:
            for m in self.weight_layers():
                m.quantized = on

        def reset_quant_state(self) -> None:
            for m in self.weight_layers():
                m.reset_quant_state()

        def freeze(self, on: bool) -> None:
            for m in self.weight_layers():
                m.freeze(on)

        def copy_to(self, model: PentaryModel) -> None:
            for src, dst in zip(self.layers, model.layers, strict=True):
                if hasattr(src, "copy_to"):
                    src.copy_to(dst)

        def copy_from(self, model: PentaryModel) -> None:
            """Load ``model``'s parameters and BatchNorm statistics (e.g. the kept best epoch's)."""
            with torch.no_grad():
                for dst, src in zip(self.layers, model.layers, strict=True):
                    for p, q in zip(dst.parameters(), src.params(), strict=True):
                        p.copy_(torch.from_numpy(q.value))
                    for name in ("running_mean", "running_var"):
                        if hasattr(dst, name):
                            getattr(dst, name).copy_(torch.from_numpy(getattr(src, name)))
            self.reset_quant_state()

    table = {
        "linear": Linear,
        "conv2d": Conv2d,
        "batchnorm": BatchNorm,
        "relu": ReLU,
        "maxpool2d": MaxPool2d,
        "flatten": Flatten,
        "dropout": Dropout,
        "embedding": Embedding,
        "positional_embedding": PositionalEmbedding,
        "layernorm": LayerNorm,
        "gelu": GELU,
        "attention": Attention,
        "residual": Residual,
    }
    return {
        "table": table,
        "Net": Net,
        "BatchNorm": BatchNorm,
        "Dropout": Dropout,
        "QWeights": QWeights,
        "fused_weights": fused_weights,
    }


_CLASSES: dict[str, Any] = {}


def _classes() -> dict[str, Any]:
    if not _CLASSES:
        _CLASSES.update(_build_classes())
    return _CLASSES


def TORCH_LAYERS() -> dict[str, Any]:  # noqa: N802  (a table, built when torch is first needed)
    """Model JSON layer type -> the torch class that mirrors it."""
    return dict(_classes()["table"])


def _compiled_step() -> Any:
    """The per-step quantization of all tracked layers (:func:`fused_quantize`) compiled by ``torch.compile``:
    one graph per set of weight shapes (a model's steps all share one)."""
    torch = require_torch()
    if "compiled" not in _CLASSES:
        cfg = torch._dynamo.config
        for name in ("recompile_limit", "cache_size_limit"):
            if hasattr(cfg, name):
                setattr(cfg, name, max(getattr(cfg, name), 64))
        _CLASSES["compiled"] = torch.compile(fused_quantize, dynamic=False)
    return _CLASSES["compiled"]


def build_net(model: PentaryModel) -> Any:
    """The torch module mirroring ``model`` (weights copied)."""
    return _classes()["Net"](model)
