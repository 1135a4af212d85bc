"""--photometric-copies K: seeded photometric copies of the training images join a feature memory."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from linewatch.bundle import read_manifest
from linewatch.data import Sample, read_image
from linewatch.data.augment import AUGMENT_RANGES, augment_params, perturbed
from linewatch.data.synthetic import make_synthetic_category
from linewatch.evaluate.cli import main as eval_main
from linewatch.inspector import Inspector
from linewatch.train.cli import main as train_main


@pytest.fixture(scope="module")
def category(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_synthetic_category(tmp_path_factory.mktemp("data") / "line", size=64, n_train=16, n_test_good=4,
                                   n_test_defect=4)


def _train(category: Path, out: Path, *extra: str) -> Path:
    result = CliRunner().invoke(train_main, ["--data", str(category), "--out", str(out), "--image-size", "64",
                                             "--weights", "default", "--quiet", *extra])
    assert result.exit_code == 0, result.output
    return out


def test_copies_are_seeded_by_copy_seed_and_path_and_stay_in_their_ranges() -> None:
    image = np.random.default_rng(0).integers(0, 256, (48, 64, 3), dtype=np.uint8)
    sample = Sample(Path("train/good/000.png"), "train/good/000.png", 0, "good")
    other = Sample(Path("train/good/001.png"), "train/good/001.png", 0, "good")
    first = perturbed(image, sample, 1, 0)
    assert first.shape == image.shape and first.dtype == np.uint8
    assert np.array_equal(first, perturbed(image, sample, 1, 0))
    for changed in (perturbed(image, sample, 2, 0), perturbed(image, sample, 1, 1), perturbed(image, other, 1, 0)):
        assert not np.array_equal(first, changed)
    for copy in range(1, 40):
        params = augment_params(sample, copy, 0)
        for key in ("brightness", "contrast", "saturation", "noise_sigma"):
            low, high = getattr(AUGMENT_RANGES, key)
            assert low <= params[key] <= high
        assert params["blur_kernel"] in (1, 3, 5) and params["rotation_deg"] != 0  # drawn, never applied
    assert np.array_equal(perturbed(image, sample, 1, 0), perturbed(image.copy(), sample, 1, 0))


def test_augmented_memory_is_recorded_and_calibration_refits_it(category: Path, tmp_path: Path) -> None:
    """Every patch kept: the memory holds train x (1 + K) + val goods images. The evaluation's threshold study
    refits the held-out detectors with the same copies, or its lowest val score would differ from training's."""
    bundle = _train(category, tmp_path / "aug", "--photometric-copies", "2", "--coreset-ratio", "1.0")
    manifest = read_manifest(bundle)
    splits = json.loads((bundle / "splits.json").read_text())
    training = manifest["training"]
    assert training["options"]["photometric_copies"] == 2 and training["photometric_copies"] == 2 * len(splits["train"])
    assert training["memory_images"] == 3 * len(splits["train"]) + training["val_goods_in_memory"]
    rows_per_image = int(np.prod(manifest["network"]["params"]["feature_size"]))
    assert np.load(bundle / "memory_bank.npy").shape[0] == training["memory_images"] * rows_per_image

    report = tmp_path / "report"
    result = CliRunner().invoke(eval_main, ["--bundle", str(bundle), "--data", str(category), "--out", str(report),
                                            "--quiet"])
    assert result.exit_code == 0, result.output
    histogram = json.loads((report / "val_score_histogram.json").read_text())
    assert histogram["bins"][0] == pytest.approx(manifest["calibration"]["low"], rel=1e-5)


def test_a_noisier_camera_moves_an_augmented_model_less(category: Path, tmp_path: Path) -> None:
    """A good frame with sensor noise (sigma 4 % of the range) raises a plain model's score far more than the
    score of a model that saw noisy copies in training."""
    rise = {}
    for copies in ("0", "2"):
        inspector = Inspector.from_bundle(_train(category, tmp_path / copies, "--photometric-copies", copies))
        image = read_image(sorted((category / "test" / "good").iterdir())[0])
        noise = np.random.default_rng(1).normal(0, 0.04 * 255, image.shape)
        noisy = np.clip(image + noise, 0, 255).round().astype(np.uint8)
        inputs = np.stack([inspector.preprocessor(image), inspector.preprocessor(noisy)])
        clean, noisy_score = inspector.score(inspector.reference_engine()(inputs)).scores
        rise[copies] = noisy_score / clean
    assert rise["0"] > 1.25 and rise["2"] - 1 < (rise["0"] - 1) / 3  # measured: +37 % vs +4 %
