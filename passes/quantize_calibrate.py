"""Calibration for ``quantize``: the inputs of the calibration runs, the range of every value over them, and the
quantized simulation that bias correction and GPTQ take their statistics from.

- :func:`calibration_batches`: the calibration data split into the graph's batch size (``max-batches`` at
  most), or ``fallback-samples`` random standard-normal inputs with a :class:`CalibrationWarning`;
- :func:`observe_ranges`: the float graph runs the batches (:class:`StackedRun`: stacked into groups, each op
  once per group by :func:`eval_group`), and a :class:`RangeObserver` records ``max |x|``
  (``calib-method=minmax``) or a percentile of ``|x|`` of every value, and the mean input of every conv/gemm
  (the float side of bias correction);
- :class:`QuantizedSim`: the float graph run again op by op with the pentary weights, as the lowering goes.

The ops run the float reference's kernels; the products (conv, gemm, matmul) run once per group of stacked
samples, by the reference kernel on the stack or, with ``calib-engine=torch`` (``auto``: torch is installed and
the runs are large), by torch's float32 kernels, and so does max pooling (the reference's values).  The values
then differ from one reference run per sample in the products' last bits only (the ranges by about 1e-7
relative), and a calibration is deterministic.  ReLU, add, sub and mul write their result over an operand that
no later op reads (:data:`INPLACE`, :meth:`StackedRun.spare`): the same values without a new array.
"""

from __future__ import annotations

import sys
import warnings
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from pcc.arrays import load_npz
from pcc.diagnostics import PccError
from pcc.dialects import nn
from pcc.ir import Graph, Module, Operation, Value
from pcc.pent_reference import windows


class CalibrationWarning(UserWarning):
    """Quantization went ahead without calibration data (or with some other doubtful input)."""


def load_calibration(path: str | Path) -> dict[str, np.ndarray]:
    """Arrays of a calibration ``.npz`` by input name."""
    p = Path(path)
    if not p.exists():
        raise PccError(f"calibration file {p}: no such file")
    try:
        return load_npz(p, "calibration file")
    except PccError as exc:
        expected = "expected an .npz archive with one array per input name (numpy.savez(path, **{name: samples}))"
        detail = exc.message.removeprefix("calibration file: ")
        raise PccError(f"calibration file {p}: {detail}", notes=[*exc.notes, expected]) from None


def calibration_batches(
    g: Graph, data: Mapping[str, np.ndarray] | None, max_batches: int, fallback: int, seed: int
) -> list[dict[str, np.ndarray]]:
    """Inputs for the calibration runs: the data split into the graph's batch size, or random normal inputs."""
    if data is None:
        warnings.warn(
            f"no calibration data: activation ranges come from {fallback} random standard-normal input(s) and "
            "there is no bias correction; pass --calibration FILE.npz (arrays keyed by input name) for accurate "
            "scales",
            CalibrationWarning,
            stacklevel=3,
        )
        rng = np.random.default_rng(seed)
        return [
            {a.name or "": rng.standard_normal(a.type.shape).astype(a.type.np_dtype) for a in g.args}
            for _ in range(max(fallback, 1))
        ]
    counts = []
    for a in g.args:
        if a.name not in data:
            raise PccError(
                f"calibration data has no array for input '{a.name}' (it has: {', '.join(sorted(data)) or 'none'})"
            )
        x = data[a.name or ""]
        if x.ndim != a.type.rank or tuple(x.shape[1:]) != a.type.shape[1:]:
            raise PccError(
                f"calibration array '{a.name}' has shape {list(x.shape)}; expected samples stacked on the batch "
                f"axis of {list(a.type.shape)}, i.e. [S, {', '.join(map(str, a.type.shape[1:]))}]"
            )
        counts.append(x.shape[0] // max(a.type.shape[0], 1))
    n = min(counts, default=1)
    if n == 0:
        raise PccError("calibration data holds fewer samples than one batch of the model's input")
    n = min(n, max_batches)
    for a in g.args:
        x = data[a.name or ""][: n * a.type.shape[0]]
        if a.type.is_float and x.size and not np.all(np.isfinite(x)):
            raise PccError(f"calibration array '{a.name}' holds {'NaN' if np.isnan(x).any() else 'infinity'}")
    out = []
    for i in range(n):
        batch = {}
        for a in g.args:
            b = a.type.shape[0]
            batch[a.name or ""] = np.ascontiguousarray(data[a.name or ""][i * b : (i + 1) * b], dtype=a.type.np_dtype)
        out.append(batch)
    return out


def im2col(x: np.ndarray, op: Operation) -> np.ndarray:
    """The [K, P] patch matrix of a conv's input (K = C*kh*kw in weight order, P = batch x output positions)."""
    kh, kw = op.operands[1].type.shape[2:]
    win = windows(x, kh, kw, op.attr("strides"), op.attr("pads"))
    return win.transpose(1, 4, 5, 0, 2, 3).reshape(x.shape[1] * kh * kw, -1)


class RangeObserver:
    """Collects, over the calibration runs, ``max |x|`` (or a percentile of ``|x|``) of every value and, for the
    inputs of conv/gemm ops, their mean (the float side of bias correction)."""

    SUBSAMPLE = 1 << 16

    def __init__(self, method: str, percentile: float, keep_first: bool) -> None:
        if method not in ("minmax", "percentile"):
            raise PccError(f"calib-method must be minmax or percentile, got {method!r}")
        self.method = method
        self.percentile = percentile
        self.amax: dict[int, float] = {}
        self.samples_of: dict[int, list[np.ndarray]] = {}  # |x| subsamples per value (percentile)
        self.samples = 1  # runs stacked in the current call (see add)
        self.stacked: set[int] = set()
        self.keep_first = keep_first
        self.first: dict[int, np.ndarray] = {}
        self.run_index = 0
        self.want_mean: set[int] = set()
        self.mean_runs = 0  # the means are taken over the first runs: the batches the quantized simulation sees
        self.sums: dict[int, np.ndarray] = {}
        self.counts: dict[int, int] = {}

    def add(self, v: Value, x: np.ndarray) -> None:
        if not v.type.is_float or not np.size(x):
            return
        key = id(v)
        flat = np.asarray(x).ravel(order="K")  # in memory order: a view of a dense array in any axis order
        m = max(*_extremes(flat))  # max |x| without a temporary |x|
        if not np.isfinite(m):  # -inf of a masked attention score: the range of the finite values (it saturates)
            m = float(np.max(np.abs(flat), where=np.isfinite(flat), initial=0.0))
        self.amax[key] = max(self.amax.get(key, 0.0), m)
        # a stacked run (``samples`` > 1) counts each sample as one run; a value that does not depend on the
        # inputs (not in ``stacked``) is the same in every run
        per_sample = self.samples > 1 and key in self.stacked
        runs = self.samples if self.samples > 1 else 1
        if self.method == "percentile":
            pieces = [x[i : i + 1] for i in range(runs)] if per_sample else [x] * runs
            for part in pieces:
                a = np.asarray(part).reshape(-1)
                step = max(1, a.size // self.SUBSAMPLE)
                self.samples_of.setdefault(key, []).append(np.abs(a[::step]).astype(np.float64))
        if self.keep_first and self.run_index == 0:
            self.first[key] = np.array(x[:1] if per_sample else x)
        n = min(runs, self.mean_runs - self.run_index)  # the runs of this call that the means take
        if key in self.want_mean and n > 0:
            part = x[:n] if per_sample else x
            total = np.sum(part, axis=0, dtype=np.float64) * (1 if per_sample else n)
            self.sums[key] = self.sums.get(key, 0.0) + total
            self.counts[key] = self.counts.get(key, 0) + np.shape(part)[0] * (1 if per_sample else n)

    def __call__(self, op: Operation, results: list[np.ndarray]) -> None:
        for r, x in zip(op.results, results, strict=True):
            self.add(r, x)

    def finish(self) -> None:
        if self.method == "percentile":
            for key, parts in self.samples_of.items():
                self.amax[key] = float(np.percentile(np.concatenate(parts), self.percentile))

    def range_of(self, v: Value) -> float:
        return self.amax.get(id(v), 0.0)

    def mean_of(self, v: Value) -> np.ndarray | None:
        """The mean of value ``v`` over the calibration samples (the batch axis averaged), if observed."""
        key = id(v)
        return self.sums[key] / max(self.counts[key], 1) if key in self.sums else None


def mean_patch(op: Operation, mean: np.ndarray) -> np.ndarray:
    """The mean input patch of a conv ([C*kh*kw], zero padding included) or gemm ([K]) from its input's mean
    (a [C, H, W] map or a [K] vector)."""
    if isinstance(op, nn.Gemm):
        return mean
    return im2col(mean[None], op).mean(axis=1)


def stack_groups(g: Graph, batches: list[dict[str, np.ndarray]], elements: int) -> tuple[set[int] | None, list[int]]:
    """How the batches run: the values that carry the sample axis in a stacked run (None: one run per batch)
    and the sizes of the consecutive groups of batches that run together, each holding about ``elements``
    elements at most in its largest value."""
    from pcc import interpreter

    stacked = interpreter.stacked_values(g)
    if stacked is None or len(batches) < 2:
        return None, [1] * len(batches)
    largest = max((r.type.size for op in g.body for r in op.results), default=1)
    per = max(1, elements // max(largest, 1))
    return stacked, [min(per, len(batches) - i) for i in range(0, len(batches), per)]


def stack(batches: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    return {k: np.concatenate([b[k] for b in batches]) if len(batches) > 1 else batches[0][k] for k in batches[0]}


STACK_ELEMENTS = 1 << 24  # elements of the largest value of a stacked calibration run, at most

# ----------------------------------------------------------------------------------------------- the engine
#
# The calibration runs evaluate each op with the float reference's kernels, except the products (conv, gemm,
# matmul): those run once over a whole group of stacked samples, with torch's float32 kernels where the
# engine is torch (``calib-engine``), else with the reference kernel on the stack (one BLAS product for the
# group).  Either way a value is the float32 result up to the last bits, which depend on the product's
# blocking: the ranges, hence the scales, agree with one reference run per sample to about 1e-6 relative.

CALIB_ENGINES = ("auto", "numpy", "torch")
TORCH_MIN_MACS = 10**10  # ``auto`` imports torch for runs of at least this many MACs (the import takes 1-2 s)
PRODUCTS = (nn.Conv2d, nn.Gemm, nn.MatMul)


def product_macs(g: Graph) -> int:
    """Multiply-accumulates of one run of ``g``'s convolutions and matrix products."""
    total = 0
    for op in g.body:
        if isinstance(op, PRODUCTS) and op.results and len(op.operands) > 1:
            out = op.results[0].type.size
            if isinstance(op, nn.Conv2d):
                total += out * int(np.prod(op.operands[1].type.shape[1:]))
            elif isinstance(op, nn.Gemm):
                a = op.operands[0].type.shape
                total += out * (a[0] if op.attr("trans_a") else a[-1])
            else:
                total += out * (op.operands[0].type.shape[-1] if op.operands[0].type.rank else 1)
    return total


def pick_engine(name: str, g: Graph, runs: int) -> str:
    """``numpy`` or ``torch`` for ``calib-engine=name`` and ``runs`` samples through ``g``: ``auto`` takes torch
    when it is importable and the runs hold at least :data:`TORCH_MIN_MACS` multiply-accumulates (below, its
    import and first calls cost more than it saves)."""
    if name not in CALIB_ENGINES:
        raise PccError(f"calib-engine must be {', '.join(CALIB_ENGINES)}, got {name!r}")
    if name == "numpy" or (name == "auto" and product_macs(g) * runs < TORCH_MIN_MACS):
        return "numpy"
    try:
        import torch  # noqa: F401
    except ImportError:
        if name == "torch":
            raise PccError(
                "calib-engine=torch: torch is not installed (pip install torch, or calib-engine=numpy)"
            ) from None
        return "numpy"
    return "torch"


# torch's kernels for the calibration runs (``calib-engine=torch``), by op class: ``fn(op, *operands)`` on float32
# tensors (sharing the arrays' memory) returns the result tensor, or None for a form it leaves to the reference
# kernel.  The products agree with the reference up to their rounding; max pooling computes the reference's
# values (bit for bit but for the sign of a zero maximum of a window that holds both +0 and -0).
TORCH_KERNELS: dict[type[Operation], Callable[..., Any]] = {}


def _torch_kernel(*classes: type[Operation]) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    def register(fn: Callable[..., Any]) -> Callable[..., Any]:
        for cls in classes:
            TORCH_KERNELS[cls] = fn
        return fn

    return register


@_torch_kernel(nn.Conv2d)
def _torch_conv(op: Operation, x, w, b=None):  # noqa: ANN001, ANN202
    import torch

    t, left, bottom, right = op.attr("pads")
    if (t, left) != (bottom, right):
        x = torch.nn.functional.pad(x, (left, right, t, bottom))
        t = left = 0
    # channels last: oneDNN's direct convolutions in NHWC take half the time of NCHW ones on a CPU with AVX-512
    # (ResNet-18's 16-sample run here; torch reorders the weights itself either way), and the result keeps the
    # layout through the numpy ops after it (ufuncs keep their operands' order; max pooling and the observers
    # read it as it lies)
    x = x.contiguous(memory_format=torch.channels_last)
    return torch.nn.functional.conv2d(
        x, w, b, tuple(op.attr("strides")), (t, left), tuple(op.attr("dilations")), op.attr("group")
    )


@_torch_kernel(nn.Gemm)
def _torch_gemm(op: Operation, a, b, c=None):  # noqa: ANN001, ANN202
    if op.attr("trans_a") or op.attr("alpha") != 1.0 or (c is not None and op.attr("beta") != 1.0):
        return None
    y = a @ (b.T if op.attr("trans_b") else b)
    return y if c is None else y + c


@_torch_kernel(nn.MatMul)
def _torch_matmul(op: Operation, a, b):  # noqa: ANN001, ANN202
    import torch

    # x W: a linear layer (products of two activations are small: the reference)
    return torch.matmul(a, b) if b.dim() == 2 else None


@_torch_kernel(nn.MaxPool)
def _torch_max_pool(op: Operation, x):  # noqa: ANN001, ANN202
    """2-D max pooling as two 1-D passes (along the rows, then the columns), each the maximum of one strided
    slice per kernel tap, cut at the borders: a window's maximum over the same inputs as the reference's (whose
    padding, -inf, never wins), without a padded copy.  (torch's own NCHW max pooling takes more time than
    numpy's taps.)"""
    k = list(op.attr("kernel_shape"))
    if len(k) != 2:
        return None
    strides = op.attr("strides") or [1, 1]
    pads = op.attr("pads") or [0] * 4
    dil = op.attr("dilations") or [1, 1]
    out = op.results[0].type.shape[2:]
    y = x
    for i in (1, 0):  # the rows first: the contiguous axis, the larger reduction
        y = _max_1d(y, 2 + i, k[i], strides[i], pads[i], dil[i], out[i])
    return y


def _max_1d(x, axis: int, k: int, stride: int, pad: int, dil: int, n_out: int):  # noqa: ANN001, ANN202
    """``y[j] = max_t x[j*stride - pad + t*dil]`` along ``axis`` over the taps ``t`` that fall inside ``x``
    (-inf where none does)."""
    import torch

    shape = list(x.shape)
    size, shape[axis] = shape[axis], n_out
    if x.dim() == 4 and x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous():
        # in x's layout (a conv's channels-last output): taps over mismatched layouts run several times slower
        n, c, h, w = shape
        y = x.new_full((n, h, w, c), float("-inf")).permute(0, 3, 1, 2)
    else:
        y = x.new_full(shape, float("-inf"))
    for t in range(k):
        off = t * dil - pad  # input index of output j: j * stride + off
        lo = max(0, -(off // stride))  # the first j with j * stride + off >= 0
        hi = min(n_out - 1, (size - 1 - off) // stride)
        if hi < lo:
            continue
        dst = [slice(None)] * x.dim()
        src = list(dst)
        dst[axis] = slice(lo, hi + 1)
        src[axis] = slice(lo * stride + off, hi * stride + off + 1, stride)
        view = y[tuple(dst)]
        torch.maximum(view, x[tuple(src)], out=view)
    return y


def _tensor(a: np.ndarray):  # noqa: ANN202
    """``a`` as a torch tensor sharing its memory (torch only reads it; a read-only weight is not copied)."""
    import torch

    if any(s < 0 for s in a.strides):  # torch takes forward strides only
        a = np.ascontiguousarray(a)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
        return torch.from_numpy(a)


# The elementwise ops that write their result over an operand no one reads any more (see StackedRun.spare):
# the reference kernel's ufunc with ``out=`` (the same values, without a new array and its page faults).
INPLACE: dict[type[Operation], Callable[..., Any]] = {
    nn.Relu: lambda x, out: np.maximum(x, x.dtype.type(0), out=out),
    nn.Add: lambda a, b, out: np.add(a, b, out=out),
    nn.Sub: lambda a, b, out: np.subtract(a, b, out=out),
    nn.Mul: lambda a, b, out: np.multiply(a, b, out=out),
}


def _torch_eval(op: Operation, args: list[np.ndarray]) -> np.ndarray | None:
    """``op`` by its torch kernel (float32 operands and result only), or None where it has none for this form."""
    fn = TORCH_KERNELS.get(type(op))
    if fn is None or len(op.results) != 1 or op.results[0].type.np_dtype != np.float32:
        return None
    if any(a.dtype != np.float32 for a in args):
        return None
    import torch

    with torch.inference_mode():
        y = fn(op, *(_tensor(a) for a in args))
    return None if y is None else y.numpy()


def _batchable(op: Operation, args: list[np.ndarray], stacked: list[bool]) -> bool:
    """Whether product ``op`` can take a stacked group at once: only its activation (first operand) carries the
    samples, on an axis the product keeps (a matmul's batch axis, a gemm's rows, a conv's batch)."""
    if not stacked[0] or (any(stacked[1:]) and not (isinstance(op, nn.MatMul) and min(a.ndim for a in args) >= 3)):
        return False
    return not (isinstance(op, nn.Gemm) and op.attr("trans_a"))


def eval_group(
    op: Operation,
    args: list[np.ndarray],
    stacked: list[bool],
    samples: int,
    engine: str = "numpy",
    into: int | None = None,
) -> list[np.ndarray]:
    """``op`` on a group of ``samples`` stacked samples (the operands flagged in ``stacked`` carry them; see
    :func:`pcc.interpreter.eval_stacked`), its products once for the whole group by ``engine``.  ``into``
    names an operand that no one reads afterwards: an :data:`INPLACE` op of its shape and type writes its
    result over it."""
    from pcc.interpreter import eval_op, eval_stacked, stack_exact

    many = samples > 1 and any(stacked)
    want = op.results[0].type.shape if len(op.results) == 1 else ()
    want = (samples, *want[1:]) if many else want
    product = isinstance(op, PRODUCTS)
    whole = not many or (_batchable(op, args, stacked) if product else stack_exact(op, args, stacked))
    inplace = INPLACE.get(type(op)) if into is not None and whole else None
    if inplace is not None and args[into].shape == want and all(a.dtype == op.results[0].type.np_dtype for a in args):
        with np.errstate(over="ignore", under="ignore", invalid="ignore", divide="ignore"):  # as eval_op
            inplace(*args, out=args[into])
        return [args[into]]
    if engine == "torch" and whole:
        y = _torch_eval(op, args)
        if y is not None and y.shape == want:
            return [y]
    if product and whole:
        return eval_op(op, args, samples if many else 0)
    return eval_stacked(op, args, stacked, samples) if many else eval_op(op, args)


def _extremes(flat: np.ndarray) -> tuple[float, float]:
    """``(max(x), -min(x))`` of a flat array (NaN where it holds one): one pass of torch's where torch is loaded
    already (the torch engine) and the array is a large float32 one, two of numpy's otherwise."""
    torch = sys.modules.get("torch")
    if torch is not None and flat.dtype == np.float32 and flat.size >= 1 << 16:
        lo, hi = torch.aminmax(_tensor(flat))
        return float(hi), -float(lo)
    return float(np.max(flat)), -float(np.min(flat))


def _dense(a: np.ndarray) -> bool:
    """Whether ``a`` fills its memory without gaps in some order of its axes (C order, or the channels-last
    layout of a torch conv's result)."""
    if a.flags.c_contiguous:
        return True
    order = np.argsort(a.strides, kind="stable")[::-1]
    return bool(a.transpose(order).flags.c_contiguous)


# ops whose kernels return a new array (not a view of an operand, nor a constant): their results may be written
# over in place
ALLOCATING = (*PRODUCTS, nn.MaxPool, *INPLACE)


class StackedRun:
    """The graph evaluated op by op (:meth:`step`) on calibration batches, stacked into groups where the graph
    allows (:func:`stack_groups`): one environment of values per group, each value freed after its last use."""

    def __init__(self, g: Graph, batches: list[dict[str, np.ndarray]], engine: str = "numpy") -> None:
        stacked, groups = stack_groups(g, batches, STACK_ELEMENTS)
        self.stacked = stacked or set()
        self.engine = engine
        # one environment per group of batches that runs stacked (or per batch), and in each the values whose
        # array a kernel of the run allocated (not a view, an input, a weight): an INPLACE op may write over those
        self.env: list[dict[int, np.ndarray]] = []
        self.fresh: list[set[int]] = []
        self.sizes = groups
        start = 0
        for size in groups:
            feeds = stack(batches[start : start + size])
            self.env.append({id(a): feeds[a.name or ""] for a in g.args})
            self.fresh.append(set())
            start += size
        self.uses: dict[int, int] = {}
        for op in g.body:
            for v in op.operands:
                self.uses[id(v)] = self.uses.get(id(v), 0) + 1
        self.outputs = {id(v) for v in g.outputs}

    def step(
        self, module: Module, op: Operation, override: Mapping[int, np.ndarray] | None = None
    ) -> list[list[np.ndarray]]:
        """Evaluate ``op`` in every group (operand ``i`` replaced by ``override[i]`` where given; indices past
        the operands append arguments); returns its results per group."""
        override = override or {}
        flags = [i not in override and not v.is_weight and id(v) in self.stacked for i, v in enumerate(op.operands)]
        flags += [False for i in sorted(override) if i >= len(op.operands)]
        out = []
        for env, fresh, size in zip(self.env, self.fresh, self.sizes, strict=True):
            args = [
                override[i] if i in override else (module.weight(v) if v.is_weight else env[id(v)])
                for i, v in enumerate(op.operands)
            ]
            args += [override[i] for i in sorted(override) if i >= len(op.operands)]
            into = self.spare(op, env, fresh, override)
            results = eval_group(op, args, flags, size, self.engine, into)
            for r, a in zip(op.results, results, strict=True):
                env[id(r)] = a
                if type(op) in ALLOCATING and not any(np.may_share_memory(a, b) for b in args if b is not a):
                    fresh.add(id(r))  # a new array (or the operand it was written over)
            out.append(results)
        self.release(op)
        return out

    def spare(
        self, op: Operation, env: dict[int, np.ndarray], fresh: set[int], override: Mapping[int, np.ndarray]
    ) -> int | None:
        """The operand of ``op`` whose array the op may write its result over: one the run allocated, read by
        no later op and not a graph output, sharing its memory with no other live value."""
        if type(op) not in INPLACE:
            return None
        for i, v in enumerate(op.operands):
            key = id(v)
            if i in override or key not in fresh or self.uses[key] != 1 or key in self.outputs:
                continue
            a = env[key]
            if not (_dense(a) and a.flags.writeable):
                continue
            if not any(np.may_share_memory(a, b) for k, b in env.items() if k != key):
                return i
        return None

    def release(self, op: Operation) -> None:
        """Count ``op``'s uses of its operands done; free the values no later op reads."""
        for v in op.operands:
            self.uses[id(v)] -= 1
            if self.uses[id(v)] == 0 and id(v) not in self.outputs:
                for env, fresh in zip(self.env, self.fresh, strict=True):
                    env.pop(id(v), None)
                    fresh.discard(id(v))


def observe_ranges(
    module: Module,
    batches: list[dict[str, np.ndarray]],
    method: str,
    percentile: float,
    keep_first: bool = False,
    mean_runs: int = 0,
    engine: str = "numpy",
    observer: RangeObserver | None = None,
) -> RangeObserver:
    """Run the float graph on the batches (stacked into groups where the graph allows, the products by
    ``engine``, see :func:`eval_group`) and collect the ranges (into ``observer`` if given, a
    :class:`RangeObserver` made with the same method, percentile and ``keep_first``)."""
    g = module.main
    obs = observer if observer is not None else RangeObserver(method, percentile, keep_first)
    obs.mean_runs = mean_runs
    if mean_runs:
        obs.want_mean = {id(op.operands[0]) for op in g.body if isinstance(op, nn.Conv2d | nn.Gemm)}
    stacked, groups = stack_groups(g, batches, STACK_ELEMENTS)
    obs.stacked = stacked or set()
    start = 0
    for size in groups:
        obs.run_index, obs.samples = start, size
        run = StackedRun(g, batches[start : start + size], engine)
        for a in g.args:
            obs.add(a, run.env[0][id(a)])
        for op in g.body:
            (results,) = run.step(module, op)
            obs(op, results)
        start += size
    obs.samples = 1
    obs.finish()
    return obs


class QuantizedSim(StackedRun):
    """The float graph run again on the calibration batches, op by op as the converter goes, with every
    weight already replaced by its pentary value and every corrected bias: the inputs a layer will really see
    once the layers before it are quantized.  Bias correction and gptq take their statistics from here."""

    MAX_PATCHES = 4096  # patches per batch that go into gptq's X X^T

    def step(
        self, module: Module, op: Operation, override: Mapping[int, np.ndarray] | None = None
    ) -> list[list[np.ndarray]]:
        """As :meth:`StackedRun.step`, but an op whose results no later op reads (a graph output only, e.g. a
        language model's head) is not evaluated: no statistic is taken from it."""
        if self.runs(op):
            return super().step(module, op, override)
        self.release(op)
        return []

    def runs(self, op: Operation) -> bool:
        """Whether :meth:`step` evaluates ``op`` (a later op reads one of its results)."""
        return any(self.uses.get(id(r), 0) for r in op.results)

    def inputs(self, v: Value) -> list[np.ndarray]:
        """The value in each calibration batch (a stacked group split back into its batches)."""
        out = []
        for env, size in zip(self.env, self.sizes, strict=True):
            if id(v) not in env:
                continue
            x = env[id(v)]
            if size == 1:
                out.append(x)
            elif id(v) in self.stacked:
                out += [x[i : i + 1] for i in range(size)]
            else:
                out += [x] * size
        return out

    def mean(self, v: Value) -> np.ndarray | None:
        """The mean of ``v`` over the batches (their batch axis averaged), if the simulation holds it."""
        total, count = None, 0
        for env, size in zip(self.env, self.sizes, strict=True):
            if id(v) not in env:
                continue
            x = env[id(v)]
            times = 1 if size == 1 or id(v) in self.stacked else size  # a value shared by a group's samples
            s = np.sum(x, axis=0, dtype=np.float64) * times
            total = s if total is None else total + s
            count += x.shape[0] * times
        return None if total is None else total / count

    def hessian(self, op: Operation) -> np.ndarray | None:
        """``E[x x^T]`` of the op's input patches (conv: im2col columns; gemm: rows)."""
        total, n = 0.0, 0
        for x in self.inputs(op.operands[0]):
            xs = np.asarray(x, dtype=np.float64)
            cols = im2col(xs, op) if isinstance(op, nn.Conv2d) else xs.T
            if cols.shape[1] > self.MAX_PATCHES:
                cols = cols[:, :: -(-cols.shape[1] // self.MAX_PATCHES)]
            total = total + cols @ cols.T
            n += cols.shape[1]
        return None if n == 0 else total / n
