"""Exact integer matrix products on an int8 GEMM, for the simulator's MATMUL, MATVEC and CONV.

The tensor unit multiplies N-pent activations (int64 here, up to 18 bits for the compiler's default 8 pents) by
pents (-2..2). float64 BLAS computes that exactly while every partial sum stays below 2**53 (see
:func:`pcc.runtime.tensor.exact_dot`), at float64 speed. An int8 x int8 -> int32 GEMM (``torch._int_mm``, which
runs oneDNN's VNNI/AVX-512 kernels on the CPU) does several times more multiply-adds per second and is exact as
long as no int32 sum overflows. Activations wider than 8 bits are cut into balanced base-256 digits::

    x = sum_j d_j * 256**j,   d_j in -128..127,   j < n

so ``x @ w = sum_j (d_j @ w) * 256**j``: one int8 GEMM with the digit as the leading row index, then a
recombination. Every digit product is bounded by ``128 * max|w| * K``, which must stay below 2**31 (the caller
checks :func:`fits_int32`); the recombination runs in int32 where the result's bound allows it, in int64
otherwise.

The digits come from one add and one xor: with ``OFF = 0x80...80`` (n bytes of 0x80), ``x + OFF`` lies in
``0 .. 256**n - 1`` exactly when ``-0x80..80 <= x <= 0x7F..7F`` (:func:`digits_for` picks n), its bytes are
``d_j + 128``, and ``(x + OFF) ^ OFF`` holds the two's-complement bytes of the ``d_j`` in its low n bytes (little
endian), which a strided int8 view reads with no further arithmetic.

The same boundary holds torch's float32 convolution (:func:`f32_conv`), which the CONVs of few input channels
take past float32's bound, cut into two exact parts (``runtime/products.py``): every partial sum an integer below
2**24, so any order of addition is exact; it too is checked once against int64 arithmetic (:func:`conv_exact`).

torch is optional (the ``torch`` extra). :func:`available` imports it on first use and checks the kernel on
worst-case operands against int64 arithmetic before trusting it; without torch, or if that check fails, the
simulator keeps its float64/int64 path, with the same results.
"""

from __future__ import annotations

import numpy as np

INT32_MAX = 2**31 - 1
MAX_DIGITS = 7  # the bytes below an int64's sign byte
MIN_MACS = 1 << 20  # a program whose largest product is smaller gains less than torch's import costs
# torch threads a product runs on. One: the simulator's products are a few to a few hundred million
# multiply-adds, where a second thread gains little on an idle machine and, when another process holds a core,
# torch's spinning thread pool makes a product tens of times slower (a 9,408 x 144 x 24 product on a loaded
# two-core machine: 0.19 ms on one thread, 7.9 ms on two). The caller's own thread setting is restored after.
THREADS = 1

_state: dict[str, object] = {}


def offset(n: int) -> int:
    """``0x80...80`` with n bytes: the bias that turns n balanced base-256 digits into plain bytes."""
    return int.from_bytes(b"\x80" * n, "little")


def digits_for(amax: int) -> int:
    """The fewest balanced base-256 digits that represent every integer of magnitude up to ``amax``."""
    n = 1
    while amax > 256**n - 1 - offset(n):  # n digits reach -0x80..80 .. 0x7F..7F
        n += 1
    return n


def fits_int32(wmax: int, k: int) -> bool:
    """Whether a digit product (``|d| <= 128``, ``|w| <= wmax``, K terms) cannot overflow int32."""
    return 128 * wmax * k <= INT32_MAX


def available() -> bool:
    """Whether the int8 GEMM can be used here: torch imports and its kernel passes the exactness check."""
    if "ok" not in _state:
        _state["ok"], _state["why"] = _probe()
    return bool(_state["ok"])


def faster() -> bool:
    """Whether the int8 GEMM beats float64 BLAS here, so that the simulator picks it by default: timed once on a
    product of a typical layer's size, the int8 side doing the three digit rows of 8-pent activations.  CPUs
    without int8 dot-product instructions (AVX2 only) run torch's int8 kernel tens of times slower than BLAS."""
    if "fast" not in _state:  # decided before the exactness check (which is slow where the kernel is)
        try:
            _state["fast"] = _int8_dot_instructions() and _time_probe()
        except Exception:  # noqa: BLE001 - no torch, or its kernel fails: not faster
            _state["fast"] = False
    return bool(_state["fast"]) and available()


def _int8_dot_instructions() -> bool:
    """False on an x86 CPU that /proc/cpuinfo shows without VNNI or AMX (then torch need not even be imported);
    True where that cannot be told (the timing decides)."""
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as f:
            flags = next((line.split(":", 1)[1].split() for line in f if line.startswith("flags")), None)
    except OSError:
        return True
    if flags is None:  # not x86
        return True
    return bool({"avx512_vnni", "avx_vnni", "amx_int8"} & set(flags))


def _time_probe(m: int = 128, k: int = 576, n: int = 64, digits: int = 3) -> bool:
    import time

    rng = np.random.default_rng(0)
    a8 = rng.integers(-128, 128, size=(digits * m, k), dtype=np.int8)
    w8 = rng.integers(-2, 3, size=(k, n), dtype=np.int8)
    af, wf = rng.integers(-(2**17), 2**17, size=(m, k)).astype(np.float64), w8.astype(np.float64)
    o = np.empty((digits * m, n), np.int32)

    def best(fn) -> float:  # noqa: ANN001
        for _ in range(2):  # the first calls pay for lazy set-up (torch's kernels, BLAS's buffers)
            fn()
        t = float("inf")
        for _ in range(10):  # the best of ten: three were a coin toss on a quiet two-core machine
            t0 = time.perf_counter()
            fn()
            t = min(t, time.perf_counter() - t0)
        return t

    # both sides as Simulator.run runs them: the int8 product on THREADS torch threads (int_mm), BLAS on one
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # pragma: no cover - scikit-learn brings it
        return best(lambda: int_mm(a8, w8, o)) < best(lambda: af @ wf)
    with threadpool_limits(1):
        return best(lambda: int_mm(a8, w8, o)) < best(lambda: af @ wf)


def unavailable_reason() -> str:
    """Why :func:`available` is false ('' when it is true)."""
    available()
    return str(_state["why"])


def _probe() -> tuple[bool, str]:
    try:
        import torch
    except ImportError:
        return False, "torch is not installed (pip install 'pcc[torch]')"
    if not hasattr(torch, "_int_mm"):
        return False, f"torch {torch.__version__} has no int8 matrix product (torch._int_mm)"
    # Worst cases for the int32 accumulation and for kernels that widen one operand to unsigned bytes (digits at
    # -128 and 127 against weights of both signs), odd sizes, a transposed operand.
    rng = np.random.default_rng(0)
    cases = []
    for m, k, n in ((1, 1, 1), (3, 7, 5), (17, 4099, 9), (64, 300, 33)):
        a = rng.choice(np.array([-128, 127, -1, 0, 1], np.int8), size=(m, k))
        cases.append((a, rng.integers(-2, 3, size=(k, n), dtype=np.int8)))
    cases.append((np.full((2, 1 << 16), -128, np.int8), np.full((1 << 16, 3), 2, np.int8)))
    try:
        for a, w in cases:
            want = a.astype(np.int64) @ w.astype(np.int64)
            for operand in (w, np.ascontiguousarray(w.T).T):
                if not np.array_equal(int_mm(a, operand), want):
                    return False, "torch's int8 matrix product was not exact on this machine"
    except Exception as e:  # noqa: BLE001 - any failure means: do not use it
        return False, f"torch's int8 matrix product failed: {e}"
    return True, ""


def int_mm(a: np.ndarray, w: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """``a @ w`` of int8 matrices as int32 (``out``: an int32 array of the result's shape, written in place).

    The caller guarantees that no sum overflows int32 (:func:`fits_int32`).
    """
    import torch

    ta, tw = torch.from_numpy(_canonical(a, False)), torch.from_numpy(_canonical(w, True))
    threads = torch.get_num_threads()
    if threads != THREADS:
        torch.set_num_threads(THREADS)
    try:
        if out is None:
            return torch._int_mm(ta, tw).numpy()
        torch._int_mm(ta, tw, out=torch.from_numpy(out))
    finally:
        if threads != THREADS:
            torch.set_num_threads(threads)
    return out


def conv_weights(w: np.ndarray):  # noqa: ANN201 - a torch tensor
    """The weights ``w`` (``[oc, kh, kw, ic]``, integers) as the float32 ``[oc, ic, kh, kw]`` tensor, channels-last,
    that :func:`f32_conv` takes."""
    import torch

    t = torch.from_numpy(np.ascontiguousarray(w.transpose(0, 3, 1, 2), dtype=np.float32))
    return t.contiguous(memory_format=torch.channels_last)


def f32_conv(images: np.ndarray, weights, stride: tuple[int, int]) -> np.ndarray | None:  # noqa: ANN001
    """torch's float32 convolution (oneDNN's kernels) of the padded HWC ``images`` (``[n, hp, wp, ic]`` float32) by
    :func:`conv_weights` at ``stride``, without padding: ``[n, oh, ow, oc]`` float32. Exact for integer operands
    whose every partial sum the caller has bounded below 2**24, since every product and sum is then an integer
    float32 holds, in any order and blocking. None, having computed nothing, where that cannot be trusted here:
    the kernel failed :func:`conv_exact`'s check, or a precision setting lets oneDNN round float32 more coarsely
    (``torch.backends.mkldnn``'s ``fp32_precision`` other than ``"none"``/``"ieee"``)."""
    import torch

    if not conv_exact() or not _ieee_conv(torch):
        return None
    return _conv2d(images, weights, stride)


def _ieee_conv(torch) -> bool:  # noqa: ANN001
    mk = torch.backends.mkldnn
    return all(getattr(obj, "fp32_precision", "none") in ("none", "ieee") for obj in (mk, getattr(mk, "conv", None)))


def conv_exact() -> bool:
    """Whether torch's float32 convolution gives the exact integers here: checked once, on operands whose sums
    come within a few units of 2**24, against int64 arithmetic, for the shapes that select different kernels
    (1 and 3 and 4 input channels, 3x3 at strides 1 and 2, 7x7 at stride 2, one and two images)."""
    if "conv" not in _state:
        _state["conv"] = _conv_probe()
    return bool(_state["conv"])


def _conv_probe() -> bool:
    try:
        import torch

        if not _ieee_conv(torch):
            return False
        rng = np.random.default_rng(0)
        for n, ic, oc, k, st in ((1, 3, 16, 3, 2), (2, 3, 16, 7, 2), (1, 4, 8, 3, 1), (2, 1, 24, 3, 1)):
            w = rng.integers(-2, 3, size=(oc, k, k, ic))
            w[0] = 2  # an output whose sum of |w| is the largest possible, every input at the bound
            top = (2**24 - 1) // int(np.abs(w).reshape(oc, -1).sum(axis=1).max())
            x = rng.integers(-top, top + 1, size=(n, 12, 12, ic))
            x[:, :k, :k] = top
            got = _conv2d(x.astype(np.float32), conv_weights(w), (st, st))
            cols = np.lib.stride_tricks.sliding_window_view(x, (k, k), axis=(1, 2))[:, ::st, ::st]
            want = np.einsum("nhwcyx,oyxc->nhwo", cols, w)  # int64
            if not np.array_equal(got.astype(np.int64), want):
                return False
        return True
    except Exception:  # noqa: BLE001 - any failure means: do not use it
        return False


def _conv2d(images: np.ndarray, weights, stride: tuple[int, int]) -> np.ndarray:  # noqa: ANN001
    import torch

    threads = torch.get_num_threads()
    if threads != THREADS:
        torch.set_num_threads(THREADS)
    try:
        x = torch.from_numpy(images).permute(0, 3, 1, 2)  # NCHW sizes, channels-last strides: no copy
        y = torch.nn.functional.conv2d(x, weights, stride=stride)
    finally:
        if threads != THREADS:
            torch.set_num_threads(threads)
    return y.permute(0, 2, 3, 1).contiguous().numpy()  # channels-last already: a view


def _canonical(m: np.ndarray, transposed_ok: bool) -> np.ndarray:
    """``m`` itself if its strides are a row-major (or, allowed, column-major) matrix's, else a row-major copy.

    numpy calls a matrix with a dimension of 1 contiguous whatever that dimension's stride, and the kernel takes
    the strides as leading dimensions."""
    r, c = m.shape
    s0, s1 = m.strides
    if s1 == 1 and s0 == c:
        return m
    if transposed_ok and s0 == 1 and s1 == r and r > 1 and c > 1:
        return m
    return np.array(m, order="C")


def dot(x: np.ndarray, w: np.ndarray, amax: int, wl1: int) -> np.ndarray:
    """``x @ w`` exactly, as int64: ``x`` int64 ``[m, k]`` with ``|x| <= amax``, ``w`` int8 ``[k, n]`` whose columns'
    sums of ``|w|`` are at most ``wl1``. The caller has checked :func:`fits_int32` and the digit count."""
    m, k = x.shape
    nd = digits_for(amax)
    off = offset(nd)
    xd = x + off
    xd ^= off
    d = np.ndarray((nd, m, k), np.int8, xd, 0, (1, xd.strides[0], xd.strides[1]))  # d[j, i, l]: digit j of x[i, l]
    r = int_mm(np.ascontiguousarray(d).reshape(nd * m, k), w)
    out = np.empty((m, w.shape[1]), np.int64)
    recombine(r.reshape(nd, m, -1), out, amax * wl1, 128 * wl1)
    return out


def recombine(r: np.ndarray, out: np.ndarray, bound: int, rbound: int, add: bool = False) -> None:
    """``out[...] = sum_j r[j] * 256**j`` (``+=`` with ``add``) for the digit products ``r`` (int32, digit first).

    ``out`` has ``r[0]``'s shape (int64, or a view of it). ``bound`` bounds ``|result|`` and ``rbound`` the digit
    products. The Horner steps ``t_j = r_j + 256 * t_(j+1)`` are bounded by ``bound + rbound`` and their shifts by
    ``bound + 2 * rbound``; when that fits int32 they run in place in ``r`` (which they overwrite), otherwise in
    int64.
    """
    n = r.shape[0]
    if n > 1 and bound + 2 * rbound <= INT32_MAX:
        for j in range(n - 1, 0, -1):
            np.left_shift(r[j], 8, out=r[j])
            r[j - 1] += r[j]
    elif n > 1:
        t = r[n - 1].astype(np.int64)
        for j in range(n - 2, -1, -1):
            t <<= 8
            t += r[j]
        if add:
            out += t
        else:
            out[...] = t
        return
    if add:
        out += r[0]
    else:
        out[...] = r[0]


__all__ = [
    "INT32_MAX",
    "MAX_DIGITS",
    "MIN_MACS",
    "THREADS",
    "available",
    "conv_exact",
    "conv_weights",
    "digits_for",
    "dot",
    "f32_conv",
    "fits_int32",
    "int_mm",
    "offset",
    "recombine",
    "unavailable_reason",
]
