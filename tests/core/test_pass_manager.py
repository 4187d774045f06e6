"""The pass manager: pipeline strings, options, verification between passes, IR dumps, timing; dce."""

from __future__ import annotations

import io
from dataclasses import dataclass

import pytest

from pcc.diagnostics import PccError
from pcc.ir import Module, TensorType
from pcc.parser import parse_file, parse_module
from pcc.pass_manager import PASS_REGISTRY, Pass, PassManager, parse_pipeline, register_pass
from pcc.printer import print_module
from pcc.verifier import verify_module

TEXT = """module @m {
  func @main(%x: tensor<1x4xf32>) -> tensor<1x4xf32> {
    %a = nn.relu(%x) : tensor<1x4xf32>
    %dead = nn.sigmoid(%a) : tensor<1x4xf32>
    %dead2 = nn.tanh(%dead) : tensor<1x4xf32>
    %b = nn.add(%a, %x) : tensor<1x4xf32>
    return %b
  }
}
"""

AFTER_DCE = """module @m {
  func @main(%x: tensor<1x4xf32>) -> tensor<1x4xf32> {
    %a = nn.relu(%x) : tensor<1x4xf32>
    %b = nn.add(%a, %x) : tensor<1x4xf32>
    return %b
  }
}
"""


@register_pass
@dataclass(frozen=True)
class _BreakTypes(Pass):
    """Test pass: corrupts the IR (a result type no longer matches its op)."""

    name = "test-break-types"
    width: int = 5

    def run(self, module: Module) -> bool:
        op = module.main.body[0]
        op.results[0].type = TensorType((1, self.width), "f32")
        return True


def test_dce_removes_dead_ops_in_text() -> None:
    m = parse_module(TEXT)
    PassManager(parse_pipeline("dce")).run(m)
    assert print_module(m) == AFTER_DCE


def test_dce_removes_unused_weights() -> None:
    m = parse_module(
        "module @m {\n  weight @unused : tensor<2xf32> = dense<[1.0, 2.0]>\n" + AFTER_DCE[len("module @m {\n") :]
    )
    assert PassManager(parse_pipeline("dce{keep-weights=true}")).run(m).weights
    PassManager(parse_pipeline("dce")).run(m)
    assert not m.weights


@pytest.mark.parametrize(
    ("pipeline", "expected"),
    [
        ("dce", ["dce"]),
        (" dce , dce{keep-weights=true} ", ["dce", "dce{keep-weights=true}"]),
        ("test-break-types{width=7}", ["test-break-types{width=7}"]),
        ("dce{keep_weights=1}", ["dce{keep-weights=true}"]),
    ],
)
def test_pipeline_strings(pipeline: str, expected: list[str]) -> None:
    assert [p.describe() for p in parse_pipeline(pipeline)] == expected


@pytest.mark.parametrize(
    ("pipeline", "message"),
    [
        ("dcee", "unknown pass 'dcee'; did you mean 'dce'?"),
        ("dce{nope=1}", "pass 'dce' has no option 'nope' (options: keep-weights)"),
        ("dce{keep-weights=maybe}", "expected true or false, got 'maybe'"),
        ("test-break-types{width=x}", "expected an integer, got 'x'"),
        ("dce{keep-weights=true", "unbalanced '{'"),
        ("dce{keep-weights}", "must be written name=value"),
    ],
)
def test_bad_pipelines(pipeline: str, message: str) -> None:
    with pytest.raises(
        PccError, match=message.replace("{", r"\{").replace("?", r"\?").replace("(", r"\(").replace(")", r"\)")
    ):
        parse_pipeline(pipeline)


def test_passes_are_frozen_dataclasses_with_defaults() -> None:
    import dataclasses

    for name, cls in PASS_REGISTRY.items():
        assert cls.__dataclass_params__.frozen, name
        obj = cls()  # every option has a default, so a bare name in a pipeline works
        for f in dataclasses.fields(obj):
            with pytest.raises(dataclasses.FrozenInstanceError):
                setattr(obj, f.name, f.default)


def test_verify_each_names_the_pass() -> None:
    m = parse_module(TEXT, "in.pir")
    with pytest.raises(PccError) as info:
        PassManager(parse_pipeline("dce,test-break-types"), verify_each=True).run(m)
    text = info.value.format()
    assert "does not match the inferred type" in text
    assert "after pass 'test-break-types' (pass #2)" in text


def test_pipeline_end_is_always_verified() -> None:
    m = parse_module(TEXT)
    with pytest.raises(PccError, match="does not match the inferred type"):
        PassManager(parse_pipeline("test-break-types")).run(m)


def test_print_after_all_dump_dir_and_timing(tmp_path) -> None:
    m = parse_module(TEXT)
    out = io.StringIO()
    PassManager(parse_pipeline("dce,dce"), print_ir_after_all=True, dump_dir=tmp_path, timing=True, out=out).run(m)
    text = out.getvalue()
    assert text.count("// ----- IR after dce -----") == 2
    assert "%dead" not in text.split("// ----- IR after dce -----")[1]
    assert "total" in text and "changed" in text
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["000-input.pir", "001-dce.pir", "002-dce.pir"]
    assert (tmp_path / "001-dce.pir").read_text() == AFTER_DCE
    for p in tmp_path.glob("*.pir"):  # every dump parses and verifies
        verify_module(parse_file(p))


def test_dumps_with_large_weights_parse(tmp_path) -> None:
    import numpy as np

    m = Module("w")
    g = m.add_function()
    x = g.add_arg("x", TensorType((1, 32), "f32"))
    w = m.add_weight("w", np.ones((32, 32), np.float32))
    from pcc.dialects import nn

    y = g.append(nn.MatMul([x, w], [TensorType((1, 32), "f32")]))
    g.set_outputs([y.result])
    PassManager(parse_pipeline("dce"), dump_dir=tmp_path).run(m)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["000-input.npz", "000-input.pir", "001-dce.pir"]
    dumped = parse_file(tmp_path / "001-dce.pir")  # refers to the unchanged weights of the input dump
    verify_module(dumped)
    assert dumped.weight_data["w"].shape == (32, 32)
