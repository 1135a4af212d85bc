"""SSIM in numpy/OpenCV for scorers and metrics that run without torch (the runtime, mask metrics).

The same definition as the torch version in `models/components/ssim.py` (Gaussian 11 x 11 window, sigma
1.5, reflect padding, Wang et al. 2004 constants), so a map computed here equals one computed in a network.
"""

from __future__ import annotations

import cv2
import numpy as np

WINDOW = 11
SIGMA = 1.5


MAX_CHANNELS = 128  # what OpenCV 5 filters in one call


def blur(x: np.ndarray) -> np.ndarray:
    """The SSIM window (Gaussian 11 x 11, sigma 1.5, reflect padding) over an (H, W) image or each channel of
    an (H, W, K) stack, any K (OpenCV filters at most 128 channels at once, so larger stacks go in chunks)."""
    if x.ndim == 3 and x.shape[2] > MAX_CHANNELS:
        return np.concatenate([blur(x[:, :, k : k + MAX_CHANNELS]) for k in range(0, x.shape[2], MAX_CHANNELS)],
                              axis=2)
    return cv2.GaussianBlur(x, (WINDOW, WINDOW), SIGMA, borderType=cv2.BORDER_REFLECT_101).reshape(x.shape)


def moments(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Local mean and variance of an (H, W) float32 image, or of each channel of an (H, W, K) stack."""
    mu = blur(x)
    return mu, blur(x * x) - mu * mu


def from_moments(mu_a: np.ndarray, var_a: np.ndarray, mu_b: np.ndarray, var_b: np.ndarray, cov: np.ndarray,
                 data_range: float = 1.0) -> np.ndarray:
    """The SSIM map from local means, variances and covariance (Wang et al. 2004 constants)."""
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    return ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / ((mu_a * mu_a + mu_b * mu_b + c1) * (var_a + var_b + c2))


def ssim_map(a: np.ndarray, b: np.ndarray, data_range: float = 1.0) -> np.ndarray:
    """Per-pixel SSIM of two (H, W) or (C, H, W) float images; channels are averaged: (H, W) float32."""
    a = np.asarray(a, dtype=np.float32)
    b = np.asarray(b, dtype=np.float32)
    if a.shape != b.shape:
        raise ValueError(f"SSIM needs equal shapes, got {a.shape} and {b.shape}")
    if a.ndim == 3:
        return np.mean([ssim_map(x, y, data_range) for x, y in zip(a, b, strict=True)], axis=0).astype(np.float32)
    (mu_a, var_a), (mu_b, var_b) = moments(a), moments(b)
    return from_moments(mu_a, var_a, mu_b, var_b, blur(a * b) - mu_a * mu_b, data_range)


def ssim(a: np.ndarray, b: np.ndarray, data_range: float = 1.0) -> float:
    """Mean SSIM of two images (1.0 for identical images)."""
    return float(ssim_map(a, b, data_range).mean())
