"""PatchCore in the registry: options, fit on frozen features, scorer loading."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from linewatch.config import Option
from linewatch.models.base import Detector, FitContext, Fitted
from linewatch.models.components.feature_memory import (
    FEATURE_DEFAULTS,
    FEATURE_OPTIONS,
    FeatureSearch,
    build_feature_network,
    feature_config,
    fit_feature_memory,
)
from linewatch.models.patchcore.knn import INDEX_TYPES
from linewatch.models.registry import DetectorSpec

DEFAULT_LAYERS = ("layer2", "layer3")
SEARCH_LAYERS = (DEFAULT_LAYERS, ("layer2", "layer3", "layer4"), ("layer3", "layer4"))
SEARCH_GRID = {"coreset_ratio": (0.01, 0.05, 0.1), "projection_dims": (None, 128)}

OPTIONS: dict[str, Option] = {
    **FEATURE_OPTIONS,
    "layers": Option(tuple, None, help="Comma-separated feature layers (PatchCore default layer2,layer3)."),
    "coreset_ratio": Option(float, 0.01, minimum=1e-4, maximum=1.0, help="Fraction of patches kept (default 0.01)."),
    "coreset_dims": Option(int, 128, minimum=8, help="Random-projection dims for coreset selection."),
    "knn": Option(int, 1, minimum=1, help="Neighbours averaged per patch for the image score (default 1)."),
    "map_knn": Option(int, None, minimum=1, help="Neighbours averaged per patch for the anomaly map; without it "
                      "chosen from 1, 3, 5 with the blur by val-clean PRO. Image scores keep --knn."),
    "index": Option(str, "flat", choices=INDEX_TYPES, help="FAISS index: flat, hnsw or ivf."),
    "reweight": Option(bool, False, help="The paper's image-score re-weighting (eq. 7)."),
}


def config_of(options: dict[str, Any]) -> Any:
    return feature_config(options, DEFAULT_LAYERS, aggregate=True)


def fit_features(options: dict[str, Any], features: Iterator[np.ndarray], bars: Any) -> Detector:
    from linewatch.models.patchcore.model import PatchCore, PatchCoreParams

    params = PatchCoreParams(
        coreset_ratio=options["coreset_ratio"], coreset_dims=options["coreset_dims"], k=options["knn"],
        map_k=options["map_knn"] or 1, index=options["index"], reweight=options["reweight"], seed=options["seed"],
    )
    return PatchCore.fit(features, params, progress=bars, device=options["device"])


def fit(context: FitContext) -> Fitted:
    return fit_feature_memory(context, config_of(context.options),
                              lambda features: fit_features(context.options, features, context.bars))


def load(directory: Path, section: dict[str, Any], device: str) -> Detector:
    from linewatch.models.patchcore.model import PatchCore

    return PatchCore.load(directory, section, device=device)


SPEC = DetectorSpec(
    kind="patchcore",
    summary="PatchCore (Roth et al. 2022): kNN distance of patch features to a coreset memory bank",
    fit=fit,
    load=load,
    build_network=build_feature_network,
    options=OPTIONS,
    defaults={**FEATURE_DEFAULTS, "blur_sigma": None},  # chosen on val-clean's masks (linewatch.train.blur)
    quick={"weights": "none", "coreset_ratio": 0.1},
    search=FeatureSearch(config_of, fit_features, layers=SEARCH_LAYERS, grid=SEARCH_GRID,
                         cost=lambda options: max(1.0, options["coreset_ratio"] / 0.01)),
)
