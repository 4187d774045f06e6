"""``pcc.diagnostics.read_input``: the one reader of whole input files, as a table of (what is at the path, the
one error it gets).  A FIFO is refused without opening it (its open would wait for a writer)."""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from pathlib import Path

import pytest

from pcc.diagnostics import PccError, read_input, read_input_json, read_input_text


def _write(data: bytes) -> Callable[[Path], Path]:
    def make(p: Path) -> Path:
        p.write_bytes(data)
        return p

    return make


def _fifo(p: Path) -> Path:
    os.mkfifo(p)
    return p


def _folder(p: Path) -> Path:
    p.mkdir()
    return p


CASES = {
    "missing": (lambda p: p, read_input, r"f: error: no such file"),
    "folder": (_folder, read_input, r"f: error: is a directory"),
    "fifo": (_fifo, read_input, r"f: error: not a regular file"),
    "device": (lambda p: Path("/dev/zero"), read_input, r"/dev/zero: error: not a regular file"),
    "oversized": (_write(b"x" * 400_000), read_input, r"f: error: 400,000 bytes, more than the 307,200 allowed"),
    "not-utf8": (_write(b"ok \xff"), read_input_text, r"f: error: not UTF-8 text \(invalid start byte at byte 3\)"),
    "json-syntax": (_write(b'{\n  "a": }'), read_input_json, r"f:2:8: error: invalid JSON: Expecting value"),
    "json-deep": (_write(b"[" * 100_000 + b"]" * 100_000), read_input_json, r"f: error: JSON nested too deeply"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_read_input_refuses(case: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    make, reader, pattern = CASES[case]
    monkeypatch.setenv("PCC_LIMIT_MAX_FILE_BYTES", "300K")
    path = make(tmp_path / "f")
    with pytest.raises(PccError) as exc:
        reader(path)
    assert re.search(pattern, exc.value.format()), exc.value.format()


def test_read_input_reads_a_file_at_the_limit(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PCC_LIMIT_MAX_FILE_BYTES", "1K")
    (tmp_path / "f").write_bytes(b"\xc3\xa9" * 512)
    assert read_input_text(tmp_path / "f") == "\u00e9" * 512


# every command that reads a file refuses a FIFO without opening it (an open would wait for a writer forever)
FIFO_COMMANDS = {
    "asm": "asm {f}.pasm -o {d}/o.pbin",
    "run": "run {f}.pbin",
    "disasm": "disasm {f}.pbin",
    "opt": "opt {f}.pir -o {d}/o.pir",
    "compile-onnx": "compile {f}.onnx -o {d}/o.pasm",
    "convert-onnx": "convert {f}.onnx -o {d}/o.json",
    "compile-json": "compile {f}.json -o {d}/o.pasm",
    "quantize": "quantize {f}.json -o {d}/o.json",
    "compile-pt2": "compile {f}.pt2 -o {d}/o.pasm",
    "convert-pth": "convert {f}.pth -o {d}/o.json",
    "charlm-text": "train --model transformer --text {f}.txt --steps 1",
}


@pytest.mark.parametrize("case", sorted(FIFO_COMMANDS))
def test_fifo_input_is_refused(case: str, tmp_path: Path) -> None:
    from security_helpers import assert_one_diagnostic, run_cli

    argv = FIFO_COMMANDS[case].format(f=tmp_path / "f", d=tmp_path).split()
    os.mkfifo(next(a for a in argv if a.startswith(str(tmp_path / "f"))))
    rc, _, err = run_cli(argv)
    assert_one_diagnostic(rc, err, r"f\.\w+: error: (not a regular file|not a file)")
