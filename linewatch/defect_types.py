"""Pixel threshold and defect-type classification from anomaly maps, for every detector.

Calibrated by `inspect-train` on val-clean (when its images have ground truth) and stored in the bundle:
the pixel threshold (`metrics.masks.pixel_threshold`) and, when val-clean has labelled defect masks, those
masks on a comparison grid of at most 64 x 64 cells (`defect_masks.npy`) with their defect types. A map is
binarised at the pixel threshold, brought to that grid and compared with every stored mask
(`metrics.masks.mask_similarity`); the defect type is the type of the most similar mask (the reference GAN
study's classifier). Which images count as good:
- `verdict` (the bundle's gate, also what the runtime publishes): the image score is below the threshold;
- `mask` (the reference study's rule): the binarised map is empty.
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

from linewatch.data import Sample, read_mask
from linewatch.metrics.classes import GOOD
from linewatch.metrics.masks import pixel_threshold, similarities_from_counts
from linewatch.metrics.ssim import WINDOW, blur, from_moments, moments

MASKS_FILE = "defect_masks.npy"
GATES = ("verdict", "mask")
COMPARE_SIDE = 64  # masks are compared on a grid of at most 64 cells per side
# From this many references SSIM is pruned (ms per defective frame: bottle's 19 0.86 pruned vs 1.03 not,
# transistor's 12 0.88 not vs 1.15 pruned: two passes cost more than they save on a few masks).
_PRUNE_FROM = 16
_SSIM_SLACK = 1e-2  # SSIM <= 1; float32 variances (E[x^2] - mu^2, ~1e-7 off) over C2 = 9e-4 can overshoot it by ~4e-4


def coarse(mask: np.ndarray) -> np.ndarray:
    """A boolean mask on the comparison grid: a cell is set when any of its pixels is (thin defects survive).

    Comparing on <= 64 x 64 cells costs ~1/16 of 256 x 256 per reference mask, which the runtime pays per
    defective frame; PatchCore on transistor classifies as well or better on it (72.7% vs 71.6%). A cell holds
    every pixel it overlaps, even in part (what cv2's INTER_AREA averages over, and so `> 0` of it), counted
    from an integral image: 0.05 instead of 0.09 ms for a 160 x 416 map (capsule bands), where the cells are
    6.96 x 7.05 px."""
    mask = np.asarray(mask, bool)
    grid = grid_shape(mask.shape)
    if grid == mask.shape:
        return mask
    (top, bottom), (left, right) = _cell_spans(mask.shape[0], grid[0]), _cell_spans(mask.shape[1], grid[1])
    top, bottom = top[:, None], bottom[:, None]
    counts = cv2.integral(mask.view(np.uint8))
    return (counts[bottom, right] - counts[top, right] - counts[bottom, left] + counts[top, left]) > 0


@lru_cache(maxsize=16)
def _cell_spans(pixels: int, cells: int) -> tuple[np.ndarray, np.ndarray]:
    """Per cell, the first pixel it overlaps and one past the last (indices into an integral image): cell i
    covers [i * pixels / cells, (i + 1) * pixels / cells). Overlaps are whole multiples of 1 / cells >= 1 / 64,
    above the 1e-3 under which cv2's INTER_AREA drops one, so the two agree."""
    edges = np.arange(cells + 1) * pixels
    return edges[:-1] // cells, -(-edges[1:] // cells)  # exact integer floor and ceiling


def grid_shape(shape: tuple[int, ...]) -> tuple[int, int]:
    """The comparison grid (rows, columns) of an (H, W) map: its size shrunk by one whole factor to at most
    `COMPARE_SIDE` per side."""
    height, width = shape[-2:]
    factor = -(-max(height, width) // COMPARE_SIDE)
    return (max(1, round(height / factor)), max(1, round(width / factor)))


def mask_at(sample: Sample, image_shape: tuple[int, ...], size: tuple[int, int]) -> np.ndarray | None:
    """The sample's ground truth at the map size (H, W): empty for good images, None for unmasked defects."""
    if sample.label == 0:
        return np.zeros(size, bool)
    if sample.mask is None:
        return None
    mask = read_mask(sample.mask, tuple(image_shape[:2])).astype(np.uint8)
    return cv2.resize(mask, (size[1], size[0]), interpolation=cv2.INTER_NEAREST).astype(bool)


class _Near:
    """Where a predicted grid's SSIM against a reference differs from an empty prediction's: the cells whose
    SSIM window holds a predicted cell (`ys`, `xs`, flat `cells`, with the prediction's local mean and
    variance there), and `box`, the crop that blurring (prediction x reference) needs for them: the predicted
    cells plus two window radii, so a crop edge inside the grid only mirrors zeros and the crop's blur equals
    the whole grid's on every near cell."""

    def __init__(self, predicted: np.ndarray) -> None:
        self.predicted = predicted
        mu = blur(predicted)
        var = mu - mu * mu  # `moments`' blur(x * x) - mu^2 with x * x = x: a 0/1 grid, the same floats, one blur fewer
        self.ys, self.xs = np.nonzero(mu)
        self.cells = self.ys * predicted.shape[1] + self.xs
        self.mu, self.var = mu[self.ys, self.xs][:, None], var[self.ys, self.xs][:, None]
        if self.cells.size:
            margin = 2 * (WINDOW // 2)
            ys, xs = np.nonzero(predicted)
            self.box = (slice(max(0, ys.min() - margin), min(predicted.shape[0], ys.max() + margin + 1)),
                        slice(max(0, xs.min() - margin), min(predicted.shape[1], xs.max() + margin + 1)))


@dataclass
class DefectTypes:
    """A calibrated pixel threshold and, optionally, labelled reference masks (K, H, W)."""

    threshold: float
    facts: dict[str, Any]
    masks: np.ndarray | None = None
    labels: tuple[str, ...] = ()
    _moments: dict[str, np.ndarray] | None = field(default=None, repr=False)

    @property
    def types(self) -> list[str]:
        return sorted(set(self.labels))

    @property
    def can_classify(self) -> bool:
        return self.masks is not None and len(self.labels) > 0

    def binarise(self, amap: np.ndarray) -> np.ndarray:
        return np.asarray(amap) >= self.threshold

    def compare_shape(self, map_shape: tuple[int, ...]) -> None:
        if self.masks is not None and grid_shape(map_shape) != self.masks.shape[1:]:
            raise ValueError(f"a {map_shape[-2]}x{map_shape[-1]} map does not fit reference masks of "
                             f"{self.masks.shape[1]}x{self.masks.shape[2]} cells")

    def _references(self) -> dict[str, np.ndarray]:
        """The stored masks as (pixels, K) columns, with their pixel counts and SSIM moments, computed once
        (classification runs per defective frame). `empty` is each mask's SSIM map against an empty
        prediction and `empty_sum` its sum: a predicted mask's SSIM equals it wherever the prediction's window
        holds no set cell, so only the cells near the prediction are computed per frame."""
        if self._moments is None:
            stack = np.ascontiguousarray(np.asarray(self.masks, dtype=np.float32).transpose(1, 2, 0))
            mu, var = moments(stack)
            zero = np.zeros(stack.shape[:2] + (1,), np.float32)
            empty = from_moments(zero, zero, mu, var, np.zeros_like(mu))
            count = stack.shape[2]
            types, codes = np.unique(np.array(self.labels), return_inverse=True)
            self._moments = {"stack": stack, "flat": stack.reshape(-1, count), "mu": mu.reshape(-1, count),
                             "var": var.reshape(-1, count), "areas": stack.sum(axis=(0, 1)),
                             "empty": empty.reshape(-1, count),
                             "empty_sum": empty.reshape(-1, count).sum(axis=0, dtype=np.float64),
                             "codes": codes, "members": [np.flatnonzero(codes == c) for c in range(len(types))],
                             "everyone": [np.arange(count)], "no_type": np.zeros(count, np.intp)}
        return self._moments

    def similarities(self, amap: np.ndarray) -> dict[str, float]:
        """Best weighted similarity of the binarised map to each type's reference masks on the comparison grid
        (`mask_similarity` against every reference, computed as `_combined` describes)."""
        return self._best_per_type(self._combined(amap, per_type=True))

    def _best_per_type(self, combined: np.ndarray) -> dict[str, float]:
        best: dict[str, float] = {}
        for label, value in zip(self.labels, combined.tolist(), strict=True):
            if not math.isnan(value):  # NaN: pruned, cannot beat the best it was compared with
                best[label] = max(value, best.get(label, -1.0))
        return best

    def _combined(self, amap: np.ndarray, per_type: bool) -> np.ndarray:
        """Each reference's weighted similarity to the binarised map, NaN where it cannot matter: computed so
        that the runtime can afford it per defective frame. The pixel counts (IoU, Dice, accuracy) of all K
        masks are one sum of rows; SSIM (weight 0.1, at most 1) is what costs, so from `_PRUNE_FROM` references
        on it is computed only where it can change a best: first for the reference with the highest bound (its
        counts with SSIM = 1) of each type (`per_type`) or of all, then for those whose bound exceeds that exact
        value. A classification needs only the overall best, which prunes more: capsule bands' 33 masks, 12
        SSIMs instead of 21 per frame, 0.32 instead of 0.46 ms. The SSIMs go as channels of one blur."""
        if not self.can_classify:
            raise ValueError("this bundle holds no labelled defect masks")
        ref = self._references()
        self.compare_shape(np.shape(amap))
        predicted = coarse(self.binarise(amap)).astype(np.float32)
        # Intersections as a sum of the predicted cells' rows, not a BLAS product: OpenBLAS's threads would wait
        # for cores the runtime's decoders hold (magnetic tile, 118 masks, beside a training job: 8.4 vs 3.0 ms).
        inter = ref["flat"][np.flatnonzero(predicted)].sum(axis=0, dtype=np.float64)
        counts = (inter, float(predicted.sum()), ref["areas"], predicted.size)
        near = _Near(predicted)
        ssim = np.full(len(self.labels), np.nan)
        if len(self.labels) < _PRUNE_FROM:  # two passes cost more than they save on a few masks
            ssim[:] = self._mean_ssim(near, np.arange(len(self.labels)))
        else:
            groups, group_of = (ref["members"], ref["codes"]) if per_type else (ref["everyone"], ref["no_type"])
            bound = similarities_from_counts(*counts, np.full(len(self.labels), 1.0 + _SSIM_SLACK))["combined"]
            first = np.array([members[np.argmax(bound[members])] for members in groups])
            ssim[first] = self._mean_ssim(near, first)
            floor = similarities_from_counts(*counts, ssim)["combined"][first][group_of]  # its group's best so far
            rest = np.flatnonzero((bound > floor) & np.isnan(ssim))
            if rest.size:
                ssim[rest] = self._mean_ssim(near, rest)
        return similarities_from_counts(*counts, ssim)["combined"]

    def _mean_ssim(self, near: _Near, columns: np.ndarray) -> np.ndarray:
        """Mean SSIM of the predicted grid against the references `columns`: the cached SSIM against an empty
        mask, corrected on the cells near the prediction (see `_Near`)."""
        ref = self._references()
        ssim_sum = ref["empty_sum"][columns]
        if near.cells.size:
            rows = near.cells[:, None]
            mu_ref, var_ref = ref["mu"][rows, columns], ref["var"][rows, columns]
            box = near.box
            product = blur(near.predicted[box][:, :, None] * ref["stack"][box][:, :, columns])
            cov = product[near.ys - box[0].start, near.xs - box[1].start] - near.mu * mu_ref
            ssim_near = from_moments(near.mu, near.var, mu_ref, var_ref, cov)
            ssim_sum = ssim_sum - ref["empty"][rows, columns].sum(axis=0, dtype=np.float64) + ssim_near.sum(axis=0)
        return ssim_sum / near.predicted.size

    def defect_type(self, amap: np.ndarray) -> tuple[str, float]:
        """The most similar defect type and its similarity (ties: the first type alphabetically)."""
        values = self._best_per_type(self._combined(amap, per_type=False))
        label = max(sorted(values), key=lambda key: values[key])
        return label, values[label]

    def classify(self, amap: np.ndarray, defective: bool, gate: str = "verdict") -> tuple[str, float | None]:
        """`good` (similarity None) or the defect type; `defective` is the image verdict (see the gates)."""
        if gate not in GATES:
            raise ValueError(f"gate {gate!r} is not one of {', '.join(GATES)}")
        good = not defective if gate == "verdict" else not self.binarise(amap).any()
        return (GOOD, None) if good else self.defect_type(amap)

    def save(self, directory: Path) -> tuple[dict[str, Any], list[str]]:
        section: dict[str, Any] = {"pixel_threshold": float(self.threshold), **self.facts, "classifier": None}
        if not self.can_classify:
            return section, []
        np.save(Path(directory) / MASKS_FILE, np.asarray(self.masks, dtype=np.uint8), allow_pickle=False)
        section["classifier"] = {"file": MASKS_FILE, "labels": list(self.labels), "types": self.types,
                                 "gate": "verdict", "grid": list(self.masks.shape[1:]),
                                 "similarity": "weighted: SSIM 0.1, IoU 0.4, Dice 0.4, pixel accuracy 0.1"}
        return section, [MASKS_FILE]

    @classmethod
    def load(cls, directory: Path, section: dict[str, Any] | None) -> DefectTypes | None:
        """From the manifest's `masks` section; None for bundles without one (trained before it existed)."""
        if not section:
            return None
        facts = {k: v for k, v in section.items() if k not in ("pixel_threshold", "classifier")}
        classifier = section.get("classifier")
        if not classifier:
            return cls(float(section["pixel_threshold"]), facts)
        masks = np.stack([coarse(m) for m in np.load(Path(directory) / classifier["file"], allow_pickle=False)])
        return cls(float(section["pixel_threshold"]), facts, masks, tuple(classifier["labels"]))


def calibrate_defect_types(samples: Sequence[Sample], maps: Sequence[np.ndarray],
                           masks: Sequence[np.ndarray | None], method: str = "f1") -> DefectTypes | None:
    """From val-clean's samples, their maps and `mask_at` masks at the model size; None without ground truth."""
    try:
        threshold, facts = pixel_threshold(maps, masks, method)
    except ValueError:
        return None
    labelled = [(s.defect, m) for s, m in zip(samples, masks, strict=True) if s.label and m is not None and m.any()]
    if not labelled:
        return DefectTypes(threshold, facts)
    return DefectTypes(threshold, facts, np.stack([coarse(m) for _, m in labelled]), tuple(d for d, _ in labelled))
