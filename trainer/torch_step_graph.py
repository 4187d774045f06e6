"""The torch engine's training step replayed as one CUDA graph (:class:`_StepGraph`), used by
:class:`pcc.trainer.torch_engine.TorchTrainer` where ``cuda_graph`` is on."""

from __future__ import annotations

import warnings
from typing import TYPE_CHECKING, Any

from pcc.trainer.torch_setup import require_torch

if TYPE_CHECKING:
    from pcc.trainer.torch_engine import TorchTrainer


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
