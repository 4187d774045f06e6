"""``PentaryTrainer``: mini-batch training with quantization-aware forward passes; losses; save/load.

Training is quantization-aware by default (``qat=True``): every forward pass of training uses the pentary
weights (per-channel scales re-derived from the float shadow weights on every step), and the gradient reaches
the shadow weights through the straight-through estimator, so the network learns weights that work *after*
rounding to five levels.  ``qat=False`` trains the float weights and only quantizes for evaluation and export
(post-training quantization), which is what the published tool did; it is kept for comparison.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from pcc.diagnostics import PccError
from pcc.trainer import model_format as fmt
from pcc.trainer.control import TrainingControl
from pcc.trainer.layers import F32
from pcc.trainer.model import PentaryModel
from pcc.trainer.optim import OPTIMIZERS, SCHEDULES, lr_at, make_optimizer
from pcc.trainer.progress import Progress

__all__ = ["LossFunction", "PentaryTrainer", "PentaryModel", "one_hot"]

LossFn = Callable[[np.ndarray, np.ndarray], tuple[float, np.ndarray]]


def one_hot(labels: np.ndarray, width: int) -> np.ndarray:
    """``[N]`` integer labels -> ``[N, width]`` float32 one-hot rows (PccError for labels outside 0..width-1)."""
    labels = np.asarray(labels)
    if labels.size and (labels.min() < 0 or labels.max() >= width):
        raise PccError(
            f"labels must be in 0..{width - 1} for {width} outputs, found {int(labels.min())}..{int(labels.max())}"
        )
    out = np.zeros((labels.shape[0], width), F32)
    out[np.arange(labels.shape[0]), labels.astype(np.int64)] = 1.0
    return out


def _targets(targets: np.ndarray, width: int) -> np.ndarray:
    targets = np.asarray(targets)
    if targets.ndim == 1:
        return one_hot(targets, width)
    return targets.astype(F32, copy=False)


class LossFunction:
    """Loss functions: each returns ``(mean loss, gradient w.r.t. the outputs)``.

    ``targets`` are integer class labels ``[B]`` (one-hot width = the number of outputs) or ``[B, K]`` rows.
    """

    @staticmethod
    def cross_entropy_loss(logits: np.ndarray, targets: np.ndarray) -> tuple[float, np.ndarray]:
        """Softmax cross-entropy averaged over the batch (log-sum-exp stabilised)."""
        t = _targets(targets, logits.shape[1])
        z = logits - logits.max(axis=1, keepdims=True)
        e = np.exp(z)
        s = e.sum(axis=1, keepdims=True)
        n = logits.shape[0]
        loss = float(np.sum(t * (np.log(s) - z)) / n)
        grad = (e / s) * t.sum(axis=1, keepdims=True) - t
        grad /= F32(n)
        return loss, grad.astype(F32, copy=False)

    @staticmethod
    def mse_loss(outputs: np.ndarray, targets: np.ndarray) -> tuple[float, np.ndarray]:
        """Mean squared error over all elements (like ``torch.nn.MSELoss()``), against one-hot rows."""
        t = _targets(targets, outputs.shape[1])
        d = outputs - t
        loss = float(np.mean(d * d))
        return loss, (d * F32(2.0 / d.size)).astype(F32, copy=False)


@contextlib.contextmanager
def blas_threads(n: int | None) -> Iterator[None]:
    """Limit the BLAS library to ``n`` threads inside the block (``None``: leave it; needs threadpoolctl)."""
    if n is None:
        yield
        return
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # optional: without it the BLAS keeps its own setting
        yield
        return
    with threadpool_limits(limits=n, user_api="blas"):
        yield


LOSSES: dict[str, LossFn] = {"cross_entropy": LossFunction.cross_entropy_loss, "mse": LossFunction.mse_loss}


class PentaryTrainer:
    """Train a :class:`PentaryModel`.

    The seed's arguments (``model``, ``loss_fn``, ``learning_rate``, ``use_multimodal``, ``modalities``) come
    first; the rest are keyword-only.  ``optimizer`` is ``"adam"`` or ``"sgd"`` (momentum ``momentum``),
    ``schedule`` is ``"cosine"`` or ``"constant"``, ``seed`` fixes the shuffling (and dropout) so that a run is
    reproducible, ``log`` receives one progress line per epoch (``None``: silent), ``threads`` limits the BLAS
    threads while training (default 1: the matrices are small, and a multi-threaded BLAS on a busy machine
    was measured 10x slower; ``None`` keeps the library's setting; needs ``threadpoolctl``, else no limit).
    With ``use_multimodal`` the training data may be ``(dict of modality -> samples, labels)``; a
    :class:`MultimodalFusion` (fitted on the training data) turns it into feature vectors.
    """

    def __init__(
        self,
        model: PentaryModel | None = None,
        loss_fn: LossFn | str | None = None,
        learning_rate: float = 0.01,
        use_multimodal: bool = False,
        modalities: Sequence[str] | None = None,
        *,
        optimizer: str = "adam",
        momentum: float = 0.9,
        weight_decay: float = 0.0,
        schedule: str = "cosine",
        seed: int = 0,
        qat: bool = True,
        grid_pull: float = 0.01,
        fusion_method: str = "concat",
        fusion: Any = None,
        log: Callable[[str], None] | None = print,
        threads: int | None = 1,
        progress: bool = False,
    ) -> None:
        if isinstance(loss_fn, str):
            if loss_fn not in LOSSES:
                raise PccError(f"unknown loss {loss_fn!r} (expected one of {', '.join(LOSSES)})")
            loss_fn = LOSSES[loss_fn]
        if optimizer.lower() not in OPTIMIZERS:
            raise PccError(f"unknown optimizer {optimizer!r} (expected one of {', '.join(OPTIMIZERS)})")
        if schedule not in SCHEDULES:
            raise PccError(f"unknown schedule {schedule!r} (expected one of {', '.join(SCHEDULES)})")
        if learning_rate <= 0:
            raise PccError(f"learning rate must be positive, got {learning_rate}")
        self.model = model
        self.loss_fn: LossFn = loss_fn or LossFunction.cross_entropy_loss
        self.learning_rate = float(learning_rate)
        self.use_multimodal = bool(use_multimodal)
        self.modalities = list(modalities) if modalities else ["text", "image", "audio"]
        self.optimizer_name = optimizer.lower()
        self.momentum = float(momentum)
        self.weight_decay = float(weight_decay)
        self.schedule = schedule
        self.seed = int(seed)
        self.qat = bool(qat)
        self.grid_pull = float(grid_pull)
        self.log = log
        self.threads = threads
        self.progress = progress  # a progress bar on stderr within epochs (pcc.trainer.progress)
        self.text_tuner: Any = None  # a multimodal.TextTuner: the text embedding trains with the network
        self.fusion = fusion
        if self.use_multimodal and self.fusion is None:
            from pcc.trainer.multimodal import MultimodalFusion

            self.fusion = MultimodalFusion(self.modalities, fusion_method=fusion_method)
        self.history: list[dict[str, Any]] = []
        self.metrics: dict[str, Any] = {}
        self.train_time = 0.0
        self._optimizer = None
        self._step = 0

    # --- data ----------------------------------------------------------------------------------------------

    def _features(self, x: Any, fit: bool) -> np.ndarray:
        if isinstance(x, dict):
            if self.fusion is None:
                raise PccError("multimodal data (a dict of modalities) needs use_multimodal=True")
            x = self.fusion.process_batch(x, fit=fit)
        return np.ascontiguousarray(x, dtype=F32)

    def _dataset(self, data: Any, what: str, fit: bool) -> tuple[np.ndarray, np.ndarray]:
        if not isinstance(data, tuple | list) or len(data) != 2:
            raise PccError(f"{what} must be a pair (inputs, labels)")
        x = self._features(data[0], fit)
        y = np.asarray(data[1])
        if y.ndim == 2:
            y = np.argmax(y, axis=1)
        if y.ndim != 1 or not np.issubdtype(y.dtype, np.integer) and not np.all(y == np.rint(y)):
            raise PccError(f"{what}: labels must be a 1-d array of class indices (or one-hot rows)")
        y = y.astype(np.int64)
        if len(x) != len(y):
            raise PccError(f"{what}: {len(x)} inputs but {len(y)} labels")
        if self.model is None:
            self.model = PentaryModel(int(np.prod(x.shape[1:])), int(y.max()) + 1 if len(y) else 1, seed=self.seed)
        if y.size and (y.min() < 0 or y.max() >= self.model.output_dim):
            raise PccError(
                f"{what}: labels must be in 0..{self.model.output_dim - 1} for a model with "
                f"{self.model.output_dim} outputs, found {int(y.min())}..{int(y.max())}"
            )
        if not np.all(np.isfinite(x)):
            raise PccError(f"{what}: inputs contain NaN or infinity")
        return x, y

    # --- training ------------------------------------------------------------------------------------------

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
        """Train for ``epochs`` passes over ``train_data``; returns the per-epoch history (also ``.history``).

        ``train_data`` / ``val_data`` are ``(inputs, labels)``; labels are class indices or one-hot rows.
        After the last epoch ``.metrics`` holds the final loss and accuracy on both sets, float and pentary.
        ``keep_best`` ends with the parameters of the epoch with the best validation accuracy; ``patience`` N
        stops after N epochs without a better one (both need ``val_data``).  A NaN or diverging loss stops
        training with a PccError (:class:`~pcc.trainer.control.TrainingControl`).
        """
        if epochs < 1 or batch_size < 1:
            raise PccError("epochs and batch size must be at least 1")
        if (keep_best or patience) and val_data is None:
            raise PccError("keeping the best epoch and early stopping need validation data")
        tuner = self.text_tuner
        control = TrainingControl(keep_best=keep_best, patience=patience, extra=tuple(tuner.state()) if tuner else ())
        with blas_threads(self.threads):
            return self._train(train_data, val_data, epochs, batch_size, control)

    def _train(
        self, train_data: Any, val_data: Any, epochs: int, batch_size: int, control: TrainingControl
    ) -> list[dict[str, Any]]:
        x, y = self._dataset(train_data, "training data", fit=True)
        xv, yv = self._dataset(val_data, "validation data", fit=False) if val_data is not None else (None, None)
        model = self.model
        assert model is not None
        if len(x) == 0:
            raise PccError("training data is empty")
        x = model._prepare(x)
        targets = one_hot(y, model.output_dim)
        if self._optimizer is None or self._optimizer.model is not model:
            self._optimizer = make_optimizer(self.optimizer_name, model, self.momentum, self.weight_decay)
            self._step = 0
        opt = self._optimizer
        rng = np.random.default_rng(self.seed + len(self.history))
        for layer in model.layers:
            if hasattr(layer, "rng"):
                layer.rng = np.random.default_rng(rng.integers(2**63))
        n = len(x)
        steps_per_epoch = -(-n // batch_size)
        total = steps_per_epoch * epochs
        start_step = self._step
        wlayers = model.weight_layers()
        tuner = self.text_tuner
        if tuner is not None:
            model.layers[0].need_input_grad = True  # the text columns' gradient trains the embedding
        t_start = time.perf_counter()
        epoch_total = len(self.history) + epochs
        for epoch in range(epochs):
            t0 = time.perf_counter()
            model.reset_quant_state()  # the epoch's first step does a full scale search
            perm = rng.permutation(n)
            loss_sum, correct = 0.0, 0
            bar = Progress(steps_per_epoch, f"epoch {len(self.history) + 1}/{epoch_total}", self.progress)
            for i in range(0, n, batch_size):
                idx = perm[i : i + batch_size]
                lr = lr_at(self.schedule, self.learning_rate, self._step - start_step, total)
                xb = x[idx] if tuner is None else tuner.features(x[idx], "train", idx)
                out = model.forward(xb, training=True, quantized=self.qat)
                loss, grad = self.loss_fn(out, targets[idx])
                control.check_step(loss, len(self.history) + 1, i // batch_size + 1, self.learning_rate)
                input_grad = model.backward(grad)
                opt.step(lr)
                if tuner is not None:
                    tuner.backward(input_grad)
                    tuner.step(lr)
                if self.grid_pull and self.qat:
                    beta = self.grid_pull * ((self._step - start_step + 1) / total) ** 2
                    for layer in wlayers:
                        layer.pull_to_grid(beta)
                self._step += 1
                loss_sum += loss * len(idx)
                correct += int(np.sum(np.argmax(out, axis=1) == y[idx]))
                bar.update()
            bar.close()
            if tuner is not None:
                tuner.refresh(x, "train")
                tuner.refresh(xv, "val")
            record = epoch_record(self, lr, loss_sum / n, correct / n, t0, xv, yv)
            self.history.append(record)
            stop = control.end_epoch(record, model)
            if self.log is not None:
                self.log(self.format_epoch(record, len(self.history) - epoch + epochs - 1))
            if stop:
                if self.log is not None:
                    self.log(f"early stop: no better validation accuracy for {control.patience} epochs")
                break
        self.train_time += time.perf_counter() - t_start
        if control.finish(model):
            if tuner is not None:
                tuner.refresh(x, "train")
                tuner.refresh(xv, "val")
            if self.log is not None and control.best_epoch != len(self.history) and control.best is not None:
                self.log(
                    f"kept the best epoch: {control.best_epoch} (validation accuracy {100 * control.best[0]:.2f}%)"
                )
        self.metrics = self.final_metrics((x, y), (xv, yv) if xv is not None and len(xv) else None)
        self.metrics["best_epoch"] = control.best_epoch
        self.metrics["kept_best"] = control.keep_best and control.best_epoch is not None
        self.metrics["stopped_early"] = control.stopped_early
        return self.history

    @staticmethod
    def format_epoch(r: dict[str, Any], total_epochs: int) -> str:
        text = (
            f"epoch {r['epoch']:3d}/{total_epochs}  lr {r['lr']:.5f}  "
            f"train loss {r['train_loss']:.4f} acc {100 * r['train_acc']:6.2f}%"
        )
        if "val_loss" in r:
            text += (
                f"  val loss {r['val_loss']:.4f} acc {100 * r['val_acc']:6.2f}% pentary"
                f" / {100 * r['val_acc_float']:6.2f}% float"
            )
        return text + f"  ({r['seconds']:.2f}s)" + ("  *" if r.get("best") else "")

    def evaluate(self, data: Any, quantized: bool = True) -> tuple[float, float]:
        """``(loss, accuracy)`` of the model on ``(inputs, labels)`` in inference mode."""
        x, y = self._dataset(data, "evaluation data", fit=False)
        assert self.model is not None
        out = self.model.predict(x, quantized=quantized)
        loss, _ = self.loss_fn(out, one_hot(y, self.model.output_dim))
        return loss, float(np.mean(np.argmax(out, axis=1) == y)) if len(y) else float("nan")

    def final_metrics(self, train: Any, val: Any = None) -> dict[str, Any]:
        """Loss and accuracy on the training (and validation) set, float and pentary, plus pent usage."""
        assert self.model is not None
        out: dict[str, Any] = {}
        for name, data in (("train", train), ("val", val)):
            if data is None:
                continue
            for mode, quantized in (("pentary", True), ("float", False)):
                loss, acc = self.evaluate(data, quantized)
                out[f"{name}_loss_{mode}"] = loss
                out[f"{name}_acc_{mode}"] = acc
        out["epochs"] = len(self.history)
        out["train_seconds"] = self.train_time
        out["pent_histogram"] = self.model.pent_histogram()
        return out

    # --- persistence ---------------------------------------------------------------------------------------

    def save_model(self, path: str | Path, include_float: bool = True) -> None:
        """Write the model JSON atomically (with the float shadow weights, so training can resume)."""
        if self.model is None:
            raise PccError("no model to save")
        d = self.model.checked_dict(path, include_float)
        if self.fusion is not None and hasattr(self.fusion, "to_dict"):
            d["multimodal"] = self.fusion.to_dict()
        fmt.write_json(path, d)

    def save_metrics(self, path: str | Path) -> None:
        fmt.write_json(path, {"metrics": self.metrics, "history": self.history}, what="metrics")

    def load_model(self, path: str | Path) -> PentaryModel:
        """Replace the trainer's model by the one in ``path`` (its architecture comes from the file); the
        optimiser state starts fresh, so training continues from the saved shadow weights."""
        d = fmt.read_json(path)
        self.model = PentaryModel.from_dict(d, source=str(path))
        if isinstance(d, dict) and isinstance(d.get("multimodal"), dict):
            from pcc.trainer.multimodal import MultimodalFusion

            self.fusion = MultimodalFusion.from_dict(d["multimodal"])
            self.use_multimodal = True
            self.modalities = list(self.fusion.modalities)
        self._optimizer = None
        return self.model


def epoch_record(
    trainer: Any, lr: float, loss: float, acc: float, t0: float, xv: np.ndarray | None, yv: np.ndarray | None
) -> dict[str, Any]:
    """One epoch's history entry (both engines): its loss, accuracy, time and, with validation data, the
    pentary and float validation numbers from ``trainer.evaluate``."""
    record: dict[str, Any] = {
        "epoch": len(trainer.history) + 1,
        "lr": lr,
        "train_loss": loss,
        "train_acc": acc,
        "seconds": time.perf_counter() - t0,
    }
    if xv is not None and len(xv):
        record["val_loss"], record["val_acc"] = trainer.evaluate((xv, yv), quantized=True)
        record["val_acc_float"] = trainer.evaluate((xv, yv), quantized=False)[1]
    return record
