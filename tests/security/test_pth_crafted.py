"""Crafted ``.pth`` files: a pickle that would run code is refused by ``pcc convert`` and the code never runs."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import pytest
from security_helpers import assert_one_diagnostic, run_cli

torch = pytest.importorskip("torch")


class _Payload:
    """Unpickling this calls ``os.system`` to create the marker file."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):  # noqa: ANN204
        return (os.system, (f"touch {self.marker}",))


def _zip_pth(path: Path, marker: Path) -> None:
    torch.save({"fc.weight": torch.zeros(2, 2), "extra": _Payload(marker)}, path)


def _legacy_pth(path: Path, marker: Path) -> None:
    path.write_bytes(pickle.dumps({"fc.weight": _Payload(marker)}))


def _whole_module_with_payload(path: Path, marker: Path) -> None:
    model = torch.nn.Sequential(torch.nn.Linear(2, 2))
    model.hook = _Payload(marker)  # an attribute the unpickler would have to construct
    torch.save(model, path)


@pytest.mark.parametrize("make", [_zip_pth, _legacy_pth, _whole_module_with_payload], ids=lambda f: f.__name__)
def test_a_pickle_that_runs_code_is_refused_and_never_runs(tmp_path: Path, make) -> None:  # noqa: ANN001
    marker = tmp_path / "marker"
    pth = tmp_path / "model.pth"
    make(pth, marker)
    rc, _, err = run_cli(["convert", pth, "-o", tmp_path / "out.json", "--input-shape", "1,2"])
    assert_one_diagnostic(rc, err, r"model\.pth")
    assert not marker.exists(), "the pickle's code ran"
    assert not (tmp_path / "out.json").exists()
