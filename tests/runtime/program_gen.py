"""Hypothesis strategies for whole programs the simulator and the ISA's plain executor run: scalar arithmetic over
a few registers, loads and stores, the stack, counted loops, forward branches, a subroutine, and tensor
instructions over small scratchpad and memory regions (with operands that sometimes make them fault).

A program reads its DMA base from main memory word 0 (``LOAD P1, [P0 + 0]``), so one program runs on several
memory images; :func:`machine_setup` draws scratchpad contents to preset in both engines alike.
"""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
from hypothesis import strategies as st

from pcc import isa

W = isa.WORD_MAX
DATA_WORDS = 400  # main-memory words 0..399 hold the memory image
REGS = list(range(1, 9))  # registers the scalar instructions compute in (P9: loop counter; P1: DMA base)
_BIN = ["ADD", "SUB", "MUL", "MIN", "MAX"]
_UN = ["NEG", "ABS", "MUL2", "DIV2", "SIGN", "RELU"]


def _window(d) -> tuple[int, int, int, int, list[int], list[int]]:  # noqa: ANN001
    """A random window geometry: input extent, kernel, strides, pads smaller than the kernel."""
    kh, kw = d(st.integers(1, 3)), d(st.integers(1, 3))
    ih, iw = d(st.integers(kh, 5)), d(st.integers(kw, 5))
    strides = [d(st.integers(1, 2)), d(st.integers(1, 2))]
    pads = [d(st.integers(0, kh - 1)), d(st.integers(0, kw - 1)), d(st.integers(0, kh - 1)), d(st.integers(0, kw - 1))]
    return ih, iw, kh, kw, strides, pads


def tensor_instruction(data: st.DataObject | SimpleNamespace, ops: list[str] | None = None) -> str:
    """One random tensor instruction over small scratchpad and memory regions (bases in P1 may make DMA fault)."""
    d = data.draw
    op = d(
        st.sampled_from(
            ops
            or ["TLOAD", "TLOADC", "TSTORE", "TSTOREC", "TLOADW", "CONV", "MATMUL", "MATVEC", "POOL"]
            + ["REQUANTC", "TRELU", "TCLAMP"]
        )
    )
    small = st.integers(0, 120)
    if op in ("TLOAD", "TLOADC"):
        return (
            f"{op} {d(small)}, [P1 + {d(st.integers(-5, 200))}], {d(st.integers(0, 4))}, {d(st.integers(0, 6))}, "
            f"{d(st.integers(-7, 7))}"
        )
    if op in ("TSTORE", "TSTOREC"):
        return (
            f"{op} [P1 + {d(st.integers(-5, 200))}], {d(small)}, {d(st.integers(0, 4))}, {d(st.integers(0, 6))}, "
            f"{d(st.integers(-7, 7))}"
        )
    if op == "TLOADW":
        return f"TLOADW {d(st.integers(0, 60))}, [P1 + {d(st.integers(-3, 300))}], {d(st.integers(0, 70))}"
    if op == "CONV":
        g = d(st.integers(1, 2))
        ic, oc = g * d(st.integers(1, 3)), g * d(st.integers(1, 3))
        ih, iw, kh, kw, strides, pads = _window(d)
        fields = [ih, iw, ic, oc, kh, kw, *strides, *pads, g, d(st.integers(0, 1))]
        return f"CONV {d(small)}, {d(small)}, {d(st.integers(0, 60))}, " + ", ".join(map(str, fields))
    if op == "MATMUL":
        return (
            f"MATMUL {d(small)}, {d(small)}, {d(st.integers(0, 60))}, {d(st.integers(1, 3))}, "
            f"{d(st.integers(1, 4))}, {d(st.integers(1, 9))}, {d(st.integers(0, 1))}"
        )
    if op == "MATVEC":
        return (
            f"MATVEC {d(small)}, {d(small)}, {d(st.integers(0, 60))}, {d(st.integers(1, 4))}, "
            f"{d(st.integers(1, 9))}, {d(st.integers(0, 1))}"
        )
    if op == "POOL":
        ih, iw, kh, kw, strides, pads = _window(d)
        fields = [ih, iw, d(st.integers(1, 3)), kh, kw, *strides, *pads]
        return f"POOL {d(small)}, {d(small)}, " + ", ".join(map(str, fields)) + f", {d(st.integers(0, 2))}"
    if op == "REQUANTC":
        return (
            f"REQUANTC {d(small)}, {d(small)}, {d(st.integers(0, 3))}, {d(st.integers(1, 4))}, "
            f"{d(st.sampled_from([300, 300, 0]))}, {d(st.sampled_from([2, 8, 16]))}"
        )
    if op == "REQUANT":
        return (
            f"REQUANT {d(small)}, {d(small)}, {d(st.integers(0, 20))}, {d(st.integers(0, isa.MULT_MAX))}, "
            f"{d(st.integers(0, 62))}, {d(st.integers(1, 16))}"
        )
    if op == "EADD":
        m = st.integers(0, isa.MULT_MAX)
        s = st.integers(0, 40)
        return (
            f"EADD {d(small)}, {d(small)}, {d(small)}, {d(st.integers(0, 20))}, {d(m)}, {d(s)}, {d(m)}, {d(s)}, "
            f"{d(st.integers(1, 16))}"
        )
    if op == "TLUT":
        n = d(st.integers(1, 30))
        return f"TLUT {d(small)}, {d(small)}, {d(st.integers(0, 20))}, {d(small)}, {d(st.integers(-40, 40))}, {n}"
    if op == "TRELU":
        return f"TRELU {d(small)}, {d(small)}, {d(st.integers(0, 20))}"
    lo, hi = d(st.integers(-500, 50)), d(st.integers(-50, 500))
    return f"TCLAMP {d(small)}, {d(small)}, {d(st.integers(0, 20))}, {lo}, {hi}"


def scalar_instruction(data: st.DataObject | SimpleNamespace) -> str:
    """One random scalar instruction computing in P1..P8 (loads and stores near the memory image's words)."""
    d = data.draw
    r = st.sampled_from(REGS)
    src = st.sampled_from([0, *REGS])
    kind = d(st.sampled_from(["bin", "bin", "un", "addi", "movi", "movhi", "mac", "clamp", "quant", "mem", "stack"]))
    if kind == "bin":
        return f"{d(st.sampled_from(_BIN))} P{d(r)}, P{d(src)}, P{d(src)}"
    if kind == "un":
        return f"{d(st.sampled_from(_UN))} P{d(r)}, P{d(src)}"
    if kind == "addi":
        return f"ADDI P{d(r)}, P{d(src)}, {d(st.integers(-39062, 39062))}"
    if kind == "movi":
        return f"MOVI P{d(r)}, {d(st.integers(-4882812, 4882812))}"
    if kind == "movhi":
        return f"MOVHI P{d(r)}, {d(st.integers(-7812, 7812))}"
    if kind == "mac":
        return d(st.sampled_from([f"MAC P{d(r)}, P{d(src)}, P{d(src)}", "CLRACC"]))
    if kind == "clamp":
        return f"CLAMP P{d(r)}, P{d(src)}, P{d(src)}, P{d(src)}"
    if kind == "quant":
        return f"QUANT P{d(r)}, P{d(src)}, P{d(r)}"  # a step <= 0 faults
    if kind == "mem":
        op = d(st.sampled_from(["LOAD", "STORE", "LOADV", "STOREV"]))
        off = d(st.integers(-2, DATA_WORDS + 40))
        base = d(st.sampled_from([0, 0, 0, 1]))
        if op in ("LOADV", "STOREV"):
            reg = d(st.integers(1, 8))
            n = d(st.integers(1, 9 - reg))  # P1..P8 only
            return f"{op} P{reg}, [P{base} + {min(off, 312)}], {n}" if base == 0 else f"{op} P{reg}, [P1 + 3], {n}"
        return f"{op} P{d(r)}, [P{base} + {off}]"
    return d(st.sampled_from([f"PUSH P{d(src)}", f"PUSH P{d(src)}", f"POP P{d(r)}", "NOP", "SYNC", "FENCE"]))


def program(tensor: bool = True) -> st.SearchStrategy[str]:
    """The text of a random program: straight-line items, counted loops, forward branches and a call."""

    @st.composite
    def build(draw: st.DrawFn) -> str:
        dobj = SimpleNamespace(draw=draw)  # what the instruction strategies draw with
        labels = iter(range(10**6))

        def item(depth: int) -> list[str]:
            kind = draw(st.sampled_from(["scalar"] * 4 + (["tensor"] * 2 if tensor else []) + ["loop", "skip", "call"]))
            if kind == "scalar":
                return [scalar_instruction(dobj)]
            if kind == "tensor":
                return [tensor_instruction(dobj)]
            if kind == "call":
                return ["CALL sub"]
            if depth >= 1:
                return ["NOP"]
            body = [line for _ in range(draw(st.integers(1, 3))) for line in item(depth + 1)]
            k = next(labels)
            if kind == "loop":  # P9 counts down; nothing in the body writes it
                return [
                    f"MOVI P9, {draw(st.integers(1, 4))}",
                    f"loop{k}:",
                    *body,
                    "ADDI P9, P9, -1",
                    f"BNE P9, loop{k}",
                ]
            test = draw(st.sampled_from(["BEQ", "BNE", "BLT", "BGT"]))
            return [f"{test} P{draw(st.sampled_from([0, *REGS]))}, skip{k}", *body, f"skip{k}:"]

        main = [line for _ in range(draw(st.integers(1, 12))) for line in item(0)]
        sub = [scalar_instruction(dobj) for _ in range(draw(st.integers(0, 3)))]
        lines = [".text", "LOAD P1, [P0 + 0]", *main, "HALT", "sub:", *sub, "RET"]
        return "\n".join(f"    {x}" if not x.endswith(":") and not x.startswith(".") else x for x in lines) + "\n"

    return build()


def memory_image(rng: np.random.Generator) -> np.ndarray:
    """Main-memory words 0..DATA_WORDS-1: random words, word 0 the DMA base (a negative one makes DMA fault)."""
    img = rng.integers(-W, W, DATA_WORDS, endpoint=True)
    img[1:20] = rng.integers(-50, 50, 19)  # small values too: steps for QUANT, products that do not wrap
    img[0] = rng.choice([0, 0, 3, -2])
    return img


def machine_setup(rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Scratchpad contents to preset in both engines (valid REQUANTC multipliers and shifts at C[300..307])."""
    c0 = rng.integers(-(2**40), 2**40, 340)
    c0[300:304] = rng.integers(0, isa.MULT_MAX, 4)
    c0[304:308] = rng.integers(0, 40, 4)
    return {"A@0": rng.integers(-(10**6), 10**6, 260), "W@0": rng.integers(-2, 3, 200), "C@0": c0}
