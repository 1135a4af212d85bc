"""What every detector offers, and what fitting one hands back to the training pipeline.

A detector is two parts: its *network* (an `nn.Module` from preprocessed pixels to named outputs: a
feature extractor, an autoencoder, ...; the part that is exported and run by an engine) and its
*scorer* (this protocol: named outputs -> patch scores -> image scores). The scorer never builds a
PyTorch model, so the runtime can score ONNX or TensorRT outputs without one.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple, Protocol

import numpy as np

if TYPE_CHECKING:
    from linewatch.data import Splits
    from linewatch.progress import Bars


class PatchScores(NamedTuple):
    """Two readings of one patch-score pass, for a detector whose map and image score want different
    statistics (PatchCore: the map averages more neighbours than the image score's nearest one)."""

    map: np.ndarray  # (N, h, w): upsampled and blurred into the anomaly map
    image: np.ndarray  # (N, h, w): what `image_scores` receives


class Detector(Protocol):
    kind: str
    # The image score is read off the blurred anomaly map (PaDiM, a reconstruction scored by its map's maximum), so
    # computing the map is scoring, not post-processing (the runtime's stage times follow this).
    scores_from_maps: bool

    def patch_scores(self, outputs: dict[str, np.ndarray]) -> np.ndarray | PatchScores:
        """Named network outputs -> (N, h, w) float32 anomaly scores on any grid (upsampled and blurred later),
        or `PatchScores` when the map and the image score read different ones."""

    def image_scores(self, patch_scores: np.ndarray, maps: np.ndarray, outputs: dict[str, np.ndarray]) -> np.ndarray:
        """(N,) raw image scores from the patch scores, the post-processed maps and the network outputs."""

    def save(self, directory: Path) -> tuple[dict[str, Any], list[str]]:
        """Write data files; return the manifest's detector section and the file names written."""


@dataclass
class FitContext:
    """Everything a detector's fit needs: resolved options, the seeded splits, where to write, progress."""

    options: dict[str, Any]
    splits: Splits
    out: Path
    bars: Bars


@dataclass
class Fitted:
    """A fitted detector: its network (to save and export), the network's manifest section and its scorer."""

    network: Any
    network_section: dict[str, Any]
    detector: Detector
    history: list[dict[str, Any]] | None = None
    aligner: Any = None  # features.align.Aligner when frames are aligned to a reference view (--align lk, ecc, ...)
    intensity: str = "none"  # the Preprocessor's intensity handling the detector was fitted with (--intensity)
    training: dict[str, Any] = field(default_factory=dict)  # extra facts for the manifest's training section
    # Val-clean samples the final detector has seen, each group with a detector that has not: calibration
    # scores them with it (a detector whose memory holds val-clean's goods, `val_goods`).
    calibration: list[tuple[list[Any], Detector]] = field(default_factory=list)
