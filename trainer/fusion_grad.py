"""The projected fusions (``add``, ``multiply``, ``attention``) as a function of the text modality alone.

A learned text embedding changes only the text modality's projected vector ``u`` (``[N, D]``); the other
modalities are fixed, so each sample's fused vector is a function of ``u`` and a fixed *context* computed once:

* ``add``: the sum of the other projections (``[N, D]``); fused = ``u + context``.
* ``multiply``: the product of the other projections (``[N, D]``, ones without any); fused = ``u * context``.
* ``attention``: all projections stacked as tokens (``[N, M, D]``, the text token's slot ``k`` left to ``u``);
  fused = the tokens, normalised per token, through parameter-free scaled dot-product self-attention,
  flattened (the same arithmetic as :meth:`MultimodalFusion._fuse_raw`).

:func:`fuse` is the forward map and :func:`fuse_backward` its gradient with respect to ``u``.
"""

from __future__ import annotations

import numpy as np

F32 = np.float32
EPS = F32(1e-5)


def text_context(method: str, proj: list[np.ndarray], k: int) -> np.ndarray:
    """The fixed context of the text modality (index ``k`` in ``proj``, each ``[N, D]``) for ``method``."""
    others = [p for i, p in enumerate(proj) if i != k]
    if method == "add":
        return np.sum(others, axis=0).astype(F32) if others else np.zeros_like(proj[k])
    if method == "multiply":
        return np.prod(others, axis=0).astype(F32) if others else np.ones_like(proj[k])
    if method == "attention":
        tokens = np.stack(proj, axis=1).astype(F32)
        tokens[:, k] = 0.0
        return tokens
    raise ValueError(f"no text context for fusion {method!r}")


def _attention_parts(u: np.ndarray, context: np.ndarray, k: int) -> tuple[np.ndarray, ...]:
    tokens = np.array(context, dtype=F32)
    tokens[:, k] = u
    centred = tokens - tokens.mean(-1, keepdims=True)
    sigma = np.sqrt((centred * centred).mean(-1, keepdims=True))
    z = centred / (sigma + EPS)
    root = F32(np.sqrt(tokens.shape[-1]))
    scores = z @ z.transpose(0, 2, 1) / root
    scores -= scores.max(-1, keepdims=True)
    w = np.exp(scores)
    w /= w.sum(-1, keepdims=True)
    return z, w, centred, sigma, root


def fuse(method: str, u: np.ndarray, context: np.ndarray, k: int) -> np.ndarray:
    """The raw (unstandardised) fused vectors ``[N, output_dim]`` from the text projection ``u``."""
    if method == "add":
        return (u + context).astype(F32)
    if method == "multiply":
        return (u * context).astype(F32)
    z, w, *_ = _attention_parts(u, context, k)
    return (w @ z).reshape(len(u), -1).astype(F32)


def fuse_backward(method: str, u: np.ndarray, context: np.ndarray, k: int, grad: np.ndarray) -> np.ndarray:
    """The gradient ``[N, D]`` with respect to ``u`` of ``sum(grad * fuse(method, u, context, k))``."""
    grad = np.asarray(grad, F32)
    if method == "add":
        return grad
    if method == "multiply":
        return (grad * context).astype(F32)
    z, w, centred, sigma, root = _attention_parts(u, context, k)
    g = grad.reshape(z.shape)  # [N, M, D], the gradient of the attended tokens w @ z
    dw = g @ z.transpose(0, 2, 1)
    dz = w.transpose(0, 2, 1) @ g
    ds = w * (dw - (dw * w).sum(-1, keepdims=True)) / root  # softmax, then the 1/sqrt(D) scale
    dz += (ds + ds.transpose(0, 2, 1)) @ z
    # per-token normalisation z = c / (sigma + eps), c = t - mean(t), sigma = sqrt(mean(c^2)); only token k
    dzk, ck, sk = dz[:, k], centred[:, k], sigma[:, k]
    d = ck.shape[-1]
    dc = dzk / (sk + EPS) - ck * (dzk * ck).sum(-1, keepdims=True) / (np.maximum(sk, 1e-30) * (sk + EPS) ** 2 * d)
    return (dc - dc.mean(-1, keepdims=True)).astype(F32)
