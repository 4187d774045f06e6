"""Training control: divergence checks, best-epoch keeping and early stopping.

:class:`TrainingControl` watches the loss of every step and the validation result of every epoch:

* a step loss that is NaN or infinite, or a smoothed loss (exponential moving average over steps, weight 0.1)
  above ``divergence_factor`` times the first step's loss, stops training with one :class:`PccError` that says
  so and suggests a lower learning rate;
* with ``keep_best``, the parameters and statistics (BatchNorm running mean and variance) of the epoch with the
  best validation accuracy (pentary weights; ties: the lower validation loss) are copied, and restored when
  training ends;
* with ``patience`` N, training stops after N epochs without a better validation result.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from pcc.diagnostics import PccError

__all__ = ["TrainingControl", "model_state", "load_model_state"]

_BUFFERS = ("running_mean", "running_var")


def _targets(model: Any, extra: tuple[np.ndarray, ...]) -> list[np.ndarray]:
    out = [model.flat_values]
    for layer in model.layers:
        out.extend(getattr(layer, b) for b in _BUFFERS if hasattr(layer, b))
    return out + list(extra)


def model_state(model: Any, extra: tuple[np.ndarray, ...] = ()) -> list[np.ndarray]:
    """Copies of everything that defines the model's outputs: the flat parameter buffer, layer buffers, and
    ``extra`` arrays (e.g. a trained text embedding table)."""
    return [a.copy() for a in _targets(model, extra)]


def load_model_state(model: Any, state: list[np.ndarray], extra: tuple[np.ndarray, ...] = ()) -> None:
    """Write a :func:`model_state` back in place (the parameters stay views into the flat buffer)."""
    for target, saved in zip(_targets(model, extra), state, strict=True):
        target[...] = saved
    model.reset_quant_state()


@dataclass
class TrainingControl:
    """See the module docstring.  ``patience`` 0 or None: no early stopping."""

    keep_best: bool = False
    patience: int | None = None
    divergence_factor: float = 100.0
    extra: tuple[np.ndarray, ...] = ()  # arrays kept with the best epoch besides the model's
    best_epoch: int | None = None
    best: tuple[float, float] | None = None
    stopped_early: bool = False
    _state: list[np.ndarray] | None = field(default=None, repr=False)
    _first: float | None = None
    _ema: float | None = None
    _since_best: int = 0

    def check_step(self, loss: float, epoch: int, step: int, lr: float) -> None:
        """Raise when the loss of a step is not finite or the smoothed loss has grown far past the start."""
        if not math.isfinite(loss):
            raise PccError(
                f"training diverged in epoch {epoch}, step {step}: the loss is {loss}",
                notes=[f"lower the learning rate ({lr:g}), e.g. --learning-rate {lr / 10:g}"],
            )
        if self._first is None:
            self._first = max(loss, 1e-6)
        self._ema = loss if self._ema is None else 0.9 * self._ema + 0.1 * loss
        if self._ema > self.divergence_factor * self._first:
            raise PccError(
                f"training diverged in epoch {epoch}, step {step}: the smoothed loss {self._ema:.4g} is over "
                f"{self.divergence_factor:g}x the first step's {self._first:.4g}",
                notes=[f"lower the learning rate ({lr:g}), e.g. --learning-rate {lr / 10:g}"],
            )

    def end_epoch(self, record: dict[str, Any], model: Any) -> bool:
        """Record the epoch's validation result (``record`` gets ``best: True`` when it is the best so far);
        returns True when training should stop (patience used up)."""
        if "val_acc" not in record:
            return False
        score = (float(record["val_acc"]), -float(record["val_loss"]))
        if self.best is None or score > self.best:
            self.best, self.best_epoch, self._since_best = score, int(record["epoch"]), 0
            record["best"] = True
            if self.keep_best:
                self._state = model_state(model, self.extra)
            return False
        self._since_best += 1
        if self.patience and self._since_best >= self.patience:
            self.stopped_early = True
            return True
        return False

    def finish(self, model: Any) -> bool:
        """Restore the best epoch's state if one was kept (returns whether the model changed)."""
        if self.keep_best and self._state is not None:
            load_model_state(model, self._state, self.extra)
            return True
        return False
