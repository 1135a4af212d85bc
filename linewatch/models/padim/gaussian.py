"""Streaming per-position Gaussian fit: running float64 sums, so no training feature is kept in memory."""

from __future__ import annotations

import numpy as np
import torch

from linewatch.data.errors import DataError


class GaussianAccumulator:
    """Accumulates sum(x) and sum(x x^T) for every feature-map position over batches of (N, C, h, w)."""

    def __init__(self) -> None:
        self.count = 0
        self.shape: tuple[int, int, int] | None = None
        self._sum: torch.Tensor | None = None
        self._outer: torch.Tensor | None = None

    def update(self, features: np.ndarray) -> None:
        n, c, h, w = features.shape
        if self.shape is None:
            self.shape = (c, h, w)
            self._sum = torch.zeros(h * w, c, dtype=torch.float64)
            self._outer = torch.zeros(h * w, c, c, dtype=torch.float64)
        elif self.shape != (c, h, w):
            raise ValueError(f"feature batch of shape {(c, h, w)} after batches of shape {self.shape}")
        x = torch.from_numpy(np.ascontiguousarray(features)).to(torch.float64).reshape(n, c, h * w).permute(2, 0, 1)
        self._sum += x.sum(dim=1)
        self._outer.baddbmm_(x.transpose(1, 2), x)
        self.count += n

    def mean_and_covariance(self, epsilon: float) -> tuple[torch.Tensor, torch.Tensor]:
        """(P, C) mean and (P, C, C) unbiased covariance + epsilon * I, in float64."""
        if self.count < 2:
            raise DataError(f"a Gaussian needs at least 2 training images, got {self.count}")
        mean = self._sum / self.count
        cov = (self._outer - self.count * mean[:, :, None] * mean[:, None, :]) / (self.count - 1)
        cov += epsilon * torch.eye(cov.shape[-1], dtype=torch.float64)
        return mean, cov
