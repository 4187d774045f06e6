"""``torch.load`` of a ``.pt``/``.pth`` file with every size checked before torch allocates it.

``torch.load(weights_only=True)`` runs no code outside its allow-list, but an allow-listed class may be
*called*: a 1 KB pickle that calls ``torch.nn.Linear(8000, 8000)`` makes torch allocate and initialise 64 M
weights.  :func:`safe_torch_load` therefore

- refuses anything but the zip serialization format (the legacy format declares storage sizes that torch
  allocates before reading) and checks the zip's members like any archive (count, sizes, inflation ratio);
- allows each layer class under its own name but as a subclass whose constructor refuses to run: a saved
  module is restored from its stored state (``__new__`` and ``__setstate__``, sizes bounded by the checked
  records), never constructed, so a call can only come from a crafted file.
"""

from __future__ import annotations

import zipfile
from pathlib import Path
from typing import Any

from pcc import limits
from pcc.diagnostics import Location, PccError

__all__ = ["safe_torch_load"]


def _checked(cls: type, path: Path) -> type:
    """``cls`` for the unpickler: restoring a saved instance works, calling the class (allocating) is refused."""

    def __init__(self: Any, *args: Any, **kwargs: Any) -> None:  # noqa: N807
        shown = ", ".join([*map(repr, args), *(f"{k}={v!r}" for k, v in kwargs.items())])[:120]
        raise PccError(
            f"the file calls {cls.__name__}({shown}) instead of storing a module's weights; torch.save never "
            "writes that, and pcc does not let a file allocate and initialise layers",
            Location(str(path)),
        )

    return type(
        cls.__name__, (cls,), {"__init__": __init__, "__module__": cls.__module__, "__qualname__": cls.__qualname__}
    )


def _check_zip(path: Path) -> None:
    lims = limits.current()
    loc = Location(str(path))
    try:
        zf = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError, EOFError, ValueError):
        raise PccError(
            "not a zip-format torch file; pcc reads only torch.save's default (zip) format, whose sizes can be "
            "checked before loading",
            loc,
        ) from None
    with zf:
        infos = zf.infolist()
        if len(infos) > lims.max_archive_members:
            raise PccError(f"{len(infos):,} archive members, more than the {lims.max_archive_members:,} allowed", loc)
        total = 0
        for info in infos:
            total += info.file_size
            if total > lims.max_archive_bytes:
                raise PccError(f"the archive inflates past {lims.max_archive_bytes:,} bytes", loc)
            if info.compress_type != zipfile.ZIP_STORED and (
                info.file_size > 4096 + info.compress_size * lims.max_compression_ratio
            ):
                raise PccError(f"member {info.filename!r} inflates {info.compress_size:,} bytes to "
                               f"{info.file_size:,} (a zip bomb?)", loc)  # fmt: skip
            if info.filename.endswith("/data.pkl") and info.file_size > 64 << 20:
                raise PccError(f"member {info.filename!r}: a {info.file_size:,}-byte pickle", loc)


def safe_torch_load(path: str | Path, classes: list[type]) -> Any:
    """``torch.load(path, weights_only=True)`` allowing ``classes``, with the checks of the module docstring."""
    import torch

    p = Path(path)
    if not p.is_file():
        raise PccError("PyTorch model file not found" if not p.exists() else "not a file", Location(str(p)))
    _check_zip(p)
    allowed = [(_checked(c, p), f"{c.__module__}.{c.__qualname__}") for c in classes]
    with torch.serialization.safe_globals(allowed):
        return torch.load(str(p), map_location="cpu", weights_only=True)
