"""The ``pcc`` command line.

Every command is registered here, from the :data:`COMMANDS` table; this module owns the application, the
global options and the error policy: a :class:`~pcc.diagnostics.PccError` (or a bad file) is
printed as one diagnostic with exit code 1, usage errors exit 2, and a traceback is shown only with ``--debug``.
"""

from __future__ import annotations

import importlib
import os
import sys
import warnings

import typer

from pcc import __version__
from pcc.diagnostics import PccError

app = typer.Typer(
    name="pcc",
    help="pcc, the pentary compiler collection: train, compile, assemble, simulate and profile neural networks "
    "for a balanced base-5 processor.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"pcc {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the version and exit."
    ),
    debug: bool = typer.Option(
        False, "--debug", help="Show Python tracebacks for errors (also PCC_DEBUG=1).", envvar="PCC_DEBUG"
    ),
) -> None:
    if debug:
        os.environ["PCC_DEBUG"] = "1"


# Every pcc command, in --help order: (name, module, function, help). Each function is a plain typer command
# defined beside what it drives: the drivers that combine stages in pcc.drivers, single-stage commands in that
# stage's cli module. Commands whose help is None take it from the function's docstring.
_TRAIN_HELP = (
    "Train a pentary network with quantization-aware training (the seed's train_pentary_nn.py). "
    "Without --data-dir or --dataset it trains on synthetic data and says so."
)
COMMANDS: tuple[tuple[str, str, str, str | None], ...] = (
    ("opt", "pcc.drivers.opt", "opt", "Parse, verify and transform an IR file with a pass pipeline."),
    (
        "compile",
        "pcc.drivers.compile",
        "compile_command",
        "Compile a model (.onnx/.pt2/.json/.pir) to pentary assembly, a binary or IR.",
    ),
    ("export", "pcc.drivers.export", "export", None),
    ("asm", "pcc.backend.cli", "asm", None),
    ("disasm", "pcc.backend.cli", "disasm", None),
    ("run", "pcc.runtime.cli", "run", None),
    ("check", "pcc.drivers.check", "check", None),
    ("demo", "pcc.drivers.demo", "demo", None),
    ("train", "pcc.trainer.cli", "train", _TRAIN_HELP),
    (
        "generate",
        "pcc.drivers.generate",
        "generate_command",
        "Sample text from a compiled character-level language model on the simulator.",
    ),
    (
        "convert",
        "pcc.trainer.cli",
        "convert",
        "Convert an ONNX (.onnx), torch.export (.pt2) or PyTorch (.pt/.pth) model to the pentary model JSON.",
    ),
    (
        "quantize",
        "pcc.trainer.cli",
        "quantize",
        "Re-quantize a model JSON (or the seed's float weights dict) to pents.",
    ),
)


def _register_commands() -> None:
    for name, module, function, help in COMMANDS:
        fn = getattr(importlib.import_module(module), function)
        # a command may name its click class (train takes space-separated lists): cls = the function's attribute
        app.command(name, help=help, cls=getattr(fn, "command_class", None))(fn)


_register_commands()


def _debug() -> bool:
    return os.environ.get("PCC_DEBUG", "") not in ("", "0") or "--debug" in sys.argv[1:]


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:  # noqa: ANN001
    """Warnings as ``warning: message`` lines, without Python source paths; libraries' deprecation notices
    (about their own APIs, nothing the user can act on) only with ``--debug``."""
    if issubclass(category, DeprecationWarning | PendingDeprecationWarning | FutureWarning) and not _debug():
        if not category.__module__.startswith("pcc."):
            return
    print(f"warning: {message}", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``pcc`` console script; returns the exit status."""
    shown = warnings.showwarning
    warnings.showwarning = _show_warning
    try:
        return _main(argv)
    finally:
        warnings.showwarning = shown


def _main(argv: list[str] | None) -> int:
    try:
        app(args=argv, prog_name="pcc")  # click handles --help and usage errors (exit 2) itself
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except PccError as exc:
        if _debug():
            raise
        print(exc.format(), file=sys.stderr)
        return 1
    except OSError as exc:
        if _debug():
            raise
        where = f"{exc.filename}: " if exc.filename else ""
        print(f"error: {where}{exc.strerror or exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    except Exception as exc:
        if _debug():
            raise
        print(f"error: internal error: {type(exc).__name__}: {exc}", file=sys.stderr)
        print("note: this is a bug in pcc; rerun with --debug for a traceback", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
