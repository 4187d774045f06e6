"""A one-line progress bar on stderr for feature extraction and training epochs.

It draws only when asked to and when its stream is a terminal (``pcc train --quiet`` turns it off), so logs,
pipes and tests see nothing; redraws are throttled to ten a second.
"""

from __future__ import annotations

import sys
import time
from typing import TextIO

__all__ = ["Progress", "progress_wanted"]


def progress_wanted(quiet: bool, stream: TextIO | None = None) -> bool:
    """Bars are drawn when not ``quiet`` and ``stream`` (default stderr) is a terminal."""
    stream = sys.stderr if stream is None else stream
    isatty = getattr(stream, "isatty", None)
    return not quiet and bool(isatty and isatty())


class Progress:
    """``Progress(total, "features")``; ``update(n)`` after each chunk; ``close()`` clears the line."""

    WIDTH = 30

    def __init__(self, total: int, label: str, enabled: bool = True, stream: TextIO | None = None) -> None:
        self.total = max(int(total), 1)
        self.label = label
        self.stream = sys.stderr if stream is None else stream
        self.enabled = bool(enabled)
        self.done = 0
        self._t0 = time.perf_counter()
        self._last = 0.0
        self._drawn = False

    def update(self, n: int = 1) -> None:
        self.done = min(self.done + int(n), self.total)
        if not self.enabled:
            return
        now = time.perf_counter()
        if now - self._last < 0.1 and self.done < self.total:
            return
        self._last = now
        frac = self.done / self.total
        filled = int(frac * self.WIDTH)
        bar = "#" * filled + "-" * (self.WIDTH - filled)
        elapsed = now - self._t0
        eta = elapsed / frac - elapsed if frac > 0 else 0.0
        self.stream.write(f"\r{self.label} [{bar}] {self.done}/{self.total} {elapsed:.1f}s, {eta:.1f}s left ")
        self.stream.flush()
        self._drawn = True

    def close(self) -> None:
        if self.enabled and self._drawn:
            self.stream.write("\r\x1b[2K")
            self.stream.flush()
            self._drawn = False

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
