"""Rewrite helpers shared by the passes."""

from __future__ import annotations

from pcc.ir import Graph, Operation


def replace_op(g: Graph, old: Operation, new: Operation) -> Operation:
    """Put ``new`` (not yet in a graph) in ``old``'s place: ``old``'s uses go to ``new``'s results, which take
    ``old``'s result names (a graph output keeps the model's name), and ``old`` is erased."""
    index = g.ops.index(old)
    names = [r.name for r in old.results]
    for r, v in zip(old.results, new.results, strict=True):
        r.replace_all_uses_with(v)
    g.erase(old)
    for v, name in zip(new.results, names, strict=True):
        v.name = name
    g.insert(index, new)
    return new
