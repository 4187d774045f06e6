"""plan-memory: buffers with overlapping lifetimes never share words; the arena is well below the naive sum."""

from __future__ import annotations

import numpy as np
from pass_helpers import Builder, pent_int_outputs, random_inputs, run_passes, small_cnn

from pcc.dialects import nn
from pcc.ir import Module
from pcc.passes.plan_memory import arena_words, check_plan, plan_graph
from pcc.passes.quantize import quantize_module


def deep_chain(seed: int, blocks: int = 6) -> Module:
    """Residual blocks: every block's input stays live across two convs."""
    b = Builder("deep", seed)
    x = b.arg("x", (1, 4, 6, 6))
    y = b.op(nn.Conv2d, [x, b.w("stem", (8, 4, 3, 3), 0.3)], "stem", pads=[1, 1, 1, 1])
    for i in range(blocks):
        h = b.op(nn.Conv2d, [y, b.w(f"w{i}a", (8, 8, 3, 3), 0.2)], f"b{i}a", pads=[1, 1, 1, 1])
        h = b.op(nn.Relu, [h], f"b{i}r")
        h = b.op(nn.Conv2d, [h, b.w(f"w{i}b", (8, 8, 3, 3), 0.2)], f"b{i}b", pads=[1, 1, 1, 1])
        y = b.op(nn.Relu, [b.op(nn.Add, [h, y], f"b{i}add")], f"b{i}out")
    return b.done(b.op(nn.GlobalAvgPool, [y], "gap"))


def prepared(m: Module, fuse: bool) -> Module:
    rng = np.random.default_rng(0)
    cal = {a.name or "": rng.standard_normal((4, *a.type.shape[1:])).astype(np.float32) for a in m.main.args}
    run_passes(m, "canonicalize,fold-batchnorm")
    quantize_module(m, cal)
    if fuse:
        run_passes(m, "fuse")
    return run_passes(m, "schedule")


def test_plan_is_valid_and_outputs_unchanged() -> None:
    for make in (small_cnn, deep_chain):
        for fuse in (False, True):
            m = prepared(make(0), fuse)
            inputs = random_inputs(m, 3)
            before = pent_int_outputs(m, inputs)
            run_passes(m, "plan-memory")
            check_plan(m.main)
            plan = plan_graph(m.main)
            assert plan.peak_live_words <= plan.arena_words <= plan.naive_words
            assert arena_words(m.main) == plan.arena_words
            for a, b in zip(pent_int_outputs(m, inputs), before, strict=True):
                np.testing.assert_array_equal(a, b)


def test_reuse_saves_most_of_a_deep_network() -> None:
    m = prepared(deep_chain(0, blocks=8), fuse=False)
    run_passes(m, "plan-memory{report=true}")
    plan = plan_graph(m.main)
    # 8 blocks x 5 values of 288 words: a handful of live buffers at a time
    assert plan.arena_words <= 4 * 288 + 144
    assert plan.naive_words >= 8 * 5 * 288
    assert plan.arena_words <= plan.peak_live_words + 288


def test_outputs_live_to_the_end_and_inputs_until_their_last_use() -> None:
    m = prepared(small_cnn(1), fuse=True)
    run_passes(m, "plan-memory")
    body = m.main.body
    inp = body[0]
    out_op = m.main.outputs[0].owner.operands[0].owner
    last_input_use = max(body.index(u) for u in inp.results[0].uses)

    def words(op: object) -> range:
        return range(op.attr("addr"), op.attr("addr") + op.results[0].type.size)

    for i, op in enumerate(body):
        if op.attributes.get("addr") is None or op is inp or op is out_op:
            continue
        if i <= last_input_use:
            assert not set(words(op)) & set(words(inp)), f"{op.name} overwrites the input before its last use"
        if i > body.index(out_op):
            assert not set(words(op)) & set(words(out_op)), f"{op.name} overwrites the output"


def branches(seed: int, dense: bool = False) -> Module:
    """Inception-style branches (1x1 conv, 3x3 conv, max pool + 1x1 conv, each with a ReLU) joined by a concat;
    with ``dense``, DenseNet-style: every new feature map is concatenated again by the next layer's concat and
    read by a conv."""
    b = Builder("br", seed)
    x = b.arg("x", (1, 4, 6, 6))
    x = b.op(nn.Relu, [b.op(nn.Conv2d, [x, b.w("stem", (6, 4, 3, 3), 0.3)], "stem", pads=[1, 1, 1, 1])], "sr")
    if dense:
        feats = [x]
        for i in range(3):
            cat = b.op(nn.Concat, feats, f"cat{i}", axis=1) if len(feats) > 1 else feats[0]
            c = cat.type.shape[1]
            h = b.op(nn.Conv2d, [cat, b.w(f"d{i}", (4, c, 3, 3), 0.3)], f"d{i}", pads=[1, 1, 1, 1])
            feats.append(b.op(nn.Relu, [h], f"dr{i}"))
        y = b.op(nn.Concat, feats, "cat", axis=1)
    else:
        a = b.op(nn.Relu, [b.op(nn.Conv2d, [x, b.w("a", (3, 6, 1, 1), 0.4)], "a")], "ar")
        c3 = b.op(nn.Conv2d, [x, b.w("b", (5, 6, 3, 3), 0.2)], "b", pads=[1, 1, 1, 1])
        c3 = b.op(nn.Relu, [c3], "br")
        p = b.op(nn.MaxPool, [x], "p", kernel_shape=[3, 3], strides=[1, 1], pads=[1, 1, 1, 1])
        p = b.op(nn.Relu, [b.op(nn.Conv2d, [p, b.w("pc", (2, 6, 1, 1), 0.4)], "pc")], "pr")
        y = b.op(nn.Concat, [a, c3, p], "cat", axis=1)
    y = b.op(nn.Conv2d, [y, b.w("head", (3, y.type.shape[1], 1, 1), 0.3)], "head")
    return b.done(b.op(nn.GlobalAvgPool, [y], "gap"))


def test_concat_inputs_live_in_the_concat_buffer() -> None:
    """The producers of a channel concat's inputs write into its buffer (addr + channel offset, pitch = the
    concat's channels); the plan stays valid and the integers do not change."""
    from pcc.dialects import pent, pent_move

    for dense in (False, True):
        m = prepared(branches(0, dense), fuse=True)
        inputs = random_inputs(m, 3)
        before = pent_int_outputs(m, inputs)
        run_passes(m, "plan-memory")
        check_plan(m.main, m)
        plan = plan_graph(m.main, m)
        cats = [op for op in m.main.ops_of(pent_move.Gather) if op.results[0].type.shape[1] >= 10]
        assert cats
        aliased = {id(op) for op, _, _ in plan.aliases}
        for cat in cats:
            c = cat.results[0].type.shape[1]
            for x in cat.operands[1:]:
                if id(x.owner) in aliased:
                    assert x.owner.attr("pitch") == c
                    assert cat.attr("addr") <= x.owner.attr("addr") < cat.attr("addr") + c
        convs = {id(x.owner) for cat in cats for x in cat.operands[1:] if isinstance(x.owner, pent.Conv2d)}
        if dense:  # the inputs at another scale than a concat's are rescaled (EADD) into it, not aliased
            assert aliased and aliased <= convs | {id(op) for op in m.main.ops_of(pent.MaxPool)}
        else:
            assert len(convs) == 3 and convs == aliased, "every conv that feeds the concat writes into it in place"
        assert plan.peak_live_words <= plan.arena_words <= plan.naive_words
        for a, b in zip(pent_int_outputs(m, inputs), before, strict=True):
            np.testing.assert_array_equal(a, b)


def test_concat_input_used_elsewhere_keeps_its_buffer() -> None:
    """A concat input that a non-pitch reader also uses (here an add) is copied, not aliased."""
    b = Builder("cp", 0)
    x = b.arg("x", (1, 3, 4, 4))
    a = b.op(nn.Conv2d, [x, b.w("a", (4, 3, 1, 1), 0.4)], "a")
    c = b.op(nn.Conv2d, [x, b.w("c", (4, 3, 1, 1), 0.4)], "c")
    y = b.op(nn.Concat, [a, c], "cat", axis=1)
    s = b.op(nn.Add, [a, c], "s")
    m = prepared(b.done(b.op(nn.GlobalAvgPool, [y], "g1"), b.op(nn.GlobalAvgPool, [s], "g2")), fuse=False)
    run_passes(m, "plan-memory")
    check_plan(m.main, m)
    assert not plan_graph(m.main, m).aliases
