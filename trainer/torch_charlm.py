"""The character-level transformer LM of :mod:`pcc.trainer.charlm` trained by the torch engine (CPU or CUDA).

:class:`TorchCharLMTrainer` is :class:`~pcc.trainer.charlm.CharLMTrainer` with its loop in PyTorch: the model's
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

import math
import time
from typing import Any

import numpy as np

from pcc.diagnostics import PccError
from pcc.trainer.charlm import DEFAULTS, CharLMTrainer, windows
from pcc.trainer.model import PentaryModel
from pcc.trainer.torch_engine import PRECISIONS, _compiled_step, build_net, require_torch, resolve_device

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

    def train(
        self,
        train_ids: np.ndarray,
        val_ids: np.ndarray | None = None,
        *,
        steps: int = DEFAULTS["steps"],
        batch_size: int = DEFAULTS["batch_size"],
        eval_every: int = 250,
        eval_chars: int | None = 20_000,
        max_seconds: float | None = None,
    ) -> list[dict[str, Any]]:
        """As :meth:`CharLMTrainer.train`."""
        torch = require_torch()
        F = torch.nn.functional
        model, net, opt = self.model, self.net, self.topt
        t = model.input_shape[0]
        if len(train_ids) < t + 2:
            raise PccError(f"the training text has {len(train_ids)} characters, fewer than a context of {t} + 2")
        ids = torch.from_numpy(np.asarray(train_ids, np.int64)).to(self.device)
        offsets = torch.arange(t, device=self.device)
        wlayers = net.weight_layers()
        net.train()
        net.set_quantized(self.qat)
        pending: list[tuple[dict[str, Any], Any]] = []
        first: list[float] = []
        smoothed: float | None = None
        t_start = time.perf_counter()
        for step in range(steps):
            if step % self.full_search_every == 0:
                net.reset_quant_state()
            lr = self.lr_at(step, steps)
            for g in opt.param_groups:
                g["lr"] = lr
            starts = torch.from_numpy(self.rng.integers(0, len(train_ids) - t - 1, batch_size)).to(self.device)
            idx = starts[:, None] + offsets[None, :]
            xb, yb = ids[idx], ids[idx + 1]
            with self._autocast():
                logits = net(xb)
            loss = F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), yb.reshape(-1))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if self.clip > 0:  # as the NumPy engine: scaled to the clip norm only when above it
                grads = [p.grad for p in self.params if p.grad is not None]
                norm = torch.linalg.vector_norm(torch.stack(torch._foreach_norm(grads)))
                torch._foreach_mul_(grads, torch.where(norm > self.clip, self.clip / norm, torch.ones_like(norm)))
            opt.step()
            if self.grid_pull and self.qat:
                beta = self.grid_pull * ((step + 1) / steps) ** 2
                with torch.no_grad():
                    torch._foreach_lerp_([m.weight for m in wlayers], [m.last for m in wlayers], beta)
            elapsed = time.perf_counter() - t_start
            rec: dict[str, Any] = {"step": step + 1, "lr": lr, "loss": None, "seconds": round(elapsed, 3)}
            pending.append((rec, loss.detach()))
            self.history.append(rec)
            last = step + 1 == steps or (max_seconds is not None and elapsed >= max_seconds)
            report = bool(eval_every) and ((step + 1) % eval_every == 0 or last)
            if report or step == 0 or last:
                values = torch.stack([v for _, v in pending]).double().cpu().numpy()
                for (r, _), value in zip(pending, values, strict=True):
                    r["loss"] = float(value)
                    if not first:
                        first.append(r["loss"])
                    if not math.isfinite(r["loss"]) or r["loss"] > 100 * max(first[0], 1):
                        raise PccError(
                            f"training diverged at step {r['step']} (loss {r['loss']}); try a lower --learning-rate"
                        )
                    smoothed = r["loss"] if smoothed is None else 0.9 * smoothed + 0.1 * r["loss"]
                pending = []
                if val_ids is not None and report:
                    head = val_ids if eval_chars is None or last else val_ids[: eval_chars + 1]
                    rec["val_loss"] = self.evaluate(head, quantized=True)
                    net.train()
                    net.set_quantized(self.qat)
                if self.log is not None:
                    msg = f"step {step + 1:5d}/{steps}  lr {lr:.2e}  train loss {smoothed:.4f}"
                    if "val_loss" in rec:
                        msg += f"  val loss {rec['val_loss']:.4f} (pentary)"
                    self.log(msg + f"  {time.perf_counter() - t_start:6.1f}s")
            if last:
                break
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        self.train_time += time.perf_counter() - t_start
        net.copy_to(model)
        net.reset_quant_state()
        model.reset_quant_state()
        return self.history

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
        return float(total) / y.size
