"""Image preprocessing shared by training, evaluation, export checks and the runtime.

Frames arrive as RGB uint8 (see `linewatch.data.io`); they are resized to the model's size and laid
out as float32 CHW in 0..255. Normalization happens inside `FeatureExtractor` (and so inside the
exported graph), so the runtime never needs to know a backbone's mean/std.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np

RESIZE_POLICY = "stretch; cv2 INTER_AREA when shrinking, INTER_LINEAR when enlarging"


@dataclass(frozen=True)
class Preprocessor:
    """Resize to (height, width) and convert to float32 CHW."""

    size: tuple[int, int]

    def __call__(self, image: np.ndarray) -> np.ndarray:
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise ValueError(f"expected an HxWx3 uint8 RGB image, got shape {image.shape} {image.dtype}")
        height, width = self.size
        shrinking = image.shape[0] >= height and image.shape[1] >= width
        resized = cv2.resize(image, (width, height), interpolation=cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR)
        return np.ascontiguousarray(resized.transpose(2, 0, 1), dtype=np.float32)

    def batch(self, images: Sequence[np.ndarray]) -> np.ndarray:
        return np.stack([self(image) for image in images])
