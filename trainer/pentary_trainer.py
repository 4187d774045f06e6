"""Seed name ``pentary_trainer``: the training framework (see :mod:`pcc.trainer.trainer`)."""

from __future__ import annotations

from pcc.trainer.model import PentaryModel
from pcc.trainer.optim import SGD, Adam
from pcc.trainer.trainer import LossFunction, PentaryTrainer, one_hot

__all__ = ["PentaryModel", "PentaryTrainer", "LossFunction", "SGD", "Adam", "one_hot"]
