"""A small synthetic SIRSTdevkit: same layout and file conventions as DenseSIRST, generated in a second.

Each image is grey, with a sky (smooth vertical gradient and clouds) above a wavy horizon, ground clutter below,
and clusters of faint Gaussian targets of a few pixels in the sky. Labels are exact by construction: a target's
mask is the set of pixels where its Gaussian is at least 30 % of its peak, its box is the mask's extent (0-based,
exclusive max, as in ``SIRST/BBox``), its point the floor of the mask's centroid. Targets never touch, so every
mask component is one target. Image 1 is saved as RGB and image 2 as RGBA (grey replicated), like the few colour
PNGs of the real devkit. Output is byte-identical for a given ``(num_images, seed)``.

``bafenet data synth --out DIR --num-images N --seed S`` runs `write_synthetic_devkit`.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image

from ..outputs import replaced_dir

__all__ = ["write_synthetic_devkit", "synthetic_frame"]

COMMAND = "data synth"

SIZES = ((320, 256), (256, 256), (320, 240), (288, 224), (256, 320))  # (width, height)
MASK_LEVEL = 0.3  # a pixel belongs to a target where its Gaussian is >= 30 % of the peak
MIN_TARGET_DISTANCE = 9.0  # px between target centres: masks (radius <= 2.8 px) never touch, even diagonally
SYNTHETIC_MARKER = "SYNTHETIC.json"  # beside the devkit folders; readers ignore it, the dataset card reports it
SUBDIRS = ("PNGImages", "SIRST/BBox", "SIRST/BinaryMask", "SIRST/PaletteMask", "SIRST/Point_label",
           "SkySeg/BinaryMask", "SkySeg/PaletteMask", "Splits")


def _voc_palette() -> list[int]:
    """The 256-colour PASCAL VOC palette (index 1 = (128, 0, 0)), as used by ``SkySeg/PaletteMask``."""
    palette = []
    for i in range(256):
        r = g = b = 0
        c = i
        for j in range(8):
            r |= ((c >> 0) & 1) << (7 - j)
            g |= ((c >> 1) & 1) << (7 - j)
            b |= ((c >> 2) & 1) << (7 - j)
            c >>= 3
        palette += [r, g, b]
    return palette


def _smooth_noise(rng: np.random.Generator, width: int, height: int, cell: int) -> np.ndarray:
    """Smooth noise in [-1, 1]: a coarse random grid (one value per ``cell`` px) bilinearly upsampled."""
    coarse = rng.uniform(-1, 1, size=(height // cell + 2, width // cell + 2)).astype(np.float32)
    up = Image.fromarray(coarse, mode="F").resize((width, height), Image.BILINEAR)
    return np.asarray(up, dtype=np.float32)


def _render(index: int, seed: int) -> tuple[np.ndarray, np.ndarray, list[np.ndarray]]:
    """One synthetic image: (grey uint8 (H, W), sky bool (H, W), one bool mask (H, W) per target)."""
    rng = np.random.default_rng([seed, index])
    width, height = SIZES[int(rng.integers(len(SIZES)))]
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)

    # sky above a wavy horizon (image 3 is all sky, like 390 real images)
    if index == 3:
        horizon = np.full(width, float(height), dtype=np.float32)
    else:
        base = rng.uniform(0.55, 0.8) * height
        amp, period, phase = rng.uniform(2, 0.08 * height), rng.uniform(0.5, 2) * width, rng.uniform(0, 2 * np.pi)
        horizon = base + amp * np.sin(2 * np.pi * xx[0] / period + phase)
    sky = yy < horizon[None, :]

    top, bottom = rng.uniform(50, 110), rng.uniform(110, 170)
    sky_img = top + (bottom - top) * yy / height + rng.uniform(5, 20) * _smooth_noise(rng, width, height, 48)
    ground = rng.uniform(40, 150) + 30 * _smooth_noise(rng, width, height, 12)
    ground += 10 * _smooth_noise(rng, width, height, 3)
    for _ in range(int(rng.integers(2, 6))):  # a few buildings / trees
        x0, w = int(rng.integers(0, width)), int(rng.integers(8, 48))
        y0 = int(rng.uniform(0.5, 1.0) * height)
        ground[y0:, x0 : x0 + w] += rng.uniform(-40, 40)
    image = np.where(sky, sky_img, ground)

    # clusters of faint Gaussian targets in the sky
    centres: list[tuple[float, float]] = []
    targets: list[np.ndarray] = []
    for _ in range(int(rng.integers(1, 4))):
        for _ in range(20):  # a cluster centre well inside the sky
            ccx, ccy = rng.uniform(12, width - 12), rng.uniform(12, height - 12)
            if ccy < horizon[int(ccx)] - 12:
                break
        else:
            continue
        for _ in range(int(rng.integers(3, 8))):
            for _ in range(30):
                cx, cy = ccx + rng.normal(0, 10), ccy + rng.normal(0, 7)
                if not (5 <= cx < width - 5 and 5 <= cy < height - 5) or cy > horizon[int(cx)] - 5:
                    continue
                if all((cx - px) ** 2 + (cy - py) ** 2 >= MIN_TARGET_DISTANCE**2 for px, py in centres):
                    break
            else:
                continue
            sigma, peak = rng.uniform(0.75, 1.8), rng.uniform(15, 50)
            x0, x1, y0, y1 = int(cx) - 4, int(cx) + 5, int(cy) - 4, int(cy) + 5
            g = np.exp(-((xx[y0:y1, x0:x1] - cx) ** 2 + (yy[y0:y1, x0:x1] - cy) ** 2) / (2 * sigma**2))
            image[y0:y1, x0:x1] += peak * g
            mask = np.zeros((height, width), dtype=bool)
            mask[y0:y1, x0:x1] = g >= MASK_LEVEL
            centres.append((cx, cy))
            targets.append(mask)
    image += rng.normal(0, 2.0, size=image.shape)
    return np.clip(np.rint(image), 0, 255).astype(np.uint8), sky, targets


def synthetic_frame(index: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Image ``index`` of the synthetic devkit of ``seed`` in memory: (grey uint8 (H, W), sky bool (H, W), target boxes
    (N, 4) xyxy, exclusive max), the same pixels and boxes `write_synthetic_devkit` writes."""
    image, sky, targets = _render(index, seed)
    return image, sky, np.asarray([_mask_box(mask) for mask in targets], dtype=np.float32).reshape(-1, 4)


def _mask_box(mask: np.ndarray) -> list[int]:
    """The box of a target mask: xyxy, 0-based, exclusive max (the ``SIRST/BBox`` convention)."""
    ys, xs = np.nonzero(mask)
    return [int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1]


def _bbox_xml(image_id: str, width: int, height: int, boxes: list[list[int]]) -> str:
    objects = "".join(
        "  <object>\n    <name>Target</name>\n    <bndbox>\n"
        f"      <xmin>{x1}</xmin>\n      <ymin>{y1}</ymin>\n      <xmax>{x2}</xmax>\n      <ymax>{y2}</ymax>\n"
        "    </bndbox>\n  </object>\n"
        for x1, y1, x2, y2 in boxes
    )
    return (
        f"<annotation>\n  <filename>{image_id}</filename>\n  <size>\n    <width>{width}</width>\n"
        f"    <height>{height}</height>\n    <depth>1</depth>\n  </size>\n{objects}</annotation>\n"
    )


def _pixels_xml(folder: str, image_id: str, width: int, height: int, name: str, mask: np.ndarray) -> str:
    """RectLabel-style XML beside a ``*_pixels0.png`` mask (image-level bndbox, 1-based-looking like the real ones)."""
    ys, xs = np.nonzero(mask)
    x1, y1, x2, y2 = (xs.min() + 1, ys.min() + 1, xs.max(), ys.max()) if len(xs) else (0, 0, 0, 0)
    return (
        f"<annotation>\n    <folder>{folder}</folder>\n    <filename>{image_id}.png</filename>\n    <size>\n"
        f"        <width>{width}</width>\n        <height>{height}</height>\n        <depth>3</depth>\n    </size>\n"
        f"    <object>\n        <name>{name}</name>\n        <difficult>0</difficult>\n        <pixels>\n"
        f"            <id>0</id>\n        </pixels>\n        <bndbox>\n            <xmin>{x1}</xmin>\n"
        f"            <ymin>{y1}</ymin>\n            <xmax>{x2}</xmax>\n            <ymax>{y2}</ymax>\n"
        f"        </bndbox>\n    </object>\n</annotation>"
    )


def _palette_png(mask: np.ndarray, palette: list[int], path: Path, bits: int | None = None) -> None:
    im = Image.fromarray(mask.astype(np.uint8), mode="P")
    im.putpalette(palette)
    im.save(path, **({"bits": bits} if bits else {}))


def _split_files(image_ids: list[str], seed: int) -> dict[str, list[str]]:
    """v2 splits over all ids (about 50/25/25 %), v1 splits over the ``Misc_*`` ids only, like the real devkit."""
    rng = np.random.default_rng([seed, 10**6])
    splits: dict[str, list[str]] = {}
    for version, ids in (("v2", image_ids), ("v1", [i for i in image_ids if i.startswith("Misc_")])):
        ids = [ids[k] for k in rng.permutation(len(ids))]
        frac = 0.25 if version == "v2" else 0.2
        n_test = n_val = max(1, round(frac * len(ids)))
        test, val, train = ids[:n_test], ids[n_test : n_test + n_val], ids[n_test + n_val :]
        splits.update({f"train_{version}": train, f"val_{version}": val, f"test_{version}": test,
                       f"trainval_{version}": train + val})
    misc = splits["trainval_v1"]
    splits["mini_trainval"], splits["mini_test"] = misc[:4], splits["test_v1"][:4]
    return splits


def write_synthetic_devkit(out_dir: str | Path, num_images: int = 16, seed: int = 0, overwrite: bool = False) -> Path:
    """Write a synthetic SIRSTdevkit with ``num_images`` images to ``out_dir`` and return its root (``out_dir``).

    About half the ids are ``Misc_<k>`` (the v1 splits use only those) and the rest ``synth-<kkkk>``. ``out_dir``
    must be new, empty or an earlier ``bafenet data synth`` output (replaced; ``overwrite``: even with files added
    since); a real devkit or any other folder is refused (`bafenet.outputs`).
    """
    if num_images < 4:
        raise ValueError(f"num_images must be >= 4 to fill every split, got {num_images}")
    out = Path(out_dir).expanduser()
    with replaced_dir(out, COMMAND, overwrite=overwrite) as root:
        _write_devkit(root, num_images, seed)
    return out


def _write_devkit(root: Path, num_images: int, seed: int) -> None:
    """Write the devkit files into the empty folder ``root``."""
    for sub in SUBDIRS:
        (root / sub).mkdir(parents=True, exist_ok=True)

    n_misc = max(3, num_images // 2)
    image_ids = [f"Misc_{k + 1}" for k in range(n_misc)] + [f"synth-{k + 1:04d}" for k in range(num_images - n_misc)]
    target_palette, voc_palette = [0, 0, 0, 255, 0, 0], _voc_palette()
    for index, image_id in enumerate(image_ids):
        image, sky, targets = _render(index, seed)
        height, width = image.shape
        rng = np.random.default_rng([seed, index, 1])

        if index == 1:
            Image.fromarray(np.stack([image] * 3, axis=-1), mode="RGB").save(root / "PNGImages" / f"{image_id}.png")
        elif index == 2:
            rgba = np.stack([image] * 3 + [np.full_like(image, 255)], axis=-1)
            Image.fromarray(rgba, mode="RGBA").save(root / "PNGImages" / f"{image_id}.png")
        else:
            Image.fromarray(image, mode="L").save(root / "PNGImages" / f"{image_id}.png")

        boxes, points = [], []
        for mask in targets:
            ys, xs = np.nonzero(mask)
            boxes.append(_mask_box(mask))
            points.append((int(np.floor(xs.mean())), int(np.floor(ys.mean()))))
        (root / "SIRST/BBox" / f"{image_id}.xml").write_text(_bbox_xml(image_id, width, height, boxes))
        points = [points[k] for k in rng.permutation(len(points))]  # the real point files are not in XML order
        (root / "SIRST/Point_label" / f"{image_id}_pixels0.txt").write_text("".join(f"{x} {y}\n" for x, y in points))

        target_mask = np.logical_or.reduce(targets) if targets else np.zeros_like(sky)
        Image.fromarray(target_mask.astype(np.uint8) * 255, mode="L").save(
            root / "SIRST/BinaryMask" / f"{image_id}_pixels0.png"
        )
        (root / "SIRST/BinaryMask" / f"{image_id}.xml").write_text(
            _pixels_xml("targets", image_id, width, height, "Target", target_mask)
        )
        _palette_png(target_mask, target_palette, root / "SIRST/PaletteMask" / f"{image_id}.png", bits=1)
        sky_path = root / "SkySeg/BinaryMask" / f"{image_id}_pixels0.png"
        Image.fromarray(sky.astype(np.uint8) * 255, mode="L").save(sky_path)
        (root / "SkySeg/BinaryMask" / f"{image_id}.xml").write_text(
            _pixels_xml("PNGImages", image_id, width, height, "Sky", sky)
        )
        _palette_png(sky, voc_palette, root / "SkySeg/PaletteMask" / f"{image_id}.png")

    for name, ids in _split_files(image_ids, seed).items():
        (root / "Splits" / f"{name}.txt").write_text("\n".join(ids))  # no trailing newline, like the real files
    # marks the devkit as synthetic, so that a dataset built from it says so in its card
    (root / SYNTHETIC_MARKER).write_text(json.dumps({"generator": "bafenet data synth", "num_images": num_images,
                                                     "seed": seed}) + "\n")
