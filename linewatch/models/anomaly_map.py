"""Patch scores -> anomaly maps: bilinear upsampling to the input size, then a Gaussian blur.

Shared by every detector, evaluation and the runtime so maps (and map-derived scores) never drift.
"""

from __future__ import annotations

import cv2
import numpy as np


def blur_kernel_size(sigma: float) -> int:
    """Odd kernel covering +-4 sigma, as scipy/anomalib use."""
    return 2 * int(4.0 * sigma + 0.5) + 1


def anomaly_maps(patch_scores: np.ndarray, size: tuple[int, int], sigma: float = 4.0) -> np.ndarray:
    """(N, h, w) patch scores -> (N, H, W) float32 maps at the model's input size."""
    height, width = size
    out = np.empty((len(patch_scores), height, width), dtype=np.float32)
    ksize = blur_kernel_size(sigma)
    for i, scores in enumerate(patch_scores):
        up = cv2.resize(scores.astype(np.float32), (width, height), interpolation=cv2.INTER_LINEAR)
        out[i] = cv2.GaussianBlur(up, (ksize, ksize), sigma, borderType=cv2.BORDER_REFLECT) if sigma > 0 else up
    return out


def resize_map(anomaly_map: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Bring a map to an image's original (height, width) for pixel metrics and overlays."""
    if anomaly_map.shape == tuple(shape):
        return anomaly_map
    return cv2.resize(anomaly_map, (shape[1], shape[0]), interpolation=cv2.INTER_LINEAR)
