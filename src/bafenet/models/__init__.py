"""Models of the project (BAFE-Net); see `bafenet.models.bafenet`."""

from .bafenet import *  # noqa: F403
from .bafenet import __all__  # noqa: F401
