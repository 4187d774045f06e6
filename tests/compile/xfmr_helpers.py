"""Helpers for the transformer compile tests: export a torch module, compile it with calibration data, check the
simulator against the pent reference bit for bit, and measure the error against onnxruntime."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from compile_helpers import sim_matches_reference

from pcc.backend.assembler import assemble_file
from pcc.backend.codegen import write_program
from pcc.drivers.compile import compile_module
from pcc.frontends import load_model
from pcc.pass_manager import parse_pipeline
from pcc.passes.pipeline import FLOAT_PASSES, PENT_PASSES
from pcc.passes.quantize import Quantize
from pcc.runtime.simulator import run_program


def pentary_exact(model, seed: int = 0):  # noqa: ANN001, ANN201
    """``model`` with every Linear / Conv2d / Embedding weight projected onto ``s_c x {-2..2}`` (s_c: the output
    channel's or table row's max |w| / 2), so weight quantization loses nothing (GPT-2's head is the token
    table)."""
    import torch

    torch.manual_seed(seed)
    with torch.no_grad():
        for mod in model.modules():
            if isinstance(mod, torch.nn.Linear | torch.nn.Conv2d | torch.nn.Embedding):  # (a tied head reads wte)
                w = mod.weight
                s = w.abs().amax(dim=tuple(range(1, w.dim())), keepdim=True).clamp_min(1e-6) / 2
                w.copy_(torch.round(w / s).clamp(-2, 2) * s)
    return model.eval()


def export(model, args: tuple, path: Path, names: list[str]) -> Path:  # noqa: ANN001
    import torch

    torch.onnx.export(model, args, str(path), input_names=names, output_names=["y"], dynamo=False)
    return path


def compile_check(
    path: Path,
    tmp: Path,
    cal: dict[str, np.ndarray],
    x: dict[str, np.ndarray],
    *,
    act_pents: int = 8,
    tile: str = "tile",
    seeds: int = 2,
) -> tuple[float, int]:
    """Compile ``path`` (calibrated on ``cal``), assert simulator == pent reference on random inputs, and return
    (max error relative to the output's range against onnxruntime on ``x``, estimated cycles)."""
    import onnx
    from onnx_util import ort_run

    np.savez(tmp / "cal.npz", **cal)
    m = load_model(path)
    rest = PENT_PASSES.replace("tile", tile) if tile != "tile" else PENT_PASSES
    passes = [*parse_pipeline(FLOAT_PASSES), Quantize(calibration=str(tmp / "cal.npz"), act_pents=act_pents)]
    result = compile_module(m, passes + parse_pipeline(rest), verify_each=True)
    write_program(result.compiled, tmp / "model.pasm")
    prog = assemble_file(tmp / "model.pasm")
    sim_matches_reference(result.module, prog, seeds=seeds)
    (want,) = ort_run(onnx.load(str(path)), x)
    got = run_program(prog, x)["y"]
    return float(np.abs(got - want).max() / np.abs(want).max()), int(result.compiled.cycles)
