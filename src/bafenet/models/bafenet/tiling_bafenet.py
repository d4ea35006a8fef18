"""Where BAFE-Net runs on a large image, and how its dense outputs come back together: sliding windows (``tiles``)
and a coarse whole-image pass that chooses the windows to zoom into (``zoom``).

Self-contained (torch only), so `save_pretrained` ships it as remote code beside the model files. One
implementation for the PyTorch model and the ONNX path: both hand in ``dense``, a function from a batch of inputs
to the dense outputs of the network (``logits`` (N, P, C), ``pred_boxes`` (N, P, 4) in input pixels,
``centerness`` (N, P), ``sky_logits`` (a tuple of (N, 1, h, w) maps, finest level first)).

* ``tiles`` (:func:`run_windows`): the image processor scales each image by ``tile_scale`` and pads it to the window
  grid; every ``tile_window`` squared window runs, and each point of the scaled image takes the values of the one
  window whose *core* holds it (inner borders are cut half-way through the overlap), so nothing is counted twice.
* ``zoom`` (:func:`run_zoom`): the processor hands over each image at its own size (x1), padded by at least one pixel. A
  *coarse pass* runs the network once over every whole image at ``zoom_coarse_scale`` (each image on a canvas of its
  own, not the batch's): the predicted box centres of its points whose detection score (sigmoid(cls) x
  sigmoid(centerness)) is >= ``zoom_threshold`` are *proposals*. Of the ``tile_scale`` window grid (the windows
  ``tiles`` would run), only the windows whose core meets a proposal (its centre grown by ``zoom_margin`` fine pixels)
  run, at the fine scale, and are stitched exactly as in ``tiles``; points of the other windows get ``EMPTY_LOGIT``
  (never a detection). An image whose proposals select more than ``zoom_max_fraction`` of its windows runs all of them
  (the ``tiles`` result). An image whose longer side is at most ``zoom_tiles_up_to`` pixels skips the coarse pass (it
  misses some targets of such small frames) and runs whole at the fine scale: in one pass over the whole scaled image
  (``zoom_small_pass="whole"``, ~35-50 % fewer pixels than its overlapping windows) or as all its windows
  (``"windows"``, the ``tiles`` result). The sky comes from a *whole-frame pass*: each
  image scaled so that its longer side is ``zoom_sky_size`` pixels (the whole horizon in one view; ``zoom_sky_size=0``:
  a pass at the coarse scale over the batch, the sky of earlier versions).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F

EMPTY_LOGIT = -1e4  # logit of canvas points no window covers (sigmoid = 0: never a detection)

# The default input geometry, one owner for `BafeNetConfig` and `BafeNetImageProcessor` (both import this module; as
# shipped remote code they may import only their siblings). The tile window defaults to the image size in both.
DEFAULT_IMAGE_SIZE = 512  # model input side in pixels (the original's 512x512)
DEFAULT_STRIDES = (8, 16, 32)  # FPN levels P3-P5, the original's; the largest is the processor's size divisor
DEFAULT_TILE_SCALE = 2.0  # tiles and zoom modes: targets reach the network at twice their size
DEFAULT_TILE_OVERLAP = 64  # pixels shared by neighbouring windows
TILE_GEOMETRY = ("tile_scale", "tile_window", "tile_overlap")
Dense = Callable[[torch.Tensor], dict]
Size = tuple[int, int]
Window = tuple[int, int, int, tuple[int, int, int, int]]  # (image index, y0, x0, core (y_lo, y_hi, x_lo, x_hi))


# ------------------------------------------------------------------------------------------------------ geometry
def tile_geometry(source: Any) -> dict[str, Any]:
    """``tile_scale``, ``tile_window`` and ``tile_overlap`` of a `BafeNetConfig` or a `BafeNetImageProcessor` (the
    processor takes them from the model's config: `BafeNetImageProcessor.from_model_config`)."""
    return {name: getattr(source, name) for name in TILE_GEOMETRY}


def scaled_size(height: int, width: int, scale: float) -> Size:
    """(height, width) of an image scaled by `scale` with its aspect ratio kept."""
    return max(1, int(round(height * scale))), max(1, int(round(width * scale)))


def window_starts(length: int, window: int, overlap: int) -> list[int]:
    """Start offsets of the sliding windows covering `length` pixels: step `window - overlap`, the last window may
    reach past the end (the input is padded to `window_starts(...)[-1] + window`)."""
    step = window - overlap
    count = 1 if length <= window else 1 + math.ceil((length - window) / step)
    return [i * step for i in range(count)]


def window_canvas(image_sizes: Sequence[Sequence[int]], window: int, overlap: int) -> Size:
    """(height, width) covering every image's window grid: the padded input of the tiles mode."""
    return (max(window_starts(int(h), window, overlap)[-1] + window for h, _ in image_sizes),
            max(window_starts(int(w), window, overlap)[-1] + window for _, w in image_sizes))


def make_points(sizes: Sequence[Size], strides: Sequence[int], device: torch.device) -> tuple[torch.Tensor, ...]:
    """Points ((j + 0.5) s, (i + 0.5) s) of every level, row-major, concatenated: (P, 2) and per-point strides (P,)."""
    points, point_strides = [], []
    for (h, w), s in zip(sizes, strides):
        ys = (torch.arange(h, device=device, dtype=torch.float32) + 0.5) * s
        xs = (torch.arange(w, device=device, dtype=torch.float32) + 0.5) * s
        yy, xx = torch.meshgrid(ys, xs, indexing="ij")
        points.append(torch.stack([xx.reshape(-1), yy.reshape(-1)], dim=-1))
        point_strides.append(torch.full((h * w,), float(s), device=device))
    return torch.cat(points), torch.cat(point_strides)


def window_layout(image_sizes: Sequence[Size], window: int, overlap: int) -> list[Window]:
    """Windows of each image, `(image index, y0, x0, core)`, with `core = (y_lo, y_hi, x_lo, x_hi)` in input pixels.

    The cores of one image partition its window grid: inner borders are cut half-way through the overlap, so every
    point of the grid is reported by exactly one window, one that sees `overlap / 2` pixels of context beyond it.
    """
    half, out = overlap // 2, []
    for index, (height, width) in enumerate(image_sizes):
        ys, xs = window_starts(height, window, overlap), window_starts(width, window, overlap)
        for iy, y0 in enumerate(ys):
            for ix, x0 in enumerate(xs):
                core = (y0 + (half if iy else 0), y0 + window - (half if iy < len(ys) - 1 else 0),
                        x0 + (half if ix else 0), x0 + window - (half if ix < len(xs) - 1 else 0))
                out.append((index, y0, x0, core))
    return out


# ------------------------------------------------------------------------------------------------------ stitching
def stitch_windows(window_outputs: dict[str, Any], layout: Sequence[Window], batch: int, canvas: Size, window: int,
                   strides: Sequence[int], wholes: Mapping[int, tuple[dict[str, Any], Size]] | None = None
                   ) -> dict[str, Any]:
    """Dense outputs of `window`-sized windows -> the dense outputs of the whole padded input.

    `window_outputs`: `logits` (N, Pw, C), `pred_boxes` (N, Pw, 4) in window pixels, `centerness` (N, Pw) and
    `sky_logits` (per level (N, 1, window / s, window / s)) for the N windows of `layout` (N may be 0). Each canvas
    point takes the values of the window whose core holds it; points no window covers get `EMPTY_LOGIT`. `wholes`:
    image index -> the dense outputs of one pass over the whole image (batch dimension dropped) and its canvas (a
    multiple of the largest stride, inside `canvas`), which fill that image's points from the top-left corner.
    """
    logits = window_outputs["logits"]
    device, num_classes = logits.device, logits.shape[-1]
    sizes = [(canvas[0] // s, canvas[1] // s) for s in strides]
    sky_levels = list(window_outputs["sky_logits"])
    sky_out = [torch.full((batch, 1, h, w), EMPTY_LOGIT, dtype=m.dtype, device=device)
               for m, (h, w) in zip(sky_levels, sizes)]
    parts: dict[str, list[torch.Tensor]] = {"logits": [], "pred_boxes": [], "centerness": []}
    tails = {"logits": (num_classes,), "pred_boxes": (4,), "centerness": ()}
    fills = {"logits": EMPTY_LOGIT, "pred_boxes": 0.0, "centerness": EMPTY_LOGIT}
    offsets = torch.tensor([[x0, y0, x0, y0] for _, y0, x0, _ in layout], device=device).reshape(-1, 4)
    start = 0
    for level, (s, (h, w)) in enumerate(zip(strides, sizes)):
        side = window // s  # the window's points per row at this level
        grid = {key: torch.full((batch, h, w, *tails[key]), fills[key], dtype=window_outputs[key].dtype,
                                device=device) for key in parts}
        level_values = {key: window_outputs[key][:, start : start + side * side].reshape(-1, side, side, *tails[key])
                        for key in parts}
        level_values["pred_boxes"] = level_values["pred_boxes"] + offsets[:, None, None].to(grid["pred_boxes"].dtype)
        for k, (index, y0, x0, (y_lo, y_hi, x_lo, x_hi)) in enumerate(layout):
            rows = slice((y_lo - y0) // s, (y_hi - y0) // s)
            cols = slice((x_lo - x0) // s, (x_hi - x0) // s)
            target = (index, slice(y_lo // s, y_hi // s), slice(x_lo // s, x_hi // s))
            for key, values in level_values.items():
                grid[key][target] = values[k, rows, cols]
            if level < len(sky_levels):  # the ONNX graph returns the finest level only
                sky_out[level][index, :, target[1], target[2]] = sky_levels[level][k, :, rows, cols]
        for index, (outputs, (whole_h, whole_w)) in (wholes or {}).items():
            h_s, w_s = whole_h // s, whole_w // s
            first = sum((whole_h // t) * (whole_w // t) for t in strides[:level])
            for key in parts:
                grid[key][index, :h_s, :w_s] = outputs[key][first : first + h_s * w_s].reshape(h_s, w_s, *tails[key])
            if level < min(len(sky_levels), len(outputs["sky_logits"])):
                sky_out[level][index, :, :h_s, :w_s] = outputs["sky_logits"][level]
        start += side * side
        for key, values in grid.items():  # back to the flattened (B, P_level, ...) layout of the dense outputs
            parts[key].append(values.reshape(batch, h * w, *tails[key]))
    points, point_strides = make_points(sizes, strides, device)
    return {**{key: torch.cat(value, dim=1) for key, value in parts.items()}, "sky_logits": tuple(sky_out),
            "points": points, "strides": point_strides}


def run_batches(dense: Dense, crops: Callable[[Sequence[Window]], torch.Tensor], layout: Sequence[Window],
                batch_size: int, like: dict[str, Any] | None = None) -> dict[str, Any]:
    """``dense`` over the windows of ``layout``, ``batch_size`` at a time (``crops`` cuts a list of windows); the
    outputs concatenated as :func:`stitch_windows` takes them. With no window, empty outputs shaped like ``like``'s
    per-window outputs (a dense output of any size: only its classes, dtypes and sky levels are used)."""
    chunks = [dense(crops(layout[i : i + batch_size])) for i in range(0, len(layout), batch_size)]
    if not chunks:
        assert like is not None, "run_batches: no window and no outputs to shape the empty result like"
        empty = lambda t, *tail: t.new_empty((0, 0, *tail))  # noqa: E731
        return {"logits": empty(like["logits"], like["logits"].shape[-1]),
                "pred_boxes": empty(like["pred_boxes"], 4), "centerness": empty(like["centerness"]),
                "sky_logits": tuple(m.new_empty((0, 1, 0, 0)) for m in like["sky_logits"])}
    merged = {key: torch.cat([c[key] for c in chunks]) for key in ("logits", "pred_boxes", "centerness")}
    merged["sky_logits"] = tuple(torch.cat(maps) for maps in zip(*(c["sky_logits"] for c in chunks)))
    return merged


def run_windows(dense: Dense, pixel_values: torch.Tensor, image_sizes: Sequence[Size], window: int, overlap: int,
                strides: Sequence[int], batch_size: int) -> dict[str, Any]:
    """Sliding-window inference (tiles mode): every window of every image through ``dense``, stitched."""
    batch, _, height, width = pixel_values.shape
    needed = window_canvas(image_sizes, window, overlap)
    if needed[0] > height or needed[1] > width:
        raise ValueError(f"input {height}x{width} is smaller than the window grid {needed[0]}x{needed[1]} of "
                         "image_sizes; pad it with the image processor (input_mode='tiles')")
    layout = window_layout(image_sizes, window, overlap)

    def crops(windows: Sequence[Window]) -> torch.Tensor:
        return torch.stack([pixel_values[i, :, y0 : y0 + window, x0 : x0 + window] for i, y0, x0, _ in windows])

    outputs = stitch_windows(run_batches(dense, crops, layout, batch_size), layout, batch, (height, width), window,
                             strides)
    return {**outputs, "windows": windows_tensor(layout, pixel_values.device)}


def windows_tensor(layout: Sequence[Window], device: torch.device) -> torch.Tensor:
    """(K, 3) long: image index, y0, x0 of each window run (in the scaled image's pixels)."""
    return torch.tensor([[i, y0, x0] for i, y0, x0, _ in layout], dtype=torch.long, device=device).reshape(-1, 3)


# ----------------------------------------------------------------------------------------------------------- zoom
def resample_axis(start: int, count: int, scaled: int, size: int, device: torch.device
                  ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Bilinear source indices of output pixels ``start .. start + count - 1`` of an axis of ``size`` pixels scaled
    to ``scaled`` (half-pixel centres, as ``F.interpolate(..., size=scaled, mode="bilinear", align_corners=False)``
    and the training windows): (low, high, weight of high). Pixels at or past ``scaled`` (the padding) read index
    ``size``, the first padding pixel of the input.

    The training pipeline has a numpy copy (``bafenet.data.transforms._source_coordinates``, ``resize_bilinear``,
    ``scaled_crop``): this file ships as remote code and may import only torch and its siblings, and the numpy data
    pipeline may not import the model; tests/test_transforms.py checks that the two agree."""
    position = torch.arange(start, start + count, device=device, dtype=torch.float32)
    source = ((position + 0.5) * (size / scaled) - 0.5).clamp(min=0)
    low = source.floor().long().clamp(max=size - 1)
    high = (low + 1).clamp(max=size - 1)
    weight = source - low
    outside = position >= scaled
    low, high = low.masked_fill(outside, size), high.masked_fill(outside, size)
    return low, high, weight.masked_fill(outside, 0.0)


def scaled_window(image: torch.Tensor, extent: Size, scaled: Size, y0: int, x0: int, window: int) -> torch.Tensor:
    """The (C, window, window) window at (``y0``, ``x0``) of ``image`` (C, H, W) whose ``extent`` is scaled to
    ``scaled``, computed for the window's pixels only; past the scaled image it holds ``image``'s padding (the input
    holds at least one padding row and column)."""
    rows = resample_axis(y0, window, scaled[0], extent[0], image.device)
    cols = resample_axis(x0, window, scaled[1], extent[1], image.device)
    first, last = int(rows[0].min()), int(rows[1].max()) + 1
    left, right = int(cols[0].min()), int(cols[1].max()) + 1
    band = image[:, first:last, left:right]  # only the source pixels the window reads
    band = (band.index_select(1, rows[0] - first) * (1 - rows[2])[:, None]
            + band.index_select(1, rows[1] - first) * rows[2][:, None])
    return (band.index_select(2, cols[0] - left) * (1 - cols[2])
            + band.index_select(2, cols[1] - left) * cols[2]).to(image.dtype)


def coarse_input(pixel_values: torch.Tensor, image_sizes: Sequence[Size], scales: Sequence[float], multiple: int
                 ) -> tuple[torch.Tensor, list[Size]]:
    """The images, each scaled by its ``scales`` entry (bilinear, as the training windows), padded with each input's
    padding value to a canvas that is a multiple of ``multiple``; when every scale is 1, the input itself. Returns the
    canvas and the scaled sizes."""
    if all(scale == 1.0 for scale in scales):
        return pixel_values, [tuple(s) for s in image_sizes]
    sizes = [scaled_size(h, w, scale) for (h, w), scale in zip(image_sizes, scales)]
    height = math.ceil(max(h for h, _ in sizes) / multiple) * multiple
    width = math.ceil(max(w for _, w in sizes) / multiple) * multiple
    canvas = []
    for b, ((h, w), target) in enumerate(zip(image_sizes, sizes)):
        pad = pixel_values[b, :, h, w]  # the first padding pixel
        out = pad[:, None, None].expand(-1, height, width).clone()
        out[:, : target[0], : target[1]] = F.interpolate(pixel_values[b : b + 1, :, :h, :w], size=target,
                                                         mode="bilinear", align_corners=False)[0]
        canvas.append(out)
    return torch.stack(canvas), sizes


def frame_scale(height: int, width: int, size: int) -> float:
    """The scale at which an image's longer side becomes ``size`` pixels: the whole-frame view of the sky pass."""
    return size / max(height, width)


def own_canvas_passes(dense: Dense, pixel_values: torch.Tensor, image_sizes: Sequence[Size], scales: Sequence[float],
                      multiple: int, indices: Sequence[int]) -> dict[int, tuple[dict[str, Any], Size, Size]]:
    """Images ``indices`` of the batch, each scaled by its ``scales`` entry, through ``dense`` on a canvas of its own
    (its scaled size rounded up to ``multiple``; images of one canvas size run together, so a small frame never pays
    for a large one's canvas). Per image index: its dense outputs (batch dimension dropped), canvas and scaled size."""
    sizes = {i: scaled_size(*image_sizes[i], scales[i]) for i in indices}
    canvases = {i: (math.ceil(h / multiple) * multiple, math.ceil(w / multiple) * multiple)
                for i, (h, w) in sizes.items()}
    found: dict[int, tuple[dict[str, Any], Size, Size]] = {}
    for canvas in dict.fromkeys(canvases.values()):
        group = [i for i, c in canvases.items() if c == canvas]
        pixels, _ = coarse_input(pixel_values[group], [image_sizes[i] for i in group], [scales[i] for i in group],
                                 multiple)
        out = dense(pixels[..., : canvas[0], : canvas[1]])
        for b, i in enumerate(group):
            image_out = {key: out[key][b] for key in ("logits", "pred_boxes", "centerness")}
            image_out["sky_logits"] = tuple(m[b] for m in out["sky_logits"])
            found[i] = (image_out, canvas, sizes[i])
    return found


def coarse_candidates(dense: Dense, pixel_values: torch.Tensor, image_sizes: Sequence[Size], scale: float,
                      strides: Sequence[int], skip: Sequence[bool] | None = None
                      ) -> tuple[list[tuple[torch.Tensor, torch.Tensor]], list[Size]]:
    """The coarse pass: every image (but those whose ``skip`` entry is true) scaled by ``scale`` through ``dense`` on
    a canvas of its own (:func:`own_canvas_passes`). Per image, the detection score sigmoid(cls) x sigmoid(centerness)
    (P,) of every point inside it and the predicted box centre (P, 2) xy in scaled pixels (none for a skipped image);
    and the scaled sizes."""
    skip = skip or [False] * len(image_sizes)
    indices = [i for i, skipped in enumerate(skip) if not skipped]
    passes = own_canvas_passes(dense, pixel_values, image_sizes, [scale] * len(image_sizes), strides[-1], indices)
    found, points_of = [], {}  # the points of each canvas size, made once
    for i in range(len(image_sizes)):
        if i not in passes:
            found.append((pixel_values.new_zeros(0), pixel_values.new_zeros(0, 2)))
            continue
        out, canvas, (height, width) = passes[i]
        if canvas not in points_of:
            points_of[canvas] = make_points([(canvas[0] // s, canvas[1] // s) for s in strides], strides,
                                            pixel_values.device)[0]
        points = points_of[canvas]
        inside = (points[:, 0] < width) & (points[:, 1] < height)
        score = out["logits"].float().sigmoid().amax(-1) * out["centerness"].float().sigmoid()
        boxes = out["pred_boxes"].float()
        found.append((score[inside], ((boxes[:, :2] + boxes[:, 2:]) / 2)[inside]))
    return found, [scaled_size(h, w, scale) for h, w in image_sizes]


def proposal_boxes(candidates: Sequence[tuple[torch.Tensor, torch.Tensor]], coarse_sizes: Sequence[Size],
                   fine_sizes: Sequence[Size], threshold: float, margin: float) -> list[torch.Tensor]:
    """Per image, the proposals (M, 4) xyxy in fine pixels: the predicted box centre of every coarse point
    (:func:`coarse_candidates`) whose detection score is >= ``threshold``, grown by ``margin`` pixels to each side."""
    found = []
    for (score, centres), (h, w), (fine_h, fine_w) in zip(candidates, coarse_sizes, fine_sizes):
        centres = centres[score >= threshold] * torch.tensor([fine_w / w, fine_h / h], device=centres.device)
        found.append(torch.cat([centres - margin, centres + margin], dim=1))
    return found


def select_windows(layout: Sequence[Window], proposals: Sequence[torch.Tensor], max_fraction: float,
                   run_all: Sequence[bool]) -> list[Window]:
    """The windows whose core meets a proposal box of their image; every window of an image whose selection would
    exceed ``max_fraction`` of its windows (too many proposals to gain from zooming: the tiles result) or whose
    ``run_all`` entry is true."""
    chosen = []
    for index, (boxes, everything) in enumerate(zip(proposals, run_all, strict=True)):
        windows = [w for w in layout if w[0] == index]
        if everything:
            chosen += windows
            continue
        if not windows or not len(boxes):
            continue
        cores = torch.tensor([core for *_, core in windows], dtype=boxes.dtype, device=boxes.device)  # y_lo y_hi x_lo x_hi
        meets = ((boxes[None, :, 0] < cores[:, None, 3]) & (boxes[None, :, 2] > cores[:, None, 2])
                 & (boxes[None, :, 1] < cores[:, None, 1]) & (boxes[None, :, 3] > cores[:, None, 0])).any(1)
        picked = [w for w, hit in zip(windows, meets.tolist()) if hit]
        chosen += windows if len(picked) > max_fraction * len(windows) else picked
    return chosen


def zoom_windows(candidates: Sequence[tuple[torch.Tensor, torch.Tensor]], image_sizes: Sequence[Size],
                 coarse_sizes: Sequence[Size], fine_sizes: Sequence[Size], *, window: int, overlap: int,
                 threshold: float, margin: float, max_fraction: float, tiles_up_to: int = 0) -> list[Window]:
    """The windows of the fine grid that the zoom mode runs: those the coarse pass's proposals choose, and every
    window of an image whose longer side is at most ``tiles_up_to`` pixels (at x1) or whose proposals choose more
    than ``max_fraction`` of its windows."""
    proposals = proposal_boxes(candidates, coarse_sizes, fine_sizes, threshold, margin)
    return select_windows(window_layout(fine_sizes, window, overlap), proposals, max_fraction,
                          [max(h, w) <= tiles_up_to for h, w in image_sizes])


def run_zoom(dense: Dense, pixel_values: torch.Tensor, image_sizes: Sequence[Size], *, coarse_scale: float,
             fine_scale: float, window: int, overlap: int, strides: Sequence[int], batch_size: int,
             threshold: float, margin: float, max_fraction: float, sky_size: int = 0,
             tiles_up_to: int = 0, small_pass: str = "whole") -> dict[str, Any]:
    """Zoom inference (see the module docstring): the coarse pass over the whole images, the selected windows of the
    ``fine_scale`` grid, stitched, and the sky of the whole-frame pass (each image's longer side at ``sky_size``
    pixels; with ``sky_size`` 0, a pass at ``coarse_scale`` over the batch's canvas). Returns the dense outputs over
    the fine canvas (``image_sizes`` the fine extents, ``input_size`` the fine canvas), the sky (``sky_logits``,
    ``sky_input_size``, ``sky_image_sizes``) and the ``windows`` run. An image whose longer side is at most
    ``tiles_up_to`` skips the coarse pass and runs whole at ``fine_scale``: in one pass (``small_pass="whole"``; no
    window is listed for it) or as all its windows (``"windows"``)."""
    batch, _, height, width = pixel_values.shape
    if any(h >= height or w >= width for h, w in image_sizes):
        raise ValueError(f"input {height}x{width} holds an image of image_sizes {list(image_sizes)} without a "
                         "padding row and column; prepare it with the image processor (input_mode='zoom')")
    small = [max(h, w) <= tiles_up_to for h, w in image_sizes]
    candidates, coarse_sizes = coarse_candidates(dense, pixel_values, image_sizes, coarse_scale, strides, skip=small)
    sky_scales = [frame_scale(h, w, sky_size) if sky_size else coarse_scale for h, w in image_sizes]
    sky_pixels, sky_sizes = coarse_input(pixel_values, image_sizes, sky_scales, strides[-1])
    sky = dense(sky_pixels)
    fine_sizes = [scaled_size(h, w, fine_scale) for h, w in image_sizes]
    layout = zoom_windows(candidates, image_sizes, coarse_sizes, fine_sizes, window=window, overlap=overlap,
                          threshold=threshold, margin=margin, max_fraction=max_fraction,
                          tiles_up_to=tiles_up_to if small_pass == "windows" else 0)
    wholes = own_canvas_passes(dense, pixel_values, image_sizes, [fine_scale] * batch, strides[-1],
                               [i for i, is_small in enumerate(small) if is_small and small_pass == "whole"])

    def crops(windows: Sequence[Window]) -> torch.Tensor:
        return torch.stack([scaled_window(pixel_values[i], image_sizes[i], fine_sizes[i], y0, x0, window)
                            for i, y0, x0, _ in windows])

    canvas = window_canvas(fine_sizes, window, overlap)
    outputs = stitch_windows(run_batches(dense, crops, layout, batch_size, like=sky), layout, batch, canvas,
                             window, strides, {i: (out, whole) for i, (out, whole, _) in wholes.items()})
    device = pixel_values.device
    return {**outputs, "sky_logits": sky["sky_logits"], "windows": windows_tensor(layout, device),
            "input_size": torch.tensor(canvas, device=device), "image_sizes": torch.tensor(fine_sizes, device=device),
            "sky_input_size": torch.tensor(sky_pixels.shape[-2:], device=device),
            "sky_image_sizes": torch.tensor(sky_sizes, device=device)}


def run_image_path(dense: Dense, pixel_values: torch.Tensor, image_sizes: Sequence[Size], config: Any
                   ) -> dict[str, Any]:
    """Whole images through the network as ``config.input_mode`` says (``tiles``: every window; ``zoom``: the coarse
    pass and the selected windows): the one dispatch of the PyTorch model and the ONNX path."""
    common = dict(window=config.tile_window, overlap=config.tile_overlap, strides=config.strides,
                  batch_size=config.tile_batch_size)
    if config.input_mode == "zoom":
        return run_zoom(dense, pixel_values, image_sizes, coarse_scale=config.zoom_coarse_scale,
                        fine_scale=config.tile_scale, threshold=config.zoom_threshold, margin=config.zoom_margin,
                        max_fraction=config.zoom_max_fraction, sky_size=config.zoom_sky_size,
                        tiles_up_to=config.zoom_tiles_up_to, small_pass=config.zoom_small_pass, **common)
    outputs = run_windows(dense, pixel_values, image_sizes, **common)
    return {**outputs, "input_size": torch.tensor(pixel_values.shape[-2:], device=pixel_values.device),
            "image_sizes": torch.tensor(image_sizes, device=pixel_values.device)}


__all__ = ["DEFAULT_IMAGE_SIZE", "DEFAULT_STRIDES", "DEFAULT_TILE_OVERLAP", "DEFAULT_TILE_SCALE", "EMPTY_LOGIT",
           "TILE_GEOMETRY", "coarse_candidates", "frame_scale", "make_points", "own_canvas_passes", "run_image_path",
           "run_windows", "run_zoom", "scaled_size", "scaled_window", "select_windows", "stitch_windows",
           "tile_geometry", "window_canvas", "window_layout", "window_starts", "zoom_windows"]
