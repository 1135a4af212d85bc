"""Image preprocessing shared by training, evaluation, export checks and the runtime.

Frames arrive as RGB uint8 (see `linewatch.data.io`); one-channel networks' frames are turned grey first
(resizing one channel instead of three: 0.75 instead of 1.27 ms for a 900 x 900 frame to 128 px), then
resized to the model's size and laid out as float32 CHW in 0..255. Normalization happens inside the
network (and so inside the exported graph), so the runtime never needs to know a network's mean/std.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import cv2
import numpy as np

if TYPE_CHECKING:
    from linewatch.features.align import Aligner

INTENSITIES = ("none", "standardize")  # what a Preprocessor applies
INTENSITY_CHOICES = ("auto", *INTENSITIES)  # what --intensity accepts: `auto` is decided by `auto_intensity`
STANDARD_MEAN, STANDARD_STD = 128.0, 48.0  # what `standardize` maps every channel to (grey levels)
# Spread of the training images' mean grey levels (std / mean) above which `auto` standardises: MVTec's bottle,
# capsule and transistor 0.010-0.037 (one lighting), magnetic tile 0.26-0.28 (README: "Intensity").
AUTO_SPREAD = 0.10
_GREY = (0.299, 0.587, 0.114)  # cv2's RGB -> grey weights
_STRETCH = "stretch; cv2 INTER_LINEAR to a whole multiple m of the size (shrink factor <= 2), then INTER_AREA by m"
RESIZE_POLICY = f"{_STRETCH}; one-channel models turn grey before resizing"
# Bundles written before grey-first: same resize, grey after it (inputs differ by at most one grey level).
LEGACY_RESIZE_POLICY = _STRETCH


def resize(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Stretch to (height, width) with area averaging at a fraction of INTER_AREA's cost.

    cv2's INTER_AREA is slow at fractional factors (900 -> 256 px: 4.7 ms) and fast at whole ones. A
    bilinear step to m times the size (m chosen so that step shrinks by at most 2, where bilinear still
    reads every pixel) followed by an exact m x m box average costs 1.0 ms and differs from INTER_AREA
    by 0.3 grey levels on average (bottle). Enlarging is plain bilinear.
    """
    height, width = size
    my = max(1, math.ceil(image.shape[0] / (2 * height)))
    mx = max(1, math.ceil(image.shape[1] / (2 * width)))
    if image.shape[:2] != (height * my, width * mx):
        image = cv2.resize(image, (width * mx, height * my), interpolation=cv2.INTER_LINEAR)
    if mx > 1 or my > 1:
        image = cv2.resize(image, (width, height), interpolation=cv2.INTER_AREA)
    return image


def standardize(chw: np.ndarray, mean: np.ndarray, std: np.ndarray) -> np.ndarray:
    """Each channel of a float32 CHW input, whose per-channel `mean` and `std` are given, to mean
    `STANDARD_MEAN` and standard deviation `STANDARD_STD`, clipped to 0..255, in place.

    A global brightness or contrast change of the frame (lighting, exposure, camera gain) vanishes, so a memory
    of good parts built under one lighting still matches them under another: on magnetic tile, whose tiles
    differ in brightness, PatchCore's test image AUROC rose 0.916 -> 0.942 (README). The standard deviation
    is floored at one grey level, so a flat frame stays flat instead of amplifying its noise. In place on the
    CHW copy the layout needs anyway: +0.25 ms per 256 x 256 RGB frame instead of +1.0 for a separate copy.
    """
    scale = (STANDARD_STD / np.maximum(np.ravel(std), 1.0)).astype(np.float32)
    chw *= scale[:, None, None]
    chw += (STANDARD_MEAN - np.ravel(mean) * scale).astype(np.float32)[:, None, None]
    return np.clip(chw, 0.0, 255.0, out=chw)


def lighting_spread(images: Sequence[np.ndarray]) -> float:
    """How much the lighting of RGB images varies: the standard deviation of their mean grey levels over the
    mean of them (a grey mean needs no resize: any area-preserving resize keeps it)."""
    if not images:
        raise ValueError("lighting_spread needs at least one image")
    means = np.array([np.dot(cv2.mean(image)[:3], _GREY) for image in images])
    return float(means.std() / max(float(means.mean()), 1.0))


def auto_intensity(spread: float) -> str:
    """`--intensity auto`: standardise when the good parts' lighting varies (`AUTO_SPREAD`). Val-clean cannot
    decide it: its good images come from the training folder, under the training lighting, so it ranks a lighting
    change it never shows as a tie (magnetic tile, layers 3+4: val 0.9536 vs 0.9530 standardised or not, while
    test-clean, whose good tiles are lit otherwise, gave its config 0.942 vs 0.916)."""
    return "standardize" if spread > AUTO_SPREAD else "none"


@dataclass(frozen=True)
class Preprocessor:
    """Resize to (height, width), optionally align to the bundle's reference view, keep RGB (3 channels) or
    convert to grey (1; before resizing unless `grey_first` is off, as in legacy bundles), optionally
    `standardize` each channel (`intensity`), as float32 CHW. With alignment, `prepare` also returns the
    frame's warp, which `restore` uses to bring an anomaly map back to the frame's own geometry."""

    size: tuple[int, int]
    channels: int = 3
    align: Aligner | None = None
    grey_first: bool = True
    intensity: str = "none"

    def __post_init__(self) -> None:
        if self.channels not in (1, 3):
            raise ValueError(f"channels must be 1 (grey) or 3 (RGB), got {self.channels}")
        if self.intensity not in INTENSITIES:
            raise ValueError(f"intensity must be one of {', '.join(INTENSITIES)}, got {self.intensity!r}")

    def prepare(self, image: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """The model input and the 2x3 warp (reference -> frame, model pixels) it was aligned with, if any."""
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise ValueError(f"expected an HxWx3 uint8 RGB image, got shape {image.shape} {image.dtype}")
        if self.channels == 1 and self.grey_first:
            image = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
        resized = resize(image, self.size)
        warp = self.align.warp_matrix(resized) if self.align is not None else None
        if warp is not None:
            resized = self.align.apply(resized, warp)
        if self.channels == 1 and resized.ndim == 3:
            resized = cv2.cvtColor(resized, cv2.COLOR_RGB2GRAY)
        if resized.ndim == 2:
            chw = resized[None].astype(np.float32)
        else:
            chw = np.ascontiguousarray(resized.transpose(2, 0, 1), dtype=np.float32)
        if self.intensity == "standardize":
            standardize(chw, *cv2.meanStdDev(resized))
        return chw, warp

    def __call__(self, image: np.ndarray) -> np.ndarray:
        return self.prepare(image)[0]

    def unseen(self, warps: Sequence[np.ndarray | None],
               grid: tuple[int, int] | None = None) -> list[np.ndarray | None] | None:
        """Per frame, the aligned input's pixels (or, given the patch `grid`, cells) that scoring leaves out
        (`Aligner.unseen`); None if none."""
        if self.align is None:
            return None
        masks = [None if warp is None else self.align.unseen(warp, self.size, grid) for warp in warps]
        return masks if any(mask is not None for mask in masks) else None

    def restore(self, anomaly_map: np.ndarray, warp: np.ndarray | None) -> np.ndarray:
        """A map computed on an aligned input, moved back onto the frame (identity without a warp)."""
        if warp is None:
            return anomaly_map
        height, width = anomaly_map.shape
        return cv2.warpAffine(anomaly_map, warp, (width, height), flags=cv2.INTER_LINEAR,
                              borderMode=cv2.BORDER_REPLICATE)

    def batch(self, images: Sequence[np.ndarray]) -> np.ndarray:
        return np.stack([self(image) for image in images])
