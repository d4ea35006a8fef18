"""The six plots of ``bafenet data stats`` (matplotlib's object API on an Agg canvas: no pyplot state, no display
needed)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from .measure import CONTRAST_THRESHOLD, _Example


class PlottedStats(Protocol):
    """What the plots read of a `summary.DatasetStats` (named here, so that summary.py imports plots.py and not
    the other way round)."""

    targets: dict[str, np.ndarray]
    images: dict[str, np.ndarray]
    ring_gap: int
    ring_width: int
    examples: list[_Example]

    @property
    def num_targets(self) -> int: ...


_BLUE, _ORANGE, _GREEN, _GREY = "#1f77b4", "#ff7f0e", "#2ca02c", "#555555"


def _figure(width: float, height: float, ncols: int = 1) -> tuple[Any, Any]:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=110, layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, ncols)
    return fig, axes


def _save(fig: Any, path: Path) -> Path:
    fig.savefig(path)
    return path


def _plot_sizes(stats: PlottedStats, path: Path) -> Path:
    t = stats.targets
    cap = 10
    w = np.clip(np.rint(t["w"]).astype(int), 1, cap)
    h = np.clip(np.rint(t["h"]).astype(int), 1, cap)
    grid = np.zeros((cap, cap))
    np.add.at(grid, (h - 1, w - 1), 1)
    share = 100 * grid / max(len(w), 1)
    fig, (ax, ax2) = _figure(11, 4.6, 2)
    image = ax.imshow(share, origin="lower", cmap="viridis", extent=(0.5, cap + 0.5, 0.5, cap + 0.5))
    for (row, col), value in np.ndenumerate(share):
        if value >= 0.05:
            ax.text(col + 1, row + 1, f"{value:.1f}", ha="center", va="center", fontsize=7,
                    color="white" if value < share.max() / 2 else "black")
    ticks = list(range(1, cap + 1))
    labels = [str(v) for v in ticks[:-1]] + [f"≥{cap}"]
    ax.set_xticks(ticks, labels)
    ax.set_yticks(ticks, labels)
    ax.set_xlabel("box width w (px)")
    ax.set_ylabel("box height h (px)")
    ax.set_title("Target box size w × h (% of targets)")
    fig.colorbar(image, ax=ax, label="% of targets", shrink=0.85)

    area = t["mask_area"]
    top = 60
    ax2.hist(np.clip(area, 0, top), bins=np.arange(0.5, top + 1.5, 1), color=_BLUE, edgecolor="white", linewidth=0.3)
    mean = float(np.mean(area)) if len(area) else math.nan
    ax2.axvline(mean, color=_ORANGE, linestyle="-", label=f"mean here: {mean:.1f} px")
    ax2.axvline(6, color=_GREY, linestyle="--", label="README's average: 6 px")
    ax2.set_xlabel(f"target mask area (px; last bin = ≥ {top})")
    ax2.set_ylabel("number of targets")
    ax2.set_title("Target area from the pixel mask")
    ax2.legend(frameon=False)
    return _save(fig, path)


def _plot_contrast(stats: PlottedStats, path: Path) -> Path:
    fig, ax = _figure(7, 4.6)
    t = stats.targets
    series = [
        ("ring, other targets excluded (ours)", t["local_contrast"], _BLUE, "-"),
        ("ring, other targets included", t["local_contrast_with_neighbours"], _ORANGE, "--"),
        ("8 LCM cells, brightest cell (README's?)", t["local_contrast_cells"], _GREEN, "-."),
    ]
    high = 2.5
    for label, values, color, style in series:
        v = np.sort(values[~np.isnan(values)])
        if len(v):
            below = float((v < CONTRAST_THRESHOLD).mean())
            ax.step(v, np.arange(1, len(v) + 1) / len(v), where="post", color=color, linestyle=style,
                    label=f"{label}: {100 * below:.1f} % < 2")
            finite = v[np.isfinite(v)]
            if len(finite):
                high = max(high, float(np.percentile(finite, 99)))
    ax.axvline(CONTRAST_THRESHOLD, color=_GREY, linewidth=0.8)
    ax.axhline(0.9, color=_GREY, linewidth=0.8, linestyle=":")
    ax.text(CONTRAST_THRESHOLD, 0.5, "contrast 2 ", color=_GREY, fontsize=8, rotation=90, ha="right", va="center")
    ax.text(high, 0.9, "README: 90 % below 2 ", color=_GREY, fontsize=8, ha="right", va="bottom")
    ax.set_xlim(0.5, high)
    ax.set_ylim(0, 1.01)
    ax.set_xlabel(f"local contrast = target mean / background mean (ratio; ring {stats.ring_gap + 1}–"
                  f"{stats.ring_gap + stats.ring_width} px beyond the box)")
    ax.set_ylabel("share of targets with contrast ≤ x")
    ax.set_title("Local contrast, cumulative distribution")
    if ax.get_legend_handles_labels()[0]:
        ax.legend(frameon=False, loc="lower right", fontsize=8)
    ax.grid(alpha=0.3)
    return _save(fig, path)


def _plot_brightness(stats: PlottedStats, path: Path) -> Path:
    edges = [1, 2, 11, 101, 1_001, 10_001, 100_001, np.inf]
    labels = ["1\n(brightest)", "2–10", "11–100", "101–1k", "1k–10k", "10k–100k", ">100k"]
    t = stats.targets
    n = max(stats.num_targets, 1)
    fig, ax = _figure(7, 4.6)
    x = np.arange(len(labels))
    for offset, values, color, label in [
        (-0.2, t["brightness_rank"], _BLUE, "rank among all pixels"),
        (0.2, t["background_brighter"] + 1, _ORANGE, "1 + background pixels brighter than the peak"),
    ]:
        counts, _ = np.histogram(values, bins=edges)
        bars = ax.bar(x + offset, 100 * counts / n, width=0.4, color=color, label=label)
        ax.bar_label(bars, fmt="%.1f", fontsize=7)
    ax.set_xticks(x, labels)
    ax.set_xlabel("brightness rank of the target's brightest pixel within its image (1 = brightest point)")
    ax.set_ylabel("% of targets")
    ax.set_title("Is the target the brightest point of its image?")
    ax.legend(frameon=False, fontsize=8)
    return _save(fig, path)


def _plot_distance(stats: PlottedStats, path: Path) -> Path:
    d = stats.targets["nearest_target_distance"]
    d = d[np.isfinite(d)]
    # zoom on where the mass is (1-px bins up to 40 px), the long tail piles up in the last bin
    top = int(np.clip(5 * math.ceil(1.5 * np.percentile(d, 90) / 5), 20, 100)) if len(d) else 20
    step = 1 if top <= 40 else 2
    fig, ax = _figure(7, 4.6)
    counts, _, bars = ax.hist(np.clip(d, 0, top), bins=np.arange(0, top + step + 1e-9, step), color=_BLUE,
                              edgecolor="white", linewidth=0.3)
    if len(d) and counts[-1]:
        bars[-1].set_facecolor(_GREY)
        ax.annotate(f"≥ {top} px: {int(counts[-1])}", (top + step / 2, counts[-1]), ha="right", va="bottom",
                    fontsize=8, color=_GREY, xytext=(0, 3), textcoords="offset points")
    if len(d):
        median = float(np.median(d))
        ax.axvline(median, color=_ORANGE, label=f"median {median:.1f} px")
        ax.legend(frameon=False)
    ax.set_xlabel(f"distance to the nearest other target in the image (px, centre to centre; last bin = ≥ {top})")
    ax.set_ylabel("number of targets")
    ax.set_title("How clustered are the targets?")
    return _save(fig, path)


def _plot_per_image(stats: PlottedStats, path: Path) -> Path:
    im = stats.images
    fig, (ax, ax2) = _figure(11, 4.2, 2)
    counts = im["num_targets"].astype(int)
    top = int(counts.max()) if len(counts) else 1
    ax.hist(counts, bins=np.arange(-0.5, top + 1.5, 1), color=_BLUE, edgecolor="white", linewidth=0.3)
    ax.set_xlabel("targets per image")
    ax.set_ylabel("number of images")
    ax.set_title(f"Targets per image (mean {counts.mean() if len(counts) else math.nan:.1f})")
    ax2.hist(im["sky_fraction"].astype(float), bins=np.linspace(0, 1, 21), color=_BLUE, edgecolor="white",
             linewidth=0.3)
    ax2.set_xlabel("sky fraction of the image (sky pixels / all pixels)")
    ax2.set_ylabel("number of images")
    ax2.set_title("Sky fraction per image")
    return _save(fig, path)


def _stretch(grey: np.ndarray, sky: np.ndarray, sky_rgb: np.ndarray, alpha: float) -> np.ndarray:
    """Grey -> RGB stretched from the 1st percentile to the maximum, sky tinted."""
    values = grey.astype(np.float64)
    low, high = (np.percentile(values, 1), values.max()) if values.size else (0.0, 1.0)
    rgb = np.repeat(np.clip((values - low) / max(high - low, 1.0), 0, 1)[..., None], 3, axis=-1)
    rgb[sky] = (1 - alpha) * rgb[sky] + alpha * sky_rgb
    return rgb


def _plot_examples(stats: PlottedStats, path: Path) -> Path:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch, Rectangle

    from bafenet.data.drawing import GROUND_TRUTH_COLOR, INSET_FRAME_COLOR, SKY_COLOR

    examples = stats.examples
    ncols = 4
    nrows = 2 * max(1, math.ceil(len(examples) / ncols))  # a whole-image row above each row of crops
    fig = Figure(figsize=(3.0 * ncols, 2.7 * nrows + 0.4), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    axes = np.asarray(fig.subplots(nrows, ncols, height_ratios=[0.75, 1] * (nrows // 2))).reshape(nrows, ncols)
    box_color = tuple(c / 255 for c in GROUND_TRUTH_COLOR)
    frame_color = tuple(c / 255 for c in INSET_FRAME_COLOR)
    sky_rgb = np.asarray(SKY_COLOR, np.float64) / 255
    for ax in axes.ravel():
        ax.set_axis_off()
    for k, ex in enumerate(examples):
        top, ax = axes[2 * (k // ncols), k % ncols], axes[2 * (k // ncols) + 1, k % ncols]
        # whole image: sky tinted, the crop framed
        width, height = ex.image_size
        top.imshow(_stretch(ex.thumbnail, ex.thumbnail_sky, sky_rgb, 0.35), interpolation="antialiased",
                   extent=(0, width, height, 0))
        top.add_patch(Rectangle(ex.origin, ex.image.shape[1], ex.image.shape[0], fill=False, edgecolor=frame_color,
                                linewidth=1.5))
        top.set_title(f"{ex.image_id} ({width}×{height} px)\n{ex.num_targets} target{'s' * (ex.num_targets != 1)}, "
                      f"{100 * ex.sky_fraction:.0f} % sky", fontsize=8)
        # the crop, 1 image pixel = 1 block
        ax.imshow(_stretch(ex.image, ex.sky, sky_rgb, 0.2), interpolation="nearest")
        if ex.sky.any() and not ex.sky.all():
            ax.contour(ex.sky.astype(float), levels=[0.5], colors=[sky_rgb], linewidths=1.2, linestyles="--")
        pad = 0.7  # the outline sits just outside the box so the target pixels stay visible
        for bx0, by0, bx1, by1 in ex.boxes_xyxy:
            ax.add_patch(Rectangle((bx0 - 0.5 - pad, by0 - 0.5 - pad), bx1 - bx0 + 2 * pad, by1 - by0 + 2 * pad,
                                   fill=False, edgecolor=box_color, linewidth=1.0))
        if len(ex.points):
            ax.plot(ex.points[:, 0], ex.points[:, 1], "+", color="red", markersize=5, markeredgewidth=1.0)
        ax.set_xlim(-0.5, ex.image.shape[1] - 0.5)
        ax.set_ylim(ex.image.shape[0] - 0.5, -0.5)
        for spine in ax.spines.values():
            spine.set_edgecolor(frame_color)
        ax.set_title(f"{ex.image.shape[1]}×{ex.image.shape[0]} px crop at ({ex.origin[0]}, {ex.origin[1]})",
                     fontsize=8)
    fig.legend(
        handles=[
            Patch(facecolor="none", edgecolor=frame_color, label="crop shown below"),
            Patch(facecolor="none", edgecolor=box_color, label="box (drawn just outside)"),
            Line2D([], [], marker="+", color="red", linestyle="none", label="point label"),
            Patch(facecolor=sky_rgb, alpha=0.4, edgecolor=sky_rgb, linestyle="--", label="sky (tint, dashed edge)"),
        ],
        loc="outside lower center", ncols=4, frameon=False, fontsize=8,
    )
    fig.suptitle("Example images and their densest target cluster (grey values stretched per panel)", fontsize=10)
    return _save(fig, path)


def _write_plots(stats: PlottedStats, out: Path) -> dict[str, Path]:
    return {
        "sizes": _plot_sizes(stats, out / "sizes.png"),
        "contrast_cdf": _plot_contrast(stats, out / "contrast_cdf.png"),
        "brightness_rank": _plot_brightness(stats, out / "brightness_rank.png"),
        "cluster_distance": _plot_distance(stats, out / "cluster_distance.png"),
        "per_image": _plot_per_image(stats, out / "per_image.png"),
        "examples": _plot_examples(stats, out / "examples.png"),
    }
