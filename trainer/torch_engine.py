"""The torch engine of the trainer: the same layers, QAT and optimisers on CPU or CUDA, in one or many processes.

:class:`TorchTrainer` is a :class:`~pcc.trainer.trainer.PentaryTrainer` whose training loop runs in PyTorch.
It trains the same :class:`~pcc.trainer.model.PentaryModel` (the layers are mirrored one by one, the initial
weights copied) with the same semantics as the NumPy engine, and copies the trained parameters back at the end,
so the model JSON, the metrics and the plots come from the same code as the NumPy engine's:

- **QAT.** A weight layer multiplies by ``q * s``, its pents times their per-channel scales, computed from the
  float shadow weight ``w`` on every training step; the gradient reaches ``w`` straight through the rounding
  (``dL/dw = dL/d(q s)``).  The scale is found as by the NumPy engine: a full error-minimising search at the
  first step of each epoch and two warm-started refinement steps in between (:mod:`pcc.trainer.torch_quant`,
  on the device; the refinement of all layers in one fused pass over their rows, :func:`fused_quantize`, which
  ``compile`` (on CUDA by default) compiles into a few kernels); evaluation and export use
  :func:`pcc.quant.quantize_weights` itself, so the reported pentary accuracy is the model file's.
- **CUDA graphs** (``cuda_graph``, on CUDA by default): every full-batch step's device work, from the batch's
  indices to the gradients, replayed as one captured graph (:class:`_StepGraph`); the optimiser step and the
  grid pull stay eager, and the steps the graph does not cover (an epoch's first, a smaller last batch) run
  eagerly and hand their state on to the next replay.
- **Optimisers and schedule.** ``torch.optim.Adam`` / ``SGD`` with coupled weight decay on the weights only,
  the learning rate of :func:`pcc.trainer.optim.lr_at` set before every step; the end-of-training grid pull.
- **Batch order.** The permutations come from the NumPy engine's generator (same seed, same draws), so both
  engines see the same batches.
- **Mixed precision** (CUDA): products and convolutions under bf16 autocast, which rounds ``q * s`` to
  ``q * bf16(s)`` exactly (``|q| <= 2`` multiplies without rounding): every weight stays its pent times one
  per-channel scale.  Shadow weights, optimiser state, BatchNorm statistics and the loss stay float32.
- **Distributed** (``torchrun``): one process per device, ``DistributedDataParallel`` (gloo on CPU, NCCL on
  CUDA).  ``batch_size`` is the *global* batch: each rank takes every ``world``-th sample of it, the loss is
  scaled so that the averaged gradient is the global batch's, and BatchNorm reduces its batch statistics over
  all ranks (two all-reduces), so N processes follow the same trajectory as one.  Epoch losses, accuracies and
  evaluations are summed over ranks.  Only rank 0 writes files.
- **Checkpoints** (:mod:`pcc.trainer.checkpoint`): every ``checkpoint_every`` epochs, model, optimiser,
  schedule position, random generators and history, in a ``.npz`` without pickles; :meth:`TorchTrainer.
  load_checkpoint` continues a killed run to the same result as an uninterrupted one.
"""

from __future__ import annotations

import contextlib
import math
import os
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from pcc import quant
from pcc.diagnostics import PccError
from pcc.trainer import layers as L
from pcc.trainer import torch_quant
from pcc.trainer.control import TrainingControl
from pcc.trainer.model import PentaryModel
from pcc.trainer.optim import lr_at
from pcc.trainer.progress import Progress
from pcc.trainer.trainer import LOSSES, PentaryTrainer, epoch_record

__all__ = [
    "TorchTrainer",
    "require_torch",
    "resolve_device",
    "process_rank",
    "rank_zero",
    "build_net",
    "TORCH_LAYERS",
    "DEVICES",
]

DEVICES = "auto, cpu, cuda or cuda:N"
PRECISIONS = ("auto", "fp32", "bf16")
# compile="auto" compiles the per-step quantization from this many weights up: it costs 12-15 s at the start in a
# fresh process and, with the step replayed as a CUDA graph, pays for itself only where the weights' passes
# dominate (on one H200: 2.2x on a 21 M-weight MLP; 1.1x on a 6 k-weight CNN, which then starts 15 s later)
COMPILE_MIN_WEIGHTS = 1_000_000


def require_torch() -> Any:
    """Import torch, or one clear error saying how to get it."""
    try:
        import torch
    except ImportError:
        raise PccError(
            "the torch engine needs PyTorch, which is not installed",
            notes=["install it with `pip install 'pcc[torch]'`, or train with the default --engine numpy"],
        ) from None
    return torch


def process_rank() -> int:
    """This process's rank under ``torchrun`` (0 when not distributed)."""
    try:
        return int(os.environ.get("RANK", "0"))
    except ValueError:
        return 0


def _env_world() -> int:
    try:
        return int(os.environ.get("WORLD_SIZE", "1"))
    except ValueError:
        return 1


def resolve_device(spec: str, local_rank: int | None = None) -> Any:
    """``auto`` (CUDA if available, else CPU), ``cpu``, ``cuda`` or ``cuda:N`` as a ``torch.device``;
    ``cuda`` under torchrun means the process's own GPU (``LOCAL_RANK``)."""
    torch = require_torch()
    s = spec.strip().lower()
    if s == "auto":
        s = "cuda" if torch.cuda.is_available() else "cpu"
    if s == "cpu":
        return torch.device("cpu")
    if s == "cuda" or s.startswith("cuda:"):
        if not torch.cuda.is_available():
            raise PccError(f"--device {spec}: this torch has no usable CUDA device", notes=["use --device cpu"])
        if s == "cuda":
            index = local_rank if local_rank is not None else torch.cuda.current_device()
        else:
            if local_rank is not None:
                raise PccError(
                    f"--device {spec}: under torchrun every process takes its own GPU; use --device cuda",
                    notes=["CUDA_VISIBLE_DEVICES selects which GPUs the job uses"],
                )
            try:
                index = int(s[5:])
            except ValueError:
                raise PccError(f"--device must be {DEVICES}, got {spec!r}") from None
        if not 0 <= index < torch.cuda.device_count():
            raise PccError(f"--device {spec}: there are {torch.cuda.device_count()} CUDA devices")
        return torch.device("cuda", index)
    raise PccError(f"--device must be {DEVICES}, got {spec!r}")


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
            from torch.distributed.nn.functional import all_reduce

            axes = [0, *range(2, x.dim())]
            shape = [1, -1] + [1] * (x.dim() - 2)
            xf = x.float()
            count = torch.tensor([xf.numel() // xf.shape[1]], dtype=torch.float32, device=x.device)
            total = all_reduce(torch.cat([xf.sum(dim=axes), count]), group=self.group)
            n = total[-1]
            mean = total[:-1] / n
            xc = xf - mean.reshape(shape)
            var = all_reduce((xc * xc).sum(dim=axes), group=self.group) / n
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


# --- trainer ---------------------------------------------------------------------------------------------------


def _switch(value: bool | str | None, name: str) -> bool | None:
    """An on/off option that also takes ``auto`` (returned as None)."""
    if value is None or (isinstance(value, str) and value.strip().lower() == "auto"):
        return None
    if isinstance(value, bool):
        return value
    raise PccError(f"{name} must be True, False or 'auto', got {value!r}")


class _Dist:
    """This process's place in a distributed run (``world == 1``: not distributed)."""

    def __init__(self, rank: int = 0, world: int = 1, group: Any = None, owned: bool = False) -> None:
        self.rank, self.world, self.group, self.owned = rank, world, group, owned


def _loss_name(loss_fn: Any) -> str:
    for name, fn in LOSSES.items():
        if loss_fn is fn or loss_fn == name:
            return name
    if loss_fn is None:
        return "cross_entropy"
    raise PccError("the torch engine supports the losses cross_entropy and mse, not a custom loss function")


class _StepGraph:
    """A training run's full-batch step, from the batch's indices to the gradients, replayed as one CUDA graph.

    The step's device work (every layer's quantization, refining its last step's scales; the forward, the loss,
    the backward; the count of correct predictions) reads and writes only tensors at fixed addresses: the
    batch's indices (copied in before each replay), the training set, the parameters, the previous scales (kept
    in buffers that the graph itself updates), the gradients, the step's ``q * s`` and scales, the loss, the
    BatchNorm statistics and the trainer's counter.  So it is captured once, after ``WARMUP`` eager steps of the
    same kind on a side stream (they compile and tune what the capture then records), and every later step of
    the same batch size and quantization state replays it: one launch instead of hundreds of kernel launches,
    and the host free to run the optimiser meanwhile.  The optimiser step and the grid pull stay eager.

    Steps the graph does not cover (an epoch's first step, whose full scale search synchronises with the host;
    a smaller last batch) run eagerly after :meth:`unbind`; the next replay first copies that step's scales into
    the graph's buffers and points the gradients and ``last`` weights back at the graph's (:meth:`_bind`).
    A capture that fails leaves the run eager, with a warning.
    """

    WARMUP = 2

    def __init__(self, trainer: TorchTrainer, fwd: Any, x: Any, y: Any, batch: int) -> None:
        torch = require_torch()
        self.trainer, self.fwd, self.x, self.y, self.batch = trainer, fwd, x, y, batch
        self.layers = trainer.net.weight_layers()
        self.params = [p for g in trainer._opt.param_groups for p in g["params"]]
        self.stream = torch.cuda.Stream(trainer.device)
        self.graph: Any = None
        self.state: tuple[tuple[bool, bool], ...] | None = None  # the quantization state warmed up / captured
        self.warm = 0
        self.bound = False
        self.failed: str | None = None

    def _state(self) -> tuple[tuple[bool, bool], ...]:
        return tuple((m.quantized, m.tracked) for m in self.layers)

    def takes(self, size: int) -> bool:
        """Whether this step runs through the graph (replayed, captured or warming up for it)."""
        if self.failed is not None or size != self.batch:
            return False
        state = self._state()
        if self.graph is not None:
            return state == self.state
        # a fresh mse search synchronises with the host (its refinement stops when the scales settle)
        return all(t or not q or m.method == "max" for m, (q, t) in zip(self.layers, state, strict=True))

    def unbind(self) -> None:
        """An eager step runs next: the next replay must first take over its state."""
        self.bound = False

    def step(self, idx: Any) -> Any:
        """Run one step on the batch ``idx``; its summed loss (the graph's buffer after a replay)."""
        torch = require_torch()
        if self.graph is None:
            state = self._state()
            if state != self.state:
                self.state, self.warm = state, 0
            if self.warm < self.WARMUP:
                self.warm += 1
                cur = torch.cuda.current_stream(self.trainer.device)
                self.stream.wait_stream(cur)
                with torch.cuda.stream(self.stream):
                    loss = self._eager(idx)
                cur.wait_stream(self.stream)
                return loss
            if not self._capture(idx):
                return self._eager(idx)
        self._bind()
        self.idx.copy_(idx)
        self.graph.replay()
        return self.loss

    def _eager(self, idx: Any) -> Any:
        self.bound = False
        self.trainer._opt.zero_grad(set_to_none=True)
        return self.trainer._forward_backward(
            self.fwd, self.x.index_select(0, idx), self.y.index_select(0, idx), 1.0 / self.batch
        )

    def _capture(self, idx: Any) -> bool:
        torch = require_torch()
        tr = self.trainer
        self.tracked = [m for m in self.layers if m.quantized and m.tracked]
        self.idx = idx.clone()
        self.prev = [m.train_scale.detach().clone() for m in self.tracked]
        for m, p in zip(self.tracked, self.prev, strict=True):
            m.train_scale = p
        tr._opt.zero_grad(set_to_none=True)  # the graph's backward then writes (not adds) its gradients
        graph = torch.cuda.CUDAGraph()
        try:
            with torch.cuda.graph(graph, stream=self.stream):
                loss = tr._forward_backward(
                    self.fwd, self.x.index_select(0, self.idx), self.y.index_select(0, self.idx), 1.0 / self.batch
                )
                if self.tracked:  # the next replay refines from this step's scales
                    torch._foreach_copy_(self.prev, [m.train_scale for m in self.tracked])
        except Exception as exc:  # noqa: BLE001  (any failure to capture: the run goes on eagerly)
            self.failed = f"{type(exc).__name__}: {(str(exc).splitlines() or [''])[0]}"[:300]
            warnings.warn(
                f"the training step could not be captured as a CUDA graph ({self.failed}); it runs eagerly",
                RuntimeWarning,
                stacklevel=3,
            )
            for m, p in zip(self.tracked, self.prev, strict=True):
                m.train_scale, m.pending, m.last = p, None, None
            tr._opt.zero_grad(set_to_none=True)
            return False
        # nothing ran yet: the first replay computes all of this; the layers read the scales from the buffers
        self.graph, self.loss = graph, loss
        self.last = [m.last for m in self.layers]
        self.grads = [p.grad for p in self.params]
        for m, p in zip(self.tracked, self.prev, strict=True):
            m.train_scale = p
        self.bound = True
        return True

    def _bind(self) -> None:
        if self.bound:
            return
        torch = require_torch()
        moved = [(p, m.train_scale) for m, p in zip(self.tracked, self.prev, strict=True) if m.train_scale is not p]
        if moved:
            torch._foreach_copy_([p for p, _ in moved], [s.reshape(p.shape) for p, s in moved])
        for m, p in zip(self.tracked, self.prev, strict=True):
            m.train_scale = p
        for m, last in zip(self.layers, self.last, strict=True):
            m.last = last
        for p, g in zip(self.params, self.grads, strict=True):
            p.grad = g
        self.bound = True


class TorchTrainer(PentaryTrainer):
    """:class:`PentaryTrainer` with its training loop on torch (see the module docstring).

    Extra keyword arguments: ``device`` (``auto``, ``cpu``, ``cuda``, ``cuda:N``), ``precision`` (``auto``: bf16
    autocast on CUDA, float32 on the CPU; ``fp32``; ``bf16``), ``checkpoint_every`` (epochs; 0: never) and
    ``checkpoint_path``, ``record_steps`` (keep every step's loss in ``step_losses``), ``compile`` (fuse each
    step's quantization with ``torch.compile``; ``auto``: on CUDA for a model of at least
    :data:`COMPILE_MIN_WEIGHTS` weights, where the fused pass saves more than the compile's start-up costs;
    falling back to eager if compiling fails) and
    ``cuda_graph`` (replay each full training step as one CUDA graph, :class:`_StepGraph`; ``auto``: on CUDA in
    a single process without dropout or a learned text embedding).  Under ``torchrun``
    (``WORLD_SIZE`` > 1) the process group is initialised here (gloo on CPU, NCCL on CUDA) unless the caller
    already did; :meth:`close` ends what this trainer started.
    """

    def __init__(
        self,
        model: PentaryModel | None = None,
        loss_fn: Any = None,
        learning_rate: float = 0.01,
        use_multimodal: bool = False,
        modalities: Sequence[str] | None = None,
        *,
        device: str = "auto",
        precision: str = "auto",
        checkpoint_every: int = 0,
        checkpoint_path: str | Path | None = None,
        record_steps: bool = False,
        compile: bool | str = "auto",
        cuda_graph: bool | str = "auto",
        **kwargs: Any,
    ) -> None:
        torch = require_torch()
        self.loss_name = _loss_name(loss_fn)
        super().__init__(model, self.loss_name, learning_rate, use_multimodal, modalities, **kwargs)
        self.dist = self._init_distributed(device)
        local = int(os.environ.get("LOCAL_RANK", "0")) if self.dist.world > 1 else None
        self.device = resolve_device(device, local)
        if self.device.type == "cuda":
            torch.cuda.set_device(self.device)
        p = precision.strip().lower()
        if p not in PRECISIONS:
            raise PccError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
        self.precision = ("bf16" if self.device.type == "cuda" else "fp32") if p == "auto" else p
        if checkpoint_every < 0:
            raise PccError("checkpoint_every must be 0 (never) or a number of epochs")
        if checkpoint_every and checkpoint_path is None:
            raise PccError("checkpoint_every needs a checkpoint_path")
        self.checkpoint_every = int(checkpoint_every)
        self.checkpoint_path = Path(checkpoint_path) if checkpoint_path is not None else None
        self.record_steps = record_steps
        on_cuda = self.device.type == "cuda"
        want = _switch(compile, "compile")
        self._compile_auto = want is None
        self.compile = on_cuda if want is None else want  # auto: settled by the model's size in _ensure_net
        self.cuda_graph = _switch(cuda_graph, "cuda_graph")  # None: auto, decided when training starts
        if self.cuda_graph and not on_cuda:
            raise PccError("cuda_graph=True needs a CUDA device", notes=["leave it at 'auto' or False on the CPU"])
        self.graph_used = False  # whether the last train() call replayed a CUDA graph
        self._correct: Any = None  # the epoch's count of correct training predictions (a device tensor)
        self.step_losses: list[float] = []
        self.net: Any = None
        self._ddp: Any = None
        self._opt: Any = None
        self._net_model: PentaryModel | None = None
        self._resume: dict[str, Any] | None = None

    # --- setup -----------------------------------------------------------------------------------------------

    def _init_distributed(self, device: str) -> _Dist:
        torch = require_torch()
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            return _Dist(dist.get_rank(), dist.get_world_size(), dist.group.WORLD)
        world = _env_world()
        if world <= 1:
            return _Dist()
        cuda = device.strip().lower() != "cpu" and torch.cuda.is_available()
        if cuda:
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        dist.init_process_group("nccl" if cuda else "gloo")
        return _Dist(dist.get_rank(), dist.get_world_size(), dist.group.WORLD, owned=True)

    @property
    def is_main_process(self) -> bool:
        return self.dist.rank == 0

    def close(self) -> None:
        """End the process group if this trainer started it."""
        if self.dist.owned:
            import torch.distributed as dist

            dist.destroy_process_group()
            self.dist.owned = False

    def _ensure_net(self) -> None:
        torch = require_torch()
        model = self.model
        assert model is not None
        if self.net is not None and self._net_model is model:
            return
        net = build_net(model).to(self.device)
        if self._compile_auto:
            self.compile = self.device.type == "cuda" and sum(m.weight.numel() for m in net.weight_layers()) >= (
                COMPILE_MIN_WEIGHTS
            )
        if self.compile:
            net.step_fn = _compiled_step()
        for m in net.layers:
            if isinstance(m, _classes()["BatchNorm"]):
                m.group = self.dist.group if self.dist.world > 1 else None
        decay = [m.weight for m in net.weight_layers()]
        ids = {id(p) for p in decay}
        rest = [p for p in net.parameters() if id(p) not in ids]
        groups = [{"params": decay, "weight_decay": self.weight_decay}, {"params": rest, "weight_decay": 0.0}]
        if not self.weight_decay:  # one group: the optimiser's multi-tensor kernels launch once, not twice
            groups = [{"params": decay + rest, "weight_decay": 0.0}]
        if self.optimizer_name == "adam":
            self._opt = torch.optim.Adam(groups, lr=self.learning_rate)
        else:
            self._opt = torch.optim.SGD(groups, lr=self.learning_rate, momentum=self.momentum)
        self.net, self._net_model = net, model
        self._ddp = None
        if self.dist.world > 1:
            from torch.nn.parallel import DistributedDataParallel

            ids = [self.device.index] if self.device.type == "cuda" else None
            self._ddp = DistributedDataParallel(net, device_ids=ids, broadcast_buffers=False)
        self._step = 0

    @contextlib.contextmanager
    def _autocast(self) -> Iterator[None]:
        torch = require_torch()
        if self.precision == "bf16":  # no cast cache: a captured step must not keep one (nothing here reuses it)
            with torch.autocast(self.device.type, dtype=torch.bfloat16, cache_enabled=False):
                yield
        else:
            yield

    @contextlib.contextmanager
    def _threads(self) -> Iterator[None]:
        torch = require_torch()
        if self.threads is None or self.device.type != "cpu":
            yield
            return
        old = torch.get_num_threads()
        torch.set_num_threads(self.threads)
        try:
            yield
        finally:
            torch.set_num_threads(old)

    def _loss_sum(self, out: Any, y: Any) -> Any:
        """The loss summed over the samples of ``out`` (``mse``: per sample, the mean over the outputs)."""
        torch = require_torch()
        F = torch.nn.functional
        out = out.float()
        if self.loss_name == "cross_entropy":
            return F.cross_entropy(out, y, reduction="sum")
        t = F.one_hot(y, out.shape[1]).float()
        return ((out - t) ** 2).sum() / out.shape[1]

    def _all_sum(self, values: list[float] | Any) -> Any:
        torch = require_torch()
        t = torch.as_tensor(values, dtype=torch.float64, device=self.device).clone()
        if self.dist.world > 1:
            import torch.distributed as dist

            dist.all_reduce(t, group=self.dist.group)
        return t

    # --- training --------------------------------------------------------------------------------------------

    def train(
        self,
        train_data: Any,
        val_data: Any = None,
        epochs: int = 10,
        batch_size: int = 32,
        *,
        keep_best: bool = False,
        patience: int | None = None,
    ) -> list[dict[str, Any]]:
        """As :meth:`PentaryTrainer.train`; ``batch_size`` is the global batch over all ranks.  The step losses
        are checked for divergence at the end of each epoch (one transfer per epoch, not per step)."""
        if epochs < 1 or batch_size < 1:
            raise PccError("epochs and batch size must be at least 1")
        if batch_size < self.dist.world:
            raise PccError(f"the batch size {batch_size} is smaller than the number of processes {self.dist.world}")
        if (keep_best or patience) and val_data is None:
            raise PccError("keeping the best epoch and early stopping need validation data")
        tuner = self.text_tuner
        if tuner is not None and (self.checkpoint_every or self._resume is not None):
            raise PccError(
                "the torch engine's checkpoints do not keep a learned text embedding",
                notes=["use --text-embedding fixed, or train without --checkpoint-every / --resume"],
            )
        control = TrainingControl(keep_best=keep_best, patience=patience, extra=tuple(tuner.state()) if tuner else ())
        with self._threads():
            return self._train_torch(train_data, val_data, epochs, batch_size, control)

    def _train_torch(
        self, train_data: Any, val_data: Any, epochs: int, batch_size: int, control: TrainingControl
    ) -> list[dict[str, Any]]:
        torch = require_torch()
        tuner = self.text_tuner
        x_np, y_np = self._dataset(train_data, "training data", fit=True)
        if val_data is not None:
            xv, yv = self._dataset(val_data, "validation data", fit=False)
        else:
            xv, yv = None, None
        model = self.model
        assert model is not None
        if len(x_np) == 0:
            raise PccError("training data is empty")
        x_np = model._prepare(x_np)
        self._ensure_net()
        net, opt = self.net, self._opt
        fwd = self._ddp if self._ddp is not None else net
        rank, world = self.dist.rank, self.dist.world
        n = len(x_np)
        steps_per_epoch = -(-n // batch_size)
        total = steps_per_epoch * epochs
        run = {
            "epochs": epochs,
            "batch_size": batch_size,
            "n_train": n,
            "keep_best": control.keep_best,
            "patience": control.patience,
        }
        resume, self._resume = self._resume, None
        if resume is None:
            rng = np.random.default_rng(self.seed + len(self.history))
            for m in net.layers:
                if isinstance(m, _classes()["Dropout"]):
                    m.generator = torch.Generator(device=self.device)
                    m.generator.manual_seed(int(rng.integers(2**63)))
            start_step, first_epoch = self._step, 0
        else:
            rng, start_step, first_epoch = self._apply_resume(resume, run, control)
        x = torch.from_numpy(x_np).to(self.device)
        y = torch.from_numpy(y_np).to(self.device)
        wlayers = net.weight_layers()
        net.set_quantized(self.qat)
        graph = self._step_graph(fwd, x, y, batch_size)
        self.graph_used = False
        self._correct = torch.zeros((), dtype=torch.int64, device=self.device)
        t_start = time.perf_counter()
        lr = lr_at(self.schedule, self.learning_rate, self._step - start_step, total)
        epoch_total = len(self.history) - first_epoch + epochs
        for epoch in range(first_epoch, epochs):
            t0 = time.perf_counter()
            net.train()
            net.reset_quant_state()  # the epoch's first step does a full scale search
            perm = rng.permutation(n)
            perm_dev = torch.from_numpy(perm).to(self.device)
            self._correct.zero_()
            step_sums, sizes = [], []
            bar = Progress(steps_per_epoch, f"epoch {len(self.history) + 1}/{epoch_total}", self.progress)
            for i in range(0, n, batch_size):
                idx = perm_dev[i : i + batch_size]
                size = idx.shape[0]
                idx = idx[rank::world]
                lr = lr_at(self.schedule, self.learning_rate, self._step - start_step, total)
                for g in opt.param_groups:
                    g["lr"] = lr
                if graph is not None and graph.takes(size):
                    batch_loss = graph.step(idx)
                else:
                    if graph is not None:
                        graph.unbind()
                    xb, yb = x.index_select(0, idx), y.index_select(0, idx)
                    if tuner is not None:  # the batch's text-dependent features from the current table, on the host
                        rows = perm[i : i + batch_size][rank::world]
                        xb = torch.from_numpy(model._prepare(tuner.features(x_np[rows], "train", rows)))
                        xb = xb.to(self.device).requires_grad_(True)
                    opt.zero_grad(set_to_none=True)
                    batch_loss = self._forward_backward(fwd, xb, yb, world / size)
                opt.step()
                if tuner is not None:
                    self._step_text(tuner, xb.grad.reshape(len(rows), -1), lr)
                if self.grid_pull and self.qat and wlayers:  # w += beta (q s - w), all layers at once
                    beta = self.grid_pull * ((self._step - start_step + 1) / total) ** 2
                    with torch.no_grad():
                        torch._foreach_lerp_([m.weight for m in wlayers], [m.last for m in wlayers], beta)
                self._step += 1
                step_sums.append(batch_loss.double())
                sizes.append(size)
                bar.update()
            bar.close()
            if tuner is not None:
                x = self._refresh_text(tuner, x_np, xv)
            sums = self._all_sum(torch.stack([*step_sums, self._correct.double()])).cpu().numpy()
            step_loss = [float(v) / k for v, k in zip(sums[:-1], sizes, strict=True)]
            for k, value in enumerate(step_loss):  # NaN / divergence, as the NumPy engine checks every step
                control.check_step(value, len(self.history) + 1, k + 1, self.learning_rate)
            if self.record_steps:
                self.step_losses.extend(step_loss)
            loss_total, n_correct = float(sums[:-1].sum()), float(sums[-1])
            record = epoch_record(self, lr, loss_total / n, n_correct / n, t0, xv, yv)
            self.history.append(record)
            if control.keep_best:
                net.copy_to(model)  # the control keeps a copy of the best epoch's model
            stop = control.end_epoch(record, model)
            if self.log is not None and self.is_main_process:
                self.log(self.format_epoch(record, epoch_total))
            if stop:
                if self.log is not None and self.is_main_process:
                    self.log(f"early stop: no better validation accuracy for {control.patience} epochs")
                break
            if self.checkpoint_every and (epoch + 1) % self.checkpoint_every == 0 and epoch + 1 < epochs:
                self._write_checkpoint(rng, start_step, epoch + 1, run, control)
        self.train_time += time.perf_counter() - t_start
        self.graph_used = graph is not None and graph.graph is not None
        del graph  # its memory goes once the tensors it left in the layers and gradients do
        net.copy_to(model)
        if control.finish(model):
            net.copy_from(model)
            if tuner is not None:
                self._refresh_text(tuner, x_np, xv)
            if self.log is not None and self.is_main_process and control.best_epoch != len(self.history):
                assert control.best is not None
                self.log(
                    f"kept the best epoch: {control.best_epoch} (validation accuracy {100 * control.best[0]:.2f}%)"
                )
        self.metrics = self.final_metrics((x_np, y_np), (xv, yv) if xv is not None and len(xv) else None)
        self.metrics["best_epoch"] = control.best_epoch
        self.metrics["kept_best"] = control.keep_best and control.best_epoch is not None
        self.metrics["stopped_early"] = control.stopped_early
        self.metrics["engine"] = self.engine_info()
        return self.history

    def _forward_backward(self, fwd: Any, xb: Any, yb: Any, scale: float) -> Any:
        """One batch's quantization, forward, loss and backward (the loss scaled by ``scale``), counting its
        correct predictions into ``_correct``; the batch's summed loss.  All device work, no synchronisation:
        :class:`_StepGraph` captures it."""
        with self._autocast():
            out = fwd(xb)
        batch_loss = self._loss_sum(out, yb)
        (batch_loss * scale).backward()
        self._correct.add_((out.detach().argmax(dim=1) == yb).sum())
        return batch_loss.detach()

    def _step_graph(self, fwd: Any, x: Any, y: Any, batch_size: int) -> _StepGraph | None:
        """This run's step graph, or None where the steps run eagerly (``cuda_graph`` off, or a run a graph
        cannot replay: on the CPU, distributed, with dropout or a learned text embedding)."""
        if self.cuda_graph is False:
            return None
        why = None
        if self.device.type != "cuda":
            why = "it runs on the CPU"
        elif self.dist.world > 1:
            why = "the run is distributed"
        elif self.text_tuner is not None:
            why = "a learned text embedding's features are made on the host every step"
        elif any(isinstance(m, _classes()["Dropout"]) and m.p > 0 for m in self.net.modules()):
            why = "the model has dropout (a random mask every step)"
        if why is None:
            return _StepGraph(self, fwd, x, y, batch_size)
        if self.cuda_graph:
            raise PccError(f"cuda_graph=True: the training step cannot be a CUDA graph here ({why})")
        return None

    def _step_text(self, tuner: Any, input_grad: Any, lr: float) -> None:
        """The text table's step from the batch's input gradient (summed over the processes, whose losses are
        each scaled by the number of processes, so divided by it: the gradient of the global batch's mean)."""
        tuner.backward(input_grad.float().cpu().numpy())
        if self.dist.world > 1:
            grad = tuner.table.weight.grad
            grad[...] = self._all_sum(grad).cpu().numpy() / self.dist.world
        tuner.step(lr)

    def _refresh_text(self, tuner: Any, x_np: np.ndarray, xv: np.ndarray | None) -> Any:
        """Rewrite the text-dependent features of both splits from the current table; the new device copy of
        the training features."""
        tuner.refresh(x_np, "train")
        tuner.refresh(xv, "val")
        return require_torch().from_numpy(x_np).to(self.device)

    def engine_info(self) -> dict[str, Any]:
        return {
            "name": "torch",
            "device": str(self.device),
            "precision": self.precision,
            "world_size": self.dist.world,
            "compile": self.net.step_fn is not None if self.net is not None else self.compile,
            "cuda_graph": self.graph_used,
        }

    # --- evaluation ------------------------------------------------------------------------------------------

    def _logits(self, x_np: np.ndarray, quantized: bool, batch_size: int = 2048) -> Iterator[tuple[int, Any]]:
        """(start, logits) of this rank's share of ``x_np`` in inference mode (one quantization per call)."""
        torch = require_torch()
        net = self.net
        net.eval()
        net.set_quantized(quantized)
        net.freeze(quantized)
        n = len(x_np)
        lo, hi = n * self.dist.rank // self.dist.world, n * (self.dist.rank + 1) // self.dist.world
        try:
            with torch.no_grad(), self._autocast():
                for i in range(lo, hi, batch_size):
                    xb = torch.from_numpy(np.ascontiguousarray(x_np[i : min(i + batch_size, hi)])).to(self.device)
                    yield i, net(xb).float()
        finally:
            net.freeze(False)
            net.set_quantized(self.qat)

    def evaluate(self, data: Any, quantized: bool = True) -> tuple[float, float]:
        """``(loss, accuracy)`` on ``(inputs, labels)`` in inference mode, summed over all ranks."""
        torch = require_torch()
        x, y = self._dataset(data, "evaluation data", fit=False)
        assert self.model is not None
        self._ensure_net()
        x = self.model._prepare(x)
        loss, correct = 0.0, 0.0
        for i, out in self._logits(x, quantized):
            yb = torch.from_numpy(y[i : i + len(out)]).to(self.device)
            loss += float(self._loss_sum(out, yb))
            correct += float((out.argmax(dim=1) == yb).sum())
        sums = self._all_sum([loss, correct])
        n = len(y)
        return (float(sums[0]) / n, float(sums[1]) / n) if n else (float("nan"), float("nan"))

    def predict(self, x: np.ndarray, quantized: bool = True) -> np.ndarray:
        """Logits of this rank's share of ``x`` (all of it in one process) as a NumPy array."""
        assert self.model is not None
        self._ensure_net()
        x = self.model._prepare(x)
        outs = [out.cpu().numpy() for _, out in self._logits(x, quantized)]
        return np.concatenate(outs) if outs else np.zeros((0, self.model.output_dim), np.float32)

    # --- persistence -----------------------------------------------------------------------------------------

    def save_model(self, path: str | Path, include_float: bool = True) -> None:
        if self.is_main_process:
            super().save_model(path, include_float)

    def save_metrics(self, path: str | Path) -> None:
        if self.is_main_process:
            super().save_metrics(path)

    def load_model(self, path: str | Path) -> PentaryModel:
        self.net = None
        return super().load_model(path)

    def _write_checkpoint(
        self, rng: np.random.Generator, start_step: int, epoch: int, run: dict[str, Any], control: TrainingControl
    ) -> None:
        from pcc.trainer import checkpoint

        assert self.checkpoint_path is not None
        if self.is_main_process:
            checkpoint.write(self.checkpoint_path, checkpoint.capture(self, rng, start_step, epoch, run, control))

    def load_checkpoint(self, path: str | Path) -> None:
        """Restore a checkpoint written by a run of the same model and settings; the next :meth:`train` call
        (with the same data, epochs and batch size) continues that run where it stopped."""
        from pcc.trainer import checkpoint

        assert self.model is not None, "build the model before loading a checkpoint into it"
        self._ensure_net()
        self._resume = checkpoint.read(path, self)

    def _apply_resume(
        self, resume: dict[str, Any], run: dict[str, Any], control: TrainingControl
    ) -> tuple[np.random.Generator, int, int]:
        from pcc.trainer import checkpoint

        return checkpoint.restore(self, resume, run, control)


def rank_zero(fn: Callable[..., Any]) -> Callable[..., Any]:
    """``fn`` on rank 0, a no-op on the other ranks of a ``torchrun`` job."""
    if process_rank() == 0:
        return fn
    return lambda *args, **kwargs: None
