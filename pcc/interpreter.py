"""The float reference interpreter: the executable meaning of every ``nn`` op, in NumPy.

``run(module, inputs)`` executes a graph of ``nn`` ops on NumPy arrays and returns its outputs by name.  Math
is done in the tensors' own element type (float32 for float32 models, as ONNX runtimes do); convolution is
im2col plus one matrix product per group, pooling works on strided window views, and nothing loops over
pixels.  Each op has one small kernel function in :data:`KERNELS`, keyed by op class; frontends, passes and
tests use the interpreter as the reference that their results are checked against.

Every intermediate value can be captured: pass ``observe(op, results)`` (called after each op) or
``return_all=True`` (the result then holds every value by name).  The compiler's calibration and ``pcc check``
are built on this hook.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

import pcc.dialects  # noqa: F401  (registers the ops)
from pcc.diagnostics import PccError
from pcc.dialects import nn
from pcc.ir import Graph, Module, Operation, Return, Value
from pcc.rules import RuleTable

__all__ = ["run", "eval_op", "eval_stacked", "stack_exact", "stacked_values", "KERNELS", "Observer", "supported_ops"]

Kernel = Callable[..., Any]
Observer = Callable[[Operation, list[np.ndarray]], None]

FLOAT_RULES: RuleTable[Kernel] = RuleTable("float-reference")
KERNELS = FLOAT_RULES.rules  # op class -> kernel

kernel = FLOAT_RULES.register
"""Register ``fn(op, *operand_arrays)`` as the meaning of the given op classes (the stage's rule table,
:mod:`pcc.rules`).  A kernel returns one array, or a list of arrays for multi-result ops."""


def supported_ops() -> list[str]:
    """Names of the ops the interpreter can execute."""
    return sorted(cls.name for cls in KERNELS)


# ----------------------------------------------------------------------------------------------- running


def _where(op: Operation) -> str:
    return f"{op.name}" + (f" (node {op.loc.node!r})" if op.loc is not None and op.loc.node else "")


def eval_op(op: Operation, args: Sequence[np.ndarray], samples: int = 0) -> list[np.ndarray]:
    """Evaluate one op on operand arrays; results are checked against (and cast to) the declared types.
    ``samples > 0``: the results hold that many samples stacked on the leading axis (see :func:`eval_stacked`)."""
    fn = FLOAT_RULES.get(type(op))
    if fn is None:
        raise PccError(
            f"the reference interpreter has no kernel for op {op.name}"
            + (f" (from node {op.loc.node!r})" if op.loc is not None and op.loc.node else ""),
            op.loc,
        )
    try:
        with np.errstate(over="ignore", under="ignore", invalid="ignore", divide="ignore"):
            out = _stacked_move(op, args[0], samples) if samples and isinstance(op, _RESHAPES) else fn(op, *args)
    except PccError:
        raise
    except (ValueError, IndexError, TypeError, ZeroDivisionError) as exc:
        raise PccError(f"{_where(op)}: evaluation failed: {exc}", op.loc) from exc
    outs = list(out) if isinstance(out, list | tuple) else [out]
    if len(outs) != len(op.results):
        raise PccError(f"{_where(op)}: kernel returned {len(outs)} values for {len(op.results)} results", op.loc)
    checked = []
    for r, a in zip(op.results, outs, strict=True):
        a = np.asarray(a)
        want = (samples, *r.type.shape[1:]) if samples else r.type.shape
        if a.shape != want:
            raise PccError(
                f"{_where(op)}: computed shape {list(a.shape)} but the result type is {r.type} "
                "(the op's declared type and its meaning disagree)",
                op.loc,
            )
        if a.dtype != r.type.np_dtype:
            a = a.astype(r.type.np_dtype)
        checked.append(a)
    return checked


# ----------------------------------------------------------------------------------------------- stacked runs
#
# Calibration runs many samples through a graph whose arguments have batch 1.  Stacking the samples on the
# leading axis and running each op once saves the per-op overhead and lets the elementwise ops, pooling and
# data movement work on all samples at once.  Every result is bit for bit the one a run per sample gives: ops
# whose float result could depend on the stack size (matrix products, whose BLAS blocking follows the matrix
# sizes, and reductions, whose summation order may) run once per sample inside the stacked run.


def stacked_values(g: Graph) -> set[int] | None:
    """The values (by id) that carry the sample axis when samples of ``g``'s arguments are stacked: those that
    depend on an argument.  None when ``g`` cannot run stacked: an argument or such a value of rank 0 or whose
    leading dimension is not 1 (a graph with batch > 1, or an op that folds the batch axis away)."""
    stacked = {id(a) for a in g.args}
    if any(a.type.rank == 0 or a.type.shape[0] != 1 for a in g.args):
        return None
    for op in g.body:
        if not any(id(v) in stacked for v in op.operands):
            continue
        for r in op.results:
            if r.type.rank == 0 or r.type.shape[0] != 1:
                return None
            stacked.add(id(r))
    return stacked


_RESHAPES = (nn.Flatten, nn.Reshape, nn.Squeeze, nn.Unsqueeze)


def _stacked_move(op: Operation, x: np.ndarray, samples: int) -> np.ndarray:
    return x.reshape((samples, *op.results[0].type.shape[1:]))


def _axis_free(op: Operation, rank: int) -> bool:
    """Whether a data-movement op leaves the leading (sample) axis alone, so it can run on stacked samples."""
    if isinstance(op, _RESHAPES):
        return True
    if isinstance(op, nn.Transpose):
        return list(op.attr("perm"))[:1] == [0]
    if isinstance(op, nn.Concat | nn.Split):
        return op.attr("axis") % rank != 0
    if isinstance(op, nn.Slice):
        axes = op.attr("axes") or list(range(len(op.attr("starts"))))
        return all(a % rank != 0 for a in axes)
    return False


def _exact_when_stacked(op: Operation) -> bool:
    """Ops whose per-element result cannot depend on how many samples run together."""
    import pcc.dialects.nn_elementwise as nne

    return isinstance(
        op, nne.Elementwise | nn.Clip | nn.Identity | nn.Dropout | nn.Gelu | nn.BatchNorm | nn.ScaleShift | nn.MaxPool
    ) or isinstance(op, nn.Cast)


def stack_exact(op: Operation, args: Sequence[np.ndarray], stacked: Sequence[bool]) -> bool:
    """Whether ``op`` runs once on a whole stack (the operands flagged in ``stacked`` hold the samples) with
    the per-sample results bit for bit: an elementwise op, max pooling or a data movement that leaves the
    sample axis alone, its stacked operands of the result's rank (the sample axis lines up)."""
    rank = op.results[0].type.rank if op.results else 0
    if not all(a.ndim == rank for a, s in zip(args, stacked, strict=True) if s):
        return False
    return _exact_when_stacked(op) or (all(stacked) and _axis_free(op, rank))


def eval_stacked(op: Operation, args: Sequence[np.ndarray], stacked: Sequence[bool], samples: int) -> list[np.ndarray]:
    """Evaluate ``op`` on ``samples`` samples at once: the operands flagged in ``stacked`` hold the samples on
    their leading axis (the others, weights and constants, are shared).  The results equal, bit for bit, the
    per-sample results stacked: ops that could round differently on a stack run once per sample."""
    if not any(stacked) or samples == 1:
        return eval_op(op, args)
    if stack_exact(op, args, stacked):
        return eval_op(op, args, samples)
    parts = [
        eval_op(op, [a[i : i + 1] if s else a for a, s in zip(args, stacked, strict=True)]) for i in range(samples)
    ]
    return [np.concatenate(rs, axis=0) for rs in zip(*parts, strict=True)]


def _check_input(name: str, arg: Value, value: Any, check_finite: bool = True, samples: int = 0) -> np.ndarray:
    t = arg.type
    if not isinstance(value, np.ndarray | np.generic):
        raise PccError(f"input {name!r}: expected a numpy array {t}, got {type(value).__name__}")
    a = np.asarray(value)
    want = (samples, *t.shape[1:]) if samples else t.shape
    if a.shape != want:
        raise PccError(f"input {name!r}: expected shape {list(want)} ({t}), got {list(a.shape)}")
    if a.dtype != t.np_dtype:
        raise PccError(f"input {name!r}: expected element type {t.np_dtype} ({t}), got {a.dtype}")
    if check_finite and t.is_float and a.size and not np.all(np.isfinite(a)):
        bad = "NaN" if np.isnan(a).any() else "infinity"
        raise PccError(f"input {name!r} holds {bad}")
    return a


def run(
    module: Module,
    inputs: Mapping[str, np.ndarray],
    function: str = "main",
    observe: Observer | None = None,
    return_all: bool = False,
    check_finite: bool = True,
    samples: int = 0,
) -> dict[str, np.ndarray]:
    """Execute ``function`` of ``module`` on ``inputs`` (arrays by argument name); returns outputs by name.

    Inputs must have exactly the arguments' shapes and element types and hold no NaN or infinity.  With
    ``observe``, ``observe(op, results)`` is called after every op; with ``return_all``, the result holds every
    argument, weight used and intermediate value by name, not only the outputs.  ``check_finite=False`` accepts
    NaN and infinity in the inputs (for conformance tests of ops such as Cast).  ``samples=S`` runs S samples of
    a batch-1 graph at once, stacked on each input's leading axis (``[S, ...]``; the graph must pass
    :func:`stacked_values`); every value is then the per-sample values stacked, bit for bit.  Any problem is a
    PccError.
    """
    if function not in module.functions:
        known = ", ".join("@" + n for n in module.functions) or "none"
        raise PccError(f"module @{module.name} has no function @{function} (functions: {known})")
    g = module.functions[function]
    names = [a.name or "" for a in g.args]
    missing = [n for n in names if n not in inputs]
    if missing:
        raise PccError(f"missing input(s) {', '.join(map(repr, missing))}; @{function} takes {names}")
    extra = [n for n in inputs if n not in names]
    if extra:
        raise PccError(f"unknown input(s) {', '.join(map(repr, extra))}; @{function} takes {names}")

    stacked = stacked_values(g) if samples else None
    if samples and stacked is None:
        raise PccError(f"@{function} cannot run samples stacked: an input or a value has no batch-1 leading axis")
    env: dict[int, np.ndarray] = {}
    for a in g.args:
        env[id(a)] = _check_input(a.name or "", a, inputs[a.name or ""], check_finite, samples)

    # last use of each value, so dead intermediates are freed (unless everything is kept)
    keep_all = return_all
    last_use: dict[int, int] = {}
    if not keep_all:
        for i, op in enumerate(g.ops):
            for v in op.operands:
                last_use[id(v)] = i
    everything: dict[str, np.ndarray] = {}

    def fetch(v: Value, op: Operation) -> np.ndarray:
        a = env.get(id(v))
        if a is not None:
            return a
        if v.kind == "weight":
            data = module.weight_data.get(v.name or "")
            if data is None:
                raise PccError(f"{_where(op)}: weight {v.ref()} has no data", op.loc)
            if return_all:
                everything[v.name or ""] = data
            return data
        raise PccError(f"{_where(op)}: operand {v.ref()} has no value (used before its definition?)", op.loc)

    outputs: dict[str, np.ndarray] = {}
    for i, op in enumerate(g.ops):
        args = [fetch(v, op) for v in op.operands]
        if isinstance(op, Return):
            for v, a in zip(op.operands, args, strict=True):
                outputs[v.name or ""] = a
            break
        if stacked is None:
            results = eval_op(op, args)
        else:
            results = eval_stacked(op, args, [id(v) in stacked for v in op.operands], samples)
        for r, a in zip(op.results, results, strict=True):
            env[id(r)] = a
        if observe is not None:
            observe(op, results)
        if not keep_all:
            for v in op.operands:
                if last_use.get(id(v)) == i and v.kind != "weight":
                    env.pop(id(v), None)
    if return_all:
        for a in g.args:
            everything[a.name or ""] = env[id(a)]
        for op in g.body:
            for r in op.results:
                everything[r.name or ""] = env[id(r)]
        everything.update(outputs)
        return everything
    return outputs


# ----------------------------------------------------------------------------------------------- helpers


def _f(x: np.ndarray, v: float) -> np.generic:
    """A scalar ``v`` in ``x``'s float type (so float32 math stays float32)."""
    return x.dtype.type(v) if np.issubdtype(x.dtype, np.floating) else np.float32(v)


def _window_view(
    x: np.ndarray,
    kernel: Sequence[int],
    strides: Sequence[int],
    pads: Sequence[int],
    dilations: Sequence[int],
    out: Sequence[int],
    pad_value: float,
) -> np.ndarray:
    """``[N, C, *out, *kernel]`` windows of ``x`` padded with ``pad_value`` (extra end padding where ceil-mode
    windows reach past the explicit pads)."""
    n = len(kernel)
    widths = [(0, 0), (0, 0)]
    for i in range(n):
        eff = dilations[i] * (kernel[i] - 1) + 1
        need = (out[i] - 1) * strides[i] + eff  # padded length the windows span
        size = x.shape[2 + i] + pads[i]
        widths.append((pads[i], max(pads[i + n], need - size)))
    xp = np.pad(x, widths, constant_values=pad_value) if any(w != (0, 0) for w in widths) else x
    effs = [dilations[i] * (kernel[i] - 1) + 1 for i in range(n)]
    win = sliding_window_view(xp, effs, axis=tuple(range(2, 2 + n)))
    sl = (slice(None), slice(None))
    sl += tuple(slice(0, (out[i] - 1) * strides[i] + 1, strides[i]) for i in range(n))
    sl += tuple(slice(None, None, dilations[i]) for i in range(n))
    return win[sl]


def _pool_params(op: Operation, x: np.ndarray) -> tuple[list[int], list[int], list[int], list[int], list[int]]:
    k = list(op.attr("kernel_shape"))
    n = len(k)
    strides = op.attr("strides") or [1] * n
    pads = op.attr("pads") or [0] * (2 * n)
    dil = (op.attr("dilations") if "dilations" in op.attrs else None) or [1] * n
    out = list(op.results[0].type.shape[2:])
    return k, strides, pads, dil, out


# ----------------------------------------------------------------------------------------------- elementwise


@kernel(nn.Add)
def _add(op: Operation, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return a + b


@kernel(nn.Sub)
def _sub(op: Operation, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return a - b


@kernel(nn.Mul)
def _mul(op: Operation, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return a * b


@kernel(nn.Div)
def _div(op: Operation, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    if np.issubdtype(a.dtype, np.integer):  # integer division truncates toward zero (as in C)
        if np.any(b == 0):
            raise PccError(f"{_where(op)}: integer division by zero", op.loc)
        if np.issubdtype(a.dtype, np.unsignedinteger):
            return a // b
        q = a // b
        fix = (q < 0) & (q * b != a)
        return q + fix.astype(q.dtype)
    return a / b


@kernel(nn.Pow)
def _pow(op: Operation, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    if np.issubdtype(a.dtype, np.integer) and np.any(b < 0):
        return np.power(a.astype(np.float64), b).astype(a.dtype)
    if b.size == 1 and np.issubdtype(a.dtype, np.floating) and float(b.reshape(-1)[0]) == 3.0:
        # GELU's tanh form cubes its input: two products are some ten times faster than pow() and within an
        # ulp of it
        return (a * a * a).reshape(np.broadcast_shapes(a.shape, b.shape)).astype(np.result_type(a, b), copy=False)
    return np.power(a, b)


@kernel(nn.Relu)
def _relu(op: Operation, x: np.ndarray) -> np.ndarray:
    return np.maximum(x, x.dtype.type(0))


@kernel(nn.LeakyRelu)
def _leaky_relu(op: Operation, x: np.ndarray) -> np.ndarray:
    return np.where(x >= 0, x, x * _f(x, op.attr("alpha")))


@kernel(nn.Clip)
def _clip(op: Operation, x: np.ndarray) -> np.ndarray:
    lo, hi = op.attr("min"), op.attr("max")
    if np.issubdtype(x.dtype, np.integer):
        info = np.iinfo(x.dtype)
        lo = None if lo is None else x.dtype.type(min(max(int(lo), info.min), info.max))
        hi = None if hi is None else x.dtype.type(min(max(int(hi), info.min), info.max))
    else:
        lo = None if lo is None else _f(x, lo)
        hi = None if hi is None else _f(x, hi)
    y = x
    if lo is not None:
        y = np.maximum(y, lo)
    if hi is not None:
        y = np.minimum(y, hi)
    return y


@kernel(nn.Sigmoid)
def _sigmoid(op: Operation, x: np.ndarray) -> np.ndarray:
    e = np.exp(-np.abs(x))  # stable for both signs
    one = x.dtype.type(1)
    return np.where(x >= 0, one / (one + e), e / (one + e))


@kernel(nn.Tanh)
def _tanh(op: Operation, x: np.ndarray) -> np.ndarray:
    return np.tanh(x)


@kernel(nn.HardSigmoid)
def _hard_sigmoid(op: Operation, x: np.ndarray) -> np.ndarray:
    y = x * _f(x, op.attr("alpha")) + _f(x, op.attr("beta"))
    return np.clip(y, x.dtype.type(0), x.dtype.type(1))


@kernel(nn.HardSwish)
def _hard_swish(op: Operation, x: np.ndarray) -> np.ndarray:
    return x * np.clip(x * _f(x, 1.0 / 6.0) + _f(x, 0.5), x.dtype.type(0), x.dtype.type(1))


_erf64 = np.frompyfunc(math.erf, 1, 1)


def _erf(x: np.ndarray) -> np.ndarray:
    """erf in float64 (math.erf per element: exact to double precision), returned in ``x``'s type."""
    return _erf64(x.astype(np.float64)).astype(np.float64).astype(x.dtype)


@kernel(nn.Erf)
def _erf_k(op: Operation, x: np.ndarray) -> np.ndarray:
    return _erf(x)


@kernel(nn.Gelu)
def _gelu(op: Operation, x: np.ndarray) -> np.ndarray:
    d = x.astype(np.float64)
    if op.attr("approximate") == "tanh":
        y = 0.5 * d * (1.0 + np.tanh(math.sqrt(2.0 / math.pi) * (d + 0.044715 * d**3)))
    else:
        y = 0.5 * d * (1.0 + _erf64(d / math.sqrt(2.0)).astype(np.float64))
    return y.astype(x.dtype)


@kernel(nn.Sqrt)
def _sqrt(op: Operation, x: np.ndarray) -> np.ndarray:
    return np.sqrt(x)


@kernel(nn.Exp)
def _exp(op: Operation, x: np.ndarray) -> np.ndarray:
    return np.exp(x)


@kernel(nn.Neg)
def _neg(op: Operation, x: np.ndarray) -> np.ndarray:
    return -x


@kernel(nn.Identity, nn.Dropout)
def _identity(op: Operation, x: np.ndarray) -> np.ndarray:
    return x


@kernel(nn.Softmax)
def _softmax(op: Operation, x: np.ndarray) -> np.ndarray:
    ax = op.attr("axis")
    e = np.exp(x - np.max(x, axis=ax, keepdims=True))
    return e / np.sum(e, axis=ax, keepdims=True)


@kernel(nn.LogSoftmax)
def _log_softmax(op: Operation, x: np.ndarray) -> np.ndarray:
    ax = op.attr("axis")
    d = x - np.max(x, axis=ax, keepdims=True)
    return d - np.log(np.sum(np.exp(d), axis=ax, keepdims=True))


@kernel(nn.Cast)
def _cast(op: Operation, x: np.ndarray) -> np.ndarray:
    return x.astype(op.results[0].type.np_dtype)


# ----------------------------------------------------------------------------------------------- linear algebra


@kernel(nn.Conv2d)
def _conv2d(op: Operation, x: np.ndarray, w: np.ndarray, b: np.ndarray | None = None) -> np.ndarray:
    n, c = x.shape[:2]
    m, cg, kh, kw = w.shape
    g = op.attr("group")
    oh, ow = op.results[0].type.shape[2:]
    strides, pads, dil = op.attr("strides"), op.attr("pads"), op.attr("dilations")
    if g == 1:
        # im2col as [K, P] rows, each one strided copy of the padded input per kernel tap (fast), multiplied
        # through its transpose: the same matrix product, bit for bit, as the [P, K] layout below
        xp = _window_view(x, (1, 1), strides, pads, dil, (oh, ow), 0.0)[..., 0, 0] if (kh, kw) == (1, 1) else None
        if xp is not None:
            cols = xp.transpose(1, 0, 2, 3).reshape(c, n * oh * ow)
        else:
            cols = _im2col_rows(x, (kh, kw), strides, pads, dil, (oh, ow))
        y = np.matmul(cols.T, w.reshape(m, c * kh * kw).T)  # [N*OH*OW, M]
        y = y.reshape(n, oh, ow, m).transpose(0, 3, 1, 2)
    else:
        win = _window_view(x, (kh, kw), strides, pads, dil, (oh, ow), 0.0)
        # win: [N, C, OH, OW, kh, kw] -> per group [N*OH*OW, Cg*kh*kw] (one copy: im2col)
        cols = win.reshape(n, g, cg, oh, ow, kh, kw).transpose(1, 0, 3, 4, 2, 5, 6).reshape(g, n * oh * ow, -1)
        wm = w.reshape(g, m // g, cg * kh * kw).transpose(0, 2, 1)
        y = np.matmul(cols, wm)  # [g, N*OH*OW, M/g]
        y = y.reshape(g, n, oh, ow, m // g).transpose(1, 0, 4, 2, 3).reshape(n, m, oh, ow)
    if b is not None:
        y = y + b.reshape(1, m, 1, 1)
    return np.ascontiguousarray(y)


def _im2col_rows(
    x: np.ndarray,
    kernel: Sequence[int],
    strides: Sequence[int],
    pads: Sequence[int],
    dil: Sequence[int],
    out: Sequence[int],
) -> np.ndarray:
    """The ``[C*kh*kw, N*OH*OW]`` patch matrix of a 2-D convolution (rows in weight order c, i, j)."""
    n, c = x.shape[:2]
    kh, kw = kernel
    oh, ow = out
    sh, sw = strides
    dh, dw = dil
    need_h, need_w = (oh - 1) * sh + dh * (kh - 1) + 1, (ow - 1) * sw + dw * (kw - 1) + 1
    widths = (
        (0, 0),
        (pads[0], max(pads[2], need_h - x.shape[2] - pads[0])),
        (pads[1], max(pads[3], need_w - x.shape[3] - pads[1])),
    )
    xp = np.pad(x.transpose(1, 0, 2, 3), ((0, 0), *widths)) if any(map(any, widths)) else x.transpose(1, 0, 2, 3)
    rows = np.empty((c, kh, kw, n, oh, ow), x.dtype)
    for i in range(kh):
        for j in range(kw):
            rows[:, i, j] = xp[:, :, i * dh : i * dh + (oh - 1) * sh + 1 : sh, j * dw : j * dw + (ow - 1) * sw + 1 : sw]
    return rows.reshape(c * kh * kw, n * oh * ow)


@kernel(nn.Gemm)
def _gemm(op: Operation, a: np.ndarray, b: np.ndarray, c: np.ndarray | None = None) -> np.ndarray:
    a2 = a.T if op.attr("trans_a") else a
    b2 = b.T if op.attr("trans_b") else b
    y = a2 @ b2
    alpha, beta = op.attr("alpha"), op.attr("beta")
    if alpha != 1.0:
        y = y * _f(y, alpha)
    if c is not None:
        y = y + (c if beta == 1.0 else c * _f(c, beta))
    return y


@kernel(nn.MatMul)
def _matmul(op: Operation, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.matmul(a, b)


@kernel(nn.DequantizeWeight)
def _dequantize_weight(op: Operation, q: np.ndarray, s: np.ndarray) -> np.ndarray:
    if s.ndim == 1:
        shape = [1] * q.ndim
        shape[op.attr("axis") % q.ndim] = -1
        s = s.reshape(shape)
    return q.astype(s.dtype) * s


# ----------------------------------------------------------------------------------------------- pooling


@kernel(nn.MaxPool)
def _max_pool(op: Operation, x: np.ndarray) -> np.ndarray:
    k, strides, pads, dil, out = _pool_params(op, x)
    low = -np.inf if np.issubdtype(x.dtype, np.floating) else np.iinfo(x.dtype).min
    if len(k) != 2:
        win = _window_view(x, k, strides, pads, dil, out, low)
        return win.max(axis=tuple(range(-len(k), 0)))
    # the maximum over the kernel taps, one strided slice of the padded input each (the same values as the
    # maximum over a window view, much faster on large maps)
    need = [(out[i] - 1) * strides[i] + dil[i] * (k[i] - 1) + 1 for i in range(2)]
    widths = [(0, 0), (0, 0)] + [(pads[i], max(pads[i + 2], need[i] - x.shape[2 + i] - pads[i])) for i in range(2)]
    xp = np.pad(x, widths, constant_values=low) if any(a or b for a, b in widths) else x
    y = None
    for i in range(k[0]):
        for j in range(k[1]):
            tap = xp[:, :, i * dil[0] :: strides[0], j * dil[1] :: strides[1]][:, :, : out[0], : out[1]]
            y = tap.copy() if y is None else np.maximum(y, tap, out=y)
    return y


@kernel(nn.AvgPool)
def _avg_pool(op: Operation, x: np.ndarray) -> np.ndarray:
    k, strides, pads, dil, out = _pool_params(op, x)
    n = len(k)
    axes = tuple(range(-n, 0))
    sums = _window_view(x, k, strides, pads, dil, out, 0.0).sum(axis=axes)
    # how many positions each window averages: real input positions, plus the explicit pads when
    # count_include_pad (never the extra ceil-mode padding)
    spatial = x.shape[2:]
    if op.attr("count_include_pad"):
        mask = np.ones([1, 1] + [spatial[i] + pads[i] + pads[i + n] for i in range(n)], x.dtype)
        counts = _window_view(mask, k, strides, [0] * (2 * n), dil, out, 0.0).sum(axis=axes)
    else:
        mask = np.ones((1, 1, *spatial), x.dtype)
        counts = _window_view(mask, k, strides, pads, dil, out, 0.0).sum(axis=axes)
    return sums / np.maximum(counts, x.dtype.type(1))


@kernel(nn.AdaptivePool)
def _adaptive_pool(op: Operation, x: np.ndarray) -> np.ndarray:
    out = op.attr("output_size")
    wins = [nn.adaptive_windows(x.shape[2 + i], o) for i, o in enumerate(out)]
    y = np.empty((*x.shape[:2], *out), x.dtype)
    reduce = np.mean if op.attr("kind") == "avg" else np.max
    for idx in np.ndindex(*out):
        sl = tuple(slice(*wins[i][j]) for i, j in enumerate(idx))
        y[(slice(None), slice(None), *idx)] = reduce(x[(slice(None), slice(None), *sl)], axis=tuple(range(2, x.ndim)))
    return y


@kernel(nn.GlobalAvgPool)
def _global_avg_pool(op: Operation, x: np.ndarray) -> np.ndarray:
    return x.mean(axis=tuple(range(2, x.ndim)), keepdims=True)


@kernel(nn.GlobalMaxPool)
def _global_max_pool(op: Operation, x: np.ndarray) -> np.ndarray:
    return x.max(axis=tuple(range(2, x.ndim)), keepdims=True)


# ----------------------------------------------------------------------------------------------- normalisation


def _per_channel(v: np.ndarray, rank: int) -> np.ndarray:
    return v.reshape((1, -1) + (1,) * (rank - 2))


@kernel(nn.BatchNorm)
def _batch_norm(
    op: Operation, x: np.ndarray, scale: np.ndarray, bias: np.ndarray, mean: np.ndarray, var: np.ndarray
) -> np.ndarray:
    r = x.ndim
    inv = np.sqrt(var + _f(var, op.attr("epsilon")))
    return (x - _per_channel(mean, r)) / _per_channel(inv, r) * _per_channel(scale, r) + _per_channel(bias, r)


@kernel(nn.ScaleShift)
def _scale_shift(op: Operation, x: np.ndarray, scale: np.ndarray, shift: np.ndarray) -> np.ndarray:
    return x * _per_channel(scale, x.ndim) + _per_channel(shift, x.ndim)


@kernel(nn.LayerNorm)
def _layer_norm(op: Operation, x: np.ndarray, scale: np.ndarray, bias: np.ndarray | None = None) -> np.ndarray:
    ax = op.attr("axis") % x.ndim
    axes = tuple(range(ax, x.ndim))
    mean = x.mean(axis=axes, keepdims=True)
    d = x - mean
    var = (d * d).mean(axis=axes, keepdims=True)
    y = d / np.sqrt(var + _f(x, op.attr("epsilon"))) * scale
    return y if bias is None else y + bias


# ----------------------------------------------------------------------------------------------- shapes


@kernel(nn.Flatten, nn.Reshape, nn.Squeeze, nn.Unsqueeze)
def _reshape(op: Operation, x: np.ndarray) -> np.ndarray:
    return x.reshape(op.results[0].type.shape)


@kernel(nn.Transpose)
def _transpose(op: Operation, x: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(np.transpose(x, op.attr("perm")))


@kernel(nn.Concat)
def _concat(op: Operation, *xs: np.ndarray) -> np.ndarray:
    return np.concatenate(xs, axis=op.attr("axis"))


@kernel(nn.Split)
def _split(op: Operation, x: np.ndarray) -> list[np.ndarray]:
    ax = op.attr("axis")
    edges = np.cumsum(op.attr("split"))[:-1]
    return np.split(x, edges, axis=ax)


@kernel(nn.Slice)
def _slice(op: Operation, x: np.ndarray) -> np.ndarray:
    starts, ends = op.attr("starts"), op.attr("ends")
    axes = op.attr("axes") or list(range(len(starts)))
    steps = op.attr("steps") or [1] * len(starts)
    sl = [slice(None)] * x.ndim
    for s, e, a, st in zip(starts, ends, axes, steps, strict=True):
        sl[a % x.ndim] = slice(s, e, st)
    return x[tuple(sl)]


@kernel(nn.Pad)
def _pad(op: Operation, x: np.ndarray) -> np.ndarray:
    pads = op.attr("pads")
    r = x.ndim
    mode = op.attr("mode")
    grow = [(max(pads[i], 0), max(pads[i + r], 0)) for i in range(r)]
    if any(a or b for a, b in grow):
        if mode == "constant":
            x = np.pad(x, grow, mode="constant", constant_values=_f(x, op.attr("value")))
        else:
            x = np.pad(x, grow, mode=mode)
    crop = tuple(slice(max(-pads[i], 0), x.shape[i] - max(-pads[i + r], 0)) for i in range(r))
    return x[crop]


def _reduce_axes(op: Operation, x: np.ndarray) -> tuple[int, ...]:
    axes = op.attr("axes")
    return tuple(range(x.ndim)) if axes is None else tuple(a % max(x.ndim, 1) for a in axes)


@kernel(nn.ReduceMean)
def _reduce_mean(op: Operation, x: np.ndarray) -> np.ndarray:
    return np.mean(x, axis=_reduce_axes(op, x), keepdims=op.attr("keepdims"))


@kernel(nn.ReduceSum)
def _reduce_sum(op: Operation, x: np.ndarray) -> np.ndarray:
    return np.sum(x, axis=_reduce_axes(op, x), keepdims=op.attr("keepdims"), dtype=x.dtype)


@kernel(nn.Gather)
def _gather(op: Operation, x: np.ndarray, idx: np.ndarray) -> np.ndarray:
    ax = op.attr("axis") % x.ndim
    n = x.shape[ax]
    if idx.size and (idx.min() < -n or idx.max() >= n):
        raise PccError(f"{_where(op)}: gather index out of range [-{n}, {n - 1}]", op.loc)
    return np.take(x, idx, axis=ax)


@kernel(nn.Expand)
def _expand(op: Operation, x: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(np.broadcast_to(x, op.results[0].type.shape))


# the kernels of the other op families register themselves into KERNELS
from pcc import interpreter_elementwise, interpreter_resize, interpreter_tensor  # noqa: E402, F401
