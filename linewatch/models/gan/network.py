"""The GAN's networks: a generator from a latent vector to any H x W, and a critic (WGAN-GP) or discriminator
(DCGAN) mirroring it.

Any output size, square or not: both networks work on a per-axis start size (H / 2**k, W / 2**k) with one
up-sampling block per doubling, so 144 x 256 starts at 9 x 16 and 256 x 256 at 4 x 4. Up-sampling is a
transposed convolution (DCGAN) or a nearest-neighbour up-sample followed by a 3 x 3 convolution (no
checkerboard artefacts, Odena et al. 2016); `tools/bench_gan.py` compares the two.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from linewatch.models.components.dcgan import init_weights

UPSAMPLING = ("transposed", "upsample")
CRITIC_NORMS = ("layer", "none")
MAX_WIDTH = 512
MIN_START = 4  # smallest start side (DCGAN starts at 4 x 4)
MAX_DOUBLINGS = 6


def doublings(size: tuple[int, int]) -> int:
    """Up-sampling blocks for an H x W output: as many halvings as both sides take, keeping sides >= 4."""
    k = 0
    while (k < MAX_DOUBLINGS and all(side % 2 ** (k + 1) == 0 for side in size)
           and min(size) // 2 ** (k + 1) >= MIN_START):
        k += 1
    return k


def valid_size(size: tuple[int, int]) -> tuple[int, int]:
    """Each side rounded to a multiple of 8 (of 4 below 32 px): at least three doublings, so 72 x 128 (16:9)
    stays as it is and starts at 9 x 16; sides that take more halvings get more blocks."""
    shorter = max(min(size), 2 * MIN_START)
    step = 2 ** min(3, int(math.log2(shorter / MIN_START)))
    return tuple(max(step, round(side / step) * step) for side in size)  # type: ignore[return-value]


def widths(k: int, base: int) -> list[int]:
    """Channels from the start size up to half the output size (`base` there), doubling per halving, capped:
    DCGAN's 512-256-128-64 for 64 x 64 with base 64."""
    return [min(MAX_WIDTH, base * 2 ** (k - 1 - i)) for i in range(k)]


def _up(c_in: int, c_out: int, mode: str, bias: bool = False) -> nn.Module:
    if mode == "transposed":
        return nn.ConvTranspose2d(c_in, c_out, 4, 2, 1, bias=bias)
    return nn.Sequential(nn.Upsample(scale_factor=2, mode="nearest"), nn.Conv2d(c_in, c_out, 3, 1, 1, bias=bias))


class Generator(nn.Module):
    """(N, latent) -> (N, channels, H, W) in [-1, 1]: a linear projection to the start size, then up-sampling
    blocks with BatchNorm and ReLU, tanh at the end (Radford et al. 2016)."""

    def __init__(self, size: tuple[int, int], channels: int = 3, latent: int = 128, base_channels: int = 64,
                 upsampling: str = "transposed") -> None:
        super().__init__()
        if upsampling not in UPSAMPLING:
            raise ValueError(f"upsampling {upsampling!r} is not one of {', '.join(UPSAMPLING)}")
        self.size, self.latent = (int(size[0]), int(size[1])), latent
        k = doublings(self.size)
        if k == 0:
            raise ValueError(f"image size {size} cannot be halved even once to a start side >= {MIN_START}")
        self.start = (self.size[0] // 2**k, self.size[1] // 2**k)
        chans = widths(k, base_channels)
        self.project = nn.Linear(latent, chans[0] * self.start[0] * self.start[1], bias=False)
        self.start_norm = nn.Sequential(nn.BatchNorm2d(chans[0]), nn.ReLU(inplace=True))
        blocks: list[nn.Module] = []
        for c_in, c_out in zip(chans[:-1], chans[1:], strict=True):
            blocks += [_up(c_in, c_out, upsampling), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True)]
        blocks += [_up(chans[-1], channels, upsampling, bias=True), nn.Tanh()]
        self.blocks = nn.Sequential(*blocks)
        self.apply(init_weights)
        nn.init.normal_(self.project.weight, 0.0, 0.02)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        x = self.project(z).view(len(z), -1, *self.start)
        return self.blocks(self.start_norm(x))


class Critic(nn.Module):
    """(N, channels, H, W) in [-1, 1] -> (N,) scores: strided 4 x 4 convolutions with LeakyReLU 0.2 down to the
    start size, then a linear layer. `norm`: batch (DCGAN discriminator), layer or none (WGAN-GP critic: a
    per-sample penalty must not see other samples, so no BatchNorm)."""

    def __init__(self, size: tuple[int, int], channels: int = 3, base_channels: int = 64, norm: str = "batch") -> None:
        super().__init__()
        k = doublings((int(size[0]), int(size[1])))
        chans = widths(k, base_channels)[::-1]  # half the input size first
        start = (size[0] // 2**k, size[1] // 2**k)
        layers: list[nn.Module] = [nn.Conv2d(channels, chans[0], 4, 2, 1), nn.LeakyReLU(0.2, inplace=True)]
        for c_in, c_out in zip(chans[:-1], chans[1:], strict=True):
            layers += [nn.Conv2d(c_in, c_out, 4, 2, 1, bias=norm == "none"), *_norm(norm, c_out),
                       nn.LeakyReLU(0.2, inplace=True)]
        self.features = nn.Sequential(*layers)
        self.head = nn.Linear(chans[-1] * start[0] * start[1], 1)
        self.apply(init_weights)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x).flatten(1)).flatten()


def _norm(kind: str, channels: int) -> list[nn.Module]:
    if kind == "batch":
        return [nn.BatchNorm2d(channels)]
    if kind == "layer":  # LayerNorm over (C, H, W) of each sample, with a per-channel affine
        return [nn.GroupNorm(1, channels)]
    if kind == "none":
        return []
    raise ValueError(f"unknown normalisation {kind!r}")


def build_generator(params: dict[str, Any]) -> Generator:
    return Generator(tuple(params["size"]), params["channels"], params["latent"], params["base_channels"],
                     params["upsampling"])
