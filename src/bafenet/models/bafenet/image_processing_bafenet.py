"""Image processor of BAFE-Net: images (and COCO annotations, sky masks) in, `pixel_values`/`labels` out; detections
and sky masks back in original pixels.

Self-contained (third-party imports only plus the sibling config and tiling modules), so `save_pretrained` ships it as remote code.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torchvision.ops import batched_nms
from transformers.feature_extraction_utils import BatchFeature
from transformers.image_processing_utils import BaseImageProcessor
from transformers.utils import logging

from .configuration_bafenet import INPUT_MODES
from .tiling_bafenet import (DEFAULT_IMAGE_SIZE, DEFAULT_STRIDES, DEFAULT_TILE_OVERLAP, DEFAULT_TILE_SCALE,
                             scaled_size, tile_geometry, window_canvas)

logger = logging.get_logger(__name__)

# Input normalisation presets: (image_mean, image_std, rescale_factor, channel_order). `pixel = (x * rescale_factor -
# mean) / std` with x in 0..255, channels in `channel_order` (grey input is replicated to 3 channels first).
NORMALIZATION_PRESETS: dict[str, tuple[list[float], list[float], float, str]] = {
    # The original (mmdet caffe style): BGR, subtract the caffe mean on the 0..255 scale, no division.
    "caffe": ([102.9801, 115.9465, 122.7717], [1.0, 1.0, 1.0], 1.0, "bgr"),
    # torchvision / timm ImageNet weights (a deliberate deviation from the original).
    "imagenet": ([0.485, 0.456, 0.406], [0.229, 0.224, 0.225], 1 / 255, "rgb"),
    # EfficientNet-Lite (TF) weights: mean 0.5, std 0.5 on the 0..1 scale.
    "lite": ([0.5, 0.5, 0.5], [0.5, 0.5, 0.5], 1 / 255, "rgb"),
}


def default_normalization(backbone: str) -> str:
    """The preset matching a backbone's weights: `"lite"` for EfficientNet-Lite, else `"caffe"` (the original's)."""
    return "lite" if "efficientnet_lite" in backbone else "caffe"

# Standard arguments of transformers image processors that mean nothing here (no padding, no masks, images are read
# as they come): accepted and ignored with a warning, so code written for DETR-style processors runs unchanged.
IGNORED_ARGUMENTS = ("do_pad", "pad_size", "do_convert_annotations", "do_convert_rgb", "data_format",
                     "input_data_format", "resample", "masks_path", "return_segmentation_masks", "device",
                     "do_center_crop", "crop_size", "disable_grouping")
ImageLike = Any  # PIL.Image.Image | np.ndarray (H, W) / (H, W, 3|4) | torch.Tensor (H, W) / (3|4, H, W)


def _to_float_chw(image: ImageLike, index: int) -> torch.Tensor:
    """Convert one image to a float (3, H, W) tensor on the 0..255 scale in RGB order: grey is replicated, alpha dropped."""
    if hasattr(image, "mode") and hasattr(image, "convert"):  # PIL
        mode = image.mode
        if mode in ("I", "I;16", "F"):
            raise ValueError(f"images[{index}]: PIL mode {mode!r} (16/32-bit) is not supported; convert to 8-bit L/RGB")
        image = np.asarray(image.convert("L") if mode in ("1", "P", "LA") else image.convert("RGB") if mode != "L" else image)
    if isinstance(image, torch.Tensor):
        array = image.detach().cpu()
        if array.ndim == 3 and array.shape[0] in (1, 3, 4) and array.shape[-1] not in (1, 3, 4):
            array = array.permute(1, 2, 0)
        array = array.numpy()
    elif isinstance(image, np.ndarray):
        array = image
    else:
        raise TypeError(f"images[{index}]: expected a PIL image, numpy array or torch tensor, got {type(image).__name__}")
    if array.ndim == 3 and array.shape[-1] == 1:
        array = array[..., 0]
    if array.ndim == 2:
        array = np.repeat(array[..., None], 3, axis=-1)
    elif array.ndim == 3 and array.shape[-1] == 4:
        array = array[..., :3]
    if array.ndim != 3 or array.shape[-1] != 3:
        raise ValueError(f"images[{index}]: expected (H, W), (H, W, 3) or (H, W, 4), got shape {array.shape}")
    if array.dtype != np.uint8 and not np.issubdtype(array.dtype, np.floating):
        raise ValueError(f"images[{index}]: expected uint8 (or float on the 0..255 scale), got dtype {array.dtype}")
    return torch.from_numpy(np.array(array, dtype=np.float32)).permute(2, 0, 1)


def _to_mask(mask: ImageLike, index: int, shape: tuple[int, int]) -> torch.Tensor:
    """A (H, W) sky mask (bool, 0/1 or 0/255; PIL or array) as a float 0/1 tensor; must match the image size."""
    array = np.asarray(mask)
    if array.ndim == 3 and array.shape[-1] == 1:
        array = array[..., 0]
    if array.shape != shape:
        raise ValueError(f"sky_masks[{index}]: shape {array.shape} does not match its image {shape}")
    return torch.from_numpy(np.array(array > 0, dtype=np.float32))


class BafeNetImageProcessor(BaseImageProcessor):
    r"""Resize (no aspect ratio kept, bilinear) and normalise images for BAFE-Net; post-process its outputs.

    Args:
        size: `{"height": H, "width": W}` of the model input (512x512 in the original).
        do_resize: resize to `size` (resize mode) or scale by `tile_scale` (tiles mode); `False` for images already
            resized/augmented to the model input.
        input_mode: `"resize"` (the paper), `"tiles"`: each image is scaled by `tile_scale` with its aspect ratio
            kept and padded (raw value 0, bottom/right) to the batch's sliding-window grid (`tile_window`,
            `tile_overlap`); `image_sizes` (B, 2) gives each scaled image's extent, and the model runs the windows.
            Or `"zoom"`: each image at its own size, padded (raw value 0) by at least one pixel to a multiple of
            `size_divisor`; `image_sizes` gives each image's extent, and the model makes the coarse pass and scales
            the windows it selects by `tile_scale` itself.
        tile_scale, tile_window, tile_overlap: tiles and zoom modes: the scale of the images, the side of the sliding
            windows (`None`: the side of `size`, the model's image size, as in `BafeNetConfig`) and their overlap in
            pixels; `from_model_config` copies them from the model's config (`tiling_bafenet.tile_geometry`).
        size_divisor: zoom mode: the padded input is a multiple of it (the model's largest stride).
        do_rescale: multiply by `rescale_factor`; `False` for inputs already on the rescaled scale.
        do_normalize: subtract `image_mean`, divide by `image_std`.
        use_fast, backend: accepted for `AutoImageProcessor.from_pretrained(..., use_fast=/backend=)`; there is one
            implementation (torch), used whatever they say.
        normalization: preset (`NORMALIZATION_PRESETS`): `"caffe"` (the original: BGR, mean [102.98, 115.95, 122.77],
            std 1 on 0..255), `"imagenet"` or `"lite"` (mean 0.5, std 0.5 on 0..1); `image_mean`, `image_std`,
            `rescale_factor`, `channel_order` override it. Pixel = (x * rescale_factor - mean) / std, x in 0..255,
            channels in `channel_order` (grey input is replicated to 3 channels, alpha dropped).
        detection_threshold: default cut of `post_process_object_detection` on sigmoid(cls) (0.05, mmdet's
            `score_thr`); not the operating point (`config.operating_threshold`), which applies to final scores.
            (The processor owns normalisation and post-processing; `BafeNetConfig` does not save them.)
        pre_nms_top_k, nms_iou_threshold, max_detections: post-processing as the original (1000 per level, 0.5, 100).
    """

    model_input_names = ["pixel_values"]

    def __init__(
        self,
        size: dict[str, int] | None = None,
        do_resize: bool = True,
        do_normalize: bool = True,
        normalization: str = "caffe",
        do_rescale: bool = True,
        image_mean: Sequence[float] | None = None,
        image_std: Sequence[float] | None = None,
        rescale_factor: float | None = None,
        channel_order: str | None = None,
        detection_threshold: float | None = None,
        pre_nms_top_k: int = 1000,
        nms_iou_threshold: float = 0.5,
        max_detections: int = 100,
        input_mode: str = "resize",
        tile_scale: float = DEFAULT_TILE_SCALE,
        tile_window: int | None = None,
        tile_overlap: int = DEFAULT_TILE_OVERLAP,
        size_divisor: int = DEFAULT_STRIDES[-1],
        **kwargs: Any,
    ) -> None:
        kwargs.pop("use_fast", None), kwargs.pop("backend", None)  # one implementation (torch): nothing to choose
        old_name = kwargs.pop("score_threshold", None)  # the name of `detection_threshold` in older files
        if detection_threshold is None:
            detection_threshold = 0.05 if old_name is None else old_name
        super().__init__(**kwargs)
        if input_mode not in INPUT_MODES:
            raise ValueError(f"input_mode must be one of {INPUT_MODES}, got {input_mode!r}")
        self.input_mode = input_mode
        self.do_rescale = bool(do_rescale)
        if normalization not in NORMALIZATION_PRESETS:
            raise ValueError(f"unknown normalization {normalization!r}; choose one of {sorted(NORMALIZATION_PRESETS)}")
        mean, std, factor, order = NORMALIZATION_PRESETS[normalization]
        self.size = dict(size) if size is not None else {"height": DEFAULT_IMAGE_SIZE, "width": DEFAULT_IMAGE_SIZE}
        if set(self.size) != {"height", "width"}:
            raise ValueError(f"size must be {{'height': H, 'width': W}}, got {self.size}")
        self.tile_scale = float(tile_scale)
        self.tile_window = int(tile_window) if tile_window is not None else min(self.size.values())
        self.tile_overlap = int(tile_overlap)
        self.size_divisor = int(size_divisor)
        self.do_resize = do_resize
        self.do_normalize = do_normalize
        self.normalization = normalization
        self.image_mean = [float(v) for v in (image_mean if image_mean is not None else mean)]
        self.image_std = [float(v) for v in (image_std if image_std is not None else std)]
        self.rescale_factor = float(rescale_factor if rescale_factor is not None else factor)
        self.channel_order = channel_order or order
        if self.channel_order not in ("rgb", "bgr"):
            raise ValueError(f"channel_order must be 'rgb' or 'bgr', got {self.channel_order!r}")
        self.detection_threshold = float(detection_threshold)
        self.pre_nms_top_k = int(pre_nms_top_k)
        self.nms_iou_threshold = float(nms_iou_threshold)
        self.max_detections = int(max_detections)
        if len(self.image_mean) != 3 or len(self.image_std) != 3 or any(v <= 0 for v in self.image_std):
            raise ValueError(f"image_mean/image_std need 3 values (std > 0), got {self.image_mean}, {self.image_std}")
        if not 0 <= self.detection_threshold < 1 or not 0 < self.nms_iou_threshold <= 1:
            raise ValueError(f"detection_threshold must be in [0, 1) and nms_iou_threshold in (0, 1], got "
                             f"{self.detection_threshold}, {self.nms_iou_threshold}")
        if self.pre_nms_top_k < 1 or self.max_detections < 1:
            raise ValueError(f"pre_nms_top_k and max_detections must be >= 1, got {self.pre_nms_top_k}, "
                             f"{self.max_detections}")

    @classmethod
    def from_model_config(cls, config: Any, **kwargs: Any) -> "BafeNetImageProcessor":
        """The processor for a `BafeNetConfig`: its input geometry (`image_size`, tiles settings), the normalisation
        preset of its backbone (`default_normalization`), the processor settings an older config file carried
        (`config.processor_settings`), then `kwargs` (any argument of this class) winning."""
        params: dict[str, Any] = dict(
            size={"height": config.image_size, "width": config.image_size},
            normalization=default_normalization(config.backbone),
            input_mode=config.input_mode,
            **tile_geometry(config),
            size_divisor=config.strides[-1],
        )
        params.update(getattr(config, "processor_settings", {}))
        params.update(kwargs)
        return cls(**params)

    def with_settings(self, **settings: Any) -> "BafeNetImageProcessor":
        """A copy with `settings` (arguments of this class) changed; a new `normalization` preset replaces the
        mean, std, rescale factor and channel order unless they are given too."""
        import inspect

        names = [n for n in inspect.signature(type(self).__init__).parameters if n not in ("self", "kwargs")]
        current = {name: getattr(self, name) for name in names}
        if "normalization" in settings:
            for name in ("image_mean", "image_std", "rescale_factor", "channel_order"):
                current.pop(name)
        return type(self)(**{**current, **settings})

    # ---------------------------------------------------------------------------------------------- preprocessing
    def normalize_pixels(self, pixels: torch.Tensor, **overrides: Any) -> torch.Tensor:
        """(B, 3, H, W) RGB on 0..255 -> model input (channel order, rescale, mean/std of this processor, or the
        `do_rescale`, `rescale_factor`, `do_normalize`, `image_mean`, `image_std` given, None = this processor's)."""
        get = lambda name: getattr(self, name) if overrides.get(name) is None else overrides[name]  # noqa: E731
        copied = self.channel_order == "bgr"  # past the first new tensor, the steps run in place (large batches)
        if copied:
            pixels = pixels.flip(-3)
        if get("do_rescale"):
            factor = float(get("rescale_factor"))
            pixels, copied = pixels.mul_(factor) if copied else pixels * factor, True
        if not get("do_normalize"):
            return pixels
        mean = torch.tensor(get("image_mean"), dtype=pixels.dtype, device=pixels.device).reshape(-1, 1, 1)
        std = torch.tensor(get("image_std"), dtype=pixels.dtype, device=pixels.device).reshape(-1, 1, 1)
        return (pixels.sub_(mean) if copied else pixels - mean).div_(std)

    def preprocess(
        self,
        images: ImageLike | list[ImageLike],
        annotations: dict | list[dict] | None = None,
        sky_masks: ImageLike | list[ImageLike] | None = None,
        return_tensors: str | None = "pt",
        do_resize: bool | None = None,
        size: dict[str, int] | None = None,
        do_rescale: bool | None = None,
        rescale_factor: float | None = None,
        do_normalize: bool | None = None,
        image_mean: Sequence[float] | None = None,
        image_std: Sequence[float] | None = None,
        format: str | None = None,  # noqa: A002 - the transformers argument name
        **kwargs: Any,
    ) -> BatchFeature:
        """Images -> `pixel_values` (B, 3, H, W); COCO `annotations` (+ `sky_masks`) -> `labels` (list of dicts with
        `class_labels`, normalised cxcywh `boxes`, `sky_mask` (H, W) 0/1 at the model size, `orig_size` (h, w)).

        The standard arguments of transformers image processors override this processor's settings for one call
        (None: the processor's). `return_tensors`: "pt" (torch), "np" (numpy), None (lists: one (3, H, W) array per
        image). `format` must be "coco_detection" (the only format). Arguments meaningless here (`do_pad`,
        `data_format`, ...: `IGNORED_ARGUMENTS`) are ignored with a warning; any other is a TypeError."""
        ignored = sorted(k for k in kwargs if k in IGNORED_ARGUMENTS)
        if ignored:
            logger.warning_once(f"BafeNetImageProcessor ignores {ignored}: no meaning for this model's input")
        unknown = sorted(set(kwargs) - set(IGNORED_ARGUMENTS))
        if unknown:
            raise TypeError(f"BafeNetImageProcessor.preprocess got unexpected arguments {unknown}")
        if return_tensors not in ("pt", "np", None):
            raise ValueError(f"return_tensors must be 'pt', 'np' or None, got {return_tensors!r}")
        if format not in (None, "coco_detection") and str(getattr(format, "value", format)) != "coco_detection":
            raise ValueError(f"format must be 'coco_detection' (COCO xywh annotations), got {format!r}")
        pixel_options = dict(do_rescale=do_rescale, rescale_factor=rescale_factor, do_normalize=do_normalize,
                             image_mean=image_mean, image_std=image_std)
        single = not isinstance(images, (list, tuple))
        images = [images] if single else list(images)
        if annotations is not None:
            annotations = [annotations] if isinstance(annotations, dict) else list(annotations)
            if len(annotations) != len(images):
                raise ValueError(f"got {len(annotations)} annotations for {len(images)} images")
        if sky_masks is not None:
            sky_masks = [sky_masks] if single and not isinstance(sky_masks, (list, tuple)) else list(sky_masks)
            if len(sky_masks) != len(images):
                raise ValueError(f"got {len(sky_masks)} sky masks for {len(images)} images")
        do_resize = self.do_resize if do_resize is None else do_resize
        size = self.size if size is None else size
        out_h, out_w = int(size["height"]), int(size["width"])

        tiles = do_resize and self.input_mode == "tiles"
        whole_images = do_resize and self.input_mode in ("tiles", "zoom")  # padded, with `image_sizes`
        pixels, labels = [], []
        for i, image in enumerate(images):
            chw = _to_float_chw(image, i)
            orig_h, orig_w = chw.shape[-2:]
            if tiles:
                target = scaled_size(orig_h, orig_w, self.tile_scale)
                if target != (orig_h, orig_w):
                    chw = F.interpolate(chw[None], size=target, mode="bilinear", align_corners=False)[0]
            elif do_resize and self.input_mode == "zoom":
                pass  # the model scales what it zooms into
            elif do_resize and (orig_h, orig_w) != (out_h, out_w):
                chw = F.interpolate(chw[None], size=(out_h, out_w), mode="bilinear", align_corners=False)[0]
            elif not do_resize and len(images) > 1 and i > 0 and chw.shape != pixels[0].shape:
                raise ValueError(f"images[{i}]: size {tuple(chw.shape[-2:])} differs from images[0] with do_resize=False")
            pixels.append(chw)
            if annotations is not None:
                target = self._convert_annotation(annotations[i], i, orig_h, orig_w)
                if sky_masks is not None and sky_masks[i] is not None:
                    mask = _to_mask(sky_masks[i], i, (orig_h, orig_w))
                    if mask.shape != chw.shape[-2:]:
                        mask = F.interpolate(mask[None, None], size=chw.shape[-2:], mode="nearest")[0, 0]
                    target["sky_mask"] = mask
                labels.append(target)
        if whole_images:
            if annotations is not None:
                raise ValueError(f"annotations with input_mode={self.input_mode!r} and do_resize=True are not "
                                 "supported; training crops are made by the data pipeline (pass do_resize=False)")
            image_sizes = torch.tensor([tuple(p.shape[-2:]) for p in pixels], dtype=torch.long)
            canvas = self.window_canvas(image_sizes.tolist()) if tiles else self.zoom_canvas(image_sizes.tolist())
            pixels = [F.pad(p, (0, canvas[1] - p.shape[-1], 0, canvas[0] - p.shape[-2])) for p in pixels]
        data: dict[str, Any] = {"pixel_values": self.normalize_pixels(torch.stack(pixels), **pixel_options)}
        if whole_images:
            data["image_sizes"] = image_sizes
        if annotations is not None:
            data["labels"] = labels
        elif sky_masks is not None:
            raise ValueError("sky_masks need annotations (the labels carry them); pass annotations too")
        return self._as_tensor_type(data, return_tensors)

    @staticmethod
    def _as_tensor_type(data: dict[str, Any], return_tensors: str | None) -> BatchFeature:
        """torch tensors as they are ("pt"), as numpy arrays ("np"), or per-image numpy lists (None)."""
        if return_tensors == "pt":
            return BatchFeature(data=data)
        pixels = data["pixel_values"].numpy()
        out: dict[str, Any] = {"pixel_values": pixels if return_tensors == "np" else list(pixels)}
        if "labels" in data:
            out["labels"] = [{k: v.numpy() for k, v in label.items()} for label in data["labels"]]
        return BatchFeature(data=out)

    def window_canvas(self, image_sizes: Sequence[Sequence[int]]) -> tuple[int, int]:
        """(height, width) covering every image's sliding-window grid (tiles mode): the padded input size."""
        return window_canvas(image_sizes, self.tile_window, self.tile_overlap)

    def zoom_canvas(self, image_sizes: Sequence[Sequence[int]]) -> tuple[int, int]:
        """(height, width) of the padded input of the zoom mode: the next multiple of `size_divisor` above every
        image, so each image has at least one padding row and column (the model reads its padding value there)."""
        step = self.size_divisor
        return (max(int(h) // step + 1 for h, _ in image_sizes) * step,
                max(int(w) // step + 1 for _, w in image_sizes) * step)

    @staticmethod
    def _convert_annotation(annotation: dict, index: int, height: int, width: int) -> dict[str, torch.Tensor]:
        """COCO detection annotation -> {"class_labels", "boxes" (normalised cxcywh), "orig_size"}."""
        if not isinstance(annotation, dict) or "annotations" not in annotation:
            raise ValueError(
                f"annotations[{index}]: expected COCO detection format {{'image_id', 'annotations': [{{'bbox': "
                f"[x, y, w, h], 'category_id', ...}}]}}, got {type(annotation).__name__} {str(annotation)[:80]}"
            )
        boxes, classes = [], []
        for j, obj in enumerate(annotation["annotations"]):
            bbox = [float(v) for v in obj.get("bbox", ())]
            if len(bbox) != 4 or bbox[2] < 0 or bbox[3] < 0:
                raise ValueError(f"annotations[{index}] (image_id {annotation.get('image_id')}) object {j}: bad bbox {bbox}")
            if obj.get("iscrowd", 0):
                raise ValueError(f"annotations[{index}] object {j}: iscrowd=1 is not supported by FCOS assignment")
            x, y, w, h = bbox
            boxes.append([(x + w / 2) / width, (y + h / 2) / height, w / width, h / height])
            classes.append(int(obj.get("category_id", 0)))
        return {
            "class_labels": torch.tensor(classes, dtype=torch.long),
            "boxes": torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
            "orig_size": torch.tensor([height, width], dtype=torch.long),
        }

    # --------------------------------------------------------------------------------------------- postprocessing
    @staticmethod
    def _extents(outputs: Any, batch: int, input_size: tuple[int, int]) -> list[tuple[int, int]]:
        """Each image's extent in input pixels: `image_sizes` of a tiles-mode output, else the whole input."""
        image_sizes = outputs.get("image_sizes") if hasattr(outputs, "get") else None
        if image_sizes is None:
            return [input_size] * batch
        return [(int(h), int(w)) for h, w in image_sizes.tolist()]

    @staticmethod
    def _target_sizes(target_sizes: Any, batch: int, extents: list[tuple[int, int]]) -> list[tuple[int, int]]:
        """(h, w) per image to rescale to; ``None``: each image's extent in the input (no rescaling)."""
        if target_sizes is None:
            return list(extents)
        sizes = [tuple(int(v) for v in s) for s in (target_sizes.tolist() if torch.is_tensor(target_sizes) else target_sizes)]
        if len(sizes) != batch:
            raise ValueError(f"got {len(sizes)} target_sizes for a batch of {batch}")
        return sizes

    @torch.no_grad()
    def post_process_object_detection(
        self, outputs: Any, threshold: float | None = None, target_sizes: Any = None
    ) -> list[dict[str, torch.Tensor]]:
        """Detections per image, as the original (mmdet FCOS `predict_by_feat`):

        per level, keep sigmoid(cls) > `threshold` (the detection cut; `None`: `self.detection_threshold`), the top
        `pre_nms_top_k`; clip boxes to the input; rescale to `target_sizes` ((h, w) per image, original pixels; `None`
        = input pixels); score x sigmoid(centerness); drop empty boxes; class-aware NMS at `nms_iou_threshold`; keep
        `max_detections`.

        Returns one dict per image: "scores" (k,), "labels" (k,) long, "boxes" (k, 4) absolute xyxy.
        """
        threshold = self.detection_threshold if threshold is None else float(threshold)
        logits, boxes, centerness = outputs["logits"], outputs["pred_boxes"], outputs["centerness"]
        strides = outputs["strides"]
        in_h, in_w = (int(v) for v in outputs["input_size"]) if outputs.get("input_size") is not None else (
            self.size["height"], self.size["width"])
        extents = self._extents(outputs, logits.shape[0], (in_h, in_w))
        sizes = self._target_sizes(target_sizes, logits.shape[0], extents)
        num_classes = logits.shape[-1]
        level_masks = [strides == s for s in torch.unique_consecutive(strides)]
        results = []
        for b, (out_h, out_w) in enumerate(sizes):
            in_h, in_w = extents[b]
            all_scores, all_labels, all_boxes = [], [], []
            for mask in level_masks:
                scores = logits[b][mask].float().sigmoid().reshape(-1)
                keep = (scores > threshold).nonzero().squeeze(1)
                scores = scores[keep]
                order = scores.argsort(descending=True)[: self.pre_nms_top_k]
                keep, scores = keep[order], scores[order]
                point = keep // num_classes
                all_labels.append(keep % num_classes)
                all_boxes.append(boxes[b][mask][point].float())
                all_scores.append(scores * centerness[b][mask][point].float().sigmoid())
            scores, labels, dets = torch.cat(all_scores), torch.cat(all_labels), torch.cat(all_boxes)
            dets = torch.stack([dets[:, 0].clamp(0, in_w), dets[:, 1].clamp(0, in_h),
                                dets[:, 2].clamp(0, in_w), dets[:, 3].clamp(0, in_h)], dim=1)
            dets = dets * dets.new_tensor([out_w / in_w, out_h / in_h, out_w / in_w, out_h / in_h])
            valid = (dets[:, 2] > dets[:, 0]) & (dets[:, 3] > dets[:, 1])
            scores, labels, dets = scores[valid], labels[valid], dets[valid]
            keep = batched_nms(dets, scores, labels, self.nms_iou_threshold)[: self.max_detections]
            results.append({"scores": scores[keep], "labels": labels[keep], "boxes": dets[keep]})
        return results

    @torch.no_grad()
    def post_process_sky_segmentation(
        self, outputs: Any, target_sizes: Any = None, threshold: float = 0.5
    ) -> list[torch.Tensor]:
        """Sky masks from the finest level's sky logits, bilinearly upsampled to `target_sizes` ((h, w); `None` = the
        input size), sigmoid > `threshold`. Returns one (H, W) bool tensor per image. (The original computes but never
        uses the sky head at test time.)"""
        finest = outputs["sky_logits"][0].float()
        if outputs.get("sky_input_size") is not None:  # zoom mode: the coarse pass's own geometry
            outputs = {"input_size": outputs["sky_input_size"], "image_sizes": outputs["sky_image_sizes"]}
        in_h, in_w = (int(v) for v in outputs["input_size"]) if outputs.get("input_size") is not None else (
            self.size["height"], self.size["width"])
        extents = self._extents(outputs, finest.shape[0], (in_h, in_w))
        sizes = self._target_sizes(target_sizes, finest.shape[0], extents)
        masks = []
        for b, size in enumerate(sizes):
            logits = finest[b : b + 1]
            if extents[b] != (in_h, in_w):  # tiles mode: the image's extent of the padded input
                logits = F.interpolate(logits, size=(in_h, in_w), mode="bilinear", align_corners=False)
                logits = logits[..., : extents[b][0], : extents[b][1]]
            logits = F.interpolate(logits, size=size, mode="bilinear", align_corners=False)
            masks.append(logits[0, 0].sigmoid() > threshold)
        return masks


BafeNetImageProcessor.register_for_auto_class("AutoImageProcessor")

__all__ = ["NORMALIZATION_PRESETS", "BafeNetImageProcessor", "default_normalization"]
