"""The scorer of reconstruction detectors (autoencoder, GANomaly): a residual map from the network, an
image score from it (its mean or the blurred map's maximum) or from another network output."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

IMAGE_SCORES = ("mean", "max")


class ReconstructionScorer:
    """Maps = the network's `residual` output; image score = `mean` residual, `max` of the blurred map, or a
    named per-image network output (GANomaly's `latent_distance`)."""

    def __init__(self, kind: str, image_score: str) -> None:
        self.kind = kind
        self.image_score = image_score

    @property
    def scores_from_maps(self) -> bool:
        return self.image_score == "max"

    def patch_scores(self, outputs: dict[str, np.ndarray]) -> np.ndarray:
        residual = outputs["residual"]
        return np.ascontiguousarray(residual[:, 0], dtype=np.float32)

    def image_scores(self, patch_scores: np.ndarray, maps: np.ndarray, outputs: dict[str, np.ndarray]) -> np.ndarray:
        if self.image_score == "mean":
            return patch_scores.reshape(len(patch_scores), -1).mean(axis=1)
        if self.image_score == "max":
            return maps.reshape(len(maps), -1).max(axis=1)
        return np.asarray(outputs[self.image_score], dtype=np.float32).reshape(len(patch_scores))

    def save(self, directory: Path) -> tuple[dict[str, Any], list[str]]:
        return {"kind": self.kind, "image_score": self.image_score}, []

    @classmethod
    def load(cls, directory: Path, section: dict[str, Any], device: str = "cpu") -> ReconstructionScorer:
        return cls(section["kind"], section["image_score"])
