"""inspect-train and inspect-eval end to end through their CLIs, on generated data."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from linewatch.bundle import read_manifest
from linewatch.data.synthetic import make_synthetic_category
from linewatch.evaluate.cli import main as eval_main
from linewatch.features.preprocess import AUTO_SPREAD, LEGACY_RESIZE_POLICY
from linewatch.inspector import Inspector
from linewatch.train.cli import main as train_main

METRIC_KEYS = {"image_auroc", "image_auprc", "f1", "precision", "recall", "accuracy", "threshold", "pixel_auroc", "pro"}


@pytest.fixture(scope="module")
def category(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_synthetic_category(tmp_path_factory.mktemp("data") / "synthetic", size=96)


@pytest.fixture(scope="module")
def trained(category: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    bundle = tmp_path_factory.mktemp("bundles") / "patchcore"
    result = CliRunner().invoke(train_main, ["--data", str(category), "--out", str(bundle), "--image-size", "96",
                                             "--weights", "default", "--quiet"])
    assert result.exit_code == 0, result.output
    assert "threshold" in result.output and "bundle:" in result.output
    return bundle


def test_train_writes_a_valid_bundle_with_calibration(trained: Path) -> None:
    manifest = read_manifest(trained)
    assert manifest["detector"]["kind"] == "patchcore"
    assert manifest["calibration"]["method"] == "f1" and manifest["calibration"]["val_defective"] > 0
    assert manifest["network"]["params"]["backbone"] == "efficientnet_lite0"
    assert manifest["network"]["pretrained"]["sha256"]
    splits = json.loads((trained / "splits.json").read_text())
    assert splits["seed"] == 0
    bank = np.load(trained / "memory_bank.npy")
    assert bank.shape[1] == manifest["network"]["params"]["out_dims"]


def test_eval_writes_metrics_scores_plots_and_maps(trained: Path, category: Path, tmp_path: Path) -> None:
    out = tmp_path / "report"
    result = CliRunner().invoke(eval_main, ["--bundle", str(trained), "--data", str(category), "--out", str(out),
                                            "--save-maps", "--quiet"])
    assert result.exit_code == 0, result.output
    metrics = json.loads((out / "metrics.json").read_text())
    assert set(metrics) >= METRIC_KEYS
    assert metrics["image_auroc"] > 0.9 and metrics["pixel_auroc"] > 0.8 and metrics["pro"] > 0.5
    assert metrics["threshold"] == read_manifest(trained)["calibration"]["threshold"]
    with open(out / "scores.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert list(rows[0]) == ["path", "label", "score"]
    split = json.loads((trained / "splits.json").read_text())
    assert isinstance(split["test"], list), "splits.json lists each split as a list of relative paths"
    assert sorted(r["path"] for r in rows) == sorted(split["test"])
    for row in rows:
        stored = np.load(out / "maps" / Path(row["path"]).with_suffix(".npy"))
        assert stored.dtype == np.float32 and stored.shape == (96, 96)
    for plot in ("roc.png", "pr.png", "score_histogram.png", "pro.png", "examples.png"):
        assert (out / plot).stat().st_size > 1000 and (out / plot).with_suffix(".json").is_file()
    assert json.loads((out / "roc.json").read_text())["auroc"] == pytest.approx(metrics["image_auroc"])
    assert json.loads((out / "pro.json").read_text())["pro_score"] == pytest.approx(metrics["pro"], abs=1e-6)
    histogram = json.loads((out / "score_histogram.json").read_text())
    assert sum(histogram["good"]) + sum(histogram["defective"]) == len(rows)


def test_eval_split_all_covers_every_test_image(trained: Path, category: Path, tmp_path: Path) -> None:
    result = CliRunner().invoke(eval_main, ["--bundle", str(trained), "--data", str(category),
                                            "--out", str(tmp_path), "--split", "all", "--quiet"])
    assert result.exit_code == 0, result.output
    with open(tmp_path / "scores.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == len(list((category / "test").rglob("*.png")))


def test_eval_without_masks_reports_null_pixel_metrics(trained: Path, category: Path, tmp_path: Path) -> None:
    data = tmp_path / "nomask"
    shutil.copytree(category, data)
    shutil.rmtree(data / "ground_truth")
    result = CliRunner().invoke(eval_main, ["--bundle", str(trained), "--data", str(data), "--out",
                                            str(tmp_path / "r"), "--quiet"])
    assert result.exit_code == 0, result.output
    metrics = json.loads((tmp_path / "r" / "metrics.json").read_text())
    assert metrics["pixel_auroc"] is None and metrics["pro"] is None and metrics["image_auroc"] is not None


def test_train_stops_on_truncated_image_naming_it(category: Path, tmp_path: Path) -> None:
    data = tmp_path / "broken"
    shutil.copytree(category, data)
    victim = sorted((data / "train" / "good").glob("*.png"))[3]
    victim.write_bytes(victim.read_bytes()[:200])
    result = CliRunner().invoke(train_main, ["--data", str(data), "--out", str(tmp_path / "b"), "--weights", "none",
                                             "--image-size", "64", "--quiet"])
    assert result.exit_code != 0
    assert victim.name in result.output


def test_train_refuses_unknown_config_key(category: Path, tmp_path: Path) -> None:
    config = tmp_path / "bad.yaml"
    config.write_text("coreset_ration: 0.1\n")
    result = CliRunner().invoke(train_main, ["--config", str(config), "--data", str(category), "--out", str(tmp_path)])
    assert result.exit_code != 0 and "coreset_ration" in result.output and "bad.yaml" in result.output


def test_eval_refuses_a_non_bundle(category: Path, tmp_path: Path) -> None:
    result = CliRunner().invoke(eval_main, ["--bundle", str(tmp_path), "--data", str(category), "--out",
                                            str(tmp_path / "r")])
    assert result.exit_code != 0 and "not a linewatch bundle" in result.output


def test_eval_refuses_a_bundle_trained_with_another_resize_policy(trained: Path, category: Path,
                                                                  tmp_path: Path) -> None:
    bundle = tmp_path / "old"
    shutil.copytree(trained, bundle)
    manifest = json.loads((bundle / "manifest.json").read_text())
    manifest["preprocess"]["resize"] = "stretch; cv2 INTER_AREA when shrinking, INTER_LINEAR when enlarging"
    (bundle / "manifest.json").write_text(json.dumps(manifest))
    result = CliRunner().invoke(eval_main, ["--bundle", str(bundle), "--data", str(category), "--out",
                                            str(tmp_path / "r")])
    assert result.exit_code != 0 and "resize policy" in result.output and "inspect-train" in result.output


def test_bundles_written_before_grey_first_keep_their_grey_after_resize_order(trained: Path, tmp_path: Path) -> None:
    assert Inspector.from_bundle(trained).preprocessor.grey_first
    bundle = tmp_path / "legacy"
    shutil.copytree(trained, bundle)
    manifest = json.loads((bundle / "manifest.json").read_text())
    manifest["preprocess"]["resize"] = LEGACY_RESIZE_POLICY
    (bundle / "manifest.json").write_text(json.dumps(manifest))
    assert not Inspector.from_bundle(bundle).preprocessor.grey_first


def test_eval_reports_mask_metrics_and_defect_types_for_patchcore(trained: Path, category: Path,
                                                                   tmp_path: Path) -> None:
    masks = read_manifest(trained)["masks"]
    assert masks["method"] == "f1" and masks["classifier"]["types"] == ["hole", "scratch", "spot"]
    assert np.load(trained / masks["classifier"]["file"]).shape[1:] == (48, 48) == tuple(masks["classifier"]["grid"])
    result = CliRunner().invoke(eval_main, ["--bundle", str(trained), "--data", str(category), "--out",
                                            str(tmp_path), "--quiet"])
    assert result.exit_code == 0, result.output
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["pixel_threshold"] == masks["pixel_threshold"]
    mask_metrics, classes = metrics["mask_metrics"], metrics["defect_types"]
    assert {"ssim", "iou", "dice", "pixel_accuracy", "combined", "per_defect"} <= set(mask_metrics)
    assert mask_metrics["iou"] > 0.1 and set(mask_metrics["per_defect"]) == {"good", "hole", "scratch", "spot"}
    assert classes["labels"] == ["good", "hole", "scratch", "spot"] and classes["accuracy"] > 0.5
    assert classes["binary_accuracy"] == pytest.approx(metrics["accuracy"])  # the verdict decides good vs defect
    assert set(classes["per_class"]["spot"]) == {"precision", "recall"} and (tmp_path / "confusion.png").is_file()


def test_eval_of_a_bundle_without_mask_calibration_reports_nulls(trained: Path, category: Path,
                                                                 tmp_path: Path) -> None:
    bundle = tmp_path / "older"
    shutil.copytree(trained, bundle)
    manifest = json.loads((bundle / "manifest.json").read_text())
    del manifest["masks"]
    (bundle / "manifest.json").write_text(json.dumps(manifest))
    result = CliRunner().invoke(eval_main, ["--bundle", str(bundle), "--data", str(category), "--out",
                                            str(tmp_path / "r"), "--quiet"])
    assert result.exit_code == 0, result.output
    metrics = json.loads((tmp_path / "r" / "metrics.json").read_text())
    assert metrics["pixel_threshold"] is None and metrics["mask_metrics"] is None and metrics["defect_types"] is None


@pytest.mark.parametrize("val_goods", [True, False])
def test_val_goods_join_the_memory_but_never_calibrate_a_model_that_remembers_them(
        val_goods: bool, category: Path, tmp_path: Path) -> None:
    """With every patch kept (coreset 1.0), an image in the memory scores exactly 0; so if val-clean's goods
    were scored by the final model, the lowest calibration score would be 0. The cross-fitted calibration
    scores each with a model fitted without it."""
    bundle = tmp_path / "bundle"
    flag = "--val-goods" if val_goods else "--no-val-goods"
    result = CliRunner().invoke(train_main, ["--data", str(category), "--out", str(bundle), "--image-size", "64",
                                             "--weights", "none", "--coreset-ratio", "1.0", flag, "--quiet"])
    assert result.exit_code == 0, result.output
    manifest = read_manifest(bundle)
    splits = json.loads((bundle / "splits.json").read_text())
    goods = [p for p in splits["val"] if "/good/" in p]
    assert goods
    training = manifest["training"]
    assert training["val_goods_in_memory"] == (len(goods) if val_goods else 0)
    assert training["memory_images"] == len(splits["train"]) + training["val_goods_in_memory"]
    rows_per_image = int(np.prod(manifest["network"]["params"]["feature_size"]))
    assert np.load(bundle / "memory_bank.npy").shape[0] == training["memory_images"] * rows_per_image

    inspector = Inspector.from_bundle(bundle)
    from linewatch.data import read_image

    inputs = np.stack([inspector.preprocessor(read_image(category / p)) for p in goods])
    scores = inspector.score(inspector.reference_engine()(inputs)).scores
    low = manifest["calibration"]["low"]  # the lowest val-clean score in calibration
    if val_goods:
        assert np.all(scores < 0.05 * low)  # the premise: the final model remembers them (float error from 0)
    else:
        assert np.all(scores >= low)
    assert low > 0.05 * manifest["calibration"]["high"]  # no calibration score came from a remembering model

    # inspect-eval's threshold study shows val-clean as calibration scored it (held-out detectors for its goods)
    report = tmp_path / "report"
    result = CliRunner().invoke(eval_main, ["--bundle", str(bundle), "--data", str(category), "--out", str(report),
                                            "--quiet"])
    assert result.exit_code == 0, result.output
    histogram = json.loads((report / "val_score_histogram.json").read_text())
    assert histogram["bins"][0] == pytest.approx(low, rel=1e-5)


def test_auto_intensity_standardises_a_line_whose_lighting_varies(trained: Path, tmp_path: Path) -> None:
    """The default `--intensity auto`: the synthetic line's steady lighting stays as it is; the same line with
    every other training image at half the brightness is standardised. The manifest says why."""
    import cv2

    steady = read_manifest(trained)
    assert steady["training"]["options"]["intensity"] == "auto" and steady["preprocess"]["intensity"] == "none"
    assert steady["training"]["intensity_auto"]["lighting_spread"] < AUTO_SPREAD
    varied = make_synthetic_category(tmp_path / "varied", size=64, n_train=20, n_test_good=4, n_test_defect=4)
    for path in sorted((varied / "train" / "good").iterdir())[::2]:
        cv2.imwrite(str(path), (cv2.imread(str(path)) * 0.5).astype(np.uint8))
    bundle = tmp_path / "bundle"
    result = CliRunner().invoke(train_main, ["--data", str(varied), "--out", str(bundle), "--image-size", "64",
                                             "--weights", "none", "--quiet"])
    assert result.exit_code == 0, result.output
    manifest = read_manifest(bundle)
    auto = manifest["training"]["intensity_auto"]
    assert auto["lighting_spread"] > AUTO_SPREAD and auto["chosen"] == "standardize" and auto["images"] == 16
    assert manifest["preprocess"]["intensity"] == "standardize"
    assert Inspector.from_bundle(bundle).preprocessor.intensity == "standardize"


def test_standardized_intensity_is_recorded_and_applied_wherever_the_bundle_is_loaded(category: Path,
                                                                                      tmp_path: Path) -> None:
    """`--intensity standardize`: the manifest records it, every loader's preprocessing applies it, and a
    frame under dimmer lighting scores as it did (a plain bundle's score moves)."""
    from linewatch.data import read_image

    scores = {}
    for intensity in ("standardize", "none"):
        bundle = tmp_path / intensity
        result = CliRunner().invoke(train_main, ["--data", str(category), "--out", str(bundle), "--image-size", "64",
                                                 "--weights", "default", "--intensity", intensity, "--quiet"])
        assert result.exit_code == 0, result.output
        assert read_manifest(bundle)["preprocess"]["intensity"] == intensity
        inspector = Inspector.from_bundle(bundle)
        assert inspector.preprocessor.intensity == intensity
        image = read_image(sorted((category / "test" / "good").iterdir())[0])
        dimmer = np.clip(image.astype(np.float32) * 0.5 + 60, 0, 255).round().astype(np.uint8)  # half the contrast
        inputs = np.stack([inspector.preprocessor(image), inspector.preprocessor(dimmer)])
        scores[intensity] = inspector.score(inspector.reference_engine()(inputs)).scores
    moved = {intensity: abs(pair[1] - pair[0]) / pair[0] for intensity, pair in scores.items()}
    assert moved["standardize"] < 0.02 and moved["none"] > 0.05 and moved["standardize"] < moved["none"] / 5
