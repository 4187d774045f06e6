"""torchvision for the compile tests, imported without leaving it on ``sys.path``.

The package index's torchvision wheel is the CUDA build, whose compiled operators do not load with the CPU torch
of the test extras, and an installed torchvision that fails to import breaks transformers' models for every other
test; so .ci/run puts it beside the environment (``pip install --no-deps --target .extra/torchvision``) and the
tests that need it import it from there through :func:`import_torchvision`."""

from __future__ import annotations

import importlib.util
import sys
import types
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
TORCHVISION_DIR = ROOT / ".extra" / "torchvision"


def import_torchvision() -> types.ModuleType:
    """torchvision from the environment, else from :data:`TORCHVISION_DIR` (taken off ``sys.path`` again, so no
    other test sees it); skips the calling module where neither has it.  The model definitions are plain Python:
    where the wheel's compiled operators belong to another torch build, the import goes on without registering
    their meta kernels (where it fails)."""
    if importlib.util.find_spec("torchvision") is None:
        if not TORCHVISION_DIR.is_dir():
            pytest.skip(
                f"torchvision is not installed (.ci/run puts it in {TORCHVISION_DIR.relative_to(ROOT)})",
                allow_module_level=True,
            )
        sys.path.insert(0, str(TORCHVISION_DIR))
    try:
        try:
            import torchvision
        except RuntimeError as exc:
            if "torchvision::" not in str(exc):
                raise
            for name in [m for m in sys.modules if m == "torchvision" or m.startswith("torchvision.")]:
                del sys.modules[name]
            sys.modules["torchvision._meta_registrations"] = types.ModuleType("torchvision._meta_registrations")
            import torchvision
        import torchvision.models  # noqa: F401  (everything the tests use, loaded before the path goes)
    finally:
        if str(TORCHVISION_DIR) in sys.path:
            sys.path.remove(str(TORCHVISION_DIR))
            for name in [m for m in sys.modules if m == "torchvision" or m.startswith("torchvision.")]:
                del sys.modules[name]  # the caller keeps its reference; others import no torchvision
    return torchvision
