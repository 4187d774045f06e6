"""The one rewrite driver of the graph passes, and the helpers its patterns share.

A pass that rewrites the graph op by op is a list of :class:`Pattern` objects handed to
:func:`apply_patterns`: the driver walks every graph in program order, offers each op to the patterns whose
``roots`` include its class, and walks again until a whole walk changes nothing (xDSL's canonicalize walker,
QONNX's ``apply -> (model, changed)`` repeated to a fixed point).  A pattern's ``apply`` returns True when it
rewrote the graph; it may erase the op it was given and ops around it, and the driver skips ops that are no
longer in the graph.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import ClassVar

from pcc.diagnostics import PccError
from pcc.ir import Graph, Module, Operation, Value

__all__ = ["Pattern", "apply_patterns", "replace_op", "replace_pair", "sole_user"]

MAX_WALKS = 1000  # a pattern set that still changes the graph after this many walks does not terminate


class Pattern(ABC):
    """One rewrite: the op classes it matches (``roots``) and ``apply(module, graph, op) -> bool``."""

    roots: ClassVar[tuple[type[Operation], ...]] = (Operation,)

    @abstractmethod
    def apply(self, module: Module, g: Graph, op: Operation) -> bool:
        """Rewrite the graph around ``op`` if the pattern matches; True if it changed anything."""


def apply_patterns(module: Module, patterns: Sequence[Pattern]) -> bool:
    """Apply ``patterns`` to every graph of ``module`` until none applies; True if anything changed."""
    changed_any = False
    for g in module.functions.values():
        for _ in range(MAX_WALKS):
            changed = False
            for op in list(g.ops):
                for p in patterns:
                    if op.graph is not g:  # erased by an earlier rewrite of this walk
                        break
                    if isinstance(op, p.roots) and p.apply(module, g, op):
                        changed = True
            changed_any |= changed
            if not changed:
                break
        else:
            names = ", ".join(type(p).__name__ for p in patterns)
            raise PccError(f"the rewrite patterns {names} still change @{g.name} after {MAX_WALKS} walks")
    return changed_any


def sole_user(v: Value) -> Operation | None:
    """The one op that uses ``v`` (once), unless ``v`` is also a graph output; else None."""
    if len(v.uses) != 1:
        return None
    user = v.uses[0]
    g = user.graph
    if g is None or any(o is v for o in g.outputs):
        return None
    return user


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


def replace_pair(g: Graph, first: Operation, second: Operation, new: Operation) -> Operation:
    """Put ``new`` where ``second`` (the sole user of ``first``) was, with its uses and names; erase both."""
    replace_op(g, second, new)
    g.erase(first)
    return new
