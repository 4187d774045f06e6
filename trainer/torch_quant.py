"""The mse scale search of :mod:`pcc.quant` in torch, on the tensor's device (for the torch engine's training).

:func:`search_scale` is :func:`pcc.quant.quantize_weights` (``method="mse"``) step for step: the binned
threshold search over every rounding threshold, then alternating refinement steps; :func:`track_scale` is its
``init_scale`` path (refinement from the previous step's scale).  :class:`RowPlan` and :func:`track_rows` are
that refinement for many tensors at once: their rows laid end to end in one flat buffer and reduced by a fixed
tree of gathers and row sums, so one training step refines every layer's scales in a constant number of
operations (the torch engine's per-step path).  All are deterministic (integer bin counts, fixed-order
reductions, no atomics), so every rank of a distributed run derives the same scales from the same weights.
The reductions run in another order than NumPy's, so a scale can differ from :mod:`pcc.quant`'s in its last
bits; the model file's pents and scales always come from :mod:`pcc.quant` itself.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

__all__ = ["search_scale", "track_scale", "track_rows", "RowPlan", "max_scale", "rows_of"]

_MAX_BINS = 1536  # as pcc.quant


def rows_of(w: Any, per_channel: bool) -> Any:
    """``w`` as ``[C, N]``: one row per output channel (axis 0), or one row for the whole tensor."""
    return w.reshape(w.shape[0], -1) if per_channel and w.dim() > 0 else w.reshape(1, -1)


def _shaped(s: Any, per_channel: bool, w: Any) -> Any:
    return s if per_channel and w.dim() > 0 else s.reshape(())


def max_scale(w: Any, per_channel: bool) -> Any:
    """``max|w| / 2`` per row (1 for an all-zero row)."""
    import torch

    amax = rows_of(w, per_channel).abs().amax(dim=1)
    return _shaped(torch.where(amax > 0, amax / 2, torch.ones_like(amax)), per_channel, w)


def track_scale(w: Any, scale: Any, per_channel: bool, steps: int = 2) -> Any:
    """Refinement from a known scale, as ``pcc.quant.quantize_weights(..., init_scale=scale,
    refine_steps=steps)``: ``q = min(rint(|w| / s), 2)``, ``s = <|w|, q> / <q, q>``, ``steps`` times."""
    import torch

    rows = rows_of(w, per_channel)
    a = rows.abs()
    amax = a.amax(dim=1)
    s = scale.reshape(-1).expand(rows.shape[0])
    s = torch.where(s > 0, s, amax * 0.5)
    s = torch.where(s > 0, s, torch.ones_like(s))
    for _ in range(steps):
        q = torch.round(a * (1.0 / s)[:, None]).clamp_(max=2.0)
        a_dot = (a * q).sum(dim=1)
        q_dot = (q * q).sum(dim=1)
        s = torch.where(q_dot > 0, a_dot / q_dot.clamp(min=1.0), s)
    return _shaped(torch.where(amax > 0, s, torch.ones_like(s)), per_channel, w)


def _search(a: Any, amax: Any) -> Any:
    """The best threshold assignment per row of magnitudes ``a``, as its optimal scale (pcc.quant._search)."""
    import torch

    n_rows, n_cols = a.shape
    cap = _MAX_BINS if n_rows == 1 else _MAX_BINS // 2
    n_bins = 3 * min(cap // 3, max(32, -(-n_cols // 6)))
    width = n_bins + 1
    safe = torch.where(amax > 0, amax, torch.ones_like(amax))
    # n_bins / max as a true float32 division, as NumPy (a Python number over a tensor is a reciprocal times
    # the number in torch, which can put the largest weight one bin lower)
    b = (a * (torch.full_like(safe, float(n_bins)) / safe)[:, None]).to(torch.int64).clamp_(max=n_bins)
    b += (torch.arange(n_rows, device=a.device) * width)[:, None]
    counts = torch.bincount(b.reshape(-1), minlength=n_rows * width).reshape(n_rows, width).double()
    centres = ((torch.arange(width, device=a.device, dtype=torch.float64) + 0.5) / n_bins).clamp(max=1.0)
    sums = counts * centres
    zero = torch.zeros((n_rows, 1), dtype=torch.float64, device=a.device)
    tail_c = torch.cat([counts.flip(1).cumsum(1).flip(1), zero], dim=1)
    tail_s = torch.cat([sums.flip(1).cumsum(1).flip(1), zero], dim=1)
    k = torch.arange(1, n_bins // 2 + 1, device=a.device)
    k3 = (3 * k).clamp(max=width)
    a_dot = tail_s[:, k] + tail_s[:, k3]
    q_dot = tail_c[:, k] + 3.0 * tail_c[:, k3]
    gain = torch.where(q_dot > 0, a_dot * a_dot / q_dot.clamp(min=1.0), torch.full_like(q_dot, -1.0))
    best = gain.argmax(dim=1, keepdim=True)
    a_best, q_best = a_dot.gather(1, best)[:, 0], q_dot.gather(1, best)[:, 0]
    scale = torch.where(q_best > 0, a_best / q_best.clamp(min=1.0), torch.full_like(q_best, 0.5))
    return (scale * amax.double()).float()


def search_scale(w: Any, per_channel: bool, refine_steps: int = 4) -> Any:
    """The error-minimising scale of ``pcc.quant.quantize_weights(w, per_channel, 0, "mse")``, on ``w``'s
    device: the threshold search, then ``refine_steps`` refinement steps with float64 sums."""
    import torch

    rows = rows_of(w.float(), per_channel)
    if rows.numel() == 0:
        return _shaped(torch.ones(rows.shape[0], device=w.device), per_channel, w)
    a = rows.abs()
    amax = a.amax(dim=1)
    if not bool(torch.isfinite(amax).all()):
        raise ValueError("cannot quantize weights that contain NaN or infinity")
    scale = _search(a, amax)
    for _ in range(refine_steps):
        inv = 1.0 / torch.where(scale > 0, scale, torch.ones_like(scale))
        q = torch.round(a * inv[:, None]).clamp_(max=2.0)
        a_dot = (a * q).sum(dim=1).double()
        q_dot = (q * q).sum(dim=1).double()
        new = torch.where(q_dot > 0, a_dot / q_dot.clamp(min=1.0), scale.double()).float()
        if torch.equal(new, scale):
            break
        scale = new
    return _shaped(torch.where(amax > 0, scale, torch.ones_like(scale)), per_channel, w)


class RowPlan:
    """How the rows of several tensors are reduced together, one value per row, in a fixed order.

    The tensors' rows (``[C, K]`` each, :func:`rows_of`) are laid out by :meth:`chunks` as one matrix of
    ``width`` columns: every row padded with zeros to a multiple of ``width`` and cut into chunks, rows and tensors
    in order.  A reduction takes each chunk's sum (or maximum) along its columns, then each level of ``levels``
    gathers the previous results ``width`` at a time within a row (the row's last group padded with a zero at
    the end of the vector) until one value per row is left.  Every step is a row reduction of a dense matrix, so
    the result does not depend on scheduling.  ``chunk_row`` is the row of each chunk; ``shapes`` the ``(C, K)``
    of each tensor.
    """

    def __init__(self, shapes: Sequence[tuple[int, int]], device: Any = None, width: int = 32) -> None:
        import torch

        self.shapes = [(int(c), int(k)) for c, k in shapes]
        if not self.shapes or min(min(c, k) for c, k in self.shapes) < 1:
            raise ValueError("a row plan needs at least one tensor, each of at least one row and column")
        self.width = int(width)
        lens = np.concatenate([np.full(c, k, np.int64) for c, k in self.shapes])
        self.rows = int(lens.size)
        n_chunks = -(-lens // self.width)
        self.chunk_row = torch.from_numpy(np.repeat(np.arange(self.rows), n_chunks).astype(np.int32)).to(device)
        self.levels: list[Any] = []
        while int(n_chunks.max()) > 1:
            idx, n_chunks = self._level(n_chunks)
            self.levels.append(torch.from_numpy(idx).to(device))

    def _level(self, lens: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Index matrix of one level over a vector of rows of ``lens`` values end to end (its padding entry at
        ``sum(lens)``), and the number of groups of each row."""
        w = self.width
        n_chunks = -(-lens // w)
        starts = np.cumsum(lens) - lens
        first = np.cumsum(n_chunks) - n_chunks
        row = np.repeat(np.arange(lens.size), n_chunks)
        j = np.arange(int(n_chunks.sum())) - first[row]  # group number inside its row
        col = j[:, None] * w + np.arange(w)[None, :]
        idx = np.where(col < lens[row][:, None], starts[row][:, None] + col, int(lens.sum()))
        return idx.astype(np.int32), n_chunks

    def chunks(self, rows: Sequence[Any]) -> Any:
        """The ``[chunks, width]`` layout of the tensors' rows (each ``[C, K]`` of :attr:`shapes`)."""
        return chunk_rows(rows, self.width)

    def reduce(self, values: Any, op: str = "sum") -> Any:
        """One value per row from ``values``, one per chunk (``op``: ``sum`` or ``amax``)."""
        return _reduce(values, self.levels, op)


def chunk_rows(rows: Sequence[Any], width: int) -> Any:
    """Rows of several ``[C, K]`` matrices, each zero-padded to a multiple of ``width``, as one matrix of ``width``
    columns (the layout of :class:`RowPlan`)."""
    import torch

    parts = []
    for r in rows:
        pad = -r.shape[1] % width
        parts.append((torch.nn.functional.pad(r, (0, pad)) if pad else r).reshape(-1, width))
    return torch.cat(parts) if len(parts) > 1 else parts[0]


def _reduce(values: Any, levels: Sequence[Any], op: str) -> Any:
    """Level by level down to one value per row."""
    import torch

    for idx in levels:
        ext = torch.cat([values, values.new_zeros(1)])[idx]
        values = ext.sum(dim=1) if op == "sum" else ext.amax(dim=1)
    return values


def track_rows(chunks: Any, prev: Any, chunk_row: Any, *levels: Any, steps: int = 2) -> Any:
    """:func:`track_scale` for every row of a :class:`RowPlan` at once: ``chunks`` holds the weights'
    magnitudes in the plan's layout, ``prev`` the previous scale of every row; the refined scale of every row.
    A fixed number of operations whatever the number of tensors (one graph for ``torch.compile``)."""
    import torch

    amax = _reduce(chunks.amax(dim=1), levels, "amax")
    s = torch.where(prev > 0, prev, amax * 0.5)
    s = torch.where(s > 0, s, 1.0)
    for _ in range(steps):
        q = torch.round(chunks * (1.0 / s)[chunk_row][:, None]).clamp_(max=2.0)
        a_dot = _reduce((chunks * q).sum(dim=1), levels, "sum")
        q_dot = _reduce((q * q).sum(dim=1), levels, "sum")
        s = torch.where(q_dot > 0, a_dot / q_dot.clamp(min=1.0), s)
    return torch.where(amax > 0, s, 1.0)
