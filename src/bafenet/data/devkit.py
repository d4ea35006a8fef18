"""Reader for a SIRSTdevkit folder (the layout DenseSIRST ships in ``data/SIRSTdevkit``).

Layout and conventions (measured on the real data, see docs §3.4):

```
PNGImages/<id>.png                      8-bit grey (a few RGB / RGBA)
SIRST/BBox/<id>.xml                     VOC-like boxes: 0-based, exclusive max (xmax = last pixel + 1)
SIRST/BinaryMask/<id>_pixels0.png       L {0, 255}: all target pixels of the image
SIRST/Point_label/<id>_pixels0.txt      one "x y" line per target (0-based col/row), same count as boxes
SkySeg/BinaryMask/<id>_pixels0.png      L {0, 255}: sky pixels
Splits/<split>.txt                      one id per line, LF, no trailing newline
```

Every problem raises one `DevkitError` that names the file and what is wrong; nothing is silently dropped.
"""

from __future__ import annotations

import functools
import io
import json
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from .sample import DetectionSample, to_grey

DevkitSample = DetectionSample  # the devkit reader returns the one sample type (name kept for old imports)

__all__ = ["DetectionSample", "DevkitError", "DevkitSample", "EncodedSample", "SirstDevkit", "read_encoded", "REQUIRED_SUBDIRS"]

REQUIRED_SUBDIRS = ("PNGImages", "SIRST/BBox", "SIRST/BinaryMask", "SIRST/Point_label", "SkySeg/BinaryMask", "Splits")
TARGET_NAME = "Target"
# 8-bit PNG modes accepted for images; all are converted to grey (ITU-R 601-2 luma) by `SirstDevkit.read`.
IMAGE_MODES = ("L", "LA", "P", "RGB", "RGBA")


class DevkitError(ValueError):
    """A SIRSTdevkit file is missing or malformed. The message names the file and the problem."""


def read_text_file(path: Path) -> str:
    """A devkit text file as UTF-8 (a leading byte-order mark dropped); other bytes are a DevkitError naming it."""
    try:
        return path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as error:
        raise DevkitError(f"{path}: not UTF-8 text (byte {error.object[error.start]:#04x} at offset {error.start}); "
                          "save it as UTF-8") from None


@dataclass
class EncodedSample:
    """One validated image with its PNG files as bytes (what the dataset builder embeds).

    ``image_png`` is the original file, untouched (mode L, RGB or RGBA). The masks are PNG mode L with values
    {0, 255}: the original bytes when the file already is exactly that, else a re-encoded copy.
    """

    image_id: str
    image_path: Path
    image_png: bytes
    image_mode: str
    width: int
    height: int
    boxes: np.ndarray  # (N, 4) float32 xyxy
    points: np.ndarray  # (N, 2) float32 (x, y)
    target_mask_png: bytes
    sky_mask_png: bytes


def _open_png(path: Path, what: str) -> tuple[bytes, Image.Image]:
    """Read and fully decode a PNG; any I/O or decoding problem becomes a DevkitError naming the file."""
    if not path.is_file():
        raise DevkitError(f"{path}: missing {what}")
    data = path.read_bytes()
    try:
        image = Image.open(io.BytesIO(data))
        if image.format != "PNG":
            raise DevkitError(f"{path}: {what} is not a PNG file (found {image.format})")
        image.load()
    except DevkitError:
        raise
    except Exception as e:  # PIL raises OSError, SyntaxError, ValueError, zlib.error ... on bad data
        raise DevkitError(f"{path}: corrupt or truncated PNG ({what}): {e}") from None
    return data, image


def _binary_mask(path: Path, what: str, size: tuple[int, int]) -> tuple[bytes, np.ndarray | None, Image.Image]:
    """Validate a mask PNG: mode L with values 0 and 255 only (the devkit's documented labels; a bilevel mode "1"
    PNG is the same). Return (PNG bytes in L {0,255}, bool array or None when unchanged, decoded image)."""
    data, mask = _open_png(path, what)
    if mask.size != size:
        raise DevkitError(
            f"{path}: {what} is {mask.size[0]}x{mask.size[1]} but its image is {size[0]}x{size[1]} (width x height)"
        )
    if mask.mode == "1":
        fg = np.asarray(mask, dtype=bool)
        buf = io.BytesIO()
        Image.fromarray(fg.astype(np.uint8) * 255, mode="L").save(buf, format="PNG")
        return buf.getvalue(), fg, mask
    if mask.mode != "L":
        raise DevkitError(f"{path}: {what} is a mode {mask.mode} PNG; expected mode L with values 0 and 255 "
                          "(fix the file: 255 where the label holds, 0 elsewhere)")
    hist = mask.histogram()
    other = [value for value in range(1, 255) if hist[value]]
    if other:
        shown = ", ".join(map(str, other[:5])) + (" ..." if len(other) > 5 else "")
        raise DevkitError(f"{path}: {what} has values other than 0 and 255 ({shown}: "
                          f"{sum(hist[v] for v in other)} pixels); fix the file: 255 where the label holds, 0 elsewhere")
    return data, None, mask


def parse_bbox_xml(path: Path) -> tuple[int | None, int | None, np.ndarray]:
    """Parse ``SIRST/BBox/<id>.xml``: ((width, height) from ``<size>`` or None, boxes (N, 4) float32 xyxy)."""
    if not path.is_file():
        raise DevkitError(f"{path}: missing box annotation XML")
    try:
        root = ET.parse(path).getroot()
    except ET.ParseError as e:
        raise DevkitError(f"{path}: malformed XML: {e}") from None
    width = height = None
    size = root.find("size")
    if size is not None:
        try:
            width, height = int(float(size.findtext("width"))), int(float(size.findtext("height")))
        except (TypeError, ValueError):
            raise DevkitError(f"{path}: <size> needs numeric <width> and <height>") from None
    boxes = []
    for k, obj in enumerate(root.findall("object")):
        name = (obj.findtext("name") or "").strip()
        if name != TARGET_NAME:
            raise DevkitError(f"{path}: object {k} has name {name!r}; the only class is {TARGET_NAME!r}")
        try:
            box = [float(obj.findtext(f"bndbox/{tag}")) for tag in ("xmin", "ymin", "xmax", "ymax")]
        except (TypeError, ValueError):
            raise DevkitError(f"{path}: object {k} needs numeric bndbox xmin, ymin, xmax, ymax") from None
        boxes.append(box)
    return width, height, np.asarray(boxes, dtype=np.float32).reshape(-1, 4)


def parse_points(path: Path) -> np.ndarray:
    """Parse ``SIRST/Point_label/<id>_pixels0.txt``: one ``x y`` line per target -> (N, 2) float32."""
    if not path.is_file():
        raise DevkitError(f"{path}: missing point label file")
    points = []
    lines = read_text_file(path).splitlines()
    for n, line in enumerate(lines, start=1):
        if not line.strip():
            if n == len(lines):
                continue
            raise DevkitError(f"{path}: line {n} is blank (expected 'x y')")
        parts = line.split()
        try:
            if len(parts) != 2:
                raise ValueError
            points.append([float(parts[0]), float(parts[1])])
        except ValueError:
            raise DevkitError(f"{path}: line {n} is {line!r} (expected two numbers 'x y')") from None
    return np.asarray(points, dtype=np.float32).reshape(-1, 2)


class SirstDevkit:
    """A SIRSTdevkit folder. ``split_ids("test_v2")`` lists a split, ``read(id)`` decodes one validated sample."""

    def __init__(self, root: str | Path):
        self.root = Path(root).expanduser()
        if not self.root.exists():
            raise DevkitError(f"{self.root}: devkit folder does not exist")
        if not self.root.is_dir():
            raise DevkitError(f"{self.root}: devkit path is not a folder")
        missing = [d for d in REQUIRED_SUBDIRS if not (self.root / d).is_dir()]
        if missing:
            hint = ""
            if (self.root / "data" / "SIRSTdevkit").is_dir():
                hint = f" (did you mean {self.root / 'data' / 'SIRSTdevkit'}?)"
            raise DevkitError(f"{self.root}: not a SIRSTdevkit, missing sub-folders {', '.join(missing)}{hint}")

    def __repr__(self) -> str:
        return f"SirstDevkit({str(self.root)!r})"

    # ----------------------------------------------------------------------------------------------- paths
    def image_path(self, image_id: str) -> Path:
        return self.root / "PNGImages" / f"{image_id}.png"

    def bbox_path(self, image_id: str) -> Path:
        return self.root / "SIRST" / "BBox" / f"{image_id}.xml"

    def target_mask_path(self, image_id: str) -> Path:
        return self.root / "SIRST" / "BinaryMask" / f"{image_id}_pixels0.png"

    def points_path(self, image_id: str) -> Path:
        return self.root / "SIRST" / "Point_label" / f"{image_id}_pixels0.txt"

    def sky_mask_path(self, image_id: str) -> Path:
        return self.root / "SkySeg" / "BinaryMask" / f"{image_id}_pixels0.png"

    # ----------------------------------------------------------------------------------------------- splits
    def split_names(self) -> list[str]:
        """Names of the split files in ``Splits/`` (file stems), sorted."""
        return sorted(p.stem for p in (self.root / "Splits").glob("*.txt"))

    def split_ids(self, split: str) -> list[str]:
        """Image ids of a split, in file order. Raises DevkitError for an unknown, empty or malformed split."""
        path = self.root / "Splits" / f"{split}.txt"
        if not path.is_file():
            raise DevkitError(f"{path}: unknown split {split!r}; available: {', '.join(self.split_names()) or 'none'}")
        lines = read_text_file(path).replace("\r\n", "\n").split("\n")
        if lines and lines[-1] == "":  # tolerate one trailing newline (the real files have none)
            lines.pop()
        if not lines:
            raise DevkitError(f"{path}: split {split!r} is empty")
        ids, seen = [], set()
        for n, line in enumerate(lines, start=1):
            image_id = line.strip()
            if not image_id:
                raise DevkitError(f"{path}: line {n} is blank")
            if image_id in seen:
                raise DevkitError(f"{path}: line {n}: image id {image_id!r} is listed twice")
            if "/" in image_id or "\\" in image_id or image_id in (".", "..") or Path(image_id).is_absolute():
                raise DevkitError(f"{path}: line {n}: image id {image_id!r} is a path; ids name files inside the "
                                  "devkit (PNGImages/<id>.png), e.g. Misc_1")
            seen.add(image_id)
            ids.append(image_id)
        return ids

    def synthetic_info(self) -> dict | None:
        """The parameters of `bafenet data synth` when this devkit is synthetic (``SYNTHETIC.json``), else None."""
        path = self.root / "SYNTHETIC.json"
        if not path.is_file():
            return None
        try:
            return json.loads(path.read_text())
        except ValueError as e:
            raise DevkitError(f"{path}: malformed JSON: {e}") from None

    def missing_images(self, image_ids: list[str]) -> list[str]:
        """The ids whose ``PNGImages/<id>.png`` does not exist (the real devkit lacks 172 iraytek images)."""
        return [i for i in image_ids if not self.image_path(i).is_file()]

    # ----------------------------------------------------------------------------------------------- samples
    def read_encoded(self, image_id: str) -> EncodedSample:
        """Validate every file of ``image_id`` and return the PNGs as bytes (no re-encoding of the image)."""
        image_path = self.image_path(image_id)
        image_png, image = _open_png(image_path, "image")
        return self._validate(image_id, image_png, image)[0]

    def read(self, image_id: str) -> DetectionSample:
        """Validate and decode every file of ``image_id`` (image converted to grey uint8, masks to bool)."""
        image_path = self.image_path(image_id)
        image_png, image = _open_png(image_path, "image")
        encoded, target_fg, sky_fg = self._validate(image_id, image_png, image, decode_masks=True)
        return DetectionSample(
            image=to_grey(image).copy(), boxes=encoded.boxes, points=encoded.points,
            target_mask=target_fg, sky_mask=sky_fg, image_id=image_id, image_path=image_path,
        )

    def _validate(
        self, image_id: str, image_png: bytes, image: Image.Image, decode_masks: bool = False
    ) -> tuple[EncodedSample, np.ndarray | None, np.ndarray | None]:
        image_path = self.image_path(image_id)
        if image.mode not in IMAGE_MODES:
            raise DevkitError(f"{image_path}: unsupported PNG mode {image.mode} (expected 8-bit grey, RGB or RGBA)")
        width, height = image.size

        bbox_path = self.bbox_path(image_id)
        xml_w, xml_h, boxes = parse_bbox_xml(bbox_path)
        if xml_w is not None and (xml_w, xml_h) != (width, height):
            raise DevkitError(f"{bbox_path}: <size> says {xml_w}x{xml_h} but {image_path.name} is {width}x{height}")
        for k, (x1, y1, x2, y2) in enumerate(boxes.tolist()):
            if not (x2 > x1 and y2 > y1):
                raise DevkitError(f"{bbox_path}: object {k} box {[x1, y1, x2, y2]} has x2 <= x1 or y2 <= y1")
            if x1 < 0 or y1 < 0 or x2 > width or y2 > height:
                raise DevkitError(
                    f"{bbox_path}: object {k} box {[x1, y1, x2, y2]} lies outside the {width}x{height} image"
                )

        points_path = self.points_path(image_id)
        points = parse_points(points_path)
        if len(points) != len(boxes):
            raise DevkitError(f"{points_path}: {len(points)} point lines but {bbox_path.name} has {len(boxes)} boxes")
        inside = (points[:, 0] >= 0) & (points[:, 0] < width) & (points[:, 1] >= 0) & (points[:, 1] < height)
        if not inside.all():
            x, y = points[int(np.argmin(inside))].tolist()
            raise DevkitError(f"{points_path}: point ({x:g}, {y:g}) lies outside the {width}x{height} image")

        target_png, target_fg, target_im = _binary_mask(self.target_mask_path(image_id), "target mask", image.size)
        sky_png, sky_fg, sky_im = _binary_mask(self.sky_mask_path(image_id), "sky mask", image.size)
        encoded = EncodedSample(
            image_id=image_id, image_path=image_path, image_png=image_png, image_mode=image.mode,
            width=width, height=height, boxes=boxes, points=points,
            target_mask_png=target_png, sky_mask_png=sky_png,
        )
        if decode_masks:
            target_fg = np.asarray(target_im) > 0 if target_fg is None else target_fg
            sky_fg = np.asarray(sky_im) > 0 if sky_fg is None else sky_fg
        return encoded, target_fg, sky_fg


@functools.lru_cache(maxsize=4)
def _cached_devkit(root: str) -> SirstDevkit:
    return SirstDevkit(root)


def read_encoded(root: str, image_id: str) -> EncodedSample:
    """``SirstDevkit(root).read_encoded(image_id)`` for worker processes (this module imports only numpy and PIL)."""
    return _cached_devkit(root).read_encoded(image_id)
