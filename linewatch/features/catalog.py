"""Backbone catalogue: names, channels per layer, normalisation; no torch, so CLIs and the runtime load fast.

Every backbone exposes `layer1`..`layer4` at strides 4, 8, 16 and 32, so configs and bundles name
features the same way whatever the network.
"""

from __future__ import annotations

from dataclasses import dataclass

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
