"""Optional alignment of every frame to a reference view (rotation + shift, or affine).

Detectors with per-position statistics (PaDiM) need the part where the training parts were. With `--align`,
training picks a reference (the training image closest to the mean image, as a small grey thumbnail of about
`THUMB_SIDE`^2 pixels); the shared preprocessing then estimates each frame's motion against it, coarse to fine
on `LEVELS` pyramid levels, and warps the resized frame back. Two estimators:
- `lk` / `lk-affine` (PaDiM's default): inverse-compositional Lucas-Kanade (`features.lucas_kanade`), the
  reference's linearisation computed once; 0.2-0.6 ms per frame (40 x 104 to 64 x 64 thumbnails);
- `ecc` / `ecc-affine`: OpenCV's ECC, 40 iterations per level; 1.3-1.7 ms per frame.
The reference and the settings are stored in the bundle, so evaluation, export checks and the runtime align
exactly as training did. A frame that cannot be registered (ECC: no convergence; LK: no contrast; either: a
motion beyond `MAX_ANGLE_DEG` / `MAX_SHIFT` / `MIN_AREA`) is scored as it is.

A warp also brings in content the camera never saw (the replicated border where the frame ends). Features
near it describe the padding, not the part, so `unseen` marks the input pixels within `margin` pixels of
it, and scoring leaves those patches out (`scoring.score_outputs`). The margin is two cells of the coarsest
feature layer (`margin_for`): without it, a rotated good part scored highest in its corners (transistor,
rotated +-10 degrees, test-clean: image AUROC 0.636; with the margin 0.998).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from linewatch.bundle import BundleError
from linewatch.data import Sample, evenly_spaced, read_image
from linewatch.features import lucas_kanade

ALIGN_METHODS = ("none", "lk", "lk-affine", "ecc", "ecc-affine")
# method -> (motion, estimator)
MOTIONS = {"lk": ("euclidean", "lk"), "lk-affine": ("affine", "lk"),
           "ecc": ("euclidean", "ecc"), "ecc-affine": ("affine", "ecc")}
ECC_MOTIONS = {"euclidean": cv2.MOTION_EUCLIDEAN, "affine": cv2.MOTION_AFFINE}
REFERENCE_FILE = "align_reference.npy"
THUMB_SIDE = 64  # registration runs on ~64 x 64 grey thumbnails (256 px input: 1/4)
# ECC's pyramid levels: half the thumbnail, then the thumbnail (LK's: one per entry of `lucas_kanade.ITERATIONS`)
LEVELS = 2
ITERATIONS = 40  # ECC, per level
EPS = 1e-4  # ECC
# What a bundle records of each estimator, and what loading it checks against this linewatch's.
SETTINGS = {"ecc": {"levels": LEVELS, "iterations": ITERATIONS, "eps": EPS},
            "lk": {"levels": len(lucas_kanade.ITERATIONS), "iterations": list(lucas_kanade.ITERATIONS),
                   "tolerance_px": list(lucas_kanade.TOLERANCE_PX), "start_deg": lucas_kanade.START_DEG,
                   "accept_mse": lucas_kanade.ACCEPT_MSE}}
# Settings added after bundles were written with the estimator, and the value those bundles ran with.
SETTINGS_BEFORE = {"accept_mse": 0.0}
MAX_ANGLE_DEG = 30.0
MAX_SHIFT = 0.25  # of the image side
MIN_AREA = 0.6  # affine: the warp may change the area by at most this factor either way
REFERENCE_IMAGES = 64


def downscale_for(size: tuple[int, int]) -> int:
    """Integer factor that brings a model input to about THUMB_SIDE^2 pixels."""
    return max(1, round(math.sqrt(size[0] * size[1]) / THUMB_SIDE))


def thumbnail(image: np.ndarray, scale: int) -> np.ndarray:
    """Model-size RGB uint8 -> grey float32 at 1/scale (area average)."""
    grey = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY) if image.ndim == 3 else image
    size = (max(8, image.shape[1] // scale), max(8, image.shape[0] // scale))
    return cv2.resize(grey, size, interpolation=cv2.INTER_AREA).astype(np.float32)


@dataclass(frozen=True, eq=False)
class Aligner:
    """Registers model-size frames to `reference` (grey, 1/`downscale` of the model size)."""

    reference: np.ndarray
    downscale: int
    method: str = "lk"  # "lk" / "ecc": rotation + shift; "lk-affine" / "ecc-affine": also scale, aspect and shear
    margin: int = 0  # input pixels around unseen content that are not scored (0: only the unseen pixels)
    accept_mse: float = lucas_kanade.ACCEPT_MSE  # LK: see `lucas_kanade.ACCEPT_MSE`
    pyramid: list[np.ndarray] = field(init=False, repr=False, compare=False)  # ECC's reference levels
    lk: lucas_kanade.InverseCompositional | None = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.method not in MOTIONS:
            raise ValueError(f"unknown alignment {self.method!r}; choose one of {', '.join(MOTIONS)}")
        motion, estimator = MOTIONS[self.method]
        levels = [self.reference]
        if estimator == "ecc":
            for _ in range(LEVELS - 1):
                levels.insert(0, cv2.pyrDown(levels[0]))
        object.__setattr__(self, "pyramid", levels)
        object.__setattr__(self, "lk", lucas_kanade.InverseCompositional(self.reference, motion == "affine",
                                                                         self.accept_mse)
                           if estimator == "lk" else None)

    def warp_matrix(self, image: np.ndarray) -> np.ndarray | None:
        """The 2x3 warp from reference to frame coordinates (model pixels), or None."""
        frame = thumbnail(image, self.downscale)
        warp = self.lk.estimate(frame) if self.lk is not None else self._ecc(frame)
        if warp is None:
            return None
        warp[:, 2] *= self.downscale
        angle = math.degrees(math.atan2(float(warp[1, 0]), float(warp[0, 0])))
        shift = np.abs(warp[:, 2]) / np.array(image.shape[1::-1][:2], dtype=np.float32)
        area = float(np.linalg.det(warp[:, :2]))
        if abs(angle) > MAX_ANGLE_DEG or (shift > MAX_SHIFT).any() or not MIN_AREA < area < 1 / MIN_AREA:
            return None
        return warp

    def _ecc(self, frame: np.ndarray) -> np.ndarray | None:
        frames = [frame]
        for _ in range(LEVELS - 1):
            frames.insert(0, cv2.pyrDown(frames[0]))
        warp = np.eye(2, 3, dtype=np.float32)
        criteria = (cv2.TERM_CRITERIA_EPS | cv2.TERM_CRITERIA_COUNT, ITERATIONS, EPS)
        motion = ECC_MOTIONS[MOTIONS[self.method][0]]
        for level, (template, current) in enumerate(zip(self.pyramid, frames, strict=True)):
            if level:
                warp[:, 2] *= 2
            try:
                _, warp = cv2.findTransformECC(template, current, warp, motion, criteria, None, 3)
            except cv2.error:
                return None
        return warp

    def apply(self, image: np.ndarray, warp: np.ndarray) -> np.ndarray:
        """Model-size image -> the same frame rotated and shifted onto the reference."""
        height, width = image.shape[:2]
        return cv2.warpAffine(image, warp, (width, height), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                              borderMode=cv2.BORDER_REPLICATE)

    def unseen(self, warp: np.ndarray, size: tuple[int, int], grid: tuple[int, int] | None = None) -> np.ndarray | None:
        """(H, W) bool: aligned input pixels within `margin` of content from outside the frame, or None if
        the warp brings in none. Given the patch `grid` (whole cells whose sides divide the margin, as the
        feature strides and `margin_for` make them), the same per cell, (rows, columns): see `_unseen_cells`."""
        height, width = size
        if grid is not None and height % grid[0] == 0 and width % grid[1] == 0:
            cell = (height // grid[0], width // grid[1])
            if self.margin % cell[0] == 0 and self.margin % cell[1] == 0:
                return self._unseen_cells(warp, size, grid, cell)
        seen = cv2.warpAffine(np.full((height, width), 255, np.uint8), warp, (width, height),
                              flags=cv2.INTER_NEAREST | cv2.WARP_INVERSE_MAP, borderMode=cv2.BORDER_CONSTANT,
                              borderValue=0)
        outside = seen == 0
        if not outside.any():
            return None
        if self.margin:
            side = 2 * self.margin + 1
            outside = cv2.dilate(outside.view(np.uint8), np.ones((side, side), np.uint8)).view(bool)
        return outside

    def _unseen_cells(self, warp: np.ndarray, size: tuple[int, int], grid: tuple[int, int],
                      cell: tuple[int, int]) -> np.ndarray | None:
        """The cells `leave_out` would find unseen in `unseen`'s pixel mask, computed from the cells' corners.

        A cell is unseen when a pixel within `margin` of it samples outside the frame. Those pixels form a box,
        and the pixels that sample inside the frame (the nearest source pixel, as the pixel mask's warp takes
        it) form a convex region, so the box is inside when its corner pixels are: when the smallest and the
        largest source x and y over the corners, sums of per-row and per-column extremes, fall inside. Capsule
        bands: 0.025 instead of 0.17 ms per frame (with `leave_out`: 0.06 instead of 0.22); on 4,596 real and
        random warps, the same cells as the pixel mask."""
        height, width = size
        ys, xs = _corner_pixels(size, grid, cell, self.margin)
        (a, b, c), (d, e, f) = np.asarray(warp, np.float64).tolist()
        outside = np.zeros(grid, bool)
        for kx, ky, k, limit in ((a, b, c, width), (d, e, f, height)):
            # Per row / column the corner whose term is smaller (larger): which one depends on the sign.
            low = (ky * ys[int(ky < 0)] + k)[:, None] + kx * xs[int(kx < 0)]
            high = (ky * ys[int(ky >= 0)] + k)[:, None] + kx * xs[int(kx >= 0)]
            outside |= (low < -0.5) | (high >= limit - 0.5)
        return outside if outside.any() else None

    def save(self, directory: Path) -> tuple[dict[str, Any], str]:
        np.save(Path(directory) / REFERENCE_FILE, self.reference, allow_pickle=False)
        motion, estimator = MOTIONS[self.method]
        settings = {**SETTINGS[estimator], **({"accept_mse": self.accept_mse} if estimator == "lk" else {})}
        section = {"method": self.method, "motion": motion, "estimator": estimator, "reference": REFERENCE_FILE,
                   "downscale": self.downscale, **settings, "max_angle_deg": MAX_ANGLE_DEG,
                   "max_shift": MAX_SHIFT, "margin_px": self.margin}
        return section, REFERENCE_FILE

    @classmethod
    def load(cls, directory: Path, section: dict[str, Any]) -> Aligner:
        if section.get("method") not in MOTIONS:
            raise BundleError(f"{directory}: unknown alignment {section.get('method')!r}; this linewatch aligns with "
                              f"{', '.join(MOTIONS)}")
        expected = SETTINGS[MOTIONS[section["method"]][1]]
        recorded = {k: section.get(k, SETTINGS_BEFORE.get(k)) for k in expected}
        differs = {k: v for k, v in recorded.items() if v != expected[k] and k not in SETTINGS_BEFORE}
        if differs:
            raise BundleError(f"{directory}: alignment settings {differs} differ from this linewatch's {expected}; "
                             f"retrain it with inspect-train")
        reference = np.load(Path(directory) / section["reference"], allow_pickle=False)
        # Bundles from before the margin scored every aligned pixel; they keep doing so.
        return cls(reference, int(section["downscale"]), section["method"], int(section.get("margin_px", 0)),
                   float(recorded.get("accept_mse", lucas_kanade.ACCEPT_MSE)))


@lru_cache(maxsize=16)
def _corner_pixels(size: tuple[int, int], grid: tuple[int, int], cell: tuple[int, int],
                   margin: int) -> tuple[np.ndarray, np.ndarray]:
    """Per cell row (column), the first and last pixel row (column) within `margin` of it, clipped to the image:
    (2, rows) and (2, columns), first above last."""
    rows, cols = np.arange(grid[0]) * cell[0], np.arange(grid[1]) * cell[1]
    ys = np.clip(np.stack([rows - margin, rows + cell[0] - 1 + margin]), 0, size[0] - 1).astype(np.float64)
    xs = np.clip(np.stack([cols - margin, cols + cell[1] - 1 + margin]), 0, size[1] - 1).astype(np.float64)
    ys.setflags(write=False)
    xs.setflags(write=False)
    return ys, xs


def margin_for(layers: Sequence[str]) -> int:
    """Two cells of the coarsest feature layer (`layerN` has stride 2^(N+1)): how far padding still reaches
    into a patch's features after the neighbourhood aggregation."""
    return 2 * max(2 ** (int(name.removeprefix("layer")) + 1) for name in layers)


def reference_from_samples(samples: Sequence[Sample], size: tuple[int, int], method: str = "lk",
                           margin: int = 0, limit: int = REFERENCE_IMAGES) -> Aligner:
    """The reference of up to `limit` training images, evenly spaced over the sorted split."""
    from linewatch.features.preprocess import resize

    images = [resize(read_image(s.path), size) for s in evenly_spaced(samples, limit)]
    return build_reference(images, method, margin)


def build_reference(images: Sequence[np.ndarray], method: str = "lk", margin: int = 0) -> Aligner:
    """Reference = the thumbnail of the image closest to the mean thumbnail (a sharp, typical view)."""
    if not images:
        raise ValueError("alignment needs at least one training image")
    scale = downscale_for(images[0].shape[:2])
    thumbs = np.stack([thumbnail(image, scale) for image in images])
    mean = thumbs.mean(axis=0)
    closest = int(np.argmin(((thumbs - mean) ** 2).sum(axis=(1, 2))))
    return Aligner(thumbs[closest].copy(), scale, method, margin)
