"""Non-square inputs end to end: auto size from the data, features, maps, export, runtime parity, regions."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import cv2
import numpy as np
import onnx
import pytest
from click.testing import CliRunner
from helpers import published_headers

from linewatch.bundle import read_manifest
from linewatch.config import AutoSize, ConfigError
from linewatch.data import read_image, scan_category
from linewatch.data.synthetic import make_synthetic_category
from linewatch.evaluate.cli import main as eval_main
from linewatch.export.cli import main as export_main
from linewatch.features.extractor import FeatureConfig, build_extractor
from linewatch.features.geometry import auto_input_size, median_aspect
from linewatch.inspector import Inspector
from linewatch.runtime.postprocess import heatmap_stride
from linewatch.train.cli import main as train_main
from linewatch.train.options import resolve_training

SHAPE = (72, 192)  # (H, W) of the elongated test images: aspect 0.375


def elongate(source: Path, out: Path, shape: tuple[int, int] = SHAPE) -> Path:
    """Stretch every image and mask of a square category to `shape`: an elongated part."""
    for path in source.rglob("*.png"):
        target = out / path.relative_to(source)
        target.parent.mkdir(parents=True, exist_ok=True)
        nearest = "ground_truth" in path.parts
        image = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
        interpolation = cv2.INTER_NEAREST if nearest else cv2.INTER_AREA
        cv2.imwrite(str(target), cv2.resize(image, (shape[1], shape[0]), interpolation=interpolation))
    return out


@pytest.fixture(scope="module")
def category(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("geometry")
    square = make_synthetic_category(root / "square", size=96, n_train=30, n_test_good=6, n_test_defect=4)
    return elongate(square, root / "long")


@pytest.mark.parametrize(("aspect", "side", "size"), [(1.0, 256, (256, 256)), (200 / 512, 256, (160, 416)),
                                                     (2.0, 256, (352, 192)), (0.375, 96, (64, 160)),
                                                     (100.0, 64, (192, 32))])
def test_auto_size_keeps_the_area_and_the_aspect_in_multiples_of_32(aspect: float, side: int,
                                                                    size: tuple[int, int]) -> None:
    assert auto_input_size(aspect, side) == size


def test_auto_size_parses_and_reads_the_median_aspect(category: Path, tmp_path: Path) -> None:
    assert resolve_training(None, {"data": tmp_path, "out": "x", "image_size": "auto"})["image_size"] == AutoSize()
    assert resolve_training(None, {"data": tmp_path, "out": "x", "image_size": "auto:96"})["image_size"] == AutoSize(96)
    with pytest.raises(ConfigError, match="auto:N"):
        resolve_training(None, {"data": tmp_path, "out": "x", "image_size": "auto:big"})
    with pytest.raises(ConfigError, match="below the minimum"):
        resolve_training(None, {"data": tmp_path, "out": "x", "image_size": "auto:8"})
    aspect, read = median_aspect(scan_category(category).train)
    assert aspect == pytest.approx(0.375) and read == 30


def test_feature_memory_detectors_take_the_aspect_ratio_by_default(category: Path, tmp_path: Path) -> None:
    """PatchCore and PaDiM default to auto:256 (square parts stay 256 x 256); trained detectors keep theirs."""
    for model in ("patchcore", "padim"):
        assert resolve_training(None, {"data": tmp_path, "out": "x", "model": model})["image_size"] == AutoSize(256)
        explicit = {"data": tmp_path, "out": "x", "model": model, "image_size": "256"}
        assert resolve_training(None, explicit)["image_size"] == (256, 256)
    assert resolve_training(None, {"data": tmp_path, "out": "x", "model": "autoencoder"})["image_size"] == (128, 128)
    bundle = tmp_path / "default"
    result = CliRunner().invoke(train_main, ["--data", str(category), "--out", str(bundle), "--weights", "none",
                                             "--coreset-ratio", "0.1", "--quiet"])
    assert result.exit_code == 0, result.output
    geometry = read_manifest(bundle)["preprocess"]["geometry"]
    assert geometry["rule"] == "auto:256" and geometry["size"] == [160, 416]


def test_features_of_a_non_square_input_keep_its_shape() -> None:
    config = FeatureConfig(layers=("layer2", "layer3"), image_size=(64, 160))
    extractor, _ = build_extractor(config, "none")
    import torch

    with torch.inference_mode():
        features = extractor(torch.zeros(2, 3, 64, 160))
    assert tuple(features.shape) == (2, config.out_dims, *config.feature_size) == (2, 152, 8, 20)


CASES = {
    "patchcore": ["--model", "patchcore"],
    "padim-tolerant": ["--model", "padim", "--padim-dims", "40", "--padim-radius", "1", "--padim-pool", "1"],
    "padim-aligned-standardized": ["--model", "padim", "--padim-dims", "40", "--align", "lk-affine",
                                   "--intensity", "standardize"],
    "patchcore-tuned": ["--model", "patchcore", "--tune", "--backbone", "efficientnet_lite0"],
}


@pytest.mark.parametrize("case", CASES)
def test_auto_sized_bundle_trains_exports_and_runs_with_eval_parity(case: str, category: Path,
                                                                    tmp_path: Path) -> None:
    """Plain, position-tolerant, aligned (and intensity-standardised) and tuned bundles of an elongated part: the
    runtime's raw scores = eval's."""
    bundle = tmp_path / case
    result = CliRunner().invoke(train_main, ["--data", str(category), "--out", str(bundle), "--image-size",
                                             "auto:96", "--quiet", *CASES[case]])
    assert result.exit_code == 0, result.output
    assert "input 64x160x3" in result.output
    manifest = read_manifest(bundle)
    assert ("tuning" in manifest) == case.endswith("tuned")
    assert manifest["network"]["input"]["size"] == [64, 160]
    assert manifest["preprocess"]["geometry"]["rule"] == "auto:96"
    assert manifest["preprocess"]["geometry"]["median_aspect_h_over_w"] == pytest.approx(0.375)
    assert manifest["postprocess"]["map_size"] == [64, 160]

    result = CliRunner().invoke(export_main, [str(bundle)])
    assert result.exit_code == 0, result.output
    graph = onnx.load(str(bundle / "network.onnx"))
    dims = [d.dim_param or d.dim_value for d in graph.graph.input[0].type.tensor_type.shape.dim]
    assert dims[1:] == [3, 64, 160] and isinstance(dims[0], str)

    report = tmp_path / "report"
    result = CliRunner().invoke(eval_main, ["--bundle", str(bundle), "--data", str(category), "--out", str(report),
                                            "--split", "all", "--save-maps", "--quiet"])
    assert result.exit_code == 0, result.output
    metrics = json.loads((report / "metrics.json").read_text())
    assert metrics["image_auroc"] > 0.85 and metrics["pixel_auroc"] > 0.8
    assert np.load(next((report / "maps").rglob("*.npy"))).shape == SHAPE

    if "aligned" in case:  # parity must cover frames whose warp brings in padding that scoring leaves out
        inspector = Inspector.from_bundle(bundle)
        frames = sorted((category / "test").rglob("*.png"))
        warps = [inspector.preprocessor.prepare(read_image(path))[1] for path in frames]
        assert sum(mask is not None for mask in inspector.preprocessor.unseen(warps) or []) >= 3
    headers = published_headers(bundle, category / "test")
    with open(report / "scores.csv") as handle:
        expected = {row["path"]: float(row["score"]) for row in csv.DictReader(handle)}
    published = {Path(h["path"]).relative_to(category).as_posix(): h["raw_score"] for h in headers}
    assert published.keys() == expected.keys()
    for path, score in expected.items():
        assert published[path] == pytest.approx(score, rel=1e-4), path
    stride = heatmap_stride(manifest["postprocess"]["blur_sigma"])  # PatchCore chose its blur on val-clean
    for header in headers:
        assert (header["heatmap"]["height"], header["heatmap"]["width"]) == (64 // stride, 160 // stride)
        assert (header["image"]["height"], header["image"]["width"]) == SHAPE
        for region in header["regions"]:
            assert region["x"] >= 0 and region["x"] + region["width"] <= SHAPE[1]
            assert region["y"] >= 0 and region["y"] + region["height"] <= SHAPE[0]
    assert any(h["regions"] for h in headers if "/good/" not in h["path"])
