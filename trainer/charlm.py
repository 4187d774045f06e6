"""A character-level transformer language model with pentary weights: corpus, model, training loop, metrics.

:func:`char_transformer` builds a GPT-style decoder as a :class:`~pcc.trainer.model.PentaryModel` of the layers
in :mod:`pcc.trainer.transformer_layers`: token embedding, positional embedding, ``layers`` pre-norm blocks
(``residual[layernorm, attention]`` and ``residual[layernorm, linear, gelu, linear]``), a final layernorm and
a per-position linear head over the vocabulary.  Its input is ``[B, T]`` character ids, its output ``[B, T, V]``
logits (position ``t`` predicts character ``t + 1``).

:class:`CharLMTrainer` trains it with quantization-aware forward passes (as :class:`PentaryTrainer`: pentary
weights, straight-through gradients to the float shadow weights, a full scale search every
``full_search_every`` steps and warm-started refinement in between, a pull onto the grid at the end), Adam with
linear warm-up and cosine decay, and global gradient-norm clipping, on random windows of the training text,
for a number of steps or a wall-clock budget (the schedule then follows the clock); ``follow`` replays a
recorded run's schedule, which trains the float twin of a timed QAT run.
Validation loss is the mean cross-entropy in nats per character over consecutive non-overlapping windows of
the held-out text (every position of every window counts), for the pentary forward and for the float shadow.

The default corpus is the English text of CPython's own ``pydoc_data/topics.py`` (the language reference's
topics, about 465 k characters with Python 3.11), read as a file and parsed with :func:`ast.literal_eval`,
never imported or executed.
"""

from __future__ import annotations

import ast
import math
import sysconfig
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from pcc.diagnostics import PccError, read_input_text
from pcc.trainer.layers import F32, Layer, PentaryLinear
from pcc.trainer.model import PentaryModel
from pcc.trainer.optim import Adam
from pcc.trainer.transformer_layers import (
    GELU,
    LayerNorm,
    MultiHeadAttention,
    PentaryEmbedding,
    PositionalEmbedding,
    Residual,
)

__all__ = [
    "default_corpus",
    "read_corpus",
    "Vocabulary",
    "char_transformer",
    "lm_loss",
    "CharLMTrainer",
    "DEFAULTS",
]

# the defaults of `pcc train --model transformer`; a 10-minute budget (--time-budget 600) on one core of the
# project's 2-core machine is about 5,000 QAT steps of this model (docs/trainer.md, "Character-level language model")
DEFAULTS: dict[str, Any] = {
    "context": 64,
    "layers": 4,
    "heads": 4,
    "dim": 128,
    "batch_size": 16,
    "steps": 2200,
    "learning_rate": 3e-3,
    "warmup": 100,
    "val_fraction": 0.1,
    "float_warmup": 0.0,  # QAT from the first step (30 % in float ended 0.001 nats/char worse at 3000 steps)
}


def default_corpus() -> tuple[str, str]:
    """``(text, description)``: the topic texts of this Python's ``pydoc_data/topics.py``, joined in file order.

    The file is parsed as data (``ast.literal_eval`` of the ``topics`` dictionary), never imported."""
    path = Path(sysconfig.get_paths()["stdlib"]) / "pydoc_data" / "topics.py"
    try:
        source = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise PccError(f"the built-in corpus {path} cannot be read ({exc.strerror}); give --text FILE") from None
    try:
        tree = ast.parse(source, filename=str(path))
        node = next(
            n.value
            for n in tree.body
            if isinstance(n, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "topics" for t in n.targets)
        )
        topics = ast.literal_eval(node)
    except (SyntaxError, ValueError, StopIteration):
        raise PccError(f"{path} does not hold the expected 'topics' dictionary of strings; give --text FILE") from None
    if not isinstance(topics, dict) or not all(isinstance(v, str) for v in topics.values()):
        raise PccError(f"{path}: 'topics' is not a dictionary of strings; give --text FILE")
    text = "".join(topics.values())
    return text, f"pydoc_data/topics.py of Python {sysconfig.get_python_version()} ({len(text):,} characters)"


def read_corpus(path: str | Path) -> str:
    """A UTF-8 text file as one string (one clear error for a missing, non-UTF-8 or too short file)."""
    return read_input_text(path, "a UTF-8 text file")


class Vocabulary:
    """Characters <-> ids: id ``i`` is the ``i``-th character of ``chars`` (the sorted distinct characters)."""

    def __init__(self, chars: str) -> None:
        if not chars or len(set(chars)) != len(chars):
            raise ValueError("a vocabulary is a non-empty string of distinct characters")
        self.chars = chars
        self.index = {c: i for i, c in enumerate(chars)}

    @classmethod
    def from_text(cls, text: str) -> Vocabulary:
        return cls("".join(sorted(set(text))))

    def __len__(self) -> int:
        return len(self.chars)

    def encode(self, text: str, what: str = "text") -> np.ndarray:
        missing = sorted({c for c in text if c not in self.index})
        if missing:
            shown = ", ".join(repr(c) for c in missing[:8]) + (", ..." if len(missing) > 8 else "")
            raise PccError(f"{what} has {len(missing)} character(s) outside the model's vocabulary: {shown}")
        return np.fromiter((self.index[c] for c in text), np.int64, len(text))

    def decode(self, ids: Any) -> str:
        return "".join(self.chars[int(i)] for i in np.asarray(ids).ravel())


def char_transformer(
    vocab_size: int,
    context: int = DEFAULTS["context"],
    layers: int = DEFAULTS["layers"],
    heads: int = DEFAULTS["heads"],
    dim: int = DEFAULTS["dim"],
    *,
    mlp_ratio: int = 4,
    seed: int = 0,
    vocabulary: str | None = None,
    per_channel: bool = True,
    quant_method: str = "mse",
) -> PentaryModel:
    """A GPT-style character model (see the module docstring); weights drawn from N(0, 0.02), the projections
    into the residual stream from N(0, 0.02 / sqrt(2 layers)) as GPT-2 does."""
    for name, v in (("vocabulary size", vocab_size), ("context", context), ("layers", layers), ("heads", heads)):
        if v < 1:
            raise PccError(f"{name} must be at least 1, got {v}")
    if dim < 1 or dim % heads:
        raise PccError(f"--dim ({dim}) must be a positive multiple of --heads ({heads})")
    q = {"per_channel": per_channel, "quant_method": quant_method}
    stack: list[Layer] = [PentaryEmbedding(vocab_size, dim, **q), PositionalEmbedding(context, dim, **q)]
    for _ in range(layers):
        stack.append(Residual([LayerNorm(dim), MultiHeadAttention(dim, heads, causal=True, **q)]))
        stack.append(
            Residual(
                [
                    LayerNorm(dim),
                    PentaryLinear(dim, mlp_ratio * dim, **q),
                    GELU("tanh"),
                    PentaryLinear(mlp_ratio * dim, dim, **q),
                ]
            )
        )
    stack += [LayerNorm(dim), PentaryLinear(dim, vocab_size, **q)]
    model = PentaryModel(layers=stack, input_shape=(context,), seed=seed, vocabulary=vocabulary)
    init_transformer(model, seed)
    return model


def init_transformer(model: PentaryModel, seed: int) -> None:
    """GPT-2's initialisation of a :func:`char_transformer` model (reproducible from ``seed``)."""
    rng = np.random.default_rng(seed)
    n_blocks = sum(isinstance(layer, Residual) for layer in model.layers)
    resid_std = 0.02 / math.sqrt(max(n_blocks, 1))
    for layer in model.layers:
        layer.reset_parameters(rng)
        if isinstance(layer, Residual):
            for sub in layer.layers:
                if isinstance(sub, MultiHeadAttention):
                    sub.out.weight.value[...] = rng.standard_normal(sub.out.weight.value.shape) * resid_std
            lins = [s for s in layer.layers if isinstance(s, PentaryLinear)]
            for i, lin in enumerate(lins):
                std = resid_std if i == len(lins) - 1 else 0.02
                lin.weight.value[...] = rng.standard_normal(lin.weight.value.shape) * std
                if lin.bias is not None:
                    lin.bias.value[...] = 0
        elif isinstance(layer, PentaryLinear):
            layer.weight.value[...] = rng.standard_normal(layer.weight.value.shape) * 0.02
            if layer.bias is not None:
                layer.bias.value[...] = 0
    model.reset_quant_state()


def lm_loss(logits: np.ndarray, targets: np.ndarray) -> tuple[float, np.ndarray]:
    """Mean next-character cross-entropy (nats) over all ``[B, T]`` positions, and its gradient."""
    v = logits.shape[-1]
    z = logits.reshape(-1, v)
    t = np.asarray(targets).reshape(-1)
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    s = e.sum(axis=1, keepdims=True)
    rows = np.arange(len(t))
    loss = float(np.mean(np.log(s[:, 0]) - z[rows, t]))
    grad = e / s
    grad[rows, t] -= 1
    grad *= F32(1.0 / len(t))
    return loss, grad.reshape(logits.shape).astype(F32, copy=False)


def windows(ids: np.ndarray, context: int) -> tuple[np.ndarray, np.ndarray]:
    """Consecutive non-overlapping ``(inputs, targets)`` windows ``[N, context]`` covering ``ids``."""
    n = (len(ids) - 1) // context
    if n < 1:
        raise PccError(f"the held-out text has {len(ids)} characters, fewer than a context of {context} + 1")
    x = ids[: n * context].reshape(n, context)
    y = ids[1 : n * context + 1].reshape(n, context)
    return x, y


class CharLMTrainer:
    """Quantization-aware training of a :func:`char_transformer` model on a token-id array.

    The loop (:meth:`train`: schedule, time budget, random windows, divergence check, progress lines, history)
    is shared by the engines; an engine supplies the per-step work (:meth:`_step`, :meth:`_pull`,
    :meth:`_reset_quant`) and its own :meth:`evaluate` (:class:`pcc.trainer.torch_charlm.TorchCharLMTrainer`).
    ``float_warmup`` is the fraction of the run (of its steps, or of its time budget) trained in float before
    QAT starts (0: QAT from the first step)."""

    def __init__(
        self,
        model: PentaryModel,
        *,
        learning_rate: float = DEFAULTS["learning_rate"],
        warmup: int = DEFAULTS["warmup"],
        min_lr_ratio: float = 0.1,
        weight_decay: float = 0.0,
        clip: float = 1.0,
        grid_pull: float = 0.01,
        full_search_every: int = 50,
        qat: bool = True,
        float_warmup: float = 0.0,
        seed: int = 0,
        log: Callable[[str], None] | None = print,
    ) -> None:
        if not 0.0 <= float_warmup < 1.0:
            raise PccError(f"the float warm-up is a fraction of the run in [0, 1), got {float_warmup}")
        self.model = model
        self.learning_rate = float(learning_rate)
        self.warmup = int(warmup)
        self.min_lr_ratio = float(min_lr_ratio)
        self.clip = float(clip)
        self.grid_pull = float(grid_pull)
        self.full_search_every = max(int(full_search_every), 1)
        self.qat = bool(qat)
        self.float_warmup = float(float_warmup)
        self.rng = np.random.default_rng(seed)
        self.opt = Adam(model, betas=(0.9, 0.99), weight_decay=weight_decay)
        self.log = log
        self.history: list[dict[str, Any]] = []
        self.train_time = 0.0
        self.cpu_time = 0.0  # this process's CPU seconds while training (the wall time of a quiet machine)

    def lr_at_progress(self, step: int, progress: float, warmup: int, warmup_progress: float) -> float:
        """Linear warm-up over the first ``warmup`` steps, then cosine decay to ``min_lr_ratio`` of the peak over
        the rest of the run: ``progress`` is the fraction of the run done before this step (of its steps, or of
        its time budget), ``warmup_progress`` that fraction where the warm-up ended."""
        if step < warmup:
            return self.learning_rate * (step + 1) / warmup
        frac = (progress - warmup_progress) / max(1.0 - warmup_progress, 1e-12)
        lo = self.learning_rate * self.min_lr_ratio
        return lo + (self.learning_rate - lo) * 0.5 * (1.0 + math.cos(math.pi * min(max(frac, 0.0), 1.0)))

    def _starts(self, n: int, batch_size: int) -> np.ndarray:
        """The first positions of a batch's random windows (every engine draws the same)."""
        return self.rng.integers(0, n - self.model.input_shape[0] - 1, batch_size)

    # ---- the engine's part of a step (NumPy here) ---------------------------------------------------------

    def _begin(self, train_ids: np.ndarray) -> None:
        self._ids = np.asarray(train_ids)
        self._offsets = np.arange(self.model.input_shape[0])[None, :]
        self._wlayers = self.model.weight_layers()

    def _reset_quant(self) -> None:
        self.model.reset_quant_state()

    def _step(self, starts: np.ndarray, lr: float, quantized: bool) -> Any:
        """One optimisation step on the windows at ``starts``; returns the loss (or a handle :meth:`_losses`
        turns into floats)."""
        model = self.model
        idx = starts[:, None] + self._offsets
        model.flat_grads[...] = 0
        logits = model.forward(self._ids[idx], training=True, quantized=quantized)
        loss, grad = lm_loss(logits, self._ids[idx + 1])
        if not math.isfinite(loss):
            return loss
        model.backward(grad)
        if self.clip > 0:
            norm = float(np.sqrt(np.dot(model.flat_grads, model.flat_grads)))
            if norm > self.clip:
                model.flat_grads *= F32(self.clip / norm)
        self.opt.step(lr)
        return loss

    def _pull(self, beta: float) -> None:
        for layer in self._wlayers:
            layer.pull_to_grid(beta)

    def _losses(self, handles: list[Any]) -> list[float]:
        return [float(h) for h in handles]

    def _end(self) -> None:
        self._ids = np.zeros(0, np.int64)
        self.model.reset_quant_state()

    lazy_losses = False  # True: the engine's losses are read back only at the logging steps

    # ---- the loop ------------------------------------------------------------------------------------------

    def train(
        self,
        train_ids: np.ndarray,
        val_ids: np.ndarray | None = None,
        *,
        steps: int | None = DEFAULTS["steps"],
        batch_size: int = DEFAULTS["batch_size"],
        eval_every: int = 250,
        eval_chars: int | None = 20_000,
        time_budget: float | None = None,
        follow: list[dict[str, Any]] | None = None,
    ) -> list[dict[str, Any]]:
        """Train, printing progress every ``eval_every`` steps with a validation loss on the first
        ``eval_chars`` held-out characters (``None``: all; the whole held-out text is the caller's to evaluate
        at the end, :meth:`evaluate`).

        The run is ``steps`` steps or ``time_budget`` seconds of wall time (the periodic validations
        included), whichever ends first: the schedule follows the larger of the two fractions done (steps done
        / ``steps``, seconds spent / ``time_budget``), so it reaches its end where the run stops, and a timed
        run stops before the step that would pass its budget.  ``follow`` (a history this trainer or another
        wrote) replays that run's schedule step by step: the same number of steps, the same learning rate and
        progress at each (the float twin of a timed QAT run)."""
        t = self.model.input_shape[0]
        if len(train_ids) < t + 2:
            raise PccError(f"the training text has {len(train_ids)} characters, fewer than a context of {t} + 2")
        cap = steps
        if follow is not None:
            cap, steps, time_budget = len(follow), None, None
            if cap < 1 or not all("lr" in r and "progress" in r for r in follow):
                raise PccError("the history to follow has no steps with 'lr' and 'progress'")
        if time_budget is not None and not (math.isfinite(time_budget) and time_budget > 0):
            raise PccError(f"the time budget must be a number of seconds > 0, got {time_budget}")
        if cap is None and time_budget is None:
            raise PccError("give a number of steps or a time budget")
        if steps is not None and steps < 1:
            raise PccError(f"the number of steps must be at least 1, got {steps}")
        warmup = max(self.warmup if steps is None else min(self.warmup, steps // 10), 1)
        warmup_progress = 0.0
        total = "" if cap is None else f"/{cap}"  # of the progress lines
        self._begin(train_ids)
        t_start, c_start = time.perf_counter(), time.process_time()
        pending: list[tuple[dict[str, Any], Any]] = []
        first: float | None = None
        smoothed: float | None = None
        quantized_before = False
        step_time = 0.0
        step = 0
        try:
            while True:
                elapsed = time.perf_counter() - t_start
                if follow is not None:
                    progress, lr = float(follow[step]["progress"]), float(follow[step]["lr"])
                else:
                    progress = max(
                        0.0 if steps is None else step / steps,
                        0.0 if time_budget is None else min(elapsed / time_budget, 1.0),
                    )
                    if step < warmup and progress >= 0.1:  # the warm-up: at most a tenth of the run
                        warmup = step
                    if step == warmup:
                        warmup_progress = progress
                    lr = self.lr_at_progress(step, progress, warmup, warmup_progress)
                quantized = self.qat and progress >= self.float_warmup
                if quantized and (not quantized_before or step % self.full_search_every == 0):
                    self._reset_quant()
                quantized_before = quantized
                loss = self._step(self._starts(len(train_ids), batch_size), lr, quantized)
                if self.grid_pull and quantized:
                    done = max(progress, 0.0 if steps is None else (step + 1) / steps)
                    self._pull(self.grid_pull * done**2)
                step += 1
                now = time.perf_counter() - t_start
                # the next step's time: the larger of the last one and a running mean (a cautious guess)
                step_time = max(now - elapsed, 0.9 * step_time + 0.1 * (now - elapsed))
                rec: dict[str, Any] = {
                    "step": step,
                    "lr": lr,
                    "progress": round(progress, 6),
                    "quantized": quantized,
                    "loss": None,
                    "seconds": round(now, 3),
                    "cpu_seconds": round(time.process_time() - c_start, 3),
                }
                self.history.append(rec)
                pending.append((rec, loss))
                validate = val_ids is not None and bool(eval_every) and step % eval_every == 0
                if validate:
                    assert val_ids is not None
                    head = val_ids if eval_chars is None else val_ids[: eval_chars + 1]
                    rec["val_loss"] = self.evaluate(head, quantized=quantized)
                wall = time.perf_counter() - t_start
                last = step == cap or (time_budget is not None and wall + step_time > time_budget)
                report = last or step == 1 or (bool(eval_every) and step % eval_every == 0)
                if report or not self.lazy_losses:
                    for (r, _), value in zip(pending, self._losses([h for _, h in pending]), strict=True):
                        r["loss"] = value
                        first = value if first is None else first
                        if not math.isfinite(value) or value > 100 * max(first, 1):
                            raise PccError(
                                f"training diverged at step {r['step']} (loss {value}); try a lower --learning-rate"
                            )
                        smoothed = value if smoothed is None else 0.9 * smoothed + 0.1 * value
                    pending = []
                if self.log is not None and report:
                    msg = f"step {step:5d}{total}  lr {lr:.2e}  train loss {smoothed:.4f}"
                    if "val_loss" in rec:
                        msg += f"  val loss {rec['val_loss']:.4f} ({'pentary' if quantized else 'float'})"
                    self.log(msg + f"  {wall:6.1f}s ({time.process_time() - c_start:.1f}s CPU)")
                if last:
                    break
        finally:
            self.train_time += time.perf_counter() - t_start
            self.cpu_time += time.process_time() - c_start
            self._end()
        return self.history

    def evaluate(self, ids: np.ndarray, quantized: bool = True, batch_size: int = 64) -> float:
        """Mean next-character loss (nats/char) over every position of the consecutive windows of ``ids``."""
        x, y = windows(ids, self.model.input_shape[0])
        logits_fn = self.model.predict
        total, count = 0.0, 0
        for i in range(0, len(x), batch_size):
            logits = logits_fn(x[i : i + batch_size], quantized=quantized)
            loss, _ = lm_loss(logits, y[i : i + batch_size])
            n = y[i : i + batch_size].size
            total += loss * n
            count += n
        return total / count
