"""Calibration for ``quantize``: the inputs of the calibration runs, the range of every value over them, and the
quantized simulation that bias correction and GPTQ take their statistics from.

- :func:`calibration_batches`: the calibration data split into the graph's batch size (``max-batches`` at
  most), or ``fallback-samples`` random standard-normal inputs with a :class:`CalibrationWarning`;
- :func:`observe_ranges`: the float reference interpreter runs the batches, and a :class:`RangeObserver`
  records ``max |x|`` (``calib-method=minmax``) or a percentile of ``|x|`` of every value, and the mean input
  of every conv/gemm (the float side of bias correction);
- :class:`QuantizedSim`: the float graph run again op by op with the pentary weights, as the lowering goes.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from pcc.arrays import load_npz
from pcc.diagnostics import PccError
from pcc.dialects import nn
from pcc.ir import Graph, Module, Operation, Value
from pcc.pent_reference import windows


class CalibrationWarning(UserWarning):
    """Quantization went ahead without calibration data (or with some other doubtful input)."""


def load_calibration(path: str | Path) -> dict[str, np.ndarray]:
    """Arrays of a calibration ``.npz`` by input name."""
    p = Path(path)
    if not p.exists():
        raise PccError(f"calibration file {p}: no such file")
    try:
        return load_npz(p, "calibration file")
    except PccError as exc:
        expected = "expected an .npz archive with one array per input name (numpy.savez(path, **{name: samples}))"
        detail = exc.message.removeprefix("calibration file: ")
        raise PccError(f"calibration file {p}: {detail}", notes=[*exc.notes, expected]) from None


def calibration_batches(
    g: Graph, data: Mapping[str, np.ndarray] | None, max_batches: int, fallback: int, seed: int
) -> list[dict[str, np.ndarray]]:
    """Inputs for the calibration runs: the data split into the graph's batch size, or random normal inputs."""
    if data is None:
        warnings.warn(
            f"no calibration data: activation ranges come from {fallback} random standard-normal input(s) and "
            "there is no bias correction; pass --calibration FILE.npz (arrays keyed by input name) for accurate "
            "scales",
            CalibrationWarning,
            stacklevel=3,
        )
        rng = np.random.default_rng(seed)
        return [
            {a.name or "": rng.standard_normal(a.type.shape).astype(a.type.np_dtype) for a in g.args}
            for _ in range(max(fallback, 1))
        ]
    counts = []
    for a in g.args:
        if a.name not in data:
            raise PccError(
                f"calibration data has no array for input '{a.name}' (it has: {', '.join(sorted(data)) or 'none'})"
            )
        x = data[a.name or ""]
        if x.ndim != a.type.rank or tuple(x.shape[1:]) != a.type.shape[1:]:
            raise PccError(
                f"calibration array '{a.name}' has shape {list(x.shape)}; expected samples stacked on the batch "
                f"axis of {list(a.type.shape)}, i.e. [S, {', '.join(map(str, a.type.shape[1:]))}]"
            )
        counts.append(x.shape[0] // max(a.type.shape[0], 1))
    n = min(counts, default=1)
    if n == 0:
        raise PccError("calibration data holds fewer samples than one batch of the model's input")
    n = min(n, max_batches)
    out = []
    for i in range(n):
        batch = {}
        for a in g.args:
            b = a.type.shape[0]
            batch[a.name or ""] = np.ascontiguousarray(data[a.name or ""][i * b : (i + 1) * b], dtype=a.type.np_dtype)
        out.append(batch)
    return out


def im2col(x: np.ndarray, op: Operation) -> np.ndarray:
    """The [K, P] patch matrix of a conv's input (K = C*kh*kw in weight order, P = batch x output positions)."""
    kh, kw = op.operands[1].type.shape[2:]
    win = windows(x, kh, kw, op.attr("strides"), op.attr("pads"))
    return win.transpose(1, 4, 5, 0, 2, 3).reshape(x.shape[1] * kh * kw, -1)


class RangeObserver:
    """Collects, over the calibration runs, ``max |x|`` (or a percentile of ``|x|``) of every value and, for the
    inputs of conv/gemm ops, their mean (the float side of bias correction)."""

    SUBSAMPLE = 1 << 16

    def __init__(self, method: str, percentile: float, keep_first: bool) -> None:
        if method not in ("minmax", "percentile"):
            raise PccError(f"calib-method must be minmax or percentile, got {method!r}")
        self.method = method
        self.percentile = percentile
        self.amax: dict[int, float] = {}
        self.samples_of: dict[int, list[np.ndarray]] = {}  # |x| subsamples per value (percentile)
        self.samples = 1  # runs stacked in the current call (see add)
        self.stacked: set[int] = set()
        self.keep_first = keep_first
        self.first: dict[int, np.ndarray] = {}
        self.run_index = 0
        self.want_mean: set[int] = set()
        self.mean_runs = 0  # the means are taken over the first runs: the batches the quantized simulation sees
        self.sums: dict[int, np.ndarray] = {}
        self.counts: dict[int, int] = {}

    def add(self, v: Value, x: np.ndarray) -> None:
        if not v.type.is_float or not np.size(x):
            return
        key = id(v)
        m = float(np.max(np.abs(x)))
        if not np.isfinite(m):  # -inf of a masked attention score: the range of the finite values (it saturates)
            m = float(np.max(np.abs(x), where=np.isfinite(x), initial=0.0))
        self.amax[key] = max(self.amax.get(key, 0.0), m)
        # a stacked run (``samples`` > 1) counts each sample as one run; a value that does not depend on the
        # inputs (not in ``stacked``) is the same in every run
        if self.samples <= 1:
            pieces = [x]
        elif key in self.stacked:
            pieces = [x[i : i + 1] for i in range(self.samples)]
        else:
            pieces = [x] * self.samples
        for i, part in enumerate(pieces):
            run = self.run_index + i
            if self.method == "percentile":
                a = np.asarray(part).reshape(-1)
                step = max(1, a.size // self.SUBSAMPLE)
                self.samples_of.setdefault(key, []).append(np.abs(a[::step]).astype(np.float64))
            if self.keep_first and run == 0:
                self.first[key] = np.array(part)
            if key in self.want_mean and run < self.mean_runs:
                self.sums[key] = self.sums.get(key, 0.0) + np.sum(part, axis=0, dtype=np.float64)
                self.counts[key] = self.counts.get(key, 0) + np.shape(part)[0]

    def __call__(self, op: Operation, results: list[np.ndarray]) -> None:
        for r, x in zip(op.results, results, strict=True):
            self.add(r, x)

    def finish(self) -> None:
        if self.method == "percentile":
            for key, parts in self.samples_of.items():
                self.amax[key] = float(np.percentile(np.concatenate(parts), self.percentile))

    def range_of(self, v: Value) -> float:
        return self.amax.get(id(v), 0.0)

    def mean_of(self, v: Value) -> np.ndarray | None:
        """The mean of value ``v`` over the calibration samples (the batch axis averaged), if observed."""
        key = id(v)
        return self.sums[key] / max(self.counts[key], 1) if key in self.sums else None


def mean_patch(op: Operation, mean: np.ndarray) -> np.ndarray:
    """The mean input patch of a conv ([C*kh*kw], zero padding included) or gemm ([K]) from its input's mean
    (a [C, H, W] map or a [K] vector)."""
    if isinstance(op, nn.Gemm):
        return mean
    return im2col(mean[None], op).mean(axis=1)


def stack_groups(g: Graph, batches: list[dict[str, np.ndarray]], elements: int) -> tuple[set[int] | None, list[int]]:
    """How the batches run: the values that carry the sample axis in a stacked run (None: one run per batch)
    and the sizes of the consecutive groups of batches that run together, each holding about ``elements``
    elements at most in its largest value."""
    from pcc import interpreter

    stacked = interpreter.stacked_values(g)
    if stacked is None or len(batches) < 2:
        return None, [1] * len(batches)
    largest = max((r.type.size for op in g.body for r in op.results), default=1)
    per = max(1, elements // max(largest, 1))
    return stacked, [min(per, len(batches) - i) for i in range(0, len(batches), per)]


def stack(batches: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    return {k: np.concatenate([b[k] for b in batches]) if len(batches) > 1 else batches[0][k] for k in batches[0]}


STACK_ELEMENTS = 1 << 24  # elements of the largest value of a stacked calibration run, at most


def observe_ranges(
    module: Module,
    batches: list[dict[str, np.ndarray]],
    method: str,
    percentile: float,
    keep_first: bool = False,
    mean_runs: int = 0,
) -> RangeObserver:
    """Run the float reference on the batches (stacked into groups where the graph allows: the same ranges,
    bit for bit, as one run per batch) and collect the ranges."""
    from pcc import interpreter

    g = module.main
    obs = RangeObserver(method, percentile, keep_first)
    obs.mean_runs = mean_runs
    if mean_runs:
        obs.want_mean = {id(op.operands[0]) for op in g.body if isinstance(op, nn.Conv2d | nn.Gemm)}
    stacked, groups = stack_groups(g, batches, STACK_ELEMENTS)
    obs.stacked = stacked or set()
    start = 0
    for size in groups:
        obs.run_index, obs.samples = start, size
        feeds = stack(batches[start : start + size])
        for a in g.args:
            obs.add(a, feeds[a.name or ""])
        interpreter.run(module, feeds, function=g.name, observe=obs, samples=size if stacked is not None else 0)
        start += size
    obs.samples = 1
    obs.finish()
    return obs


class QuantizedSim:
    """The float graph run again on the calibration batches, op by op as the converter goes, with every
    weight already replaced by its pentary value and every corrected bias: the inputs a layer will really see
    once the layers before it are quantized.  Bias correction and gptq take their statistics from here."""

    MAX_PATCHES = 4096  # patches per batch that go into gptq's X X^T

    def __init__(self, g: Graph, batches: list[dict[str, np.ndarray]]) -> None:
        stacked, groups = stack_groups(g, batches, STACK_ELEMENTS)
        self.stacked = stacked or set()
        # one environment per group of batches that runs stacked (or per batch)
        self.env: list[dict[int, np.ndarray]] = []
        self.sizes = groups
        start = 0
        for size in groups:
            feeds = stack(batches[start : start + size])
            self.env.append({id(a): feeds[a.name or ""] for a in g.args})
            start += size
        self.uses = {}
        for op in g.body:
            for v in op.operands:
                self.uses[id(v)] = self.uses.get(id(v), 0) + 1
        self.outputs = {id(v) for v in g.outputs}

    def step(self, module: Module, op: Operation, override: Mapping[int, np.ndarray] | None = None) -> None:
        from pcc.interpreter import eval_stacked

        override = override or {}
        flags = [i not in override and not v.is_weight and id(v) in self.stacked for i, v in enumerate(op.operands)]
        flags += [False for i in sorted(override) if i >= len(op.operands)]
        for env, size in zip(self.env, self.sizes, strict=True):
            args = [
                override[i] if i in override else (module.weight(v) if v.is_weight else env[id(v)])
                for i, v in enumerate(op.operands)
            ]
            args += [override[i] for i in sorted(override) if i >= len(op.operands)]
            for r, a in zip(op.results, eval_stacked(op, args, flags, size), strict=True):
                env[id(r)] = a
        for v in op.operands:
            self.uses[id(v)] -= 1
            if self.uses[id(v)] == 0 and id(v) not in self.outputs:
                for env in self.env:
                    env.pop(id(v), None)

    def inputs(self, v: Value) -> list[np.ndarray]:
        """The value in each calibration batch (a stacked group split back into its batches)."""
        out = []
        for env, size in zip(self.env, self.sizes, strict=True):
            if id(v) not in env:
                continue
            x = env[id(v)]
            if size == 1:
                out.append(x)
            elif id(v) in self.stacked:
                out += [x[i : i + 1] for i in range(size)]
            else:
                out += [x] * size
        return out

    def mean(self, v: Value) -> np.ndarray | None:
        xs = self.inputs(v)
        if not xs:
            return None
        return sum(np.sum(x, axis=0, dtype=np.float64) for x in xs) / sum(x.shape[0] for x in xs)

    def hessian(self, op: Operation) -> np.ndarray | None:
        """``E[x x^T]`` of the op's input patches (conv: im2col columns; gemm: rows)."""
        total, n = 0.0, 0
        for x in self.inputs(op.operands[0]):
            xs = np.asarray(x, dtype=np.float64)
            cols = im2col(xs, op) if isinstance(op, nn.Conv2d) else xs.T
            if cols.shape[1] > self.MAX_PATCHES:
                cols = cols[:, :: -(-cols.shape[1] // self.MAX_PATCHES)]
            total = total + cols @ cols.T
            n += cols.shape[1]
        return None if n == 0 else total / n
