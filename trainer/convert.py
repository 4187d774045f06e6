"""Convert ONNX and ``torch.export`` (``.pt2``) models to the pentary model JSON.

Both converters accept a *chain*: every op consumes the previous op's output (plus constant weights).
ONNX ops: ``Gemm``, ``MatMul`` (+ ``Add`` of a constant bias), ``Conv``, ``Relu``, ``MaxPool``,
``BatchNormalization``, ``Flatten`` (axis 1), ``Reshape`` to ``[batch, -1]``, and the inference no-ops
``Identity`` / ``Dropout``.  ``.pt2`` (an ``ExportedProgram`` saved by ``torch.export.save``) ops: ``linear``,
``conv2d`` / ``convolution``, ``relu``, ``max_pool2d``, batch norm (inference), ``flatten`` / ``view`` /
``reshape`` to 2-d, ``dropout`` / ``clone`` / ``alias``.  Anything else is one :class:`PccError` naming the first
node that cannot be expressed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from pcc.diagnostics import Location, PccError, check_input_file
from pcc.trainer import model_format as fmt
from pcc.trainer.layers import (
    Flatten,
    Layer,
    PentaryBatchNorm,
    PentaryConv2D,
    PentaryLinear,
    PentaryMaxPool2D,
    PentaryReLU,
)
from pcc.trainer.model import PentaryModel

__all__ = ["onnx_to_model", "pt2_to_model", "convert_file", "ONNX_OPS"]

ONNX_OPS = (
    "Gemm", "MatMul", "Add", "Conv", "Relu", "MaxPool", "BatchNormalization", "Flatten", "Reshape", "Identity",
    "Dropout",
)  # fmt: skip


def _f32(a: Any) -> np.ndarray:
    return np.asarray(a, dtype=np.float32)


def _linear(w_out_in: np.ndarray, bias: np.ndarray | None) -> PentaryLinear:
    layer = PentaryLinear(w_out_in.shape[1], w_out_in.shape[0], bias is not None)
    layer.weight.value[...] = w_out_in
    if bias is not None:
        layer.bias.value[...] = bias
    return layer


def _conv(w: np.ndarray, bias: np.ndarray | None, stride: tuple[int, int], pad: tuple[int, int]) -> PentaryConv2D:
    layer = PentaryConv2D(w.shape[1], w.shape[0], (w.shape[2], w.shape[3]), stride, pad, bias is not None)
    layer.weight.value[...] = w
    if bias is not None:
        layer.bias.value[...] = bias
    return layer


def _batchnorm(gamma: Any, beta: Any, mean: Any, var: Any, eps: float) -> PentaryBatchNorm:
    bn = PentaryBatchNorm(len(gamma), eps)
    bn.gamma.value[...] = _f32(gamma)
    bn.beta.value[...] = _f32(beta)
    bn.running_mean[...] = _f32(mean)
    bn.running_var[...] = _f32(var)
    return bn


def _sym_pads(pads: list[int], where: str, loc: Location | None = None) -> tuple[int, int]:
    if not pads:
        return 0, 0
    if len(pads) != 4 or pads[0] != pads[2] or pads[1] != pads[3]:
        raise PccError(f"{where}: only symmetric 2-d padding is supported, got pads {pads}", loc)
    return int(pads[0]), int(pads[1])


# --- ONNX -----------------------------------------------------------------------------------------------------


def onnx_to_model(path: str | Path) -> PentaryModel:
    """Read an ONNX file with the ``onnx`` package and convert its op chain to a :class:`PentaryModel`."""
    try:
        import onnx
        from onnx import numpy_helper
    except ImportError:
        raise PccError("converting ONNX models needs the onnx package (pip install onnx)") from None
    path = check_input_file(path, "an ONNX model")
    try:
        model = onnx.load(str(path))
    except Exception as exc:
        raise PccError(f"{path}: not a readable ONNX model: {exc}") from None
    from pcc.frontends import onnx as onnx_frontend  # the checks `pcc compile` makes of the same file

    onnx_frontend._check_model_shell(model, str(path))
    onnx_frontend.check_graph_structure(model, str(path))
    model = onnx_frontend._upgrade(model, str(path))
    g = model.graph
    consts: dict[str, np.ndarray] = {}
    for t in g.initializer:
        consts[t.name] = onnx_frontend.read_initializer(t, str(path))
    inputs = [i for i in g.input if i.name not in consts]
    if len(inputs) != 1:
        raise PccError(f"{path}: expected one graph input, found {len(inputs)}")
    dims = [d.dim_value if d.HasField("dim_value") else None for d in inputs[0].type.tensor_type.shape.dim]
    if len(dims) < 2 or any(v is None or v < 1 for v in dims[1:]):
        raise PccError(f"{path}: graph input {inputs[0].name!r} needs a known shape [N, ...], got {dims}")
    input_shape = tuple(int(v) for v in dims[1:])
    if len(g.output) != 1:
        raise PccError(f"{path}: expected one graph output, found {len(g.output)}")

    def attrs(node: Any) -> dict[str, Any]:
        return {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}

    current = inputs[0].name
    layers: list[Layer] = []
    nodes = list(g.node)
    i = 0
    while i < len(nodes):
        node = nodes[i]
        name = node.name or f"#{i}"
        where = node.op_type
        loc = Location(str(path), node=name)
        a = attrs(node)
        if node.op_type == "Constant":
            value = a.get("value")
            if value is None:
                raise PccError(f"{where}: only tensor-valued Constant nodes are supported", loc)
            consts[node.output[0]] = numpy_helper.to_array(value)
            i += 1
            continue
        data_inputs = [x for x in node.input if x and x not in consts]
        if node.op_type not in ONNX_OPS or node.op_type == "Add":
            raise PccError(
                f"ONNX op {node.op_type} cannot be expressed as a pentary layer",
                loc,
                notes=[f"supported: {', '.join(op for op in ONNX_OPS if op != 'Add')} (MatMul may be followed by "
                       "Add of a constant bias)"],
            )  # fmt: skip
        if data_inputs != [current] or node.input[0] != current:
            raise PccError(
                f"{where}: the graph is not a simple chain (this node does not take the previous node's output "
                "as its only data input)",
                loc,
            )
        _check_finite(node, consts, loc)
        if node.op_type == "Gemm":
            if a.get("transA", 0):
                raise PccError(f"{where}: transA=1 is not supported", loc)
            w = _f32(consts[node.input[1]])
            w = w if a.get("transB", 0) else w.T
            w = w * np.float32(a.get("alpha", 1.0))
            b = (
                _f32(consts[node.input[2]]) * np.float32(a.get("beta", 1.0))
                if len(node.input) > 2 and node.input[2]
                else None
            )
            if b is not None:
                b = np.broadcast_to(b, (w.shape[0],)).copy()
            layers.append(_linear(w, b))
        elif node.op_type == "MatMul":
            w = _f32(consts[node.input[1]]).T  # x @ B with B [in, out]
            b = None
            nxt = nodes[i + 1] if i + 1 < len(nodes) else None
            if nxt is not None and nxt.op_type == "Add" and node.output[0] in nxt.input:
                other = [x for x in nxt.input if x != node.output[0]]
                if len(other) == 1 and other[0] in consts:
                    _check_finite(nxt, consts, Location(str(path), node=nxt.name or f"#{i + 1}"))
                    b = np.broadcast_to(_f32(consts[other[0]]), (w.shape[0],)).copy()
                    node = nxt
                    i += 1
            layers.append(_linear(w, b))
        elif node.op_type == "Conv":
            if a.get("group", 1) != 1 or any(d != 1 for d in a.get("dilations", [1, 1])):
                raise PccError(f"{where}: only group=1, dilation=1 convolutions are supported", loc)
            auto_pad = a.get("auto_pad", b"NOTSET")
            auto_pad = auto_pad.decode() if isinstance(auto_pad, bytes) else auto_pad
            if auto_pad not in ("NOTSET", "VALID"):
                raise PccError(f"{where}: auto_pad={auto_pad} is not supported; export with explicit pads", loc)
            w = _f32(consts[node.input[1]])
            if w.ndim != 4:
                raise PccError(f"{where}: only 2-d convolutions are supported", loc)
            b = _f32(consts[node.input[2]]) if len(node.input) > 2 and node.input[2] else None
            strides = a.get("strides", [1, 1])
            layers.append(_conv(w, b, (strides[0], strides[1]), _sym_pads(list(a.get("pads", [])), where, loc)))
        elif node.op_type == "Relu":
            layers.append(PentaryReLU())
        elif node.op_type == "MaxPool":
            if a.get("ceil_mode", 0) or any(d != 1 for d in a.get("dilations", [1, 1])):
                raise PccError(f"{where}: only ceil_mode=0, dilation=1 max pooling is supported", loc)
            k = a["kernel_shape"]
            s = a.get("strides", [1, 1])
            layers.append(PentaryMaxPool2D((k[0], k[1]), (s[0], s[1]), _sym_pads(list(a.get("pads", [])), where, loc)))
        elif node.op_type == "BatchNormalization":
            gamma, beta, mean, var = (consts[x] for x in node.input[1:5])
            layers.append(_batchnorm(gamma, beta, mean, var, float(a.get("epsilon", 1e-5))))
        elif node.op_type == "Flatten":
            if a.get("axis", 1) != 1:
                raise PccError(f"{where}: only Flatten with axis=1 is supported", loc)
            layers.append(Flatten())
        elif node.op_type == "Reshape":
            shape = [int(v) for v in np.asarray(consts.get(node.input[1], [])).ravel()]
            if len(shape) != 2 or shape[1] not in (-1,) and shape[0] not in (-1, 0, 1):
                raise PccError(f"{where}: only reshapes to [batch, -1] are supported, got {shape}", loc)
            layers.append(Flatten())
        # Identity, Dropout: inference no-ops
        current = node.output[0]
        i += 1
    if current != g.output[0].name:
        raise PccError(f"{path}: the graph output {g.output[0].name!r} is not the end of the op chain")
    return _build(layers, input_shape, str(path))


def _check_finite(node: Any, consts: dict[str, np.ndarray], loc: Location) -> None:
    """Refuse a node whose constant inputs (weights, biases, statistics) hold NaN or infinity."""
    for name in node.input:
        c = consts.get(name)
        if c is not None and np.issubdtype(c.dtype, np.floating) and not np.isfinite(c).all():
            bad = [int(i) for i in np.argwhere(~np.isfinite(c))[0]] if c.ndim else []
            raise PccError(f"{node.op_type}: initializer {name!r} holds {c[tuple(bad)]} at index {bad}", loc)


def _build(layers: list[Layer], input_shape: tuple[int, ...], source: str) -> PentaryModel:
    if not layers:
        raise PccError(f"{source}: the model has no layers")
    if len(input_shape) > 1 and isinstance(layers[0], PentaryLinear):
        layers = [Flatten(), *layers]  # a Gemm straight on [N, C, H, W] flattens implicitly
    try:
        return PentaryModel(layers=layers, input_shape=input_shape)
    except ValueError as exc:
        raise PccError(f"{source}: {exc}") from None


# --- torch.export ---------------------------------------------------------------------------------------------


def pt2_to_model(path: str | Path) -> PentaryModel:
    """Load a ``torch.export`` program (``.pt2``) and convert its aten op chain."""
    from pcc.frontends.pt2 import read_exported_program

    path = Path(path)
    ep = read_exported_program(path)
    return exported_to_model(ep, str(path))


def exported_to_model(ep: Any, path: str) -> PentaryModel:
    """Convert the aten op chain of a ``torch.export.ExportedProgram`` (``path`` names it in errors)."""
    import torch

    sig = ep.graph_signature
    state = dict(ep.state_dict)
    state.update(getattr(ep, "constants", {}) or {})
    param_of: dict[str, str] = {}
    param_of.update(getattr(sig, "inputs_to_parameters", {}))
    param_of.update(getattr(sig, "inputs_to_buffers", {}))
    param_of.update(getattr(sig, "inputs_to_lifted_tensor_constants", {}))
    user_inputs = list(sig.user_inputs)
    if len(user_inputs) != 1:
        raise PccError(f"{path}: expected one user input, found {len(user_inputs)}")
    nodes = list(ep.graph.nodes)
    placeholder = next(n for n in nodes if n.op == "placeholder" and n.name == user_inputs[0])
    meta = placeholder.meta.get("val")
    if meta is None or len(meta.shape) < 2:
        raise PccError(f"{path}: cannot tell the input shape")
    input_shape = tuple(int(v) for v in meta.shape[1:])

    def tensor(node: Any) -> np.ndarray | None:
        if node is None:
            return None
        key = param_of.get(node.name)
        if key is None or key not in state:
            raise PccError(f"{node.name} is not a weight of the program", Location(str(path), node=node.name))
        return state[key].detach().cpu().to(torch.float32).numpy()

    skip = {"dropout", "clone", "alias", "contiguous", "detach", "identity", "_assert_tensor_metadata"}
    derived: dict[Any, np.ndarray] = {}  # weight-only expressions (transposes of a weight)

    def weight(node: Any) -> np.ndarray | None:
        return derived[node] if node in derived else tensor(node)

    current = placeholder
    layers: list[Layer] = []
    for node in nodes:
        if node.op in ("placeholder", "get_attr"):
            continue
        if node.op == "output":
            out = node.args[0]
            out = out[0] if isinstance(out, list | tuple) else out
            if out is not current:
                raise PccError(f"{path}: the program's output is not the end of the op chain")
            break
        target = node.target
        opname = getattr(target, "__name__", str(target))
        base = opname.split(".")[0]
        loc = Location(str(path), node=node.name)
        if opname == "getitem":
            if node.args[0] is current and node.args[1] == 0:
                current = node
                continue
            if node.args[0] is not current:
                continue  # other outputs of batch norm / max pool with indices: unused
        args = node.args
        if (
            base in ("permute", "t", "transpose", "numpy_T")
            and args
            and (args[0] in derived or args[0].name in param_of)
        ):
            w = weight(args[0])
            derived[node] = w.T if w.ndim == 2 else np.transpose(w, args[1] if base == "permute" else None)
            continue
        if base == "addmm" and len(args) >= 3 and args[1] is current:
            layers.append(_linear(weight(args[2]).T.copy(), weight(args[0])))
            current = node
            continue
        if not args or args[0] is not current:
            if base in ("sym_size", "size"):
                continue
            raise PccError(f"{opname} breaks the op chain (it does not take the previous op's output)", loc)
        if base == "mm":
            layers.append(_linear(weight(args[1]).T.copy(), None))
        elif base == "linear":
            layers.append(_linear(weight(args[1]), weight(args[2]) if len(args) > 2 and args[2] is not None else None))
        elif base in ("conv2d", "convolution"):
            stride = args[3] if len(args) > 3 else [1, 1]
            pad = args[4] if len(args) > 4 else [0, 0]
            dil = args[5] if len(args) > 5 else [1, 1]
            if base == "convolution":
                transposed, groups = args[6], args[8]
            else:
                transposed, groups = False, args[6] if len(args) > 6 else 1
            if isinstance(pad, str) or transposed or groups != 1 or list(dil) != [1, 1]:
                raise PccError(f"{opname}: only groups=1, dilation=1, explicit padding convolutions", loc)
            w = weight(args[1])
            if w.ndim != 4:
                raise PccError(f"{opname}: only 2-d convolutions are supported", loc)
            b = weight(args[2]) if len(args) > 2 and args[2] is not None else None
            layers.append(_conv(w, b, (stride[0], stride[-1]), (pad[0], pad[-1])))
        elif base in ("relu", "relu_"):
            layers.append(PentaryReLU())
        elif base in ("max_pool2d", "max_pool2d_with_indices"):
            k = args[1]
            s = args[2] if len(args) > 2 and args[2] else k
            p = args[3] if len(args) > 3 else [0, 0]
            if (len(args) > 4 and list(args[4]) not in ([1, 1], [1])) or (len(args) > 5 and args[5]):
                raise PccError(f"{opname}: only dilation=1, ceil_mode=False pooling is supported", loc)
            p = [p, p] if isinstance(p, int) else p
            layers.append(PentaryMaxPool2D((k[0], k[-1]), (s[0], s[-1]), (p[0], p[-1])))
        elif base in ("_native_batch_norm_legit_no_training", "batch_norm", "_native_batch_norm_legit_functional"):
            if base == "batch_norm":
                w, b, mean, var, training, eps = args[1], args[2], args[3], args[4], args[5], args[7]
                if training:
                    raise PccError(f"{opname}: batch norm in training mode", loc)
            else:
                w, b, mean, var, eps = args[1], args[2], args[3], args[4], args[-1]
            layers.append(_batchnorm(weight(w), weight(b), weight(mean), weight(var), float(eps)))
        elif base == "flatten":
            if (len(args) > 1 and args[1] != 1) or (len(args) > 2 and args[2] != -1):
                raise PccError(f"{opname}: only flatten(x, 1, -1) is supported", loc)
            layers.append(Flatten())
        elif base in ("view", "reshape", "_unsafe_view"):
            shape = list(args[1])
            if len(shape) != 2:
                raise PccError(f"{opname}: only reshapes to 2-d [batch, features] are supported", loc)
            layers.append(Flatten())
        elif base in skip:
            pass
        else:
            raise PccError(
                f"op {opname} cannot be expressed as a pentary layer",
                loc,
                notes=["supported: linear (or addmm/mm), conv2d/convolution, relu, max_pool2d, batch_norm "
                       "(inference), flatten/view/reshape, dropout"],
            )  # fmt: skip
        current = node
    return _build(layers, input_shape, str(path))


# --- a user's own nn.Module class -------------------------------------------------------------------------------


def import_module_class(spec: str) -> Any:
    """``"pkg.mod:Class"`` (or ``"path/to/file.py:Class"``) -> the class, imported from the user's own code.

    This runs the user's code on purpose (the user names it); the weights still come from a file loaded with
    ``weights_only=True``, so nothing in a model file runs code."""
    import importlib
    import importlib.util
    import sys

    mod_name, sep, attr = spec.partition(":")
    if not sep or not mod_name or not attr:
        raise PccError(f"--module takes 'package.module:Class' (or 'file.py:Class'), got {spec!r}")
    try:
        if mod_name.endswith(".py"):
            file = Path(mod_name)
            if not file.is_file():
                raise PccError(f"--module {spec}: file not found: {file}")
            mspec = importlib.util.spec_from_file_location(file.stem, file)
            assert mspec is not None and mspec.loader is not None
            module = importlib.util.module_from_spec(mspec)
            mspec.loader.exec_module(module)
        else:
            cwd = str(Path.cwd())
            added = cwd not in sys.path
            if added:  # the console script does not put the current folder on the path
                sys.path.insert(0, cwd)
            try:
                module = importlib.import_module(mod_name)
            finally:
                if added:
                    sys.path.remove(cwd)
    except PccError:
        raise
    except Exception as exc:
        raise PccError(f"--module {spec}: cannot import {mod_name}: {type(exc).__name__}: {exc}") from None
    obj: Any = module
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise PccError(f"--module {spec}: {mod_name} has no attribute {attr!r}")
        obj = getattr(obj, part)
    return obj


def module_to_model(
    weights: str | Path,
    spec: str,
    module_args: dict[str, Any] | list[Any] | None,
    input_shape: list[int] | tuple[int, ...] | None,
) -> PentaryModel:
    """Build the user's architecture ``spec`` (``pkg.mod:Class``, constructed with ``module_args``: a JSON
    object of keyword arguments or a list of positional ones), load the state dict in ``weights`` with
    ``weights_only=True``, capture the forward pass with ``torch.export`` on a ``[1, *input_shape]`` example
    and convert the exported op chain.  The result is checked against the module's own output."""
    from pcc.trainer.quantizer import PyTorchToPentaryConverter, _torch

    torch = _torch()
    cls = import_module_class(spec)
    if not input_shape:
        raise PccError(f"--module {spec} needs --input-shape (the example input torch.export traces), e.g. 1,3,32,32")
    shape = tuple(int(v) for v in input_shape)
    if len(shape) < 2:
        shape = (1, *shape)
    args = module_args if module_args is not None else {}
    try:
        module = cls(**args) if isinstance(args, dict) else cls(*args)
    except Exception as exc:
        call = f"{cls.__name__}({_args_text(args)})"
        raise PccError(f"--module {spec}: {call} failed: {type(exc).__name__}: {exc}") from None
    if not isinstance(module, torch.nn.Module):
        raise PccError(f"--module {spec}: {cls.__name__} is not a torch.nn.Module")
    state = PyTorchToPentaryConverter().load(weights)
    if isinstance(state, torch.nn.Module):
        state = state.state_dict()
    if not isinstance(state, dict):
        kind = type(state).__name__
        raise PccError(f"{weights}: expected a state dict (torch.save(model.state_dict(), ...)), got {kind}")
    try:
        module.load_state_dict(state, strict=True)
    except Exception as exc:
        first = str(exc).strip().splitlines()
        raise PccError(
            f"{weights} does not fit {cls.__name__}({_args_text(args)}): {' '.join(first[:3])}",
            notes=["give the constructor arguments the weights were trained with: --module-args '{...}'"],
        ) from None
    module.eval()
    example = torch.randn(*shape)
    try:
        ep = torch.export.export(module, (example,))
    except Exception as exc:
        line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise PccError(f"torch.export cannot capture {cls.__name__}.forward: {line}") from None
    model = exported_to_model(ep, f"{spec} ({weights})")
    PyTorchToPentaryConverter._check(module, model)
    return model


def _args_text(args: Any) -> str:
    if isinstance(args, dict):
        return ", ".join(f"{k}={v!r}" for k, v in args.items())
    return ", ".join(map(repr, args))


def convert_file(
    src: str | Path,
    output: str | Path,
    input_shape: list[int] | None = None,
    granularity: str = "per_channel",
    *,
    activations: list[str] | None = None,
    module: str | None = None,
    module_args: dict[str, Any] | list[Any] | None = None,
) -> PentaryModel:
    """Convert ``src`` (.onnx, .pt2, .pt/.pth) to the model JSON at ``output``; returns the model.

    For a ``.pt``/``.pth`` state dict, ``activations`` names the activation after each Linear layer
    (a state dict holds none) or ``module`` (``pkg.mod:Class``, with ``module_args``) builds the architecture.
    """
    if granularity not in ("per_channel", "per_tensor"):
        raise PccError(f"unknown quantization granularity {granularity!r} (expected per_channel or per_tensor)")
    src = Path(src)
    suffix = src.suffix.lower()
    if (module or activations) and suffix not in (".pt", ".pth"):
        raise PccError(f"--module and --activations apply to .pt/.pth files, not {suffix or src.name}")
    if module is not None and activations:
        raise PccError("give --module or --activations, not both (the module's forward defines the activations)")
    if module is not None:
        model = module_to_model(src, module, module_args, input_shape)
    elif suffix == ".onnx":
        model = onnx_to_model(src)
    elif suffix == ".pt2":
        model = pt2_to_model(src)
    elif suffix in (".pt", ".pth"):
        from pcc.trainer.quantizer import PyTorchToPentaryConverter

        model = PyTorchToPentaryConverter().to_model(src, input_shape, activations=activations)
    elif suffix == ".json":
        raise PccError(f"{src} is already JSON; use 'pcc quantize' to re-quantize a model JSON")
    else:
        raise PccError(f"cannot convert {src}: expected a .onnx, .pt2, .pt or .pth file")
    for layer in model.weight_layers():
        layer.per_channel = granularity == "per_channel"
    fmt.write_json(output, model.to_dict(include_float=True))
    return model
