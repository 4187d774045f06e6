"""The program boundary: real-valued tensors in and out of a program's declared inputs and outputs.

An input declared ``.input NAME, shape=[...], pents=N, scale=S, addr=A[, order=[...]]`` is quantised with the
same rule as ``pent.quantize`` (:func:`pcc.pent_reference.quantize_input`: ``sat_N(round(x / S))``, ties away from
zero), transposed by ``order`` and written one element per word at ``A``. An output is read back the same way
and dequantised (``element * S``, float32). With ``quantized=True`` the integers pass unchanged (int64).

Batches: where the declared first axis is 1, an array with B on that axis is B samples, run one after another.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

import numpy as np

from pcc.backend.program import IODecl, Program
from pcc.diagnostics import PccError
from pcc.pentary import word_max

if TYPE_CHECKING:
    from pcc.runtime.simulator import Simulator


def quantize(x: np.ndarray, decl: IODecl) -> np.ndarray:
    """Real values to the declared integers: the rule of ``pent.quantize`` (ties away from zero, saturating).

    Bit for bit :func:`pcc.pent_reference.quantize_input` (``clip(sign(v) * floor(|v| + 0.5))`` of ``v = x / S``
    in float64), with fewer passes: ``trunc(v + copysign(0.5, v))`` is that rounding (float rounding is symmetric,
    so ``v - 0.5`` is ``-(|v| + 0.5)`` for ``v < 0``; a zero stays a zero), and ``maximum`` / ``minimum`` are the
    clip for the finite values a checked input holds.
    """
    v = np.asarray(x, dtype=np.float64) / float(decl.scale)
    q = np.copysign(0.5, v)
    q += v
    np.trunc(q, out=q)
    m = float(word_max(decl.pents))
    np.maximum(q, -m, out=q)
    np.minimum(q, m, out=q)
    return q.astype(np.int64)


def dequantize(q: np.ndarray, decl: IODecl) -> np.ndarray:
    """Declared integers to real values, ``q * scale`` (float32, as a float runtime returns)."""
    return (np.asarray(q, dtype=np.float64) * decl.scale).astype(np.float32)


def _check_array(name: str, x: object, quantized: bool) -> np.ndarray:
    if not isinstance(x, np.ndarray):
        x = np.asarray(x)
    if x.dtype.kind not in "fiu":
        raise PccError(f"input '{name}' has dtype {x.dtype}; expected a real number array (float or integer)")
    if x.dtype.kind == "f" and not np.isfinite(x).all():
        bad = int(np.flatnonzero(~np.isfinite(x.reshape(-1)))[0])
        raise PccError(f"input '{name}' contains NaN or Inf (first at flat index {bad})")
    if quantized and x.dtype.kind == "f":
        if not np.all(x == np.round(x)):
            raise PccError(f"input '{name}' must hold integers with --quantized, got fractional values")
    return x


def _batch_of(decl: IODecl, x: np.ndarray) -> int | None:
    """None if ``x`` has exactly the declared shape, B if it is a batch of B samples, else a PccError."""
    shape = decl.shape
    if x.shape == shape:
        return None
    if shape and shape[0] == 1 and x.ndim == len(shape) and x.shape[1:] == shape[1:] and x.shape[0] >= 1:
        return x.shape[0]
    hint = f" or (B, {', '.join(map(str, shape[1:]))}) for a batch" if shape and shape[0] == 1 else ""
    raise PccError(f"input '{decl.name}' has shape {tuple(x.shape)}; the program declares {tuple(shape)}{hint}")


def prepare_inputs(
    program: Program, inputs: Mapping[str, np.ndarray], *, quantized: bool = False
) -> list[list[tuple[IODecl, np.ndarray]]]:
    """Check, quantise and lay out the inputs: per sample, (declaration, words to store at its address)."""
    declared = {d.name: d for d in program.inputs}
    unknown = [k for k in inputs if k not in declared]
    if unknown:
        names = ", ".join(declared) or "none"
        raise PccError(f"the program has no input named '{unknown[0]}' (its inputs: {names})")
    missing = [d.name for d in program.inputs if d.name not in inputs]
    if missing:
        raise PccError(f"missing input '{missing[0]}' (the program declares: {', '.join(declared)})")
    arrays: dict[str, np.ndarray] = {}
    sizes: dict[str, int] = {}
    for d in program.inputs:
        x = _check_array(d.name, inputs[d.name], quantized)
        b = _batch_of(d, x)
        if b is not None or (d.shape and d.shape[0] == 1):
            sizes[d.name] = x.shape[0]
        arrays[d.name] = x
    batches = {b for b in sizes.values() if b != 1}
    if len(batches) > 1:
        desc = ", ".join(f"'{k}': {v}" for k, v in sizes.items())
        raise PccError(f"the inputs have different batch sizes ({desc})")
    n = batches.pop() if batches else 1
    samples: list[list[tuple[IODecl, np.ndarray]]] = [[] for _ in range(n)]
    for d in program.inputs:
        x = arrays[d.name]
        if quantized:
            q = np.asarray(x, dtype=np.float64 if x.dtype.kind == "f" else np.int64).astype(np.int64)
            m = word_max(d.pents)
            if q.size and (int(q.max()) > m or int(q.min()) < -m):
                raise PccError(f"input '{d.name}' has integers outside the {d.pents}-pent range +-{m}")
        else:
            q = quantize(x, d)
        split = sizes.get(d.name, 1) > 1
        for s in range(n):
            qs = (q[s : s + 1] if split else q).reshape(d.shape)
            mem = qs if d.order is None else qs.transpose(d.order)
            samples[s].append((d, np.ascontiguousarray(mem, dtype=np.int64).reshape(-1)))
    return samples


def read_output(sim: Simulator, decl: IODecl, *, quantized: bool = False) -> np.ndarray:
    """One output after HALT, in its logical shape: dequantised (float32), or the integers (int64)."""
    words = sim.read_memory(decl.addr, decl.size).reshape(decl.memory_shape)
    if decl.order is not None:
        words = np.ascontiguousarray(words.transpose(np.argsort(decl.order)))
    return words if quantized else dequantize(words, decl)


def stack_outputs(program: Program, results: list[dict[str, np.ndarray]], *, batched: bool) -> dict[str, np.ndarray]:
    """Join per-sample outputs: concatenated on a declared batch axis of 1, else stacked on a new first axis."""
    if not batched:
        return results[0]
    out: dict[str, np.ndarray] = {}
    for d in program.outputs:
        parts = [r[d.name] for r in results]
        out[d.name] = np.concatenate(parts, axis=0) if d.shape and d.shape[0] == 1 else np.stack(parts)
    return out


__all__ = ["dequantize", "prepare_inputs", "quantize", "read_output", "stack_outputs"]
