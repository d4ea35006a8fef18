"""The zoom input mode: a coarse whole-image pass for the sky and for proposals, the fine windows only where they point."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from bafenet.data.transforms import DetectionCollator, DetectionSample, TileTransform
from bafenet.models.bafenet import BafeNetConfig, BafeNetForObjectDetection, BafeNetImageProcessor
from bafenet.models.bafenet.tiling_bafenet import (EMPTY_LOGIT, make_points, run_zoom, scaled_size, scaled_window,
                                                   window_layout)

pytestmark = pytest.mark.usefixtures("one_thread_module")

ZOOM = dict(backbone="resnet18", fpn_channels=32, num_head_convs=1, adapter_channels=16, image_size=64,
            strides=(8, 16), input_mode="zoom", tile_scale=2.0, tile_window=128, tile_overlap=32, zoom_tiles_up_to=0)


def zoom_model(**overrides) -> tuple[BafeNetForObjectDetection, BafeNetImageProcessor]:
    torch.manual_seed(0)
    config = BafeNetConfig.improved(**{**ZOOM, **overrides})
    return BafeNetForObjectDetection(config).eval(), BafeNetImageProcessor.from_model_config(config)


def image(height: int = 90, width: int = 130, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 255, (height, width), dtype=np.uint8)


# ----------------------------------------------------------------------------------------------------- geometry
def test_config_validates_zoom_settings_and_calls_zoom_an_improvement():
    assert "input_mode=zoom" in BafeNetConfig.improved(**ZOOM).improvements
    with pytest.raises(ValueError, match="faithful"):
        BafeNetConfig(input_mode="zoom")
    with pytest.raises(ValueError, match="zoom_coarse_scale"):
        BafeNetConfig.improved(**ZOOM, zoom_coarse_scale=1.5)
    with pytest.raises(ValueError, match="zoom_threshold"):
        BafeNetConfig.improved(**ZOOM, zoom_max_fraction=2.0)
    with pytest.raises(ValueError, match="zoom_tiles_up_to"):
        BafeNetConfig.improved(**ZOOM | {"zoom_tiles_up_to": -1})
    with pytest.raises(ValueError, match="zoom_small_pass"):
        BafeNetConfig.improved(**ZOOM | {"zoom_small_pass": "tiles"})


def test_processor_keeps_images_at_their_size_with_a_padding_row_and_column():
    _, processor = zoom_model()
    inputs = processor(images=[image(90, 130), image(64, 32)])
    assert inputs["image_sizes"].tolist() == [[90, 130], [64, 32]]
    assert tuple(inputs["pixel_values"].shape) == (2, 3, 96, 144)  # next multiple of 16 above each side
    assert tuple(processor(images=[image(64, 64)])["pixel_values"].shape[-2:]) == (80, 80)  # 64 -> 80, never 64
    padding = processor(images=[np.zeros((1, 1), np.uint8)])["pixel_values"][0, :, 0, 0]
    torch.testing.assert_close(inputs["pixel_values"][1, :, 70, 40], padding)


@pytest.mark.parametrize("y0,x0", [(0, 0), (96, 96), (96, 192)])
def test_scaled_window_equals_the_tiles_processors_scaled_image(y0, x0):
    """A fine window cut from the x1 input equals the same window of the image the tiles mode scales and pads."""
    _, zoom = zoom_model()
    tiles = zoom.with_settings(input_mode="tiles")
    picture = image(90, 130)
    small = zoom(images=[picture])["pixel_values"][0]
    big = tiles(images=[picture])["pixel_values"][0]
    window = scaled_window(small, (90, 130), scaled_size(90, 130, 2.0), y0, x0, 128)
    torch.testing.assert_close(window, big[:, y0 : y0 + 128, x0 : x0 + 128], atol=1e-4, rtol=0)


# --------------------------------------------------------------------------------------------- window selection
def fake_dense(strides=(8, 16)):
    """A stand-in network whose class logit at a point is high where the input is bright (mean of its cell), with
    a sure centerness and 4 px boxes around every point: proposals appear exactly where the image is bright."""
    calls = []

    def dense(pixels: torch.Tensor) -> dict:
        calls.append(tuple(pixels.shape))
        maps = [F.avg_pool2d(pixels.mean(1, keepdim=True), s) for s in strides]
        points, _ = make_points([m.shape[-2:] for m in maps], strides, pixels.device)
        flat = torch.cat([m.flatten(1) for m in maps], 1)
        boxes = torch.cat([points - 2, points + 2], -1).expand(len(pixels), -1, -1)
        return {"logits": (flat * 20 - 10)[..., None], "pred_boxes": boxes, "centerness": torch.full_like(flat, 20.0),
                "sky_logits": tuple(maps)}

    return dense, calls


def run_fake(pixels: torch.Tensor, sizes, max_fraction: float = 0.5, sky_size: int = 0, tiles_up_to: int = 0,
             small_pass: str = "whole"):
    dense, calls = fake_dense()
    out = run_zoom(dense, pixels, sizes, coarse_scale=1.0, fine_scale=2.0, window=128, overlap=32, strides=(8, 16),
                   batch_size=4, threshold=0.5, margin=0.0, max_fraction=max_fraction, sky_size=sky_size,
                   tiles_up_to=tiles_up_to, small_pass=small_pass)
    return out, calls


def test_only_the_windows_whose_core_meets_a_proposal_run():
    pixels = torch.zeros(1, 3, 208, 304)
    pixels[0, :, 144:152, 248:256] = 1.0  # one bright stride-8 cell: a box centred at (252, 148) x1
    out, calls = run_fake(pixels, [(200, 300)])
    layout = window_layout([(400, 600)], 128, 32)  # the proposal at x2: the centre (504, 296), no margin
    hit = [(y0, x0) for _, y0, x0, (y_lo, y_hi, x_lo, x_hi) in layout if y_lo < 296 < y_hi and x_lo < 504 < x_hi]
    assert sorted(map(tuple, out["windows"][:, 1:].tolist())) == sorted(hit) and len(hit) == 1
    # the coarse pass, the sky pass (here at the coarse scale: sky_size 0), then the windows
    assert calls[:2] == [(1, 3, 208, 304)] * 2 and sum(c[0] for c in calls[2:]) == len(hit)
    assert out["input_size"].tolist() == [416, 608] and out["image_sizes"].tolist() == [[400, 600]]
    # points outside the windows run are empty: never a detection
    assert (out["logits"] > EMPTY_LOGIT / 2).sum() < out["logits"].numel() / 4


def test_no_proposal_runs_no_window_and_too_many_run_them_all():
    empty, _ = run_fake(torch.zeros(1, 3, 208, 304), [(200, 300)])
    assert len(empty["windows"]) == 0 and (empty["logits"] == EMPTY_LOGIT).all()
    bright = torch.ones(1, 3, 208, 304)
    bright[0, :, 200:, :] = bright[0, :, :, 300:] = 0  # padding
    full, _ = run_fake(bright, [(200, 300)], max_fraction=0.5)
    assert len(full["windows"]) == len(window_layout([(400, 600)], 128, 32))


def test_each_image_has_its_own_coarse_canvas():
    """A small frame batched with a large one is not run on the large one's canvas in the coarse pass; its
    proposals are where its own bright cell is."""
    pixels = torch.zeros(2, 3, 208, 304)
    pixels[1, :, 40:48, 40:48] = 1.0  # a bright cell of the small image (its centre (44, 44) x1 -> (88, 88) x2)
    out, calls = run_fake(pixels, [(200, 300), (60, 90)])
    assert calls[:2] == [(1, 3, 208, 304), (1, 3, 64, 96)]
    hit = [(1, y0, x0) for i, y0, x0, (y_lo, y_hi, x_lo, x_hi) in window_layout([(400, 600), (120, 180)], 128, 32)
           if i == 1 and y_lo < 88 < y_hi and x_lo < 88 < x_hi]
    assert sorted(map(tuple, out["windows"].tolist())) == hit and len(hit) == 1


def test_small_images_run_every_window_without_proposals():
    """With zoom_small_pass "windows", an image whose longer side is at most tiles_up_to skips the coarse pass and
    runs its whole grid (the tiles result); a larger one in the same batch still runs only what its proposals choose
    (none here)."""
    out, calls = run_fake(torch.zeros(2, 3, 208, 304), [(200, 300), (100, 150)], tiles_up_to=150, small_pass="windows")
    small = window_layout([(400, 600), (200, 300)], 128, 32)
    assert sorted(map(tuple, out["windows"].tolist())) == sorted((i, y0, x0) for i, y0, x0, _ in small if i == 1)
    assert calls[0] == (1, 3, 208, 304)  # the coarse pass of the large image only
    assert len(run_fake(torch.zeros(2, 3, 208, 304), [(200, 300), (100, 150)], tiles_up_to=149)[0]["windows"]) == 0


def test_small_images_run_whole_in_one_pass():
    """With zoom_small_pass "whole" (the default), a small image runs once over its whole scaled image (on a canvas of
    its own, no window listed), and its dense outputs fill its part of the fine canvas point for point."""
    pixels = torch.zeros(2, 3, 208, 304)
    pixels[1, :, 40:48, 40:48] = 1.0  # a bright cell of the small image
    out, calls = run_fake(pixels, [(200, 300), (100, 150)], tiles_up_to=150)
    assert len(out["windows"]) == 0
    assert calls == [(1, 3, 208, 304), (2, 3, 208, 304), (1, 3, 208, 304)]  # coarse (large), sky, the small one x2
    dense, _ = fake_dense()
    scaled = F.interpolate(pixels[1:, :, :100, :150], size=(200, 300), mode="bilinear", align_corners=False)
    expected = dense(F.pad(scaled, (0, 4, 0, 8)))["logits"][0, : 26 * 38, 0].reshape(26, 38)  # stride 8, 208 x 304
    fine = out["logits"][1, : 52 * 76, 0].reshape(52, 76)  # stride 8 points of the 416 x 608 fine canvas
    torch.testing.assert_close(fine[:26, :38], expected)
    assert (fine[26:] == EMPTY_LOGIT).all() and (fine[:, 38:] == EMPTY_LOGIT).all()  # past its canvas: empty
    assert fine.max() > 0  # the bright cell is there


@pytest.mark.parametrize("sky_size,sky_input,sky_image", [(0, [208, 304], [200, 300]), (64, [48, 64], [43, 64])])
def test_sky_comes_from_its_own_pass_in_its_own_geometry(sky_size, sky_input, sky_image):
    """The sky of the coarse pass (sky_size 0) or of the whole-frame pass (longer side at sky_size), read back at the
    image's size."""
    pixels = torch.zeros(1, 3, 208, 304)
    pixels[0, :, :100] = 1.0  # the top half is "sky"
    out, calls = run_fake(pixels, [(200, 300)], sky_size=sky_size)
    assert out["sky_input_size"].tolist() == sky_input and out["sky_image_sizes"].tolist() == [sky_image]
    assert calls[:2] == [(1, 3, 208, 304), (1, 3, *sky_input)]
    _, processor = zoom_model()
    sky = processor.post_process_sky_segmentation({**out, "sky_logits": tuple(m * 20 - 10 for m in out["sky_logits"])},
                                                  target_sizes=[(200, 300)])[0]
    assert sky.shape == (200, 300) and sky[:90].all() and not sky[110:].any()


# ---------------------------------------------------------------------------------------------------- the model
def test_zoom_equals_tiles_when_every_window_runs():
    """With every window selected (threshold 0), the zoom model's detections are the tiles model's."""
    model, processor = zoom_model(zoom_threshold=0.0, zoom_max_fraction=1.0)
    tiles_processor = processor.with_settings(input_mode="tiles")
    picture = image(90, 130)
    with torch.no_grad():
        zoomed = model(**processor(images=[picture]))
        model.config.input_mode = "tiles"
        tiled = model(**tiles_processor(images=[picture]))
    assert len(zoomed.windows) == len(tiled.windows) == len(window_layout([(180, 260)], 128, 32))
    for key in ("logits", "pred_boxes", "centerness"):
        torch.testing.assert_close(zoomed[key], tiled[key], atol=2e-3, rtol=1e-3)
    detections = [processor.post_process_object_detection(out, target_sizes=[(90, 130)])[0] for out in (zoomed, tiled)]
    torch.testing.assert_close(detections[0]["boxes"], detections[1]["boxes"], atol=2e-3, rtol=0)


def test_zoom_sky_is_the_whole_frame_pass_or_the_coarse_pass():
    model, processor = zoom_model(zoom_sky_size=64)
    inputs = processor(images=[image(90, 130)])
    with torch.no_grad():
        out = model(**inputs)
        frame = F.interpolate(inputs["pixel_values"][:, :, :90, :130], size=(44, 64), mode="bilinear",
                              align_corners=False)
        canvas = inputs["pixel_values"][:, :, 90:91, 130:131].expand(-1, -1, 48, 64).clone()
        canvas[:, :, :44, :64] = frame
        torch.testing.assert_close(out.sky_logits[0], model.dense_outputs(canvas)["sky_logits"][0])
        assert out.sky_image_sizes.tolist() == [[44, 64]] and out.sky_input_size.tolist() == [48, 64]
        model.config.zoom_sky_size = 0
        out = model(**inputs)
        torch.testing.assert_close(out.sky_logits[0], model.dense_outputs(inputs["pixel_values"])["sky_logits"][0])
    mask = processor.post_process_sky_segmentation(out, target_sizes=[(90, 130)])[0]
    assert mask.shape == (90, 130)


def test_coarse_scale_below_one_reads_a_downscaled_image():
    model, processor = zoom_model(zoom_coarse_scale=0.5, zoom_sky_size=0)
    inputs = processor(images=[image(90, 130)])
    with torch.no_grad():
        out = model(**inputs)
    assert out.sky_image_sizes.tolist() == [list(scaled_size(90, 130, 0.5))]
    assert out.sky_input_size.tolist() == [48, 80]  # 45 x 65 padded to multiples of 16


def test_labels_with_image_sizes_are_refused():
    model, processor = zoom_model()
    inputs = processor(images=[image()])
    with pytest.raises(ValueError, match="training windows"):
        model(**inputs, labels=[{"class_labels": torch.zeros(0, dtype=torch.long), "boxes": torch.zeros(0, 4)}])


# ------------------------------------------------------------------------------------------------------ training
def test_training_mixes_coarse_and_fine_windows():
    picture = image(200, 300)
    sample = DetectionSample(image=picture, boxes=np.array([[100, 100, 104, 104]], np.float32),
                             points=np.array([[102, 102]], np.float32), target_mask=np.zeros_like(picture, bool),
                             sky_mask=np.ones_like(picture, bool))
    transform = TileTransform(64, 2.5, flip_probability=0.0, copy_paste=None, target_probability=1.0,
                              coarse_scale=1.0, coarse_probability=0.3)
    sides = [float(np.diff(transform(sample, None, np.random.default_rng(seed)).boxes[0, ::2])[0]) for seed in range(200)]
    coarse = sum(side == pytest.approx(4.0) for side in sides)
    assert sum(side == pytest.approx(10.0) for side in sides) + coarse == 200 and 40 < coarse < 80
    tiles = TileTransform(64, 2.5, flip_probability=0.0, copy_paste=None, target_probability=1.0)
    plain = TileTransform(64, 2.5, flip_probability=0.0, copy_paste=None, target_probability=1.0, coarse_scale=None,
                          coarse_probability=0.9)
    for seed in range(5):  # without a coarse scale no extra random draw: the tiles mode's windows are unchanged
        a, b = (t(sample, None, np.random.default_rng(seed)) for t in (tiles, plain))
        assert np.array_equal(a.image, b.image)


def test_whole_frame_views_train_the_sky_only():
    """A frame view is the whole image at the sky pass's size, marked sky_only; the loss of a batch ignores its
    targets for detection (the same detection terms as the batch without it) and trains its sky."""
    picture = image(200, 300)
    sample = DetectionSample(image=picture, boxes=np.array([[100, 100, 104, 104]], np.float32),
                             points=np.array([[102, 102]], np.float32), target_mask=np.zeros_like(picture, bool),
                             sky_mask=np.ones_like(picture, bool))
    transform = TileTransform(64, 2.5, flip_probability=0.0, copy_paste=None, coarse_scale=1.0, coarse_probability=0.0,
                              frame_size=64, frame_probability=1.0)
    view = transform(sample, None, np.random.default_rng(0))
    assert view.sky_only and view.image.shape == (64, 64) and view.sky_mask[:43].all() and not view.sky_mask[43:].any()
    fine = TileTransform(64, 2.5, flip_probability=0.0, copy_paste=None, target_probability=1.0)(
        sample, None, np.random.default_rng(0))
    model, processor = zoom_model(image_size=64)
    collate = DetectionCollator(processor.with_settings(input_mode="resize", size={"height": 64, "width": 64}))
    mixed, alone, sky = collate([fine, view]), collate([fine]), collate([view])
    assert mixed["labels"][1]["sky_only"] and "sky_only" not in mixed["labels"][0]
    with torch.no_grad():  # eval mode: batch norm reads its running statistics, the same for any batch
        losses = [model(**batch).loss_dict for batch in (mixed, alone, sky)]
    for key in ("loss_cls", "loss_bbox", "loss_centerness"):
        torch.testing.assert_close(losses[0][key], losses[1][key])
        assert float(losses[2][key]) == 0.0
    assert float(losses[2]["loss_seg"]) > 0
