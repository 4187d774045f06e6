"""Concat without copies: the producers of a channel concat's inputs write their slices of its buffer in place
(plan-memory's aliases, pitched stores), and the concat's gather emits nothing for them.  The simulator equals
the pent reference bit for bit, also with small scratchpads (channel and row tiles of the pitched stores)."""

from __future__ import annotations

import pytest
from compile_helpers import compile_sim, sim_matches_reference
from test_plan_memory import branches

from pcc.dialects import pent_move


def _concat_instructions(compiled, node: str) -> int:  # noqa: ANN001
    """Instructions of the layer ``node`` in the assembly text."""
    lines, on = compiled.asm.splitlines(), False
    count = 0
    for line in lines:
        if line.startswith("; @layer"):
            on = line.split()[2] == node
        elif on and line.startswith("    "):
            count += 1
    return count


@pytest.mark.parametrize("tile", ["tile", "tile{a-words=400 c-words=80}"])
@pytest.mark.parametrize("dense", [False, True])
def test_concat_in_place_bit_exact(tmp_path, dense: bool, tile: str) -> None:  # noqa: ANN001
    m, compiled, prog = compile_sim(branches(1, dense), tmp_path, tile=tile)
    sim_matches_reference(m, prog, seeds=2)
    pitched = [op for op in m.main.body if op.attributes.get("pitch") is not None]
    assert pitched
    if not dense:
        assert len(pitched) == 3
        assert _concat_instructions(compiled, "cat") == 0
    assert any(isinstance(op, pent_move.Gather) for op in m.main.body)


def test_pools_write_in_place(tmp_path) -> None:  # noqa: ANN001
    """Max and average pools store pitched too: conv, ReLU, pool per branch (each conv comes out at the concat's
    scale through its pool), concat."""
    from pass_helpers import Builder

    from pcc.dialects import nn, pent

    b = Builder("pl", 2)
    x = b.arg("x", (1, 3, 8, 8))
    outs = []
    for i, cls in enumerate((nn.MaxPool, nn.AvgPool)):
        h = b.op(nn.Relu, [b.op(nn.Conv2d, [x, b.w(f"c{i}", (3 + i, 3, 3, 3), 0.4)], f"c{i}", pads=[1] * 4)], f"r{i}")
        outs.append(b.op(cls, [h], f"pool{i}", kernel_shape=[2, 2], strides=[2, 2]))
    y = b.op(nn.Concat, outs, "cat", axis=1)
    m, compiled, prog = compile_sim(b.done(b.op(nn.Conv2d, [y, b.w("h", (2, 7, 1, 1), 0.3)], "h")), tmp_path)
    sim_matches_reference(m, prog, seeds=2)
    pools = [op for op in m.main.body if isinstance(op, pent.MaxPool | pent.AvgPool)]
    assert len(pools) == 2 and all(op.attr("pitch") == 7 for op in pools)
    assert _concat_instructions(compiled, "cat") == 0
