"""``PentaryProcessor``: the seed's deployment API -- a trained model compiled to a pentary program and run on
the simulator.

The seed's example, with the seed's module names (``pentary_trainer`` is :mod:`pcc.trainer.pentary_trainer`,
``pentary_simulator`` is :mod:`pcc.trainer.pentary_simulator`)::

    from pcc.trainer.pentary_trainer import PentaryModel, PentaryTrainer
    from pcc.trainer.pentary_simulator import PentaryProcessor

    trainer = PentaryTrainer(model=PentaryModel(128, 10))
    trainer.load_model("trained_model.json")
    processor = PentaryProcessor()
    processor.load_model(trainer, calibration=x_train[:256])   # convert the model to processor instructions
    print(processor.assembly[:400])                             # the instructions (.pasm text)
    classes = processor.predict(x_test)                         # run on the simulator, bit-exact
    print(processor.profile().table())                          # cycles, MACs, energy per layer

``load_model`` takes a model file (``.json`` from the trainer, or any model ``pcc compile`` takes), a
``PentaryTrainer``, a ``PentaryModel`` or a model JSON dict.  It imports the model (native frontend: the pents
and scales the trainer chose are kept), runs the default pipeline (the one of ``pcc compile --emit asm``) and
generates the program.  Activation scales come from ``calibration`` (an array of samples, a dict of arrays by
input name, or an ``.npz`` path); without it the quantizer falls back to random standard-normal inputs and
warns (:class:`pcc.passes.quantize.CalibrationWarning`), which is only right for normalised inputs.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from pcc.diagnostics import PccError
from pcc.isa import DEFAULT_CONFIG, MachineConfig
from pcc.runtime.simulator import DEFAULT_MAX_STEPS

__all__ = ["PentaryProcessor"]


class PentaryProcessor:
    """A pentary processor (the simulator of ``pcc/isa.py``'s machine) with one compiled model loaded.

    ``act_pents`` and ``per_tensor`` are the quantize pass's options (``--act-pents``, ``--per-tensor``);
    ``max_steps`` bounds the instructions of one sample.
    """

    def __init__(
        self,
        config: MachineConfig = DEFAULT_CONFIG,
        *,
        act_pents: int | None = None,
        per_tensor: bool = False,
        max_steps: int = DEFAULT_MAX_STEPS,
    ) -> None:
        self.config = config
        self.act_pents = act_pents
        self.per_tensor = per_tensor
        self.max_steps = max_steps
        self._module: Any = None  # the compiled pent module
        self._compiled: Any = None  # backend.codegen.Compiled
        self._program: Any = None  # backend.program.Program
        self._sim: Any = None
        self._fusion: Any = None  # a multimodal model's preprocessing
        self.source: str | None = None

    # ---- loading -----------------------------------------------------------------------------------------
    def load_model(
        self,
        model: Any,
        calibration: Any = None,
        *,
        act_pents: int | None = None,
        per_tensor: bool | None = None,
    ) -> PentaryProcessor:
        """Compile ``model`` to a program for this processor; returns ``self``.

        ``model``: a path (``.json`` trainer model, ``.onnx``, ``.pt2``, ``.pir``), a ``PentaryTrainer`` (its
        ``model``), a ``PentaryModel`` or a model JSON dict.  ``calibration``: samples of the model input
        (``[S, *input_shape]`` or flat ``[S, input_dim]``), ``{input name: samples}``, or an ``.npz`` path.
        """
        from pcc.backend.assembler import assemble_file
        from pcc.backend.codegen import write_program
        from pcc.drivers.compile import compile_module
        from pcc.passes.pipeline import default_passes

        if act_pents is not None:
            self.act_pents = act_pents
        if per_tensor is not None:
            self.per_tensor = per_tensor
        module = self._import(model)
        with tempfile.TemporaryDirectory(prefix="pcc-processor-") as tmp:
            cal = self._calibration_file(module, calibration, Path(tmp))
            passes = default_passes(calibration=cal, act_pents=self.act_pents, per_tensor=self.per_tensor)
            result = compile_module(module, passes)
            path = Path(tmp) / f"{module.name or 'model'}.pasm"
            write_program(result.compiled, path)
            program = assemble_file(path)
        program.file = f"{module.name or 'model'}.pasm"
        self._module, self._compiled, self._program = result.module, result.compiled, program
        from pcc.runtime.simulator import Simulator

        self._sim = Simulator(program, self.config)
        return self

    def _import(self, model: Any) -> Any:
        from pcc.frontends import load_model, native
        from pcc.trainer import model_format as fmt

        self._fusion = None
        if isinstance(model, str | os.PathLike):
            p = Path(model)
            self.source = str(p)
            if p.suffix.lower() == ".json":
                d = fmt.read_json(p)
                self._remember_fusion(d)
                return native.load_dict(d, file=str(p), name=p.stem)
            return load_model(p)
        d: Any
        if isinstance(model, Mapping):
            d, self.source = dict(model), "model"
        elif hasattr(model, "to_dict") and hasattr(model, "layers"):  # a PentaryModel
            d, self.source = model.to_dict(include_float=False), type(model).__name__
        elif hasattr(model, "model") and hasattr(model.model, "to_dict"):  # a PentaryTrainer
            d, self.source = model.model.to_dict(include_float=False), type(model).__name__
            fusion = getattr(model, "fusion", None)
            if fusion is not None and hasattr(fusion, "to_dict"):
                d["multimodal"] = fusion.to_dict()
        else:
            raise PccError(
                f"load_model: cannot compile a {type(model).__name__}; give a model file path, a PentaryTrainer, "
                "a PentaryModel or a model JSON dict"
            )
        d = json.loads(json.dumps(fmt.jsonable(d)))  # exactly what a saved and reloaded file holds
        self._remember_fusion(d)
        return native.load_dict(d, name="model")

    def _remember_fusion(self, d: Any) -> None:
        if isinstance(d, dict) and isinstance(d.get("multimodal"), dict):
            from pcc.trainer.multimodal import MultimodalFusion

            self._fusion = MultimodalFusion.from_dict(d["multimodal"])

    def _calibration_file(self, module: Any, calibration: Any, tmp: Path) -> str | None:
        if calibration is None:
            return None
        if isinstance(calibration, str | os.PathLike):
            if not Path(calibration).exists():
                raise PccError(f"calibration file {calibration}: no such file")
            return str(calibration)
        args = module.main.args
        if isinstance(calibration, Mapping):
            arrays = {k: np.asarray(v) for k, v in calibration.items()}
        else:
            if len(args) != 1:
                names = ", ".join(a.name or "" for a in args)
                raise PccError(f"the model has several inputs ({names}): give calibration as a dict of arrays")
            arrays = {args[0].name or "": np.asarray(calibration)}
        for a in args:
            name = a.name or ""
            if name in arrays:
                arrays[name] = self._samples(arrays[name], a.type.shape, f"calibration '{name}'")
        path = tmp / "calibration.npz"
        np.savez(path, **arrays)
        return str(path)

    @staticmethod
    def _samples(x: Any, shape: tuple[int, ...], what: str) -> np.ndarray:
        """``x`` as ``[B, *shape[1:]]`` float32: one sample, a batch, or flat samples of the right size."""
        x = np.asarray(x)
        if x.dtype.kind not in "fiu":
            raise PccError(f"{what} has dtype {x.dtype}; expected real numbers")
        per = tuple(shape[1:])
        size = int(np.prod(per, dtype=np.int64))
        if x.shape == per or (x.ndim == 1 and x.size == size):
            x = x.reshape((1, *per))
        elif x.ndim >= 2 and tuple(x.shape[1:]) != per and int(np.prod(x.shape[1:], dtype=np.int64)) == size:
            x = x.reshape((x.shape[0], *per))
        if x.ndim != len(shape) or tuple(x.shape[1:]) != per:
            raise PccError(f"{what} has shape {tuple(x.shape)}; expected samples of shape {per} (or {size} values)")
        return np.ascontiguousarray(x, dtype=np.float32)

    # ---- the program ------------------------------------------------------------------------------------
    def _need(self) -> None:
        if self._program is None:
            raise PccError("no model loaded: call processor.load_model(...) first")

    @property
    def program(self) -> Any:
        """The assembled :class:`~pcc.backend.program.Program` (decoded instructions, data, I/O declarations)."""
        self._need()
        return self._program

    @property
    def instructions(self) -> list[Any]:
        """The program's instructions (:class:`~pcc.backend.program.Instruction`)."""
        return self.program.instructions

    @property
    def assembly(self) -> str:
        """The program as pentary assembly text (``.pasm``, one ``; @layer`` section per model layer)."""
        self._need()
        return self._compiled.asm

    @property
    def module(self) -> Any:
        """The compiled ``pent`` IR module (the integer meaning of the program, see :mod:`pcc.pent_reference`)."""
        self._need()
        return self._module

    @property
    def compiled(self) -> Any:
        """Code generation's result: assembly, parameter blob, estimated cycles, per-layer statistics."""
        self._need()
        return self._compiled

    def save(self, path: str | os.PathLike[str]) -> list[Path]:
        """Write the program as ``path`` (``.pasm`` plus ``<stem>.weights.bin``, for ``pcc run``) or, for a
        ``.pbin`` path, as one binary; returns the paths written."""
        self._need()
        p = Path(path)
        if p.suffix.lower() == ".pbin":
            from pcc.backend import binary

            binary.write(self._program, p)
            return [p]
        from pcc.backend.codegen import write_program

        return write_program(self._compiled, p)

    # ---- running --------------------------------------------------------------------------------------
    def _inputs(self, x: Any) -> dict[str, np.ndarray]:
        args = self.module.main.args
        decls = self.program.inputs
        if self._fusion is not None and isinstance(x, Mapping) and not set(x) & {d.name for d in decls}:
            x = self._fusion.process_batch(x)
        if isinstance(x, Mapping):
            return {
                d.name: self._samples(x[d.name] if d.name in x else x[a.name], a.type.shape, f"input '{d.name}'")
                for d, a in zip(decls, args, strict=True)
                if d.name in x or a.name in x
            }
        if len(decls) != 1:
            raise PccError(f"the model has {len(decls)} inputs: give a dict of arrays by input name")
        return {decls[0].name: self._samples(x, args[0].type.shape, "input")}

    def run(self, x: Any, *, quantized: bool = False) -> np.ndarray | dict[str, np.ndarray]:
        """Run the program on the simulator: samples on axis 0 (a single sample is also accepted, flat or
        shaped).  Returns the output as float32 (``quantized=True``: the integers the machine computed, int64),
        or a dict by output name for a model with several outputs."""
        from pcc.runtime.boundary import quantize as to_int
        from pcc.runtime.simulator import run_program

        arrays = self._inputs(x)
        if quantized:  # quantize at the boundary here, so that the integers pass through unchanged
            arrays = {d.name: to_int(arrays[d.name], d) for d in self.program.inputs if d.name in arrays}
        outs = run_program(
            self.program, arrays, max_steps=self.max_steps, quantized=quantized, simulator=self._sim, config=self.config
        )
        return self._single(outs)

    def predict(self, x: Any) -> np.ndarray:
        """The class of each sample: the argmax of the (single) output over its last axis."""
        out = self.run(x)
        if isinstance(out, dict):
            raise PccError("predict needs a model with one output; use run()")
        return np.argmax(out.reshape(out.shape[0], -1), axis=1)

    def reference(self, x: Any, *, quantized: bool = False) -> np.ndarray | dict[str, np.ndarray]:
        """The same outputs computed by the ``pent`` numpy reference (:mod:`pcc.pent_reference`) instead of the
        simulator; the two agree bit for bit.  ``quantized=True`` returns the integers."""
        from pcc import pent_reference

        m = self.module
        arrays = self._inputs(x)
        decls, args = self.program.inputs, m.main.args
        quants, _ = pent_reference.program_io(m)
        batch = max(v.shape[0] for v in arrays.values())
        per: list[list[np.ndarray]] = []
        for i in range(batch):
            feed = {}
            for d, a in zip(decls, args, strict=True):
                v = arrays[d.name]
                feed[a.name or ""] = v[i : i + 1] if v.shape[0] > 1 else v
            if quantized:
                ints = {
                    a.name or "": pent_reference.quantize_input(
                        feed[a.name or ""], q.attr("scale"), q.results[0].type.pents
                    )
                    for a, q in zip(args, quants, strict=True)
                }
                per.append(pent_reference.run_int(m, ints))
            else:
                per.append(pent_reference.run(m, feed))
        outs = {}
        for j, d in enumerate(self.program.outputs):
            parts = [p[j] for p in per]
            outs[d.name] = np.concatenate(parts) if d.shape and d.shape[0] == 1 else np.stack(parts)
        return self._single(outs)

    def _single(self, outs: dict[str, np.ndarray]) -> np.ndarray | dict[str, np.ndarray]:
        return next(iter(outs.values())) if len(outs) == 1 else outs

    def profile(self) -> Any:
        """The profile of every run since the model was loaded (or :meth:`reset_profile`):
        :class:`pcc.runtime.profile.Profile` -- ``.table()``, ``.to_dict()``, ``.total.cycles``, ``.rows``."""
        from pcc.runtime.profile import Profile

        self._need()
        return Profile(self._sim)

    def reset_profile(self) -> None:
        self._need()
        self._sim.clear_counts()

    def __repr__(self) -> str:
        if self._program is None:
            return "PentaryProcessor(no model loaded)"
        c = self._compiled
        return (
            f"PentaryProcessor({self.source}: {len(self._program.instructions)} instructions, "
            f"{c.weight_pents} weights, ~{c.cycles} cycles per sample)"
        )
