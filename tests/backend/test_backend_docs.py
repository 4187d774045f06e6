"""docs/ISA.md's instruction tables are generated from pcc/isa.py and must match it."""

from __future__ import annotations

from pathlib import Path

from pcc import isa, isa_docs
from pcc.backend.assembler import assemble

DOC = Path(__file__).resolve().parents[2] / "docs" / "ISA.md"


def test_generated_tables_match_the_code() -> None:
    text = DOC.read_text(encoding="utf-8")
    assert isa_docs.generated_section(text) == isa_docs.render_isa_markdown(), (
        "docs/ISA.md is out of date: run python -m pcc.isa_docs"
    )


def test_every_instruction_documented() -> None:
    text = DOC.read_text(encoding="utf-8")
    for ins in isa.INSTRUCTIONS:
        assert f"#### {ins.mnemonic}\n" in text


def test_code_examples_assemble() -> None:
    text = DOC.read_text(encoding="utf-8")
    blocks = text.split("```")[1::2]
    assert len(blocks) >= 2
    for block in blocks:
        body = block.split("\n", 1)[1]
        if "result:" not in body:  # the layer example names data defined elsewhere
            body += ".data\n" + "".join(f"{name}: .word 0\n" for name in ("act", "bias", "out", "w3x3"))
        assemble(body, "doc-example.pasm")
