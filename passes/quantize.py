"""``quantize``: a float ``nn`` graph -> the integer ``pent`` dialect (post-training quantization).

- **Weights** become pents (-2..2) times a float scale with the shared quantizer :func:`pcc.quant.quantize_weights`
  (one scale per output channel by default, ``per-tensor=true`` for one per tensor).  ``weight-method``:
  ``mse`` (default) or ``max`` scales with nearest rounding, or ``gptq``: mse scales with the rounding chosen
  to minimise the layer's output error on the calibration inputs (:func:`gptq_round`).  With calibration data,
  **bias correction** (on by default) adds to each bias ``W E[x_f] - s Q E[x_q]``: the float layer's mean
  output on the float network's inputs minus the pentary layer's on the inputs the already quantized layers
  produce (:class:`QuantizedSim` runs the graph again with the pentary weights, layer by layer, as the pass
  converts it; that costs one more float run per calibration batch).  Weights that are already pentary
  (``nn.dequantize_weight``, e.g. from the trainer) keep their pents and scales.
- **Activations** are symmetric N-pent integers, ``real = q * s`` with ``s = amax / word_max(N)``, N =
  ``act-pents`` (per-layer ``overrides="node:pents;node:pents"``, by model node name or value name).  ``amax``
  comes from calibration: the float reference interpreter runs the calibration samples
  (``calibration=FILE.npz``, arrays keyed by input name, samples stacked on the batch axis) and records
  ``max |x|`` of every value (``calib-method=minmax``) or its ``percentile`` (``calib-method=percentile``).
  Without calibration data the pass warns (:class:`CalibrationWarning`) and uses ``fallback-samples`` standard
  normal inputs: right for normalised inputs, a guess otherwise.
- **Requantization is integer-only**, as the ISA states: a conv/gemm accumulates ``bias + sum x*w`` exactly,
  with the bias rounded to the accumulator's scale ``s_x * s_w`` (ties away from zero, one 16-pent word), then
  ``y = sat_N(round(acc * mult / 2**shift))`` with ``mult / 2**shift ~= s_x * s_w / s_y`` per channel
  (``mult <= MULT_MAX`` as large as possible, so the relative error is below 2**-28).  An add of two
  activations rescales each operand to the output scale the same way (EADD).
- An op followed only by a ReLU/Clip gets the scale of the activation's output (values the activation clips
  away need no range), so the ``fuse`` pass can merge the two without changing a bit.  ReLU, Clip, pooling
  and reshapes keep their input's scale.

The program boundary is explicit: every argument is ``pent.quantize``d and every output ``pent.dequantize``d.
With ``report=true`` the pass prints the SQNR of every quantized value against the float graph on the first
calibration sample, so a loss of accuracy can be traced to its layer.
"""

from __future__ import annotations

import math
import os
import sys
import warnings
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pcc.arrays import load_npz
from pcc.diagnostics import PccError
from pcc.dialects import nn, pent
from pcc.ir import Graph, Module, Operation, TensorType, Value
from pcc.isa import MULT_MAX, SHIFT_MAX, WORD_MAX
from pcc.pass_manager import Pass, register_pass
from pcc.passes.fold_batchnorm import pentary_weight
from pcc.pent_reference import round_half_away, windows
from pcc.pentary import word_max
from pcc.quant import quantize_weights

DEFAULT_ACT_PENTS = 8


class CalibrationWarning(UserWarning):
    """Quantization went ahead without calibration data (or with some other doubtful input)."""


# ----------------------------------------------------------------------------------------------- arithmetic


round_away = round_half_away  # round to nearest, ties away from zero (the ISA's rounding)


def requant_params(ratio: np.ndarray | float) -> tuple[np.ndarray, np.ndarray]:
    """Integer ``(mult, shift)`` with ``mult / 2**shift ~= ratio``, ``0 <= mult <= MULT_MAX``,
    ``0 <= shift <= 62``, the multiplier as large as possible (most precise)."""
    r = np.atleast_1d(np.asarray(ratio, dtype=np.float64))
    mult = np.zeros(r.shape, dtype=np.int64)
    shift = np.zeros(r.shape, dtype=np.int64)
    pos = r > 0
    if np.any(pos):
        rp = r[pos]
        s = np.clip(np.floor(np.log2(MULT_MAX / rp)), 0, SHIFT_MAX).astype(np.int64)
        m = np.rint(rp * np.exp2(s))
        over = (m > MULT_MAX) & (s > 0)
        s = np.where(over, s - 1, s)
        m = np.minimum(np.rint(rp * np.exp2(s)), MULT_MAX)
        mult[pos] = m.astype(np.int64)
        shift[pos] = s
    return mult, shift


def sqnr_db(ref: np.ndarray, test: np.ndarray) -> float:
    """Signal-to-quantization-noise ratio of ``test`` against ``ref`` in dB (inf when equal)."""
    ref = np.asarray(ref, dtype=np.float64)
    noise = float(np.sum((ref - np.asarray(test, dtype=np.float64)) ** 2))
    signal = float(np.sum(ref**2))
    if noise == 0:
        return math.inf
    return 10 * math.log10(max(signal, 1e-300) / noise)


# ----------------------------------------------------------------------------------------------- calibration


def load_calibration(path: str | Path) -> dict[str, np.ndarray]:
    """Arrays of a calibration ``.npz`` by input name."""
    p = Path(path)
    if not p.exists():
        raise PccError(f"calibration file {p}: no such file")
    return load_npz(p, "calibration file")


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
        self.samples: dict[int, list[np.ndarray]] = {}
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
        self.amax[key] = max(self.amax.get(key, 0.0), float(np.max(np.abs(x))))
        if self.method == "percentile":
            a = np.asarray(x).reshape(-1)
            step = max(1, a.size // self.SUBSAMPLE)
            self.samples.setdefault(key, []).append(np.abs(a[::step]).astype(np.float64))
        if self.keep_first and self.run_index == 0:
            self.first[key] = np.array(x)
        if key in self.want_mean and self.run_index < self.mean_runs:
            self.sums[key] = self.sums.get(key, 0.0) + np.sum(x, axis=0, dtype=np.float64)
            self.counts[key] = self.counts.get(key, 0) + np.shape(x)[0]

    def __call__(self, op: Operation, results: list[np.ndarray]) -> None:
        for r, x in zip(op.results, results, strict=True):
            self.add(r, x)

    def finish(self) -> None:
        if self.method == "percentile":
            for key, parts in self.samples.items():
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


def observe_ranges(
    module: Module,
    batches: list[dict[str, np.ndarray]],
    method: str,
    percentile: float,
    keep_first: bool = False,
    mean_runs: int = 0,
) -> RangeObserver:
    from pcc import interpreter

    g = module.main
    obs = RangeObserver(method, percentile, keep_first)
    obs.mean_runs = mean_runs
    if mean_runs:
        obs.want_mean = {id(op.operands[0]) for op in g.body if isinstance(op, nn.Conv2d | nn.Gemm)}
    for i, batch in enumerate(batches):
        obs.run_index = i
        for a in g.args:
            obs.add(a, batch[a.name or ""])
        interpreter.run(module, batch, function=g.name, observe=obs)
    obs.finish()
    return obs


class QuantizedSim:
    """The float graph run again on the calibration batches, op by op as the converter goes, with every
    weight already replaced by its pentary value and every corrected bias: the inputs a layer will really see
    once the layers before it are quantized.  Bias correction and gptq take their statistics from here."""

    MAX_PATCHES = 4096  # patches per batch that go into gptq's X X^T

    def __init__(self, g: Graph, batches: list[dict[str, np.ndarray]]) -> None:
        self.env: list[dict[int, np.ndarray]] = [{id(a): b[a.name or ""] for a in g.args} for b in batches]
        self.uses = {}
        for op in g.body:
            for v in op.operands:
                self.uses[id(v)] = self.uses.get(id(v), 0) + 1
        self.outputs = {id(v) for v in g.outputs}

    def step(self, module: Module, op: Operation, override: Mapping[int, np.ndarray] | None = None) -> None:
        from pcc.interpreter import eval_op

        override = override or {}
        for env in self.env:
            args = [
                override[i] if i in override else (module.weight(v) if v.is_weight else env[id(v)])
                for i, v in enumerate(op.operands)
            ]
            args += [override[i] for i in sorted(override) if i >= len(op.operands)]
            for r, a in zip(op.results, eval_op(op, args), strict=True):
                env[id(r)] = a
        for v in op.operands:
            self.uses[id(v)] -= 1
            if self.uses[id(v)] == 0 and id(v) not in self.outputs:
                for env in self.env:
                    env.pop(id(v), None)

    def inputs(self, v: Value) -> list[np.ndarray]:
        return [env[id(v)] for env in self.env if id(v) in env]

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


def gptq_round(w: np.ndarray, scale: np.ndarray, h: np.ndarray, damp: float = 0.01, block: int = 128) -> np.ndarray:
    """Pents of ``w`` [N, K] on the grid ``scale`` [N] chosen column by column so that the error each rounding
    makes is compensated by the columns not yet rounded, weighted by the input statistics ``h = E[x x^T]``
    [K, K] (the GPTQ method of Frantar et al., 2022): the output error ``(W - s Q) x`` is what is minimised,
    not the weight error.  Deterministic; O(N K^2)."""
    w = np.array(w, dtype=np.float64)
    k = w.shape[1]
    h = np.array(h, dtype=np.float64)
    dead = np.diag(h) <= 0
    h[dead, dead] = 1.0
    w[:, dead] = 0.0
    h += damp * float(np.mean(np.diag(h))) * np.eye(k)
    try:
        u = np.linalg.cholesky(np.linalg.inv(h)).T  # upper: H^-1 = U^T U
    except np.linalg.LinAlgError:
        return np.clip(np.rint(w / scale[:, None]), -2, 2).astype(np.int8)
    s = scale[:, None]
    q = np.zeros_like(w)
    for b0 in range(0, k, block):
        b1 = min(k, b0 + block)
        wb = w[:, b0:b1].copy()
        err = np.zeros_like(wb)
        for j in range(b1 - b0):
            col = wb[:, j : j + 1]
            qc = np.clip(np.rint(col / s), -2, 2)
            q[:, b0 + j : b0 + j + 1] = qc
            e = (col - qc * s) / u[b0 + j, b0 + j]
            wb[:, j + 1 :] -= e @ u[b0 + j : b0 + j + 1, b0 + j + 1 : b1]
            err[:, j : j + 1] = e
        w[:, b1:] -= err @ u[b0:b1, b1:]
    return q.astype(np.int8)


# ----------------------------------------------------------------------------------------------- conversion

_KEEP_SCALE = (nn.Relu, nn.Clip, nn.MaxPool, nn.AvgPool, nn.GlobalAvgPool, nn.GlobalMaxPool)
_RESHAPES = (nn.Flatten, nn.Reshape, nn.Squeeze, nn.Unsqueeze)
_ALIASES = (nn.Identity, nn.Dropout)
_REQUANT = (nn.Conv2d, nn.Gemm, nn.ScaleShift, nn.Add)
SUPPORTED = (*_KEEP_SCALE, *_RESHAPES, *_ALIASES, *_REQUANT, nn.DequantizeWeight)

_HINTS = {
    "nn.batch_norm": "run fold-batchnorm first",
    "nn.matmul": "run canonicalize first (a matmul with a constant 2-D weight becomes a gemm)",
}


def check_pents(pents: int, what: str) -> None:
    if not 1 <= pents <= pent.MAX_ACT_PENTS:
        raise PccError(f"{what}: pents must be in 1..{pent.MAX_ACT_PENTS}, got {pents}")
    if pents == 5:
        raise PccError(f"{what}: a 5-pent word has no IR type (p5 is the single pent of a weight); use 4 or 6")


def parse_overrides(text: str) -> dict[str, int]:
    """``"conv1:10;fc:12"`` -> ``{"conv1": 10, "fc": 12}``."""
    out: dict[str, int] = {}
    for item in text.replace("\n", ";").split(";"):
        item = item.strip()
        if not item:
            continue
        name, sep, n = item.rpartition(":")
        if not sep or not name or not n.strip().isdigit():
            raise PccError(f"quantize override {item!r}: expected NODE:PENTS, e.g. conv1:10")
        pents = int(n)
        check_pents(pents, f"quantize override {item!r}")
        out[name.strip()] = pents
    return out


@dataclass
class QuantOptions:
    act_pents: int = DEFAULT_ACT_PENTS
    per_tensor: bool = False
    weight_method: str = "mse"
    overrides: Mapping[str, int] | None = None
    bias_correction: bool = True


def weight_axis(op: Operation) -> int:
    """The output-channel axis of a conv/gemm weight operand."""
    return 0 if isinstance(op, nn.Conv2d) or op.attr("trans_b") else 1


def float_weight_job(
    module: Module, wv: Value, out_axis: int, opts: QuantOptions
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """``(q, s, wf)`` of a conv/gemm weight: pents with the output channels first (int8), the per-channel scales
    (float64) and the float weight in the same layout (float32; None for a weight that is already pentary)."""
    n_out = wv.type.shape[out_axis]
    pw = pentary_weight(module, wv)
    if pw is not None:
        dq, pents_, scale = pw
        if scale.ndim == 0 or dq.attr("axis") % wv.type.rank == out_axis:
            q = np.moveaxis(np.asarray(pents_, dtype=np.int8), out_axis, 0)
            return q, np.broadcast_to(scale, (n_out,)).astype(np.float64), None
        shape = [1] * wv.type.rank
        shape[dq.attr("axis") % wv.type.rank] = -1
        data = (np.asarray(pents_, np.float32) * scale.astype(np.float32).reshape(shape)).astype(np.float32)
    elif wv.is_weight:
        data = np.asarray(module.weight(wv), dtype=np.float32)
    else:
        raise PccError(f"weight {wv.ref()} must be a constant")
    method = "mse" if opts.weight_method == "gptq" else opts.weight_method
    q, sc = quantize_weights(data, per_channel=not opts.per_tensor, axis=out_axis, method=method)
    s = np.broadcast_to(np.asarray(sc, dtype=np.float64), (n_out,)).copy()
    return np.moveaxis(q, out_axis, 0), s, np.moveaxis(data, out_axis, 0)


def start_weight_jobs(module: Module, g: Graph, opts: QuantOptions, pool: object) -> dict[int, object]:
    """Submit the weight quantization of every conv/gemm to ``pool`` (it does not depend on calibration)."""
    jobs = {}
    for op in g.body:
        if isinstance(op, nn.Conv2d | nn.Gemm) and not (isinstance(op, nn.Gemm) and op.attr("trans_a")):
            jobs[id(op)] = pool.submit(float_weight_job, module, op.operands[1], weight_axis(op), opts)
    return jobs


def _names(op: Operation) -> list[str]:
    names = [r.name for r in op.results if r.name]
    if op.loc is not None and op.loc.node:
        names.insert(0, op.loc.node)
    return names


class _Converter:
    def __init__(self, module: Module, obs: RangeObserver, opts: QuantOptions) -> None:
        self.m = module
        self.old = module.main
        self.obs = obs
        self.opts = opts
        self.overrides = dict(opts.overrides or {})
        self.used_overrides: set[str] = set()
        self.map: dict[int, tuple[Value, float]] = {}
        self.g = Graph(self.old.name, module)
        self.g.loc = self.old.loc
        self.clipped_bias = 0
        self.correction: np.ndarray | None = None
        self.jobs: dict[int, object] = {}
        self.sim: QuantizedSim | None = None
        self.sim_weight: np.ndarray | None = None
        self.sim_override: dict[int, np.ndarray] | None = None
        self.out_names = {v.name for v in self.old.outputs}

    # -- helpers
    def pents_for(self, *ops: Operation) -> int:
        for op in ops:
            for n in _names(op):
                if n in self.overrides:
                    self.used_overrides.add(n)
                    return self.overrides[n]
        return self.opts.act_pents

    def error(self, op: Operation, msg: str) -> PccError:
        node = f" (node {op.loc.node!r})" if op.loc is not None and op.loc.node else ""
        return PccError(f"quantize: {op.name}{node}: {msg}", op.loc)

    def q(self, v: Value, op: Operation) -> tuple[Value, float]:
        got = self.map.get(id(v))
        if got is None:
            raise self.error(op, f"operand {v.ref()} is not an activation the quantizer knows (a constant?)")
        return got

    def emit(self, cls: type[Operation], operands: list[Value], t: TensorType, attrs: dict, loc, name) -> Value:  # noqa: ANN001
        if name in self.out_names and cls is not pent.Dequantize:
            name = f"{name}.q"  # the float output keeps the model's name
        op = cls(operands, [t], attrs, loc, [name])
        self.g.append(op)
        return op.results[0]

    def scale(self, amax: float, pents: int) -> float:
        m = word_max(pents)
        return float(amax) / m if amax > 0 else 1.0 / m

    def activation_end(self, v: Value) -> Value:
        """The value whose range sets ``v``'s scale: a sole ReLU/Clip user's result, else ``v``."""
        if len(v.uses) == 1 and v not in self.old.outputs and isinstance(v.uses[0], nn.Relu | nn.Clip):
            return v.uses[0].results[0]
        return v

    def out_scale(self, op: Operation) -> tuple[int, float]:
        v = op.results[0]
        end = self.activation_end(v)
        ops = [op] + ([end.owner] if end is not v and end.owner is not None else [])
        pents = self.pents_for(*ops)
        return pents, self.scale(self.obs.range_of(end), pents)

    def add_consts(self, base: str, op: Operation, bias: np.ndarray, acc_scale: np.ndarray, out_scale: float):  # noqa: ANN201
        b = round_away(bias / acc_scale)
        clipped = np.abs(b) > WORD_MAX
        if np.any(clipped):
            self.clipped_bias += int(clipped.sum())
            b = np.clip(b, -WORD_MAX, WORD_MAX)
        mult, shift = requant_params(acc_scale / out_scale)
        if np.any(mult == MULT_MAX) and np.any(acc_scale / out_scale > MULT_MAX):
            warnings.warn(
                f"quantize: {op.name} at {op.loc}: requantization ratio above {MULT_MAX} saturated",
                CalibrationWarning,
                stacklevel=2,
            )
        bv = self.m.add_weight(base + ".bias", b.astype(np.int64), pent.BIAS_DTYPE)
        mv = self.m.add_weight(base + ".mult", mult, pent.MULT_DTYPE)
        sv = self.m.add_weight(base + ".shift", shift, pent.SHIFT_DTYPE)
        return bv, mv, sv

    def weight(self, op: Operation, wv: Value, out_axis: int, alpha: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
        """Pents (int8, output channels first) and per-output-channel scales of a weight operand.

        Float weights get their scales from :func:`pcc.quant.quantize_weights` (computed in the background while
        the calibration runs, see :func:`start_weight_jobs`); with ``weight-method=gptq`` the rounding on that
        grid is chosen by :func:`gptq_round` from the inputs of the quantized network.  With bias correction,
        ``self.correction`` gets the difference between the float layer's mean output on float inputs and the
        pentary layer's on the quantized network's inputs (it is added to the bias).  ``self.sim_weight`` is
        the pentary weight as floats, in the operand's layout, for the quantized simulation."""
        self.correction = self.sim_weight = None
        job = self.jobs.get(id(op))
        if job is None:
            job = float_weight_job(self.m, wv, out_axis, self.opts)
        try:
            q, s, wf = job.result() if hasattr(job, "result") else job
        except PccError as exc:
            raise self.error(op, exc.message) from None
        n_out = q.shape[0]
        if wf is not None and self.sim is not None:
            if self.opts.weight_method == "gptq":
                h = self.sim.hessian(op)
                if h is not None:
                    q = gptq_round(wf.reshape(n_out, -1), s, h).reshape(q.shape)
            mf = self.obs.mean_of(op.operands[0]) if self.opts.bias_correction else None
            mq = self.sim.mean(op.operands[0]) if mf is not None else None
            if mf is not None and mq is not None:
                # corr = W E[x_f] - s Q E[x_q], per output channel (a group's channels see the group's inputs)
                pf, pq = mean_patch(op, mf).astype(np.float32), mean_patch(op, mq).astype(np.float32)
                g = op.attr("group") if isinstance(op, nn.Conv2d) else 1
                w3 = wf.reshape(g, n_out // g, -1)
                q3 = q.reshape(g, n_out // g, -1).astype(np.float32)
                k = w3.shape[2]
                corr = np.matmul(w3, pf.reshape(g, k, 1)).reshape(-1).astype(np.float64)
                corr -= s * np.matmul(q3, pq.reshape(g, k, 1)).reshape(-1)
                self.correction = corr * alpha
        if self.sim is not None:
            deq = (q * s.astype(np.float32).reshape((-1,) + (1,) * (q.ndim - 1))).astype(np.float32)
            self.sim_weight = np.moveaxis(deq, 0, out_axis)
        if alpha < 0:
            q = -q
        return q, s * abs(alpha)

    # -- ops
    def conv(self, op: Operation) -> None:
        x, s_x = self.q(op.operands[0], op)
        dil = op.attr("dilations") or [1, 1]
        if any(d != 1 for d in dil):
            raise self.error(op, f"dilations {dil}: the CONV instruction has no dilation")
        q, s_w = self.weight(op, op.operands[1], 0)
        o = q.shape[0]
        bias = np.zeros(o) if len(op.operands) < 3 else np.asarray(self._const(op, op.operands[2]), np.float64)
        if self.correction is not None:
            bias = bias + self.correction
        if self.sim is not None:
            self.sim_override = {1: self.sim_weight, 2: bias.astype(np.float32)}
        self._requant_op(
            op,
            pent.Conv2d,
            x,
            s_x,
            q,
            s_w,
            bias,
            {
                "strides": list(op.attr("strides")),
                "pads": list(op.attr("pads")),
                "group": op.attr("group"),
            },
        )

    def gemm(self, op: Operation) -> None:
        if op.attr("trans_a"):
            raise self.error(op, "trans_a: the activation operand must not be transposed")
        x, s_x = self.q(op.operands[0], op)
        q, s_w = self.weight(op, op.operands[1], weight_axis(op), op.attr("alpha"))
        n = q.shape[0]
        if len(op.operands) > 2:
            c = np.asarray(self._const(op, op.operands[2]), np.float64) * op.attr("beta")
            if c.size not in (1, n) or (c.ndim == 2 and c.shape[0] != 1):
                raise self.error(
                    op, f"bias of shape {list(c.shape)}: only a per-output bias [N] or [1, N] is supported"
                )
            bias = np.broadcast_to(c.reshape(-1), (n,))
        else:
            bias = np.zeros(n)
        if self.correction is not None:
            bias = bias + self.correction
        beta = op.attr("beta") if len(op.operands) > 2 else 1.0
        if self.sim is not None and beta != 0:
            self.sim_override = {1: self.sim_weight, 2: (bias / beta).astype(np.float32)}
        self._requant_op(op, pent.Gemm, x, s_x, q, s_w, bias, {})

    def scale_shift(self, op: Operation) -> None:
        x, s_x = self.q(op.operands[0], op)
        gamma = np.asarray(self._const(op, op.operands[1]), np.float64)
        beta = np.asarray(self._const(op, op.operands[2]), np.float64)
        sign = np.sign(gamma).astype(np.int8)
        s_w = np.where(gamma != 0, np.abs(gamma), 1.0)
        rank = op.operands[0].type.rank
        c = gamma.shape[0]
        if rank == 4:
            q = sign.reshape(c, 1, 1, 1)
            self._requant_op(op, pent.Conv2d, x, s_x, q, s_w, beta, {"group": c})
        elif rank == 2:
            self._requant_op(op, pent.Gemm, x, s_x, np.diag(sign).astype(np.int8), s_w, beta, {})
        else:
            raise self.error(op, f"a rank-{rank} scale_shift has no pentary lowering (rank 2 or 4 only)")

    def _const(self, op: Operation, v: Value) -> np.ndarray:
        if not v.is_weight:
            raise self.error(op, f"{v.ref()} must be a constant")
        return self.m.weight(v)

    def _requant_op(self, op, cls, x, s_x, q, s_w, bias, attrs) -> None:  # noqa: ANN001
        pents, s_y = self.out_scale(op)
        r = op.results[0]
        base = self.m.fresh_weight_name((op.loc.node if op.loc and op.loc.node else r.name) or "w")
        wv = self.m.add_weight(base + ".p5", q.astype(np.int8), "p5")
        consts = self.add_consts(base, op, bias, s_x * s_w, s_y)
        y = self.emit(cls, [x, wv, *consts], r.type.with_dtype(f"p{pents}"), attrs, op.loc, r.name)
        self.map[id(r)] = (y, s_y)

    def add(self, op: Operation) -> None:
        a, b = op.operands
        if a.type.shape != b.type.shape or a.type.shape != op.results[0].type.shape:
            raise self.error(op, "only an add of two activations of the same shape is supported (no broadcasting)")
        (qa, sa), (qb, sb) = self.q(a, op), self.q(b, op)
        pents, s_y = self.out_scale(op)
        (ma, mb), (ha, hb) = requant_params(np.array([sa / s_y, sb / s_y]))
        r = op.results[0]
        attrs = {"mult": [int(ma), int(mb)], "shift": [int(ha), int(hb)]}
        y = self.emit(pent.Add, [qa, qb], r.type.with_dtype(f"p{pents}"), attrs, op.loc, r.name)
        self.map[id(r)] = (y, s_y)

    def keep_scale(self, op: Operation) -> None:
        x, s = self.q(op.operands[0], op)
        r = op.results[0]
        t = r.type.with_dtype(x.type.dtype)
        m = word_max(x.type.pents or 1)
        if isinstance(op, nn.Relu) or (isinstance(op, nn.Clip) and op.attr("min") == 0 and op.attr("max") is None):
            y = self.emit(pent.Relu, [x], t, {}, op.loc, r.name)
        elif isinstance(op, nn.Clip):
            lo = -m if op.attr("min") is None else int(np.clip(round_away(op.attr("min") / s), -m, m))
            hi = m if op.attr("max") is None else int(np.clip(round_away(op.attr("max") / s), -m, m))
            y = self.emit(pent.Clamp, [x], t, {"lo": lo, "hi": min(max(lo, hi), m)}, op.loc, r.name)
        elif isinstance(op, nn.GlobalAvgPool | nn.GlobalMaxPool):
            h, w = op.operands[0].type.shape[2:]
            cls = pent.AvgPool if isinstance(op, nn.GlobalAvgPool) else pent.MaxPool
            y = self.emit(cls, [x], t, {"kernel_shape": [h, w]}, op.loc, r.name)
        else:
            y = self.emit(*self._pool(op, x, t), op.loc, r.name)
        self.map[id(r)] = (y, s)

    def _pool(self, op: Operation, x: Value, t: TensorType) -> tuple:
        xt = op.operands[0].type
        if xt.rank != 4:
            raise self.error(op, "only 2-D pooling is supported")
        k = list(op.attr("kernel_shape"))
        strides = list(op.attr("strides") or [1, 1])
        pads = list(op.attr("pads") or [0, 0, 0, 0])
        dil = op.attr("dilations") if "dilations" in op.attrs else None
        if dil and any(d != 1 for d in dil):
            raise self.error(op, "dilated pooling has no POOL form")
        # ceil mode: extra bottom/right padding that the floor formula needs to produce the same output size
        for i in range(2):
            need = (t.shape[2 + i] - 1) * strides[i] + k[i] - (xt.shape[2 + i] + pads[i] + pads[i + 2])
            if need > 0:
                if isinstance(op, nn.AvgPool) and op.attr("count_include_pad"):
                    raise self.error(op, "ceil_mode with count_include_pad has no POOL form")
                pads[i + 2] += need
        if max(pads[0], pads[2]) >= k[0] or max(pads[1], pads[3]) >= k[1]:
            raise self.error(op, f"pads {pads} must be smaller than the kernel {k}")
        attrs = {"kernel_shape": k, "strides": strides, "pads": pads}
        if isinstance(op, nn.AvgPool):
            attrs["count_include_pad"] = bool(op.attr("count_include_pad"))
            return pent.AvgPool, [x], t, attrs
        return pent.MaxPool, [x], t, attrs

    def reshape(self, op: Operation) -> None:
        x, s = self.q(op.operands[0], op)
        r = op.results[0]
        y = self.emit(pent.Reshape, [x], r.type.with_dtype(x.type.dtype), {"shape": list(r.type.shape)}, op.loc, r.name)
        self.map[id(r)] = (y, s)

    # -- driver
    def convert(self) -> Graph:
        old, g = self.old, self.g
        for a in old.args:
            na = g.add_arg(a.name or "x", a.type)
            pents = self.overrides.get(a.name or "", self.opts.act_pents)
            if a.name in self.overrides:
                self.used_overrides.add(a.name or "")
            s = self.scale(self.obs.range_of(a), pents)
            qv = self.emit(pent.Quantize, [na], a.type.with_dtype(f"p{pents}"), {"scale": s}, None, f"{a.name}.q")
            self.map[id(a)] = (qv, s)
        handlers = {
            nn.Conv2d: self.conv,
            nn.Gemm: self.gemm,
            nn.ScaleShift: self.scale_shift,
            nn.Add: self.add,
        }
        for op in old.body:
            self.sim_override = None
            if isinstance(op, _ALIASES):
                self.map[id(op.results[0])] = self.q(op.operands[0], op)
            elif not isinstance(op, nn.DequantizeWeight):
                fn = handlers.get(type(op))
                if fn is not None:
                    fn(op)
                elif isinstance(op, _KEEP_SCALE):
                    self.keep_scale(op)
                elif isinstance(op, _RESHAPES):
                    self.reshape(op)
                else:  # pragma: no cover - check_supported ran first
                    raise self.error(op, "no pentary lowering")
            if self.sim is not None:
                self.sim.step(self.m, op, self.sim_override)
        results = []
        for v in old.outputs:
            y, s = self.q(v, old.ops[-1])
            results.append(self.emit(pent.Dequantize, [y], v.type, {"scale": s}, None, v.name))
        g.set_outputs(results)
        unused = set(self.overrides) - self.used_overrides
        if unused:
            known = sorted({n for op in old.body for n in _names(op)})
            raise PccError(
                f"quantize: override(s) for {', '.join(sorted(unused))}: no such node or value "
                f"(known: {', '.join(known[:12])}{', ...' if len(known) > 12 else ''})"
            )
        return g


def check_supported(g: Graph) -> None:
    """Raise one PccError listing every op the quantizer cannot lower."""
    bad = [op for op in g.body if not isinstance(op, SUPPORTED) and not op.name.startswith("pent.")]
    if not bad:
        return
    first = bad[0]
    kinds = sorted({op.name for op in bad})
    hints = [f"{k}: {_HINTS[k]}" for k in kinds if k in _HINTS]
    nodes = ", ".join(repr(op.loc.node) for op in bad[:6] if op.loc is not None and op.loc.node)
    raise PccError(
        f"quantize: no pentary lowering for {', '.join(kinds)}" + (f" (nodes {nodes})" if nodes else ""),
        first.loc,
        notes=hints + [f"supported float ops: {', '.join(sorted(c.name for c in SUPPORTED))}"],
    )


def quantize_module(
    module: Module,
    calibration: Mapping[str, np.ndarray] | None = None,
    *,
    act_pents: int = DEFAULT_ACT_PENTS,
    per_tensor: bool = False,
    weight_method: str = "mse",
    calib_method: str = "minmax",
    percentile: float = 99.99,
    max_batches: int = 64,
    fallback_samples: int = 4,
    overrides: Mapping[str, int] | str | None = None,
    seed: int = 0,
    bias_correction: bool = True,
    sim_batches: int = 64,
    report: bool = False,
    out=None,  # noqa: ANN001
) -> dict[int, tuple[Value, float]]:
    """Quantize ``module``'s main graph in place (see the module docstring); returns the map from the float
    values (by id) to their pent values and scales."""
    check_pents(act_pents, "act-pents")
    if weight_method not in ("mse", "max", "gptq"):
        raise PccError(f"weight-method must be mse, max or gptq, got {weight_method!r}")
    g = module.main
    if all(op.name.startswith("pent.") for op in g.body) and any(op.name.startswith("pent.") for op in g.body):
        return {}
    check_supported(g)
    if isinstance(overrides, str):
        overrides = parse_overrides(overrides)
    batches = calibration_batches(g, calibration, max_batches, fallback_samples, seed)
    if calibration is None:  # random inputs say nothing about the data the layers will see
        bias_correction = False
        weight_method = "mse" if weight_method == "gptq" else weight_method
    opts = QuantOptions(act_pents, per_tensor, weight_method, overrides, bias_correction)
    # the weights are quantized in worker threads while the calibration runs (numpy releases the GIL)
    with ThreadPoolExecutor(max_workers=max(1, min(4, os.cpu_count() or 1))) as pool:
        jobs = start_weight_jobs(module, g, opts, pool)
        # the quantized simulation keeps every batch's live values: at most about 2**24 elements of the largest
        largest = max((r.type.size for op in g.body for r in op.results), default=1)
        n_sim = max(1, min(sim_batches, (1 << 24) // max(largest, 1)))
        obs = observe_ranges(module, batches, calib_method, percentile, report, n_sim if bias_correction else 0)
        conv = _Converter(module, obs, opts)
        conv.jobs = jobs
        if bias_correction or weight_method == "gptq":
            conv.sim = QuantizedSim(g, batches[:n_sim])
        new = conv.convert()
    old = module.main
    for op in old.ops:
        op.drop_operands()
    module.functions[old.name] = new
    module.remove_unused_weights()
    if conv.clipped_bias:
        warnings.warn(
            f"quantize: {conv.clipped_bias} bias value(s) exceed a 16-pent word at the accumulator scale and "
            "were saturated",
            CalibrationWarning,
            stacklevel=2,
        )
    if report:
        print_report(module, conv.map, obs, batches[0], out or sys.stderr)
    return conv.map


def layer_sqnr(
    module: Module,
    mapping: Mapping[int, tuple[Value, float]],
    float_values: Mapping[int, np.ndarray],
    inputs: Mapping[str, np.ndarray],
) -> list[tuple[Value, float]]:
    """SQNR (dB) of every mapped pent value against the float value it stands for, on one input."""
    from pcc import pent_reference

    ints: dict[int, np.ndarray] = {}

    def keep(op: Operation, results: list[np.ndarray]) -> None:
        for r, x in zip(op.results, results, strict=True):
            ints[id(r)] = x

    pent_reference.run(module, dict(inputs), observe=keep)
    rows = []
    for key, (v, s) in mapping.items():
        ref = float_values.get(key)
        if ref is None or id(v) not in ints:
            continue
        rows.append((v, sqnr_db(ref, ints[id(v)].astype(np.float64) * s)))
    return rows


def print_report(module: Module, mapping, obs: RangeObserver, inputs, out) -> None:  # noqa: ANN001
    rows = layer_sqnr(module, mapping, obs.first, inputs)
    print("quantize: SQNR of each value vs the float graph (first calibration sample)", file=out)
    print(f"  {'value':<28} {'op':<16} {'pents':>5} {'SQNR dB':>8}", file=out)
    seen = set()
    for v, db in rows:
        if id(v) in seen:
            continue
        seen.add(id(v))
        name = (v.owner.loc.node if v.owner is not None and v.owner.loc and v.owner.loc.node else v.name) or "?"
        print(f"  {name[:28]:<28} {v.owner.name if v.owner else '':<16} {v.type.pents:>5} {db:>8.1f}", file=out)


@register_pass
@dataclass(frozen=True)
class Quantize(Pass):
    """nn -> pent: pentary weights, N-pent activations calibrated on data, integer-only requantization."""

    name = "quantize"
    act_pents: int = DEFAULT_ACT_PENTS  # pents per activation (1..16)
    per_tensor: bool = False  # one weight scale per tensor instead of per output channel
    weight_method: str = "mse"  # mse or max (pcc.quant scales, nearest rounding), gptq (mse scales, data-aware)
    calibration: str = ""  # .npz with arrays keyed by input name, samples stacked on the batch axis
    calib_method: str = "minmax"  # minmax or percentile
    percentile: float = 99.99  # for calib-method=percentile
    max_batches: int = 64  # calibration batches used at most
    fallback_samples: int = 4  # random normal inputs when there is no calibration data
    overrides: str = ""  # per-layer activation pents, "node:pents;node:pents"
    bias_correction: bool = True  # fold the mean output error of the weight rounding into the bias
    seed: int = 0
    report: bool = False  # print the SQNR of every value vs the float graph

    def run(self, module: Module) -> bool:
        data = load_calibration(self.calibration) if self.calibration else None
        mapping = quantize_module(
            module,
            data,
            act_pents=self.act_pents,
            per_tensor=self.per_tensor,
            weight_method=self.weight_method,
            calib_method=self.calib_method,
            percentile=self.percentile,
            max_batches=self.max_batches,
            fallback_samples=self.fallback_samples,
            overrides=self.overrides,
            seed=self.seed,
            bias_correction=self.bias_correction,
            report=self.report,
        )
        return bool(mapping)
