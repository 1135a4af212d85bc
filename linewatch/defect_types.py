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

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from linewatch.data import Sample, read_mask
from linewatch.metrics.classes import GOOD
from linewatch.metrics.masks import pixel_threshold, similarities_from_counts
from linewatch.metrics.ssim import blur, from_moments, moments

MASKS_FILE = "defect_masks.npy"
GATES = ("verdict", "mask")
COMPARE_SIDE = 64  # masks are compared on a grid of at most 64 cells per side


def coarse(mask: np.ndarray) -> np.ndarray:
    """A boolean mask on the comparison grid: a cell is set when any of its pixels is (thin defects survive).

    Comparing on <= 64 x 64 cells costs ~1/16 of 256 x 256 per reference mask, which the runtime pays per
    defective frame; PatchCore on transistor classifies as well or better on it (72.7% vs 71.6%)."""
    height, width = mask.shape
    factor = -(-max(height, width) // COMPARE_SIDE)
    if factor == 1:
        return np.asarray(mask, bool)
    size = (max(1, round(width / factor)), max(1, round(height / factor)))
    return cv2.resize(np.asarray(mask, np.float32), size, interpolation=cv2.INTER_AREA) > 0


def mask_at(sample: Sample, image_shape: tuple[int, ...], size: tuple[int, int]) -> np.ndarray | None:
    """The sample's ground truth at the map size (H, W): empty for good images, None for unmasked defects."""
    if sample.label == 0:
        return np.zeros(size, bool)
    if sample.mask is None:
        return None
    mask = read_mask(sample.mask, tuple(image_shape[:2])).astype(np.uint8)
    return cv2.resize(mask, (size[1], size[0]), interpolation=cv2.INTER_NEAREST).astype(bool)


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
        if self.masks is not None and coarse(np.zeros(map_shape[-2:], bool)).shape != self.masks.shape[1:]:
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
            self._moments = {"stack": stack, "flat": stack.reshape(-1, count), "mu": mu.reshape(-1, count),
                             "var": var.reshape(-1, count), "areas": stack.sum(axis=(0, 1)),
                             "empty": empty.reshape(-1, count),
                             "empty_sum": empty.reshape(-1, count).sum(axis=0, dtype=np.float64)}
        return self._moments

    def similarities(self, amap: np.ndarray) -> dict[str, float]:
        """Best weighted similarity of the binarised map to each type's reference masks on the comparison grid
        (`mask_similarity` of every reference at once: the K covariances are blurred as K channels of one
        image, and the counts and the weighted combination are numpy over K)."""
        if not self.can_classify:
            raise ValueError("this bundle holds no labelled defect masks")
        ref = self._references()
        self.compare_shape(np.shape(amap))
        predicted = coarse(self.binarise(amap)).astype(np.float32)
        mu, var = moments(predicted)
        near = np.flatnonzero(mu)  # cells whose window holds a predicted cell; elsewhere SSIM is `empty`'s
        ssim_sum = ref["empty_sum"]
        if near.size:
            count = ref["flat"].shape[1]
            mu_near, var_near = mu.ravel()[near, None], var.ravel()[near, None]
            cov = blur(predicted[:, :, None] * ref["stack"]).reshape(-1, count)[near] - mu_near * ref["mu"][near]
            ssim_near = from_moments(mu_near, var_near, ref["mu"][near], ref["var"][near], cov)
            ssim_sum = ssim_sum - ref["empty"][near].sum(axis=0, dtype=np.float64) + ssim_near.sum(axis=0)
        ssim = ssim_sum / predicted.size
        inter = np.rint(predicted.ravel() @ ref["flat"])
        values = similarities_from_counts(inter, float(predicted.sum()), ref["areas"], predicted.size, ssim)
        best: dict[str, float] = {}
        for label, value in zip(self.labels, values["combined"].tolist(), strict=True):
            best[label] = max(value, best.get(label, -1.0))
        return best

    def defect_type(self, amap: np.ndarray) -> tuple[str, float]:
        """The most similar defect type and its similarity (ties: the first type alphabetically)."""
        values = self.similarities(amap)
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
