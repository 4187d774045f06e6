"""Fixtures shared by the runtime tests."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest


@pytest.fixture()
def blas_spy(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[object, list[int]]]:
    """``(control, seen)``: BLAS set to two threads through threadpoolctl's first control, and ``np.matmul``
    recording in ``seen`` the thread count each call ran with; the caller's count is restored afterwards. Skips
    where threadpoolctl sees no BLAS library."""
    from pcc.runtime import tensor_base

    controls = tensor_base.blas_controls()
    if not controls:
        pytest.skip("threadpoolctl sees no BLAS library")
    control, seen, matmul = controls[0], [], np.matmul

    def spy(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        seen.append(control.get_num_threads())
        return matmul(*args, **kwargs)

    before = control.get_num_threads()
    control.set_num_threads(2)
    monkeypatch.setattr(np, "matmul", spy)
    try:
        yield control, seen
    finally:
        control.set_num_threads(before)
