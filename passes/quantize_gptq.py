"""GPTQ rounding for ``quantize{weight-method=gptq}``: the pents of a weight chosen so that the layer's output
error on the calibration inputs is minimised, not the weight error.  The same rounding serves one pent per
weight (levels -2..2) and two (``weight-pents=2``: the 25 levels ``5 p_hi + p_lo`` in -12..12 of one uniform
grid, whose balanced digits the lowering takes apart afterwards)."""

from __future__ import annotations

import numpy as np


def gptq_round(
    w: np.ndarray, scale: np.ndarray, h: np.ndarray, damp: float = 0.01, block: int = 128, levels: int = 2
) -> np.ndarray:
    """Integers in ``-levels..levels`` (2: pents; 12: two-pent weights ``5 p_hi + p_lo``) of ``w`` [N, K] on the
    grid ``scale`` [N], chosen column by column so that the error each rounding makes is compensated by the
    columns not yet rounded, weighted by the input statistics ``h = E[x x^T]`` [K, K] (the GPTQ method of
    Frantar et al., 2022): the output error ``(W - s Q) x`` is what is minimised, not the weight error.
    Deterministic; O(N K^2)."""
    w = np.array(w, dtype=np.float64)
    k = w.shape[1]
    h = np.array(h, dtype=np.float64)
    dead = np.diag(h) <= 0
    h[dead, dead] = 1.0
    w[:, dead] = 0.0
    h += damp * float(np.mean(np.diag(h))) * np.eye(k)
    try:
        u = np.linalg.cholesky(np.linalg.inv(h)).T  # upper: H^-1 = U^T U
    except np.linalg.LinAlgError:
        return np.clip(np.rint(w / scale[:, None]), -levels, levels).astype(np.int8)
    s = scale[:, None]
    q = np.zeros_like(w)
    for b0 in range(0, k, block):
        b1 = min(k, b0 + block)
        wb = w[:, b0:b1].copy()
        err = np.zeros_like(wb)
        for j in range(b1 - b0):
            col = wb[:, j : j + 1]
            qc = np.clip(np.rint(col / s), -levels, levels)
            q[:, b0 + j : b0 + j + 1] = qc
            e = (col - qc * s) / u[b0 + j, b0 + j]
            wb[:, j + 1 :] -= e @ u[b0 + j : b0 + j + 1, b0 + j + 1 : b1]
            err[:, j : j + 1] = e
        w[:, b1:] -= err @ u[b0:b1, b1:]
    return q.astype(np.int8)
