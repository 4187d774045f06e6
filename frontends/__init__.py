"""Frontends: models into the ``nn`` IR.

- :mod:`pcc.frontends.onnx`: ``.onnx`` files (any ai.onnx opset from 7).
- :mod:`pcc.frontends.torch`: ``torch.export`` programs and ``.pt2`` files (needs ``pip install 'pcc[torch]'``).
- :mod:`pcc.frontends.native`: the trainer's JSON models, weights kept pentary.

:func:`load_model` picks the frontend from the file extension.  The frontends share :class:`Builder`, which
emits ``nn`` ops with their source location, folds ops whose operands are all constants through the reference
interpreter, and stores the constants that real ops use as module weights.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from pcc.diagnostics import Location, PccError
from pcc.ir import Graph, Module, Operation, TensorType, Value, VerifyError, dtype_of_array

__all__ = ["load_model", "MODEL_EXTENSIONS", "Const", "Sym", "Builder"]

#: file extension -> what it holds
MODEL_EXTENSIONS = {
    ".onnx": "ONNX model",
    ".pt2": "torch.export program (torch.export.save)",
    ".json": "pcc trainer model (JSON)",
    ".pir": "pcc IR (with its .npz weights)",
}


def load_model(path: str | os.PathLike[str], input_shapes: Mapping[str, Sequence[int]] | None = None) -> Module:
    """Load a model file as a verified ``nn`` module, choosing the frontend by extension.

    ``.onnx`` (ONNX), ``.pt2`` (``torch.export.save``), ``.json`` (the trainer's model format) or ``.pir``
    (IR text, with its sidecar weights).  ``input_shapes`` fixes input dimensions by input name (ONNX symbolic
    dimensions; for a JSON model, ``{"input": (batch, *input_shape)}``).
    """
    p = Path(path)
    ext = p.suffix.lower()
    if ext == ".onnx":
        from pcc.frontends import onnx as onnx_frontend

        return onnx_frontend.load(p, input_shapes)
    if ext == ".pt2":
        from pcc.frontends import torch as torch_frontend

        if input_shapes:
            raise PccError(
                f"{p}: a .pt2 program has the static shapes it was exported with; --input-shape "
                "does not apply (export again with other example inputs)"
            )
        return torch_frontend.load_pt2(p)
    if ext == ".json":
        from pcc.frontends import native

        return native.load(p, input_shapes)
    if ext == ".pir":
        if input_shapes:
            raise PccError(f"{p}: IR files have static shapes; --input-shape does not apply")
        from pcc.parser import parse_file
        from pcc.verifier import verify_module

        if not p.exists():
            raise PccError(f"{p}: no such file")
        module = parse_file(p)
        verify_module(module)
        return module
    known = ", ".join(f"{e} ({what})" for e, what in MODEL_EXTENSIONS.items())
    raise PccError(f"{p}: unknown model type {ext or '(no extension)'!r}; expected {known}")


# ----------------------------------------------------------------------------------------------- the builder


class Const:
    """A value known at import time: an initializer/parameter, a constant node, or a folded op's result."""

    __slots__ = ("data", "name")

    def __init__(self, data: Any, name: str | None = None) -> None:
        self.data = np.asarray(data)
        self.name = name

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.data.shape)

    def __repr__(self) -> str:
        return f"Const({self.name!r}, {self.data.dtype}{list(self.data.shape)})"


Sym = Value | Const


def shape_of(s: Sym) -> tuple[int, ...]:
    return s.shape if isinstance(s, Const) else s.type.shape


def ir_dtype(s: Sym) -> str | None:
    """The IR element type of a symbol (None for a constant whose dtype the IR cannot hold)."""
    if isinstance(s, Const):
        try:
            return dtype_of_array(s.data)
        except ValueError:
            return None
    return s.type.dtype


class Site(Protocol):
    """Where ops are emitted from: a model node (its name, output names, location and error factory)."""

    name: str
    outputs: list[str]
    loc: Location

    def error(self, message: str) -> PccError: ...


class Builder:
    """Builds the ``@main`` graph of a module from frontend nodes.

    :meth:`emit` folds an op whose operands are all :class:`Const` (evaluating it with the reference
    interpreter) and otherwise appends it to the graph, turning constant operands into module weights (one
    weight per constant, named after it).  Temporary values get names derived from the node's first output
    that avoid every name in ``reserved`` (the model's own value names, so they stay available).
    """

    def __init__(self, module: Module, file: str | None, reserved: set[str] | None = None) -> None:
        self.module = module
        self.graph: Graph = module.add_function("main")
        self.graph.loc = Location(file)
        self.file = file
        self.reserved = reserved or set()
        self._weights: dict[int, tuple[Const, Value]] = {}  # by id; the Const is kept alive so ids stay unique
        self.site: Site | None = None

    # -- naming
    def tmp_name(self, hint: str) -> str:
        g = self.graph
        k = 0
        while True:
            name = f"{hint}.{k}"
            if name not in g._names and name not in self.reserved:
                return name
            k += 1

    # -- constants
    def _unsupported_dtype(self, c: Const, hint: str | None) -> PccError:
        return PccError(
            f"constant {c.name or hint!r} has element type {c.data.dtype}, which the IR cannot hold",
            self.site.loc if self.site else None,
        )

    def weight(self, c: Const, hint: str | None = None, dtype: str | None = None) -> Value:
        """The module weight holding ``c`` (made once per constant)."""
        hit = self._weights.get(id(c))
        if hit is not None:
            return hit[1]
        if dtype is None:
            try:
                dtype = dtype_of_array(c.data)
            except ValueError:
                raise self._unsupported_dtype(c, hint) from None
        v = self.module.add_weight(c.name or hint or "const", c.data, dtype)
        if c.data.ndim == 0:  # Module.add_weight's ascontiguousarray makes scalars 1-D; keep them 0-D
            self.module.weight_data[v.name or ""] = self.module.weight_data[v.name or ""].reshape(())
        if self.site is not None:
            self.module.weight_locs[v.name or ""] = self.site.loc
        self._weights[id(c)] = (c, v)
        return v

    def type_of(self, s: Sym) -> TensorType:
        if isinstance(s, Const):
            try:
                return TensorType(s.shape, dtype_of_array(s.data))
            except ValueError:
                raise self._unsupported_dtype(s, None) from None
        return s.type

    # -- ops
    def emit(
        self,
        n: Site,
        cls: type[Operation],
        operands: Sequence[Sym],
        attrs: Mapping[str, Any] | None = None,
        *,
        types: Sequence[TensorType] | None = None,
        names: Sequence[str | None] | None = None,
        n_results: int = 1,
        fold: bool = True,
    ) -> list[Sym]:
        """Build a ``cls`` op on ``operands``: folded to constants when every operand is one (unless ``fold`` is
        false), else appended to the graph.  Result types are inferred unless ``types`` is given; ``names`` are
        the model's names for the results (``None``: a temporary).  Attributes whose value is None are left
        out."""
        from pcc import interpreter
        from pcc.verifier import verify_op

        attrs = {k: v for k, v in (attrs or {}).items() if v is not None}
        count = len(types) if types is not None else n_results
        names = list(names) if names is not None else [None] * count
        fold = fold and all(isinstance(s, Const) for s in operands)
        hint = n.outputs[0] if n.outputs and n.outputs[0] else n.name
        if fold:
            vals = [Value(s.name or "c", self.type_of(s), kind="weight") for s in operands]  # detached
        else:
            vals = [self.weight(s, f"{hint}.c{i}") if isinstance(s, Const) else s for i, s in enumerate(operands)]
        placeholder = [TensorType((), "f32")] * count
        op = cls(vals, list(types) if types is not None else placeholder, attrs, loc=n.loc)
        try:
            if types is None:
                inferred = op.infer_types()
                if inferred is None:
                    raise VerifyError(f"internal: {cls.name} needs explicit result types")
                for r, t in zip(op.results, inferred, strict=True):
                    r.type = t
            verify_op(op)
        except VerifyError as exc:
            op.drop_operands()
            raise n.error(f"cannot express as {cls.name}: {exc}") from None
        if fold:
            outs = interpreter.eval_op(op, [s.data for s in operands])  # type: ignore[union-attr]
            op.drop_operands()
            return [Const(a, nm or f"{hint}.{k}") for k, (a, nm) in enumerate(zip(outs, names, strict=True))]
        for r, nm in zip(op.results, names, strict=True):
            r.name = nm if nm else self.tmp_name(hint)
        self.graph.append(op)
        return list(op.results)

    def op1(
        self,
        n: Site,
        cls: type[Operation],
        operands: Sequence[Sym],
        attrs: Mapping[str, Any] | None = None,
        *,
        out: bool = True,
        type: TensorType | None = None,
    ) -> Sym:
        """A single-result op, named after the node's first output when ``out`` (else a temporary)."""
        types = None if type is None else [type]
        return self.emit(n, cls, operands, attrs, types=types, names=[n.outputs[0] if out else None])[0]

    def finish(self, outputs: Sequence[tuple[str, Sym]]) -> Module:
        """Set the graph outputs (constants become weights; each output keeps its model name, through an
        ``nn.identity`` where needed), drop unused weights and verify the module."""
        from pcc.dialects import nn
        from pcc.verifier import verify_module

        values: list[Value] = []
        for name, s in outputs:
            if isinstance(s, Const):
                s = self.weight(s, name)
            if s.name != name or s in values:
                op = nn.Identity([s], [s.type], loc=Location(self.file, node=name), result_names=[name])
                self.graph.append(op)
                s = op.result
            values.append(s)
        self.graph.set_outputs(values)
        self.module.remove_unused_weights()
        verify_module(self.module)
        return self.module
