"""Seed name ``pentary_quantizer``: quantization and conversion (see :mod:`pcc.trainer.quantizer`).

Importing this module also lets ``torch.load`` (weights-only, the default) unpickle whole modules made of the
plain layer classes the converter supports (when torch is installed), so that the seed's
``torch.load('model.pth')`` followed by ``PyTorchToPentaryConverter().convert(...)`` works as written.
"""

from __future__ import annotations

import importlib.util

from pcc.trainer.convert import onnx_to_model, pt2_to_model
from pcc.trainer.quantizer import ModelQuantizer, PyTorchToPentaryConverter, allow_torch_layer_classes

__all__ = ["ModelQuantizer", "PyTorchToPentaryConverter", "onnx_to_model", "pt2_to_model"]

if importlib.util.find_spec("torch") is not None:
    allow_torch_layer_classes()
