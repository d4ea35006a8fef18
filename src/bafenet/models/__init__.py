"""Models of the project (BAFE-Net); see `bafenet.models.bafenet`.

Importing this package registers BAFE-Net with transformers' Auto classes (`bafenet.models.loading`), so
``AutoModelForObjectDetection.from_pretrained(folder)`` builds the installed classes without ``trust_remote_code``.
"""

from .bafenet import *  # noqa: F403
from .bafenet import __all__  # noqa: F401
from .loading import register_auto_classes

register_auto_classes()
