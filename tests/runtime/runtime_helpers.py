"""Helpers of the runtime tests: assemble and run a snippet (on the simulator or the ISA's plain executor,
``runtime/isa_ref.py``), set scratchpads, compare the machine state."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from pcc import isa
from pcc.backend.assembler import assemble
from pcc.backend.program import Instruction, Program
from pcc.diagnostics import PccError
from pcc.runtime import isa_ref, kernels, tensor
from pcc.runtime.simulator import Simulator

W = isa.WORD_MAX
ACC = isa.ACC_MAX
DRAM = isa.DEFAULT_CONFIG.dram_words
A_WORDS = isa.DEFAULT_CONFIG.a_spad_words


def run_asm(
    text: str,
    *,
    setup: dict[str, Any] | None = None,
    max_steps: int = 100_000,
    halt: bool = True,
    fused: bool | None = None,
) -> Simulator:
    """Assemble ``text`` (a ``HALT`` is appended unless ``halt=False``), preload scratchpads, run to HALT."""
    src = text if not halt else text.rstrip() + "\n    HALT\n"
    sim = Simulator(assemble(src, "case.pasm"), fused=fused)
    for key, values in (setup or {}).items():
        spad, addr = key.split("@")
        arr = {"A": sim.spad_a, "W": sim.spad_w, "C": sim.spad_c}[spad]
        v = np.asarray(values).reshape(-1)
        arr[int(addr) : int(addr) + v.size] = v
    sim.run(max_steps)
    return sim


def flag_bits(letters: str) -> int:
    return sum(1 << isa.FLAGS.index(ch) for ch in letters)


def check_state(sim: Simulator | isa_ref.Machine, expected: dict[str, Any]) -> None:
    """``expected`` keys: ``P<n>``, ``acc``, ``flags`` (exactly these letters set), ``pc``, ``steps``,
    ``mem:<label>`` / ``mem@<addr>`` (consecutive words), ``A@<addr>``, ``W@<addr>``, ``C@<addr>``; on the
    simulator or the executor's machine."""
    st = state(sim)
    regs = st["regs"]
    for key, want in expected.items():
        if key.startswith("P") and key[1:].isdigit():
            assert regs[int(key[1:])] == want, f"{key} = {regs[int(key[1:])]}, expected {want}"
        elif key == "SP":
            assert regs[30] == want, f"SP = {regs[30]}, expected {want}"
        elif key == "LR":
            assert regs[31] == want, f"LR = {regs[31]}, expected {want}"
        elif key in ("acc", "pc", "steps"):
            assert st[key] == want, f"{key} = {st[key]}, expected {want}"
        elif key == "flags":
            got = "".join(f for i, f in enumerate(isa.FLAGS) if st["flags"] >> i & 1)
            assert st["flags"] == flag_bits(want), f"flags {got!r}, expected {want!r}"
        elif key.startswith("mem:"):
            sym = sim.program.symbol(key[4:])
            assert sym is not None, key
            got = st["mem"][sym.addr : sym.addr + len(want)].tolist()
            assert got == list(want), f"{key} = {got}, expected {list(want)}"
        elif key.startswith("mem@"):
            a = int(key[4:])
            got = st["mem"][a : a + len(want)].tolist()
            assert got == list(want), f"{key} = {got}, expected {list(want)}"
        elif key[0] in "AWC" and key[1] == "@":
            a = int(key[2:])
            got = st[key[0]][a : a + len(want)].tolist()
            assert got == list(want), f"{key} = {got}, expected {list(want)}"
        else:  # pragma: no cover - a typo in a case
            raise KeyError(key)


def mnemonics_of(text: str) -> set[str]:
    """The mnemonics a snippet uses (for the coverage test)."""
    out = set()
    for line in text.splitlines():
        words = line.split(";")[0].replace(":", ": ").split()
        for w in words:
            if w.upper() in isa.BY_MNEMONIC:
                out.add(w.upper())
                break
    return out


def spads_of(machine: Simulator | isa_ref.Machine) -> dict[str, np.ndarray]:
    """The scratchpads of a simulator or an executor's machine, by name."""
    if isinstance(machine, isa_ref.Machine):
        return {"A": machine.A, "W": machine.W, "C": machine.C}
    return {"A": machine.spad_a, "W": machine.spad_w, "C": machine.spad_c}


def preset(machine: Simulator | isa_ref.Machine, setup: dict[str, Any] | None) -> None:
    """Write ``setup`` (``"A@addr"``, ``"W@addr"``, ``"C@addr"`` -> values) into the scratchpads."""
    spads = spads_of(machine)
    for key, values in (setup or {}).items():
        spad, addr = key.split("@")
        v = np.asarray(values).reshape(-1)
        spads[spad][int(addr) : int(addr) + v.size] = v


def run_ref(
    text: str, *, setup: dict[str, Any] | None = None, max_steps: int = 100_000, halt: bool = True
) -> isa_ref.Machine:
    """:func:`run_asm` on the ISA's plain executor."""
    src = text if not halt else text.rstrip() + "\n    HALT\n"
    machine = isa_ref.Machine(assemble(src, "case.pasm"))
    preset(machine, setup)
    isa_ref.run(machine, max_steps)
    return machine


def executed(op: isa.Op, *args: int, setup: dict[str, Any] | None = None) -> isa_ref.Machine:
    """A machine with the scratchpads ``setup`` after the executor's rule of one instruction (no PC or counts)."""
    machine = isa_ref.Machine(Program())
    preset(machine, setup)
    isa_ref.execute(machine, op, *args)
    return machine


def like(sim: Simulator) -> isa_ref.Machine:
    """A machine holding copies of the simulator's scratchpads, registers, ACC and flags (main memory: only the
    data segments), to execute on what a tensor closure is about to execute on."""
    machine = isa_ref.Machine(sim.program, sim.config)
    machine.A[:], machine.W[:], machine.C[:] = sim.spad_a, sim.spad_w, sim.spad_c
    machine.regs[:], machine.acc = list(sim.regs), sim.acc
    machine.flags = {f: sim.flag(f) for f in isa.FLAGS}
    return machine


def state(machine: Simulator | isa_ref.Machine) -> dict[str, Any]:
    """The architectural state (registers, ACC, flags, PC, steps, cycles, memories) of either engine."""
    if isinstance(machine, isa_ref.Machine):
        out: dict[str, Any] = {"flags": machine.flag_bits, "mem": machine.mem}
    else:
        out = {"flags": machine.flags, "mem": machine.mem}
    out.update(regs=list(machine.regs), acc=machine.acc, pc=machine.pc, steps=machine.steps, cycles=machine.cycles)
    out.update(spads_of(machine))
    return out


def assert_same_state(got: Simulator | isa_ref.Machine, want: Simulator | isa_ref.Machine, what: str = "") -> None:
    """Both engines left the same architectural state; names the first difference."""
    a, b = state(got), state(want)
    for key, v in b.items():
        if isinstance(v, np.ndarray):
            if not np.array_equal(a[key], v):
                i = int(np.flatnonzero(a[key] != v)[0])
                raise AssertionError(f"{what}: {key}[{i}] = {int(a[key][i])}, the executor has {int(v[i])}")
        else:
            assert a[key] == v, f"{what}: {key} = {a[key]}, the executor has {v}"


def outcome(run: Any) -> tuple[str, ...] | None:
    """None if ``run()`` finished, else the fault it raised: (message, location, notes)."""
    try:
        run()
    except PccError as e:
        return (e.message, str(e.loc), *e.notes)
    return None


def ref_conv(x, w, ih, iw, ic, oc, kh, kw, sh, sw, pt, pl, pb, pr, groups=1) -> list[int]:  # noqa: ANN001
    """CONV's products by the ISA's plain executor, flat in C's (oy, ox, channel) order (a CONV with acc = 0)."""
    oh, ow = isa.conv_out(ih, pt, pb, kh, sh), isa.conv_out(iw, pl, pr, kw, sw)
    fields = (ih, iw, ic, oc, kh, kw, sh, sw, pt, pl, pb, pr, groups, 0)
    return executed(isa.Op.CONV, 0, 0, 0, *fields, setup={"A@0": x, "W@0": w}).C[: oh * ow * oc].tolist()


def check_changing_weights(sim: Simulator, fields: tuple[int, ...], x: list[int], rng: Any, runs: int = 6) -> None:
    """A CONV (C at 7, A at 5, W at 3; ``fields`` from ih to pr, one group, acc = 0) built once on ``sim`` and run
    ``runs`` times on input ``x`` with new random pents in W each time: every result matches :func:`ref_conv`,
    so whatever the engine keeps of the weights is never stale."""
    sim.spad_a[5 : 5 + len(x)] = x
    fn = tensor.build(sim, 0, Instruction(op=isa.Op.CONV, args=(7, 5, 3, *fields, 1, 0), addr=0, line=None))
    kk = fields[4] * fields[5] * fields[2]
    for _ in range(runs):
        w = rng.integers(-2, 3, fields[3] * kk).tolist()
        sim.spad_w[3 : 3 + len(w)] = w
        fn()
        want = ref_conv(x, w, *fields)
        assert sim.spad_c[7 : 7 + len(want)].tolist() == want


def ref_pool(x, ih, iw, c, kh, kw, sh, sw, pt, pl, pb, pr, mode) -> list[int]:  # noqa: ANN001
    """POOL's output by the ISA's plain executor."""
    oh, ow = isa.conv_out(ih, pt, pb, kh, sh), isa.conv_out(iw, pl, pr, kw, sw)
    fields = (ih, iw, c, kh, kw, sh, sw, pt, pl, pb, pr, mode)
    return executed(isa.Op.POOL, 0, 0, *fields, setup={"A@0": x}).A[: oh * ow * c].tolist()


def ref_matmul(a: list[int], w: list[int], base: list[int], m: int, n: int, k: int) -> list[int]:
    """MATMUL with acc = 1 on ``base`` by the ISA's plain executor: sat27(base + a @ w^T)."""
    setup = {"A@0": a, "W@0": w, "C@0": base}
    return executed(isa.Op.MATMUL, 0, 0, 0, m, n, k, 1, setup=setup).C[: m * n].tolist()


def run_both(text: str, setup: dict[str, Any] | None = None) -> Simulator:
    """:func:`run_asm` with the numpy closures and, where numba is installed, with the compiled loops
    (``fused=True``); asserts that both leave the same machine state and statistics, and returns the last."""
    sims = [run_asm(text, setup=setup, fused=f) for f in ((False, True) if kernels.available() else (False,))]
    ref = sims[0]
    for sim in sims[1:]:
        for name in ("spad_a", "spad_w", "spad_c", "mem"):
            assert np.array_equal(getattr(sim, name), getattr(ref, name)), f"{name} differs between the loops"
        assert sim.flags == ref.flags and sim.regs == ref.regs and sim.acc == ref.acc
        assert list(sim.zero_weights) == list(ref.zero_weights) and list(sim.zero_macs) == list(ref.zero_macs)
    return sims[-1]


def loop_calls(monkeypatch: Any, name: str) -> list[int]:
    """A one-element list counting the calls of the compiled loop ``name`` made through ``kernels.loop`` from now on
    (closures built later get the counting wrapper)."""
    calls = [0]
    real = kernels.loop

    def counted(which: str):  # noqa: ANN202
        fn = real(which)
        if which != name:
            return fn

        def call(*args):  # noqa: ANN002, ANN202
            calls[0] += 1
            return fn(*args)

        return call

    monkeypatch.setattr(kernels, "loop", counted)
    return calls


def conv_twice(
    sim: Simulator, fields: tuple[int, ...], x: list[int], w: list[int], base: list[int], acc: int
) -> Simulator:
    """CONV (C at 7, A at 5, W at 3) on ``sim``, twice: the second run goes through the weight cache."""
    sim.spad_a[5 : 5 + len(x)] = x
    sim.spad_w[3 : 3 + len(w)] = w
    fn = tensor.build(sim, 0, Instruction(op=isa.Op.CONV, args=(7, 5, 3, *fields, 1, acc), addr=0, line=None))
    for _ in range(2):
        sim.spad_c[7 : 7 + len(base)] = base
        sim._flags[3] = 0
        fn()
    return sim


def draw_conv(
    data: Any, *, ic: int, k: int, hw: int, sw_min: int, tops: Callable[[int], list[int]], no_1x1: bool = False
) -> tuple[tuple[int, ...], list[int], list[int], list[int], int]:
    """A hypothesis CONV case: (fields, x, w, base, acc), activations up to one of ``tops(wl1)`` (``wl1`` the
    largest L1 norm of an output channel's weights), bases anywhere in the accumulator's range."""
    from hypothesis import strategies as st

    ic, oc = data.draw(st.integers(1, ic)), data.draw(st.integers(1, 5))
    kh = data.draw(st.integers(1, k))
    kw = data.draw(st.integers(2 if no_1x1 and kh == 1 else 1, k))
    ih, iw = data.draw(st.integers(kh, hw)), data.draw(st.integers(kw, hw))
    sh, sw = data.draw(st.integers(1, 3)), data.draw(st.integers(sw_min, 3))
    pt, pb = data.draw(st.integers(0, kh - 1)), data.draw(st.integers(0, kh - 1))
    pl, pr = data.draw(st.integers(0, kw - 1)), data.draw(st.integers(0, kw - 1))
    kk = kh * kw * ic
    w = data.draw(st.lists(st.integers(-2, 2), min_size=oc * kk, max_size=oc * kk))
    wl1 = max(1, max(sum(abs(v) for v in w[o * kk : (o + 1) * kk]) for o in range(oc)))
    top = data.draw(st.sampled_from(tops(wl1)))
    n_in = ih * iw * ic
    x = data.draw(st.lists(st.integers(-top, top) | st.sampled_from([top, -top]), min_size=n_in, max_size=n_in))
    acc = data.draw(st.integers(0, 1))
    fields = (ih, iw, ic, oc, kh, kw, sh, sw, pt, pl, pb, pr)
    n_out = isa.conv_out(ih, pt, pb, kh, sh) * isa.conv_out(iw, pl, pr, kw, sw) * oc
    base = data.draw(st.lists(st.integers(-ACC, ACC) | st.integers(-99, 99), min_size=n_out, max_size=n_out))
    return fields, x, w, base, acc


def want_conv(x: list[int], w: list[int], fields: tuple[int, ...], base: list[int], acc: int) -> tuple[list[int], bool]:
    """The CONV's saturated outputs (added to ``base`` where ``acc``) and whether anything saturated."""
    want = ref_conv(x, w, *fields)
    if acc:
        want = [a + b for a, b in zip(want, base, strict=True)]
    sat = [max(-ACC, min(ACC, v)) for v in want]
    return sat, sat != want
