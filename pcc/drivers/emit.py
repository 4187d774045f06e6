"""``pcc compile --emit pent|asm|bin``: the backend's emitters, registered with :mod:`pcc.drivers.compile`.

- ``pent``: the ``pent`` IR after the default pipeline (quantized, fused, scheduled, planned, tiled), ``.pir``;
- ``asm``: pentary assembly ``<stem>.pasm`` plus its packed parameter blob ``<stem>.weights.bin``;
- ``bin``: the assembled binary ``<stem>.pbin`` (code, data and I/O declarations in one file).

``asm`` and ``bin`` end with a one-line summary on standard error (ops, weights, packed size, planned
activation memory, instructions, estimated cycles from the ISA table's costs).
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

from pcc.drivers.compile import CompileResult, register_emitter
from pcc.ir import Module
from pcc.isa import DEFAULT_CONFIG, MachineConfig
from pcc.passes.pipeline import DEFAULT_PIPELINE


def _generate(module: Module, machine: MachineConfig) -> CompileResult:
    from pcc.backend.codegen import generate

    return CompileResult(module, generate(module, machine))


def _say(result: CompileResult, out: Path) -> None:
    print(
        result.summary(Path(result.module.source).name if result.module.source else "@" + result.module.name, str(out)),
        file=sys.stderr,
    )


@register_emitter(
    "pent",
    ".pir",
    pipeline=DEFAULT_PIPELINE,
    help="the pent IR after quantize, fold-flatten, fuse, schedule, plan-memory, tile",
)
def _emit_pent(module: Module, path: Path | None, machine: MachineConfig = DEFAULT_CONFIG) -> list[Path]:
    from pcc.printer import print_module, write_module

    if path is None:
        sys.stdout.write(print_module(module))
        return []
    return write_module(module, path)


@register_emitter(
    "asm",
    ".pasm",
    pipeline=DEFAULT_PIPELINE,
    help="pentary assembly + <stem>.weights.bin (run with pcc run)",
    text=False,
)
def _emit_asm(module: Module, path: Path | None, machine: MachineConfig = DEFAULT_CONFIG) -> list[Path]:
    from pcc.backend.codegen import write_program

    assert path is not None
    result = _generate(module, machine)
    written = write_program(result.compiled, path)
    _say(result, path)
    return written


@register_emitter("bin", ".pbin", pipeline=DEFAULT_PIPELINE, help="the assembled binary (.pbin)", text=False)
def _emit_bin(module: Module, path: Path | None, machine: MachineConfig = DEFAULT_CONFIG) -> list[Path]:
    from pcc.backend import binary
    from pcc.backend.assembler import assemble_file
    from pcc.backend.codegen import write_program

    assert path is not None
    result = _generate(module, machine)
    with tempfile.TemporaryDirectory() as tmp:
        asm_path = Path(tmp) / (path.stem + ".pasm")
        write_program(result.compiled, asm_path)
        program = assemble_file(asm_path)
    binary.write(program, path)
    _say(result, path)
    return [path]
