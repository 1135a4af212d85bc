"""Photometric copies of good images: what the same part looks like under other lighting, focus and sensor noise.

A feature memory holds only what training showed it. Fitted on one camera set-up, it scores a good part seen
through noisier or differently exposed optics as a defect (bottle under MVTec-Shift's photometric draw alone:
image AUROC 1.000 -> 0.61). `--photometric-copies K` adds K perturbed copies of every training image to the memory,
each drawn from `AUGMENT_RANGES` with the shift's own transforms (`shift.photometric`): brightness, contrast
and saturation within +-20 %, a Gaussian blur of 1 (none) to 5 pixels, and sensor noise with sigma up to 5 %
of the range. The geometry is untouched: misplacement is a defect, and alignment (`--align`) handles pose.
Draws are seeded by the copy, the run's seed and the image's relative path, so a refit sees the same copies.
"""

from __future__ import annotations

import zlib
from typing import Any

import numpy as np

from linewatch.data.dataset import Sample
from linewatch.data.shift import ShiftRanges, draw_params, is_grey, photometric

AUGMENT_RANGES = ShiftRanges(brightness=(0.8, 1.2), contrast=(0.8, 1.2), saturation=(0.8, 1.2),
                             blur_kernel=(1, 5), noise_sigma=(0.0, 0.05))


def augment_params(sample: Sample, copy: int, seed: int) -> dict[str, Any]:
    """The photometric draw of `copy` (1..K) of `sample` (the geometric draws are made but never applied, so
    the frame size they are drawn for does not matter)."""
    rng = np.random.default_rng([seed, copy, zlib.crc32(sample.rel.encode())])
    return draw_params(rng, (8, 8), AUGMENT_RANGES, vignetting=False)


def perturbed(image: np.ndarray, sample: Sample, copy: int, seed: int) -> np.ndarray:
    """`image` (RGB uint8) as copy `copy` of `sample` sees it."""
    return photometric(image, augment_params(sample, copy, seed), is_grey(image))
