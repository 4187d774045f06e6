"""Seed name ``pentary_simulator``: the pentary processor that runs a trained model (see
:mod:`pcc.drivers.processor`)."""

from __future__ import annotations

from pcc.drivers.processor import PentaryProcessor

__all__ = ["PentaryProcessor"]
