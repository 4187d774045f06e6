"""Emission of the broadcasting binary ops (:mod:`pcc.dialects.pent_binary`), registered in
:data:`pcc.backend.codegen.EMIT`.

Per tile of ``t`` result elements (in the result's memory order), each operand is loaded into its own buffer
of scratchpad A (buffer ``k`` at ``k * t``): an operand of the result's shape with one TLOAD, a broadcast one
with a gather of TLOAD blocks ``(rows, cols, stride)`` whose rows are contiguous runs of the operand's memory
and whose stride may be 0 (a per-channel ``s[c]`` of a channels-last image is one block: rows = pixels,
cols = channels, stride 0).  A constant operand lives in the parameter blob in its memory order and is
gathered the same way.  Then the op's vector sequence, and TSTORE.
"""

from __future__ import annotations

import numpy as np

from pcc import isa
from pcc.backend.codegen import EMIT, Mem, Reg, _Gen, _to_memory
from pcc.diagnostics import PccError
from pcc.dialects import pent_binary, pent_matmul, pent_move, pent_norm, pent_softmax
from pcc.ir import Operation, Value
from pcc.pentary import word_max

_U9 = isa.BY_MNEMONIC["TLOAD"].fields[-2].hi  # rows and cols of one TLOAD
_STRIDE = isa.BY_MNEMONIC["TLOAD"].fields[-1].hi


def memory_of(shape: tuple[int, ...]) -> np.ndarray:
    """For each memory word of a tensor of ``shape`` (channels last when 4-D), its logical flat index."""
    n = int(np.prod(shape, dtype=np.int64))
    return _to_memory(np.arange(n).reshape(shape)).ravel()


def gather_map(src_shape: tuple[int, ...], out_shape: tuple[int, ...]) -> np.ndarray:
    """For each memory word of the result, the memory word of the (broadcast) operand it reads."""
    n_src = int(np.prod(src_shape, dtype=np.int64))
    word_of = np.empty(n_src, dtype=np.int64)  # operand logical index -> its memory word
    word_of[memory_of(src_shape)] = np.arange(n_src)
    pad = (1,) * (len(out_shape) - len(src_shape)) + tuple(src_shape)
    logical = np.broadcast_to(np.arange(n_src).reshape(pad), out_shape).ravel()
    return word_of[logical[memory_of(out_shape)]]


def blocks(src: np.ndarray, limit: int | None = None) -> list[tuple[int, int, int, int]]:
    """Split a gather ``dst[j] = mem[src[j]]`` into TLOAD blocks ``(start, rows, cols, stride)``: block words
    ``start + i * cols + j`` read ``src[start] + i * stride + j``.

    Greedy from the front: a block's columns are the contiguous run of source words at its start (at most a
    field's maximum), its stride the step to the next word, and its rows as many further runs of that length
    at that step as follow (at most 65,536 words per block).  A row ``r`` fits when its first word is
    ``src[start] + r * stride`` and no run ends inside it, so each row costs one comparison of two arrays
    precomputed for the whole gather (where each run ends; for one-column blocks, where the step changes),
    not a comparison of its words.  With ``limit``, stops after that many blocks (for a caller that only needs
    to know whether there are fewer)."""
    src = np.asarray(src, dtype=np.int64)
    n = src.size
    if n == 0:
        return []
    d = np.diff(src)
    run_end = _segment_ends(np.flatnonzero(d != 1) + 1, n)  # where the contiguous run at each word ends
    step_end: np.ndarray | None = None  # where the constant step at each word ends (one-column blocks)
    room: np.ndarray | None = None  # words from each word to the end of its run (wider blocks)
    out = []
    i = 0
    while i < n:
        cols = min(int(run_end[i]) - i, _U9)
        rows = 1
        stride = 0
        if i + cols < n:
            stride = int(src[i + cols] - src[i])
            if abs(stride) <= _STRIDE:
                r_max = min((n - i) // cols, _U9, max(1, 65536 // cols))
                if cols == 1:  # rows while the step stays the same
                    if step_end is None:
                        step_end = _segment_ends(np.flatnonzero(d[1:] != d[:-1]) + 1, n - 1)
                    rows = min(int(step_end[i]) - i + 1, r_max)
                else:
                    if room is None:
                        room = run_end - np.arange(n)
                    rows = _rows(src, room, i, cols, stride, r_max)
            else:
                stride = 0
        out.append((i, rows, cols, stride if rows > 1 else 0))
        if len(out) == limit:
            break
        i += rows * cols
    return out


def _segment_ends(starts: np.ndarray, n: int) -> np.ndarray:
    """For each position of ``0 .. n-1`` cut at the increasing ``starts``, the end of its segment."""
    ends = np.append(starts, n)
    return np.repeat(ends, np.diff(ends, prepend=0))


def _rows(src: np.ndarray, room: np.ndarray, i: int, cols: int, stride: int, r_max: int) -> int:
    """How many rows of ``cols`` words at ``stride`` (at most ``r_max``) start a block at ``i``: row 0 fits by
    construction; rows are checked in growing batches so that a short block costs little."""
    r, batch = 1, 16
    while r < r_max:
        hi = min(r_max, r + batch)
        rr = np.arange(r, hi)
        at = i + cols * rr
        ok = (room[at] >= cols) & (src[at] == src[i] + stride * rr)
        if not ok.all():
            return r + int(np.argmin(ok))
        r, batch = hi, batch * 4
    return r_max


def _source(gen: _Gen, v: Value) -> int:
    """The main-memory word of an operand's first element: an activation's arena address, or the constant put
    into the parameter blob in its memory order."""
    if not v.is_weight:
        return gen.addr(v)
    data = np.asarray(gen.const(v), dtype=np.int64)
    return gen.p(gen.params.add_words(_to_memory(data).ravel())).off


def broadcast_loop(gen: _Gen, op: Operation, compute: object) -> None:
    """Per tile: gather each operand into its buffer, ``compute(cnt, t)`` (the result in buffer 0), TSTORE."""
    e = gen.e
    out_shape = op.results[0].type.shape
    total = op.results[0].type.size
    (t,) = op.attr("tile")
    ya = gen.addr(op.results[0])
    srcs = []
    for v in op.operands:
        base = _source(gen, v)
        srcs.append((base, None if v.type.shape == out_shape else gather_map(v.type.shape, out_shape)))
    for e0 in range(0, total, t):
        cnt = min(total, e0 + t) - e0
        for k, (base, src) in enumerate(srcs):
            if src is None:
                e("TLOAD", k * t, Mem(base + e0), 1, cnt, 0)
                continue
            part = src[e0 : e0 + cnt]
            for start, rows, cols, stride in blocks(part):
                e("TLOAD", k * t + start, Mem(base + int(part[start])), rows, cols, stride)
        compute(cnt, t)  # type: ignore[operator]
        e("TSTORE", Mem(ya + e0), 0, 1, cnt, 0)


@EMIT.register(pent_binary.Mul)
def emit_mul(gen: _Gen, op: Operation) -> None:
    """Per tile: gather a and b, EMUL, TSTORE."""
    pents = op.results[0].type.pents

    def compute(cnt: int, t: int) -> None:
        gen.e("EMUL", 0, 0, t, cnt, op.attr("mult"), op.attr("shift"), pents)

    broadcast_loop(gen, op, compute)


@EMIT.register(pent_binary.Eadd)
def emit_eadd(gen: _Gen, op: Operation) -> None:
    """Per tile: gather a and b, EADD; with ``neg``, first EMUL b by the vector of -1 (loaded once, buffer 2)
    with b's multiplier and shift into buffer 3."""
    (ma, mb), (sa, sb) = op.attr("mult"), op.attr("shift")
    pents = op.results[0].type.pents
    (t,) = op.attr("tile")
    neg = op.attr("neg")
    if neg:
        gen.e("TLOAD", 2 * t, gen.p(gen.params.add_words(np.array([-1]))), t, 1, 0)

    def compute(cnt: int, t: int) -> None:
        if neg:
            gen.e("EMUL", 3 * t, t, 2 * t, cnt, mb, sb, 16)
            gen.e("EADD", 0, 0, 3 * t, cnt, ma, sa, 1, 0, pents)
        else:
            gen.e("EADD", 0, 0, t, cnt, ma, sa, mb, sb, pents)

    broadcast_loop(gen, op, compute)


Blocks = list[tuple[int, int, int, int, int]]  # (A position, rows, cols, stride, main-memory word)


def _scatter_plan(src: np.ndarray, t: int, pos: np.ndarray, budget: int) -> list[tuple[Blocks, Blocks]] | None:
    """For a gather that reads every source word at most once: per chunk of at most ``t`` source words in
    increasing order, the TLOAD blocks that bring them into A (a run of consecutive words is one block; the
    slices of a concat's buffer one block of rows) and the TSTORE blocks that put them where the result needs
    them; None when some word is read twice or the plan takes at least ``budget`` instructions.  ``src[i]`` is
    the word that result word ``pos[i]`` reads."""
    order = np.argsort(src, kind="stable")
    s = src[order]
    if s.size > 1 and np.any(np.diff(s) == 0):
        return None
    plan = []
    count = 0
    for c0 in range(0, s.size, t):
        part, dst = s[c0 : c0 + t], pos[order[c0 : c0 + t]]
        loads = blocks(part, limit=max(budget - count, 1))
        count += len(loads)
        stores = blocks(dst, limit=max(budget - count, 1))
        count += len(stores)
        if count >= budget:
            return None
        plan.append(
            (
                [(a, r, c, st, int(part[a])) for a, r, c, st in loads],
                [(a, r, c, st, int(dst[a])) for a, r, c, st in stores],
            )
        )
    return plan


@EMIT.register(pent_move.Gather)
def emit_gather(gen: _Gen, op: Operation) -> None:
    """Per tile, the TLOAD blocks of the map (in the result's memory order, each entry the main-memory word it
    reads: an input's or, for a fill, one parameter word repeated with stride 0), then TSTORE.  When every
    source word is read at most once and it takes fewer instructions (a concat: one block per input), the other
    way round: per chunk of source words in their memory order the TLOAD blocks, then the TSTORE blocks that put
    its words where the result needs them; the words that producers already wrote in place (a concat's inputs
    that live in its buffer, plan-memory) are neither loaded nor stored."""
    e = gen.e
    y = op.results[0]
    idx = np.asarray(gen.const(op.operands[0]), dtype=np.int64)
    total = sum(x.type.size for x in op.operands[1:])
    if idx.size and (idx.min() < -1 or idx.max() >= total):
        raise PccError(f"{op.name}: map entries must lie in -1..{total - 1}", op.loc)
    words = []  # logical index into the concatenated inputs -> main-memory word (pitched inside a concat's buffer)
    for x in op.operands[1:]:
        if not x.is_weight:
            words.append(gen.words(x))
            continue
        word_of = np.empty(x.type.size, dtype=np.int64)
        word_of[memory_of(x.type.shape)] = np.arange(x.type.size)
        words.append(_source(gen, x) + word_of)
    has_fill = bool(np.any(idx < 0))
    fill = gen.p(gen.params.add_words(np.array([op.attr("fill")]))).off if has_fill else -1
    table = np.concatenate([*words, np.array([fill], np.int64)])
    src = table[np.where(idx < 0, table.size - 1, idx)][memory_of(y.type.shape)]
    (t,) = op.attr("tile")
    ya = gen.addr(y)
    gathers = [(e0, blocks(src[e0 : e0 + t])) for e0 in range(0, src.size, t)]
    keep = np.flatnonzero(src != ya + np.arange(src.size))  # not the words a producer wrote in place (plan-memory)
    budget = sum(1 + len(b) for _, b in gathers)
    plan = None if has_fill else _scatter_plan(src[keep], t, keep, budget)
    if plan is not None:  # fewer instructions than the gathers
        for loads, stores in plan:
            for start, rows, cols, stride, w in loads:
                e("TLOAD", start, Mem(w), rows, cols, stride)
            for start, rows, cols, stride, j in stores:
                e("TSTORE", Mem(ya + j), start, rows, cols, stride)
        return
    for e0, bl in gathers:
        part = src[e0 : e0 + t]
        for start, rows, cols, stride in bl:
            e("TLOAD", start, Mem(int(part[start])), rows, cols, stride)
        e("TSTORE", Mem(ya + e0), 0, 1, part.size, 0)


@EMIT.register(pent_softmax.Softmax)
def emit_softmax(gen: _Gen, op: Operation) -> None:
    """The steps of :mod:`pcc.dialects.pent_softmax` per tile of R rows: the row's K elements TLOADed column by
    column (A holds element k of row i at k * R + i, so POOL sees the rows as channels), the row vectors (max,
    reciprocal or log-sum) broadcast back over the row by a TSTORE into the result's words of the tile and a
    TLOAD with stride 0, the result TSTOREd column by column.  Buffers: X (the row, then D), B (a broadcast,
    then E, then the last broadcast), the row vectors, the constants and the tables."""
    e = gen.e
    x = op.operands[0]
    tables = op.operands[1:]
    k = x.type.shape[op.attr("axis")]
    k1, k2 = op.attr("k1"), op.attr("k2")
    kp = k1 * k2
    rows = x.type.size // k
    (t,) = op.attr("tile")
    X, B = 0, kp * t
    M, N, T, NEG, TWO = 2 * kp * t, 2 * kp * t + t, 2 * kp * t + 2 * t, 2 * kp * t + 3 * t, 2 * kp * t + 4 * t
    at = [TWO + t]
    for tv in tables[:-1]:
        at.append(at[-1] + tv.type.size)
    g = pent_softmax.NEWTON_BITS
    words = gen.params.add_words(np.array([-1, 2 ** (g + 1), -word_max(x.type.pents), 0]))
    e("TLOAD", NEG, gen.p(words), t, 1, 0)
    e("TLOAD", TWO, gen.p(words + 1), t, 1, 0)
    for a, tv in zip(at, tables, strict=True):
        e("TLOAD", a, gen.p(gen.params.add_words(gen.const(tv))), 1, tv.type.size, 0)
    sizes = [tv.type.size for tv in tables]
    xa, ya = gen.addr(x), gen.addr(op.results[0])
    frac, iters, log = op.attr("frac"), op.attr("iters"), op.attr("log")
    pents = op.results[0].type.pents
    for r0 in range(0, rows, t):
        r = min(rows, r0 + t) - r0
        bx, by = xa + r0 * k, ya + r0 * k
        for j in range(k):
            e("TLOAD", X + j * r, Mem(bx + j), r, 1, k)
        if kp > k:
            e("TLOAD", X + k * r, gen.p(words + 2), (kp - k) * r, 1, 0)
        e("POOL", M, X, k1, k2, r, k1, k2, 1, 1, 0, 0, 0, 0, 0)
        e("EMUL", M, M, NEG, r, 1, 0, 16)
        e("TSTORE", Mem(by), M, 1, r, 0)
        e("TLOAD", B, Mem(by), k, r, 0)
        e("EADD", X, X, B, k * r, 1, 0, 1, 0, 16)  # D
        src = X
        if op.attr("mult") is not None:
            e("EADD", B, X, X, k * r, op.attr("mult"), op.attr("shift"), 0, 0, 16)
            src = B
        e("TLUT", B, src, k * r, at[0], op.attr("lo"), sizes[0])  # E
        if kp > k:
            e("TLOAD", B + k * r, gen.p(words + 3), (kp - k) * r, 1, 0)
        e("POOL", M, B, k1, k2, r, k1, k2, 1, 1, 0, 0, 0, 0, 1)  # S
        e("EADD", T, M, M, r, op.attr("rmult"), op.attr("rshift"), 0, 0, 16)
        e("TLUT", N, T, r, at[1], 0, sizes[1])
        if log:
            e("TLUT", T, T, r, at[2], 0, sizes[2])  # la
            e("EMUL", M, M, N, r, 1, frac - g, 16)  # q
            e("EADD", M, M, M, r, op.attr("qmult"), op.attr("qshift"), 0, 0, 16)
            e("TLUT", M, M, r, at[3], op.attr("qlo"), sizes[3])  # lb
            e("EADD", T, T, M, r, 1, 0, 1, 0, 16)
            e("EMUL", T, T, NEG, r, 1, 0, 16)
            e("TSTORE", Mem(by), T, 1, r, 0)
            e("TLOAD", B, Mem(by), k, r, 0)
            e("EADD", X, X, B, k * r, op.attr("omult"), op.attr("oshift"), 1, 0, pents)
            out = X
        else:
            for _ in range(iters):
                e("EMUL", T, M, N, r, 1, frac - g, 16)
                e("EADD", T, T, TWO, r, 1, 0, 1, 0, 16)
                e("EMUL", N, N, T, r, 1, g, 16)
            e("EMUL", N, N, NEG, r, 1, 0, 16)
            e("TSTORE", Mem(by), N, 1, r, 0)
            e("TLOAD", X, Mem(by), k, r, 0)
            e("EMUL", B, B, X, k * r, op.attr("omult"), op.attr("oshift"), pents)
            out = B
        for j in range(k):
            e("TSTORE", Mem(by + j), out + j * r, r, 1, k)


@EMIT.register(pent_softmax.Reduce)
def emit_reduce(gen: _Gen, op: Operation) -> None:
    """Per tile of R rows: TLOAD per column (rows as channels), the pads set (0, or -word_max for the maximum),
    POOL mode 1 (0 for the maximum), EADD (the rescale), TSTORE of the R results."""
    e = gen.e
    x = op.operands[0]
    k = x.type.shape[op.attr("axis")]
    k1, k2 = op.attr("k1"), op.attr("k2")
    kp = k1 * k2
    rows = x.type.size // k
    (t,) = op.attr("tile")
    is_max = op.attr("kind") == "max"
    pad = -word_max(x.type.pents) if is_max else 0
    zero = gen.params.add_words(np.array([pad])) if kp > k else 0
    xa, ya = gen.addr(x), gen.addr(op.results[0])
    for r0 in range(0, rows, t):
        r = min(rows, r0 + t) - r0
        for j in range(k):
            e("TLOAD", j * r, Mem(xa + r0 * k + j), r, 1, k)
        if kp > k:
            e("TLOAD", k * r, gen.p(zero), (kp - k) * r, 1, 0)
        e("POOL", kp * t, 0, k1, k2, r, k1, k2, 1, 1, 0, 0, 0, 0, 0 if is_max else 1)
        e("EADD", kp * t, kp * t, kp * t, r, op.attr("mult"), op.attr("shift"), 0, 0, op.results[0].type.pents)
        e("TSTORE", Mem(ya + r0), kp * t, 1, r, 0)


@EMIT.register(pent_matmul.Matmul)
def emit_matmul(gen: _Gen, op: Operation) -> None:
    """Per batch: TLOAD b (K x N, or N x K with ``trans_b``) once; per tile of rows: TLOAD the rows of a, AMATMUL
    (b read digit-serially at its pents), REQUANT, TSTORE.  A broadcast b makes every batch's rows one run."""
    e = gen.e
    a, b = op.operands
    ba, m, k = a.type.shape
    bb = b.type.shape[0]
    bt, _, n = op.results[0].type.shape
    (t,) = op.attr("tile")
    xa, xb, ya = gen.addr(a), gen.addr(b), gen.addr(op.results[0])
    kn = 0 if op.attr("trans_b") else 1
    pb, pents = b.type.pents, op.results[0].type.pents
    a_buf, y_buf = k * n, k * n + t * k
    batches = [(0, bt * m)] if bb == 1 and ba == bt else [(i, m) for i in range(bt)]
    loaded = None
    for bi, rows in batches:
        src_b = xb + (bi if bb > 1 else 0) * k * n
        if src_b != loaded:
            e("TLOAD", 0, Mem(src_b), 1, k * n, 0)
            loaded = src_b
        a0 = xa + (bi if ba > 1 else 0) * m * k
        y0 = ya + bi * m * n
        for r0 in range(0, rows, t):
            cnt = min(rows, r0 + t) - r0
            e("TLOAD", a_buf, Mem(a0 + r0 * k), 1, cnt * k, 0)
            e("AMATMUL", 0, a_buf, 0, cnt, n, k, kn, pb, 0)
            e("REQUANT", y_buf, 0, cnt * n, op.attr("mult"), op.attr("shift"), pents)
            e("TSTORE", Mem(y0 + r0 * n), y_buf, 1, cnt * n, 0)


@EMIT.register(pent_norm.Rsqrt)
def emit_rsqrt(gen: _Gen, op: Operation) -> None:
    """TLOAD the table once; per tile: TLOAD v, the bias and -1 (stride 0), EADD (+ bias), EADD (index), TLUT,
    then per Newton step EMUL x 4 and EADD, TSTORE."""
    e = gen.e
    v, tv = op.operands
    nt = tv.type.size
    (t,) = op.attr("tile")
    e("TLOAD", 0, gen.p(gen.params.add_words(np.asarray(gen.const(tv), np.int64))), 1, nt, 0)
    consts = gen.p(gen.params.add_words(np.array([op.attr("bias"), -1], np.int64)))
    w, ix, n, tt, u, m, q, c = (nt + k * t for k in range(8))
    xv, y = gen.addr(v), gen.addr(op.results[0])
    total = op.results[0].type.size
    for e0 in range(0, total, t):
        cnt = min(total, e0 + t) - e0
        e("TLOAD", w, Mem(xv + e0), 1, cnt, 0)
        e("TLOAD", c, consts, cnt, 1, 0)
        e("EADD", w, w, c, cnt, 1, 0, 1, 0, 16)
        e("TLOAD", c, Mem(consts.off + 1), cnt, 1, 0)
        e("EADD", ix, w, w, cnt, op.attr("imult"), op.attr("ishift"), 0, 0, 16)
        e("TLUT", n, ix, cnt, 0, 0, nt)
        for _ in range(op.attr("iters")):
            e("EMUL", tt, n, w, cnt, 1, 12, 16)
            e("EMUL", u, tt, n, cnt, 1, 18, 16)
            e("EMUL", m, n, c, cnt, 1, 0, 16)
            e("EMUL", q, u, m, cnt, 1, 31, 16)
            e("EADD", n, n, q, cnt, 3, 1, 1, 0, 16)
        e("TSTORE", Mem(y + e0), n, 1, cnt, 0)


@EMIT.register(pent_move.Embed)
def emit_embed(gen: _Gen, op: Operation) -> None:
    """P2 = V - 1, P3 = D; per tile: P4 = the tile's first id's address; per token: LOAD P1 its id, CLAMP P1 to
    0 .. V-1, MUL P1 by D, TLOAD the row from [P1 + table]; then TSTORE the tile's rows."""
    e = gen.e
    ids, tv = op.operands
    v, d = tv.type.shape
    table = gen.p(gen.params.add_words(np.asarray(gen.const(tv), np.int64).reshape(-1))).off
    (t,) = op.attr("tile")
    xi, y = gen.addr(ids), gen.addr(op.results[0])
    movi = isa.BY_MNEMONIC["MOVI"].fields[-1].hi
    if max(v - 1, d, xi + ids.type.size) > movi:
        raise PccError(f"code generation: pent.embed: V, D and the ids' addresses must be at most {movi}", op.loc)
    e("MOVI", Reg(2), v - 1)
    e("MOVI", Reg(3), d)
    total = ids.type.size
    for e0 in range(0, total, t):
        cnt = min(total, e0 + t) - e0
        e("MOVI", Reg(4), xi + e0)
        for i in range(cnt):
            e("LOAD", Reg(1), Mem(i, 4))
            e("CLAMP", Reg(1), Reg(1), Reg(0), Reg(2))
            e("MUL", Reg(1), Reg(1), Reg(3))
            e("TLOAD", i * d, Mem(table, 1), 1, d, 0)
        e("TSTORE", Mem(y + e0 * d), 0, 1, cnt * d, 0)
