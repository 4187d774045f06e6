"""``pcc export``: a pentary model as a standard quantized ONNX model (QDQ format).

The source is a ``pent`` module: the quantized program that ``pcc compile`` generates code from (a float
model or trainer JSON is compiled with the default pipeline first; a ``pent`` ``.pir`` is taken as it is).
Every value of that module carries its scale, so the export reads everything from the IR:

- **weights**: a conv/gemm weight is an integer initializer holding exactly the pents (-2..2), INT4 at
  ``opset >= 21`` (INT8 at ``opset 13``), through a ``DequantizeLinear`` with its per-output-channel scale
  (``axis = 0``) and a zero zero-point.  pcc's IR keeps the requantization ``mult / 2**shift`` rather than the
  weight scale; the scale is recovered exactly from it: ``s_acc = s_y * mult / 2**shift`` (or the residual's
  intermediate scale in place of ``s_y``) and ``s_w = s_acc / s_x``.  The bias is the program's integer bias
  (INT32 through ``DequantizeLinear`` at ``s_x * s_w``; a bias beyond INT32 is a float initializer).
- **activations**: each value a requantizing op produces (conv, gemm, add, average pool, the program inputs)
  passes a ``QuantizeLinear``/``DequantizeLinear`` pair with zero-point 0 at pcc's scale.  ONNX's quantized
  types hold at most 16 bits: an N-pent word (``word_max = (5**N - 1) / 2``) fits INT16 exactly up to 6 pents
  (INT8 up to 3); a wider one (the default 8 pents: +-195312) is written on INT16 at ``k`` times pcc's scale,
  ``k = ceil(word_max / 32767)`` (6 for 8 pents), so the exported grid holds every k-th level of pcc's.
  At ``opset 13`` activations are INT8 the same way (``k = ceil(word_max / 127)``).  Where the ONNX type's range
  exceeds the word's, a ``Clip`` before the ``QuantizeLinear`` saturates at pcc's ``+-word_max * scale``.
- ops that keep their input's scale (ReLU, clamp, max pool, reshape) are followed by a pair at that scale too:
  it changes no value (they stay on the grid) and keeps every quantized op between ``DequantizeLinear`` and
  ``QuantizeLinear``, the form runtimes' QDQ optimizers expect.  A table activation (``pent.lut``) becomes
  ``Round``/``Clip``/``Gather`` on its table of outputs.

Rounding differs in one place: ONNX's ``QuantizeLinear`` rounds half to even, pcc's requantization rounds ties
away from zero, so a value exactly halfway between two levels lands one level apart (and the residual add is
rounded once in ONNX, twice in pcc: once per rescaled operand).  Accumulation is exact in pcc and float32 in
the runtime.  Both differences are one level of the output's grid at most per op.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import typer

from pcc.diagnostics import PccError, atomic_write, refuse_overwrite
from pcc.ir import Module, Operation, Value

__all__ = ["export_module", "export_model", "export", "EXPORT_OPSETS", "activation_grid"]

EXPORT_OPSETS = (13, 21)  # INT8 QDQ for older runtimes; INT4 weights (opset 21 added INT4/INT16 to Q/DQ)
INT16_MAX, INT8_MAX, INT32_MAX = 32767, 127, 2**31 - 1


def activation_grid(pents: int, opset: int) -> tuple[int, int]:
    """``(onnx element type, k)``: the exported activation's integer type and the factor between its scale
    and pcc's (1 where the N-pent word fits the type)."""
    from onnx import TensorProto

    from pcc.pentary import word_max

    w = word_max(pents)
    if opset < 21 or w <= INT8_MAX:
        return TensorProto.INT8, max(1, math.ceil(w / INT8_MAX))
    return TensorProto.INT16, max(1, math.ceil(w / INT16_MAX))


class _Builder:
    """The ONNX graph under construction: nodes, initializers, unique names."""

    def __init__(self, module: Module, opset: int) -> None:
        self.module = module
        self.opset = opset
        self.nodes: list[Any] = []
        self.inits: list[Any] = []
        self.used: set[str] = set()
        self.float_of: dict[int, str] = {}  # id(pent value) -> the ONNX name of its float image q * scale
        self.unflatten: dict[int, np.ndarray] = {}  # id(flattened value) -> the NCHW index of each element

    def name(self, base: str) -> str:
        base = base or "v"
        n, i = base, 1
        while n in self.used:
            n, i = f"{base}_{i}", i + 1
        self.used.add(n)
        return n

    def init(self, base: str, arr: np.ndarray, onnx_type: int | None = None) -> str:
        from onnx import TensorProto, helper, numpy_helper

        name = self.name(base)
        arr = np.asarray(arr)
        if onnx_type == TensorProto.INT4:
            t = helper.make_tensor(name, TensorProto.INT4, list(arr.shape), arr.astype(np.int8).ravel().tolist())
        else:
            t = numpy_helper.from_array(arr, name)
        self.inits.append(t)
        return name

    def node(self, op_type: str, inputs: Sequence[str], base: str, node: str | None = None, **attrs: Any) -> str:
        """Append a node; its output is named after ``base``, the node ``node`` (default ``base/OpType``)."""
        from onnx import helper

        out = self.name(base)
        name = self.name(node if node is not None and node not in self.used else f"{base}/{op_type}")
        self.nodes.append(helper.make_node(op_type, list(inputs), [out], name=name, **attrs))
        return out

    def scalar(self, base: str, value: float) -> str:
        return self.init(base, np.asarray(value, np.float32))

    def qdq(self, x: str, base: str, scale: float, pents: int, clip: bool = True) -> str:
        """Clip (where the type saturates elsewhere than the word; ``clip``) -> QuantizeLinear ->
        DequantizeLinear at pcc's grid."""
        from onnx import TensorProto, helper

        from pcc.pentary import word_max

        etype, k = activation_grid(pents, self.opset)
        w = word_max(pents)
        qmax = INT8_MAX if etype == TensorProto.INT8 else INT16_MAX
        if clip and qmax * k != w:  # the type saturates elsewhere than pcc's word: saturate at the word
            x = self.node(
                "Clip", [x, self.scalar(f"{base}.min", -w * scale), self.scalar(f"{base}.max", w * scale)], base
            )
        s = self.init(f"{base}.scale", np.asarray(scale * k, np.float32))
        zp_dtype = np.int8 if etype == TensorProto.INT8 else np.int16
        z = self.init(f"{base}.zero_point", np.zeros((), zp_dtype))
        q = self.node("QuantizeLinear", [x, s, z], f"{base}.quantized")
        dq = self.name(base)
        self.nodes.append(helper.make_node("DequantizeLinear", [q, s, z], [dq], name=self.name(f"{base}/Dequantize")))
        return dq


def _value_base(v: Value, op: Operation) -> str:
    if op.loc is not None and op.loc.node:
        return op.loc.node
    return v.name or op.name.removeprefix("pent.")


def _scale_of(v: Value) -> float:
    op = v.owner
    s = None if op is None else op.attributes.get("scale")
    if s is None:
        raise PccError(f"{v.ref()}: the pent value has no scale attribute (export reads every value's scale)")
    return float(s)


def _requant_scales(module: Module, op: Operation, s_x: float, s_y: float) -> tuple[np.ndarray, float | None]:
    """``(s_w per channel, s_mid)``: the weight scales, and the intermediate scale of a fused residual."""
    mult = module.weight(op.operands[3]).astype(np.float64)
    shift = module.weight(op.operands[4]).astype(np.float64)
    s_mid = None
    s_out = s_y
    if op.attr("act") == "lut":  # a fused table activation reads the intermediate at its own scale
        s_mid = s_out = float(op.attr("mid_scale"))
    elif len(op.operands) > 5:
        mx, sx = op.attr("res_mult")[0], op.attr("res_shift")[0]
        s_mid = s_y * mx / 2.0**sx
        s_out = s_mid
    s_acc = s_out * mult / np.exp2(shift)
    return s_acc / s_x, s_mid


def _emit_act(b: _Builder, op: Operation, x: str, base: str, scale: float) -> str:
    from pcc.dialects import pent

    act = pent.act_of(op)
    if act == "relu":
        return b.node("Relu", [x], base)
    if act == "clamp":
        lo, hi = b.scalar(f"{base}.lo", op.attr("lo") * scale), b.scalar(f"{base}.hi", op.attr("hi") * scale)
        return b.node("Clip", [x, lo, hi], base)
    return x


def _emit_requant_op(b: _Builder, op: Operation) -> str:
    from onnx import TensorProto

    from pcc.dialects import pent

    m = b.module
    x, wv, bv = op.operands[:3]
    y = op.results[0]
    base = _value_base(y, op)
    s_x, s_y = _scale_of(x), _scale_of(y)
    s_w, s_mid = _requant_scales(m, op, s_x, s_y)
    w = m.weight(wv).astype(np.int8)
    if id(x) in b.unflatten:  # the columns of a gemm after a channels-last flatten, back in the NCHW order
        w = _unpermute_columns(w, b.unflatten[id(x)])
    if w.size and (w.min() < -2 or w.max() > 2):  # pragma: no cover - the verifier holds p5 to -2..2
        raise PccError(f"{base}: weight outside -2..2")
    wtype = TensorProto.INT4 if b.opset >= 21 else None
    wq = b.init(f"{base}.weight_quantized", w, wtype)
    ws = b.init(f"{base}.weight_scale", s_w.astype(np.float32))
    wz_arr = np.zeros(w.shape[0], np.int8)
    wz = b.init(f"{base}.weight_zero_point", wz_arr, wtype)
    wf = b.node("DequantizeLinear", [wq, ws, wz], f"{base}.weight", axis=0)
    bias = m.weight(bv).astype(np.int64)
    s_b = (s_x * s_w).astype(np.float32)
    if bias.size and np.abs(bias).max() > INT32_MAX:
        bf = b.init(f"{base}.bias", (bias * (s_x * s_w)).astype(np.float32))
    else:
        bq = b.init(f"{base}.bias_quantized", bias.astype(np.int32))
        bs = b.init(f"{base}.bias_scale", s_b)
        bz = b.init(f"{base}.bias_zero_point", np.zeros(bias.shape[0], np.int32))
        bf = b.node("DequantizeLinear", [bq, bs, bz], f"{base}.bias", axis=0)
    xf = b.float_of[id(x)]
    if isinstance(op, pent.Conv2d):
        pt, pl, pb, pr = op.attr("pads")
        acc = b.node(
            "Conv",
            [xf, wf, bf],
            f"{base}.acc",
            strides=list(op.attr("strides")),
            pads=[pt, pl, pb, pr],
            group=int(op.attr("group")),
            kernel_shape=list(w.shape[2:]),
            node=base,
        )
    else:
        acc = b.node("Gemm", [xf, wf, bf], f"{base}.acc", node=base, transB=1)
    if s_mid is not None:
        mid = b.qdq(acc, f"{base}.mid", s_mid, int(op.attr("mid_pents")))
        if op.attr("act") == "lut":
            table = np.asarray(op.attr("table"), np.float64) * s_y
            index = (op.attr("table_lo"), op.attr("index_mult"), op.attr("index_shift"))
            return _table_nodes(b, mid, base, s_mid, table, *index)
        acc = b.node("Add", [mid, b.float_of[id(op.operands[5])]], f"{base}.add")
    return b.qdq(_emit_act(b, op, acc, base, s_y), base, s_y, y.type.pents or 1)


def _emit_op(b: _Builder, op: Operation) -> None:
    from pcc.dialects import pent

    y = op.results[0]
    base = _value_base(y, op)
    xs = [b.float_of[id(v)] for v in op.operands if not v.is_weight]
    if isinstance(op, pent.REQUANT_OPS):
        out = _emit_requant_op(b, op)
    elif isinstance(op, pent.Add):
        s = _scale_of(y)
        out = b.qdq(_emit_act(b, op, b.node("Add", xs, f"{base}.sum"), base, s), base, s, y.type.pents or 1)
    elif isinstance(op, pent.Relu):
        out = _same_grid(b, y, b.node("Relu", xs, f"{base}.relu", node=base), base)
    elif isinstance(op, pent.Clamp):
        s = _scale_of(y)
        lo, hi = b.scalar(f"{base}.lo", op.attr("lo") * s), b.scalar(f"{base}.hi", op.attr("hi") * s)
        out = _same_grid(b, y, b.node("Clip", [xs[0], lo, hi], f"{base}.clip", node=base), base)
    elif isinstance(op, pent.MaxPool | pent.AvgPool):
        attrs: dict[str, Any] = {
            "kernel_shape": list(op.attr("kernel_shape")),
            "strides": list(op.attr("strides")),
            "pads": list(op.attr("pads")),
        }
        if isinstance(op, pent.MaxPool):
            out = _same_grid(b, y, b.node("MaxPool", xs, f"{base}.max", node=base, **attrs), base)
        else:
            attrs["count_include_pad"] = int(bool(op.attr("count_include_pad")))
            avg = b.node("AveragePool", xs, f"{base}.mean", node=base, **attrs)
            out = b.qdq(avg, base, _scale_of(y), y.type.pents or 1)
    elif isinstance(op, pent.Reshape):
        x = xs[0]
        if op.attr("perm") is not None:
            if _flatten_for_gemms(op):
                shape_in = op.operands[0].type.shape
                b.unflatten[id(y)] = np.arange(math.prod(shape_in)).reshape(shape_in).transpose(op.attr("perm")).ravel()
            else:
                x = b.node("Transpose", [x], f"{base}.transposed", perm=list(op.attr("perm")))
        shape = b.init(f"{base}.shape", np.asarray(op.attr("shape"), np.int64))
        out = _same_grid(b, y, b.node("Reshape", [x, shape], f"{base}.reshaped", node=base), base)
    elif isinstance(op, pent.Lut):
        out = _emit_lut(b, op, xs[0], base)
    else:
        raise PccError(f"pcc export: {op.name} has no ONNX form yet (export knows conv2d, gemm, add, relu, clamp, "
                       "max_pool, avg_pool, reshape and lut)", op.loc)  # fmt: skip
    b.float_of[id(y)] = out


def _same_grid(b: _Builder, y: Value, x: str, base: str) -> str:
    """The pair after an op that keeps its input's scale: the values are on the grid already, so it changes
    nothing, but it keeps the file in the standard QDQ form (every quantized op between DequantizeLinear and
    QuantizeLinear), which runtimes' QDQ optimizers expect (onnxruntime's propagation of a pair through a
    max pool fails on INT8 pairs without it)."""
    return b.qdq(x, base, _scale_of(y), y.type.pents or 1, clip=False)  # in range: its input was saturated


def _flatten_for_gemms(op: Operation) -> bool:
    """A ``fold-flatten`` reshape (``perm``, to ``[1, K]``) whose every user is a gemm reading it as its input:
    exported as a plain flatten with the gemms' weight columns put back in the NCHW order."""
    from pcc.dialects import pent

    users = op.results[0].users
    shape = op.attr("shape")
    return (
        len(shape) == 2
        and shape[0] == 1
        and bool(users)
        and all(isinstance(u, pent.Gemm) and u.operands[0] is op.results[0] for u in users)
    )


def _unpermute_columns(w: np.ndarray, index: np.ndarray) -> np.ndarray:
    """``out[:, index[j]] = w[:, j]``: columns in the order of ``index`` back to the order of its values."""
    out = np.empty_like(w)
    out[:, index] = w
    return out


def _emit_lut(b: _Builder, op: Operation, x: str, base: str) -> str:
    s_x, s_y = _scale_of(op.operands[0]), _scale_of(op.results[0])
    table = b.module.weight(op.operands[1]).astype(np.float64) * s_y
    return _table_nodes(b, x, base, s_x, table, op.attr("lo"), op.attr("mult"), op.attr("shift"))


def _table_nodes(
    b: _Builder, x: str, base: str, s_x: float, table: np.ndarray, lo: int, mult: int | None, shift: int | None
) -> str:
    """``table[clip(round(x / s_x * mult / 2**shift), lo, lo + n - 1) - lo]`` (``table`` in real values) as
    Mul/Round/Clip/Sub/Cast/Gather."""
    lo, n = int(lo), table.size
    factor = 1.0 / s_x
    if mult is not None:
        factor *= mult / 2.0**shift
    idx = b.node("Round", [b.node("Mul", [x, b.scalar(f"{base}.index_scale", factor)], f"{base}.index_f")], f"{base}.r")
    idx = b.node("Clip", [idx, b.scalar(f"{base}.index_lo", lo), b.scalar(f"{base}.index_hi", lo + n - 1)], base)
    idx = b.node("Sub", [idx, b.scalar(f"{base}.index_base", lo)], f"{base}.offset")
    idx = b.node("Cast", [idx], f"{base}.index", to=7)  # INT64
    t = b.init(f"{base}.table", table.astype(np.float32))
    return b.node("Gather", [t, idx], base, axis=0)


def export_module(module: Module, opset: int = 21) -> Any:
    """The ``pent`` module ``module`` as an ``onnx.ModelProto`` (QDQ format, see the module docstring); checked
    with ``onnx.checker``.  ``opset``: 21 or later (INT4 weights, INT16 activations) or 13 (INT8)."""
    import onnx
    from onnx import TensorProto, helper

    from pcc import pent_reference

    if opset != 13 and opset < 21:
        raise PccError(f"--opset must be 13 (INT8) or at least 21 (INT4 weights), got {opset}")
    g = module.main
    if not g.body or not all(op.name.startswith("pent.") for op in g.body):
        raise PccError("pcc export needs a quantized (pent) module; compile the model first or give a float model")
    quants, deqs = pent_reference.program_io(module)
    b = _Builder(module, opset)
    inputs = []
    for a, q in zip(g.args, quants, strict=True):
        name = b.name(a.name or "input")
        inputs.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, list(a.type.shape)))
        r = q.results[0]
        b.float_of[id(r)] = b.qdq(name, f"{name}.q", float(q.attr("scale")), r.type.pents or 1)
    skip = set(map(id, quants)) | set(map(id, deqs))
    for op in g.body:
        if id(op) not in skip:
            _emit_op(b, op)
    outputs = []
    for v, d in zip(g.outputs, deqs, strict=True):
        name = v.name or "output"
        if name in b.used:
            name = b.name(name)
        b.used.add(name)
        b.nodes.append(helper.make_node("Identity", [b.float_of[id(d.operands[0])]], [name], name=f"{name}/Identity"))
        outputs.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, list(v.type.shape)))
    graph = helper.make_graph(b.nodes, module.name or "model", inputs, outputs, b.inits)
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", opset)], producer_name="pcc", producer_version=_version()
    )
    model.ir_version = 7 if opset == 13 else 10
    model.doc_string = "pentary weights (-2..2) with per-channel scales; activations at pcc's scales (QDQ)"
    onnx.checker.check_model(model, full_check=True)
    return model


def _version() -> str:
    from pcc import __version__

    return str(__version__)


def _pent_module(
    model: Path, input_shapes: Mapping[str, Sequence[int]] | None, passes: str | None, **quantize_options: Any
) -> Module:
    from pcc.frontends import load_model
    from pcc.pass_manager import PassManager
    from pcc.passes.pipeline import DEFAULT_PIPELINE, with_quantize_options

    if not model.exists():
        raise PccError(f"{model}: no such file")
    module = load_model(model, input_shapes)
    body = module.main.body
    if body and all(op.name.startswith("pent.") for op in body):
        if quantize_options or passes:
            raise PccError(f"{model}: already quantized; quantize options and --passes do not apply")
        return module
    PassManager(with_quantize_options(passes or DEFAULT_PIPELINE, **quantize_options)).run(module)
    return module


def export_model(
    model: str | os.PathLike[str],
    output: str | os.PathLike[str],
    *,
    opset: int = 21,
    input_shapes: Mapping[str, Sequence[int]] | None = None,
    passes: str | None = None,
    **quantize_options: Any,
) -> Path:
    """Compile ``model`` (float, trainer JSON or ``pent`` ``.pir``) as ``pcc compile`` does (``passes``, the
    quantize pass's options by name) and write it as quantized ONNX to ``output`` (atomically)."""
    src, out = Path(model), Path(output)
    refuse_overwrite(out, src, quantize_options.get("calibration"))
    module = _pent_module(src, input_shapes, passes, **quantize_options)
    proto = export_module(module, opset)
    atomic_write(out, proto.SerializeToString())
    return out


from pcc.drivers.compile import quantize_flags  # noqa: E402


@quantize_flags
def export(
    model: Path = typer.Argument(
        ..., metavar="MODEL", help="A float model (.onnx, .pt2, .json, nn .pir) or a pent .pir.", show_default=False
    ),
    output: Path = typer.Option(..., "-o", "--output", help="The ONNX file to write."),
    opset: int = typer.Option(21, "--opset", help="21 or later: INT4 weights, INT16 activations; 13: INT8."),
    passes: str | None = typer.Option(None, "--passes", "-p", help="Pass pipeline (default: pcc compile's)."),
    input_shape: list[str] = typer.Option(
        [], "--input-shape", help="Fix an input's dynamic shape, e.g. input=1x3x224x224 (repeatable)."
    ),
    quantize: dict[str, Any] | None = None,
) -> None:
    """Export a pentary model as standard quantized ONNX (QDQ).

    Weights are integer initializers holding exactly the pents -2..2 (INT4 at opset 21, INT8 at opset 13) with
    their per-channel scales through DequantizeLinear; activations pass QuantizeLinear/DequantizeLinear pairs
    at pcc's scales. The file passes onnx.checker and runs on onnxruntime.
    """
    from pcc.drivers.compile import _warnings_as_diagnostics, parse_input_shapes

    with _warnings_as_diagnostics():
        path = export_model(
            model,
            output,
            opset=opset,
            input_shapes=parse_input_shapes(input_shape) or None,
            passes=passes,
            **(quantize or {}),
        )
    typer.echo(f"wrote {path}", err=True)
