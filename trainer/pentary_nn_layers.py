"""Seed name ``pentary_nn_layers``: the layers (see :mod:`pcc.trainer.layers`)."""

from __future__ import annotations

from pcc.trainer.layers import (
    Dropout,
    Flatten,
    PentaryBatchNorm,
    PentaryConv2D,
    PentaryLinear,
    PentaryMaxPool2D,
    PentaryReLU,
)

__all__ = [
    "PentaryLinear",
    "PentaryConv2D",
    "PentaryReLU",
    "PentaryMaxPool2D",
    "PentaryBatchNorm",
    "Flatten",
    "Dropout",
]
