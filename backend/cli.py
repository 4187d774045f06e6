"""``pcc asm`` and ``pcc disasm``: the assembler and disassembler on the command line."""

from __future__ import annotations

from pathlib import Path

import typer

from pcc.backend import binary
from pcc.backend.assembler import assemble_file
from pcc.backend.disasm import disassemble, incbin_writer
from pcc.diagnostics import atomic_write, refuse_overwrite


def asm(
    source: Path = typer.Argument(..., metavar="SOURCE", help="Assembly file (.pasm) to assemble.", show_default=False),
    output: Path | None = typer.Option(
        None, "-o", "--output", help="Binary to write; default: the source with the suffix .pbin."
    ),
) -> None:
    """Assemble pentary assembly (.pasm) into a binary (.pbin).

    The binary holds code and data as packed pents (three pents in 7 bits), the labels and the I/O declarations.

    Mistakes are reported as file:line:col with the source line and a caret.

    docs/ISA.md describes the instruction set, the assembly syntax and the binary layout.
    """
    out = output if output is not None else source.with_suffix(".pbin")
    refuse_overwrite(out, source)
    program = assemble_file(source)
    binary.write(program, out)


def disasm(
    binary_file: Path = typer.Argument(
        ..., metavar="BINARY", help="Binary (.pbin) to disassemble.", show_default=False
    ),
    output: Path | None = typer.Option(None, "-o", "--output", help="Write the assembly here instead of stdout."),
    addresses: bool = typer.Option(True, "--addresses/--no-addresses", help="Comment each line with its address."),
    incbin_min: int = typer.Option(
        0,
        "--incbin-min",
        help="With -o, write data segments of at least this many words to packed side files "
        "(<stem>.dataN.bin) included with .incbin; 0 keeps all data as .word lines.",
    ),
) -> None:
    """Disassemble a binary (.pbin) into assembly that assembles back to the identical binary.

    Labels come from the binary's symbol table; every data segment starts with its own .org.
    """
    refuse_overwrite(output, binary_file)
    program = binary.read(binary_file)
    writer = incbin_writer(output) if output is not None and incbin_min > 0 else None
    text = disassemble(program, comments=addresses, incbin=writer, incbin_min=max(incbin_min, 1))
    if output is None:
        typer.echo(text, nl=False)
    else:
        atomic_write(output, text)
