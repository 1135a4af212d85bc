"""Backbone registry: every backbone exposes `layer1`..`layer4` at strides 4, 8, 16 and 32.

Uniform layer names let configs and bundles name features the same way whatever the network.
Only the stages up to the deepest selected layer are built, so unused compute is never paid.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from linewatch.config import ConfigError

LAYER_STRIDES = {"layer1": 4, "layer2": 8, "layer3": 16, "layer4": 32}


@dataclass(frozen=True)
class BackboneSpec:
    """What a backbone needs to be built, normalized and documented."""

    name: str
    family: str  # "efficientnet_lite" or "resnet"
    channels: dict[str, int]
    mean: tuple[float, float, float]  # in 0..255 pixel units, RGB
    std: tuple[float, float, float]
    default_layers: tuple[str, ...]


_LITE_NORM = ((127.5, 127.5, 127.5), (127.5, 127.5, 127.5))
_IMAGENET_NORM = ((123.675, 116.28, 103.53), (58.395, 57.12, 57.375))

BACKBONES: dict[str, BackboneSpec] = {
    "efficientnet_lite0": BackboneSpec(
        "efficientnet_lite0", "efficientnet_lite",
        {"layer1": 24, "layer2": 40, "layer3": 112, "layer4": 320}, *_LITE_NORM, ("layer2", "layer3"),
    ),
    "efficientnet_lite2": BackboneSpec(
        "efficientnet_lite2", "efficientnet_lite",
        {"layer1": 24, "layer2": 48, "layer3": 120, "layer4": 352}, *_LITE_NORM, ("layer2", "layer3"),
    ),
    "resnet18": BackboneSpec(
        "resnet18", "resnet",
        {"layer1": 64, "layer2": 128, "layer3": 256, "layer4": 512}, *_IMAGENET_NORM, ("layer2", "layer3"),
    ),
    "wide_resnet50_2": BackboneSpec(
        "wide_resnet50_2", "resnet",
        {"layer1": 256, "layer2": 512, "layer3": 1024, "layer4": 2048}, *_IMAGENET_NORM, ("layer2", "layer3"),
    ),
}

# timm EfficientNet stage index whose output is each layer (stages 3 and 5 are not stride boundaries).
_LITE_STAGE = {"layer1": 1, "layer2": 2, "layer3": 4, "layer4": 6}


def get_spec(name: str) -> BackboneSpec:
    """Look a backbone up by name, listing the known ones when it is unknown."""
    try:
        return BACKBONES[name]
    except KeyError:
        raise ConfigError(f"unknown backbone {name!r}; choose one of: {', '.join(sorted(BACKBONES))}") from None


def check_layers(spec: BackboneSpec, layers: tuple[str, ...]) -> tuple[str, ...]:
    """Validate and order layer names from shallow to deep."""
    if not layers:
        raise ConfigError("at least one feature layer is needed")
    unknown = [layer for layer in layers if layer not in spec.channels]
    if unknown:
        raise ConfigError(f"unknown layer(s) {unknown} for {spec.name}; choose from {sorted(spec.channels)}")
    return tuple(sorted(set(layers), key=lambda layer: LAYER_STRIDES[layer]))


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
