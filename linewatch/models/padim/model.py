"""PaDiM detector (Defard et al., ICPR 2021): a Gaussian per feature position; score = Mahalanobis distance.

Position tolerance (for parts that do not sit at the same place in every frame): `pool` widens each
Gaussian with its neighbours' training features (free at run time), `radius` scores each feature by its
smallest Mahalanobis distance over the Gaussians within `radius` cells (costs (2 radius + 1)^2 the FLOPs,
but the inverse covariances are still read once per batch).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from linewatch.bundle import BundleError
from linewatch.data.errors import DataError
from linewatch.device import torch_device
from linewatch.models.padim.gaussian import GaussianAccumulator, window_offsets

GAUSSIAN_FILE = "padim_gaussian.safetensors"
INVERT_CHUNK = 256
SCORE_CHUNK_FLOATS = 8_000_000  # window features held at once while scoring with a radius (32 MB)
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PadimParams:
    epsilon: float = 0.01
    pool: int = 0  # fit: each Gaussian also learns its neighbours within this many cells
    radius: int = 0  # score: min Mahalanobis distance over the Gaussians within this many cells

    def __post_init__(self) -> None:
        if self.epsilon < 0:
            raise ValueError("epsilon must be >= 0")
        if self.pool < 0 or self.radius < 0:
            raise ValueError("pool and radius must be >= 0")


class Padim:
    kind = "padim"
    scores_from_maps = True

    def __init__(
        self, mean: np.ndarray, inv_cov: np.ndarray, feature_shape: tuple[int, int, int], params: PadimParams,
        train_images: int, device: str = "cpu",
    ) -> None:
        channels, height, width = feature_shape
        if mean.shape != (height * width, channels) or inv_cov.shape != (height * width, channels, channels):
            raise ValueError(f"Gaussian shapes {mean.shape} / {inv_cov.shape} do not match features {feature_shape}")
        self.feature_shape = feature_shape
        self.params = params
        self.train_images = train_images
        self.device = torch_device(device)
        self.mean = torch.from_numpy(np.ascontiguousarray(mean, dtype=np.float32)).to(self.device)
        self.inv_cov = torch.from_numpy(np.ascontiguousarray(inv_cov, dtype=np.float32)).to(self.device)
        log.info("Mahalanobis scorer on %s (%d positions x %d dims, radius %d)", self.device, height * width,
                 channels, params.radius)

    @classmethod
    def fit(
        cls,
        feature_batches: Iterable[np.ndarray],
        params: PadimParams,
        *,
        progress: Callable[[int, str], Callable[[int], None]] | None = None,
        device: str = "cpu",
    ) -> Padim:
        """Accumulate per-position sums over the batches, then invert each regularised covariance."""
        accumulator = GaussianAccumulator(pool=params.pool)
        for batch in feature_batches:
            accumulator.update(batch)
        if accumulator.shape is None:
            raise DataError("no training features: the training split is empty")
        mean, cov = accumulator.mean_and_covariance(params.epsilon)
        step = progress(len(cov), "invert covariances") if progress else None
        inverse = torch.empty(cov.shape, dtype=torch.float32)
        for start in range(0, len(cov), INVERT_CHUNK):
            chunk = cov[start : start + INVERT_CHUNK]
            inverse[start : start + INVERT_CHUNK] = torch.linalg.inv(chunk).to(torch.float32)
            if step:
                step(len(chunk))
        return cls(mean.numpy(), inverse.numpy(), accumulator.shape, params, accumulator.count, device=device)

    def patch_scores(self, outputs: dict[str, np.ndarray]) -> np.ndarray:
        """Mahalanobis distance of each position's feature to its Gaussian (or the nearest within `radius`)."""
        features = outputs["features"]
        n, c, h, w = features.shape
        if (c, h, w) != self.feature_shape:
            raise ValueError(f"features of shape {(c, h, w)} do not match the PaDiM model's {self.feature_shape}")
        x = torch.from_numpy(np.ascontiguousarray(features, dtype=np.float32)).to(self.device)
        if self.params.radius:
            squared = self._window_min(x)
        else:
            # Position-major and contiguous: bmm on a strided view is ~3x slower on CPU.
            squared = self._squared(x.reshape(n, c, h * w).permute(2, 0, 1).contiguous(), slice(None)).T
        return squared.sqrt_().reshape(n, h, w).cpu().numpy()

    def _squared(self, rows: torch.Tensor, positions: slice) -> torch.Tensor:
        """(P, m, C) features against the Gaussians of `positions` -> (P, m) squared distances."""
        delta = rows - self.mean[positions, None, :]
        return torch.bmm(delta, self.inv_cov[positions]).mul_(delta).sum(dim=2).clamp_min_(0)

    def _window_min(self, x: torch.Tensor) -> torch.Tensor:
        """(n, C, h, w) -> (n, h*w): each feature's smallest squared distance over the Gaussians around it.

        Per Gaussian q the features at q + o (o in the window) are gathered (unfold), so each inverse
        covariance is read once for the whole window; then the feature at p takes the min over o of
        d(x[p], G[p - o]). Window cells outside the map never count.
        """
        n, c, h, w = x.shape
        r = self.params.radius
        offsets = window_offsets(r)
        k, positions = len(offsets), h * w
        windows = F.unfold(x, kernel_size=2 * r + 1, padding=r).reshape(n, c, k, positions)
        inside = F.unfold(torch.ones(1, 1, h, w, device=x.device), kernel_size=2 * r + 1, padding=r)[0] > 0
        distances = torch.empty(positions, n, k, device=x.device)
        chunk = max(1, SCORE_CHUNK_FLOATS // (n * k * c))
        for start in range(0, positions, chunk):
            part = slice(start, min(start + chunk, positions))
            rows = windows[:, :, :, part].permute(3, 0, 2, 1).reshape(-1, n * k, c)
            distances[part] = self._squared(rows, part).reshape(-1, n, k)
        distances.masked_fill_(~inside.T[:, None, :], float("inf"))
        # distances[q, i, j] = d(x_i[q + o_j], G[q]); move each offset's map to the feature's position.
        grid = F.pad(distances.permute(1, 2, 0).reshape(n, k, h, w), (r, r, r, r), value=float("inf"))
        best = torch.full((n, h, w), float("inf"), device=x.device)
        for j, (dy, dx) in enumerate(offsets):
            torch.minimum(best, grid[:, j, r - dy : r - dy + h, r - dx : r - dx + w], out=best)
        return best.reshape(n, positions)

    def image_scores(self, patch_scores: np.ndarray, maps: np.ndarray, outputs: dict[str, np.ndarray]) -> np.ndarray:
        """Max of the blurred anomaly map, as in the PaDiM paper."""
        return maps.reshape(len(maps), -1).max(axis=1).astype(np.float32)

    def save(self, directory: Path) -> tuple[dict[str, Any], list[str]]:
        from safetensors.torch import save_file

        save_file({"mean": self.mean.cpu().contiguous(), "inv_cov": self.inv_cov.cpu().contiguous()},
                  str(Path(directory) / GAUSSIAN_FILE))
        channels, height, width = self.feature_shape
        section = {"kind": self.kind, "gaussian": GAUSSIAN_FILE, "positions": height * width, "dims": channels,
                   "feature_shape": list(self.feature_shape), "epsilon": self.params.epsilon,
                   "pool": self.params.pool, "radius": self.params.radius, "train_images": self.train_images}
        return section, [GAUSSIAN_FILE]

    @classmethod
    def load(cls, directory: Path, section: dict[str, Any], device: str = "cpu") -> Padim:
        from safetensors.numpy import load_file

        tensors = load_file(str(Path(directory) / section["gaussian"]))
        missing = {"mean", "inv_cov"} - set(tensors)
        if missing:
            raise BundleError(f"{section['gaussian']} in {directory} lacks {sorted(missing)}")
        return cls(tensors["mean"], tensors["inv_cov"], tuple(section["feature_shape"]),
                   PadimParams(epsilon=section["epsilon"], pool=section.get("pool", 0),
                               radius=section.get("radius", 0)), section["train_images"], device=device)
