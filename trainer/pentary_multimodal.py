"""Seed name ``pentary_multimodal``: multimodal processors and fusion (see :mod:`pcc.trainer.multimodal`)."""

from __future__ import annotations

from pcc.trainer.multimodal import AudioProcessor, ImageProcessor, MultimodalFusion, TextProcessor

__all__ = ["TextProcessor", "ImageProcessor", "AudioProcessor", "MultimodalFusion"]
