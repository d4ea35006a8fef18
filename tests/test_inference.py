"""One inference loop: `bafenet evaluate` (predict_split), `bafenet predict` (Predictor) and in-training validation
all run `bafenet.inference.evaluation_loop`, whose one step is `detect`."""

from __future__ import annotations

import datasets
import numpy as np
import pytest
from PIL import Image

import bafenet.inference as inference


@pytest.fixture
def counted_steps(monkeypatch):
    calls = []
    step = inference.detect

    def counting(*args, **kwargs):
        calls.append(len(args[2]["pixel_values"]))
        return step(*args, **kwargs)

    monkeypatch.setattr(inference, "detect", counting)
    return calls


def test_evaluate_and_predict_run_the_one_loop_with_the_same_detections(synthetic_dataset_dir, tiny_model_dir,
                                                                          counted_steps):
    from bafenet.evaluation import predict_split
    from bafenet.models.bafenet import BafeNetForObjectDetection, BafeNetImageProcessor
    from bafenet.predict import Predictor

    rows = datasets.load_dataset(str(synthetic_dataset_dir), split="test").select(range(3))
    model = BafeNetForObjectDetection.from_pretrained(tiny_model_dir).eval()
    processor = BafeNetImageProcessor.from_pretrained(tiny_model_dir)
    evaluated = predict_split(model, processor, rows, batch_size=2, detection_threshold=0.001, progress=False)
    assert counted_steps == [2, 1]  # two batches through the loop's step
    predictor = Predictor(tiny_model_dir, operating_threshold=0.0, device="cpu", detection_threshold=0.001)
    predicted = predictor([Image.fromarray(np.asarray(row["image"].convert("L"))) for row in rows])
    assert counted_steps == [2, 1, 3]
    for ours, theirs in zip(evaluated, predicted):  # the same detections (near-ties may swap with batch size)
        rows_of = lambda boxes, scores: np.array(sorted(np.column_stack([np.round(scores, 4), np.round(boxes, 1)]  # noqa: E731
                                                                        ).tolist()))
        np.testing.assert_allclose(rows_of(ours["boxes"], ours["scores"]), rows_of(theirs.boxes, theirs.scores),
                                   rtol=0, atol=0.11)


def test_split_images_decode_only_the_image_and_check_its_size(synthetic_dataset_dir):
    rows = datasets.load_dataset(str(synthetic_dataset_dir), split="test").select(range(2))
    images = inference.SplitImages(rows)
    assert "target_mask" not in images.rows.column_names and "sky_mask" not in images.rows.column_names
    index, grey = images[1]
    assert index == 1 and grey.ndim == 2 and grey.shape == (rows[1]["height"], rows[1]["width"])
    wrong = inference.SplitImages(rows.map(lambda row: {"width": row["width"] + 1}))
    with pytest.raises(ValueError, match="decoded size"):
        wrong[0]
