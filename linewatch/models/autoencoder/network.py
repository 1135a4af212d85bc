"""The convolutional autoencoder and its residual map, as one exportable network.

Reference design: strided 4x4 convolutions 1 -> 32 -> 64 -> 128 channels (BatchNorm, ReLU, dropout in the
encoder), an optional 1x1 bottleneck, and mirrored transposed convolutions ending in a sigmoid to [0, 1].
`forward` takes the runtime's input (0..255) and returns the per-pixel residual, so the exported graph is
the whole detector up to the scorer.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from linewatch.models.autoencoder.loss import residual_map


def _down(c_in: int, c_out: int, dropout: float) -> nn.Sequential:
    layers: list[nn.Module] = [nn.Conv2d(c_in, c_out, 4, stride=2, padding=1, bias=False), nn.BatchNorm2d(c_out),
                               nn.ReLU(inplace=True)]
    if dropout > 0:
        layers.append(nn.Dropout2d(dropout))
    return nn.Sequential(*layers)


def _up(c_in: int, c_out: int, last: bool) -> nn.Sequential:
    conv = nn.ConvTranspose2d(c_in, c_out, 4, stride=2, padding=1, bias=last)
    if last:
        return nn.Sequential(conv, nn.Sigmoid())
    return nn.Sequential(conv, nn.BatchNorm2d(c_out), nn.ReLU(inplace=True))


def _pointwise(c_in: int, c_out: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(c_in, c_out, 1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True))


class ConvAutoencoder(nn.Module):
    """images (N, C, H, W) in 0..255 -> residual (N, 1, H, W); H and W must be multiples of 2**depth."""

    def __init__(self, channels: int = 1, depth: int = 3, base_channels: int = 32, bottleneck: int | None = None,
                 dropout: float = 0.2, residual: str = "l2") -> None:
        super().__init__()
        widths = [base_channels * 2**i for i in range(depth)]
        encoder = [_down(c_in, c_out, dropout) for c_in, c_out in zip([channels, *widths[:-1]], widths, strict=True)]
        decoder = [_up(c_in, c_out, last=i == depth - 1)
                   for i, (c_in, c_out) in enumerate(zip(widths[::-1], [*widths[-2::-1], channels], strict=True))]
        if bottleneck:
            encoder.append(_pointwise(widths[-1], bottleneck))
            decoder.insert(0, _pointwise(bottleneck, widths[-1]))
        self.encoder = nn.Sequential(*encoder)
        self.decoder = nn.Sequential(*decoder)
        self.residual = residual
        self.stride = 2**depth

    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        """[0, 1] images -> [0, 1] reconstructions."""
        return self.decoder(self.encoder(x))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = images / 255.0
        return residual_map(x, self.reconstruct(x), self.residual)


def build(params: dict[str, Any]) -> ConvAutoencoder:
    return ConvAutoencoder(**params)
