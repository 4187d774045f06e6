"""Hypothesis strategies for backend tests: programs that use every instruction with edge-case operands.

The generated text varies the spelling the assembler must accept (register aliases and case, decimal and
``0p`` literals, ``[Pb - x]``, labels or numeric offsets, both comment styles) and comes with the field values
it must assemble to, so the assembler is checked against ground truth, not against itself.
"""

from __future__ import annotations

from hypothesis import strategies as st

from pcc import isa
from pcc.pentary import format_literal

REG_SPELLINGS = {29: ["P29", "FP", "fp", "p29"], 30: ["P30", "SP", "sp"], 31: ["P31", "LR", "lr"]}

# One operand set per instruction that satisfies the static constraints (used when a draw breaks them).
VALID_DEFAULTS = {
    "CONV": (0, 0, 0, 4, 4, 2, 4, 3, 3, 1, 1, 1, 1, 1, 1, 2, 1),
    "POOL": (0, 0, 4, 4, 2, 2, 2, 2, 2, 0, 0, 0, 0, 1),
    "LOADV": (1, 2, -3, 4),
    "STOREV": (1, 2, 3, 4),
}


def field_values(f: isa.Field) -> st.SearchStrategy[int]:
    edges = sorted({f.lo, f.hi, max(f.lo, min(f.hi, 0)), max(f.lo, min(f.hi, 1)), max(f.lo, min(f.hi, -1))})
    return st.one_of(st.sampled_from(edges), st.integers(f.lo, f.hi))


@st.composite
def instruction(draw: st.DrawFn, ins: isa.Instr) -> tuple[isa.Instr, tuple[int, ...]]:
    args = tuple(draw(field_values(f)) for f in ins.fields)
    if not ins.check(*args):
        args = VALID_DEFAULTS[ins.mnemonic]
    return ins, args


@st.composite
def spell_int(draw: st.DrawFn, v: int) -> str:
    style = draw(st.sampled_from(["dec", "pent", "plus"]))
    if style == "pent":
        return format_literal(v)
    if style == "plus" and v >= 0:
        return f"+{v}"
    return str(v)


@st.composite
def spell_reg(draw: st.DrawFn, r: int) -> str:
    return draw(st.sampled_from(REG_SPELLINGS.get(r, [f"P{r}", f"p{r}"])))


@st.composite
def program(draw: st.DrawFn) -> tuple[str, list[tuple[int, tuple[int, ...]]]]:
    """(assembly text, [(opcode, field values)]) using every instruction at least once, shuffled."""
    items = [draw(instruction(ins)) for ins in isa.INSTRUCTIONS]
    items += draw(st.lists(st.sampled_from(isa.INSTRUCTIONS).flatmap(instruction), max_size=20))
    items = draw(st.permutations(items))
    addrs, pc = [], 0
    for ins, _ in items:
        addrs.append(pc)
        pc += ins.words
    label_at = {a: f"L{a}" for a in addrs if draw(st.booleans())}
    lines = [".text"]
    for (ins, args), addr in zip(items, addrs, strict=True):
        ops = []
        it = iter(args)
        for op in ins.operands:
            if op.is_mem:
                base, off = next(it), next(it)
                b = draw(spell_reg(base))
                if off == 0 and draw(st.booleans()):
                    ops.append(f"[{b}]")
                elif off < 0:
                    ops.append(f"[{b} - {draw(spell_int(-off))}]")
                else:
                    ops.append(f"[{b} + {draw(spell_int(off))}]")
                continue
            f, v = op.fields[0], next(it)
            if f.kind is isa.Kind.REG:
                ops.append(draw(spell_reg(v)))
            elif f.kind is isa.Kind.TARGET and (addr + v) in label_at and draw(st.booleans()):
                ops.append(label_at[addr + v])
            else:
                ops.append(draw(spell_int(v)))
        mnem = ins.mnemonic if draw(st.booleans()) else ins.mnemonic.lower()
        text = f"{mnem} {', '.join(ops)}" if ops else mnem
        comment = draw(st.sampled_from(["", "  ; c", "  # c"]))
        if addr in label_at:
            if draw(st.booleans()):
                lines.append(f"{label_at[addr]}:")
                lines.append(f"    {text}{comment}")
            else:
                lines.append(f"{label_at[addr]}: {text}{comment}")
        else:
            lines.append(f"    {text}{comment}")
    return "\n".join(lines) + "\n", [(ins.opcode, args) for ins, args in items]
