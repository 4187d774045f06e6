"""The default compile pipeline (float ``nn`` graph -> scheduled, planned and tiled ``pent`` graph), code
generation, and the one-line compile summary.  ``pcc compile`` is this plus file handling.

::

    canonicalize, fold-batchnorm, quantize{...}, fold-flatten, fuse, schedule, plan-memory, tile   ->  backend.codegen
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pcc.backend.isa import DEFAULT_CONFIG
from pcc.diagnostics import PccError
from pcc.ir import Module
from pcc.pass_manager import Pass, PassManager, parse_pipeline
from pcc.passes.plan_memory import plan_graph
from pcc.passes.quantize import Quantize

FLOAT_PASSES = "canonicalize,fold-batchnorm"
PENT_PASSES = "fold-flatten,fuse,schedule,plan-memory,tile"
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


@dataclass
class CompileResult:
    module: Module
    compiled: object  # backend.codegen.Compiled

    def summary(self, source: str = "model", output: str | None = None) -> str:
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

    pm = PassManager(
        passes if passes is not None else default_passes(),
        verify_each=verify_each,
        print_ir_after_all=print_ir_after_all,
        dump_dir=Path(dump_dir) if dump_dir is not None else None,
    )
    pm.run(module)
    return CompileResult(module, gen(module) if generate else None)
