"""Diagnostics: one error type for every stage, printed as ``file:line:col: error: message``.

Every user-facing failure in pcc (IR parse/verify, ONNX import, assembly, binary decoding, simulator faults,
trainer data checks) raises :class:`PccError`.  The CLI prints :meth:`PccError.format` and exits 1; only
``--debug`` shows a traceback.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import NamedTuple

#: characters of a source line shown under a diagnostic (longer lines are cut around the column)
SOURCE_WINDOW = 160


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
            col = self.loc.col
            if len(src) > SOURCE_WINDOW:  # a very long line: show a window around the column
                start = max((col or 1) - 1 - SOURCE_WINDOW // 2, 0)
                shown = src[start : start + SOURCE_WINDOW]
                src = ("..." if start else "") + shown + ("..." if start + SOURCE_WINDOW < len(src) else "")
                col = None if col is None else col - start + (3 if start else 0)
            lines.append("  " + src)
            if col is not None:
                lines.append("  " + " " * max(col - 1, 0) + "^")
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


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True
    return True


def _clean_stale_temps(folder: Path, name: str) -> None:
    """Remove temporary files of ``name`` left by writers that were killed (their process is gone)."""
    prefix = f".{name}."
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return
    for e in entries:
        if not (e.name.startswith(prefix) and e.name.endswith(".tmp")):
            continue
        pid = e.name[len(prefix) :].split(".", 1)[0]
        if pid.isdigit() and int(pid) != os.getpid() and not _pid_alive(int(pid)):
            with contextlib.suppress(OSError):  # another writer may have removed it first
                os.unlink(e.path)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write(path: str | os.PathLike[str], data: bytes | str) -> None:
    """Write ``data`` to ``path`` through a temporary file in the same folder and a rename.

    An existing file keeps its permission bits; a new one gets ``0o666`` less the umask (as ``open`` would).  A
    symbolic link is written through: its target is replaced, the link stays.  A temporary file left by a
    killed writer (its name carries the writer's process id) is removed by the next write of the same path.
    Errors name ``path``, never the temporary file.
    """
    target = Path(path)
    if target.is_symlink():
        target = Path(os.path.realpath(target))
    if target.is_dir():
        raise PccError(f"{path}: is a directory; give a file name to write")
    folder = target.parent
    for above in (folder, *folder.parents):  # a file where a folder of the path should be: say which
        if above.exists():
            if not above.is_dir():
                raise OSError(errno.ENOTDIR, f"{above} is a file, not a folder; give a path in a folder", str(path))
            break
    try:
        folder.mkdir(parents=True, exist_ok=True)
        try:
            mode = os.stat(target).st_mode & 0o7777
        except FileNotFoundError:
            mode = 0o666 & ~_umask()
        _clean_stale_temps(folder, target.name)
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.{os.getpid()}.", suffix=".tmp", dir=folder)
    except OSError as exc:
        raise OSError(exc.errno, exc.strerror, str(path)) from None
    text_mode = not isinstance(data, bytes | bytearray)
    try:
        with os.fdopen(fd, "w" if text_mode else "wb", **({"encoding": "utf-8"} if text_mode else {})) as f:
            f.write(data)
            f.flush()
            os.fchmod(f.fileno(), mode)
        os.replace(tmp, target)
    except BaseException as exc:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        if isinstance(exc, OSError):
            raise OSError(exc.errno, exc.strerror, str(path)) from None
        raise


def check_input_file(path: str | os.PathLike[str], what: str = "a file") -> Path:
    """``path`` as a Path after checking that it names a regular file: a missing path, a folder, a FIFO (whose
    open would wait for a writer) or a device such as ``/dev/zero`` (whose read never ends) is one PccError."""
    p = Path(path)
    where = Location(str(p))
    try:
        mode = os.stat(p).st_mode
    except FileNotFoundError:
        raise PccError("no such file", where) from None
    except OSError as exc:
        raise PccError(f"cannot read: {exc.strerror or exc}", where) from None
    if stat.S_ISDIR(mode):
        raise PccError(f"is a directory; expected {what}", where)
    if not stat.S_ISREG(mode):
        raise PccError(f"not a regular file; expected {what}", where)
    return p


def read_input(path: str | os.PathLike[str], what: str = "a file") -> bytes:
    """The bytes of an input file read whole, after checking that it is a regular file within
    ``MAX_FILE_BYTES``: a folder, a device such as ``/dev/zero``, a FIFO or an oversized file is one PccError
    naming it, never a read of unbounded size."""
    from pcc import limits

    p = check_input_file(path, what)
    where = Location(str(p))
    lim = limits.current().max_file_bytes
    try:
        with open(p, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            if size > lim:
                raise PccError(
                    f"{size:,} bytes, more than the {lim:,} allowed for {what}",
                    where,
                    notes=["the limit is PCC_LIMIT_MAX_FILE_BYTES (see docs/security.md)"],
                )
            data = f.read(lim + 1)
    except OSError as exc:
        raise PccError(f"cannot read: {exc.strerror or exc}", where) from None
    if len(data) > lim:  # it grew while being read
        raise PccError(f"more than the {lim:,} bytes allowed for {what}", where)
    return data


def read_input_text(path: str | os.PathLike[str], what: str = "a text file") -> str:
    """:func:`read_input` decoded as UTF-8; a bad byte is one PccError naming the file and the byte offset."""
    data = read_input(path, what)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise PccError(
            f"not UTF-8 text ({exc.reason} at byte {exc.start}); expected {what}", Location(str(Path(path)))
        ) from None


def refuse_overwrite(output: str | os.PathLike[str] | None, *inputs: str | os.PathLike[str] | None) -> None:
    """PccError if ``output`` names the same file as one of ``inputs`` (through links and relative paths), so
    a slip such as ``pcc asm a.pasm -o a.pasm`` cannot replace what the command reads."""
    if output is None or str(output) == "-":
        return
    for src in inputs:
        if src is None:
            continue
        try:
            same = os.path.samefile(output, src)
        except OSError:  # one of them does not exist (yet): not the same file
            same = False
        if same:
            raise PccError(f"{output}: the output would overwrite the input {src}; choose another path with -o")


def read_input_json(path: str | os.PathLike[str], what: str = "a JSON file") -> object:
    """:func:`read_input_text` parsed as JSON: a syntax error is located (line:column, with a window of the line
    for one-line documents), a document nested too deeply for the parser is one PccError."""
    import json

    text = read_input_text(path, what)
    try:
        return json.loads(text)
    except RecursionError:
        raise PccError(f"JSON nested too deeply for {what}", Location(str(Path(path)))) from None
    except json.JSONDecodeError as exc:
        lines = text.splitlines()
        line = lines[exc.lineno - 1] if 0 < exc.lineno <= len(lines) else None
        col = exc.colno
        if line is not None and len(line) > 200:  # compact JSON is one long line: show a window
            start = max(exc.colno - 60, 0)
            line, col = line[start : start + 120], exc.colno - start
        raise PccError(
            f"invalid JSON: {exc.msg} (expected {what})", Location(str(Path(path)), exc.lineno, col), source_line=line
        ) from None
