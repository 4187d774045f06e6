"""Lowering ``nn`` -> ``pent``: one rule per float op, registered in :data:`LOWERING` (the quantize pass runs them).

A rule ``fn(lw, op)`` gets the :class:`Lowering` state and one float op; it emits the op's ``pent`` ops with
:meth:`Lowering.emit` and records the result's pent value and scale in ``lw.map``.  The helpers do the
arithmetic the ISA fixes:

- :meth:`Lowering.q`: the pent value and scale of an operand (an activation the lowering produced);
- :meth:`Lowering.out_scale`: the pents and scale of an op's result (calibrated range over ``word_max(pents)``;
  an op followed only by a ReLU/Clip gets the scale of the activation's output, so ``fuse`` can merge the two
  without changing a bit);
- :meth:`Lowering.weight` and :meth:`Lowering.requant_op`: pentary weights (with bias correction and GPTQ) and
  the integer-only requantization ``y = sat_N(round(acc * mult / 2**shift))``, ``mult / 2**shift ~= s_x s_w /
  s_y`` (:func:`requant_params`).

An op the backend has no form for is declared with ``LOWERING.unsupported(reason, ...)``: the pass then fails
at the op with that reason (``nn.batch_norm``: run fold-batchnorm first).
"""

from __future__ import annotations

import dataclasses
import math
import warnings
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

import numpy as np

from pcc.diagnostics import PccError
from pcc.dialects import nn, pent
from pcc.ir import Graph, Module, Operation, TensorType, Value
from pcc.isa import MULT_MAX, SHIFT_MAX, WORD_MAX
from pcc.passes.fold_batchnorm import pentary_weight
from pcc.passes.quantize_calibrate import CalibrationWarning, QuantizedSim, RangeObserver, mean_patch
from pcc.passes.quantize_gptq import gptq_round
from pcc.pent_reference import round_half_away
from pcc.pentary import word_max
from pcc.quant import WIDE_MAX, quantize_weights, quantize_weights_wide, wide_digits
from pcc.rules import RuleTable

if TYPE_CHECKING:
    from pcc.passes.quantize import Quantize

LOWERING: RuleTable[Callable[[Lowering, Operation], None]] = RuleTable("lowering", gaps=True)
rule = LOWERING.register

round_away = round_half_away  # round to nearest, ties away from zero (the ISA's rounding)


def requant_params(ratio: np.ndarray | float) -> tuple[np.ndarray, np.ndarray]:
    """Integer ``(mult, shift)`` with ``mult / 2**shift ~= ratio``, ``0 <= mult <= MULT_MAX``,
    ``0 <= shift <= 62``, the multiplier as large as possible (most precise)."""
    r = np.atleast_1d(np.asarray(ratio, dtype=np.float64))
    mult = np.zeros(r.shape, dtype=np.int64)
    shift = np.zeros(r.shape, dtype=np.int64)
    pos = r > 0
    if np.any(pos):
        rp = r[pos]
        s = np.clip(np.floor(np.log2(MULT_MAX / rp)), 0, SHIFT_MAX).astype(np.int64)
        m = np.rint(rp * np.exp2(s))
        over = (m > MULT_MAX) & (s > 0)
        s = np.where(over, s - 1, s)
        m = np.minimum(np.rint(rp * np.exp2(s)), MULT_MAX)
        mult[pos] = m.astype(np.int64)
        shift[pos] = s
    return mult, shift


def weight_axis(op: Operation) -> int:
    """The output-channel axis of a conv/gemm weight operand."""
    return 0 if isinstance(op, nn.Conv2d) or op.attr("trans_b") else 1


def float_weight_job(
    module: Module, wv: Value, out_axis: int, opts: Quantize, weight_pents: int = 1
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """``(q, s, wf)`` of a conv/gemm weight: pents with the output channels first (int8), the per-channel scales
    (float64) and the float weight in the same layout (float32; None for a weight that is already pentary).
    With ``weight_pents=2`` a float weight's ``q`` is ``5 p_hi + p_lo`` in -12..12 and ``s`` its step
    (:func:`pcc.quant.quantize_weights_wide`): ``q * s`` is the weight either way."""
    n_out = wv.type.shape[out_axis]
    pw = pentary_weight(module, wv)
    if pw is None and wv.is_weight and weight_pents == 2:
        data = np.asarray(module.weight(wv), dtype=np.float32)
        k, st = quantize_weights_wide(data, per_channel=not opts.per_tensor, axis=out_axis)
        s = np.broadcast_to(np.asarray(st, dtype=np.float64), (n_out,)).copy()
        return np.moveaxis(k, out_axis, 0), s, np.moveaxis(data, out_axis, 0)
    if pw is not None:
        dq, pents_, scale = pw
        if scale.ndim == 0 or dq.attr("axis") % wv.type.rank == out_axis:
            q = np.moveaxis(np.asarray(pents_, dtype=np.int8), out_axis, 0)
            return q, np.broadcast_to(scale, (n_out,)).astype(np.float64), None
        shape = [1] * wv.type.rank
        shape[dq.attr("axis") % wv.type.rank] = -1
        data = (np.asarray(pents_, np.float32) * scale.astype(np.float32).reshape(shape)).astype(np.float32)
    elif wv.is_weight:
        data = np.asarray(module.weight(wv), dtype=np.float32)
    else:
        raise PccError(f"weight {wv.ref()} must be a constant")
    method = "mse" if opts.weight_method == "gptq" else opts.weight_method
    q, sc = quantize_weights(data, per_channel=not opts.per_tensor, axis=out_axis, method=method)
    s = np.broadcast_to(np.asarray(sc, dtype=np.float64), (n_out,)).copy()
    return np.moveaxis(q, out_axis, 0), s, np.moveaxis(data, out_axis, 0)


def check_finite_weights(module: Module, op: Operation) -> None:
    """Refuse a conv/gemm whose constant weight or bias holds NaN or infinity (before calibration runs on it)."""
    for v in op.operands[1:]:
        if not v.is_weight:
            continue
        data = np.asarray(module.weight(v))
        if np.issubdtype(data.dtype, np.floating) and not np.isfinite(data).all():
            bad = [int(i) for i in np.argwhere(~np.isfinite(data))[0]] if data.ndim else []
            node = f" (node {op.loc.node!r})" if op.loc is not None and op.loc.node else ""
            raise PccError(
                f"quantize: {op.name}{node}: weight {v.ref()} holds {data[tuple(bad)]} at index {bad}", op.loc
            )


def start_weight_jobs(
    module: Module,
    g: Graph,
    opts: Quantize,
    pool: object,
    methods: Mapping[str, str] | None = None,
    wide: Mapping[str, int] | None = None,
) -> dict[int, object]:
    """Submit the weight quantization of every conv/gemm to ``pool`` (it does not depend on calibration);
    ``methods``: per-layer weight methods, ``wide``: per-layer pents per weight, by node or value name."""
    jobs = {}
    for op in g.body:
        if isinstance(op, nn.Conv2d | nn.Gemm):
            check_finite_weights(module, op)
    # the largest weights first: the pool then ends with the small ones (a late large job would hold the
    # lowering up; a language model's largest weight is its head, the last op)
    order = sorted(g.body, key=lambda op: -op.operands[1].type.size if len(op.operands) > 1 else 0)
    for op in order:
        if isinstance(op, nn.Conv2d | nn.Gemm) and not (isinstance(op, nn.Gemm) and op.attr("trans_a")):
            o = opts
            method = next((methods[n] for n in _names(op) if methods and n in methods), None)
            if method is not None:
                o = dataclasses.replace(opts, weight_method=method)
            n = weight_pents_of(op, opts, wide)
            jobs[id(op)] = pool.submit(float_weight_job, module, op.operands[1], weight_axis(op), o, n)
    return jobs


def weight_pents_of(op: Operation, opts: Quantize, wide: Mapping[str, int] | None) -> int:
    """Pents per weight of the conv/gemm ``op``: its override (``NODE:w2``), else the pass's ``weight-pents``."""
    return next((wide[n] for n in _names(op) if wide and n in wide), opts.weight_pents)


def _names(op: Operation) -> list[str]:
    names = [r.name for r in op.results if r.name]
    if op.loc is not None and op.loc.node:
        names.insert(0, op.loc.node)
    return names


class Lowering:
    """The state of one lowering: the new graph, the map from each float value to its pent value and scale, and
    the helpers the rules build with (:meth:`q`, :meth:`emit`, :meth:`out_scale`, :meth:`weight`,
    :meth:`requant_op`)."""

    def __init__(
        self,
        module: Module,
        obs: RangeObserver,
        opts: Quantize,
        overrides: Mapping[str, int] | None = None,
        methods: Mapping[str, str] | None = None,
        wide: Mapping[str, int] | None = None,
    ) -> None:
        self.m = module
        self.wide = dict(wide or {})
        self.old = module.main
        self.obs = obs
        self.opts = opts
        self.overrides = dict(overrides or {})
        self.used_overrides: set[str] = set()
        self.methods = dict(methods or {})
        self.map: dict[int, tuple[Value, float]] = {}
        self.neg_inf: dict[int, tuple[Value, float]] = {}  # masking terms k * -inf (passes/lower_mask.py): k
        self.g = Graph(self.old.name, module)
        self.g.loc = self.old.loc
        self.clipped_bias = 0
        self.correction: np.ndarray | None = None
        self.jobs: dict[int, object] = {}
        self.sim: QuantizedSim | None = None
        self.sim_weight: np.ndarray | None = None
        self.sim_override: dict[int, np.ndarray] | None = None
        self.out_names = {v.name for v in self.old.outputs}

    # -- helpers
    def pents_for(self, *ops: Operation) -> int:
        for op in ops:
            for n in _names(op):
                if n in self.overrides:
                    self.used_overrides.add(n)
                    return self.overrides[n]
        return self.opts.act_pents

    def method_for(self, op: Operation) -> str:
        """The weight method of ``op``: its override, else the pass's."""
        for n in _names(op):
            if n in self.methods:
                self.used_overrides.add(n)
                return self.methods[n]
        return self.opts.weight_method

    def weight_pents(self, op: Operation) -> int:
        """Pents per weight of the conv/gemm ``op`` (1, or 2 for ``s (p_hi + p_lo / 5)``)."""
        for n in _names(op):
            if n in self.wide:
                self.used_overrides.add(n)
        return weight_pents_of(op, self.opts, self.wide)

    def error(self, op: Operation, msg: str) -> PccError:
        node = f" (node {op.loc.node!r})" if op.loc is not None and op.loc.node else ""
        return PccError(f"quantize: {op.name}{node}: {msg}", op.loc)

    def q(self, v: Value, op: Operation) -> tuple[Value, float]:
        """The pent value and scale that the float value ``v`` (an operand of ``op``) became."""
        got = self.map.get(id(v))
        if got is None:
            raise self.error(op, f"operand {v.ref()} is not an activation the quantizer knows (a constant?)")
        return got

    def emit(
        self,
        cls: type[Operation],
        operands: list[Value],
        t: TensorType,
        attrs: dict[str, Any],
        loc: Any,
        name: str | None,
        scale: float | None = None,
    ) -> Value:
        """Append ``cls(operands) {attrs} : t`` to the new graph; ``scale`` is the real value of one unit of the
        result."""
        if name in self.out_names and cls is not pent.Dequantize:
            name = f"{name}.q"  # the float output keeps the model's name
        if scale is not None and cls not in (pent.Quantize, pent.Dequantize):
            attrs = {**attrs, "scale": float(scale)}
        op = cls(operands, [t], attrs, loc, [name])
        self.g.append(op)
        return op.results[0]

    def scale(self, amax: float, pents: int) -> float:
        m = word_max(pents)
        return float(amax) / m if amax > 0 else 1.0 / m

    def activation_end(self, v: Value) -> Value:
        """The value whose range sets ``v``'s scale: a sole ReLU/Clip user's result, else ``v``; then, through a
        sole pool user (it keeps its input's scale), where every user is a concat the concat's result (of
        the widest range among them), so that a concat's inputs come out at its scale and need no rescale (nor
        a copy: plan-memory lets their producers write into the concat's buffer)."""
        out = self.old.outputs
        if len(v.uses) == 1 and v not in out and isinstance(v.uses[0], nn.Relu | nn.Clip):
            v = v.uses[0].results[0]
        w = v
        if len(w.uses) == 1 and w not in out and isinstance(w.uses[0], nn.MaxPool | nn.AvgPool):
            w = w.uses[0].results[0]
        if w.uses and w not in out and all(isinstance(u, nn.Concat) for u in w.uses):
            return max((u.results[0] for u in w.uses), key=self.obs.range_of)
        return v

    def out_scale(self, op: Operation) -> tuple[int, float]:
        v = op.results[0]
        end = self.activation_end(v)
        ops = [op] + ([end.owner] if end is not v and end.owner is not None else [])
        pents = self.pents_for(*ops)
        return pents, self.scale(self.obs.range_of(end), pents)

    def add_consts(self, base: str, op: Operation, bias: np.ndarray, acc_scale: np.ndarray, out_scale: float):  # noqa: ANN201
        b = round_away(bias / acc_scale)
        clipped = np.abs(b) > WORD_MAX
        if np.any(clipped):
            self.clipped_bias += int(clipped.sum())
            b = np.clip(b, -WORD_MAX, WORD_MAX)
        mult, shift = requant_params(acc_scale / out_scale)
        if np.any(mult == MULT_MAX) and np.any(acc_scale / out_scale > MULT_MAX):
            warnings.warn(
                f"quantize: {op.name} at {op.loc}: requantization ratio above {MULT_MAX} saturated",
                CalibrationWarning,
                stacklevel=2,
            )
        bv = self.m.add_weight(base + ".bias", b.astype(np.int64), pent.BIAS_DTYPE)
        mv = self.m.add_weight(base + ".mult", mult, pent.MULT_DTYPE)
        sv = self.m.add_weight(base + ".shift", shift, pent.SHIFT_DTYPE)
        return bv, mv, sv

    def weight(self, op: Operation, wv: Value, out_axis: int, alpha: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
        """Pents (int8, output channels first) and per-output-channel scales of a weight operand.

        Float weights get their scales from :func:`pcc.quant.quantize_weights` (computed in the background while
        the calibration runs, see :func:`start_weight_jobs`); with ``weight-method=gptq`` the rounding on that
        grid is chosen by :func:`gptq_round` from the inputs of the quantized network.  With bias correction,
        ``self.correction`` gets the difference between the float layer's mean output on float inputs and the
        pentary layer's on the quantized network's inputs (it is added to the bias).  ``self.sim_weight`` is
        the pentary weight as floats, in the operand's layout, for the quantized simulation."""
        self.correction = self.sim_weight = None
        job = self.jobs.get(id(op))
        n = self.weight_pents(op) if isinstance(op, nn.Conv2d | nn.Gemm) else 1
        if job is None:
            job = float_weight_job(self.m, wv, out_axis, self.opts, n)
        try:
            q, s, wf = job.result() if hasattr(job, "result") else job
        except PccError as exc:
            raise self.error(op, exc.message) from None
        n_out = q.shape[0]
        qf = None
        if wf is not None and self.sim is not None:
            if self.method_for(op) == "gptq":
                h = self.sim.hessian(op)
                if h is not None and h.shape[0] == wf.reshape(n_out, -1).shape[1]:  # grouped: nearest rounding
                    levels = WIDE_MAX if n == 2 else 2
                    q = gptq_round(wf.reshape(n_out, -1), s, h, levels=levels).reshape(q.shape)
            mf = self.obs.mean_of(op.operands[0]) if self.opts.bias_correction else None
            mq = self.sim.mean(op.operands[0]) if mf is not None else None
            if mf is not None and mq is not None:
                # corr = W E[x_f] - s Q E[x_q], per output channel (a group's channels see the group's inputs);
                # the products in the weights' own layout (no copy of a transposed weight)
                pf, pq = mean_patch(op, mf).astype(np.float32), mean_patch(op, mq).astype(np.float32)
                g = op.attr("group") if isinstance(op, nn.Conv2d) else 1
                k = pf.size // g
                qf = q.astype(np.float32)  # the pents as floats, once: the correction's product, then the sim's
                if g == 1 and wf.ndim == 2:
                    corr = (pf @ np.moveaxis(wf, 0, 1)).astype(np.float64)
                    corr -= s * (pq @ np.moveaxis(qf, 0, 1))
                else:
                    w3 = wf.reshape(g, n_out // g, -1)
                    q3 = qf.reshape(g, n_out // g, -1)
                    corr = np.matmul(w3, pf.reshape(g, k, 1)).reshape(-1).astype(np.float64)
                    corr -= s * np.matmul(q3, pq.reshape(g, k, 1)).reshape(-1)
                self.correction = corr * alpha
        if self.sim is not None and self.sim.runs(op):  # the weight as the simulation multiplies by it
            s32 = s.astype(np.float32).reshape((-1,) + (1,) * (q.ndim - 1))
            deq = np.multiply(qf, s32, out=qf) if qf is not None else np.multiply(q, s32, dtype=np.float32)
            self.sim_weight = np.moveaxis(deq, 0, out_axis)
        if alpha < 0:
            q = -q
        return q, s * abs(alpha)

    def const(self, op: Operation, v: Value) -> np.ndarray:
        """The data of a constant operand; a pentary weight (``nn.dequantize_weight`` of constants, the
        trainer's tables) as its real values."""
        pw = pentary_weight(self.m, v) if not v.is_weight else None
        if pw is not None:
            dq, pents_, scale = pw
            shape = [1] * v.type.rank
            if scale.ndim:
                shape[dq.attr("axis") % v.type.rank] = -1
            return (np.asarray(pents_, np.float64) * scale.reshape(shape)).astype(np.float32)
        if not v.is_weight:
            raise self.error(op, f"{v.ref()} must be a constant")
        return self.m.weight(v)

    def requant_op(
        self,
        op: Operation,
        cls: type[Operation],
        x: Value,
        s_x: float,
        q: np.ndarray,
        s_w: np.ndarray,
        bias: np.ndarray,
        attrs: dict[str, Any],
    ) -> None:
        """Emit ``cls`` (pent.conv2d or pent.gemm) with the pentary weight ``q``, the bias and the per-channel
        multipliers and shifts that requantize ``s_x * s_w`` to the op's output scale.  A ``q`` beyond -2..2 is
        a two-pent weight ``5 p_hi + p_lo`` of step ``s_w``: see :meth:`wide_requant_op`."""
        if q.size and max(int(q.max()), -int(q.min())) > 2:
            return self.wide_requant_op(op, cls, x, s_x, q, s_w, bias, attrs)
        pents, s_y = self.out_scale(op)
        r = op.results[0]
        base = self.m.fresh_weight_name((op.loc.node if op.loc and op.loc.node else r.name) or "w")
        wv = self.m.add_weight(base + ".p5", q.astype(np.int8), "p5")
        consts = self.add_consts(base, op, bias, s_x * s_w, s_y)
        y = self.emit(cls, [x, wv, *consts], r.type.with_dtype(f"p{pents}"), attrs, op.loc, r.name, s_y)
        self.map[id(r)] = (y, s_y)

    def wide_requant_op(
        self,
        op: Operation,
        cls: type[Operation],
        x: Value,
        s_x: float,
        k: np.ndarray,
        step: np.ndarray,
        bias: np.ndarray,
        attrs: dict[str, Any],
    ) -> None:
        """A two-pent weight ``k = 5 p_hi + p_lo`` (step ``step``, i.e. ``w = 5 step (p_hi + p_lo / 5)``) as two
        pentary products: ``cls`` with ``p_hi`` at scale ``5 step`` and the bias, requantized to a word of two
        more pents (finer by about 25 and with twice the range of the output), then ``cls`` with ``p_lo`` at
        scale ``step`` requantized the same way, then a ``pent.add`` to the output scale (the ``fuse`` pass makes
        it the second product's residual; a ReLU after the op fuses too).  Three roundings, two of them at a
        resolution ``~25 x`` finer than the output's: the MAC array accumulates each product exactly but has
        no way to add a product times 5 into an accumulator, so one exact accumulation is not available."""
        hi, lo = wide_digits(k)
        pents, s_y = self.out_scale(op)
        mid = min(pent.MAX_ACT_PENTS, pents + 2)
        mid = 6 if mid == 5 else mid
        s_mid = s_y * 2 * word_max(pents) / word_max(mid)
        r = op.results[0]
        base = self.m.fresh_weight_name((op.loc.node if op.loc and op.loc.node else r.name) or "w")
        t = r.type.with_dtype(f"p{mid}")
        wv = self.m.add_weight(base + ".hi.p5", hi.astype(np.int8), "p5")
        consts = self.add_consts(base + ".hi", op, bias, s_x * step * 5, s_mid)
        yh = self.emit(cls, [x, wv, *consts], t, attrs, op.loc, f"{base}.hi", s_mid)
        wv = self.m.add_weight(base + ".lo.p5", lo.astype(np.int8), "p5")
        consts = self.add_consts(base + ".lo", op, np.zeros_like(bias), s_x * step, s_mid)
        yl = self.emit(cls, [x, wv, *consts], t, attrs, op.loc, f"{base}.lo", s_mid)
        (ma, mb), (ha, hb) = requant_params(np.array([s_mid / s_y, s_mid / s_y]))
        add_attrs = {"mult": [int(ma), int(mb)], "shift": [int(ha), int(hb)]}
        y = self.emit(pent.Add, [yl, yh], r.type.with_dtype(f"p{pents}"), add_attrs, op.loc, r.name, s_y)
        self.map[id(r)] = (y, s_y)

    # -- driver
    def convert(self) -> Graph:
        """The pent graph: the program boundary (``pent.quantize`` per argument, ``pent.dequantize`` per output)
        around each float op's rule, in order."""
        old, g = self.old, self.g
        for a in old.args:
            na = g.add_arg(a.name or "x", a.type)
            pents = self.overrides.get(a.name or "", self.opts.act_pents)
            if a.name in self.overrides:
                self.used_overrides.add(a.name or "")
            s = self.scale(self.obs.range_of(a), pents)
            if not a.type.is_float:  # integers (token ids, masks): exact at scale 1, in a whole word
                pents, s = 16, 1.0
            qv = self.emit(pent.Quantize, [na], a.type.with_dtype(f"p{pents}"), {"scale": s}, None, f"{a.name}.q")
            self.map[id(a)] = (qv, s)
        for op in old.body:
            self.sim_override = None
            LOWERING.lookup(op)(self, op)
            if self.sim is not None:
                self.sim.step(self.m, op, self.sim_override)
        results = []
        for v in old.outputs:
            y, s = self.q(v, old.ops[-1])
            results.append(self.emit(pent.Dequantize, [y], v.type, {"scale": s}, None, v.name))
        g.set_outputs(results)
        unused = (set(self.overrides) | set(self.methods) | set(self.wide)) - self.used_overrides
        if unused:
            known = sorted({n for op in old.body for n in _names(op)})
            raise PccError(
                f"quantize: override(s) for {', '.join(sorted(unused))}: no such node or value "
                f"(known: {', '.join(known[:12])}{', ...' if len(known) > 12 else ''})"
            )
        return g


# ----------------------------------------------------------------------------------------------- the rules


def sim_bias(bias: np.ndarray, acc_scale: np.ndarray) -> np.ndarray:
    """The bias the quantized simulation adds: as the program holds it, rounded to the accumulator scale.  A
    correction below half a unit changes nothing in the program and must not in the simulation either (the
    zero keys of a window's padded tokens, which ``F.normalize`` keeps at zero, would become unit vectors)."""
    acc = np.broadcast_to(np.asarray(acc_scale, np.float64), np.shape(bias))
    b = np.asarray(bias, np.float64)
    safe = np.where(acc > 0, acc, 1.0)
    return np.where(acc > 0, round_away(b / safe) * safe, b).astype(np.float32)


@rule(nn.Conv2d)
def lower_conv(lw: Lowering, op: Operation) -> None:
    """CONV + REQUANTC: pentary weights, the bias at the accumulator scale, per-channel requantization."""
    x, s_x = lw.q(op.operands[0], op)
    dil = op.attr("dilations") or [1, 1]
    q, s_w = lw.weight(op, op.operands[1], 0)
    o = q.shape[0]
    bias = np.zeros(o) if len(op.operands) < 3 else np.asarray(lw.const(op, op.operands[2]), np.float64)
    if lw.correction is not None:
        bias = bias + lw.correction
    if lw.sim is not None:
        lw.sim_override = {1: lw.sim_weight, 2: sim_bias(bias, s_x * s_w)}
    if any(d != 1 for d in dil):  # CONV has no dilation: the phases as a batch (passes/lower_dilated.py)
        if q.size and np.abs(q).max() > 2:
            raise lw.error(op, "a dilated conv has no two-pent weight lowering yet: give it weight pents 1")
        from pcc.passes.lower_dilated import lower_dilated_conv

        return lower_dilated_conv(lw, op, (x, s_x, q, s_w, bias))
    attrs = {"strides": list(op.attr("strides")), "pads": list(op.attr("pads")), "group": op.attr("group")}
    lw.requant_op(op, pent.Conv2d, x, s_x, q, s_w, bias, attrs)


@rule(nn.Gemm)
def lower_gemm(lw: Lowering, op: Operation) -> None:
    """MATMUL/MATVEC + REQUANTC; ``alpha`` folds into the weight scale, ``beta`` into the bias."""
    if op.attr("trans_a"):
        raise lw.error(op, "trans_a: the activation operand must not be transposed")
    x, s_x = lw.q(op.operands[0], op)
    q, s_w = lw.weight(op, op.operands[1], weight_axis(op), op.attr("alpha"))
    n = q.shape[0]
    if len(op.operands) > 2:
        c = np.asarray(lw.const(op, op.operands[2]), np.float64) * op.attr("beta")
        if c.size not in (1, n) or (c.ndim == 2 and c.shape[0] != 1):
            raise lw.error(op, f"bias of shape {list(c.shape)}: only a per-output bias [N] or [1, N] is supported")
        bias = np.broadcast_to(c.reshape(-1), (n,))
    else:
        bias = np.zeros(n)
    if lw.correction is not None:
        bias = bias + lw.correction
    beta = op.attr("beta") if len(op.operands) > 2 else 1.0
    if lw.sim is not None and beta != 0:
        lw.sim_override = {1: lw.sim_weight, 2: sim_bias(bias, s_x * s_w) / np.float32(beta)}
    lw.requant_op(op, pent.Gemm, x, s_x, q, s_w, bias, {})


@rule(nn.ScaleShift)
def lower_scale_shift(lw: Lowering, op: Operation) -> None:
    """``gamma * x + beta`` per channel: a depthwise 1x1 conv (rank 4) or a diagonal gemm (rank 2) whose pents
    are the signs of gamma and whose scales are ``|gamma|``."""
    x, s_x = lw.q(op.operands[0], op)
    gamma = np.asarray(lw.const(op, op.operands[1]), np.float64)
    beta = np.asarray(lw.const(op, op.operands[2]), np.float64)
    sign = np.sign(gamma).astype(np.int8)
    s_w = np.where(gamma != 0, np.abs(gamma), 1.0)
    rank = op.operands[0].type.rank
    c = gamma.shape[0]
    if rank == 4:
        lw.requant_op(op, pent.Conv2d, x, s_x, sign.reshape(c, 1, 1, 1), s_w, beta, {"group": c})
    elif rank == 2:
        lw.requant_op(op, pent.Gemm, x, s_x, np.diag(sign).astype(np.int8), s_w, beta, {})
    else:
        raise lw.error(op, f"a rank-{rank} scale_shift has no pentary lowering (rank 2 or 4 only)")


@rule(nn.Add)
def lower_add(lw: Lowering, op: Operation) -> None:
    """EADD: each operand rescaled to the output scale by its own multiplier and shift."""
    a, b = op.operands
    if a.type.shape != b.type.shape or a.type.shape != op.results[0].type.shape or a.is_weight or b.is_weight:
        from pcc.passes.lower_elementwise import lower_eadd

        return lower_eadd(lw, op, False)  # broadcasting, or a constant operand: pent.eadd
    (qa, sa), (qb, sb) = lw.q(a, op), lw.q(b, op)
    pents, s_y = lw.out_scale(op)
    (ma, mb), (ha, hb) = requant_params(np.array([sa / s_y, sb / s_y]))
    r = op.results[0]
    attrs = {"mult": [int(ma), int(mb)], "shift": [int(ha), int(hb)]}
    y = lw.emit(pent.Add, [qa, qb], r.type.with_dtype(f"p{pents}"), attrs, op.loc, r.name, s_y)
    lw.map[id(r)] = (y, s_y)


def _same_scale(lw: Lowering, op: Operation, cls: type[Operation], attrs: dict[str, Any]) -> None:
    """Emit ``cls`` on the operand's pent value with its word type and scale (ops that keep the scale)."""
    x, s = lw.q(op.operands[0], op)
    r = op.results[0]
    y = lw.emit(cls, [x], r.type.with_dtype(x.type.dtype), attrs, op.loc, r.name, s)
    lw.map[id(r)] = (y, s)


@rule(nn.Relu)
def lower_relu(lw: Lowering, op: Operation) -> None:
    _same_scale(lw, op, pent.Relu, {})


@rule(nn.Clip)
def lower_clip(lw: Lowering, op: Operation) -> None:
    """A ReLU when the bounds are [0, none], else TCLAMP to the bounds rounded to the input's scale."""
    if op.attr("min") == 0 and op.attr("max") is None:
        return lower_relu(lw, op)
    x, s = lw.q(op.operands[0], op)
    m = word_max(x.type.pents or 1)
    lo = -m if op.attr("min") is None else int(np.clip(round_away(op.attr("min") / s), -m, m))
    hi = m if op.attr("max") is None else int(np.clip(round_away(op.attr("max") / s), -m, m))
    _same_scale(lw, op, pent.Clamp, {"lo": lo, "hi": min(max(lo, hi), m)})


def sigmoid(x: np.ndarray) -> np.ndarray:
    """The logistic function in float64 (stable for both signs)."""
    e = np.exp(-np.abs(x))
    return np.where(x >= 0, 1.0 / (1.0 + e), e / (1.0 + e))


def lower_table(
    lw: Lowering,
    op: Operation,
    fn: Callable[[np.ndarray], np.ndarray],
    flat: tuple[float, float],
    source: Value | None = None,
) -> None:
    """A table activation ``y = fn(x)`` as ``pent.lut``, ``x`` the op's first operand or ``source``.  ``flat``:
    the real inputs beyond which ``fn`` is constant at the output's resolution (the table's ends).  The table
    covers the integer inputs between them; where that needs more than ``table-entries`` entries, the index is
    the input rescaled by ``mult / 2**shift`` (an EADD) to a coarser step, so the table spans the same range
    with fewer entries."""
    x, s_x = lw.q(op.operands[0] if source is None else source, op)
    pents, s_y = lw.out_scale(op)
    r = op.results[0]
    y = table_value(lw, op, (x, s_x), fn, flat, (pents, s_y), r.name)
    lw.map[id(r)] = (y, s_y)


def table_value(
    lw: Lowering,
    op: Operation,
    src: tuple[Value, float],
    fn: Callable[[np.ndarray], np.ndarray],
    flat: tuple[float, float],
    out: tuple[int, float],
    name: str | None,
) -> Value:
    """``pent.lut`` of ``fn`` on the pent value ``src = (x, s_x)``, its result at ``out = (pents, s_y)`` (see
    :func:`lower_table`); ``op`` names the table and carries the location."""
    x, s_x = src
    pents, s_y = out
    p_in = x.type.pents or 1
    m_in, m_out = word_max(p_in), word_max(pents)
    lo_x, hi_x = max(flat[0], -m_in * s_x), min(flat[1], m_in * s_x)  # what the table can be asked for
    hi_x = max(hi_x, lo_x + s_x)
    attrs: dict[str, Any] = {}
    step = s_x
    need = (hi_x - lo_x) / s_x + 2
    if need > max(lw.opts.table_entries, 2):
        (mult,), (shift,) = requant_params(s_x * (max(lw.opts.table_entries, 2) - 2) / (hi_x - lo_x))
        attrs.update(mult=int(mult), shift=int(shift))
        step = s_x * 2.0 ** int(shift) / int(mult)  # the index's real step, exactly as the EADD rescales
        m_in = min(m_in, int(round_away(m_in * int(mult) / 2.0 ** int(shift))))
    lo = int(max(-m_in, min(m_in, np.floor(lo_x / step))))
    hi = int(max(lo, min(m_in, np.ceil(hi_x / step))))
    idx = np.arange(lo, hi + 1, dtype=np.float64)
    table = np.clip(round_away(fn(idx * step) / s_y), -m_out, m_out).astype(np.int64)
    base = (op.loc.node if op.loc and op.loc.node else name) or "lut"
    tv = lw.m.add_weight(lw.m.fresh_weight_name(base + ".table"), table, f"p{pents}")
    attrs["lo"] = lo
    return lw.emit(pent.Lut, [x, tv], x.type.with_dtype(f"p{pents}"), attrs, op.loc, name, s_y)


@rule(nn.Sigmoid)
def lower_sigmoid(lw: Lowering, op: Operation) -> None:
    """TLUT: at the output's resolution the sigmoid is flat (0) below logit(s_y / 2) and flat (its largest
    value) above logit of the last rounding boundary, ``(word_max - 1/2) * s_y`` or ``1 - s_y / 2``."""
    pents, s_y = lw.out_scale(op)
    e = min(s_y / 2, 0.25)
    top = max(min(1 - e, (word_max(pents) - 0.5) * s_y), 1.5 * e)
    lower_table(lw, op, sigmoid, (math.log(e / (1 - e)), math.log(top / (1 - top))))


@rule(nn.Flatten, nn.Reshape, nn.Squeeze, nn.Unsqueeze)
def lower_reshape(lw: Lowering, op: Operation) -> None:
    _same_scale(lw, op, pent.Reshape, {"shape": list(op.results[0].type.shape)})


@rule(nn.Identity, nn.Dropout)
def lower_alias(lw: Lowering, op: Operation) -> None:
    """No op: the result is the operand's pent value."""
    lw.map[id(op.results[0])] = lw.q(op.operands[0], op)


@rule(nn.QuantizeLinear)
def lower_fake_quantize(lw: Lowering, op: Operation) -> None:
    """An activation's QuantizeLinear (from another quantizer's QDQ model) feeding DequantizeLinear only: the
    pair is that quantizer's rounding of a float value, which pcc replaces by its own (the value keeps the pent
    form of the QuantizeLinear's input).  Any other use of the integers has no pentary form."""
    if not op.results[0].users or any(not isinstance(u, nn.DequantizeLinear) for u in op.results[0].users):
        raise lw.error(op, "a QuantizeLinear whose integers are used other than by DequantizeLinear")
    lw.map[id(op.results[0])] = lw.q(op.operands[0], op)


@rule(nn.DequantizeLinear)
def lower_fake_dequantize(lw: Lowering, op: Operation) -> None:
    """The second half of a QuantizeLinear/DequantizeLinear pair (see :func:`lower_fake_quantize`)."""
    x = op.operands[0]
    if x.is_weight or not isinstance(x.owner, nn.QuantizeLinear):
        raise lw.error(op, "a DequantizeLinear of a graph value that no QuantizeLinear produced")
    lw.map[id(op.results[0])] = lw.q(x, op)


def _nan_guard(op: Operation) -> bool:
    """``where(is_nan(x), c, x)`` of an activation ``x`` (ONNX exports of scaled_dot_product_attention guard
    the softmax of a fully masked row this way)."""
    if not isinstance(op, nn.Where):
        return False
    cond, _, x = op.operands
    return isinstance(cond.owner, nn.IsNaN) and cond.owner.operands[0] is x and not x.is_weight


@rule(nn.IsNaN)
def lower_is_nan(lw: Lowering, op: Operation) -> None:
    """Nothing when every use is a NaN guard ``where(is_nan(x), c, x)`` (``passes/lower_mask.py``'s
    ``lower_where`` lowers the guard to ``x``)."""
    users = op.results[0].users
    if not users or not all(_nan_guard(u) for u in users):
        raise lw.error(op, "no pentary lowering for is_nan used other than in where(is_nan(x), c, x)")


@rule(nn.DequantizeWeight)
def lower_weight(lw: Lowering, op: Operation) -> None:
    """Nothing: a conv/gemm that uses the pentary weight reads its pents and scales (:meth:`Lowering.weight`)."""


LOWERING.unsupported("run fold-batchnorm first", nn.BatchNorm)
LOWERING.unsupported(
    "no pentary lowering yet",
    *(
        nn.LayerNorm, nn.Cast,
    ),
)  # fmt: skip
LOWERING.unsupported(  # the import breadth of the ONNX and torch frontends (float reference only so far)
    "no pentary lowering yet",
    *(
        nn.Abs, nn.Acos, nn.Acosh, nn.ArgMax, nn.ArgMin, nn.Asin, nn.Asinh, nn.Atan, nn.Atanh, nn.BitShift,
        nn.BitwiseAnd, nn.BitwiseNot, nn.BitwiseOr, nn.BitwiseXor, nn.Ceil, nn.Celu, nn.ConvInteger2d,
        nn.ConvTranspose2d, nn.Cos, nn.Cosh, nn.CumSum, nn.Einsum, nn.Elu, nn.Equal, nn.Floor,
        nn.GatherElements, nn.GatherND, nn.Greater, nn.GreaterOrEqual, nn.GroupNorm, nn.Hardmax, nn.IsInf,
        nn.LRN, nn.Less, nn.LessOrEqual, nn.Log, nn.MatMulInteger, nn.Max, nn.Min, nn.Mish, nn.Mod, nn.Not,
        nn.OneHot, nn.Or, nn.PRelu, nn.Reciprocal, nn.ReduceL1, nn.ReduceL2, nn.ReduceLogSum,
        nn.ReduceLogSumExp, nn.ReduceMax, nn.ReduceMin, nn.ReduceProd, nn.ReduceSumSquare, nn.Round,
        nn.ScatterElements, nn.ScatterND, nn.Selu, nn.Shrink, nn.Sign, nn.Sin, nn.Sinh, nn.Softplus, nn.Softsign,
        nn.Tan, nn.ThresholdedRelu, nn.Tile, nn.TopK, nn.Trilu, nn.Xor,
    ),
)  # fmt: skip


from pcc.passes import (  # noqa: E402,F401  (their rules register in LOWERING)
    lower_conv_transpose,
    lower_divide,
    lower_elementwise,
    lower_embed,
    lower_lrn,
    lower_mask,
    lower_matmul,
    lower_move,
    lower_norm,
    lower_pool,
    lower_resize,
    lower_softmax,
)


def check_supported(g: Graph) -> None:
    """Raise one PccError listing every op of ``g`` that has no lowering rule (with the declared reasons)."""
    bad = [op for op in g.body if type(op) not in LOWERING and not op.name.startswith("pent.")]
    if not bad:
        return
    first = bad[0]
    kinds = sorted({op.name for op in bad})
    by_name = {op.name: type(op) for op in bad}
    hints = []
    for k in kinds:
        why = LOWERING.reason(by_name[k])
        if why not in (None, "no rule", "no pentary lowering yet"):
            hints.append(f"{k}: {why}")
    nodes = ", ".join(repr(op.loc.node) for op in bad[:6] if op.loc is not None and op.loc.node)
    supported = sorted(c.name for c in LOWERING if c in LOWERING)
    raise PccError(
        f"quantize: no pentary lowering for {', '.join(kinds)}" + (f" (nodes {nodes})" if nodes else ""),
        first.loc,
        notes=hints + [f"supported float ops: {', '.join(supported)}"],
    )
