"""Lowering of the data-movement float ops to ``pent.gather`` (registered in
:data:`pcc.passes.quantize_lower.LOWERING`).

One mechanism for every op that only rearranges elements (concat, split, slice, transpose, pad in any mode,
nearest resize, expand, gather by constant indices, and depth-to-space and the like where the float dialect
has them): the op's own float kernel (:data:`pcc.interpreter.FLOAT_RULES`) runs twice on index arrays, input
``k``'s elements numbered after those of the inputs before it, once starting at 1 and once starting at
``1 + total``.  A result element that moved by ``total`` between the runs is the input element it names; one
that did not move is a constant fill (a pad value); anything else (an interpolation, an arithmetic op) is not
a rearrangement and is refused.  When the fixed elements hold more than one value, the float constant
inputs are numbered too (ViT's class token concatenated to the patch embeddings): they become weights of the
gather, quantized at the result's calibrated scale.  Inputs whose scale or pents differ from the result's are
rescaled first (``pent.add`` of the value with itself, the second multiplier 0: EADD).
"""

from __future__ import annotations

import numpy as np

from pcc.dialects import nn, pent, pent_move
from pcc.interpreter import FLOAT_RULES
from pcc.ir import Operation, Value
from pcc.passes.lower_elementwise import _claim
from pcc.passes.quantize_lower import Lowering, requant_params, round_away
from pcc.pentary import word_max

MOVE_OPS: tuple[type[Operation], ...] = tuple(
    c
    for c in (
        nn.Transpose, nn.Concat, nn.Split, nn.Slice, nn.Pad, nn.Expand, nn.Gather,
        *(getattr(nn, n, None) for n in (
            "DepthToSpace", "SpaceToDepth", "Tile", "ChannelShuffle", "Trilu", "GatherElements", "GatherND",
        )),
    )
    if c is not None
)  # fmt: skip


def _source(lw: Lowering, v: Value, consts: bool) -> bool:
    """Is ``v`` an input whose elements the index map numbers: an activation, or (``consts``) a float constant
    (a class token concatenated to the patches; integer constants are indices, shapes and pads)?"""
    return id(v) in lw.map or (consts and v.is_weight and v.type.is_float)


def index_maps(
    lw: Lowering, op: Operation, consts: bool = False
) -> tuple[list[Value], list[tuple[np.ndarray, float | None]]]:
    """The inputs of ``op`` that its results take elements from (the activations and, with ``consts``, the float
    constants) and, per result, its map (-1: fill) and the fill's real value."""
    if not any(id(v) in lw.map for v in op.operands):
        raise lw.error(op, "no activation operand")
    acts = [v for v in op.operands if _source(lw, v, consts)]
    total = sum(v.type.size for v in acts)
    if total + 1 >= 2**52:
        raise lw.error(op, "too many elements for an index map")

    def run(start: int) -> list[np.ndarray]:
        args, k = [], start
        for v in op.operands:
            if _source(lw, v, consts):
                args.append((np.arange(v.type.size, dtype=np.float64) + k).reshape(v.type.shape))
                k += v.type.size
            else:
                args.append(np.asarray(lw.const(op, v)))
        out = FLOAT_RULES.lookup(op)(op, *args)
        return [np.asarray(a, dtype=np.float64) for a in (out if isinstance(out, list | tuple) else [out])]

    maps = []
    for a1, a2 in zip(run(1), run(1 + total), strict=True):
        moved = a2 - a1 == total
        fixed = a1 == a2
        real = moved & (a1 == np.rint(a1)) & (a1 >= 1) & (a1 <= total)
        if not np.all(real | fixed):
            raise lw.error(op, "not a rearrangement of elements (an interpolating mode?): no pentary lowering")
        fills = np.unique(a1[fixed])
        if fills.size > 1 and not consts:
            return index_maps(lw, op, consts=True)
        if fills.size > 1:
            raise lw.error(op, f"more than one fill value ({fills[:4].tolist()})")
        idx = np.where(fixed, -1, a1 - 1).astype(np.int64).ravel()
        maps.append((idx, float(fills[0]) if fills.size else None))
    return acts, maps


def _rescaled(lw: Lowering, op: Operation, v: Value, pents: int, s_y: float) -> Value:
    """``v``'s pent value at ``pents`` pents and scale ``s_y`` (EADD of the value with itself, my = 0)."""
    q, s = lw.q(v, op)
    if q.type.pents == pents and s == s_y:
        return q
    (m,), (sh,) = requant_params(s / s_y)
    attrs = {"mult": [int(m), 0], "shift": [int(sh), 0]}
    name = f"{v.name or 'x'}.rescaled"
    return lw.emit(pent.Add, [q, q], q.type.with_dtype(f"p{pents}"), attrs, op.loc, name, s_y)


def _constant(lw: Lowering, op: Operation, v: Value, pents: int, s_y: float, base: str) -> Value:
    """A float constant input (a class token) as a ``p<pents>`` weight at the result's scale ``s_y``."""
    m = word_max(pents)
    q = np.clip(round_away(np.asarray(lw.const(op, v), np.float64) / s_y), -m, m).astype(np.int64)
    return lw.m.add_weight(lw.m.fresh_weight_name(base + ".const"), q.reshape(v.type.shape), f"p{pents}")


@_claim(*MOVE_OPS)  # and nearest nn.resize (passes/lower_resize.py)
def lower_move(lw: Lowering, op: Operation) -> None:
    """pent.gather per result, its map from the float kernel (see the module docstring)."""
    acts, maps = index_maps(lw, op)
    scales = {(lw.q(v, op)[0].type.pents, lw.q(v, op)[1]) for v in acts if id(v) in lw.map}
    if len(scales) == 1 and all(id(v) in lw.map for v in acts):
        pents, s_y = next(iter(scales))
    else:
        pents, s_y = lw.out_scale(op)
    base = (op.loc.node if op.loc and op.loc.node else op.results[0].name) or "move"
    xs = [_rescaled(lw, op, v, pents, s_y) if id(v) in lw.map else _constant(lw, op, v, pents, s_y, base) for v in acts]
    for r, (idx, fill) in zip(op.results, maps, strict=True):
        mv = lw.m.add_weight(lw.m.fresh_weight_name(base + ".map"), idx, "p16")
        q_fill = 0 if fill is None else int(np.clip(round_away(fill / s_y), -word_max(pents), word_max(pents)))
        attrs = {"shape": list(r.type.shape), "fill": q_fill}
        y = lw.emit(pent_move.Gather, [mv, *xs], r.type.with_dtype(f"p{pents}"), attrs, op.loc, r.name, s_y)
        lw.map[id(r)] = (y, s_y)
