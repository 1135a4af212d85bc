"""The detector registry: each detector's options (types, defaults), fit, scorer loading and network building.

The training CLI, YAML validation, bundle loading and the conformance tests all derive from it, so a new
detector is a folder under `models/` with a `spec.py` defining `SPEC`, plus one line in `_MODULES`.
Spec modules import no torch at module level: the runtime loads scorers through here.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from linewatch.bundle import BundleError
from linewatch.config import ConfigError, Option
from linewatch.models.base import Detector, FitContext, Fitted

_MODULES = {
    "patchcore": "linewatch.models.patchcore.spec",
    "padim": "linewatch.models.padim.spec",
    "autoencoder": "linewatch.models.autoencoder.spec",
    "ganomaly": "linewatch.models.ganomaly.spec",
    "gan": "linewatch.models.gan.spec",
}
DETECTOR_KINDS = tuple(_MODULES)


@dataclass(frozen=True)
class DetectorSpec:
    """One detector. `defaults` overrides option defaults for it (image size, batch size, epochs); `quick`
    holds options that train in seconds on tiny images (tests and the conformance suite use them)."""

    kind: str
    summary: str
    fit: Callable[[FitContext], Fitted]
    load: Callable[[Path, dict[str, Any], str], Detector]
    build_network: Callable[[dict[str, Any]], Any]
    options: Mapping[str, Option] = field(default_factory=dict)
    defaults: Mapping[str, Any] = field(default_factory=dict)
    quick: Mapping[str, Any] = field(default_factory=dict)
    trained: bool = False  # trained by gradient descent (the epoch loop) rather than fitted on frozen features
    search: Any = None  # what `inspect-train --tune` varies (components.feature_memory.FeatureSearch), if anything


def get_spec(kind: str) -> DetectorSpec:
    """The spec of a detector kind, or a ConfigError listing the known kinds."""
    if kind not in _MODULES:
        raise ConfigError(f"unknown detector kind {kind!r}; known: {', '.join(DETECTOR_KINDS)}")
    spec = importlib.import_module(_MODULES[kind]).SPEC
    if spec.kind != kind:
        raise RuntimeError(f"{_MODULES[kind]} registers {spec.kind!r}, expected {kind!r}")
    return spec


def all_specs() -> list[DetectorSpec]:
    return [get_spec(kind) for kind in DETECTOR_KINDS]


def load_detector(directory: Path, section: dict[str, Any], device: str = "cpu") -> Detector:
    """Rebuild a bundle's scorer from its detector section."""
    kind = str(section.get("kind"))
    if kind not in _MODULES:
        raise BundleError(f"unknown detector kind {kind!r} in bundle {directory}; known: {', '.join(DETECTOR_KINDS)}")
    return get_spec(kind).load(Path(directory), section, device)
