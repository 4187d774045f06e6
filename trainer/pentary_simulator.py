"""Seed name ``pentary_simulator``: the pentary processor that runs a trained model (see
:mod:`pcc.runtime.processor`)."""

from __future__ import annotations

from pcc.runtime.processor import PentaryProcessor

__all__ = ["PentaryProcessor"]
