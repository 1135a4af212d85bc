"""What every feature-memory detector offers: patch scores from features, image scores, bundle I/O."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol

import numpy as np


class Detector(Protocol):
    kind: str

    def patch_scores(self, features: np.ndarray) -> np.ndarray:
        """(N, C, h, w) features -> (N, h, w) float32 patch anomaly scores."""

    def image_scores(self, patch_scores: np.ndarray, maps: np.ndarray, features: np.ndarray) -> np.ndarray:
        """(N,) raw image scores from patch scores, the post-processed maps and the features."""

    def save(self, directory: Path) -> tuple[dict[str, Any], list[str]]:
        """Write data files; return the manifest's detector section and the file names written."""
