"""The default compile pipeline (float ``nn`` graph -> scheduled, planned and tiled ``pent`` graph).
:mod:`pcc.drivers.compile` runs it and generates the program.

::

    canonicalize, fold-batchnorm, quantize{...}, fold-flatten, fuse, schedule, plan-memory, tile   ->  backend.codegen
"""

from __future__ import annotations

import dataclasses
import os

from pcc.diagnostics import PccError
from pcc.pass_manager import Pass, parse_pipeline
from pcc.passes.quantize import Quantize

FLOAT_PASSES = "canonicalize,fold-batchnorm"
PENT_PASSES = "fold-flatten,fuse,schedule,plan-memory,tile"
DEFAULT_PIPELINE = f"{FLOAT_PASSES},quantize,{PENT_PASSES}"


def default_passes(
    *,
    calibration: str | os.PathLike[str] | None = None,
    act_pents: int | None = None,
    per_tensor: bool = False,
) -> list[Pass]:
    """The default pipeline as pass objects (the calibration path is passed as is, so any file name works)."""
    return with_quantize_options(DEFAULT_PIPELINE, calibration=calibration, act_pents=act_pents, per_tensor=per_tensor)


def with_quantize_options(
    pipeline: str,
    *,
    calibration: str | os.PathLike[str] | None = None,
    act_pents: int | None = None,
    per_tensor: bool = False,
) -> list[Pass]:
    """Parse ``pipeline`` and set these options on its ``quantize`` pass (the CLI's ``--calibration``,
    ``--act-pents`` and ``--per-tensor``); an error if they are given and the pipeline does not quantize."""
    passes = parse_pipeline(pipeline) if pipeline.strip() else []
    opts: dict[str, object] = {}
    if calibration is not None:
        opts["calibration"] = str(calibration)
    if act_pents is not None:
        opts["act_pents"] = act_pents
    if per_tensor:
        opts["per_tensor"] = True
    if not opts:
        return passes
    if not any(isinstance(p, Quantize) for p in passes):
        flags = ", ".join("--" + k.replace("_", "-") for k in opts)
        raise PccError(
            f"{flags}: options of the quantize pass, which this pipeline does not run (use --emit pent/asm/bin)"
        )
    return [dataclasses.replace(p, **opts) if isinstance(p, Quantize) else p for p in passes]
