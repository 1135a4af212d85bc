"""Autoencoder losses and residual maps: squared error (AE-L2) or structural dissimilarity (AE-SSIM)."""

from __future__ import annotations

import torch

from linewatch.models.components.ssim import ssim_map

LOSSES = ("mse", "ssim")
RESIDUALS = {"mse": "l2", "ssim": "ssim"}


def residual_map(x: torch.Tensor, reconstruction: torch.Tensor, kind: str) -> torch.Tensor:
    """(N, 1, H, W): squared error averaged over channels (`l2`) or 1 - SSIM (`ssim`)."""
    if kind == "ssim":
        return 1.0 - ssim_map(x, reconstruction)
    return (x - reconstruction).pow(2).mean(dim=1, keepdim=True)


def reconstruction_loss(x: torch.Tensor, reconstruction: torch.Tensor, kind: str) -> torch.Tensor:
    """Mean squared error, or 1 - mean SSIM; both on [0, 1] images."""
    if kind == "ssim":
        return 1.0 - ssim_map(x, reconstruction).mean()
    return (x - reconstruction).pow(2).mean()
