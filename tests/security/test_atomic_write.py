"""The atomic writer: modes kept or taken from the umask, symlinks written through, killed writers cleaned up."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from pcc.diagnostics import PccError, atomic_write


def test_new_file_honours_umask(tmp_path: Path) -> None:
    old = os.umask(0o027)
    try:
        atomic_write(tmp_path / "a.txt", "x")
    finally:
        os.umask(old)
    assert (tmp_path / "a.txt").stat().st_mode & 0o777 == 0o640


def test_existing_mode_kept(tmp_path: Path) -> None:
    f = tmp_path / "b.bin"
    f.write_bytes(b"old")
    os.chmod(f, 0o644)
    atomic_write(f, b"new")
    assert f.read_bytes() == b"new" and f.stat().st_mode & 0o777 == 0o644
    os.chmod(f, 0o600)
    atomic_write(f, "text")
    assert f.read_text() == "text" and f.stat().st_mode & 0o777 == 0o600


def test_symlink_written_through(tmp_path: Path) -> None:
    real = tmp_path / "real.pasm"
    real.write_text("old")
    link = tmp_path / "link.pasm"
    link.symlink_to(real)
    atomic_write(link, "new")
    assert link.is_symlink() and real.read_text() == "new"


def test_directory_refused_naming_the_path(tmp_path: Path) -> None:
    with pytest.raises(PccError, match="is a directory"):
        atomic_write(tmp_path, "x")


def test_write_error_names_the_output(tmp_path: Path) -> None:
    ro = tmp_path / "ro"
    ro.mkdir()
    os.chmod(ro, 0o500)
    try:
        if os.access(ro, os.W_OK):  # running as root: permissions are not enforced
            pytest.skip("permission bits are not enforced for this user")
        with pytest.raises(OSError) as info:
            atomic_write(ro / "out.pasm", "x")
        assert info.value.filename == str(ro / "out.pasm")
    finally:
        os.chmod(ro, 0o700)


def test_write_error_on_missing_parent_file(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")
    with pytest.raises(OSError) as info:
        atomic_write(tmp_path / "file" / "out.pasm", "x")
    assert info.value.filename == str(tmp_path / "file" / "out.pasm")


def test_killed_writer_leaves_nothing_after_next_write(tmp_path: Path) -> None:
    out = tmp_path / "big.bin"
    code = (
        "import sys, pcc.diagnostics as d\n"
        "import os\n"
        "orig = os.fdopen\n"
        "def fdopen(*a, **k):\n"
        "    f = orig(*a, **k)\n"
        "    print('writing', flush=True)\n"
        "    import time; time.sleep(60)\n"
        "    return f\n"
        "os.fdopen = fdopen\n"
        f"d.atomic_write({str(out)!r}, b'x' * 10)\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "writing"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    stale = [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]
    assert len(stale) == 1 and f".{proc.pid}." in stale[0].name
    atomic_write(out, b"fresh")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["big.bin"]
    assert out.read_bytes() == b"fresh"
