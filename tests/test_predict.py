"""`bafenet predict` and the drawing helpers: JSON + overlays + sky masks, bad inputs reported, never dropped."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from bafenet.visualize import densest_cluster, draw_detections, to_rgb


# ------------------------------------------------------------------------------------------------------ visualize
def test_densest_cluster_picks_the_cluster_not_the_outlier():
    cluster = np.array([[100, 100, 103, 103], [108, 104, 111, 107], [96, 110, 99, 113]], np.float32)
    outlier = np.array([[400, 300, 404, 304]], np.float32)
    x0, y0, x1, y1 = densest_cluster(np.concatenate([outlier, cluster]), window=64, image_size=(512, 640))
    assert x1 - x0 == 64 and y1 - y0 == 64
    assert x0 <= 96 and x1 >= 111 and y0 <= 100 and y1 >= 113
    assert densest_cluster(np.zeros((0, 4)), 64, (512, 640)) is None


def test_densest_cluster_window_stays_inside_the_image():
    x0, y0, x1, y1 = densest_cluster(np.array([[0, 0, 2, 2], [637, 509, 640, 512]]), 128, (512, 640))
    assert 0 <= x0 and x1 <= 640 and 0 <= y0 and y1 <= 512


def test_outlines_grow_outwards_and_leave_target_pixels_untouched():
    image = np.full((64, 80), 50, np.uint8)
    image[20:23, 30:33] = 255  # a 3x3 target = box [30, 20, 33, 23] (exclusive max)
    out = np.asarray(draw_detections(image, [[30, 20, 33, 23]], [0.9], inset=False, line_width=2))
    assert out.shape == (64, 80, 3)
    assert (out[20:23, 30:33] == 255).all(), "the outline covered the target"
    assert tuple(out[19, 31]) != (50, 50, 50) and tuple(out[18, 31]) != (50, 50, 50), "2-px outline expected above"
    assert tuple(out[10, 10]) == (50, 50, 50)


def test_overlay_has_zoom_panel_sky_tint_and_ground_truth():
    image = np.full((96, 128), 80, np.uint8)
    sky = np.zeros((96, 128), bool)
    sky[:40] = True
    canvas = draw_detections(image, [[10, 10, 13, 13], [16, 12, 19, 15]], [0.8, 0.4], sky_mask=sky,
                             ground_truth=[[60, 60, 63, 63]], title="2 detections")
    assert canvas.size == (128 + 96, 96)  # image + a square panel as tall as the image
    array = np.asarray(canvas)
    assert array[80, 100, 2] == 80 and array[30, 100, 2] > 80, "sky region should be tinted blue, ground not"
    assert (array[61, 61] == 80).all()  # GT outline is outside the GT box
    assert array[58, 61, 1] > 200  # green GT outline


def test_to_rgb_scales_16_bit_and_float_images():
    assert to_rgb(np.array([[0, 1000], [2000, 4000]], np.uint16)).max() == 255
    assert to_rgb(np.array([[0.0, 0.5]], np.float32)).tolist() == [[[0, 0, 0], [128, 128, 128]]]
    assert to_rgb(Image.new("RGBA", (3, 2))).shape == (2, 3, 3)


# -------------------------------------------------------------------------------------------------------- predict
@pytest.fixture()
def image_folder(tmp_path: Path) -> Path:
    rng = np.random.default_rng(0)
    folder = tmp_path / "images"
    folder.mkdir()
    Image.fromarray(rng.integers(0, 255, (90, 120), np.uint8), mode="L").save(folder / "grey.png")
    Image.fromarray(rng.integers(0, 255, (64, 64, 3), np.uint8), mode="RGB").save(folder / "colour.jpg")
    Image.fromarray(rng.integers(0, 4000, (70, 50)).astype(np.uint16)).save(folder / "sixteen_bit.png")
    (folder / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n this is not a png")
    (folder / "notes.txt").write_text("not an image, and not an image extension either")
    return folder


def _predict(argv: list[str]) -> int:
    from bafenet.cli import main

    return main(["predict", *argv])


def test_predict_writes_json_overlays_and_sky_and_reports_unreadable(tiny_model_dir, image_folder, tmp_path, capsys):
    out = tmp_path / "out"
    rc = _predict(["--model", str(tiny_model_dir), str(image_folder), "--out", str(out), "--sky",
                   "--operating-threshold", "0", "--detection-threshold", "0"])
    captured = capsys.readouterr()
    assert rc == 1, "an unreadable image must give a non-zero exit code"
    assert "corrupt.png" in captured.err
    report = json.loads((out / "predictions.json").read_text())
    assert [e["file"] for e in report["errors"]] == [str(image_folder / "corrupt.png")]
    assert report["errors"][0]["reason"]
    records = {Path(r["file"]).name: r for r in report["images"]}
    assert set(records) == {"grey.png", "colour.jpg", "sixteen_bit.png"}
    for name, record in records.items():
        boxes = np.asarray(record["boxes"], np.float32).reshape(-1, 4)
        assert len(boxes) == len(record["scores"]) > 0
        assert (boxes[:, [0, 2]] >= 0).all() and (boxes[:, [0, 2]] <= record["width"]).all()
        assert (boxes[:, [1, 3]] >= 0).all() and (boxes[:, [1, 3]] <= record["height"]).all()
        assert record["scores"] == sorted(record["scores"], reverse=True)
        sky = Image.open(out / record["sky_mask"])
        assert sky.size == (record["width"], record["height"]) and sky.mode == "L"
        assert set(np.unique(np.asarray(sky))) <= {0, 255}
        overlay = Image.open(out / record["overlay"])
        assert overlay.height == record["height"] and overlay.width > record["width"]  # zoom panel beside


def test_predict_single_files_exit_zero_and_threshold_filters(tiny_model_dir, image_folder, tmp_path):
    out = tmp_path / "out"
    files = [str(image_folder / "grey.png"), str(image_folder / "colour.jpg")]
    assert _predict(["--model", str(tiny_model_dir), *files, "--out", str(out), "--operating-threshold", "0",
                     "--detection-threshold", "0", "--no-draw"]) == 0
    report = json.loads((out / "predictions.json").read_text())
    assert report["errors"] == [] and len(report["images"]) == 2 and not (out / "overlays").exists()
    assert "exclusive max" in report["box_format"]
    assert _predict(["--model", str(tiny_model_dir), *files, "--out", str(out), "--operating-threshold", "1",
                     "--no-draw"]) == 0
    assert all(r["boxes"] == [] for r in json.loads((out / "predictions.json").read_text())["images"])


def test_predict_missing_input_is_reported(tiny_model_dir, tmp_path, capsys):
    missing = tmp_path / "nope.png"
    assert _predict(["--model", str(tiny_model_dir), str(missing), "--out", str(tmp_path / "o")]) == 1
    assert "nope.png" in capsys.readouterr().err
    report = json.loads((tmp_path / "o" / "predictions.json").read_text())
    assert report["errors"][0]["file"] == str(missing)


def test_same_stem_in_two_folders_gets_two_overlays(tiny_model_dir, tmp_path):
    for sub in ("a", "b"):
        (tmp_path / sub).mkdir()
        Image.new("L", (40, 40), 100).save(tmp_path / sub / "img.png")
    out = tmp_path / "out"
    assert _predict(["--model", str(tiny_model_dir), str(tmp_path / "a"), str(tmp_path / "b"), "--out", str(out),
                     "--operating-threshold", "0", "--detection-threshold", "0"]) == 0
    overlays = sorted(p.name for p in (out / "overlays").iterdir())
    assert overlays == ["img-2.png", "img.png"]
