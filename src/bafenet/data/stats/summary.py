"""A whole dataset: `compute_target_stats` gathers the measurements into a `DatasetStats` (tables, quantiles, the
README's claims checked, CSV/JSON/Markdown output) and `write_card_stats` embeds them in the dataset card."""

from __future__ import annotations

import csv
import json
import math
import os
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import datasets

from .measure import RING_GAP, RING_WIDTH, TARGET_COLUMNS, CONTRAST_THRESHOLD, ImageAnnotations, StatsError, _Example
from .plots import _write_plots
from .sources import _Item, _items, _measure, _ordered_map


NUM_EXAMPLES = 8  # crops in examples.png
CARD_COMMAND = "bafenet data stats --dataset . --out stats"

IMAGE_COLUMNS = (
    "image_id", "split", "width", "height", "num_targets", "num_points", "sky_fraction", "target_fraction",
    "max_intensity",
)  # fmt: skip
_INT_TARGET_COLUMNS = ("target", "mask_area", "peak_intensity", "brightness_rank", "background_brighter",
                       "is_brightest")  # fmt: skip

# The DenseSIRST README's "Statistical characteristics" and comparison table, checked by `DatasetStats.claims`.
README_CLAIMS = {
    "small": "Most targets are extremely small, predominantly below 5 × 5 pixels",
    "mode": "The most frequent target size is 3 × 3 pixels",
    "contrast": "90% of targets have local contrast below 2",
    "brightest": "Only a minority of targets are the brightest points in their images",
    "area": "Average target area 6 (comparison table)",
    "count": "1,024 images, 13,655 targets",
}


def compute_target_stats(
    source: datasets.DatasetDict | datasets.Dataset | Iterable[ImageAnnotations],
    *,
    ring_gap: int = RING_GAP,
    ring_width: int = RING_WIDTH,
    num_workers: int | None = None,
    progress: bool = True,
) -> DatasetStats:
    """Measure every target of ``source`` (definitions in the module docstring).

    Args:
        source: a ``datasets.DatasetDict`` (all its splits), a ``datasets.Dataset``, an iterable of
            :class:`ImageAnnotations` (e.g. :func:`iter_devkit`) or what :func:`load_source` returns. An image id
            met twice (e.g. in two splits) is measured once; ``DatasetStats.duplicates`` counts the repeats.
        ring_gap: px between the box and the background ring of the local contrast.
        ring_width: px width of that ring.
        num_workers: decoding/measuring threads (default: the number of CPUs, at most 4).
        progress: show a tqdm progress bar.
    """
    from tqdm.auto import tqdm

    if ring_gap < 0 or ring_width < 1:
        raise StatsError(f"ring_gap must be >= 0 and ring_width >= 1 px, got {ring_gap} and {ring_width}")
    workers = num_workers if num_workers is not None else min(4, os.cpu_count() or 1)
    items, total = _items(source)
    if total is None and hasattr(source, "values"):
        total = sum(len(ds) for ds in source.values())

    seen: set[str] = set()
    duplicates = 0

    def unique(items: Iterable[_Item]) -> Iterator[_Item]:
        nonlocal duplicates
        for item in items:
            if item[0] in seen:
                duplicates += 1
                bar.update()
                continue
            seen.add(item[0])
            yield item

    per_target: dict[str, list] = {k: [] for k in TARGET_COLUMNS}
    per_image: dict[str, list] = {k: [] for k in IMAGE_COLUMNS}
    examples: list[_Example] = []
    splits: list[str] = []
    with tqdm(total=total, desc="dataset statistics", unit="img", disable=not progress) as bar:
        for sample, cols, image_row, example in _ordered_map(
            lambda item: _measure(item, ring_gap, ring_width), unique(items), workers
        ):
            bar.update()
            n = image_row["num_targets"]
            if sample.split not in splits:
                splits.append(sample.split)
            per_target["image_id"].append(np.full(n, sample.image_id, dtype=object))
            per_target["split"].append(np.full(n, sample.split, dtype=object))
            per_target["target"].append(np.arange(n))
            for k, v in cols.items():
                per_target[k].append(v)
            for k in IMAGE_COLUMNS:
                per_image[k].append(image_row[k])
            if example is not None:
                examples.append(example)

    targets = {k: np.concatenate(v) if v else np.zeros(0) for k, v in per_target.items()}
    for k in _INT_TARGET_COLUMNS:
        targets[k] = targets[k].astype(np.int64)
    for k in ("image_id", "split"):
        targets[k] = targets[k].astype(object)
    images = {k: np.asarray(v, dtype=object if k in ("image_id", "split") else None) for k, v in per_image.items()}
    if not len(images["image_id"]):
        raise StatsError("the dataset has no images to measure")
    return DatasetStats(
        targets=targets,
        images=images,
        ring_gap=ring_gap,
        ring_width=ring_width,
        splits=[s for s in splits if s],
        duplicates=duplicates,
        examples=_pick_examples(examples),
    )


def _pick_examples(examples: list[_Example], k: int = NUM_EXAMPLES) -> list[_Example]:
    """``k`` examples spread over the range of targets per image, densest first; deterministic."""
    ranked = sorted(examples, key=lambda e: (-e.num_targets, e.image_id))
    if len(ranked) <= k:
        return ranked
    picks = np.unique(np.rint(np.linspace(0, len(ranked) - 1, k)).astype(int))
    return [ranked[i] for i in picks]


@dataclass
class DatasetStats:
    """Per-target and per-image statistics of a dataset (columns of numpy arrays) and how they were measured."""

    targets: dict[str, np.ndarray]
    images: dict[str, np.ndarray]
    ring_gap: int = RING_GAP
    ring_width: int = RING_WIDTH
    splits: list[str] = field(default_factory=list)
    duplicates: int = 0
    examples: list[_Example] = field(default_factory=list, repr=False)

    @property
    def num_targets(self) -> int:
        return len(self.targets["image_id"])

    @property
    def num_images(self) -> int:
        return len(self.images["image_id"])

    def summary(self) -> dict[str, Any]:
        """Headline numbers, JSON-serialisable (NaN where undefined, e.g. no image with two targets)."""
        t, im = self.targets, self.images
        w, h = np.rint(t["w"]).astype(int), np.rint(t["h"]).astype(int)
        n = max(self.num_targets, 1)
        most_common = []
        if len(w):
            sizes, size_counts = np.unique(np.stack([w, h], 1), axis=0, return_counts=True)
            for i in np.argsort(-size_counts, kind="stable")[:5]:
                most_common.append({"w": int(sizes[i][0]), "h": int(sizes[i][1]), "count": int(size_counts[i]),
                                    "share": float(size_counts[i] / n)})  # fmt: skip
        nn = t["nearest_target_distance"]
        nn = nn[np.isfinite(nn)]
        contrast = {
            key: {**_quantiles(t[key]), "share_below_2": _share_below(t[key], CONTRAST_THRESHOLD)}
            for key in ("local_contrast", "local_contrast_with_neighbours", "local_contrast_cells")
        }
        contrast["local_contrast"]["rings_without_background"] = int(np.isnan(t["local_contrast"]).sum())
        return {
            "num_images": self.num_images,
            "num_targets": self.num_targets,
            "images_per_split": {s: int((im["split"] == s).sum()) for s in self.splits},
            "duplicate_images_skipped": self.duplicates,
            "definitions": {
                "size": "box w x h in px (XML xmax - xmin, ymax - ymin); mask_area = target-mask pixels in the box",
                "local_contrast": (
                    f"mean(target mask pixels) / mean(ring); ring = pixels {self.ring_gap + 1}..."
                    f"{self.ring_gap + self.ring_width} px (Chebyshev) beyond the box, clipped to the image, "
                    "excluding all targets' pixels"
                ),
                "local_contrast_with_neighbours": "as local_contrast, neighbouring targets' pixels kept in the ring",
                "local_contrast_cells": (
                    "mean(target mask pixels) / largest mean of the 8 box-sized cells around the box (LCM layout, "
                    "neighbours included); likely the DenseSIRST README's definition"
                ),
                "brightness_rank": "1 + number of image pixels brighter than the target's peak (1 = brightest)",
                "nearest_target_distance": "box centre to the nearest other box centre of the same image, px",
                "sky_fraction": "sky-mask pixels / image pixels",
            },
            "size": {
                "width_px": _quantiles(t["w"]),
                "height_px": _quantiles(t["h"]),
                "most_common_wxh": most_common,
                "share_below_5x5": _mean((w < 5) & (h < 5)),
                "share_at_most_5x5": _mean((w <= 5) & (h <= 5)),
                "box_area_px": _quantiles(t["box_area"]),
                "mask_area_px": _quantiles(t["mask_area"]),
            },
            "contrast": contrast,
            "brightness": {
                "share_brightest": _mean(t["is_brightest"]),
                "rank": _quantiles(t["brightness_rank"]),
                "share_no_background_pixel_brighter": _mean(t["background_brighter"] == 0),
                "images_whose_brightest_point_is_a_target": len(np.unique(t["image_id"][t["is_brightest"] > 0])),
            },
            "targets_per_image": _quantiles(im["num_targets"]),
            "nearest_target_distance_px": {
                **_quantiles(nn),
                "share_below_10px": _mean(nn < 10),
                "share_below_20px": _mean(nn < 20),
                "single_target_images": int((im["num_targets"] == 1).sum()),
            },
            "sky": {
                "sky_fraction": _quantiles(im["sky_fraction"]),
                "images_all_sky": int((im["sky_fraction"] >= 1).sum()),
                "images_without_sky": int((im["sky_fraction"] <= 0).sum()),
                "share_targets_in_sky": _mean(t["sky_overlap"] > 0.5),
            },
            "images_with_point_count_mismatch": int((im["num_points"] != im["num_targets"]).sum()),
        }

    def claims(self, summary: dict[str, Any] | None = None) -> list[dict[str, Any]]:
        """The DenseSIRST README's claims, each with what was measured here and a verdict."""
        s = summary or self.summary()
        size, lc, br = s["size"], s["contrast"], s["brightness"]
        mode = size["most_common_wxh"][0] if size["most_common_wxh"] else {"w": 0, "h": 0, "share": math.nan}
        mask_area = size["mask_area_px"]
        keys = ("local_contrast", "local_contrast_with_neighbours", "local_contrast_cells")
        ring, ring_n, cells = (lc[k]["share_below_2"] for k in keys)
        contrast_verdict = (
            "yes" if min(ring, ring_n, cells) >= 0.9 else
            "with the LCM-cell definition only" if cells >= 0.9 else
            "nearly, with the LCM-cell definition" if cells >= 0.85 else "no"
        )  # fmt: skip
        return [
            {
                "claim": README_CLAIMS["small"],
                "measured": f"{_pct(size['share_below_5x5'])} have w < 5 and h < 5 px; "
                f"{_pct(size['share_at_most_5x5'])} are at most 5 × 5 px",
                "verdict": _yes(size["share_below_5x5"] > 0.5),
            },
            {
                "claim": README_CLAIMS["mode"],
                "measured": f"most frequent: {mode['w']} × {mode['h']} px ({_pct(mode['share'])} of targets)",
                "verdict": _yes(mode["w"] == 3 and mode["h"] == 3),
            },
            {
                "claim": README_CLAIMS["contrast"],
                "measured": f"below 2: {_pct(cells)} with the LCM cells (8 box-sized cells, neighbours included); "
                f"{_pct(ring)} with our ring excluding other targets; {_pct(ring_n)} with the ring including them",
                "verdict": contrast_verdict,
            },
            {
                "claim": README_CLAIMS["brightest"],
                "measured": f"{_pct(br['share_brightest'])} of targets hold their image's brightest grey value",
                "verdict": _yes(br["share_brightest"] < 0.5),
            },
            {
                "claim": README_CLAIMS["area"],
                "measured": f"mean mask area {mask_area['mean']:.1f} px (median {mask_area['median']:.0f}); "
                f"mean box area {size['box_area_px']['mean']:.1f} px",
                "verdict": _yes(abs(mask_area["mean"] - 6) <= 1),
            },
            {
                "claim": README_CLAIMS["count"],
                "measured": f"{s['num_images']:,} images, {s['num_targets']:,} targets",
                "verdict": _yes(s["num_images"] == 1024 and s["num_targets"] == 13655),
            },
        ]

    def write(self, out_dir: str | Path, command: str = "", plots: bool = True) -> dict[str, Path]:
        """Write ``summary.json`` (with the claims), the CSVs, the plots and ``README.md`` into ``out_dir``."""
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        summary = self.summary()
        summary["claims"] = self.claims(summary)
        files = {"summary": out / "summary.json", "targets": out / "targets.csv", "images": out / "images.csv"}
        files["summary"].write_text(json.dumps(_jsonable(summary), indent=2, ensure_ascii=False) + "\n")
        _write_csv(files["targets"], self.targets, TARGET_COLUMNS)
        _write_csv(files["images"], self.images, IMAGE_COLUMNS)
        if plots:
            files.update(_write_plots(self, out))
        files["readme"] = out / "README.md"
        files["readme"].write_text(self.to_markdown(summary, heading="#", command=command, plots=plots) + "\n")
        return files

    def to_markdown(
        self,
        summary: dict[str, Any] | None = None,
        link_prefix: str = "",
        heading: str = "##",
        command: str = "",
        plots: bool = True,
    ) -> str:
        """Markdown: claims table, summary table, definitions and plots (files linked under ``link_prefix``)."""
        s = summary or self.summary()
        claims = s.get("claims") or self.claims(s)
        size, lc, br = s["size"], s["contrast"], s["brightness"]
        nn, sky = s["nearest_target_distance_px"], s["sky"]
        splits = ", ".join(f"{k} {v:,}" for k, v in s["images_per_split"].items())
        made_by = f"`{command}`" if command else "`bafenet data stats`"
        lines = [
            f"{heading} Dataset statistics",
            "",
            f"Measured with {made_by} on {s['num_images']:,} images and {s['num_targets']:,} targets"
            + (f" (images per split: {splits})" if splits else "")
            + f". Per-target values: [`targets.csv`]({link_prefix}targets.csv); per image: "
            f"[`images.csv`]({link_prefix}images.csv); all numbers: [`summary.json`]({link_prefix}summary.json).",
            "",
            f"{heading}# The DenseSIRST README's claims, checked",
            "",
            "| claim (DenseSIRST README) | measured here | holds? |",
            "| --- | --- | --- |",
            *[f"| {c['claim']} | {c['measured']} | {c['verdict']} |" for c in claims],
            "",
            f"{heading}# Summary",
            "",
            "| quantity | median | mean | 5th–95th percentile | max |",
            "| --- | --- | --- | --- | --- |",
            _row("box width w (px)", size["width_px"]),
            _row("box height h (px)", size["height_px"]),
            _row("mask area (px)", size["mask_area_px"]),
            _row("local contrast, ring without other targets (ratio)", lc["local_contrast"], 2),
            _row("local contrast, ring with other targets (ratio)", lc["local_contrast_with_neighbours"], 2),
            _row("local contrast, LCM cells (ratio)", lc["local_contrast_cells"], 2),
            _row("brightness rank (1 = brightest pixel)", br["rank"], 0),
            _row("targets per image", s["targets_per_image"], 0),
            _row("distance to the nearest other target (px)", nn),
            _row("sky fraction per image", sky["sky_fraction"], 2),
            "",
            f"{_pct(nn['share_below_10px'])} of targets have another target within 10 px and "
            f"{_pct(nn['share_below_20px'])} within 20 px. {_pct(sky['share_targets_in_sky'])} of targets lie in "
            f"the sky; {sky['images_all_sky']:,} images are all sky and {sky['images_without_sky']:,} have no sky. "
            f"For {_pct(br['share_no_background_pixel_brighter'])} of targets no background pixel is brighter than "
            f"the target's peak, and in {br['images_whose_brightest_point_is_a_target']:,} of the "
            f"{s['num_images']:,} images the brightest point lies on a target.",
            "",
            "Definitions. **Size**: box `w × h` in px (XML `xmax − xmin`, `ymax − ymin`); **mask area**: "
            "target-mask "
            "pixels in the box. **Local contrast**: mean grey value of the target's mask pixels divided by the mean "
            f"of a ring {self.ring_gap + 1}–{self.ring_gap + self.ring_width} px beyond the box (a "
            f"{self.ring_gap}-px gap keeps the target's blurred rim out), clipped to the image and excluding the "
            "pixels of all targets, so that a dense cluster does not raise its own background (the README notes "
            "that including neighbours underestimates contrast; that variant is shown too). The **LCM-cell** "
            "variant divides by the brightest of the 8 box-sized cells around the box (Chen et al. 2014 layout, "
            "neighbours included); it is the definition that reproduces the README's 90 %. **Brightness rank**: "
            "1 + the number of image pixels strictly brighter than the target's brightest pixel (rank 1: the "
            "target holds the image's maximum grey value). **Nearest other target**: distance between box centres "
            "within the same image.",
        ]
        if not plots:
            return "\n".join(lines)
        lines += [
            "",
            f"![Target sizes]({link_prefix}sizes.png)",
            "",
            f"![Local contrast, cumulative distribution]({link_prefix}contrast_cdf.png)",
            "",
            f"![Brightness rank of targets]({link_prefix}brightness_rank.png)",
            "",
            f"![Distance to the nearest other target]({link_prefix}cluster_distance.png)",
            "",
            f"![Targets and sky per image]({link_prefix}per_image.png)",
            "",
            f"![Example crops with boxes, points and sky]({link_prefix}examples.png)",
        ]
        return "\n".join(lines)


def _quantiles(values: np.ndarray) -> dict[str, float]:
    v = np.asarray(values, np.float64)
    v = v[np.isfinite(v)]
    if not len(v):
        return {k: math.nan for k in ("mean", "min", "p5", "p25", "median", "p75", "p95", "max")}
    p = np.percentile(v, [5, 25, 50, 75, 95])
    return {
        "mean": float(v.mean()), "min": float(v.min()), "p5": float(p[0]), "p25": float(p[1]), "median": float(p[2]),
        "p75": float(p[3]), "p95": float(p[4]), "max": float(v.max()),
    }  # fmt: skip


def _mean(condition: np.ndarray) -> float:
    return float(np.mean(condition)) if len(condition) else math.nan


def _share_below(values: np.ndarray, threshold: float) -> float:
    valid = ~np.isnan(values)
    return float((values[valid] < threshold).mean()) if valid.any() else math.nan


def _yes(condition: bool) -> str:
    return "yes" if condition else "no"


def _pct(x: float) -> str:
    return "n/a" if x is None or math.isnan(x) else f"{100 * x:.1f} %"


def _fmt(x: float, digits: int) -> str:
    if math.isnan(x):
        return "n/a"
    if math.isinf(x):
        return "∞"
    return f"{x:,.{digits}f}"


def _row(name: str, q: dict[str, float], digits: int = 1) -> str:
    return (
        f"| {name} | {_fmt(q['median'], digits)} | {_fmt(q['mean'], max(digits, 1))} | "
        f"{_fmt(q['p5'], digits)}–{_fmt(q['p95'], digits)} | {_fmt(q['max'], digits)} |"
    )


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {k: _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None  # JSON has no NaN/inf
    return obj


def _write_csv(path: Path, columns: dict[str, np.ndarray], names: Sequence[str]) -> None:
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(names)
        for row in zip(*(columns[k].tolist() for k in names)):
            writer.writerow([_cell(v) for v in row])


def _cell(v: Any) -> Any:
    if isinstance(v, float):
        if math.isnan(v):
            return ""  # undefined (e.g. no other target in the image)
        if v.is_integer():
            return int(v)
        return f"{v:.5g}"
    return v


def write_card_stats(dataset: datasets.DatasetDict, out_dir: Path) -> str:
    """Measure ``dataset`` and write its statistics under ``out_dir/stats/``; return Markdown for the dataset card.

    The Markdown (claims table, summary table, definitions, plots) links the files relative to ``out_dir``, so it
    belongs in ``out_dir/README.md``. All splits are measured; an image in several splits counts once.
    """
    out_dir = Path(out_dir)
    stats = compute_target_stats(dataset)
    summary = stats.summary()
    summary["claims"] = stats.claims(summary)
    stats.write(out_dir / "stats", command=CARD_COMMAND)
    return stats.to_markdown(summary, link_prefix="stats/", command=CARD_COMMAND)
