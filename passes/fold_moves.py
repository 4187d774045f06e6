"""``fold-moves``: a chain of data movement (``pent.gather`` / ``pent.reshape``) whose intermediate result is read
only by the next op of the chain becomes one ``pent.gather`` (one copy instead of several).

A transformer's heads split (``reshape`` then ``transpose``), the rows a softmax or a batched product needs and
the merge back are each a rearrangement; composed, they are one.  With ``C`` a gather over the concatenation
``cat = x_0, x_1, ...`` and ``x_i`` the result of a gather or reshape ``P`` used only by ``C``, the elements of
``x_i`` in ``C``'s map are replaced by the entries of ``P``'s map (a reshape's map: ``arange`` in its logical
order, transposed by its ``perm``) and ``P``'s inputs take ``x_i``'s place.  Exact: every result element is
still the same input element.  Runs after ``quantize`` (and ``fold-flatten``, whose reshapes feed gemms).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pcc.dialects import pent, pent_move
from pcc.ir import Graph, Module, Operation
from pcc.pass_manager import Pass, register_pass
from pcc.passes.rewrite import Pattern, apply_patterns, replace_op, sole_user

_MOVES = (pent.Reshape, pent_move.Gather)


def move_map(module: Module, op: Operation) -> tuple[np.ndarray, list, int]:
    """``(map, inputs, fill)`` of a gather, or of a reshape read as one."""
    if isinstance(op, pent_move.Gather):
        return np.asarray(module.weight(op.operands[0]), np.int64).reshape(-1), list(op.operands[1:]), op.attr("fill")
    x = op.operands[0].type
    idx = np.arange(x.size, dtype=np.int64).reshape(x.shape)
    perm = op.attr("perm")
    return (idx if perm is None else idx.transpose(perm)).reshape(-1), [op.operands[0]], 0


class MergeMoves(Pattern):
    roots = _MOVES

    def __init__(self) -> None:
        self.replaced: set[str] = set()  # the maps of merged gathers (unused weights afterwards)

    def apply(self, module: Module, g: Graph, op: Operation) -> bool:
        xs = list(op.operands[1:] if isinstance(op, pent_move.Gather) else op.operands[:1])
        cmap = fill = None  # the map is built only when some input can be merged
        for i, x in enumerate(xs):
            prod = x.owner
            if not isinstance(prod, _MOVES) or sole_user(x) is not op or xs.count(x) != 1:
                continue
            if cmap is None:
                cmap, xs, fill = move_map(module, op)
            pmap, pxs, pfill = move_map(module, prod)
            off = sum(v.type.size for v in xs[:i])
            size = x.type.size
            inside = (cmap >= off) & (cmap < off + size)
            sub = pmap[np.where(inside, cmap - off, 0)]
            p_fill_read, c_fill_read = bool((inside & (sub < 0)).any()), bool((cmap < 0).any())
            if p_fill_read and c_fill_read and pfill != fill:
                continue
            new = cmap.copy()
            new[inside] = np.where(sub[inside] < 0, -1, sub[inside] + off)
            new[cmap >= off + size] += sum(v.type.size for v in pxs) - size
            for o in (op, prod):
                if isinstance(o, pent_move.Gather):
                    self.replaced.add(o.operands[0].name or "")
            mv = module.add_weight(module.fresh_weight_name((op.results[0].name or "move") + ".map"), new, "p16")
            attrs = {k: v for k, v in op.attributes.items() if k not in ("addr", "tile", "perm")}
            attrs.update(shape=list(op.results[0].type.shape), fill=int(pfill if p_fill_read else fill))
            operands = [mv, *xs[:i], *pxs, *xs[i + 1 :]]
            replace_op(g, op, pent_move.Gather(operands, [op.results[0].type], attrs, op.loc))
            g.erase(prod)
            return True
        return False


@register_pass
@dataclass(frozen=True)
class FoldMoves(Pass):
    """Merge chains of gathers and reshapes whose intermediate results have one user into one gather (exact)."""

    name = "fold-moves"

    def run(self, module: Module) -> bool:
        pattern = MergeMoves()
        changed = apply_patterns(module, [pattern])
        used = {v.name for g in module.functions.values() for o in g.ops for v in o.operands if v.is_weight}
        for name in pattern.replaced - used:
            module.weights.pop(name, None)
            module.weight_data.pop(name, None)
            module.weight_locs.pop(name, None)
        return changed
