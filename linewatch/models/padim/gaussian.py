"""Streaming per-position Gaussian fit: running float64 sums, so no training feature is kept in memory.

With `pool` > 0 each position's Gaussian also learns the features of its neighbours within `pool` cells
(a (2 pool + 1)^2 window, clipped at the borders): a part that sits a little elsewhere in a test frame
then still lies inside the Gaussian, and small training sets give each Gaussian more samples.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from linewatch.data.errors import DataError


def window_offsets(radius: int) -> list[tuple[int, int]]:
    """(dy, dx) offsets of a (2 radius + 1)^2 window, row-major."""
    return [(dy, dx) for dy in range(-radius, radius + 1) for dx in range(-radius, radius + 1)]


class GaussianAccumulator:
    """Accumulates sum(x), sum(x x^T) and counts for every feature-map position over batches of (N, C, h, w)."""

    def __init__(self, pool: int = 0) -> None:
        if pool < 0:
            raise ValueError(f"pool must be >= 0, got {pool}")
        self.pool = pool
        self.images = 0
        self.shape: tuple[int, int, int] | None = None
        self._count: torch.Tensor | None = None
        self._sum: torch.Tensor | None = None
        self._outer: torch.Tensor | None = None

    @property
    def count(self) -> int:
        """Training images seen."""
        return self.images

    def update(self, features: np.ndarray) -> None:
        n, c, h, w = features.shape
        if self.shape is None:
            self.shape = (c, h, w)
            self._count = torch.zeros(h * w, dtype=torch.float64)
            self._sum = torch.zeros(h * w, c, dtype=torch.float64)
            self._outer = torch.zeros(h * w, c, c, dtype=torch.float64)
        elif self.shape != (c, h, w):
            raise ValueError(f"feature batch of shape {(c, h, w)} after batches of shape {self.shape}")
        x = torch.from_numpy(np.ascontiguousarray(features)).to(torch.float64)
        r = self.pool
        # Zero padding: a neighbour outside the map adds nothing to the sums; `valid` keeps the counts right.
        padded = F.pad(x, (r, r, r, r)) if r else x
        inside = F.pad(torch.ones(1, 1, h, w, dtype=torch.float64), (r, r, r, r))[0, 0] if r else None
        for dy, dx in window_offsets(r):
            shifted = padded[:, :, r + dy : r + dy + h, r + dx : r + dx + w]
            rows = shifted.reshape(n, c, h * w).permute(2, 0, 1).contiguous()
            self._sum += rows.sum(dim=1)
            self._outer.baddbmm_(rows.transpose(1, 2), rows)
            valid = inside[r + dy : r + dy + h, r + dx : r + dx + w].reshape(-1) if r else 1.0
            self._count += n * valid
        self.images += n

    def mean_and_covariance(self, epsilon: float) -> tuple[torch.Tensor, torch.Tensor]:
        """(P, C) mean and (P, C, C) unbiased covariance + epsilon * I, in float64."""
        if self.images < 2:
            raise DataError(f"a Gaussian needs at least 2 training images, got {self.images}")
        count = self._count[:, None]
        mean = self._sum / count
        cov = (self._outer - count[:, :, None] * mean[:, :, None] * mean[:, None, :]) / (count[:, :, None] - 1)
        cov += epsilon * torch.eye(cov.shape[-1], dtype=torch.float64)
        return mean, cov
