"""What the GAN detector exports, and the pretrained features its training curves use.

The exported network turns a test image into the embedding the reference bank is searched with and hands
the scorer the image itself in [0, 1] (`pixels`) for the residual, so the whole bank search and residual
live in the scorer, shared by evaluation and the runtime. Two embeddings:
- `pixels`: the image average-pooled to at most 32 x 32 cells (3 x 32 x 32 = 3,072 dims at 256 px);
- `features`: EfficientNet-Lite0 `layer3` features (the shared `linewatch.features` extractor) of the
  image enlarged to at least 128 px on its shorter side, average-pooled to at most 8 x 8 cells. Their
  global average is also what the Fréchet distance and the diversity check compare.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

EMBEDDINGS = ("pixels", "features")
FEATURE_LAYER = "layer3"
MIN_FEATURE_SIDE = 128
PIXEL_GRID = 32
FEATURE_GRID = 8


def _pool(size: tuple[int, int], most: int) -> list[int]:
    """Per axis, the smallest divisor of the side that brings it to at most `most` cells."""
    return [next(d for d in range(1, side + 1) if side % d == 0 and side // d <= most) for side in size]


def feature_params(size: tuple[int, int], backbone: str = "efficientnet_lite0") -> dict[str, Any]:
    """The feature extractor's settings for images of `size`: the enlargement and the extractor's input size."""
    upscale = 1
    while min(size) * upscale < MIN_FEATURE_SIDE:
        upscale *= 2
    input_size = [size[0] * upscale, size[1] * upscale]
    return {"backbone": backbone, "layers": [FEATURE_LAYER], "image_size": input_size, "aggregate": False,
            "upscale": upscale}


class GanFeatures(nn.Module):
    """images (N, C, H, W) 0..255 -> (N, 112, h, w) Lite0 `layer3` features (grey is repeated to RGB)."""

    def __init__(self, params: dict[str, Any], weights: str | None = None) -> None:
        super().__init__()
        from linewatch.features.extractor import FeatureConfig, FeatureExtractor, build_extractor

        config = FeatureConfig(backbone=params["backbone"], layers=tuple(params["layers"]),
                               image_size=tuple(params["image_size"]), aggregate=False)
        self.upscale = int(params["upscale"])
        self.pretrained: dict[str, Any] | None = None
        if weights:
            self.extractor, info = build_extractor(config, weights)
            self.pretrained = {"source": info.source, "sha256": info.sha256}
        else:
            self.extractor = FeatureExtractor(config)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = images.expand(-1, 3, -1, -1) if images.shape[1] == 1 else images
        if self.upscale > 1:
            x = F.interpolate(x, scale_factor=float(self.upscale), mode="bilinear", align_corners=False)
        return self.extractor(x)

    def pooled(self, images: torch.Tensor) -> torch.Tensor:
        """(N, 112) global averages: the statistics behind the Fréchet distance and the diversity check."""
        return self.forward(images).mean(dim=(2, 3))


class EmbeddingNetwork(nn.Module):
    """images (N, C, H, W) 0..255 -> (embedding (N, D), pixels (N, C, H, W) in [0, 1])."""

    def __init__(self, params: dict[str, Any], weights: str | None = None) -> None:
        super().__init__()
        self.params = params
        self.kind = params["embedding"]
        if self.kind not in EMBEDDINGS:
            raise ValueError(f"embedding {self.kind!r} is not one of {', '.join(EMBEDDINGS)}")
        self.pool = (int(params["pool"][0]), int(params["pool"][1]))
        self.features = GanFeatures(params["features"], weights) if self.kind == "features" else None

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        pixels = images / 255.0
        source = self.features(images) if self.features is not None else pixels
        embedding = F.avg_pool2d(source, self.pool) if max(self.pool) > 1 else source
        return embedding.flatten(1), pixels


def embedding_params(size: tuple[int, int], channels: int, kind: str, backbone: str = "efficientnet_lite0") -> dict:
    """The embedding network's manifest parameters for images of `size`."""
    size = (int(size[0]), int(size[1]))
    params: dict[str, Any] = {"embedding": kind, "size": list(size), "channels": channels}
    if kind == "pixels":
        params["pool"] = _pool(size, PIXEL_GRID)
    else:
        from linewatch.features.extractor import FeatureConfig

        features = feature_params(size, backbone)
        grid = FeatureConfig(backbone, (FEATURE_LAYER,), tuple(features["image_size"]), aggregate=False).feature_size
        params["features"] = features
        params["pool"] = _pool(grid, FEATURE_GRID)
    return params


def build_embedding(params: dict[str, Any]) -> EmbeddingNetwork:
    return EmbeddingNetwork(params)
