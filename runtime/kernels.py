"""The simulator's compiled loops (numba, when it is installed): whole small tensor instructions, straight-line runs
of them, and the elementwise work of large ones.

Per instruction, numpy costs a dozen calls of a few microseconds each, which is most of a small instruction's time,
and one pass over the data per operation (REQUANTC took nine: the operands' minimum and maximum, the multiply, the
rounding terms, the shift, the result's minimum and maximum). These loops do a whole instruction in one call and
one pass: small CONV, MATMUL and MATVEC, depthwise CONV at any size, POOL, REQUANTC, TRELU/TCLAMP, TLOADW tiles
and the DMA instructions, and the run loop that executes a table of consecutive ones in a single call (all in
``runtime/kernels_run.py``); for the int8 engine's large products, operand extremes (here). EADD and EMUL are in
``runtime/kernels_vec.py``, TLUT and the
boundary's input quantisation in ``runtime/kernels_lut.py``, the int8 CONV's digit planes, digit patch matrix and
recombination of digit products and the float32 CONV's patch matrix and store in ``runtime/kernels_conv.py``; this
module compiles them all (:func:`loop`).

They compute exactly what the numpy code in ``runtime/tensor.py`` computes (the tests run both on the same
operands and programs and compare the machine states, and with Python integers). Where an operand is past what a
loop's arithmetic holds exactly, or an instruction must fault, the loop says so and the caller takes its numpy
path, which handles every operand and reports every fault.

numba is optional (the ``fast`` extra). :func:`available` imports it on first use; each loop is compiled on its
first call (``cache=True`` keeps the machine code on disk for later processes).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from pcc.runtime import kernels_conv, kernels_run, kernels_vec
from pcc.runtime.kernels_conv import (
    _digit_cols,
    _digit_planes,
    _digit_split,
    _f32_cols,
    _f32_image,
    _f32_store,
    _f32_store_bias,
    _f32_store_parts,
    _recombine,
)
from pcc.runtime.kernels_lut import _quantize_into, _tlut
from pcc.runtime.kernels_run import _clamp, _conv_small, _dot_small, _pool, _requantc, _tensor_run, _tloadw
from pcc.runtime.kernels_vec import _eadd, _eadd_io, _emul, _emul_io, _rescale_io, _rescale_lut

_state: dict[str, object] = {}


def available() -> bool:
    """Whether numba imports here (the loops are compiled on first use)."""
    if "ok" not in _state:
        try:
            import numba  # noqa: F401
        except ImportError:
            _state["ok"] = False
        else:
            _state["ok"] = True
    return bool(_state["ok"])


def _wide_vectors(numba: object) -> None:
    """Let LLVM use 512-bit vectors in the loops where the CPU has AVX-512 (its x86 models prefer 256 bits by
    default, and the requantisation and the depthwise CONV then run 10-30 % slower here): numba's code generator
    is one per process, so this is set once, before its first compile, and only where nothing chose otherwise
    (``NUMBA_CPU_NAME``/``NUMBA_CPU_FEATURES`` set, or numba compiled something before in this process). The
    width changes no result: the loops use no fast-math, so every operation rounds as written."""
    import os

    if "wide" in _state:
        return
    _state["wide"] = True
    config = numba.config  # type: ignore[attr-defined]
    if os.environ.get("NUMBA_CPU_NAME") or os.environ.get("NUMBA_CPU_FEATURES") or config.CPU_FEATURES is not None:
        return
    from numba.core.registry import cpu_target

    if "_toplevel_target_context" in vars(cpu_target):  # the code generator exists: its features are fixed
        return
    import llvmlite.binding as ll

    features = ll.get_host_cpu_features().flatten()
    if "+avx512f" in features.split(","):
        config.CPU_FEATURES = features + ",-prefer-256-bit"


def _jit(fn: Callable) -> Callable:
    import numba

    _wide_vectors(numba)
    try:
        return numba.njit(cache=True, nogil=True, boundscheck=False)(fn)
    except RuntimeError:  # no writable cache location (a read-only install): compile in each process
        return numba.njit(nogil=True, boundscheck=False)(fn)


def _get(name: str) -> Callable:
    fn = _state.get(name)
    if fn is None:
        if "helpers" not in _state:  # the loops' helpers, compiled in the module where the loops call them
            kernels_conv._digit_split = _jit(kernels_conv._digit_split)  # _digit_cols's helper
            kernels_conv._margins = _jit(kernels_conv._margins)  # the float32 images' helper
            kernels_conv._within62 = _jit(kernels_conv._within62)  # the float32 stores' helper
            for mod in (kernels_run, kernels_vec):
                for h in mod._HELPERS:
                    setattr(mod, h, _jit(getattr(mod, h)))
            _state["helpers"] = True
        fn = _state[name] = _jit(_PY[name])
    return fn  # type: ignore[return-value]


# ---- the loops, as plain Python (numba compiles them) ---------------------------------------------------------


def _extremes(x):  # noqa: ANN001, ANN202
    # (min, max) of a flat array in one pass
    lo = x[0]
    hi = x[0]
    for i in range(x.shape[0]):
        v = x[i]
        lo = min(lo, v)
        hi = max(hi, v)
    return lo, hi


_PY = {
    "eadd": _eadd,  # runtime/kernels_vec.py
    "eadd_io": _eadd_io,
    "emul": _emul,
    "emul_io": _emul_io,
    "rescale_io": _rescale_io,
    "rescale_lut": _rescale_lut,
    "recombine": _recombine,
    "digit_planes": _digit_planes,
    "digit_cols": _digit_cols,
    "digit_split": _digit_split,
    "extremes": _extremes,
    "conv_small": _conv_small,
    "dot_small": _dot_small,
    "pool": _pool,
    "requantc": _requantc,
    "clamp": _clamp,
    "tloadw": _tloadw,
    "quantize_into": _quantize_into,  # runtime/kernels_lut.py
    "tlut": _tlut,
    "f32_cols": _f32_cols,  # runtime/kernels_conv.py
    "f32_store": _f32_store,
    "f32_store_bias": _f32_store_bias,
    "f32_image": _f32_image,
    "f32_store_parts": _f32_store_parts,
    "tensor_run": _tensor_run,
}


# ---- entry points ---------------------------------------------------------------------------------------------


def loop(name: str) -> Callable:
    """The compiled whole-instruction loop ``name`` (a key of ``_PY``: ``conv_small``, ``tlut``, ``rescale_lut``,
    ...), for a closure to call directly: their arguments are the scratchpad arrays and integers, so each compiles
    once."""
    return _get(name)


def eadd(x: np.ndarray, y: np.ndarray, px: tuple[int, ...], py: tuple[int, ...], cap: int, out: np.ndarray) -> int:
    """EADD's rescale-and-add of ``x`` and ``y`` into ``out`` (``p* = (multiplier, shift, 2**(shift-1), limit)``):
    1 if it clipped, 0 if not, -1 if an operand exceeds its limit (nothing usable was written)."""
    from pcc.isa import ACC_MAX

    inplace = bool(np.may_share_memory(out, x) or np.may_share_memory(out, y))
    return int(_get("eadd")(x, y, *px, *py, ACC_MAX, cap, out, inplace))


def emul(x: np.ndarray, y: np.ndarray, mult: int, shift: int, cap: int, out: np.ndarray) -> int:
    """EMUL's saturated product, rescaled and clipped to ``+-cap``, of ``x`` and ``y`` into ``out``: 1 if it
    clipped, 0 if not (the same integers as :func:`pcc.isa.emul`)."""
    from pcc.isa import ACC_MAX

    return int(_get("emul")(x, y, mult, shift, ACC_MAX, cap, out))


def recombine(r: np.ndarray, out: np.ndarray, add: bool) -> None:
    """``out (+)= sum_d r[d] * 256**d`` for digit products ``r`` (int32, digit first, C-contiguous), in int64
    (``out``: C-contiguous, ``r[0]``'s shape)."""
    if not (out.flags.c_contiguous and r.flags.c_contiguous):
        raise ValueError("recombine needs C-contiguous arrays (a reshaped copy would lose the result)")
    _get("recombine")(r.reshape(r.shape[0], -1), out.reshape(-1), add)


def digit_planes(x: np.ndarray, off: int, nd: int, d: np.ndarray, top: int, left: int) -> None:
    """The nd balanced base-256 digits of the HWC image ``x`` into ``d[j, top:top+ih, left:left+iw]``."""
    _get("digit_planes")(x, off, nd, d, top, left)


def digit_cols(
    x: np.ndarray, off: int, nd: int, geometry: tuple[int, ...], planes: np.ndarray, cols: np.ndarray
) -> None:
    """The nd balanced base-256 digit planes of a single-group CONV's patch matrix, ``cols`` (int8, ``[nd, p,
    kh * kw * ic]``), from the HWC input ``x`` (``[ih, iw, ic]``), through ``planes`` (int8, ``[nd, ih + pt + pb,
    iw + pl + pr, ic]``); ``geometry`` = (ih, iw, ic, kh, kw, sh, sw, pt, pl, oh, ow)."""
    _get("digit_cols")(x, off, nd, *geometry, planes, cols)


def digit_split(x: np.ndarray, off: int, nd: int, d: np.ndarray) -> None:
    """``d[j, t]`` (int8, ``[nd, x.size]``) = balanced base-256 digit ``j`` of ``x.flat[t]``."""
    _get("digit_split")(x.reshape(-1), off, nd, d)


def extremes(x: np.ndarray) -> tuple[int, int]:
    """``(x.min(), x.max())`` of a non-empty array, in one pass."""
    lo, hi = _get("extremes")(x.reshape(-1))
    return int(lo), int(hi)


__all__ = ["available", "digit_cols", "digit_planes", "digit_split", "eadd", "emul", "extremes", "loop", "recombine"]
