"""Which stage a detector's work is timed under: scoring is everything its image score needs."""

from __future__ import annotations

import numpy as np
import pytest

from linewatch.models.components.reconstruction import ReconstructionScorer
from linewatch.models.padim.model import Padim
from linewatch.models.patchcore.model import PatchCore
from linewatch.scoring import score_outputs


@pytest.mark.parametrize(("image_score", "from_maps"), [("max", True), ("mean", False)])
def test_the_map_is_scoring_when_the_image_score_is_read_off_it(image_score: str, from_maps: bool) -> None:
    """A reconstruction scored by its blurred map's maximum needs the map for its score: the map's time is
    `score`, and `maps` (post-processing) is 0; scored by the mean residual, the map is post-processing."""
    scorer = ReconstructionScorer("autoencoder", image_score)
    residual = np.random.default_rng(0).random((2, 1, 96, 96)).astype(np.float32)
    timings: dict[str, float] = {}
    prediction = score_outputs(scorer, {"residual": residual}, (96, 96), 4.0, timings)
    assert scorer.scores_from_maps is from_maps and prediction.maps.shape == (2, 96, 96)
    assert timings["score"] > 0 and (timings["maps"] == 0) is from_maps
    expected = prediction.maps.reshape(2, -1).max(axis=1) if from_maps else residual.reshape(2, -1).mean(axis=1)
    np.testing.assert_allclose(prediction.scores, expected, rtol=1e-6)


def test_padim_scores_from_its_map_and_patchcore_from_its_patches() -> None:
    assert Padim.scores_from_maps and not PatchCore.scores_from_maps
