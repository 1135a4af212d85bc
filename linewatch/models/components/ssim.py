"""SSIM as torch ops (Gaussian window, reflect padding): a loss for AE-SSIM, a residual map, and an epoch metric.

Plain convolutions and arithmetic, so it exports to ONNX inside a network. Wang et al. 2004 constants;
Bergmann et al. 2019 (AE-SSIM) use the 11 x 11 window with sigma 1.5 on [0, 1] images, as here.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

WINDOW = 11
SIGMA = 1.5


def gaussian_window(size: int = WINDOW, sigma: float = SIGMA) -> torch.Tensor:
    coords = torch.arange(size, dtype=torch.float32) - (size - 1) / 2
    g = torch.exp(-(coords**2) / (2 * sigma**2))
    g = g / g.sum()
    return (g[:, None] * g[None, :])[None, None]


def ssim_map(x: torch.Tensor, y: torch.Tensor, window: torch.Tensor | None = None,
             data_range: float = 1.0) -> torch.Tensor:
    """Per-pixel SSIM of two (N, C, H, W) batches, averaged over channels: (N, 1, H, W)."""
    window = gaussian_window().to(x) if window is None else window.to(x)
    channels, pad = x.shape[1], window.shape[-1] // 2
    kernel = window.expand(channels, 1, *window.shape[-2:])

    def blur(t: torch.Tensor) -> torch.Tensor:
        return F.conv2d(F.pad(t, (pad, pad, pad, pad), mode="reflect"), kernel, groups=channels)

    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    mu_x, mu_y = blur(x), blur(y)
    var_x = blur(x * x) - mu_x * mu_x
    var_y = blur(y * y) - mu_y * mu_y
    cov = blur(x * y) - mu_x * mu_y
    value = ((2 * mu_x * mu_y + c1) * (2 * cov + c2)) / ((mu_x * mu_x + mu_y * mu_y + c1) * (var_x + var_y + c2))
    return value.mean(dim=1, keepdim=True)
