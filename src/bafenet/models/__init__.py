"""Models of the project (BAFE-Net)."""

from .bafenet import (
    BafeNetConfig,
    BafeNetForObjectDetection,
    BafeNetImageProcessor,
    BafeNetObjectDetectionOutput,
    BafeNetPreTrainedModel,
)

__all__ = [
    "BafeNetConfig",
    "BafeNetForObjectDetection",
    "BafeNetImageProcessor",
    "BafeNetObjectDetectionOutput",
    "BafeNetPreTrainedModel",
]
