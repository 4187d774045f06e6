"""The quantizer's report (``quantize{report=true}``): the SQNR of every quantized value against the float value it
stands for, on the first calibration sample, so that a loss of accuracy can be traced to its layer."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import TextIO

import numpy as np

from pcc.ir import Module, Operation, Value


def sqnr_db(ref: np.ndarray, test: np.ndarray) -> float:
    """Signal-to-quantization-noise ratio of ``test`` against ``ref`` in dB (inf when equal)."""
    ref = np.asarray(ref, dtype=np.float64)
    noise = float(np.sum((ref - np.asarray(test, dtype=np.float64)) ** 2))
    signal = float(np.sum(ref**2))
    if noise == 0:
        return math.inf
    return 10 * math.log10(max(signal, 1e-300) / noise)


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


def print_report(
    module: Module,
    mapping: Mapping[int, tuple[Value, float]],
    float_values: Mapping[int, np.ndarray],
    inputs: Mapping[str, np.ndarray],
    out: TextIO,
) -> None:
    """Print one row per quantized value: its node, op, pents and SQNR against the float graph."""
    rows = layer_sqnr(module, mapping, float_values, inputs)
    print("quantize: SQNR of each value vs the float graph (first calibration sample)", file=out)
    print(f"  {'value':<28} {'op':<16} {'pents':>5} {'SQNR dB':>8}", file=out)
    seen = set()
    for v, db in rows:
        if id(v) in seen:
            continue
        seen.add(id(v))
        name = (v.owner.loc.node if v.owner is not None and v.owner.loc and v.owner.loc.node else v.name) or "?"
        print(f"  {name[:28]:<28} {v.owner.name if v.owner else '':<16} {v.type.pents:>5} {db:>8.1f}", file=out)
