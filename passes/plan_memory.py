"""``plan-memory``: liveness-based buffer reuse in the main-memory activation arena.

Every ``pent`` activation (the result of a ``pent`` op other than ``pent.dequantize``) gets a buffer of one
word per element.  Over the linear schedule a buffer lives from the op that defines it to its last use
(program outputs to the end, program inputs from the start); two buffers may share words only when their
lifetimes are disjoint, and an op's result never shares with its operands.  Buffers are placed largest first
at the lowest offset that fits (first fit over the already placed buffers that overlap in time), so the arena
is usually close to the peak of live words.  The offset is written as the op's ``addr`` attribute.  Finding
the buffers that overlap in time uses a segment tree, so planning is O(n log n) in the number of ops.

**Concat without copies.** A concat on the channel axis of 4-D tensors (a ``pent.gather`` whose map is exactly
that) gets one buffer, and each input whose producer can store its result at any pixel pitch (``pent.conv2d``,
``pent.max_pool``, ``pent.avg_pool``) and whose every user reads any pitch (those ops' first operand, any
gather) is an alias into it: its ``addr`` is the concat's plus its channel offset and its ``pitch`` the concat's
channel count (channels last, so pixel ``p`` of the input sits at ``addr + p * pitch``).  The producer writes
its slice in place, and the code generator emits nothing for the words of the concat that are already where
they belong.  The concat's buffer lives from the first aliased producer to the last use of it or of any aliased
value.  An input that is a program output or input, used twice by the concat, or produced or read by another
op keeps its own buffer and is copied, as is an input at another scale (the quantizer gives a sole-use input
the concat's scale, so that only inputs with other users need the rescale).

The scratchpads (A, W, C) are planned per op by ``tile`` and the code generator: each op's instruction
sequence owns them while it runs, so they need no arena of their own across ops.
"""

from __future__ import annotations

import sys
from bisect import bisect_right, insort
from dataclasses import dataclass, field

import numpy as np

from pcc.dialects import pent, pent_move
from pcc.ir import Graph, Module, Operation, Value
from pcc.pass_manager import Pass, register_pass

ALIGN = 1  # words; activations are one word each, so no alignment is needed for the DMA


@dataclass
class Buffer:
    op: Operation
    size: int
    start: int
    end: int
    offset: int = -1


@dataclass
class MemoryPlan:
    buffers: list[Buffer]
    arena_words: int  # planned: the highest offset + size
    naive_words: int  # every buffer in its own words
    peak_live_words: int  # the lower bound: most words live at one time
    aliases: list[tuple[Operation, int, int]] = field(default_factory=list)  # (producer, addr, pitch) in a concat

    def summary(self) -> str:
        saved = 1 - self.arena_words / self.naive_words if self.naive_words else 0.0
        return (
            f"activation arena {self.arena_words} words (naive {self.naive_words}, {saved:.0%} saved; "
            f"peak live {self.peak_live_words})"
        )


def activation_ops(g: Graph) -> list[Operation]:
    """Ops whose result is a machine-resident activation (a pent word tensor)."""
    return [
        op
        for op in g.body
        if op.name.startswith("pent.") and op.name != "pent.dequantize" and op.results and op.results[0].type.is_pent
    ]


def place_first_fit(bufs: list[Buffer]) -> None:
    """Set each buffer's offset: largest first, at the lowest offset clear of the placed buffers that overlap it
    in time.  The placed buffers overlapping ``[start, end]`` are those alive at ``start`` (a stabbing query on
    a segment tree over time) plus those starting in ``(start, end]`` (a range of a sorted list), so a plan
    costs O(n log n) plus the overlaps it must look at, not O(n^2)."""
    if not bufs:
        return
    horizon = max(b.end for b in bufs) + 1
    leaves = 1 << max(horizon - 1, 1).bit_length()
    alive: list[list[Buffer]] = [[] for _ in range(2 * leaves)]  # segment tree: intervals at canonical nodes
    starts: list[tuple[int, int]] = []  # (start, index into by_start) of placed buffers, sorted
    by_start: list[Buffer] = []
    for b in sorted(bufs, key=lambda b: (-b.size, b.start)):
        overlapping = []
        i = b.start + leaves
        while i:
            overlapping.extend(alive[i])
            i >>= 1
        lo = bisect_right(starts, (b.start, len(by_start)))
        hi = bisect_right(starts, (b.end, len(by_start)))
        overlapping.extend(by_start[j] for _, j in starts[lo:hi])
        busy = sorted((p.offset, p.offset + p.size) for p in overlapping)
        off = 0
        for lo_w, hi_w in busy:
            if off + b.size <= lo_w:
                break
            off = max(off, -(-hi_w // ALIGN) * ALIGN)
        b.offset = off
        l, r = b.start + leaves, b.end + leaves + 1
        while l < r:
            if l & 1:
                alive[l].append(b)
                l += 1
            if r & 1:
                r -= 1
                alive[r].append(b)
            l >>= 1
            r >>= 1
        insort(starts, (b.start, len(by_start)))
        by_start.append(b)


PITCHED_PRODUCERS = (pent.Conv2d, pent.MaxPool, pent.AvgPool)  # store their result at any pixel pitch


def _reads_any_pitch(user: Operation, v: Value) -> bool:
    if isinstance(user, pent_move.Gather):
        return user.operands[0] is not v
    return isinstance(user, PITCHED_PRODUCERS) and all(o is not v for o in user.operands[1:])


def concat_offsets(op: Operation, m: Module) -> list[int] | None:
    """The channel offset of each input of ``op`` when it is a ``pent.gather`` concatenating 4-D inputs along
    axis 1, else None."""
    if not isinstance(op, pent_move.Gather) or op.results[0].type.rank != 4 or op.operands[0].name not in m.weight_data:
        return None
    y, xs = op.results[0].type.shape, [x.type.shape for x in op.operands[1:]]
    if any(len(x) != 4 or x[0] != y[0] or x[2:] != y[2:] for x in xs) or sum(x[1] for x in xs) != y[1]:
        return None
    parts, base = [], 0
    for x in xs:
        parts.append(base + np.arange(int(np.prod(x)), dtype=np.int64).reshape(x))
        base += parts[-1].size
    if not np.array_equal(np.asarray(m.weight(op.operands[0])).ravel(), np.concatenate(parts, axis=1).ravel()):
        return None
    return [0, *np.cumsum([x[1] for x in xs])[:-1].tolist()]


def concat_aliases(g: Graph, m: Module, outputs: set[int]) -> dict[int, tuple[Operation, int]]:
    """``id(producer op) -> (concat op, channel offset)`` for the concat inputs that can live in the concat's
    buffer (module docstring)."""
    out: dict[int, tuple[Operation, int]] = {}
    for op in g.body:
        offs = concat_offsets(op, m)
        if offs is None or id(op.results[0]) in outputs:
            continue
        xs = op.operands[1:]
        for x, off in zip(xs, offs, strict=True):
            p = x.owner
            if (
                p is None
                or not isinstance(p, PITCHED_PRODUCERS)
                or id(p) in out
                or id(x) in outputs
                or sum(1 for y in xs if y is x) > 1
                or not all(_reads_any_pitch(u, x) for u in x.uses)
            ):
                continue
            out[id(p)] = (op, off)
    return out


def plan_graph(g: Graph, m: Module | None = None) -> MemoryPlan:
    """The arena plan of ``g``; with its module ``m`` (the gathers' maps), concat inputs become aliases into
    the concat's buffer (module docstring): their offsets and pitches are in :attr:`MemoryPlan.aliases`."""
    body = g.body
    pos = {id(op): i for i, op in enumerate(body)}
    end = len(body)
    outputs = {id(v.owner.operands[0]) for v in g.outputs if v.owner is not None and v.owner.operands}
    outputs |= {id(v) for v in g.outputs}
    aliases = concat_aliases(g, m, outputs) if m is not None else {}
    bufs, of_op = [], {}
    for op in activation_ops(g):
        r = op.results[0]
        start = 0 if op.name == "pent.quantize" else pos[id(op)]
        last = max((pos[id(u)] for u in r.uses if id(u) in pos), default=start)
        if id(r) in outputs:
            last = end
        if id(op) in aliases:
            of_op[id(op)] = (start, last)
            continue
        bufs.append(Buffer(op, r.type.size, start, last))
    by_op = {id(b.op): b for b in bufs}
    for pid, (cat, _) in aliases.items():
        b, (start, last) = by_op[id(cat)], of_op[pid]
        b.start, b.end = min(b.start, start), max(b.end, last)
    place_first_fit(bufs)
    placed = []
    for op in activation_ops(g):
        if id(op) in aliases:
            cat, off = aliases[id(op)]
            placed.append((op, by_op[id(cat)].offset + off, cat.results[0].type.shape[1]))
    arena = max((b.offset + b.size for b in bufs), default=0)
    events = [0] * (end + 2)
    for b in bufs:
        events[b.start] += b.size
        events[b.end + 1] -= b.size
    peak = cur = 0
    for e in events:
        cur += e
        peak = max(peak, cur)
    naive = sum(b.size for b in bufs) + sum(op.results[0].type.size for op, _, _ in placed)
    return MemoryPlan(bufs, arena, naive, peak, placed)


def check_plan(g: Graph, m: Module | None = None) -> None:
    """Raise AssertionError if two buffers with overlapping lifetimes overlap in the arena (a test helper)."""
    plan = plan_graph(g, m)
    addr = {id(b.op): b.op.attr("addr") for b in plan.buffers}
    for i, a in enumerate(plan.buffers):
        for b in plan.buffers[i + 1 :]:
            if a.end < b.start or b.end < a.start:
                continue
            ao, bo = addr[id(a.op)], addr[id(b.op)]
            if ao is None or bo is None:
                raise AssertionError("unplanned buffer")
            if ao < bo + b.size and bo < ao + a.size:
                raise AssertionError(f"{a.op.name} and {b.op.name} overlap in time and in the arena")


@register_pass
@dataclass(frozen=True)
class PlanMemory(Pass):
    """Assign arena offsets (attribute addr) to pent activations, reusing words of dead buffers."""

    name = "plan-memory"
    report: bool = False  # print the planned arena vs the naive sum to stderr
    concat_in_place: bool = True  # producers write into their concat's buffer (false: every concat copies)

    def run(self, module: Module) -> bool:
        changed = False
        for g in module.functions.values():
            plan = plan_graph(g, module if self.concat_in_place else None)
            places = [(b.op, b.offset, None) for b in plan.buffers] + list(plan.aliases)
            for op, addr, pitch in places:
                if op.attributes.get("addr") != addr or op.attributes.get("pitch") != pitch:
                    op.attributes["addr"] = addr
                    if pitch is None:
                        op.attributes.pop("pitch", None)
                    else:
                        op.attributes["pitch"] = pitch
                    changed = True
            if self.report:
                print(f"plan-memory @{g.name}: {plan.summary()}", file=sys.stderr)
        return changed


def arena_words(g: Graph) -> int:
    """Words the planned arena spans (0 if the graph is not planned)."""
    return max(
        (
            op.attr("addr") + op.results[0].type.size
            for op in activation_ops(g)
            if op.attributes.get("addr") is not None
        ),
        default=0,
    )
