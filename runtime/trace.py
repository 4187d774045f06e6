"""Chrome trace-event JSON of a simulated run (opens in Perfetto / chrome://tracing): one track per unit.

The simulator (``Simulator(..., trace=True)``) records the sequence of executed blocks; the timeline is rebuilt
here from the static per-instruction cycle costs (the machine runs one instruction at a time, in order). Each
track (alu, mem, dma, mac, xbar, vec; branches and control count as alu) gets complete events (``ph = "X"``).
To keep the file small, consecutive instructions of one track and layer are merged into one event when the gap
between them is at most ``merge_gap`` cycles (scalar code) or zero (tensor instructions, which merge only with
the same mnemonic); each event's ``args`` give the instructions it covers and their busy cycles. Times are in
microseconds of simulated time (``cycles / clock_hz``).
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import numpy as np

from pcc import isa
from pcc.runtime.profile import TRACKS, layer_names, static_cost
from pcc.runtime.simulator import STEP_MASK

if TYPE_CHECKING:
    from pcc.runtime.simulator import Simulator

CHUNK = 1 << 20  # blocks expanded at a time


def trace_events(sim: Simulator, *, merge_gap: int = 32, max_events: int = 1_000_000) -> dict[str, Any]:
    """The trace-event document of the run(s) recorded by ``sim`` (which must have been built with trace=True)."""
    if sim.block_trace is None:
        raise ValueError("the simulator was not created with trace=True")
    prog = sim.program
    n = len(prog.instructions)
    costs = np.asarray(sim.cost, dtype=np.int64)
    statics = [static_cost(ins, sim.config) for ins in prog.instructions]
    track = np.asarray([TRACKS.index(s.track) for s in statics], dtype=np.int64)
    layers = layer_names(prog)
    layer_ids: dict[str, int] = {}
    layer_of = np.asarray([layer_ids.setdefault(name, len(layer_ids)) for name in layers], dtype=np.int64)
    layer_list = list(layer_ids)
    mnemonic = [isa.BY_OPCODE[ins.op].mnemonic if ins.op in isa.BY_OPCODE else "?" for ins in prog.instructions]
    tensor = np.asarray(
        [ins.op in isa.BY_OPCODE and isa.BY_OPCODE[ins.op].is_tensor for ins in prog.instructions], dtype=bool
    )
    # merge key: layer and, for tensor instructions, the opcode
    ops = np.asarray([ins.op for ins in prog.instructions], dtype=np.int64)
    key = layer_of * 256 + np.where(tensor, ops, 0)
    gap_ok = np.where(tensor, 0, merge_gap)
    # block start address -> (first instruction index, length)
    blk_start = {}
    for addr, (_fn, charge) in sim._blocks.items():
        blk_start[addr] = (sim._addr_index[addr], charge & STEP_MASK)  # its steps (Simulator.run)
    text = max(prog.text_words, 1)
    first = np.zeros(text, dtype=np.int64)
    length = np.zeros(text, dtype=np.int64)
    for addr, (i0, ln) in blk_start.items():
        first[addr], length[addr] = i0, ln
    seq = np.frombuffer(sim.block_trace, dtype=np.int64) if len(sim.block_trace) else np.zeros(0, np.int64)
    us_per_cycle = 1e6 / sim.config.clock_hz

    events: list[dict[str, Any]] = []
    open_ev: dict[int, list] = {}  # track -> [start, end, key, count, busy, first index]
    dropped = 0

    def close(tr: int) -> None:
        nonlocal dropped
        ev = open_ev.pop(tr, None)
        if ev is None:
            return
        if len(events) >= max_events:
            dropped += 1
            return
        start, end, k, count, busy, i = ev
        layer = layer_list[int(layer_of[i])]
        name = mnemonic[i] if tensor[i] else f"{layer}"
        events.append(
            {
                "name": name if count == 1 or not tensor[i] else f"{name} x{count}",
                "cat": TRACKS[tr],
                "ph": "X",
                "ts": round(start * us_per_cycle, 6),
                "dur": round((end - start) * us_per_cycle, 6),
                "pid": 1,
                "tid": tr + 1,
                "args": {"layer": layer, "instructions": count, "busy_cycles": busy, "first": mnemonic[i]},
            }
        )

    t0 = 0
    for c0 in range(0, seq.size, CHUNK):
        blocks = seq[c0 : c0 + CHUNK]
        lens = length[blocks]
        tot = int(lens.sum())
        if tot == 0:
            continue
        offs = np.cumsum(lens) - lens
        idx = np.repeat(first[blocks] - offs, lens) + np.arange(tot, dtype=np.int64)
        idx = idx[idx < n]
        cyc = costs[idx]
        end = t0 + np.cumsum(cyc)
        start = end - cyc
        t0 = int(end[-1]) if end.size else t0
        tr_of = track[idx]
        for tr in range(len(TRACKS)):
            sel = np.flatnonzero(tr_of == tr)
            if sel.size == 0:
                continue
            ii, s, e = idx[sel], start[sel], end[sel]
            k = key[ii]
            brk = np.ones(sel.size, dtype=bool)
            if sel.size > 1:
                brk[1:] = (k[1:] != k[:-1]) | (s[1:] - e[:-1] > gap_ok[ii[1:]])
            heads = np.flatnonzero(brk)
            tails = np.append(heads[1:], sel.size) - 1
            busy = np.add.reduceat(e - s, heads)
            ev = open_ev.get(tr)
            for h, t, b in zip(heads.tolist(), tails.tolist(), busy.tolist(), strict=True):
                i = int(ii[h])
                if ev is not None and ev[2] == int(k[h]) and int(s[h]) - ev[1] <= int(gap_ok[i]):
                    ev[1] = int(e[t])
                    ev[3] += t - h + 1
                    ev[4] += b
                    continue
                if ev is not None:
                    close(tr)
                ev = [int(s[h]), int(e[t]), int(k[h]), t - h + 1, b, i]
                open_ev[tr] = ev
    for tr in list(open_ev):
        close(tr)
    events.sort(key=lambda ev: (ev["ts"], ev["tid"]))
    meta: list[dict[str, Any]] = [
        {"name": "process_name", "ph": "M", "pid": 1, "tid": 0, "args": {"name": "pentary machine (simulated)"}}
    ]
    for tr, name in enumerate(TRACKS):
        meta.append({"name": "thread_name", "ph": "M", "pid": 1, "tid": tr + 1, "args": {"name": name}})
        meta.append({"name": "thread_sort_index", "ph": "M", "pid": 1, "tid": tr + 1, "args": {"sort_index": tr}})
    other = {"program": prog.file, "cycles": t0, "clock_hz": sim.config.clock_hz, "merge_gap_cycles": merge_gap}
    if dropped:
        other["dropped_events"] = dropped
    return {"traceEvents": meta + events, "displayTimeUnit": "ns", "otherData": other}


def write_trace(sim: Simulator, path: str, **kwargs: Any) -> int:
    """Write the trace to ``path`` atomically; returns the number of events."""
    from pcc.diagnostics import atomic_write

    doc = trace_events(sim, **kwargs)
    atomic_write(path, json.dumps(doc, separators=(",", ":")))
    return len(doc["traceEvents"])


__all__ = ["trace_events", "write_trace"]
