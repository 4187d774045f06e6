"""The character-level transformer LM of :mod:`pcc.trainer.charlm` trained by the torch engine (CPU or CUDA).

:class:`TorchCharLMTrainer` is :class:`~pcc.trainer.charlm.CharLMTrainer` with its steps in PyTorch (the loop,
schedule and time budget are the base class's): the model's
layers mirrored by :mod:`pcc.trainer.torch_engine` (pentary embeddings, projections and head with the same
QAT: a full scale search every ``full_search_every`` steps, all layers' warm-started refinement fused into one
pass in between, straight-through gradients), the same random windows (the NumPy generator's draws), schedule
(linear warm-up, cosine decay), Adam (betas 0.9 / 0.99), global gradient-norm clipping and grid pull.  bf16
autocast on CUDA as in the torch engine; the losses come back to the host only at the logging and evaluation
steps (divergence is checked there, for every step since the last).  Evaluation uses the model file's pents
and scales (:func:`pcc.quant.quantize_weights`); the trained weights are copied back into the model at the end,
so its JSON is written by the same code as the NumPy engine's.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from pcc.diagnostics import PccError
from pcc.trainer.charlm import CharLMTrainer, windows
from pcc.trainer.model import PentaryModel
from pcc.trainer.torch_engine import PRECISIONS
from pcc.trainer.torch_layers import _compiled_step, build_net
from pcc.trainer.torch_setup import require_torch, resolve_device

__all__ = ["TorchCharLMTrainer"]


class TorchCharLMTrainer(CharLMTrainer):
    """:class:`CharLMTrainer` on torch; extra keyword arguments ``device`` (``auto``, ``cpu``, ``cuda``,
    ``cuda:N``), ``precision`` (``auto``: bf16 autocast on CUDA, else float32; ``fp32``; ``bf16``) and
    ``compile`` (the fused quantization pass compiled by ``torch.compile``)."""

    def __init__(
        self,
        model: PentaryModel,
        *,
        device: str = "auto",
        precision: str = "auto",
        compile: bool = False,
        weight_decay: float = 0.0,
        **kwargs: Any,
    ) -> None:
        torch = require_torch()
        if weight_decay:
            raise PccError("the torch engine's language-model trainer has no weight decay; use the NumPy engine")
        super().__init__(model, **kwargs)
        self.device = resolve_device(device)
        p = precision.strip().lower()
        if p not in PRECISIONS:
            raise PccError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
        self.precision = ("bf16" if self.device.type == "cuda" else "fp32") if p == "auto" else p
        self.net = build_net(model).to(self.device)
        if compile:
            self.net.step_fn = _compiled_step()
        self.params = list(self.net.parameters())
        self.topt = torch.optim.Adam(self.params, lr=self.learning_rate, betas=(0.9, 0.99), eps=self.opt.eps)

    def _autocast(self) -> Any:
        import contextlib

        torch = require_torch()
        if self.precision == "bf16":
            return torch.autocast(self.device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    lazy_losses = True  # the losses come back to the host only at the logging steps

    def _begin(self, train_ids: np.ndarray) -> None:
        torch = require_torch()
        self._ids = torch.from_numpy(np.asarray(train_ids, np.int64)).to(self.device)
        self._offsets = torch.arange(self.model.input_shape[0], device=self.device)[None, :]
        self._wlayers = self.net.weight_layers()
        self.net.train()

    def _reset_quant(self) -> None:
        self.net.reset_quant_state()

    def _step(self, starts: np.ndarray, lr: float, quantized: bool) -> Any:
        torch = require_torch()
        net, opt = self.net, self.topt
        for g in opt.param_groups:
            g["lr"] = lr
        net.set_quantized(quantized)
        idx = torch.from_numpy(starts).to(self.device)[:, None] + self._offsets
        xb, yb = self._ids[idx], self._ids[idx + 1]
        with self._autocast():
            logits = net(xb)
        loss = torch.nn.functional.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), yb.reshape(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if self.clip > 0:  # as the NumPy engine: scaled to the clip norm only when above it
            grads = [p.grad for p in self.params if p.grad is not None]
            norm = torch.linalg.vector_norm(torch.stack(torch._foreach_norm(grads)))
            torch._foreach_mul_(grads, torch.where(norm > self.clip, self.clip / norm, torch.ones_like(norm)))
        opt.step()
        return loss.detach()

    def _pull(self, beta: float) -> None:
        torch = require_torch()
        with torch.no_grad():
            torch._foreach_lerp_([m.weight for m in self._wlayers], [m.last for m in self._wlayers], beta)

    def _losses(self, handles: list[Any]) -> list[float]:
        torch = require_torch()
        return [float(v) for v in torch.stack(handles).double().cpu().numpy()]

    def _end(self) -> None:
        torch = require_torch()
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        self._ids = None
        self.net.copy_to(self.model)
        self.net.reset_quant_state()
        self.model.reset_quant_state()

    def evaluate(self, ids: np.ndarray, quantized: bool = True, batch_size: int = 64) -> float:
        """Mean next-character loss (nats/char) over every position of the consecutive windows of ``ids``, with
        the model file's pents and scales when ``quantized``."""
        torch = require_torch()
        x, y = windows(ids, self.model.input_shape[0])
        net = self.net
        net.eval()
        net.set_quantized(quantized)
        net.freeze(quantized)
        total = torch.zeros((), dtype=torch.float64, device=self.device)
        try:
            with torch.no_grad(), self._autocast():
                for i in range(0, len(x), batch_size):
                    xb = torch.from_numpy(np.asarray(x[i : i + batch_size], np.int64)).to(self.device)
                    yb = torch.from_numpy(np.asarray(y[i : i + batch_size], np.int64)).to(self.device)
                    logits = net(xb).float()
                    total += torch.nn.functional.cross_entropy(
                        logits.reshape(-1, logits.shape[-1]), yb.reshape(-1), reduction="sum"
                    ).double()
        finally:
            net.freeze(False)
            net.set_quantized(self.qat)
            net.train()
        return float(total) / y.size
