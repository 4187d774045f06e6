"""Core commands of the ``pcc`` CLI (IR tools); stage commands live in each stage's ``cli.py``."""

from __future__ import annotations

import sys
from pathlib import Path

import typer

from pcc.diagnostics import PccError, refuse_overwrite


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
    list_ops: bool = typer.Option(
        False, "--list-ops", help="List every op and its rule in each stage it passes through, and exit."
    ),
) -> None:
    """Parse, verify and transform an IR file with a pass pipeline."""
    if list_passes:
        _print_passes()
        return
    if list_ops:
        sys.stdout.write(ops_table())
        return
    if file is None:
        raise typer.BadParameter("an input .pir file is needed", param_hint="FILE")
    from pcc.printer import print_module, write_module

    refuse_overwrite(output, file)
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
            doc = f.metadata.get("doc")
            typer.echo(f"{'':<22}{f.name.replace('_', '-')}={f.default!r}" + (f"  {doc}" if doc else ""))


def load_stages() -> None:
    """Import every stage's rule table (:data:`pcc.rules.STAGE_MODULES`), for the op x stage listing."""
    import importlib

    from pcc.rules import STAGE_MODULES

    for mod in STAGE_MODULES.values():
        importlib.import_module(mod)


def ops_table() -> str:
    """The op x stage matrix of the rule tables (:func:`pcc.rules.coverage`) as text: one row per op, a column
    per stage, ``x`` for a rule, ``-`` for a declared gap (its reason below), ``MISSING`` for neither."""
    from pcc.rules import DIALECT_STAGES, coverage

    load_stages()
    stages = [s for d in DIALECT_STAGES.values() for s in d]
    rows = coverage()
    w = max(len(cls.name) for cls, _ in rows)
    lines = [f"{'op':<{w}}  " + "  ".join(stages), ""]
    reasons: dict[str, list[str]] = {}
    for cls, status in rows:
        cells = []
        for st in stages:
            v = status.get(st)
            mark = "" if v is None else ("x" if v == "rule" else ("MISSING" if v == "MISSING" else "-"))
            if v is not None and v.startswith("unsupported: "):
                reasons.setdefault(f"{st}: {v.removeprefix('unsupported: ')}", []).append(cls.name)
            cells.append(f"{mark:^{len(st)}}")
        lines.append(f"{cls.name:<{w}}  " + "  ".join(cells).rstrip())
    if reasons:
        lines.append("")
        lines.append("declared gaps (-):")
        for why, names in reasons.items():
            lines.append(f"  {why}: {', '.join(names)}")
    missing = sum(v == "MISSING" for _, st in rows for v in st.values())
    lines.append("")
    lines.append(f"{len(rows)} ops; {missing} missing rule(s)")
    return "\n".join(lines) + "\n"
