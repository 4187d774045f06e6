"""Helpers of the runtime tests: assemble and run a snippet, set scratchpads, compare the machine state."""

from __future__ import annotations

from typing import Any

import numpy as np

from pcc import isa
from pcc.backend.assembler import assemble
from pcc.runtime import kernels
from pcc.runtime.simulator import Simulator

W = isa.WORD_MAX
ACC = isa.ACC_MAX
DRAM = isa.DEFAULT_CONFIG.dram_words


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


def check_state(sim: Simulator, expected: dict[str, Any]) -> None:
    """``expected`` keys: ``P<n>``, ``acc``, ``flags`` (exactly these letters set), ``pc``, ``steps``,
    ``mem:<label>`` / ``mem@<addr>`` (consecutive words), ``A@<addr>``, ``W@<addr>``, ``C@<addr>``."""
    for key, want in expected.items():
        if key.startswith("P") and key[1:].isdigit():
            assert sim.regs[int(key[1:])] == want, f"{key} = {sim.regs[int(key[1:])]}, expected {want}"
        elif key == "SP":
            assert sim.regs[30] == want, f"SP = {sim.regs[30]}, expected {want}"
        elif key == "LR":
            assert sim.regs[31] == want, f"LR = {sim.regs[31]}, expected {want}"
        elif key == "acc":
            assert sim.acc == want, f"ACC = {sim.acc}, expected {want}"
        elif key == "flags":
            got = "".join(f for f in isa.FLAGS if sim.flag(f))
            assert sim.flags == flag_bits(want), f"flags {got!r}, expected {want!r}"
        elif key == "pc":
            assert sim.pc == want, f"PC = {sim.pc}, expected {want}"
        elif key == "steps":
            assert sim.steps == want, f"steps = {sim.steps}, expected {want}"
        elif key.startswith("mem:"):
            sym = sim.program.symbol(key[4:])
            assert sym is not None, key
            got = sim.mem[sym.addr : sym.addr + len(want)].tolist()
            assert got == list(want), f"{key} = {got}, expected {list(want)}"
        elif key.startswith("mem@"):
            a = int(key[4:])
            got = sim.mem[a : a + len(want)].tolist()
            assert got == list(want), f"{key} = {got}, expected {list(want)}"
        elif key[0] in "AWC" and key[1] == "@":
            arr = {"A": sim.spad_a, "W": sim.spad_w, "C": sim.spad_c}[key[0]]
            a = int(key[2:])
            got = arr[a : a + len(want)].tolist()
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


def ref_conv(x, w, ih, iw, ic, oc, kh, kw, sh, sw, pt, pl, pb, pr, groups=1):  # noqa: ANN001, ANN201
    """CONV's products in Python integers (object arrays), flat in C's (oy, ox, channel) order."""
    oh, ow = isa.conv_out(ih, pt, pb, kh, sh), isa.conv_out(iw, pl, pr, kw, sw)
    icg, ocg = ic // groups, oc // groups
    xp = np.zeros((ih + pt + pb, iw + pl + pr, ic), dtype=object)
    xp[pt : pt + ih, pl : pl + iw] = np.array(x, dtype=object).reshape(ih, iw, ic)
    wk = np.array(w, dtype=object).reshape(oc, kh, kw, icg)
    out = np.zeros((oh, ow, oc), dtype=object)
    for oy in range(oh):
        for ox in range(ow):
            patch = xp[oy * sh : oy * sh + kh, ox * sw : ox * sw + kw]
            for o in range(oc):
                g = o // ocg
                out[oy, ox, o] = int((patch[:, :, g * icg : (g + 1) * icg] * wk[o]).sum())
    return out.reshape(-1).tolist()


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
