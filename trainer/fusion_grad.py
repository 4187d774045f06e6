"""The projected fusions (``add``, ``multiply``, ``attention``) as a function of the text modality alone.

A learned text embedding changes only the text modality's projected vector ``u`` (``[N, D]``); the other
modalities are fixed, so each sample's fused vector is a function of ``u`` and a fixed *context* computed once:

* ``add``: the sum of the other projections (``[N, D]``); fused = ``u + context``.
* ``multiply``: the product of the other projections (``[N, D]``, ones without any); fused = ``u * context``.
* ``attention``: all projections stacked as tokens (``[N, M, D]``, the text token's slot ``k`` left to ``u``);
  fused = the tokens ``z``, normalised per token, through scaled dot-product self-attention, flattened (the
  same arithmetic as :meth:`MultimodalFusion._fuse_raw`).  Parameter-free, ``softmax(z z^T / sqrt(D)) z``; or
  with learned ``params = (Wq, Wk, Wv)`` (each ``[D, D]``), ``softmax((z Wq)(z Wk)^T / sqrt(D)) (z Wv)``, which
  is the parameter-free map when all three are the identity.

:func:`fuse` is the forward map and :func:`fuse_backward` its gradient with respect to ``u`` (and, given
``param_grads``, adds the gradients with respect to the learned matrices into them).  ``k = None``: no token
is replaced (the whole stack is fixed; only the learned matrices have a gradient).
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


Params = tuple[np.ndarray, ...] | list[np.ndarray] | None


def _attention_parts(u: np.ndarray | None, context: np.ndarray, k: int | None, params: Params = None) -> tuple:
    tokens = np.array(context, dtype=F32)
    if k is not None:
        tokens[:, k] = u
    centred = tokens - tokens.mean(-1, keepdims=True)
    sigma = np.sqrt((centred * centred).mean(-1, keepdims=True))
    z = centred / (sigma + EPS)
    root = F32(np.sqrt(tokens.shape[-1]))
    if params is None:
        q = kk = v = z
    else:
        q, kk, v = (z @ np.asarray(p, F32) for p in params)
    scores = q @ kk.transpose(0, 2, 1) / root
    scores -= scores.max(-1, keepdims=True)
    w = np.exp(scores)
    w /= w.sum(-1, keepdims=True)
    return z, w, centred, sigma, root, q, kk, v


def fuse(method: str, u: np.ndarray | None, context: np.ndarray, k: int | None, params: Params = None) -> np.ndarray:
    """The raw (unstandardised) fused vectors ``[N, output_dim]`` from the text projection ``u``."""
    if method == "add":
        return (u + context).astype(F32)
    if method == "multiply":
        return (u * context).astype(F32)
    z, w, *_, v = _attention_parts(u, context, k, params)
    return (w @ v).reshape(len(z), -1).astype(F32)


def fuse_backward(
    method: str,
    u: np.ndarray | None,
    context: np.ndarray,
    k: int | None,
    grad: np.ndarray,
    params: Params = None,
    param_grads: list[np.ndarray] | None = None,
) -> np.ndarray:
    """The gradient ``[N, D]`` with respect to ``u`` of ``sum(grad * fuse(method, u, context, k, params))``
    (an empty array when ``k`` is None); with ``params`` and ``param_grads``, the gradients with respect to
    ``Wq``, ``Wk``, ``Wv`` are added into ``param_grads``."""
    grad = np.asarray(grad, F32)
    if method == "add":
        return grad
    if method == "multiply":
        return (grad * context).astype(F32)
    z, w, centred, sigma, root, q, kk, v = _attention_parts(u, context, k, params)
    g = grad.reshape(z.shape)  # [N, M, D], the gradient of the attended tokens w @ v
    dw = g @ v.transpose(0, 2, 1)
    dv = w.transpose(0, 2, 1) @ g
    ds = w * (dw - (dw * w).sum(-1, keepdims=True)) / root  # softmax, then the 1/sqrt(D) scale
    dq = ds @ kk
    dk = ds.transpose(0, 2, 1) @ q
    if params is None:
        dz = dq + dk + dv
    else:
        wq, wk, wv = (np.asarray(p, F32) for p in params)
        dz = dq @ wq.T + dk @ wk.T + dv @ wv.T
        if param_grads is not None:
            z2 = z.reshape(-1, z.shape[-1])
            for acc, d in zip(param_grads, (dq, dk, dv), strict=True):
                acc += z2.T @ d.reshape(-1, d.shape[-1])
    if k is None:
        return np.zeros((len(z), 0), F32)
    # per-token normalisation z = c / (sigma + eps), c = t - mean(t), sigma = sqrt(mean(c^2)); only token k
    dzk, ck, sk = dz[:, k], centred[:, k], sigma[:, k]
    d = ck.shape[-1]
    dc = dzk / (sk + EPS) - ck * (dzk * ck).sum(-1, keepdims=True) / (np.maximum(sk, 1e-30) * (sk + EPS) ** 2 * d)
    return (dc - dc.mean(-1, keepdims=True)).astype(F32)
