"""Generate a large, valid ``.pir`` module for the IR benchmarks: a chain of conv/bn/relu/add blocks."""

from __future__ import annotations

import numpy as np

from pcc.dialects import nn
from pcc.ir import Module, TensorType


def make_module(n_ops: int, seed: int = 0) -> Module:
    """A module with about ``n_ops`` ops (residual blocks of conv, batch_norm, relu, add) and small weights."""
    rng = np.random.default_rng(seed)
    m = Module("bench")
    g = m.add_function("main")
    c = 4
    t = TensorType((1, c, 8, 8), "f32")
    x = g.add_arg("x", t)
    w = m.add_weight("w", rng.standard_normal((c, c, 3, 3)).astype(np.float32))
    b = m.add_weight("b", rng.standard_normal(c).astype(np.float32))
    gm = m.add_weight("gamma", np.ones(c, np.float32))
    bt = m.add_weight("beta", np.zeros(c, np.float32))
    mu = m.add_weight("mean", np.zeros(c, np.float32))
    var = m.add_weight("var", np.ones(c, np.float32))
    cur = x
    i = 0
    while i < n_ops:
        conv = g.append(nn.Conv2d([cur, w, b], [t], {"strides": [1, 1], "pads": [1, 1, 1, 1]}))
        bn = g.append(nn.BatchNorm([conv.result, gm, bt, mu, var], [t], {"epsilon": 1e-5}))
        relu = g.append(nn.Relu([bn.result], [t]))
        add = g.append(nn.Add([relu.result, cur], [t]))
        cur = add.result
        i += 4
    g.set_outputs([cur])
    return m
