"""``pcc run``: simulate a program (.pasm or .pbin) on real-valued inputs, with an optional profile and trace."""

from __future__ import annotations

import io
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import typer

from pcc.arrays import load_npy
from pcc.diagnostics import PccError, atomic_write, refuse_overwrite
from pcc.runtime.simulator import DEFAULT_MAX_CYCLES, DEFAULT_MAX_STEPS

if TYPE_CHECKING:
    from pcc.backend.program import Program


def _magic(path: Path) -> bytes:
    """The first four bytes of a regular file (b"" for anything else: the reader then names the problem)."""
    if not path.is_file():
        return b""
    with path.open("rb") as f:
        return f.read(4)


def load_program(path: Path):  # noqa: ANN201 - returns pcc.backend.program.Program
    """Assemble a ``.pasm`` file or read a ``.pbin`` binary (by suffix; other suffixes: by content)."""
    from pcc.backend.assembler import assemble_file

    if not path.exists():
        raise PccError(f"{path}: no such file")
    suffix = path.suffix.lower()
    if suffix == ".pasm":
        return assemble_file(path)
    if suffix == ".pbin" or _magic(path) == b"PBIN":
        from pcc.backend import binary

        return binary.read(path)
    return assemble_file(path)


def _load_npy(path: Path, name: str) -> np.ndarray:
    return load_npy(path, f"input '{name}'")


def parse_inputs(specs: list[str], input_names: list[str]) -> dict[str, np.ndarray]:
    """``NAME=FILE.npy`` items (or a bare ``FILE.npy`` when the program has one input) to arrays."""
    out: dict[str, np.ndarray] = {}
    for spec in specs:
        name, sep, file = spec.partition("=")
        if not sep or (name not in input_names and Path(spec).exists()):
            if len(input_names) != 1:
                names = ", ".join(input_names) or "none"
                raise PccError(f"--input {spec}: give NAME=FILE.npy; the program has inputs: {names}")
            name, file = input_names[0], spec
        if name in out:
            raise PccError(f"input '{name}' given twice")
        out[name] = _load_npy(Path(file), name)
    return out


FUSED_BATCH = 1000  # samples from which `pcc run` uses the compiled loops on any program (where numba is)


def _long_run(program: Program, arrays: dict[str, np.ndarray]) -> bool:
    """Whether a `pcc run` of ``program`` on ``arrays`` repays numba's start-up (about a second per process):
    numba is installed, and a product has at least 1 M MACs (where the int8 engine also starts) or the batch holds
    at least FUSED_BATCH samples. The Python API's Simulator, kept for many runs, uses them wherever numba is."""
    import importlib.util

    from pcc.runtime import intgemm
    from pcc.runtime.simulator import largest_product

    if importlib.util.find_spec("numba") is None:
        return False
    decls = {d.name: d for d in program.inputs}
    samples = max(
        (
            int(np.shape(a)[0])
            for name, a in arrays.items()
            if name in decls and decls[name].shape[:1] == (1,) and np.ndim(a) == len(decls[name].shape)
        ),
        default=1,
    )
    return samples >= FUSED_BATCH or largest_product(program) >= intgemm.MIN_MACS


def run(
    program_file: Path = typer.Argument(
        ..., metavar="PROGRAM", help="Program to run: .pasm or .pbin.", show_default=False
    ),
    inputs: list[str] = typer.Option(
        [], "--input", "-i", metavar="NAME=FILE.npy", help="An input array (repeatable); FILE.npy alone for one input."
    ),
    output: Path | None = typer.Option(None, "--output", "-o", help="Write the outputs to this .npz (atomically)."),
    profile: bool = typer.Option(False, "--profile", help="Print the per-layer profile table."),
    profile_json: Path | None = typer.Option(None, "--profile-json", help="Write the profile as JSON."),
    trace: Path | None = typer.Option(
        None, "--trace", help="Write a Chrome trace-event JSON (one track per unit; opens in Perfetto)."
    ),
    plot: Path | None = typer.Option(None, "--plot", help="Write a per-layer bar chart PNG (cycles and energy)."),
    max_steps: int = typer.Option(
        DEFAULT_MAX_STEPS, "--max-steps", min=1, help="Instructions per sample before the step-limit fault."
    ),
    max_cycles: int = typer.Option(
        DEFAULT_MAX_CYCLES,
        "--max-cycles",
        min=1,
        help="Machine cycles per sample before the cycle-limit fault (the default stops a runaway loop of large "
        "tensor instructions within a minute).",
    ),
    timeout: float | None = typer.Option(
        None, "--timeout", min=0.0, help="Seconds per sample before the time-limit fault (default: no limit)."
    ),
    quantized: bool = typer.Option(
        False, "--quantized", help="Inputs are the stored integers and outputs are returned as integers (no scale)."
    ),
    gemm: str = typer.Option(
        "auto",
        "--gemm",
        help="How MATMUL/MATVEC/CONV products are computed (the results are the same): 'int8' GEMM on the "
        "activations' base-256 digits (needs torch), 'float' (float64 BLAS where exact, else int64), or 'auto' "
        "(int8 for programs with a product of at least 1 M MACs when torch is installed).",
    ),
    fused: bool | None = typer.Option(
        None,
        "--fused/--no-fused",
        help="Run tensor instructions through the compiled loops (numba, the 'fast' extra; the results are the "
        "same). Default: on when numba is installed and the run is long enough to repay their start-up of about "
        f"a second: a program with a product of at least 1 M MACs, or a batch of {FUSED_BATCH:,} samples or more.",
        show_default=False,
    ),
) -> None:
    """Run a pentary program on the simulator, bit-exactly.

    Float inputs are quantised as the program's .input declarations say (round to nearest, ties away from zero,
    saturating to the declared pents) and outputs are dequantised (element * scale), so they compare directly
    with any float runtime. A batch on a declared batch axis of 1 runs sample after sample.
    """
    from pcc.runtime.simulator import Simulator, run_program

    read = [program_file, *(spec.partition("=")[2] or spec for spec in inputs)]
    for written in (output, profile_json, trace, plot):
        refuse_overwrite(written, *read)
    program = load_program(program_file)
    arrays = parse_inputs(inputs, [d.name for d in program.inputs])
    if fused is None:
        fused = _long_run(program, arrays)
    sim = Simulator(program, trace=trace is not None, gemm=gemm, fused=fused)
    outputs = run_program(
        program,
        arrays,
        max_steps=max_steps,
        max_cycles=max_cycles,
        timeout=timeout,
        quantized=quantized,
        simulator=sim,
    )
    if output is not None:
        buf = io.BytesIO()
        np.savez(buf, **outputs)
        atomic_write(output, buf.getvalue())
    else:
        for name, arr in outputs.items():
            flat = arr.reshape(-1)
            head = np.array2string(flat[:8], precision=6, separator=", ")
            more = " ..." if flat.size > 8 else ""
            typer.echo(f"{name}: shape {tuple(arr.shape)} {arr.dtype} {head}{more}")
        if not outputs:
            typer.echo(f"halted after {sim.steps} instructions (the program declares no outputs)")
    if profile or profile_json is not None or plot is not None:
        from pcc.runtime.profile import Profile

        prof = Profile(sim)
        if profile:
            sys.stdout.write(prof.table())
        if profile_json is not None:
            atomic_write(profile_json, prof.to_json())
        if plot is not None:
            prof.plot(str(plot))
    if trace is not None:
        from pcc.runtime.trace import write_trace

        write_trace(sim, str(trace))
