"""Optimisers (SGD with momentum, Adam) and learning-rate schedules, working on a model's flat buffers.

Both follow PyTorch's update rules (``torch.optim.SGD`` / ``torch.optim.Adam``), including coupled weight decay
(``grad += weight_decay * w``), which here applies to weights only (not to biases or BatchNorm parameters).
A step is a few whole-buffer NumPy operations, whatever the number of layers.
"""

from __future__ import annotations

import math

import numpy as np

from pcc.trainer.model import PentaryModel

__all__ = ["Optimizer", "SGD", "Adam", "make_optimizer", "lr_at", "OPTIMIZERS", "SCHEDULES"]

OPTIMIZERS = ("adam", "sgd")
SCHEDULES = ("cosine", "constant")


class Optimizer:
    def __init__(self, model: PentaryModel, weight_decay: float = 0.0) -> None:
        self.model = model
        self.weight_decay = float(weight_decay)
        self._tmp = np.zeros_like(model.flat_values)

    def _grad(self) -> np.ndarray:
        g = self.model.flat_grads
        if self.weight_decay:
            np.multiply(self.model.flat_values, self.model.decay_mask, out=self._tmp)
            self._tmp *= np.float32(self.weight_decay)
            self._tmp += g
            return self._tmp
        return g

    def step(self, lr: float) -> None:
        raise NotImplementedError


class SGD(Optimizer):
    """``v = momentum * v + g``; ``w -= lr * v`` (``nesterov``: ``w -= lr * (g + momentum * v)``)."""

    def __init__(
        self, model: PentaryModel, momentum: float = 0.9, weight_decay: float = 0.0, nesterov: bool = False
    ) -> None:
        super().__init__(model, weight_decay)
        self.momentum = np.float32(momentum)
        self.nesterov = nesterov
        self.velocity = np.zeros_like(model.flat_values)
        self._first = True

    def step(self, lr: float) -> None:
        g = self._grad()
        w = self.model.flat_values
        if self.momentum:
            if self._first:
                self.velocity[...] = g
                self._first = False
            else:
                self.velocity *= self.momentum
                self.velocity += g
            if self.nesterov:
                w -= np.float32(lr) * (g + self.momentum * self.velocity)
            else:
                w -= np.float32(lr) * self.velocity
        else:
            w -= np.float32(lr) * g


class Adam(Optimizer):
    """Adam (Kingma & Ba) with bias correction, PyTorch's formulation."""

    def __init__(
        self,
        model: PentaryModel,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
    ) -> None:
        super().__init__(model, weight_decay)
        self.b1, self.b2 = float(betas[0]), float(betas[1])
        self.eps = float(eps)
        self.m = np.zeros_like(model.flat_values)
        self.v = np.zeros_like(model.flat_values)
        self.t = 0
        self._den = np.zeros_like(model.flat_values)

    def step(self, lr: float) -> None:
        g = self._grad()
        self.t += 1
        b1, b2, m, v, den = self.b1, self.b2, self.m, self.v, self._den
        m *= np.float32(b1)
        m += np.float32(1 - b1) * g
        v *= np.float32(b2)
        np.multiply(g, g, out=den)
        den *= np.float32(1 - b2)
        v += den
        bc1 = 1 - b1**self.t
        bc2 = 1 - b2**self.t
        np.sqrt(v, out=den)
        den *= np.float32(1 / math.sqrt(bc2))
        den += np.float32(self.eps)
        np.divide(m, den, out=den)
        den *= np.float32(lr / bc1)
        self.model.flat_values -= den


def make_optimizer(name: str, model: PentaryModel, momentum: float = 0.9, weight_decay: float = 0.0) -> Optimizer:
    name = name.lower()
    if name == "adam":
        return Adam(model, weight_decay=weight_decay)
    if name == "sgd":
        return SGD(model, momentum=momentum, weight_decay=weight_decay)
    raise ValueError(f"unknown optimizer {name!r} (expected one of {', '.join(OPTIMIZERS)})")


def lr_at(schedule: str, base_lr: float, step: int, total_steps: int) -> float:
    """Learning rate for 0-based ``step`` of ``total_steps``: ``cosine`` decays from ``base_lr`` towards 0
    (half a cosine period over the run), ``constant`` keeps it."""
    if schedule == "constant" or total_steps <= 1:
        return base_lr
    if schedule == "cosine":
        return base_lr * 0.5 * (1.0 + math.cos(math.pi * step / total_steps))
    raise ValueError(f"unknown schedule {schedule!r} (expected one of {', '.join(SCHEDULES)})")
