"""Shared fixtures of the trainer tests."""

from __future__ import annotations

import numpy as np
import pytest


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(1234)


@pytest.fixture(autouse=True)
def _in_tmp(tmp_path, monkeypatch):
    """Every test runs in its own temporary folder (the CLI writes relative paths)."""
    monkeypatch.chdir(tmp_path)
    yield
