"""``tile``: choose, for every ``pent`` op, tiles whose working set fits the scratchpads (lowering step 1).

The code generator (``backend/codegen.py``) emits one instruction sequence per op that owns the scratchpads
while it runs: A holds the input tile and then the output tile (activations, one word each), W the weight
tile (one pent each), C the accumulators plus the per-channel multipliers and shifts.  The tile attribute is

- ``pent.conv2d``: ``[oc, rows]`` output channels (a multiple of the channels per group) and output rows per
  tile; an input tile is the rows the output rows need (the halo included), all or the group's channels;
- ``pent.gemm``: ``[n, m]`` outputs and rows per tile, each tile reading all K inputs;
- ``pent.max_pool`` / ``pent.avg_pool``: ``[c, rows]`` channels and output rows;
- ``pent.add`` / ``pent.relu`` / ``pent.clamp`` / ``pent.reshape`` and every ``pent.Elementwise`` op
  (``pent.lut``): ``[elements]`` per tile (a table is loaded whole beside the tile).

Larger tiles come first (fewer DMA setups, fewer weight reloads); output channels are tiled only when the
weights do not fit W.  The ISA's field limits (e.g. CONV's 6-pent height and 2-pent pads) are checked here, so
an op that cannot be lowered fails at its model node with the reason.  The options shrink the scratchpads
(``a-words=0`` means the machine's size), which the tests use to exercise tiling on small models.  Each op's
tile is one rule in :data:`TILE` (``@TILE.register(pent.Relu)``); an op without one is an error at the op.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from pcc.diagnostics import PccError
from pcc.dialects import pent
from pcc.ir import Module, Operation
from pcc.isa import DEFAULT_CONFIG, MachineConfig, cdiv
from pcc.pass_manager import Pass, register_pass
from pcc.pentary import word_max
from pcc.rules import RuleTable

U6, U7, U4, U2, U9 = word_max(6), word_max(7), word_max(4), 12, word_max(9)

TILE: RuleTable[Callable[[Operation, Scratch], list[int] | None]] = RuleTable("tiling")


@dataclass(frozen=True)
class Scratch:
    """Scratchpad capacities: A and C in words, W in pents."""

    a: int
    w: int
    c: int

    @classmethod
    def of(cls, cfg: MachineConfig = DEFAULT_CONFIG, a: int = 0, w: int = 0, c: int = 0) -> Scratch:
        return cls(a or cfg.a_spad_words, w or cfg.w_spad_pents, c or cfg.c_spad_words)


def _fail(op: Operation, msg: str) -> PccError:
    return PccError(f"{op.name}: cannot lower to the ISA: {msg}", op.loc)


def in_rows(rows: int, stride: int, k: int, height: int) -> int:
    """Input rows an output-row tile needs (an upper bound; clipped to the input height)."""
    return min(height, (rows - 1) * stride + k)


def _candidates(total: int, unit: int) -> list[int]:
    """Tile sizes to try, largest first: ``total``, then halvings rounded up to multiples of ``unit`` (of 32
    while above 32, the MAC array's width)."""
    out = [total]
    t = total
    while t > unit:
        t = -(-t // 2)
        q = 32 if unit == 1 and t > 32 else unit
        t = min(-(-t // q) * q, out[-1] - unit)
        out.append(max(t, unit))
    return out


def _table_words(op: Operation) -> int:
    """The words of scratchpad A a fused table activation holds (at its top) while the op runs."""
    return len(op.attr("table")) if op.attr("act") == "lut" else 0


@TILE.register(pent.Conv2d)
def conv_tile(op: Operation, sp: Scratch) -> list[int]:
    x, w, y = op.operands[0].type, op.operands[1].type, op.results[0].type
    _, c, h, wd = x.shape
    o, icg, kh, kw = w.shape
    oh, ow = y.shape[2], y.shape[3]
    g = op.attr("group")
    sh, sw = op.attr("strides")
    pads = op.attr("pads")
    ocg = o // g
    res = len(op.operands) > 5
    a_free = sp.a - _table_words(op)
    if kh > U4 or kw > U4 or sh > U2 or sw > U2 or max(pads) > U2:
        raise _fail(op, f"kernel {kh}x{kw} (<= {U4}), strides {sh},{sw} and pads {pads} (<= {U2}) out of range")
    if pads[0] >= kh or pads[2] >= kh or pads[1] >= kw or pads[3] >= kw:
        raise _fail(op, f"pads {pads} must be smaller than the kernel {kh}x{kw}")
    if wd > U6 or c > U7 or o > U7:
        raise _fail(op, f"width {wd} (<= {U6}) or channels {c}/{o} (<= {U7}) out of range")
    for ot in _candidates(o, ocg if g > 1 else 1):
        ct = c if g == 1 else (ot // ocg) * icg
        if ot * kh * kw * icg > sp.w or ow * ot + 2 * ot > sp.c:
            continue
        best = 0
        for rt in range(oh, 0, -1):
            ih = in_rows(rt, sh, kh, h)
            if (
                rt * ow * ot + 2 * ot <= sp.c
                and ih * wd * ct <= a_free
                and (2 if res else 1) * rt * ow * ot <= a_free
                and ih <= U6
                and rt * ow <= U9
            ):
                best = rt
                break
        if best:
            return [ot, best]
    raise _fail(op, f"no tile of {o} output channels x {oh} rows fits the scratchpads {sp}")


@TILE.register(pent.Gemm)
def gemm_tile(op: Operation, sp: Scratch) -> list[int]:
    x, w = op.operands[0].type, op.operands[1].type
    m, k = x.shape
    n = w.shape[0]
    res = len(op.operands) > 5
    a_free = sp.a - _table_words(op)
    if k > U9 or n > U9:
        raise _fail(op, f"K = {k} and N = {n} must be <= {U9}")
    for nt in _candidates(n, 1):
        if nt * k > sp.w or nt + 2 * nt > sp.c or k > a_free:
            continue
        mt = min(m, (sp.c - 2 * nt) // nt, a_free // k, a_free // ((2 if res else 1) * nt), U9)
        if mt >= 1:
            return [nt, mt]
    raise _fail(op, f"no tile of the {n}x{k} weight fits the scratchpads {sp}")


@TILE.register(pent.MaxPool, pent.AvgPool)
def pool_tile(op: Operation, sp: Scratch) -> list[int]:
    x, y = op.operands[0].type, op.results[0].type
    _, c, h, wd = x.shape
    oh, ow = y.shape[2], y.shape[3]
    kh, kw = op.attr("kernel_shape")
    sh, sw = op.attr("strides")
    pads = op.attr("pads")
    if kh > U4 or kw > U4 or sh > U2 or sw > U2 or max(pads) > U2 or wd > U6:
        raise _fail(op, f"window {kh}x{kw}, strides {sh},{sw}, pads {pads} or width {wd} out of the ISA's range")
    for ct in _candidates(c, 1):
        if ct > U7:  # POOL's channel field; more channels are more tiles
            continue
        for rt in range(oh, 0, -1):
            ih = in_rows(rt, sh, kh, h)
            if ih * wd * ct + rt * ow * ct <= sp.a and ih <= U6:
                return [ct, rt]
    raise _fail(op, f"no tile of the {c}x{h}x{wd} input fits scratchpad A ({sp.a} words)")


@TILE.register(pent.Add, pent.Relu, pent.Clamp, pent.Reshape, pent.Elementwise)
def elementwise_tile(op: Operation, sp: Scratch) -> list[int]:
    """``[elements]`` per tile: every activation operand's tile and the result share scratchpad A with the
    weights the op loads whole (a table)."""
    n = op.results[0].type.size
    per = sum(1 for v in op.operands if not v.is_weight)
    free = sp.a - sum(v.type.size for v in op.operands if v.is_weight)
    if free < 1:
        raise _fail(op, f"its tables ({sp.a - free} words) do not fit scratchpad A ({sp.a} words)")
    return [max(1, min(n, free // max(per, 1), U9))]


@TILE.register(pent.Quantize, pent.Dequantize)
def boundary_tile(op: Operation, sp: Scratch) -> None:
    """The program boundary emits no code (the runner quantizes inputs and dequantizes outputs)."""
    return None


def choose_tile(op: Operation, sp: Scratch) -> list[int] | None:
    """The tile of one op (its rule in :data:`TILE`), or None for ops that emit no code (the boundary)."""
    fn = TILE.get(type(op))
    if fn is None and op.name.startswith("nn."):
        raise PccError(f"{op.name} is still a float op: run 'quantize' before 'tile'", op.loc)
    return TILE.lookup(op)(op, sp)


@register_pass
@dataclass(frozen=True)
class Tile(Pass):
    """Choose scratchpad tiles for every pent op (attribute tile) and check the ISA's field limits."""

    name = "tile"
    a_words: int = 0  # scratchpad A size in words (0: the machine's)
    w_pents: int = 0  # scratchpad W size in pents (0: the machine's)
    c_words: int = 0  # scratchpad C size in words (0: the machine's)

    def scratch(self) -> Scratch:
        return Scratch.of(DEFAULT_CONFIG, self.a_words, self.w_pents, self.c_words)

    def run(self, module: Module) -> bool:
        sp = self.scratch()
        changed = False
        for g in module.functions.values():
            for op in g.body:
                t = choose_tile(op, sp)
                if t is not None and op.attributes.get("tile") != t:
                    op.attributes["tile"] = t
                    changed = True
        return changed


__all__ = ["TILE", "Scratch", "Tile", "cdiv", "choose_tile"]


from pcc.passes import tile_binary  # noqa: E402,F401  (its rules register in TILE)
