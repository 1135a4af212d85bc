"""PaDiM position tolerance: neighbourhood-pooled Gaussians and min-over-window scoring against brute force."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from linewatch.models.padim.gaussian import GaussianAccumulator, window_offsets
from linewatch.models.padim.model import Padim, PadimParams
from linewatch.models.registry import load_detector


def _features(n: int = 30, c: int = 4, h: int = 5, w: int = 6, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    raw = rng.normal(size=(n, h, w, c)) @ rng.normal(size=(c, c)) + rng.normal(size=(h, w, c)) * 3
    return raw.transpose(0, 3, 1, 2).astype(np.float32)


def _neighbours(feats: np.ndarray, y: int, x: int, radius: int) -> np.ndarray:
    """Every training feature inside the window around (y, x), clipped at the borders."""
    h, w = feats.shape[2:]
    rows = [feats[:, :, y + dy, x + dx] for dy, dx in window_offsets(radius) if 0 <= y + dy < h and 0 <= x + dx < w]
    return np.concatenate(rows).astype(np.float64)


def test_pooled_gaussian_equals_numpy_over_the_clipped_window() -> None:
    feats = _features()
    accumulator = GaussianAccumulator(pool=1)
    accumulator.update(feats[:11])
    accumulator.update(feats[11:])
    mean, cov = accumulator.mean_and_covariance(0.01)
    h, w = feats.shape[2:]
    for y in range(h):
        for x in range(w):
            samples = _neighbours(feats, y, x, 1)
            assert len(samples) == 30 * (3 - (y in (0, h - 1))) * (3 - (x in (0, w - 1)))
            assert np.allclose(mean[y * w + x].numpy(), samples.mean(axis=0), atol=1e-9)
            assert np.allclose(cov[y * w + x].numpy(), np.cov(samples, rowvar=False) + 0.01 * np.eye(4), atol=1e-8)
    assert accumulator.count == 30


@pytest.mark.parametrize("radius", [1, 2])
def test_window_scores_are_the_min_over_neighbouring_gaussians(radius: int) -> None:
    train, test = _features(n=40), _features(n=3, seed=1)
    plain = Padim.fit(iter([train]), PadimParams())
    tolerant = Padim(plain.mean.numpy(), plain.inv_cov.numpy(), plain.feature_shape, PadimParams(radius=radius), 40)
    scores = tolerant.patch_scores({"features": test})
    c, h, w = plain.feature_shape
    mean, inv = plain.mean.numpy().astype(np.float64), plain.inv_cov.numpy().astype(np.float64)
    for i in range(len(test)):
        for y in range(h):
            for x in range(w):
                v = test[i, :, y, x].astype(np.float64)
                candidates = [(y + dy) * w + x + dx for dy, dx in window_offsets(radius)
                              if 0 <= y + dy < h and 0 <= x + dx < w]
                expected = min(np.sqrt(max(0.0, (v - mean[q]) @ inv[q] @ (v - mean[q]))) for q in candidates)
                assert scores[i, y, x] == pytest.approx(expected, rel=1e-4, abs=1e-5)
    assert (scores <= plain.patch_scores({"features": test}) + 1e-5).all()


def test_tolerance_lowers_the_scores_of_a_shifted_good_part_more_than_of_a_defect() -> None:
    """Good parts sit one cell left or right of each other: a shifted part stays normal, a new pattern does not."""
    rng = np.random.default_rng(0)
    h, w, c = 8, 8, 3
    part = np.zeros((c, h, w + 2), np.float32)
    part[:, 2:6, 3:7] = rng.normal(3, 1, (c, 4, 4))

    def view(shift: int) -> np.ndarray:
        return part[:, :, 1 + shift : 1 + shift + w] + rng.normal(0, 0.1, (c, h, w)).astype(np.float32)

    train = np.stack([view(int(s)) for s in rng.integers(-1, 1, 60)])  # shifts -1 and 0 only
    shifted, defect = view(1)[None], view(0)[None].copy()
    defect[0, :, 7, 0] += 4.0  # something where no part ever was
    plain = Padim.fit(iter([train]), PadimParams(epsilon=0.01))
    worst = plain.patch_scores({"features": shifted}).max()
    for tolerant in (Padim.fit(iter([train]), PadimParams(pool=1)), Padim.fit(iter([train]), PadimParams(radius=1))):
        tolerated = tolerant.patch_scores({"features": shifted}).max()
        assert tolerated < worst / 3
        assert tolerant.patch_scores({"features": defect}).max() > 3 * tolerated


def test_pool_and_radius_round_trip_through_the_bundle_section(tmp_path: Path) -> None:
    model = Padim.fit(iter([_features()]), PadimParams(pool=1, radius=1))
    section, _ = model.save(tmp_path)
    assert section["pool"] == 1 and section["radius"] == 1
    loaded = load_detector(tmp_path, json.loads(json.dumps(section)))
    assert loaded.params == PadimParams(pool=1, radius=1)
    test = _features(n=2, seed=5)
    assert np.array_equal(loaded.patch_scores({"features": test}), model.patch_scores({"features": test}))
    del section["pool"], section["radius"]  # bundles written before position tolerance existed
    assert load_detector(tmp_path, section).params == PadimParams()


def test_negative_tolerance_is_refused() -> None:
    with pytest.raises(ValueError, match="pool and radius"):
        PadimParams(radius=-1)
    with pytest.raises(ValueError, match="pool"):
        GaussianAccumulator(pool=-1)
