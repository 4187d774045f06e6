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

Code map: this module (the trainer: its options, loop, evaluation and persistence);
:mod:`pcc.trainer.torch_setup` (importing torch, the device, the ``torchrun`` process group);
:mod:`pcc.trainer.torch_layers` (the mirrored layers, the fused per-step quantization, :func:`build_net`);
:mod:`pcc.trainer.torch_step_graph` (the CUDA-graph step).  Their public names are importable from here too.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from pcc.diagnostics import PccError
from pcc.trainer.control import TrainingControl
from pcc.trainer.model import PentaryModel
from pcc.trainer.optim import lr_at
from pcc.trainer.progress import Progress
from pcc.trainer.torch_layers import TORCH_LAYERS, _classes, _compiled_step, build_net, fused_quantize
from pcc.trainer.torch_setup import (
    DEVICES,
    _Dist,
    close_distributed,
    init_distributed,
    process_rank,
    rank_zero,
    require_torch,
    resolve_device,
)
from pcc.trainer.torch_step_graph import _StepGraph
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
    "fused_quantize",
]

PRECISIONS = ("auto", "fp32", "bf16")
# compile="auto" compiles the per-step quantization from this many weights up: it costs 12-15 s at the start in a
# fresh process and, with the step replayed as a CUDA graph, pays for itself only where the weights' passes
# dominate (on one H200: 2.2x on a 21 M-weight MLP; 1.1x on a 6 k-weight CNN, which then starts 15 s later)
COMPILE_MIN_WEIGHTS = 1_000_000


def _switch(value: bool | str | None, name: str) -> bool | None:
    """An on/off option that also takes ``auto`` (returned as None)."""
    if value is None or (isinstance(value, str) and value.strip().lower() == "auto"):
        return None
    if isinstance(value, bool):
        return value
    raise PccError(f"{name} must be True, False or 'auto', got {value!r}")


def _loss_name(loss_fn: Any) -> str:
    for name, fn in LOSSES.items():
        if loss_fn is fn or loss_fn == name:
            return name
    if loss_fn is None:
        return "cross_entropy"
    raise PccError("the torch engine supports the losses cross_entropy and mse, not a custom loss function")


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
        p = precision.strip().lower()
        if p not in PRECISIONS:
            raise PccError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
        if checkpoint_every < 0:
            raise PccError("checkpoint_every must be 0 (never) or a number of epochs")
        if checkpoint_every and checkpoint_path is None:
            raise PccError("checkpoint_every needs a checkpoint_path")
        want = _switch(compile, "compile")
        self.cuda_graph = _switch(cuda_graph, "cuda_graph")  # None: auto, decided when training starts
        self.dist = self._init_distributed(device)
        try:  # a process group started here ends here if the device is refused
            local = int(os.environ.get("LOCAL_RANK", "0")) if self.dist.world > 1 else None
            self.device = resolve_device(device, local)
            on_cuda = self.device.type == "cuda"
            if self.cuda_graph and not on_cuda:
                raise PccError("cuda_graph=True needs a CUDA device", notes=["leave it at 'auto' or False on the CPU"])
            if on_cuda:
                torch.cuda.set_device(self.device)
        except BaseException:
            close_distributed(self.dist, wait=False)
            raise
        self.precision = ("bf16" if on_cuda else "fp32") if p == "auto" else p
        self.checkpoint_every = int(checkpoint_every)
        self.checkpoint_path = Path(checkpoint_path) if checkpoint_path is not None else None
        self.record_steps = record_steps
        self._compile_auto = want is None
        self.compile = on_cuda if want is None else want  # auto: settled by the model's size in _ensure_net
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
        return init_distributed(device)

    @property
    def is_main_process(self) -> bool:
        return self.dist.rank == 0

    def close(self, wait: bool = True) -> None:
        """End the process group if this trainer started it (:func:`~pcc.trainer.torch_setup.close_distributed`;
        ``wait=False`` skips its barrier, for an error path).  Every rank calls it at the same point; the
        trainer's references to the group (its ``DistributedDataParallel`` wrapper, the BatchNorm layers) go
        first, so the group is gone when this returns; the trainer does not train again after it."""
        if not self.dist.owned:
            return
        self._ddp = None
        if self.net is not None:
            for m in self.net.layers:
                if isinstance(m, _classes()["BatchNorm"]):
                    m.group = None
        close_distributed(self.dist, wait)

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
        if self.dist.world > 1 and self.dist.group is None:
            raise PccError("this trainer's process group is closed (close()): it does not train again")
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
