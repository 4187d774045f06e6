"""Lowering of the pools (``nn.max_pool``, ``nn.avg_pool``, the global pools) to POOL, exact for every window
(registered in :data:`pcc.passes.quantize_lower.LOWERING`).

A pool whose window, strides and pads fit POOL's fields (window <= 312, strides and pads <= 12) is one
``pent.max_pool`` / ``pent.avg_pool``.  Any other one (the 14x14 windows at stride 14 of an adaptive average
pool to 2x2 of a 28-wide map, strides or pads above 12, windows that overlap irregularly) is decomposed
exactly, without changing what any output is:

1. per spatial axis, every output's window ``[start, end)`` in the input: ``start = i*s - pad``, clipped to the
   input, which is what POOL does with padding that never wins a maximum and is not counted in an average;
   an average that counts the padding (``count_include_pad``) pads the input with zeros first (a
   ``pent.gather``), so that its windows are whole and inside;
2. per distinct window size ``(kh, kw)`` among the outputs, one pool of that size without pads at per-axis
   strides ``g``, the largest ``g <= 12`` dividing the starts of that size's windows, so that each of them is
   one of the pool's outputs (``start / g``);
3. a ``pent.gather`` picking each output's window from those pools' results.

Every output is then ``div_round(sum, count)`` of its own window (the sum over its taps inside the input,
``count`` those taps, or ``kh*kw`` with ``count_include_pad``), or its maximum, exactly as one POOL would give
it: the decomposition adds no rounding.  Its cost is the windows the pools compute that no output takes
(a stride of 14 taken as 7: 9 windows computed for 4 used).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from pcc.dialects import nn, pent, pent_move
from pcc.ir import Operation, Value
from pcc.passes.quantize_lower import LOWERING, Lowering, _same_scale
from pcc.pentary import word_max

POOL_WINDOW = word_max(4)  # POOL's kh, kw fields (u4)
POOL_STEP = 12  # POOL's strides and pads fields (u2)


def fits_pool(kernel: list[int], strides: list[int], pads: list[int]) -> bool:
    """Whether one POOL instruction takes the window (its field ranges; the tile pass checks the rest)."""
    return max(kernel) <= POOL_WINDOW and max(strides) <= POOL_STEP and max(pads) <= POOL_STEP


def axis_windows(size: int, n_out: int, k: int, s: int, pad: int) -> list[tuple[int, int]]:
    """``[start, end)`` of each output's window along one axis, clipped to the input ``[0, size)``."""
    return [(max(0, i * s - pad), min(size, i * s - pad + k)) for i in range(n_out)]


def _stride_for(starts: list[int]) -> int:
    """The largest stride <= POOL_STEP whose multiples include every start."""
    return max(d for d in range(1, POOL_STEP + 1) if all(t % d == 0 for t in starts))


def _pool_value(lw: Lowering, op: Operation, cls: type[Operation], x: Value, s: float, attrs: dict, name: str) -> Value:
    n, c, h, w = x.type.shape
    (kh, kw), (sh, sw) = attrs["kernel_shape"], attrs["strides"]
    t = x.type.with_shape((n, c, (h - kh) // sh + 1, (w - kw) // sw + 1))
    return lw.emit(cls, [x], t, attrs, op.loc, name, s)


def _zero_padded(lw: Lowering, op: Operation, x: Value, s: float, pads: list[int], base: str) -> Value:
    """``x`` with ``pads = [top, left, bottom, right]`` zeros around its image (a ``pent.gather``)."""
    n, c, h, w = x.type.shape
    pt, pl, pb, pr = pads
    hp, wp = h + pt + pb, w + pl + pr
    src = np.arange(n * c * h * w, dtype=np.int64).reshape(n, c, h, w)
    idx = np.full((n, c, hp, wp), -1, dtype=np.int64)
    idx[:, :, pt : pt + h, pl : pl + w] = src
    mv = lw.m.add_weight(lw.m.fresh_weight_name(base + ".pad.map"), idx.ravel(), "p16")
    t = x.type.with_shape((n, c, hp, wp))
    return lw.emit(pent_move.Gather, [mv, x], t, {"shape": list(t.shape), "fill": 0}, op.loc, f"{base}.pad", s)


def decompose_pool(lw: Lowering, op: Operation, kernel: list[int], strides: list[int], pads: list[int]) -> None:
    """The exact decomposition of the module docstring; ``pads`` include the ceil-mode extra."""
    x, s = lw.q(op.operands[0], op)
    h, w = x.type.shape[2:]
    oh, ow = op.results[0].type.shape[2:]
    if isinstance(op, nn.AvgPool) and op.attr("count_include_pad") and any(pads):
        base = (op.loc.node if op.loc and op.loc.node else op.results[0].name) or "pool"
        x = _zero_padded(lw, op, x, s, pads, base)
        h, w = h + pads[0] + pads[2], w + pads[1] + pads[3]
        pads = [0, 0, 0, 0]
    wins = (axis_windows(h, oh, kernel[0], strides[0], pads[0]), axis_windows(w, ow, kernel[1], strides[1], pads[1]))
    pool_windows(lw, op, (x, s), wins)


def pool_windows(
    lw: Lowering, op: Operation, src: tuple[Value, float], wins: tuple[list[tuple[int, int]], list[tuple[int, int]]]
) -> None:
    """``op``'s result as the pool (max for a max pool, else average) of ``src`` over the windows ``wins``
    (per axis, each output's ``[start, end)`` inside the input): steps 2 and 3 of the module docstring."""
    x, s = src
    r = op.results[0]
    n, c = x.type.shape[:2]
    oh, ow = len(wins[0]), len(wins[1])
    base = (op.loc.node if op.loc and op.loc.node else r.name) or "pool"
    is_max = isinstance(op, nn.MaxPool | nn.GlobalMaxPool) or (
        isinstance(op, nn.AdaptivePool) and op.attr("kind") == "max"
    )
    cls = pent.MaxPool if is_max else pent.AvgPool
    sizes = [sorted({e - b for b, e in ax}) for ax in wins]
    if max(sizes[0][-1], sizes[1][-1]) > POOL_WINDOW:
        raise lw.error(op, f"a window of {sizes[0][-1]}x{sizes[1][-1]} exceeds POOL's {POOL_WINDOW}: no POOL form")
    pools: list[Value] = []
    where: dict[tuple[int, int], tuple[int, int, int, int, int]] = {}  # (kh, kw) -> offset, gh, gw, ph, pw
    offset = 0
    for kh in sizes[0]:
        for kw in sizes[1]:
            g = [_stride_for([b for b, e in ax if e - b == k]) for ax, k in zip(wins, (kh, kw), strict=True)]
            attrs: dict[str, Any] = {"kernel_shape": [kh, kw], "strides": g, "pads": [0, 0, 0, 0]}
            if cls is pent.AvgPool:
                attrs["count_include_pad"] = False
            y = _pool_value(lw, op, cls, x, s, attrs, f"{base}.{kh}x{kw}")
            where[(kh, kw)] = (offset, g[0], g[1], *y.type.shape[2:])
            offset += y.type.size
            pools.append(y)
    if len(pools) == 1 and pools[0].type.shape == r.type.shape:  # every output is the pool's at its place
        _, gh, gw, _, _ = where[(sizes[0][0], sizes[1][0])]
        if all(b == i * g for ax, g in zip(wins, (gh, gw), strict=True) for i, (b, _) in enumerate(ax)):
            lw.map[id(r)] = (pools[0], s)
            return
    idx = np.empty((n, c, oh, ow), dtype=np.int64)
    chans = np.arange(n * c, dtype=np.int64).reshape(n, c)
    for oy, (by, ey) in enumerate(wins[0]):
        for ox, (bx, ex) in enumerate(wins[1]):
            off, gh, gw, ph, pw = where[(ey - by, ex - bx)]
            idx[:, :, oy, ox] = off + (chans * ph + by // gh) * pw + bx // gw
    mv = lw.m.add_weight(lw.m.fresh_weight_name(base + ".map"), idx.ravel(), "p16")
    attrs = {"shape": list(r.type.shape), "fill": 0}
    y = lw.emit(pent_move.Gather, [mv, *pools], r.type.with_dtype(x.type.dtype), attrs, op.loc, r.name, s)
    lw.map[id(r)] = (y, s)


@LOWERING.register(nn.GlobalAvgPool, nn.GlobalMaxPool)
def lower_global_pool(lw: Lowering, op: Operation) -> None:
    """POOL with one window over the whole image."""
    if op.operands[0].type.rank != 4:
        raise lw.error(op, "only 2-D pooling is supported")
    h, w = op.operands[0].type.shape[2:]
    cls = pent.AvgPool if isinstance(op, nn.GlobalAvgPool) else pent.MaxPool
    _same_scale(lw, op, cls, {"kernel_shape": [h, w]})


@LOWERING.register(nn.AdaptivePool)
def lower_adaptive_pool(lw: Lowering, op: Operation) -> None:
    """torch's adaptive windows (overlapping where the output size does not divide the input's): the
    decomposition of the module docstring, one POOL when they are regular."""
    if op.operands[0].type.rank != 4:
        raise lw.error(op, "only 2-D pooling is supported")
    h, w = op.operands[0].type.shape[2:]
    oh, ow = op.attr("output_size")
    pool_windows(lw, op, lw.q(op.operands[0], op), (nn.adaptive_windows(h, oh), nn.adaptive_windows(w, ow)))


@LOWERING.register(nn.MaxPool, nn.AvgPool)
def lower_pool(lw: Lowering, op: Operation) -> None:
    """POOL; ceil mode becomes extra bottom/right padding (which never wins a max and is not counted in an
    average without ``count_include_pad``); a window POOL cannot take is decomposed (module docstring)."""
    xt, t = op.operands[0].type, op.results[0].type
    if xt.rank != 4:
        raise lw.error(op, "only 2-D pooling is supported")
    k = list(op.attr("kernel_shape"))
    strides = list(op.attr("strides") or [1, 1])
    pads = list(op.attr("pads") or [0, 0, 0, 0])
    dil = op.attr("dilations") if "dilations" in op.attrs else None
    if dil and any(d != 1 for d in dil):
        raise lw.error(op, "dilated pooling has no POOL form")
    for i in range(2):  # the extra end padding the floor formula needs to give the ceil-mode output size
        need = (t.shape[2 + i] - 1) * strides[i] + k[i] - (xt.shape[2 + i] + pads[i] + pads[i + 2])
        if need > 0:
            if isinstance(op, nn.AvgPool) and op.attr("count_include_pad"):
                raise lw.error(op, "ceil_mode with count_include_pad has no POOL form")
            pads[i + 2] += need
    if max(pads[0], pads[2]) >= k[0] or max(pads[1], pads[3]) >= k[1]:
        raise lw.error(op, f"pads {pads} must be smaller than the kernel {k}")
    if not fits_pool(k, strides, pads):
        return decompose_pool(lw, op, k, strides, pads)
    attrs: dict[str, Any] = {"kernel_shape": k, "strides": strides, "pads": pads}
    if isinstance(op, nn.AvgPool):
        attrs["count_include_pad"] = bool(op.attr("count_include_pad"))
        return _same_scale(lw, op, pent.AvgPool, attrs)
    return _same_scale(lw, op, pent.MaxPool, attrs)


__all__ = [
    "axis_windows",
    "decompose_pool",
    "fits_pool",
    "lower_adaptive_pool",
    "lower_global_pool",
    "lower_pool",
    "pool_windows",
]
