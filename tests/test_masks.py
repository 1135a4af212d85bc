"""Mask metrics, the pixel threshold, multi-class metrics and the defect-type classifier, against hand-computed
values."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from linewatch.defect_types import DefectTypes, coarse, grid_shape
from linewatch.metrics.classes import multiclass_report
from linewatch.metrics.masks import combined, mask_similarity, pixel_threshold, summarize
from linewatch.metrics.ssim import ssim, ssim_map
from linewatch.models.components.ssim import ssim_map as torch_ssim_map


def _rows(first: int, last: int, shape: tuple[int, int] = (8, 8)) -> np.ndarray:
    mask = np.zeros(shape, bool)
    mask[first:last] = True
    return mask


def test_iou_dice_accuracy_and_weighted_combination_of_known_masks() -> None:
    truth, predicted = _rows(0, 4), _rows(2, 6)  # 32 pixels each, 16 shared, 48 in the union
    values = mask_similarity(predicted, truth)
    assert values["iou"] == pytest.approx(16 / 48)
    assert values["dice"] == pytest.approx(2 * 16 / 64)
    assert values["pixel_accuracy"] == pytest.approx(1 - 32 / 64)
    assert values["ssim"] == pytest.approx(ssim(predicted.astype(np.float32), truth.astype(np.float32)))
    expected = 0.1 * values["ssim"] + 0.4 * (1 / 3) + 0.4 * 0.5 + 0.1 * 0.5
    assert values["combined"] == pytest.approx(expected)
    assert combined({"ssim": 1.0, "iou": 0.0, "dice": 0.0, "pixel_accuracy": 1.0}) == pytest.approx(0.2)


def test_identical_masks_score_one_everywhere_and_empty_masks_agree() -> None:
    mask = _rows(3, 5)
    assert mask_similarity(mask, mask) == pytest.approx(dict.fromkeys(("ssim", "iou", "dice", "pixel_accuracy",
                                                                         "combined"), 1.0))
    empty = np.zeros((8, 8), bool)
    both_empty = mask_similarity(empty, empty)
    assert both_empty["iou"] == both_empty["dice"] == both_empty["combined"] == pytest.approx(1.0)
    disjoint = mask_similarity(_rows(0, 2), _rows(6, 8))
    assert disjoint["iou"] == disjoint["dice"] == 0.0 and disjoint["pixel_accuracy"] == pytest.approx(0.5)
    with pytest.raises(ValueError, match="shapes differ"):
        mask_similarity(empty, np.zeros((4, 4), bool))


def test_numpy_ssim_equals_the_torch_ssim_of_the_networks() -> None:
    rng = np.random.default_rng(0)
    a, b = rng.random((3, 20, 24), dtype=np.float32), rng.random((3, 20, 24), dtype=np.float32)
    expected = torch_ssim_map(torch.from_numpy(a)[None], torch.from_numpy(b)[None])[0, 0].numpy()
    np.testing.assert_allclose(ssim_map(a, b), expected, atol=2e-5)
    assert ssim(a, a) == pytest.approx(1.0)


def test_pixel_threshold_max_f1_and_three_sigma() -> None:
    good = np.array([[0.1, 0.2], [0.3, 0.2]], np.float32)
    bad = np.array([[0.1, 0.8], [0.9, 0.35]], np.float32)
    bad_mask = np.array([[False, True], [True, False]])
    threshold, facts = pixel_threshold([good, bad], [np.zeros((2, 2), bool), bad_mask], "f1")
    assert threshold == pytest.approx(0.8) and facts["pixel_f1"] == pytest.approx(1.0) and facts["method"] == "f1"
    threshold, facts = pixel_threshold([good, bad], [np.zeros((2, 2), bool), None], "3sigma")
    values = np.array([0.1, 0.2, 0.3, 0.2])
    assert threshold == pytest.approx(values.mean() + 3 * values.std()) and facts["method"] == "3sigma"
    fallback, facts = pixel_threshold([good], [np.zeros((2, 2), bool)], "f1")  # no defect pixels: 3 sigma
    assert facts["method"] == "3sigma" and fallback == pytest.approx(threshold)
    with pytest.raises(ValueError, match="no validation image with ground truth"):
        pixel_threshold([bad], [None])


def test_summary_means_per_defect_type_and_over_defective_images() -> None:
    def row(defect: str, value: float) -> tuple[str, dict[str, float]]:
        return defect, dict.fromkeys(("ssim", "iou", "dice", "pixel_accuracy", "combined"), value)

    summary = summarize([row("crack", 0.2), row("crack", 0.4), row("dent", 0.9), row("good", 1.0)])
    assert summary["per_defect"]["crack"]["iou"] == pytest.approx(0.3)
    assert summary["per_defect"]["good"]["dice"] == pytest.approx(1.0)
    assert summary["iou"] == pytest.approx(0.5) and summary["images"] == 3  # good images stay out of the mean
    assert summarize([row("good", 1.0)])["iou"] is None


def test_multiclass_report_confusion_precision_recall() -> None:
    truth = ["good", "good", "crack", "crack", "dent", "dent"]
    predicted = ["good", "crack", "crack", "dent", "dent", "good"]
    report = multiclass_report(truth, predicted)
    assert report["labels"] == ["good", "crack", "dent"]
    assert report["confusion"] == [[1, 1, 0], [0, 1, 1], [1, 0, 1]]
    assert report["accuracy"] == pytest.approx(3 / 6)
    assert report["binary_accuracy"] == pytest.approx(4 / 6)  # good/defective right for 4 of 6
    assert report["per_class"]["crack"] == {"precision": pytest.approx(0.5), "recall": pytest.approx(0.5)}
    assert multiclass_report(["good"], ["good"])["per_class"]["good"]["precision"] == 1.0
    assert multiclass_report(["good", "dent"], ["good", "good"])["per_class"]["dent"]["precision"] is None


def test_defect_types_pick_the_most_similar_reference_mask_and_round_trip(tmp_path: Path) -> None:
    left, right = np.zeros((8, 8), bool), np.zeros((8, 8), bool)
    left[:, :3], right[:, 5:] = True, True
    classifier = DefectTypes(0.5, {"method": "f1"}, np.stack([left, right, right]), ("left", "right", "right"))
    amap = np.zeros((8, 8), np.float32)
    amap[:, :2] = 0.9
    assert classifier.defect_type(amap)[0] == "left"
    assert classifier.classify(amap, defective=False) == ("good", None)
    assert classifier.classify(np.zeros((8, 8), np.float32), defective=True, gate="mask") == ("good", None)
    label, similarity = classifier.classify(amap, defective=True)
    assert label == "left" and similarity == pytest.approx(mask_similarity(amap >= 0.5, left)["combined"])
    section, files = classifier.save(tmp_path)
    loaded = DefectTypes.load(tmp_path, section)
    assert files == ["defect_masks.npy"] and loaded is not None and loaded.types == ["left", "right"]
    assert loaded.similarities(amap) == pytest.approx(classifier.similarities(amap))
    assert DefectTypes.load(tmp_path, None) is None
    bare = DefectTypes(0.5, {"method": "3sigma"})
    assert not bare.can_classify and bare.save(tmp_path)[0]["classifier"] is None


def test_classifier_similarities_equal_mask_similarity_of_every_reference() -> None:
    rng = np.random.default_rng(1)
    references = rng.random((5, 24, 32)) > 0.7
    classifier = DefectTypes(0.5, {}, references, ("a", "b", "a", "c", "b"))
    amap = rng.random((24, 32)).astype(np.float32)
    expected: dict[str, float] = {}
    for label, mask in zip(classifier.labels, references, strict=True):
        expected[label] = max(expected.get(label, -1.0), mask_similarity(amap >= 0.5, mask)["combined"])
    assert classifier.similarities(amap) == pytest.approx(expected, abs=1e-6)


def test_comparison_grid_keeps_thin_defects() -> None:
    mask = np.zeros((256, 128), bool)
    mask[100:140, 64] = True  # a one-pixel-wide lead
    small = coarse(mask)
    assert small.shape == (64, 32) and small.any() and small.sum() == 10
    assert coarse(np.ones((40, 60), bool)).shape == (40, 60)  # small maps are compared as they are
    classifier = DefectTypes(0.5, {}, np.stack([small]), ("lead",))
    with pytest.raises(ValueError, match="does not fit"):
        classifier.similarities(np.zeros((64, 64), np.float32))


@pytest.mark.parametrize("shape", [(256, 256), (160, 384), (384, 160), (64, 160), (40, 60), (65, 64), (1, 200),
                                   (1000, 3), (900, 900)])
def test_the_grid_shape_is_the_shape_coarse_gives(shape: tuple[int, int]) -> None:
    """`compare_shape` checks maps against the references by arithmetic (no resize per frame); it must agree
    with what `coarse` produces."""
    assert grid_shape(shape) == coarse(np.zeros(shape, bool)).shape


def test_classifier_compares_more_references_than_opencv_blurs_at_once() -> None:
    """600 references go through the SSIM blur in chunks of 128 channels and still equal `mask_similarity`."""
    rng = np.random.default_rng(2)
    references = rng.random((600, 12, 10)) > 0.6
    labels = tuple(f"t{k % 7}" for k in range(600))
    amap = rng.random((12, 10)).astype(np.float32)
    expected: dict[str, float] = {}
    for label, mask in zip(labels, references, strict=True):
        expected[label] = max(expected.get(label, -1.0), mask_similarity(amap >= 0.5, mask)["combined"])
    assert DefectTypes(0.5, {}, references, labels).similarities(amap) == pytest.approx(expected, abs=1e-6)


def test_classifier_computes_ssim_near_the_prediction_only_and_still_equals_mask_similarity() -> None:
    """Small predicted regions (and an empty one): cells far from them take each reference's SSIM against an
    empty mask, the covariances are blurred on a crop around them, and with many references SSIM is computed
    only for those that can still beat their type's best; the similarities equal `mask_similarity`."""
    rng = np.random.default_rng(3)
    for count in (4, 40):  # one pass over every reference, and pruned
        references = np.zeros((count, 48, 40), bool)
        for k in range(count):
            y, x = rng.integers(0, 42), rng.integers(0, 36)
            references[k, y : y + rng.integers(2, 7), x : x + rng.integers(2, 5)] = True
        references[3] |= rng.random((48, 40)) > 0.97
        labels = tuple("abcd"[k % 4] for k in range(count))
        classifier = DefectTypes(0.5, {}, references, labels)
        inside = np.pad(np.ones((3, 5), np.float32), ((28, 17), (18, 17)))  # the crop's edges are inside the grid
        corner = np.pad(np.ones((2, 3), np.float32), ((0, 46), (37, 0)))  # the crop meets the grid's borders
        for amap in (np.zeros((48, 40), np.float32), inside, corner, inside + corner, references[-1] * 0.9):
            expected: dict[str, float] = {}
            for label, mask in zip(labels, references, strict=True):
                expected[label] = max(expected.get(label, -1.0), mask_similarity(amap >= 0.5, mask)["combined"])
            assert classifier.similarities(amap) == pytest.approx(expected, abs=1e-6)
            label, similarity = classifier.defect_type(amap)  # pruned against the overall best: the same winner
            assert similarity == pytest.approx(max(expected.values()), abs=1e-6)
            assert label == min(k for k, v in expected.items() if v > max(expected.values()) - 1e-9)


def test_defect_type_is_the_best_type_among_many_references_of_random_maps() -> None:
    """The classification prunes SSIM against the best reference over all types; on random blobby maps (twice
    the comparison grid) it picks the type whose best `mask_similarity` on the grid is highest, with that value."""
    rng = np.random.default_rng(4)
    references = np.stack([cv2.GaussianBlur(rng.random((23, 59)).astype(np.float32), (0, 0), 2) > 0.53
                           for _ in range(24)])
    labels = tuple("pqrst"[k % 5] for k in range(24))
    classifier = DefectTypes(0.5, {}, references, labels)
    for _ in range(12):
        amap = cv2.GaussianBlur(rng.random((46, 118)).astype(np.float32), (0, 0), 3) + 0.03
        expected: dict[str, float] = {}
        for label, mask in zip(labels, references, strict=True):
            expected[label] = max(expected.get(label, -1.0), mask_similarity(coarse(amap >= 0.5), mask)["combined"])
        best = max(sorted(expected), key=lambda key: expected[key])
        assert classifier.defect_type(amap) == (best, pytest.approx(expected[best], abs=1e-6))


def test_coarse_equals_opencv_area_resize_of_the_mask() -> None:
    """The integral-image comparison grid equals `cv2.resize(..., INTER_AREA) > 0`, its definition, on every
    kind of shape: whole and fractional cell sizes, thin and wide maps."""
    rng = np.random.default_rng(5)
    for shape in [(160, 416), (256, 256), (224, 224), (200, 512), (65, 130), (1000, 37), (513, 64), (1, 200),
                  (127, 4000)]:
        grid = grid_shape(shape)
        for density in (0.0005, 0.005, 0.05):
            mask = rng.random(shape) < density
            expected = cv2.resize(mask.astype(np.float32), grid[::-1], interpolation=cv2.INTER_AREA) > 0
            assert np.array_equal(coarse(mask), expected)
