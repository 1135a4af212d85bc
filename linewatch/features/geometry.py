"""The model's input geometry from the data: `--image-size auto[:N]` keeps the parts' aspect ratio.

Stretching an elongated part (200 x 512 px) to a square squeezes it 2.5:1 along its length, so its
defects lose half their pixels there. `auto:N` keeps about N x N pixels (the same compute as the square
size) in the median aspect ratio of the training images, each side a multiple of 32 (the deepest
backbone stride, so every feature map tiles the input exactly). It is resolved once, when training
starts; the bundle then records a plain (H, W) like any other size.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from linewatch.config import AutoSize
from linewatch.data import DataError, Sample, read_image

MULTIPLE = 32
SAMPLE_LIMIT = 64  # images read to find the median shape (evenly spaced over the sorted training set)
MAX_ASPECT = 8.0


def median_aspect(samples: Sequence[Sample], limit: int = SAMPLE_LIMIT) -> tuple[float, int]:
    """Median height / width over up to `limit` evenly spaced samples; returns (aspect, images read)."""
    if not samples:
        raise DataError("no training images to take the aspect ratio from")
    picks = np.unique(np.linspace(0, len(samples) - 1, min(limit, len(samples))).round().astype(int))
    ratios = [h / w for h, w, _ in (read_image(samples[i].path).shape for i in picks)]
    return float(np.median(ratios)), len(picks)


def auto_input_size(aspect: float, side: int, multiple: int = MULTIPLE) -> tuple[int, int]:
    """(H, W) with H / W close to `aspect`, H * W close to side^2, each a multiple of `multiple`."""
    aspect = min(max(aspect, 1 / MAX_ASPECT), MAX_ASPECT)
    height = max(multiple, round(side * math.sqrt(aspect) / multiple) * multiple)
    width = max(multiple, round(side / math.sqrt(aspect) / multiple) * multiple)
    return height, width


def resolve_image_size(options: dict[str, Any], train: Sequence[Sample]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Options with a concrete `image_size`, and the manifest's record of how it was chosen."""
    size = options["image_size"]
    if not isinstance(size, AutoSize):
        return options, {"rule": "given", "size": list(size)}
    aspect, read = median_aspect(train)
    chosen = auto_input_size(aspect, size.side)
    record = {"rule": str(size), "median_aspect_h_over_w": round(aspect, 4), "images_read": read,
              "multiple": MULTIPLE, "size": list(chosen)}
    return {**options, "image_size": chosen}, record
