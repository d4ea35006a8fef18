"""BAFE-Net as a transformers model: `BafeNetConfig`, `BafeNetForObjectDetection`, `BafeNetImageProcessor`.

The three module files are self-contained (relative imports only), so `save_pretrained` ships them as remote code.
"""

from .configuration_bafenet import BafeNetConfig
from .image_processing_bafenet import BafeNetImageProcessor
from .modeling_bafenet import BafeNetForObjectDetection, BafeNetObjectDetectionOutput, BafeNetPreTrainedModel

__all__ = [
    "BafeNetConfig",
    "BafeNetForObjectDetection",
    "BafeNetImageProcessor",
    "BafeNetObjectDetectionOutput",
    "BafeNetPreTrainedModel",
]
