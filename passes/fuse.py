"""``fuse``: merge ``pent`` ops that the ISA runs as one instruction sequence, keeping every bit of the result.

Rewrites (patterns of the one rewrite driver, repeated until none applies):

- ``conv2d|gemm|add`` (no activation yet) -> ``relu`` / ``clamp``: the activation becomes the op's ``act``
  (TRELU / TCLAMP on the requantized tile while it is still in scratchpad A);
- ``conv2d|gemm`` (no activation, no residual) -> ``add(that, other)``: the add becomes the op's residual
  (EADD on the tile before it is stored), the op's own requantization becomes the intermediate of
  ``mid_pents`` pents and the add's multipliers and activation move onto the op;
- ``conv2d|gemm`` (no activation, no residual) -> ``lut``: the table activation becomes the op's ``act = "lut"``
  (EADD's index rescale and TLUT on the tile, the table held at the top of scratchpad A, before the tile is
  stored): the op's own requantization becomes the intermediate of ``mid_pents`` pents at ``mid_scale``, and the
  table, its first index and the index rescale move onto the op.  SiLU, hard-swish and sigmoid after a
  convolution then cost no store and reload of the whole tensor between them.

The producer's result must have that one use and must not be a program output.  The fused op computes exactly
what the sequence computed (the ``pent`` reference and the test check it bit for bit); what it saves is a
store and a reload of the intermediate tensor and its arena buffer.  Bias fusion happens earlier, in the float
graph (``canonicalize`` folds a constant add into the conv/gemm bias, ``fold-batchnorm`` folds batch norms),
and the quantizer already gives a requantizing op the scale of the activation that follows it.
"""

from __future__ import annotations

from dataclasses import dataclass

from pcc.dialects import pent
from pcc.ir import Graph, Module, Operation
from pcc.pass_manager import Pass, register_pass
from pcc.passes.rewrite import Pattern, apply_patterns, replace_pair, sole_user


def _clone(op: Operation, operands: list, attrs: dict, result_type, loc, user: Operation) -> Operation:  # noqa: ANN001
    """The fused op: it computes ``user``'s value, so it takes ``user``'s scale."""
    attrs = {k: v for k, v in attrs.items() if k != "scale"}
    if user.attributes.get("scale") is not None:
        attrs["scale"] = user.attributes["scale"]
    return type(op)(operands, [result_type], attrs, loc)


def fuse_activation(g: Graph, op: Operation) -> bool:
    if op.attr("act") != "none":
        return False
    user = sole_user(op.results[0])
    if not isinstance(user, pent.Relu | pent.Clamp):
        return False
    attrs = dict(op.attributes)
    if isinstance(user, pent.Relu):
        attrs["act"] = "relu"
    else:
        attrs.update(act="clamp", lo=user.attr("lo"), hi=user.attr("hi"))
    attrs.pop("addr", None)
    attrs.pop("tile", None)
    new = _clone(op, list(op.operands), attrs, user.results[0].type, op.loc, user)
    replace_pair(g, op, user, new)
    return True


def fuse_residual(g: Graph, op: Operation) -> bool:
    if op.attr("act") != "none" or len(op.operands) > 5:
        return False
    user = sole_user(op.results[0])
    if not isinstance(user, pent.Add):
        return False
    a, b = user.operands
    r = op.results[0]
    if a is b:
        return False
    i = 0 if a is r else 1
    other = b if i == 0 else a
    mult, shift = user.attr("mult"), user.attr("shift")
    attrs = {k: v for k, v in op.attributes.items() if k not in ("addr", "tile")}
    attrs.update(
        res_mult=[mult[i], mult[1 - i]],
        res_shift=[shift[i], shift[1 - i]],
        mid_pents=r.type.pents,
        act=user.attr("act"),
    )
    for k in ("lo", "hi"):
        if user.attributes.get(k) is not None:
            attrs[k] = user.attributes[k]
    new = _clone(op, [*op.operands, other], attrs, user.results[0].type, op.loc, user)
    replace_pair(g, op, user, new)
    return True


def fuse_table(g: Graph, module: Module, op: Operation) -> bool:
    if op.attr("act") != "none" or len(op.operands) > 5:
        return False
    user = sole_user(op.results[0])
    if not isinstance(user, pent.Lut) or user.operands[0] is not op.results[0]:
        return False
    r = op.results[0]
    if r.type.pents is None or op.attributes.get("scale") is None:
        return False
    attrs = {k: v for k, v in op.attributes.items() if k not in ("addr", "tile")}
    attrs.update(
        act="lut",
        table=[int(t) for t in module.weight(user.operands[1]).reshape(-1)],
        table_lo=user.attr("lo"),
        mid_pents=r.type.pents,
        mid_scale=op.attr("scale"),
    )
    if user.attr("mult") is not None:
        attrs.update(index_mult=user.attr("mult"), index_shift=user.attr("shift"))
    new = _clone(op, list(op.operands), attrs, user.results[0].type, op.loc, user)
    replace_pair(g, op, user, new)
    return True


class FuseTable(Pattern):
    roots = pent.REQUANT_OPS

    def apply(self, module: Module, g: Graph, op: Operation) -> bool:
        return fuse_table(g, module, op)


class FuseResidual(Pattern):
    roots = pent.REQUANT_OPS

    def apply(self, module: Module, g: Graph, op: Operation) -> bool:
        return fuse_residual(g, op)


class FuseActivation(Pattern):
    roots = pent.ACT_OPS

    def apply(self, module: Module, g: Graph, op: Operation) -> bool:
        return fuse_activation(g, op)


@register_pass
@dataclass(frozen=True)
class Fuse(Pass):
    """Fuse pent conv/gemm/add with a following activation, conv/gemm with a residual add, and conv/gemm with a
    table activation (exact)."""

    name = "fuse"
    residual: bool = True  # fuse conv/gemm + add
    activation: bool = True  # fuse op + relu/clamp
    table: bool = True  # fuse conv/gemm + lut

    def run(self, module: Module) -> bool:
        chosen = ((FuseResidual(), self.residual), (FuseActivation(), self.activation), (FuseTable(), self.table))
        changed = apply_patterns(module, [p for p, on in chosen if on])
        if changed:
            module.remove_unused_weights()  # the tables of the fused luts
        return changed
