"""The compile driver: ``load_model`` -> pass pipeline -> emit, and the ``pcc compile`` command.

Stages plug in through two tables:

- :data:`EMITTERS`: what ``--emit`` can produce.  Each :class:`Emitter` names its file extension, its default
  pass pipeline (run when ``--passes`` is not given) and a ``write(module, path, machine)`` function; ``path``
  is None for standard output (text emitters only), ``machine`` the target (``--machine``).  ``ir`` (the
  imported ``nn`` IR as ``.pir`` + ``.npz``) is built in; the backend registers ``pent``/``asm``/``bin`` with
  :func:`register_emitter`.
- the pass registry (:mod:`pcc.pass_manager`), through the pipeline string.

``compile_model`` is the same flow for Python callers.
"""

from __future__ import annotations

import contextlib
import os
import sys
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import typer

from pcc import limits
from pcc.diagnostics import PccError, refuse_overwrite
from pcc.ir import Module
from pcc.isa import DEFAULT_CONFIG, MachineConfig
from pcc.pass_manager import Pass, PassManager

__all__ = ["Emitter", "EMITTERS", "register_emitter", "compile_model", "parse_input_shape", "parse_input_shapes"]


@dataclass(frozen=True)
class Emitter:
    """One ``--emit`` kind."""

    name: str
    ext: str  # file extension of the artefact, e.g. ".pir"
    write: Callable[[Module, Path | None, MachineConfig], list[Path]]  # path None: standard output (text)
    pipeline: str = ""  # default pass pipeline before writing
    help: str = ""
    text: bool = True  # can be written to standard output


EMITTERS: dict[str, Emitter] = {}


_Writer = Callable[[Module, Path | None, MachineConfig], list[Path]]


def register_emitter(
    name: str, ext: str, *, pipeline: str = "", help: str = "", text: bool = True
) -> Callable[[_Writer], _Writer]:
    """Decorator: make ``--emit NAME`` write artefacts with the decorated ``write(module, path, machine)``
    (``machine``: the target, a :class:`MachineConfig`)."""

    def deco(fn: _Writer) -> _Writer:
        EMITTERS[name] = Emitter(name, ext, fn, pipeline, help, text)
        return fn

    return deco


@register_emitter("ir", ".pir", help="the nn IR as imported (.pir text plus a .npz sidecar for large weights)")
def _emit_ir(module: Module, path: Path | None, machine: MachineConfig = DEFAULT_CONFIG) -> list[Path]:
    from pcc.printer import print_module, write_module

    if path is None:
        sys.stdout.write(print_module(module))
        return []
    return write_module(module, path)


def _load_emitters() -> None:
    """Give later stages a chance to register their emitters (``pcc.drivers.emit``), if present."""
    import importlib

    for name in ("pcc.drivers.emit",):
        try:
            importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name != name:
                raise


def parse_input_shape(text: str) -> tuple[str, tuple[int, ...]]:
    """``NAME=1x3x224x224`` -> ``("NAME", (1, 3, 224, 224))``; raises ValueError with the reason."""
    name, sep, dims = text.rpartition("=")
    if not sep or not name:
        raise ValueError(f"expected NAME=DIMS such as input=1x3x224x224, got {text!r}")
    parts = dims.lower().replace(",", "x").split("x")
    try:
        shape = tuple(int(p) for p in parts)
    except ValueError:
        raise ValueError(f"bad dimensions {dims!r} in {text!r}: expected integers separated by 'x'") from None
    if any(d <= 0 for d in shape):
        raise ValueError(f"dimension {min(shape)} in {text!r}: give the size to compile for (a positive integer)")
    try:
        limits.check_shape(shape, 4, f"--input-shape {text}")
    except PccError as exc:
        raise ValueError(exc.message + "; " + "; ".join(exc.notes)) from None
    return name, shape


def parse_input_shapes(texts: Sequence[str]) -> dict[str, tuple[int, ...]]:
    """Repeated ``--input-shape NAME=DIMS`` options as ``{name: shape}`` (typer.BadParameter on a bad one)."""
    shapes: dict[str, tuple[int, ...]] = {}
    for text in texts:
        try:
            name, dims = parse_input_shape(text)
        except ValueError as exc:
            raise typer.BadParameter(str(exc), param_hint="--input-shape") from None
        if name in shapes:
            raise typer.BadParameter(f"input {name!r} given twice", param_hint="--input-shape")
        shapes[name] = dims
    return shapes


def compile_model(
    model: str | os.PathLike[str],
    *,
    emit: str | None = None,
    output: str | os.PathLike[str] | None = None,
    input_shapes: Mapping[str, Sequence[int]] | None = None,
    passes: str | None = None,
    print_ir_after_all: bool = False,
    dump_dir: str | os.PathLike[str] | None = None,
    verify_each: bool = False,
    timing: bool = False,
    progress: bool = False,
    machine: str | MachineConfig | None = None,
    **quantize_options: Any,
) -> list[Path]:
    """Load ``model``, run the pipeline (``passes``, or the emitter's default) and write the artefact.

    ``progress`` shows a progress bar on stderr (the CLI turns it on for a terminal).
    ``emit`` None picks the emitter from ``output``'s extension (.pir: ir, .pasm: asm, .pbin: bin), else asm.
    ``output`` None writes ``<model stem><ext>`` in the current folder; ``"-"`` writes text to standard output.
    ``machine`` is the target (a :class:`MachineConfig` or ``--machine``'s text, see :mod:`pcc.machine`; None:
    the present machine): its scratchpads size the tiles, its main memory is checked before quantizing and by
    code generation, and the program records it.
    ``quantize_options`` (``calibration``, ``act_pents``, ``per_tensor``, ...: the quantize pass's fields by
    name) set the options of the pipeline's ``quantize`` pass.
    Returns the paths written.
    """
    from pcc.frontends import load_model
    from pcc.machine import check_fits, parse_machine
    from pcc.pass_manager import PassManager
    from pcc.passes.pipeline import with_machine, with_quantize_options
    from pcc.passes.quantize import Quantize

    _load_emitters()
    if emit is None:  # from the output's extension (.pir -> ir, .pasm -> asm, .pbin -> bin), else assembly
        suffix = Path(str(output)).suffix if output not in (None, "-") else ""
        emit = {".pir": "ir", ".pasm": "asm", ".pbin": "bin"}.get(suffix, "asm")
    emitter = EMITTERS.get(emit)
    if emitter is None:
        raise PccError(f"unknown --emit {emit!r}; known: {', '.join(sorted(EMITTERS))}")
    src = Path(model)
    if output is None:
        out: Path | None = Path(src.stem + emitter.ext)
    elif str(output) == "-":
        if not emitter.text:
            raise PccError(f"--emit {emit} writes a binary file; give a path with -o")
        out = None
    else:
        out = Path(output)
    refuse_overwrite(out, src, quantize_options.get("calibration"))
    pipeline = emitter.pipeline if passes is None else passes
    target = parse_machine(machine)
    pass_list = with_machine(with_quantize_options(pipeline, **quantize_options), target)
    with _progress(progress, len(pass_list) + 1) as step:
        step(f"import {src.name}")
        module = load_model(src, input_shapes)

        def on_pass(i: int, p: Pass) -> None:
            if isinstance(p, Quantize):
                check_fits(module, target)  # the float graph against main memory, before the slow part
            step(f"pass {i + 1}/{len(pass_list)}: {p.name}")

        PassManager(
            pass_list,
            verify_each=verify_each,
            print_ir_after_all=print_ir_after_all,
            dump_dir=Path(dump_dir) if dump_dir is not None else None,
            timing=timing,
            on_pass=on_pass,
        ).run(module)
    written = emitter.write(module, out, target)  # after the bar is gone: the emitter prints its summary line
    if src.suffix.lower() == ".json" and written and emit in ("asm", "bin", "ir"):
        # a language model's vocabulary travels beside its program (pcc generate reads it)
        from pcc.drivers.generate import write_tokenizer
        from pcc.trainer.model_format import read_json

        tok = write_tokenizer(read_json(src), written[0])
        if tok is not None:
            written.append(tok)
    return written


@contextlib.contextmanager
def _progress(enabled: bool, total: int) -> Iterator[Callable[[str], None]]:
    """A progress bar on the terminal (rich) with the stage being run; a no-op when disabled."""
    if not enabled:
        yield lambda _label: None
        return
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    columns = (TextColumn("compile"), BarColumn(), TextColumn("{task.description}"), TimeElapsedColumn())
    with Progress(*columns, transient=True, console=_stderr_console()) as bar:
        task = bar.add_task("", total=total)
        started = [False]

        def step(label: str) -> None:
            if started[0]:
                bar.advance(task)
            started[0] = True
            bar.update(task, description=label)

        yield step


def _stderr_console():  # noqa: ANN202
    from rich.console import Console

    return Console(stderr=True)


@contextlib.contextmanager
def _warnings_as_diagnostics() -> Iterator[None]:
    """Print pcc's own warnings (e.g. quantize's CalibrationWarning) as ``warning: message`` lines."""
    shown = warnings.showwarning

    def show(message, category, filename, lineno, file=None, line=None) -> None:  # noqa: ANN001
        if category.__module__.startswith("pcc."):
            print(f"warning: {message}", file=sys.stderr)
        else:
            shown(message, category, filename, lineno, file, line)

    warnings.showwarning = show
    try:
        yield
    finally:
        warnings.showwarning = shown


# the quantize options with a CLI flag of their own
QUANTIZE_FLAGS = ("calibration", "act_pents", "weight_pents", "error_budget", "per_tensor")


def quantize_flags(command: Callable[..., Any]) -> Callable[..., Any]:
    """Give a CLI command the flags of :data:`QUANTIZE_FLAGS` (``--calibration``, ``--act-pents``,
    ``--per-tensor``), made from the quantize pass's fields (type, default, help), so that no command declares
    them again; the command receives them as one ``quantize: dict`` argument (unset flags left out)."""
    import dataclasses
    import functools
    import inspect

    from pcc.passes.quantize import Quantize

    fields = {f.name: f for f in dataclasses.fields(Quantize)}
    extra = []
    for name in QUANTIZE_FLAGS:
        f = fields[name]
        flag, doc = "--" + name.replace("_", "-"), f.metadata.get("doc", "")
        if f.type in (bool, "bool"):
            default, annotation = typer.Option(False, flag, help=doc + " (quantize)"), bool
        elif f.type in (int, "int"):
            default, annotation = typer.Option(None, flag, help=doc + " (quantize)"), int | None
        elif f.type in (float, "float"):
            default, annotation = typer.Option(None, flag, help=doc + " (quantize)"), float | None
        else:
            default, annotation = typer.Option(None, flag, help=doc + " (quantize)"), Path | None
        extra.append(inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=default, annotation=annotation))
    sig = inspect.signature(command)
    params = [p for p in sig.parameters.values() if p.name != "quantize"]

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        given = {n: kwargs.pop(n, None) for n in QUANTIZE_FLAGS}
        quantize = {n: v for n, v in given.items() if v is not None and v is not False}
        return command(*args, quantize=quantize, **kwargs)

    wrapper.__signature__ = sig.replace(parameters=params + extra)  # type: ignore[attr-defined]
    return wrapper


@quantize_flags
def compile_command(
    model: Path = typer.Argument(..., help="Model file: .onnx, .pt2 (torch.export.save), .json (trainer) or .pir."),
    output: str | None = typer.Option(
        None, "-o", "--output", help="Output path (default: <model stem>.<ext> here; '-' for stdout)."
    ),
    emit: str | None = typer.Option(
        None,
        "--emit",
        help="What to produce: ir (the imported nn IR as .pir + .npz), pent (the quantized pent IR), "
        "asm (pentary assembly .pasm + <stem>.weights.bin, for pcc run) or bin (.pbin). "
        "Default: from the -o extension (.pir, .pasm, .pbin), else asm.",
    ),
    input_shape: list[str] = typer.Option(
        [], "--input-shape", help="Fix an input's shape, e.g. input=1x3x224x224 (repeatable)."
    ),
    passes: str | None = typer.Option(
        None, "--passes", "-p", help="Pass pipeline (default: the one for --emit; '' for none)."
    ),
    print_ir_after_all: bool = typer.Option(False, "--print-ir-after-all", help="Print the IR after each pass."),
    dump_dir: Path | None = typer.Option(None, "--dump-dir", help="Write numbered IR dumps after each pass here."),
    verify_each: bool = typer.Option(False, "--verify-each", help="Verify the IR after every pass."),
    timing: bool = typer.Option(False, "--timing", help="Print the time spent in each pass."),
    machine: str | None = typer.Option(
        None,
        "--machine",
        help="Target machine sizes: dram=32M,a=1M,w=2M,c=128K (words; W in pents), a named target (default, "
        "large) or a .json file; default: the present machine.",
    ),
    quantize: dict[str, Any] | None = None,
) -> None:
    """Compile a model: import it, run the pass pipeline and write the chosen artefact."""
    shapes = parse_input_shapes(input_shape)
    _load_emitters()
    if emit is not None and emit not in EMITTERS:
        raise typer.BadParameter(f"{emit!r}; known: {', '.join(sorted(EMITTERS))}", param_hint="--emit")
    with _warnings_as_diagnostics():
        written = compile_model(
            model,
            emit=emit,
            output=output,
            input_shapes=shapes or None,
            passes=passes,
            print_ir_after_all=print_ir_after_all,
            dump_dir=dump_dir,
            verify_each=verify_each,
            timing=timing,
            progress=sys.stderr.isatty() and not print_ir_after_all and not timing,
            machine=machine,
            **(quantize or {}),
        )
    for p in written:
        typer.echo(f"wrote {p}", err=True)


@dataclass
class CompileResult:
    module: Module
    compiled: object  # backend.codegen.Compiled

    def summary(self, source: str = "model", output: str | None = None) -> str:
        from pcc.passes.plan_memory import plan_graph

        c = self.compiled
        plan = plan_graph(self.module.main)
        n_ops = sum(1 for op in self.module.main.body if op.name not in ("pent.quantize", "pent.dequantize"))
        kib = len(c.blob) / 1024
        ms = c.cycles / DEFAULT_CONFIG.clock_hz * 1e3
        ghz = DEFAULT_CONFIG.clock_hz / 1e9
        text = (
            f"compiled {source}: {n_ops} ops, {c.weight_pents:,} weights ({kib:,.1f} KiB packed), "
            f"planned activation memory {plan.arena_words:,} words (naive {plan.naive_words:,}), "
            f"{c.instructions:,} instructions, ~{c.cycles:,} cycles ({ms:,.3f} ms at {ghz:g} GHz)"
        )
        return text + (f" -> {output}" if output else "")


def compile_module(
    module: Module,
    passes: list[Pass] | None = None,
    *,
    print_ir_after_all: bool = False,
    dump_dir: str | os.PathLike[str] | None = None,
    verify_each: bool = False,
    generate: bool = True,
) -> CompileResult:
    """Run the pipeline (default: :func:`default_passes`) and generate the program."""
    from pcc.backend.codegen import generate as gen
    from pcc.passes.pipeline import default_passes

    pm = PassManager(
        passes if passes is not None else default_passes(),
        verify_each=verify_each,
        print_ir_after_all=print_ir_after_all,
        dump_dir=Path(dump_dir) if dump_dir is not None else None,
    )
    pm.run(module)
    return CompileResult(module, gen(module) if generate else None)
