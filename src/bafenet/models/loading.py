"""The one way bafenet loads a model folder or Hub repo: the package's own classes, the folder's code only on request.

A saved BAFE-Net carries its code (``modeling_bafenet.py`` and friends) so that people without this package can load
it with ``trust_remote_code=True``. bafenet never needs that code: importing `bafenet.models` registers
`BafeNetConfig`, `BafeNetForObjectDetection` and `BafeNetImageProcessor` with the Auto classes, and `load_model` /
`load_processor` build the installed classes, so no ``.py`` file of the folder is imported or run. Only
``trust_remote_code=True`` (``--trust-remote-code``) hands the folder's code to transformers, for a model that is not
a BAFE-Net or whose code the user wants to run. Weights are read from ``*.safetensors`` only: nothing is unpickled.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..outputs import UserError

__all__ = ["MODEL_TYPE", "register_auto_classes", "load_config", "load_model", "load_processor",
           "check_weights_file"]

MODEL_TYPE = "bafenet"


def register_auto_classes() -> None:
    """Map ``model_type == "bafenet"`` to the package's classes in transformers' Auto classes (idempotent)."""
    from transformers import AutoConfig, AutoImageProcessor, AutoModel, AutoModelForObjectDetection

    from .bafenet import BafeNetConfig, BafeNetForObjectDetection, BafeNetImageProcessor

    AutoConfig.register(MODEL_TYPE, BafeNetConfig, exist_ok=True)
    AutoModel.register(BafeNetConfig, BafeNetForObjectDetection, exist_ok=True)
    AutoModelForObjectDetection.register(BafeNetConfig, BafeNetForObjectDetection, exist_ok=True)
    AutoImageProcessor.register(BafeNetConfig, slow_image_processor_class=BafeNetImageProcessor, exist_ok=True)


def _remote(auto_class: str, model: str | Path, option: str, settings: dict[str, Any], **kwargs: Any) -> Any:
    """Load ``model`` through its own code: the class its ``auto_map`` names for ``auto_class`` (transformers'
    dynamic-module loader; the Auto class itself would pick the registered package class), else the Auto class with
    ``trust_remote_code=True``. A syntax error in that code is one line."""
    import transformers
    from transformers.dynamic_module_utils import get_class_from_dynamic_module

    reference = (settings.get("auto_map") or {}).get(auto_class)
    try:
        if reference is None:
            return getattr(transformers, auto_class).from_pretrained(str(model), trust_remote_code=True, **kwargs)
        cls = get_class_from_dynamic_module(reference, str(model), revision=kwargs.get("revision"))
        return cls.from_pretrained(str(model), **kwargs)
    except SyntaxError as error:
        name = Path(error.filename or "").name
        name = name if name.endswith(".py") else f"{(reference or '?').split('.')[0]}.py"
        raise UserError(f"{option} {model}: {name} line {error.lineno}: syntax error in the model's code "
                        f"({error.msg}); restore it from the model's source") from None


def _settings(model: str | Path, revision: str | None, processor: bool = False) -> dict[str, Any]:
    """``config.json`` (or ``preprocessor_config.json``) of ``model`` as a dict, read as JSON (no code runs)."""
    from .bafenet import BafeNetConfig, BafeNetImageProcessor

    reader = BafeNetImageProcessor.get_image_processor_dict if processor else BafeNetConfig.get_config_dict
    return reader(str(model), revision=revision)[0]


def _check_bafenet(settings: dict[str, Any], model: str | Path, option: str) -> None:
    """Refuse (one line) a model whose ``config.json`` is not a BAFE-Net one: only its own code could load it."""
    model_type = settings.get("model_type")
    if model_type != MODEL_TYPE:
        raise UserError(f"{option} {model}: model_type {model_type!r} is not {MODEL_TYPE!r}, so only the model's own "
                        "code can load it; pass --trust-remote-code if you trust that code")


def load_config(model: str | Path, *, trust_remote_code: bool = False, revision: str | None = None,
                option: str = "--model") -> Any:
    """The config of ``model`` (`BafeNetConfig` unless ``trust_remote_code``)."""
    settings = _settings(model, revision)
    if trust_remote_code:
        return _remote("AutoConfig", model, option, settings, revision=revision)
    from .bafenet import BafeNetConfig

    _check_bafenet(settings, model, option)
    return BafeNetConfig.from_pretrained(str(model), revision=revision)


def load_model(model: str | Path, *, trust_remote_code: bool = False, revision: str | None = None,
               option: str = "--model", **kwargs: Any) -> Any:
    """``model`` as `BafeNetForObjectDetection` (its own code only with ``trust_remote_code``), from safetensors.

    ``kwargs`` go to ``from_pretrained`` (``config=``, ``dtype=``).
    """
    settings = _settings(model, revision)
    kwargs.update(revision=revision, use_safetensors=True)
    if trust_remote_code:
        return _remote("AutoModelForObjectDetection", model, option, settings, **kwargs)
    from .bafenet import BafeNetForObjectDetection

    _check_bafenet(settings, model, option)
    return BafeNetForObjectDetection.from_pretrained(str(model), **kwargs)


def load_processor(model: str | Path, *, trust_remote_code: bool = False, revision: str | None = None,
                   option: str = "--model") -> Any:
    """The image processor saved with ``model`` (`BafeNetImageProcessor` unless ``trust_remote_code``)."""
    if trust_remote_code:
        settings = _settings(model, revision, processor=True)
        return _remote("AutoImageProcessor", model, option, settings, revision=revision)
    from .bafenet import BafeNetImageProcessor

    _check_bafenet(_settings(model, revision), model, option)
    return BafeNetImageProcessor.from_pretrained(str(model), revision=revision)


def check_weights_file(source: str, option: str = "--backbone-weights") -> None:
    """Refuse (one line) a local weights file that is missing or is not a state dict of tensors (``.safetensors``,
    or a ``.pth``/``.pt`` read with ``torch.load(weights_only=True)``, which builds no other object)."""
    import torch

    from .bafenet.modeling_bafenet import read_backbone_state_dict

    if not Path(source).expanduser().is_file():
        raise UserError(f"{option} {source}: no such file; pass a local timm or torchvision state dict "
                        "(.pth/.pt/.safetensors)")
    try:
        state = read_backbone_state_dict(source, "")
        ok = bool(state) and all(torch.is_tensor(v) for v in state.values())
    except Exception:  # UnpicklingError, KeyError, IndexError, SafetensorError... for a file that is not weights
        ok = False
    if not ok:
        raise UserError(f"{option} {source}: not a state dict of tensors; pass a timm or torchvision weights file "
                        "(.pth/.pt/.safetensors)")
