"""Patch features: normalize -> backbone -> local 3x3 aggregation -> upsample -> concat -> optional head.

This one module is what training fits on, what evaluation scores with, what `export-model` writes to
ONNX and what the runtime's torch engine runs, so features cannot drift between the stages.
Input: float32 NCHW RGB in 0..255 at the configured size (see `Preprocessor`).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn

from linewatch.config import ConfigError
from linewatch.features.backbones import build_backbone
from linewatch.features.catalog import LAYER_STRIDES, check_layers, get_spec


@dataclass(frozen=True)
class FeatureConfig:
    """Everything that determines the feature map; stored verbatim in the bundle manifest."""

    backbone: str = "efficientnet_lite0"
    layers: tuple[str, ...] = ("layer2", "layer3")
    image_size: tuple[int, int] = (256, 256)
    aggregate: bool = True
    projection_dims: int | None = None
    channel_subset: int | None = None
    seed: int = 0

    def __post_init__(self) -> None:
        spec = get_spec(self.backbone)
        object.__setattr__(self, "layers", check_layers(spec, tuple(self.layers)))
        object.__setattr__(self, "image_size", tuple(int(s) for s in self.image_size))
        if self.projection_dims is not None and self.channel_subset is not None:
            raise ValueError("choose either projection_dims or channel_subset, not both")
        stride = LAYER_STRIDES[self.layers[-1]]
        if min(self.image_size) < stride:
            raise ConfigError(f"image size {self.image_size} is smaller than the stride {stride} of {self.layers[-1]}")

    @property
    def concat_dims(self) -> int:
        spec = get_spec(self.backbone)
        return sum(spec.channels[layer] for layer in self.layers)

    @property
    def out_dims(self) -> int:
        return self.projection_dims or self.channel_subset or self.concat_dims

    @property
    def stride(self) -> int:
        return LAYER_STRIDES[self.layers[0]]

    @property
    def feature_size(self) -> tuple[int, int]:
        """Spatial size of the feature map (the finest selected layer), matching the backbone's rounding."""
        size = self.image_size
        for _ in range(LAYER_STRIDES[self.layers[0]].bit_length() - 1):
            size = tuple((s + 1) // 2 for s in size)
        return size

    def to_dict(self) -> dict:
        data = asdict(self)
        data["layers"] = list(self.layers)
        data["image_size"] = list(self.image_size)
        return data

    @classmethod
    def from_dict(cls, data: dict) -> FeatureConfig:
        """Rebuild from a manifest section, ignoring the derived facts stored beside the fields."""
        fields = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        return cls(**{**fields, "layers": tuple(data["layers"]), "image_size": tuple(data["image_size"])})


class FeatureExtractor(nn.Module):
    """Pure `nn.Module` from pixels to patch features; weights are filled by `features.weights` or a bundle."""

    def __init__(self, config: FeatureConfig) -> None:
        super().__init__()
        self.config = config
        spec = get_spec(config.backbone)
        self.register_buffer("mean", torch.tensor(spec.mean, dtype=torch.float32).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(spec.std, dtype=torch.float32).view(1, 3, 1, 1))
        self.backbone = build_backbone(config.backbone, config.layers)
        generator = torch.Generator().manual_seed(config.seed)
        if config.projection_dims:
            matrix = torch.randn(config.projection_dims, config.concat_dims, generator=generator)
            self.register_buffer("projection", matrix / config.projection_dims**0.5)
        else:
            self.projection = None
        if config.channel_subset:
            if config.channel_subset > config.concat_dims:
                raise ConfigError(f"channel_subset {config.channel_subset} > {config.concat_dims} feature channels")
            index = torch.randperm(config.concat_dims, generator=generator)[: config.channel_subset]
            self.register_buffer("channel_index", index.sort().values)
        else:
            self.channel_index = None

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.stages(images))

    def stages(self, images: torch.Tensor) -> list[torch.Tensor]:
        """Normalised images -> the backbone's selected stage outputs, shallow to deep."""
        return self.backbone((images - self.mean) / self.std)

    def head(self, maps: list[torch.Tensor]) -> torch.Tensor:
        """Backbone stage outputs (shallow to deep) -> patch features; tuning reuses cached stage outputs here."""
        if self.config.aggregate:
            maps = [F.avg_pool2d(m, kernel_size=3, stride=1, padding=1, count_include_pad=False) for m in maps]
        size = maps[0].shape[-2:]
        maps = [maps[0]] + [F.interpolate(m, size=size, mode="bilinear", align_corners=False) for m in maps[1:]]
        features = torch.cat(maps, dim=1)
        if self.channel_index is not None:
            features = features.index_select(1, self.channel_index)
        if self.projection is not None:
            features = torch.einsum("oc,nchw->nohw", self.projection, features)
        return features


def build_extractor(config: FeatureConfig, weights: str = "default"):
    """A ready, eval-mode extractor with backbone weights loaded; returns (extractor, WeightsInfo)."""
    from linewatch.features.weights import load_weights

    extractor = FeatureExtractor(config)
    info = load_weights(extractor.backbone, get_spec(config.backbone), weights, seed=config.seed)
    return extractor.eval(), info
