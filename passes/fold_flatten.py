"""``fold-flatten``: flatten an image for a gemm in its channels-last memory order, with the gemm's weight columns
permuted to match, so that the flatten is a plain copy instead of a transposing gather.

Activations are stored channels-last (docs/compiler.md), so ``pent.reshape`` of a ``[N, C, H, W]`` image to
``[N, C*H*W]`` in the logical (NCHW) order gathers every element with a strided load: for the digits CNN's
32x2x2 image, 32 TLOADs and about a third of the program's cycles. The product ``y = flatten(x) @ W.T`` is the
same with both sides permuted alike, so where the flattened value's only use is a gemm's input:

- the reshape gets ``perm = [0, 2, 3, 1]`` (its elements are those of ``x.transpose(0, 2, 3, 1)``, which is the
  memory order: one contiguous copy);
- the gemm's weight ``[N_out, C*H*W]`` is replaced by its columns in the same order
  (``W.reshape(N_out, C, H, W).transpose(0, 2, 3, 1).reshape(N_out, -1)``).

The gemm's results are unchanged bit for bit (the ``pent`` reference and the tests check it); only the
intermediate flattened value changes order. Runs after ``quantize`` on the ``pent`` graph (the weights are pents
then) and before ``plan-memory`` and ``tile``.
"""

from __future__ import annotations

from dataclasses import dataclass

from pcc.dialects import pent
from pcc.ir import Graph, Module, Operation
from pcc.pass_manager import Pass, register_pass
from pcc.passes.rewrite import Pattern, apply_patterns, replace_op, sole_user

CHANNELS_LAST = (0, 2, 3, 1)


def _gemm_of(g: Graph, op: Operation) -> Operation | None:
    """The gemm that is the only user of ``op``'s result, as its input; None otherwise."""
    r = op.results[0]
    user = sole_user(r)
    if not isinstance(user, pent.Gemm) or user.operands[0] is not r or r in user.operands[1:]:
        return None
    return user


def fold_flatten(module: Module, g: Graph, op: Operation) -> bool:
    """Rewrite one ``reshape [N, C, H, W] -> [N, C*H*W]`` feeding a gemm (see the module docstring)."""
    if op.attr("perm") is not None:
        return False
    x = op.operands[0].type
    shape = tuple(op.attr("shape"))
    if x.rank != 4 or shape != (x.shape[0], x.shape[1] * x.shape[2] * x.shape[3]):
        return False
    n, c, h, w = x.shape
    if c == 1 or h * w == 1:  # the two orders coincide: nothing to gain
        return False
    gemm = _gemm_of(g, op)
    if gemm is None:
        return False
    wv = gemm.operands[1]
    if wv.kind != "weight":
        return False
    data = module.weight(wv)
    permuted = data.reshape(data.shape[0], c, h, w).transpose(CHANNELS_LAST).reshape(data.shape[0], -1)
    nv = module.add_weight((wv.name or "w") + ".hwc", permuted, wv.type.dtype)
    operands = list(gemm.operands)
    operands[1] = nv
    gemm.operands = operands
    for k in ("addr", "tile"):
        gemm.attributes.pop(k, None)
    attrs = {k: v for k, v in op.attributes.items() if k not in ("addr", "tile")}
    attrs["perm"] = list(CHANNELS_LAST)
    replace_op(g, op, pent.Reshape(list(op.operands), [op.results[0].type], attrs, op.loc))
    if not wv.uses:  # the old weight, now unused
        name = wv.name or ""
        del module.weights[name]
        module.weight_data.pop(name, None)
        module.weight_locs.pop(name, None)
    return True


class FoldFlattenPattern(Pattern):
    roots = (pent.Reshape,)

    def apply(self, module: Module, g: Graph, op: Operation) -> bool:
        return fold_flatten(module, g, op)


@register_pass
@dataclass(frozen=True)
class FoldFlatten(Pass):
    """Flatten images for gemms in their channels-last memory order; the gemm weights' columns follow (exact)."""

    name = "fold-flatten"

    def run(self, module: Module) -> bool:
        return apply_patterns(module, [FoldFlattenPattern()])
