from __future__ import annotations

import json
import math

import numpy as np
import pytest
from scipy import ndimage
from sklearn.metrics import average_precision_score, roc_auc_score

from linewatch.metrics import (
    ScoreNormalizer,
    auprc,
    auroc,
    best_f1_threshold,
    calibrate,
    classification_report,
    pixel_auroc,
    pr_curve,
    pro_curve,
    pro_score,
    roc_curve,
    threshold_at_fpr,
)


def _labelled_scores(seed: int, n: int = 300, ties: bool = True) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    labels = rng.random(n) < 0.3
    scores = rng.normal(size=n) + 1.2 * labels
    return labels.astype(int), np.round(scores, 1) if ties else scores


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("ties", [True, False])
def test_auroc_auprc_match_sklearn(seed: int, ties: bool) -> None:
    labels, scores = _labelled_scores(seed, ties=ties)
    assert auroc(labels, scores) == pytest.approx(roc_auc_score(labels, scores), abs=1e-12)
    assert auprc(labels, scores) == pytest.approx(average_precision_score(labels, scores), abs=1e-12)


def test_curves_are_consistent() -> None:
    labels, scores = _labelled_scores(7)
    fpr, tpr, thresholds = roc_curve(labels, scores)
    assert (fpr[0], tpr[0], fpr[-1], tpr[-1]) == (0.0, 0.0, 1.0, 1.0)
    assert np.all(np.diff(thresholds) < 0)
    precision, recall, pr_thresholds = pr_curve(labels, scores)
    assert recall[-1] == 1.0 and np.all(np.diff(recall) >= 0)
    i = len(pr_thresholds) // 2
    report = classification_report(labels, scores, pr_thresholds[i])
    assert precision[i] == report["precision"] and recall[i] == report["recall"]


def test_one_class_raises() -> None:
    with pytest.raises(ValueError, match="both good and defective"):
        auroc([0, 0, 0], [0.1, 0.2, 0.3])
    with pytest.raises(ValueError, match="both good and defective"):
        auprc([1, 1], [0.1, 0.2])


@pytest.mark.parametrize("seed", range(5))
def test_best_f1_threshold_is_reproducible_and_optimal(seed: int) -> None:
    labels, scores = _labelled_scores(seed)
    threshold, f1 = best_f1_threshold(labels, scores)
    assert threshold in scores
    assert classification_report(labels, scores, threshold)["f1"] == f1
    assert f1 == max(classification_report(labels, scores, t)["f1"] for t in np.unique(scores))


def test_classification_report_counts() -> None:
    report = classification_report([0, 0, 1, 1, 1], [0.1, 0.6, 0.4, 0.5, 0.9], threshold=0.5)
    assert (report["tp"], report["fp"], report["tn"], report["fn"]) == (2, 1, 1, 1)
    assert report["precision"] == pytest.approx(2 / 3)
    assert report["recall"] == pytest.approx(2 / 3)
    assert report["f1"] == pytest.approx(2 / 3)
    assert report["accuracy"] == pytest.approx(3 / 5)


def test_threshold_at_fpr_small_example() -> None:
    labels = np.zeros(10, dtype=int)
    scores = np.arange(10.0)
    assert threshold_at_fpr(labels, scores, 0.1) == 9.0
    assert threshold_at_fpr(labels, scores, 0.25) == 8.0
    assert threshold_at_fpr(labels, scores, 1.0) == 0.0
    strict = threshold_at_fpr(labels, scores, 0.0)
    assert 9.0 < strict < 9.0 + 1e-9
    # a defective score between good ones is the lowest observed score still within budget
    assert threshold_at_fpr(np.append(labels, 1), np.append(scores, 7.5), 0.2) == 7.5


@pytest.mark.parametrize("seed", range(3))
def test_threshold_at_fpr_is_smallest_observed_within_budget(seed: int) -> None:
    labels, scores = _labelled_scores(seed)
    good = scores[labels == 0]
    for target in (0.0, 0.05, 0.2):
        t = threshold_at_fpr(labels, scores, target)
        assert np.mean(good >= t) <= target
        lower = scores[scores < t]
        if lower.size:
            assert np.mean(good >= lower.max()) > target


def _random_maps(seed: int, quantize: bool, dtype: type = np.float64) -> tuple[list, list]:
    rng = np.random.default_rng(seed)
    masks, maps = [], []
    for h, w in [(20, 30), (33, 17), (40, 40), (25, 25)]:
        mask = ndimage.binary_dilation(rng.random((h, w)) < 0.02, iterations=2)
        amap = rng.random((h, w)) + 0.4 * mask
        masks.append(mask)
        maps.append((np.round(amap * 8) / 8 if quantize else amap).astype(dtype))
    masks[-1][:] = False  # a defect-free image only adds good pixels
    return masks, maps


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("quantize", [True, False])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_pixel_auroc_matches_sklearn(seed: int, quantize: bool, dtype: type) -> None:
    masks, maps = _random_maps(seed, quantize, dtype)
    flat_masks = np.concatenate([m.ravel() for m in masks])
    flat_maps = np.concatenate([a.ravel() for a in maps])
    assert pixel_auroc(masks, maps) == pytest.approx(roc_auc_score(flat_masks, flat_maps), abs=1e-12)


def _reference_pro(masks: list, maps: list, limit: float) -> float:
    """Straightforward MVTec AD algorithm: one global sort, cumulative sums, cut at ``limit``."""
    fp_step, pro_step = [], []
    n_regions = 0
    for mask in masks:
        labels, n = ndimage.label(mask, structure=np.ones((3, 3)))
        sizes = np.bincount(labels.ravel())
        pro_step.append(np.where(labels > 0, 1.0 / sizes[labels], 0.0).ravel())
        fp_step.append(~mask.ravel())
        n_regions += n
    scores = np.concatenate([a.ravel() for a in maps])
    order = np.argsort(-scores, kind="stable")
    keep = np.append(np.diff(scores[order]) != 0, True)
    fp = np.concatenate(fp_step)
    fpr = np.r_[0.0, (np.cumsum(fp[order]) / fp.sum())[keep]]
    pro = np.r_[0.0, (np.cumsum(np.concatenate(pro_step)[order]) / n_regions)[keep]]
    j = int(np.argmax(fpr >= limit))
    end = pro[j - 1] + (pro[j] - pro[j - 1]) * (limit - fpr[j - 1]) / (fpr[j] - fpr[j - 1])
    x, y = np.r_[fpr[:j], limit], np.r_[pro[:j], end]
    return float(np.sum(np.diff(x) * (y[1:] + y[:-1]) / 2) / limit)


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("quantize", [True, False])
@pytest.mark.parametrize("limit", [0.3, 0.05])
def test_pro_matches_reference_algorithm(seed: int, quantize: bool, limit: float) -> None:
    masks, maps = _random_maps(seed, quantize)
    assert pro_score(masks, maps, limit) == pytest.approx(_reference_pro(masks, maps, limit), abs=1e-9)


def test_pro_curve_shape() -> None:
    masks, maps = _random_maps(1, quantize=True)
    fpr, pro = pro_curve(masks, maps)
    assert fpr[0] == 0.0 and pro[0] == 0.0
    assert fpr[-1] == 0.3
    assert np.all(np.diff(fpr) >= 0) and np.all(np.diff(pro) >= -1e-12)
    assert np.all((pro >= 0) & (pro <= 1))
    assert 0.0 <= pro_score(masks, maps) <= 1.0
    assert fpr.size <= 3 * (sum(int(m.sum()) for m in masks) + 1) + 2  # bounded by defect pixels


def test_pro_perfect_detection() -> None:
    mask = np.zeros((50, 50), dtype=bool)
    mask[5:10, 5:15] = True
    mask[30:45, 20:22] = True
    assert pro_score([mask], [mask.astype(float)]) == pytest.approx(1.0, abs=1e-12)


def _square_mask(size: int, *boxes: tuple[int, int, int, int]) -> np.ndarray:
    mask = np.zeros((size, size), dtype=bool)
    for r0, r1, c0, c1 in boxes:
        mask[r0:r1, c0:c1] = True
    return mask


def test_pro_half_of_region_found() -> None:
    mask = _square_mask(40, (10, 20, 10, 20))
    amap = np.zeros((40, 40))
    amap[10:20, 10:15] = 1.0
    # The found half sits above every good pixel: vertical jump to PRO 0.5 at FPR 0. The other half
    # ties with all background at 0, a single threshold taking the curve straight from (0, 0.5) to
    # (1, 1), so PRO(x) = 0.5 + 0.5 x and the mean over [0, 0.3] is 0.5 + 0.5 * 0.15 = 0.575.
    assert pro_score([mask], [amap]) == pytest.approx(0.575, abs=1e-12)
    # Background strictly between the two halves: the curve stays flat at 0.5 up to FPR 1.
    amap[~mask] = 0.5
    assert pro_score([mask], [amap]) == pytest.approx(0.5, abs=1e-12)


def test_pro_is_mean_over_regions_not_pixels() -> None:
    mask = _square_mask(64, (2, 5, 2, 5), (30, 50, 30, 50))
    amap = np.full((64, 64), 0.5)
    amap[2:5, 2:5] = 1.0  # the 9-pixel region is found
    amap[30:50, 30:50] = 0.0  # the 400-pixel region is missed
    assert pro_score([mask], [amap]) == pytest.approx(0.5, abs=1e-12)


def test_pro_regions_are_8_connected() -> None:
    mask = _square_mask(20, (2, 4, 2, 4), (4, 8, 4, 8))  # touch only diagonally
    amap = np.full((20, 20), 0.5)
    amap[2:4, 2:4] = 1.0
    amap[4:8, 4:8] = 0.0
    # one region of 20 pixels, 4 of them found (two 4-connected regions would give 0.5)
    assert pro_score([mask], [amap]) == pytest.approx(0.2, abs=1e-12)


def test_pro_false_positives_only() -> None:
    mask = _square_mask(40, (10, 20, 10, 20))
    amap = np.full((40, 40), 0.5)
    amap[mask] = 0.0
    amap[:8, :] = 1.0  # 320 of 1500 good pixels (FPR ~0.21) outscore the defect
    assert pro_score([mask], [amap]) == pytest.approx(0.0, abs=1e-12)


def test_pro_spans_images_of_different_sizes() -> None:
    found = _square_mask(30, (5, 10, 5, 10))
    missed = _square_mask(50, (20, 40, 20, 40))
    clean = np.zeros((25, 35), dtype=bool)
    maps = [found * 1.0 + ~found * 0.5, np.where(missed, 0.0, 0.5), np.full(clean.shape, 0.5)]
    assert pro_score([found, missed, clean], maps) == pytest.approx(0.5, abs=1e-12)


def test_pixel_metrics_need_defect_pixels() -> None:
    masks = [np.zeros((10, 10), dtype=bool)]
    maps = [np.random.default_rng(0).random((10, 10))]
    for metric in (pixel_auroc, pro_score, pro_curve):
        with pytest.raises(ValueError, match="no defect pixels"):
            metric(masks, maps)


def test_pixel_metrics_reject_shape_mismatch() -> None:
    with pytest.raises(ValueError, match="shape"):
        pixel_auroc([np.ones((4, 4), dtype=bool)], [np.zeros((4, 5))])


def test_normalizer_threshold_and_clipping() -> None:
    norm = ScoreNormalizer(threshold=3.0, low=1.0, high=5.0)
    assert norm.normalize(3.0) == 0.5
    assert norm.normalize(4.0) == pytest.approx(0.75)
    assert norm.normalize(100.0) == 1.0
    assert norm.normalize(-100.0) == 0.0
    out = norm.normalize(np.array([1.0, 3.0, 5.0]))
    assert isinstance(out, np.ndarray)
    np.testing.assert_allclose(out, [0.0, 0.5, 1.0])
    assert ScoreNormalizer(threshold=2.0, low=2.0, high=2.0).normalize(2.25) == 0.75


def test_normalizer_of_one_score_equals_the_array_path_bit_for_bit() -> None:
    """A single float takes Python's arithmetic (per verdict and region), arrays numpy's: the same doubles, also
    for a float32 threshold, clipped ends and NaN."""
    rng = np.random.default_rng(0)
    for norm in (ScoreNormalizer(threshold=0.7, low=0.1, high=1.9),
                 ScoreNormalizer(threshold=np.float32(33.4), low=np.float32(16.3), high=np.float32(161.6)),
                 ScoreNormalizer(threshold=2.0, low=2.0, high=2.0)):
        raws = np.concatenate([rng.normal(norm.threshold, 40.0, 500), [norm.threshold, -1e9, 1e9]])
        arrays = norm.normalize(raws)
        assert [norm.normalize(float(raw)) for raw in raws] == arrays.tolist()
        assert all(type(norm.normalize(float(raw))) is float for raw in raws[:3])
    assert math.isnan(ScoreNormalizer(threshold=0.7, low=0.1, high=1.9).normalize(math.nan))


def test_normalizer_round_trip() -> None:
    norm = ScoreNormalizer(threshold=0.7, low=0.1, high=1.9)
    assert ScoreNormalizer.from_dict(json.loads(json.dumps(norm.to_dict()))) == norm


def test_calibrate_f1() -> None:
    labels, scores = _labelled_scores(3)
    norm = calibrate(labels, scores, method="f1")
    threshold, _ = best_f1_threshold(labels, scores)
    assert norm.threshold == threshold
    assert (norm.low, norm.high) == (scores.min(), scores.max())
    np.testing.assert_array_equal(norm.normalize(scores) >= 0.5, scores >= threshold)


def test_calibrate_fpr_with_good_samples_only() -> None:
    scores = np.random.default_rng(4).normal(size=500)
    norm = calibrate(np.zeros(500, dtype=int), scores, method="fpr", target_fpr=0.01)
    assert np.mean(norm.normalize(scores) >= 0.5) <= 0.01
    assert norm.normalize(norm.threshold) == 0.5
    with pytest.raises(ValueError, match="unknown calibration method"):
        calibrate(np.zeros(500, dtype=int), scores, method="median")  # type: ignore[arg-type]
