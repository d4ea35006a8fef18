"""`bafenet evaluate` end to end on the tiny model and the synthetic dataset, and evaluate_predictions' contracts."""

from __future__ import annotations

import json

import numpy as np
import pytest


@pytest.fixture(scope="module")
def test_split(synthetic_dataset_dir):
    import datasets

    return datasets.load_dataset(str(synthetic_dataset_dir), "default", split="test")


@pytest.fixture(scope="module")
def ground_truths(test_split):
    from bafenet.evaluation import _ground_truth

    return [_ground_truth(row) for row in test_split.select_columns(["image_id", "image_name", "objects", "points"])]


def test_cli_writes_one_json_with_metrics_conventions_detections_and_a_pr_curve(
    tiny_model_dir, synthetic_dataset_dir, test_split, ground_truths, tmp_path, capsys
):
    from bafenet.cli import main
    from bafenet.metrics.box import voc_detection_metrics

    out = tmp_path / "eval" / "results.json"
    argv = ["evaluate", "--model", str(tiny_model_dir), "--dataset", str(synthetic_dataset_dir), "--split", "test",
            "--out", str(out), "--batch-size", "2", "--device", "cpu",
            # a random tiny model scores ~0.005: keep its boxes so every metric path sees detections
            "--detection-threshold", "0.001", "--operating-threshold", "0.0"]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    for word in ("mAP07", "mAP12", "recall", "COCO", "nIoU", "Pd", "Fa", "Points", "Sky", "wrote"):
        assert word in printed, word

    results = json.loads(out.read_text())
    for key in ("mAP07", "mAP12", "recall", "coco_mAP", "IoU", "nIoU", "Pd", "Fa", "point_precision", "point_recall",
                "point_f1", "point_mean_error", "point_median_error", "num_images", "num_targets", "sky_IoU"):
        assert key in results, key
    assert results["num_images"] == len(test_split) and results["num_targets"] == sum(len(g["boxes"]) for g in ground_truths)
    assert {"voc", "mAP07", "mAP12", "coco", "Pd_Fa", "points", "masks"} <= set(results["conventions"])
    assert "legacy +1" in results["conventions"]["voc"] and results["legacy_plus_one"] == 1
    assert results["meta"]["split"] == "test"

    detections = results["detections"]
    assert [d["image_id"] for d in detections] == list(test_split["image_id"])
    assert [d["image_name"] for d in detections] == list(test_split["image_name"])
    assert sum(len(d["scores"]) for d in detections) == results["num_detections"] > 0
    for det, width, height in zip(detections, test_split["width"], test_split["height"]):
        boxes = np.asarray(det["boxes"]).reshape(-1, 4)
        assert (boxes[:, 0] >= 0).all() and (boxes[:, 2] <= width).all() and (boxes[:, 3] <= height).all()
        assert np.all(np.diff(det["scores"]) <= 0)
    # the raw detections re-score to exactly the same numbers
    again = voc_detection_metrics(detections, ground_truths, operating_threshold=0.0)
    for key in ("mAP07", "mAP12", "recall", "num_detections"):
        assert again[key] == results[key], key

    png = out.with_name("results_pr_curve.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and results["meta"]["pr_curve"] == png.name


def test_perfect_predictions_score_one(test_split, ground_truths):
    from bafenet.evaluation import evaluate_predictions

    perfect = [{"image_id": g["image_id"], "boxes": g["boxes"], "scores": np.linspace(1.0, 0.6, len(g["boxes"]))}
               for g in ground_truths]
    m = evaluate_predictions(perfect, test_split)
    for key in ("mAP07", "mAP12", "recall", "precision_at_score", "recall_at_score", "coco_mAP", "coco_AP50",
                "point_precision", "point_recall", "Pd"):
        assert m[key] == pytest.approx(1.0), key
    assert m["Fa"] == 0.0
    assert 0.5 < m["IoU"] < 1.0  # boxes drawn as masks cover the blobs plus their corners: the box-detector ceiling
    assert m["point_mean_error"] < 1.0  # labels are integer (about the floor of each centroid)


def test_mismatched_image_ids_are_an_error(test_split, ground_truths):
    from bafenet.evaluation import evaluate_predictions

    partial = [{"image_id": g["image_id"], "boxes": g["boxes"], "scores": np.ones(len(g["boxes"]))} for g in ground_truths[1:]]
    with pytest.raises(ValueError, match="image ids do not match"):
        evaluate_predictions(partial, test_split)


def test_grey_or_missized_mask_columns_are_an_error():
    from PIL import Image

    from bafenet.evaluation import _binary_mask

    grey = np.zeros((4, 5), dtype=np.uint8)
    grey[1, 1] = 128
    with pytest.raises(ValueError, match=r"Misc_3.*target_mask.*values \[0, 128\]"):
        _binary_mask(Image.fromarray(grey), "target_mask", "Misc_3", (4, 5))
    with pytest.raises(ValueError, match="Misc_3"):
        _binary_mask(Image.fromarray(np.zeros((4, 6), dtype=np.uint8)), "target_mask", "Misc_3", (4, 5))
    ok = np.zeros((4, 5), dtype=np.uint8)
    ok[2, 3] = 255
    assert _binary_mask(Image.fromarray(ok), "sky_mask", "x", (4, 5)).sum() == 1


def test_predict_split_restores_training_mode_and_stays_on_the_model_device(tiny_model_dir, test_split):
    from bafenet.evaluation import predict_split
    from bafenet.models.bafenet import BafeNetForObjectDetection, BafeNetImageProcessor

    model = BafeNetForObjectDetection.from_pretrained(tiny_model_dir).train()
    processor = BafeNetImageProcessor.from_pretrained(tiny_model_dir)
    detections = predict_split(model, processor, test_split, batch_size=3, detection_threshold=0.001, progress=False)
    assert model.training
    assert [d["image_id"] for d in detections] == list(test_split["image_id"])
    assert all(d["boxes"].shape == (len(d["scores"]), 4) for d in detections)


def test_half_precision_checkpoint_is_scored_in_float32(tiny_model_dir, synthetic_dataset_dir, tmp_path):
    """A model stored in fp16 (as Hub uploads often are) evaluates on the CPU, with the float32 model's detections."""
    import shutil

    import torch
    from safetensors.torch import load_file, save_file

    from bafenet.cli import main

    half = tmp_path / "half"
    shutil.copytree(tiny_model_dir, half)
    weights = load_file(half / "model.safetensors")
    save_file({k: v.half() if v.is_floating_point() else v for k, v in weights.items()}, half / "model.safetensors",
              metadata={"format": "pt"})
    results = {}
    for name, model in (("float", tiny_model_dir), ("half", half)):
        out = tmp_path / f"{name}.json"
        argv = ["evaluate", "--model", str(model), "--dataset", str(synthetic_dataset_dir), "--split", "test",
                "--out", str(out), "--device", "cpu", "--detection-threshold", "0.001", "--operating-threshold", "0.0"]
        assert main(argv) == 0
        results[name] = json.loads(out.read_text())
    float_dets, half_dets = (results[k]["detections"] for k in ("float", "half"))
    assert [d["image_id"] for d in float_dets] == [d["image_id"] for d in half_dets]
    scores = [torch.tensor(d["scores"][:5]) for d in float_dets], [torch.tensor(d["scores"][:5]) for d in half_dets]
    for a, b in zip(*scores):
        torch.testing.assert_close(a, b, rtol=0, atol=2e-3)


def _evaluate(argv_tail: list[str], synthetic_dataset_dir, out) -> dict:
    from bafenet.cli import main

    argv = ["evaluate", *argv_tail, "--dataset", str(synthetic_dataset_dir), "--split", "test", "--out", str(out),
            "--operating-threshold", "0.0"]
    assert main(argv) == 0
    return json.loads(out.read_text())


def test_predictions_file_scores_exactly_like_the_model_it_was_dumped_from(tiny_model_dir, synthetic_dataset_dir,
                                                                            tmp_path):
    model = _evaluate(["--model", str(tiny_model_dir), "--device", "cpu", "--detection-threshold", "0.001"],
                      synthetic_dataset_dir, tmp_path / "model.json")
    dumped = tmp_path / "detections.json"  # what another detector would write: image_id, boxes, scores
    dumped.write_text(json.dumps([{k: d[k] for k in ("image_id", "boxes", "scores")} for d in model["detections"]]))
    peer = _evaluate(["--predictions", str(dumped)], synthetic_dataset_dir, tmp_path / "peer.json")
    assert model["num_detections"] > 0
    for key, value in model.items():
        if key not in ("meta", "conventions", "detections") and not key.startswith("sky_"):
            assert peer[key] == value, key
    strip = [{k: d[k] for k in ("image_id", "boxes", "scores")} for d in model["detections"]]
    assert peer["detections"] == strip
    assert not [k for k in peer if k.startswith("sky_")]  # the sky metric needs the model
    assert peer["meta"]["predictions"] == str(dumped) and peer["meta"]["model"] is None
    assert str(dumped) in peer["conventions"]["detections"]
    # a results JSON is accepted as is (its "detections"), and --detection-threshold filters like the model's
    again = _evaluate(["--predictions", str(tmp_path / "model.json"), "--detection-threshold", "0.5"],
                      synthetic_dataset_dir, tmp_path / "again.json")
    kept = sum(s >= 0.5 for d in model["detections"] for s in d["scores"])
    assert again["num_detections"] == kept


def test_perfect_predictions_file_scores_one(synthetic_dataset_dir, ground_truths, tmp_path):
    perfect = tmp_path / "perfect.json"
    perfect.write_text(json.dumps([{"image_id": g["image_id"], "boxes": g["boxes"].tolist(),
                                    "scores": [0.9] * len(g["boxes"])} for g in ground_truths]))
    results = _evaluate(["--predictions", str(perfect)], synthetic_dataset_dir, tmp_path / "perfect_results.json")
    assert results["mAP07"] == pytest.approx(1.0) and results["mAP12"] == pytest.approx(1.0)
    assert results["recall"] == pytest.approx(1.0)


@pytest.mark.parametrize(("content", "message"), [
    ("{not json", "not valid JSON"),
    ('{"a": 1}', "expected a JSON list"),
    ('[{"image_id": "x"}]', 'keys "image_id", "boxes" and "scores"'),
    ("[{{\"image_id\": \"{first}\", \"boxes\": [[1, 2, 3]], \"scores\": [1]}}]", "shape (N, 4)"),
    ("[{{\"image_id\": \"{first}\", \"boxes\": [[1, 2, 3, 4], [1, 2]], \"scores\": [1, 1]}}]", "entry 0"),
    ("[{{\"image_id\": \"{first}\", \"boxes\": [[5, 2, 3, 4]], \"scores\": [1]}}]", "x2 < x1"),
    ("[{{\"image_id\": \"{first}\", \"boxes\": [[1, 2, 3, 4]], \"scores\": [1, 2]}}]", "2 scores for 1 boxes"),
    ("[{{\"image_id\": \"{first}\", \"boxes\": [[1, 2, 3, 4]], \"scores\": [NaN]}}]", "finite"),
    ("[{{\"image_id\": \"{first}\", \"boxes\": [[1, 2, 3, 4]], \"scores\": [" + "9" * 400 + "]}}]",
     "scores is not a list of numbers"),
    ("[{{\"image_id\": \"{first}\", \"boxes\": [], \"scores\": []}}, {{\"image_id\": \"{first}\", \"boxes\": [], "
     "\"scores\": []}}]", "more than once"),
    ("[{{\"image_id\": \"{first}\", \"boxes\": [], \"scores\": []}}]", "image ids do not match the split"),
    (None, "cannot read it"),
])
def test_malformed_predictions_file_is_one_line_naming_the_file(content, message, synthetic_dataset_dir, test_split,
                                                                 tmp_path):
    from bafenet.cli import main

    path = tmp_path / "predictions.json"
    if content is not None:
        path.write_text(content.format(first=test_split[0]["image_id"]) if "{first}" in content else content)
    argv = ["evaluate", "--predictions", str(path), "--dataset", str(synthetic_dataset_dir), "--split", "test",
            "--out", str(tmp_path / "r.json")]
    with pytest.raises(SystemExit) as error:
        main(argv)
    text = str(error.value.code)
    assert "\n" not in text and f"--predictions {path}" in text and message in text, text
    assert not (tmp_path / "r.json").exists()


def test_model_and_predictions_are_exclusive(tmp_path, capsys):
    from bafenet.cli import main

    with pytest.raises(SystemExit) as error:
        main(["evaluate", "--model", "m", "--predictions", "p.json", "--dataset", "d"])
    assert error.value.code == 2 and "not allowed with argument" in capsys.readouterr().err


def test_stored_operating_point_is_the_default_of_evaluate_and_predict(tiny_model_dir, test_split, tmp_path):
    """config.operating_threshold (the trainer's best-F1 score on validation) sets the at-a-score metrics of
    `evaluate` and the `predict` threshold unless given; without one both fall back to FALLBACK_OPERATING_THRESHOLD."""
    import shutil

    from bafenet.evaluation import FALLBACK_OPERATING_THRESHOLD, ScoringOptions, evaluate_model
    from bafenet.models.bafenet import BafeNetForObjectDetection, BafeNetImageProcessor
    from bafenet.predict import Predictor

    folder = tmp_path / "model"
    shutil.copytree(tiny_model_dir, folder)
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "operating_threshold": 0.004}))
    model = BafeNetForObjectDetection.from_pretrained(folder).eval()
    processor = BafeNetImageProcessor.from_pretrained(folder)
    rows = test_split.select(range(2))
    kwargs = dict(batch_size=2, device="cpu", detection_threshold=0.001, progress=False)
    assert evaluate_model(model, processor, rows, **kwargs)["operating_threshold"] == pytest.approx(0.004)
    assert evaluate_model(model, processor, rows, operating_threshold=0.2, **kwargs)["operating_threshold"] == 0.2
    options = ScoringOptions(operating_threshold=0.3, legacy_plus_one=False)
    both = evaluate_model(model, processor, rows, options=options, **kwargs)
    assert (both["operating_threshold"], both["legacy_plus_one"]) == (0.3, 0)  # options= and keywords are one thing
    assert evaluate_model(model, processor, rows, options=options, operating_threshold=0.25,
                          **kwargs)["operating_threshold"] == 0.25
    with pytest.raises(TypeError, match="iou_treshold"):
        evaluate_model(model, processor, rows, iou_treshold=0.4, **kwargs)
    with pytest.raises(TypeError, match="pass ScoringOptions"):  # 0.1.0's positional operating threshold
        evaluate_model(model, processor, rows, 0.3, progress=False)
    model.config.operating_threshold = None
    assert evaluate_model(model, processor, rows, **kwargs)["operating_threshold"] == FALLBACK_OPERATING_THRESHOLD == 0.5
    assert Predictor(folder, device="cpu").operating_threshold == pytest.approx(0.004)
    assert Predictor(folder, operating_threshold=0.1, device="cpu").operating_threshold == 0.1
    assert Predictor(tiny_model_dir, device="cpu").operating_threshold == FALLBACK_OPERATING_THRESHOLD


def test_scoring_options_old_names_are_deprecated_aliases():
    from bafenet.evaluation import ScoringOptions

    options = ScoringOptions.from_arguments(None, iou_threshold=0.4)
    assert options.with_fallback_threshold(0.2).operating_threshold == 0.2
    assert options.with_fallback_threshold(0.2).with_fallback_threshold(0.7).operating_threshold == 0.2
    with pytest.warns(DeprecationWarning, match="from_arguments"):
        assert ScoringOptions.of(None, iou_threshold=0.4) == options
    with pytest.warns(DeprecationWarning, match="with_fallback_threshold"):
        assert options.at(0.2) == options.with_fallback_threshold(0.2)


# ------------------------------------------------------------------------------------------ --onnx: one-line refusals
def _identity_onnx(path, metadata: dict[str, str] | None):
    """A one-node ONNX file (no export needed) carrying ``metadata`` as its ``metadata_props``."""
    from onnx import TensorProto, helper, save

    tensor = lambda name: helper.make_tensor_value_info(name, TensorProto.FLOAT, [1])  # noqa: E731
    graph = helper.make_graph([helper.make_node("Identity", ["pixel_values"], ["logits"])], "g",
                              [tensor("pixel_values")], [tensor("logits")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    helper.set_model_props(model, metadata or {})
    save(model, str(path))
    return path


@pytest.mark.parametrize("case", ["missing", "folder", "not_onnx", "no_metadata", "mismatch", "cuda", "predictions"])
def test_a_bad_onnx_option_is_one_line_naming_the_file_and_the_fix(case, tiny_model_dir, synthetic_dataset_dir,
                                                                   tmp_path, capsys):
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    from conftest import one_line_error

    from bafenet.cli import main
    from bafenet.inference import onnx_metadata
    from bafenet.models.loading import load_config

    onnx = tmp_path / "model.onnx"
    expected = onnx_metadata(load_config(tiny_model_dir))
    device, needles = [], [f"--onnx {onnx}"]
    if case == "missing":
        needles += ["no such file", "bafenet export onnx"]
    elif case == "folder":
        onnx.mkdir()
        needles += ["is a folder"]
    elif case == "not_onnx":
        onnx.write_bytes(b"not an onnx file\n" * 10)
        needles += ["not an ONNX file", "bafenet export onnx"]
    elif case == "no_metadata":
        _identity_onnx(onnx, None)
        needles += ["no bafenet export metadata", f"bafenet export onnx --model {tiny_model_dir} --out {onnx}"]
    elif case == "mismatch":  # exported for a tiles model with two levels
        _identity_onnx(onnx, {**expected, "bafenet.input_mode": "tiles", "bafenet.strides": "[8, 16]"})
        needles += ["input_mode tiles (the model: resize)", "strides [8, 16] (the model: [8, 16, 32])",
                    f"re-export it with `bafenet export onnx --model {tiny_model_dir} --out {onnx}`"]
    elif case == "cuda":
        _identity_onnx(onnx, expected)
        device, needles = ["--device", "cuda"], ["--device cuda", f"--onnx {onnx}", "onnxruntime on the CPU"]
    out = tmp_path / "r.json"
    source = ["--model", str(tiny_model_dir)]
    if case == "predictions":
        _identity_onnx(onnx, expected)
        source, needles = ["--predictions", str(tmp_path / "p.json")], [f"--onnx {onnx}", "goes with --model"]
    argv = ["evaluate", *source, "--onnx", str(onnx), "--dataset", str(synthetic_dataset_dir), "--split", "test",
            "--out", str(out), *device]
    assert main(argv) == 1
    one_line_error(capsys, *needles)
    assert not out.exists()
    if case in ("mismatch", "cuda"):  # `bafenet predict --onnx` refuses it with the same line
        image = tmp_path / "in.png"
        from PIL import Image

        Image.fromarray(np.zeros((32, 32), np.uint8)).save(image)
        argv = ["predict", "--model", str(tiny_model_dir), "--onnx", str(onnx), str(image), "--out",
                str(tmp_path / "p"), *device]
        assert main(argv) == 1
        one_line_error(capsys, *needles)
        assert not (tmp_path / "p").exists()
