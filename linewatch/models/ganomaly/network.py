"""GANomaly's networks: generator G = (G_E, G_D, E) and discriminator D; the exported network is G with the
score terms computed inside (the latent distance ||G_E(x) - E(G(x))||^2 and the reconstruction residual)."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from linewatch.models.components.dcgan import Decoder, Encoder, init_weights


class Generator(nn.Module):
    def __init__(self, size: int, channels: int, latent: int, features: int) -> None:
        super().__init__()
        self.encoder = Encoder(size, channels, latent, features)
        self.decoder = Decoder(size, channels, latent, features)
        self.reencoder = Encoder(size, channels, latent, features)
        self.apply(init_weights)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """[-1, 1] images -> (reconstruction, z = G_E(x), z' = E(G(x)))."""
        z = self.encoder(x)
        fake = self.decoder(z)
        return fake, z, self.reencoder(fake)


class Discriminator(nn.Module):
    """Real/fake logit and the features used by the adversarial (feature-matching) loss."""

    def __init__(self, size: int, channels: int, features: int) -> None:
        super().__init__()
        encoder = Encoder(size, channels, 1, features)
        self.features = encoder.features
        self.classifier = encoder.final
        self.apply(init_weights)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        features = self.features(x)
        return self.classifier(features).flatten(), features


def to_unit(x: torch.Tensor) -> torch.Tensor:
    """Network range [-1, 1] -> image range [0, 1]."""
    return (x + 1.0) / 2.0


class GanomalyNetwork(nn.Module):
    """images (N, C, H, W) in 0..255 -> (residual (N, 1, H, W), latent_distance (N,))."""

    def __init__(self, size: int, channels: int = 3, latent: int = 100, features: int = 64) -> None:
        super().__init__()
        self.generator = Generator(size, channels, latent, features)

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = images / 127.5 - 1.0
        fake, z, z_again = self.generator(x)
        residual = (to_unit(x) - to_unit(fake)).pow(2).mean(dim=1, keepdim=True)
        return residual, (z - z_again).pow(2).flatten(1).mean(dim=1)


def build(params: dict[str, Any]) -> GanomalyNetwork:
    return GanomalyNetwork(**params)
