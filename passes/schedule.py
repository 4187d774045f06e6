"""``schedule``: reorder a graph's ops (a topological order of its DAG) to keep peak live memory low.

Live memory after an op is the total size of the values that are defined and still have an unscheduled user
(graph outputs stay live to the end; arguments are live until their last use).  The scheduler is greedy: among
the ready ops (all producers scheduled) it picks the one whose execution leaves the least memory live, ties
going to the op that frees the most and then to program order, which keeps the original order when nothing
is gained.  The dataflow DAG comes from :meth:`pcc.ir.Graph.to_networkx`.  Sizes are element counts (an
activation is one word on the machine); weights are not activations and do not count.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass

from pcc.ir import Graph, Module, Operation, Value
from pcc.pass_manager import Pass, register_pass


def value_size(v: Value) -> int:
    return v.type.size


def peak_live(g: Graph, order: list[Operation] | None = None) -> int:
    """Peak total size of live values over ``order`` (default: the graph's current order)."""
    order = order if order is not None else g.body
    pos = {id(op): i for i, op in enumerate(order)}
    end = len(order)
    outputs = {id(v) for v in g.outputs}
    events = [0] * (end + 2)

    def last_use(v: Value, start: int) -> int:
        if id(v) in outputs:
            return end
        uses = [pos[id(u)] for u in v.uses if id(u) in pos]
        return max(uses, default=start)

    for a in g.args:
        events[0] += value_size(a)
        events[last_use(a, 0) + 1] -= value_size(a)
    for i, op in enumerate(order):
        for r in op.results:
            events[i] += value_size(r)
            events[last_use(r, i) + 1] -= value_size(r)
    peak = cur = 0
    for e in events:
        cur += e
        peak = max(peak, cur)
    return peak


def greedy_order(g: Graph) -> list[Operation]:
    """A topological order of ``g.body`` chosen greedily for low live memory."""
    body = g.body
    dag = g.to_networkx()
    index = {id(op): i for i, op in enumerate(body)}
    outputs = {id(v) for v in g.outputs}
    remaining_users: dict[int, int] = {}
    for v in [*g.args, *(r for op in body for r in op.results)]:
        remaining_users[id(v)] = len({id(u) for u in v.uses if id(u) in index})
    indeg = {id(op): sum(1 for p in dag.predecessors(op) if id(p) in index) for op in body}

    def score(op: Operation) -> tuple[int, int, int]:
        alloc = sum(value_size(r) for r in op.results if remaining_users[id(r)] > 0 or id(r) in outputs)
        freed = 0
        for v in {id(o): o for o in op.operands if not o.is_weight}.values():
            if remaining_users[id(v)] == 1 and id(v) not in outputs:
                freed += value_size(v)
        return (alloc - freed, -freed, index[id(op)])

    ready = [(score(op), index[id(op)], op) for op in body if indeg[id(op)] == 0]
    heapq.heapify(ready)
    order: list[Operation] = []
    while ready:
        _, _, op = heapq.heappop(ready)
        order.append(op)
        for v in {id(o): o for o in op.operands if not o.is_weight}.values():
            remaining_users[id(v)] -= 1
        for succ in dag.successors(op):
            if id(succ) not in index:
                continue
            indeg[id(succ)] -= 1
            if indeg[id(succ)] == 0:
                heapq.heappush(ready, (score(succ), index[id(succ)], succ))
        # scores of the other ready ops may change when an operand's last user is scheduled; rescoring the
        # (short) ready list keeps the choice exact
        if ready:
            ready = [(score(o), index[id(o)], o) for _, _, o in ready]
            heapq.heapify(ready)
    if len(order) != len(body):  # pragma: no cover - the graph is a DAG by construction
        raise AssertionError("schedule: the dataflow graph has a cycle")
    return order


@register_pass
@dataclass(frozen=True)
class Schedule(Pass):
    """Reorder ops (topologically) to keep peak live memory low."""

    name = "schedule"
    keep_if_worse: bool = False  # use the greedy order even when it does not lower the peak

    def run(self, module: Module) -> bool:
        changed = False
        for g in module.functions.values():
            body = g.body
            order = greedy_order(g)
            if [id(o) for o in order] == [id(o) for o in body]:
                continue
            if not self.keep_if_worse and peak_live(g, order) >= peak_live(g, body):
                continue
            g.ops = order + g.ops[len(body) :]
            changed = True
        return changed
