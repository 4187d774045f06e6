"""schedule: a topological order with a lower peak of live memory; outputs unchanged."""

from __future__ import annotations

from pass_helpers import Builder, check_float_pass, ops, small_cnn

from pcc.dialects import nn
from pcc.ir import Module
from pcc.passes.schedule import greedy_order, peak_live


def two_branches(seed: int) -> Module:
    """Both wide branches are computed before either is reduced: the worst order."""
    b = Builder("br", seed)
    x = b.arg("x", (1, 2, 8, 8))
    a1 = b.op(nn.Conv2d, [x, b.w("wa", (32, 2, 1, 1))], "wide_a")
    b1 = b.op(nn.Conv2d, [x, b.w("wb", (32, 2, 1, 1))], "wide_b")
    c1 = b.op(nn.Conv2d, [x, b.w("wc", (32, 2, 1, 1))], "wide_c")
    a2 = b.op(nn.GlobalAvgPool, [a1], "reduce_a")
    b2 = b.op(nn.GlobalAvgPool, [b1], "reduce_b")
    c2 = b.op(nn.GlobalMaxPool, [c1], "reduce_c")
    s = b.op(nn.Add, [a2, b2], "add")
    return b.done(b.op(nn.Add, [s, c2], "add2"))


def test_schedule_lowers_peak_and_preserves_outputs() -> None:
    for seed in range(3):
        before = peak_live(two_branches(seed).main)
        (m,) = check_float_pass(lambda s, seed=seed: two_branches(seed), "schedule", trials=1)
        after = peak_live(m.main)
        assert after < before, (before, after)
        order = ops(m)
        assert order.index("nn.global_avg_pool") < order.index("nn.conv2d", 1)  # a branch is reduced early
    # 128 (x) + 3 * 2048 wide values at once before; at most two wide values live after
    assert before == 128 + 3 * 2048 and after <= 128 + 2 * 2048 + 32


def test_schedule_is_topological_and_keeps_good_orders() -> None:
    m = small_cnn(0)
    order = greedy_order(m.main)
    pos = {id(op): i for i, op in enumerate(order)}
    for op in order:
        for v in op.operands:
            if v.owner is not None:
                assert pos[id(v.owner)] < pos[id(op)]
    from pcc.passes.schedule import Schedule

    assert Schedule().run(m) is False  # a chain has one order
