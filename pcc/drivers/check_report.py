"""The report of ``pcc check`` (:mod:`pcc.drivers.check`): per-layer and per-output rows, the summary (worst
layer, largest SQNR drop, bit-exactness), the JSON form and the text table.  Plain data and formatting, no
compiling or running."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = ["CheckReport", "ErrorStats", "LayerRow", "OutputRow"]


# ----------------------------------------------------------------------------------------------- statistics


class ErrorStats:
    """Running error statistics of a test array against a reference (over several samples)."""

    def __init__(self) -> None:
        self.noise = 0.0
        self.signal = 0.0
        self.max_err = 0.0
        self.max_ref = 0.0
        self.count = 0

    def add(self, ref: np.ndarray, test: np.ndarray) -> None:
        r = np.asarray(ref, dtype=np.float64)
        d = r - np.asarray(test, dtype=np.float64)
        self.noise += float(np.sum(d * d))
        self.signal += float(np.sum(r * r))
        self.count += 1
        if d.size:
            self.max_err = max(self.max_err, float(np.max(np.abs(d))))
            self.max_ref = max(self.max_ref, float(np.max(np.abs(r))))

    @property
    def sqnr_db(self) -> float:
        if self.noise == 0:
            return math.inf
        return 10 * math.log10(max(self.signal, 1e-300) / self.noise)


def _json_num(x: float | None) -> float | str | None:
    if x is None:
        return None
    if math.isinf(x):
        return "inf" if x > 0 else "-inf"
    return float(x)


# ----------------------------------------------------------------------------------------------- the report


@dataclass
class LayerRow:
    """One value of the program: a program input (``op == "pent.quantize"``) or the result of one layer."""

    index: int
    layer: str  # the layer name of the assembly and the profiler (the op's model node)
    nodes: list[str]  # the model nodes whose value this is (fused ones included)
    op: str  # e.g. "conv2d+relu", "gemm+add"
    shape: tuple[int, ...]
    pents: int
    scale: float | None
    sqnr_db: float | None = None  # pent reference vs float graph; None: no float counterpart
    max_abs_err: float | None = None
    max_abs_ref: float | None = None  # max |float value|, to read max_abs_err against
    drop_db: float | None = None  # SQNR of the inputs (the worst of them) minus this SQNR
    sim_exact: bool | None = None  # None: the simulator's buffer was not compared
    mismatches: int | None = None  # elements where the simulator differs from the reference
    inputs: list[int] = field(default_factory=list)  # row indices of the operands
    alone_db: float | None = None  # output SQNR with only this layer quantized (the ablation); None: not run
    alone_rank: int | None = None  # its rank in the ablation (1: the largest output error)

    @property
    def is_input(self) -> bool:
        return self.op == "input"

    def to_dict(self) -> dict[str, Any]:
        return {
            "index": self.index,
            "layer": self.layer,
            "nodes": self.nodes,
            "op": self.op,
            "shape": list(self.shape),
            "pents": self.pents,
            "scale": self.scale,
            "sqnr_db": _json_num(self.sqnr_db),
            "max_abs_err": self.max_abs_err,
            "max_abs_ref": self.max_abs_ref,
            "drop_db": _json_num(self.drop_db),
            "sim_bit_exact": self.sim_exact,
            "sim_mismatches": self.mismatches,
            "inputs": self.inputs,
            "alone_output_sqnr_db": _json_num(self.alone_db),
            "alone_rank": self.alone_rank,
        }


@dataclass
class OutputRow:
    """One program output: the simulator against the pent reference, the float reference and onnxruntime."""

    name: str
    shape: tuple[int, ...]
    pents: int
    scale: float
    sqnr_db: float  # pent reference (dequantized) vs float reference
    max_abs_err: float
    max_abs_ref: float
    sim_exact: bool
    mismatches: int
    ort_sqnr_db: float | None = None  # simulator vs onnxruntime
    ort_max_abs_err: float | None = None
    float_vs_ort_max_abs_err: float | None = None  # float reference interpreter vs onnxruntime
    top1_agree: int | None = None  # rows whose argmax the simulator shares with the float model
    top1_rows: int | None = None
    top1_against: str | None = None  # "onnxruntime" or "float reference"

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "shape": list(self.shape),
            "pents": self.pents,
            "scale": self.scale,
            "sqnr_db": _json_num(self.sqnr_db),
            "max_abs_err": self.max_abs_err,
            "max_abs_ref": self.max_abs_ref,
            "sim_bit_exact": self.sim_exact,
            "sim_mismatches": self.mismatches,
            "onnxruntime_sqnr_db": _json_num(self.ort_sqnr_db),
            "onnxruntime_max_abs_err": self.ort_max_abs_err,
            "float_vs_onnxruntime_max_abs_err": self.float_vs_ort_max_abs_err,
            "top1_agreement": None if self.top1_rows is None else self.top1_agree / max(self.top1_rows, 1),
            "top1_agree": self.top1_agree,
            "top1_rows": self.top1_rows,
            "top1_against": self.top1_against,
        }


@dataclass
class CheckReport:
    model: str
    samples: int
    calibration: str | None
    act_pents: int
    per_tensor: bool
    layers: list[LayerRow]
    outputs: list[OutputRow]
    per_layer_sim: bool  # the simulator was compared layer by layer (else on the final outputs only)
    onnxruntime: str  # "ran", "not an ONNX model", or why it did not run
    notes: list[str] = field(default_factory=list)

    # -- summary
    @property
    def worst(self) -> LayerRow | None:
        """The worst layer: the one whose quantization alone (the rest float) costs the output the most (the
        ablation), else, where the ablation did not run, the one with the lowest SQNR (inputs excluded)."""
        ranked = [r for r in self.layers if r.alone_rank is not None]
        if ranked:
            return min(ranked, key=lambda r: r.alone_rank)  # type: ignore[arg-type, return-value]
        return self.worst_sqnr

    @property
    def worst_sqnr(self) -> LayerRow | None:
        """The layer with the lowest SQNR against the float graph (program inputs excluded)."""
        rows = [r for r in self.layers if not r.is_input and r.sqnr_db is not None]
        return min(rows, key=lambda r: r.sqnr_db, default=None)  # type: ignore[arg-type, return-value]

    @property
    def largest_drop(self) -> LayerRow | None:
        """The layer that loses the most SQNR relative to its inputs."""
        rows = [r for r in self.layers if not r.is_input and r.drop_db is not None]
        return max(rows, key=lambda r: r.drop_db, default=None)  # type: ignore[arg-type, return-value]

    @property
    def sim_exact(self) -> bool:
        """The simulator agreed with the pent reference everywhere it was compared."""
        return all(r.sim_exact is not False for r in self.layers) and all(o.sim_exact for o in self.outputs)

    def to_dict(self) -> dict[str, Any]:
        worst, drop = self.worst, self.largest_drop
        return {
            "model": self.model,
            "samples": self.samples,
            "calibration": self.calibration,
            "act_pents": self.act_pents,
            "per_tensor": self.per_tensor,
            "onnxruntime": self.onnxruntime,
            "per_layer_sim": self.per_layer_sim,
            "sim_bit_exact": self.sim_exact,
            "worst_layer": None if worst is None else worst.layer,
            "worst_sqnr_layer": None if self.worst_sqnr is None else self.worst_sqnr.layer,
            "largest_drop_layer": None if drop is None else drop.layer,
            "layers": [r.to_dict() for r in self.layers],
            "outputs": [o.to_dict() for o in self.outputs],
            "notes": self.notes,
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, allow_nan=False) + "\n"

    # -- the table
    def table(self, color: bool = False) -> str:
        def style(text: str, **kw: Any) -> str:
            if not color:
                return text
            import typer

            return typer.style(text, **kw)

        cal = f"calibration {self.calibration}" if self.calibration else "no calibration (random normal fallback)"
        weights = "per-tensor" if self.per_tensor else "per-channel"
        out = [
            f"pcc check {self.model}: {self.samples} sample{'s' if self.samples != 1 else ''}, {cal}, "
            f"{self.act_pents}-pent activations, {weights} weight scales",
            "",
            "layers: the pent reference against the float graph (SQNR, max |error|, the SQNR lost in the layer);",
            "sim: the simulator's buffer against the pent reference, bit for bit"
            + ("" if self.per_layer_sim else " (NOT compared per layer: see the notes; outputs only)"),
        ]
        worst, drop, low = self.worst, self.largest_drop, self.worst_sqnr
        ablation = any(r.alone_rank is not None for r in self.layers)
        w = min(max([len(r.layer) for r in self.layers] + [5]), 48)
        head = (
            f"{'#':>3}  {'layer':<{w}} {'op':<16} {'shape':<14} {'pents':>5} {'SQNR dB':>8} {'drop dB':>8} "
            + (f"{'alone dB':>8} " if ablation else "")
            + f"{'max|err|':>9} {'max|ref|':>9}  {'sim':<8}"
        )
        out += ["", head, "-" * len(head)]
        for r in self.layers:
            sim = "-" if r.sim_exact is None else ("exact" if r.sim_exact else f"DIFF {r.mismatches}")
            line = (
                f"{r.index:>3}  {_clip(r.layer, w):<{w}} {_clip(r.op, 16):<16} {_shape(r.shape):<14} {r.pents:>5} "
                f"{_db(r.sqnr_db):>8} {_db(r.drop_db):>8} "
                + (f"{_db(r.alone_db):>8} " if ablation else "")
                + f"{_e(r.max_abs_err):>9} {_e(r.max_abs_ref):>9}  {sim:<8}"
            )
            hits = (("worst layer", r is worst and ablation), ("worst SQNR", r is low), ("largest drop", r is drop))
            marks = [m for m, hit in hits if hit]
            if marks:
                line = style(line + " << " + ", ".join(marks), fg="red", bold=True)
            elif r.sim_exact is False:
                line = style(line, fg="red")
            out.append(line)
        out += ["", "outputs: the simulator's result against the pent reference, the float reference and onnxruntime"]
        head = (
            f"    {'output':<20} {'shape':<12} {'SQNR dB':>8} {'max|err|':>9}  {'sim':<8} {'ort SQNR':>8} "
            f"{'ort max|err|':>12} {'float-ort':>9}  top-1"
        )
        out += [head, "-" * len(head)]
        for o in self.outputs:
            sim = "exact" if o.sim_exact else f"DIFF {o.mismatches}"
            top1 = "-"
            if o.top1_rows:
                top1 = f"{o.top1_agree}/{o.top1_rows} ({100 * o.top1_agree / o.top1_rows:.0f}%) vs {o.top1_against}"
            line = (
                f"    {_clip(o.name, 20):<20} {_shape(o.shape):<12} {_db(o.sqnr_db):>8} {_e(o.max_abs_err):>9}  "
                f"{sim:<8} {_db(o.ort_sqnr_db):>8} {_e(o.ort_max_abs_err):>12} {_e(o.float_vs_ort_max_abs_err):>9}  "
                f"{top1}"
            )
            out.append(style(line, fg="red") if not o.sim_exact else line)
        out.append("")
        if worst is not None and ablation:
            out.append(
                f"worst layer: {worst.layer} (quantized alone, the rest float, the output SQNR is "
                f"{_db(worst.alone_db).strip()} dB: the largest output error of any layer)"
            )
        if low is not None:
            out.append(f"worst SQNR: {low.layer} ({_db(low.sqnr_db).strip()} dB against the float graph)")
        if drop is not None and drop.drop_db is not None:
            out.append(
                f"largest loss: {drop.layer} loses {_db(drop.drop_db).strip()} dB of SQNR relative to its inputs"
            )
        compared = [r for r in self.layers if r.sim_exact is not None]
        if self.sim_exact:
            where = f"{len(compared)} buffers and " if compared else ""
            out.append(f"simulator: bit-exact with the pent reference ({where}{len(self.outputs)} output(s))")
        else:
            bad = [r.layer for r in self.layers if r.sim_exact is False] + [
                o.name for o in self.outputs if not o.sim_exact
            ]
            out.append(
                style(f"simulator: DIFFERS from the pent reference at {', '.join(bad[:8])}", fg="red", bold=True)
            )
        if self.onnxruntime != "ran":
            out.append(f"onnxruntime: {self.onnxruntime}")
        out += [f"note: {n}" for n in self.notes]
        return "\n".join(line.rstrip() for line in out) + "\n"


def _clip(s: str, n: int) -> str:
    return s if len(s) <= n else s[: n // 2 - 1] + ".." + s[-(n - n // 2 - 1) :]


def _shape(shape: Sequence[int]) -> str:
    return "x".join(map(str, shape)) or "scalar"


def _db(x: float | None) -> str:
    if x is None:
        return "-"
    if math.isinf(x):
        return "inf" if x > 0 else "-inf"
    return f"{x:.1f}"


def _e(x: float | None) -> str:
    return "-" if x is None else f"{x:.2e}"
