"""Golden values for the box metrics: hand-computed VOC cases, irstd_metrics.md T6-T8, COCO cross-checks."""

from __future__ import annotations

import numpy as np
import pytest

from bafenet.metrics.box import (
    average_precision,
    box_iou,
    coco_detection_metrics,
    match_detections,
    voc_detection_metrics,
)


def det(image_id, boxes, scores):
    return {"image_id": image_id, "boxes": np.asarray(boxes, dtype=np.float32).reshape(-1, 4), "scores": np.asarray(scores, dtype=np.float32)}


def gt(image_id, boxes):
    return {"image_id": image_id, "boxes": np.asarray(boxes, dtype=np.float32).reshape(-1, 4)}


A = [[10, 10, 14, 14], [30, 30, 34, 35]]
B = [[50, 60, 53, 63], [70, 10, 75, 16]]
FAR = [100, 100, 104, 104]  # overlaps nothing


def test_perfect_predictions_give_one_everywhere():
    gts = [gt("a", A), gt("b", B)]
    dets = [det("a", A, [0.9, 0.8]), det("b", B, [0.7, 0.95])]
    m = voc_detection_metrics(dets, gts)
    for key in ("mAP07", "mAP12", "recall", "precision", "f1", "precision_at_score", "recall_at_score", "best_f1"):
        assert m[key] == pytest.approx(1.0), key
    assert (m["num_images"], m["num_targets"], m["num_detections"]) == (2, 4, 4)
    coco = coco_detection_metrics(dets, gts)
    assert coco["coco_mAP"] == pytest.approx(1.0) and coco["coco_AP50"] == pytest.approx(1.0)


def test_interleaved_false_positives_hand_computed():
    # pooled by score: TP(.9) FP(.8) TP(.7) FP(.6) TP(.5); 4 targets, one missed.
    # (recall, precision): (.25, 1) (.25, .5) (.5, 2/3) (.5, .5) (.75, .6)
    gts = [gt("a", A), gt("b", B)]
    dets = [
        det("a", [A[0], FAR, A[1]], [0.9, 0.6, 0.5]),
        det("b", [FAR, B[0]], [0.8, 0.7]),
    ]
    m = voc_detection_metrics(dets, gts)
    # area: 0.25 * 1 + 0.25 * 2/3 + 0.25 * 0.6 (envelope) + 0.25 * 0
    assert m["mAP12"] == pytest.approx(0.25 + 0.25 * 2 / 3 + 0.25 * 0.6)
    # 11-point: t in {0, .1, .2} -> 1; {.3, .4, .5} -> 2/3; {.6, .7} -> .6; {.8, .9, 1} -> 0
    assert m["mAP07"] == pytest.approx((3 * 1 + 3 * 2 / 3 + 2 * 0.6) / 11)
    assert m["recall"] == pytest.approx(0.75) and m["precision"] == pytest.approx(0.6)
    assert m["f1"] == pytest.approx(2 * 0.75 * 0.6 / 1.35)
    assert (m["tp_at_score"], m["fp_at_score"], m["fn_at_score"]) == (3, 2, 1)  # default 0.5 keeps all five
    # operating point at score >= 0.7 (float32 scores: compared in float32): TP, FP, TP
    m7 = voc_detection_metrics(dets, gts, operating_threshold=0.7)
    assert m7["precision_at_score"] == pytest.approx(2 / 3) and m7["recall_at_score"] == pytest.approx(0.5)
    assert m7["f1_at_score"] == pytest.approx(2 * (2 / 3) * 0.5 / (2 / 3 + 0.5))
    assert (m7["tp_at_score"], m7["fp_at_score"], m7["fn_at_score"]) == (2, 1, 2)
    # best F1 over the curve: after the 5th detection (.6 / .75 -> 0.667) vs after the 1st (1 / .25 -> 0.4)
    assert m["best_f1"] == pytest.approx(2 * 0.6 * 0.75 / 1.35) and m["best_f1_score"] == pytest.approx(0.5)


def test_shuffled_scores_change_ap_but_not_recall():
    gts = [gt("a", A)]
    good = voc_detection_metrics([det("a", [A[0], A[1], FAR], [0.9, 0.8, 0.1])], gts)
    bad = voc_detection_metrics([det("a", [A[0], A[1], FAR], [0.1, 0.2, 0.9])], gts)
    assert good["mAP12"] == pytest.approx(1.0) and good["mAP07"] == pytest.approx(1.0)
    # FP first: (0, 0) (.5, .5) (1, 2/3) -> envelope 2/3 everywhere
    assert bad["mAP12"] == pytest.approx(2 / 3) and bad["mAP07"] == pytest.approx(2 / 3)
    assert good["recall"] == bad["recall"] == 1.0


def test_duplicate_detection_is_a_false_positive():
    m = voc_detection_metrics([det("a", [A[0], A[0], A[1]], [0.9, 0.8, 0.7])], [gt("a", A)])
    # TP FP TP: (.5, 1) (.5, .5) (1, 2/3): area .5 * 1 + .5 * 2/3; 11-point 6 * 1 + 5 * 2/3
    assert m["mAP12"] == pytest.approx(0.5 + 0.5 * 2 / 3)
    assert m["mAP07"] == pytest.approx((6 + 5 * 2 / 3) / 11)
    assert (m["tp_at_score"], m["fp_at_score"]) == (2, 1)


def test_misses_and_empty_images():
    gts = [gt("a", A), gt("empty", []), gt("b", B)]
    dets = [det("a", [A[0]], [0.9]), det("empty", [FAR], [0.95]), det("b", [], [])]
    m = voc_detection_metrics(dets, gts)
    # FP(.95) TP(.9): (0, 0) (.25, .5) -> area .25 * .5; 11-point t in {0, .1, .2} -> .5
    assert m["mAP12"] == pytest.approx(0.125)
    assert m["mAP07"] == pytest.approx(1.5 / 11)
    assert m["recall"] == pytest.approx(0.25) and m["num_images"] == 3 and m["num_targets"] == 4


def test_no_predictions_gives_zero():
    m = voc_detection_metrics([det("a", [], []), det("b", [], [])], [gt("a", A), gt("b", B)])
    assert m["mAP07"] == m["mAP12"] == m["recall"] == m["precision"] == m["f1"] == 0.0
    assert m["num_detections"] == 0 and np.isnan(m["best_f1_score"])
    assert coco_detection_metrics([det("a", [], []), det("b", [], [])], [gt("a", A), gt("b", B)])["coco_mAP"] == 0.0


def test_eleven_point_thresholds_follow_mmdet_arange():
    # 3 of 10 targets found with precision 1: recall is exactly 0.3, but mmdet's 4th threshold is
    # np.arange(...)[3] = 0.30000000000000004, so only t in {0, .1, .2} count: AP07 = 3/11 (not 4/11).
    recall = np.array([0.1, 0.2, 0.3])
    assert average_precision(recall, np.ones(3), "11points") == pytest.approx(3 / 11)
    assert average_precision(recall, np.ones(3), "area") == pytest.approx(0.3)
    # a single top-ranked hit already gives the 11-point floor 1/11 (training_pitfalls.md)
    assert average_precision(np.array([0.01]), np.array([1.0]), "11points") == pytest.approx(1 / 11)


def test_t6_voc_matching_does_not_fall_back_but_coco_does():
    gts = [gt("a", [[0, 0, 10, 10], [5, 0, 15, 10]])]
    dets = [det("a", [[0, 0, 10, 10], [2, 0, 12, 10]], [0.9, 0.8])]
    iou = box_iou([[2, 0, 12, 10]], gts[0]["boxes"], legacy_plus_one=False)[0]
    assert iou == pytest.approx([0.6667, 0.5385], abs=1e-4)
    legacy = box_iou([[2, 0, 12, 10]], gts[0]["boxes"], legacy_plus_one=True)[0]
    assert legacy == pytest.approx([0.6923, 0.5714], abs=1e-4)
    for flag in (True, False):
        m = voc_detection_metrics(dets, gts, legacy_plus_one=flag)
        assert m["mAP12"] == pytest.approx(0.5) and m["mAP07"] == pytest.approx(0.5455, abs=1e-4)
    coco = coco_detection_metrics(dets, gts)
    assert coco["coco_AP50"] == pytest.approx(1.0)  # COCO falls back to g2 at IoU 0.5
    assert coco["coco_AP75"] == pytest.approx(0.50495, abs=1e-5)  # d2 is an FP at 0.75: the VOC TP/FP on 101 points


def test_t7_t8_tiny_box_iou_conventions():
    xml = np.array([[20, 30, 24, 34]], dtype=float)  # a 4x4 target in XML (exclusive max) convention
    assert box_iou(xml, xml - 1, legacy_plus_one=True)[0, 0] == pytest.approx(0.4706, abs=1e-4)
    assert box_iou(xml, xml + [1, 1, 1, 1], legacy_plus_one=False)[0, 0] == pytest.approx(0.3913, abs=1e-4)
    assert box_iou(xml, xml + [1, 0, 1, 0], legacy_plus_one=False)[0, 0] == pytest.approx(0.600, abs=1e-4)
    three = np.array([[0, 0, 3, 3]], dtype=float)
    assert box_iou(three, three + [1, 0, 1, 0], legacy_plus_one=False)[0, 0] == pytest.approx(0.5)


def random_split(rng, images, per_image, extent, sides, perturb):
    """``images`` images of ``per_image`` random boxes (corners in [0, ``extent``), sides ``sides(rng, shape)``) and
    their detections ``perturb(rng, boxes)`` with uniform random scores; returns (detections, ground truths)."""
    dets, gts = [], []
    for i in range(images):
        xy = rng.uniform(0, extent, (per_image, 2))
        boxes = np.concatenate([xy, xy + sides(rng, xy.shape)], axis=1)
        gts.append(gt(str(i), boxes))
        dets.append(det(str(i), perturb(rng, boxes), rng.uniform(0, 1, per_image)))
    return dets, gts


def test_the_original_minus_one_shift_changes_nothing_when_applied_to_both_sides():
    dets, gts = random_split(np.random.default_rng(0), 5, 6, 200, lambda rng, shape: rng.integers(2, 8, shape),
                             lambda rng, boxes: boxes + rng.integers(-1, 2, boxes.shape))
    shifted = lambda records: [{**r, "boxes": r["boxes"] - 1} for r in records]  # noqa: E731
    for flag in (True, False):
        assert voc_detection_metrics(dets, gts, legacy_plus_one=flag) == pytest.approx(
            voc_detection_metrics(shifted(dets), shifted(gts), legacy_plus_one=flag), nan_ok=True
        )
    # legacy "+1" is more lenient on tiny boxes: never a lower recall
    assert voc_detection_metrics(dets, gts)["recall"] >= voc_detection_metrics(dets, gts, legacy_plus_one=False)["recall"]


def test_ties_are_broken_by_image_then_input_order():
    matched = match_detections(
        [det("a", [FAR, A[0]], [0.5, 0.5]), det("b", [B[0]], [0.5])], [gt("a", A), gt("b", B)]
    )
    assert matched.image_ids == ["a", "a", "b"] and matched.tp.tolist() == [False, True, True]


def _coco_ap_reference(dets, gts, iou_threshold):
    """pycocotools COCOeval for one class, one IoU threshold, area 'all', maxDets 100, written out longhand."""
    scores, hits, num_gts = [], [], 0
    for d, g in zip(dets, gts):
        num_gts += len(g["boxes"])
        ious = box_iou(d["boxes"], g["boxes"], legacy_plus_one=False)
        taken = np.zeros(len(g["boxes"]), dtype=bool)
        for i in np.argsort(-d["scores"], kind="mergesort")[:100]:
            best, best_iou = -1, min(iou_threshold, 1 - 1e-10)
            for j in range(len(g["boxes"])):  # best still-unmatched ground truth (COCO falls back, VOC does not)
                if not taken[j] and ious[i, j] >= best_iou:
                    best, best_iou = j, ious[i, j]
            if best >= 0:
                taken[best] = True
            scores.append(d["scores"][i])
            hits.append(best >= 0)
    hits = np.asarray(hits)[np.argsort(-np.asarray(scores), kind="mergesort")]
    tp, fp = np.cumsum(hits), np.cumsum(~hits)
    recall, precision = tp / num_gts, np.maximum.accumulate((tp / (tp + fp))[::-1])[::-1]
    at = np.searchsorted(recall, np.linspace(0, 1, 101), side="left")
    return float(np.mean([precision[i] if i < len(precision) else 0.0 for i in at]))


def test_coco_wiring_matches_a_longhand_cocoeval_on_random_boxes():
    def noisy(rng, boxes):
        moved = boxes + rng.normal(0, 1.5, boxes.shape)
        moved[:, 2:] = np.maximum(moved[:, 2:], moved[:, :2] + 0.5)
        return moved

    dets, gts = random_split(np.random.default_rng(1), 8, 5, 100, lambda rng, shape: rng.uniform(2, 40, shape), noisy)
    ours = coco_detection_metrics(dets, gts)
    per_threshold = [_coco_ap_reference(dets, gts, t) for t in np.linspace(0.5, 0.95, 10)]
    assert ours["coco_AP50"] == pytest.approx(per_threshold[0], abs=1e-9)
    assert ours["coco_AP75"] == pytest.approx(per_threshold[5], abs=1e-9)
    assert ours["coco_mAP"] == pytest.approx(np.mean(per_threshold), abs=1e-9)


@pytest.mark.parametrize(
    "dets, gts, message",
    [
        ([det("a", [[10, 10, 5, 20]], [0.9])], [gt("a", A)], "x2 < x1"),
        ([det("a", [A[0]], [float("nan")])], [gt("a", A)], "score 0 is nan"),
        ([det("a", A, [0.9])], [gt("a", A)], "1 scores for 2 boxes"),
        ([det("a", [A[0]], [0.9])], [gt("b", A)], "image ids do not match"),
        ([det("a", [A[0]], [0.9]), det("a", [], [])], [gt("a", A)], "more than once"),
        ([{"image_id": "a", "boxes": [[1, 2, 3]], "scores": [0.9]}], [gt("a", A)], "shape (N, 4)"),
        ([det("a", [A[0]], [0.9])], [gt("a", [[0, 0, np.inf, 3]])], "non-finite"),
    ],
)
def test_bad_input_is_rejected_with_a_clear_error(dets, gts, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        voc_detection_metrics(dets, gts)
