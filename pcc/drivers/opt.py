"""Core commands of the ``pcc`` CLI (IR tools); stage commands live in each stage's ``cli.py``."""

from __future__ import annotations

import sys
from pathlib import Path

import typer

from pcc.diagnostics import PccError


def load_ir(path: Path):  # noqa: ANN201
    """Parse and verify a ``.pir`` file (with its sidecar weights)."""
    from pcc.parser import parse_file
    from pcc.verifier import verify_module

    if not path.exists():
        raise PccError(f"{path}: no such file")
    module = parse_file(path)
    verify_module(module)
    return module


def run_pipeline(
    module,  # noqa: ANN001
    pipeline: str,
    *,
    verify_each: bool = False,
    print_ir_after_all: bool = False,
    print_ir_after: list[str] | None = None,
    dump_dir: Path | None = None,
    timing: bool = False,
):  # noqa: ANN201
    """Run a pipeline string over ``module`` with the CLI's debugging options."""
    from pcc.pass_manager import PassManager, parse_pipeline

    passes = parse_pipeline(pipeline) if pipeline.strip() else []
    pm = PassManager(
        passes,
        verify_each=verify_each,
        print_ir_after_all=print_ir_after_all,
        print_ir_after=print_ir_after or [],
        dump_dir=dump_dir,
        timing=timing,
    )
    return pm.run(module)


def opt(
    file: Path | None = typer.Argument(None, help="Input IR file (.pir); its sidecar weights are found by name."),
    passes: str = typer.Option(
        "", "--passes", "-p", help="Pipeline, e.g. 'dce,fold-batchnorm,quantize{per-tensor=true}'."
    ),
    output: Path | None = typer.Option(
        None,
        "-o",
        "--output",
        help="Write the result here (.pir, plus a .npz sidecar for large weights); default: print the IR to stdout.",
    ),
    verify_each: bool = typer.Option(False, "--verify-each", help="Verify the IR after every pass."),
    print_ir_after_all: bool = typer.Option(False, "--print-ir-after-all", help="Print the IR after each pass."),
    print_ir_after: list[str] = typer.Option(
        [], "--print-ir-after", help="Print the IR after the named pass (repeatable)."
    ),
    dump_dir: Path | None = typer.Option(
        None, "--dump-dir", help="Write numbered dumps 000-input.pir, 001-<pass>.pir, ... into this folder."
    ),
    timing: bool = typer.Option(False, "--timing", help="Print the time spent in each pass."),
    list_passes: bool = typer.Option(False, "--list-passes", help="List the registered passes and exit."),
) -> None:
    """Parse, verify and transform an IR file with a pass pipeline."""
    if list_passes:
        _print_passes()
        return
    if file is None:
        raise typer.BadParameter("an input .pir file is needed", param_hint="FILE")
    from pcc.printer import print_module, write_module

    module = load_ir(file)
    run_pipeline(
        module,
        passes,
        verify_each=verify_each,
        print_ir_after_all=print_ir_after_all,
        print_ir_after=print_ir_after,
        dump_dir=dump_dir,
        timing=timing,
    )
    if output is None:
        sys.stdout.write(print_module(module))
    else:
        for p in write_module(module, output):
            typer.echo(f"wrote {p}", err=True)


def _print_passes() -> None:
    import dataclasses

    from pcc.pass_manager import PASS_REGISTRY

    for name in sorted(PASS_REGISTRY):
        cls = PASS_REGISTRY[name]
        doc = (cls.__doc__ or "").strip().splitlines()[0] if cls.__doc__ else ""
        typer.echo(f"{name:<20} {doc}")
        for f in dataclasses.fields(cls):  # type: ignore[arg-type]
            typer.echo(f"{'':<22}{f.name.replace('_', '-')}={f.default!r}")
