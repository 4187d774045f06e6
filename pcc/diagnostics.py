"""Diagnostics: one error type for every stage, printed as ``file:line:col: error: message``.

Every user-facing failure in pcc (IR parse/verify, ONNX import, assembly, binary decoding, simulator faults,
trainer data checks) raises :class:`PccError`.  The CLI prints :meth:`PccError.format` and exits 1; only
``--debug`` shows a traceback.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import NamedTuple


class Location(NamedTuple):
    """Where something came from: a text position (line:col) and/or a model node name."""

    file: str | None = None
    line: int | None = None
    col: int | None = None
    node: str | None = None

    def __str__(self) -> str:
        parts = [self.file or "<input>"]
        if self.line is not None:
            parts.append(str(self.line))
            if self.col is not None:
                parts.append(str(self.col))
        text = ":".join(parts)
        if self.node:
            text += f" (node {self.node!r})"
        return text


class PccError(Exception):
    """A user-facing error: a message, an optional location, the offending source line and notes."""

    def __init__(
        self,
        message: str,
        loc: Location | None = None,
        *,
        source_line: str | None = None,
        notes: Iterable[str] = (),
    ) -> None:
        super().__init__(message)
        self.message = message
        self.loc = loc
        self.source_line = source_line
        self.notes = list(notes)

    def headline(self) -> str:
        """The one-line form: ``file:line:col: error: message``."""
        if self.loc is None:
            return f"error: {self.message}"
        return f"{self.loc}: error: {self.message}"

    def format(self) -> str:
        lines = [self.headline()]
        if self.source_line is not None and self.loc is not None and self.loc.line is not None:
            src = self.source_line.rstrip("\n").expandtabs(1)
            lines.append("  " + src)
            if self.loc.col is not None:
                lines.append("  " + " " * max(self.loc.col - 1, 0) + "^")
        lines.extend(f"note: {n}" for n in self.notes)
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.headline()


def source_line(text: str | None, line: int | None) -> str | None:
    """Line ``line`` (1-based) of ``text``, or None."""
    if text is None or line is None or line < 1:
        return None
    lines = text.splitlines()
    if line == len(lines) + 1:  # the end of a file that ends with a newline
        return ""
    return lines[line - 1] if line <= len(lines) else None


def error_at(message: str, text: str | None, file: str | None, line: int | None, col: int | None) -> PccError:
    """A PccError at ``line:col`` of ``text`` (the source line is attached for the caret)."""
    return PccError(message, Location(file, line, col), source_line=source_line(text, line))


def atomic_write(path: str | os.PathLike[str], data: bytes | str) -> None:
    """Write ``data`` to ``path`` through a temporary file in the same folder and a rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    mode = "wb" if isinstance(data, bytes | bytearray) else "w"
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, mode, **({} if mode == "wb" else {"encoding": "utf-8"})) as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
