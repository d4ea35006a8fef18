"""Golden values for IoU / nIoU / Pd / Fa (irstd_metrics.md §2.8 T1-T5), sky IoU, and a PyIRSTDMetrics cross-check."""

from __future__ import annotations

import numpy as np
import pytest

from bafenet.metrics.pixel import PixelMetrics, SkyIoU, components, pixel_metrics


def blank(h, w):
    return np.zeros((h, w), dtype=bool)


def test_t1_dataset_iou_and_niou():
    gt_a, pred_a = blank(10, 10), blank(10, 10)
    gt_a[0, 0:4] = True
    pred_a[0, 2:6] = True
    gt_b = blank(20, 20)
    gt_b[5:15, 5:15] = True
    m = pixel_metrics([pred_a, gt_b.copy()], [gt_a, gt_b])
    assert m["IoU"] == pytest.approx(102 / 106)
    assert m["nIoU"] == pytest.approx((1 / 3 + 1) / 2)


def test_t2_both_empty_image_scores_zero_in_niou():
    m = pixel_metrics([blank(8, 8)], [blank(8, 8)])
    assert m["nIoU"] == 0.0 and m["IoU"] == 0.0 and m["num_empty_images"] == 1
    assert m["Pd"] == 0.0 and m["Fa"] == 0.0  # 0/0 is 0 everywhere


def _t3():
    gt, pred = blank(20, 20), blank(20, 20)
    gt[10, 10] = gt[10, 14] = True
    pred[9, 12] = pred[11, 8] = True
    return pred, gt


def test_t3_greedy_matching_is_order_dependent_optimal_is_not():
    pred, gt = _t3()
    greedy = pixel_metrics([pred], [gt])
    assert greedy["Pd"] == pytest.approx(0.5) and greedy["Fa"] == pytest.approx(1 / 400)
    assert greedy["Fa_x1e6"] == pytest.approx(2500.0)
    optimal = pixel_metrics([pred], [gt], matching="optimal")
    assert optimal["Pd"] == pytest.approx(1.0) and optimal["Fa"] == 0.0


def test_t4_every_unmatched_pixel_counts_in_fa():
    gt, pred = blank(20, 20), blank(20, 20)
    gt[5, 5:7] = True
    pred[5, 5:7] = pred[15, 0:2] = pred[15, 10:12] = True  # three 2-px blobs, one on the target
    m = pixel_metrics([pred], [gt])
    assert m["Pd"] == 1.0 and m["false_alarm_pixels"] == 4 and m["Fa"] == pytest.approx(4 / 400)


def test_t5_distance_of_exactly_three_pixels_is_not_a_match():
    gt, pred = blank(10, 10), blank(10, 10)
    gt[5, 2] = True
    pred[5, 5] = True
    assert pixel_metrics([pred], [gt])["Pd"] == 0.0
    pred[5, 5], pred[5, 4] = False, True
    assert pixel_metrics([pred], [gt])["Pd"] == 1.0


def test_components_are_eight_connected_and_raster_ordered():
    mask = blank(6, 6)
    mask[0, 4] = mask[1, 5] = True  # diagonal neighbours: one component
    mask[3, 0] = True
    labels, centroids, areas = components(mask)
    assert labels.max() == 2 and areas.tolist() == [2, 1]
    assert centroids[0] == pytest.approx([0.5, 4.5]) and centroids[1] == pytest.approx([3.0, 0.0])


def test_component_centroids_are_scipys_center_of_mass_exactly():
    """The centroids (sums of integer coordinates per label) equal scipy's center_of_mass bit for bit, so the strict
    < 3 px matching cannot flip."""
    from scipy import ndimage

    rng = np.random.default_rng(1)
    mask = ndimage.binary_dilation(rng.random((120, 160)) > 0.97)
    labels, centroids, _ = components(mask)
    expected = ndimage.center_of_mass(mask, labels, np.arange(1, labels.max() + 1))
    assert labels.max() > 20 and np.array_equal(centroids, np.asarray(expected))


def test_perfect_masks_give_one_and_no_false_alarm():
    rng = np.random.default_rng(0)
    masks = [rng.random((32, 40)) > 0.97 for _ in range(3)]
    m = pixel_metrics([x.copy() for x in masks], masks)
    assert m["IoU"] == m["nIoU"] == m["Pd"] == 1.0 and m["Fa"] == 0.0


def test_sky_iou():
    gt, pred = blank(4, 4), blank(4, 4)
    gt[:2] = True  # 8 sky pixels
    pred[:3] = True  # 12 predicted, 8 right
    sky = SkyIoU()
    sky.update(pred, gt)
    m = sky.compute()
    assert m["sky_IoU"] == pytest.approx(8 / 12)
    assert m["sky_mIoU"] == pytest.approx((8 / 12 + 4 / 8) / 2)
    assert m["sky_pixel_accuracy"] == pytest.approx(12 / 16)


@pytest.mark.parametrize(
    "pred, target, error, message",
    [
        (np.zeros((4, 4), dtype=np.uint8), blank(4, 4), TypeError, "boolean"),
        (np.zeros((4, 4)), blank(4, 4), TypeError, "binarise explicitly"),
        (blank(4, 5), blank(4, 4), ValueError, r"shape \(4, 5\) != ground-truth mask shape \(4, 4\)"),
        (np.zeros((1, 4, 4), dtype=bool), blank(4, 4), ValueError, "2-D"),
    ],
)
def test_bad_masks_are_rejected(pred, target, error, message):
    with pytest.raises(error, match=message):
        PixelMetrics().update(pred, target, image_id="Misc_7")


def test_error_names_the_image():
    with pytest.raises(TypeError, match="Misc_7"):
        PixelMetrics().update(np.zeros((4, 4)), blank(4, 4), image_id="Misc_7")


def test_matches_pyirstdmetrics_on_random_blobs():
    pim = pytest.importorskip("py_irstd_metrics")  # pins numpy<2, so absent in CI; golden tests above always run
    rng = np.random.default_rng(3)
    ours = PixelMetrics()
    iou = pim.CMMetrics(num_bins=1, threshold=0.5, metric_handlers={
        "iou": pim.IoUHandler(with_dynamic=False, with_binary=True, sample_based=False),
        "niou": pim.IoUHandler(with_dynamic=False, with_binary=True, sample_based=True),
    })
    pdfa = pim.ProbabilityDetectionAndFalseAlarmRate(num_bins=1, distance_threshold=3)
    for _ in range(6):
        h, w = rng.integers(30, 60, 2)
        gt, pred = blank(h, w), blank(h, w)
        for _ in range(rng.integers(1, 8)):  # small blobs, some close together, predictions jittered
            y, x = rng.integers(2, h - 4), rng.integers(2, w - 4)
            gt[y : y + rng.integers(1, 3), x : x + rng.integers(1, 3)] = True
            dy, dx = rng.integers(-2, 3, 2)
            pred[y + dy : y + dy + rng.integers(1, 4), x + dx : x + dx + rng.integers(1, 4)] = True
        pred[rng.integers(0, h), rng.integers(0, w)] = True  # a stray false alarm
        ours.update(pred, gt)
        iou.update(pred.astype(float), gt)
        pdfa.update(pred.astype(float), gt)
    m, ref, ref_target = ours.compute(), iou.get(), pdfa.get()
    assert m["IoU"] == pytest.approx(float(ref["iou"]["binary"]))
    assert m["nIoU"] == pytest.approx(float(ref["niou"]["binary"]))
    assert m["Pd"] == pytest.approx(float(ref_target["probability_detection"][0]))
    assert m["Fa"] == pytest.approx(float(ref_target["false_alarm"][0]))
