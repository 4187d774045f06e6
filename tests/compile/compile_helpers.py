"""Helpers for the compile tests: compile a module, assemble it, run it on the simulator and on the pent
reference, and compare the integers bit for bit."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "passes"))

from pass_helpers import Builder, random_inputs, small_cnn  # noqa: E402,F401

from pcc import pent_reference  # noqa: E402
from pcc.backend.assembler import assemble_file  # noqa: E402
from pcc.backend.codegen import Compiled, write_program  # noqa: E402
from pcc.backend.program import Program  # noqa: E402
from pcc.drivers.compile import compile_module  # noqa: E402
from pcc.ir import Module  # noqa: E402
from pcc.pass_manager import parse_pipeline  # noqa: E402
from pcc.passes.pipeline import FLOAT_PASSES  # noqa: E402
from pcc.passes.quantize import Quantize  # noqa: E402
from pcc.runtime import kernels
from pcc.runtime.simulator import Simulator, run_program  # noqa: E402


def calibration_file(m: Module, path: Path, n: int = 8, seed: int = 1, scale: float = 1.0) -> Path:
    rng = np.random.default_rng(seed)
    np.savez(
        path,
        **{a.name or "": (rng.standard_normal((n, *a.type.shape[1:])) * scale).astype(np.float32) for a in m.main.args},
    )
    return path


def compile_sim(
    m: Module,
    tmp: Path,
    *,
    act_pents: int = 8,
    fuse: bool | str = True,
    fold_flatten: bool = True,
    fold_moves: bool = True,
    tile: str = "tile",
    calib_scale: float = 1.0,
    **quantize: object,
) -> tuple[Module, Compiled, Program]:
    """Compile ``m`` (calibrated on 8 standard-normal samples) and assemble it.  One pent per weight unless
    ``quantize`` says otherwise (``error_budget=0``: the random weights of these models would exceed the default
    budget, and the tests check each lowering as written)."""
    quantize = {"error_budget": 0.0, **quantize}
    cal = calibration_file(m, tmp / "cal.npz", scale=calib_scale)
    fuse_spec = fuse if isinstance(fuse, str) else "fuse" if fuse else ""  # a string: the fuse pass with options
    rest = ("fold-flatten," if fold_flatten else "") + ("fold-moves," if fold_moves else "")
    rest += f"{fuse_spec}," if fuse_spec else ""
    rest += "schedule,plan-memory," + tile
    q = Quantize(calibration=str(cal), act_pents=act_pents, **quantize)  # type: ignore[arg-type]
    passes = [*parse_pipeline(FLOAT_PASSES), q, *parse_pipeline(rest)]
    result = compile_module(m, passes, verify_each=True)
    write_program(result.compiled, tmp / "model.pasm")
    return result.module, result.compiled, assemble_file(tmp / "model.pasm")


def sim_matches_reference(m: Module, prog: Program, seeds: int = 3, scale: float = 1.0) -> Simulator:
    """The simulator's integer outputs equal the pent reference's on a few random inputs, with the numpy closures
    and (where numba is installed) the compiled loops; returns the simulator with the default loops."""
    quants, _ = pent_reference.program_io(m)
    sims = [Simulator(prog, fused=False)] + ([Simulator(prog)] if kernels.available() else [])
    for seed in range(seeds):
        x = random_inputs(m, seed, scale)
        q = {
            a.name or "": pent_reference.quantize_input(x[a.name or ""], qop.attr("scale"), qop.results[0].type.pents)
            for a, qop in zip(m.main.args, quants, strict=True)
        }
        want = pent_reference.run_int(m, q)
        for sim in sims:
            got = run_program(prog, q, quantized=True, simulator=sim)
            for decl, w in zip(prog.outputs, want, strict=True):
                np.testing.assert_array_equal(
                    got[decl.name], w, err_msg=f"output {decl.name}, seed {seed}, fused={sim.fused}"
                )
    return sims[-1]
