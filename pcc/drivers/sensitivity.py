"""Layer sensitivity: quantize one layer at a time, the rest of the network float, and measure the output error
each layer causes alone (``pcc check --sensitivity``); then propose per-layer overrides of the quantize pass
that meet an accuracy budget at the least cost in cycles (``--suggest``).

**The ablation.**  For each op of the compiled program (a conv with its fused ReLU and residual add, a pool, an
add, ...) its inputs are taken from the float graph, quantized at the scales the program gives them, the op is
run exactly as the ``pent`` reference runs it (its pents, multipliers, shifts, rounding), and its integers times
its scale replace the float value in an otherwise float run of the graph.  Only the ops downstream of that
value are run again.  The output's SQNR against the float graph's output is the layer's sensitivity; the
layers are ranked by it.  This measures what each layer's quantization does to the *output*, which an SQNR
at the layer itself does not: errors add up along the network, so late layers have a low SQNR without being
the cause, and a layer whose error the rest of the network amplifies can look harmless where it is.

**The suggestion.**  The candidate fixes of a layer are the quantize pass's per-layer overrides
(``overrides="NODE:SPEC;..."``): wider activations (``NODE:12``, free in cycles on this machine: an activation
takes one word at any width), GPTQ rounding (``NODE:gptq``, free; it needs calibration data) and the two-pent
weight form of a conv/gemm (``NODE:w2``: 25 levels ``s (p_hi + p_lo / 5)``, two passes over the MAC array, so
about twice the layer's MAC cycles; the cost is the measured cycles of the compiled candidate), and with
calibration data the two combined (``NODE:w2/gptq``: GPTQ rounding on the 25-level grid, the cycles of ``w2``).  Each
candidate is measured by the same ablation (the layer alone, compiled with that override), the noise of the
layers is taken as adding up (independent errors), and candidates are taken greedily by noise removed per
cycle until the predicted output SQNR meets the budget (one that costs cycles only if it removes 5 % of its
layer's noise); the result is compiled and measured again, and the pipeline string is printed for
``pcc compile --passes``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from pcc.diagnostics import PccError
from pcc.ir import Module, Operation

__all__ = ["LayerSensitivity", "ablate", "choose", "float_copy", "ranking_table", "Suggestion", "suggest"]


@dataclass
class LayerSensitivity:
    """The output error when only this program op is quantized."""

    layer: str  # the program op's layer name (its model node)
    value: str  # the float value it stands for
    op: str
    sqnr_db: float  # output SQNR against the float graph (all outputs, all samples)
    noise: float  # sum of squared output errors
    top1: float | None = None  # share of classifier rows whose argmax equals the float graph's
    rank: int = 0  # 1 = the most sensitive

    def to_dict(self) -> dict[str, Any]:
        return {
            "layer": self.layer,
            "value": self.value,
            "op": self.op,
            "sqnr_db": "inf" if math.isinf(self.sqnr_db) else self.sqnr_db,
            "top1_agreement": self.top1,
            "rank": self.rank,
        }


def float_copy(module: Module) -> Module:
    """An independent copy of a float module (printed and parsed back with the same weight arrays)."""
    from pcc.parser import parse_module
    from pcc.printer import print_module

    return parse_module(print_module(module), module.name or "model", dict(module.weight_data))


class FloatReplay:
    """Runs the float graph again from recorded values, recomputing only what depends on a replaced value."""

    def __init__(self, float_module: Module) -> None:
        self.m = float_module
        g = float_module.main
        self.ops = list(g.body)
        self.outputs = [v.name or "" for v in g.outputs]

    def run(self, values: Mapping[str, np.ndarray], replace: Mapping[str, np.ndarray]) -> list[np.ndarray]:
        from pcc import interpreter

        env = dict(values)
        env.update(replace)
        dirty = set(replace)
        for op in self.ops:
            names = [v.name or "" for v in op.operands]
            if not any(n in dirty for n in names if n):
                continue
            if any(r.name in replace for r in op.results):
                continue
            args = [self.m.weight(v) if v.is_weight else env[v.name or ""] for v in op.operands]
            for r, a in zip(op.results, interpreter.eval_op(op, args), strict=True):
                env[r.name or ""] = a
                dirty.add(r.name or "")
        return [np.asarray(env[n]) for n in self.outputs]


def _operand_float(tr: Any, v: Any, values: Mapping[str, np.ndarray]) -> np.ndarray | None:
    """The float array a pent operand stands for, in the operand's element order."""
    from pcc.pent_reference import quantize_input

    op = v.owner
    if op is None:
        return None
    if op.name == "pent.quantize":
        x = values.get(op.operands[0].name or "")
    else:
        cp = tr.counterpart.get(id(v))
        if cp is None:
            return None
        name, _, relayout = cp
        x = values.get(name)
        if x is not None and relayout is not None:
            x = relayout(x)
    if x is None:
        return None
    return quantize_input(x, float(op.attr("scale")), v.type.pents or 1)


def _operand_int(tr: Any, v: Any, values: Mapping[str, np.ndarray], depth: int = 0) -> np.ndarray | None:
    """:func:`_operand_float`, or for a value with no float counterpart made by a conv/gemm (the first product of
    a two-pent weight, which the second takes as its residual) that op evaluated on its own operands."""
    from pcc import pent_reference

    x = _operand_float(tr, v, values)
    op = v.owner
    if x is not None or op is None or depth > 1 or not op.name.startswith(("pent.conv2d", "pent.gemm")):
        return x
    args = []
    for u in op.operands:
        a = tr.module.weight(u) if u.is_weight else _operand_int(tr, u, values, depth + 1)
        if a is None:
            return None
        args.append(a)
    return pent_reference.eval_op(op, args)[0]


def ablate(tr: Any, float_module: Module, layers: Sequence[Operation] | None = None) -> dict[int, LayerSensitivity]:
    """The one-layer-at-a-time ablation of the traced compile ``tr`` (:func:`pcc.drivers.check.compile_traced`)
    on its samples; ``float_module``: a copy of the float graph (:func:`float_copy`).  Returns, by id of the
    program op, its :class:`LayerSensitivity` (ranked).  Ops without a float counterpart, or that reorder
    elements (a ``fold-flatten`` reshape), are left out."""
    from pcc import pent_reference
    from pcc.backend.codegen import layer_name

    m = tr.module
    replay = FloatReplay(float_module)
    ops = [
        op
        for op in (layers if layers is not None else m.main.body)
        if op.name not in ("pent.quantize", "pent.dequantize")
        and id(op.results[0]) in tr.counterpart
        and tr.counterpart[id(op.results[0])][2] is None
    ]
    out: dict[int, LayerSensitivity] = {}
    for op in ops:
        name = tr.counterpart[id(op.results[0])][0]
        noise = signal = 0.0
        agree = rows = 0
        ok = True
        for si, values in enumerate(tr.float_values):
            args = []
            for v in op.operands:
                if v.is_weight:
                    args.append(m.weight(v))
                    continue
                x = _operand_int(tr, v, values)
                if x is None:
                    ok = False
                    break
                args.append(x)
            if not ok:
                break
            (y,) = pent_reference.eval_op(op, args)
            yf = (np.asarray(y, np.float64) * float(op.attr("scale"))).astype(np.float32)
            got = replay.run(values, {name: yf.reshape(np.shape(values[name]))})
            for ref, g in zip(tr.float_outputs[si], got, strict=True):
                r64, g64 = np.asarray(ref, np.float64), np.asarray(g, np.float64)
                noise += float(np.sum((r64 - g64) ** 2))
                signal += float(np.sum(r64**2))
                if r64.ndim == 2 and r64.shape[1] >= 2:
                    agree += int(np.sum(r64.argmax(1) == g64.argmax(1)))
                    rows += r64.shape[0]
        if not ok:
            continue
        db = math.inf if noise == 0 else 10 * math.log10(max(signal, 1e-300) / noise)
        label = op.name.removeprefix("pent.")
        out[id(op)] = LayerSensitivity(layer_name(op), name, label, db, noise, agree / rows if rows else None)
    for k, s in enumerate(sorted(out.values(), key=lambda s: s.sqnr_db)):
        s.rank = k + 1
    return out


def ranking_table(rows: Sequence[LayerSensitivity], total_db: float | None = None) -> str:
    """The ablation as text, the most sensitive layer first."""
    w = min(max([len(r.layer) for r in rows] + [5]), 40)
    head = f"{'rank':>4}  {'layer':<{w}} {'op':<12} {'output SQNR dB':>14}  {'top-1 vs float':>14}"
    lines = [
        "sensitivity: each layer quantized alone (the rest float), the output against the float graph",
        "",
        head,
        "-" * len(head),
    ]
    for r in sorted(rows, key=lambda r: r.rank):
        db = "inf" if math.isinf(r.sqnr_db) else f"{r.sqnr_db:.1f}"
        top1 = "-" if r.top1 is None else f"{100 * r.top1:.1f} %"
        lines.append(f"{r.rank:>4}  {r.layer[:w]:<{w}} {r.op[:12]:<12} {db:>14}  {top1:>14}")
    if total_db is not None:
        lines += ["", f"all layers quantized: output SQNR {total_db:.1f} dB"]
    return "\n".join(lines) + "\n"


# ----------------------------------------------------------------------------------------------- suggestion


@dataclass
class Candidate:
    layer: str  # the model node the override names
    spec: str  # the override's SPEC (12, gptq, w2)
    cycles: int  # extra cycles per sample
    noise: float  # the layer's output noise alone with the override
    base_noise: float  # without it


@dataclass
class Suggestion:
    """The chosen overrides, the pipeline string, the predicted and measured output SQNR and the cycles."""

    overrides: dict[str, str]
    pipeline: str
    budget_db: float
    predicted_db: float
    measured_db: float | None
    base_db: float
    base_cycles: int
    cycles: int
    candidates: list[Candidate] = field(default_factory=list)
    uniform: dict[str, Any] = field(default_factory=dict)  # uniformly wider activations, for comparison
    signal: float = 0.0  # the float outputs' sum of squares and the program's noise before overrides
    base_noise: float = 0.0

    def text(self) -> str:
        ov = ";".join(f"{k}:{v}" for k, v in self.overrides.items())
        extra = self.cycles - self.base_cycles
        lines = [
            f"suggest: budget output SQNR >= {self.budget_db:.1f} dB (now {self.base_db:.1f} dB, "
            f"{self.base_cycles:,} cycles per sample)",
        ]
        if not self.overrides:
            lines.append("  no override needed" if self.base_db >= self.budget_db else "  no candidate helps")
        for k, v in self.overrides.items():
            c = next((c for c in self.candidates if c.layer == k and c.spec == v), None)
            if c is not None:
                lines.append(f"  {k}:{v}  (+{c.cycles:,} cycles; the layer's output noise {_ratio(c)})")
        if self.overrides and self.predicted_db < self.budget_db:
            lines.append("  the budget is out of reach of these candidates (the best of each layer is taken)")
        measured = "-" if self.measured_db is None else f"{self.measured_db:.1f}"
        lines.append(
            f"  predicted {self.predicted_db:.1f} dB, measured {measured} dB, {self.cycles:,} cycles "
            f"(+{extra:,}, {100 * extra / max(self.base_cycles, 1):.1f} %)"
        )
        for k, v in self.uniform.items():
            if "error" in v:
                lines.append(f"  for comparison, {k}: does not compile ({v['error']})")
            else:
                lines.append(f"  for comparison, {k}: {v['db']:.1f} dB at {v['cycles']:,} cycles")
        if ov:
            lines += ["", "pipeline (paste into pcc compile --passes):", f"  {self.pipeline}"]
        return "\n".join(lines) + "\n"


def _ratio(c: Candidate) -> str:
    if c.noise <= 0:
        return "-> 0"
    return f"/{c.base_noise / c.noise:.1f}"


def output_sqnr(tr: Any) -> tuple[float, float]:
    """``(SQNR dB, noise)`` of the compiled program's outputs (the pent reference) against the float graph's."""
    from pcc import pent_reference

    noise = signal = 0.0
    for si, values in enumerate(tr.float_values):
        feed = {a.name or "": values[a.name or ""] for a in tr.module.main.args}
        outs = pent_reference.run(tr.module, feed)
        for ref, got in zip(tr.float_outputs[si], outs, strict=True):
            r, g = np.asarray(ref, np.float64), np.asarray(got, np.float64).reshape(np.shape(ref))
            noise += float(np.sum((r - g) ** 2))
            signal += float(np.sum(r**2))
    return (math.inf if noise == 0 else 10 * math.log10(max(signal, 1e-300) / noise)), noise


def _trace(load: Any, samples: Sequence[Mapping[str, np.ndarray]], **options: Any) -> Any:
    from pcc.drivers.check import compile_traced

    return compile_traced(load(), samples, **options)


def _db(signal_noise: tuple[float, float]) -> float:
    signal, noise = signal_noise
    return math.inf if noise <= 0 else 10 * math.log10(max(signal, 1e-300) / noise)


def suggest(
    load: Any,
    samples: Sequence[Mapping[str, np.ndarray]],
    budget_db: float,
    *,
    top: int = 8,
    widths: Sequence[int] = (10, 12),
    **quantize_options: Any,
) -> Suggestion:
    """Per-layer overrides meeting ``budget_db`` (the output SQNR against the float graph) at the least cost in
    cycles; see the module docstring.  ``load()`` returns a fresh float module of the model; ``samples`` are
    the inputs to measure on; ``top``: candidates are tried on the ``top`` most sensitive layers;
    ``widths``: the uniform activation widths reported for comparison."""
    from pcc.drivers.check import _node
    from pcc.passes.quantize import DEFAULT_ACT_PENTS, parse_layer_overrides

    base_opts = dict(quantize_options)
    base_opts.setdefault("error_budget", 0.0)  # the choice is this function's: from one pent per weight
    given = base_opts.pop("overrides", "") or ""
    tr = _trace(load, samples, overrides=given, **base_opts)
    base_db, base_noise = output_sqnr(tr)
    signal = base_noise * 10 ** (base_db / 10) if math.isfinite(base_db) else 1.0
    base_cycles = int(tr.compiled.cycles)
    alone = ablate(tr, tr.float_module)
    by_id = {id(op): op for op in tr.module.main.body}
    ranked = sorted(alone.items(), key=lambda kv: kv[1].rank)[:top]
    pents = int(base_opts.get("act_pents") or DEFAULT_ACT_PENTS)
    specs = sorted({str(min(16, pents + k)) for k in (2, 4)} - {str(pents)}, key=int)
    specs += ["gptq"] if base_opts.get("calibration") else []
    cands: list[Candidate] = []
    for oid, sens in ranked:
        node = _node(by_id[oid])
        if node is None or not by_id[oid].name.startswith(("pent.conv2d", "pent.gemm", "pent.add", "pent.avg")):
            continue
        wide = []
        if by_id[oid].name.startswith(("pent.conv2d", "pent.gemm")):
            wide = ["w2", "w2/gptq"] if base_opts.get("calibration") else ["w2"]
        for spec in specs + wide:
            ov = ";".join(x for x in (given, f"{node}:{spec}") if x)
            try:
                t2 = _trace(load, samples, overrides=ov, **base_opts)
            except PccError:  # an override this layer cannot take (a clamp bound beyond TCLAMP's field): skipped
                continue
            ops2 = [op for op in t2.module.main.body if _node(op) == node and id(op.results[0]) in t2.counterpart]
            a2 = ablate(t2, t2.float_module, ops2[-1:])
            if not a2:
                continue
            (s2,) = a2.values()
            cands.append(Candidate(node, spec, int(t2.compiled.cycles) - base_cycles, s2.noise, sens.noise))
    chosen = choose(cands, signal, base_noise, budget_db)
    noise = base_noise - sum(c.base_noise - c.noise for c in chosen.values())
    overrides = {k: c.spec for k, c in chosen.items()}
    pents_ov, methods_ov = parse_layer_overrides(given)
    merged: dict[str, list[str]] = {}
    for k, v in pents_ov.items():
        merged.setdefault(k, []).append(str(v))
    for k, v in methods_ov.items():
        merged.setdefault(k, []).append(v)
    for k, v in overrides.items():
        merged[k] = [p for p in merged.get(k, []) if not (p.isdigit() == v.isdigit())] + [v]
    text = ";".join(f"{k}:{'/'.join(v)}" for k, v in merged.items())
    measured, cycles = None, base_cycles
    if overrides:  # every candidate compiled alone; together they compile too (the overrides are per layer)
        t3 = _trace(load, samples, overrides=text, **base_opts)
        measured, cycles = output_sqnr(t3)[0], int(t3.compiled.cycles)
    uniform = {}
    for wd in widths:
        if wd == pents:
            continue
        try:
            t4 = _trace(load, samples, overrides=given, **{**base_opts, "act_pents": wd})
        except PccError as exc:
            uniform[f"--act-pents {wd} everywhere"] = {"error": exc.message}
            continue
        uniform[f"--act-pents {wd} everywhere"] = {"db": output_sqnr(t4)[0], "cycles": int(t4.compiled.cycles)}
    return Suggestion(
        overrides,
        _pipeline_string(text, base_opts),
        budget_db,
        _db((signal, noise)),
        measured,
        base_db,
        base_cycles,
        cycles,
        cands,
        uniform,
        signal,
        base_noise,
    )


def choose(cands: Sequence[Candidate], signal: float, base_noise: float, budget_db: float) -> dict[str, Candidate]:
    """The greedy choice: candidates by noise removed per cycle (free ones first, by noise removed), at most one
    per layer (a later one replaces an earlier one of its layer only if it removes more), until the predicted
    output SQNR (``signal`` over the remaining noise, the layers' noise taken as adding up) meets the budget.
    A candidate that costs cycles must remove at least 5 % of its layer's noise."""

    def gain(c: Candidate) -> float:
        return c.base_noise - c.noise

    useful = [c for c in cands if gain(c) > 0 and (c.cycles <= 0 or gain(c) >= 0.05 * c.base_noise)]
    order = sorted(useful, key=lambda c: (c.cycles > 0, -gain(c) / max(c.cycles, 1)))
    chosen: dict[str, Candidate] = {}
    noise = base_noise
    for c in order:
        if _db((signal, noise)) >= budget_db:
            break
        prev = chosen.get(c.layer)
        if prev is not None and gain(prev) >= gain(c):
            continue
        noise -= gain(c) - (gain(prev) if prev is not None else 0.0)
        chosen[c.layer] = c
    return chosen


def _pipeline_string(overrides: str, opts: Mapping[str, Any]) -> str:
    from pcc.passes.pipeline import FLOAT_PASSES, PENT_PASSES

    parts = [f"{k.replace('_', '-')}={v}" for k, v in opts.items() if k in ("act_pents", "calibration") and v]
    parts.append(f"error-budget={opts.get('error_budget', 0.0):g}")  # the overrides are the whole choice
    if opts.get("per_tensor"):
        parts.append("per-tensor=true")
    if overrides:
        parts.append(f"overrides={overrides}")
    q = "quantize" + ("{" + ",".join(parts) + "}" if parts else "")
    return f"{FLOAT_PASSES},{q},{PENT_PASSES}"
