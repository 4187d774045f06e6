"""DMA closures (TLOAD, TSTORE, TLOADW, TLOADC, TSTOREC) and runs of loads as one gather.

A DMA closure takes the base register's value as its argument; the scratchpad extent is checked when it is built
(an extent outside becomes a closure that faults when executed), the main-memory extent when it runs, and the
checked main-memory view is kept per base value (up to ``_VIEWS``; main memory is never reallocated). TLOADW
decodes a word range once and keeps the pents while main memory holds the same words (the simulator's ``decoded``
:class:`~pcc.runtime.tensor_base.ContentCache`). A run of consecutive TLOAD / TLOADC of one base register, several
into each scratchpad, is one gather per scratchpad (:func:`build_loads`, used by the block translator).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np
from numpy.lib.stride_tricks import as_strided

from pcc import isa
from pcc.backend.program import Instruction
from pcc.isa import WORD_MAX, Op, cdiv
from pcc.pentary import to_digits
from pcc.runtime import kernels
from pcc.runtime.faults import Fault
from pcc.runtime.tensor_base import _raiser, _span

if TYPE_CHECKING:
    from pcc.runtime.simulator import Simulator

_VIEWS = 64  # main-memory views a DMA closure keeps, one per base register value
_DIRECT_WORDS = 1 << 14  # TLOADW tiles of up to this many words keep their decoded pents in the compiled loop


def _dram_check(i: int, what: str, b: int, lo: int, hi: int, size: int) -> None:
    if b + lo < 0 or b + hi >= size:
        raise Fault(i, f"{what} main-memory access {b + lo}..{b + hi} outside main memory (0..{size - 1})")


def _rows(rows: int, cols: int, stride: int) -> tuple[int, int, bool]:
    """(lowest offset, highest offset, contiguous?) of a rows x cols access with a row stride."""
    lo = min(0, (rows - 1) * stride)
    hi = max(0, (rows - 1) * stride) + cols - 1
    contiguous = rows == 1 or stride == cols
    return lo, hi, contiguous


def _row_view(mem: np.ndarray, b: int, rows: int, cols: int, stride: int) -> np.ndarray:
    """The ``rows x cols`` view of ``mem`` whose row ``r`` is ``mem[b + r*stride : b + r*stride + cols]``.

    The caller has checked that every element lies inside ``mem``; rows may overlap (stride 0 repeats one).
    Disjoint rows that end inside ``mem`` are a reshaped slice (a few times cheaper than ``as_strided``).
    """
    if stride >= cols and b + rows * stride <= mem.size:
        return mem[b : b + rows * stride].reshape(rows, stride)[:, :cols]
    step = mem.itemsize
    if mem.flags.c_contiguous:  # as below, without as_strided's overhead (numpy checks the extent)
        if stride >= 0:
            return np.ndarray((rows, cols), mem.dtype, mem, b * step, (stride * step, step))
        first = b + (rows - 1) * stride
        return np.ndarray((rows, cols), mem.dtype, mem, first * step, (-stride * step, step))[::-1]
    if stride >= 0:
        return as_strided(mem[b:], shape=(rows, cols), strides=(stride * step, step))
    first = b + (rows - 1) * stride  # the lowest row, read in reverse
    return as_strided(mem[first:], shape=(rows, cols), strides=(-stride * step, step))[::-1]


def _load_rows(
    sim: Simulator, i: int, what: str, dst: np.ndarray, dname: str, d: int, off: int, rows: int, cols: int, stride: int
) -> Callable:
    n = rows * cols
    bad = _span(dname, d, n, dst.size)
    if bad:
        return _raiser(i, f"{what}: {bad}", True)
    if n == 0:
        return lambda base: None
    sim.touch_spad(dname, d, n)
    mem = sim.mem
    size = mem.size
    lo, hi, contiguous = _rows(rows, cols, stride)
    target = dst[d : d + n] if contiguous else dst[d : d + n].reshape(rows, cols)
    views: dict[int, np.ndarray] = {}  # base -> the checked source view (main memory is never reallocated)

    def dma_in(base: int) -> None:
        v = views.get(base)
        if v is None:
            b = base + off
            if b + lo < 0 or b + hi >= size:
                _dram_check(i, what, b, lo, hi, size)
            v = mem[b : b + n] if contiguous else _row_view(mem, b, rows, cols, stride)
            if len(views) < _VIEWS:
                views[base] = v
        target[...] = v

    return dma_in


_LOAD_RUN = 4  # consecutive loads (TLOAD, TLOADC) of one base register, this many per scratchpad, run as one gather
_LOAD_RUN_MAX = 1 << 12  # words in all up to which they are gathered (larger ones copy their rows faster one by one)


def build_loads(sim: Simulator, items: list[tuple[int, Instruction]]) -> Callable | None:
    """One closure for consecutive TLOAD / TLOADC instructions of one base register (their closures' effect, in
    order), or None where that does not pay (fewer than ``_LOAD_RUN`` into a scratchpad, more than ``_LOAD_RUN_MAX``
    words, a static fault among them).

    The loads only read main memory, so run in order they leave each scratchpad word written by any of them holding
    the word of the last load that writes it: per scratchpad one gather (``take``) of main memory with index arrays
    worked out once, straight into the scratchpad where the written words are one range. It runs when every load's
    main-memory extent lies inside main memory (checked as one range per base value, and kept per base value like
    the DMA closures' views); otherwise the loads' own closures run one by one, so the faulting one faults after
    those before it have loaded.
    """
    if len(items) < _LOAD_RUN or any(ins.op == Op.TLOAD and sim.forwarded(i) is not None for i, ins in items):
        return None
    fns = [sim._tensor_fn(i) for i, _ in items]  # built first: their static checks, touch_spad, the fallback
    targets: dict[str, tuple[np.ndarray, list[np.ndarray], list[np.ndarray]]] = {}
    lo, hi, total = 1 << 62, -(1 << 62), 0
    for _, ins in items:
        d, _rb, off, rows, cols, stride = ins.args
        name, spad = ("A", sim.spad_a) if ins.op == Op.TLOAD else ("C", sim.spad_c)
        n = rows * cols
        if _span(name, d, n, spad.size):
            return None
        if n == 0:
            continue
        total += n
        r_lo, r_hi, _ = _rows(rows, cols, stride)
        lo, hi = min(lo, off + r_lo), max(hi, off + r_hi)
        src = (np.arange(rows, dtype=np.int64)[:, None] * stride + np.arange(cols, dtype=np.int64) + off).reshape(-1)
        ent = targets.setdefault(name, (spad, [], []))
        ent[1].append(np.arange(d, d + n, dtype=np.int64))
        ent[2].append(src)
    if total > _LOAD_RUN_MAX or not targets or min(len(t[1]) for t in targets.values()) < _LOAD_RUN:
        return None
    plans = []  # (scratchpad view written whole, or None; destination indices; source offsets from the base)
    for spad, dsts, srcs in targets.values():
        dst, src = np.concatenate(dsts)[::-1], np.concatenate(srcs)[::-1]
        dst, last = np.unique(dst, return_index=True)  # the first in reverse order: the last load's word wins
        src = src[last]
        whole = spad[dst[0] : dst[-1] + 1] if dst[-1] - dst[0] + 1 == dst.size else None
        plans.append((whole, spad, dst.astype(np.intp), src))
    mem = sim.mem
    size = mem.size
    index: dict[int, list[np.ndarray]] = {}  # base -> the source indices of each plan (checked extent)

    def dma_in_run(base: int) -> None:
        idx = index.get(base)
        if idx is None:
            if base + lo < 0 or base + hi >= size:  # some load faults: the loads one by one
                for fn in fns:
                    fn(base)
                return  # pragma: no cover - one of them faulted
            idx = [(src + base).astype(np.intp) for _, _, _, src in plans]
            if len(index) < _VIEWS:
                index[base] = idx
        for (whole, spad, dst, _), ix in zip(plans, idx, strict=True):
            if whole is not None:
                mem.take(ix, out=whole, mode="clip")  # every index checked: no buffered bounds-checking take
            else:
                spad[dst] = mem.take(ix, mode="clip")

    return dma_in_run


def _store_rows(
    sim: Simulator,
    i: int,
    what: str,
    src: np.ndarray,
    sname: str,
    s: int,
    off: int,
    rows: int,
    cols: int,
    stride: int,
    saturate: bool,
) -> Callable:
    n = rows * cols
    bad = _span(sname, s, n, src.size)
    if bad:
        return _raiser(i, f"{what}: {bad}", True)
    if n == 0:
        return lambda base: None
    mem = sim.mem
    size = mem.size
    flags = sim._flags
    lo, hi, contiguous = _rows(rows, cols, stride)
    overlapping = rows > 1 and abs(stride) < cols
    dirty = sim._dirty
    sflat = src[s : s + n]
    srows = sflat.reshape(rows, cols)
    views: dict[int, tuple[np.ndarray | None, int, int]] = {}  # base -> (checked destination view, lo, hi)

    def dma_out(base: int) -> None:
        ent = views.get(base)
        if ent is None:
            b = base + off
            if b + lo < 0 or b + hi >= size:
                _dram_check(i, what, b, lo, hi, size)
            if contiguous:
                view = mem[b : b + n]
            elif overlapping:
                view = None
            else:
                view = _row_view(mem, b, rows, cols, stride)
            ent = (view, b + lo, b + hi)
            if len(views) < _VIEWS:
                views[base] = ent
        view, wlo, whi = ent
        if wlo < dirty[0]:  # the written range of main memory, for reset (Simulator.touch)
            dirty[0] = wlo
        if whi > dirty[1]:
            dirty[1] = whi
        v = sflat
        if saturate and (int(v.max()) > WORD_MAX or int(v.min()) < -WORD_MAX):
            flags[3] = 1
            v = np.clip(v, -WORD_MAX, WORD_MAX)
        if contiguous:
            view[...] = v
        elif view is None:  # overlapping rows, in order: where rows overlap, the later one wins
            b = wlo - lo
            for r in range(rows):
                mem[b + r * stride : b + r * stride + cols] = v[r * cols : (r + 1) * cols]
        else:  # disjoint rows
            view[...] = srows if v is sflat else v.reshape(rows, cols)

    return dma_out


def _tload(sim: Simulator, i: int, a: int, rb: int, off: int, rows: int, cols: int, stride: int) -> Callable:
    part = sim.forwarded(i)  # forwarded: its reader reads the source in main memory; it loads only this part
    if part is not None:
        sim.touch_spad("A", a, rows * cols)
        lo, hi = part
        if hi <= lo:
            return lambda base: None
        return _load_rows(sim, i, "TLOAD", sim.spad_a, "A", lo, off + lo - a, 1, hi - lo, hi - lo)
    return _load_rows(sim, i, "TLOAD", sim.spad_a, "A", a, off, rows, cols, stride)


def _tstore(sim: Simulator, i: int, rb: int, off: int, a: int, rows: int, cols: int, stride: int) -> Callable:
    return _store_rows(sim, i, "TSTORE", sim.spad_a, "A", a, off, rows, cols, stride, False)


def _tloadc(sim: Simulator, i: int, c: int, rb: int, off: int, rows: int, cols: int, stride: int) -> Callable:
    return _load_rows(sim, i, "TLOADC", sim.spad_c, "C", c, off, rows, cols, stride)


def _tstorec(sim: Simulator, i: int, rb: int, off: int, c: int, rows: int, cols: int, stride: int) -> Callable:
    return _store_rows(sim, i, "TSTOREC", sim.spad_c, "C", c, off, rows, cols, stride, True)


def _tloadw(sim: Simulator, i: int, w: int, rb: int, off: int, count: int) -> Callable:
    spw = sim.spad_w
    bad = _span("W", w, count, spw.size)
    if bad:
        return _raiser(i, f"TLOADW: {bad}", True)
    if count == 0:
        return lambda base: None
    sim.touch_spad("W", w, count)
    mem = sim.mem
    size = mem.size
    nw = cdiv(count, isa.WORD_PENTS)
    lookup = sim.decoded.lookup

    def dma_w(base: int) -> None:
        b = base + off
        if b < 0 or b + nw > size:
            _dram_check(i, "TLOADW", b, 0, nw - 1, size)
        spw[w : w + count] = lookup(("TLOADW", b, nw), mem[b : b + nw], decode_words)[:count]

    if sim.fused and nw <= _DIRECT_WORDS:
        # the compiled loop with the pents of its own last words (a larger tile keeps the shared cache, which
        # compares megabytes of words faster than it decodes them)
        kern = kernels.loop("tloadw")
        wcopy, pents, state = np.zeros(nw, np.int64), np.zeros(nw * isa.WORD_PENTS, np.int8), np.zeros(1, np.int64)

        def dma_w_loop(base: int) -> None:
            b = base + off
            if b < 0 or b + nw > size or kern(mem, b, nw, spw, w, count, WORD_MAX, wcopy, pents, state) < 0:
                dma_w(base)  # a fault, or a word outside the 16-pent range: the numpy path reports it

        return dma_w_loop
    return dma_w


def _pent_table() -> np.ndarray:
    """Row ``u`` (0 <= u < 625) holds the four balanced pents of ``u - word_max(4)``, viewed as one uint32."""
    u = np.arange(_CHUNK, dtype=np.int64)
    t = np.empty((_CHUNK, _CHUNK_PENTS), dtype=np.int8)
    for j in range(_CHUNK_PENTS):
        t[:, j] = u % 5 - 2
        u //= 5
    return t.view(np.uint32).reshape(-1)


_CHUNK_PENTS = 4
_CHUNK = 5**_CHUNK_PENTS
_PENTS4 = _pent_table()


def decode_words(words: np.ndarray) -> np.ndarray:
    """The pents of 16-pent words, little-endian, flat int8: ``to_digits(words, 16).reshape(-1)``, faster.

    ``u = v + word_max(16)`` has the ordinary base-5 digits ``d + 2`` of ``v``'s balanced digits ``d`` (the offset
    is 2 in every digit), so ``u`` is cut into four base-625 chunks and each chunk's four pents are read from a
    625-entry table. A word outside the 16-pent range raises ``to_digits``'s ValueError.
    """
    v = np.asarray(words, dtype=np.int64).reshape(-1)
    if v.size and (int(v.min()) < -WORD_MAX or int(v.max()) > WORD_MAX):
        to_digits(v, isa.WORD_PENTS)  # raises
    out = np.empty((v.size, isa.WORD_PENTS // _CHUNK_PENTS), dtype=np.uint32)
    u = v + WORD_MAX
    for j in range(out.shape[1] - 1):
        q = u // _CHUNK
        np.take(_PENTS4, u - q * _CHUNK, out=out[:, j])
        u = q
    np.take(_PENTS4, u, out=out[:, -1])
    return out.view(np.int8).reshape(-1)
