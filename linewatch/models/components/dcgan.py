"""DCGAN-style building blocks (Radford et al. 2016) shared by GANomaly and the GAN detector: a strided
convolutional encoder down to a latent vector, a transposed-convolution decoder back up, N(0, 0.02) init."""

from __future__ import annotations

import math

import torch
from torch import nn


def power_of_two(size: int, smallest: int = 16, largest: int = 512) -> int:
    """The nearest power of two in [smallest, largest]: DCGAN pyramids halve down to 4 x 4."""
    return int(min(largest, max(smallest, 2 ** round(math.log2(max(size, 1))))))


def init_weights(module: nn.Module) -> None:
    """DCGAN initialisation: convolutions N(0, 0.02), BatchNorm scale N(1, 0.02) and bias 0."""
    if isinstance(module, nn.Conv2d | nn.ConvTranspose2d):
        nn.init.normal_(module.weight, 0.0, 0.02)
    elif isinstance(module, nn.BatchNorm2d):
        nn.init.normal_(module.weight, 1.0, 0.02)
        nn.init.zeros_(module.bias)


class Encoder(nn.Module):
    """size x size x channels -> (N, latent, 1, 1); `features` stops before the last convolution."""

    def __init__(self, size: int, channels: int, latent: int, features: int = 64) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.Conv2d(channels, features, 4, 2, 1, bias=False), nn.LeakyReLU(0.2, inplace=True)]
        width, side = features, size // 2
        while side > 4:
            layers += [nn.Conv2d(width, width * 2, 4, 2, 1, bias=False), nn.BatchNorm2d(width * 2),
                       nn.LeakyReLU(0.2, inplace=True)]
            width, side = width * 2, side // 2
        self.features = nn.Sequential(*layers)
        self.final = nn.Conv2d(width, latent, 4, 1, 0, bias=False)
        self.width = width

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.final(self.features(x))


class Decoder(nn.Module):
    """(N, latent, 1, 1) -> size x size x channels in [-1, 1] (tanh)."""

    def __init__(self, size: int, channels: int, latent: int, features: int = 64) -> None:
        super().__init__()
        width = features * size // 8
        layers: list[nn.Module] = [nn.ConvTranspose2d(latent, width, 4, 1, 0, bias=False), nn.BatchNorm2d(width),
                                   nn.ReLU(inplace=True)]
        side = 4
        while side < size // 2:
            layers += [nn.ConvTranspose2d(width, width // 2, 4, 2, 1, bias=False), nn.BatchNorm2d(width // 2),
                       nn.ReLU(inplace=True)]
            width, side = width // 2, side * 2
        layers += [nn.ConvTranspose2d(width, channels, 4, 2, 1, bias=False), nn.Tanh()]
        self.main = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.main(z)
