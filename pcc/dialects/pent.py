"""The ``pent`` dialect: exact integer ops on pentary types, produced by the quantizer.

Values are N-pent integer words (``pN``, N <= 16: one activation per machine word) and weights are single
pents (``p5``, -2..2).  Floats appear only at the program boundary (``pent.quantize`` / ``pent.dequantize``).
The executable meaning of each op is :mod:`pcc.pent_reference`, which computes with the ISA's own integer
primitives (``pcc/isa.py``: ``mul_shift_round``, ``requantize``, ``div_round``), so the reference and the
simulator agree bit for bit.

Each op maps onto one instruction sequence of the ISA (docs/compiler.md lists them):

- ``pent.conv2d`` / ``pent.gemm``: ``acc = sat27(bias + sum x*w)`` (CONV / MATMUL / MATVEC on a C tile
  preloaded with the bias), then per-channel ``REQUANTC`` ``y = sat_P(round(acc * mult / 2**shift))``.
  Optionally fused (by the ``fuse`` pass): a residual ``res`` added with ``EADD`` -- the requantized value is
  then an intermediate word of ``mid_pents`` pents and ``y = sat_P(msr(mid, mx, sx) + msr(res, my, sy))``
  with ``res_mult = [mx, my]``, ``res_shift = [sx, sy]`` -- and an activation ``act`` (``relu``: TRELU,
  ``clamp``: TCLAMP to ``[lo, hi]``) applied last.  Without a residual, the activation may be a table
  (``act = "lut"``, fused from a ``pent.lut``): the requantized value is then an intermediate word of
  ``mid_pents`` pents (at scale ``mid_scale``) and ``y = table[clamp(v, table_lo, table_lo + n - 1) -
  table_lo]`` with ``v = sat_mid(msr(mid, index_mult, index_shift))`` (or ``v = mid`` without them): EADD and
  TLUT on the tile before it is stored, the table held at the top of scratchpad A.
- ``pent.add``: EADD of two activations, each rescaled by its own multiplier and shift; same ``act``.
- ``pent.relu`` / ``pent.clamp``: TRELU / TCLAMP.
- ``pent.max_pool`` / ``pent.avg_pool``: POOL (the average is ``div_round``, ties away from zero).
- ``pent.lut``: TLUT, a table activation (sigmoid), after an optional EADD that rescales the index.
- ``pent.reshape``: a copy (a transposing one when the channels-last memory order differs); with ``perm`` the
  input is transposed by it first (the ``fold-flatten`` pass flattens an image in its channels-last memory order
  for a gemm whose weight columns it permutes to match, so that the copy is a plain one).

Every value carries its scale: the op that produces it has a ``scale`` attribute (the real value of one unit
of the integer, ``x = q * scale``), set by ``quantize`` and kept by the passes after it; ``pent.quantize``'s
``scale`` is its result's, ``pent.dequantize``'s that of the integer it reads.  Tools that relate the integers
to the float graph (``pcc check``) read the scales from the IR.

Common optional attributes, filled in late in the pipeline: ``addr`` (word offset of the result in the
main-memory activation arena, set by ``plan-memory``) and ``tile`` (the tile sizes chosen by ``tile``).
"""

from __future__ import annotations

import math

from pcc.ir import Operation, TensorType, VerifyError, attr, register_op, required

MAX_ACT_PENTS = 16  # activations live one per 16-pent word; REQUANT's pents field is 1..16
ACTS = ("none", "relu", "clamp", "lut")

# Element types of the per-channel constants of a requantizing op.
BIAS_DTYPE = "p16"  # one main-memory word each, loaded into the accumulators with TLOADC
MULT_DTYPE = "p13"  # REQUANT(C)'s multiplier: 0..MULT_MAX = word_max(13)
SHIFT_DTYPE = "p3"  # REQUANT(C)'s shift: 0..62 = word_max(3)

_SCALE = {
    "scale": attr("float", doc="the real value of one unit of the result, x = q * scale (set by quantize)"),
}
_LATE = {
    "addr": attr("nat", doc="word offset of the result in the activation arena (plan-memory)"),
    "tile": attr("sizes", doc="tile sizes chosen by the tile pass"),
}
_PITCH = {
    "pitch": attr(
        "nat",
        doc="words between the result's pixels when it lives inside a concat's buffer (plan-memory); else its channels",
    ),
}
_ACT = {
    "act": attr(
        "str", "none", doc="activation applied last: none, relu (TRELU), clamp (TCLAMP lo..hi) or lut (EADD + TLUT)"
    ),
    "lo": attr("int", doc="clamp lower bound (act = clamp)"),
    "hi": attr("int", doc="clamp upper bound (act = clamp)"),
}
_RESIDUAL = {
    "res_mult": attr("ints", doc="[mx, my]: EADD multipliers of the op's own value and of the residual"),
    "res_shift": attr("ints", doc="[sx, sy]: EADD shifts"),
    "mid_pents": attr("int", doc="pents of the requantized value before the residual add or the table"),
}
_TABLE = {
    "table": attr("ints", doc="act = lut: the outputs for the indices table_lo .. table_lo + n - 1 (TLUT)"),
    "table_lo": attr("int", doc="act = lut: the index of the table's first entry"),
    "index_mult": attr("int", doc="act = lut: index rescale multiplier (EADD), with index_shift"),
    "index_shift": attr("int", doc="act = lut: index rescale shift (EADD), with index_mult"),
    "mid_scale": attr("float", doc="act = lut: the scale of the requantized value the table reads"),
}


def act_of(op: Operation) -> str:
    """The fused activation of ``op`` (``none`` for an op without the ``act`` attribute)."""
    return op.attr("act") if "act" in op.attrs else "none"


def _pent_word(v_type: TensorType, what: str) -> int:
    if not v_type.is_pent or v_type.dtype == "p5":
        raise VerifyError(f"{what} must be an N-pent word tensor (pN), got {v_type}")
    n = v_type.pents or 0
    if n > MAX_ACT_PENTS:
        raise VerifyError(f"{what} has {n}-pent elements; activations are at most {MAX_ACT_PENTS} pents")
    return n


def _pents_of(op: Operation) -> int:
    return _pent_word(op.results[0].type, "result")


def _check_scale(op: Operation) -> None:
    scale = op.attributes.get("scale")
    if scale is not None and not (scale > 0 and math.isfinite(scale)):
        raise VerifyError(f"scale must be a positive finite number, got {scale}")


def _check_dtype(v_type: TensorType, dtype: str, shape: tuple[int, ...], what: str) -> None:
    if v_type.dtype != dtype or v_type.shape != shape:
        want = TensorType(shape, dtype)
        raise VerifyError(f"{what} must be {want}, got {v_type}")


def _check_act(op: Operation) -> None:
    act = op.attr("act")
    if act not in ACTS:
        raise VerifyError(f"act must be one of {', '.join(ACTS)}, got {act!r}")
    has_bounds = op.attributes.get("lo") is not None or op.attributes.get("hi") is not None
    if act == "clamp":
        if op.attr("lo") is None or op.attr("hi") is None:
            raise VerifyError("act = clamp needs lo and hi")
        m = 5 ** _pents_of(op) // 2
        if not -m <= op.attr("lo") <= op.attr("hi") <= m:
            raise VerifyError(f"clamp bounds must satisfy -{m} <= lo <= hi <= {m}")
    elif has_bounds:
        raise VerifyError(f"lo and hi are only allowed with act = clamp, not act = {act}")
    _check_table(op, act == "lut")


def _check_table_index(n: int, lo: int, m: int, source: str, rescale: tuple, prefix: str = "") -> None:
    """A TLUT table of ``n`` entries from index ``lo``, read with indices of the ``source``'s range ``-m..m``,
    and its optional index rescale ``(mult, shift)`` (attributes ``{prefix}mult``, ``{prefix}shift``)."""
    from pcc.isa import MULT_MAX, SHIFT_MAX

    if not 1 <= n <= TLUT_MAX_ENTRIES:
        raise VerifyError(f"the table has {n} entries; TLUT takes 1..{TLUT_MAX_ENTRIES}")
    if not -m <= lo <= lo + n - 1 <= m:
        raise VerifyError(f"table indices {lo}..{lo + n - 1} must lie within the {source}'s range -{m}..{m}")
    mult, shift = rescale
    if (mult is None) != (shift is None):
        raise VerifyError(f"{prefix}mult and {prefix}shift go together")
    if mult is not None and not (0 <= mult <= MULT_MAX and 0 <= shift <= SHIFT_MAX):
        raise VerifyError(f"{prefix}mult must lie in 0..{MULT_MAX} and {prefix}shift in 0..{SHIFT_MAX}")


def _check_table(op: Operation, lut: bool) -> None:
    keys = [k for k in _TABLE if op.attributes.get(k) is not None]
    if not lut:
        if keys:
            raise VerifyError(f"{', '.join(keys)} are only allowed with act = lut")
        return
    if "table" not in op.attrs:
        raise VerifyError(f"act = lut is only allowed on {', '.join(c.name for c in (Conv2d, Gemm))}")
    missing = [k for k in ("table", "table_lo", "mid_pents", "mid_scale") if op.attributes.get(k) is None]
    if missing:
        raise VerifyError(f"act = lut needs {', '.join(missing)}")
    mid = op.attr("mid_pents")
    if not 1 <= mid <= MAX_ACT_PENTS:
        raise VerifyError(f"mid_pents must be in 1..{MAX_ACT_PENTS}")
    table, lo = op.attr("table"), op.attr("table_lo")
    n, m, w = len(table), 5**mid // 2, 5 ** _pents_of(op) // 2
    _check_table_index(n, lo, m, "intermediate", (op.attr("index_mult"), op.attr("index_shift")), "index_")
    if any(not -w <= t <= w for t in table):
        raise VerifyError(f"table entries must lie within the result's range -{w}..{w}")
    scale = op.attr("mid_scale")
    if not (scale > 0 and math.isfinite(scale)):
        raise VerifyError(f"mid_scale must be a positive finite number, got {scale}")


def _check_requant_consts(op: Operation, channels: int) -> None:
    bias, mult, shift = op.operands[2:5]
    for v, dt, what in ((bias, BIAS_DTYPE, "bias"), (mult, MULT_DTYPE, "mult"), (shift, SHIFT_DTYPE, "shift")):
        _check_dtype(v.type, dt, (channels,), what)


def _check_residual(op: Operation, n_fixed: int) -> None:
    has_res = len(op.operands) > n_fixed
    keys = [k for k in _RESIDUAL if op.attributes.get(k) is not None]
    if not has_res:
        if op.attr("act") == "lut":  # mid_pents is the table's intermediate (_check_table)
            keys = [k for k in keys if k != "mid_pents"]
        if keys:
            raise VerifyError(f"{', '.join(keys)} need a residual operand")
        return
    res = op.operands[n_fixed]
    _pent_word(res.type, "residual")
    if res.type.shape != op.results[0].type.shape:
        raise VerifyError(f"residual shape {res.type.shape} differs from the result's {op.results[0].type.shape}")
    if op.attr("act") == "lut":
        raise VerifyError("act = lut cannot follow a fused residual add")
    missing = [k for k in _RESIDUAL if op.attributes.get(k) is None]
    if missing:
        raise VerifyError(f"a residual operand needs {', '.join(missing)}")
    _check_mult_shift(op.attr("res_mult"), op.attr("res_shift"), "res_mult", "res_shift")
    if not 1 <= op.attr("mid_pents") <= MAX_ACT_PENTS:
        raise VerifyError(f"mid_pents must be in 1..{MAX_ACT_PENTS}")


def _check_mult_shift(mult: list[int], shift: list[int], mname: str, sname: str) -> None:
    from pcc.isa import MULT_MAX, SHIFT_MAX

    if len(mult) != 2 or len(shift) != 2:
        raise VerifyError(f"{mname} and {sname} need two values each")
    if any(not 0 <= m <= MULT_MAX for m in mult) or any(not 0 <= s <= SHIFT_MAX for s in shift):
        raise VerifyError(f"{mname} must lie in 0..{MULT_MAX} and {sname} in 0..{SHIFT_MAX}")


def window_out(size: int, k: int, stride: int, lo: int, hi: int) -> int:
    """Output extent of a window op (no dilation, floor mode)."""
    return (size + lo + hi - k) // stride + 1


def _check_window(op: Operation, x: TensorType, kernel: tuple[int, int]) -> list[int]:
    strides, pads = op.attr("strides"), op.attr("pads")
    if len(strides) != 2 or len(pads) != 4:
        raise VerifyError("strides needs 2 values and pads 4 ([top, left, bottom, right])")
    if any(s < 1 for s in strides) or any(p < 0 for p in pads):
        raise VerifyError("strides must be positive and pads non-negative")
    out = [window_out(x.shape[2 + i], kernel[i], strides[i], pads[i], pads[i + 2]) for i in range(2)]
    if min(out) < 1:
        raise VerifyError(f"window {list(kernel)} does not fit input {x}")
    return out


# ----------------------------------------------------------------------------------------------- boundary


@register_op
class Quantize(Operation):
    """Float (or integer: token ids, masks, at scale 1) to N-pent integers at the program boundary:
    q = sat_N(round(x / scale)), ties away from zero.

    This is what the runner does to a program input (docs/ISA.md, section 4)."""

    name = "pent.quantize"
    operands_spec = ("x: any",)
    results_spec = ("out: pword",)
    attrs = {"scale": required("float"), **_LATE}
    example = "%q = pent.quantize(%x) {scale = 0.05} : tensor<1x4xp8>"

    def verify_(self) -> None:
        if self.operands[0].type.is_pent:
            raise VerifyError(f"input must be a float or integer tensor, got {self.operands[0].type}")
        _pent_word(self.results[0].type, "result")
        if not self.attr("scale") > 0:
            raise VerifyError("scale must be positive")

    def infer_types(self) -> list[TensorType] | None:
        return [self.operands[0].type.with_dtype(self.results[0].type.dtype)]


@register_op
class Dequantize(Operation):
    """N-pent integers back to float at the program boundary: x = q * scale."""

    name = "pent.dequantize"
    operands_spec = ("q: pword",)
    results_spec = ("out: float",)
    attrs = {"scale": required("float")}
    example = "%y = pent.dequantize(%q) {scale = 0.05} : tensor<1x4xf32>"
    example_types = {"%q": "tensor<1x4xp8>"}

    def verify_(self) -> None:
        _pent_word(self.operands[0].type, "input")
        if not self.results[0].type.is_float:
            raise VerifyError(f"result must be a float tensor, got {self.results[0].type}")
        if not self.attr("scale") > 0:
            raise VerifyError("scale must be positive")

    def infer_types(self) -> list[TensorType] | None:
        return [self.operands[0].type.with_dtype(self.results[0].type.dtype)]


# ----------------------------------------------------------------------------------------------- compute


@register_op
class Conv2d(Operation):
    """Pentary-weight 2-D convolution with bias and per-channel requantization (CONV + REQUANTC).

    x [N, C, H, W] pN, w [O, C/group, kh, kw] p5, bias/mult/shift [O]; pads = [top, left, bottom, right];
    optional fused residual ``res`` [N, O, OH, OW] and activation (see the module docstring)."""

    name = "pent.conv2d"
    operands_spec = (
        "x: pword",
        "w: p5",
        f"bias: {BIAS_DTYPE}",
        f"mult: {MULT_DTYPE}",
        f"shift: {SHIFT_DTYPE}",
        "res?: pword",
    )
    results_spec = ("out: pword",)
    attrs = {
        "strides": attr("ints", (1, 1)),
        "pads": attr("ints", (0, 0, 0, 0)),
        "group": attr("int", 1),
        **_ACT,
        **_RESIDUAL,
        **_TABLE,
        **_SCALE,
        **_LATE,
        **_PITCH,
    }
    example = (
        "%y = pent.conv2d(%x, @w, @b, @m, @s) {strides = [1, 1], pads = [1, 1, 1, 1], group = 1, "
        'act = "relu"} : tensor<1x8x4x4xp8>'
    )
    example_types = {
        "%x": "tensor<1x8x4x4xp8>",
        "@w": "tensor<8x8x3x3xp5>",
        "@b": "tensor<8xp16>",
        "@m": "tensor<8xp13>",
        "@s": "tensor<8xp3>",
    }

    def verify_(self) -> None:
        _check_scale(self)
        x, w = self.operands[0].type, self.operands[1].type
        _pent_word(x, "input")
        _pents_of(self)
        if x.rank != 4 or w.rank != 4 or w.dtype != "p5":
            raise VerifyError(f"conv2d needs a 4-D pN input and a 4-D p5 weight, got {x} and {w}")
        g = self.attr("group")
        if g <= 0 or x.shape[1] != w.shape[1] * g or w.shape[0] % g:
            raise VerifyError(f"input channels {x.shape[1]} do not match weight {w.shape} with group {g}")
        _check_requant_consts(self, w.shape[0])
        _check_act(self)
        _check_residual(self, 5)

    def infer_types(self) -> list[TensorType]:
        x, w = self.operands[0].type, self.operands[1].type
        oh, ow = _check_window(self, x, (w.shape[2], w.shape[3]))
        return [TensorType((x.shape[0], w.shape[0], oh, ow), self.results[0].type.dtype)]


@register_op
class Gemm(Operation):
    """Pentary-weight matrix product with bias and per-channel requantization (MATMUL/MATVEC + REQUANTC).

    x [M, K] pN, w [N, K] p5 (each output's K weights contiguous, as the MAC array reads them), bias/mult/shift
    [N]; optional fused residual [M, N] and activation (see the module docstring)."""

    name = "pent.gemm"
    operands_spec = (
        "x: pword",
        "w: p5",
        f"bias: {BIAS_DTYPE}",
        f"mult: {MULT_DTYPE}",
        f"shift: {SHIFT_DTYPE}",
        "res?: pword",
    )
    results_spec = ("out: pword",)
    attrs = {**_ACT, **_RESIDUAL, **_TABLE, **_SCALE, **_LATE}
    example = "%y = pent.gemm(%x, @w, @b, @m, @s) : tensor<1x8xp8>"
    example_types = {
        "%x": "tensor<1x4xp8>",
        "@w": "tensor<8x4xp5>",
        "@b": "tensor<8xp16>",
        "@m": "tensor<8xp13>",
        "@s": "tensor<8xp3>",
    }

    def verify_(self) -> None:
        _check_scale(self)
        x, w = self.operands[0].type, self.operands[1].type
        _pent_word(x, "input")
        _pents_of(self)
        if x.rank != 2 or w.rank != 2 or w.dtype != "p5":
            raise VerifyError(f"gemm needs a 2-D pN input and a 2-D p5 weight [N, K], got {x} and {w}")
        if x.shape[1] != w.shape[1]:
            raise VerifyError(f"inner dimensions differ: input {x.shape} and weight {w.shape} ([N, K])")
        _check_requant_consts(self, w.shape[0])
        _check_act(self)
        _check_residual(self, 5)

    def infer_types(self) -> list[TensorType]:
        x, w = self.operands[0].type, self.operands[1].type
        return [TensorType((x.shape[0], w.shape[0]), self.results[0].type.dtype)]


@register_op
class Add(Operation):
    """Elementwise add with rescale (EADD): y = sat_P(msr(a, ma, sa) + msr(b, mb, sb)), then ``act``."""

    name = "pent.add"
    operands_spec = ("a: pword", "b: pword")
    results_spec = ("out: pword",)
    attrs = {"mult": required("ints"), "shift": required("ints"), **_ACT, **_SCALE, **_LATE}
    example = "%y = pent.add(%x, %x) {mult = [1, 1], shift = [0, 0]} : tensor<1x4xp8>"
    example_types = {"%x": "tensor<1x4xp8>"}

    def verify_(self) -> None:
        _check_scale(self)
        a, b = self.operands[0].type, self.operands[1].type
        _pent_word(a, "operand a")
        _pent_word(b, "operand b")
        _pents_of(self)
        if a.shape != b.shape:
            raise VerifyError(f"operand shapes differ: {a} and {b} (no broadcasting)")
        _check_mult_shift(self.attr("mult"), self.attr("shift"), "mult", "shift")
        _check_act(self)

    def infer_types(self) -> list[TensorType]:
        return [self.operands[0].type.with_dtype(self.results[0].type.dtype)]


class _SameType(Operation):
    operands_spec = ("x: pword",)
    results_spec = ("out: pword",)

    def verify_(self) -> None:
        _check_scale(self)
        _pent_word(self.operands[0].type, "input")

    def infer_types(self) -> list[TensorType]:
        return [self.operands[0].type]


@register_op
class Relu(_SameType):
    """max(x, 0) (TRELU)."""

    name = "pent.relu"
    attrs = {**_SCALE, **_LATE}
    example = "%y = pent.relu(%x) : tensor<1x4xp8>"
    example_types = {"%x": "tensor<1x4xp8>"}


@register_op
class Clamp(_SameType):
    """min(max(x, lo), hi) (TCLAMP); ReLU6 is lo = 0, hi = the quantized 6."""

    name = "pent.clamp"
    attrs = {"lo": required("int"), "hi": required("int"), **_SCALE, **_LATE}
    example = "%y = pent.clamp(%x) {lo = 0, hi = 120} : tensor<1x4xp8>"
    example_types = {"%x": "tensor<1x4xp8>"}

    def verify_(self) -> None:
        super().verify_()
        m = 5 ** (self.operands[0].type.pents or 1) // 2
        if not -m <= self.attr("lo") <= self.attr("hi") <= m:
            raise VerifyError(f"bounds must satisfy -{m} <= lo <= hi <= {m}")


class _Pool(Operation):
    operands_spec = ("x: pword",)
    results_spec = ("out: pword",)

    def verify_(self) -> None:
        _check_scale(self)
        x = self.operands[0].type
        _pent_word(x, "input")
        if x.rank != 4:
            raise VerifyError(f"pooling needs a 4-D input, got {x}")
        k = self.attr("kernel_shape")
        if len(k) != 2 or min(k) < 1:
            raise VerifyError("kernel_shape needs two positive values")
        pads = self.attr("pads")
        if len(pads) == 4 and (max(pads[0], pads[2]) >= k[0] or max(pads[1], pads[3]) >= k[1]):
            raise VerifyError("pads must be smaller than the kernel (every window needs an input tap)")

    def infer_types(self) -> list[TensorType]:
        x = self.operands[0].type
        k = self.attr("kernel_shape")
        oh, ow = _check_window(self, x, (k[0], k[1]))
        return [x.with_shape((x.shape[0], x.shape[1], oh, ow))]


@register_op
class MaxPool(_Pool):
    """Max over windows (POOL mode 0); padding never wins."""

    name = "pent.max_pool"
    attrs = {
        "kernel_shape": required("ints"),
        "strides": attr("ints", (1, 1)),
        "pads": attr("ints", (0, 0, 0, 0)),
        **_SCALE,
        **_LATE,
        **_PITCH,
    }
    example = "%y = pent.max_pool(%x) {kernel_shape = [2, 2], strides = [2, 2]} : tensor<1x8x2x2xp8>"
    example_types = {"%x": "tensor<1x8x4x4xp8>"}


@register_op
class AvgPool(_Pool):
    """Average over windows, div_round (nearest, ties away from zero): POOL mode 1 (taps inside the input)
    or mode 2 with ``count_include_pad`` (all kh*kw taps, padding counts as 0)."""

    name = "pent.avg_pool"
    attrs = {
        "kernel_shape": required("ints"),
        "strides": attr("ints", (1, 1)),
        "pads": attr("ints", (0, 0, 0, 0)),
        "count_include_pad": attr("bool", False),
        **_SCALE,
        **_LATE,
        **_PITCH,
    }
    example = "%y = pent.avg_pool(%x) {kernel_shape = [4, 4]} : tensor<1x8x1x1xp8>"
    example_types = {"%x": "tensor<1x8x4x4xp8>"}


@register_op
class Reshape(Operation):
    """The same elements in the logical (row-major NCHW) order under a new static shape; with ``perm``, the
    elements of ``transpose(x, perm)`` in its row-major order (``y = x.transpose(perm).reshape(shape)``)."""

    name = "pent.reshape"
    operands_spec = ("x: pword",)
    results_spec = ("out: pword",)
    attrs = {"shape": required("ints"), "perm": attr("ints", None), **_SCALE, **_LATE}
    example = "%y = pent.reshape(%x) {shape = [1, 32], perm = [0, 2, 3, 1]} : tensor<1x32xp8>"
    example_types = {"%x": "tensor<1x8x2x2xp8>"}

    def verify_(self) -> None:
        _check_scale(self)
        _pent_word(self.operands[0].type, "input")
        perm, rank = self.attr("perm"), self.operands[0].type.rank
        if perm is not None and sorted(perm) != list(range(rank)):
            raise VerifyError(f"perm {list(perm)} is not a permutation of the input's {rank} axes")

    def infer_types(self) -> list[TensorType]:
        x = self.operands[0].type
        shape = self.attr("shape")
        if any(d < 0 for d in shape) or math.prod(shape) != x.size:
            raise VerifyError(f"cannot reshape {x} ({x.size} elements) to {shape}")
        return [x.with_shape(shape)]


class Elementwise(Operation):
    """Base of ops whose result element i depends only on element i of each activation operand: they tile as a
    flat run of elements (weights such as a table are loaded whole) and use no MACs, so the tiling and profiling
    rules registered for this base serve every such op."""


TLUT_MAX_ENTRIES = 976562  # TLUT's n field: u9, 1..976562


@register_op
class Lut(Elementwise):
    """A table activation (TLUT, after an optional EADD rescale of the index): with ``mult``/``shift`` the index
    is ``v = sat_P(msr(x, mult, shift))`` (P: the input's pents), else ``v = x``; then
    ``y = table[min(max(v, lo), lo + n - 1) - lo]`` with ``n`` = the table's length.  The table (a weight of the
    result's type) holds the outputs for the indices ``lo .. lo + n - 1``; indices beyond either end take the end
    entries.  ``quantize`` lowers ``nn.sigmoid`` to it."""

    name = "pent.lut"
    operands_spec = ("x: pword", "table: pword")
    attrs = {
        "lo": required("int"),
        "mult": attr("int", doc="index rescale multiplier (EADD), with shift"),
        "shift": attr("int", doc="index rescale shift (EADD), with mult"),
        **_SCALE,
        **_LATE,
    }
    example = "%y = pent.lut(%x, @t) {lo = -2} : tensor<1x4xp8>"
    example_types = {"%x": "tensor<1x4xp8>", "@t": "tensor<5xp8>"}

    def verify_(self) -> None:
        _check_scale(self)
        x, t = self.operands[0].type, self.operands[1].type
        p = _pent_word(x, "input")
        _pents_of(self)
        if not self.operands[1].is_weight or t.rank != 1 or t.dtype != self.results[0].type.dtype:
            raise VerifyError(f"the table must be a 1-D weight of the result's element type, got {t}")
        _check_table_index(t.shape[0], self.attr("lo"), 5**p // 2, "input", (self.attr("mult"), self.attr("shift")))

    def infer_types(self) -> list[TensorType]:
        return [self.operands[0].type.with_dtype(self.results[0].type.dtype)]


REQUANT_OPS = (Conv2d, Gemm)
ACT_OPS = (Conv2d, Gemm, Add)
