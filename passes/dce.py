"""``dce``: remove pure ops whose results no output depends on, and weights no op uses."""

from __future__ import annotations

from dataclasses import dataclass

import networkx as nx

from pcc.ir import Module
from pcc.pass_manager import Pass, register_pass


@register_pass
@dataclass(frozen=True)
class DeadCodeElimination(Pass):
    """Delete every op that no graph output (or side-effecting op) transitively depends on."""

    name = "dce"
    keep_weights: bool = False  # keep weights that no op references any more

    def run(self, module: Module) -> bool:
        changed = False
        for g in module.functions.values():
            dag = g.to_networkx()
            roots = [op for op in g.ops if not op.pure]
            live = set(roots)
            for r in roots:
                live |= nx.ancestors(dag, r)
            for op in reversed(g.ops):
                if op not in live:
                    g.erase(op)
                    changed = True
        if not self.keep_weights and module.remove_unused_weights():
            changed = True
        return changed
