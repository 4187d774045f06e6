"""Shared helpers of the hostile-input tests: run the CLI in-process and check its one diagnostic."""

from __future__ import annotations

import io
import re
import zipfile
from collections.abc import Callable
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

from pcc.cli import main

#: a diagnostic line: ``file[:line[:col]][ (node ...)]: error: message`` (or a plain ``error:`` line)
ERROR_LINE = re.compile(r"^(?:\S.*?: )?error: ", re.M)


def run_cli(argv: list[str]) -> tuple[int, str, str]:
    """Run ``pcc ARGV`` in this process; returns (exit status, stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        rc = main([str(a) for a in argv])
    return rc, out.getvalue(), err.getvalue()


def assert_one_diagnostic(rc: int, err: str, pattern: str, *, located: str | None = None) -> None:
    """Exit status 1, exactly one error line matching ``pattern``, no traceback, no internal error."""
    assert rc == 1, f"exit status {rc}, stderr:\n{err}"
    assert "Traceback" not in err, err
    assert "internal error" not in err and "bug in pcc" not in err, err
    assert not re.search(r"\.py:\d+: \w*Warning", err), f"a raw Python warning reached stderr:\n{err}"
    assert len(err) < 20_000, f"{len(err)} characters of diagnostics: {err[:300]}..."
    # "error: FILE: message" (the drivers' form) reads as "FILE: error: message"
    err = re.sub(r"^error: (/\S+?): ", r"\1: error: ", err, flags=re.M)
    lines = ERROR_LINE.findall(err)
    assert len(lines) == 1, f"expected one error line, got:\n{err}"
    assert re.search(pattern, err), f"{pattern!r} not in:\n{err}"
    if located is not None:
        assert located in err.splitlines()[[i for i, ln in enumerate(err.splitlines()) if "error: " in ln][0]], err


def edit_zip(src: Path, dst: Path, edit: Callable[[dict[str, bytes]], dict[str, bytes]]) -> Path:
    """Copy the zip ``src`` to ``dst`` with its members (name -> bytes) passed through ``edit``."""
    with zipfile.ZipFile(src) as z:
        parts = {i.filename: z.read(i.filename) for i in z.infolist()}
    parts = edit(parts)
    with zipfile.ZipFile(dst, "w") as z:
        for name, data in parts.items():
            z.writestr(name, data)
    return dst
