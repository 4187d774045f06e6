"""ONNX models into the ``nn`` IR.

``load(path_or_model, input_shapes=None)`` reads a ``.onnx`` file (external data included) or a ``ModelProto``
and returns a verified :class:`~pcc.ir.Module` whose ``@main`` has one argument per graph input and one result
per graph output, named as in the model.  The steps:

1. Parse; a truncated or foreign file is one clear error naming it.
2. Check, before anything else, that every operator has a converter for the model's opset: one error lists
   every unsupported operator with the nodes using it.
3. Upgrade opsets below 7 with ``onnx.version_converter``; fix symbolic input dimensions (``input_shapes``,
   or a symbolic batch of 1 with a note on stderr); run ONNX shape inference (used to cross-check every
   converted node's result type).
4. Convert node by node.  Each op type has converters registered per opset (``@converter("Clip", since=11)``);
   the newest one not newer than the model's opset is used (the rules: :mod:`pcc.frontends.onnx_rules` and
   the ``onnx_math`` / ``onnx_layers`` / ``onnx_tensor`` modules).  Initializers and ``Constant`` nodes become
   constants; a node whose inputs are all constants is folded at import (through the reference interpreter,
   or NumPy for shape-only ops such as ``Shape``/``Range``/``Where``), so shape computations disappear and
   only constants used by real ops are stored as module weights.

Every op carries ``loc=Location(file, node)``, the ONNX node it came from.  Inputs that must be constants
(a ``Reshape`` shape, ``Clip`` bounds, ``Pad`` pads, ...) are listed in :data:`PARAM_INPUTS`; a graph input in
such a slot can be fixed with ``bind={"name": array}``.
"""

from __future__ import annotations

import math
import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from pcc import limits
from pcc.diagnostics import Location, PccError, check_input_file
from pcc.frontends import Const, Sym, onnx_layers, onnx_math, onnx_tensor, onnx_wire, shape_of  # noqa: F401  (register the rules)
from pcc.frontends.onnx_layers import QONNX_CONVERTERS, QONNX_DOMAINS
from pcc.frontends.onnx_rules import (
    CONVERTERS,
    DATA_DEPENDENT,
    FOLD_ONLY,
    MAX_OPSET,
    MIN_OPSET,
    NUMPY_TYPES,
    ONNX_TO_IR,
    PARAM_INPUTS,
    Ctx,
    Node,
    converter,
    onnx_type_name,
    pick,
    supported_ops,
)
from pcc.ir import Module, TensorType

__all__ = [
    "load",
    "load_proto",
    "check_supported",
    "supported_ops",
    "converter",
    "CONVERTERS",
    "PARAM_INPUTS",
    "FOLD_ONLY",
    "MIN_OPSET",
    "MAX_OPSET",
]


# ----------------------------------------------------------------------------------------------- the importer


def _toposort(nodes: Sequence[onnx.NodeProto], available: set[str]) -> list[onnx.NodeProto]:
    """Nodes in an order where every input is defined first (ONNX requires it; some exporters forget).

    Already-sorted graphs come back unchanged; nodes waiting on values that nothing defines are left at the
    end, where the conversion reports the missing value."""
    order: list[onnx.NodeProto] = []
    defined = set(available)
    pending = list(nodes)
    while pending:
        rest = []
        for nd in pending:
            if all(i in defined or not i for i in nd.input):
                order.append(nd)
                defined.update(nd.output)
            else:
                rest.append(nd)
        if len(rest) == len(pending):
            order.extend(rest)
            break
        pending = rest
    return order


def _opset_of(model: onnx.ModelProto) -> int:
    for o in model.opset_import:
        if o.domain in ("", "ai.onnx"):
            return int(o.version)
    return 1 if not model.opset_import else MIN_OPSET


def check_supported(model: onnx.ModelProto, file: str | None = None) -> None:
    """Raise one PccError listing every operator of ``model`` that pcc cannot import (with the nodes using it)."""
    opset = max(_opset_of(model), MIN_OPSET)
    missing: dict[tuple[str, str], list[str]] = {}
    for i, nd in enumerate(model.graph.node):
        dom = nd.domain or ""
        if dom in ("", "ai.onnx") and pick(nd.op_type, opset) is not None:
            continue
        if dom in QONNX_DOMAINS and nd.op_type in QONNX_CONVERTERS:
            continue
        missing.setdefault((dom, nd.op_type), []).append(nd.name or f"{nd.op_type}_{i}")
    if not missing:
        return
    lines = []
    for (dom, op), nodes in sorted(missing.items(), key=lambda kv: (kv[0][0], kv[0][1])):
        where = f"{dom}::" if dom not in ("", "ai.onnx") else ""
        shown = ", ".join(repr(x) for x in nodes[:8]) + (f" and {len(nodes) - 8} more" if len(nodes) > 8 else "")
        why = (
            " [its output shape depends on the input values; pcc compiles static graphs]"
            if (not where and op in DATA_DEPENDENT)
            else ""
        )
        lines.append(f"{where}{op} ({len(nodes)} node{'s' if len(nodes) > 1 else ''}: {shown}){why}")
    kinds = len(missing)
    raise PccError(
        f"the model uses {kinds} unsupported operator{'s' if kinds > 1 else ''} (ai.onnx opset {opset}): "
        + "; ".join(lines),
        Location(file),
        notes=[f"supported operators: {', '.join(supported_ops(opset))}"],
    )


def _read(path: Path) -> tuple[onnx.ModelProto, dict[int, memoryview]]:
    """The model of ``path``, and the raw bytes of its large initializers by position (see
    :mod:`pcc.frontends.onnx_wire`; empty when the file was read the ordinary way)."""
    check_input_file(path, "an ONNX model")
    try:
        quick = onnx_wire.read_model(path)
    except OSError as exc:
        raise PccError(f"{path}: cannot read the file: {exc}") from None
    if quick is not None:
        model, raws = quick
        if not raws or (not model.functions and _opset_of(model) >= MIN_OPSET):  # nothing re-serializes it
            _check_model_shell(model, str(path))
            if _uses_external_data(model):
                _load_external(model, path)
            return model, raws
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # protobuf raises DecodeError / RuntimeWarning-ish errors of several kinds
        raise PccError(
            f"{path}: not a valid ONNX model (truncated, corrupted or not ONNX protobuf): {type(exc).__name__}: {exc}"
        ) from None
    _check_model_shell(model, str(path))
    if _uses_external_data(model):
        _load_external(model, path)
    return model, {}


def _load_external(model: onnx.ModelProto, path: Path) -> None:
    try:
        onnx.load_external_data_for_model(model, str(path.parent))
    except Exception as exc:  # OSError, or onnx's checker when the file is missing
        raise PccError(f"{path}: cannot read the model's external weight data: {exc}") from None


def _check_model_shell(model: onnx.ModelProto, file: str | None) -> None:
    if not model.HasField("graph") or model.ir_version <= 0:
        raise PccError(f"{file or 'model'}: not a valid ONNX model (no graph or IR version; truncated or not ONNX?)")
    if not model.graph.output:
        raise PccError(f"{file or 'model'}: the ONNX graph has no outputs (is the file truncated?)")


def check_graph_structure(model: onnx.ModelProto, file: str | None) -> None:
    """Every tensor written once, and no cycle among the nodes (an unsorted graph is fine: it is sorted later)."""
    g = model.graph
    writer: dict[str, str] = {i.name: "graph input" for i in g.input}
    writer.update({t.name: "initializer" for t in g.initializer})
    producer: dict[str, int] = {}
    for i, nd in enumerate(g.node):
        label = nd.name or f"#{i}"
        for o in nd.output:
            if not o:
                continue
            if o in writer:
                raise PccError(
                    f"ONNX node {label!r} ({nd.op_type}): output {o!r} is already written by {writer[o]}; "
                    "every tensor must have one writer",
                    Location(file, node=label),
                )
            writer[o] = f"node {label!r}"
            producer[o] = i
    # Kahn's algorithm over node -> node edges; nodes left over lie on (or behind) a cycle
    deps = [{producer[x] for x in nd.input if x in producer} for nd in g.node]
    users: dict[int, list[int]] = {}
    for i, d in enumerate(deps):
        for j in d:
            users.setdefault(j, []).append(i)
    waiting = [len(d) for d in deps]
    ready = [i for i, n in enumerate(waiting) if n == 0]
    done = 0
    while ready:
        i = ready.pop()
        done += 1
        for u in users.get(i, ()):
            waiting[u] -= 1
            if waiting[u] == 0:
                ready.append(u)
    if done < len(g.node):
        i = next(k for k, n in enumerate(waiting) if n > 0)
        nd = g.node[i]
        label = nd.name or f"#{i}"
        raise PccError(
            f"ONNX node {label!r} ({nd.op_type}): the graph has a cycle through this node "
            f"({len(g.node) - done} node(s) depend on their own outputs)",
            Location(file, node=label),
        )


def _uses_external_data(model: onnx.ModelProto) -> bool:
    return any(t.data_location == TensorProto.EXTERNAL for t in model.graph.initializer)


def _upgrade(model: onnx.ModelProto, file: str | None) -> onnx.ModelProto:
    if not any(o.domain in ("", "ai.onnx") for o in model.opset_import):
        raise PccError(f"{file or 'model'}: the model declares no ai.onnx opset (its opset_import is empty)")
    opset = _opset_of(model)
    if opset > MAX_OPSET:
        raise PccError(
            f"{file or 'model'}: ai.onnx opset {opset} is newer than this onnx package knows ({MAX_OPSET}); "
            "upgrade onnx or export with an older opset"
        )
    if opset >= MIN_OPSET:
        return model
    try:
        from onnx import version_converter

        up = version_converter.convert_version(model, MIN_OPSET)
    except Exception as exc:
        raise PccError(
            f"{file or 'model'}: ai.onnx opset {opset} is older than {MIN_OPSET} and onnx's version converter "
            f"could not upgrade it: {exc}"
        ) from None
    return up


def _dims(t: onnx.TypeProto) -> list[int | str | None]:
    out: list[int | str | None] = []
    for d in t.tensor_type.shape.dim:
        if d.HasField("dim_value") and d.dim_value >= 0:
            out.append(int(d.dim_value))
        elif d.HasField("dim_value"):  # -1 (or any negative size): written by some exporters for "dynamic"
            out.append(None)
        elif d.HasField("dim_param"):
            out.append(d.dim_param)
        else:
            out.append(None)
    return out


def _input_types(
    model: onnx.ModelProto, inits: set[str], input_shapes: Mapping[str, Sequence[int]] | None, file: str | None
) -> list[tuple[str, TensorType]]:
    graph_inputs = [i for i in model.graph.input if i.name not in inits]
    names = [i.name for i in graph_inputs]
    shapes = dict(input_shapes or {})
    unknown = [k for k in shapes if k not in names]
    if unknown:
        raise PccError(f"{file or 'model'}: --input-shape names unknown input(s) {unknown}; the inputs are {names}")
    out = []
    for vi in graph_inputs:
        t = vi.type
        if not t.HasField("tensor_type"):
            raise PccError(f"{file or 'model'}: input {vi.name!r} is not a tensor (sequences/maps are not supported)")
        elem = t.tensor_type.elem_type
        dtype = ONNX_TO_IR.get(elem)
        if dtype is None:
            raise PccError(
                f"{file or 'model'}: input {vi.name!r} has element type {onnx_type_name(elem)}, "
                "which pcc does not support"
            )
        has_shape = t.tensor_type.HasField("shape")
        dims = _dims(t)
        if vi.name in shapes:
            given = [int(d) for d in shapes[vi.name]]
            if has_shape and len(given) != len(dims):
                raise PccError(
                    f"{file or 'model'}: input {vi.name!r} has rank {len(dims)} (shape {dims}) but "
                    f"--input-shape gives {len(given)} dimensions {given}"
                )
            for d, g in zip(dims, given, strict=False):
                if isinstance(d, int) and d != g:
                    raise PccError(
                        f"{file or 'model'}: input {vi.name!r} has static shape {dims}; "
                        f"--input-shape {'x'.join(map(str, given))} contradicts it"
                    )
            out.append((vi.name, TensorType(given, dtype)))
            continue
        if not has_shape:
            raise PccError(
                f"{file or 'model'}: input {vi.name!r} has no shape; give one with --input-shape "
                f"{vi.name}=DxDx... (Python: input_shapes={{{vi.name!r}: (...)}})"
            )
        symbolic = [i for i, d in enumerate(dims) if not isinstance(d, int)]
        if symbolic == [0]:
            print(
                f"note: {file or 'model'}: input {vi.name!r} has a symbolic batch dimension "
                f"{dims[0] or '?'!r}; using 1 (set it with --input-shape {vi.name}=...)",
                file=sys.stderr,
            )
            dims = [1] + dims[1:]
        elif symbolic:
            shown = "x".join(str(d) if isinstance(d, int) else (d or "?") for d in dims)
            raise PccError(
                f"{file or 'model'}: input {vi.name!r} has symbolic dimensions ({shown}); pcc needs static shapes: "
                f"give them with --input-shape {vi.name}="
                + "x".join(str(d) if isinstance(d, int) else "N" for d in dims)
                + f" (Python: input_shapes={{{vi.name!r}: (...)}})"
            )
        if any(d < 0 for d in dims):  # type: ignore[operator]
            raise PccError(f"{file or 'model'}: input {vi.name!r} has a negative dimension in its shape {dims}")
        out.append((vi.name, TensorType(dims, dtype)))  # type: ignore[arg-type]
    return out


def _infer_shapes(
    model: onnx.ModelProto, inputs: list[tuple[str, TensorType]], file: str | None
) -> dict[str, tuple[list[int | None], int]]:
    """ONNX shape inference on a skeleton of the model (large initializers replaced by typed inputs)."""
    g = model.graph
    skel = onnx.GraphProto()
    skel.name = g.name
    skel.node.extend(g.node)
    for o in g.output:  # declared dynamic sizes (-1) become unknown, so inference never contradicts them
        o = skel.output.add(name=o.name, type=o.type)
        for d in o.type.tensor_type.shape.dim:
            if d.HasField("dim_value") and d.dim_value < 0:
                d.Clear()
    ir_of = {v: k for k, v in ONNX_TO_IR.items()}
    for name, t in inputs:
        skel.input.append(helper.make_tensor_value_info(name, ir_of[t.dtype], list(t.shape)))
    for init in g.initializer:
        if math.prod(init.dims) <= 64 and init.data_location != TensorProto.EXTERNAL:
            skel.initializer.append(init)
        else:
            skel.input.append(helper.make_tensor_value_info(init.name, init.data_type, list(init.dims)))
    m = onnx.ModelProto()
    m.ir_version = model.ir_version
    m.opset_import.extend(model.opset_import)
    m.graph.CopyFrom(skel)
    try:
        inferred = onnx.shape_inference.infer_shapes(m, check_type=False, strict_mode=False, data_prop=True)
    except Exception as exc:
        print(
            f"note: {file or 'model'}: ONNX shape inference failed ({type(exc).__name__}: {exc}); "
            "continuing with pcc's own shapes",
            file=sys.stderr,
        )
        return {}
    out: dict[str, tuple[list[int | None], int]] = {}
    for vi in list(inferred.graph.value_info) + list(inferred.graph.output):
        tt = vi.type.tensor_type
        if vi.type.HasField("tensor_type") and tt.HasField("shape"):
            out[vi.name] = ([d if isinstance(d, int) else None for d in _dims(vi.type)], tt.elem_type)
    return out


def _initializer_array(t: onnx.TensorProto, raw: memoryview | None = None) -> np.ndarray:
    """An initializer's data: a read-only view on its raw bytes where they hold the array as is (little-endian
    numbers of a known element type; each access to ``raw_data`` copies it, so it is read once), else
    ``numpy_helper.to_array``.  ``raw`` is the tensor's ``raw_data`` when the reader kept it out of the message
    (:mod:`pcc.frontends.onnx_wire`); its length must match the declared shape and element type exactly."""
    np_dtype = NUMPY_TYPES.get(t.data_type)
    dims = [int(d) for d in t.dims]
    if raw is not None:
        plain = np_dtype is not None and np_dtype is not np.bool_ and sys.byteorder == "little"
        if plain and min(dims, default=0) >= 0:
            want = math.prod(dims) * np.dtype(np_dtype).itemsize
            if len(raw) != want:
                have = f"raw data holds {len(raw)} bytes, but dims {dims}"
                raise ValueError(f"{have} of {np.dtype(np_dtype)} need {want}")
            return np.frombuffer(raw, dtype=np_dtype).reshape(dims)
        t.raw_data = bytes(raw)  # any other case: back into the message, for onnx's own reader and its checks
    if np_dtype is not None and np_dtype is not np.bool_ and sys.byteorder == "little" and t.HasField("raw_data"):
        raw_bytes = t.raw_data
        if len(raw_bytes) == math.prod(dims) * np.dtype(np_dtype).itemsize:
            return np.frombuffer(raw_bytes, dtype=np_dtype).reshape(dims)
    return numpy_helper.to_array(t)


def read_initializer(init: onnx.TensorProto, file: str | None, raw: memoryview | None = None) -> np.ndarray:
    """An initializer's array (:func:`_initializer_array`), its element type and declared shape checked first
    (known type, dims >= 0, rank and bytes within the limits); any failure is one PccError naming it."""
    where = f"{file or 'model'}: initializer {init.name!r}"
    if init.data_type == TensorProto.STRING:
        raise PccError(f"{where} holds strings")
    try:  # NUMPY_TYPES, and the types onnx's reader converts (bfloat16, float8, int4, ...)
        itemsize = np.dtype(NUMPY_TYPES.get(init.data_type) or helper.tensor_dtype_to_np_dtype(init.data_type)).itemsize
    except (KeyError, TypeError, ValueError):
        raise PccError(f"{where} has element type {onnx_type_name(init.data_type)}, which pcc does not read") from None
    limits.check_shape([int(d) for d in init.dims], itemsize, where)
    try:
        return _initializer_array(init, raw)
    except Exception as exc:
        raise PccError(f"{file or 'model'}: cannot read initializer {init.name!r}: {exc}") from None


def _crosscheck(cx: Ctx, n: Node, name: str, s: Sym) -> None:
    info = cx.inferred.get(name)
    if info is None:
        return
    dims, elem = info
    shape = shape_of(s)
    if len(dims) == len(shape) and all(d is None or d == e for d, e in zip(dims, shape, strict=True)):
        return
    if len(dims) == 0 and elem == 0:
        return
    raise n.error(
        f"output {name!r}: pcc computed shape {list(shape)} but ONNX shape inference says "
        f"{['?' if d is None else d for d in dims]} (a bug in the importer or an invalid model)"
    )


def load_proto(
    model: onnx.ModelProto,
    input_shapes: Mapping[str, Sequence[int]] | None = None,
    *,
    file: str | None = None,
    bind: Mapping[str, np.ndarray] | None = None,
    name: str | None = None,
    raw_data: Mapping[int, memoryview] | None = None,
) -> Module:
    """Convert an in-memory ``ModelProto``; see :func:`load`.  ``raw_data`` holds the ``raw_data`` bytes of
    initializers (by position in ``graph.initializer``) that the file reader left out of the message."""
    _check_model_shell(model, file)
    raw_data = raw_data or {}
    if raw_data and (model.functions or _opset_of(model) < MIN_OPSET):  # inlining / upgrading copies the message
        for index, raw in raw_data.items():
            model.graph.initializer[index].raw_data = bytes(raw)
        raw_data = {}
    if _uses_external_data(model) and any(
        t.data_location == TensorProto.EXTERNAL and not t.raw_data for t in model.graph.initializer
    ):
        raise PccError(
            f"{file or 'model'}: the model's weights live in external data files that are not loaded; "
            "load it from its file path (so the data is found beside it)"
        )
    if model.functions:
        try:
            from onnx import inliner

            model = inliner.inline_local_functions(model)
        except Exception as exc:
            raise PccError(f"{file or 'model'}: cannot inline the model's local functions: {exc}") from None
    check_graph_structure(model, file)
    check_supported(model, file)
    model = _upgrade(model, file)
    opset = _opset_of(model)
    g = model.graph
    if any(
        len(nd.attribute)
        and any(a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS) for a in nd.attribute)
        for nd in g.node
    ):
        raise PccError(f"{file or 'model'}: control flow with subgraphs (If/Loop/Scan) is not supported")

    bind = dict(bind or {})
    inits = {t.name for t in g.initializer} | set(bind)
    inputs = _input_types(model, inits, input_shapes, file)
    inferred = _infer_shapes(model, inputs, file)

    names = {i.name for i in g.input} | {t.name for t in g.initializer}
    for nd in g.node:
        names.update(nd.output)
    module = Module(name or (Path(file).stem if file else (g.name or "model")))
    module.source = file
    cx = Ctx(module, file, opset, inferred, names)
    for nm, t in inputs:
        cx.env[nm] = cx.graph.add_arg(nm, t)
    for index, init in enumerate(g.initializer):
        cx.env[init.name] = Const(read_initializer(init, file, raw_data.get(index)), init.name)
    for k, v in bind.items():
        cx.env[k] = Const(np.asarray(v), k)

    for index, nd in enumerate(_toposort(g.node, set(cx.env))):
        ins: list[Sym | None] = []
        for i, nm in enumerate(nd.input):
            if not nm:
                ins.append(None)
                continue
            s = cx.env.get(nm)
            if s is None:
                where = nd.name or f"{nd.op_type}_{index}"
                raise PccError(
                    f"ONNX node {where!r} ({nd.op_type}): input #{i} {nm!r} is not defined by any node, "
                    "initializer or graph input (a truncated or invalid model?)",
                    Location(file, node=where),
                )
            ins.append(s)
        n = Node(nd, index, ins, cx)
        cx.site = n
        fn = QONNX_CONVERTERS.get(nd.op_type) if nd.domain in QONNX_DOMAINS else pick(nd.op_type, opset)
        if fn is None:  # check_supported covers this; kept for models changed by the version converter
            raise n.unsupported(f"operator {nd.op_type} at opset {opset}")
        if nd.op_type in FOLD_ONLY:
            for i, s in enumerate(ins):
                if s is not None and not isinstance(s, Const):
                    raise n.error(
                        f"input {nd.input[i]!r} depends on a graph input, but the output shape of {nd.op_type} "
                        f"depends on its input values (a data-dependent shape); pcc compiles static graphs and only "
                        f"evaluates {nd.op_type} on constants at import"
                    )
        outs = list(fn(cx, n))
        if len(outs) < len(n.outputs):
            outs += [None] * (len(n.outputs) - len(outs))
        for oname, s in zip(n.outputs, outs, strict=False):
            if not oname:
                continue
            if s is None:
                raise n.error(f"output {oname!r} is not produced by pcc's converter")
            _crosscheck(cx, n, oname, s)
            cx.env[oname] = s
    cx.site = None
    for note in cx.notes:
        print(f"note: {file or 'model'}: {note}", file=sys.stderr)

    outputs: list[tuple[str, Sym]] = []
    for o in g.output:
        s = cx.env.get(o.name)
        if s is None:
            raise PccError(f"{file or 'model'}: graph output {o.name!r} is not computed by any node")
        outputs.append((o.name, s))
    return cx.finish(outputs)


def load(
    model: str | os.PathLike[str] | onnx.ModelProto,
    input_shapes: Mapping[str, Sequence[int]] | None = None,
    *,
    bind: Mapping[str, np.ndarray] | None = None,
) -> Module:
    """Import an ONNX model (a path or a ``ModelProto``) as a verified ``nn`` module.

    ``input_shapes`` fixes symbolic input dimensions (``{"input": (1, 3, 224, 224)}``); a model whose only
    symbolic dimension is an input's batch gets batch 1 and a note on stderr.  ``bind`` turns graph inputs into
    constants (e.g. a shape that the model takes as an input).  Errors are PccErrors naming the file and node.
    """
    if isinstance(model, onnx.ModelProto):
        return load_proto(model, input_shapes, bind=bind)
    path = Path(model)
    model, raws = _read(path)
    return load_proto(model, input_shapes, file=str(path), bind=bind, name=path.stem, raw_data=raws)
