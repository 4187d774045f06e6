"""The disassembler: a :class:`~pcc.backend.program.Program` back to assembly text.

The text assembles to the identical binary: labels come from the symbol table (in its order), branch targets
print as the label at their destination when there is one and as the numeric offset otherwise, every data
segment starts with its own ``.org``, and the I/O declarations are printed with their exact scale (``repr``).
With ``incbin`` set, data segments of at least ``incbin_min`` words are written to packed-pent side files and
included with ``.incbin`` so the text stays small.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from pcc import isa
from pcc.backend.binary import pack_words
from pcc.backend.program import DataSegment, Instruction, IODecl, Program, format_io_name

WORDS_PER_LINE = 16


def _reg(v: int) -> str:
    return f"P{v}"


def format_instruction(ins: Instruction, text_labels: dict[int, str] | None = None) -> str:
    """One instruction as assembly (mnemonic in upper case, operands as the table's syntax)."""
    info = isa.BY_OPCODE[ins.op]
    parts = []
    args = iter(ins.args)
    for op in info.operands:
        if op.is_mem:
            base, off = next(args), next(args)
            parts.append(f"[P{base} + {off}]" if off >= 0 else f"[P{base} - {-off}]")
            continue
        f = op.fields[0]
        v = next(args)
        if f.kind is isa.Kind.REG:
            parts.append(_reg(v))
        elif f.kind is isa.Kind.TARGET and text_labels and (ins.addr + v) in text_labels:
            parts.append(text_labels[ins.addr + v])
        else:
            parts.append(str(v))
    return f"{info.mnemonic} {', '.join(parts)}" if parts else info.mnemonic


def _io_line(kind: str, d: IODecl) -> str:
    text = (
        f".{kind} {format_io_name(d.name)}, shape=[{', '.join(map(str, d.shape))}], pents={d.pents}, "
        f"scale={d.scale!r}, addr={d.addr}"
    )
    if d.order is not None:
        text += f", order=[{', '.join(map(str, d.order))}]"
    return text


def disassemble(
    program: Program,
    *,
    comments: bool = True,
    incbin: Callable[[int, DataSegment], str] | None = None,
    incbin_min: int = 1024,
) -> str:
    """Assembly text for ``program``.

    ``comments`` adds the text address of each instruction as a trailing comment. ``incbin`` (given the
    segment's index and the segment, it writes a side file and returns its name) moves segments of at least
    ``incbin_min`` words out of the text.
    """
    out: list[str] = []
    w = out.append
    w(f"; disassembled by pcc{f' from {program.file}' if program.file else ''}")
    for d in program.inputs:
        w(_io_line("input", d))
    for d in program.outputs:
        w(_io_line("output", d))
    text_syms = [s for s in program.symbols if s.section == "text"]
    data_syms = [s for s in program.symbols if s.section == "data"]
    first_label: dict[int, str] = {}
    labels_at: dict[int, list[str]] = {}
    for s in text_syms:
        first_label.setdefault(s.addr, s.name)
        labels_at.setdefault(s.addr, []).append(s.name)
    w(".text")
    for ins in program.instructions:
        for name in labels_at.pop(ins.addr, ()):
            w(f"{name}:")
        line = "    " + format_instruction(ins, first_label)
        if comments:
            line = f"{line:<48} ; @{ins.addr}"
        w(line)
    for addr in sorted(labels_at):  # labels at the end of the text
        for name in labels_at[addr]:
            w(f"{name}:")
    if program.data or data_syms:
        w(".data")
    dl: dict[int, list[str]] = {}
    for s in data_syms:
        dl.setdefault(s.addr, []).append(s.name)
    pos: int | None = None

    def labels_upto(limit: int) -> None:
        """Emit the data labels below ``limit`` that no segment covers, each after an .org."""
        nonlocal pos
        for addr in sorted(a for a in dl if a < limit):
            if pos != addr:
                w(f".org {addr}")
                pos = addr
            for name in dl.pop(addr):
                w(f"{name}:")

    for index, seg in enumerate(sorted(program.data, key=lambda s: s.addr)):
        labels_upto(seg.addr)
        w(f".org {seg.addr}")
        pos = seg.addr
        inner = sorted(a for a in dl if seg.addr <= a < seg.end)
        if incbin is not None and seg.words.size >= incbin_min and inner in ([], [seg.addr]):
            for name in dl.pop(seg.addr, ()):
                w(f"{name}:")
            w(f'.incbin "{incbin(index, seg)}"')
            pos = seg.end
            continue
        words = seg.words.tolist()
        cuts = sorted({0, len(words), *(a - seg.addr for a in inner)})
        for lo, hi in zip(cuts, cuts[1:], strict=False):
            for name in dl.pop(seg.addr + lo, ()):
                w(f"{name}:")
            for k in range(lo, hi, WORDS_PER_LINE):
                w("    .word " + ", ".join(map(str, words[k : min(k + WORDS_PER_LINE, hi)])))
        pos = seg.end
    labels_upto(isa.DEFAULT_CONFIG.dram_words + (1 << 62))
    return "\n".join(out) + "\n"


def incbin_writer(asm_path: str | os.PathLike[str]) -> Callable[[int, DataSegment], str]:
    """An ``incbin`` callback writing ``<stem>.data<N>.bin`` beside ``asm_path``."""
    base = Path(asm_path)

    def write(index: int, seg: DataSegment) -> str:
        from pcc.diagnostics import atomic_write

        name = f"{base.stem}.data{index}.bin"
        atomic_write(base.with_name(name), pack_words(seg.words))
        return name

    return write


__all__ = ["disassemble", "format_instruction", "incbin_writer"]
