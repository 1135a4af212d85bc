from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from linewatch.evaluate.report import (
    DPI,
    ExampleItem,
    plot_data_path,
    plot_examples,
    plot_pr,
    plot_pro,
    plot_roc,
    plot_score_histogram,
    plot_threshold_study,
)
from linewatch.metrics import pro_curve, pro_score
from linewatch.metrics.image import auprc, auroc, pr_curve, roc_curve
from linewatch.overlay import overlay_heatmap


@pytest.fixture
def image_scores() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    labels = (rng.random(80) < 0.4).astype(int)
    return labels, rng.normal(size=80) + labels


CURVE_BGR = (180, 119, 31)  # matplotlib's first colour, #1f77b4, in which every curve is drawn


def _read_png(path: Path, size: tuple[float, float]) -> np.ndarray:
    """The plot as BGR, checked for its pixel size (inches x DPI) and for not being blank."""
    img = cv2.imread(str(path))
    assert img is not None, path
    assert img.shape[:2] == (round(size[1] * DPI), round(size[0] * DPI))
    inked = (img < 240).any(axis=2).mean()
    assert inked > 0.02, f"{path} is nearly blank ({inked:.1%} of pixels drawn)"
    return img


def _curve_pixels(img: np.ndarray) -> int:
    return int((np.abs(img.astype(int) - CURVE_BGR).sum(axis=2) < 40).sum())


def _data(plot: Path) -> dict:
    return json.loads(plot_data_path(plot).read_text())


CURVES = {"roc": (plot_roc, roc_curve, ("fpr", "tpr"), "auroc", auroc),
          "pr": (plot_pr, pr_curve, ("precision", "recall"), "ap", auprc)}


@pytest.mark.parametrize("name", sorted(CURVES))
def test_curve_plots_draw_and_record_their_curve(tmp_path: Path, image_scores: tuple[np.ndarray, np.ndarray],
                                                  name: str) -> None:
    labels, scores = image_scores
    plot, curve, keys, area, metric = CURVES[name]
    img = _read_png(plot(labels, scores, tmp_path / f"{name}.png"), (5, 4))
    assert _curve_pixels(img) > 300
    data = _data(tmp_path / f"{name}.png")
    for key, values in zip(keys, curve(labels, scores)[:2], strict=True):
        assert data[key] == pytest.approx(values.tolist())
    assert data[area] == pytest.approx(metric(labels, scores)) and 0.6 < data[area] < 1
    if name == "roc":
        assert (data["fpr"][0], data["tpr"][0], data["fpr"][-1], data["tpr"][-1]) == (0, 0, 1, 1)
    else:
        assert data["prevalence"] == pytest.approx(labels.mean())


def test_plot_score_histogram_records_both_classes(tmp_path: Path, image_scores: tuple[np.ndarray, np.ndarray]) -> None:
    labels, scores = image_scores
    img = _read_png(plot_score_histogram(labels, scores, 0.5, tmp_path / "nested" / "hist.png"), (6, 4))
    data = _data(tmp_path / "nested" / "hist.png")
    assert sum(data["good"]) == (labels == 0).sum() and sum(data["defective"]) == (labels == 1).sum()
    assert len(data["bins"]) == 41 and data["bins"][0] <= scores.min() and data["bins"][-1] >= scores.max()
    assert data["threshold"] == 0.5 and data["auroc"] == pytest.approx(auroc(labels, scores))
    green = (np.abs(img.astype(int) - (120, 190, 120)).sum(axis=2) < 90).sum()  # tab:green bars at alpha 0.6
    assert green > 300


def test_plot_threshold_study_records_the_curves_and_the_chosen_point(
        tmp_path: Path, image_scores: tuple[np.ndarray, np.ndarray]) -> None:
    labels, scores = image_scores
    returned = plot_threshold_study(labels, scores, 0.5, tmp_path / "study.png")
    _read_png(tmp_path / "study.png", (6, 4))
    data = _data(tmp_path / "study.png")
    precision, recall, thresholds = pr_curve(labels, scores)
    assert data["thresholds"] == pytest.approx(thresholds.tolist()) and data == json.loads(json.dumps(returned))
    assert data["precision"] == pytest.approx(precision.tolist()) and data["recall"] == pytest.approx(recall.tolist())
    chosen = data["at_threshold"]
    predicted = scores >= 0.5
    assert chosen["recall"] == pytest.approx((predicted & (labels == 1)).sum() / (labels == 1).sum())
    assert chosen["precision"] == pytest.approx((predicted & (labels == 1)).sum() / predicted.sum())


def test_plot_pro_records_the_curve_up_to_the_limit(tmp_path: Path) -> None:
    mask = np.zeros((32, 32), dtype=bool)
    mask[8:16, 8:16] = True
    amap = mask + np.random.default_rng(1).random((32, 32))
    fpr, pro = pro_curve([mask], [amap])
    img = _read_png(plot_pro(fpr, pro, tmp_path / "pro.png"), (5, 4))
    assert _curve_pixels(img) > 100
    data = _data(tmp_path / "pro.png")
    assert max(data["fpr"]) <= 0.3 and data["fpr_limit"] == 0.3 and len(data["fpr"]) == len(data["pro"])
    assert data["pro_score"] == pytest.approx(pro_score([mask], [amap]), abs=1e-6)
    assert data["pro"] == sorted(data["pro"]) and data["pro_score"] > 0.9


def test_plot_examples_records_each_row(tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    image = rng.integers(0, 256, (64, 48, 3), dtype=np.uint8)
    mask = np.zeros((64, 48), dtype=bool)
    mask[10:20, 10:20] = True
    items = [
        ExampleItem("defect", image, mask, rng.random((64, 48)) * 2, 0.9),
        ExampleItem("good", image, None, rng.random((16, 12)), 0.1),  # low-res map gets resized
    ]
    _read_png(plot_examples(items, tmp_path / "examples.png"), (9, 6))  # one 3-inch row per example
    data = _data(tmp_path / "examples.png")
    assert [(r["title"], r["score"], r["has_mask"]) for r in data["items"]] == [("defect", 0.9, True),
                                                                               ("good", 0.1, False)]
    assert data["vmax"] == pytest.approx(float(items[0].anomaly_map.max()))
    assert data["vmin"] == pytest.approx(min(float(i.anomaly_map.min()) for i in items))


def test_overlay_heatmap_marks_hot_spot_red() -> None:
    image = np.full((40, 60, 3), 128, dtype=np.uint8)
    amap = np.zeros((40, 60), dtype=np.float32)
    amap[10:20, 30:40] = 1.0
    out = overlay_heatmap(image, amap, vmin=0.0, vmax=1.0)
    assert out.shape == image.shape and out.dtype == np.uint8
    red, green, blue = (int(v) for v in out[15, 35])
    assert red > green + 40 and red > blue + 40
    red, green, blue = (int(v) for v in out[0, 0])
    assert blue > red + 40  # cold pixels are blue


def test_overlay_heatmap_rejects_non_rgb() -> None:
    with pytest.raises(ValueError, match="HxWx3 uint8"):
        overlay_heatmap(np.zeros((4, 4), dtype=np.uint8), np.zeros((4, 4)), 0.0, 1.0)
