"""Data movement in the ``pent`` dialect: ``pent.gather``, one op for every rearrangement of elements (concat,
split and slice, transpose and channel shuffle, pad in every mode, nearest resize, expand, gather by constant
indices, depth-to-space).

``y.flat[j] = cat.flat[map[j]]`` with ``cat`` the inputs' elements one after the other (each in its logical
row-major order) and ``fill`` where ``map[j] = -1`` (a constant pad).  ``quantize`` derives the map from the
float op's own kernel run on index arrays, so the rearrangement is exactly the float op's; the code generator
turns it into strided DMA blocks (TLOAD from any input or from the fill word, TSTORE).  The inputs share the
result's pents and scale (the lowering rescales those that differ).
"""

from __future__ import annotations

from pcc.dialects.pent import _SCALE, _check_scale, _pent_word, _pents_of
from pcc.ir import Operation, TensorType, VerifyError, attr, register_op

_LATE = {
    "addr": attr("int", doc="word offset of the result in the activation arena (plan-memory)"),
    "tile": attr("sizes", doc="tile sizes chosen by the tile pass"),
}


@register_op
class Gather(Operation):
    """``y.flat[j] = concat(x.flat for x in xs)[map[j]]``, ``fill`` where ``map[j] = -1``; ``map`` a 1-D
    ``p16`` weight of the result's size."""

    name = "pent.gather"
    operands_spec = ("map: p16", "xs*: pword")
    attrs = {"shape": attr("ints", doc="the result's shape"), "fill": attr("int", 0), **_SCALE, **_LATE}
    example = "%y = pent.gather(@m, %x) {shape = [1, 4]} : tensor<1x4xp8>"
    example_types = {"@m": "tensor<4xp16>", "%x": "tensor<1x4xp8>"}

    def verify_(self) -> None:
        _check_scale(self)
        p = _pents_of(self)
        mv, xs = self.operands[0], self.operands[1:]
        if not xs:
            raise VerifyError("gather needs at least one input")
        for x in xs:
            if _pent_word(x.type, "input") != p:
                raise VerifyError(f"inputs must have the result's element type {self.results[0].type.dtype}")
        if not mv.is_weight or mv.type.rank != 1 or mv.type.size != self.results[0].type.size:
            raise VerifyError(f"the map must be a 1-D weight of the result's size, got {mv.type}")
        m = 5**p // 2
        if not -m <= self.attr("fill") <= m:
            raise VerifyError(f"fill {self.attr('fill')} outside the result's range -{m}..{m}")

    def infer_types(self) -> list[TensorType]:
        return [TensorType(tuple(self.attr("shape")), self.results[0].type.dtype)]


@register_op
class Embed(Operation):
    """Embedding lookup: ``y[..., :] = table[clip(ids[...], 0, V - 1), :]`` for run-time integer ``ids`` (scale 1)
    and a constant ``table`` ``[V, D]`` of the result's element type.  Per token the code loads its id into a
    register, clamps it, multiplies it by D and TLOADs the row from ``[Pr + table]``."""

    name = "pent.embed"
    operands_spec = ("ids: pword", "table: pword")
    attrs = {**_SCALE, **_LATE}
    example = "%y = pent.embed(%ids, @t) : tensor<1x3x4xp8>"
    example_types = {"%ids": "tensor<1x3xp8>", "@t": "tensor<10x4xp8>"}

    def verify_(self) -> None:
        _check_scale(self)
        _pent_word(self.operands[0].type, "ids")
        p = _pents_of(self)
        t = self.operands[1]
        if not t.is_weight or t.type.rank != 2 or _pent_word(t.type, "table") != p:
            raise VerifyError(f"the table must be a 2-D weight [V, D] of the result's element type, got {t.type}")

    def infer_types(self) -> list[TensorType]:
        ids, t = self.operands[0].type, self.operands[1].type
        return [TensorType((*ids.shape, t.shape[1]), self.results[0].type.dtype)]


__all__ = ["Embed", "Gather"]
