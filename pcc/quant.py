"""The shared pentary weight quantizer: weights -> pents in {-2, -1, 0, +1, +2} times a float scale.

A weight tensor ``w`` is approximated by ``s * q`` with ``q`` an int8 array of pents and ``s`` a float32 scale,
one per output channel (``per_channel=True``, the slices along ``axis``) or one for the whole tensor.  Rounding
is to nearest (ties to even) and saturating: ``q = clip(rint(w / s), -2, 2)``.  Both the trainer (forward pass of
quantization-aware training) and the compiler's ``quantize`` pass use this module, so a trained model and its
compiled form agree on every pent.

Choosing the scale
------------------
``method="max"``
    ``s = max|w| / 2``: the largest weight maps to exactly +-2.  Simple, but one outlier stretches the grid and
    most weights then round to 0 or +-1; it is kept for comparison.

``method="mse"`` (default)
    ``s`` minimises the reconstruction error ``||w - s q(s)||^2`` in two stages, both vectorised over channels:

    1. *Search.*  With ``u = |w| / max|w|`` in [0, 1], a rounding assignment is fixed by its level-1 threshold
       ``t`` (``|q| >= 1`` iff ``u >= t``) and its level-2 threshold ``3 t``.  The magnitudes are binned once
       (``B`` bins, one ``bincount`` per statistic) and the tail counts and tail sums give, for every candidate
       ``t = k / B`` at once, ``A = <|w|, |q|>`` and ``Q = <q, q>``.  For a fixed assignment the best scale is
       ``A / Q`` and the error is ``||w||^2 - A^2 / Q``, so the search keeps the ``k`` with the largest
       ``A^2 / Q`` (``B`` is up to 1536, i.e. thresholds resolved to 1/1536 of the channel's range; scales
       larger than ``max|w| / 2`` are candidates too).
    2. *Refinement.*  A few alternating (Lloyd) steps on the exact data, ``q = clip(rint(w / s))`` then
       ``s = <w, q> / <q, q>``; neither half-step can increase the error, so the result is never worse than
       the search's.

    The search is O(N + C B) and the refinement O(N) per step, so the cost is a handful of passes over the
    weights; the work is done in column blocks of about 4 M elements to bound memory on large tensors.
    ``bench/bench_trainer.py`` measures it on 25 M weights.

A channel whose weights are all zero gets scale 1.0 and pents 0.  The result is deterministic (no randomness,
fixed reduction order) and the returned scale is float32: a ``[C]`` array per channel, a NumPy float32 scalar
per tensor.
"""

from __future__ import annotations

import numpy as np

__all__ = ["PENT_LEVELS", "quantize_weights", "quantize_with_scale", "dequantize", "reconstruction_error"]

PENT_LEVELS = (-2, -1, 0, 1, 2)

_BLOCK = 1 << 22  # elements per processing block (about 16 MB of float32)
_MAX_BINS = 1536  # a multiple of 3; thresholds resolved to 1/_MAX_BINS of a channel's max |w|
_MAG_CACHE = 1 << 26  # the refinement keeps |w| of tensors up to this size (256 MB of float32) for all steps
_TAIL_CHUNK = 1 << 17  # elements of the search's per-row tables handled at a time (rows x bins)


def _as_rows(w: np.ndarray, per_channel: bool, axis: int) -> np.ndarray:
    """View ``w`` as [C, N]: one row per output channel (or a single row per tensor)."""
    if not per_channel or w.ndim == 0:
        return w.reshape(1, -1)
    if axis == 0:
        return w.reshape(w.shape[0], -1)
    return np.moveaxis(w, axis, 0).reshape(w.shape[axis], -1)


def _track_small(rows: np.ndarray, scale: np.ndarray, steps: int) -> tuple[np.ndarray, np.ndarray]:
    """Refinement from a known scale for a tensor that fits one block, with the fewest NumPy calls (the
    per-step path of quantization-aware training).  Returns (scale, max|w| per row)."""
    a = np.abs(rows)
    amax = a.max(axis=1)
    s = np.where(scale > 0, scale, amax * np.float32(0.5))
    s = np.where(s > 0, s, np.float32(1.0)).astype(np.float32)
    for _ in range(steps):
        q = a * (np.float32(1.0) / s)[:, None]
        np.rint(q, out=q)
        np.minimum(q, np.float32(2.0), out=q)
        a_dot = np.einsum("ij,ij->i", a, q)
        q_dot = np.einsum("ij,ij->i", q, q)
        s = np.where(q_dot > 0, a_dot / np.maximum(q_dot, np.float32(1.0)), s).astype(np.float32)
    return s, amax


def _blocks(n_rows: int, n_cols: int) -> list[tuple[slice, slice]]:
    """(rows, columns) blocks of about ``_BLOCK`` elements: whole rows when rows are short, else column runs."""
    if n_cols >= _BLOCK or n_rows == 1:
        width = min(n_cols, _BLOCK)
        return [(slice(i, i + 1), slice(j, j + width)) for i in range(n_rows) for j in range(0, n_cols, width)]
    height = max(1, _BLOCK // max(n_cols, 1))
    return [(slice(i, min(i + height, n_rows)), slice(0, n_cols)) for i in range(0, n_rows, height)]


def _max_scales(rows: np.ndarray) -> np.ndarray:
    amax = np.zeros(rows.shape[0], dtype=np.float32)
    for rs, cs in _blocks(*rows.shape):
        np.maximum(amax[rs], np.abs(rows[rs, cs]).max(axis=1), out=amax[rs])
    return amax


def _histogram(block: np.ndarray, safe: np.ndarray, n_bins: int) -> np.ndarray:
    """Per row of ``block``, how many magnitudes fall in each of ``n_bins`` equal bins of [0, ``safe``] (and one
    more bin for ``|w| == safe``): ``[rows, n_bins + 1]`` counts."""
    h, width = block.shape[0], n_bins + 1
    u = np.abs(block)
    u *= (np.float32(n_bins) / safe)[:, None]  # in place: one temporary the size of the block, then the bins
    b = u.astype(np.int32)
    np.minimum(b, n_bins, out=b)
    if h > 1:
        b += (np.arange(h, dtype=np.int32) * width)[:, None]
    return np.bincount(b.ravel(), minlength=h * width).reshape(h, width)


def _search(rows: np.ndarray, amax: np.ndarray) -> np.ndarray:
    """Stage 1 of ``mse``: the best threshold assignment per row, returned as its optimal scale A / Q.

    Magnitudes are binned on ``n_bins`` equal bins of [0, max|w|]; a bin's sum of magnitudes is taken as its
    count times its centre (the refinement works on the exact values afterwards).
    """
    n_rows, n_cols = rows.shape
    cap = _MAX_BINS if n_rows == 1 else _MAX_BINS // 2
    n_bins = 3 * min(cap // 3, max(32, -(-n_cols // 6)))  # about two weights a bin, 96..1536 bins
    width = n_bins + 1  # bin n_bins holds u == 1 exactly
    safe = np.where(amax > 0, amax, 1).astype(np.float32)
    step = max(1, _TAIL_CHUNK // width)
    whole_rows = n_rows > 1 and n_cols < _BLOCK  # then each chunk of rows bins its own weights (cache-sized)
    if not whole_rows:
        counts = np.zeros((n_rows, width), dtype=np.float64)
        for rs, cs in _blocks(n_rows, n_cols):
            counts[rs] += _histogram(rows[rs, cs], safe[rs], n_bins)
    centres = np.minimum((np.arange(width) + 0.5) / n_bins, 1.0)
    # k = 1..half is the level-1 threshold bin; level 2 starts at bin 3k, past the end (no weight at level 2)
    # for the k beyond n3.  The tails run on chunks of rows, so that their temporaries stay small.
    half = n_bins // 2
    n3 = (width - 1) // 3
    scale = np.empty(n_rows, dtype=np.float32)
    for r0 in range(0, n_rows, step):
        r1 = min(n_rows, r0 + step)
        c = _histogram(rows[r0:r1], safe[r0:r1], n_bins).astype(np.float64) if whole_rows else counts[r0:r1]
        # tail[:, j] = total over bins >= j
        tail_c = np.cumsum(c[:, ::-1], axis=1)[:, ::-1]
        tail_s = np.cumsum((c * centres)[:, ::-1], axis=1)[:, ::-1]  # sums in units of max|w|
        a_dot = tail_s[:, 1 : half + 1].copy()  # <|w|, |q|>: level-2 weights count twice
        a_dot[:, :n3] += tail_s[:, 3 : 3 * n3 + 1 : 3]
        q_dot = tail_c[:, 1 : half + 1].copy()  # <q, q> = n1 + 4 n2
        q_dot[:, :n3] += 3.0 * tail_c[:, 3 : 3 * n3 + 1 : 3]
        gain = np.where(q_dot > 0, a_dot * a_dot / np.maximum(q_dot, 1.0), -1.0)
        best = np.argmax(gain, axis=1)
        rr = np.arange(r1 - r0)
        a_best, q_best = a_dot[rr, best], q_dot[rr, best]
        scale[r0:r1] = np.where(q_best > 0, a_best / np.maximum(q_best, 1.0), 0.5) * amax[r0:r1]
    return scale


def _refine(rows: np.ndarray, scale: np.ndarray, steps: int) -> np.ndarray:
    """Stage 2 of ``mse``: Lloyd steps s <- <|w|, |q|> / <q, q> with q the saturating rounding at s."""
    scale = scale.astype(np.float32).copy()
    blocks = _blocks(*rows.shape)
    # |w| once for all steps (up to _MAG_CACHE elements; beyond, per step and block)
    mags = [np.abs(rows[rs, cs]) for rs, cs in blocks] if len(blocks) == 1 or rows.size <= _MAG_CACHE else None
    buf = None
    for _ in range(steps):
        inv = np.float32(1.0) / np.where(scale > 0, scale, 1).astype(np.float32)
        if len(blocks) == 1:  # small tensor: one block, fewest calls
            a = mags[0]
            q = a * inv[:, None]
            np.rint(q, out=q)
            np.minimum(q, 2.0, out=q)
            a_dot = np.einsum("ij,ij->i", a, q).astype(np.float64)
            q_dot = np.einsum("ij,ij->i", q, q).astype(np.float64)
        else:
            a_dot = np.zeros(rows.shape[0], dtype=np.float64)
            q_dot = np.zeros(rows.shape[0], dtype=np.float64)
            for i, (rs, cs) in enumerate(blocks):
                a = mags[i] if mags is not None else np.abs(rows[rs, cs])
                if buf is None or buf.size < a.size:
                    buf = np.empty(a.size, dtype=np.float32)
                q = np.multiply(a, inv[rs, None], out=buf[: a.size].reshape(a.shape))  # one buffer, every block
                np.rint(q, out=q)
                np.minimum(q, 2.0, out=q)
                a_dot[rs] += np.einsum("ij,ij->i", a, q)
                q_dot[rs] += np.einsum("ij,ij->i", q, q)
        new = np.where(q_dot > 0, a_dot / np.maximum(q_dot, 1.0), scale).astype(np.float32)
        if np.array_equal(new, scale):
            break
        scale = new
    return scale


def quantize_with_scale(
    w: np.ndarray, scale: np.ndarray | float, per_channel: bool = True, axis: int = 0
) -> np.ndarray:
    """Pents ``clip(rint(w / scale), -2, 2)`` as int8; ``scale`` is per channel along ``axis`` or a scalar."""
    w = np.asarray(w, dtype=np.float32)
    s = np.asarray(scale, dtype=np.float32)
    if per_channel and s.ndim == 1 and w.ndim > 0:
        shape = [1] * w.ndim
        shape[axis] = -1
        s = s.reshape(shape)
    t = np.asarray(w / s)
    np.rint(t, out=t)
    np.clip(t, -2, 2, out=t)  # in place: no temporaries the size of the weight
    return t.astype(np.int8)


def dequantize(q: np.ndarray, scale: np.ndarray | float, axis: int = 0) -> np.ndarray:
    """``q * scale`` as float32, a ``[C]`` scale broadcast along ``axis``."""
    q = np.asarray(q, dtype=np.float32)
    s = np.asarray(scale, dtype=np.float32)
    if s.ndim == 1 and q.ndim > 0:
        shape = [1] * q.ndim
        shape[axis] = -1
        s = s.reshape(shape)
    return q * s


def reconstruction_error(w: np.ndarray, q: np.ndarray, scale: np.ndarray | float, axis: int = 0) -> float:
    """``||w - scale * q||^2`` (float64 sum)."""
    diff = np.asarray(w, dtype=np.float64) - dequantize(q, scale, axis).astype(np.float64)
    return float(np.sum(diff * diff))


def quantize_weights(
    w: np.ndarray,
    per_channel: bool = True,
    axis: int = 0,
    method: str = "mse",
    *,
    refine_steps: int = 4,
    init_scale: np.ndarray | float | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Quantize ``w`` to pents; returns ``(q, scale)`` with ``q`` int8 in -2..2 and ``w ~= q * scale``.

    ``per_channel`` gives one float32 scale per slice along ``axis`` (shape ``[w.shape[axis]]``), otherwise a
    float32 scalar.  Non-finite weights raise ValueError (except on the ``init_scale`` fast path).
    ``method`` is ``"mse"`` (error-minimising search plus ``refine_steps`` alternating steps) or ``"max"``
    (``max|w| / 2``).  ``init_scale`` (``mse`` only) skips the search and starts the refinement
    from a known scale, e.g. the previous training step's: quantization-aware training tracks the optimum this
    way at a fraction of the cost.  See the module docstring.
    """
    if method not in ("mse", "max"):
        raise ValueError(f"unknown quantization method {method!r} (expected 'mse' or 'max')")
    w = np.ascontiguousarray(w, dtype=np.float32)
    if per_channel and w.ndim > 0:
        if not -w.ndim <= axis < w.ndim:
            raise ValueError(f"axis {axis} out of range for a {w.ndim}-d tensor")
        axis = axis % w.ndim
    per_channel = per_channel and w.ndim > 0
    rows = _as_rows(w, per_channel, axis)
    if method == "mse" and init_scale is not None and 0 < rows.size <= _BLOCK:
        start = np.asarray(init_scale, dtype=np.float32).reshape(-1)
        if start.shape[0] != rows.shape[0]:
            start = np.full(rows.shape[0], start[0] if start.size else 0.0, dtype=np.float32)
        scale, amax = _track_small(rows, start, refine_steps)
        scale = np.where(amax > 0, scale, np.float32(1.0)).astype(np.float32)
    elif rows.size == 0:
        scale = np.ones(rows.shape[0], dtype=np.float32)
    else:
        amax = _max_scales(rows)
        if not np.all(np.isfinite(amax)):
            raise ValueError("cannot quantize weights that contain NaN or infinity")
        if method == "max":
            scale = amax / 2
        elif init_scale is not None:
            start = np.broadcast_to(np.asarray(init_scale, dtype=np.float32).reshape(-1), amax.shape)
            start = np.where(start > 0, start, amax / 2)
            scale = _refine(rows, start, refine_steps)
        else:
            scale = _refine(rows, _search(rows, amax), refine_steps)
        scale = np.where(amax > 0, scale, 1.0).astype(np.float32)
    q = quantize_with_scale(w, scale if per_channel else scale[0], per_channel, axis)
    if per_channel:
        return q, scale
    return q, np.float32(scale[0])


WIDE_MAX = 12  # two pents p_hi + p_lo / 5 with p_hi, p_lo in -2..2: the 25 levels k / 5, k in -12..12


def _wide_search(rows: np.ndarray, amax: np.ndarray, candidates: int) -> np.ndarray:
    """The wide quantizer's search: per row, the step (in units of max|w|) whose rounding assignment has the
    least error at its own best scale, among ``candidates`` steps ``f / 12``, ``f`` in [0.25, 1.2] (and 1).

    As in :func:`_search`, magnitudes are binned once (up to ``_MAX_BINS`` equal bins of [0, max|w|], exact sums
    per bin); a step's assignment is fixed by its 12 edges ``(j - 0.5) step`` (``|k| >= j`` above edge ``j``), each
    taken at its nearest bin boundary, so the tail counts and sums give ``A = <|w|, |k|>`` and ``Q = <k, k>`` of
    every candidate at once, scored by ``A^2 / Q``; the winner's scale ``A / Q`` is returned."""
    n_rows, n_cols = rows.shape
    n_bins = min(_MAX_BINS, max(240, 24 * n_cols))  # short rows (depthwise kernels) need fewer bins
    width = n_bins + 1
    safe = np.where(amax > 0, amax, 1).astype(np.float32)
    f = np.concatenate([[1.0], np.linspace(0.25, 1.2, candidates)])
    levels = np.arange(1, WIDE_MAX + 1)
    edges = np.rint((levels - 0.5)[None, :] * f[:, None] / WIDE_MAX * n_bins).astype(np.intp)  # [cand, 12]
    edges = np.minimum(edges, width)
    odd = (2 * levels - 1).astype(np.float64)  # k^2 - (k - 1)^2: <k, k> counts a weight at level j this often
    step = np.empty(n_rows, dtype=np.float64)
    chunk = max(1, _TAIL_CHUNK // width)
    for r0 in range(0, n_rows, chunk):
        r1 = min(n_rows, r0 + chunk)
        block = np.abs(rows[r0:r1]) * (1.0 / safe[r0:r1].astype(np.float64))[:, None]  # u in [0, 1]
        h = r1 - r0
        b = np.minimum((block * n_bins).astype(np.intp), n_bins) + (np.arange(h) * width)[:, None]
        cnt = np.bincount(b.ravel(), minlength=h * width).reshape(h, width).astype(np.float64)
        tot = np.bincount(b.ravel(), weights=block.ravel(), minlength=h * width).reshape(h, width)
        zero = np.zeros((h, 1))
        tail_c = np.concatenate([np.cumsum(cnt[:, ::-1], axis=1)[:, ::-1], zero], axis=1)  # [h, width + 1]
        tail_s = np.concatenate([np.cumsum(tot[:, ::-1], axis=1)[:, ::-1], zero], axis=1)
        a_dot = tail_s[:, edges].sum(axis=2)  # [h, cand]
        q_dot = (tail_c[:, edges] * odd).sum(axis=2)
        gain = np.where(q_dot > 0, a_dot * a_dot / np.maximum(q_dot, 1.0), -1.0)
        best = np.argmax(gain, axis=1)
        rr = np.arange(h)
        a_best, q_best = a_dot[rr, best], q_dot[rr, best]
        step[r0:r1] = np.where(q_best > 0, a_best / np.maximum(q_best, 1.0), 1.0 / WIDE_MAX)
    return step


def quantize_weights_wide(
    w: np.ndarray, per_channel: bool = True, axis: int = 0, *, candidates: int = 128, refine_steps: int = 4
) -> tuple[np.ndarray, np.ndarray]:
    """Quantize ``w`` to two pents per weight: ``w ~= s * (p_hi + p_lo / 5)``, ``p_hi, p_lo`` in -2..2.

    Returns ``(k, step)``: ``k = 5 p_hi + p_lo`` as int8 in -12..12 (every such integer has one balanced
    two-digit form, :func:`wide_digits`) and the float32 step ``s / 5`` per slice along ``axis`` (a scalar
    with ``per_channel=False``).  The 25 levels are a uniform grid, so the residual rule (``p_hi =
    clip(rint(w / s))``, ``p_lo = clip(rint(5 (w / s - p_hi)))``) is nearest rounding on it.  The step minimises
    ``||w - step k(step)||^2`` per channel: a binned search over ``candidates`` steps ``f max|w| / 12``, ``f``
    in [0.25, 1.2] (:func:`_wide_search`), then up to ``refine_steps`` Lloyd steps ``k <- clip(rint(w /
    step))``, ``step <- <w, k> / <k, k>`` on the exact weights (neither half-step can raise the error).
    Non-finite weights raise ValueError."""
    w = np.ascontiguousarray(w, dtype=np.float32)
    if not np.all(np.isfinite(w)):
        raise ValueError("cannot quantize weights that contain NaN or infinity")
    per_channel = per_channel and w.ndim > 0
    if per_channel:
        if not -w.ndim <= axis < w.ndim:
            raise ValueError(f"axis {axis} out of range for a {w.ndim}-d tensor")
        axis = axis % w.ndim
    rows = _as_rows(w, per_channel, axis)
    amax = np.abs(rows).max(axis=1).astype(np.float64) if rows.size else np.zeros(rows.shape[0])
    best = np.where(amax > 0, amax, 1.0) / WIDE_MAX
    if rows.size:
        best = _wide_search(rows, amax, candidates) * np.where(amax > 0, amax, 1.0)
        mags = np.abs(rows).astype(np.float64)
        for _ in range(refine_steps):
            k = np.minimum(np.rint(mags / best[:, None]), WIDE_MAX)
            kk = np.einsum("ij,ij->i", k, k)
            new = np.where(kk > 0, np.einsum("ij,ij->i", mags, k) / np.maximum(kk, 1), best)
            new = np.where(new > 0, new, best)
            if np.array_equal(new, best):
                break
            best = new
    step32 = np.where(amax > 0, best, 1.0 / WIDE_MAX).astype(np.float32)
    shape = [1] * w.ndim
    if per_channel:
        shape[axis] = -1
        s = step32.reshape(shape)
    else:
        s = step32[0]
    k = np.clip(np.rint(w / s), -WIDE_MAX, WIDE_MAX).astype(np.int8)
    return (k, step32) if per_channel else (k, np.float32(step32[0]))


def wide_digits(k: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The balanced base-5 digits of ``k`` in -12..12: ``(p_hi, p_lo)``, int8 in -2..2, ``k = 5 p_hi + p_lo``."""
    k = np.asarray(k, dtype=np.int16)
    if k.size and np.abs(k).max() > WIDE_MAX:
        raise ValueError(f"two-pent weights must lie in -{WIDE_MAX}..{WIDE_MAX}")
    lo = (k + 2) % 5 - 2
    return ((k - lo) // 5).astype(np.int8), lo.astype(np.int8)
