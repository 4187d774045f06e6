"""The rule tables: every op has a rule (or, where the stage allows it, a declared gap with a reason) in every
stage it passes through, and a lookup without one fails at the op, naming the op and the stage."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from pcc.cli import app
from pcc.diagnostics import Location, PccError
from pcc.drivers.opt import load_stages
from pcc.ir import OP_REGISTRY, Operation, TensorType
from pcc.rules import DIALECT_STAGES, STAGE_MODULES, TABLES, RuleTable, required_stages

load_stages()

CASES = [(name, stage) for name in sorted(OP_REGISTRY) for stage in required_stages(OP_REGISTRY[name])]


def test_every_stage_has_a_table() -> None:
    stages = {s for d in DIALECT_STAGES.values() for s in d}
    assert stages <= set(TABLES), f"stages without a rule table: {sorted(stages - set(TABLES))}"
    assert set(STAGE_MODULES) == stages


@pytest.mark.parametrize(("op", "stage"), CASES, ids=[f"{o}-{s}" for o, s in CASES])
def test_op_has_a_rule_in_each_stage(op: str, stage: str) -> None:
    table = TABLES[stage]
    why = table.reason(OP_REGISTRY[op])
    assert why != "no rule", f"{op} has no rule in stage {stage} ({STAGE_MODULES[stage]})"
    if why is not None:
        assert table.gaps, f"{op} is declared unsupported in stage {stage} ({why}), which must handle every op"


def test_every_opcode_has_an_accounting_rule() -> None:
    from pcc import isa
    from pcc.runtime.profile import COST

    missing = [i.mnemonic for i in isa.INSTRUCTIONS if isa.Op(i.opcode) not in COST]
    assert not missing, f"instruction-accounting has no rule for {missing}"


def test_every_opcode_has_an_effects_rule() -> None:
    from pcc import isa
    from pcc.runtime.effects import EFFECTS

    missing = [i.mnemonic for i in isa.INSTRUCTIONS if i.opcode not in EFFECTS]
    assert not missing, f"runtime/effects.py has no read/write rule for {missing}"


def test_lookup_names_the_op_and_the_stage() -> None:
    class Odd(Operation):  # not registered: the test leaves the op registry alone
        name = "test.odd"
        operands_spec = ()

    table: RuleTable = RuleTable("test-stage")
    try:
        op = Odd([], [TensorType((2,), "f32")], {}, Location("m.onnx", node="odd_node"), ["y"])
        with pytest.raises(PccError, match=r"test-stage: no rule for test.odd \(node 'odd_node'\)$"):
            table.lookup(op)
        table.unsupported("not here, try elsewhere", Odd)
        with pytest.raises(PccError, match=r"test-stage: no rule for test.odd \(node 'odd_node'\): not here"):
            table.lookup(op)
        with pytest.raises(ValueError, match="a second rule for test.odd"):
            table.register(Odd)(lambda op: None)
        assert Odd not in table and table.reason(Odd) == "not here, try elsewhere"
        assert required_stages(Odd) == ()
    finally:
        del TABLES["test-stage"]


def test_tile_of_an_op_without_a_rule_is_an_error() -> None:
    from pcc.passes.tile import TILE, Scratch, choose_tile

    class Late(Operation):  # a pent op some later change declares but gives no tile rule
        name = "pent.late"
        operands_spec = ()

    op = Late([], [TensorType((1,), "p8")], {}, None, ["y"])
    assert Late not in TILE
    with pytest.raises(PccError, match=r"tiling: no rule for pent.late"):
        choose_tile(op, Scratch.of())


def test_list_ops_prints_the_matrix() -> None:
    r = CliRunner().invoke(app, ["opt", "--list-ops"])
    assert r.exit_code == 0, r.output
    lines = r.output.splitlines()
    assert lines[0].split() == ["op", *[s for d in DIALECT_STAGES.values() for s in d]]
    row = next(line for line in lines if line.startswith("pent.conv2d "))
    assert row.split() == ["pent.conv2d", "x", "x", "x", "x"]
    assert any(line.startswith("  lowering: run fold-batchnorm first: nn.batch_norm") for line in lines)
    assert lines[-1].endswith("0 missing rule(s)")


def test_a_later_module_refines_a_rule_and_reaches_the_earlier_one() -> None:
    class Base(Operation):
        name = "test.base"
        operands_spec = ()

    class Leaf(Base):
        name = "test.leaf"
        operands_spec = ()

    table: RuleTable = RuleTable("test-refine")
    try:
        table.register(Base)(lambda op: "first")

        @table.refine(Base)
        def special(prior, op):  # noqa: ANN001, ANN202
            return "special" if op == "odd" else prior(op)

        @table.refine(Base)
        def again(prior, op):  # noqa: ANN001, ANN202
            return "again" if op == "again" else prior(op)

        rule = table.get(Base)
        assert [rule(x) for x in ("odd", "again", "plain")] == ["special", "again", "first"]
        assert [f.__name__ for f in table.chain(Base)] == ["again", "special", "<lambda>"]

        @table.refine(Leaf)  # a subclass refines the rule it inherits; the base keeps its own
        def leaf(prior, op):  # noqa: ANN001, ANN202
            return "leaf:" + prior(op)

        assert table.get(Leaf)("odd") == "leaf:special" and table.get(Base)("odd") == "special"
        assert len(table.chain(Leaf)) == 4 and table.chain(int) == []  # int: no rule
        with pytest.raises(ValueError, match="a second rule for test.base"):
            table.register(Base)(lambda op: None)
    finally:
        del TABLES["test-refine"]


def test_refining_a_gap_is_an_error_and_claiming_one_fills_it() -> None:
    class Gap(Operation):
        name = "test.gap"
        operands_spec = ()

    table: RuleTable = RuleTable("test-claim")
    try:
        with pytest.raises(ValueError, match="test.gap has no rule to refine"):
            table.refine(Gap)(lambda prior, op: None)
        table.unsupported("not yet", Gap)
        with pytest.raises(ValueError, match="test.gap has no rule to refine"):
            table.refine(Gap)(lambda prior, op: None)
        table.claim(Gap)(lambda op: "filled")
        assert table.get(Gap)(None) == "filled" and table.reason(Gap) is None
        with pytest.raises(ValueError, match="a second rule for test.gap"):
            table.claim(Gap)(lambda op: None)
    finally:
        del TABLES["test-claim"]


def test_the_lowering_refinements_keep_the_rules_they_refine() -> None:
    from pcc.dialects import nn
    from pcc.passes.quantize_lower import LOWERING

    names = {c.name: [f.__name__ for f in LOWERING.chain(c)] for c in (nn.Gather, nn.Mul, nn.Add)}
    assert names["nn.gather"] == ["lower_gather", "lower_move"]  # an embedding, else a rearrangement
    assert len(names["nn.mul"]) == 2 and len(names["nn.add"]) == 2  # a masking term, else the plain product/sum
