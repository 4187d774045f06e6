"""What the tensor instruction closures share: operand checks, exact dot products, the caches and buffers of one
simulator, and the window views of an HWC image (``runtime/tensor.py`` describes the closures).

* :func:`exact_dot`: an integer matrix product through float64 BLAS where the operand bounds make it exact, else
  int64; :func:`_absmax`: ``max |v|`` of an int64 operand in one pass;
* :class:`ContentCache`: values derived from memory contents (TLOADW's pents, CONV's weights in an engine's
  layout), used only while the source holds exactly what it held (compared on every use);
* :class:`Workspace`: scratch buffers reused from run to run (a fresh multi-megabyte array costs more in page
  faults than the arithmetic done on it);
* :func:`padded`, :func:`windows`, :func:`_strided`: a padded image and strided views of its windows.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from numpy.lib.stride_tricks import as_strided

from pcc.isa import conv_out
from pcc.runtime import kernels
from pcc.runtime.faults import Fault

EXACT_F64 = 2**53  # integers below this are exact in float64
_I64_MIN = np.iinfo(np.int64).min
_I64_MAX = np.iinfo(np.int64).max
_SMALL_FILL = 1 << 14  # padded images up to this many elements are filled whole, then the interior copied
_SMALL = 1 << 12  # int64 operands up to this many elements get max |v| from one abs into a buffer and one reduction
_MAX, _MIN = np.maximum.reduce, np.minimum.reduce


def exact_dot(x: np.ndarray, w: np.ndarray, k: int) -> np.ndarray:
    """``x @ w`` of integer arrays (int64 activations, int8 pents), exact, as int64.

    ``x`` is ``[..., P, K]`` and ``w`` ``[..., K, Q]``. float64 BLAS is used when ``max|x| * max|w| * K < 2**53``
    (then every product and partial sum is an integer exactly representable in float64, whatever the order of
    summation); otherwise int64 matmul.
    """
    if x.size == 0 or w.size == 0:
        shape = np.broadcast_shapes(x.shape[:-2], w.shape[:-2]) + (x.shape[-2], w.shape[-1])
        return np.zeros(shape, dtype=np.int64)
    amax = max(int(x.max()), -int(x.min()))
    wmax = max(int(w.max()), -int(w.min()))
    if amax * wmax * k < EXACT_F64:
        return np.matmul(x.astype(np.float64), w.astype(np.float64)).astype(np.int64)
    return np.matmul(x.astype(np.int64, copy=False), w.astype(np.int64))


def _absmax(shape: tuple[int, ...], fused: bool = False) -> Callable[[np.ndarray], int]:
    """A function giving ``max |v|`` (a Python int, exact) of an int64 array ``v`` of ``shape`` (not empty).

    Up to ``_SMALL`` elements: ``abs`` into a buffer of its own and one ``maximum`` reduction over it read as
    uint64 (``abs(INT64_MIN)`` wraps to itself, whose bits read as uint64 are ``2**63``, its true magnitude), about
    half the cost of a ``max`` and a ``min`` reduction on small arrays; larger ones get the two reductions (no extra
    pass writing memory), or with ``fused`` both in one compiled pass (:func:`kernels.extremes`).
    """
    if fused and int(np.prod(shape)) > _SMALL:

        def absmax_fused(v: np.ndarray) -> int:
            lo, hi = kernels.extremes(v)
            return hi if hi > -lo else -lo

        return absmax_fused
    if int(np.prod(shape)) <= _SMALL:
        buf = np.empty(shape, dtype=np.int64)
        ubuf = buf.view(np.uint64)

        def absmax_small(v: np.ndarray) -> int:
            np.abs(v, out=buf)
            return int(_MAX(ubuf, None))

        return absmax_small

    def absmax(v: np.ndarray) -> int:
        hi, lo = int(_MAX(v, None)), int(_MIN(v, None))
        return hi if hi > -lo else -lo

    return absmax


def _span(name: str, start: int, length: int, size: int) -> str | None:
    if length > 0 and (start < 0 or start + length > size):
        return f"scratchpad {name} access {start}..{start + length - 1} outside 0..{size - 1}"
    return None


def _first(*reasons: str | None) -> str | None:
    for r in reasons:
        if r is not None:
            return r
    return None


def _raiser(i: int, message: str, dma: bool) -> Callable:
    flt = Fault(i, message)
    if dma:

        def fault_dma(base: int) -> None:
            raise flt

        return fault_dma

    def fault() -> None:
        raise flt

    return fault


class ContentCache:
    """Values derived from the contents of memory (the pents TLOADW decodes from a word range), per simulator.

    An entry holds a copy of the source it was derived from and is used only while the source still holds exactly
    that (compared on every use: about 1 ns a word, against 10-60 ns a word to decode), so no write path (scalar
    stores, DMA, reset, direct writes to the arrays) can make it stale. At most ``limit`` bytes of derived values
    are kept (the source copies add half as much for pents); past that the cache is emptied and refills with what
    runs next.
    """

    def __init__(self, limit: int = 1 << 27) -> None:
        self.limit = limit
        self.nbytes = 0
        self.hits = 0
        self.misses = 0
        self._entries: dict[tuple, tuple[bytes | np.ndarray, object, int, tuple, np.dtype]] = {}

    def lookup(self, key: tuple, source: np.ndarray, derive: Callable[[np.ndarray], object]) -> object:
        """``derive(source)``, from the cache when ``source`` holds what it held when last derived under ``key``."""
        ent = self._entries.get(key)
        same = ent is not None and ent[3] == source.shape and ent[4] == source.dtype
        if source.nbytes >= _BIG_SOURCE and source.flags.c_contiguous:
            # megabytes: compared as uint64 words in place (a bytes copy of the source costs more in fresh pages)
            if same and isinstance(ent[0], np.ndarray) and np.array_equal(_words(ent[0]), _words(source)):
                self.hits += 1
                return ent[1]
            raw: bytes | np.ndarray = source.copy()
        else:
            # the source's bytes, compared as a bytes object: one copy and one memcmp, a tenth of array_equal's
            # overhead for small sources
            raw = source.tobytes()
            if same and isinstance(ent[0], bytes) and ent[0] == raw:
                self.hits += 1
                return ent[1]
        self.misses += 1
        value = derive(source)
        if ent is not None:
            del self._entries[key]
            self.nbytes -= ent[2]
        size = _nbytes(value)
        if size <= self.limit:
            if self.nbytes + size > self.limit:
                self.clear()
            self._entries[key] = (raw, value, size, source.shape, source.dtype)
            self.nbytes += size
        return value

    def clear(self) -> None:
        self._entries.clear()
        self.nbytes = 0

    def __len__(self) -> int:
        return len(self._entries)


_BIG_SOURCE = 1 << 16


def _words(a: np.ndarray) -> np.ndarray:
    """A C-contiguous array's bytes as uint64 words (uint8 when the size is not a multiple of 8)."""
    flat = a.reshape(-1).view(np.uint8)
    return flat.view(np.uint64) if flat.size % 8 == 0 else flat


def _nbytes(value: object) -> int:
    if isinstance(value, np.ndarray):
        return value.nbytes
    if isinstance(value, tuple):
        return sum(_nbytes(v) for v in value)
    return 0


_BLAS: list = []  # [numpy's BLAS thread controls] once looked up


def blas_controls() -> list:
    """threadpoolctl's thread controls of the BLAS libraries numpy has loaded (threadpoolctl comes with
    scikit-learn), looked up once; empty where there are none."""
    if not _BLAS:
        try:
            from threadpoolctl import ThreadpoolController
        except ImportError:
            _BLAS.append([])
        else:
            _BLAS.append(list(ThreadpoolController().select(user_api="blas").lib_controllers))
    return _BLAS[0]


class Workspace:
    """Scratch buffers the closures of one simulator reuse from run to run, one per (role, dtype).

    Instructions run one at a time and no closure keeps a view past its call, so a role's buffer is shared by
    every instruction. Reusing it spares the allocator: a fresh multi-megabyte array is new pages, and a page
    fault per 4 KiB costs more than the arithmetic done on them.
    """

    def __init__(self) -> None:
        self._bufs: dict[tuple[str, np.dtype], np.ndarray] = {}
        self._views: dict[tuple, np.ndarray] = {}  # (role, dtype as passed, shape) -> the view get returned

    def get(self, role: str, shape: tuple[int, ...], dtype: type | np.dtype) -> np.ndarray:
        """An uninitialised C-contiguous array of ``shape`` (a view of the role's buffer, grown as needed)."""
        view = self._views.get((role, dtype, shape))
        if view is not None:  # the same view as last time (a buffer that grows drops every remembered view)
            return view
        key = (role, np.dtype(dtype))
        n = 1
        for d in shape:
            n *= d
        buf = self._bufs.get(key)
        if buf is None or buf.size < n:
            buf = np.empty(max(n, 1), dtype=key[1])
            self._bufs[key] = buf
            self._views.clear()
        view = buf[:n].reshape(shape)
        self._views[(role, dtype, shape)] = view
        return view

    def clear(self) -> None:
        self._bufs.clear()
        self._views.clear()


def padded(
    x: np.ndarray, pads: tuple[int, int, int, int], fill: int, dtype: type | np.dtype, out: np.ndarray | None = None
) -> np.ndarray:
    """The HWC image ``x`` padded with ``fill`` by ``pads`` (top, left, bottom, right), as ``dtype``.

    Written into ``out`` (of the padded shape) when given; ``x`` itself when there is nothing to pad or convert.
    """
    pt, pl, pb, pr = pads
    if not (pt or pl or pb or pr) and x.dtype == dtype:
        return x
    ih, iw, ch = x.shape
    shape = (ih + pt + pb, iw + pl + pr, ch)
    xp = np.empty(shape, dtype=dtype) if out is None else out
    if xp.size <= _SMALL_FILL:  # one fill of the whole image costs less than four border writes
        xp.fill(fill)
    else:
        if pt:
            xp[:pt] = fill
        if pb:
            xp[pt + ih :] = fill
        if pl:
            xp[pt : pt + ih, :pl] = fill
        if pr:
            xp[pt : pt + ih, pl + iw :] = fill
    xp[pt : pt + ih, pl : pl + iw] = x
    return xp


def windows(
    x: np.ndarray,
    kh: int,
    kw: int,
    sh: int,
    sw: int,
    pads: tuple[int, int, int, int],
    fill: int,
    out: np.ndarray | None = None,
) -> np.ndarray:
    """The ``(oh, ow, C, kh, kw)`` view of the windows of an HWC image ``x`` padded with ``fill``.

    ``pads`` is (top, left, bottom, right); window ``(oy, ox)`` covers rows ``oy*sh - top ..`` and columns
    ``ox*sw - left ..`` of the input, as in the table's window rule. The padded image is written into ``out``
    when given (its shape, ``x``'s dtype or another one to convert to).
    """
    pt, pl, pb, pr = pads
    ih, iw, ch = x.shape
    oh, ow = conv_out(ih, pt, pb, kh, sh), conv_out(iw, pl, pr, kw, sw)
    xp = padded(x, pads, fill, x.dtype if out is None else out.dtype, out)
    s0, s1, s2 = xp.strides
    return _strided(xp, (oh, ow, ch, kh, kw), (s0 * sh, s1 * sw, s2, s0, s1))


def _strided(base: np.ndarray, shape: tuple[int, ...], strides: tuple[int, ...]) -> np.ndarray:
    """A read-only view of ``base`` (whose extent it must stay within) with ``shape`` and byte ``strides``.

    Built directly on a C-contiguous ``base`` (``sliding_window_view`` and ``as_strided`` cost tens of microseconds,
    much of a small instruction's time); numpy checks the extent against ``base``'s memory.
    """
    if base.flags.c_contiguous and base.size and all(shape):
        v = np.ndarray(shape, base.dtype, base, 0, strides)
    else:
        v = as_strided(base, shape, strides)
    v.flags.writeable = False
    return v
