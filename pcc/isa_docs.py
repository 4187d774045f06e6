"""The generated part of docs/ISA.md: the instruction tables, rendered from the ISA table (:mod:`pcc.isa`).

``python -m pcc.isa_docs`` rewrites the part between the markers; a test fails when the file is out of date.
"""

from __future__ import annotations

from dataclasses import fields

from pcc.isa import DEFAULT_CONFIG, INSTRUCTIONS, Field, Instr, Kind, MachineConfig

DOC_BEGIN = "<!-- BEGIN GENERATED FROM pcc/isa.py: do not edit; regenerate with python -m pcc.isa_docs -->"
DOC_END = "<!-- END GENERATED -->"


def asm_syntax(ins: Instr) -> str:
    """The assembly form of an instruction, e.g. ``LOAD rd, [rb + off]``."""
    parts = []
    for op in ins.operands:
        if op.is_mem:
            parts.append(f"[{op.fields[0].name} + {op.fields[1].name}]")
        else:
            parts.append(op.fields[0].name)
    return f"{ins.mnemonic} {', '.join(parts)}" if parts else ins.mnemonic


def _field_text(f: Field) -> str:
    kind = {
        Kind.REG: "register",
        Kind.SIGNED: f"s{f.pents}",
        Kind.UNSIGNED: f"u{f.pents}",
        Kind.TARGET: f"t{f.pents} offset",
    }[f.kind]
    rng = "P0..P31" if f.kind is Kind.REG else f"{f.lo}..{f.hi}"
    return f"{f.name} ({kind}, {rng})"


def encoding_text(ins: Instr) -> str:
    """The pent layout of an instruction, e.g. ``p0-2 opcode=5 | p3-5 rd (register, P0..P31) | ...``."""
    pos = DEFAULT_CONFIG.opcode_pents
    parts = [f"p0-{pos - 1} opcode={ins.opcode}"]
    for f in ins.fields:
        parts.append(f"p{pos}-{pos + f.pents - 1} {_field_text(f)}")
        pos += f.pents
    total = ins.words * DEFAULT_CONFIG.instr_word_pents
    if pos < total:
        parts.append(f"p{pos}-{total - 1} zero")
    return " · ".join(parts)


def render_isa_markdown() -> str:
    """The generated part of docs/ISA.md: machine parameters, instruction summary and reference."""
    out = [DOC_BEGIN, "", "### Machine parameters (`MachineConfig`)", ""]
    out += ["| parameter | default | meaning |", "|---|---|---|"]
    for f in fields(MachineConfig):
        out.append(f"| `{f.name}` | {f.default!r} | {f.metadata['doc']} |")
    out += ["", "### Instruction summary", ""]
    out += ["| mnemonic | opcode | assembly | words | unit | flags | cycles |", "|---|---|---|---|---|---|---|"]
    for ins in INSTRUCTIONS:
        out.append(
            f"| {ins.mnemonic} | {ins.opcode} | `{asm_syntax(ins)}` | {ins.words} | {ins.unit.value} | "
            f"{ins.flags or '-'} | `{ins.cycles}` |"
        )
    out += ["", "### Instruction reference", ""]
    for ins in INSTRUCTIONS:
        out.append(f"#### {ins.mnemonic}")
        out.append("")
        out.append(f"- assembly: `{asm_syntax(ins)}`")
        out.append(f"- encoding ({ins.words} word{'s' if ins.words > 1 else ''}): {encoding_text(ins)}")
        out.append(f"- flags written: {' '.join(ins.flags) if ins.flags else 'none'}")
        out.append(f"- cycles: `{ins.cycles}`")
        if ins.checks:
            out.append("- assembler checks: " + "; ".join(f"`{c}`" for c in ins.checks))
        out.append("")
        out.append(ins.semantics)
        out.append("")
    out.append(DOC_END)
    return "\n".join(out)


def update_docs(path: str) -> bool:
    """Replace the generated part of the document at ``path``; True if it changed."""
    with open(path, encoding="utf-8") as f:
        text = f.read()
    start, end = text.index(DOC_BEGIN), text.index(DOC_END) + len(DOC_END)
    new = text[:start] + render_isa_markdown() + text[end:]
    if new != text:
        from pcc.diagnostics import atomic_write

        atomic_write(path, new)
    return new != text


def generated_section(text: str) -> str:
    """The generated part of a document (between the markers, inclusive)."""
    return text[text.index(DOC_BEGIN) : text.index(DOC_END) + len(DOC_END)]


if __name__ == "__main__":  # pragma: no cover
    import pathlib
    import sys

    doc = pathlib.Path(__file__).resolve().parent.parent / "docs" / "ISA.md"
    print(f"{doc}: {'updated' if update_docs(str(doc)) else 'up to date'}", file=sys.stderr)
