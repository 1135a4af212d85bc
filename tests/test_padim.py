"""PaDiM: Gaussian fit against numpy, streaming accumulation, Mahalanobis against scipy, bundle I/O, end to end."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from scipy.spatial.distance import mahalanobis

from linewatch.bundle import read_manifest
from linewatch.data.synthetic import make_synthetic_category
from linewatch.device import torch_device
from linewatch.evaluate.cli import main as eval_main
from linewatch.models.padim.gaussian import GaussianAccumulator
from linewatch.models.padim.model import Padim, PadimParams
from linewatch.models.registry import load_detector
from linewatch.train.cli import main as train_main


def _features(n: int = 12, c: int = 5, h: int = 3, w: int = 4, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    mixing = rng.normal(size=(c, c))
    raw = rng.normal(size=(n, h, w, c)) @ mixing + rng.normal(size=(h, w, c)) * 3
    return raw.transpose(0, 3, 1, 2).astype(np.float32)


def test_gaussian_fit_matches_numpy_mean_and_covariance() -> None:
    feats = _features()
    accumulator = GaussianAccumulator()
    accumulator.update(feats)
    mean, cov = accumulator.mean_and_covariance(epsilon=0.01)
    n, c, h, w = feats.shape
    per_position = feats.astype(np.float64).reshape(n, c, h * w)
    for p in range(h * w):
        samples = per_position[:, :, p]
        assert np.allclose(mean[p].numpy(), samples.mean(axis=0), atol=1e-10)
        assert np.allclose(cov[p].numpy(), np.cov(samples, rowvar=False) + 0.01 * np.eye(c), atol=1e-9)


def test_streaming_accumulation_equals_all_at_once() -> None:
    feats = _features(n=17)
    whole, streamed = GaussianAccumulator(), GaussianAccumulator()
    whole.update(feats)
    for start, stop in [(0, 1), (1, 8), (8, 17)]:
        streamed.update(feats[start:stop])
    assert streamed.count == whole.count == 17
    for a, b in zip(whole.mean_and_covariance(0.01), streamed.mean_and_covariance(0.01), strict=True):
        assert torch.allclose(a, b, atol=1e-10)


def test_accumulator_rejects_mismatched_batches_and_too_few_images() -> None:
    accumulator = GaussianAccumulator()
    accumulator.update(_features(n=1))
    with pytest.raises(ValueError, match="at least 2"):
        accumulator.mean_and_covariance(0.01)
    with pytest.raises(ValueError, match="shape"):
        accumulator.update(_features(n=2, c=6))


def test_patch_scores_match_scipy_mahalanobis() -> None:
    train, test = _features(n=40), _features(n=3, seed=1)
    model = Padim.fit(iter([train[:20], train[20:]]), PadimParams(epsilon=0.01))
    scores = model.patch_scores({"features": test})
    n, c, h, w = train.shape
    per_position = train.astype(np.float64).reshape(n, c, h * w)
    for p in range(h * w):
        samples = per_position[:, :, p]
        inv = np.linalg.inv(np.cov(samples, rowvar=False) + 0.01 * np.eye(c))
        for i in range(len(test)):
            expected = mahalanobis(test[i, :, p // w, p % w], samples.mean(axis=0), inv)
            assert scores[i, p // w, p % w] == pytest.approx(expected, rel=1e-4)


def test_image_score_is_the_map_maximum_and_shape_mismatch_is_refused() -> None:
    model = Padim.fit(iter([_features(n=10)]), PadimParams())
    maps = np.random.default_rng(0).random((2, 8, 8)).astype(np.float32)
    assert np.array_equal(model.image_scores(np.zeros((2, 3, 4)), maps, {}), maps.reshape(2, -1).max(1))
    with pytest.raises(ValueError, match="do not match"):
        model.patch_scores({"features": _features(n=1, h=4)})


def test_bundle_round_trip_gives_identical_scores(tmp_path: Path) -> None:
    model = Padim.fit(iter([_features(n=30)]), PadimParams(epsilon=0.05))
    section, files = model.save(tmp_path)
    assert files == ["padim_gaussian.safetensors"] and section["kind"] == "padim"
    assert section["positions"] == 12 and section["dims"] == 5 and section["train_images"] == 30
    loaded = load_detector(tmp_path, json.loads(json.dumps(section)))
    assert isinstance(loaded, Padim) and loaded.params.epsilon == 0.05
    test = _features(n=4, seed=3)
    assert np.array_equal(loaded.patch_scores({"features": test}), model.patch_scores({"features": test}))


def test_cuda_without_gpu_is_refused() -> None:
    if torch.cuda.is_available():
        pytest.skip("a GPU is present; this checks the CPU-only refusal")
    with pytest.raises(RuntimeError, match="GPU"):
        torch_device("cuda")
    assert torch_device("auto").type == "cpu"
    with pytest.raises(ValueError, match="unknown device"):
        torch_device("gpu")


def test_train_and_eval_padim_on_synthetic_category(tmp_path: Path) -> None:
    category = make_synthetic_category(tmp_path / "synthetic", size=96)
    bundle = tmp_path / "padim"
    result = CliRunner().invoke(train_main, ["--data", str(category), "--out", str(bundle), "--model", "padim",
                                             "--image-size", "96", "--padim-dims", "40", "--quiet"])
    assert result.exit_code == 0, result.output
    assert "peak memory" in result.output and "bundle" in result.output
    manifest = read_manifest(bundle)
    assert manifest["detector"]["kind"] == "padim" and manifest["detector"]["dims"] == 40
    # The measured defaults: layers 2+3 (stride 8: 12 x 12 positions at 96 px), aligned to a reference view.
    assert manifest["network"]["params"]["layers"] == ["layer2", "layer3"]
    assert manifest["detector"]["positions"] == 12 * 12
    assert manifest["preprocess"]["align"]["method"] == "lk-affine"
    out = tmp_path / "report"
    result = CliRunner().invoke(eval_main, ["--bundle", str(bundle), "--data", str(category), "--out", str(out),
                                            "--save-maps", "--quiet"])
    assert result.exit_code == 0, result.output
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["image_auroc"] > 0.85 and metrics["pixel_auroc"] > 0.8
    assert len(list((out / "maps").rglob("*.npy"))) == len((out / "scores.csv").read_text().splitlines()) - 1
