"""The program boundary: real-valued tensors in and out of a program's declared inputs and outputs.

An input declared ``.input NAME, shape=[...], pents=N, scale=S, addr=A[, order=[...]]`` is quantised with the
same rule as ``pent.quantize`` (:func:`pcc.pent_reference.quantize_input`: ``sat_N(round(x / S))``, ties away from
zero), transposed by ``order`` and written one element per word at ``A``. An output is read back the same way
and dequantised (``element * S``, float32). With ``quantized=True`` the integers pass unchanged (int64).

Batches: where the declared first axis is 1, an array with B on that axis is B samples, run one after another.

``run_program``'s common case, one sample of real arrays of exactly the declared shapes, takes
:func:`write_inputs` (quantised straight into main memory in its axis order) and :func:`read_output` reads
each output with one dequantising pass over a view of memory kept per simulator; the values are the same.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import TYPE_CHECKING

import numpy as np

from pcc.backend.program import IODecl, Program
from pcc.diagnostics import PccError
from pcc.pentary import word_max
from pcc.runtime import kernels

if TYPE_CHECKING:
    from pcc.runtime.simulator import Simulator


def quantize(x: np.ndarray, decl: IODecl) -> np.ndarray:
    """Real values to the declared integers: the rule of ``pent.quantize`` (ties away from zero, saturating).

    Bit for bit :func:`pcc.pent_reference.quantize_input` (``clip(sign(v) * floor(|v| + 0.5))`` of ``v = x / S``
    in float64), with fewer passes: ``trunc(v + copysign(0.5, v))`` is that rounding (float rounding is symmetric,
    so ``v - 0.5`` is ``-(|v| + 0.5)`` for ``v < 0``; a zero stays a zero), and ``maximum`` / ``minimum`` are the
    clip for the finite values a checked input holds.
    """
    return _rounded(x, decl.scale, float(word_max(decl.pents))).astype(np.int64)


def _rounded(x: np.ndarray, scale: float, m: float) -> np.ndarray:
    """:func:`quantize`'s values as integral float64 (``x`` as float64, divided by ``scale``, rounded, clipped)."""
    v = np.asarray(x, dtype=np.float64) / float(scale)
    q = np.copysign(0.5, v)
    q += v
    np.trunc(q, out=q)
    np.maximum(q, -m, out=q)
    np.minimum(q, m, out=q)
    return q


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


def _layout(sim: Simulator, decl: IODecl) -> tuple | None:
    """``(decl, memory view in the logical axis order, float bound word_max(pents))`` of a declaration whose words
    fit main memory, kept per simulator (main memory is never reallocated); None where they do not fit."""
    ent = sim.io_layouts.get(id(decl))
    if ent is not None and ent[0] is decl:
        return ent
    n = decl.size
    if decl.addr < 0 or decl.addr + n > sim.mem.size:
        return None
    view = sim.mem[decl.addr : decl.addr + n].reshape(decl.memory_shape)
    order = tuple(range(len(decl.shape))) if decl.order is None else tuple(decl.order)
    if decl.order is not None:
        view = view.transpose(np.argsort(decl.order))
    # for the compiled quantisation loop: (outer, ch) where memory is the logical order with one axis k moved last
    # (outer = the size of the axes before it, ch = its size; 1 and 1 where no axis moves), and the word of each
    # element in the logical order for any other layout (ch = 0)
    outer, ch, index = 1, 1, np.zeros(0, dtype=np.int64)
    k = next((i for i, a in enumerate(order) if a != i), None)
    if k is not None:
        if order == (*range(k), *range(k + 1, len(order)), k):
            outer, ch = math.prod(decl.shape[:k]), decl.shape[k]
        else:
            ch = 0
            index = np.arange(decl.addr, decl.addr + n, dtype=np.int64).reshape(decl.memory_shape)
            index = np.ascontiguousarray(index.transpose(np.argsort(decl.order))).ravel()
    ent = (decl, view, float(word_max(decl.pents)), decl.addr, decl.addr + n - 1, (outer, ch, index))
    sim.io_layouts[id(decl)] = ent
    return ent


def write_inputs(sim: Simulator, program: Program, inputs: Mapping[str, np.ndarray]) -> bool:
    """:func:`prepare_inputs`, :meth:`Simulator.reset` and the stores, in fewer steps, for the common case.

    Taken when every declared input is given (and nothing else) as a real-valued array of exactly its declared
    shape (one sample) whose words fit main memory: each is checked as :func:`prepare_inputs` checks it, quantised
    as :func:`quantize` does (the same float64 operations), the simulator is reset, and the rounded values are
    converted to int64 straight into main memory in its axis order (with the compiled loops, one loop per input
    does the check, the quantisation and the store). Returns False otherwise, having done nothing but perhaps
    reset the simulator (when a check fails: the general path then reports it).
    """
    decls = program.inputs
    if len(inputs) != len(decls):
        return False
    staged = []
    # with the compiled loops, one loop checks, quantises and stores each input
    kern = kernels.loop("quantize_into") if sim.fused else None
    for d in decls:
        x = inputs.get(d.name)
        if type(x) is not np.ndarray or x.shape != d.shape or x.dtype.kind not in "fiu":
            return False
        if kern is None and x.dtype.kind == "f" and not np.isfinite(x).all():
            return False
        ent = _layout(sim, d)
        if ent is None:
            return False
        staged.append((ent, x))
    if len(decls) > 1 and len({d.name for d in decls}) != len(decls):
        return False
    sim.reset(lazy=True)  # run_program runs from PC 0 next
    for (d, view, m, lo, hi, index), x in staged:
        if kern is not None:
            buf = sim.workspace.get("boundary", (x.size,), np.float64)
            outer, ch, words = index
            if kern(x.reshape(-1), float(d.scale), m, sim.mem, lo, outer, ch, words, buf) < 0:
                sim.settle()  # the lazy reset's words cleared: the general path reports it (a NaN or an infinity)
                return False
        else:
            np.copyto(view, _rounded(x, d.scale, m), casting="unsafe")  # integral values within +-m: exact as int64
        if hi >= lo:
            sim.touch(lo, hi)
    return True


def read_output(sim: Simulator, decl: IODecl, *, quantized: bool = False) -> np.ndarray:
    """One output after HALT, in its logical shape: dequantised (float32), or the integers (int64)."""
    if not quantized:
        ent = _layout(sim, decl)
        if ent is not None:  # dequantize in one pass from memory: int64 -> float64, times the scale, float32
            out = np.empty(decl.shape, dtype=np.float32)
            np.multiply(ent[1], decl.scale, out=out, dtype=np.float64, casting="unsafe")
            return out
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


__all__ = ["dequantize", "prepare_inputs", "quantize", "read_output", "stack_outputs", "write_inputs"]
