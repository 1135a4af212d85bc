"""How good the generator is, per epoch: what the training plot, the sample grids and the GIF show.

- every epoch: fixed-noise samples against their nearest real training images (mean absolute difference,
  SSIM and the variance of the absolute difference);
- every saved epoch: the Fréchet distance between the pooled-feature statistics of generated and real good
  images (FID's formula on Lite0 `layer3` features), the samples' feature diversity relative to the real
  images' (mean pairwise distance of the same features) with a warning when it collapses, and a grid of
  fixed-noise samples.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from linewatch.models.components.ssim import ssim_map

log = logging.getLogger(__name__)
SAMPLES = 64  # fixed-noise samples for the per-epoch curves
FID_SAMPLES = 256  # generated images per Fréchet distance (default of --fid-samples)
GRID = 32  # samples in the saved grid
TILE = 96  # grid tile height in pixels
COLLAPSE = 0.25  # diversity below this fraction of the real images' counts as collapsed
SAMPLES_DIR = "samples"
SAMPLES_GIF = "samples.gif"


def downsampled(x: torch.Tensor, cells: int = 32) -> torch.Tensor:
    """(N, C, H, W) -> (N, D) pixels area-averaged to at most `cells` per side, for nearest-image searches."""
    size = [min(cells, side) for side in x.shape[-2:]]
    return F.adaptive_avg_pool2d(x.float(), size).flatten(1)


def nearest(queries: torch.Tensor, candidates: torch.Tensor, batch: int = 256) -> torch.Tensor:
    """Index of each query's nearest candidate (Euclidean, on downsampled pixels)."""
    keys = downsampled(candidates)
    out = [torch.cdist(downsampled(queries[i : i + batch]).to(keys), keys).argmin(dim=1)
           for i in range(0, len(queries), batch)]
    return torch.cat(out)


def frechet_distance(mu1: np.ndarray, cov1: np.ndarray, mu2: np.ndarray, cov2: np.ndarray) -> float:
    """||mu1 - mu2||^2 + Tr(C1 + C2 - 2 (C1 C2)^1/2) (Heusel et al. 2017), in float64."""
    from scipy import linalg

    diff = mu1 - mu2
    root = linalg.sqrtm(cov1 @ cov2)
    if not np.isfinite(root).all():  # singular products (fewer samples than dimensions): regularise
        eps = 1e-6 * np.eye(len(cov1))
        root = linalg.sqrtm((cov1 + eps) @ (cov2 + eps))
    return float(diff @ diff + np.trace(cov1) + np.trace(cov2) - 2 * np.trace(np.real(root)))


def statistics(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    features = features.astype(np.float64)
    return features.mean(axis=0), np.cov(features, rowvar=False)


def diversity(features: torch.Tensor) -> float:
    """Mean pairwise Euclidean distance between feature vectors."""
    n = len(features)
    return float(torch.pdist(features.float()).mean()) if n > 1 else 0.0


def sample_grid(images: torch.Tensor, epoch: int) -> np.ndarray:
    """[0, 1] images -> one RGB uint8 grid, 8 per row, TILE px high, labelled with the epoch."""
    tiles = []
    for image in images.clamp(0, 1).cpu().numpy():
        tile = (image.transpose(1, 2, 0) * 255).round().astype(np.uint8)
        tile = np.repeat(tile, 3, axis=2) if tile.shape[2] == 1 else tile
        width = max(1, round(TILE * tile.shape[1] / tile.shape[0]))
        tiles.append(cv2.resize(tile, (width, TILE), interpolation=cv2.INTER_AREA))
    per_row = 8
    tiles += [np.zeros_like(tiles[0])] * (-len(tiles) % per_row)
    rows = [np.concatenate(tiles[i : i + per_row], axis=1) for i in range(0, len(tiles), per_row)]
    grid = np.ascontiguousarray(np.concatenate(rows, axis=0))
    cv2.putText(grid, f"epoch {epoch}", (4, 16), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (255, 255, 0), 1, cv2.LINE_AA)
    return grid


def write_grid(folder: Path, images: torch.Tensor, epoch: int) -> Path:
    path = Path(folder) / SAMPLES_DIR / f"epoch-{epoch:04d}.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), cv2.cvtColor(sample_grid(images, epoch), cv2.COLOR_RGB2BGR))
    return path


class QualityTracker:
    """Per-epoch generation metrics of a `GanModel` (its generator, fixed noise and feature network)."""

    def __init__(self, model: Any, training_dir: Path, fid_samples: int = FID_SAMPLES) -> None:
        self.model = model
        self.fid_samples = fid_samples
        self.folder = Path(training_dir)
        self.real: dict[str, Any] | None = None
        self.peak = 0.0  # highest diversity so far

    def _pooled(self, images: torch.Tensor, batch: int = 32) -> torch.Tensor:
        """Pooled features of [0, 1] images."""
        features = self.model.features.to(self.model.device).eval()
        with torch.no_grad():
            return torch.cat([features.pooled(images[i : i + batch].to(self.model.device) * 255.0).float().cpu()
                              for i in range(0, len(images), batch)])

    def _real(self, train: torch.Tensor) -> dict[str, Any]:
        if self.real is None:
            pooled = self._pooled(train.float() / 255.0)
            mu, cov = statistics(pooled.numpy())
            self.real = {"mu": mu, "cov": cov, "diversity": diversity(pooled)}
        return self.real

    def measure(self, epoch: int, data: Any, saved: bool) -> dict[str, float]:
        real = self._real(data.train)
        samples = self.model.generate(self.model.fixed_noise[:SAMPLES]).cpu()
        train = data.train
        closest = train[nearest(samples, train.float() / 255.0)].float() / 255.0
        diff = (samples - closest).abs()
        mad = float(diff.mean())
        out = {"gen_mad": mad, "gen_ad_var": float((diff * diff).mean()) - mad * mad,
               "gen_ssim": float(ssim_map(samples, closest).mean())}
        if saved:
            many = self.model.generate(self.model.fixed_noise[: self.fid_samples])
            pooled = self._pooled(many)
            mu, cov = statistics(pooled.numpy())
            out["frechet"] = frechet_distance(mu, cov, real["mu"], real["cov"])
            out["diversity"] = diversity(pooled) / max(real["diversity"], 1e-12)
            self._check_collapse(epoch, out["diversity"])
            write_grid(self.folder, many[:GRID], epoch)
        return out

    def _check_collapse(self, epoch: int, value: float) -> None:
        """Warn when the diversity falls below COLLAPSE after having been above it (a generator that has not
        spread out yet, in the first epochs, is not collapsing)."""
        if value < COLLAPSE and self.peak >= COLLAPSE:
            log.warning("epoch %d: the samples' feature diversity fell to %.0f%% of the real images' (it was %.0f%%; "
                        "warning below %.0f%%): the generator may be collapsing to a few modes; see %s", epoch,
                        100 * value, 100 * self.peak, 100 * COLLAPSE, self.folder / SAMPLES_DIR)
        self.peak = max(self.peak, value)
