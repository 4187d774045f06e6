"""Reading ``.npy`` and ``.npz`` files from outside: the header is checked before the data is read.

numpy's ``np.load`` trusts the header: a 128-byte ``.npy`` that claims a terabyte makes it try to allocate a
terabyte, an empty file raises ``EOFError`` (which the CLI framework turns into a bare "Aborted."), and random
bytes get the advice to load them with ``allow_pickle=True``.  :func:`load_npy` and :func:`load_npz` read the
header themselves, check dtype (numbers and booleans only, never objects), rank and byte size against
:mod:`pcc.limits` and against the bytes the file really holds, and raise one :class:`PccError` naming the file.
"""

from __future__ import annotations

import os
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import IO

import numpy as np

from pcc import limits
from pcc.diagnostics import Location, PccError

__all__ = ["Npz", "load_npy", "load_npz", "read_npy_stream"]

_MAGIC = b"\x93NUMPY"
#: dtype kinds pcc reads: booleans, signed/unsigned integers, floats
NUMERIC_KINDS = "biuf"


def _err(path: str, what: str, message: str) -> PccError:
    return PccError(f"{what}: {message}" if what else message, Location(path))


def read_npy_stream(
    f: IO[bytes],
    size: int,
    path: str,
    what: str = "",
    *,
    kinds: str = NUMERIC_KINDS,
    check: Callable[[tuple[int, ...], np.dtype], None] | None = None,
) -> np.ndarray:
    """One array from the ``.npy`` bytes in the seekable ``f`` (``size`` bytes long), checked as the module says."""
    magic = f.read(8)
    if len(magic) < 8 or magic[:6] != _MAGIC:
        if not magic:
            raise _err(path, what, "the file is empty; expected a .npy array")
        raise _err(path, what, "not a .npy array (no NUMPY magic at the start)")
    major = magic[6]
    if major not in (1, 2, 3):
        raise _err(path, what, f"unsupported .npy format version {major}.{magic[7]}")
    reader = np.lib.format.read_array_header_1_0 if major == 1 else np.lib.format.read_array_header_2_0
    try:
        shape, fortran, dtype = reader(f, max_header_size=10_000)
    except Exception as exc:  # numpy raises ValueError/SyntaxError/... for a malformed header
        detail = str(exc).split(" at 0x")[0][:200]
        raise _err(path, what, f"malformed .npy header ({type(exc).__name__}: {detail})") from None
    header_end = f.tell()
    if dtype.hasobject:
        raise _err(path, what, "holds Python objects (a pickle); pcc reads only number arrays")
    if dtype.kind not in kinds or dtype.fields is not None or dtype.subdtype is not None:
        allowed = {"b": "bool", "i": "int", "u": "uint", "f": "float", "c": "complex"}
        names = "/".join(allowed[k] for k in kinds if k in allowed)
        raise _err(path, what, f"dtype {dtype} is not supported; expected a real number array ({names})")
    dims = limits.check_shape(shape, dtype.itemsize, f"{what or 'array'} of shape {shape}", Location(path))
    if check is not None:
        check(dims, dtype)
    count = int(np.prod(dims, dtype=object)) if dims else 1
    need = count * dtype.itemsize
    have = size - header_end
    if have < need:
        raise _err(path, what, f"truncated: the header declares shape {shape} ({need:,} bytes) but "
                               f"{max(have, 0):,} bytes of data follow")  # fmt: skip
    data = f.read(need)
    if len(data) != need:
        raise _err(path, what, f"truncated: {len(data):,} of the {need:,} data bytes its header declares")
    arr = np.frombuffer(data, dtype=dtype, count=count).copy()
    return arr.reshape(dims, order="F" if fortran else "C")


def load_npy(path: str | os.PathLike[str], what: str = "", *, kinds: str = NUMERIC_KINDS) -> np.ndarray:
    """Read one ``.npy`` array after checking its header (module docstring); ``what`` prefixes messages."""
    p = Path(path)
    if not p.is_file():
        raise _err(str(p), what, "no such file" if not p.exists() else "not a file")
    try:
        size = p.stat().st_size
        with open(p, "rb") as f:
            head = f.read(4)
            f.seek(0)
            if head == b"PK\x03\x04":
                raise _err(str(p), what, "holds several arrays (an .npz archive); give one .npy per input")
            return read_npy_stream(f, size, str(p), what, kinds=kinds)
    except OSError as exc:
        raise _err(str(p), what, f"cannot read: {exc.strerror or exc}") from None


class Npz:
    """An ``.npz`` archive whose members are checked (count, sizes, inflation ratio) on opening; each array is
    read on demand, its header checked (and offered to ``check``) before its data is inflated."""

    def __init__(self, path: str | os.PathLike[str], what: str = "", *, kinds: str = NUMERIC_KINDS) -> None:
        p = Path(path)
        self.path, self.what, self.kinds = str(p), what, kinds
        if not p.is_file():
            raise _err(self.path, what, "no such file" if not p.exists() else "not a file")
        lims = limits.current()
        try:
            self.zf = zipfile.ZipFile(p)
        except (zipfile.BadZipFile, OSError, EOFError, ValueError) as exc:
            with open(p, "rb") as f:
                single = f.read(6) == _MAGIC
            if single:
                raise _err(self.path, what, "is a single .npy array; expected an .npz archive (np.savez)") from None
            raise _err(self.path, what, f"is not a valid .npz archive ({exc})") from None
        infos = self.zf.infolist()
        if len(infos) > lims.max_archive_members:
            raise _err(self.path, what, f"{len(infos):,} members, more than the {lims.max_archive_members:,} allowed")
        self.members: dict[str, zipfile.ZipInfo] = {}
        total = 0
        for info in infos:
            member = self._member(info.filename)
            if not info.filename.endswith(".npy"):
                raise _err(self.path, "", f"{member} is not an .npy array")
            total += info.file_size
            if info.file_size > lims.max_archive_bytes or total > lims.max_archive_bytes:
                raise _err(self.path, "", f"{member}: the archive inflates past {lims.max_archive_bytes:,} bytes")
            if (
                info.compress_type != zipfile.ZIP_STORED
                and info.file_size > 4096 + info.compress_size * lims.max_compression_ratio
            ):
                raise _err(self.path, "", f"{member} inflates {info.compress_size:,} bytes to {info.file_size:,} "
                                          "(a zip bomb?)")  # fmt: skip
            key = info.filename[: -len(".npy")]
            if key in self.members:
                raise _err(self.path, "", f"{member} appears twice")
            self.members[key] = info

    def _member(self, name: str) -> str:
        return f"{self.what + ': ' if self.what else ''}member {name!r}"

    @property
    def files(self) -> list[str]:
        return list(self.members)

    def read(self, key: str, check: Callable[[tuple[int, ...], np.dtype], None] | None = None) -> np.ndarray:
        info = self.members[key]
        member = self._member(info.filename)
        try:
            with self.zf.open(info) as f:
                return read_npy_stream(f, info.file_size, self.path, member, kinds=self.kinds, check=check)
        except (zipfile.BadZipFile, OSError, EOFError, ValueError, NotImplementedError) as exc:
            raise _err(self.path, "", f"{member} cannot be read ({exc})") from None

    def close(self) -> None:
        self.zf.close()

    def __enter__(self) -> Npz:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def load_npz(path: str | os.PathLike[str], what: str = "", *, kinds: str = NUMERIC_KINDS) -> dict[str, np.ndarray]:
    """All arrays of an ``.npz`` by name, each member's sizes and header checked before it is inflated."""
    with Npz(path, what, kinds=kinds) as z:
        return {k: z.read(k) for k in z.files}
