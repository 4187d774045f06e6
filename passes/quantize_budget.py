"""The error budget of ``quantize`` (``error-budget``): two pents per weight where one loses too much.

**The estimate.**  With calibration data the pass already runs the float graph once on the calibration samples
(the ranges) and once more with the pentary weights and corrected biases in place (:class:`QuantizedSim`, the
statistics of bias correction).  :class:`OutputObserver` keeps the float run's outputs on the samples the
simulation sees and :class:`BudgetSim` also evaluates the ops that only produce outputs (the plain simulation
skips them), so the estimate costs the output layer's products and nothing else::

    error = max over outputs of  max_s |q_s - f_s| / max_s |f_s|

over the simulated calibration samples ``s`` (``q``: the simulation, ``f``: the float graph): the metric the
tests hold programs to against onnxruntime, on the calibration inputs instead of a held-out one.  The
simulation keeps activations in float, so the estimate leaves out their rounding (at the default 8 pents about
``5e-6`` of a value's range) and counts the weights' rounding, which is what one pent per weight costs.

**The choice.**  Over budget, the candidates are the convs and gemms with a float constant weight and no
``w1``/``w2`` override of the user's (those win), ranked by :func:`rank`: the squared error of the outputs
when that layer alone has one pent per weight (bias-corrected) and the rest of the graph is float, on the
first calibration sample (:func:`ablation_noise`: one float run, then per layer the ops after it), per
multiply-accumulate (two pents double a layer's MACs, so about its cycles).  They are taken in that order
while the lower bound of main memory (:func:`pcc.machine.min_words`, two-pent weights taking twice the
words) stays within 90 % of the machine's, and the shortest prefix of that list that meets the budget is
found by bisection, each probe one more conversion with its simulation (``2 + log2(candidates)``
conversions at most; a model within budget has one, as without the budget).  Deterministic: the same model,
data and options give the same choice.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from pcc.dialects import nn
from pcc.ir import Graph, Module, Operation, Value
from pcc.passes.quantize_calibrate import QuantizedSim, RangeObserver

__all__ = ["BudgetResult", "BudgetSim", "OutputObserver", "candidates", "meet_budget", "output_error", "rank"]

MEMORY_SHARE = 0.9  # the share of main memory the lower bound of a promoted model may take


class OutputObserver(RangeObserver):
    """A :class:`RangeObserver` that also keeps the graph outputs of the first ``runs`` calibration batches."""

    def __init__(self, g: Graph, runs: int, method: str, percentile: float, keep_first: bool) -> None:
        super().__init__(method, percentile, keep_first)
        self.runs = runs
        self.kept: dict[int, list[np.ndarray]] = {id(v): [] for v in g.outputs if v.type.is_float}

    def __call__(self, op: Operation, results: list[np.ndarray]) -> None:
        super().__call__(op, results)
        for r, x in zip(op.results, results, strict=True):
            if id(r) not in self.kept:
                continue
            n = self.samples if self.samples > 1 else 1
            pieces = [x[i : i + 1] for i in range(n)] if n > 1 and id(r) in self.stacked else [x] * n
            for i, part in enumerate(pieces):
                if self.run_index + i < self.runs:
                    self.kept[id(r)].append(np.array(part))


class BudgetSim(QuantizedSim):
    """The quantized simulation, the ops that only produce graph outputs included (the estimate needs them)."""

    def __init__(self, g: Graph, batches: list[dict[str, np.ndarray]], engine: str = "numpy") -> None:
        super().__init__(g, batches, engine)
        self.out_ids = {id(v) for v in g.outputs}

    def runs(self, op: Operation) -> bool:
        return super().runs(op) or any(id(r) in self.out_ids for r in op.results)

    def output_values(self, g: Graph) -> dict[int, list[np.ndarray]]:
        """The simulated graph outputs, per calibration batch, by output value id."""
        return {id(v): self.inputs(v) for v in g.outputs if v.type.is_float}


def ablation_noise(
    module: Module,
    feed: Mapping[str, np.ndarray],
    ops: Sequence[Operation],
    pentary: Callable[[Operation], np.ndarray],
    mean_of: Callable[[Value], np.ndarray | None],
) -> dict[int, float]:
    """By op id, the squared error of the graph outputs on the input ``feed`` when only that op's weight is
    pentary (``pentary(op)``: its one-pent weight in the operand's layout) and the rest of the graph float, its
    mean error over the calibration inputs (``mean_of`` its input, None: no bias correction) folded into its
    bias as bias correction does: what one pent in that layer alone costs at the output."""
    from pcc.interpreter import eval_op, run

    g = module.main

    def operand(v: Value, env: Mapping[int, np.ndarray]) -> np.ndarray:
        return module.weight(v) if v.is_weight else env[id(v)]

    env: dict[int, np.ndarray] = {id(a): np.asarray(feed[a.name or ""]) for a in g.args}

    def keep(op: Operation, results: list[np.ndarray]) -> None:  # the float run's values, by value id
        env.update((id(r), x) for r, x in zip(op.results, results, strict=True))

    run(module, {a.name or "": env[id(a)] for a in g.args}, observe=keep)
    outs = [v for v in g.outputs if v.type.is_float and id(v) in env]
    index = {id(op): i for i, op in enumerate(g.body)}
    noise: dict[int, float] = {}
    for op in ops:
        w = module.weight(op.operands[1])
        wq = pentary(op).astype(w.dtype)
        args = [operand(v, env) for v in op.operands]
        (y,) = eval_op(op, [args[0], wq, *args[2:]])
        mean = mean_of(op.operands[0])
        if mean is not None:  # the correction: (W - Wq) E[x], per output channel
            xm = np.broadcast_to(np.asarray(mean, args[0].dtype), args[0].shape)
            (e,) = eval_op(op, [xm, (w - wq).astype(w.dtype), *(np.zeros_like(a) for a in args[2:])])
            axes = (0, *range(2, e.ndim)) if isinstance(op, nn.Conv2d) else (0,)
            corr = e.mean(axis=axes, dtype=np.float64).astype(y.dtype)
            y = y + (corr.reshape(-1, *([1] * (e.ndim - 2))) if isinstance(op, nn.Conv2d) else corr)
        local = {id(op.results[0]): y}
        for later in g.body[index[id(op)] + 1 :]:
            if not any(id(v) in local for v in later.operands):
                continue
            got = eval_op(later, [local.get(id(v), operand(v, env)) if not v.is_weight else module.weight(v)
                                  for v in later.operands])  # fmt: skip
            for r, x in zip(later.results, got, strict=True):
                local[id(r)] = x
        noise[id(op)] = sum(
            float(np.sum(np.square(np.asarray(local[id(v)], np.float64) - env[id(v)]))) for v in outs if id(v) in local
        )
    return noise


def output_error(float_outs: Mapping[int, Sequence[np.ndarray]], sim_outs: Mapping[int, Sequence[np.ndarray]]) -> float:
    """``max |q - f| / max |f|`` over the samples, the largest over the outputs (see the module docstring)."""
    worst = 0.0
    for key, fs in float_outs.items():
        qs = sim_outs.get(key, [])
        n = min(len(fs), len(qs))
        if n == 0:
            continue
        top = max(float(np.max(np.abs(f))) if f.size else 0.0 for f in fs[:n])
        err = max(
            float(np.max(np.abs(np.asarray(q, np.float64) - np.asarray(f, np.float64)))) if f.size else 0.0
            for f, q in zip(fs[:n], qs[:n], strict=True)
        )
        if not math.isfinite(err):
            return math.inf
        worst = max(worst, err / top if top > 0 else (math.inf if err > 0 else 0.0))
    return worst


def op_macs(op: Operation) -> int:
    """Multiply-accumulates of one run of a conv or gemm (two pents per weight double them)."""
    out = op.results[0].type.size
    if isinstance(op, nn.Conv2d):
        return out * int(np.prod(op.operands[1].type.shape[1:]))
    a = op.operands[0].type.shape
    return out * (a[0] if op.attr("trans_a") else a[-1])


def layer_name(op: Operation) -> str:
    """The name an override takes for ``op``: its model node, else its result's name."""
    if op.loc is not None and op.loc.node:
        return op.loc.node
    return op.results[0].name or "?"


def candidates(g: Graph, excluded: Callable[[Operation], bool]) -> list[Operation]:
    """The convs and gemms that two pents per weight can serve: a float constant weight, no dilation, a
    non-transposed activation, not ``excluded`` (a layer the user's overrides or options already fix)."""
    out = []
    for op in g.body:
        if not isinstance(op, nn.Conv2d | nn.Gemm) or len(op.operands) < 2 or not op.operands[1].is_weight:
            continue
        if isinstance(op, nn.Gemm) and op.attr("trans_a"):
            continue
        if isinstance(op, nn.Conv2d) and any(d != 1 for d in op.attr("dilations") or [1, 1]):
            continue
        if not excluded(op):
            out.append(op)
    return out


def rank(ops: Sequence[Operation], noise: Mapping[int, float]) -> list[Operation]:
    """``ops`` by output noise per MAC, the largest first (ties: graph order)."""
    order = {id(op): i for i, op in enumerate(ops)}
    return sorted(ops, key=lambda op: (-noise.get(id(op), 0.0) / max(op_macs(op), 1), order[id(op)]))


@dataclass
class BudgetResult:
    """What the budget did: the estimates before and after, the layers raised to two pents and their MACs."""

    budget: float
    samples: int
    before: float
    after: float
    raised: list[str] = field(default_factory=list)
    extra_macs: int = 0
    total_macs: int = 0
    left_out: list[str] = field(default_factory=list)  # candidates that main memory had no room for
    conversions: int = 1
    everywhere: bool = False  # weight-pents=2: every layer has two pents already

    @property
    def met(self) -> bool:
        return self.after <= self.budget

    def text(self) -> str:
        """One line for the compile's output (nothing to say when the model was within budget)."""
        if not self.raised:
            return ""
        pct = 100 * self.extra_macs / max(self.total_macs, 1)
        shown = ", ".join(self.raised[:8]) + (f" and {len(self.raised) - 8} more" if len(self.raised) > 8 else "")
        return (
            f"quantize: error budget {self.budget:g}: estimated output error {self.before:.3g} on "
            f"{self.samples} calibration sample(s) with one pent per weight; {len(self.raised)} layer(s) raised "
            f"to two pents ({shown}): +{self.extra_macs:,} MACs (+{pct:.1f} %, about as many cycles), "
            f"estimate {self.after:.3g}"
        )

    def warning(self) -> str:
        """The warning where the budget is not met (empty when it is)."""
        if self.met:
            return ""
        room = f"; main memory had no room for {', '.join(self.left_out[:4])}" if self.left_out else ""
        if self.everywhere:
            what = "with two pents per weight everywhere"
        elif self.raised:
            what = "with every candidate layer that fits at two pents"
        else:
            what = "and no layer can take two pents"
        return (
            f"quantize: estimated output error {self.after:.3g} on the calibration samples is over the error "
            f"budget {self.budget:g} {what}{room}; try --weight-pents 2 (with --machine large if it does not "
            "fit), per-layer overrides (quantize{overrides=NODE:w2/gptq}, pcc check --suggest), or "
            "quantize{error-budget=0} to keep one pent"
        )


def meet_budget(
    convert: Callable[[Sequence[Operation]], tuple[Any, float]],
    discard: Callable[[Any], None],
    cands: Sequence[Operation],
    sensitivity: Callable[[], Mapping[int, float]],
    fits: Callable[[Sequence[Operation]], bool],
    first: tuple[Any, float],
    budget: float,
    samples: int,
    total_macs: int,
) -> tuple[Any, BudgetResult]:
    """Raise the fewest ranked candidates to two pents that bring the estimate within ``budget``.

    ``convert(raised)`` converts the graph with the ops ``raised`` at two pents and returns ``(result,
    estimate)``; ``discard(result)`` drops a conversion that is not kept; ``sensitivity()``: each candidate's
    output noise with one pent (:func:`ablation_noise`, by op id); ``fits(raised)``: whether main memory has
    room; ``first``: the conversion with none raised and its estimate."""
    kept, before = first
    res = BudgetResult(budget, samples, before, before, total_macs=total_macs)
    if before <= budget or not cands:
        return kept, res
    chosen: list[Operation] = []
    for op in rank(cands, sensitivity()):
        if fits([*chosen, op]):
            chosen.append(op)
        else:
            res.left_out.append(layer_name(op))
    tried: dict[int, float] = {0: before}
    last: tuple[int, Any] = (0, kept)

    def probe(k: int) -> float:
        nonlocal last
        discard(last[1])
        out, err = convert(chosen[:k])
        res.conversions += 1
        last = (k, out)
        tried[k] = err
        return err

    lo, hi = 0, len(chosen)
    if hi and probe(hi) <= budget:
        while hi - lo > 1:
            mid = (lo + hi) // 2
            if probe(mid) <= budget:
                hi = mid
            else:
                lo = mid
    best = hi if tried.get(hi, math.inf) < tried[0] else 0
    if last[0] != best:
        probe(best)
    res.after = tried[best]
    res.raised = [layer_name(op) for op in chosen[:best]]
    res.extra_macs = sum(op_macs(op) for op in chosen[:best])
    return last[1], res
