"""Detectors, one folder each; `load_detector` rebuilds one from a bundle's detector section."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from linewatch.bundle import BundleError
from linewatch.models.base import Detector

DETECTOR_KINDS = ("patchcore", "padim")


def load_detector(directory: Path, section: dict[str, Any], device: str = "cpu") -> Detector:
    kind = section.get("kind")
    if kind == "patchcore":
        from linewatch.models.patchcore.model import PatchCore

        return PatchCore.load(directory, section, device=device)
    if kind == "padim":
        from linewatch.models.padim.model import Padim

        return Padim.load(directory, section, device=device)
    raise BundleError(f"unknown detector kind {kind!r} in bundle {directory}; known: {', '.join(DETECTOR_KINDS)}")
