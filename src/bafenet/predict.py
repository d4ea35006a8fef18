"""``bafenet predict``: detect small targets in image files or folders, write JSON and overlay pictures.

Usage::

    bafenet predict --model runs/quickstart/model images/ one.png --out predictions/ [--operating-threshold 0.3] [--sky]
    bafenet predict --model runs/quickstart/model --onnx model.onnx images/ --out predictions/

Writes to ``--out``:

- ``predictions.json``: one record per image with ``boxes`` (xyxy in original pixels, 0-based, exclusive max, the
  DenseSIRST convention), ``scores``, the overlay path and, with ``--sky``, the sky mask PNG path and sky fraction;
  plus ``errors``: every input that could not be read, with the reason.
- ``overlays/<name>.png``: the image with thick box outlines, the sky region tinted (``--sky``) and a zoom inset of
  the densest cluster of detections (see :mod:`bafenet.visualize`).
- ``sky/<name>.png`` (``--sky``): the predicted sky mask, mode L, values {0, 255}, original size.

Unreadable inputs (missing, corrupt, larger than ``--max-pixels``) are reported on stderr (file + reason), skipped,
listed in ``predictions.json`` and make the command exit with status 1 at the end. ``--out`` follows
`bafenet.outputs`: a new or empty folder, or an earlier ``bafenet predict`` output (replaced); it is checked before
the model is loaded. With ``--onnx`` the dense network runs in onnxruntime (see :mod:`bafenet.export_onnx`); pre- and
post-processing still come from the image processor saved with ``--model``.
"""

from __future__ import annotations

import sys
import warnings
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from .data.transforms import to_grey
from .evaluation import FALLBACK_OPERATING_THRESHOLD

IMAGE_EXTENSIONS = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".pgm", ".ppm"})
DEFAULT_MAX_PIXELS = Image.MAX_IMAGE_PIXELS  # Pillow's decompression-bomb limit, 89,478,485 pixels
COMMAND = "predict"
BOX_FORMAT = "xyxy, original pixels, 0-based, exclusive max (DenseSIRST XML convention)"

__all__ = ["Predictor", "ImageReadError", "collect_inputs", "load_grey_image", "predict_files"]


class ImageReadError(ValueError):
    """An input image could not be read; the message names the file and the reason."""


def _open_image(path: Path) -> Image.Image:
    """``Image.open`` without Pillow's own pixel limit (`load_grey_image` applies ``max_pixels`` itself)."""
    limit = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            return Image.open(path)
    finally:
        Image.MAX_IMAGE_PIXELS = limit


def load_grey_image(path: str | Path, max_pixels: int | None = DEFAULT_MAX_PIXELS) -> Image.Image:
    """Read ``path`` as an 8-bit grey PIL image (mode L), the way the model was trained.

    RGB/RGBA/palette images are converted to luminance; 16-bit and float images are min-max scaled to 0..255. An EXIF
    orientation (camera JPEGs) is applied, so boxes are in the image as viewers show it. An image of more than ``max_pixels`` pixels (None: no limit) is refused before it is decoded, which bounds the
    memory. Raises :class:`ImageReadError` naming the file and the reason.
    """
    path = Path(path)
    try:
        with _open_image(path) as image:
            if max_pixels is not None and image.width * image.height > max_pixels:
                raise ImageReadError(f"{path}: {image.width}x{image.height} = {image.width * image.height:,} pixels, "
                                     f"over the --max-pixels limit of {max_pixels:,} (raise it to read this image)")
            image.load()
            image = ImageOps.exif_transpose(image)  # a copy only when the file has an EXIF orientation
            if image.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
                array = np.asarray(image, dtype=np.float32)
                low, high = float(array.min()), float(array.max())
                scaled = (array - low) * (255.0 / (high - low)) if high > low else np.zeros_like(array)
                return Image.fromarray(np.clip(np.rint(scaled), 0, 255).astype(np.uint8), mode="L")
            return Image.fromarray(to_grey(image), mode="L")  # the grey conversion of training and evaluation
    except FileNotFoundError:
        raise ImageReadError(f"{path}: file not found") from None
    except UnidentifiedImageError:
        raise ImageReadError(f"{path}: not an image file Pillow can read") from None
    except ImageReadError:
        raise
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError, MemoryError) as error:  # corrupt files
        raise ImageReadError(f"{path}: cannot decode image ({type(error).__name__}: {error})") from None


def collect_inputs(inputs: Sequence[str | Path], recursive: bool = False) -> tuple[list[Path], list[dict[str, str]]]:
    """Expand files and folders into image paths (sorted per folder).

    Returns ``(images, problems)``; a problem is ``{"file", "reason"}`` for a path that does not exist or a folder
    without images. Files given explicitly are always kept (a bad one fails later, when it is read, with the reason);
    other files inside folders are skipped only when their extension is not an image extension.
    """
    images: list[Path] = []
    problems: list[dict[str, str]] = []
    for item in map(Path, inputs):
        if item.is_dir():
            pattern = "**/*" if recursive else "*"
            found = sorted(p for p in item.glob(pattern) if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)
            if not found:
                extensions = ", ".join(sorted(IMAGE_EXTENSIONS))
                problems.append({"file": str(item), "reason": f"folder has no image files ({extensions})"})
            images.extend(found)
        elif item.is_file():
            images.append(item)
        else:
            problems.append({"file": str(item), "reason": "no such file or folder"})
    return images, problems


@dataclass
class Detections:
    """Detections for one image: ``boxes`` (N, 4) xyxy original pixels, ``scores`` (N,), optional sky mask (H, W)."""

    boxes: np.ndarray
    scores: np.ndarray
    sky_mask: np.ndarray | None = None
    extra: dict[str, Any] = field(default_factory=dict)


class Predictor:
    """Image processor + BAFE-Net (PyTorch, or the dense network in onnxruntime) + post-processing: a loaded
    `bafenet.inference.InferenceModel` (``network``) and the two thresholds.

    Args:
        model: a model folder or Hub repo id saved with ``save_pretrained`` (weights, config, image processor).
        onnx: optional path of an ONNX file from ``bafenet export onnx``; the dense network then runs in
            onnxruntime and only the image processor and config are loaded from ``model`` (the file must have been
            exported for that config: `bafenet.inference.open_onnx_session`).
        operating_threshold: keep detections whose final score (sigmoid(cls) x sigmoid(centerness)) is at least
            this; None: the model's stored operating point (``config.operating_threshold``, the best-F1 score on
            validation), else `bafenet.evaluation.FALLBACK_OPERATING_THRESHOLD` (0.5, as `bafenet evaluate`).
        detection_threshold: the post-processing cut on sigmoid(cls) before NMS; None: the image processor's
            ``detection_threshold`` (0.05).
        device: torch device for the PyTorch path (default: CUDA when available, else CPU); with ``onnx`` only the
            CPU.
        trust_remote_code: run the model folder's own ``.py`` files (`bafenet.models.loading`); by default the
            installed BAFE-Net classes load it.
    """

    def __init__(self, model: str | Path, onnx: str | Path | None = None, operating_threshold: float | None = None,
                 device: str | None = None, detection_threshold: float | None = None,
                 trust_remote_code: bool = False) -> None:
        from .inference import InferenceModel

        self._settings(InferenceModel.load(model, onnx, device=device, trust_remote_code=trust_remote_code),
                       operating_threshold, detection_threshold)

    def _settings(self, network: Any, operating_threshold: float | None, detection_threshold: float | None) -> None:
        from .inference import detection_threshold_of

        self.network = network
        if operating_threshold is None:
            stored = getattr(network.config, "operating_threshold", None)
            operating_threshold = FALLBACK_OPERATING_THRESHOLD if stored is None else stored
        self.operating_threshold = float(operating_threshold)
        self.detection_threshold = detection_threshold_of(network.processor, detection_threshold)

    @classmethod
    def from_loaded(cls, model: Any, processor: Any, operating_threshold: float | None = None,
                    detection_threshold: float | None = None) -> "Predictor":
        """A predictor around an already loaded PyTorch ``model`` and its ``processor`` (no file is read); the
        thresholds default as in the constructor."""
        from .inference import InferenceModel

        self = cls.__new__(cls)
        self._settings(InferenceModel.from_loaded(model.eval(), processor), operating_threshold, detection_threshold)
        return self

    # the parts of the loaded `bafenet.inference.InferenceModel`
    processor = property(lambda self: self.network.processor)
    config = property(lambda self: self.network.config)
    model = property(lambda self: self.network.model)
    session = property(lambda self: self.network.session)
    device = property(lambda self: self.network.device)

    def forward(self, inputs: Mapping[str, Any]) -> Any:
        """Run the network on processor ``inputs``; returns the model output (or the equivalent from onnxruntime)."""
        return self.network.forward(inputs)

    def __call__(self, images: Sequence[Image.Image], sky: bool = False) -> list[Detections]:
        """Detect targets in a batch of PIL images (any sizes); boxes come back in each image's own pixels."""
        from .inference import InferenceCollator

        batch = InferenceCollator(self.processor)(list(enumerate(images)))
        detections = []
        for _, found in self.network.detect_batches([batch], self.detection_threshold, sky):
            # the detection cut acts on sigmoid(cls) before the centerness factor; the operating point on the final
            # score, as in `bafenet evaluate`
            keep = found["scores"] >= np.float32(self.operating_threshold)
            detections.append(Detections(boxes=found["boxes"][keep], scores=found["scores"][keep],
                                         sky_mask=found["sky_mask"]))
        return detections


def _unique_names(paths: Sequence[Path]) -> list[str]:
    """Distinct output stems for ``paths``: the file stem, or ``<stem>-2``, ``-3``... when that name is taken (also
    by another input's own stem, e.g. ``a.png a.jpg a-2.png``; compared without case, for case-blind disks)."""
    taken = {path.stem.lower() for path in paths}
    used: set[str] = set()
    names = []
    for path in paths:
        name, count = path.stem, 1
        while name.lower() in used or (count > 1 and name.lower() in taken):
            count += 1
            name = f"{path.stem}-{count}"
        used.add(name.lower())
        names.append(name)
    return names


def _batches(items: Sequence[Any], size: int) -> Iterable[Sequence[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def predict_files(
    predictor: Predictor,
    paths: Sequence[Path],
    out_dir: str | Path,
    *,
    sky: bool = False,
    draw: bool = True,
    batch_size: int = 4,
    progress: bool = True,
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
) -> dict[str, Any]:
    """Predict every image of ``paths``, write overlays/sky masks under ``out_dir``; return the JSON report.

    Unreadable images go to ``report["errors"]`` (file + reason) and are skipped; nothing is dropped silently.
    """
    from tqdm.auto import tqdm

    from .visualize import draw_detections

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if draw:
        (out_dir / "overlays").mkdir(exist_ok=True)
    if sky:
        (out_dir / "sky").mkdir(exist_ok=True)
    records: list[dict[str, Any]] = []
    errors: list[dict[str, str]] = []
    names = dict(zip(paths, _unique_names(paths)))
    bar = tqdm(total=len(paths), desc="predict", unit="img", disable=not progress or len(paths) < 2)
    for batch_paths in _batches(list(paths), max(1, batch_size)):
        images, kept = [], []
        for path in batch_paths:
            try:
                images.append(load_grey_image(path, max_pixels))
                kept.append(path)
            except ImageReadError as error:
                errors.append({"file": str(path), "reason": str(error).removeprefix(f"{path}: ")})
                print(f"error: {error} (skipped)", file=sys.stderr)
        results = predictor(images, sky=sky) if images else []
        for path, image, result in zip(kept, images, results):
            name = names[path]
            record: dict[str, Any] = {
                "file": str(path),
                "width": image.width,
                "height": image.height,
                "boxes": np.round(result.boxes, 2).tolist(),
                "scores": np.round(result.scores, 4).tolist(),
            }
            if sky and result.sky_mask is not None:
                sky_path = out_dir / "sky" / f"{name}.png"
                Image.fromarray(result.sky_mask.astype(np.uint8) * 255, mode="L").save(sky_path)
                record["sky_mask"] = str(sky_path.relative_to(out_dir))
                record["sky_fraction"] = round(float(result.sky_mask.mean()), 4)
            if draw:
                overlay_path = out_dir / "overlays" / f"{name}.png"
                title = f"{path.name}: {len(result.boxes)} detections >= {predictor.operating_threshold:g}"
                draw_detections(image, result.boxes, result.scores, sky_mask=result.sky_mask, title=title).save(
                    overlay_path
                )
                record["overlay"] = str(overlay_path.relative_to(out_dir))
            records.append(record)
        bar.update(len(batch_paths))
    bar.close()
    return {
        "box_format": BOX_FORMAT,
        "score": "sigmoid(class logit) * sigmoid(centerness logit)",
        "operating_threshold": predictor.operating_threshold,
        "detection_threshold": predictor.detection_threshold,
        "images": records,
        "errors": errors,
    }
