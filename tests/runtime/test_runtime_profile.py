"""The profiler's numbers, layer attribution and trace, on small programs whose counts are known by hand."""

from __future__ import annotations

import json

import pytest

from pcc import isa
from pcc.backend.assembler import assemble
from pcc.runtime.profile import BYTES_PER_WORD, ENERGY_PJ, MAC_PJ, Profile, layer_names
from pcc.runtime.simulator import Simulator
from pcc.runtime.trace import trace_events

LOOP = """    MOVI P1, 0
    MOVI P2, 1000
loop:
    ADD P1, P1, P2
    ADDI P2, P2, -1
    BNE P2, loop
    HALT
"""


def profile_of(
    text: str, *, trace: bool = False, runs: int = 1, setup: dict | None = None
) -> tuple[Simulator, Profile]:
    sim = Simulator(assemble(text, "p.pasm"), trace=trace)
    for _ in range(runs):
        sim.reset()
        for key, vals in (setup or {}).items():
            spad, addr = key.split("@")
            arr = {"A": sim.spad_a, "W": sim.spad_w, "C": sim.spad_c}[spad]
            arr[int(addr) : int(addr) + len(vals)] = vals
        sim.run()
    return sim, Profile(sim)


def test_scalar_loop_counts_cycles_and_energy() -> None:
    sim, prof = profile_of(LOOP)
    t = prof.total
    assert t.instructions == 3003
    cfg = isa.DEFAULT_CONFIG
    assert t.cycles == 2 + 1000 * (1 + 1 + cfg.branch_cycles) + 1
    assert t.cycles_by_unit["alu"] == t.cycles and t.macs == 0
    assert t.actions["add_word"] == 3003
    assert t.energy_pj == pytest.approx(3003 * ENERGY_PJ["add_word"][0])
    assert prof.runs == 1 and [r.name for r in prof.rows] == ["(program)", "loop"]  # label fallback


def test_layers_from_comments_and_labels() -> None:
    text = "; @layer a\nNOP\nNOP\n; layer: b.c\nNOP\nHALT\n"
    assert layer_names(assemble(text)) == ["a", "a", "b.c", "b.c"]
    text = "NOP\nfirst: NOP\nsecond:\nNOP\nHALT\n"
    assert layer_names(assemble(text)) == ["(program)", "first", "second", "second"]
    prog = assemble("conv1: NOP\nfc: NOP\nHALT\n")
    prog.source = None  # a .pbin: no assembly text, only the symbol table
    assert layer_names(prog) == ["conv1", "fc", "fc"]


def test_mac_utilisation_zero_weights_and_dram_bytes() -> None:
    text = """.data
x: .zero 64
.text
; @layer load
    TLOAD 0, [P0 + x], 2, 32, 32
; @layer mm
    MATMUL 0, 0, 0, 2, 32, 32, 0
; @layer end
    HALT
"""
    w = [0, 1, -1, 2] * 256  # a quarter zeros
    sim, prof = profile_of(text, setup={"W@0": w}, runs=2)
    mm = prof.rows[1]
    assert mm.name == "mm" and mm.macs == 2 * 2 * 32 * 32
    cycles = 2 * (2 + isa.DEFAULT_CONFIG.mac_rows)
    assert mm.cycles == mm.cycles_by_unit["mac"] == cycles
    assert mm.mac_utilization == pytest.approx(mm.macs / (cycles * 32 * 32))
    assert mm.weights == 2 * 1024 and mm.zero_weights == 2 * 256 and mm.zero_weight_share == 0.25
    assert mm.zero_macs == 2 * 2 * 256
    assert mm.energy_saved_pj == pytest.approx(mm.zero_macs * MAC_PJ)
    assert mm.energy_pj == pytest.approx(mm.dense_energy_pj - mm.energy_saved_pj)
    load = prof.rows[0]
    assert load.words_moved["dram->A"] == 2 * 64 and load.dram_read_bytes == pytest.approx(128 * BYTES_PER_WORD)
    d = json.loads(prof.to_json())
    assert d["runs"] == 2 and d["layers"][1]["zero_weight_share"] == 0.25
    assert "mm" in prof.table() and "load" in prof.table()


def test_crossbar_counts() -> None:
    _, prof = profile_of("MATVEC 0, 0, 0, 256, 256, 0\nHALT")
    t = prof.total
    assert t.xbar_macs == 256 * 256 and t.macs == 0
    assert t.cycles_by_unit["xbar"] == isa.DEFAULT_CONFIG.xbar_cycles
    assert t.xbar_utilization == pytest.approx(1.0)


def test_trace_merges_scalar_runs() -> None:
    sim, _ = profile_of(LOOP, trace=True)
    doc = trace_events(sim)
    xs = [e for e in doc["traceEvents"] if e["ph"] == "X"]
    assert [(e["name"], e["cat"], e["args"]["instructions"]) for e in xs] == [
        ("(program)", "alu", 2),
        ("loop", "alu", 3001),
    ]
    assert sum(e["dur"] for e in xs) == pytest.approx(doc["otherData"]["cycles"] / 1000)


def test_trace_timeline_is_in_order() -> None:
    text = """.data
v: .word 3
.text
    LOAD P1, [P0 + v]
    MATMUL 0, 0, 0, 1, 1, 1, 0
    TRELU 0, 0, 1
    HALT
"""
    sim, prof = profile_of(text, trace=True)
    xs = [e for e in trace_events(sim)["traceEvents"] if e["ph"] == "X"]
    assert [e["cat"] for e in xs] == ["mem", "mac", "vec", "alu"]
    ends = [round((e["ts"] + e["dur"]) * 1000) for e in xs]
    assert ends[-1] == prof.total.cycles
    for a, b in zip(xs, xs[1:], strict=False):
        assert b["ts"] == pytest.approx(a["ts"] + a["dur"])


def test_plot_writes_png(tmp_path) -> None:  # noqa: ANN001
    _, prof = profile_of("; @layer only\nNOP\nHALT\n")
    prof.plot(str(tmp_path / "p.png"))
    assert (tmp_path / "p.png").read_bytes()[:4] == b"\x89PNG"
