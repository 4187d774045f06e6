"""The ``pent`` numpy reference: the executable definition of the ``pent`` dialect.

Every op is computed exactly, in int64, with the ISA's own integer primitives from ``pcc/isa.py``
(``mul_shift_round``, ``requantize``, ``saturate``, ``div_round``), so the result of a compiled program on the
simulator must equal this reference bit for bit.  Values are kept in the logical layout of the IR (NCHW); the
memory layout (channels last) does not change any value.

Each op's meaning is one rule in :data:`PENT_RULES` (``@rule(pent.Relu)``, the same mechanism as the float
reference's ``@kernel`` table, :mod:`pcc.rules`).  Use :func:`run` on a module whose main graph has float
arguments (quantized by ``pent.quantize``) or :func:`run_int` to start from the integers a program's inputs
hold.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from pcc.diagnostics import PccError
from pcc.dialects import pent
from pcc.ir import Graph, Module, Operation
from pcc.isa import ACC_MAX, div_round, mul_shift_round, requantize, saturate
from pcc.pentary import word_max
from pcc.rules import RuleTable

Observer = Callable[[Operation, list[np.ndarray]], None]

_EXACT_F64 = 2.0**53  # integers below this are exact in float64, so BLAS can do the integer sums


def round_half_away(x: np.ndarray | float) -> np.ndarray:
    """Round to nearest, ties away from zero (the ISA's rounding), as float64."""
    v = np.asarray(x, dtype=np.float64)
    return np.sign(v) * np.floor(np.abs(v) + 0.5)


def quantize_input(x: np.ndarray, scale: float, pents: int) -> np.ndarray:
    """``sat_pents(round(x / scale))``, ties away from zero: what the runner does to a program input."""
    q = round_half_away(np.asarray(x, dtype=np.float64) / float(scale))
    m = word_max(pents)
    return np.clip(q, -m, m).astype(np.int64)


def _i64(a: np.ndarray) -> np.ndarray:
    return np.asarray(a, dtype=np.int64)


def _sat27(acc: np.ndarray) -> np.ndarray:
    return np.clip(acc, -ACC_MAX, ACC_MAX)


def windows(x: np.ndarray, kh: int, kw: int, strides: list[int], pads: list[int], fill: float = 0) -> np.ndarray:
    """[N, C, OH, OW, kh, kw] windows of the padded input (a strided view, no copy)."""
    pt, pl, pb, pr = pads
    if any(pads):
        x = np.pad(x, ((0, 0), (0, 0), (pt, pb), (pl, pr)), constant_values=fill)
    win = np.lib.stride_tricks.sliding_window_view(x, (kh, kw), axis=(2, 3))
    return win[:, :, :: strides[0], :: strides[1]]


def conv_acc(x: np.ndarray, w: np.ndarray, bias: np.ndarray, strides: list[int], pads: list[int], group: int) -> Any:
    """``sat27(bias + sum x*w)`` of CONV, int64 [N, O, OH, OW]."""
    x, w = _i64(x), _i64(w)
    o, icg, kh, kw = w.shape
    win = windows(x, kh, kw, strides, pads, 0)
    n, c, oh, ow = win.shape[:4]
    exact = float(np.abs(x).max(initial=0)) * 2.0 * icg * kh * kw < _EXACT_F64
    dt = np.float64 if exact else np.int64
    if group == 1:
        acc = np.tensordot(win.astype(dt), w.astype(dt), axes=([1, 4, 5], [1, 2, 3]))  # [N, OH, OW, O]
        acc = acc.transpose(0, 3, 1, 2)
    else:
        ocg = o // group
        wg = win.reshape(n, group, icg, oh, ow, kh, kw).astype(dt)
        acc = np.einsum("ngcyxij,gocij->ngoyx", wg, w.reshape(group, ocg, icg, kh, kw).astype(dt), optimize=True)
        acc = acc.reshape(n, o, oh, ow)
    acc = np.rint(acc).astype(np.int64) if exact else acc
    return _sat27(acc + _i64(bias).reshape(1, -1, 1, 1))


def gemm_acc(x: np.ndarray, w: np.ndarray, bias: np.ndarray) -> np.ndarray:
    """``sat27(bias + x @ w^T)`` of MATMUL, int64 [M, N]."""
    x, w = _i64(x), _i64(w)
    exact = float(np.abs(x).max(initial=0)) * 2.0 * w.shape[1] < _EXACT_F64
    if exact:
        acc = np.rint(x.astype(np.float64) @ w.T.astype(np.float64)).astype(np.int64)
    else:
        acc = x @ w.T
    return _sat27(acc + _i64(bias).reshape(1, -1))


def eadd(a: np.ndarray, b: np.ndarray, mult: list[int], shift: list[int], pents: int) -> np.ndarray:
    """EADD: ``sat_pents(msr(a, ma, sa) + msr(b, mb, sb))``."""
    ta = mul_shift_round(_i64(a), mult[0], shift[0], ACC_MAX)
    tb = mul_shift_round(_i64(b), mult[1], shift[1], ACC_MAX)
    return saturate(ta + tb, pents)


def _channel(v: np.ndarray, rank: int) -> np.ndarray:
    """A per-channel [C] array shaped to broadcast on axis 1 of a rank-``rank`` tensor."""
    return _i64(v).reshape((1, -1) + (1,) * (rank - 2))


def _check_consts(op: Operation, mult: np.ndarray, shift: np.ndarray) -> None:
    from pcc.isa import MULT_MAX, SHIFT_MAX

    if mult.size and (mult.min() < 0 or mult.max() > MULT_MAX):
        raise PccError(f"{op.name}: multiplier out of 0..{MULT_MAX}", op.loc)
    if shift.size and (shift.min() < 0 or shift.max() > SHIFT_MAX):
        raise PccError(f"{op.name}: shift out of 0..{SHIFT_MAX}", op.loc)


def apply_act(op: Operation, y: np.ndarray) -> np.ndarray:
    """The fused activation of a conv2d/gemm/add op."""
    act = op.attr("act")
    if act == "relu":
        return np.maximum(y, 0)
    if act == "clamp":
        return np.minimum(np.maximum(y, op.attr("lo")), op.attr("hi"))
    return y


def requant_tail(op: Operation, acc: np.ndarray, mult: np.ndarray, shift: np.ndarray, res: Any) -> np.ndarray:
    """Requantize accumulators per channel, add a fused residual, apply the fused activation."""
    _check_consts(op, mult, shift)
    pents = op.results[0].type.pents or 1
    rank = acc.ndim
    m, s = _channel(mult, rank), _channel(shift, rank)
    if op.attr("act") == "lut":  # the table activation fused by ``fuse``: pent.lut's rule on the intermediate
        mid, _ = requantize(acc, m, s, op.attr("mid_pents"))
        index = (op.attr("table_lo"), op.attr("index_mult"), op.attr("index_shift"))
        return table_act(mid, op.attr("table"), *index, op.attr("mid_pents"))
    if res is None:
        y, _ = requantize(acc, m, s, pents)
    else:
        mid, _ = requantize(acc, m, s, op.attr("mid_pents"))
        y = eadd(mid, res, op.attr("res_mult"), op.attr("res_shift"), pents)
    return apply_act(op, y)


def max_pool(x: np.ndarray, kernel: list[int], strides: list[int], pads: list[int]) -> np.ndarray:
    lo = np.iinfo(np.int64).min
    return windows(_i64(x), kernel[0], kernel[1], strides, pads, lo).max(axis=(4, 5))


def avg_pool(x: np.ndarray, kernel: list[int], strides: list[int], pads: list[int], include_pad: bool) -> np.ndarray:
    x = _i64(x)
    total = windows(x, kernel[0], kernel[1], strides, pads, 0).sum(axis=(4, 5))
    if include_pad:
        count: np.ndarray | int = kernel[0] * kernel[1]
    else:
        ones = np.ones((1, 1) + x.shape[2:], dtype=np.int64)
        count = windows(ones, kernel[0], kernel[1], strides, pads, 0).sum(axis=(4, 5))
    return div_round(total, count)


# ----------------------------------------------------------------------------------------------- the rules

PENT_RULES: RuleTable[Callable[..., np.ndarray]] = RuleTable("pent-reference")
rule = PENT_RULES.register


@rule(pent.Quantize)
def _quantize(op: Operation, x: np.ndarray) -> np.ndarray:
    return quantize_input(x, op.attr("scale"), op.results[0].type.pents or 1)


@rule(pent.Dequantize)
def _dequantize(op: Operation, q: np.ndarray) -> np.ndarray:
    return (_i64(q).astype(np.float64) * op.attr("scale")).astype(op.results[0].type.np_dtype)


@rule(pent.Conv2d)
def _conv2d(op: Operation, x: np.ndarray, w: np.ndarray, bias: np.ndarray, *rest: np.ndarray) -> np.ndarray:
    acc = conv_acc(x, w, bias, op.attr("strides"), op.attr("pads"), op.attr("group"))
    return requant_tail(op, acc, _i64(rest[0]), _i64(rest[1]), rest[2] if len(rest) > 2 else None)


@rule(pent.Gemm)
def _gemm(op: Operation, x: np.ndarray, w: np.ndarray, bias: np.ndarray, *rest: np.ndarray) -> np.ndarray:
    acc = gemm_acc(x, w, bias)
    return requant_tail(op, acc, _i64(rest[0]), _i64(rest[1]), rest[2] if len(rest) > 2 else None)


@rule(pent.Add)
def _add(op: Operation, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return apply_act(op, eadd(a, b, op.attr("mult"), op.attr("shift"), op.results[0].type.pents or 1))


@rule(pent.Relu)
def _relu(op: Operation, x: np.ndarray) -> np.ndarray:
    return np.maximum(_i64(x), 0)


@rule(pent.Clamp)
def _clamp(op: Operation, x: np.ndarray) -> np.ndarray:
    return np.minimum(np.maximum(_i64(x), op.attr("lo")), op.attr("hi"))


@rule(pent.MaxPool)
def _max_pool(op: Operation, x: np.ndarray) -> np.ndarray:
    return max_pool(x, op.attr("kernel_shape"), op.attr("strides"), op.attr("pads"))


@rule(pent.AvgPool)
def _avg_pool(op: Operation, x: np.ndarray) -> np.ndarray:
    k, st, pads = op.attr("kernel_shape"), op.attr("strides"), op.attr("pads")
    return avg_pool(x, k, st, pads, op.attr("count_include_pad"))


@rule(pent.Reshape)
def _reshape(op: Operation, x: np.ndarray) -> np.ndarray:
    perm = op.attr("perm")
    x = _i64(x)
    return (x if perm is None else x.transpose(perm)).reshape(op.attr("shape"))


def lut(x: np.ndarray, table: np.ndarray, lo: int) -> np.ndarray:
    """TLUT: ``table[min(max(x, lo), lo + n - 1) - lo]``."""
    t = _i64(table)
    return t[np.clip(_i64(x), lo, lo + t.size - 1) - lo]


def table_act(x: np.ndarray, table: Any, lo: int, mult: int | None, shift: int | None, pents: int) -> np.ndarray:
    """A table activation: the index ``x`` rescaled (EADD x, x with my = 0, saturated to ``pents``) where
    ``mult`` is given, then TLUT."""
    if mult is not None:
        x = eadd(x, x, [mult, 0], [shift, 0], pents)
    return lut(x, np.asarray(table), lo)


@rule(pent.Lut)
def _lut(op: Operation, x: np.ndarray, table: np.ndarray) -> np.ndarray:
    return table_act(x, table, op.attr("lo"), op.attr("mult"), op.attr("shift"), op.operands[0].type.pents or 1)


def eval_op(op: Operation, args: list[Any]) -> list[np.ndarray]:
    """Results of one ``pent`` op given its operand arrays (weights included, in operand order)."""
    fn = PENT_RULES.lookup(op)
    out = fn(op, *args)
    return list(out) if isinstance(out, list | tuple) else [out]


def _run_graph(module: Module, g: Graph, env: dict[int, np.ndarray], observe: Observer | None) -> list[np.ndarray]:
    for op in g.body:
        args = [module.weight(v) if v.is_weight else env[id(v)] for v in op.operands]
        outs = eval_op(op, args)
        for r, a in zip(op.results, outs, strict=True):
            if r.type.is_pent:
                a = a.astype(r.type.np_dtype)
            if a.shape != r.type.shape:  # pragma: no cover - a reference bug, never a user error
                raise AssertionError(f"{op.name}: computed shape {a.shape}, declared {r.type.shape}")
            env[id(r)] = a
        if observe is not None:
            observe(op, [env[id(r)] for r in op.results])
    return [env[id(v)] if not v.is_weight else module.weight(v) for v in g.outputs]


def _bind(g: Graph, inputs: Mapping[str, np.ndarray] | list[np.ndarray]) -> dict[int, np.ndarray]:
    if not isinstance(inputs, Mapping):
        inputs = {a.name or "": x for a, x in zip(g.args, inputs, strict=True)}
    env: dict[int, np.ndarray] = {}
    missing = [a.name for a in g.args if a.name not in inputs]
    if missing:
        raise PccError(
            f"missing input(s) {', '.join(map(str, missing))} (inputs: {', '.join(a.name or '' for a in g.args)})"
        )
    for a in g.args:
        x = np.asarray(inputs[a.name or ""])
        if tuple(x.shape) != a.type.shape:
            raise PccError(f"input {a.name}: expected shape {list(a.type.shape)}, got {list(x.shape)}")
        env[id(a)] = x
    return env


def run(
    module: Module,
    inputs: Mapping[str, np.ndarray] | list[np.ndarray],
    function: str | None = None,
    observe: Observer | None = None,
    return_all: bool = False,
) -> Any:
    """Run ``function`` (default: the main graph) on float inputs (by argument name or position).

    As :func:`pcc.interpreter.run`: ``observe(op, results)`` is called after every op, and with ``return_all``
    the result is a dict holding every argument and op result by value name.  Without it, the outputs in
    order."""
    g = module.functions[function] if function else module.main
    env = _bind(g, inputs)
    outs = _run_graph(module, g, env, observe)
    if not return_all:
        return outs
    values = {(a.name or ""): env[id(a)] for a in g.args}
    for op in g.body:
        for r in op.results:
            if r.name and id(r) in env:
                values[r.name] = env[id(r)]
    return values


def program_io(module: Module) -> tuple[list[Operation], list[Operation]]:
    """The boundary ops of the main graph: its ``pent.quantize`` ops (one per argument, in argument order) and
    the ``pent.dequantize`` ops that produce its outputs."""
    g = module.main
    quants = []
    for a in g.args:
        qs = [u for u in a.users if u.name == "pent.quantize"]
        if len(qs) != 1 or len(a.users) != 1:
            raise PccError(f"argument %{a.name} must be used by exactly one pent.quantize")
        quants.append(qs[0])
    deqs = []
    for v in g.outputs:
        if v.owner is None or v.owner.name != "pent.dequantize":
            raise PccError(f"output {v.ref()} must be produced by pent.dequantize")
        deqs.append(v.owner)
    return quants, deqs


def run_int(module: Module, int_inputs: Mapping[str, np.ndarray] | list[np.ndarray]) -> list[np.ndarray]:
    """Run from the integers of the program inputs (the results of the ``pent.quantize`` ops, keyed by the
    argument name) and return the integers of the outputs (the operands of the ``pent.dequantize`` ops)."""
    g = module.main
    quants, deqs = program_io(module)
    if not isinstance(int_inputs, Mapping):
        int_inputs = {a.name or "": x for a, x in zip(g.args, int_inputs, strict=True)}
    env: dict[int, np.ndarray] = {}
    for a, q in zip(g.args, quants, strict=True):
        x = _i64(np.asarray(int_inputs[a.name or ""]))
        lo, hi = q.results[0].type.value_range or (0, 0)
        if x.shape != q.results[0].type.shape or (x.size and (x.min() < lo or x.max() > hi)):
            raise PccError(f"integer input {a.name}: expected {q.results[0].type} values")
        env[id(q.results[0])] = x
    skip = set(map(id, quants)) | set(map(id, deqs))
    for op in g.body:
        if id(op) in skip:
            continue
        args = [module.weight(v) if v.is_weight else env[id(v)] for v in op.operands]
        for r, a in zip(op.results, eval_op(op, args), strict=True):
            env[id(r)] = a
    return [env[id(d.operands[0])] for d in deqs]


from pcc import pent_reference_binary  # noqa: E402,F401  (its rules register in PENT_RULES)
