"""BafeNetImageProcessor: input conversion, normalisation, labels, and post-processing on hand-made outputs."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from bafenet.models.bafenet import BafeNetConfig, BafeNetImageProcessor, BafeNetObjectDetectionOutput

CAFFE_MEAN_BGR = torch.tensor([102.9801, 115.9465, 122.7717])


def test_grey_rgb_rgba_pil_and_numpy_give_the_same_pixels():
    grey = np.arange(12 * 16, dtype=np.uint8).reshape(12, 16)
    processor = BafeNetImageProcessor(size={"height": 12, "width": 16})
    inputs = [grey, grey[..., None], np.stack([grey] * 3, -1), np.dstack([grey] * 3 + [np.full_like(grey, 7)]),
              Image.fromarray(grey), Image.fromarray(grey).convert("RGB"), Image.fromarray(grey).convert("RGBA"),
              torch.from_numpy(grey)]
    pixels = processor(inputs)["pixel_values"]
    assert pixels.shape == (len(inputs), 3, 12, 16) and pixels.dtype == torch.float32
    for p in pixels[1:]:
        assert torch.equal(p, pixels[0])
    # caffe: BGR order, mean subtracted on the 0..255 scale, no division
    expected = torch.from_numpy(grey).float()[None] - CAFFE_MEAN_BGR[:, None, None]
    torch.testing.assert_close(pixels[0], expected)


def test_rgb_channel_order_and_presets():
    rgb = np.zeros((4, 4, 3), dtype=np.uint8)
    rgb[..., 0] = 200  # red
    caffe = BafeNetImageProcessor(size={"height": 4, "width": 4})(rgb)["pixel_values"][0]
    assert caffe[2, 0, 0].item() == pytest.approx(200 - 122.7717) and caffe[0, 0, 0].item() == pytest.approx(-102.9801)
    lite = BafeNetImageProcessor(size={"height": 4, "width": 4}, normalization="lite")(rgb)["pixel_values"][0]
    assert lite[0, 0, 0].item() == pytest.approx((200 / 255 - 0.5) / 0.5) and lite[1, 0, 0].item() == -1.0


@pytest.mark.parametrize("channel_order", ["rgb", "bgr"])
def test_normalize_pixels_leaves_its_input_alone(channel_order):
    """The normalisation (partly in place, for large batches) returns (x * rescale - mean) / std and never changes
    the tensor it is given."""
    processor = BafeNetImageProcessor(channel_order=channel_order)
    pixels = torch.rand(2, 3, 5, 7) * 255
    before = pixels.clone()
    out = processor.normalize_pixels(pixels)
    source = before.flip(-3) if channel_order == "bgr" else before
    mean = torch.tensor(processor.image_mean).reshape(-1, 1, 1)
    std = torch.tensor(processor.image_std).reshape(-1, 1, 1)
    torch.testing.assert_close(out, (source * processor.rescale_factor - mean) / std, rtol=0, atol=0)
    assert torch.equal(pixels, before)
    assert torch.equal(processor.normalize_pixels(pixels, do_rescale=False, do_normalize=False), source)


def test_from_model_config_matches_the_config():
    config = BafeNetConfig(backbone="tf_efficientnet_lite0", image_size=256)
    processor = BafeNetImageProcessor.from_model_config(config, max_detections=50)
    assert processor.size == {"height": 256, "width": 256} and processor.normalization == "lite"
    assert processor.image_mean == [0.5] * 3 and processor.max_detections == 50
    assert BafeNetImageProcessor.from_model_config(BafeNetConfig()).normalization == "caffe"  # the original's


def test_with_settings_replaces_the_preset_and_refuses_bad_values():
    processor = BafeNetImageProcessor(normalization="lite", max_detections=50)
    imagenet = processor.with_settings(normalization="imagenet")
    assert imagenet.channel_order == "rgb" and imagenet.image_std == pytest.approx([0.229, 0.224, 0.225])
    assert imagenet.max_detections == 50 and processor.normalization == "lite"
    for bad, message in ((dict(normalization="zscore"), "unknown normalization"),
                         (dict(detection_threshold=1.5), "detection_threshold"),
                         (dict(image_std=[1.0, 0.0, 1.0]), "std > 0")):
        with pytest.raises(ValueError, match=message):
            processor.with_settings(**bad)


def test_resize_without_aspect_ratio_and_labels():
    processor = BafeNetImageProcessor(size={"height": 64, "width": 64})
    image = np.zeros((100, 200), dtype=np.uint8)
    sky = np.zeros((100, 200), dtype=np.uint8)
    sky[:50] = 255
    annotation = {"image_id": 7, "annotations": [
        {"bbox": [20.0, 10.0, 4.0, 6.0], "category_id": 0, "area": 24.0, "iscrowd": 0},
        {"bbox": [100.0, 50.0, 50.0, 20.0], "category_id": 0, "area": 1000.0, "iscrowd": 0}]}
    out = processor(image, annotations=annotation, sky_masks=sky)
    assert out["pixel_values"].shape == (1, 3, 64, 64)
    (label,) = out["labels"]
    torch.testing.assert_close(label["boxes"], torch.tensor([[0.11, 0.13, 0.02, 0.06], [0.625, 0.6, 0.25, 0.2]]))
    assert label["class_labels"].tolist() == [0, 0] and label["orig_size"].tolist() == [100, 200]
    assert label["sky_mask"].shape == (64, 64) and label["sky_mask"][:32].all() and not label["sky_mask"][32:].any()
    # do_resize=False: images already at the model size pass through unchanged (normalised only)
    ready = np.full((64, 64), 10, dtype=np.uint8)
    same = processor([ready, ready], do_resize=False)["pixel_values"]
    assert same.shape == (2, 3, 64, 64) and same[0, 0, 0, 0].item() == pytest.approx(10 - 102.9801)
    empty = processor(image, annotations={"image_id": 1, "annotations": []})["labels"][0]
    assert empty["boxes"].shape == (0, 4) and empty["class_labels"].shape == (0,)


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda p: p(np.zeros((8, 8), np.uint8), annotations=[{"annotations": []}] * 2), "2 annotations for 1"),
        (lambda p: p(np.zeros((8, 8), np.uint8), annotations={"annotations": [{"bbox": [0, 0, -1, 2]}]}), "bad bbox"),
        (lambda p: p(np.zeros((8, 8), np.uint8), annotations={"boxes": []}), "COCO detection format"),
        (lambda p: p(np.zeros((8, 8), np.uint8), annotations={"annotations": []}, sky_masks=np.zeros((4, 4))),
         "does not match"),
        (lambda p: p(np.zeros((8, 8, 2), np.uint8)), "expected \\(H, W\\)"),
        (lambda p: p("image.png"), "expected a PIL image"),
        (lambda p: p(np.zeros((8, 8), np.int64)), "dtype"),
    ],
)
def test_bad_input_is_refused_with_a_clear_message(call, message):
    with pytest.raises((ValueError, TypeError), match=message):
        call(BafeNetImageProcessor(size={"height": 8, "width": 8}))


def test_standard_transformers_arguments(tmp_path, caplog):
    """do_resize, do_rescale, do_normalize, size, image_mean/std, format, return_tensors "pt"/"np"/None as in
    transformers' image processors; meaningless ones ignored with a warning; use_fast/backend accepted."""
    from transformers import AutoImageProcessor

    processor = BafeNetImageProcessor(size={"height": 8, "width": 8}, normalization="imagenet")
    image = np.full((6, 10), 51, np.uint8)
    annotation = {"image_id": 3, "annotations": [{"bbox": [1.0, 2.0, 3.0, 2.0], "category_id": 0, "area": 6.0}]}
    pt = processor(image, annotations=annotation, format="coco_detection", return_tensors="pt")
    np_out = processor(image, annotations=annotation, return_tensors="np")
    listed = processor([image, image], return_tensors=None)["pixel_values"]
    assert isinstance(np_out["pixel_values"], np.ndarray) and np.array_equal(np_out["pixel_values"],
                                                                             pt["pixel_values"].numpy())
    assert isinstance(np_out["labels"][0]["boxes"], np.ndarray)
    assert isinstance(listed, list) and len(listed) == 2 and listed[0].shape == (3, 8, 8)
    raw = processor(image, do_rescale=False, do_normalize=False, do_resize=False)["pixel_values"]
    assert raw.shape == (1, 3, 6, 10) and torch.all(raw == 51)  # the 0..255 values as they came
    assert torch.allclose(processor(image, do_normalize=False)["pixel_values"], torch.tensor(0.2))
    same = processor(image, image_mean=[0.0] * 3, image_std=[1.0] * 3, size={"height": 4, "width": 4})
    assert same["pixel_values"].shape == (1, 3, 4, 4) and torch.allclose(same["pixel_values"], torch.tensor(0.2))
    with caplog.at_level("WARNING"):
        ignored = processor(image, do_pad=True, input_data_format="channels_last")["pixel_values"]
    assert torch.equal(ignored, processor(image)["pixel_values"])
    with pytest.raises(ValueError, match="coco_detection"):
        processor(image, annotations=annotation, format="coco_panoptic")
    with pytest.raises(ValueError, match="return_tensors"):
        processor(image, return_tensors="tf")
    with pytest.raises(TypeError, match="do_magic"):
        processor(image, do_magic=True)

    processor.save_pretrained(tmp_path)
    for kwargs in ({"use_fast": True}, {"use_fast": False}, {"backend": "torchvision"}, {"backend": "pil"}):
        loaded = AutoImageProcessor.from_pretrained(tmp_path, trust_remote_code=True, **kwargs)
        assert type(loaded).__name__ == "BafeNetImageProcessor", kwargs
        assert torch.equal(loaded(image)["pixel_values"], processor(image)["pixel_values"])
    assert BafeNetImageProcessor(use_fast=True, backend="pil").to_dict().keys().isdisjoint({"use_fast", "backend"})


# -------------------------------------------------------------------------------------------------- post-processing
def _outputs(scores, centerness, boxes, strides, input_size=(64, 64)) -> BafeNetObjectDetectionOutput:
    """Hand-made dense outputs for one image (logits from probabilities)."""
    scores = torch.tensor(scores)
    return BafeNetObjectDetectionOutput(
        logits=torch.logit(scores)[None, :, None],
        centerness=torch.logit(torch.tensor(centerness))[None],
        pred_boxes=torch.tensor(boxes, dtype=torch.float32)[None],
        points=torch.zeros(len(scores), 2),
        strides=torch.tensor(strides, dtype=torch.float32),
        input_size=torch.tensor(input_size),
        sky_logits=(torch.tensor([[[[5.0, -5.0], [-5.0, 5.0]]]]),),
    )


def test_post_process_scores_nms_clipping_and_rescaling():
    outputs = _outputs(
        scores=[0.9, 0.8, 0.04, 0.6, 0.7],
        centerness=[0.5, 1 - 1e-7, 0.9, 0.5, 0.5],
        boxes=[[10, 10, 20, 20], [11, 11, 21, 21], [40, 40, 50, 50], [-5, 30, 8, 70], [30, 30, 30, 40]],
        strides=[8, 8, 8, 16, 16],
    )
    processor = BafeNetImageProcessor(size={"height": 64, "width": 64})
    (result,) = processor.post_process_object_detection(outputs, threshold=0.05, target_sizes=[(128, 32)])
    # 0.04 is under the threshold; the empty box is dropped; box 0 (0.45) is suppressed by box 1 (0.8) at IoU 0.68
    torch.testing.assert_close(result["scores"], torch.tensor([0.8, 0.3]))
    assert result["labels"].tolist() == [0, 0]
    # clipped to the 64x64 input, then x * 0.5 and y * 2 for a (128, 32) original
    torch.testing.assert_close(result["boxes"], torch.tensor([[5.5, 22.0, 10.5, 42.0], [0.0, 60.0, 4.0, 128.0]]))
    (same_size,) = processor.post_process_object_detection(outputs, threshold=0.05)
    torch.testing.assert_close(same_size["boxes"][1], torch.tensor([0.0, 30.0, 8.0, 64.0]))
    (high,) = processor.post_process_object_detection(outputs, threshold=0.75, target_sizes=torch.tensor([[64, 64]]))
    torch.testing.assert_close(high["scores"], torch.tensor([0.8]))  # box 0 (0.45) is still suppressed


def test_post_process_keeps_top_k_per_level_and_max_detections():
    n = 30
    boxes = [[i * 10, 0, i * 10 + 5, 5] for i in range(n)]  # disjoint
    outputs = _outputs([0.5 + i / 100 for i in range(n)], [0.5] * n, boxes, [8] * 20 + [16] * 10, (64, 512))
    processor = BafeNetImageProcessor(size={"height": 64, "width": 512}, pre_nms_top_k=5, max_detections=7)
    (result,) = processor.post_process_object_detection(outputs)
    # top 5 of level 8 (indices 15..19) and of level 16 (25..29), best 7 overall
    expected = sorted([0.5 + i / 100 for i in list(range(15, 20)) + list(range(25, 30))], reverse=True)[:7]
    torch.testing.assert_close(result["scores"], torch.tensor(expected) * 0.5)


def test_post_process_sky_segmentation():
    outputs = _outputs([0.5], [0.5], [[0, 0, 1, 1]], [8])
    processor = BafeNetImageProcessor(size={"height": 64, "width": 64})
    (mask,) = processor.post_process_sky_segmentation(outputs, target_sizes=[(4, 6)])
    assert mask.dtype == torch.bool and mask.shape == (4, 6)
    assert mask[0, 0] and not mask[0, -1] and mask[-1, -1]
    (full,) = processor.post_process_sky_segmentation(outputs)
    assert full.shape == (64, 64)
