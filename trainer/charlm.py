"""A character-level transformer language model with pentary weights: corpus, model, training loop, metrics.

:func:`char_transformer` builds a GPT-style decoder as a :class:`~pcc.trainer.model.PentaryModel` of the layers
in :mod:`pcc.trainer.transformer_layers`: token embedding, positional embedding, ``layers`` pre-norm blocks
(``residual[layernorm, attention]`` and ``residual[layernorm, linear, gelu, linear]``), a final layernorm and
a per-position linear head over the vocabulary.  Its input is ``[B, T]`` character ids, its output ``[B, T, V]``
logits (position ``t`` predicts character ``t + 1``).

:class:`CharLMTrainer` trains it with quantization-aware forward passes (as :class:`PentaryTrainer`: pentary
weights, straight-through gradients to the float shadow weights, a full scale search every
``full_search_every`` steps and warm-started refinement in between, a pull onto the grid at the end), Adam with
linear warm-up and cosine decay, and global gradient-norm clipping, on random windows of the training text.
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

from pcc.diagnostics import PccError
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

# defaults sized for about 9 minutes of one core of the project's 2-core machine (0.24 s of CPU per step,
# measured; docs/trainer.md, "Character-level language model")
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
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise PccError(f"text file not found: {path}") from None
    except IsADirectoryError:
        raise PccError(f"{path} is a directory, not a text file") from None
    except UnicodeDecodeError as exc:
        raise PccError(f"{path} is not UTF-8 text (byte {exc.start}: {exc.reason})") from None
    except OSError as exc:
        raise PccError(f"cannot read {path}: {exc.strerror}") from None
    return text


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
    """Quantization-aware training of a :func:`char_transformer` model on a token-id array."""

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
        seed: int = 0,
        log: Callable[[str], None] | None = print,
    ) -> None:
        self.model = model
        self.learning_rate = float(learning_rate)
        self.warmup = int(warmup)
        self.min_lr_ratio = float(min_lr_ratio)
        self.clip = float(clip)
        self.grid_pull = float(grid_pull)
        self.full_search_every = max(int(full_search_every), 1)
        self.qat = bool(qat)
        self.rng = np.random.default_rng(seed)
        self.opt = Adam(model, betas=(0.9, 0.99), weight_decay=weight_decay)
        self.log = log
        self.history: list[dict[str, Any]] = []
        self.train_time = 0.0
        self.cpu_time = 0.0  # this process's CPU seconds while training (the wall time of a quiet machine)

    def lr_at(self, step: int, total: int) -> float:
        """Linear warm-up over ``warmup`` steps (at most a tenth of the run), then cosine decay to
        ``min_lr_ratio`` of the peak."""
        warmup = max(min(self.warmup, total // 10), 1)
        if step < warmup:
            return self.learning_rate * (step + 1) / warmup
        frac = (step - warmup) / max(total - warmup, 1)
        lo = self.learning_rate * self.min_lr_ratio
        return lo + (self.learning_rate - lo) * 0.5 * (1.0 + math.cos(math.pi * min(frac, 1.0)))

    def batch(self, ids: np.ndarray, batch_size: int) -> tuple[np.ndarray, np.ndarray]:
        t = self.model.input_shape[0]
        starts = self.rng.integers(0, len(ids) - t - 1, batch_size)
        idx = starts[:, None] + np.arange(t)[None, :]
        return ids[idx], ids[idx + 1]

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
        """Train for ``steps`` steps (or until ``max_seconds`` of training have passed; the schedule then still
        ends at ``steps``, so set ``steps`` to what fits), printing progress every ``eval_every`` steps with a
        validation loss on the first ``eval_chars`` held-out characters."""
        model = self.model
        t = model.input_shape[0]
        if len(train_ids) < t + 2:
            raise PccError(f"the training text has {len(train_ids)} characters, fewer than a context of {t} + 2")
        wlayers = model.weight_layers()
        t_start, c_start = time.perf_counter(), time.process_time()
        smoothed = None
        for step in range(steps):
            if step % self.full_search_every == 0:
                model.reset_quant_state()
            lr = self.lr_at(step, steps)
            xb, yb = self.batch(train_ids, batch_size)
            model.flat_grads[...] = 0
            logits = model.forward(xb, training=True, quantized=self.qat)
            loss, grad = lm_loss(logits, yb)
            if not math.isfinite(loss) or (smoothed is not None and loss > 100 * max(self.history[0]["loss"], 1)):
                raise PccError(f"training diverged at step {step + 1} (loss {loss}); try a lower --learning-rate")
            model.backward(grad)
            if self.clip > 0:
                norm = float(np.sqrt(np.dot(model.flat_grads, model.flat_grads)))
                if norm > self.clip:
                    model.flat_grads *= F32(self.clip / norm)
            self.opt.step(lr)
            if self.grid_pull and self.qat:
                beta = self.grid_pull * ((step + 1) / steps) ** 2
                for layer in wlayers:
                    layer.pull_to_grid(beta)
            smoothed = loss if smoothed is None else 0.9 * smoothed + 0.1 * loss
            elapsed = time.perf_counter() - t_start
            rec: dict[str, Any] = {
                "step": step + 1,
                "lr": lr,
                "loss": loss,
                "seconds": round(elapsed, 3),
                "cpu_seconds": round(time.process_time() - c_start, 3),
            }
            last = step + 1 == steps or (max_seconds is not None and elapsed >= max_seconds)
            if val_ids is not None and eval_every and ((step + 1) % eval_every == 0 or last):
                head = val_ids if eval_chars is None or last else val_ids[: eval_chars + 1]
                rec["val_loss"] = self.evaluate(head, quantized=True)
            self.history.append(rec)
            if self.log is not None and (eval_every and ((step + 1) % eval_every == 0 or last) or step == 0):
                msg = f"step {step + 1:5d}/{steps}  lr {lr:.2e}  train loss {smoothed:.4f}"
                if "val_loss" in rec:
                    msg += f"  val loss {rec['val_loss']:.4f} (pentary)"
                self.log(msg + f"  {elapsed:6.1f}s ({rec['cpu_seconds']:.1f}s CPU)")
            if last:
                break
        self.train_time += time.perf_counter() - t_start
        self.cpu_time += time.process_time() - c_start
        model.reset_quant_state()
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
