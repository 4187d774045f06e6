"""``pcc asm`` and ``pcc disasm`` through pcc.cli.main: return codes, outputs, diagnostics without tracebacks."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from pcc.cli import main

DATA = Path(__file__).parent / "data"


@pytest.fixture()
def sum_pasm(tmp_path: Path) -> Path:
    return Path(shutil.copy(DATA / "sum.pasm", tmp_path / "sum.pasm"))


def test_asm_default_output_and_disasm_roundtrip(sum_pasm: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["asm", str(sum_pasm)]) == 0
    pbin = sum_pasm.with_suffix(".pbin")
    assert pbin.read_bytes()[:4] == b"PBIN"
    assert main(["disasm", str(pbin)]) == 0
    out = capsys.readouterr().out
    assert "BNE P1, loop" in out and ".output total" in out
    dis = sum_pasm.parent / "dis.pasm"
    assert main(["disasm", str(pbin), "-o", str(dis), "--no-addresses"]) == 0
    assert main(["asm", str(dis), "-o", str(sum_pasm.parent / "again.pbin")]) == 0
    assert (sum_pasm.parent / "again.pbin").read_bytes() == pbin.read_bytes()


def test_asm_error_is_one_diagnostic(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src = tmp_path / "bad.pasm"
    src.write_text("NOP\n  ADDD P1, P2, P3\n")
    assert main(["asm", str(src)]) == 1
    err = capsys.readouterr().err
    assert err.splitlines()[0] == f"{src}:2:3: error: unknown mnemonic 'ADDD'; did you mean 'ADD'?"
    assert "Traceback" not in err and not (tmp_path / "bad.pbin").exists()


def test_missing_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["asm", str(tmp_path / "nope.pasm")]) == 1
    assert main(["disasm", str(tmp_path / "nope.pbin")]) == 1
    err = capsys.readouterr().err
    assert "nope.pasm" in err and "nope.pbin" in err and "Traceback" not in err


def test_corrupt_binary(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.pbin"
    bad.write_bytes(b"PBIN\x01\x00")
    assert main(["disasm", str(bad)]) == 1
    err = capsys.readouterr().err
    assert "corrupt .pbin: truncated header" in err and "Traceback" not in err


def test_not_utf8_source(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src = tmp_path / "bin.pasm"
    src.write_bytes(b"\xff\xfe\x00")
    assert main(["asm", str(src)]) == 1
    assert "not UTF-8" in capsys.readouterr().err


@pytest.mark.parametrize("cmd", ["asm", "disasm"])
def test_help(cmd: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main([cmd, "--help"]) == 0
    assert "pbin" in capsys.readouterr().out


def test_incbin_side_files(tmp_path: Path) -> None:
    src = tmp_path / "big.pasm"
    src.write_text(".text\nHALT\n.data\nw: .zero 2000\n.word 1\n")
    assert main(["asm", str(src)]) == 0
    out = tmp_path / "dis.pasm"
    assert main(["disasm", str(src.with_suffix(".pbin")), "-o", str(out), "--incbin-min", "100"]) == 0
    assert (tmp_path / "dis.data0.bin").exists() and ".incbin" in out.read_text()
    assert main(["asm", str(out), "-o", str(tmp_path / "again.pbin")]) == 0
    assert (tmp_path / "again.pbin").read_bytes() == src.with_suffix(".pbin").read_bytes()
