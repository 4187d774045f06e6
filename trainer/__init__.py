"""pcc.trainer: pentary neural-network training with quantization-aware training (the seed's training tools).

Modules: :mod:`~pcc.trainer.layers` (layers, forward/backward), :mod:`~pcc.trainer.model` (``PentaryModel``),
:mod:`~pcc.trainer.optim` (SGD, Adam, schedules), :mod:`~pcc.trainer.trainer` (``PentaryTrainer``,
``LossFunction``), :mod:`~pcc.trainer.multimodal` (text/image/audio processors and fusion),
:mod:`~pcc.trainer.quantizer` (``ModelQuantizer``, ``PyTorchToPentaryConverter``), :mod:`~pcc.trainer.convert`
(ONNX and ``.pt2`` import), :mod:`~pcc.trainer.data` (datasets), :mod:`~pcc.trainer.model_format` (model JSON),
:mod:`~pcc.trainer.cli` (``pcc train``, ``pcc convert``, ``pcc quantize``).  The seed's module names
(``pentary_trainer``, ``pentary_multimodal``, ``pentary_quantizer``, ``pentary_nn_layers``) re-export them.
"""

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
from pcc.trainer.model import PentaryModel
from pcc.trainer.trainer import LossFunction, PentaryTrainer

__all__ = [
    "PentaryModel",
    "PentaryTrainer",
    "LossFunction",
    "PentaryLinear",
    "PentaryConv2D",
    "PentaryReLU",
    "PentaryMaxPool2D",
    "PentaryBatchNorm",
    "Flatten",
    "Dropout",
]
