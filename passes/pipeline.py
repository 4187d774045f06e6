"""The default compile pipeline (float ``nn`` graph -> scheduled, planned and tiled ``pent`` graph).
:mod:`pcc.drivers.compile` runs it and generates the program.

::

    canonicalize, fold-batchnorm, quantize{...}, fold-flatten, fold-moves, fuse, schedule, plan-memory, tile
        ->  backend.codegen
"""

from __future__ import annotations

import dataclasses
from typing import Any

from pcc.diagnostics import PccError
from pcc.pass_manager import Pass, parse_pipeline
from pcc.passes.quantize import Quantize

FLOAT_PASSES = "canonicalize,fold-batchnorm"
PENT_PASSES = "fold-flatten,fold-moves,fuse,schedule,plan-memory,tile"
DEFAULT_PIPELINE = f"{FLOAT_PASSES},quantize,{PENT_PASSES}"


def default_passes(**quantize_options: Any) -> list[Pass]:
    """The default pipeline as pass objects, its quantize pass with the given options (:class:`Quantize`'s
    fields by name; the calibration path is passed as is, so any file name works)."""
    return with_quantize_options(DEFAULT_PIPELINE, **quantize_options)


def with_quantize_options(pipeline: str, **quantize_options: Any) -> list[Pass]:
    """Parse ``pipeline`` and set options on its ``quantize`` pass: :class:`Quantize`'s fields by name (the CLI's
    ``--calibration``, ``--act-pents``, ``--per-tensor``, ...); None, or False for a flag that is off by default,
    leaves it as the pipeline text says.  An error if an option is given and the pipeline does not quantize."""
    passes = parse_pipeline(pipeline) if pipeline.strip() else []
    defaults = {f.name: f.default for f in dataclasses.fields(Quantize)}
    unknown = sorted(set(quantize_options) - set(defaults))
    if unknown:
        raise PccError(f"quantize has no option {', '.join(unknown)} (options: {', '.join(sorted(defaults))})")
    opts = {k: v for k, v in quantize_options.items() if v is not None and not (v is False and defaults[k] is False)}
    if "calibration" in opts:
        opts["calibration"] = str(opts["calibration"])
    if not opts:
        return passes
    if not any(isinstance(p, Quantize) for p in passes):
        flags = ", ".join("--" + k.replace("_", "-") for k in opts)
        raise PccError(
            f"{flags}: options of the quantize pass, which this pipeline does not run (use --emit pent/asm/bin)"
        )
    return [dataclasses.replace(p, **opts) if isinstance(p, Quantize) else p for p in passes]


def with_machine(passes: list[Pass], machine: Any) -> list[Pass]:
    """Size the ``tile`` passes' scratchpads from ``machine`` (a :class:`pcc.isa.MachineConfig`) where the
    pipeline text left them at 0 (the machine's), and the main memory that the quantize pass's error budget
    fills with two-pent weights at most."""
    from pcc.isa import DEFAULT_CONFIG
    from pcc.passes.tile import Tile

    out = []
    for p in passes:
        if isinstance(p, Quantize) and not p.dram_words and machine.dram_words != DEFAULT_CONFIG.dram_words:
            p = dataclasses.replace(p, dram_words=machine.dram_words)
        if isinstance(p, Tile):
            sizes = {"a_words": "a_spad_words", "w_pents": "w_spad_pents", "c_words": "c_spad_words"}
            changes = {
                f: getattr(machine, m)
                for f, m in sizes.items()
                if not getattr(p, f) and getattr(machine, m) != getattr(DEFAULT_CONFIG, m)
            }  # the default machine leaves the pass as written
            p = dataclasses.replace(p, **changes) if changes else p
        out.append(p)
    return out
