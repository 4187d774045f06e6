"""``quantize``: a float ``nn`` graph -> the integer ``pent`` dialect (post-training quantization).

- **Weights** become pents (-2..2) times a float scale with the shared quantizer :func:`pcc.quant.quantize_weights`
  (one scale per output channel by default, ``per-tensor=true`` for one per tensor).  ``weight-method``:
  ``mse`` (default) or ``max`` scales with nearest rounding, or ``gptq``: mse scales with the rounding chosen
  to minimise the layer's output error on the calibration inputs (:func:`gptq_round`).  With calibration data,
  **bias correction** (on by default) adds to each bias ``W E[x_f] - s Q E[x_q]``: the float layer's mean
  output on the float network's inputs minus the pentary layer's on the inputs the already quantized layers
  produce (:class:`QuantizedSim` runs the graph again with the pentary weights, layer by layer, as the pass
  converts it; that costs one more float run over the calibration batches).  ``weight-pents=2`` (per layer ``node:w2``)
  gives each conv/gemm weight two pents, ``s (p_hi + p_lo / 5)`` on a 25-level per-channel grid
  (:func:`pcc.quant.quantize_weights_wide`; ``gptq`` rounds on that grid too), computed as two pentary
  products at twice the MACs (:meth:`~pcc.passes.quantize_lower.Lowering.wide_requant_op`).  Weights that are
  already pentary (``nn.dequantize_weight``, e.g. from the trainer) keep their pents and scales.
- **Activations** are symmetric N-pent integers, ``real = q * s`` with ``s = amax / word_max(N)``, N =
  ``act-pents`` (per-layer ``overrides="node:pents;node:pents"``, by model node name or value name; an
  override may also name the layer's weight method, ``node:gptq`` or ``node:10/gptq``).  ``amax``
  comes from calibration: the float graph runs the calibration samples (``calibration=FILE.npz``, arrays
  keyed by input name, samples stacked on the batch axis), batched: each op once per group of samples, the
  convolutions and matrix products by numpy or torch (``calib-engine``, see :mod:`~pcc.passes.quantize_calibrate`),
  and records ``max |x|`` of every value (``calib-method=minmax``) or its ``percentile``
  (``calib-method=percentile``).
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

- **Error budget** (``error-budget``, default 0.05; 0: off): with calibration data, the output error of the
  quantized simulation against the float run, ``max |q - f| / max |f|`` over the simulated calibration
  samples, is the estimate; over budget, convs/gemms are raised to two pents per weight, the most sensitive
  per MAC first, within main memory (``dram-words``, set from ``--machine``), by bisection over that list
  (:mod:`~pcc.passes.quantize_budget`).  A model within budget gets the program it gets with the budget off.
  Without calibration data the budget is not applied.

The program boundary is explicit: every argument is ``pent.quantize``d and every output ``pent.dequantize``d.
With ``report=true`` the pass prints the SQNR of every quantized value against the float graph on the first
calibration sample, so a loss of accuracy can be traced to its layer.  Every pent value carries its scale in the
IR (the ``scale`` attribute of the op that produces it), so later tools read it from there.

The jobs live in their own modules: this one holds the pass (its options are the fields of :class:`Quantize`,
declared once; the CLI, ``pcc check`` and the trainer forward them by name) and the order of the work;
:mod:`~pcc.passes.quantize_calibrate` the calibration, :mod:`~pcc.passes.quantize_gptq` the GPTQ rounding,
:mod:`~pcc.passes.quantize_budget` the error budget,
:mod:`~pcc.passes.quantize_lower` the lowering rule of each op, :mod:`~pcc.passes.quantize_report` the report.
"""

from __future__ import annotations

import dataclasses
import math
import os
import sys
import warnings
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TextIO

import numpy as np

from pcc.diagnostics import PccError
from pcc.dialects import nn, pent
from pcc.ir import Module, Value
from pcc.pass_manager import Pass, register_pass
from pcc.passes.quantize_budget import (
    MEMORY_SHARE,
    BudgetResult,
    BudgetSim,
    OutputObserver,
    ablation_noise,
    candidates,
    layer_name,
    meet_budget,
    op_macs,
    output_error,
)
from pcc.passes.quantize_calibrate import (
    CALIB_ENGINES,
    CalibrationWarning,
    QuantizedSim,
    calibration_batches,
    load_calibration,
    observe_ranges,
    pick_engine,
)
from pcc.passes.quantize_gptq import gptq_round
from pcc.passes.quantize_lower import (
    LOWERING,
    Lowering,
    check_supported,
    float_weight_job,
    requant_params,
    round_away,
    start_weight_jobs,
    weight_axis,
)
from pcc.passes.quantize_report import print_report, sqnr_db

__all__ = [
    "DEFAULT_ACT_PENTS",
    "LOWERING",
    "CalibrationWarning",
    "Quantize",
    "check_pents",
    "gptq_round",
    "load_calibration",
    "parse_layer_overrides",
    "parse_overrides",
    "parse_weight_pents",
    "quantize_module",
    "requant_params",
    "round_away",
    "sqnr_db",
]

DEFAULT_ACT_PENTS = 8
SIM_ELEMENTS = 1 << 24  # the quantized simulation keeps every batch's live values: about this many of the largest


def check_pents(pents: int, what: str) -> None:
    if not 1 <= pents <= pent.MAX_ACT_PENTS:
        raise PccError(f"{what}: pents must be in 1..{pent.MAX_ACT_PENTS}, got {pents}")
    if pents == 5:
        raise PccError(f"{what}: a 5-pent word has no IR type (p5 is the single pent of a weight); use 4 or 6")


WEIGHT_METHODS = ("mse", "max", "gptq")
WEIGHT_PENTS_TOKENS = ("w1", "w2")  # an override's pents per weight: one pent, or two (p_hi + p_lo / 5)


def parse_layer_overrides(text: str | Mapping[str, Any]) -> tuple[dict[str, int], dict[str, str]]:
    """``"conv1:10;fc:gptq;conv2:12/gptq"`` -> activation pents ``{"conv1": 10, "conv2": 12}`` and weight
    methods ``{"fc": "gptq", "conv2": "gptq"}``: per node (or value) name a SPEC of ``/``-separated parts, each
    a number of pents, a weight method (mse, max, gptq) or the pents per weight (w1, w2: see
    :func:`parse_weight_pents`).  A mapping gives the SPEC (or the pents) by name."""
    pents: dict[str, int] = {}
    methods: dict[str, str] = {}
    items = list(text.items()) if isinstance(text, Mapping) else []
    if not isinstance(text, Mapping):
        for item in text.replace("\n", ";").split(";"):
            item = item.strip()
            if not item:
                continue
            name, sep, spec = item.rpartition(":")
            if not sep or not name.strip() or not spec.strip():
                raise PccError(f"quantize override {item!r}: expected NODE:SPEC, e.g. conv1:10 or fc:gptq")
            items.append((name.strip(), spec))
    for name, spec in items:
        for part in str(spec).split("/"):
            part = part.strip()
            if part.isdigit():
                check_pents(int(part), f"quantize override {name}:{spec}")
                pents[str(name)] = int(part)
            elif part in WEIGHT_METHODS:
                methods[str(name)] = part
            elif part in WEIGHT_PENTS_TOKENS:
                pass  # the layer's pents per weight: parse_weight_pents
            else:
                raise PccError(
                    f"quantize override {name}:{spec}: {part!r} is neither a number of pents, a weight method "
                    f"({', '.join(WEIGHT_METHODS)}) nor pents per weight ({', '.join(WEIGHT_PENTS_TOKENS)})"
                )
    return pents, methods


def parse_weight_pents(text: str | Mapping[str, Any]) -> dict[str, int]:
    """The pents per weight that overrides name: ``"conv1:w2;fc:10/w2;head:w1"`` -> ``{"conv1": 2, "fc": 2,
    "head": 1}`` (the ``w1``/``w2`` parts of :func:`parse_layer_overrides`'s SPECs)."""
    parse_layer_overrides(text)  # the same grammar, checked once
    items = list(text.items()) if isinstance(text, Mapping) else []
    if not isinstance(text, Mapping):
        for item in text.replace("\n", ";").split(";"):
            name, sep, spec = item.strip().rpartition(":")
            if sep:
                items.append((name.strip(), spec))
    out: dict[str, int] = {}
    for name, spec in items:
        for part in str(spec).split("/"):
            if part.strip() in WEIGHT_PENTS_TOKENS:
                out[str(name)] = int(part.strip()[1:])
    return out


def parse_overrides(text: str | Mapping[str, int]) -> dict[str, int]:
    """``"conv1:10;fc:12"`` -> ``{"conv1": 10, "fc": 12}``: the activation pents of :func:`parse_layer_overrides`."""
    return parse_layer_overrides(text)[0]


def _option(default: Any, doc: str) -> Any:
    """A pass option: its default and the one-line help the CLI and ``pcc opt --list-passes`` show."""
    return dataclasses.field(default=default, metadata={"doc": doc})


@register_pass
@dataclass(frozen=True)
class Quantize(Pass):
    """nn -> pent: pentary weights, N-pent activations calibrated on data, integer-only requantization."""

    name = "quantize"
    act_pents: int = _option(DEFAULT_ACT_PENTS, "Pents per activation (1..16; default 8).")
    per_tensor: bool = _option(False, "One weight scale per tensor instead of per output channel.")
    weight_pents: int = _option(
        1, "Pents per conv/gemm weight: 1 (5 levels) or 2 (s*(p_hi + p_lo/5), 25 levels, twice the MACs)."
    )
    weight_method: str = _option("mse", "mse or max (pcc.quant scales, nearest rounding), gptq (data-aware rounding).")
    calibration: str = _option("", "Calibration data: .npz with one array per input name, samples on the batch axis.")
    calib_method: str = _option("minmax", "minmax or percentile.")
    calib_engine: str = _option(
        "auto", "Products of the calibration runs: numpy, torch (float32 kernels), auto (torch for large runs)."
    )
    percentile: float = _option(99.99, "The percentile of |x| for calib-method=percentile.")
    max_batches: int = _option(64, "Calibration batches used at most.")
    fallback_samples: int = _option(4, "Random normal inputs when there is no calibration data.")
    overrides: str = _option(
        "",
        "Per-layer activation pents, weight methods and pents per weight: 'node:pents;node:gptq;node:10/w2'.",
    )
    bias_correction: bool = _option(True, "Fold the mean output error of the weight rounding into the bias.")
    sim_batches: int = _option(64, "Batches the quantized simulation (bias correction, gptq) runs at most.")
    table_entries: int = _option(4096, "Entries at most of a table activation (sigmoid); a coarser index beyond.")
    seed: int = _option(0, "Seed of the random fallback inputs.")
    report: bool = _option(False, "Print the SQNR of every value against the float graph.")
    error_budget: float = _option(
        0.05,
        "Largest estimated output error (max|q - f| / max|f| on the calibration samples) before convs/gemms "
        "are raised to two pents per weight; 0: off.",
    )
    dram_words: int = _option(0, "Main memory the error budget's two-pent layers must fit (0: the target's).")

    def run(self, module: Module) -> bool:
        data = load_calibration(self.calibration) if self.calibration else None
        return bool(quantize_module(module, data, self))


def _budget_name(op: Any) -> str:
    """The name a layer raised by the error budget is overridden by: its result (unique in the graph)."""
    return op.results[0].name or layer_name(op)


def _wide_job(module: Module, op: Any, opts: Quantize, pool: ThreadPoolExecutor, cache: dict[int, Any]) -> Any:
    """The two-pent weight of ``op`` (computed once per quantize call, in the pool)."""
    if id(op) not in cache:
        cache[id(op)] = pool.submit(float_weight_job, module, op.operands[1], weight_axis(op), opts, 2)
    return cache[id(op)]


def _meet_budget(
    module: Module,
    g: Any,
    first: Lowering,
    lower: Any,
    obs: OutputObserver,
    opts: Quantize,
    wide: Mapping[str, int],
    budget: float,
    feed: Mapping[str, np.ndarray],
    jobs: Mapping[int, Any],
) -> tuple[Lowering, BudgetResult]:
    """The error budget on a first conversion ``first`` (see :mod:`~pcc.passes.quantize_budget`)."""
    from pcc.isa import DEFAULT_CONFIG
    from pcc.machine import min_words
    from pcc.passes.quantize_lower import _names

    def estimate(lw: Lowering) -> float:
        return output_error(obs.kept, lw.sim.output_values(g))

    def convert(raised: Sequence[Any]) -> tuple[Lowering, float]:
        lw = lower(raised)
        return lw, estimate(lw)

    def discard(lw: Lowering) -> None:
        for op in lw.g.ops:
            op.drop_operands()
        module.remove_unused_weights()

    def pentary(op: Any) -> np.ndarray:  # the one-pent weight in the operand's layout
        q, s, _ = jobs[id(op)].result()
        return np.moveaxis(q * s.astype(np.float32).reshape((-1,) + (1,) * (q.ndim - 1)), 0, weight_axis(op))

    def sensitivity() -> dict[int, float]:
        mean_of = obs.mean_of if opts.bias_correction else (lambda v: None)
        return ablation_noise(module, feed, cands, pentary, mean_of)

    dram = opts.dram_words or DEFAULT_CONFIG.dram_words

    def fits(raised: Sequence[Any]) -> bool:
        weights, arena = min_words(module, {id(op) for op in raised})
        return weights + arena <= MEMORY_SHARE * dram

    fixed = opts.weight_pents == 2
    cands = [] if fixed else candidates(g, lambda op: any(n in wide for n in _names(op)))
    total = sum(op_macs(op) for op in g.body if isinstance(op, nn.Conv2d | nn.Gemm))
    samples = len(next(iter(obs.kept.values()), []))
    first_estimate = estimate(first)
    lw, result = meet_budget(
        convert, discard, cands, sensitivity, fits, (first, first_estimate), budget, samples, total
    )
    result.everywhere = fixed
    return lw, result


def options(**fields: Any) -> Quantize:
    """A :class:`Quantize` with the given fields (by their Python names, e.g. ``act_pents=6``); ``None`` values
    keep the default.  An unknown name is a PccError listing the known ones."""
    known = {f.name for f in dataclasses.fields(Quantize)}
    bad = sorted(set(fields) - known)
    if bad:
        raise PccError(f"quantize has no option {', '.join(bad)} (options: {', '.join(sorted(known))})")
    return Quantize(**{k: v for k, v in fields.items() if v is not None})


def quantize_module(
    module: Module,
    calibration: Mapping[str, np.ndarray] | None = None,
    opts: Quantize | None = None,
    *,
    out: TextIO | None = None,
    **fields: Any,
) -> dict[int, tuple[Value, float]]:
    """Quantize ``module``'s main graph in place with the options ``opts`` (a :class:`Quantize`; ``fields``
    override its fields by name) and the calibration arrays ``calibration`` (see the module docstring).
    Returns the map from the float values (by id) to their pent values and scales."""
    opts = dataclasses.replace(opts, **fields) if opts is not None else options(**fields)
    check_pents(opts.act_pents, "act-pents")
    if opts.weight_method not in ("mse", "max", "gptq"):
        raise PccError(f"weight-method must be mse, max or gptq, got {opts.weight_method!r}")
    if not 0 < opts.percentile <= 100:  # also NaN
        raise PccError(f"percentile must be in (0, 100], got {opts.percentile}")
    if opts.weight_pents not in (1, 2):
        raise PccError(f"weight-pents must be 1 or 2, got {opts.weight_pents}")
    if opts.calib_engine not in CALIB_ENGINES:
        raise PccError(f"calib-engine must be {', '.join(CALIB_ENGINES)}, got {opts.calib_engine!r}")
    if opts.calib_method not in ("minmax", "percentile"):
        raise PccError(f"calib-method must be minmax or percentile, got {opts.calib_method!r}")
    if not 0 <= opts.error_budget < math.inf:  # also NaN
        raise PccError(f"error-budget must be a number >= 0 (0: off), got {opts.error_budget}")
    for name in ("max_batches", "fallback_samples", "sim_batches", "table_entries"):
        if getattr(opts, name) < 1:
            raise PccError(f"{name.replace('_', '-')} must be at least 1, got {getattr(opts, name)}")
    g = module.main
    if all(op.name.startswith("pent.") for op in g.body) and any(op.name.startswith("pent.") for op in g.body):
        return {}
    check_supported(g)
    overrides, methods = parse_layer_overrides(opts.overrides)
    wide = parse_weight_pents(opts.overrides)
    batches = calibration_batches(g, calibration, opts.max_batches, opts.fallback_samples, opts.seed)
    if calibration is None:  # random inputs say nothing about the data the layers will see
        method = "mse" if opts.weight_method == "gptq" else opts.weight_method
        opts = dataclasses.replace(opts, bias_correction=False, weight_method=method)
    budget = opts.error_budget if calibration is not None else 0.0  # random inputs: no estimate worth its cost
    # the weights are quantized in worker threads while the calibration runs (numpy releases the GIL)
    with ThreadPoolExecutor(max_workers=max(1, min(4, os.cpu_count() or 1))) as pool:
        jobs = start_weight_jobs(module, g, opts, pool, methods, wide)
        largest = max((r.type.size for op in g.body for r in op.results), default=1)
        n_sim = max(1, min(opts.sim_batches, SIM_ELEMENTS // max(largest, 1)))
        sim = opts.bias_correction or opts.weight_method == "gptq" or "gptq" in methods.values() or budget > 0
        engine = pick_engine(opts.calib_engine, g, len(batches) + (n_sim if sim else 0))
        observer = None
        if budget > 0:
            observer = OutputObserver(g, n_sim, opts.calib_method, opts.percentile, opts.report)
        obs = observe_ranges(
            module,
            batches,
            opts.calib_method,
            opts.percentile,
            opts.report,
            n_sim if opts.bias_correction else 0,
            engine,
            observer,
        )

        wide_jobs: dict[int, Any] = {}  # the two-pent weights of the layers the error budget tries

        def lower(raised: Sequence[Any] = ()) -> Lowering:
            chosen = {**wide, **{_budget_name(op): 2 for op in raised}}
            lw = Lowering(module, obs, opts, overrides, methods, chosen)
            lw.jobs = {**jobs, **{id(op): _wide_job(module, op, opts, pool, wide_jobs) for op in raised}}
            if budget > 0:
                lw.sim = BudgetSim(g, batches[:n_sim], engine)
            elif sim:
                lw.sim = QuantizedSim(g, batches[:n_sim], engine)
            lw.convert()  # the new graph: lw.g
            return lw

        lw = lower()
        if budget > 0:
            lw, result = _meet_budget(module, g, lw, lower, obs, opts, wide, budget, batches[0], jobs)
            if result.raised:
                print(result.text(), file=out or sys.stderr)
            if not result.met:
                warnings.warn(result.warning(), CalibrationWarning, stacklevel=2)
        new = lw.g
    old = module.main
    for op in old.ops:
        op.drop_operands()
    module.functions[old.name] = new
    module.remove_unused_weights()
    if lw.clipped_bias:
        warnings.warn(
            f"quantize: {lw.clipped_bias} bias value(s) exceed a 16-pent word at the accumulator scale and "
            "were saturated",
            CalibrationWarning,
            stacklevel=2,
        )
    if opts.report:
        print_report(module, lw.map, obs.first, batches[0], out or sys.stderr)
    return lw.map
