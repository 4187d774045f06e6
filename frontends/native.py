"""The trainer's JSON models into the ``nn`` IR, with the weights kept pentary.

The format is the trainer's "Model JSON format" (``docs/trainer.md``): ``input_dim``, ``output_dim``,
``hidden_dims``, optionally ``input_shape`` (per sample), and ``layers``, each with a ``type``:

- ``linear`` (``in_features``, ``out_features``, ``use_bias``) and ``conv2d`` (``in_channels``,
  ``out_channels``, ``kernel_size``, ``stride``, ``padding``, ``use_bias``): weights as ``weight_pentary``
  (pents in -2..2, ``[out, in]`` / ``[out, in, kh, kw]``) with ``weight_scale`` (one number, or one per output
  channel), or the seed quantizer's ``weights_pentary`` (+ ``weights_scale`` or ``weight_scale``); else float
  weights (``weight_float``, or the seed's ``weights``).  The bias is the float ``bias`` when present (the
  trainer's inference uses it), else ``bias_pentary * bias_scale``;
- ``relu``, ``maxpool2d`` (``kernel_size``, ``stride``, ``padding``), ``batchnorm`` (``num_features``, ``eps``,
  ``gamma``, ``beta``, ``running_mean``, ``running_var``), ``flatten`` and ``dropout`` (the identity).

A pentary weight becomes two module weights, ``@layerN.weight.p5`` (type ``p5``) and ``@layerN.weight.scale``
(``f32``, ``[out]`` or a scalar), and the float weight is computed from them in the graph by
``nn.dequantize_weight`` (``pents * scale`` on axis 0).  The float interpreter runs it as it is, and the
quantizer can take the pents and scales unchanged instead of re-quantizing.  ``keep_pentary=False`` folds them
into plain float weights instead.  The graph input ``input`` has shape ``[batch, *input_shape]`` (batch 1
unless ``input_shapes={"input": (batch, ...)}``); the output is ``output``.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from pcc.diagnostics import Location, PccError, read_input_json
from pcc.dialects import nn
from pcc.frontends import Builder, Const, Sym, ir_dtype, shape_of
from pcc.ir import Module, TensorType

__all__ = ["load", "load_dict", "LAYER_TYPES"]

LAYER_TYPES = (
    "linear",
    "conv2d",
    "relu",
    "maxpool2d",
    "batchnorm",
    "flatten",
    "dropout",
    "embedding",
    "positional_embedding",
    "layernorm",
    "gelu",
    "attention",
    "residual",
)
MASK_VALUE = -1e9  # added to the attention scores of the keys a causal query may not see


class _Layer:
    """A layer dict being converted: typed accessors that fail with the layer's index and type."""

    def __init__(self, d: Any, index: int, file: str | None) -> None:
        self.index = index
        self.file = file
        self.type = d.get("type") if isinstance(d, dict) else None
        self.name = f"layer{index}.{self.type}"
        self.outputs = [f"layer{index}"]
        self.loc = Location(file, node=self.name)
        if not isinstance(d, dict):
            raise self.error("a layer is a JSON object")
        self.d = d

    def error(self, message: str) -> PccError:
        return PccError(f"layer {self.index} ({self.type}): {message}", Location(self.file, node=self.name))

    def has(self, key: str) -> bool:
        return key in self.d and self.d[key] is not None

    def int(self, key: str, default: Any = None) -> int:
        v = self.d.get(key, default)
        if v is None:
            raise self.error(f"missing key {key!r}")
        if isinstance(v, bool) or not isinstance(v, int | float) or v != int(v) or int(v) < 0:
            raise self.error(f"{key!r} must be a non-negative integer, got {v!r}")
        return int(v)

    def pair(self, key: str, default: Any = None) -> list[int]:
        v = self.d.get(key, default)
        if v is None:
            raise self.error(f"missing key {key!r}")
        vals = [v, v] if isinstance(v, int | float) else v
        if not isinstance(vals, list | tuple) or len(vals) != 2:
            raise self.error(f"{key!r} must be an integer or a pair of integers, got {v!r}")
        out = []
        for x in vals:
            if isinstance(x, bool) or not isinstance(x, int | float) or x != int(x) or x < 0:
                raise self.error(f"{key!r} must hold non-negative integers, got {v!r}")
            out.append(int(x))
        return out

    def array(self, key: str, shape: Sequence[int] | None = None, dtype: type = np.float32) -> np.ndarray:
        if not self.has(key):
            raise self.error(f"missing key {key!r}")
        try:
            raw = np.asarray(self.d[key])
        except (TypeError, ValueError, OverflowError):
            raise self.error(f"{key!r} is not a (nested) list of numbers") from None
        if raw.dtype.kind not in "iuf":  # strings, booleans, ragged lists and huge integers (objects)
            raise self.error(f"{key!r} is not a (nested) list of numbers")
        a = raw.astype(np.float64)
        if not np.all(np.isfinite(a)):
            raise self.error(f"{key!r} holds NaN or infinity")
        if shape is not None and a.shape != tuple(shape):
            raise self.error(f"{key!r} has shape {list(a.shape)}, expected {list(shape)}")
        out = a.astype(dtype)
        if out.dtype.kind == "f" and not np.all(np.isfinite(out)):
            raise self.error(f"{key!r} holds values beyond the {out.dtype} range")
        return out

    def pents(self, key: str, shape: Sequence[int]) -> np.ndarray:
        q = self.array(key, shape, np.float64)
        if q.size and (np.any(q != np.rint(q)) or q.min() < -2 or q.max() > 2):
            raise self.error(f"{key!r} must hold integers in -2..2 (pents)")
        return q.astype(np.int8)

    def scale(self, key: str, channels: int) -> np.ndarray:
        s = self.array(key)
        if s.ndim == 1 and s.shape[0] == 1:
            s = s.reshape(())
        if not (s.ndim == 0 or (s.ndim == 1 and s.shape[0] == channels)):
            raise self.error(f"{key!r} must be a number or a list of {channels} numbers, got shape {list(s.shape)}")
        if np.any(s <= 0):
            raise self.error(f"{key!r} must be positive")
        return s.astype(np.float32)


def _weight(b: Builder, L: _Layer, shape: tuple[int, ...], keep_pentary: bool) -> Sym:
    """The layer's float weight: ``nn.dequantize_weight`` of pents and scales, or a float constant."""
    for pk, sk in (("weight_pentary", "weight_scale"), ("weights_pentary", "weights_scale")):
        if L.has(pk):
            skey = sk if L.has(sk) else "weight_scale"
            if not L.has(skey):
                raise L.error(f"{pk} without {sk}")
            q = L.pents(pk, shape)
            s = L.scale(skey, shape[0])
            if not keep_pentary:
                return Const(
                    q.astype(np.float32) * (s.reshape((-1,) + (1,) * (q.ndim - 1)) if s.ndim else s),
                    f"layer{L.index}.weight",
                )
            pv = b.weight(Const(q, f"layer{L.index}.weight.p5"), dtype="p5")
            sv = b.weight(Const(s, f"layer{L.index}.weight.scale"))
            return b.emit(L, nn.DequantizeWeight, [pv, sv], {"axis": 0}, names=[f"layer{L.index}.weight"], fold=False)[
                0
            ]
    for fk in ("weight_float", "weights"):
        if L.has(fk):
            return Const(L.array(fk, shape), f"layer{L.index}.weight")
    raise L.error("no weights: expected weight_pentary + weight_scale (or weight_float)")


def _bias(L: _Layer, n: int) -> Const | None:
    if not bool(L.d.get("use_bias", True)):
        return None
    if L.has("bias"):
        return Const(L.array("bias", (n,)), f"layer{L.index}.bias")
    if L.has("bias_pentary"):
        if not L.has("bias_scale"):
            raise L.error("bias_pentary without bias_scale")
        q = L.pents("bias_pentary", (n,))
        s = L.scale("bias_scale", n)
        return Const(q.astype(np.float32) * s, f"layer{L.index}.bias")
    raise L.error("use_bias is true but there is no bias (expected bias or bias_pentary + bias_scale)")


def _linear(b: Builder, L: _Layer, x: Sym, keep: bool) -> Sym:
    fin, fout = L.int("in_features"), L.int("out_features")
    xs = shape_of(x)
    if len(xs) > 2 and xs[-1] == fin:  # per position (sequence models): rows through one gemm
        rows = b.op1(L, nn.Reshape, [x], {"shape": [math.prod(xs[:-1]), fin]}, out=False)
        w = _weight(b, L, (fout, fin), keep)
        bias = _bias(L, fout)
        y = b.op1(L, nn.Gemm, [rows, w] + ([bias] if bias is not None else []), {"trans_b": True}, out=False)
        return b.op1(L, nn.Reshape, [y], {"shape": [*xs[:-1], fout]})
    if math.prod(xs[1:]) != fin:
        raise L.error(f"expects {fin} input features, gets shape {list(xs[1:])} per sample")
    if len(xs) != 2:
        x = b.op1(L, nn.Flatten, [x], {"axis": 1}, out=False)
    w = _weight(b, L, (fout, fin), keep)
    bias = _bias(L, fout)
    return b.op1(L, nn.Gemm, [x, w] + ([bias] if bias is not None else []), {"trans_b": True})


def _conv2d(b: Builder, L: _Layer, x: Sym, keep: bool) -> Sym:
    cin, cout = L.int("in_channels"), L.int("out_channels")
    kh, kw = L.pair("kernel_size")
    stride, pad = L.pair("stride", 1), L.pair("padding", 0)
    xs = shape_of(x)
    if len(xs) != 4 or xs[1] != cin:
        raise L.error(f"expects [N, {cin}, H, W] inputs, gets {list(xs)}")
    w = _weight(b, L, (cout, cin, kh, kw), keep)
    bias = _bias(L, cout)
    attrs = {"strides": stride, "pads": pad + pad, "dilations": [1, 1], "group": 1}
    return b.op1(L, nn.Conv2d, [x, w] + ([bias] if bias is not None else []), attrs)


def _maxpool(b: Builder, L: _Layer, x: Sym) -> Sym:
    k = L.pair("kernel_size", 2)
    stride = L.pair("stride", k)
    pad = L.pair("padding", 0)
    attrs = {"kernel_shape": k, "strides": stride, "pads": pad + pad, "dilations": [1, 1], "ceil_mode": False}
    return b.op1(L, nn.MaxPool, [x], attrs)


def _batchnorm(b: Builder, L: _Layer, x: Sym) -> Sym:
    c = L.int("num_features")
    if len(shape_of(x)) < 2 or shape_of(x)[1] != c:
        raise L.error(f"expects {c} channels, gets shape {list(shape_of(x))}")
    ps = [Const(L.array(k, (c,)), f"layer{L.index}.{k}") for k in ("gamma", "beta", "running_mean", "running_var")]
    eps = L.d.get("eps", 1e-5)
    if isinstance(eps, bool) or not isinstance(eps, int | float) or not 0 <= eps < 1e30:
        raise L.error(f"'eps' must be a number >= 0, got {eps!r}")
    if np.any(ps[3].data < 0):
        raise L.error("'running_var' holds a negative variance")
    return b.op1(L, nn.BatchNorm, [x, *ps], {"epsilon": float(eps)})


def _size(L: _Layer, key: str) -> int:
    v = L.int(key)
    if v < 1:
        raise L.error(f"{key!r} must be at least 1")
    return v


def _table(b: Builder, L: _Layer, rows: int, cols: int, keep: bool, take: int | None = None) -> Sym:
    """A pentary table ``[rows, cols]`` (one scale per row), optionally only its first ``take`` rows."""
    for key in ("weight_pentary", "weight_float"):
        if L.has(key):
            v = L.d[key]
            first_ok = isinstance(v, list) and v and isinstance(v[0], list) and len(v[0]) == cols
            if not isinstance(v, list) or len(v) != rows or not first_ok:
                raise L.error(f"{key!r} must be a [{rows}][{cols}] table")
            break
    if take is not None and take != rows and L.has("weight_pentary"):
        q = L.pents("weight_pentary", (rows, cols))[:take]
        s = L.scale("weight_scale", rows)
        s = s[:take] if s.ndim else s
        if not keep:
            return Const(q.astype(np.float32) * (s[:, None] if s.ndim else s), f"layer{L.index}.weight")
        pv = b.weight(Const(q, f"layer{L.index}.weight.p5"), dtype="p5")
        sv = b.weight(Const(s, f"layer{L.index}.weight.scale"))
        return b.emit(L, nn.DequantizeWeight, [pv, sv], {"axis": 0}, names=[f"layer{L.index}.weight"], fold=False)[0]
    w = _weight(b, L, (rows, cols), keep)
    if take is not None and take != rows:
        w = b.op1(L, nn.Slice, [w], {"starts": [0], "ends": [take], "axes": [0]}, out=False)
    return w


def _embedding(b: Builder, L: _Layer, x: Sym, keep: bool) -> Sym:
    n, dim = _size(L, "num_embeddings"), _size(L, "embedding_dim")
    if ir_dtype(x) not in ("i32", "i64") or len(shape_of(x)) != 2:
        raise L.error(f"expects [batch, T] integer token ids, gets {list(shape_of(x))} {ir_dtype(x)}")
    # the gather reads a constant table: the pents times their row scales (the values the trainer uses)
    table = _table(b, L, n, dim, False)
    return b.op1(L, nn.Gather, [table, x], {"axis": 0})


def _positional(b: Builder, L: _Layer, x: Sym, keep: bool) -> Sym:
    ctx, dim = _size(L, "context"), _size(L, "dim")
    xs = shape_of(x)
    if len(xs) != 3 or xs[2] != dim or xs[1] > ctx:
        raise L.error(f"expects [batch, T <= {ctx}, {dim}], gets {list(xs)}")
    table = _table(b, L, ctx, dim, False, take=xs[1])  # a constant addend, as the token table
    return b.op1(L, nn.Add, [x, table])


def _layernorm(b: Builder, L: _Layer, x: Sym) -> Sym:
    dim = _size(L, "dim")
    if shape_of(x)[-1] != dim:
        raise L.error(f"normalises {dim} features, gets shape {list(shape_of(x))}")
    eps = L.d.get("eps", 1e-5)
    if isinstance(eps, bool) or not isinstance(eps, int | float) or not 0 < eps < 1:
        raise L.error(f"'eps' must be a number in (0, 1), got {eps!r}")
    g = Const(L.array("gamma", (dim,)), f"layer{L.index}.gamma")
    beta = Const(L.array("beta", (dim,)), f"layer{L.index}.beta")
    return b.op1(L, nn.LayerNorm, [x, g, beta], {"axis": -1, "epsilon": float(eps)})


def _attention(b: Builder, L: _Layer, x: Sym, keep: bool) -> Sym:
    dim, heads = _size(L, "dim"), _size(L, "heads")
    causal = L.d.get("causal", True)
    if not isinstance(causal, bool):
        raise L.error(f"'causal' must be true or false, got {causal!r}")
    if dim % heads:
        raise L.error(f"heads ({heads}) must divide dim ({dim})")
    xs = shape_of(x)
    if len(xs) != 3 or xs[2] != dim:
        raise L.error(f"expects [batch, T, {dim}], gets {list(xs)}")
    bsz, t, dh = xs[0], xs[1], dim // heads
    subs = {}
    for key, rows in (("qkv", 3 * dim), ("out", dim)):
        sd = L.d.get(key)
        if not isinstance(sd, dict):
            raise L.error(f"missing {key!r} projection object")
        if sd.get("in_features") != dim or sd.get("out_features") != rows:
            raise L.error(f"{key!r} must be a linear layer {dim} -> {rows}")
        sub = _Layer({**sd, "type": "linear"}, L.index, L.file)
        sub.name, sub.outputs, sub.loc = f"{L.name}.{key}", [f"layer{L.index}.{key}"], L.loc
        sub.error = L.error  # type: ignore[method-assign]  (errors name the attention layer)
        subs[key] = sub
    qkv = _linear(b, subs["qkv"], x, keep)  # [B, T, 3D]

    def part(j: int, perm: list[int]) -> Sym:
        piece = b.op1(L, nn.Slice, [qkv], {"starts": [j * dim], "ends": [(j + 1) * dim], "axes": [2]}, out=False)
        piece = b.op1(L, nn.Reshape, [piece], {"shape": [bsz, t, heads, dh]}, out=False)
        return b.op1(L, nn.Transpose, [piece], {"perm": perm}, out=False)

    q, kt, v = part(0, [0, 2, 1, 3]), part(1, [0, 2, 3, 1]), part(2, [0, 2, 1, 3])
    scores = b.op1(L, nn.MatMul, [q, kt], out=False)  # [B, H, T, T]
    scores = b.op1(L, nn.Mul, [scores, Const(np.float32(1.0 / math.sqrt(dh)), f"layer{L.index}.scale")], out=False)
    if causal and t > 1:
        mask = np.where(np.triu(np.ones((t, t), bool), 1), np.float32(MASK_VALUE), np.float32(0))
        scores = b.op1(L, nn.Add, [scores, Const(mask, f"layer{L.index}.causal_mask")], out=False)
    probs = b.op1(L, nn.Softmax, [scores], {"axis": -1}, out=False)
    o = b.op1(L, nn.MatMul, [probs, v], out=False)  # [B, H, T, dh]
    o = b.op1(L, nn.Transpose, [o], {"perm": [0, 2, 1, 3]}, out=False)
    o = b.op1(L, nn.Reshape, [o], {"shape": [bsz, t, dim]}, out=False)
    return _linear(b, subs["out"], o, keep)


def _sequence_layer(b: Builder, L: _Layer, x: Sym, keep: bool, depth: int) -> Sym:
    t = L.type
    if t == "embedding":
        return _embedding(b, L, x, keep)
    if t == "positional_embedding":
        return _positional(b, L, x, keep)
    if t == "layernorm":
        return _layernorm(b, L, x)
    if t == "gelu":
        approx = L.d.get("approximate", "none")
        if approx not in ("none", "tanh"):
            raise L.error(f"'approximate' must be 'none' or 'tanh', got {approx!r}")
        return b.op1(L, nn.Gelu, [x], {"approximate": approx})
    if t == "attention":
        return _attention(b, L, x, keep)
    if t == "linear":
        return _linear(b, L, x, keep)
    if t == "residual":
        if depth >= 4:
            raise L.error("residual blocks nested more than 4 deep")
        subs = L.d.get("layers")
        if not isinstance(subs, list) or not subs:
            raise L.error("'layers' must be a non-empty list of layer objects")
        y = x
        for j, sd in enumerate(subs):
            sub = _Layer(sd, L.index, L.file)
            kind = sub.type
            sub.name, sub.outputs = f"{L.name}.{j}.{kind}", [f"layer{L.index}.{j}"]
            sub.loc = Location(L.file, node=sub.name)
            prefix = f"layer {L.index} (residual): sub-layer {j} ({kind}): "
            sub.error = lambda m, _p=prefix, _s=sub: PccError(_p + m, _s.loc)  # type: ignore[method-assign]
            if kind not in ("layernorm", "gelu", "attention", "linear", "residual", "relu", "dropout"):
                raise sub.error("unsupported inside a residual block (known: layernorm, gelu, attention, linear)")
            if kind == "relu":
                y = b.op1(sub, nn.Relu, [y])
            elif kind != "dropout":
                y = _sequence_layer(b, sub, y, keep, depth + 1)
        if shape_of(y) != shape_of(x):
            raise L.error(f"the block maps {list(shape_of(x))} to {list(shape_of(y))}; a residual keeps the shape")
        return b.op1(L, nn.Add, [x, y])
    raise L.error(f"unsupported in a sequence model: {t!r}")


def load_dict(
    d: Any,
    input_shapes: Mapping[str, Sequence[int]] | None = None,
    *,
    file: str | None = None,
    name: str | None = None,
    keep_pentary: bool = True,
) -> Module:
    """Convert a model JSON object (already parsed); see :func:`load`."""
    where = file or "model"
    if not isinstance(d, dict):
        raise PccError(f"{where}: a model JSON file holds an object, not {type(d).__name__}")
    if d.get("format", "pcc.pentary-model") != "pcc.pentary-model":
        raise PccError(f"{where}: format {str(d.get('format'))[:60]!r} is not 'pcc.pentary-model'")
    if d.get("version", 1) != 1 or isinstance(d.get("version"), bool):
        raise PccError(f"{where}: model format version {str(d.get('version'))[:20]} is not 1, the one this pcc reads")
    layers = d.get("layers")
    if not isinstance(layers, list) or not layers:
        raise PccError(f"{where}: missing or empty 'layers' list")
    unknown = [
        (i, ld.get("type") if isinstance(ld, dict) else None)
        for i, ld in enumerate(layers)
        if not isinstance(ld, dict) or ld.get("type") not in LAYER_TYPES
    ]
    if unknown:
        shown = ", ".join(f"layer {i} ({t!r})" for i, t in unknown)
        raise PccError(f"{where}: unsupported layer types: {shown} (known: {', '.join(LAYER_TYPES)})")
    if "input_shape" in d:
        per_sample = d["input_shape"]
    elif "input_dim" in d:
        per_sample = [d["input_dim"]]
    elif layers[0].get("type") == "linear" and "in_features" in layers[0]:
        per_sample = [layers[0]["in_features"]]
    else:
        raise PccError(f"{where}: missing 'input_shape' (or 'input_dim')")
    try:
        per_sample = [int(v) for v in per_sample]
    except (TypeError, ValueError):
        raise PccError(f"{where}: input_shape must be a list of integers, got {per_sample!r}") from None
    if any(v < 1 for v in per_sample):
        raise PccError(f"{where}: input_shape must hold dimensions >= 1, got {per_sample}")
    shape = [1, *per_sample]
    shapes = dict(input_shapes or {})
    if shapes:
        if set(shapes) != {"input"}:
            raise PccError(f"{where}: the model's only input is 'input'; got shapes for {sorted(shapes)}")
        given = [int(v) for v in shapes["input"]]
        seq_ok = layers[0].get("type") == "embedding" and len(given) == 2 and 1 <= given[1] <= per_sample[0]
        if given[1:] != per_sample and math.prod(given[1:]) != math.prod(per_sample) and not seq_ok:
            raise PccError(
                f"{where}: --input-shape input={'x'.join(map(str, given))} does not match the model's "
                f"per-sample input shape {per_sample}"
            )
        shape = given

    module = Module(name or (Path(file).stem if file else "model"))
    module.source = file
    b = Builder(module, file, {"input", "output"})
    sequence = layers[0].get("type") == "embedding"
    if sequence and (len(shape) != 2 or not 1 <= shape[1] <= per_sample[0]):
        raise PccError(f"{where}: a sequence model's input is [batch, T] token ids with T <= {per_sample[0]}")
    x: Sym = b.graph.add_arg("input", TensorType(shape, "i64" if sequence else "f32"))
    if sequence:
        for i, ld in enumerate(layers):
            L = _Layer(ld, i, file)
            b.site = L
            x = _sequence_layer(b, L, x, keep_pentary, 0)
        b.site = None
        out_dim = d.get("output_dim")
        got = shape_of(x)
        if len(got) != 3 or (out_dim is not None and got[2] != out_dim):
            raise PccError(f"{where}: the layers produce shape {list(got)}, expected [batch, T, {out_dim}]")
        return b.finish([("output", x)])
    if shape[1:] != per_sample:  # a flat [B, prod] input for a model on [C, H, W] samples
        x = b.op1(_Layer({"type": "input"}, -1, file), nn.Reshape, [x], {"shape": [shape[0], *per_sample]}, out=False)
    for i, ld in enumerate(layers):
        L = _Layer(ld, i, file)
        b.site = L
        t = L.type
        if t == "linear":
            x = _linear(b, L, x, keep_pentary)
        elif t == "conv2d":
            x = _conv2d(b, L, x, keep_pentary)
        elif t == "relu":
            x = b.op1(L, nn.Relu, [x])
        elif t == "maxpool2d":
            x = _maxpool(b, L, x)
        elif t == "batchnorm":
            x = _batchnorm(b, L, x)
        elif t == "flatten":
            x = b.op1(L, nn.Flatten, [x], {"axis": 1})
        elif t != "dropout":  # (dropout: the identity at inference)
            raise L.error(f"{t!r} belongs to sequence models (the first layer an embedding of token ids)")
    b.site = None
    out_dim = d.get("output_dim")
    got = shape_of(x)
    if out_dim is not None and (len(got) != 2 or got[1] != int(out_dim)):
        raise PccError(f"{where}: the layers produce shape {list(got)}, but output_dim is {out_dim}")
    return b.finish([("output", x)])


def load(
    path: str | os.PathLike[str],
    input_shapes: Mapping[str, Sequence[int]] | None = None,
    *,
    keep_pentary: bool = True,
) -> Module:
    """Import a trainer model JSON file as a verified ``nn`` module (see the module docs for the format)."""
    p = Path(path)
    d = read_input_json(p, "a pentary model JSON file")
    return load_dict(d, input_shapes, file=str(p), name=p.stem, keep_pentary=keep_pentary)
