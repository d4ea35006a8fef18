"""The transformers object-detection guide (cppe-5 / `run_object_detection.py`) runs on our built dataset unchanged.

Its steps, as the guide writes them: `format_image_annotations_as_coco` on each row's integer `image_id` and
`objects` (`category`, `area`, `bbox` COCO xywh), a `DetrImageProcessor` (built locally: nothing is downloaded), a
`DetrForObjectDetection` from a small random config, one training step, then the guide's mAP computation with
torchmetrics' `MeanAveragePrecision` (backend faster-coco-eval: pycocotools is not installed here).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

pytestmark = [pytest.mark.usefixtures("one_thread_module"), pytest.mark.slow]  # trains a DETR-style recipe


def format_image_annotations_as_coco(image_id, categories, areas, bboxes):
    """Verbatim from the transformers object-detection guide."""
    annotations = []
    for category, area, bbox in zip(categories, areas, bboxes):
        formatted_annotation = {
            "image_id": image_id,
            "category_id": category,
            "iscrowd": 0,
            "area": area,
            "bbox": list(bbox),
        }
        annotations.append(formatted_annotation)
    return {"image_id": image_id, "annotations": annotations}


def augment_and_transform_batch(examples, image_processor):
    """The guide's transform with the identity augmentation (no albumentations)."""
    images, annotations = [], []
    for image_id, image, objects in zip(examples["image_id"], examples["image"], examples["objects"]):
        images.append(np.array(image.convert("RGB")))
        annotations.append(format_image_annotations_as_coco(image_id, objects["category"], objects["area"],
                                                            objects["bbox"]))
    result = image_processor(images=images, annotations=annotations, return_tensors="pt")
    result.pop("pixel_mask", None)
    return result


def collate_fn(batch):
    return {"pixel_values": torch.stack([x["pixel_values"] for x in batch]), "labels": [x["labels"] for x in batch]}


def test_detr_recipe_trains_and_scores_on_densesirst(synthetic_dataset_dir):
    import datasets
    from torchmetrics.detection.mean_ap import MeanAveragePrecision
    from transformers import DetrConfig, DetrForObjectDetection, DetrImageProcessor, ResNetConfig

    rows = datasets.load_dataset(str(synthetic_dataset_dir), split="train").select(range(2))
    assert rows.features["image_id"].dtype == "int64"
    categories = rows.features["objects"]["category"].feature.names
    id2label = dict(enumerate(categories))

    image_processor = DetrImageProcessor(size={"max_height": 128, "max_width": 128}, do_pad=True,
                                         pad_size={"height": 128, "width": 128})
    train = rows.with_transform(lambda batch: augment_and_transform_batch(batch, image_processor))
    batch = collate_fn([train[i] for i in range(len(train))])
    assert batch["pixel_values"].shape == (2, 3, 128, 128)
    assert [int(label["image_id"]) for label in batch["labels"]] == rows["image_id"]

    torch.manual_seed(0)
    backbone = ResNetConfig(embedding_size=8, hidden_sizes=[8, 16, 16, 16], depths=[1, 1, 1, 1], layer_type="basic",
                            out_features=["stage4"])
    config = DetrConfig(backbone_config=backbone, use_pretrained_backbone=False, d_model=32, encoder_layers=1,
                        decoder_layers=1, encoder_attention_heads=2, decoder_attention_heads=2, encoder_ffn_dim=32,
                        decoder_ffn_dim=32, num_queries=16, id2label=id2label,
                        label2id={v: k for k, v in id2label.items()})
    model = DetrForObjectDetection(config)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    loss = model(**batch).loss
    assert torch.isfinite(loss)
    loss.backward()
    optimizer.step()

    model.eval()
    with torch.no_grad():
        outputs = model(pixel_values=batch["pixel_values"])
    # the guide's compute_metrics: predictions post-processed to original sizes, targets as absolute xyxy
    sizes = [label["orig_size"].tolist() for label in batch["labels"]]
    predictions = image_processor.post_process_object_detection(outputs, threshold=0.0, target_sizes=sizes)
    targets = []
    for objects in rows["objects"]:
        xywh = torch.tensor(objects["bbox"]).reshape(-1, 4)
        targets.append({"boxes": torch.cat([xywh[:, :2], xywh[:, :2] + xywh[:, 2:]], 1),
                        "labels": torch.tensor(objects["category"])})
    metric = MeanAveragePrecision(box_format="xyxy", class_metrics=True, backend="faster_coco_eval")
    metric.update([{k: v for k, v in p.items() if k in ("boxes", "scores", "labels")} for p in predictions], targets)
    metrics = metric.compute()
    assert 0.0 <= float(metrics["map"]) <= 1.0 and 0.0 <= float(metrics["map_50"]) <= 1.0

    # run_object_detection.py's compute_metrics then loops over the per-class results:
    #     for class_id, class_map, class_mar in zip(classes, map_per_class, mar_100_per_class): ...
    # With one class, torchmetrics returns them as 0-d tensors and that loop raises (so `--do_eval` crashes on any
    # single-class dataset, DenseSIRST included).
    per_class = [metrics["classes"], metrics["map_per_class"], metrics["mar_100_per_class"]]
    assert [t.ndim for t in per_class] == [0, 0, 0]
    with pytest.raises(TypeError, match="iteration over a 0-d tensor"):
        for _ in zip(*per_class):
            pass
    # The fix a user applies to the script: make them 1-d first.
    rows = {id2label[int(c)]: (float(m), float(r)) for c, m, r in zip(*(torch.atleast_1d(t) for t in per_class))}
    assert list(rows) == ["target"] and all(0.0 <= v <= 1.0 or v == -1.0 for v in rows["target"])
