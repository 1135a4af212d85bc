"""Backbone trunks (timm EfficientNet-Lite, torchvision ResNet) truncated after the deepest selected layer.

Only the stages up to the deepest selected layer are built, so unused compute is never paid. Names,
channels and normalisation live in `features.catalog`.
"""

from __future__ import annotations

import torch
from torch import nn

from linewatch.features.catalog import check_layers, get_spec

# timm EfficientNet stage index whose output is each layer (stages 3 and 5 are not stride boundaries).
_LITE_STAGE = {"layer1": 1, "layer2": 2, "layer3": 4, "layer4": 6}


class LiteBackbone(nn.Module):
    """EfficientNet-Lite trunk (timm `tf_efficientnet_lite*` modules), truncated after the deepest layer."""

    def __init__(self, name: str, layers: tuple[str, ...]) -> None:
        super().__init__()
        import timm

        full = timm.create_model(f"tf_{name}", pretrained=False)
        self.layers = layers
        self.taps = {_LITE_STAGE[layer]: layer for layer in layers}
        last = max(self.taps)
        self.conv_stem = full.conv_stem
        self.bn1 = full.bn1
        self.blocks = nn.Sequential(*list(full.blocks.children())[: last + 1])

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = self.bn1(self.conv_stem(x))
        out: list[torch.Tensor] = []
        for index, stage in enumerate(self.blocks):
            x = stage(x)
            if index in self.taps:
                out.append(x)
        return out


class ResNetBackbone(nn.Module):
    """torchvision ResNet trunk, truncated after the deepest layer."""

    def __init__(self, name: str, layers: tuple[str, ...]) -> None:
        super().__init__()
        import torchvision

        full = getattr(torchvision.models, name)(weights=None)
        self.layers = layers
        self.depth = max(int(layer[-1]) for layer in layers)
        self.conv1, self.bn1, self.relu, self.maxpool = full.conv1, full.bn1, full.relu, full.maxpool
        for index in range(1, self.depth + 1):  # torchvision's own names, so its state dicts load as they are
            self.add_module(f"layer{index}", getattr(full, f"layer{index}"))

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        out: list[torch.Tensor] = []
        for index in range(1, self.depth + 1):
            x = getattr(self, f"layer{index}")(x)
            if f"layer{index}" in self.layers:
                out.append(x)
        return out


def build_backbone(name: str, layers: tuple[str, ...]) -> nn.Module:
    """Build an untrained, truncated trunk that returns the selected layers shallow to deep."""
    spec = get_spec(name)
    layers = check_layers(spec, layers)
    if spec.family == "efficientnet_lite":
        return LiteBackbone(name, layers)
    return ResNetBackbone(name, layers)
