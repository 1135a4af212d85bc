"""PaDiM detector (Defard et al., ICPR 2021): a Gaussian per feature position; score = Mahalanobis distance."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from linewatch.bundle import BundleError
from linewatch.data.errors import DataError
from linewatch.device import torch_device
from linewatch.models.padim.gaussian import GaussianAccumulator

GAUSSIAN_FILE = "padim_gaussian.safetensors"
INVERT_CHUNK = 256
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PadimParams:
    epsilon: float = 0.01

    def __post_init__(self) -> None:
        if self.epsilon < 0:
            raise ValueError("epsilon must be >= 0")


class Padim:
    kind = "padim"

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
        log.info("Mahalanobis scorer on %s (%d positions x %d dims)", self.device, height * width, channels)

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
        accumulator = GaussianAccumulator()
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
        """Mahalanobis distance of each position's feature to that position's Gaussian, batched over positions."""
        features = outputs["features"]
        n, c, h, w = features.shape
        if (c, h, w) != self.feature_shape:
            raise ValueError(f"features of shape {(c, h, w)} do not match the PaDiM model's {self.feature_shape}")
        x = torch.from_numpy(np.ascontiguousarray(features, dtype=np.float32)).to(self.device)
        # Position-major and contiguous: bmm on a strided view is ~3x slower on CPU.
        delta = x.reshape(n, c, h * w).permute(2, 0, 1).contiguous() - self.mean[:, None, :]
        squared = torch.bmm(delta, self.inv_cov).mul_(delta).sum(dim=2).clamp_min_(0)
        return squared.sqrt_().T.reshape(n, h, w).cpu().numpy()

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
                   "train_images": self.train_images}
        return section, [GAUSSIAN_FILE]

    @classmethod
    def load(cls, directory: Path, section: dict[str, Any], device: str = "cpu") -> Padim:
        from safetensors.numpy import load_file

        tensors = load_file(str(Path(directory) / section["gaussian"]))
        missing = {"mean", "inv_cov"} - set(tensors)
        if missing:
            raise BundleError(f"{section['gaussian']} in {directory} lacks {sorted(missing)}")
        return cls(tensors["mean"], tensors["inv_cov"], tuple(section["feature_shape"]),
                   PadimParams(epsilon=section["epsilon"]), section["train_images"], device=device)
