from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from linewatch.evaluate.report import (
    ExampleItem,
    plot_examples,
    plot_pr,
    plot_pro,
    plot_roc,
    plot_score_histogram,
)
from linewatch.metrics import pro_curve
from linewatch.overlay import overlay_heatmap


@pytest.fixture
def image_scores() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    labels = (rng.random(80) < 0.4).astype(int)
    return labels, rng.normal(size=80) + labels


def _read_png(path: Path) -> np.ndarray:
    assert path.is_file() and path.stat().st_size > 0
    img = cv2.imread(str(path))
    assert img is not None
    assert img.shape[0] >= 200 and img.shape[1] >= 200
    return img


def test_plot_roc_pr_histogram(tmp_path: Path, image_scores: tuple[np.ndarray, np.ndarray]) -> None:
    labels, scores = image_scores
    _read_png(plot_roc(labels, scores, tmp_path / "roc.png"))
    _read_png(plot_pr(labels, scores, tmp_path / "pr.png"))
    _read_png(plot_score_histogram(labels, scores, 0.5, tmp_path / "nested" / "hist.png"))


def test_plot_pro(tmp_path: Path) -> None:
    mask = np.zeros((32, 32), dtype=bool)
    mask[8:16, 8:16] = True
    amap = mask + np.random.default_rng(1).random((32, 32))
    fpr, pro = pro_curve([mask], [amap])
    _read_png(plot_pro(fpr, pro, tmp_path / "pro.png"))


def test_plot_examples(tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    image = rng.integers(0, 256, (64, 48, 3), dtype=np.uint8)
    mask = np.zeros((64, 48), dtype=bool)
    mask[10:20, 10:20] = True
    items = [
        ExampleItem("defect", image, mask, rng.random((64, 48)), 0.9),
        ExampleItem("good", image, None, rng.random((16, 12)), 0.1),  # low-res map gets resized
    ]
    img = _read_png(plot_examples(items, tmp_path / "examples.png"))
    assert img.shape[0] > img.shape[1] / 2  # one row per example


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
